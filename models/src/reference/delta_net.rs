//! Gated DeltaNet layer (spec §2.3): in_proj_qkv/z/b/a, causal depthwise
//! conv + SiLU over the q|k|v channels with a (K−1)-input conv state, L2 norm
//! of q and k, `q · dk^-½`, gates β and g, value head j reading key head
//! `j / (Hv/Hk)`, the gated delta rule, gated RMSNorm, out_proj.

use crate::config::Qwen35Config;
use crate::error::Result;
use crate::weights::{WeightSource, expect_shape};

use super::delta_rule::{self, HeadInputs};
use super::linear::Linear;
use super::ops::{gated_rms_norm, l2_normalize, sigmoid, silu, softplus};

/// How the recurrence is evaluated over a multi-token call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeltaRuleMode {
    /// Chunked for T > 1, recurrent for T = 1 (what HF does).
    #[default]
    Auto,
    Recurrent,
    Chunked,
}

/// State of one GDN layer.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaNetState {
    /// The last K−1 pre-conv inputs (`conv_dim` each), oldest first; zeros at
    /// sequence start.
    pub conv: Vec<Vec<f32>>,
    /// Recurrent state `[Hv][dk][dv]` (HF layout), flattened.
    pub recurrent: Vec<f32>,
}

impl DeltaNetState {
    pub fn new(cfg: &Qwen35Config) -> Self {
        Self {
            conv: vec![vec![0f32; cfg.conv_dim()]; cfg.linear_conv_kernel_dim - 1],
            recurrent: vec![
                0f32;
                cfg.linear_num_value_heads
                    * cfg.linear_key_head_dim
                    * cfg.linear_value_head_dim
            ],
        }
    }
}

#[derive(Debug, Clone)]
pub struct GatedDeltaNet {
    in_proj_qkv: Linear,
    in_proj_z: Linear,
    in_proj_b: Linear,
    in_proj_a: Linear,
    /// `[conv_dim][K]`; tap K−1 multiplies the current token.
    conv_weight: Vec<f32>,
    dt_bias: Vec<f32>,
    a_log: Vec<f32>,
    norm: Vec<f32>,
    out_proj: Linear,
    hk: usize,
    hv: usize,
    dk: usize,
    dv: usize,
    kernel: usize,
    eps: f64,
}

impl GatedDeltaNet {
    pub fn load(source: &dyn WeightSource, cfg: &Qwen35Config, layer: usize) -> Result<Self> {
        let p = format!("layers.{layer}.linear_attn");
        let d = cfg.hidden_size;
        let hv = cfg.linear_num_value_heads;
        let tensor = |name: String, shape: &[usize]| -> Result<Vec<f32>> {
            let t = source.tensor(&name)?;
            expect_shape(&t, shape)?;
            t.to_f32()
        };
        Ok(Self {
            in_proj_qkv: Linear::load(
                source,
                &format!("{p}.in_proj_qkv.weight"),
                cfg.conv_dim(),
                d,
            )?,
            in_proj_z: Linear::load(
                source,
                &format!("{p}.in_proj_z.weight"),
                cfg.linear_value_dim(),
                d,
            )?,
            in_proj_b: Linear::load(source, &format!("{p}.in_proj_b.weight"), hv, d)?,
            in_proj_a: Linear::load(source, &format!("{p}.in_proj_a.weight"), hv, d)?,
            conv_weight: tensor(
                format!("{p}.conv1d.weight"),
                &[cfg.conv_dim(), 1, cfg.linear_conv_kernel_dim],
            )?,
            dt_bias: tensor(format!("{p}.dt_bias"), &[hv])?,
            a_log: tensor(format!("{p}.A_log"), &[hv])?,
            norm: tensor(format!("{p}.norm.weight"), &[cfg.linear_value_head_dim])?,
            out_proj: Linear::load(
                source,
                &format!("{p}.out_proj.weight"),
                d,
                cfg.linear_value_dim(),
            )?,
            hk: cfg.linear_num_key_heads,
            hv,
            dk: cfg.linear_key_head_dim,
            dv: cfg.linear_value_head_dim,
            kernel: cfg.linear_conv_kernel_dim,
            eps: cfg.rms_norm_eps,
        })
    }

