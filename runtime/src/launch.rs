//! Loading CUBIN modules and launching kernels, persistent ones included.
//!
//! A persistent kernel synchronises its whole grid with barriers, which only
//! terminate when every block is resident at once. [`Gpu::launch_cooperative`]
//! therefore asks the occupancy API first and refuses a grid that cannot be
//! co-resident instead of risking a deadlock, then launches through
//! `cuLaunchCooperativeKernel`, which the driver also validates.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::sys::{self, CUfunction_attribute as FnAttr};
use cudarc::driver::{CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;

use crate::cache::{CacheOutcome, KernelCache};
use crate::device::Gpu;
use crate::error::{Result, RuntimeError};
use crate::nvrtc::{CompileOptions, CompiledCubin, KernelResources};

/// Default dynamic shared memory limit without opting in.
const DEFAULT_DYNAMIC_SMEM: u32 = 48 * 1024;

/// A loaded module; kernels keep it alive.
#[derive(Debug, Clone)]
pub struct Module {
    module: Arc<CudaModule>,
    compiled: Arc<CompiledCubin>,
}

/// One kernel of a loaded module.
#[derive(Debug, Clone)]
pub struct Kernel {
    name: String,
    function: CudaFunction,
    resources: Option<KernelResources>,
}

/// Grid and block shape plus dynamic shared memory; 1-D (persistent
/// kernels index blocks themselves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid_blocks: u32,
    pub threads_per_block: u32,
    pub dynamic_smem_bytes: u32,
}

/// How a launch orders itself after the previous kernel on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOrder {
    /// Starts after the previous kernel completes (the ordinary rule).
    Serial,
    /// A programmatic dependent (sm_90+): may start once the previous kernel
    /// triggers `griddepcontrol.launch_dependents` (or exits); the kernel
    /// itself waits with `griddepcontrol.wait` before touching shared data.
    Programmatic,
}

/// Kernel arguments by value. Each argument gets its own 8-aligned slot
/// (scalars and pointers: one word; structs: as many words as they need),
/// which satisfies the parameter ABI of every type up to 8-byte alignment.
#[derive(Debug, Default, Clone)]
pub struct KernelArgs {
    slots: Vec<Vec<u64>>,
}

impl KernelArgs {
    pub fn new() -> Self {
        Self::default()
    }
    /// A device address (any `T*` parameter).
    pub fn ptr(mut self, device_ptr: u64) -> Self {
        self.slots.push(vec![device_ptr]);
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.slots.push(vec![v as u64]);
        self
    }
    pub fn i32(self, v: i32) -> Self {
        self.u32(v as u32)
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.slots.push(vec![v]);
        self
    }
    pub fn f32(self, v: f32) -> Self {
        self.u32(v.to_bits())
    }
    /// A by-value struct parameter given as its bytes (little-endian, C layout).
    pub fn bytes(mut self, b: &[u8]) -> Self {
        let mut words = vec![0u64; b.len().div_ceil(8).max(1)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..b.len()].copy_from_slice(b);
        self.slots.push(words);
        self
    }
    fn pointers(&mut self) -> Vec<*mut c_void> {
        self.slots
            .iter_mut()
            .map(|s| s.as_mut_ptr().cast::<c_void>())
            .collect()
    }
}

/// Result of compiling (or finding in the cache) and loading a module.
#[derive(Debug, Clone)]
pub struct LoadedModule {
    pub module: Module,
    pub outcome: CacheOutcome,
    /// Wall time of cache lookup + compile + load, milliseconds.
    pub millis: f64,
}

impl Module {
    pub fn compiled(&self) -> &CompiledCubin {
        &self.compiled
    }

    /// The kernel named `name` (as declared `extern "C"`).
    pub fn kernel(&self, name: &str) -> Result<Kernel> {
        if name.contains('\0') {
            return Err(RuntimeError::InvalidArgument(
                "kernel name contains NUL".into(),
            ));
        }
        let function = self
            .module
            .load_function(name)
            .map_err(|e| RuntimeError::driver(format!("cuModuleGetFunction({name})"), e))?;
        Ok(Kernel {
            name: name.to_string(),
            function,
            resources: self.compiled.resources_of(name).cloned(),
        })
    }
}

