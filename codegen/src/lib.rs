//! Lowers (Qwen3.5 config, schedule) to CUDA C.
//!
//! * [`blocks`]: kernel building blocks (RMSNorm, matvec with fused
//!   epilogues, causal conv step, gated delta rule step, decode attention,
//!   grid barrier / tile counters, LM head with sampling, embedding), each a
//!   piece of readable CUDA that refers to numbers only through named
//!   `constexpr` constants.
//! * [`decode`]: the decode megakernel (a token = an ordered list of phases
//!   with sync points) and its ABI with the runtime.
//! * [`prefill`]: prompt processing (tensor-core GEMM, conv, chunked gated
//!   delta rule, causal flash-style attention) and its launch plan
//!   ([`prefill::PrefillPlan`]).
//! * [`tree`]: DDTree-verify kernels.
//!
//! Output is deterministic: the same inputs give byte-identical source.

pub mod blocks;
pub mod cuda;
pub mod decode;
pub mod error;
pub mod model_constants;
pub mod prefill;
pub mod tree;

use std::fmt;

use serde::{Deserialize, Serialize};

use lucebox_models::config::Qwen35Config;
use lucebox_schedules::{Arch, ModelDims, Schedule};

pub use error::CodegenError;

/// Which family of kernels a generated file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelKind {
    Decode,
    Prefill,
    Tree,
}

impl KernelKind {
    pub const ALL: [KernelKind; 3] = [KernelKind::Decode, KernelKind::Prefill, KernelKind::Tree];
    /// The kinds this version generates (all of them).
    pub const GENERATED: [KernelKind; 3] = Self::ALL;
}

impl fmt::Display for KernelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KernelKind::Decode => "decode",
            KernelKind::Prefill => "prefill",
            KernelKind::Tree => "tree",
        })
    }
}

impl std::str::FromStr for KernelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "decode" => Ok(KernelKind::Decode),
            "prefill" => Ok(KernelKind::Prefill),
            "tree" => Ok(KernelKind::Tree),
            other => Err(format!(
                "unknown kernel kind `{other}` (decode, prefill, tree)"
            )),
        }
    }
}

/// One generated `.cu` file.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedKernel {
    pub kind: KernelKind,
    pub file_name: String,
    pub source: String,
    /// `extern "C"` kernels in the file.
    pub entry_points: Vec<String>,
    pub arch: Arch,
    /// Grid-wide syncs per generated token (decode only).
    pub sync_points_per_token: Option<u32>,
}

/// The model dimensions a schedule is validated against.
pub fn model_dims(cfg: &Qwen35Config) -> ModelDims {
    let u = |v: usize| v as u32;
    ModelDims {
        hidden_size: u(cfg.hidden_size),
        intermediate_size: u(cfg.intermediate_size),
        vocab_size: u(cfg.vocab_size),
        head_dim: u(cfg.head_dim),
        num_attention_heads: u(cfg.num_attention_heads),
        num_key_value_heads: u(cfg.num_key_value_heads),
        linear_num_key_heads: u(cfg.linear_num_key_heads),
        linear_num_value_heads: u(cfg.linear_num_value_heads),
        linear_key_head_dim: u(cfg.linear_key_head_dim),
        linear_value_head_dim: u(cfg.linear_value_head_dim),
        max_position_embeddings: u(cfg.max_position_embeddings),
    }
}

/// Generate one kernel file.
pub fn generate(
    cfg: &Qwen35Config,
    sched: &Schedule,
    kind: KernelKind,
) -> Result<GeneratedKernel, CodegenError> {
    match kind {
        KernelKind::Decode => decode::generate_decode(cfg, sched),
        KernelKind::Prefill => prefill::generate_prefill(cfg, sched),
        KernelKind::Tree => tree::generate_tree(cfg, sched),
    }
}

/// Generate every kind ([`KernelKind::GENERATED`]: decode, prefill, tree).
pub fn generate_all(
    cfg: &Qwen35Config,
    sched: &Schedule,
) -> Result<Vec<GeneratedKernel>, CodegenError> {
    KernelKind::GENERATED
        .iter()
        .map(|k| generate(cfg, sched, *k))
        .collect()
}