    pub fn forward(
        &self,
        xs: &[Vec<f32>],
        state: &mut DeltaNetState,
        mode: DeltaRuleMode,
    ) -> Result<Vec<Vec<f32>>> {
        let t_len = xs.len();
        let (hk, hv, dk, dv, kk) = (self.hk, self.hv, self.dk, self.dv, self.kernel);
        let key_dim = hk * dk;
        let qkv = self.in_proj_qkv.forward(xs)?;
        let z = self.in_proj_z.forward(xs)?;
        let b = self.in_proj_b.forward(xs)?;
        let a = self.in_proj_a.forward(xs)?;

        // Causal depthwise conv over [conv state (K−1 inputs) ++ new inputs].
        let conv_dim = qkv.first().map_or(0, Vec::len);
        let window: Vec<&Vec<f32>> = state.conv.iter().chain(qkv.iter()).collect();
        let mut conv_out = Vec::with_capacity(t_len);
        for t in 0..t_len {
            let y: Vec<f32> = (0..conv_dim)
                .map(|c| {
                    let mut acc = 0f64;
                    for j in 0..kk {
                        acc += self.conv_weight[c * kk + j] as f64 * window[t + j][c] as f64;
                    }
                    silu(acc as f32)
                })
                .collect();
            conv_out.push(y);
        }
        let new_conv: Vec<Vec<f32>> = window[window.len() - (kk - 1)..]
            .iter()
            .map(|v| (*v).clone())
            .collect();
        state.conv = new_conv;

        // Split into per-head q, k (Hk heads) and v (Hv heads); normalise.
        let q_scale = 1.0 / (dk as f32).sqrt();
        let mut q = vec![vec![Vec::new(); t_len]; hk];
        let mut k = vec![vec![Vec::new(); t_len]; hk];
        let mut v = vec![vec![Vec::new(); t_len]; hv];
        for (t, y) in conv_out.iter().enumerate() {
            for h in 0..hk {
                let mut qh = y[h * dk..(h + 1) * dk].to_vec();
                l2_normalize(&mut qh, 1e-6);
                qh.iter_mut().for_each(|x| *x *= q_scale);
                q[h][t] = qh;
                let mut kh = y[key_dim + h * dk..key_dim + (h + 1) * dk].to_vec();
                l2_normalize(&mut kh, 1e-6);
                k[h][t] = kh;
            }
            for h in 0..hv {
                let base = 2 * key_dim + h * dv;
                v[h][t] = y[base..base + dv].to_vec();
            }
        }
        let mut beta = vec![vec![0f32; t_len]; hv];
        let mut g = vec![vec![0f32; t_len]; hv];
        for t in 0..t_len {
            for h in 0..hv {
                beta[h][t] = sigmoid(b[t][h]);
                g[h][t] = -self.a_log[h].exp() * softplus(a[t][h] + self.dt_bias[h]);
            }
        }

        let chunked = match mode {
            DeltaRuleMode::Auto => t_len > 1,
            DeltaRuleMode::Recurrent => false,
            DeltaRuleMode::Chunked => true,
        };
        let r = hv / hk;
        let state_len = dk * dv;
        let mut head_out = Vec::with_capacity(hv);
        for (j, s) in state.recurrent.chunks_exact_mut(state_len).enumerate() {
            // Value head j reads key head j / r (HF repeat_interleave).
            let kh = j / r;
            let inp = HeadInputs {
                q: &q[kh],
                k: &k[kh],
                v: &v[j],
                beta: &beta[j],
                g: &g[j],
            };
            head_out.push(if chunked {
                delta_rule::chunked(&inp, s, dk, dv)
            } else {
                delta_rule::recurrent(&inp, s, dk, dv)
            });
        }

        let mut normed = Vec::with_capacity(t_len);
        for t in 0..t_len {
            let mut o = Vec::with_capacity(hv * dv);
            for (j, out) in head_out.iter().enumerate() {
                o.extend(gated_rms_norm(
                    &out[t],
                    &z[t][j * dv..(j + 1) * dv],
                    &self.norm,
                    self.eps,
                ));
            }
            normed.push(o);
        }
        self.out_proj.forward(&normed)
    }
}