impl Kernel {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// ptxas's report for this kernel, when compiled with `verbose_ptxas`.
    pub fn resources(&self) -> Option<&KernelResources> {
        self.resources.as_ref()
    }

    /// Registers per thread as the loaded function reports them.
    pub fn num_regs(&self) -> Result<u32> {
        self.function
            .num_regs()
            .map(|r| r as u32)
            .map_err(|e| RuntimeError::driver("cuFuncGetAttribute(NUM_REGS)", e))
    }

    /// Blocks of this kernel one SM can hold at this block shape.
    pub fn max_active_blocks_per_sm(
        &self,
        threads_per_block: u32,
        dynamic_smem_bytes: u32,
    ) -> Result<u32> {
        self.allow_dynamic_smem(dynamic_smem_bytes)?;
        let mut n: std::ffi::c_int = 0;
        // SAFETY: valid function handle and out-pointer.
        unsafe {
            sys::cuOccupancyMaxActiveBlocksPerMultiprocessor(
                &mut n,
                self.function.cu_function(),
                threads_per_block as std::ffi::c_int,
                dynamic_smem_bytes as usize,
            )
        }
        .result()
        .map_err(|e| RuntimeError::driver("cuOccupancyMaxActiveBlocksPerMultiprocessor", e))?;
        Ok(n.max(0) as u32)
    }

    /// Opts into more than 48 KB of dynamic shared memory when asked for.
    pub fn allow_dynamic_smem(&self, bytes: u32) -> Result<()> {
        if bytes > DEFAULT_DYNAMIC_SMEM {
            self.function
                .set_attribute(
                    FnAttr::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    bytes as i32,
                )
                .map_err(|e| {
                    RuntimeError::driver(
                        format!("cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES = {bytes})"),
                        e,
                    )
                })?;
        }
        Ok(())
    }
}

impl Gpu {
    /// Loads a CUBIN (no JIT: it must be for this device's exact arch).
    pub fn load_cubin(&self, compiled: CompiledCubin) -> Result<Module> {
        let module = self
            .context()
            .load_module(Ptx::from_binary(compiled.cubin.clone()))
            .map_err(|e| {
                RuntimeError::driver(
                    format!(
                        "cuModuleLoadData (CUBIN for another arch than {}?)",
                        self.props().arch
                    ),
                    e,
                )
            })?;
        Ok(Module {
            module,
            compiled: Arc::new(compiled),
        })
    }

