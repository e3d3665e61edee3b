//! Canonical (HF) tensor names and shapes of a Qwen3.5 text model, and their
//! llama.cpp `qwen35` GGUF counterparts with the conversion each one needs
//! (spec §2.5, §2.6).

use crate::config::{LayerType, Qwen35Config};

/// How a GGUF tensor's values differ from the canonical HF tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// Same values, same layout (shape reversed from ggml order only).
    None,
    /// Zero-centred norm weight: GGUF stores `w + 1`.
    PlusOne,
    /// `ssm_a = -exp(A_log)`.
    NegExp,
    /// Whole rows are value heads of `head_rows` rows each, stored in tiled
    /// order from row `start` on (`rows` rows); the other rows are untouched.
    ReorderRows {
        start: usize,
        rows: usize,
        head_rows: usize,
    },
    /// Columns (the ggml ne0 axis) are value heads of `head_cols` columns each, in tiled order.
    ReorderCols { head_cols: usize },
}

/// One canonical tensor and where it lives in a llama.cpp GGUF.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub canonical: String,
    /// HF shape (outermost first).
    pub shape: Vec<usize>,
    pub gguf: String,
    /// ggml dims (ne0 first) in the GGUF file.
    pub gguf_dims: Vec<usize>,
    pub transform: Transform,
    /// Only when `Hv != Hk` do V-head transforms change anything; `transform`
    /// is reported regardless (a no-op when r == 1).
    pub is_norm: bool,
}

/// Every canonical tensor of the text model, in checkpoint order.
pub fn tensor_specs(cfg: &Qwen35Config) -> Vec<TensorSpec> {
    let d = cfg.hidden_size;
    let mut out = Vec::new();
    let mut push = |canonical: String, shape: Vec<usize>, gguf: String, transform: Transform| {
        let gguf_dims = if canonical.ends_with("conv1d.weight") {
            // HF [conv_dim, 1, K] -> ggml {K, conv_dim}.
            vec![shape[2], shape[0]]
        } else {
            shape.iter().rev().copied().collect()
        };
        let is_norm =
            shape.len() == 1 && !canonical.ends_with("dt_bias") && !canonical.ends_with("A_log");
        out.push(TensorSpec {
            canonical,
            shape,
            gguf,
            gguf_dims,
            transform,
            is_norm,
        });
    };
    push(
        "embed_tokens.weight".into(),
        vec![cfg.vocab_size, d],
        "token_embd.weight".into(),
        Transform::None,
    );
    let (hk, hv) = (cfg.linear_num_key_heads, cfg.linear_num_value_heads);
    let dv = cfg.linear_value_head_dim;
    let kd = cfg.linear_key_dim();
    let vd = cfg.linear_value_dim();
    for (i, ty) in cfg.layer_types.iter().enumerate() {
        let c = |s: &str| format!("layers.{i}.{s}");
        let g = |s: &str| format!("blk.{i}.{s}");
        push(
            c("input_layernorm.weight"),
            vec![d],
            g("attn_norm.weight"),
            Transform::PlusOne,
        );
        match ty {
            LayerType::FullAttention => {
                push(
                    c("self_attn.q_proj.weight"),
                    vec![cfg.q_proj_out(), d],
                    g("attn_q.weight"),
                    Transform::None,
                );
                push(
                    c("self_attn.k_proj.weight"),
                    vec![cfg.kv_dim(), d],
                    g("attn_k.weight"),
                    Transform::None,
                );
                push(
                    c("self_attn.v_proj.weight"),
                    vec![cfg.kv_dim(), d],
                    g("attn_v.weight"),
                    Transform::None,
                );
                push(
                    c("self_attn.o_proj.weight"),
                    vec![d, cfg.attn_out_dim()],
                    g("attn_output.weight"),
                    Transform::None,
                );
                push(
                    c("self_attn.q_norm.weight"),
                    vec![cfg.head_dim],
                    g("attn_q_norm.weight"),
                    Transform::PlusOne,
                );
                push(
                    c("self_attn.k_norm.weight"),
                    vec![cfg.head_dim],
                    g("attn_k_norm.weight"),
                    Transform::PlusOne,
                );
            }
            LayerType::LinearAttention => {
                push(
                    c("linear_attn.in_proj_qkv.weight"),
                    vec![cfg.conv_dim(), d],
                    g("attn_qkv.weight"),
                    Transform::ReorderRows {
                        start: 2 * kd,
                        rows: vd,
                        head_rows: dv,
                    },
                );
                push(
                    c("linear_attn.in_proj_z.weight"),
                    vec![vd, d],
                    g("attn_gate.weight"),
                    Transform::ReorderRows {
                        start: 0,
                        rows: vd,
                        head_rows: dv,
                    },
                );
                push(
                    c("linear_attn.in_proj_b.weight"),
                    vec![hv, d],
                    g("ssm_beta.weight"),
                    Transform::ReorderRows {
                        start: 0,
                        rows: hv,
                        head_rows: 1,
                    },
                );
                push(
                    c("linear_attn.in_proj_a.weight"),
                    vec![hv, d],
                    g("ssm_alpha.weight"),
                    Transform::ReorderRows {
                        start: 0,
                        rows: hv,
                        head_rows: 1,
                    },
                );
                push(
                    c("linear_attn.conv1d.weight"),
                    vec![cfg.conv_dim(), 1, cfg.linear_conv_kernel_dim],
                    g("ssm_conv1d.weight"),
                    Transform::ReorderRows {
                        start: 2 * kd,
                        rows: vd,
                        head_rows: dv,
                    },
                );
                push(
                    c("linear_attn.dt_bias"),
                    vec![hv],
                    g("ssm_dt.bias"),
                    Transform::ReorderRows {
                        start: 0,
                        rows: hv,
                        head_rows: 1,
                    },
                );
                push(
                    c("linear_attn.A_log"),
                    vec![hv],
                    g("ssm_a"),
                    Transform::NegExp,
                );
                push(
                    c("linear_attn.norm.weight"),
                    vec![cfg.linear_value_head_dim],
                    g("ssm_norm.weight"),
                    Transform::None,
                );
                push(
                    c("linear_attn.out_proj.weight"),
                    vec![d, vd],
                    g("ssm_out.weight"),
                    Transform::ReorderCols { head_cols: dv },
                );
            }
        }
        push(
            c("post_attention_layernorm.weight"),
            vec![d],
            g("post_attention_norm.weight"),
            Transform::PlusOne,
        );
        push(
            c("mlp.gate_proj.weight"),
            vec![cfg.intermediate_size, d],
            g("ffn_gate.weight"),
            Transform::None,
        );
        push(
            c("mlp.up_proj.weight"),
            vec![cfg.intermediate_size, d],
            g("ffn_up.weight"),
            Transform::None,
        );
        push(
            c("mlp.down_proj.weight"),
            vec![d, cfg.intermediate_size],
            g("ffn_down.weight"),
            Transform::None,
        );
    }
    push(
        "norm.weight".into(),
        vec![d],
        "output_norm.weight".into(),
        Transform::PlusOne,
    );
    if !cfg.tie_word_embeddings {
        push(
            "lm_head.weight".into(),
            vec![cfg.vocab_size, d],
            "output.weight".into(),
            Transform::None,
        );
    }
    let _ = hk;
    out
}

