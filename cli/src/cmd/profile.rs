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
