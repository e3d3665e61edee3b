//! Qwen3.5 text configuration: every dimension the kernels and the reference
//! are specialised on. Parsed from HF `config.json` (composite `qwen3_5` with a
//! `text_config`, or text-only `qwen3_5_text`); GGUF metadata is mapped onto the
//! same struct by the GGUF loader. Nothing here is specific to one model size.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ModelError;

/// Mixer of one decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerType {
    /// Gated DeltaNet (`linear_attention` in HF configs).
    LinearAttention,
    /// Gated full attention with KV cache (`full_attention`).
    FullAttention,
}

/// The text part of a Qwen3.5 checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen35Config {
    /// Short human name, e.g. `qwen3.5-0.8b`, or the directory it came from.
    pub name: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub layer_types: Vec<LayerType>,
    /// Full attention: query heads, KV heads, head dim.
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub partial_rotary_factor: f64,
    /// Gated DeltaNet: key heads (Hk), value heads (Hv), head dims.
    pub linear_num_key_heads: usize,
    pub linear_num_value_heads: usize,
    pub linear_key_head_dim: usize,
    pub linear_value_head_dim: usize,
    pub linear_conv_kernel_dim: usize,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
    pub eos_token_ids: Vec<u32>,
}

impl Qwen35Config {
    /// Qwen/Qwen3.5-0.8B (spec §1.1).
    pub fn qwen35_0_8b() -> Self {
        Self {
            name: "qwen3.5-0.8b".into(),
            vocab_size: 248_320,
            hidden_size: 1024,
            intermediate_size: 3584,
            num_hidden_layers: 24,
            layer_types: layer_types_from_interval(24, 4),
            num_attention_heads: 8,
            num_key_value_heads: 2,
            head_dim: 256,
            rope_theta: 10_000_000.0,
            partial_rotary_factor: 0.25,
            linear_num_key_heads: 16,
            linear_num_value_heads: 16,
            linear_key_head_dim: 128,
            linear_value_head_dim: 128,
            linear_conv_kernel_dim: 4,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            max_position_embeddings: 262_144,
            eos_token_ids: vec![248_044],
        }
    }

    /// Qwen/Qwen3.5-27B (spec §1.1).
    pub fn qwen35_27b() -> Self {
        Self {
            name: "qwen3.5-27b".into(),
            vocab_size: 248_320,
            hidden_size: 5120,
            intermediate_size: 17_408,
            num_hidden_layers: 64,
            layer_types: layer_types_from_interval(64, 4),
            num_attention_heads: 24,
            num_key_value_heads: 4,
            head_dim: 256,
            rope_theta: 10_000_000.0,
            partial_rotary_factor: 0.25,
            linear_num_key_heads: 16,
            linear_num_value_heads: 48,
            linear_key_head_dim: 128,
            linear_value_head_dim: 128,
            linear_conv_kernel_dim: 4,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: false,
            max_position_embeddings: 262_144,
            eos_token_ids: vec![248_044, 248_046],
        }
    }

