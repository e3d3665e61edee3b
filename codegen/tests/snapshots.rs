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
    let sched = Schedule::preset(preset).expect("preset");
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
fn prefill_reports_not_generated() {
    let cfg = Qwen35Config::qwen35_0_8b();
    let s = Schedule::preset("h100").expect("preset");
    let e = generate(&cfg, &s, KernelKind::Prefill)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not generated yet"), "{e}");
}
