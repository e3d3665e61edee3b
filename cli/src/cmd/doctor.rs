//! `lucebox doctor`: what this machine's GPU is, which schedule it gets, and
//! what it really does: a probe kernel checked against the CPU, grid-barrier
//! cost, read bandwidth, cold vs warm kernel start.
//!
//! Without a driver or GPU it says so and exits non-zero; it never panics.

use std::path::PathBuf;

use anyhow::Context;
use lucebox_runtime::cache::KernelCache;
use lucebox_runtime::diagnostics::{self, Bandwidth, BarrierTiming, CompileTimes, ProbeResult};
use lucebox_runtime::nvrtc::{CompileOptions, nvrtc_version};
use lucebox_runtime::{DeviceInfo, Gpu, kernels, libs};
use lucebox_schedules::Schedule;
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON to this file (the table still goes to stdout).
    #[arg(long, value_name = "PATH")]
    pub json_out: Option<std::path::PathBuf>,
    /// CUDA device ordinal (default: $LUCEBOX_DEVICE or 0).
    #[arg(long)]
    pub device: Option<usize>,
    /// Number of timed runs per measurement (median reported; at least 5).
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// Grid barriers per timed barrier launch.
    #[arg(long, default_value_t = 2000)]
    pub barriers: u32,
}

/// Everything doctor found; a failed measurement is its error text.
#[derive(Debug, Serialize)]
pub struct DoctorReport {
    pub nvrtc_version: Result<String, String>,
    /// Where libnvrtc was preloaded from (None: found by the loader's own search).
    pub nvrtc_dir: Option<PathBuf>,
    pub cache_dir: Result<PathBuf, String>,
    pub device: Result<DeviceInfo, String>,
    pub schedule: Option<Result<Schedule, String>>,
    pub probe: Option<Result<ProbeResult, String>>,
    pub barrier: Option<Result<BarrierTiming, String>>,
    pub bandwidth: Option<Result<Bandwidth, String>>,
    pub compile: Option<Result<CompileTimes, String>>,
    /// Cold vs warm start of the Qwen3.5-0.8B decode megakernel for this
    /// device's schedule.
    pub decode_compile: Option<Result<CompileTimes, String>>,
}

impl DoctorReport {
    /// True when a GPU was found and every measurement succeeded.
    pub fn healthy(&self) -> bool {
        self.nvrtc_version.is_ok()
            && self.device.is_ok()
            && matches!(&self.schedule, Some(Ok(_)))
            && matches!(&self.probe, Some(Ok(p)) if p.passed)
            && matches!(&self.barrier, Some(Ok(_)))
            && matches!(&self.bandwidth, Some(Ok(b)) if b.checksum_ok)
            && matches!(&self.compile, Some(Ok(c)) if c.warm_hit)
    }
}

fn s<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

/// Opens the device `device` (or the default one).
pub fn open_gpu(device: Option<usize>) -> lucebox_runtime::error::Result<Gpu> {
    match device {
        Some(d) => Gpu::open(d),
        None => Gpu::open_default(),
    }
}

pub fn collect(args: &Args) -> DoctorReport {
    let nvrtc_dir = libs::ensure_nvrtc().ok().flatten();
    let nvrtc = s(nvrtc_version().map(|(a, b)| format!("{a}.{b}")));
    let cache = s(KernelCache::open_default());
    let mut report = DoctorReport {
        nvrtc_version: nvrtc,
        nvrtc_dir,
        cache_dir: cache
            .as_ref()
            .map(|c| c.dir().to_path_buf())
            .map_err(Clone::clone),
        device: Err(String::new()),
        schedule: None,
        probe: None,
        barrier: None,
        bandwidth: None,
        compile: None,
        decode_compile: None,
    };
    let gpu = match open_gpu(args.device) {
        Ok(g) => g,
        Err(e) => {
            report.device = Err(e.to_string());
            return report;
        }
    };
    report.device = Ok(gpu.info().clone());
    let schedule = s(gpu.schedule());
    report.schedule = Some(schedule.clone());
    let (Ok(schedule), Ok(cache), Ok(_)) = (schedule, cache, &report.nvrtc_version) else {
        return report;
    };
    let runs = args.runs.max(5);
    report.probe = Some(s(diagnostics::run_probe(&gpu, &cache, &schedule, 0x5EED)));
    report.barrier = Some(s(diagnostics::measure_barrier(
        &gpu,
        &cache,
        &schedule,
        args.barriers.max(1),
        runs,
    )));
    report.bandwidth = Some(s(diagnostics::bandwidth_buffer_bytes(&gpu).and_then(
        |bytes| diagnostics::measure_read_bandwidth(&gpu, &cache, &schedule, bytes, runs),
    )));
    report.compile = Some(s(diagnostics::measure_compile_times(
        &gpu,
        &kernels::barrier_source(schedule.grid_blocks()),
        &CompileOptions::new(schedule.arch, "barrier.cu"),
    )));
    report.decode_compile = decode_compile_times(&gpu, &schedule);
    report
}

