//! Speed of the CPU reference at real 0.8B shapes (random bf16 weights in
//! memory, 1.5 GB). Ignored by default: run with
//! `cargo test --release -p lucebox-models --test speed_0_8b -- --ignored --nocapture`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use lucebox_models::reference::{ForwardOptions, ReferenceModel};
use lucebox_models::weights::{DType, Tensor, TensorData, WeightSource};
use lucebox_models::{ModelError, Qwen35Config, expected_tensors};

struct MemorySource {
    config: Qwen35Config,
    tensors: HashMap<String, Tensor>,
}

impl WeightSource for MemorySource {
    fn config(&self) -> &Qwen35Config {
        &self.config
    }
    fn tensor(&self, name: &str) -> lucebox_models::Result<Tensor> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| ModelError::MissingTensor { name: name.into() })
    }
    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

fn random_bf16(n: usize, seed: u64, std: f32) -> Vec<u8> {
    let mut s = seed | 1;
    let mut out = Vec::with_capacity(2 * n);
    for _ in 0..n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        out.extend_from_slice(&half::bf16::from_f32(u * 3.46 * std).to_le_bytes());
    }
    out
}

#[test]
#[ignore = "allocates 1.5 GB and takes seconds; run by hand"]
fn one_token_at_0_8b_shapes() {
    let config = Qwen35Config::qwen35_0_8b();
    let t0 = Instant::now();
    let tensors = expected_tensors(&config)
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n: usize = shape.iter().product();
            let std = if name.contains("norm") { 0.1 } else { 0.02 };
            let t = Tensor {
                name: name.clone(),
                dtype: DType::BF16,
                shape,
                data: TensorData::Owned(Arc::new(random_bf16(n, i as u64 + 1, std))),
            };
            (name, t)
        })
        .collect();
    let source = MemorySource { config, tensors };
    let model = ReferenceModel::load(&source).unwrap();
    println!(
        "random 0.8B weights built in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let mut state = model.new_state();
    let opts = ForwardOptions::default();
    let t1 = Instant::now();
    model.forward(&mut state, &[1, 2, 3, 4], &opts).unwrap();
    let prefill = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let out = model.forward(&mut state, &[5], &opts).unwrap();
    let decode = t2.elapsed().as_secs_f64();
    assert_eq!(out.logits[0].len(), 248_320);
    assert!(out.logits[0].iter().all(|x| x.is_finite()));
    println!(
        "0.8B CPU reference on {} threads: 4-token prefill {prefill:.2} s, one decode token {decode:.2} s",
        rayon::current_num_threads()
    );
}
