//! Downloading a model from the Hugging Face Hub (`Org/Name`) into the
//! standard HF cache with `hf-hub` (sync ureq API, progress bars).

use std::path::PathBuf;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo};

use crate::error::{ModelError, Result};

/// Whether `s` looks like a Hub repo id (`Org/Name`, no further slashes,
/// no path-like start) rather than a local path.
pub fn looks_like_repo_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let (Some(org), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    ok(org) && ok(name)
}

/// Files fetched for a model: config, tokenizer files (optional), weights.
const OPTIONAL_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
];

/// Make the model files of `repo_id` available locally (cache first, then
/// download) and return the snapshot directory holding them.
pub fn fetch_model(repo_id: &str) -> Result<PathBuf> {
    let offline_hint = |e: String| {
        ModelError::Hub(format!(
            "could not fetch `{repo_id}` from the Hugging Face Hub ({e}). Without network access, \
             download the model elsewhere (e.g. `huggingface-cli download {repo_id}`) and pass \
             the local copy: `--model /path/to/model-dir` (a directory with config.json and \
             *.safetensors) or `--model /path/to/file.gguf`"
        ))
    };
    let cache = Cache::from_env();
    let cached = cache.repo(Repo::model(repo_id.to_string()));
    // from_env: HF_HOME picks the cache, HF_ENDPOINT the server (mirrors).
    let api = ApiBuilder::from_env()
        .with_progress(true)
        .with_retries(1)
        .build()
        .map_err(|e| offline_hint(e.to_string()))?;
    let repo = api.model(repo_id.to_string());
    let get = |file: &str| -> std::result::Result<PathBuf, String> {
        if let Some(p) = cached.get(file) {
            return Ok(p);
        }
        repo.get(file).map_err(|e| e.to_string())
    };
    let config = get("config.json").map_err(offline_hint)?;
    let dir = config
        .parent()
        .map(PathBuf::from)
        .ok_or_else(|| ModelError::Hub("cache path has no parent".into()))?;
    match get("model.safetensors.index.json") {
        Ok(index) => {
            for shard in crate::safetensors_source::shard_files_from_index(&index)? {
                let name = shard
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| ModelError::Hub("bad shard name".into()))?
                    .to_string();
                get(&name).map_err(offline_hint)?;
            }
        }
        Err(_) => {
            get("model.safetensors").map_err(offline_hint)?;
        }
    }
    for f in OPTIONAL_FILES {
        let _ = get(f);
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_hub_gives_an_error_that_names_the_local_alternative() {
        let home = tempfile::tempdir().unwrap();
        // SAFETY: this test is the only one in the crate touching these variables.
        unsafe {
            std::env::set_var("HF_HOME", home.path());
            // Port 9 (discard) on localhost: connection refused at once.
            std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
        }
        let err = fetch_model("Org/Missing-Model").unwrap_err().to_string();
        assert!(err.contains("--model /path/to/model-dir"), "{err}");
        assert!(err.contains("Org/Missing-Model"), "{err}");
    }

    #[test]
    fn repo_ids_versus_paths() {
        assert!(looks_like_repo_id("Qwen/Qwen3.5-0.8B"));
        assert!(!looks_like_repo_id("./model"));
        assert!(!looks_like_repo_id("/abs/path"));
        assert!(!looks_like_repo_id("a/b/c"));
        assert!(!looks_like_repo_id("model.gguf"));
        assert!(!looks_like_repo_id("../x"));
    }
}
