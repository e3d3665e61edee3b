//! `GgufSource`: a llama.cpp `qwen35` GGUF presented as canonical HF tensors
//! (see the CONTRACT in `weights.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::names::{TensorSpec, Transform, reorder_heads, tensor_specs};
use super::reader::{GgufFile, MetaValue};
use crate::config::{LayerType, Qwen35Config, layer_types_from_interval};
use crate::error::{ModelError, Result};
use crate::weights::{DType, Tensor, TensorData, WeightSource};

pub struct GgufSource {
    file: GgufFile,
    config: Qwen35Config,
    specs: HashMap<String, TensorSpec>,
}

impl std::fmt::Debug for GgufSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufSource")
            .field("file", &self.file)
            .field("config", &self.config.name)
            .finish()
    }
}

fn cfg_err(path: &Path, msg: impl std::fmt::Display) -> ModelError {
    ModelError::Config(format!("{}: {msg}", path.display()))
}

/// Map `qwen35.*` metadata (spec §2.6) onto [`Qwen35Config`].
pub fn config_from_gguf(file: &GgufFile) -> Result<Qwen35Config> {
    let path = &file.path;
    let arch = file
        .metadata("general.architecture")
        .and_then(MetaValue::as_str)
        .ok_or_else(|| cfg_err(path, "missing general.architecture"))?;
    if arch != "qwen35" {
        return Err(cfg_err(
            path,
            format!("architecture `{arch}` is not supported (expected qwen35)"),
        ));
    }
    let key = |k: &str| format!("{arch}.{k}");
    // Integer fields; llama.cpp also accepts a per-layer array (all equal here).
    let int = |k: &str| -> Result<usize> {
        let full = key(k);
        match file.metadata(&full) {
            Some(MetaValue::Array(a)) => {
                let v = a
                    .as_i64s()
                    .ok_or_else(|| cfg_err(path, format!("`{full}` is not an integer array")))?;
                let first = *v
                    .first()
                    .ok_or_else(|| cfg_err(path, format!("`{full}` is empty")))?;
                if v.iter().any(|&x| x != first) || first < 0 {
                    return Err(cfg_err(path, format!("`{full}` varies per layer: {v:?}")));
                }
                Ok(first as usize)
            }
            Some(v) => v
                .as_u64()
                .filter(|&x| x < (1 << 40))
                .map(|x| x as usize)
                .ok_or_else(|| cfg_err(path, format!("`{full}` is not a non-negative integer"))),
            None => Err(cfg_err(path, format!("missing `{full}`"))),
        }
    };
    let opt_int = |k: &str| file.metadata(&key(k)).and_then(MetaValue::as_u64);
    // f32 metadata is widened through its shortest decimal form, so an eps
    // written as 1e-6f32 reads back as 1e-6 rather than 9.99999997e-7.
    let float = |k: &str| -> Result<f64> {
        file.metadata(&key(k))
            .and_then(|v| match v {
                MetaValue::F32(x) => format!("{x}").parse::<f64>().ok(),
                other => other.as_f64(),
            })
            .ok_or_else(|| cfg_err(path, format!("missing or non-numeric `{}`", key(k))))
    };

    let block_count = int("block_count")?;
    let nextn = opt_int("nextn_predict_layers").unwrap_or(0) as usize;
    let num_hidden_layers = block_count
        .checked_sub(nextn)
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            cfg_err(
                path,
                format!("block_count {block_count} <= nextn_predict_layers {nextn}"),
            )
        })?;
    let interval = opt_int("full_attention_interval").unwrap_or(4) as usize;
    // Newer converters also write the per-layer recurrent flags (MTP layers last).
    let recurrent: Option<Vec<bool>> = match file.metadata(&key("attention.recurrent_layers")) {
        Some(MetaValue::Array(crate::gguf::MetaArray::Bool(v))) => Some(v.clone()),
        Some(MetaValue::Array(a)) => a.as_i64s().map(|v| v.iter().map(|&x| x != 0).collect()),
        _ => None,
    };
    let head_dim = int("attention.key_length")?;
    let rope_dims = int("rope.dimension_count")?;
    let hv = int("ssm.time_step_rank")?;
    let inner = int("ssm.inner_size")?;
    if hv == 0 || inner % hv != 0 {
        return Err(cfg_err(
            path,
            format!("ssm.inner_size {inner} is not a multiple of ssm.time_step_rank {hv}"),
        ));
    }
    let vocab_size = match file
        .metadata("tokenizer.ggml.tokens")
        .and_then(MetaValue::as_array)
    {
        Some(a) => a.len(),
        None => int("vocab_size")
            .map_err(|_| cfg_err(path, "no tokenizer.ggml.tokens and no vocab_size"))?,
    };
    let eos_token_ids = file
        .metadata("tokenizer.ggml.eos_token_id")
        .and_then(MetaValue::as_u64)
        .map(|v| vec![v as u32])
        .unwrap_or_default();
    let name = file
        .metadata("general.name")
        .and_then(MetaValue::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| path.display().to_string());
    let cfg = Qwen35Config {
        name,
        vocab_size,
        hidden_size: int("embedding_length")?,
        intermediate_size: int("feed_forward_length")?,
        num_hidden_layers,
        layer_types: match &recurrent {
            Some(r) if r.len() >= num_hidden_layers => r[..num_hidden_layers]
                .iter()
                .map(|&rec| {
                    if rec {
                        LayerType::LinearAttention
                    } else {
                        LayerType::FullAttention
                    }
                })
                .collect(),
            Some(r) => {
                return Err(cfg_err(
                    path,
                    format!(
                        "attention.recurrent_layers has {} entries for {num_hidden_layers} layers",
                        r.len()
                    ),
                ));
            }
            None => layer_types_from_interval(num_hidden_layers, interval),
        },
        num_attention_heads: int("attention.head_count")?,
        num_key_value_heads: int("attention.head_count_kv")?,
        head_dim,
        rope_theta: float("rope.freq_base")?,
        partial_rotary_factor: if head_dim > 0 {
            rope_dims as f64 / head_dim as f64
        } else {
            0.0
        },
        linear_num_key_heads: int("ssm.group_count")?,
        linear_num_value_heads: hv,
        linear_key_head_dim: int("ssm.state_size")?,
        linear_value_head_dim: inner / hv,
        linear_conv_kernel_dim: int("ssm.conv_kernel")?,
        rms_norm_eps: float("attention.layer_norm_rms_epsilon")?,
        tie_word_embeddings: file.tensor_info("output.weight").is_none(),
        max_position_embeddings: opt_int("context_length").unwrap_or(262_144) as usize,
        eos_token_ids,
    };
    cfg.validate()
        .map_err(|e| cfg_err(path, format!("GGUF metadata gives an invalid config: {e}")))?;
    Ok(cfg)
}

