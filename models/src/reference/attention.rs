//! Gated full attention (spec §2.2): per-head `[query | gate]` q_proj
//! output, zero-centred q/k norm, partial NeoX RoPE, GQA over a KV cache,
//! fp32 softmax, sigmoid output gate, o_proj.

use crate::config::Qwen35Config;
use crate::error::Result;
use crate::weights::{WeightSource, expect_shape};

use super::linear::Linear;
use super::ops::{Rope, rms_norm_zero_centred, sigmoid};

/// KV cache of one attention layer: per cached position, K (post norm and
/// RoPE) and V, each `num_key_value_heads * head_dim` values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KvCache {
    pub keys: Vec<Vec<f32>>,
    pub values: Vec<Vec<f32>>,
}

#[derive(Debug, Clone)]
pub struct GatedAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f64,
    rope: Rope,
}

impl GatedAttention {
    pub fn load(source: &dyn WeightSource, cfg: &Qwen35Config, layer: usize) -> Result<Self> {
        let p = format!("layers.{layer}.self_attn");
        let d = cfg.hidden_size;
        let vector = |name: String, len: usize| -> Result<Vec<f32>> {
            let t = source.tensor(&name)?;
            expect_shape(&t, &[len])?;
            t.to_f32()
        };
        Ok(Self {
            q_proj: Linear::load(source, &format!("{p}.q_proj.weight"), cfg.q_proj_out(), d)?,
            k_proj: Linear::load(source, &format!("{p}.k_proj.weight"), cfg.kv_dim(), d)?,
            v_proj: Linear::load(source, &format!("{p}.v_proj.weight"), cfg.kv_dim(), d)?,
            o_proj: Linear::load(source, &format!("{p}.o_proj.weight"), d, cfg.attn_out_dim())?,
            q_norm: vector(format!("{p}.q_norm.weight"), cfg.head_dim)?,
            k_norm: vector(format!("{p}.k_norm.weight"), cfg.head_dim)?,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
            eps: cfg.rms_norm_eps,
            rope: Rope::new(cfg.rotary_dim(), cfg.rope_theta),
        })
    }

    /// `xs`: the T normed inputs at positions `cache.keys.len()..`; appends
    /// their K/V to the cache and returns the T outputs (hidden size).
    pub fn forward(&self, xs: &[Vec<f32>], cache: &mut KvCache) -> Result<Vec<Vec<f32>>> {
        let hd = self.head_dim;
        let group = self.heads / self.kv_heads;
        let qg = self.q_proj.forward(xs)?;
        let ks = self.k_proj.forward(xs)?;
        let vs = self.v_proj.forward(xs)?;
        let start = cache.keys.len();
        let mut queries = Vec::with_capacity(xs.len());
        let mut gates = Vec::with_capacity(xs.len());
        for (t, ((qg, mut k), v)) in qg.into_iter().zip(ks).zip(vs).enumerate() {
            let pos = start + t;
            let mut q = Vec::with_capacity(self.heads * hd);
            let mut gate = Vec::with_capacity(self.heads * hd);
            for h in 0..self.heads {
                // Per head: [query (hd) | gate (hd)] (spec pitfall 2).
                let base = h * 2 * hd;
                let mut qh = rms_norm_zero_centred(&qg[base..base + hd], &self.q_norm, self.eps);
                self.rope.apply(&mut qh, pos);
                q.extend_from_slice(&qh);
                gate.extend_from_slice(&qg[base + hd..base + 2 * hd]);
            }
            for h in 0..self.kv_heads {
                let mut kh =
                    rms_norm_zero_centred(&k[h * hd..(h + 1) * hd], &self.k_norm, self.eps);
                self.rope.apply(&mut kh, pos);
                k[h * hd..(h + 1) * hd].copy_from_slice(&kh);
            }
            cache.keys.push(k);
            cache.values.push(v);
            queries.push(q);
            gates.push(gate);
        }
        let scale = 1.0 / (hd as f64).sqrt();
        let mut outs = Vec::with_capacity(xs.len());
        for (t, (q, gate)) in queries.iter().zip(&gates).enumerate() {
            let visible = start + t + 1; // causal: positions 0..=pos
            let mut o = vec![0f32; self.heads * hd];
            for h in 0..self.heads {
                let kvh = h / group;
                let qh = &q[h * hd..(h + 1) * hd];
                let scores: Vec<f64> = (0..visible)
                    .map(|p| {
                        let kh = &cache.keys[p][kvh * hd..(kvh + 1) * hd];
                        qh.iter()
                            .zip(kh)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                let oh = &mut o[h * hd..(h + 1) * hd];
                for d in 0..hd {
                    let mut acc = 0f64;
                    for (p, w) in weights.iter().enumerate() {
                        acc += w * cache.values[p][kvh * hd + d] as f64;
                    }
                    oh[d] = (acc / total) as f32;
                }
            }
            for (x, g) in o.iter_mut().zip(gate) {
                *x *= sigmoid(*g);
            }
            outs.push(o);
        }
        self.o_proj.forward(&outs)
    }
}
