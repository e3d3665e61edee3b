//! Prefill kernels (prompt processing). Not generated yet.

use lucebox_models::config::Qwen35Config;
use lucebox_schedules::Schedule;

use crate::{CodegenError, GeneratedKernel};

pub fn generate_prefill(
    _cfg: &Qwen35Config,
    _sched: &Schedule,
) -> Result<GeneratedKernel, CodegenError> {
    Err(CodegenError::Config(
        "prefill kernels are not generated yet".into(),
    ))
}
