//! The same synthetic weights written as bf16 safetensors and as GGUF
//! (bf16 / Q8_0) give the same CPU-reference logits up to storage rounding:
//! checks the GGUF conventions (+1 norms, -exp(A_log), conv layout, V-head
//! reorder with Hv = 3·Hk) end to end through the oracle.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::tiny;
use lucebox_models::load;
use lucebox_models::reference::ReferenceModel;
use lucebox_models::synth::{SynthFormat, SynthOptions, SynthQuant, synth};

fn logits(path: &std::path::Path, tokens: &[u32]) -> Vec<Vec<f32>> {
    let loaded = load::open(path.to_str().unwrap()).unwrap();
    ReferenceModel::load(loaded.weights.as_ref())
        .unwrap()
        .prompt_logits(tokens)
        .unwrap()
}

#[test]
fn gguf_and_safetensors_of_the_same_weights_agree_through_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(false);
    let write = |format, quant, name: &str| {
        let p = dir.path().join(name);
        let opts = SynthOptions {
            format,
            quant,
            seed: 3,
            vocab_base: None,
        };
        synth(&cfg, &p, &opts, &mut |_, _| {}).unwrap();
        p
    };
    let hf = write(SynthFormat::Safetensors, SynthQuant::Bf16, "hf");
    let tokens: Vec<u32> = vec![5, 77, 300, 2, 9, 411, 63, 128, 7, 250];
    let want = logits(&hf, &tokens);
    for (quant, bound) in [(SynthQuant::Bf16, 0.03), (SynthQuant::Q8_0, 0.1)] {
        let g = write(SynthFormat::Gguf, quant, &format!("{quant:?}.gguf"));
        let got = logits(&g, &tokens);
        let (mut num, mut den, mut same) = (0f64, 0f64, 0);
        for (a, b) in got.iter().zip(&want) {
            num += a
                .iter()
                .zip(b)
                .map(|(x, y)| ((x - y) as f64).powi(2))
                .sum::<f64>();
            den += b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>();
            let am = |v: &[f32]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap();
            same += (am(a) == am(b)) as usize;
        }
        let rel = (num / den).sqrt();
        println!(
            "{quant:?}: relative logit error {rel:.4}, argmax agrees at {same}/{} positions",
            tokens.len()
        );
        assert!(rel < bound, "{quant:?}: relative error {rel}");
        assert!(
            same * 10 >= tokens.len() * 7,
            "{quant:?}: argmax agrees at only {same} positions"
        );
    }
}
