//! synth -> GgufSource / safetensors -> the same canonical tensors, on a tiny
//! config with Hv = 3·Hk so the value-head reorder is exercised.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::tiny;
use lucebox_models::Tokenizer;
use lucebox_models::config::Qwen35Config;
use lucebox_models::gguf::{GgufFile, GgufSource, names::tiled_position, tensor_specs};
use lucebox_models::synth::{SynthFormat, SynthOptions, SynthQuant, canonical_values, synth};
use lucebox_models::weights::{DType, WeightSource};

fn opts(format: SynthFormat, quant: SynthQuant) -> SynthOptions {
    SynthOptions {
        format,
        quant,
        seed: 11,
        vocab_base: None,
    }
}

/// Allowed max |error| relative to the tensor's max |value|, by storage type.
fn tolerance(d: DType) -> f32 {
    match d {
        DType::F32 => 1e-6,
        DType::F16 | DType::BF16 => 8e-3,
        DType::Q8_0 => 8e-3,
        DType::Q6K => 0.04,
        DType::Q4K => 0.15,
    }
}

#[test]
fn gguf_round_trip_gives_back_canonical_tensors() {
    let dir = tempfile::tempdir().unwrap();
    for tied in [true, false] {
        let cfg = tiny(tied);
        for quant in [SynthQuant::Bf16, SynthQuant::Q8_0, SynthQuant::Q4KM] {
            let path = dir.path().join(format!("m-{tied}-{quant:?}.gguf"));
            let mut last = (0, 0);
            let report = synth(&cfg, &path, &opts(SynthFormat::Gguf, quant), &mut |d, t| {
                last = (d, t)
            })
            .unwrap();
            assert_eq!(last.0, last.1, "progress reached the total");
            assert!(report.bytes > 0);
            let src = GgufSource::open(&path).unwrap();
            let got = src.config();
            assert_eq!(got.hidden_size, cfg.hidden_size);
            assert_eq!(got.layer_types, cfg.layer_types);
            assert_eq!(got.linear_num_value_heads, 6);
            assert_eq!(got.linear_value_head_dim, 32);
            assert_eq!(got.rotary_dim(), cfg.rotary_dim());
            assert_eq!(got.rms_norm_eps, cfg.rms_norm_eps);
            assert_eq!(got.rope_theta, cfg.rope_theta);
            assert_eq!(got.tie_word_embeddings, tied);
            assert_eq!(got.vocab_size, cfg.vocab_size);
            assert_eq!(src.contains("lm_head.weight"), !tied);
            let mut worst = (0f32, String::new());
            for spec in tensor_specs(&cfg) {
                let t = src.tensor(&spec.canonical).unwrap();
                assert_eq!(t.shape, spec.shape, "{}", spec.canonical);
                let want = canonical_values(&spec, 11);
                let have = t.to_f32().unwrap();
                let max = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                let err = want
                    .iter()
                    .zip(&have)
                    .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
                let stored = src
                    .file()
                    .tensor_info(&spec.gguf)
                    .unwrap()
                    .ggml_type
                    .dtype()
                    .unwrap();
                let rel = err / max;
                assert!(
                    rel <= tolerance(stored),
                    "{quant:?} {}: stored {} max err {err} (max |x| {max})",
                    spec.canonical,
                    stored.name()
                );
                if rel > worst.0 {
                    worst = (rel, spec.canonical.clone());
                }
            }
            println!(
                "{quant:?} tied={tied}: worst relative error {:.4} ({})",
                worst.0, worst.1
            );
        }
    }
}

