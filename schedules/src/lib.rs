//! Per-chip schedules: everything the generated kernels are specialised on
//! besides the model config. A schedule is a plain serde value; presets name
//! the chips we tune for and `Schedule::for_device` derives one from the
//! detected device properties.
//!
//! The runtime relies on `Schedule::for_device`, `grid_blocks()`,
//! `threads_per_block`, `arch` and `preset`.

pub mod arch;
pub mod device;
pub mod error;
pub mod schedule;

pub use arch::Arch;
pub use device::DeviceProps;
pub use error::ScheduleError;
pub use schedule::{
    DecodeSplit, DeviceLimits, GDN_PREP_THREADS, GDN_TC_STATE_WARPS, GdnOutMode, MlpMode,
    ModelDims, PrefetchMode, PrefillTiles, Schedule, StateDType, SyncMode, TreeParams,
    gdn_kn_stride, gdn_solve_stride, gdn_tc_prep_smem_bytes, gdn_tensor_core_tiles_fit,
    list_presets,
};

/// A named preset (`rtx3090`, `h100`, ...).
pub fn preset(name: &str) -> Result<Schedule, ScheduleError> {
    Schedule::preset(name)
}

/// The preset of an arch (sm_90 picks h100).
pub fn preset_for_arch(arch: Arch) -> Result<Schedule, ScheduleError> {
    Schedule::preset_for_arch(arch)
}
