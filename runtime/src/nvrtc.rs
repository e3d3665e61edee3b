//! NVRTC: CUDA C source straight to a CUBIN for one exact architecture.
//!
//! Compiling to `sm_XX` (not `compute_XX`) makes NVRTC run ptxas itself, so the
//! driver never JIT-compiles PTX at load time, and ptxas's verbose report
//! (registers, spills, shared memory per kernel) comes back in the log.

use std::ffi::{CStr, CString, c_char, c_int};
use std::path::PathBuf;

use cudarc::nvrtc::sys;
use lucebox_schedules::Arch;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, RuntimeError};
use crate::libs::ensure_nvrtc;

/// How to compile one source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompileOptions {
    /// Exact target; `arch_specific` selects `sm_90a`-style targets.
    pub arch: Arch,
    /// File name NVRTC reports in diagnostics (`decode.cu`).
    pub source_name: String,
    /// Further NVRTC options, passed verbatim (`-DNAME=1`, `--use_fast_math`).
    pub extra_flags: Vec<String>,
    /// Ask ptxas for its per-kernel resource report (parsed into
    /// [`CompiledCubin::resources`]).
    pub verbose_ptxas: bool,
}

impl CompileOptions {
    pub fn new(arch: Arch, source_name: impl Into<String>) -> Self {
        Self {
            arch,
            source_name: source_name.into(),
            extra_flags: Vec::new(),
            verbose_ptxas: true,
        }
    }

    /// The full NVRTC option list this compiles with.
    pub fn nvrtc_flags(&self) -> Vec<String> {
        let mut flags = vec![
            format!("--gpu-architecture={}", self.arch.sm_name()),
            "--std=c++17".to_string(),
        ];
        if self.verbose_ptxas {
            flags.push("--ptxas-options=-v".to_string());
        }
        flags.extend(self.extra_flags.iter().cloned());
        // Extra flags for debugging on a GPU machine without a rebuild, e.g.
        // `LUCEBOX_NVRTC_FLAGS=-lineinfo` so compute-sanitizer names source
        // lines. They are part of the cache key like every other flag.
        if let Ok(extra) = std::env::var("LUCEBOX_NVRTC_FLAGS") {
            flags.extend(extra.split_whitespace().map(str::to_string));
        }
        flags
    }
}

/// A compiled module image plus what ptxas said about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledCubin {
    pub cubin: Vec<u8>,
    /// NVRTC's log (warnings, ptxas report); empty when it had nothing to say.
    pub log: String,
    /// One entry per kernel (and per non-inlined device function) that ptxas
    /// reported; empty unless `verbose_ptxas`.
    pub resources: Vec<KernelResources>,
}

impl CompiledCubin {
    pub fn resources_of(&self, kernel: &str) -> Option<&KernelResources> {
        self.resources.iter().find(|r| r.kernel == kernel)
    }
}

/// ptxas's report for one function.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelResources {
    /// Name as ptxas prints it (mangled unless declared `extern "C"`).
    pub kernel: String,
    pub registers: u32,
    /// Static shared memory (dynamic shared memory is a launch parameter).
    pub shared_bytes: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
    pub stack_bytes: u32,
}

/// True when libnvrtc can be loaded. Never panics.
pub fn nvrtc_available() -> bool {
    std::panic::catch_unwind(|| ensure_nvrtc().is_ok() && nvrtc_version().is_ok()).unwrap_or(false)
}

/// NVRTC's (major, minor) version.
pub fn nvrtc_version() -> Result<(u32, u32), RuntimeError> {
    ensure_nvrtc()?;
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: libnvrtc is loaded (checked above); out-pointers are valid.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| nvrtc_err("nvrtcVersion", e))?;
    Ok((major as u32, minor as u32))
}

