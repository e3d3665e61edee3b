//! CPU reference forward of the Qwen3.5 text model, in f32 (f64 reductions),
//! written for clarity: it is the oracle every GPU kernel is checked against.
//!
//! ```text
//! embed_tokens → for each layer: h = x + Mixer(RMSNorm₁(x)); out = h + MLP(RMSNorm₂(h))
//!              → final RMSNorm → lm_head (tied to embed_tokens when configured)
//! ```
//! Mixer is [`GatedAttention`] or [`GatedDeltaNet`] per `layer_types`.

// Index loops mirror the math (S[i][j], A[r][s]); iterator chains would hide it.
#![allow(clippy::needless_range_loop)]

pub mod attention;
pub mod delta_net;
pub mod delta_rule;
pub mod linear;
pub mod ops;

use crate::config::{LayerType, Qwen35Config};
use crate::error::{ModelError, Result};
use crate::weights::{WeightSource, expect_shape};

pub use attention::{GatedAttention, KvCache};
pub use delta_net::{DeltaNetState, DeltaRuleMode, GatedDeltaNet};
pub use linear::Linear;
use ops::{rms_norm_zero_centred, silu};

/// SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn load(source: &dyn WeightSource, cfg: &Qwen35Config, layer: usize) -> Result<Self> {
        let p = format!("layers.{layer}.mlp");
        let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: Linear::load(source, &format!("{p}.gate_proj.weight"), f, d)?,
            up_proj: Linear::load(source, &format!("{p}.up_proj.weight"), f, d)?,
            down_proj: Linear::load(source, &format!("{p}.down_proj.weight"), d, f)?,
        })
    }

    fn forward(&self, xs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let gate = self.gate_proj.forward(xs)?;
        let up = self.up_proj.forward(xs)?;
        let hidden: Vec<Vec<f32>> = gate
            .iter()
            .zip(&up)
            .map(|(g, u)| g.iter().zip(u).map(|(g, u)| silu(*g) * u).collect())
            .collect();
        self.down_proj.forward(&hidden)
    }
}

#[derive(Debug, Clone)]
pub enum Mixer {
    Attention(GatedAttention),
    DeltaNet(GatedDeltaNet),
}

#[derive(Debug, Clone)]
pub struct DecoderLayer {
    input_layernorm: Vec<f32>,
    post_attention_layernorm: Vec<f32>,
    mixer: Mixer,
    mlp: Mlp,
}

/// Per-layer state: KV cache (attention) or conv + recurrent state (GDN).
#[derive(Debug, Clone, PartialEq)]
pub enum LayerState {
    Attention(KvCache),
    DeltaNet(DeltaNetState),
}

/// Everything carried between calls for one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelState {
    /// Tokens processed so far (= position of the next token).
    pub position: usize,
    pub layers: Vec<LayerState>,
}

impl ModelState {
    pub fn new(cfg: &Qwen35Config) -> Self {
        Self {
            position: 0,
            layers: cfg
                .layer_types
                .iter()
                .map(|t| match t {
                    LayerType::FullAttention => LayerState::Attention(KvCache::default()),
                    LayerType::LinearAttention => LayerState::DeltaNet(DeltaNetState::new(cfg)),
                })
                .collect(),
        }
    }
}

/// Which logits a forward call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogitsWanted {
    None,
    #[default]
    Last,
    All,
}

#[derive(Debug, Clone, Default)]
pub struct ForwardOptions {
    pub logits: LogitsWanted,
    /// Decoder layers whose outputs (residual stream after the layer, HF
    /// `hidden_states[layer + 1]`) are returned for every token of the call.
    pub capture_layers: Vec<usize>,
    pub delta_rule: DeltaRuleMode,
}

#[derive(Debug, Clone, Default)]
pub struct ForwardOutput {
    /// Absolute positions of the returned logits rows.
    pub positions: Vec<usize>,
    /// One vocab-sized row per returned position.
    pub logits: Vec<Vec<f32>>,
    /// `(layer, per-token hidden states)` for each captured layer, in the
    /// order of `capture_layers`.
    pub hidden: Vec<(usize, Vec<Vec<f32>>)>,
}

/// The loaded reference model.
#[derive(Debug, Clone)]
pub struct ReferenceModel {
    config: Qwen35Config,
    embed_tokens: Linear,
    layers: Vec<DecoderLayer>,
    norm: Vec<f32>,
    /// `None` when tied: the embedding matrix is the LM head.
    lm_head: Option<Linear>,
}

fn vector(source: &dyn WeightSource, name: &str, len: usize) -> Result<Vec<f32>> {
    let t = source.tensor(name)?;
    expect_shape(&t, &[len])?;
    t.to_f32()
}

