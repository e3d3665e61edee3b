//! Sampling parameters shared by every backend, and the CPU sampler (the
//! reference that the GPU sampler is checked against).

use serde::{Deserialize, Serialize};

/// How the next token is chosen from logits. `temperature == 0` is greedy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    /// 1.0 disables top-p.
    pub top_p: f32,
    /// 1.0 disables the repetition penalty (HF/llama.cpp semantics: positive
    /// logits of seen tokens divided by it, negative ones multiplied).
    pub repetition_penalty: f32,
    /// OpenAI semantics: subtracted once from a seen token's logit.
    pub presence_penalty: f32,
    /// OpenAI semantics: subtracted per occurrence.
    pub frequency_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}
