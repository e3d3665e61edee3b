//! Per-chip schedules: everything the generated kernels are specialised on
//! besides the model config. A schedule is a plain serde value; presets name
//! the chips we tune for and `Schedule::for_device` derives one from the
//! detected device properties.
//!
//! DRAFT CONTRACT (filled in by the schedules/codegen work): the types and
//! function signatures below are what the runtime relies on.

pub mod arch;
pub mod device;
pub mod error;
pub mod schedule;

pub use arch::Arch;
pub use device::DeviceProps;
pub use error::ScheduleError;
pub use schedule::Schedule;
