//! Kernel building blocks, one module each. Every block is CUDA text that
//! refers to model and schedule numbers only through the named constants the
//! kernel printer emits (`HIDDEN`, `GRID_BLOCKS`, ...), so one block serves
//! every preset and config.

pub mod causal_conv;
pub mod decode_attention;
pub mod embedding;
pub mod fused_mlp;
pub mod gated_delta_rule;
pub mod lm_head;
pub mod matvec;
pub mod prelude;
pub mod rms_norm;
pub mod rope;
pub mod split_k;
pub mod sync;
pub mod weight_stream;
