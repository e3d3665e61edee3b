//! Opening a model from what the user typed: an HF model directory
//! (config.json + safetensors), a `.gguf` file, or an HF repo id.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Qwen35Config;
use crate::error::{ModelError, Result};
use crate::safetensors_source::SafetensorsSource;
use crate::weights::WeightSource;

/// A model ready for an engine.
#[derive(Clone)]
pub struct LoadedModel {
    pub config: Qwen35Config,
    pub weights: Arc<dyn WeightSource>,
    /// The model directory or the `.gguf` file.
    pub source_path: PathBuf,
    pub tokenizer_json: Option<PathBuf>,
    pub tokenizer_config_json: Option<PathBuf>,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("config", &self.config.name)
            .field("source_path", &self.source_path)
            .field("tokenizer_json", &self.tokenizer_json)
            .finish()
    }
}

/// Open `path_or_repo`: a directory, a `.gguf` file, or `Org/Name` on the Hub
/// (a local path wins when both could apply).
pub fn open(path_or_repo: &str) -> Result<LoadedModel> {
    let path = Path::new(path_or_repo);
    if path.is_dir() {
        return open_hf_dir(path);
    }
    if path.is_file() {
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            return open_gguf(path);
        }
        if path.file_name().is_some_and(|n| n == "config.json") {
            return open_hf_dir(path.parent().unwrap_or(Path::new(".")));
        }
        return Err(ModelError::Other(format!(
            "{path_or_repo}: expected a model directory (config.json + *.safetensors) or a .gguf file"
        )));
    }
    if crate::hub::looks_like_repo_id(path_or_repo) {
        let dir = crate::hub::fetch_model(path_or_repo)?;
        return open_hf_dir(&dir);
    }
    Err(ModelError::Other(format!(
        "{path_or_repo}: no such file or directory, and not a Hugging Face repo id (Org/Name)"
    )))
}

/// An HF model directory: `config.json` plus safetensors weights.
pub fn open_hf_dir(dir: &Path) -> Result<LoadedModel> {
    let config_path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&config_path).map_err(|e| ModelError::io(&config_path, e))?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model")
        .to_string();
    let config = Qwen35Config::from_hf_json(&text, &name)?;
    let source = SafetensorsSource::open_dir(dir, config.clone())?;
    let optional = |f: &str| {
        let p = dir.join(f);
        p.is_file().then_some(p)
    };
    Ok(LoadedModel {
        config,
        weights: Arc::new(source),
        source_path: dir.to_path_buf(),
        tokenizer_json: optional("tokenizer.json"),
        tokenizer_config_json: optional("tokenizer_config.json"),
    })
}

/// A `.gguf` file: config from its `qwen35` metadata, weights presented under
/// canonical HF names; tokenizer and chat template are embedded in the file
/// (`Tokenizer::for_model` and `GgufSource::chat_template` read them).
pub fn open_gguf(path: &Path) -> Result<LoadedModel> {
    let source = crate::gguf::GgufSource::open(path)?;
    Ok(LoadedModel {
        config: source.config().clone(),
        weights: Arc::new(source),
        source_path: path.to_path_buf(),
        tokenizer_json: None,
        tokenizer_config_json: None,
    })
}

impl LoadedModel {
    /// The model's tokenizer: `tokenizer.json` of an HF directory or the one
    /// embedded in a GGUF file.
    pub fn tokenizer(&self) -> Result<crate::tokenizer::Tokenizer> {
        match &self.tokenizer_json {
            Some(json) => crate::tokenizer::Tokenizer::from_hf_file(json),
            None => crate::tokenizer::Tokenizer::for_model(&self.source_path),
        }
    }
}
