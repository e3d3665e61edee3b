//! `lucebox-gen`: emit the CUDA kernels lucebox runs on a chip, from a
//! schedule preset (or an arch's preset) and a Qwen3.5 config.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};

use lucebox_codegen::{KernelKind, generate};
use lucebox_models::config::Qwen35Config;
use lucebox_schedules::{Schedule, list_presets};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KernelChoice {
    /// The decode megakernel (whole tokens in one persistent launch).
    Decode,
    /// Prompt kernels (GEMM, conv, chunked delta rule, attention).
    Prefill,
    /// DDTree verify kernels: tree conv, tree gated delta rule, tree attention.
    Tree,
    /// Every kind that is generated (decode and tree).
    All,
}

/// Generate lucebox's CUDA kernels for a GPU.
///
/// A chip is a schedule (a Rust value: SM count, threads per block, how each
/// phase splits its work, sync points, tiles); the kernels are lowered from
/// it and from the model config to readable CUDA C, compiled at run time by
/// NVRTC.
///
/// Examples:
///   lucebox-gen --target sm_86 --out kernels/
///   lucebox-gen --preset h100 --kernel decode
///   lucebox-gen --target sm_86 --sms 46 --model-config qwen3.5-27b --out k/
///   lucebox-gen --list
#[derive(Debug, Parser)]
#[command(name = "lucebox-gen", version, verbatim_doc_comment)]
struct Args {
    /// CUDA architecture (sm_86, sm_90, sm_90a, 8.6); selects that arch's preset.
    #[arg(long, conflicts_with = "preset")]
    target: Option<String>,
    /// Named schedule preset (see --list).
    #[arg(long)]
    preset: Option<String>,
    /// Override the SM count of the chosen preset (e.g. a partitioned GPU).
    #[arg(long)]
    sms: Option<u32>,
    /// Model config: a built-in name (qwen3.5-0.8b, qwen3.5-27b) or a path to an HF config.json.
    #[arg(long, default_value = "qwen3.5-0.8b")]
    model_config: String,
    /// Which kernels to generate.
    #[arg(long, value_enum, default_value_t = KernelChoice::All)]
    kernel: KernelChoice,
    /// Write the .cu files and schedule.json into this directory (default: print to stdout).
    #[arg(long)]
    out: Option<PathBuf>,
    /// List the presets with their arch and SM count, then exit.
    #[arg(long)]
    list: bool,
    /// Generate the profiling build of the decode kernel (decode.profile_phases).
    #[arg(long)]
    profile_phases: bool,
    /// Merge this JSON into the schedule before generating, e.g.
    /// '{"prefill": {"gemm_tile_n": 256, "gemm_stages": 3}}'
    /// (the form `LUCEBOX_SCHEDULE_PATCH` takes at run time).
    #[arg(long, value_name = "JSON")]
    patch: Option<String>,
}

fn load_config(spec: &str) -> Result<Qwen35Config> {
    if let Some(c) = Qwen35Config::builtin(spec) {
        return Ok(c);
    }
    let path = PathBuf::from(spec);
    let path = if path.is_dir() {
        path.join("config.json")
    } else {
        path
    };
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "`{spec}` is neither a built-in config ({}) nor a readable config.json",
            Qwen35Config::BUILTIN_NAMES.join(", ")
        )
    })?;
    let name = path
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "custom".into());
    Ok(Qwen35Config::from_hf_json(&text, &name)?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.list {
        println!("{:<10} {:<8} {:>4}", "preset", "arch", "SMs");
        for (name, arch, sms) in list_presets() {
            println!("{name:<10} {:<8} {sms:>4}", arch.to_string());
        }
        return Ok(());
    }
    let mut sched = match (&args.target, &args.preset) {
        (Some(t), None) => Schedule::for_target(t)?,
        (None, Some(p)) => Schedule::preset(p)?,
        (None, None) => {
            bail!("give --target (e.g. sm_86) or --preset (e.g. rtx3090); --list shows the presets")
        }
        (Some(_), Some(_)) => bail!("--target and --preset are exclusive"),
    };
    if let Some(n) = args.sms {
        if n == 0 {
            bail!("--sms must be at least 1");
        }
        sched = sched.with_sm_count(n);
    }
    sched.decode.profile_phases |= args.profile_phases;
    if let Some(patch) = &args.patch {
        sched = sched
            .patched(patch)
            .context("--patch does not apply to the schedule")?;
    }
    let cfg = load_config(&args.model_config)?;
    // A small model may hold fewer positions than the preset's context, or
    // row counts the preset's rows per warp do not divide.
    let dims = lucebox_codegen::model_dims(&cfg);
    sched = sched.fitted_to_model(&dims);
    sched
        .validate(Some(&dims))
        .context("the schedule does not fit this model")?;
    let kinds: Vec<KernelKind> = match args.kernel {
        KernelChoice::Decode => vec![KernelKind::Decode],
        KernelChoice::Prefill => vec![KernelKind::Prefill],
        KernelChoice::Tree => vec![KernelKind::Tree],
        KernelChoice::All => KernelKind::GENERATED.to_vec(),
    };
    let kernels = kinds
        .iter()
        .map(|k| generate(&cfg, &sched, *k).with_context(|| format!("generating the {k} kernel")))
        .collect::<Result<Vec<_>>>()?;
    match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for k in &kernels {
                let p = dir.join(&k.file_name);
                std::fs::write(&p, &k.source)
                    .with_context(|| format!("writing {}", p.display()))?;
                eprintln!(
                    "wrote {} ({} bytes, entry points: {})",
                    p.display(),
                    k.source.len(),
                    k.entry_points.join(", ")
                );
            }
            let p = dir.join("schedule.json");
            std::fs::write(&p, serde_json::to_string_pretty(&sched)? + "\n")
                .with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
        None => {
            for k in &kernels {
                println!("// ===== {} =====", k.file_name);
                print!("{}", k.source);
            }
        }
    }
    Ok(())
}
