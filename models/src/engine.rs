//! The interface every generation backend implements (CPU reference, GPU
//! megakernel), so that `lucebox run` and `lucebox serve` do not care which
//! one runs.

use std::ops::ControlFlow;

use crate::error::ModelError;
use crate::sampling::SamplingParams;

/// One generation request. The engine resets its state (KV cache, GDN and
/// conv state) before each request.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Token ids that end generation (EOS and friends); the stop token itself
    /// is reported through `on_token` but not counted as content by callers.
    pub stop_tokens: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` reached.
    Length,
    /// A stop token was generated.
    StopToken,
    /// The caller's callback asked to stop (client went away, stop string).
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct GenerationOutcome {
    pub generated: Vec<u32>,
    pub stop: StopReason,
    /// Seconds spent on the prompt and on the generated tokens.
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

pub trait Engine: Send {
    /// e.g. `cpu-reference`, `gpu-megakernel (sm_90, 132 SMs)`.
    fn describe(&self) -> String;
    /// Largest prompt + generation the engine can hold.
    fn max_context(&self) -> usize;
    /// Run one request; `on_token` sees every generated token as it is made
    /// and may stop generation by returning `ControlFlow::Break`.
    fn generate(
        &mut self,
        request: &GenerationRequest,
        on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    ) -> Result<GenerationOutcome, ModelError>;
}
