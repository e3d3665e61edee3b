//! The tensor list of a Qwen3.5 text model (canonical names and HF shapes,
//! spec §2.5), and a whole-checkpoint validation over any [`WeightSource`].

use crate::config::{LayerType, Qwen35Config};
use crate::error::{ModelError, Result};
use crate::weights::{WeightSource, expect_shape};

/// Every canonical tensor of the text model with its HF shape, in a stable
/// order (embedding, layers in order, final norm, `lm_head` when untied).
pub fn expected_tensors(cfg: &Qwen35Config) -> Vec<(String, Vec<usize>)> {
    let d = cfg.hidden_size;
    let mut v: Vec<(String, Vec<usize>)> =
        vec![("embed_tokens.weight".into(), vec![cfg.vocab_size, d])];
    for (i, ty) in cfg.layer_types.iter().enumerate() {
        let p = format!("layers.{i}");
        v.push((format!("{p}.input_layernorm.weight"), vec![d]));
        match ty {
            LayerType::FullAttention => {
                let a = format!("{p}.self_attn");
                v.push((format!("{a}.q_proj.weight"), vec![cfg.q_proj_out(), d]));
                v.push((format!("{a}.k_proj.weight"), vec![cfg.kv_dim(), d]));
                v.push((format!("{a}.v_proj.weight"), vec![cfg.kv_dim(), d]));
                v.push((format!("{a}.o_proj.weight"), vec![d, cfg.attn_out_dim()]));
                v.push((format!("{a}.q_norm.weight"), vec![cfg.head_dim]));
                v.push((format!("{a}.k_norm.weight"), vec![cfg.head_dim]));
            }
            LayerType::LinearAttention => {
                let a = format!("{p}.linear_attn");
                let hv = cfg.linear_num_value_heads;
                v.push((format!("{a}.in_proj_qkv.weight"), vec![cfg.conv_dim(), d]));
                v.push((
                    format!("{a}.in_proj_z.weight"),
                    vec![cfg.linear_value_dim(), d],
                ));
                v.push((format!("{a}.in_proj_b.weight"), vec![hv, d]));
                v.push((format!("{a}.in_proj_a.weight"), vec![hv, d]));
                v.push((
                    format!("{a}.conv1d.weight"),
                    vec![cfg.conv_dim(), 1, cfg.linear_conv_kernel_dim],
                ));
                v.push((format!("{a}.dt_bias"), vec![hv]));
                v.push((format!("{a}.A_log"), vec![hv]));
                v.push((format!("{a}.norm.weight"), vec![cfg.linear_value_head_dim]));
                v.push((
                    format!("{a}.out_proj.weight"),
                    vec![d, cfg.linear_value_dim()],
                ));
            }
        }
        v.push((format!("{p}.post_attention_layernorm.weight"), vec![d]));
        v.push((
            format!("{p}.mlp.gate_proj.weight"),
            vec![cfg.intermediate_size, d],
        ));
        v.push((
            format!("{p}.mlp.up_proj.weight"),
            vec![cfg.intermediate_size, d],
        ));
        v.push((
            format!("{p}.mlp.down_proj.weight"),
            vec![d, cfg.intermediate_size],
        ));
    }
    v.push(("norm.weight".into(), vec![d]));
    if !cfg.tie_word_embeddings {
        v.push(("lm_head.weight".into(), vec![cfg.vocab_size, d]));
    }
    v
}

/// What [`validate_all`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationReport {
    pub tensors: usize,
    pub elements: u64,
    /// Whether values were scanned for NaN/Inf.
    pub scanned_values: bool,
}

/// Check that every expected tensor exists with its HF shape and a usable
/// dtype; with `scan_values`, also convert it and reject NaN/Inf (slow on big
/// checkpoints: it reads every byte).
pub fn validate_all(source: &dyn WeightSource, scan_values: bool) -> Result<ValidationReport> {
    let cfg = source.config();
    let expected = expected_tensors(cfg);
    let mut elements = 0u64;
    for (name, shape) in &expected {
        let t = source.tensor(name)?;
        expect_shape(&t, shape)?;
        elements += t.numel() as u64;
        if scan_values {
            let values = t.to_f32()?;
            if let Some(index) = values.iter().position(|x| !x.is_finite()) {
                return Err(ModelError::NonFinite {
                    name: name.clone(),
                    index,
                });
            }
        } else if t.dtype.bytes_for(t.numel()) != Some(t.bytes().len()) {
            return Err(ModelError::Other(format!(
                "tensor `{name}`: {} bytes of data for shape {:?} of {}",
                t.bytes().len(),
                t.shape,
                t.dtype.name()
            )));
        }
    }
    Ok(ValidationReport {
        tensors: expected.len(),
        elements,
        scanned_values: scan_values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_counts_match_spec() {
        // spec §2.5: 0.8B = 18*14 + 6*11 + 2 = 320; 27B = 48*14 + 16*11 + 3 = 851.
        assert_eq!(expected_tensors(&Qwen35Config::qwen35_0_8b()).len(), 320);
        assert_eq!(expected_tensors(&Qwen35Config::qwen35_27b()).len(), 851);
    }

    #[test]
    fn element_count_matches_parameter_count() {
        for cfg in [Qwen35Config::qwen35_0_8b(), Qwen35Config::qwen35_27b()] {
            let n: u64 = expected_tensors(&cfg)
                .iter()
                .map(|(_, s)| s.iter().product::<usize>() as u64)
                .sum();
            assert_eq!(n, cfg.parameter_count());
        }
    }
}
