//! Typed device buffers and pinned, device-mapped host memory.
//!
//! Buffers hold any `bytemuck::Pod` element (`half::bf16`, `f32`, `u32`...),
//! so weights upload as bf16 without a conversion pass. Kernels take raw
//! device addresses ([`DeviceBuffer::device_ptr`]), which is what the
//! generated code's pointer tables hold.

use std::marker::PhantomData;
use std::sync::Arc;

use bytemuck::Pod;
use cudarc::driver::sys::{self, CUdeviceptr};
use cudarc::driver::{CudaContext, CudaStream};

use crate::device::Gpu;
use crate::error::{Result, RuntimeError};

fn check(context: &str, r: sys::CUresult) -> Result<()> {
    r.result().map_err(|e| RuntimeError::driver(context, e))
}

/// `len` elements of `T` in device memory; freed on drop.
pub struct DeviceBuffer<T: Pod> {
    ptr: CUdeviceptr,
    len: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    _elem: PhantomData<T>,
}

impl<T: Pod> std::fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceBuffer<{}>[{}] @ {:#x}",
            std::any::type_name::<T>(),
            self.len,
            self.ptr
        )
    }
}

// SAFETY: the buffer is a plain device address plus Arc'd handles; the CUDA
// driver API is thread-safe once the context is made current.
unsafe impl<T: Pod> Send for DeviceBuffer<T> {}
unsafe impl<T: Pod> Sync for DeviceBuffer<T> {}

impl<T: Pod> DeviceBuffer<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }

    /// Device address, for kernel arguments and pointer tables.
    pub fn device_ptr(&self) -> u64 {
        self.ptr
    }

    /// Copies `host` into the buffer (whole buffer, lengths must match) and
    /// waits for the copy.
    pub fn upload(&mut self, host: &[T]) -> Result<()> {
        self.upload_at(0, host)
    }

    /// Copies `host` to elements `offset..offset + host.len()` and waits.
    pub fn upload_at(&mut self, offset: usize, host: &[T]) -> Result<()> {
        if offset + host.len() > self.len {
            return Err(RuntimeError::InvalidArgument(format!(
                "upload of {} elements at {offset} into a buffer of {}",
                host.len(),
                self.len
            )));
        }
        if host.is_empty() {
            return Ok(());
        }
        self.bind()?;
        let bytes: &[u8] = bytemuck::cast_slice(host);
        let dst = self.ptr + (offset * std::mem::size_of::<T>()) as u64;
        // SAFETY: range checked above; `host` outlives the synchronised copy.
        check("cuMemcpyHtoDAsync", unsafe {
            sys::cuMemcpyHtoDAsync_v2(
                dst,
                bytes.as_ptr().cast(),
                bytes.len(),
                self.stream.cu_stream(),
            )
        })?;
        self.sync()
    }

    /// Copies the whole buffer to the host (after all queued work).
    pub fn download(&self) -> Result<Vec<T>> {
        let mut out = vec![T::zeroed(); self.len];
        self.download_into(&mut out)?;
        Ok(out)
    }

    /// Copies the first `host.len()` elements into `host`.
    pub fn download_into(&self, host: &mut [T]) -> Result<()> {
        if host.len() > self.len {
            return Err(RuntimeError::InvalidArgument(format!(
                "download of {} elements from a buffer of {}",
                host.len(),
                self.len
            )));
        }
        if host.is_empty() {
            return Ok(());
        }
        self.bind()?;
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(host);
        // SAFETY: `host` holds the bytes requested and outlives the synchronised copy.
        check("cuMemcpyDtoHAsync", unsafe {
            sys::cuMemcpyDtoHAsync_v2(
                bytes.as_mut_ptr().cast(),
                self.ptr,
                bytes.len(),
                self.stream.cu_stream(),
            )
        })?;
        self.sync()
    }

    /// Copies `bytes` bytes from `src` at byte `src_byte` to this buffer at
    /// byte `dst_byte`, on the runtime stream (queued, not waited for).
    pub fn copy_bytes_from<U: Pod>(
        &mut self,
        dst_byte: usize,
        src: &DeviceBuffer<U>,
        src_byte: usize,
        bytes: usize,
    ) -> Result<()> {
        if dst_byte + bytes > self.bytes() || src_byte + bytes > src.bytes() {
            return Err(RuntimeError::InvalidArgument(format!(
                "device copy of {bytes} bytes from offset {src_byte} of a {}-byte buffer to offset {dst_byte} of a {}-byte buffer",
                src.bytes(),
                self.bytes()
            )));
        }
        if bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: both ranges checked above; the allocations outlive the
        // stream-ordered copy (they are freed only after synchronising).
        check("cuMemcpyDtoDAsync", unsafe {
            sys::cuMemcpyDtoDAsync_v2(
                self.ptr + dst_byte as u64,
                src.ptr + src_byte as u64,
                bytes,
                self.stream.cu_stream(),
            )
        })
    }

    /// Sets every byte to `byte` (0xFF poisons f32/bf16 with NaN). Queued on
    /// the runtime stream; not waited for.
    pub fn fill_bytes(&mut self, byte: u8) -> Result<()> {
        self.bind()?;
        // SAFETY: the range is this allocation.
        check("cuMemsetD8Async", unsafe {
            sys::cuMemsetD8Async(self.ptr, byte, self.bytes(), self.stream.cu_stream())
        })
    }

    /// Sets every 32-bit word to `word`; the buffer size must be a multiple of 4.
    pub fn fill_u32(&mut self, word: u32) -> Result<()> {
        if !self.bytes().is_multiple_of(4) {
            return Err(RuntimeError::InvalidArgument(
                "fill_u32 on a buffer whose size is not a multiple of 4".into(),
            ));
        }
        self.bind()?;
        // SAFETY: the range is this allocation.
        check("cuMemsetD32Async", unsafe {
            sys::cuMemsetD32Async(self.ptr, word, self.bytes() / 4, self.stream.cu_stream())
        })
    }

    fn bind(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| RuntimeError::driver("cuCtxSetCurrent", e))
    }

    fn sync(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| RuntimeError::driver("cuStreamSynchronize", e))
    }
}

