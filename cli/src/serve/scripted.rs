//! A deterministic stand-in engine for tests of the HTTP layer: it produces a
//! fixed pseudo-random token sequence per (prompt, seed) at a chosen pace, so
//! that queueing, cancellation and streaming can be tested without model math
//! (and with generations slow enough to disconnect from). It is not a model.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lucebox_models::{Engine, GenerationOutcome, GenerationRequest, ModelError, StopReason};

#[derive(Debug, Clone)]
pub struct ScriptedEngine {
    pub vocab_size: u32,
    pub context: usize,
    /// Sleep before each generated token.
    pub token_delay: Duration,
    /// Generate the first stop token after this many tokens.
    pub stop_after: Option<usize>,
    /// Tokens produced so far, over all requests (to observe cancellation).
    pub tokens_generated: Arc<AtomicUsize>,
}

impl ScriptedEngine {
    pub fn new(vocab_size: u32, context: usize) -> Self {
        Self {
            vocab_size,
            context,
            token_delay: Duration::ZERO,
            stop_after: None,
            tokens_generated: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Engine for ScriptedEngine {
    fn describe(&self) -> String {
        "scripted (test engine, not a model)".into()
    }

    fn max_context(&self) -> usize {
        self.context
    }

    fn generate(
        &mut self,
        request: &GenerationRequest,
        on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    ) -> Result<GenerationOutcome, ModelError> {
        let total = request.prompt.len() + request.max_tokens;
        if total > self.context {
            return Err(ModelError::ContextTooLong {
                requested: total,
                max: self.context,
            });
        }
        let started = Instant::now();
        // Like a model: greedy output depends on the prompt only, sampled
        // output on the prompt and the seed.
        let seed = if request.sampling.is_greedy() {
            0
        } else {
            request.sampling.seed
        };
        let mut state = request
            .prompt
            .iter()
            .fold(0x9E37_79B9_7F4A_7C15u64 ^ seed, |h, &t| {
                (h ^ u64::from(t)).wrapping_mul(0x100_0000_01B3)
            });
        let mut generated = Vec::new();
        let mut stop = StopReason::Length;
        for i in 0..request.max_tokens {
            if !self.token_delay.is_zero() {
                std::thread::sleep(self.token_delay);
            }
            let token = match (self.stop_after, request.stop_tokens.first()) {
                (Some(n), Some(&eos)) if i == n => eos,
                _ => loop {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let t = ((state >> 33) % u64::from(self.vocab_size)) as u32;
                    if !request.stop_tokens.contains(&t) {
                        break t;
                    }
                },
            };
            generated.push(token);
            self.tokens_generated.fetch_add(1, Ordering::SeqCst);
            if on_token(token).is_break() {
                stop = StopReason::Cancelled;
                break;
            }
            if request.stop_tokens.contains(&token) {
                stop = StopReason::StopToken;
                break;
            }
        }
        Ok(GenerationOutcome {
            generated,
            stop,
            prefill_seconds: 0.0,
            decode_seconds: started.elapsed().as_secs_f64(),
        })
    }
}
