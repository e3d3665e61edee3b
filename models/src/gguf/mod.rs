//! GGUF (llama.cpp) files: a bounded reader over a memory map, a streaming
//! writer, the `qwen35` name/convention mapping and [`GgufSource`].

pub mod names;
pub mod reader;
pub mod source;
pub mod writer;

pub use names::{TensorSpec, Transform, tensor_specs};
pub use reader::{
    GgmlType, GgufFile, GgufHeader, GgufTensorInfo, MetaArray, MetaValue, parse_header,
};
pub use source::{GgufSource, check_all_finite, check_finite, config_from_gguf};
pub use writer::{GgufWriter, TensorPlan};
