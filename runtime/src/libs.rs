//! Finding the CUDA shared libraries before cudarc touches them.
//!
//! cudarc (feature `dynamic-loading`) dlopens `libnvrtc` and `libcuda` by
//! soname on first use and *panics* when they are missing. Every entry point
//! of this crate therefore calls [`ensure_nvrtc`] / [`ensure_driver`] first,
//! which turn absence into a [`RuntimeError`].
//!
//! NVRTC lookup order:
//! 1. `LUCEBOX_CUDA_LIB_DIR`: `libnvrtc-builtins` and `libnvrtc` are preloaded
//!    from that directory by absolute path with `RTLD_GLOBAL` and kept loaded,
//!    so cudarc's later dlopen by soname (and libnvrtc's own dlopen of its
//!    builtins) resolve to the already-loaded objects.
//! 2. The normal loader search (`LD_LIBRARY_PATH`, ld.so.cache).
//! 3. Well-known places: pip wheels (`site-packages/nvidia/cu13/lib`,
//!    `nvidia/cuda_nvrtc/lib`) found through `PYTHONPATH` and `python3`'s
//!    `sys.path`, then `/usr/local/cuda/lib64` and its `targets/*/lib`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};

use crate::error::{Result, RuntimeError};

/// Environment variable naming a directory holding libnvrtc (and builtins).
pub const CUDA_LIB_DIR_ENV: &str = "LUCEBOX_CUDA_LIB_DIR";

/// Libraries preloaded by absolute path; held for the life of the process so
/// the loader keeps resolving their sonames to them.
static PRELOADED: Mutex<Vec<Library>> = Mutex::new(Vec::new());

static NVRTC_STATE: OnceLock<Result<Option<PathBuf>, String>> = OnceLock::new();
static DRIVER_STATE: OnceLock<Result<(), String>> = OnceLock::new();

/// Makes libnvrtc loadable by cudarc. Returns the directory it was preloaded
/// from, or `None` when the normal loader search finds it. Idempotent.
pub fn ensure_nvrtc() -> Result<Option<PathBuf>> {
    NVRTC_STATE
        .get_or_init(locate_nvrtc)
        .clone()
        .map_err(|detail| RuntimeError::LibraryMissing {
            what: "NVRTC",
            detail,
        })
}

/// Makes libcuda (the driver) loadable by cudarc. Idempotent.
pub fn ensure_driver() -> Result<()> {
    DRIVER_STATE
        .get_or_init(|| {
            // SAFETY: only tries to dlopen candidate names; no symbol is used.
            if unsafe { cudarc::driver::sys::is_culib_present() } {
                Ok(())
            } else {
                Err(
                    "no CUDA driver found (libcuda.so.1 not loadable): install the NVIDIA driver, \
                     or run on a machine with a GPU"
                        .to_string(),
                )
            }
        })
        .clone()
        .map_err(|detail| RuntimeError::LibraryMissing {
            what: "CUDA driver",
            detail,
        })
}

fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen candidate names; no symbol is used.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

fn locate_nvrtc() -> Result<Option<PathBuf>, String> {
    if let Some(dir) = std::env::var_os(CUDA_LIB_DIR_ENV) {
        let dir = PathBuf::from(dir);
        preload_nvrtc_from(&dir).map_err(|e| {
            format!(
                "NVRTC not available: {CUDA_LIB_DIR_ENV}={}: {e}",
                dir.display()
            )
        })?;
        return if nvrtc_present() {
            Ok(Some(dir))
        } else {
            Err(format!(
                "NVRTC not available: preloaded libnvrtc from {} but it is still not loadable \
                 by soname",
                dir.display()
            ))
        };
    }
    if nvrtc_present() {
        return Ok(None);
    }
    let mut tried = Vec::new();
    for dir in candidate_dirs() {
        if find_lib(&dir, "libnvrtc.so").is_none() {
            tried.push(dir);
            continue;
        }
        match preload_nvrtc_from(&dir) {
            Ok(()) if nvrtc_present() => return Ok(Some(dir)),
            Ok(()) => tried.push(dir),
            Err(e) => {
                tracing::debug!("skipping {}: {e}", dir.display());
                tried.push(dir);
            }
        }
    }
    let tried: Vec<String> = tried.iter().map(|d| d.display().to_string()).collect();
    let tried = if tried.is_empty() {
        "no pip wheel or /usr/local/cuda directory exists".to_string()
    } else {
        format!("also searched {}", tried.join(", "))
    };
    Err(format!(
        "NVRTC not available: libnvrtc.so.13 is not on the loader path ({tried}); install \
         CUDA 13 NVRTC (e.g. `pip install nvidia-cuda-nvrtc`) and set LD_LIBRARY_PATH or \
         {CUDA_LIB_DIR_ENV} to its lib directory"
    ))
}

