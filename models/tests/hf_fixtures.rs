//! The CPU reference against HF transformers on the committed tiny random
//! Qwen3.5 checkpoints (scripts/make_hf_fixtures.py): logits of every prompt
//! position (chunked GDN over two chunks), the greedy continuation (cached
//! one-token decode), and a multi-token forward on top of a cache.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};

use lucebox_models::reference::{DeltaRuleMode, ForwardOptions, LogitsWanted, ReferenceModel};
use lucebox_models::{LayerType, load};
use serde_json::Value;

const MAX_REL_ERR: f32 = 1e-4;

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

struct Reference {
    meta: Value,
    data: Vec<f32>,
}

impl Reference {
    fn load(dir: &Path) -> Self {
        let meta: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        let bytes = std::fs::read(dir.join("reference.f32")).unwrap();
        let data = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Self { meta, data }
    }
    fn ids(&self, key: &str) -> Vec<u32> {
        self.meta[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    }
    fn block(&self, key: &str) -> Vec<Vec<f32>> {
        let b = &self.meta["blocks"][key];
        let off = b["offset_floats"].as_u64().unwrap() as usize;
        let rows = b["shape"][0].as_u64().unwrap() as usize;
        let cols = b["shape"][1].as_u64().unwrap() as usize;
        (0..rows)
            .map(|r| self.data[off + r * cols..off + (r + 1) * cols].to_vec())
            .collect()
    }
}

/// max over rows of (max |ours − hf| / max |hf|) for that row.
fn max_rel_err(ours: &[Vec<f32>], hf: &[Vec<f32>]) -> f32 {
    assert_eq!(ours.len(), hf.len());
    let per_row: Vec<f32> = ours
        .iter()
        .zip(hf)
        .map(|(a, b)| {
            assert_eq!(a.len(), b.len());
            let diff = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            let mag = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
            diff / mag
        })
        .collect();
    if std::env::var_os("LUCEBOX_PRINT_ROWS").is_some() {
        println!(
            "per-row rel err: {:?}",
            per_row
                .iter()
                .map(|e| format!("{e:.1e}"))
                .collect::<Vec<_>>()
        );
    }
    per_row.into_iter().fold(0f32, f32::max)
}

fn check_fixture(name: &str) {
    let dir = fixture_dir(name);
    let reference = Reference::load(&dir);
    let loaded = load::open(dir.to_str().unwrap()).unwrap();
    let cfg = &loaded.config;
    assert_eq!(cfg.linear_num_value_heads, 3 * cfg.linear_num_key_heads);
    assert!(cfg.layer_types.contains(&LayerType::FullAttention));
    assert_eq!(
        cfg.tie_word_embeddings,
        reference.meta["tied"].as_bool().unwrap()
    );
    let report = lucebox_models::validate_all(loaded.weights.as_ref(), true).unwrap();
    assert_eq!(report.tensors, lucebox_models::expected_tensors(cfg).len());
    let model = ReferenceModel::load(loaded.weights.as_ref()).unwrap();
    let prompt = reference.ids("prompt");
    assert!(
        prompt.len() > 64,
        "the prompt must span more than one GDN chunk"
    );

    // 1. Every prompt position, one forward (chunked GDN).
    let ours = model.prompt_logits(&prompt).unwrap();
    let e_prompt = max_rel_err(&ours, &reference.block("prompt_logits"));

    // 2. Greedy continuation: same tokens, and the logits of each step.
    let want_tokens = reference.ids("greedy_tokens");
    let (tokens, step_logits) = model.greedy(&prompt, want_tokens.len()).unwrap();
    let e_greedy = max_rel_err(&step_logits, &reference.block("greedy_logits"));

    // 3. prompt[..S] then prompt[S..] as one multi-token call on the cache.
    let split = reference.meta["split_at"].as_u64().unwrap() as usize;
    let mut state = model.new_state();
    let none = ForwardOptions {
        logits: LogitsWanted::None,
        ..Default::default()
    };
    model.forward(&mut state, &prompt[..split], &none).unwrap();
    let all = ForwardOptions {
        logits: LogitsWanted::All,
        ..Default::default()
    };
    let out = model.forward(&mut state, &prompt[split..], &all).unwrap();
    assert_eq!(out.positions, (split..prompt.len()).collect::<Vec<_>>());
    let e_split = max_rel_err(&out.logits, &reference.block("split_logits"));

    // 4. The whole prompt token by token (recurrent GDN) agrees too.
    let mut state = model.new_state();
    let rec = ForwardOptions {
        logits: LogitsWanted::All,
        delta_rule: DeltaRuleMode::Recurrent,
        ..Default::default()
    };
    let ours_rec = model.forward(&mut state, &prompt, &rec).unwrap().logits;
    let e_rec = max_rel_err(&ours_rec, &reference.block("prompt_logits"));

    println!(
        "{name} (HF transformers {}): max rel err prompt {e_prompt:.2e}, greedy steps {e_greedy:.2e}, \
         cached multi-token {e_split:.2e}, prompt via recurrent GDN {e_rec:.2e}; greedy tokens {tokens:?}",
        reference.meta["versions"]["transformers"]
    );
    assert_eq!(tokens, want_tokens, "{name}: greedy tokens differ from HF");
    for (what, e) in [
        ("prompt", e_prompt),
        ("greedy", e_greedy),
        ("split", e_split),
        ("recurrent", e_rec),
    ] {
        assert!(
            e < MAX_REL_ERR,
            "{name}: {what} logits rel err {e} >= {MAX_REL_ERR}"
        );
    }
}

#[test]
fn composite_tied_fixture_matches_hf() {
    check_fixture("tiny-composite-tied");
}

#[test]
fn text_only_untied_fixture_matches_hf() {
    check_fixture("tiny-text-untied");
}

#[test]
fn hidden_state_capture_returns_layer_outputs() {
    let dir = fixture_dir("tiny-text-untied");
    let loaded = load::open(dir.to_str().unwrap()).unwrap();
    let model = ReferenceModel::load(loaded.weights.as_ref()).unwrap();
    let prompt = Reference::load(&dir).ids("prompt");
    let opts = ForwardOptions {
        logits: LogitsWanted::Last,
        capture_layers: vec![3, 1],
        ..Default::default()
    };
    let mut state = model.new_state();
    let out = model.forward(&mut state, &prompt[..10], &opts).unwrap();
    assert_eq!(out.hidden.len(), 2);
    assert_eq!(out.hidden[0].0, 3);
    assert_eq!(out.hidden[1].0, 1);
    assert_eq!(out.hidden[0].1.len(), 10);
    assert_eq!(out.hidden[0].1[0].len(), model.config().hidden_size);
    assert_ne!(out.hidden[0].1, out.hidden[1].1);
    // Capturing does not change the logits.
    let mut state2 = model.new_state();
    let plain = model
        .forward(&mut state2, &prompt[..10], &ForwardOptions::default())
        .unwrap();
    assert_eq!(plain.logits, out.logits);
    assert_eq!(state, state2);
    // An out-of-range layer is an error, not a panic.
    let bad = ForwardOptions {
        capture_layers: vec![4],
        ..Default::default()
    };
    assert!(
        model
            .forward(&mut model.new_state(), &prompt[..2], &bad)
            .is_err()
    );
}
