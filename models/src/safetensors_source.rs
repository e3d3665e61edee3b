//! Safetensors checkpoints (single file or sharded with
//! `model.safetensors.index.json`), memory-mapped, presented under canonical
//! HF text-model names (see [`crate::weights`] CONTRACT).
//!
//! The header parser is our own and strictly bounded: the 8-byte header length
//! is checked against the file size and a 100 MB cap before anything is
//! allocated, and every tensor's byte range is checked against the data
//! region and against `numel * dtype size` (with overflow checks), so a
//! truncated or corrupt file is an error naming the file, never a panic or an
//! unbounded allocation. (The `safetensors` crate does the same checks but
//! its errors name neither the file nor the tensor, and it refuses unknown
//! dtypes for the whole file, while we only refuse them when such a tensor is
//! actually used: vision/MTP tensors may be in exotic dtypes.)

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use serde_json::Value;

use crate::config::Qwen35Config;
use crate::error::{ModelError, Result};
use crate::weights::{DType, Tensor, TensorData, WeightSource};

/// Largest header we accept (same cap as the `safetensors` crate).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor entry of a safetensors header, offsets relative to the file.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderEntry {
    pub name: String,
    /// The dtype string of the file (`BF16`, `F32`, ...).
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub start: usize,
    pub end: usize,
}

/// Parse and validate a safetensors header against a file of `file_len`
/// bytes whose first bytes are `bytes` (at least the header must be there).
/// Every entry's range lies inside the file and matches its shape and dtype.
pub fn parse_header(bytes: &[u8], file_len: usize, path: &Path) -> Result<Vec<HeaderEntry>> {
    let bad = |msg: String| ModelError::Malformed {
        path: path.to_path_buf(),
        format: "safetensors",
        msg,
    };
    if bytes.len() < 8 || file_len < 8 {
        return Err(bad(format!(
            "file is {file_len} bytes, too short for the 8-byte header length"
        )));
    }
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[..8]);
    let header_len = u64::from_le_bytes(len8);
    if header_len > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit"
        )));
    }
    let header_len = header_len as usize;
    let data_start = 8 + header_len;
    if data_start > file_len || data_start > bytes.len() {
        return Err(bad(format!(
            "header length {header_len} runs past the end of the {file_len}-byte file (truncated?)"
        )));
    }
    let header: Value = serde_json::from_slice(&bytes[8..data_start])
        .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    let Value::Object(map) = header else {
        return Err(bad("header is not a JSON object".into()));
    };
    let data_len = file_len - data_start;
    let mut entries = Vec::with_capacity(map.len().min(1 << 20));
    for (name, info) in map {
        if name == "__metadata__" {
            continue;
        }
        let ctx = |msg: &str| bad(format!("tensor `{name}`: {msg}"));
        let dtype = info
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| ctx("missing string `dtype`"))?
            .to_string();
        let shape = info
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| ctx("missing array `shape`"))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| ctx("`shape` must hold non-negative integers"))?;
        let offsets = info
            .get("data_offsets")
            .and_then(Value::as_array)
            .filter(|o| o.len() == 2)
            .ok_or_else(|| ctx("missing `data_offsets` [begin, end]"))?;
        let begin = offsets[0]
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| ctx("bad data_offsets"))?;
        let end = offsets[1]
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| ctx("bad data_offsets"))?;
        if begin > end || end > data_len {
            return Err(ctx(&format!(
                "data_offsets [{begin}, {end}] outside the {data_len}-byte data region (truncated file?)"
            )));
        }
        let numel = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| ctx("shape overflows"))?;
        if let Some(size) = dtype_size(&dtype) {
            let want = numel
                .checked_mul(size)
                .ok_or_else(|| ctx("byte size overflows"))?;
            if want != end - begin {
                return Err(ctx(&format!(
                    "{} bytes for shape {shape:?} of {dtype} (expected {want})",
                    end - begin
                )));
            }
        }
        entries.push(HeaderEntry {
            name,
            dtype,
            shape,
            start: data_start + begin,
            end: data_start + end,
        });
    }
    Ok(entries)
}

/// Bytes per element of a safetensors dtype string; None for dtypes we do
/// not know (their byte ranges are then not cross-checked).
fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// The dtypes the weight code consumes.
fn to_dtype(name: &str, dtype: &str) -> Result<DType> {
    match dtype {
        "F32" => Ok(DType::F32),
        "F16" => Ok(DType::F16),
        "BF16" => Ok(DType::BF16),
        other => Err(ModelError::UnsupportedDtype {
            name: name.to_string(),
            dtype: other.to_string(),
        }),
    }
}

/// Canonical name of a checkpoint tensor name, or None for tensors that are
/// not part of the text model (`mtp.*`, `model.visual.*`, anything else).
pub fn canonical_name(hf_name: &str) -> Option<&str> {
    if hf_name == "lm_head.weight" {
        return Some(hf_name);
    }
    if let Some(rest) = hf_name.strip_prefix("model.language_model.") {
        return Some(rest);
    }
    if hf_name.starts_with("model.visual.") {
        return None;
    }
    hf_name.strip_prefix("model.")
}

#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    hf_name: String,
    dtype: String,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// A memory-mapped safetensors checkpoint (one or more files).
pub struct SafetensorsSource {
    config: Qwen35Config,
    files: Vec<(PathBuf, Arc<Mmap>)>,
    tensors: HashMap<String, Entry>,
}