/// Compiles `source` to a CUBIN for `opts.arch`.
///
/// On a compile error the source is written to a file (its path is in the
/// error, next to NVRTC's log) so the failing line can be inspected.
pub fn compile_to_cubin(source: &str, opts: &CompileOptions) -> Result<CompiledCubin> {
    ensure_nvrtc()?;
    let c_src = CString::new(source)
        .map_err(|_| RuntimeError::InvalidArgument("kernel source contains a NUL byte".into()))?;
    let c_name = CString::new(opts.source_name.as_str())
        .map_err(|_| RuntimeError::InvalidArgument("source name contains a NUL byte".into()))?;
    let flags = opts.nvrtc_flags();
    let c_flags = flags
        .iter()
        .map(|f| CString::new(f.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| RuntimeError::InvalidArgument("an NVRTC flag contains a NUL byte".into()))?;
    let flag_ptrs: Vec<*const c_char> = c_flags.iter().map(|f| f.as_ptr()).collect();

    let program = Program::create(&c_src, &c_name)?;
    // SAFETY: `program` is live; flag pointers outlive the call.
    let status = unsafe {
        sys::nvrtcCompileProgram(program.0, flag_ptrs.len() as c_int, flag_ptrs.as_ptr())
    };
    let log = program.log()?;
    if status != sys::nvrtcResult::NVRTC_SUCCESS {
        if status != sys::nvrtcResult::NVRTC_ERROR_COMPILATION {
            let log = format!("{} ({status:?})\n{log}", error_string(status));
            return Err(compile_error(source, opts, log));
        }
        return Err(compile_error(source, opts, log));
    }
    let cubin = program.cubin()?;
    let resources = if opts.verbose_ptxas {
        parse_ptxas_report(&log)
    } else {
        Vec::new()
    };
    Ok(CompiledCubin {
        cubin,
        log,
        resources,
    })
}

/// An NVRTC program, destroyed on drop.
struct Program(sys::nvrtcProgram);

impl Program {
    fn create(src: &CStr, name: &CStr) -> Result<Self> {
        let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
        // SAFETY: libnvrtc loaded; pointers valid for the call; NVRTC copies them.
        unsafe {
            sys::nvrtcCreateProgram(
                &mut prog,
                src.as_ptr(),
                name.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        }
        .result()
        .map_err(|e| nvrtc_err("nvrtcCreateProgram", e))?;
        Ok(Self(prog))
    }

    fn log(&self) -> Result<String> {
        let mut size = 0usize;
        // SAFETY: live program, valid out-pointer.
        unsafe { sys::nvrtcGetProgramLogSize(self.0, &mut size) }
            .result()
            .map_err(|e| nvrtc_err("nvrtcGetProgramLogSize", e))?;
        let mut buf = vec![0u8; size.max(1)];
        // SAFETY: buffer holds `size` bytes as NVRTC requires.
        unsafe { sys::nvrtcGetProgramLog(self.0, buf.as_mut_ptr().cast()) }
            .result()
            .map_err(|e| nvrtc_err("nvrtcGetProgramLog", e))?;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Ok(String::from_utf8_lossy(&buf[..end]).trim_end().to_string())
    }

    fn cubin(&self) -> Result<Vec<u8>> {
        let mut size = 0usize;
        // SAFETY: live, compiled program; valid out-pointer.
        unsafe { sys::nvrtcGetCUBINSize(self.0, &mut size) }
            .result()
            .map_err(|e| nvrtc_err("nvrtcGetCUBINSize", e))?;
        if size == 0 {
            return Err(RuntimeError::Nvrtc {
                call: "nvrtcGetCUBINSize",
                message: "empty CUBIN (was a virtual compute_XX architecture requested?)".into(),
            });
        }
        let mut buf = vec![0u8; size];
        // SAFETY: buffer holds `size` bytes.
        unsafe { sys::nvrtcGetCUBIN(self.0, buf.as_mut_ptr().cast()) }
            .result()
            .map_err(|e| nvrtc_err("nvrtcGetCUBIN", e))?;
        Ok(buf)
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram, destroyed once.
        let _ = unsafe { sys::nvrtcDestroyProgram(&mut self.0) };
    }
}

fn error_string(status: sys::nvrtcResult) -> String {
    // SAFETY: NVRTC returns a static NUL-terminated string (or null).
    let ptr = unsafe { sys::nvrtcGetErrorString(status) };
    if ptr.is_null() {
        format!("{status:?}")
    } else {
        // SAFETY: non-null static C string from NVRTC.
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    }
}

fn nvrtc_err(call: &'static str, e: cudarc::nvrtc::result::NvrtcError) -> RuntimeError {
    RuntimeError::Nvrtc {
        call,
        message: error_string(e.0),
    }
}

/// Writes the failing source where a human can open it and builds the error.
fn compile_error(source: &str, opts: &CompileOptions, log: String) -> RuntimeError {
    let digest = hex::encode(&Sha256::digest(source.as_bytes())[..8]);
    let dir = failed_source_dir();
    let file_name = format!("{digest}-{}", sanitize(&opts.source_name));
    let path = dir.join(file_name);
    let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, source));
    let source_path = match written {
        Ok(()) => path,
        Err(e) => {
            tracing::warn!("could not write failing source to {}: {e}", path.display());
            PathBuf::from(format!("<not written: {e}>"))
        }
    };
    RuntimeError::Compile {
        source_name: opts.source_name.clone(),
        arch: opts.arch.sm_name(),
        log,
        source_path,
    }
}

