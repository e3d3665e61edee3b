//! `lucebox logits` and `lucebox run` on the committed HF fixtures, through
//! the built binary (the JSON contracts other tools rely on).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures")
        .join(name)
}

fn meta(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap())
        .unwrap()
}

fn hf_prompt_logits(name: &str) -> Vec<Vec<f32>> {
    let m = meta(name);
    let b = &m["blocks"]["prompt_logits"];
    let (off, rows, cols) = (
        b["offset_floats"].as_u64().unwrap() as usize,
        b["shape"][0].as_u64().unwrap() as usize,
        b["shape"][1].as_u64().unwrap() as usize,
    );
    let bytes = std::fs::read(fixture(name).join("reference.f32")).unwrap();
    let all: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (0..rows)
        .map(|r| all[off + r * cols..off + (r + 1) * cols].to_vec())
        .collect()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn csv(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn lucebox(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lucebox"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    diff / b.iter().map(|y| y.abs()).fold(0f32, f32::max)
}

#[test]
fn logits_json_matches_hf_for_all_and_last_positions() {
    let name = "tiny-composite-tied";
    let dir = fixture(name);
    let prompt = ids_of(&meta(name)["prompt"]);
    let hf = hf_prompt_logits(name);
    let ids = csv(&prompt);
    let (ok, stdout, stderr) = lucebox(&[
        "logits",
        "--model",
        dir.to_str().unwrap(),
        "--ids",
        &ids,
        "--all-positions",
    ]);
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(ids_of(&v["ids"]), prompt);
    assert_eq!(
        ids_of(&v["positions"]),
        (0..prompt.len() as u32).collect::<Vec<_>>()
    );
    let rows = v["logits"].as_array().unwrap();
    assert_eq!(rows.len(), prompt.len());
    let mut worst = 0f32;
    for (row, want) in rows.iter().zip(&hf) {
        let got: Vec<f32> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        worst = worst.max(rel_err(&got, want));
    }
    println!("lucebox logits vs HF: max rel err {worst:.2e}");
    assert!(worst < 1e-4);

    // Last position only, on a prefix (causality: equals the full run's row).
    let (ok, stdout, stderr) = lucebox(&[
        "logits",
        "--model",
        dir.to_str().unwrap(),
        "--ids",
        &csv(&prompt[..5]),
    ]);
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(ids_of(&v["positions"]), vec![4]);
    let got: Vec<f32> = v["logits"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert!(rel_err(&got, &hf[4]) < 1e-4);
}

#[test]
fn run_json_reproduces_hf_greedy_tokens() {
    for name in ["tiny-composite-tied", "tiny-text-untied"] {
        let m = meta(name);
        let prompt = ids_of(&m["prompt"]);
        let want = ids_of(&m["greedy_tokens"]);
        let (ok, stdout, stderr) = lucebox(&[
            "run",
            "--model",
            fixture(name).to_str().unwrap(),
            "--ids",
            &csv(&prompt),
            "--max-tokens",
            &want.len().to_string(),
            "--temperature",
            "0",
            "--ignore-eos",
            "--output",
            "json",
        ]);
        assert!(ok, "{stderr}");
        let v: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(ids_of(&v["prompt_ids"]), prompt);
        assert_eq!(ids_of(&v["generated_ids"]), want, "{name}");
        assert!(stderr.contains("tok/s"), "{stderr}");
    }
}

#[test]
fn run_samples_reproducibly_from_a_seed() {
    let name = "tiny-text-untied";
    let prompt = csv(&ids_of(&meta(name)["prompt"])[..8]);
    let dir = fixture(name);
    let go = |seed: &str| {
        let (ok, stdout, stderr) = lucebox(&[
            "run",
            "--model",
            dir.to_str().unwrap(),
            "--ids",
            &prompt,
            "--max-tokens",
            "12",
            "--temperature",
            "1.0",
            "--top-k",
            "50",
            "--top-p",
            "0.95",
            "--repetition-penalty",
            "1.1",
            "--seed",
            seed,
            "--ignore-eos",
            "--output",
            "json",
            "--backend",
            "cpu",
        ]);
        assert!(ok, "{stderr}");
        let v: Value = serde_json::from_str(stdout.trim()).unwrap();
        ids_of(&v["generated_ids"])
    };
    let a = go("7");
    assert_eq!(a.len(), 12);
    assert_eq!(a, go("7"));
    assert_ne!(a, go("8"), "different seeds should (almost surely) differ");
}

#[test]
fn clear_errors_for_gpu_backend_text_prompt_and_bad_paths() {
    let dir = fixture("tiny-text-untied");
    let d = dir.to_str().unwrap();
    // No GPU on this machine: a plain error naming the missing driver, no panic.
    let (ok, _, stderr) = lucebox(&["logits", "--model", d, "--ids", "1,2", "--backend", "gpu"]);
    assert!(
        !ok && stderr.contains("CUDA") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let (ok, _, stderr) = lucebox(&["run", "--model", d, "--prompt", "hello"]);
    assert!(!ok && stderr.contains("tokenizer"), "{stderr}");
    let (ok, _, stderr) = lucebox(&["logits", "--model", "/nonexistent/model/dir", "--ids", "1"]);
    assert!(!ok && stderr.contains("no such file"), "{stderr}");
    let (ok, _, stderr) = lucebox(&["logits", "--model", d, "--ids", "100000"]);
    assert!(!ok && stderr.contains("outside the vocabulary"), "{stderr}");
}

#[test]
fn run_tokenises_a_text_prompt_and_streams_text() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/assets/tiny-chat-model");
    let d = dir.to_str().unwrap();
    let (ok, stdout, stderr) = lucebox(&[
        "run",
        "--model",
        d,
        "--prompt",
        "Hello there",
        "--max-tokens",
        "5",
        "--ignore-eos",
        "--output",
        "json",
    ]);
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    let prompt = ids_of(&v["prompt_ids"]);
    assert!(!prompt.is_empty());
    assert_eq!(ids_of(&v["generated_ids"]).len(), 5);
    // The same ids through --ids give the same continuation.
    let (ok, stdout2, stderr) = lucebox(&[
        "run",
        "--model",
        d,
        "--ids",
        &csv(&prompt),
        "--max-tokens",
        "5",
        "--ignore-eos",
        "--output",
        "json",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout2, stdout);
    // Text mode streams decoded text (not ids) and reports speed on stderr.
    let (ok, stdout, stderr) = lucebox(&[
        "run",
        "--model",
        d,
        "--prompt",
        "Hello there",
        "--max-tokens",
        "5",
        "--ignore-eos",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        !stdout.trim().is_empty() && stderr.contains("tok/s"),
        "{stdout:?} {stderr}"
    );
}