    /// The configs built into lucebox, by the names the CLI accepts.
    pub fn builtin(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "qwen3.5-0.8b" | "qwen3.5-0.8" | "0.8b" => Some(Self::qwen35_0_8b()),
            "qwen3.5-27b" | "27b" => Some(Self::qwen35_27b()),
            _ => None,
        }
    }

    pub const BUILTIN_NAMES: &'static [&'static str] = &["qwen3.5-0.8b", "qwen3.5-27b"];

    /// Parse an HF `config.json` (either the composite `qwen3_5` form with a
    /// `text_config`, or the text-only `qwen3_5_text` form).
    pub fn from_hf_json(text: &str, name: &str) -> Result<Self, ModelError> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| ModelError::Config(format!("config.json is not valid JSON: {e}")))?;
        Self::from_hf_value(&root, name)
    }

    pub fn from_hf_value(root: &Value, name: &str) -> Result<Self, ModelError> {
        let model_type = root.get("model_type").and_then(Value::as_str).unwrap_or("");
        let text = match root.get("text_config") {
            Some(tc) if tc.is_object() => tc,
            _ => root,
        };
        let text_type = text
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or(model_type);
        if !matches!(text_type, "qwen3_5_text" | "qwen3_5" | "") {
            return Err(ModelError::Config(format!(
                "model_type `{text_type}` is not a Qwen3.5 text model (expected qwen3_5 or qwen3_5_text)"
            )));
        }
        // A field is looked up in the text config first, then at the top level
        // (composite configs repeat some fields, e.g. tie_word_embeddings).
        let get = |key: &str| text.get(key).or_else(|| root.get(key));
        let usize_field = |key: &str| -> Result<usize, ModelError> {
            get(key)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| {
                    ModelError::Config(format!("config.json: missing or non-integer `{key}`"))
                })
        };
        let rope = get("rope_parameters").or_else(|| get("rope_scaling"));
        let rope_f64 = |key: &str| -> Option<f64> {
            rope.and_then(|r| r.get(key))
                .and_then(Value::as_f64)
                .or_else(|| get(key).and_then(Value::as_f64))
        };

        let num_hidden_layers = usize_field("num_hidden_layers")?;
        let layer_types = match get("layer_types").and_then(Value::as_array) {
            Some(list) => list
                .iter()
                .map(|v| match v.as_str() {
                    Some("linear_attention") => Ok(LayerType::LinearAttention),
                    Some("full_attention") => Ok(LayerType::FullAttention),
                    other => Err(ModelError::Config(format!(
                        "config.json: unknown layer type {other:?}"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => {
                let interval = get("full_attention_interval")
                    .and_then(Value::as_u64)
                    .unwrap_or(4) as usize;
                layer_types_from_interval(num_hidden_layers, interval)
            }
        };
        let hidden_size = usize_field("hidden_size")?;
        let num_attention_heads = usize_field("num_attention_heads")?;
        let head_dim = get("head_dim")
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .unwrap_or(hidden_size / num_attention_heads.max(1));
        let eos_token_ids = match get("eos_token_id") {
            Some(Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_u64)
                .map(|v| v as u32)
                .collect(),
            _ => vec![],
        };
        let cfg = Self {
            name: name.to_string(),
            vocab_size: usize_field("vocab_size")?,
            hidden_size,
            intermediate_size: usize_field("intermediate_size")?,
            num_hidden_layers,
            layer_types,
            num_attention_heads,
            num_key_value_heads: usize_field("num_key_value_heads")?,
            head_dim,
            rope_theta: rope_f64("rope_theta").unwrap_or(10_000_000.0),
            partial_rotary_factor: rope_f64("partial_rotary_factor").unwrap_or(0.25),
            linear_num_key_heads: usize_field("linear_num_key_heads")?,
            linear_num_value_heads: usize_field("linear_num_value_heads")?,
            linear_key_head_dim: usize_field("linear_key_head_dim")?,
            linear_value_head_dim: usize_field("linear_value_head_dim")?,
            linear_conv_kernel_dim: usize_field("linear_conv_kernel_dim")?,
            rms_norm_eps: get("rms_norm_eps").and_then(Value::as_f64).unwrap_or(1e-6),
            tie_word_embeddings: get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            max_position_embeddings: get("max_position_embeddings")
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .unwrap_or(262_144),
            eos_token_ids,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reject configs the model code cannot represent, naming the field.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |msg: String| Err(ModelError::Config(msg));
        if self.layer_types.len() != self.num_hidden_layers {
            return bad(format!(
                "layer_types has {} entries but num_hidden_layers is {}",
                self.layer_types.len(),
                self.num_hidden_layers
            ));
        }
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("linear_num_key_heads", self.linear_num_key_heads),
            ("linear_num_value_heads", self.linear_num_value_heads),
            ("linear_key_head_dim", self.linear_key_head_dim),
            ("linear_value_head_dim", self.linear_value_head_dim),
            ("linear_conv_kernel_dim", self.linear_conv_kernel_dim),
        ] {
            if v == 0 {
                return bad(format!("`{field}` must be positive"));
            }
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self
            .linear_num_value_heads
            .is_multiple_of(self.linear_num_key_heads)
        {
            return bad(format!(
                "linear_num_value_heads ({}) must be a multiple of linear_num_key_heads ({})",
                self.linear_num_value_heads, self.linear_num_key_heads
            ));
        }
        let rot = self.rotary_dim();
        if rot == 0 || !rot.is_multiple_of(2) || rot > self.head_dim {
            return bad(format!(
                "partial_rotary_factor {} gives rotary dim {rot}, which must be even and in 2..={}",
                self.partial_rotary_factor, self.head_dim
            ));
        }
        Ok(())
    }

    // ---- derived dimensions (spec §1.2) ----

    /// Rotated dims per attention head (`head_dim * partial_rotary_factor`).
    pub fn rotary_dim(&self) -> usize {
        (self.head_dim as f64 * self.partial_rotary_factor).round() as usize
    }
    /// Query heads per KV head (GQA group).
    pub fn gqa_group(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
    /// `q_proj` output: per head `[query | gate]`.
    pub fn q_proj_out(&self) -> usize {
        2 * self.num_attention_heads * self.head_dim
    }
    /// `k_proj` / `v_proj` output.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
    /// `o_proj` input (attention output width).
    pub fn attn_out_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }
    /// GDN key width `Hk * dk` (q and k blocks of `in_proj_qkv`).
    pub fn linear_key_dim(&self) -> usize {
        self.linear_num_key_heads * self.linear_key_head_dim
    }
    /// GDN value width `Hv * dv`.
    pub fn linear_value_dim(&self) -> usize {
        self.linear_num_value_heads * self.linear_value_head_dim
    }
    /// Channels of the causal conv (`2 Kd + Vd`, q|k|v).
    pub fn conv_dim(&self) -> usize {
        2 * self.linear_key_dim() + self.linear_value_dim()
    }
    /// Value heads per key head (`r = Hv / Hk`); v-head j uses k-head `j / r`.
    pub fn v_heads_per_k_head(&self) -> usize {
        self.linear_num_value_heads / self.linear_num_key_heads
    }
    pub fn num_full_attention_layers(&self) -> usize {
        self.layer_types
            .iter()
            .filter(|t| **t == LayerType::FullAttention)
            .count()
    }
    pub fn num_linear_attention_layers(&self) -> usize {
        self.num_hidden_layers - self.num_full_attention_layers()
    }
    /// Index of layer `layer` among layers of its own type (its slot in the
    /// KV cache or in the GDN state arrays).
    pub fn slot_of_layer(&self, layer: usize) -> usize {
        let ty = self.layer_types[layer];
        self.layer_types[..layer]
            .iter()
            .filter(|t| **t == ty)
            .count()
    }

    /// Number of text parameters (embedding counted once when tied).
    pub fn parameter_count(&self) -> u64 {
        let d = self.hidden_size as u64;
        let mlp = 3 * d * self.intermediate_size as u64;
        let norms = 2 * d;
        let attn = d * self.q_proj_out() as u64
            + 2 * d * self.kv_dim() as u64
            + self.attn_out_dim() as u64 * d
            + 2 * self.head_dim as u64;
        let hv = self.linear_num_value_heads as u64;
        let gdn = d * self.conv_dim() as u64
            + d * self.linear_value_dim() as u64
            + 2 * d * hv
            + self.conv_dim() as u64 * self.linear_conv_kernel_dim as u64
            + 2 * hv
            + self.linear_value_head_dim as u64
            + self.linear_value_dim() as u64 * d;
        let layers: u64 = self
            .layer_types
            .iter()
            .map(|t| {
                mlp + norms
                    + match t {
                        LayerType::FullAttention => attn,
                        LayerType::LinearAttention => gdn,
                    }
            })
            .sum();
        let embed = self.vocab_size as u64 * d;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + layers + d
    }
}

/// `(i + 1) % interval == 0` layers are full attention, the rest GDN.
pub fn layer_types_from_interval(layers: usize, interval: usize) -> Vec<LayerType> {
    (0..layers)
        .map(|i| {
            if interval > 0 && (i + 1) % interval == 0 {
                LayerType::FullAttention
            } else {
                LayerType::LinearAttention
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_0_8b_matches_spec_dimensions() {
        let c = Qwen35Config::qwen35_0_8b();
        c.validate().unwrap();
        assert_eq!(c.rotary_dim(), 64);
        assert_eq!(c.q_proj_out(), 4096);
        assert_eq!(c.kv_dim(), 512);
        assert_eq!(c.conv_dim(), 6144);
        assert_eq!(c.num_full_attention_layers(), 6);
        assert_eq!(c.slot_of_layer(7), 1);
        assert_eq!(c.slot_of_layer(4), 3);
        // 1,504,786,048 bytes of bf16 parameters (anchors.md).
        assert_eq!(c.parameter_count() * 2, 1_504_786_048);
    }

    #[test]
    fn builtin_27b_matches_spec_dimensions() {
        let c = Qwen35Config::qwen35_27b();
        c.validate().unwrap();
        assert_eq!(c.v_heads_per_k_head(), 3);
        assert_eq!(c.conv_dim(), 10240);
        assert_eq!(c.q_proj_out(), 12288);
        assert_eq!(c.gqa_group(), 6);
    }

    #[test]
    fn parses_composite_and_text_only_forms() {
        let text = r#"{"model_type":"qwen3_5_text","vocab_size":512,"hidden_size":64,
            "intermediate_size":128,"num_hidden_layers":4,"num_attention_heads":4,
            "num_key_value_heads":2,"head_dim":32,"linear_num_key_heads":2,
            "linear_num_value_heads":6,"linear_key_head_dim":16,"linear_value_head_dim":16,
            "linear_conv_kernel_dim":4,"rms_norm_eps":1e-6,"tie_word_embeddings":true,
            "rope_parameters":{"rope_theta":10000000,"partial_rotary_factor":0.25}}"#;
        let c = Qwen35Config::from_hf_json(text, "tiny").unwrap();
        assert_eq!(c.layer_types[3], LayerType::FullAttention);
        assert_eq!(c.rotary_dim(), 8);
        let composite = format!(
            r#"{{"model_type":"qwen3_5","tie_word_embeddings":false,"text_config":{text}}}"#
        );
        let c2 = Qwen35Config::from_hf_json(&composite, "tiny").unwrap();
        // text_config wins over the top level.
        assert!(c2.tie_word_embeddings);
        assert_eq!(c2.linear_num_value_heads, 6);
    }

    #[test]
    fn rejects_bad_configs_with_field_names() {
        let err = Qwen35Config::from_hf_json(r#"{"model_type":"llama"}"#, "x").unwrap_err();
        assert!(err.to_string().contains("llama"));
        let mut c = Qwen35Config::qwen35_0_8b();
        c.linear_num_value_heads = 17;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("linear_num_value_heads")
        );
    }
}