#[test]
fn gguf_stores_value_heads_in_tiled_order_and_llama_cpp_conventions() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(true);
    let path = dir.path().join("m.gguf");
    synth(
        &cfg,
        &path,
        &opts(SynthFormat::Gguf, SynthQuant::Bf16),
        &mut |_, _| {},
    )
    .unwrap();
    let file = GgufFile::open(&path).unwrap();
    let specs = tensor_specs(&cfg);
    let spec = |c: &str| specs.iter().find(|s| s.canonical == c).unwrap();
    let raw = |n: &str| {
        let info = file.tensor_info(n).unwrap();
        lucebox_models::quant::dequantize(
            info.ggml_type.dtype().unwrap(),
            file.tensor_bytes(info),
            info.numel() as usize,
        )
        .unwrap()
    };
    // ssm_a = -exp(A_log), HF head j at tiled position (j % r)·Hk + j / r.
    let a_log = canonical_values(spec("layers.0.linear_attn.A_log"), 11);
    let ssm_a = raw("blk.0.ssm_a");
    for (j, a) in a_log.iter().enumerate() {
        let p = tiled_position(j, 2, 3);
        assert!((ssm_a[p] + a.exp()).abs() < 1e-5 * a.exp(), "head {j}");
    }
    assert_eq!(tiled_position(1, 2, 3), 2); // K0v1 sits after K0v0, K1v0
    // Zero-centred norms are stored +1; the gated norm is not.
    let n = canonical_values(spec("layers.0.input_layernorm.weight"), 11);
    let stored = raw("blk.0.attn_norm.weight");
    assert!((stored[0] - (n[0] + 1.0)).abs() < 1e-6);
    let g = canonical_values(spec("layers.0.linear_attn.norm.weight"), 11);
    assert_eq!(raw("blk.0.ssm_norm.weight"), g);
    // conv1d is {K, conv_dim} in ggml order, F32.
    let conv = file.tensor_info("blk.0.ssm_conv1d.weight").unwrap();
    assert_eq!(conv.dims, vec![4, cfg.conv_dim() as u64]);
    assert_eq!(conv.ggml_type, lucebox_models::gguf::GgmlType::F32);
    // Metadata llama.cpp requires.
    for key in [
        "qwen35.context_length",
        "qwen35.rope.dimension_sections",
        "qwen35.ssm.inner_size",
        "qwen35.full_attention_interval",
        "tokenizer.ggml.merges",
        "tokenizer.chat_template",
    ] {
        assert!(file.metadata(key).is_some(), "{key}");
    }
    assert!(
        file.tensor_info("output.weight").is_none(),
        "tied: no output.weight"
    );
}

#[test]
fn safetensors_dir_round_trip_and_tokenizers_agree() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(false);
    let out = dir.path().join("hf");
    synth(
        &cfg,
        &out,
        &opts(SynthFormat::Safetensors, SynthQuant::Bf16),
        &mut |_, _| {},
    )
    .unwrap();
    let text = std::fs::read_to_string(out.join("config.json")).unwrap();
    let parsed = Qwen35Config::from_hf_json(&text, "tiny").unwrap();
    assert_eq!(parsed.layer_types, cfg.layer_types);
    assert_eq!(parsed.linear_num_value_heads, cfg.linear_num_value_heads);
    assert_eq!(parsed.rotary_dim(), cfg.rotary_dim());
    assert!(!parsed.tie_word_embeddings);

    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), tensor_specs(&cfg).len());
    for spec in tensor_specs(&cfg) {
        let name = if spec.canonical == "lm_head.weight" {
            spec.canonical.clone()
        } else {
            format!("model.{}", spec.canonical)
        };
        let view = st.tensor(&name).unwrap();
        assert_eq!(view.shape(), spec.shape.as_slice(), "{name}");
        assert_eq!(view.dtype(), safetensors::Dtype::BF16);
        let want = canonical_values(&spec, 11);
        for (i, c) in view.data().chunks_exact(2).enumerate() {
            let v = half::bf16::from_le_bytes([c[0], c[1]]);
            assert_eq!(v, half::bf16::from_f32(want[i]), "{name}[{i}]");
        }
    }
    // The HF tokenizer.json written next to the weights tokenises like the
    // GGUF tokenizer of the same vocabulary.
    let hf = Tokenizer::from_hf_file(out.join("tokenizer.json")).unwrap();
    let gguf_path = dir.path().join("m.gguf");
    synth(
        &cfg,
        &gguf_path,
        &opts(SynthFormat::Gguf, SynthQuant::Q8_0),
        &mut |_, _| {},
    )
    .unwrap();
    let bpe = Tokenizer::from_gguf(&GgufFile::open(&gguf_path).unwrap()).unwrap();
    let text = "<|im_start|>user\nHello wörld 🦙 123<|im_end|>\n";
    assert_eq!(
        hf.encode(text, true).unwrap(),
        bpe.encode(text, true).unwrap()
    );
    assert_eq!(hf.vocab_size(), cfg.vocab_size);
    let ids = bpe.encode(text, true).unwrap();
    assert_eq!(bpe.decode(&ids, false).unwrap(), text);
    // Streaming through either tokenizer gives the text back, never a partial char.
    for tok in [&hf, &bpe] {
        let mut s = tok.stream(false);
        let mut out = String::new();
        for &id in &ids {
            if let Some(piece) = s.push(id).unwrap() {
                assert!(!piece.contains('\u{FFFD}'));
                out.push_str(&piece);
            }
        }
        out.push_str(&s.finish().unwrap().unwrap_or_default());
        assert_eq!(out, text);
    }
}

#[test]
fn synth_is_deterministic_given_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(true);
    let a = dir.path().join("a.gguf");
    let b = dir.path().join("b.gguf");
    synth(
        &cfg,
        &a,
        &opts(SynthFormat::Gguf, SynthQuant::Q4KM),
        &mut |_, _| {},
    )
    .unwrap();
    synth(
        &cfg,
        &b,
        &opts(SynthFormat::Gguf, SynthQuant::Q4KM),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}
