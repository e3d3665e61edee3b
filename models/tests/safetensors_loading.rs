//! Safetensors loading: sharded checkpoints, both naming schemes, and bad
//! input (missing tensors, wrong shapes, truncation, unknown dtypes, NaN),
//! plus a bounded fuzz of the header parser.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lucebox_models::reference::ReferenceModel;
use lucebox_models::safetensors_source::parse_header;
use lucebox_models::{ModelError, load, validate_all};
use proptest::prelude::*;
use safetensors::tensor::{Dtype, TensorView};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// (name, dtype string, shape, bytes) of every tensor in a fixture file.
type Raw = Vec<(String, String, Vec<usize>, Vec<u8>)>;

fn read_raw(dir: &Path) -> Raw {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Raw = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            (
                n,
                format!("{:?}", t.dtype()),
                t.shape().to_vec(),
                t.data().to_vec(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A safetensors file written by hand (any dtype string).
fn write_raw(path: &Path, tensors: &Raw) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend_from_slice(bytes);
    }
    let h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    let mut file = (h.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&h);
    file.extend_from_slice(&data);
    std::fs::write(path, file).unwrap();
}

fn copy_config(from: &Path, to: &Path) {
    std::fs::copy(from.join("config.json"), to.join("config.json")).unwrap();
}

fn last_logits(dir: &Path, ids: &[u32]) -> Vec<f32> {
    let loaded = load::open(dir.to_str().unwrap()).unwrap();
    let model = ReferenceModel::load(loaded.weights.as_ref()).unwrap();
    model.prompt_logits(ids).unwrap().pop().unwrap()
}

#[test]
fn sharded_checkpoint_equals_single_file() {
    let src = fixture("tiny-composite-tied");
    let tmp = tempfile::tempdir().unwrap();
    let raw = read_raw(&src);
    // Two shards written with the safetensors crate, plus the index.
    let mut weight_map = BTreeMap::new();
    for shard in 0..2 {
        let file = format!("model-0000{}-of-00002.safetensors", shard + 1);
        let views: Vec<(String, TensorView<'_>)> = raw
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == shard)
            .map(|(_, (n, _, shape, bytes))| {
                weight_map.insert(n.clone(), file.clone());
                (
                    n.clone(),
                    TensorView::new(Dtype::BF16, shape.clone(), bytes).unwrap(),
                )
            })
            .collect();
        let bytes = safetensors::serialize(views, None).unwrap();
        std::fs::write(tmp.path().join(&file), bytes).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        tmp.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    copy_config(&src, tmp.path());
    let ids = [1u32, 5, 9, 200, 3];
    assert_eq!(last_logits(tmp.path(), &ids), last_logits(&src, &ids));
}

#[test]
fn text_scheme_and_composite_scheme_load_the_same_tensors() {
    // Rewrite the composite fixture under `model.*` names with a text-only config.
    let src = fixture("tiny-composite-tied");
    let tmp = tempfile::tempdir().unwrap();
    let raw: Raw = read_raw(&src)
        .into_iter()
        .filter(|t| !t.0.starts_with("mtp.") && !t.0.starts_with("model.visual."))
        .map(|(n, d, s, b)| (n.replace("model.language_model.", "model."), d, s, b))
        .collect();
    write_raw(&tmp.path().join("model.safetensors"), &raw);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    std::fs::write(
        tmp.path().join("config.json"),
        cfg["text_config"].to_string(),
    )
    .unwrap();
    let ids = [7u32, 8, 9];
    assert_eq!(last_logits(tmp.path(), &ids), last_logits(&src, &ids));
}

fn broken_copy(edit: impl FnOnce(&mut Raw)) -> tempfile::TempDir {
    let src = fixture("tiny-text-untied");
    let tmp = tempfile::tempdir().unwrap();
    let mut raw = read_raw(&src);
    edit(&mut raw);
    write_raw(&tmp.path().join("model.safetensors"), &raw);
    copy_config(&src, tmp.path());
    tmp
}

#[test]
fn missing_tensor_is_named() {
    let tmp = broken_copy(|raw| raw.retain(|t| t.0 != "model.layers.1.linear_attn.A_log"));
    let loaded = load::open(tmp.path().to_str().unwrap()).unwrap();
    let err = validate_all(loaded.weights.as_ref(), false).unwrap_err();
    assert!(
        matches!(err, ModelError::MissingTensor { ref name } if name == "layers.1.linear_attn.A_log"),
        "{err}"
    );
    let err = ReferenceModel::load(loaded.weights.as_ref())
        .unwrap_err()
        .to_string();
    assert!(err.contains("layers.1.linear_attn.A_log"), "{err}");
}

#[test]
fn wrong_shape_names_the_tensor_and_both_shapes() {
    let tmp = broken_copy(|raw| {
        let t = raw
            .iter_mut()
            .find(|t| t.0 == "model.layers.0.linear_attn.in_proj_qkv.weight")
            .unwrap();
        t.2 = vec![t.2[1], t.2[0]];
    });
    let loaded = load::open(tmp.path().to_str().unwrap()).unwrap();
    let err = validate_all(loaded.weights.as_ref(), false)
        .unwrap_err()
        .to_string();
    // in_proj_qkv is [conv_dim, hidden]; the broken copy swapped the two.
    let (rows, cols) = (loaded.config.conv_dim(), loaded.config.hidden_size);
    assert!(
        err.contains("layers.0.linear_attn.in_proj_qkv.weight")
            && err.contains(&format!("expected [{rows}, {cols}]"))
            && err.contains(&format!("[{cols}, {rows}]")),
        "{err}"
    );
    let err = ReferenceModel::load(loaded.weights.as_ref())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("in_proj_qkv") && err.contains(&format!("[{cols}, {rows}]")),
        "{err}"
    );

    // A config that disagrees with the file.
    let tmp = broken_copy(|_| {});
    let cfg = std::fs::read_to_string(tmp.path().join("config.json")).unwrap();
    std::fs::write(
        tmp.path().join("config.json"),
        cfg.replace("\"intermediate_size\": 64", "\"intermediate_size\": 96"),
    )
    .unwrap();
    let loaded = load::open(tmp.path().to_str().unwrap()).unwrap();
    let err = validate_all(loaded.weights.as_ref(), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mlp.gate_proj.weight")
            && err.contains("expected [96, 64]")
            && err.contains("[64, 64]"),
        "{err}"
    );
}

#[test]
fn unknown_dtype_is_refused_only_when_used() {
    let tmp = broken_copy(|raw| {
        raw.push((
            "mtp.odd.weight".into(),
            "Q9_X".into(),
            vec![3],
            vec![1, 2, 3],
        ));
        let t = raw.iter_mut().find(|t| t.0 == "model.norm.weight").unwrap();
        t.1 = "F8_E4M3".into();
        t.3.truncate(t.3.len() / 2);
    });
    let loaded = load::open(tmp.path().to_str().unwrap()).unwrap();
    let err = validate_all(loaded.weights.as_ref(), false).unwrap_err();
    assert!(
        matches!(err, ModelError::UnsupportedDtype { ref name, ref dtype } if name == "norm.weight" && dtype == "F8_E4M3"),
        "{err}"
    );
}

#[test]
fn nan_weights_are_found_by_the_value_scan() {
    let tmp = broken_copy(|raw| {
        let t = raw
            .iter_mut()
            .find(|t| t.0 == "model.layers.2.linear_attn.dt_bias")
            .unwrap();
        t.3[2..4].copy_from_slice(&half::bf16::NAN.to_le_bytes());
    });
    let loaded = load::open(tmp.path().to_str().unwrap()).unwrap();
    assert!(validate_all(loaded.weights.as_ref(), false).is_ok());
    let err = validate_all(loaded.weights.as_ref(), true).unwrap_err();
    assert!(
        matches!(err, ModelError::NonFinite { ref name, index: 1 } if name == "layers.2.linear_attn.dt_bias"),
        "{err}"
    );
}

#[test]
fn truncated_and_garbage_files_are_clear_errors() {
    let src = fixture("tiny-text-untied");
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    for (what, content) in [
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("header only", bytes[..100].to_vec()),
        ("empty", vec![]),
        ("garbage", vec![0xFFu8; 64]),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("model.safetensors"), &content).unwrap();
        copy_config(&src, tmp.path());
        let err = load::open(tmp.path().to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("malformed"),
            "{what}: {err}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic, and whatever parses lies inside the file.
    #[test]
    fn header_parser_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(entries) = parse_header(&bytes, bytes.len(), Path::new("fuzz")) {
            for e in entries {
                prop_assert!(e.start <= e.end && e.end <= bytes.len());
            }
        }
    }

    /// Valid headers with mutated bytes and lengths: never a panic, never an
    /// out-of-file range.
    #[test]
    fn mutated_headers_stay_in_bounds(
        shape in proptest::collection::vec(0usize..6, 0..4),
        begin in 0usize..64, extra in 0usize..64,
        flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..6),
        claimed_len in proptest::option::of(any::<u64>()),
        data_len in 0usize..128,
    ) {
        let header = serde_json::json!({"t": {"dtype": "F32", "shape": shape, "data_offsets": [begin, begin + extra]}}).to_string();
        let len = claimed_len.unwrap_or(header.len() as u64);
        let mut file = len.to_le_bytes().to_vec();
        file.extend_from_slice(header.as_bytes());
        file.extend(std::iter::repeat_n(0u8, data_len));
        for (pos, byte) in flips {
            if let Some(b) = file.get_mut(pos) { *b = byte; }
        }
        if let Ok(entries) = parse_header(&file, file.len(), Path::new("fuzz")) {
            for e in entries {
                prop_assert!(e.start <= e.end && e.end <= file.len());
            }
        }
    }
}
