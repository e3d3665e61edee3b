//! llama.cpp's own vocabulary test for the `qwen35` pre-tokenizer:
//! `ggml-vocab-qwen35.gguf` with its `.inp` / `.out` cases (expected ids come
//! from the HF tokenizer). Fetch them with `scripts/fetch-test-data.sh`.
//! Without them the test is skipped with a message, except under `CI=true`
//! where their absence fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use lucebox_models::Tokenizer;
use lucebox_models::gguf::GgufFile;

fn test_data_dir() -> PathBuf {
    match std::env::var_os("LUCEBOX_TEST_DATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/test-data"),
    }
}

/// The tokenizer of the test vocabulary, or None (test skipped) when absent.
pub fn load() -> Option<(Tokenizer, PathBuf)> {
    let dir = test_data_dir();
    let gguf = dir.join("ggml-vocab-qwen35.gguf");
    if !gguf.exists() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "CI=true but {} is missing: run scripts/fetch-test-data.sh",
            gguf.display()
        );
        eprintln!(
            "SKIPPED: {} not found (run scripts/fetch-test-data.sh or set LUCEBOX_TEST_DATA)",
            gguf.display()
        );
        return None;
    }
    let file = GgufFile::open(&gguf).expect("vocab GGUF parses");
    Some((Tokenizer::from_gguf(&file).expect("tokenizer loads"), dir))
}

#[test]
fn llama_cpp_qwen35_vocab_cases_all_match() {
    let Some((tok, dir)) = load() else { return };
    let inp = std::fs::read_to_string(dir.join("ggml-vocab-qwen35.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(dir.join("ggml-vocab-qwen35.gguf.out")).unwrap();
    // Same splitting as llama.cpp tests/test-tokenizer-0.cpp.
    let sep = "\n__ggml_vocab_test__\n";
    let mut cases: Vec<&str> = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].find(sep) {
            Some(n) => {
                cases.push(&inp[pos..pos + n]);
                pos += n + sep.len();
            }
            None => {
                cases.push(&inp[pos..]);
                break;
            }
        }
    }
    let expected: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        cases.len(),
        expected.len(),
        "input and output case counts differ"
    );
    let mut matched = 0;
    let mut failures = Vec::new();
    for (text, want) in cases.iter().zip(&expected) {
        let got = tok.encode(text, false).unwrap();
        if &got == want {
            matched += 1;
            // Round trip: decoding gives the text back.
            assert_eq!(tok.decode(&got, false).unwrap(), *text);
        } else {
            failures.push(format!("{text:?}: expected {want:?}, got {got:?}"));
        }
    }
    println!("qwen35 vocab: {matched}/{} cases matched", cases.len());
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

#[test]
fn streaming_detokeniser_reassembles_split_utf8() {
    let Some((tok, _)) = load() else { return };
    let text = "Hello 🦙 wörld, нещо 你好!\n  end";
    let ids = tok.encode(text, false).unwrap();
    let mut stream = tok.stream(false);
    let mut out = String::new();
    let mut pieces = 0;
    for &id in &ids {
        if let Some(s) = stream.push(id).unwrap() {
            assert!(
                !s.contains('\u{FFFD}'),
                "emitted a partial character: {s:?}"
            );
            out.push_str(&s);
            pieces += 1;
        }
    }
    if let Some(s) = stream.finish().unwrap() {
        out.push_str(&s);
    }
    assert_eq!(out, text);
    assert!(pieces > 3);
}

#[test]
fn special_tokens_are_parsed_only_when_asked() {
    let Some((tok, _)) = load() else { return };
    let im_start = tok.token_id("<|im_start|>").unwrap();
    let with = tok.encode("<|im_start|>user\nhi", true).unwrap();
    assert_eq!(with[0], im_start);
    let without = tok.encode("<|im_start|>user\nhi", false).unwrap();
    assert!(!without.contains(&im_start));
    assert_eq!(tok.decode(&without, false).unwrap(), "<|im_start|>user\nhi");
}

#[test]
fn embedded_chat_template_renders_and_tokenises() {
    let Some((tok, dir)) = load() else { return };
    let tmpl = lucebox_models::ChatTemplate::for_model(dir.join("ggml-vocab-qwen35.gguf"))
        .unwrap()
        .expect("the test vocabulary embeds a chat template");
    let text = tmpl
        .render(&[lucebox_models::ChatMessage::new("user", "Hi")], true)
        .unwrap();
    // The file's template adds the default system prompt on the first turn.
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = tok.encode(&text, true).unwrap();
    assert_eq!(ids[0], tok.token_id("<|im_start|>").unwrap());
}
