//! Model-dimension constants shared by the multi-kernel files (prefill and
//! tree verify): the GDN and attention head shapes their kernels and the
//! shared head helpers (RoPE, per-head RMSNorm) are written against.

use lucebox_models::config::Qwen35Config;

use crate::cuda::Constant;

/// GDN and attention constants, `RMS_EPS` through `ROPE_THETA`; `epl_doc` is
/// the comment on `ATT_EPL` (head dims per lane).
pub fn head_constants(cfg: &Qwen35Config, epl_doc: &'static str) -> Vec<Constant> {
    let i = |v: usize| v as i64;
    let epl = cfg.head_dim / 32;
    vec![
        Constant::float("RMS_EPS", cfg.rms_norm_eps, ""),
        Constant::int("GDN_HV", i(cfg.linear_num_value_heads), ""),
        Constant::int("GDN_DK", i(cfg.linear_key_head_dim), ""),
        Constant::int("GDN_DV", i(cfg.linear_value_head_dim), ""),
        Constant::int("GDN_V_PER_K", i(cfg.v_heads_per_k_head()), ""),
        Constant::float(
            "GDN_Q_SCALE",
            1.0 / (cfg.linear_key_head_dim as f64).sqrt(),
            "",
        ),
        Constant::int("KEY_DIM", i(cfg.linear_key_dim()), ""),
        Constant::int("VALUE_DIM", i(cfg.linear_value_dim()), ""),
        Constant::int("CONV_DIM", i(cfg.conv_dim()), ""),
        Constant::int("CONV_K", i(cfg.linear_conv_kernel_dim), ""),
        Constant::int("ATT_H", i(cfg.num_attention_heads), ""),
        Constant::int("ATT_HKV", i(cfg.num_key_value_heads), ""),
        Constant::int("ATT_G", i(cfg.gqa_group()), ""),
        Constant::int("ATT_HD", i(cfg.head_dim), ""),
        Constant::int("ATT_EPL", i(epl), epl_doc),
        Constant::int("ATT_QG_DIM", i(cfg.q_proj_out()), ""),
        Constant::int("ATT_KV_DIM", i(cfg.kv_dim()), ""),
        Constant::int("ATT_OUT_DIM", i(cfg.attn_out_dim()), ""),
        Constant::float("ATT_SCALE", 1.0 / (cfg.head_dim as f64).sqrt(), ""),
        Constant::int("ROT_DIM", i(cfg.rotary_dim()), ""),
        Constant::int("ROPE_LANE_OFS", i(cfg.rotary_dim() / 2 / epl), ""),
        Constant::float("ROPE_THETA", cfg.rope_theta, ""),
    ]
}
