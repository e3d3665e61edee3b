//! `lucebox bench` on the CPU backend and a committed tiny checkpoint (the CI
//! smoke test of the benchmark protocol): exact token counts, a sane spread,
//! the JSON contract scripts/bench/results-to-md.py reads, and the table.

use std::path::PathBuf;
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures")
        .join(name)
}

fn bench(extra: &[&str]) -> (bool, String, String) {
    bench_with(&["--pp", "8", "--tg", "4", "--reps", "2"], extra)
}

fn bench_with(counts: &[&str], extra: &[&str]) -> (bool, String, String) {
    let model = fixture("tiny-text-untied");
    let out = Command::new(env!("CARGO_BIN_EXE_lucebox"))
        .arg("bench")
        .arg("--model")
        .arg(&model)
        .args(counts)
        .args(["--backend", "cpu"])
        .args(extra)
        .output()
        .expect("run lucebox bench");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bench_cpu_json_has_exact_counts_and_spreads() {
    let (ok, stdout, stderr) = bench(&["--json", "--seed", "3"]);
    assert!(ok, "bench failed: {stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object on stdout");
    assert_eq!(v["schema"], "lucebox-bench/1");
    assert_eq!(v["backend"], "cpu");
    assert_eq!(v["protocol"]["pp"], 8);
    assert_eq!(v["protocol"]["tg"], 4);
    assert_eq!(v["protocol"]["seed"], 3);
    for (phase, tokens) in [("prefill", 8), ("decode", 4)] {
        let p = &v[phase];
        assert_eq!(p["tokens"], tokens, "{phase}");
        assert_eq!(p["seconds"].as_array().map(Vec::len), Some(2), "{phase}");
        let s = &p["tok_per_s"];
        let (med, min, max) = (
            s["median"].as_f64().unwrap_or(f64::NAN),
            s["min"].as_f64().unwrap_or(f64::NAN),
            s["max"].as_f64().unwrap_or(f64::NAN),
        );
        assert!(min > 0.0 && min <= med && med <= max, "{phase}: {s}");
        assert_eq!(s["runs"], 2);
        assert!(p["energy"].is_null(), "no NVML on the CPU backend");
    }
    // Untied bf16 fixture: every parameter's 2 bytes, minus all but one row
    // of the embedding (its LM head is a separate tensor, counted whole).
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-text-untied").join("config.json"))
            .expect("fixture config"),
    )
    .expect("config json");
    let (vocab, hidden) = (
        cfg["vocab_size"].as_u64().unwrap_or(0),
        cfg["hidden_size"].as_u64().unwrap_or(0),
    );
    assert!(vocab > 1 && hidden > 0 && cfg["tie_word_embeddings"] == false);
    let params = v["model"]["parameters"].as_u64().unwrap_or(0);
    assert_eq!(
        v["model"]["bytes_per_token"].as_u64(),
        Some(2 * params - (vocab - 1) * hidden * 2)
    );
    assert!(v["roofline"].is_null());
}

#[test]
fn bench_cpu_table_and_bad_arguments() {
    let (ok, stdout, stderr) = bench(&[]);
    assert!(ok, "bench failed: {stderr}");
    assert!(stdout.contains("pp8") && stdout.contains("tg4"), "{stdout}");
    assert!(stdout.contains("tok/s median"), "{stdout}");
    let (ok, _, stderr) = bench_with(&["--pp", "8", "--tg", "4", "--reps", "0"], &[]);
    assert!(!ok);
    assert!(stderr.contains("--reps must be at least 1"), "{stderr}");
}
