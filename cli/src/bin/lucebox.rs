//! `lucebox`: run, benchmark and serve Qwen3.5 models at the speed of the chip.

use clap::{Parser, Subcommand};
use lucebox_cli::cmd;

#[derive(Debug, Parser)]
#[command(
    name = "lucebox",
    version,
    about = "Run open LLMs at the speed of the chip they are on"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate text (GPU megakernel when a GPU is present, CPU reference otherwise).
    Run(cmd::run::Args),
    /// Print logits as JSON for a list of token ids.
    Logits(cmd::logits::Args),
    /// Benchmark prefill and decode (tok/s, energy).
    Bench(cmd::bench::Args),
    /// Per-phase timing breakdown of decode (profiling build of the megakernel).
    Profile(cmd::profile::Args),
    /// OpenAI- and Anthropic-compatible HTTP server.
    Serve(cmd::serve::Args),
    /// Write a random-weight checkpoint at real shapes.
    Synth(cmd::synth::Args),
    /// Describe the GPU, compile and run a probe kernel, measure barrier cost and bandwidth.
    Doctor(cmd::doctor::Args),
    /// Run every GPU correctness check (for GPU machines without cargo).
    Check(cmd::check::Args),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LUCEBOX_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => cmd::run::run(a),
        Command::Logits(a) => cmd::logits::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Profile(a) => cmd::profile::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Synth(a) => cmd::synth::run(a),
        Command::Doctor(a) => cmd::doctor::run(a),
        Command::Check(a) => cmd::check::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