fn decode_compile_times(gpu: &Gpu, schedule: &Schedule) -> Option<Result<CompileTimes, String>> {
    let cfg = lucebox_models::config::Qwen35Config::qwen35_0_8b();
    Some(
        lucebox_codegen::decode::generate_decode(&cfg, schedule)
            .map_err(|e| format!("codegen: {e}"))
            .and_then(|k| {
                s(diagnostics::measure_compile_times(
                    gpu,
                    &k.source,
                    &CompileOptions::new(k.arch, k.file_name.clone()),
                ))
            }),
    )
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

fn line(label: &str, value: impl std::fmt::Display) {
    println!("  {label:<16} {value}");
}

fn show<T>(label: &str, r: &Option<Result<T, String>>, ok: impl Fn(&T) -> String) {
    match r {
        None => {}
        Some(Ok(v)) => line(label, ok(v)),
        Some(Err(e)) => line(label, format!("FAILED: {e}")),
    }
}

pub fn print_table(r: &DoctorReport) {
    println!("lucebox doctor");
    line(
        "NVRTC",
        match (&r.nvrtc_version, &r.nvrtc_dir) {
            (Ok(v), Some(d)) => format!("{v} (loaded from {})", d.display()),
            (Ok(v), None) => format!("{v} (from the loader path)"),
            (Err(e), _) => e.clone(),
        },
    );
    line(
        "kernel cache",
        match &r.cache_dir {
            Ok(d) => d.display().to_string(),
            Err(e) => format!("unusable: {e}"),
        },
    );
    let d = match &r.device {
        Ok(d) => d,
        Err(e) => {
            line("device", format!("none: {e}"));
            return;
        }
    };
    let p = &d.props;
    line(
        "device",
        format!(
            "{} ({}, {} SMs, {}, L2 {} MiB)",
            p.name,
            p.arch,
            p.sm_count,
            gib(p.total_mem_bytes),
            p.l2_bytes >> 20
        ),
    );
    line(
        "driver",
        format!(
            "CUDA {}.{} driver, PCI {}",
            d.driver_version.0, d.driver_version.1, d.pci_bus_id
        ),
    );
    line(
        "limits",
        format!(
            "smem/block {} KiB (opt-in {} KiB), smem/SM {} KiB, regs/SM {}, regs/block {}, threads/SM {}",
            d.shared_mem_per_block >> 10,
            p.shared_mem_per_block_optin >> 10,
            p.shared_mem_per_sm >> 10,
            p.regs_per_sm,
            p.regs_per_block,
            p.max_threads_per_sm
        ),
    );
    line(
        "clocks",
        format!(
            "SM {} MHz, memory {} MHz x {} bit = {:.0} GB/s theoretical",
            p.sm_clock_khz / 1000,
            p.mem_clock_khz / 1000,
            p.mem_bus_width_bits,
            d.theoretical_bandwidth_bytes_per_s() / 1e9
        ),
    );
    show("schedule", &r.schedule, |s| {
        format!(
            "{}: {} x {} blocks x {} threads ({})",
            s.preset, s.sm_count, s.blocks_per_sm, s.threads_per_block, s.arch
        )
    });
    show("probe kernel", &r.probe, |p| {
        if p.passed {
            format!("PASS ({} elements bit-exact vs CPU)", p.elements)
        } else {
            format!(
                "FAIL ({} of {} elements differ from CPU)",
                p.mismatches, p.elements
            )
        }
    });
    show("grid barrier", &r.barrier, |b| {
        format!(
            "{:.3} us per barrier (median; min {:.3}, max {:.3}) over {} barriers, {} blocks x {} threads; empty cooperative launch {:.1} us",
            b.us_per_barrier,
            b.us_per_barrier_min,
            b.us_per_barrier_max,
            b.barriers,
            b.grid_blocks,
            b.threads_per_block,
            b.empty_launch_us
        )
    });
    show("read bandwidth", &r.bandwidth, |b| {
        let pct = if b.theoretical_gbps > 0.0 {
            format!(
                ", {:.0}% of theoretical",
                100.0 * b.gbps.median / b.theoretical_gbps
            )
        } else {
            String::new()
        };
        format!(
            "{:.0} GB/s (median of {}; min {:.0}, max {:.0}) over {}{pct}{}",
            b.gbps.median,
            b.gbps.runs,
            b.gbps.min,
            b.gbps.max,
            gib(b.bytes),
            if b.checksum_ok {
                ""
            } else {
                "; CHECKSUM WRONG"
            }
        )
    });
    if let Some(Ok(b)) = &r.bandwidth {
        line(
            "energy",
            match &b.energy {
                Some(e) => format!(
                    "{:.1} J over {:.2} s of back-to-back reads, {:.0} W average ({:?})",
                    e.joules, e.seconds, e.avg_watts, e.method
                ),
                None => "not available (NVML missing or unsupported)".to_string(),
            },
        );
    }
    show("decode start", &r.decode_compile, |c| {
        format!(
            "0.8B megakernel: cold {:.1} ms, warm {:.2} ms ({})",
            c.cold_ms,
            c.warm_ms,
            if c.warm_hit {
                "cache hit"
            } else {
                "MISSED the cache"
            }
        )
    });
    show("kernel start", &r.compile, |c| {
        format!(
            "cold {:.1} ms (NVRTC + cache store + load), warm {:.2} ms ({})",
            c.cold_ms,
            c.warm_ms,
            if c.warm_hit {
                "cache hit"
            } else {
                "MISSED the cache"
            }
        )
    });
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let report = collect(&args);
    let json = serde_json::to_string_pretty(&report).context("serialising the report")?;
    if let Some(path) = &args.json_out {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print_table(&report);
    }
    if let Err(e) = &report.device {
        anyhow::bail!("{e}");
    }
    if !report.healthy() {
        anyhow::bail!("doctor found problems (see above)");
    }
    Ok(())
}