/// Position in tiled (GGUF) order of value head `j` given in grouped (HF)
/// order: HF `j = k·r + v` (k-head k, its v-th value head) is GGUF `v·Hk + k`.
pub fn tiled_position(j: usize, hk: usize, r: usize) -> usize {
    (j % r) * hk + j / r
}

/// Grouped (HF) index of the value head at tiled (GGUF) position `p`.
pub fn grouped_index(p: usize, hk: usize, r: usize) -> usize {
    (p % hk) * r + p / hk
}

/// Reorder `heads` consecutive chunks of `chunk` items: `to_tiled` moves HF
/// (grouped) order to GGUF (tiled) order, otherwise the reverse.
pub fn reorder_heads<T: Copy>(
    src: &[T],
    chunk: usize,
    hk: usize,
    r: usize,
    to_tiled: bool,
) -> Vec<T> {
    let heads = hk * r;
    debug_assert_eq!(src.len(), heads * chunk);
    let mut out = Vec::with_capacity(src.len());
    for p in 0..heads {
        // Output slot p takes the source head that belongs there.
        let from = if to_tiled {
            grouped_index(p, hk, r)
        } else {
            tiled_position(p, hk, r)
        };
        out.extend_from_slice(&src[from * chunk..(from + 1) * chunk]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiled_and_grouped_are_inverse_and_match_the_spec_example() {
        let (hk, r) = (16, 3);
        // HF [K0:v0,v1,v2 | K1:...] -> GGUF [K0v0, K1v0, ..., K15v0, K0v1, ...]
        assert_eq!(tiled_position(0, hk, r), 0);
        assert_eq!(tiled_position(1, hk, r), 16); // K0v1
        assert_eq!(tiled_position(3, hk, r), 1); // K1v0
        for j in 0..hk * r {
            assert_eq!(grouped_index(tiled_position(j, hk, r), hk, r), j);
        }
        let src: Vec<u32> = (0..12).collect(); // hk=2, r=3, chunk 2
        let t = reorder_heads(&src, 2, 2, 3, true);
        assert_eq!(t, vec![0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11]);
        assert_eq!(reorder_heads(&t, 2, 2, 3, false), src);
    }

    #[test]
    fn spec_tensor_counts() {
        // spec §2.5: 0.8B has 320 text tensors, 27B 851.
        assert_eq!(tensor_specs(&Qwen35Config::qwen35_0_8b()).len(), 320);
        assert_eq!(tensor_specs(&Qwen35Config::qwen35_27b()).len(), 851);
    }
}
