//! The runtime's one error type. Every missing library, device or resource is
//! a value here, never a panic.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A CUDA shared library (libcuda, libnvrtc) could not be loaded;
    /// `detail` says which and how to fix it.
    #[error("{detail}")]
    LibraryMissing { what: &'static str, detail: String },

    /// The driver loaded but reports no usable device.
    #[error("no CUDA device found: {0}")]
    NoDevice(String),

    /// An NVRTC API call failed outside compilation proper.
    #[error("NVRTC {call} failed: {message}")]
    Nvrtc { call: &'static str, message: String },

    /// The kernel source did not compile; `log` is NVRTC's full log.
    #[error("NVRTC compilation of `{source_name}` for {arch} failed (source written to {}):\n{log}", source_path.display())]
    Compile {
        source_name: String,
        arch: String,
        log: String,
        source_path: PathBuf,
    },

    #[error("CUDA driver call failed ({context}): {message}")]
    Driver { context: String, message: String },

    /// A cooperative launch whose grid could not be resident at once: it
    /// would deadlock at the first grid barrier, so it is refused.
    #[error(
        "cooperative launch of `{kernel}` refused: {grid_blocks} blocks of {threads_per_block} threads \
         with {dynamic_smem_bytes} B dynamic shared memory cannot all be resident \
         ({max_blocks_per_sm} per SM x {sm_count} SMs = {max_resident}); \
         a grid barrier would deadlock"
    )]
    NotCoResident {
        kernel: String,
        grid_blocks: u32,
        threads_per_block: u32,
        dynamic_smem_bytes: u32,
        max_blocks_per_sm: u32,
        sm_count: u32,
        max_resident: u32,
    },

    #[error("{0}")]
    InvalidArgument(String),

    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("energy not available: {0}")]
    EnergyUnavailable(String),

    #[error(transparent)]
    Schedule(#[from] lucebox_schedules::ScheduleError),

    /// A GPU result that disagrees with its reference.
    #[error("check failed: {0}")]
    CheckFailed(String),
}

impl RuntimeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn driver(context: impl Into<String>, err: cudarc::driver::DriverError) -> Self {
        Self::Driver {
            context: context.into(),
            message: format!("{err:?}"),
        }
    }

    /// True when the error means "no GPU here" rather than a bug: callers
    /// (tests, `lucebox check`) skip instead of failing.
    pub fn is_no_gpu(&self) -> bool {
        matches!(self, Self::LibraryMissing { .. } | Self::NoDevice(_))
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