impl<T: Pod> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        if self.ptr != 0 && self.bind().is_ok() {
            // SAFETY: allocated by cuMemAlloc and freed once.
            let _ = unsafe { sys::cuMemFree_v2(self.ptr) };
        }
    }
}

/// Page-locked host memory mapped into the device address space: a running
/// kernel writes it (token feedback, progress) and the host reads it without
/// a copy or a sync.
pub struct MappedHostBuffer<T: Pod> {
    host: *mut T,
    device: CUdeviceptr,
    len: usize,
    ctx: Arc<CudaContext>,
}

// SAFETY: owned allocation; concurrent device writes are observed through
// volatile reads only.
unsafe impl<T: Pod> Send for MappedHostBuffer<T> {}
unsafe impl<T: Pod> Sync for MappedHostBuffer<T> {}

impl<T: Pod> std::fmt::Debug for MappedHostBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MappedHostBuffer<{}>[{}]",
            std::any::type_name::<T>(),
            self.len
        )
    }
}

impl<T: Pod> MappedHostBuffer<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address a kernel writes through.
    pub fn device_ptr(&self) -> u64 {
        self.device
    }

    /// Element `i` as the device last wrote it (volatile: safe while a kernel runs).
    pub fn read_volatile(&self, i: usize) -> Option<T> {
        // SAFETY: in bounds; the allocation lives as long as self.
        (i < self.len).then(|| unsafe { std::ptr::read_volatile(self.host.add(i)) })
    }

    /// Snapshot of all elements (volatile reads).
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len)
            .map(|i| unsafe { std::ptr::read_volatile(self.host.add(i)) })
            .collect()
    }

    /// Writes element `i` (host side; call while no kernel uses it).
    pub fn write(&mut self, i: usize, v: T) -> Result<()> {
        if i >= self.len {
            return Err(RuntimeError::InvalidArgument(format!(
                "index {i} out of {}",
                self.len
            )));
        }
        // SAFETY: in bounds.
        unsafe { std::ptr::write_volatile(self.host.add(i), v) };
        Ok(())
    }

    pub fn fill(&mut self, v: T) {
        for i in 0..self.len {
            // SAFETY: in bounds.
            unsafe { std::ptr::write_volatile(self.host.add(i), v) };
        }
    }
}

impl<T: Pod> Drop for MappedHostBuffer<T> {
    fn drop(&mut self) {
        if !self.host.is_null() && self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by cuMemHostAlloc, freed once.
            let _ = unsafe { sys::cuMemFreeHost(self.host.cast()) };
        }
    }
}

impl Gpu {
    /// An uninitialised buffer of `len` elements (fill or upload before reading).
    pub fn alloc<T: Pod>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        let bytes = len.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| {
            RuntimeError::InvalidArgument(format!("allocation of {len} elements overflows"))
        })?;
        self.context()
            .bind_to_thread()
            .map_err(|e| RuntimeError::driver("cuCtxSetCurrent", e))?;
        let mut ptr: CUdeviceptr = 0;
        if bytes > 0 {
            // SAFETY: valid out-pointer; context current.
            check(&format!("cuMemAlloc({bytes} bytes)"), unsafe {
                sys::cuMemAlloc_v2(&mut ptr, bytes)
            })?;
        }
        Ok(DeviceBuffer {
            ptr,
            len,
            ctx: self.context().clone(),
            stream: self.stream().clone(),
            _elem: PhantomData,
        })
    }

    /// A zero-filled buffer (queued memset).
    pub fn alloc_zeroed<T: Pod>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        let mut b = self.alloc(len)?;
        if len > 0 {
            b.fill_bytes(0)?;
        }
        Ok(b)
    }

    /// A buffer holding a copy of `host`.
    pub fn upload<T: Pod>(&self, host: &[T]) -> Result<DeviceBuffer<T>> {
        let mut b = self.alloc(host.len())?;
        b.upload(host)?;
        Ok(b)
    }

    /// Pinned host memory mapped into the device address space.
    pub fn alloc_mapped<T: Pod>(&self, len: usize) -> Result<MappedHostBuffer<T>> {
        let bytes = len.max(1) * std::mem::size_of::<T>();
        self.context()
            .bind_to_thread()
            .map_err(|e| RuntimeError::driver("cuCtxSetCurrent", e))?;
        let mut host: *mut std::ffi::c_void = std::ptr::null_mut();
        // SAFETY: valid out-pointer; flags documented combinable.
        check("cuMemHostAlloc", unsafe {
            sys::cuMemHostAlloc(
                &mut host,
                bytes,
                sys::CU_MEMHOSTALLOC_DEVICEMAP | sys::CU_MEMHOSTALLOC_PORTABLE,
            )
        })?;
        let mut buf = MappedHostBuffer {
            host: host.cast(),
            device: 0,
            len,
            ctx: self.context().clone(),
        };
        // SAFETY: `host` was allocated with DEVICEMAP just above.
        check("cuMemHostGetDevicePointer", unsafe {
            sys::cuMemHostGetDevicePointer_v2(&mut buf.device, host, 0)
        })?;
        buf.fill(T::zeroed());
        Ok(buf)
    }
}
