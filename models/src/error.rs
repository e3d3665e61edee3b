//! The one error type of `lucebox-models`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("config: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file that is not what it claims to be (truncated, corrupt, absurd lengths).
    #[error("{path}: malformed {format} file: {msg}")]
    Malformed {
        path: PathBuf,
        format: &'static str,
        msg: String,
    },
    #[error("tensor `{name}` is missing from the checkpoint")]
    MissingTensor { name: String },
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{name}`: unsupported dtype {dtype}")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("tensor `{name}` holds a non-finite value (NaN or Inf) at element {index}")]
    NonFinite { name: String, index: usize },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("model download: {0}")]
    Hub(String),
    #[error("context of {requested} tokens exceeds the maximum of {max}")]
    ContextTooLong { requested: usize, max: usize },
    #[error("{0}")]
    Other(String),
}

impl ModelError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