impl GgufSource {
    /// Open and validate a `qwen35` GGUF: metadata -> config, and every
    /// expected tensor present with the expected shape and a supported type.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let config = config_from_gguf(&file)?;
        let mut specs = HashMap::new();
        for spec in tensor_specs(&config) {
            let info = file
                .tensor_info(&spec.gguf)
                .ok_or_else(|| ModelError::MissingTensor {
                    name: format!("{} (GGUF `{}`)", spec.canonical, spec.gguf),
                })?;
            let dims: Vec<usize> = info.dims.iter().map(|&d| d as usize).collect();
            // ssm_norm may be stored per value head ({dv, Hv}); the HF tensor is shared.
            if dims != spec.gguf_dims {
                return Err(ModelError::ShapeMismatch {
                    name: format!("{} (GGUF `{}`, ggml dims)", spec.canonical, spec.gguf),
                    expected: spec.gguf_dims.clone(),
                    found: dims,
                });
            }
            if info.ggml_type.dtype().is_none() {
                return Err(ModelError::UnsupportedDtype {
                    name: spec.gguf.clone(),
                    dtype: info.ggml_type.name(),
                });
            }
            specs.insert(spec.canonical.clone(), spec);
        }
        Ok(Self {
            file,
            config,
            specs,
        })
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Chat template embedded in the file, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.file
            .metadata("tokenizer.chat_template")
            .and_then(MetaValue::as_str)
    }
}

impl WeightSource for GgufSource {
    fn config(&self) -> &Qwen35Config {
        &self.config
    }

