//! `lucebox-gen` end to end: the built binary, its files and its errors.

use std::process::{Command, Output};

fn run_gen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lucebox-gen"))
        .args(args)
        .output()
        .expect("run lucebox-gen")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn sm86_writes_kernels_with_82_sms_and_schedule_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run_gen(&[
        "--target",
        "sm_86",
        "--out",
        dir.path().to_str().expect("utf8 path"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let mut cu = 0;
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir.path()).expect("read out dir") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "cu") {
            cu += 1;
            names.push(
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            let src = std::fs::read_to_string(&p).expect("read .cu");
            assert!(src.contains("// SMs               : 82"), "{}", p.display());
            assert!(
                src.contains("// arch              : sm_86"),
                "{}",
                p.display()
            );
            assert!(
                src.contains("// preset            : rtx3090"),
                "{}",
                p.display()
            );
        }
    }
    assert_eq!(cu, 3, "decode + prefill + tree: {names:?}");
    for kind in ["decode", "prefill", "tree"] {
        assert!(
            names
                .iter()
                .any(|n| n.contains(&format!("_{kind}_rtx3090"))),
            "no {kind} file in {names:?}"
        );
    }
    let json = std::fs::read_to_string(dir.path().join("schedule.json")).expect("schedule.json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["sm_count"], 82);
}

#[test]
fn sm90_says_132_sms_on_stdout() {
    let o = run_gen(&["--target", "sm_90", "--kernel", "decode"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("// SMs               : 132"));
    assert!(out.contains("// preset            : h100"));
    // sm_90: attention waits on ready counters and the MLP is one phase, so
    // 24 x 4 + 1 - 6 barriers.
    assert!(out.contains("sync points/token : 91 grid barriers"));
}

#[test]
fn sms_override_changes_the_grid() {
    let o = run_gen(&["--target", "sm_86", "--sms", "46", "--kernel", "decode"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("// SMs               : 46"));
    assert!(out.contains("constexpr int   GRID_BLOCKS"));
    assert!(out.contains("= 46;"));
}

#[test]
fn unknown_target_fails_listing_valid_ones() {
    let o = run_gen(&["--target", "sm_99"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("sm_99") && t.contains("sm_86") && t.contains("sm_90"),
        "{t}"
    );
}

#[test]
fn unknown_preset_fails_listing_valid_ones() {
    let o = run_gen(&["--preset", "rtx9999"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("rtx9999") && t.contains("rtx3090") && t.contains("h100"),
        "{t}"
    );
}

#[test]
fn list_shows_presets() {
    let o = run_gen(&["--list"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for p in [
        "rtx2080ti",
        "a100",
        "rtx3090",
        "rtx4090",
        "h100",
        "h200",
        "rtx5090",
        "gb10",
    ] {
        assert!(out.contains(p), "{p} missing from --list");
    }
    assert!(out.contains("sm_121"));
}

#[test]
fn model_config_27b_and_prefill() {
    let o = run_gen(&[
        "--preset",
        "h100",
        "--model-config",
        "qwen3.5-27b",
        "--kernel",
        "decode",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("hidden 5120"));
    let o = run_gen(&["--preset", "h100", "--kernel", "prefill"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Qwen3.5 prefill kernels"));
    assert!(out.contains("mma.sync.aligned.m16n8k16"));
    assert!(out.contains("prefill_gdn_chunked"));
    let o = run_gen(&[
        "--preset",
        "h100",
        "--model-config",
        "/nonexistent/config.json",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("qwen3.5-0.8b"));
}