/// Preloads `libnvrtc-builtins.so.*` then `libnvrtc.so.*` from `dir`.
fn preload_nvrtc_from(dir: &Path) -> Result<(), String> {
    let nvrtc = find_lib(dir, "libnvrtc.so").ok_or("no libnvrtc.so* there")?;
    let builtins = find_lib(dir, "libnvrtc-builtins.so");
    let mut held = PRELOADED.lock().map_err(|_| "loader lock poisoned")?;
    if let Some(b) = builtins {
        held.push(open_global(&b)?);
    }
    held.push(open_global(&nvrtc)?);
    Ok(())
}

fn open_global(path: &Path) -> Result<Library, String> {
    // SAFETY: loading NVIDIA's libraries runs their (trusted) initialisers.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }
        .map_err(|e| format!("cannot load {}: {e}", path.display()))
}

/// The best `stem*` file in `dir`: the shortest name (the soname-style
/// `libnvrtc.so.13` before `libnvrtc.so.13.0.88`), never the `.alt.` variant
/// (a second build of the same library with a different soname).
fn find_lib(dir: &Path, stem: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(stem) && !n.contains(".alt."))
        .collect();
    names.sort_by_key(|n| (n.len(), n.clone()));
    names.first().map(|n| dir.join(n))
}

/// Directories that may hold NVRTC, most specific first.
fn candidate_dirs() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(pp) = std::env::var_os("PYTHONPATH") {
        roots.extend(std::env::split_paths(&pp));
    }
    roots.extend(python_sys_path());
    let mut dirs = Vec::new();
    for root in roots {
        for sub in ["nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib"] {
            dirs.push(root.join(sub));
        }
    }
    let cuda_home = std::env::var_os("CUDA_HOME")
        .or_else(|| std::env::var_os("CUDA_PATH"))
        .map(PathBuf::from);
    for home in cuda_home
        .into_iter()
        .chain([PathBuf::from("/usr/local/cuda")])
    {
        dirs.push(home.join("lib64"));
        dirs.push(home.join("targets/x86_64-linux/lib"));
        dirs.push(home.join("targets/sbsa-linux/lib"));
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| d.is_dir() && seen.insert(d.clone()));
    dirs
}

/// `python3`'s `sys.path` (where pip wheels live); empty when there is no python.
fn python_sys_path() -> Vec<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys; print('\\n'.join(p for p in sys.path if p))",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(PathBuf::from)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_lib_prefers_soname_and_skips_alt() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in [
            "libnvrtc.alt.so.13",
            "libnvrtc.so.13.0.88",
            "libnvrtc.so.13",
            "libnvrtc-builtins.so.13.0",
        ] {
            std::fs::write(dir.path().join(n), b"").expect("write");
        }
        assert_eq!(
            find_lib(dir.path(), "libnvrtc.so"),
            Some(dir.path().join("libnvrtc.so.13"))
        );
        assert_eq!(
            find_lib(dir.path(), "libnvrtc-builtins.so"),
            Some(dir.path().join("libnvrtc-builtins.so.13.0"))
        );
        assert_eq!(find_lib(dir.path(), "libcuda.so"), None);
    }

    #[test]
    fn preload_from_empty_dir_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(preload_nvrtc_from(dir.path()).is_err());
    }
}