    fn contains(&self, canonical_name: &str) -> bool {
        self.specs.contains_key(canonical_name)
    }

    fn tensor(&self, canonical_name: &str) -> Result<Tensor> {
        let spec = self
            .specs
            .get(canonical_name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: canonical_name.to_string(),
            })?;
        let info = self
            .file
            .tensor_info(&spec.gguf)
            .ok_or_else(|| ModelError::MissingTensor {
                name: spec.gguf.clone(),
            })?;
        let dtype = info
            .ggml_type
            .dtype()
            .ok_or_else(|| ModelError::UnsupportedDtype {
                name: spec.gguf.clone(),
                dtype: info.ggml_type.name(),
            })?;
        let mapped = Tensor {
            name: canonical_name.to_string(),
            dtype,
            shape: spec.shape.clone(),
            data: TensorData::Mapped {
                map: Arc::clone(self.file.map()),
                offset: self.file.absolute_offset(info),
                len: info.size as usize,
            },
        };
        let hk = self.config.linear_num_key_heads;
        let r = self.config.v_heads_per_k_head();
        let f32_tensor =
            |values: Vec<f32>| Tensor::from_f32(canonical_name, spec.shape.clone(), &values);
        Ok(match spec.transform {
            Transform::None => mapped,
            Transform::PlusOne => {
                f32_tensor(mapped.to_f32()?.into_iter().map(|v| v - 1.0).collect())
            }
            Transform::NegExp => {
                let vals = mapped.to_f32()?;
                // The A_log order is per value head too.
                let vals = if r > 1 {
                    reorder_heads(&vals, 1, hk, r, false)
                } else {
                    vals
                };
                f32_tensor(vals.into_iter().map(|a| (-a).ln()).collect())
            }
            Transform::ReorderRows { .. } | Transform::ReorderCols { .. } if r == 1 => mapped,
            Transform::ReorderRows {
                start,
                rows,
                head_rows,
            } => {
                // Rows are whole quant blocks, so reorder bytes and keep the type.
                // A 1-D tensor's "rows" are single values.
                let ne0 = if info.dims.len() == 1 {
                    1
                } else {
                    info.dims[0] as usize
                };
                let row_bytes = dtype.bytes_for(ne0).ok_or_else(|| {
                    ModelError::Other(format!(
                        "`{}`: row of {ne0} is not whole {} blocks",
                        spec.gguf,
                        dtype.name()
                    ))
                })?;
                let bytes = mapped.bytes();
                let (a, b) = (start * row_bytes, (start + rows) * row_bytes);
                if b > bytes.len() {
                    return Err(ModelError::Other(format!(
                        "`{}`: value rows out of range",
                        spec.gguf
                    )));
                }
                let mut out = Vec::with_capacity(bytes.len());
                out.extend_from_slice(&bytes[..a]);
                out.extend(reorder_heads(
                    &bytes[a..b],
                    head_rows * row_bytes,
                    hk,
                    r,
                    false,
                ));
                out.extend_from_slice(&bytes[b..]);
                Tensor {
                    data: TensorData::Owned(Arc::new(out)),
                    ..mapped
                }
            }
            Transform::ReorderCols { head_cols } => {
                let vals = mapped.to_f32()?;
                let ne0 = info.dims[0] as usize;
                let mut out = Vec::with_capacity(vals.len());
                for row in vals.chunks_exact(ne0) {
                    out.extend(reorder_heads(row, head_cols, hk, r, false));
                }
                f32_tensor(out)
            }
        })
    }
}

/// Check a tensor for NaN/Inf, naming the first bad element.
pub fn check_finite(t: &Tensor) -> Result<()> {
    if let Some(index) = t.to_f32()?.iter().position(|v| !v.is_finite()) {
        return Err(ModelError::NonFinite {
            name: t.name.clone(),
            index,
        });
    }
    Ok(())
}

/// Check every tensor of a source for NaN/Inf (slow: dequantises everything).
pub fn check_all_finite(src: &dyn WeightSource) -> Result<()> {
    for spec in tensor_specs(src.config()) {
        check_finite(&src.tensor(&spec.canonical)?)?;
    }
    Ok(())
}

#[allow(dead_code)]
fn _dtype_is_used(_: DType) {}
