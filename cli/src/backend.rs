//! Choosing the engine a command runs on: the GPU decode megakernel when a
//! GPU is usable, the CPU reference otherwise (shared by `run` and `serve`).

use std::sync::Arc;

use anyhow::Context;
use lucebox_models::load::LoadedModel;
use lucebox_models::reference::ReferenceModel;
use lucebox_models::{CpuEngine, Engine};
use lucebox_runtime::Gpu;
use lucebox_runtime::cache::KernelCache;
use lucebox_runtime::decode::GpuEngine;

/// Which engine to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineChoice {
    /// The GPU when one is usable, the CPU reference otherwise (with a notice).
    Auto,
    /// The CPU reference forward (slow; the oracle).
    Cpu,
    /// The GPU decode megakernel; an error when no GPU is usable.
    Gpu,
}

/// The engine of `choice` for `model`. `who` prefixes the notice printed
/// when `Auto` falls back to the CPU.
pub fn open_engine(
    model: &LoadedModel,
    choice: EngineChoice,
    who: &str,
) -> anyhow::Result<Box<dyn Engine>> {
    Ok(match choice {
        EngineChoice::Cpu => Box::new(cpu_engine(model)?),
        EngineChoice::Gpu => gpu_engine(model)?,
        EngineChoice::Auto => match gpu_engine(model) {
            Ok(engine) => engine,
            Err(e) => {
                eprintln!("{who}: no GPU engine ({e:#}); using the CPU reference (slow)");
                Box::new(cpu_engine(model)?)
            }
        },
    })
}

/// The CPU reference engine over the model's weights.
pub fn cpu_engine(model: &LoadedModel) -> anyhow::Result<CpuEngine> {
    let reference = ReferenceModel::load(model.weights.as_ref())
        .with_context(|| format!("loading the weights of {}", model.source_path.display()))?;
    Ok(CpuEngine::new(
        Arc::new(reference),
        model.config.max_position_embeddings,
    ))
}

/// The decode megakernel on the default GPU, for the model's config and the
/// chip's schedule.
pub fn gpu_engine(model: &LoadedModel) -> anyhow::Result<Box<dyn Engine>> {
    Ok(Box::new(gpu_decoder(model)?))
}

/// [`gpu_engine`] as its concrete type (teacher-forced logits, timing).
pub fn gpu_decoder(model: &LoadedModel) -> anyhow::Result<GpuEngine> {
    let gpu = Gpu::open_default()?;
    let schedule = gpu.schedule()?;
    let cache = KernelCache::open_default()?;
    GpuEngine::new(gpu, model.weights.as_ref(), schedule, &cache)
        .with_context(|| format!("GPU engine for {}", model.source_path.display()))
}
