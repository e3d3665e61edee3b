//! Device properties a schedule is derived from. Filled by the runtime from
//! the CUDA driver; written by hand for presets of chips we cannot run.

use serde::{Deserialize, Serialize};

use crate::arch::Arch;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceProps {
    pub name: String,
    pub arch: Arch,
    pub sm_count: u32,
    pub max_threads_per_block: u32,
    pub max_threads_per_sm: u32,
    /// Largest dynamic shared memory one block may opt into.
    pub shared_mem_per_block_optin: u32,
    pub shared_mem_per_sm: u32,
    pub regs_per_sm: u32,
    pub regs_per_block: u32,
    pub l2_bytes: u64,
    pub total_mem_bytes: u64,
    /// Memory clock (kHz) and bus width (bits): the datasheet bandwidth.
    pub mem_clock_khz: u32,
    pub mem_bus_width_bits: u32,
    pub sm_clock_khz: u32,
}
