//! Helpers shared by the model integration tests.

use lucebox_models::config::{Qwen35Config, layer_types_from_interval};

/// A tiny Qwen3.5 config at dims the GPU kernels also support (head_dim 64,
/// GDN dk = dv = 32) that still exercises GVA (Hv = 3 Hk): 3 GDN layers and
/// one attention layer.
pub fn tiny(tied: bool) -> Qwen35Config {
    Qwen35Config {
        name: "tiny".into(),
        vocab_size: 512,
        hidden_size: 256,
        intermediate_size: 512,
        num_hidden_layers: 4,
        layer_types: layer_types_from_interval(4, 4),
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 64,
        rope_theta: 10_000_000.0,
        partial_rotary_factor: 0.25,
        linear_num_key_heads: 2,
        linear_num_value_heads: 6,
        linear_key_head_dim: 32,
        linear_value_head_dim: 32,
        linear_conv_kernel_dim: 4,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: tied,
        max_position_embeddings: 4096,
        eos_token_ids: vec![],
    }
}
