//! Heavy (ignored by default): a full-size Qwen3.5-0.8B synthetic checkpoint
//! in Q4_K_M GGUF and bf16 safetensors, opened again and checked.
//! Run: cargo test --release -p lucebox-models --test synth_full_size -- --ignored --nocapture
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lucebox_models::Qwen35Config;
use lucebox_models::gguf::{GgufSource, tensor_specs};
use lucebox_models::synth::{SynthFormat, SynthOptions, SynthQuant, synth};
use lucebox_models::weights::WeightSource;

#[test]
#[ignore = "writes ~2 GB; run explicitly"]
fn qwen35_0_8b_q4_k_m_and_bf16_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Qwen35Config::qwen35_0_8b();
    for (format, quant, name) in [
        (SynthFormat::Safetensors, SynthQuant::Bf16, "hf"),
        (SynthFormat::Gguf, SynthQuant::Q8_0, "q8.gguf"),
        (SynthFormat::Gguf, SynthQuant::Q4KM, "m.gguf"),
    ] {
        let opts = SynthOptions {
            format,
            quant,
            seed: 0,
            vocab_base: None,
        };
        let out = dir.path().join(name);
        let r = synth(&cfg, &out, &opts, &mut |_, _| {}).unwrap();
        println!(
            "{format:?} {quant:?}: {:.3} GB in {:.1} s = {:.2} s/GB",
            r.bytes as f64 / 1e9,
            r.seconds,
            r.seconds_per_gb()
        );
        if format == SynthFormat::Gguf {
            let src = GgufSource::open(&out).unwrap();
            let mut got = src.config().clone();
            got.name = cfg.name.clone();
            got.eos_token_ids = cfg.eos_token_ids.clone();
            assert_eq!(got, cfg);
            for spec in tensor_specs(&cfg).iter().filter(|s| s.shape.len() == 1) {
                assert!(
                    src.tensor(&spec.canonical)
                        .unwrap()
                        .to_f32()
                        .unwrap()
                        .iter()
                        .all(|v| v.is_finite())
                );
            }
        }
    }
}
