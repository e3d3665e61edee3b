//! CUDA runtime for lucebox: NVRTC to cached CUBIN for the exact chip, device
//! detection, typed buffers, persistent (cooperative) launches, timing and
//! NVML energy. Everything loads CUDA dynamically: a machine without a GPU,
//! driver or NVRTC gets a [`RuntimeError`], never a panic.

pub mod cache;
pub mod decode;
pub mod error;
pub mod libs;
pub mod nvrtc;
pub mod prefill;
pub mod profile;

pub use error::RuntimeError;
pub mod device;
pub mod energy;
pub mod launch;
pub mod memory;
pub mod timing;

pub use device::{DeviceInfo, Gpu};
pub use launch::{Kernel, KernelArgs, LaunchConfig, Module, StreamOrder};
pub use memory::{DeviceBuffer, MappedHostBuffer};
pub mod diagnostics;
pub mod kernels;
