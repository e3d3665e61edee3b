//! Prefill kernels (prompt processing): NOT GENERATED YET. Until they are,
//! prompts go through the decode megakernel (`n_input` > 1 absorbs a prompt
//! token by token in one launch). The planned kernels: tensor-core GEMM
//! (`mma.sync` bf16 + `cp.async` on sm_80+, FMA on sm_75) with the schedule's
//! `prefill` tiles, conv over the prompt, chunked gated delta rule (chunk 64,
//! WY form, from a cached state) and causal flash attention with GQA.

use lucebox_models::config::Qwen35Config;
use lucebox_schedules::Schedule;

use crate::{CodegenError, GeneratedKernel};

pub fn generate_prefill(
    _cfg: &Qwen35Config,
    _sched: &Schedule,
) -> Result<GeneratedKernel, CodegenError> {
    Err(CodegenError::NotGenerated {
        kind: "prefill",
        why: "prefill kernels are not generated yet; the decode kernel absorbs prompts (n_input > 1)",
    })
}
