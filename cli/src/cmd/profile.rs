//! `lucebox profile`: where a decode token's time goes, phase by phase.
//!
//! Builds the GPU engine with the schedule's `decode.profile_phases` on (a
//! separate kernel build: block 0 stamps `%globaltimer` after every grid
//! barrier, every block records its barrier wait), runs one launch of a
//! seeded random prompt plus `--steps` greedy tokens, and prints per phase
//! kind: time per token, share, instances, mean per instance, barrier waits,
//! weight bytes and the implied bandwidth. The profiled kernel is slightly
//! slower than the plain one (a few atomics per barrier); compare shares,
//! and take absolute speed from `lucebox bench`.
//!
//! `--prefill` profiles prompt processing instead: the plain engine times
//! `--pp` tokens of prefill (median of `--reps`), then runs it once more with
//! an event before every launch and sums the GPU time per kernel (GEMMs per
//! weight).

use anyhow::{Context, ensure};
use lucebox_runtime::Gpu;
use lucebox_runtime::cache::KernelCache;
use lucebox_runtime::decode::GpuEngine;
use lucebox_runtime::profile::PhaseProfile;
use serde::Serialize;

use crate::cmd::bench::random_prompt;

/// Format version of the `--json` object.
pub const JSON_SCHEMA: &str = "lucebox-profile/1";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// HF model directory or .gguf file.
    #[arg(long)]
    pub model: String,
    /// Prompt tokens absorbed before the profiled steps.
    #[arg(long, default_value_t = 32)]
    pub pp: usize,
    /// Greedy tokens generated (prompt + steps <= 512 are recorded).
    #[arg(long, default_value_t = 128)]
    pub steps: u32,
    /// Generated steps left out of the statistics (warm-up).
    #[arg(long, default_value_t = 8)]
    pub skip: usize,
    /// Seed of the random prompt.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Profile prefill of `--pp` tokens instead of decode.
    #[arg(long)]
    pub prefill: bool,
    /// Timed prefill repetitions (with `--prefill`).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
}

#[derive(Debug, Serialize)]
pub struct PrefillProfileReport {
    pub schema: &'static str,
    pub model: String,
    pub device: String,
    pub schedule_preset: String,
    pub timing: lucebox_runtime::decode::PrefillTiming,
    /// GPU time per launch (its start event to the next launch's), summed per label.
    pub stages: Vec<lucebox_runtime::prefill::PrefillStage>,
}

fn run_prefill(args: Args) -> anyhow::Result<()> {
    let loaded = lucebox_models::load::open(&args.model)
        .with_context(|| format!("opening model `{}`", args.model))?;
    let gpu = Gpu::open_default().context("opening the GPU")?;
    let device = gpu.info().props.name.clone();
    let schedule = gpu.schedule().context("deriving the schedule")?;
    let preset = schedule.preset.clone();
    let cache = KernelCache::open_default().context("opening the kernel cache")?;
    let mut engine = GpuEngine::new(gpu, loaded.weights.as_ref(), schedule, &cache)
        .context("building the GPU engine")?;
    engine
        .set_use_prefill(true)
        .context("this engine has no prefill kernels")?;
    let prompt = random_prompt(args.pp, loaded.config.vocab_size, args.seed);
    let timing = engine
        .time_prefill(&prompt, 2, args.reps)
        .context("timing prefill")?;
    let mut stages = engine
        .profile_prefill(&prompt)
        .context("profiling prefill")?;
    stages.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    let report = PrefillProfileReport {
        schema: JSON_SCHEMA,
        model: args.model,
        device,
        schedule_preset: preset,
        timing,
        stages,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let t = &report.timing;
    println!(
        "{} on {} (schedule {}): prefill of {} tokens, {} timed runs after {} warm-up: median {:.3} ms [{:.3}-{:.3}] = {:.0} tok/s [{:.0}-{:.0}]",
        report.model,
        report.device,
        report.schedule_preset,
        t.prompt_tokens,
        t.ms.runs,
        t.warmup_runs,
        t.ms.median,
        t.ms.min,
        t.ms.max,
        t.tok_per_s.median,
        t.tok_per_s.min,
        t.tok_per_s.max
    );
    let total: f64 = report.stages.iter().map(|s| s.ms).sum();
    let w = report
        .stages
        .iter()
        .map(|s| s.label.len())
        .max()
        .unwrap_or(8)
        .max(8);
    println!(
        "{:<w$} {:>8} {:>10} {:>7}",
        "stage", "launches", "ms", "share"
    );
    for s in &report.stages {
        println!(
            "{:<w$} {:>8} {:>10.3} {:>6.1}%",
            s.label,
            s.launches,
            s.ms,
            100.0 * s.ms / total.max(f64::MIN_POSITIVE)
        );
    }
    println!(
        "{:<w$} {:>8} {:>10.3}",
        "sum (GPU time of the profiled prefill)",
        report.stages.iter().map(|s| s.launches).sum::<usize>(),
        total
    );
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct ProfileReport {
    pub schema: &'static str,
    pub model: String,
    pub device: String,
    pub schedule_preset: String,
    pub grid_blocks: u32,
    pub prompt_tokens: usize,
    pub steps: u32,
    pub skip: usize,
    pub profile: PhaseProfile,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.pp >= 1, "--pp must be at least 1");
    if args.prefill {
        return run_prefill(args);
    }
    ensure!(
        args.steps as usize > args.skip,
        "--steps must exceed --skip"
    );
    let loaded = lucebox_models::load::open(&args.model)
        .with_context(|| format!("opening model `{}`", args.model))?;
    let gpu = Gpu::open_default().context("opening the GPU")?;
    let device = gpu.info().props.name.clone();
    let mut schedule = gpu.schedule().context("deriving the schedule")?;
    schedule.decode.profile_phases = true;
    let preset = schedule.preset.clone();
    let cache = KernelCache::open_default().context("opening the kernel cache")?;
    let mut engine = GpuEngine::new(gpu, loaded.weights.as_ref(), schedule, &cache)
        .context("building the profiling GPU engine")?;
    let prompt = random_prompt(args.pp, loaded.config.vocab_size, args.seed);
    let profile = engine
        .profile_decode(&prompt, args.steps, args.skip)
        .context("profiled decode")?;
    let report = ProfileReport {
        schema: JSON_SCHEMA,
        model: args.model,
        device,
        schedule_preset: preset,
        grid_blocks: engine.abi().grid_blocks,
        prompt_tokens: args.pp,
        steps: args.steps,
        skip: args.skip,
        profile,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} on {} (schedule {}, {} blocks): prompt {}, {} greedy steps, first {} skipped",
            report.model,
            report.device,
            report.schedule_preset,
            report.grid_blocks,
            report.prompt_tokens,
            report.steps,
            report.skip
        );
        print!("{}", report.profile.table());
    }
    Ok(())
}
