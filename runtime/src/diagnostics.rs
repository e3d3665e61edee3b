//! What `lucebox doctor` measures and `lucebox check` verifies on the GPU:
//! a probe kernel against the CPU, grid-barrier cost and reusability, read
//! bandwidth, cold vs warm compile time. Each returns plain data the CLI
//! prints as a table or JSON.

use half::bf16;
use lucebox_schedules::Schedule;
use serde::{Deserialize, Serialize};

use crate::cache::{CacheOutcome, KernelCache};
use crate::device::Gpu;
use crate::energy::{EnergyMeter, EnergyReading};
use crate::error::{Result, RuntimeError};
use crate::kernels;
use crate::launch::{KernelArgs, LaunchConfig};
use crate::nvrtc::CompileOptions;
use crate::timing::{GpuTimer, Stats};

/// Deterministic pseudo-random numbers for test inputs: the sampler's generator.
pub use lucebox_models::sampling::SplitMix64;

fn opts(schedule: &Schedule, name: &str) -> CompileOptions {
    CompileOptions::new(schedule.arch, name)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub elements: usize,
    /// Elements whose bits differ from the CPU's `mul_add`.
    pub mismatches: usize,
    pub passed: bool,
}

/// Runs `probe_axpb` on fresh random bf16 inputs (output poisoned with NaN
/// first) and compares bit for bit with the CPU.
pub fn run_probe(
    gpu: &Gpu,
    cache: &KernelCache,
    schedule: &Schedule,
    seed: u64,
) -> Result<ProbeResult> {
    let loaded = gpu.compile_and_load(cache, kernels::PROBE, &opts(schedule, "probe.cu"))?;
    let kernel = loaded.module.kernel("probe_axpb")?;
    let n = 1 << 20 | 37; // not a multiple of the grid: exercises the tail
    let mut rng = SplitMix64::new(seed);
    let x: Vec<bf16> = (0..n)
        .map(|_| bf16::from_f32(rng.next_f32() * 8.0))
        .collect();
    let (a, b) = (rng.next_f32() * 3.0, rng.next_f32());
    let x_dev = gpu.upload(&x)?;
    let mut y_dev = gpu.alloc::<f32>(n)?;
    y_dev.fill_bytes(0xFF)?;
    let cfg = LaunchConfig {
        grid_blocks: schedule.grid_blocks(),
        threads_per_block: 256,
        dynamic_smem_bytes: 0,
    };
    let args = KernelArgs::new()
        .ptr(x_dev.device_ptr())
        .ptr(y_dev.device_ptr())
        .u32(n as u32)
        .f32(a)
        .f32(b);
    gpu.launch(&kernel, cfg, args)?;
    let y = y_dev.download()?;
    let mismatches = x
        .iter()
        .zip(&y)
        .filter(|(xi, yi)| xi.to_f32().mul_add(a, b).to_bits() != yi.to_bits())
        .count();
    Ok(ProbeResult {
        elements: n,
        mismatches,
        passed: mismatches == 0,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BarrierTiming {
    pub grid_blocks: u32,
    pub threads_per_block: u32,
    pub barriers: u32,
    /// Median over runs of (time(N barriers) - time(0 barriers)) / N.
    pub us_per_barrier: f64,
    pub us_per_barrier_min: f64,
    pub us_per_barrier_max: f64,
    /// Cooperative launch of an empty persistent kernel, µs (median).
    pub empty_launch_us: f64,
}

/// Grid-barrier cost of the schedule's persistent grid.
pub fn measure_barrier(
    gpu: &Gpu,
    cache: &KernelCache,
    schedule: &Schedule,
    barriers: u32,
    runs: usize,
) -> Result<BarrierTiming> {
    let grid = schedule.grid_blocks();
    let threads = schedule.threads_per_block;
    let loaded = gpu.compile_and_load(
        cache,
        &kernels::barrier_source(grid),
        &opts(schedule, "barrier.cu"),
    )?;
    let kernel = loaded.module.kernel("barrier_only")?;
    let counter = gpu.alloc_zeroed::<u64>(1)?;
    let cfg = LaunchConfig {
        grid_blocks: grid,
        threads_per_block: threads,
        dynamic_smem_bytes: 0,
    };
    let launch = |rounds: u32| {
        gpu.launch_cooperative(
            &kernel,
            cfg,
            KernelArgs::new().ptr(counter.device_ptr()).u32(rounds),
        )
    };
    let timer = GpuTimer::new(gpu)?;
    launch(barriers.min(100))?; // warm-up
    gpu.synchronize()?;
    let mut empty = Vec::with_capacity(runs);
    let mut full = Vec::with_capacity(runs);
    for _ in 0..runs {
        empty.push(timer.time_ms(gpu, || launch(0))?);
        full.push(timer.time_ms(gpu, || launch(barriers))?);
    }
    let per: Vec<f64> = empty
        .iter()
        .zip(&full)
        .map(|(e, f)| (f - e).max(0.0) * 1e3 / barriers.max(1) as f64)
        .collect();
    let s =
        Stats::of(&per).ok_or_else(|| RuntimeError::CheckFailed("no barrier timings".into()))?;
    let e =
        Stats::of(&empty).ok_or_else(|| RuntimeError::CheckFailed("no launch timings".into()))?;
    Ok(BarrierTiming {
        grid_blocks: grid,
        threads_per_block: threads,
        barriers,
        us_per_barrier: s.median,
        us_per_barrier_min: s.min,
        us_per_barrier_max: s.max,
        empty_launch_us: e.median * 1e3,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BarrierReuse {
    pub launches: u32,
    pub rounds_per_launch: u32,
    /// Neighbour values seen stale or early (must be 0).
    pub errors: u32,
    pub counter: u64,
    pub expected_counter: u64,
    pub passed: bool,
}

/// Launches the checked barrier kernel several times on one counter that is
/// zeroed once, never between launches.
pub fn check_barrier_reuse(
    gpu: &Gpu,
    cache: &KernelCache,
    schedule: &Schedule,
) -> Result<BarrierReuse> {
    let grid = schedule.grid_blocks();
    let loaded = gpu.compile_and_load(
        cache,
        &kernels::barrier_source(grid),
        &opts(schedule, "barrier.cu"),
    )?;
    let kernel = loaded.module.kernel("barrier_checked")?;
    let counter = gpu.alloc_zeroed::<u64>(1)?;
    let mut slots = gpu.alloc::<u32>(grid as usize)?;
    slots.fill_bytes(0xFF)?;
    let errors = gpu.alloc_zeroed::<u32>(1)?;
    let (launches, rounds) = (5u32, 64u32);
    let cfg = LaunchConfig {
        grid_blocks: grid,
        threads_per_block: schedule.threads_per_block,
        dynamic_smem_bytes: 0,
    };
    for l in 0..launches {
        let args = KernelArgs::new()
            .ptr(counter.device_ptr())
            .ptr(slots.device_ptr())
            .ptr(errors.device_ptr())
            .u32(rounds)
            .u32(l * 100_000);
        gpu.launch_cooperative(&kernel, cfg, args)?;
    }
    gpu.synchronize()?;
    let errors = errors.download()?[0];
    let counter = counter.download()?[0];
    let expected_counter = launches as u64 * rounds as u64 * 2 * grid as u64;
    Ok(BarrierReuse {
        launches,
        rounds_per_launch: rounds,
        errors,
        counter,
        expected_counter,
        passed: errors == 0 && counter == expected_counter,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bandwidth {
    pub bytes: u64,
    pub grid_blocks: u32,
    pub threads_per_block: u32,
    /// GB/s (1e9 bytes/s): median, min, max over the runs.
    pub gbps: Stats,
    /// From memory clock and bus width; 0 when unknown.
    pub theoretical_gbps: f64,
    /// The kernel's word sum equals the fill pattern times the word count.
    pub checksum_ok: bool,
    /// Energy of ~1 s of back-to-back read runs (None without NVML).
    pub energy: Option<EnergyReading>,
}

/// Device read bandwidth over a `bytes`-byte buffer, all SMs, 16-byte loads,
/// `runs` timed runs after a warm-up.
pub fn measure_read_bandwidth(
    gpu: &Gpu,
    cache: &KernelCache,
    schedule: &Schedule,
    bytes: u64,
    runs: usize,
) -> Result<Bandwidth> {
    let loaded =
        gpu.compile_and_load(cache, kernels::BANDWIDTH, &opts(schedule, "bandwidth.cu"))?;
    let kernel = loaded.module.kernel("read_bandwidth")?;
    let n_vec = bytes / 16;
    let bytes = n_vec * 16;
    let threads = 512u32;
    let per_sm = kernel.max_active_blocks_per_sm(threads, 0)?.max(1);
    let grid = per_sm * gpu.props().sm_count;
    let mut data = gpu.alloc::<u32>((bytes / 4) as usize)?;
    const PATTERN: u32 = 0x0101_0101;
    data.fill_u32(PATTERN)?;
    let mut sums = gpu.alloc::<u64>(grid as usize)?;
    sums.fill_bytes(0xFF)?;
    let cfg = LaunchConfig {
        grid_blocks: grid,
        threads_per_block: threads,
        dynamic_smem_bytes: 0,
    };
    let launch = || {
        gpu.launch(
            &kernel,
            cfg,
            KernelArgs::new()
                .ptr(data.device_ptr())
                .u64(n_vec)
                .ptr(sums.device_ptr()),
        )
    };
    launch()?;
    launch()?;
    gpu.synchronize()?;
    let sum: u64 = sums
        .download()?
        .iter()
        .fold(0u64, |a, &b| a.wrapping_add(b));
    let checksum_ok = sum == (bytes / 4).wrapping_mul(PATTERN as u64);
    let timer = GpuTimer::new(gpu)?;
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        ms.push(timer.time_ms(gpu, launch)?);
    }
    let stats =
        Stats::of(&ms).ok_or_else(|| RuntimeError::CheckFailed("no bandwidth timings".into()))?;
    // Energy over about one second of back-to-back reads: NVML's counter
    // updates too coarsely for the few milliseconds the timed runs take.
    let energy = match EnergyMeter::new(gpu.info()) {
        Ok(meter) => {
            let reps = (1000.0 / stats.median.max(0.01)).ceil().min(100_000.0) as usize;
            let (done, reading) = meter.measure(|| {
                for _ in 0..reps {
                    launch()?;
                }
                gpu.synchronize()
            });
            done?;
            reading.ok()
        }
        Err(e) => {
            tracing::info!("{e}");
            None
        }
    };
    let gbps = stats.map(|m| bytes as f64 / (m * 1e-3) / 1e9);
    Ok(Bandwidth {
        bytes,
        grid_blocks: grid,
        threads_per_block: threads,
        gbps,
        theoretical_gbps: gpu.info().theoretical_bandwidth_bytes_per_s() / 1e9,
        checksum_ok,
        energy,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompileTimes {
    /// NVRTC compile + store + module load into an empty cache, ms.
    pub cold_ms: f64,
    /// Cache hit + module load, ms.
    pub warm_ms: f64,
    /// The warm start really hit the cache.
    pub warm_hit: bool,
}

/// Cold (empty temporary cache) vs warm (cache hit) start of `source`.
pub fn measure_compile_times(
    gpu: &Gpu,
    source: &str,
    opts: &CompileOptions,
) -> Result<CompileTimes> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let root = std::env::temp_dir().join(format!("lucebox-doctor-{}-{nanos}", std::process::id()));
    let result = (|| {
        let cold = gpu.compile_and_load(&KernelCache::at_root(&root)?, source, opts)?;
        // A new cache object on the same directory: what a second start sees.
        let warm = gpu.compile_and_load(&KernelCache::at_root(&root)?, source, opts)?;
        Ok(CompileTimes {
            cold_ms: cold.millis,
            warm_ms: warm.millis,
            warm_hit: cold.outcome == CacheOutcome::Compiled && warm.outcome == CacheOutcome::Hit,
        })
    })();
    let _ = std::fs::remove_dir_all(&root);
    result
}

/// A cooperative launch one block larger than can be co-resident must be
/// refused with [`RuntimeError::NotCoResident`] (and must not hang).
/// Returns the refusal message.
pub fn check_cooperative_refusal(
    gpu: &Gpu,
    cache: &KernelCache,
    schedule: &Schedule,
) -> Result<String> {
    let grid = schedule.grid_blocks();
    let loaded = gpu.compile_and_load(
        cache,
        &kernels::barrier_source(grid),
        &opts(schedule, "barrier.cu"),
    )?;
    let kernel = loaded.module.kernel("barrier_only")?;
    let max = gpu.max_cooperative_grid(&kernel, schedule.threads_per_block, 0)?;
    let counter = gpu.alloc_zeroed::<u64>(1)?;
    let cfg = LaunchConfig {
        grid_blocks: max + 1,
        threads_per_block: schedule.threads_per_block,
        dynamic_smem_bytes: 0,
    };
    match gpu.launch_cooperative(
        &kernel,
        cfg,
        KernelArgs::new().ptr(counter.device_ptr()).u32(1),
    ) {
        Err(e @ RuntimeError::NotCoResident { .. }) => Ok(e.to_string()),
        Err(e) => Err(RuntimeError::CheckFailed(format!(
            "refused, but with the wrong error: {e}"
        ))),
        Ok(()) => {
            gpu.synchronize()?;
            Err(RuntimeError::CheckFailed(format!(
                "a grid of {} blocks (max co-resident {max}) was launched",
                max + 1
            )))
        }
    }
}

/// Bytes for the bandwidth test: 2 GiB when memory allows, never below 1 GiB.
pub fn bandwidth_buffer_bytes(gpu: &Gpu) -> Result<u64> {
    let (free, _) = gpu.mem_info()?;
    let gib = 1u64 << 30;
    if free as u64 >= 8 * gib {
        Ok(2 * gib)
    } else if free as u64 >= 2 * gib {
        Ok(gib)
    } else {
        Err(RuntimeError::InvalidArgument(format!(
            "only {} MiB free; the bandwidth test needs 1 GiB",
            free >> 20
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic_and_in_range() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..1000 {
            let x = a.next_f32();
            assert_eq!(x.to_bits(), b.next_f32().to_bits());
            assert!((-1.0..1.0).contains(&x));
        }
    }
}
