//! Runtime tests that need a GPU. Without a driver/device they print a
//! visible SKIP and pass; on a GPU machine they run everything `lucebox
//! check` runs, at small sizes.

use lucebox_runtime::cache::KernelCache;
use lucebox_runtime::diagnostics;
use lucebox_runtime::launch::{KernelArgs, LaunchConfig};
use lucebox_runtime::nvrtc::nvrtc_available;
use lucebox_runtime::{Gpu, RuntimeError, kernels};

fn gpu_or_skip(test: &str) -> Option<Gpu> {
    if !nvrtc_available() {
        eprintln!("SKIP {test}: libnvrtc not loadable");
        return None;
    }
    match Gpu::open_default() {
        Ok(g) => Some(g),
        Err(e) if e.is_no_gpu() => {
            eprintln!("SKIP {test}: {e}");
            None
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

#[test]
fn no_gpu_is_an_error_not_a_panic() {
    // Runs everywhere: on a machine without a driver this must be a clean error.
    match Gpu::open_default() {
        Ok(g) => eprintln!("GPU present: {}", g.props().name),
        Err(e) => {
            assert!(e.is_no_gpu(), "{e}");
            assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn probe_matches_cpu_bit_for_bit() {
    let Some(gpu) = gpu_or_skip("probe_matches_cpu_bit_for_bit") else {
        return;
    };
    let root = tempfile::tempdir().expect("tempdir");
    let cache = KernelCache::at_root(root.path()).expect("cache");
    let schedule = gpu.schedule().expect("schedule");
    let r = diagnostics::run_probe(&gpu, &cache, &schedule, 42).expect("probe");
    assert!(r.passed, "{r:?}");
}

#[test]
fn barrier_is_reusable_without_memset() {
    let Some(gpu) = gpu_or_skip("barrier_is_reusable_without_memset") else {
        return;
    };
    let root = tempfile::tempdir().expect("tempdir");
    let cache = KernelCache::at_root(root.path()).expect("cache");
    let schedule = gpu.schedule().expect("schedule");
    let r = diagnostics::check_barrier_reuse(&gpu, &cache, &schedule).expect("barrier");
    assert!(r.passed, "{r:?}");
}

#[test]
fn oversized_cooperative_grid_is_refused() {
    let Some(gpu) = gpu_or_skip("oversized_cooperative_grid_is_refused") else {
        return;
    };
    let root = tempfile::tempdir().expect("tempdir");
    let cache = KernelCache::at_root(root.path()).expect("cache");
    let schedule = gpu.schedule().expect("schedule");
    let grid = schedule.grid_blocks();
    let m = gpu
        .compile_and_load(
            &cache,
            &kernels::barrier_source(grid),
            &lucebox_runtime::nvrtc::CompileOptions::new(schedule.arch, "barrier.cu"),
        )
        .expect("compile");
    let k = m.module.kernel("barrier_only").expect("kernel");
    let max = gpu
        .max_cooperative_grid(&k, schedule.threads_per_block, 0)
        .expect("occupancy");
    let counter = gpu.alloc_zeroed::<u64>(1).expect("alloc");
    let cfg = LaunchConfig {
        grid_blocks: max + 1,
        threads_per_block: schedule.threads_per_block,
        dynamic_smem_bytes: 0,
    };
    let err = gpu
        .launch_cooperative(&k, cfg, KernelArgs::new().ptr(counter.device_ptr()).u32(1))
        .expect_err("must refuse");
    assert!(matches!(err, RuntimeError::NotCoResident { .. }), "{err}");
}

#[test]
fn buffers_round_trip_bf16_and_mapped_memory_is_device_visible() {
    let Some(gpu) = gpu_or_skip("buffers_round_trip_bf16_and_mapped_memory_is_device_visible")
    else {
        return;
    };
    let host: Vec<half::bf16> = (0..1000)
        .map(|i| half::bf16::from_f32(i as f32 * 0.5 - 7.0))
        .collect();
    let mut dev = gpu.upload(&host).expect("upload");
    assert_eq!(dev.download().expect("download"), host);
    dev.upload_at(10, &host[..5]).expect("upload_at");
    let back = dev.download().expect("download");
    assert_eq!(&back[10..15], &host[..5]);
    assert!(dev.upload_at(999, &host[..5]).is_err());
    let mapped = gpu.alloc_mapped::<u32>(16).expect("mapped");
    assert_ne!(mapped.device_ptr(), 0);
    assert_eq!(mapped.to_vec(), vec![0u32; 16]);
}
