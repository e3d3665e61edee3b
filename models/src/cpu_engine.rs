//! [`Engine`] over the CPU reference forward: slow, exact, always available.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use crate::engine::{Engine, GenerationOutcome, GenerationRequest, StopReason};
use crate::error::{ModelError, Result};
use crate::reference::{ForwardOptions, ReferenceModel};
use crate::sampling::Sampler;

pub struct CpuEngine {
    model: Arc<ReferenceModel>,
    max_context: usize,
}

impl CpuEngine {
    /// `max_context` is capped at the model's `max_position_embeddings`.
    pub fn new(model: Arc<ReferenceModel>, max_context: usize) -> Self {
        let max_context = max_context.min(model.config().max_position_embeddings);
        Self { model, max_context }
    }

    pub fn model(&self) -> &Arc<ReferenceModel> {
        &self.model
    }
}

impl Engine for CpuEngine {
    fn describe(&self) -> String {
        format!("cpu-reference ({})", self.model.config().name)
    }

    fn max_context(&self) -> usize {
        self.max_context
    }

    fn generate(
        &mut self,
        request: &GenerationRequest,
        on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    ) -> Result<GenerationOutcome> {
        if request.prompt.is_empty() {
            return Err(ModelError::Other("the prompt is empty".into()));
        }
        let requested = request.prompt.len() + request.max_tokens;
        if requested > self.max_context {
            return Err(ModelError::ContextTooLong {
                requested,
                max: self.max_context,
            });
        }
        // Fresh state per request.
        let mut state = self.model.new_state();
        let mut sampler = Sampler::new(request.sampling.clone());
        sampler.observe_prompt(&request.prompt);
        let opts = ForwardOptions::default();

        let t0 = Instant::now();
        let mut out = self.model.forward(&mut state, &request.prompt, &opts)?;
        let prefill_seconds = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let mut generated = Vec::new();
        let mut stop = StopReason::Length;
        while generated.len() < request.max_tokens {
            let logits = out
                .logits
                .pop()
                .ok_or_else(|| ModelError::Other("forward returned no logits".into()))?;
            let token = sampler.sample(&logits);
            sampler.accept(token);
            generated.push(token);
            if on_token(token).is_break() {
                stop = StopReason::Cancelled;
                break;
            }
            if request.stop_tokens.contains(&token) {
                stop = StopReason::StopToken;
                break;
            }
            if generated.len() < request.max_tokens {
                out = self.model.forward(&mut state, &[token], &opts)?;
            }
        }
        Ok(GenerationOutcome {
            generated,
            stop,
            prefill_seconds,
            decode_seconds: t1.elapsed().as_secs_f64(),
        })
    }
}
