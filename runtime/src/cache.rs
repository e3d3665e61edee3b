//! On-disk CUBIN cache, so a second start never recompiles.
//!
//! Layout: `<root>/kernels/<name>-<sm>-<key>.cubin` plus a `.json` sidecar
//! holding the compile log and ptxas resources. `<root>` is `$LUCEBOX_CACHE`
//! or `<user cache dir>/lucebox`. The key is sha256 over the source, the exact
//! arch, the NVRTC version and the full option list, so any change to any of
//! them compiles afresh. Writes go to a temp file renamed into place, so a
//! crashed or concurrent writer never leaves a torn entry.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, RuntimeError};
use crate::nvrtc::{
    CompileOptions, CompiledCubin, KernelResources, compile_to_cubin, nvrtc_version,
};

/// Overrides the cache root (`<root>/kernels` holds the CUBINs).
pub const CACHE_ENV: &str = "LUCEBOX_CACHE";

/// `$LUCEBOX_CACHE`, else `<user cache dir>/lucebox`.
pub fn default_cache_root() -> Option<PathBuf> {
    std::env::var_os(CACHE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("lucebox")))
}

/// Whether [`KernelCache::get_or_compile`] found the entry or had to compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheOutcome {
    Hit,
    Compiled,
}

#[derive(Debug, Clone)]
pub struct KernelCache {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Sidecar {
    key: String,
    source_name: String,
    arch: String,
    nvrtc_version: (u32, u32),
    flags: Vec<String>,
    log: String,
    resources: Vec<KernelResources>,
}

impl KernelCache {
    /// The cache under [`default_cache_root`].
    pub fn open_default() -> Result<Self> {
        let root = default_cache_root().ok_or_else(|| {
            RuntimeError::InvalidArgument(format!(
                "no user cache directory; set {CACHE_ENV} to a writable directory"
            ))
        })?;
        Self::at_root(root)
    }

    /// The cache under `root` (CUBINs in `root/kernels`).
    pub fn at_root(root: impl AsRef<Path>) -> Result<Self> {
        let dir = root.as_ref().join("kernels");
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io(&dir, e))?;
        Ok(Self { dir })
    }

    /// Directory holding the CUBINs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Cache key of one compilation.
    pub fn key(source: &str, opts: &CompileOptions, nvrtc_version: (u32, u32)) -> String {
        let mut h = Sha256::new();
        h.update(b"lucebox-cubin-v1\0");
        h.update(Sha256::digest(source.as_bytes()));
        h.update(opts.arch.sm_name().as_bytes());
        h.update(format!("\0nvrtc {}.{}\0", nvrtc_version.0, nvrtc_version.1).as_bytes());
        for f in opts.nvrtc_flags() {
            h.update(f.as_bytes());
            h.update(b"\0");
        }
        hex::encode(&h.finalize()[..16])
    }

    fn paths(
        &self,
        source: &str,
        opts: &CompileOptions,
        version: (u32, u32),
    ) -> (String, PathBuf, PathBuf) {
        let key = Self::key(source, opts, version);
        let stem: String = opts
            .source_name
            .trim_end_matches(".cu")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(48)
            .collect();
        let base = format!("{stem}-{}-{key}", opts.arch.sm_name());
        (
            key,
            self.dir.join(format!("{base}.cubin")),
            self.dir.join(format!("{base}.json")),
        )
    }

    /// Looks the compilation up; `None` on a miss or an unreadable entry.
    pub fn lookup(&self, source: &str, opts: &CompileOptions) -> Result<Option<CompiledCubin>> {
        let version = nvrtc_version()?;
        let (key, cubin_path, meta_path) = self.paths(source, opts, version);
        Ok(read_entry(&key, &cubin_path, &meta_path))
    }

    /// The cached CUBIN, compiling (and storing) it on a miss.
    pub fn get_or_compile(
        &self,
        source: &str,
        opts: &CompileOptions,
    ) -> Result<(CompiledCubin, CacheOutcome)> {
        let version = nvrtc_version()?;
        let (key, cubin_path, meta_path) = self.paths(source, opts, version);
        if let Some(hit) = read_entry(&key, &cubin_path, &meta_path) {
            tracing::debug!("kernel cache hit {}", cubin_path.display());
            return Ok((hit, CacheOutcome::Hit));
        }
        let compiled = compile_to_cubin(source, opts)?;
        let sidecar = Sidecar {
            key,
            source_name: opts.source_name.clone(),
            arch: opts.arch.sm_name(),
            nvrtc_version: version,
            flags: opts.nvrtc_flags(),
            log: compiled.log.clone(),
            resources: compiled.resources.clone(),
        };
        let meta = serde_json::to_vec_pretty(&sidecar).map_err(|e| RuntimeError::Io {
            path: meta_path.clone(),
            source: std::io::Error::other(e),
        })?;
        // Sidecar first: an entry counts only once its CUBIN is renamed in.
        atomic_write(&meta_path, &meta)?;
        atomic_write(&cubin_path, &compiled.cubin)?;
        tracing::debug!("kernel cache store {}", cubin_path.display());
        Ok((compiled, CacheOutcome::Compiled))
    }
}

fn read_entry(key: &str, cubin_path: &Path, meta_path: &Path) -> Option<CompiledCubin> {
    let cubin = std::fs::read(cubin_path).ok()?;
    let meta: Sidecar = serde_json::from_slice(&std::fs::read(meta_path).ok()?).ok()?;
    // An ELF image whose sidecar names the same key; anything else is a miss.
    if meta.key != key || !cubin.starts_with(b"\x7fELF") {
        return None;
    }
    Some(CompiledCubin {
        cubin,
        log: meta.log,
        resources: meta.resources,
    })
}

/// Writes `bytes` to a unique temp file in the target's directory, then
/// renames it over `path` (atomic on POSIX within one filesystem).
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id(),
        unique_suffix()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(RuntimeError::io(path, e));
    }
    Ok(())
}

fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lucebox_schedules::Arch;

    #[test]
    fn key_changes_with_source_arch_version_and_flags() {
        let opts = CompileOptions::new(Arch::new(8, 6), "k.cu");
        let base = KernelCache::key("a", &opts, (13, 0));
        assert_eq!(base, KernelCache::key("a", &opts, (13, 0)));
        assert_ne!(base, KernelCache::key("b", &opts, (13, 0)));
        assert_ne!(base, KernelCache::key("a", &opts, (13, 1)));
        let mut other_arch = opts.clone();
        other_arch.arch = Arch::new(8, 9);
        assert_ne!(base, KernelCache::key("a", &other_arch, (13, 0)));
        let mut other_flags = opts.clone();
        other_flags.extra_flags.push("-DX=1".into());
        assert_ne!(base, KernelCache::key("a", &other_flags, (13, 0)));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.cubin");
        atomic_write(&p, b"one").expect("write");
        atomic_write(&p, b"two").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.cubin")]);
    }
}
