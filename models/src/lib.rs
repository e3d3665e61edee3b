//! Qwen3.5 models for lucebox: configs, weight loading (safetensors, GGUF),
//! tokenizers and chat templates, and the CPU reference forward pass that
//! every GPU kernel is checked against.

pub mod chat;
pub mod checkpoint;
pub mod config;
pub mod cpu_engine;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod hub;
pub mod load;
pub mod quant;
pub mod reference;
pub mod safetensors_source;
pub mod sampling;
pub mod synth;
pub mod tokenizer;
pub mod weights;

pub use chat::{ChatMessage, ChatTemplate};
pub use checkpoint::{expected_tensors, validate_all};
pub use config::{LayerType, Qwen35Config};
pub use cpu_engine::CpuEngine;
pub use engine::{Engine, GenerationOutcome, GenerationRequest, StopReason};
pub use error::{ModelError, Result};
pub use load::{LoadedModel, open};
pub use sampling::{Sampler, SamplingParams};
pub use tokenizer::Tokenizer;
