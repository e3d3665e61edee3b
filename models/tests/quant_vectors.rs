#![allow(clippy::unwrap_used)]
//! Q8_0 / Q4_K / Q6_K against gguf-py reference vectors
//! (models/tests/data/quant_vectors.json, written by scripts/make_quant_vectors.py).

use lucebox_models::quant::{dequantize, quantize};
use lucebox_models::weights::DType;
use serde_json::Value;

fn vectors() -> Value {
    let text = include_str!("data/quant_vectors.json");
    serde_json::from_str(text).expect("vector file is JSON")
}

fn bits(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|b| f32::from_bits(b.as_u64().expect("u32") as u32))
        .collect()
}

fn dtype(name: &str) -> DType {
    match name {
        "Q8_0" => DType::Q8_0,
        "Q4_K" => DType::Q4K,
        "Q6_K" => DType::Q6K,
        other => panic!("unknown {other}"),
    }
}

#[test]
fn dequantisation_is_bit_exact_with_gguf_py() {
    let v = vectors();
    for name in ["Q8_0", "Q4_K", "Q6_K"] {
        let case = &v[name];
        let n = case["n"].as_u64().unwrap() as usize;
        let bytes = hex::decode(case["bytes_hex"].as_str().unwrap()).unwrap();
        let expected = bits(&case["dequant_f32_bits"]);
        let got = dequantize(dtype(name), &bytes, n).unwrap();
        let mismatches = got
            .iter()
            .zip(&expected)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        println!("{name}: {n} values, {mismatches} bit mismatches");
        assert_eq!(mismatches, 0, "{name} dequantisation differs from gguf-py");
    }
}

#[test]
fn q8_0_quantisation_matches_gguf_py_bytes() {
    let v = vectors();
    let case = &v["Q8_0"];
    let x = bits(&case["input_f32_bits"]);
    let expected = hex::decode(case["bytes_hex"].as_str().unwrap()).unwrap();
    let got = quantize(DType::Q8_0, &x).unwrap();
    assert_eq!(got.len(), expected.len());
    let diff = got.iter().zip(&expected).filter(|(a, b)| a != b).count();
    println!("Q8_0 quantise: {} bytes, {diff} differ", got.len());
    assert_eq!(diff, 0);
}

/// Deterministic pseudo-normal input (no RNG crate in the test).
fn gaussianish(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| {
            let u: f32 = (0..4).map(|_| next()).sum::<f32>() - 2.0;
            u * 0.03
        })
        .collect()
}

#[test]
fn k_quant_quantisers_are_within_expected_error() {
    let x = gaussianish(256 * 64, 7);
    let rms = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
    // Relative RMS error of ggml's reference quantisers on this data is about
    // 0.069 for Q4_K, 0.017 for Q6_K and 0.005 for Q8_0 (measured); a broken
    // scale or nibble order gives errors of order 1.
    for (dt, bound) in [
        (DType::Q4K, 0.085),
        (DType::Q6K, 0.022),
        (DType::Q8_0, 0.0065),
    ] {
        let q = quantize(dt, &x).unwrap();
        let y = dequantize(dt, &q, x.len()).unwrap();
        let err = (x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            / x.len() as f32)
            .sqrt();
        println!("{}: relative RMS error {:.4}", dt.name(), err / rms);
        assert!(
            err / rms < bound,
            "{} error {} too large",
            dt.name(),
            err / rms
        );
        // Quantising the dequantised values again must be (nearly) lossless.
        let q2 = quantize(dt, &y).unwrap();
        let y2 = dequantize(dt, &q2, y.len()).unwrap();
        let err2 = (y
            .iter()
            .zip(&y2)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            / x.len() as f32)
            .sqrt();
        assert!(
            err2 / rms < bound / 2.0,
            "{} not stable: {}",
            dt.name(),
            err2 / rms
        );
    }
}

/// Our quantisers against ggml's own C reference (`quantize_row_*_ref` from
/// ggml-quants.c, compiled by scripts/make_kquant_vectors.sh): byte-exact.
#[test]
fn quantisers_match_ggml_c_reference_bytes() {
    let v: Value = serde_json::from_str(include_str!("data/kquant_vectors.json")).unwrap();
    let x = bits(&v["input_f32_bits"]);
    assert_eq!(x.len(), v["n"].as_u64().unwrap() as usize);
    for name in ["Q4_K", "Q6_K", "Q8_0"] {
        let want = hex::decode(v[name].as_str().unwrap()).unwrap();
        let got = quantize(dtype(name), &x).unwrap();
        assert_eq!(got.len(), want.len());
        let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        println!(
            "{name} quantise vs ggml C: {} bytes, {diff} differ",
            got.len()
        );
        assert_eq!(diff, 0, "{name} differs from ggml's reference quantiser");
    }
}
