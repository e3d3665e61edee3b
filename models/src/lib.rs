//! Qwen3.5 models for lucebox: configs, weight loading (safetensors, GGUF),
//! tokenizers and chat templates, and the CPU reference forward pass that
//! every GPU kernel is checked against.

pub mod chat;
pub mod config;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod quant;
pub mod sampling;
pub mod synth;
pub mod tokenizer;
pub mod weights;

pub use chat::{ChatMessage, ChatTemplate};
pub use config::{LayerType, Qwen35Config};
pub use engine::{Engine, GenerationOutcome, GenerationRequest, StopReason};
pub use error::{ModelError, Result};
pub use sampling::SamplingParams;
pub use tokenizer::Tokenizer;