impl ReferenceModel {
    pub fn load(source: &dyn WeightSource) -> Result<Self> {
        let cfg = source.config().clone();
        cfg.validate()?;
        let d = cfg.hidden_size;
        let embed_tokens = Linear::load(source, "embed_tokens.weight", cfg.vocab_size, d)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for (i, ty) in cfg.layer_types.iter().enumerate() {
            let p = format!("layers.{i}");
            layers.push(DecoderLayer {
                input_layernorm: vector(source, &format!("{p}.input_layernorm.weight"), d)?,
                post_attention_layernorm: vector(
                    source,
                    &format!("{p}.post_attention_layernorm.weight"),
                    d,
                )?,
                mixer: match ty {
                    LayerType::FullAttention => {
                        Mixer::Attention(GatedAttention::load(source, &cfg, i)?)
                    }
                    LayerType::LinearAttention => {
                        Mixer::DeltaNet(GatedDeltaNet::load(source, &cfg, i)?)
                    }
                },
                mlp: Mlp::load(source, &cfg, i)?,
            });
        }
        let norm = vector(source, "norm.weight", d)?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(Linear::load(source, "lm_head.weight", cfg.vocab_size, d)?)
        };
        Ok(Self {
            config: cfg,
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }

    pub fn config(&self) -> &Qwen35Config {
        &self.config
    }

    pub fn new_state(&self) -> ModelState {
        ModelState::new(&self.config)
    }

    /// Run `tokens` at positions `state.position..` and advance the state.
    pub fn forward(
        &self,
        state: &mut ModelState,
        tokens: &[u32],
        options: &ForwardOptions,
    ) -> Result<ForwardOutput> {
        let cfg = &self.config;
        for &layer in &options.capture_layers {
            if layer >= cfg.num_hidden_layers {
                return Err(ModelError::Other(format!(
                    "cannot capture layer {layer}: the model has {} layers",
                    cfg.num_hidden_layers
                )));
            }
        }
        if state.layers.len() != self.layers.len() {
            return Err(ModelError::Other(
                "model state belongs to another model".into(),
            ));
        }
        let mut h = Vec::with_capacity(tokens.len());
        for &tok in tokens {
            if tok as usize >= cfg.vocab_size {
                return Err(ModelError::Other(format!(
                    "token id {tok} is outside the vocabulary (size {})",
                    cfg.vocab_size
                )));
            }
            h.push(self.embed_tokens.row(tok as usize)?);
        }
        let mut captured: Vec<(usize, Vec<Vec<f32>>)> = Vec::new();
        for (i, (layer, layer_state)) in self.layers.iter().zip(state.layers.iter_mut()).enumerate()
        {
            let normed: Vec<Vec<f32>> = h
                .iter()
                .map(|x| rms_norm_zero_centred(x, &layer.input_layernorm, cfg.rms_norm_eps))
                .collect();
            let mixed = match (&layer.mixer, layer_state) {
                (Mixer::Attention(a), LayerState::Attention(cache)) => a.forward(&normed, cache)?,
                (Mixer::DeltaNet(g), LayerState::DeltaNet(s)) => {
                    g.forward(&normed, s, options.delta_rule)?
                }
                _ => {
                    return Err(ModelError::Other(format!(
                        "layer {i}: state of the wrong type"
                    )));
                }
            };
            add_in_place(&mut h, &mixed);
            let normed: Vec<Vec<f32>> = h
                .iter()
                .map(|x| {
                    rms_norm_zero_centred(x, &layer.post_attention_layernorm, cfg.rms_norm_eps)
                })
                .collect();
            let mlp = layer.mlp.forward(&normed)?;
            add_in_place(&mut h, &mlp);
            if options.capture_layers.contains(&i) {
                captured.push((i, h.clone()));
            }
        }
        let hidden = options
            .capture_layers
            .iter()
            .filter_map(|l| captured.iter().find(|(i, _)| i == l).cloned())
            .collect();
        let start = state.position;
        state.position += tokens.len();
        let rows: Vec<usize> = match options.logits {
            LogitsWanted::None => vec![],
            LogitsWanted::Last => tokens.len().checked_sub(1).into_iter().collect(),
            LogitsWanted::All => (0..tokens.len()).collect(),
        };
        let finals: Vec<Vec<f32>> = rows
            .iter()
            .map(|&t| rms_norm_zero_centred(&h[t], &self.norm, cfg.rms_norm_eps))
            .collect();
        let head = self.lm_head.as_ref().unwrap_or(&self.embed_tokens);
        let logits = if finals.is_empty() {
            vec![]
        } else {
            head.forward(&finals)?
        };
        Ok(ForwardOutput {
            positions: rows.iter().map(|t| start + t).collect(),
            logits,
            hidden,
        })
    }

    /// Logits of every position of `tokens` from a fresh state.
    pub fn prompt_logits(&self, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        let mut state = self.new_state();
        let opts = ForwardOptions {
            logits: LogitsWanted::All,
            ..Default::default()
        };
        Ok(self.forward(&mut state, tokens, &opts)?.logits)
    }

    /// Greedy continuation of `prompt` by `steps` tokens (prefill, then one
    /// token per call); returns the generated ids and each step's logits.
    pub fn greedy(&self, prompt: &[u32], steps: usize) -> Result<(Vec<u32>, Vec<Vec<f32>>)> {
        let mut state = self.new_state();
        let opts = ForwardOptions::default();
        let mut out = self.forward(&mut state, prompt, &opts)?;
        let mut ids = Vec::with_capacity(steps);
        let mut all = Vec::with_capacity(steps);
        for step in 0..steps {
            let logits = out
                .logits
                .pop()
                .ok_or_else(|| ModelError::Other("empty prompt".into()))?;
            let next = crate::sampling::argmax(&logits);
            ids.push(next);
            all.push(logits);
            if step + 1 < steps {
                out = self.forward(&mut state, &[next], &opts)?;
            }
        }
        Ok((ids, all))
    }
}

fn add_in_place(h: &mut [Vec<f32>], delta: &[Vec<f32>]) {
    for (x, d) in h.iter_mut().zip(delta) {
        for (a, b) in x.iter_mut().zip(d) {
            *a += b;
        }
    }
}
