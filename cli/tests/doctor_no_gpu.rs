//! `lucebox doctor` and `lucebox check` on a machine without a GPU or driver
//! (CI): a plain message and exit status 1, never a panic. On a GPU machine
//! the same tests check that doctor prints its table instead.

use std::process::Command;

fn lucebox(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lucebox"))
        .args(args)
        .env(
            "LUCEBOX_CACHE",
            std::env::temp_dir().join("lucebox-cli-test-cache"),
        )
        .output()
        .expect("run lucebox");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn driver_present() -> bool {
    lucebox_runtime::libs::ensure_driver().is_ok()
}

#[test]
fn doctor_without_driver_says_so_and_exits_1() {
    let (code, text) = lucebox(&["doctor"]);
    assert!(!text.contains("panicked"), "{text}");
    if driver_present() {
        eprintln!("SKIP doctor_without_driver_says_so_and_exits_1: a CUDA driver is present");
        assert!(text.contains("device"), "{text}");
        return;
    }
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("no CUDA driver found (libcuda.so.1 not loadable)"),
        "{text}"
    );
    assert!(text.contains("kernel cache"), "{text}");
}

#[test]
fn doctor_json_without_driver_is_valid_json_and_exits_1() {
    if driver_present() {
        eprintln!(
            "SKIP doctor_json_without_driver_is_valid_json_and_exits_1: a CUDA driver is present"
        );
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lucebox"))
        .args(["doctor", "--json"])
        .output()
        .expect("run lucebox");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert!(
        v["device"]["Err"]
            .as_str()
            .is_some_and(|e| e.contains("no CUDA driver")),
        "{v}"
    );
}

#[test]
fn check_without_driver_exits_1_without_panic() {
    if driver_present() {
        eprintln!("SKIP check_without_driver_exits_1_without_panic: a CUDA driver is present");
        return;
    }
    let (code, text) = lucebox(&["check"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(text.contains("no CUDA driver found"), "{text}");
}
