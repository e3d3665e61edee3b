//! CpuEngine: fresh state per request, context limit, stop tokens, cancel.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use lucebox_models::reference::ReferenceModel;
use lucebox_models::{
    CpuEngine, Engine, GenerationRequest, ModelError, SamplingParams, StopReason, load,
};

fn engine(max_context: usize) -> CpuEngine {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-text-untied");
    let loaded = load::open(dir.to_str().unwrap()).unwrap();
    CpuEngine::new(
        Arc::new(ReferenceModel::load(loaded.weights.as_ref()).unwrap()),
        max_context,
    )
}

fn request(prompt: Vec<u32>, max_tokens: usize) -> GenerationRequest {
    GenerationRequest {
        prompt,
        max_tokens,
        sampling: SamplingParams::greedy(),
        stop_tokens: vec![],
    }
}

#[test]
fn requests_are_independent_and_match_the_model_greedy_path() {
    let mut e = engine(4096);
    let req = request(vec![3, 1, 4, 1, 5, 9, 2, 6], 6);
    let a = e
        .generate(&req, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    // A different request in between must not leak state into the next one.
    e.generate(&request(vec![100, 101, 102], 4), &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    let b = e
        .generate(&req, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(a.generated, b.generated);
    assert_eq!(a.stop, StopReason::Length);
    let (want, _) = e.model().greedy(&req.prompt, 6).unwrap();
    assert_eq!(a.generated, want);
}

#[test]
fn context_limit_stop_tokens_and_cancel() {
    let mut e = engine(10);
    let err = e
        .generate(&request(vec![1; 8], 3), &mut |_| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::ContextTooLong {
                requested: 11,
                max: 10
            }
        ),
        "{err}"
    );
    assert!(
        e.generate(&request(vec![], 1), &mut |_| ControlFlow::Continue(()))
            .is_err()
    );

    let mut e = engine(4096);
    let base = request(vec![3, 1, 4, 1, 5], 8);
    let full = e
        .generate(&base, &mut |_| ControlFlow::Continue(()))
        .unwrap()
        .generated;
    let mut with_stop = base.clone();
    with_stop.stop_tokens = vec![full[2]];
    let first_stop = full.iter().position(|t| *t == full[2]).unwrap();
    let out = e
        .generate(&with_stop, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(out.stop, StopReason::StopToken);
    assert_eq!(out.generated, full[..=first_stop].to_vec());

    let mut seen = 0;
    let out = e
        .generate(&base, &mut |_| {
            seen += 1;
            if seen == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(out.stop, StopReason::Cancelled);
    assert_eq!(out.generated, full[..2].to_vec());
}
