//! `lucebox logits`: logits of a token sequence as one JSON object.
//!
//! Contract (other tools parse it): stdout holds exactly
//! `{"ids": [...], "positions": [...], "logits": [[...], ...]}`, one row per
//! position: the last position only, or every position with `--all-positions`.

use std::io::Write;

use anyhow::Context;
use lucebox_models::reference::{ForwardOptions, LogitsWanted, ReferenceModel};
use serde::Serialize;

/// Which implementation computes the logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The CPU reference forward (exact, slow).
    Cpu,
    /// The GPU megakernel.
    Gpu,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// HF model directory, .gguf file, or HF repo id (Org/Name).
    #[arg(long)]
    pub model: String,
    /// Comma-separated token ids, e.g. `--ids 1,2,3`.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub ids: Vec<u32>,
    /// Print the logits of every position, not only the last.
    #[arg(long)]
    pub all_positions: bool,
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,
    /// Check every tensor's shape and scan all values for NaN/Inf first.
    #[arg(long)]
    pub check: bool,
}

#[derive(Serialize)]
struct Output<'a> {
    ids: &'a [u32],
    positions: Vec<usize>,
    logits: Vec<Vec<f32>>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.ids.is_empty() {
        anyhow::bail!("--ids needs at least one token id");
    }
    let loaded = lucebox_models::load::open(&args.model)
        .with_context(|| format!("opening model `{}`", args.model))?;
    if args.check {
        let report = lucebox_models::validate_all(loaded.weights.as_ref(), true)?;
        eprintln!(
            "check: {} tensors, {} values, shapes match and all values are finite",
            report.tensors, report.elements
        );
    }
    if args.backend == Backend::Gpu {
        // The megakernel's logits after each teacher-forced token.
        let mut decoder = crate::backend::gpu_decoder(&loaded)?;
        let mut logits = decoder.teacher_forced_logits(&args.ids)?;
        let mut positions: Vec<usize> = (0..args.ids.len()).collect();
        if !args.all_positions {
            logits.drain(..logits.len() - 1);
            positions.drain(..positions.len() - 1);
        }
        return print_json(&Output {
            ids: &args.ids,
            positions,
            logits,
        });
    }
    let model = ReferenceModel::load(loaded.weights.as_ref()).context("loading weights")?;
    let options = ForwardOptions {
        logits: if args.all_positions {
            LogitsWanted::All
        } else {
            LogitsWanted::Last
        },
        ..Default::default()
    };
    let out = model.forward(&mut model.new_state(), &args.ids, &options)?;
    print_json(&Output {
        ids: &args.ids,
        positions: out.positions,
        logits: out.logits,
    })
}

fn print_json(out: &Output<'_>) -> anyhow::Result<()> {
    let json = serde_json::to_string(out)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{json}")?;
    Ok(())
}
