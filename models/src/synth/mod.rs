//! Random-weight Qwen3.5 checkpoints at real shapes (`lucebox synth`), so
//! benchmarks and loaders can be exercised without downloads.
//!
//! Values are deterministic given the seed: every row of every tensor has its
//! own RNG seeded from (seed, tensor name, row), so the output does not depend
//! on the thread count or on how rows are chunked. Distributions (HF
//! semantics, spec §6): linear weights and embeddings uniform with std 0.02;
//! zero-centred norm weights uniform in ±0.1 (the +1 is implicit);
//! `linear_attn.norm` 1 ± 0.1; `A_log = ln U(1, 16)`; `dt_bias` 1 ± 0.1;
//! `conv1d` uniform ±0.5 (PyTorch's default bound for fan-in 4). Uniform
//! rather than Gaussian: one RNG draw per value keeps a 27B write I/O-bound.
//!
//! Writing streams tensor by tensor (large tensors in chunks of rows), so a
//! 27B checkpoint needs a few hundred MB of memory, not the whole model.

use std::collections::hash_map::DefaultHasher;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use half::bf16;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde_json::json;

use crate::chat::DEFAULT_CHATML_TEMPLATE;
use crate::config::{LayerType, Qwen35Config};
use crate::error::{ModelError, Result};
use crate::gguf::names::{Transform, reorder_heads};
use crate::gguf::{
    GgmlType, GgufFile, GgufWriter, MetaArray, MetaValue, TensorPlan, TensorSpec, tensor_specs,
};
use crate::quant;
use crate::tokenizer::TokenizerData;
use crate::weights::DType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthFormat {
    /// HF directory: config.json, model.safetensors (bf16), tokenizer files.
    Safetensors,
    /// One llama.cpp `qwen35` GGUF file with an embedded tokenizer.
    Gguf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthQuant {
    Bf16,
    Q8_0,
    /// llama.cpp's Q4_K_M recipe: Q4_K with Q6_K for the output/tied
    /// embedding and for attn_v / attn_qkv / ffn_down of the "more bits" layers.
    Q4KM,
}

impl SynthQuant {
    /// llama.cpp `general.file_type` (`llama_ftype`).
    pub fn file_type(self) -> u32 {
        match self {
            Self::Bf16 => 32,
            Self::Q8_0 => 7,
            Self::Q4KM => 15,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub format: SynthFormat,
    pub quant: SynthQuant,
    pub seed: u64,
    /// A GGUF whose tokenizer supplies the regular tokens and merges of the
    /// synthetic vocabulary (see [`TokenizerData::synthetic`]).
    pub vocab_base: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct SynthReport {
    pub path: PathBuf,
    pub bytes: u64,
    pub seconds: f64,
    pub tensors: usize,
    /// Describes where the vocabulary came from.
    pub vocab: String,
}

impl SynthReport {
    pub fn seconds_per_gb(&self) -> f64 {
        self.seconds / (self.bytes as f64 / 1e9).max(1e-9)
    }
}

/// Progress callback: (bytes written so far, total bytes).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

#[derive(Debug, Clone, Copy)]
enum Dist {
    /// Uniform in [lo, hi).
    Uniform(f32, f32),
    /// ln of uniform in [lo, hi).
    LnUniform(f32, f32),
}

fn dist_for(spec: &TensorSpec) -> Dist {
    let u = |std: f32| {
        let a = std * 3f32.sqrt();
        Dist::Uniform(-a, a)
    };
    let c = spec.canonical.as_str();
    if c.ends_with("A_log") {
        Dist::LnUniform(1.0, 16.0)
    } else if c.ends_with("dt_bias") || c.ends_with("linear_attn.norm.weight") {
        Dist::Uniform(0.9, 1.1)
    } else if c.ends_with("conv1d.weight") {
        Dist::Uniform(-0.5, 0.5)
    } else if spec.shape.len() == 1 {
        Dist::Uniform(-0.1, 0.1)
    } else {
        u(0.02)
    }
}

fn tensor_seed(seed: u64, name: &str) -> u64 {
    let mut h = DefaultHasher::new();
    // DefaultHasher::new() uses fixed keys (SipHash-1-3 with zero keys), so
    // this is stable across runs of the same build.
    seed.hash(&mut h);
    name.hash(&mut h);
    h.finish()
}

/// Rows `[r0, r1)` of the canonical (HF) tensor, row-major f32.
fn gen_rows(spec: &TensorSpec, seed: u64, r0: usize, r1: usize) -> Vec<f32> {
    let cols: usize = spec.shape[1..].iter().product::<usize>().max(1);
    let cols = if spec.shape.len() == 1 {
        spec.shape[0]
    } else {
        cols
    };
    let rows_total = if spec.shape.len() == 1 {
        1
    } else {
        spec.shape[0]
    };
    debug_assert!(r1 <= rows_total);
    let ts = tensor_seed(seed, &spec.canonical);
    let dist = dist_for(spec);
    let mut out = vec![0f32; (r1 - r0) * cols];
    out.par_chunks_mut(cols).enumerate().for_each(|(i, row)| {
        let mut rng =
            SmallRng::seed_from_u64(ts ^ ((r0 + i) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for v in row.iter_mut() {
            *v = match dist {
                Dist::Uniform(lo, hi) => rng.random_range(lo..hi),
                Dist::LnUniform(lo, hi) => rng.random_range(lo..hi).ln(),
            };
        }
    });
    out
}

fn rows_of(spec: &TensorSpec) -> (usize, usize) {
    if spec.shape.len() == 1 {
        (1, spec.shape[0])
    } else {
        (spec.shape[0], spec.shape[1..].iter().product())
    }
}

/// The whole canonical tensor (HF semantics) as f32: what a loader of the
/// written checkpoint must give back (up to the storage type's rounding).
pub fn canonical_values(spec: &TensorSpec, seed: u64) -> Vec<f32> {
    let (rows, _) = rows_of(spec);
    gen_rows(spec, seed, 0, rows)
}

/// HF values -> GGUF values (the inverse of what GgufSource undoes).
fn to_gguf_layout(spec: &TensorSpec, cfg: &Qwen35Config, mut v: Vec<f32>) -> Vec<f32> {
    let hk = cfg.linear_num_key_heads;
    let r = cfg.v_heads_per_k_head();
    match spec.transform {
        Transform::None => v,
        Transform::PlusOne => {
            v.iter_mut().for_each(|x| *x += 1.0);
            v
        }
        Transform::NegExp => {
            let v = if r > 1 {
                reorder_heads(&v, 1, hk, r, true)
            } else {
                v
            };
            v.into_iter().map(|a| -a.exp()).collect()
        }
        Transform::ReorderRows { .. } | Transform::ReorderCols { .. } if r == 1 => v,
        Transform::ReorderRows {
            start,
            rows,
            head_rows,
        } => {
            // A 1-D tensor's "rows" are single values.
            let ne0 = if spec.gguf_dims.len() == 1 {
                1
            } else {
                spec.gguf_dims[0]
            };
            let (a, b) = (start * ne0, (start + rows) * ne0);
            let mid = reorder_heads(&v[a..b], head_rows * ne0, hk, r, true);
            v[a..b].copy_from_slice(&mid);
            v
        }
        Transform::ReorderCols { head_cols } => {
            let ne0 = spec.gguf_dims[0];
            let mut out = Vec::with_capacity(v.len());
            for row in v.chunks_exact(ne0) {
                out.extend(reorder_heads(row, head_cols, hk, r, true));
            }
            out
        }
    }
}

fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i as i64 - (n / 8) as i64) % 3 == 2
}

fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The ggml type llama.cpp would give this tensor (llama-quant.cpp
/// `llama_tensor_get_type` for the ftypes we write): 1-D tensors and
/// `ssm_conv1d` stay F32; for Q4_K_M `output` (and a tied `token_embd`) get
/// Q6_K, `attn_v` / `attn_qkv` / `ffn_down` get Q6_K on `use_more_bits`
/// layers. `i_attention_wv` is taken as the layer index (every qwen35 layer
/// has exactly one attn_v or attn_qkv, in layer order).
pub fn gguf_type_for(spec: &TensorSpec, cfg: &Qwen35Config, q: SynthQuant) -> GgmlType {
    if spec.gguf_dims.len() < 2 || spec.gguf.contains("ssm_conv1d") {
        return GgmlType::F32;
    }
    let ne0 = spec.gguf_dims[0];
    let want = match q {
        SynthQuant::Bf16 => GgmlType::BF16,
        SynthQuant::Q8_0 => GgmlType::Q8_0,
        SynthQuant::Q4KM => {
            let n = cfg.num_hidden_layers;
            let layer = layer_of(&spec.gguf);
            let name = spec.gguf.as_str();
            let output_like =
                name == "output.weight" || (cfg.tie_word_embeddings && name == "token_embd.weight");
            let more_bits = (name.ends_with("attn_v.weight")
                || name.ends_with("attn_qkv.weight")
                || name.ends_with("ffn_down.weight"))
                && layer.is_some_and(|i| use_more_bits(i, n));
            if output_like || more_bits {
                GgmlType::Q6K
            } else {
                GgmlType::Q4K
            }
        }
    };
    // Rows that are not whole blocks fall back to Q8_0, then BF16.
    let fits = |t: GgmlType| t.dtype().is_some_and(|d| ne0.is_multiple_of(d.block().0));
    [want, GgmlType::Q8_0, GgmlType::BF16]
        .into_iter()
        .find(|&t| fits(t))
        .unwrap_or(GgmlType::F32)
}

/// Rows per chunk so that one chunk holds about 16M values.
fn chunk_rows(cols: usize) -> usize {
    ((16 << 20) / cols.max(1)).max(1)
}

/// The synthetic tokenizer data for `cfg` (see [`TokenizerData::synthetic`]).
pub fn synthetic_tokenizer(
    cfg: &Qwen35Config,
    vocab_base: Option<&Path>,
) -> Result<(TokenizerData, String)> {
    let base = match vocab_base {
        Some(p) => Some(TokenizerData::from_gguf(&GgufFile::open(p)?)?),
        None => None,
    };
    let data = TokenizerData::synthetic(
        cfg.vocab_size,
        base.as_ref(),
        Some(DEFAULT_CHATML_TEMPLATE.to_string()),
    )?;
    let used_base = !data.merges.is_empty();
    let what = match (vocab_base, used_base) {
        (Some(p), true) => format!(
            "{} regular tokens and {} merges from {}, padded to {}",
            data.token_types.iter().filter(|&&t| t == 1).count(),
            data.merges.len(),
            p.display(),
            cfg.vocab_size
        ),
        _ => format!("256 byte tokens (no merges), padded to {}", cfg.vocab_size),
    };
    Ok((data, what))
}

fn gguf_metadata(
    cfg: &Qwen35Config,
    q: SynthQuant,
    tok: &TokenizerData,
) -> Vec<(String, MetaValue)> {
    let a = |k: &str| format!("qwen35.{k}");
    let u = |v: usize| MetaValue::U32(v as u32);
    let interval = cfg
        .layer_types
        .iter()
        .position(|t| *t == LayerType::FullAttention)
        .map(|i| i + 1)
        .unwrap_or(cfg.num_hidden_layers + 1);
    let half = cfg.rotary_dim() / 2;
    let sections = if half == 32 {
        vec![11, 11, 10, 0]
    } else {
        let s = (half / 3) as i32;
        vec![s, s, half as i32 - 2 * s, 0]
    };
    let mut kv = vec![
        (
            "general.architecture".into(),
            MetaValue::String("qwen35".into()),
        ),
        (
            "general.name".into(),
            MetaValue::String(format!("lucebox synthetic {}", cfg.name)),
        ),
        ("general.file_type".into(), MetaValue::U32(q.file_type())),
        ("general.quantization_version".into(), MetaValue::U32(2)),
        (a("context_length"), u(cfg.max_position_embeddings)),
        (a("embedding_length"), u(cfg.hidden_size)),
        (a("block_count"), u(cfg.num_hidden_layers)),
        (a("feed_forward_length"), u(cfg.intermediate_size)),
        (a("attention.head_count"), u(cfg.num_attention_heads)),
        (a("attention.head_count_kv"), u(cfg.num_key_value_heads)),
        (a("attention.key_length"), u(cfg.head_dim)),
        (a("attention.value_length"), u(cfg.head_dim)),
        (a("rope.freq_base"), MetaValue::F32(cfg.rope_theta as f32)),
        (
            a("attention.layer_norm_rms_epsilon"),
            MetaValue::F32(cfg.rms_norm_eps as f32),
        ),
        (a("rope.dimension_count"), u(cfg.rotary_dim())),
        (
            a("rope.dimension_sections"),
            MetaValue::Array(MetaArray::I32(sections)),
        ),
        (a("ssm.conv_kernel"), u(cfg.linear_conv_kernel_dim)),
        (a("ssm.state_size"), u(cfg.linear_key_head_dim)),
        (a("ssm.group_count"), u(cfg.linear_num_key_heads)),
        (a("ssm.time_step_rank"), u(cfg.linear_num_value_heads)),
        (a("ssm.inner_size"), u(cfg.linear_value_dim())),
        (a("full_attention_interval"), u(interval)),
    ];
    kv.extend(tok.to_gguf_metadata());
    kv
}

/// Refuse configs the GGUF layout cannot express (llama.cpp's loader derives
/// layer types from one interval and uses one head dim for GDN keys/values).
fn check_gguf_expressible(cfg: &Qwen35Config) -> Result<()> {
    let interval = cfg
        .layer_types
        .iter()
        .position(|t| *t == LayerType::FullAttention)
        .map(|i| i + 1)
        .unwrap_or(cfg.num_hidden_layers + 1);
    if crate::config::layer_types_from_interval(cfg.num_hidden_layers, interval) != cfg.layer_types
    {
        return Err(ModelError::Config(
            "layer_types are not periodic; GGUF qwen35 only stores full_attention_interval".into(),
        ));
    }
    if cfg.linear_key_head_dim != cfg.linear_value_head_dim {
        return Err(ModelError::Config(
            "llama.cpp qwen35 needs linear_key_head_dim == linear_value_head_dim".into(),
        ));
    }
    Ok(())
}

/// Write a GGUF checkpoint for `cfg` to `path`.
pub fn write_gguf(
    cfg: &Qwen35Config,
    path: &Path,
    opts: &SynthOptions,
    progress: Progress<'_>,
) -> Result<SynthReport> {
    check_gguf_expressible(cfg)?;
    let start = Instant::now();
    let (tok, vocab) = synthetic_tokenizer(cfg, opts.vocab_base.as_deref())?;
    let specs = tensor_specs(cfg);
    let plans: Vec<TensorPlan> = specs
        .iter()
        .map(|s| TensorPlan {
            name: s.gguf.clone(),
            dims: s.gguf_dims.iter().map(|&d| d as u64).collect(),
            ggml_type: gguf_type_for(s, cfg, opts.quant),
        })
        .collect();
    let total: u64 = plans
        .iter()
        .map(TensorPlan::byte_size)
        .collect::<Result<Vec<_>>>()?
        .iter()
        .sum();
    let mut w = GgufWriter::create(path, &gguf_metadata(cfg, opts.quant, &tok), plans.clone())?;
    let mut done = 0u64;
    progress(0, total);
    for (spec, plan) in specs.iter().zip(&plans) {
        let dtype = plan.ggml_type.dtype().unwrap_or(DType::F32);
        let (rows, cols) = rows_of(spec);
        if spec.transform == Transform::None {
            // Stream in chunks of rows: HF row-major == GGUF layout here.
            let step = chunk_rows(cols);
            let seed = opts.seed;
            let mut r0 = 0;
            let done_ref = &mut done;
            let prog: &mut dyn FnMut(u64, u64) = &mut *progress;
            let chunks = std::iter::from_fn(move || {
                if r0 >= rows {
                    return None;
                }
                let r1 = (r0 + step).min(rows);
                let vals = gen_rows(spec, seed, r0, r1);
                r0 = r1;
                let q = quant::quantize(dtype, &vals);
                if let Ok(c) = &q {
                    *done_ref += c.len() as u64;
                    prog(*done_ref, total);
                }
                Some(q)
            });
            w.write_tensor_chunks(&plan.name, chunks)?;
        } else {
            let vals = to_gguf_layout(spec, cfg, canonical_values(spec, opts.seed));
            let bytes = quant::quantize(dtype, &vals)?;
            done += bytes.len() as u64;
            w.write_tensor(&plan.name, &bytes)?;
        }
        progress(done, total);
    }
    let bytes = w.finish()?;
    Ok(SynthReport {
        path: path.to_path_buf(),
        bytes,
        seconds: start.elapsed().as_secs_f64(),
        tensors: specs.len(),
        vocab,
    })
}

/// HF `config.json` (text-only `qwen3_5_text` form) for `cfg`.
pub fn hf_config_json(cfg: &Qwen35Config, tok: &TokenizerData) -> serde_json::Value {
    let mut eos: Vec<u32> = cfg.eos_token_ids.clone();
    if let Some(e) = tok.eos
        && !eos.contains(&e)
    {
        eos.push(e);
    }
    let half = cfg.rotary_dim() / 2;
    let mrope = if half == 32 {
        vec![11, 11, 10]
    } else {
        vec![half / 3, half / 3, half - 2 * (half / 3)]
    };
    let layer_types: Vec<&str> = cfg
        .layer_types
        .iter()
        .map(|t| match t {
            LayerType::FullAttention => "full_attention",
            LayerType::LinearAttention => "linear_attention",
        })
        .collect();
    json!({
        "architectures": ["Qwen3_5ForCausalLM"],
        "model_type": "qwen3_5_text",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "layer_types": layer_types,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "linear_num_key_heads": cfg.linear_num_key_heads,
        "linear_num_value_heads": cfg.linear_num_value_heads,
        "linear_key_head_dim": cfg.linear_key_head_dim,
        "linear_value_head_dim": cfg.linear_value_head_dim,
        "linear_conv_kernel_dim": cfg.linear_conv_kernel_dim,
        "hidden_act": "silu",
        "attention_bias": false,
        "attn_output_gate": true,
        "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": cfg.rope_theta,
            "partial_rotary_factor": cfg.partial_rotary_factor,
            "mrope_section": mrope,
            "mrope_interleaved": true,
        },
        "eos_token_id": eos,
        "pad_token_id": tok.pad,
        "bos_token_id": tok.bos,
        "dtype": "bfloat16",
        "torch_dtype": "bfloat16",
    })
}

/// Write an HF directory: config.json, model.safetensors (bf16, `model.*`
/// names, `lm_head.weight` when untied), tokenizer.json,
/// tokenizer_config.json, generation_config.json.
///
/// model.safetensors is written by hand (header then data, streamed in row
/// chunks) because `safetensors::serialize_to_file` needs each tensor's bytes
/// whole in memory.
pub fn write_safetensors_dir(
    cfg: &Qwen35Config,
    dir: &Path,
    opts: &SynthOptions,
    progress: Progress<'_>,
) -> Result<SynthReport> {
    if opts.quant != SynthQuant::Bf16 {
        return Err(ModelError::Other(
            "safetensors output is bf16 only (use --format gguf for q8_0 / q4_k_m)".into(),
        ));
    }
    let start = Instant::now();
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let (tok, vocab) = synthetic_tokenizer(cfg, opts.vocab_base.as_deref())?;
    let write_json = |name: &str, v: &serde_json::Value| -> Result<()> {
        let p = dir.join(name);
        let text = serde_json::to_string_pretty(v).map_err(|e| ModelError::Other(e.to_string()))?;
        std::fs::write(&p, text).map_err(|e| ModelError::io(&p, e))
    };
    write_json("config.json", &hf_config_json(cfg, &tok))?;
    write_json("tokenizer.json", &tok.to_hf_tokenizer_json()?)?;
    write_json("tokenizer_config.json", &tok.to_hf_tokenizer_config())?;
    write_json(
        "generation_config.json",
        &json!({"eos_token_id": hf_config_json(cfg, &tok)["eos_token_id"], "pad_token_id": tok.pad, "do_sample": false}),
    )?;

    let specs = tensor_specs(cfg);
    let hf_name = |c: &str| {
        if c == "lm_head.weight" {
            c.to_string()
        } else {
            format!("model.{c}")
        }
    };
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0u64;
    for s in &specs {
        let n: u64 = s.shape.iter().map(|&d| d as u64).product::<u64>() * 2;
        header.insert(
            hf_name(&s.canonical),
            json!({"dtype": "BF16", "shape": s.shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let total = offset;
    let mut head = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| ModelError::Other(e.to_string()))?;
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let path = dir.join("model.safetensors");
    let io = |e| ModelError::io(dir.join("model.safetensors"), e);
    let mut out = BufWriter::with_capacity(8 << 20, File::create(&path).map_err(io)?);
    out.write_all(&(head.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&head).map_err(io)?;
    let mut done = 0u64;
    progress(0, total);
    for s in &specs {
        let (rows, cols) = rows_of(s);
        let step = chunk_rows(cols);
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + step).min(rows);
            let vals = gen_rows(s, opts.seed, r0, r1);
            let bytes: Vec<u8> = vals
                .par_iter()
                .flat_map_iter(|&v| bf16::from_f32(v).to_le_bytes())
                .collect();
            out.write_all(&bytes).map_err(io)?;
            done += bytes.len() as u64;
            progress(done, total);
            r0 = r1;
        }
    }
    out.flush().map_err(io)?;
    Ok(SynthReport {
        path: dir.to_path_buf(),
        bytes: 8 + head.len() as u64 + total,
        seconds: start.elapsed().as_secs_f64(),
        tensors: specs.len(),
        vocab,
    })
}

/// Write a synthetic checkpoint in the requested format.
pub fn synth(
    cfg: &Qwen35Config,
    out: &Path,
    opts: &SynthOptions,
    progress: Progress<'_>,
) -> Result<SynthReport> {
    cfg.validate()?;
    match opts.format {
        SynthFormat::Gguf => write_gguf(cfg, out, opts, progress),
        SynthFormat::Safetensors => write_safetensors_dir(cfg, out, opts, progress),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_do_not_depend_on_chunking() {
        let cfg = Qwen35Config::qwen35_0_8b();
        let spec = tensor_specs(&cfg)
            .into_iter()
            .find(|s| s.canonical == "layers.0.mlp.down_proj.weight")
            .unwrap();
        let whole = gen_rows(&spec, 5, 0, 16);
        let parts = [gen_rows(&spec, 5, 0, 7), gen_rows(&spec, 5, 7, 16)].concat();
        assert_eq!(whole, parts);
        assert_ne!(gen_rows(&spec, 6, 0, 16), whole);
        let std = (whole.iter().map(|v| v * v).sum::<f32>() / whole.len() as f32).sqrt();
        assert!((std - 0.02).abs() < 0.001, "std {std}");
    }

    #[test]
    fn q4_k_m_type_rules_follow_llama_quant() {
        let cfg = Qwen35Config::qwen35_0_8b();
        let ty = |n: &str| {
            let s = tensor_specs(&cfg)
                .into_iter()
                .find(|s| s.gguf == n)
                .unwrap();
            gguf_type_for(&s, &cfg, SynthQuant::Q4KM)
        };
        assert_eq!(ty("token_embd.weight"), GgmlType::Q6K); // tied
        assert_eq!(ty("blk.0.attn_qkv.weight"), GgmlType::Q6K); // 0 < 24/8
        assert_eq!(ty("blk.4.attn_qkv.weight"), GgmlType::Q4K); // (4-3)%3 != 2
        assert_eq!(ty("blk.5.attn_qkv.weight"), GgmlType::Q6K); // (5-3)%3 == 2
        assert_eq!(ty("blk.3.attn_v.weight"), GgmlType::Q4K);
        assert_eq!(ty("blk.23.ffn_down.weight"), GgmlType::Q6K);
        assert_eq!(ty("blk.8.ffn_down.weight"), GgmlType::Q6K); // (8-3)%3 == 2
        assert_eq!(ty("blk.9.ffn_down.weight"), GgmlType::Q4K);
        assert_eq!(ty("blk.8.ffn_up.weight"), GgmlType::Q4K);
        assert_eq!(ty("blk.0.ssm_conv1d.weight"), GgmlType::F32);
        assert_eq!(ty("blk.0.ssm_a"), GgmlType::F32);
        assert_eq!(ty("blk.0.attn_norm.weight"), GgmlType::F32);
        let untied = Qwen35Config::qwen35_27b();
        let s = tensor_specs(&untied);
        let find = |n: &str| s.iter().find(|x| x.gguf == n).unwrap();
        assert_eq!(
            gguf_type_for(find("token_embd.weight"), &untied, SynthQuant::Q4KM),
            GgmlType::Q4K
        );
        assert_eq!(
            gguf_type_for(find("output.weight"), &untied, SynthQuant::Q4KM),
            GgmlType::Q6K
        );
    }
}
