//! The schedule value. (Draft; the schedules/codegen work completes it.)

use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::device::DeviceProps;
use crate::error::ScheduleError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Preset name (`rtx3090`) or `derived` for `for_device`.
    pub preset: String,
    pub arch: Arch,
    pub sm_count: u32,
    /// Persistent grid: blocks per SM times SMs.
    pub blocks_per_sm: u32,
    pub threads_per_block: u32,
}

impl Schedule {
    pub fn grid_blocks(&self) -> u32 {
        self.sm_count * self.blocks_per_sm
    }

    pub fn for_device(props: &DeviceProps) -> Result<Self, ScheduleError> {
        Ok(Self {
            preset: "derived".into(),
            arch: props.arch,
            sm_count: props.sm_count,
            blocks_per_sm: 1,
            threads_per_block: 512,
        })
    }
}