impl std::fmt::Debug for SafetensorsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsSource")
            .field(
                "files",
                &self.files.iter().map(|f| &f.0).collect::<Vec<_>>(),
            )
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn map_file(path: &Path) -> Result<Arc<Mmap>> {
    let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: the map is read-only; a checkpoint modified by another process
    // while we run is outside what we can defend against (as for every mmap
    // based loader).
    let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
    Ok(Arc::new(map))
}

impl SafetensorsSource {
    /// Open a model directory: `model.safetensors.index.json` if present,
    /// else `model.safetensors`, else every `*.safetensors` file in it.
    pub fn open_dir(dir: &Path, config: Qwen35Config) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let files = if index.is_file() {
            shard_files_from_index(&index)?
        } else if dir.join("model.safetensors").is_file() {
            vec![dir.join("model.safetensors")]
        } else {
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| ModelError::io(dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(ModelError::Other(format!(
                    "{}: no model.safetensors, model.safetensors.index.json or *.safetensors file",
                    dir.display()
                )));
            }
            found
        };
        Self::open_files(&files, config)
    }

    /// Open the given safetensors files as one checkpoint.
    pub fn open_files(paths: &[PathBuf], config: Qwen35Config) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut tensors: HashMap<String, Entry> = HashMap::new();
        for (file_index, path) in paths.iter().enumerate() {
            let map = map_file(path)?;
            for e in parse_header(&map, map.len(), path)? {
                let Some(canonical) = canonical_name(&e.name) else {
                    continue;
                };
                let entry = Entry {
                    file: file_index,
                    hf_name: e.name.clone(),
                    dtype: e.dtype,
                    shape: e.shape,
                    start: e.start,
                    end: e.end,
                };
                if let Some(prev) = tensors.insert(canonical.to_string(), entry) {
                    return Err(ModelError::Other(format!(
                        "tensor `{canonical}` appears twice in the checkpoint (as `{}` and `{}`)",
                        prev.hf_name, e.name
                    )));
                }
            }
            files.push((path.clone(), map));
        }
        Ok(Self {
            config,
            files,
            tensors,
        })
    }

    /// The canonical names of all text-model tensors present.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tensors.keys().cloned().collect();
        v.sort();
        v
    }

    pub fn files(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.0.clone()).collect()
    }
}

/// The shard files named by a `model.safetensors.index.json`, in order.
pub fn shard_files_from_index(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| ModelError::io(index, e))?;
    let bad = |msg: String| ModelError::Malformed {
        path: index.to_path_buf(),
        format: "safetensors index",
        msg,
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("missing object `weight_map`".into()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut shards = BTreeMap::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("`{tensor}` maps to a non-string")))?;
        // Shard names are plain file names next to the index.
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(bad(format!("shard name `{file}` is not a plain file name")));
        }
        shards.insert(file.to_string(), ());
    }
    Ok(shards.into_keys().map(|f| dir.join(f)).collect())
}

impl WeightSource for SafetensorsSource {
    fn config(&self) -> &Qwen35Config {
        &self.config
    }

    fn tensor(&self, canonical_name: &str) -> Result<Tensor> {
        let e = self
            .tensors
            .get(canonical_name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: canonical_name.to_string(),
            })?;
        let dtype = to_dtype(canonical_name, &e.dtype)?;
        Ok(Tensor {
            name: canonical_name.to_string(),
            dtype,
            shape: e.shape.clone(),
            data: TensorData::Mapped {
                map: self.files[e.file].1.clone(),
                offset: e.start,
                len: e.end - e.start,
            },
        })
    }

    fn contains(&self, canonical_name: &str) -> bool {
        self.tensors.contains_key(canonical_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with_header(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn parses_a_valid_header() {
        let f = file_with_header(
            r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]}}"#,
            &[0u8; 12],
        );
        let e = parse_header(&f, f.len(), Path::new("x")).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].shape, vec![2, 3]);
        assert_eq!(e[0].end - e[0].start, 12);
    }

    #[test]
    fn rejects_absurd_and_truncated_headers() {
        let mut f = u64::MAX.to_le_bytes().to_vec();
        f.extend_from_slice(b"{}");
        let err = parse_header(&f, f.len(), Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");

        let mut f = 1000u64.to_le_bytes().to_vec();
        f.extend_from_slice(b"{}");
        let err = parse_header(&f, f.len(), Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");

        let f = file_with_header(
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            &[0u8; 8],
        );
        let err = parse_header(&f, f.len(), Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");

        let f = file_with_header(
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
            &[0u8; 16],
        );
        let err = parse_header(&f, f.len(), Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("expected 12"), "{err}");

        let f = file_with_header(
            r#"{"a":{"dtype":"F32","shape":[4611686018427387904, 8],"data_offsets":[0,16]}}"#,
            &[0u8; 16],
        );
        assert!(parse_header(&f, f.len(), Path::new("x")).is_err());
    }

    #[test]
    fn canonical_names_strip_both_prefixes_and_skip_extras() {
        assert_eq!(
            canonical_name("model.language_model.layers.0.mlp.up_proj.weight"),
            Some("layers.0.mlp.up_proj.weight")
        );
        assert_eq!(canonical_name("model.norm.weight"), Some("norm.weight"));
        assert_eq!(canonical_name("lm_head.weight"), Some("lm_head.weight"));
        assert_eq!(canonical_name("mtp.fc.weight"), None);
        assert_eq!(
            canonical_name("model.visual.blocks.0.attn.qkv.weight"),
            None
        );
    }
}
