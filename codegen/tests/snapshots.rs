//! Snapshots of every generated kernel for every preset (Qwen3.5-0.8B) and of
//! the h100 kernels for the 27B shapes. A schedule or codegen change shows up
//! as a reviewable diff of CUDA: `cargo insta review` (see docs/snapshots.md).

use lucebox_codegen::{KernelKind, generate};
use lucebox_models::config::Qwen35Config;
use lucebox_schedules::{Schedule, list_presets};

/// Under CI a snapshot must never be written: refuse an update mode that would.
fn refuse_updates_on_ci() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let update = std::env::var("INSTA_UPDATE").unwrap_or_default();
    assert!(
        !(ci && matches!(update.as_str(), "always" | "unseen" | "new")),
        "INSTA_UPDATE={update} under CI=true would write snapshots instead of checking them"
    );
}

fn settings() -> insta::Settings {
    refuse_updates_on_ci();
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s
}

fn snapshot_all(cfg: &Qwen35Config, preset: &str) {
    // Fitted to the model, as the runtime and lucebox-gen generate it.
    let sched = Schedule::preset(preset)
        .expect("preset")
        .fitted_to_model(&lucebox_codegen::model_dims(cfg));
    for kind in KernelKind::GENERATED {
        let k = match generate(cfg, &sched, kind) {
            Ok(k) => k,
            Err(e) => panic!("{preset} {kind}: {e}"),
        };
        let name = format!("{}__{}__{}", cfg.name.replace('.', "_"), preset, kind);
        settings().bind(|| insta::assert_snapshot!(name, k.source));
    }
}

#[test]
fn every_preset_qwen35_0_8b() {
    let cfg = Qwen35Config::qwen35_0_8b();
    for (preset, _, _) in list_presets() {
        snapshot_all(&cfg, preset);
    }
}

#[test]
fn h100_qwen35_27b() {
    snapshot_all(&Qwen35Config::qwen35_27b(), "h100");
}

#[test]
fn generation_is_deterministic() {
    let cfg = Qwen35Config::qwen35_0_8b();
    let s = Schedule::preset("rtx3090").expect("preset");
    for kind in KernelKind::GENERATED {
        let a = generate(&cfg, &s, kind).expect("generate");
        let b = generate(&cfg, &s, kind).expect("generate");
        assert_eq!(a, b);
    }
}

#[test]
fn prefill_follows_the_arch() {
    let cfg = Qwen35Config::qwen35_0_8b();
    let h100 = generate(
        &cfg,
        &Schedule::preset("h100").expect("preset"),
        KernelKind::Prefill,
    )
    .expect("generate");
    // sm_90: TMA + wgmma, compiled for sm_90a
    assert!(
        h100.source
            .contains("wgmma.mma_async.sync.aligned.m64n128k16")
    );
    assert!(h100.source.contains("cp.async.bulk.tensor.2d"));
    assert!(!h100.source.contains("GEMM math: mma.sync"));
    // mma.sync flash attention on sm_80+ (its K/V ring uses cp.async)
    assert!(h100.source.contains("ldmatrix.sync.aligned.m8n8.x4.trans"));
    assert!(h100.arch.arch_specific);
    assert!(!h100.source.contains("#include"));
    let ampere = generate(
        &cfg,
        &Schedule::preset("rtx3090").expect("preset"),
        KernelKind::Prefill,
    )
    .expect("generate");
    assert!(
        ampere
            .source
            .contains("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32")
    );
    assert!(ampere.source.contains("cp.async.cg.shared.global"));
    assert!(!ampere.source.contains("wgmma"));
    assert!(!ampere.arch.arch_specific);
    let turing = generate(
        &cfg,
        &Schedule::preset("rtx2080ti").expect("preset"),
        KernelKind::Prefill,
    )
    .expect("generate");
    assert!(!turing.source.contains("mma.sync.aligned"));
    assert!(!turing.source.contains("cp.async.cg"));
    assert!(turing.source.contains("FMA fallback"));
    assert!(
        turing
            .source
            .contains("one warp per token, ATT_EPL dims per lane")
    );
    // The H100's tensor-core prep computes the conv; Turing runs the conv kernel. Otherwise
    // both generate the same kernels, each defined in its file.
    assert!(!h100.source.contains("prefill_causal_conv("));
    assert!(turing.source.contains("prefill_causal_conv("));
    let without_conv = |k: &lucebox_codegen::GeneratedKernel| {
        k.entry_points
            .iter()
            .filter(|e| *e != "prefill_causal_conv")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(without_conv(&h100), without_conv(&turing));
    for k in [&h100, &turing] {
        for ep in &k.entry_points {
            assert!(k.source.contains(&format!("{ep}(")), "{ep}");
        }
    }
}