/// `$LUCEBOX_CACHE/failed` (or the kernel cache's sibling), else the temp dir.
fn failed_source_dir() -> PathBuf {
    crate::cache::default_cache_root()
        .map(|r| r.join("failed"))
        .unwrap_or_else(|| std::env::temp_dir().join("lucebox-failed-kernels"))
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "kernel.cu".into() } else { s }
}

/// Parses ptxas `-v` output:
///
/// ```text
/// ptxas info    : Compiling entry function 'probe' for 'sm_90'
/// ptxas info    : Function properties for probe
///     8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
/// ptxas info    : Used 12 registers, used 1 barriers, 4096 bytes smem, 360 bytes cmem[0]
/// ```
pub fn parse_ptxas_report(log: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    // Index into `out` of the function the following lines describe.
    let mut current: Option<usize> = None;
    let entry = |out: &mut Vec<KernelResources>, name: &str| -> usize {
        if let Some(i) = out.iter().position(|r| r.kernel == name) {
            i
        } else {
            out.push(KernelResources {
                kernel: name.to_string(),
                ..Default::default()
            });
            out.len() - 1
        }
    };
    for line in log.lines() {
        let body = line
            .split_once("ptxas info")
            .map(|(_, rest)| rest.trim_start_matches([' ', ':']).trim())
            .unwrap_or_else(|| line.trim());
        if let Some(rest) = body
            .strip_prefix("Compiling entry function '")
            .or_else(|| body.strip_prefix("Function properties for "))
        {
            let name = rest.split('\'').next().unwrap_or(rest).trim();
            current = Some(entry(&mut out, name));
        } else if body.contains("bytes stack frame") {
            if let Some(i) = current {
                for part in body.split(',') {
                    let n = leading_number(part);
                    if part.contains("stack frame") {
                        out[i].stack_bytes = n;
                    } else if part.contains("spill stores") {
                        out[i].spill_store_bytes = n;
                    } else if part.contains("spill loads") {
                        out[i].spill_load_bytes = n;
                    }
                }
            }
        } else if let (Some(rest), Some(i)) = (body.strip_prefix("Used "), current) {
            for part in rest.split(',') {
                let part = part.trim();
                if part.ends_with("registers") {
                    out[i].registers = leading_number(part);
                } else if part.ends_with("bytes smem") {
                    out[i].shared_bytes = leading_number(part);
                }
            }
        }
    }
    out
}

fn leading_number(s: &str) -> u32 {
    s.split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ptxas_report_with_spills_and_smem() {
        let log = "\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'probe' for 'sm_90'
ptxas info    : Function properties for probe
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 4096 bytes smem, 360 bytes cmem[0]
ptxas info    : Compiling entry function '_Z5otherPf' for 'sm_90'
ptxas info    : Function properties for _Z5otherPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 8 registers, 360 bytes cmem[0]";
        let r = parse_ptxas_report(log);
        assert_eq!(
            r,
            vec![
                KernelResources {
                    kernel: "probe".into(),
                    registers: 40,
                    shared_bytes: 4096,
                    spill_store_bytes: 4,
                    spill_load_bytes: 12,
                    stack_bytes: 8,
                },
                KernelResources {
                    kernel: "_Z5otherPf".into(),
                    registers: 8,
                    ..Default::default()
                },
            ]
        );
    }

    #[test]
    fn flags_name_the_exact_arch() {
        let mut arch = Arch::new(9, 0);
        arch.arch_specific = true;
        let opts = CompileOptions::new(arch, "k.cu");
        let f = opts.nvrtc_flags();
        assert_eq!(f[0], "--gpu-architecture=sm_90a");
        assert!(f.contains(&"--ptxas-options=-v".to_string()));
    }
}
