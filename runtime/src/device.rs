//! Device detection and the per-process GPU handle.

use std::sync::Arc;

use cudarc::driver::sys::{self, CUdevice_attribute as Attr};
use cudarc::driver::{CudaContext, CudaStream};
use lucebox_schedules::{Arch, DeviceProps, Schedule};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::libs::ensure_driver;

/// Everything the runtime knows about one device: the schedule-facing
/// [`DeviceProps`] plus driver facts the schedule does not need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub props: DeviceProps,
    /// Default (non-opt-in) shared memory per block: launches above it must
    /// set the max-dynamic-shared-memory attribute first.
    pub shared_mem_per_block: u32,
    pub cooperative_launch: bool,
    /// 16-byte UUID (NVML matches on it).
    pub uuid: [u8; 16],
    /// (major, minor) of the CUDA version the driver supports, e.g. (13, 0).
    pub driver_version: (u32, u32),
    pub pci_bus_id: String,
}

impl DeviceInfo {
    /// Datasheet DRAM bandwidth from memory clock and bus width (DDR: 2
    /// transfers per clock), bytes/s. 0 when the driver does not report them.
    pub fn theoretical_bandwidth_bytes_per_s(&self) -> f64 {
        2.0 * self.props.mem_clock_khz as f64 * 1e3 * self.props.mem_bus_width_bits as f64 / 8.0
    }

    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, NVML's spelling.
    pub fn uuid_string(&self) -> String {
        let h = hex::encode(self.uuid);
        format!(
            "GPU-{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

/// Number of CUDA devices; an error (never a panic) without a driver.
pub fn device_count() -> Result<usize> {
    ensure_driver()?;
    let n = guarded(CudaContext::device_count)
        .map_err(|e| RuntimeError::NoDevice(format!("cuInit/cuDeviceGetCount failed: {e}")))?;
    Ok(n.max(0) as usize)
}

/// Runs a cudarc call that may panic on a half-installed driver (missing
/// symbol) and turns the panic into an error message.
fn guarded<T>(f: impl FnOnce() -> Result<T, cudarc::driver::DriverError>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{e:?}")),
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic in the CUDA driver binding".into())),
    }
}

/// An open device: context, one stream all runtime work is ordered on, and
/// the detected properties.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    info: DeviceInfo,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("info", &self.info).finish()
    }
}

impl Gpu {
    /// Opens device `ordinal`. Errors (no panic) when there is no driver or device.
    pub fn open(ordinal: usize) -> Result<Self> {
        let count = device_count()?;
        if count == 0 {
            return Err(RuntimeError::NoDevice(
                "the driver loaded but reports 0 devices".into(),
            ));
        }
        if ordinal >= count {
            return Err(RuntimeError::NoDevice(format!(
                "device {ordinal} requested but only {count} present"
            )));
        }
        let ctx = guarded(|| CudaContext::new(ordinal))
            .map_err(|e| RuntimeError::NoDevice(format!("cannot create a context: {e}")))?;
        // One stream orders everything we do; cudarc's per-allocation event
        // tracking only matters across streams.
        // SAFETY: no allocation exists yet on this context from this process.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| RuntimeError::driver("cuStreamCreate", e))?;
        let info = query_info(&ctx, ordinal)?;
        Ok(Self { ctx, stream, info })
    }

    /// Opens device 0 (or `$LUCEBOX_DEVICE`).
    pub fn open_default() -> Result<Self> {
        let ordinal = std::env::var("LUCEBOX_DEVICE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Self::open(ordinal)
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    pub fn props(&self) -> &DeviceProps {
        &self.info.props
    }

    /// The schedule derived for this device, with the JSON patch in
    /// `LUCEBOX_SCHEDULE_PATCH` merged in when set (tuning experiments, see
    /// docs/adding-a-chip.md).
    pub fn schedule(&self) -> Result<Schedule> {
        let s = Schedule::for_device(&self.info.props)?;
        match std::env::var("LUCEBOX_SCHEDULE_PATCH") {
            Ok(patch) if !patch.trim().is_empty() => Ok(s.patched(&patch)?),
            _ => Ok(s),
        }
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits for all work queued on the runtime stream.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| RuntimeError::driver("cuStreamSynchronize", e))
    }

    /// True when all work queued on the runtime stream has finished
    /// (non-blocking).
    pub fn stream_done(&self) -> Result<bool> {
        // SAFETY: valid stream handle of a live context.
        match unsafe { sys::cuStreamQuery(self.stream.cu_stream()) } {
            sys::CUresult::CUDA_SUCCESS => Ok(true),
            sys::CUresult::CUDA_ERROR_NOT_READY => Ok(false),
            e => Err(RuntimeError::driver(
                "cuStreamQuery",
                cudarc::driver::DriverError(e),
            )),
        }
    }

    /// (free, total) device memory in bytes.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        self.ctx
            .mem_get_info()
            .map_err(|e| RuntimeError::driver("cuMemGetInfo", e))
    }
}

fn query_info(ctx: &Arc<CudaContext>, ordinal: usize) -> Result<DeviceInfo> {
    let attr = |a: Attr| -> Result<u32> {
        ctx.attribute(a)
            .map(|v| v.max(0) as u32)
            .map_err(|e| RuntimeError::driver(format!("cuDeviceGetAttribute({a:?})"), e))
    };
    // Attributes some drivers deprecate (clock rates): 0 rather than failure.
    let soft = |a: Attr| -> u32 { ctx.attribute(a).map(|v| v.max(0) as u32).unwrap_or(0) };
    let name = ctx
        .name()
        .map_err(|e| RuntimeError::driver("cuDeviceGetName", e))?;
    let (major, minor) = ctx
        .compute_capability()
        .map_err(|e| RuntimeError::driver("compute capability", e))?;
    let total = ctx
        .total_mem()
        .map_err(|e| RuntimeError::driver("cuDeviceTotalMem", e))?;
    let uuid = ctx
        .uuid()
        .map(|u| u.bytes.map(|b| b as u8))
        .unwrap_or([0; 16]);
    let mut driver: std::ffi::c_int = 0;
    // SAFETY: the driver is loaded and initialised (context exists).
    unsafe { sys::cuDriverGetVersion(&mut driver) }
        .result()
        .map_err(|e| RuntimeError::driver("cuDriverGetVersion", e))?;
    let props = DeviceProps {
        name,
        arch: Arch::new(major as u32, minor as u32),
        sm_count: attr(Attr::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
        max_threads_per_block: attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
        max_threads_per_sm: attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR)?,
        shared_mem_per_block_optin: attr(
            Attr::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
        )?,
        shared_mem_per_sm: attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)?,
        regs_per_sm: attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR)?,
        regs_per_block: attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK)?,
        l2_bytes: attr(Attr::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)? as u64,
        total_mem_bytes: total as u64,
        mem_clock_khz: soft(Attr::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE),
        mem_bus_width_bits: soft(Attr::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH),
        sm_clock_khz: soft(Attr::CU_DEVICE_ATTRIBUTE_CLOCK_RATE),
    };
    let pci_bus_id = format!(
        "{:08x}:{:02x}:{:02x}.0",
        soft(Attr::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID),
        soft(Attr::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID),
        soft(Attr::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)
    );
    Ok(DeviceInfo {
        ordinal,
        shared_mem_per_block: attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)?,
        cooperative_launch: soft(Attr::CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH) != 0,
        uuid,
        driver_version: (driver as u32 / 1000, (driver as u32 % 1000) / 10),
        pci_bus_id,
        props,
    })
}
