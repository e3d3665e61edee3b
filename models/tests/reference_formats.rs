//! The CPU reference on synthetic checkpoints in every format `synth` writes:
//! safetensors bf16 and GGUF bf16 / q8_0 / q4_k_m of the same random weights
//! give the same logits within the storage precision (GGUF conventions —
//! norms +1, ssm_a, tiled value heads — undone by GgufSource).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::tiny;
use lucebox_models::config::Qwen35Config;
use lucebox_models::reference::ReferenceModel;
use lucebox_models::synth::{SynthFormat, SynthOptions, SynthQuant, synth};
use lucebox_models::weights::{Tensor, WeightSource};
use lucebox_models::{load, validate_all};

fn logits_of(source: &dyn WeightSource, ids: &[u32]) -> Vec<Vec<f32>> {
    validate_all(source, true).unwrap();
    ReferenceModel::load(source)
        .unwrap()
        .prompt_logits(ids)
        .unwrap()
}

fn rel_err(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            d / y.iter().map(|q| q.abs()).fold(0f32, f32::max)
        })
        .fold(0f32, f32::max)
}

/// Matrices from one source, small tensors (norms, A_log, dt_bias, conv:
/// synth stores those as F32 in GGUF but bf16 in safetensors) from another.
struct Mixed<'a> {
    matrices: &'a dyn WeightSource,
    small: &'a dyn WeightSource,
}

impl WeightSource for Mixed<'_> {
    fn config(&self) -> &Qwen35Config {
        self.matrices.config()
    }
    fn tensor(&self, name: &str) -> lucebox_models::Result<Tensor> {
        let t = self.matrices.tensor(name)?;
        if t.shape.len() == 2 {
            Ok(t)
        } else {
            self.small.tensor(name)
        }
    }
    fn contains(&self, name: &str) -> bool {
        self.matrices.contains(name)
    }
}

#[test]
fn safetensors_and_gguf_of_the_same_weights_agree() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<u32> = (0..70).map(|i| (i * 37 + 5) % 512).collect();
    for tied in [false, true] {
        let cfg = tiny(tied);
        let write = |name: &str, format, quant| {
            let path = dir.path().join(format!("tied-{tied}-{name}"));
            let opts = SynthOptions {
                format,
                quant,
                seed: 3,
                vocab_base: None,
            };
            synth(&cfg, &path, &opts, &mut |_, _| {}).unwrap();
            load::open(path.to_str().unwrap()).unwrap()
        };
        let hf = write("hf", SynthFormat::Safetensors, SynthQuant::Bf16);
        let gguf_bf16 = write("bf16.gguf", SynthFormat::Gguf, SynthQuant::Bf16);
        let reference = logits_of(gguf_bf16.weights.as_ref(), &ids);
        // Same bf16 matrices and the same F32 small tensors: only the GGUF
        // conventions (norms +1, ssm_a = -exp(A_log), tiled value heads,
        // conv layout) stand between the two, and GgufSource undoes them.
        let mixed = Mixed {
            matrices: hf.weights.as_ref(),
            small: gguf_bf16.weights.as_ref(),
        };
        let e = rel_err(&logits_of(&mixed, &ids), &reference);
        println!(
            "tied={tied}: safetensors bf16 (+ GGUF small tensors) vs GGUF bf16: max rel err {e:.2e}"
        );
        assert!(e < 1e-5, "tied={tied}: {e}");
        // Random synth weights are badly conditioned (rounding A_log/dt_bias to
        // bf16 alone moves logits by ~3%), so quantised checkpoints are held to
        // sanity bounds: bounded error and mostly the same argmax (a broken
        // dequantiser would agree at ~1/512 of the positions).
        for (quant, name, tolerance, min_same) in [
            (SynthQuant::Q8_0, "q8_0", 0.25f32, 60usize),
            (SynthQuant::Q4KM, "q4_k_m", 2.0, 30),
        ] {
            let q = write(&format!("{name}.gguf"), SynthFormat::Gguf, quant);
            let ql = logits_of(q.weights.as_ref(), &ids);
            let e = rel_err(&ql, &reference);
            let first = rel_err(&ql[..1], &reference[..1]);
            let same_argmax = ql
                .iter()
                .zip(&reference)
                .filter(|(a, b)| {
                    lucebox_models::sampling::argmax(a) == lucebox_models::sampling::argmax(b)
                })
                .count();
            println!(
                "tied={tied}: GGUF {name} vs GGUF bf16: max rel err {e:.2e} (position 0: {first:.2e}), same argmax at {same_argmax}/{} positions",
                ids.len()
            );
            assert!(e < tolerance, "tied={tied} {name}: {e}");
            assert!(
                same_argmax >= min_same,
                "tied={tied} {name}: argmax agrees at {same_argmax}"
            );
        }
    }
}