    /// Compiles through `cache` (a hit skips NVRTC) and loads the module.
    pub fn compile_and_load(
        &self,
        cache: &KernelCache,
        source: &str,
        opts: &CompileOptions,
    ) -> Result<LoadedModule> {
        let t0 = std::time::Instant::now();
        let (compiled, outcome) = cache.get_or_compile(source, opts)?;
        let module = self.load_cubin(compiled)?;
        Ok(LoadedModule {
            module,
            outcome,
            millis: t0.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// Ordinary launch on the runtime stream (asynchronous).
    pub fn launch(&self, kernel: &Kernel, cfg: LaunchConfig, args: KernelArgs) -> Result<()> {
        self.launch_grid(
            kernel,
            [cfg.grid_blocks, 1, 1],
            cfg.threads_per_block,
            cfg.dynamic_smem_bytes,
            args,
        )
    }

    /// Ordinary launch on a 3-D grid of 1-D blocks (asynchronous); an empty
    /// grid is an error rather than a silent no-op.
    pub fn launch_grid(
        &self,
        kernel: &Kernel,
        grid: [u32; 3],
        threads_per_block: u32,
        dynamic_smem_bytes: u32,
        args: KernelArgs,
    ) -> Result<()> {
        let shape = (grid, threads_per_block, dynamic_smem_bytes);
        self.launch_grid_ordered(kernel, shape, args, StreamOrder::Serial)
    }

    /// [`Self::launch_grid`] with the stream ordering spelled out: `shape` is
    /// (grid, threads per block, dynamic shared-memory bytes). Under
    /// [`StreamOrder::Programmatic`] (sm_90+) the driver may schedule the
    /// blocks before the previous kernel on the stream completes, so `kernel`
    /// must execute `griddepcontrol.wait` before it touches memory that one
    /// writes or reads.
    pub fn launch_grid_ordered(
        &self,
        kernel: &Kernel,
        (grid, threads_per_block, dynamic_smem_bytes): ([u32; 3], u32, u32),
        mut args: KernelArgs,
        order: StreamOrder,
    ) -> Result<()> {
        if grid.contains(&0) || threads_per_block == 0 {
            return Err(RuntimeError::InvalidArgument(format!(
                "launch of {} on grid {grid:?} x {threads_per_block} threads",
                kernel.name
            )));
        }
        kernel.allow_dynamic_smem(dynamic_smem_bytes)?;
        self.bind()?;
        let mut ptrs = args.pointers();
        // SAFETY: an all-zero attribute is a valid C value (id IGNORE, zero padding).
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = sys::CUlaunchConfig {
            gridDimX: grid[0],
            gridDimY: grid[1],
            gridDimZ: grid[2],
            blockDimX: threads_per_block,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: dynamic_smem_bytes,
            hStream: self.stream().cu_stream(),
            attrs: &mut attr,
            numAttrs: u32::from(order == StreamOrder::Programmatic),
        };
        // SAFETY: the argument slots, `config` and `attr` live until the call
        // returns (the driver copies them); the caller matches the slots to the
        // kernel signature.
        unsafe {
            sys::cuLaunchKernelEx(
                &config,
                kernel.function.cu_function(),
                ptrs.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        }
        .result()
        .map_err(|e| RuntimeError::driver(format!("cuLaunchKernelEx({})", kernel.name), e))
    }

    /// Largest grid of `kernel` that can be co-resident at this block shape.
    pub fn max_cooperative_grid(
        &self,
        kernel: &Kernel,
        threads_per_block: u32,
        dynamic_smem_bytes: u32,
    ) -> Result<u32> {
        Ok(
            kernel.max_active_blocks_per_sm(threads_per_block, dynamic_smem_bytes)?
                * self.props().sm_count,
        )
    }

    /// Cooperative launch of a persistent kernel, refused when the grid
    /// cannot be co-resident (a grid barrier would never complete).
    pub fn launch_cooperative(
        &self,
        kernel: &Kernel,
        cfg: LaunchConfig,
        mut args: KernelArgs,
    ) -> Result<()> {
        if !self.info().cooperative_launch {
            return Err(RuntimeError::InvalidArgument(format!(
                "{} does not support cooperative launches",
                self.props().name
            )));
        }
        let per_sm =
            kernel.max_active_blocks_per_sm(cfg.threads_per_block, cfg.dynamic_smem_bytes)?;
        let sm_count = self.props().sm_count;
        let max_resident = per_sm * sm_count;
        if cfg.grid_blocks == 0 || cfg.grid_blocks > max_resident {
            return Err(RuntimeError::NotCoResident {
                kernel: kernel.name.clone(),
                grid_blocks: cfg.grid_blocks,
                threads_per_block: cfg.threads_per_block,
                dynamic_smem_bytes: cfg.dynamic_smem_bytes,
                max_blocks_per_sm: per_sm,
                sm_count,
                max_resident,
            });
        }
        self.bind()?;
        let mut ptrs = args.pointers();
        // SAFETY: as in `launch`; co-residency checked above.
        unsafe {
            sys::cuLaunchCooperativeKernel(
                kernel.function.cu_function(),
                cfg.grid_blocks,
                1,
                1,
                cfg.threads_per_block,
                1,
                1,
                cfg.dynamic_smem_bytes,
                self.stream().cu_stream(),
                ptrs.as_mut_ptr(),
            )
        }
        .result()
        .map_err(|e| RuntimeError::driver(format!("cuLaunchCooperativeKernel({})", kernel.name), e))
    }

    fn bind(&self) -> Result<()> {
        self.context()
            .bind_to_thread()
            .map_err(|e| RuntimeError::driver("cuCtxSetCurrent", e))
    }
}
