//! `lucebox synth`: write a random-weight Qwen3.5 checkpoint at real shapes
//! (HF safetensors directory or llama.cpp GGUF), streamed tensor by tensor.

use std::path::PathBuf;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lucebox_models::Qwen35Config;
use lucebox_models::synth::{SynthFormat, SynthOptions, SynthQuant, synth};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Safetensors,
    Gguf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Quant {
    Bf16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_k_m")]
    Q4KM,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Built-in config name (qwen3.5-0.8b, qwen3.5-27b) or an HF config.json / model directory.
    #[arg(long)]
    pub config: String,
    #[arg(long, value_enum, default_value = "safetensors")]
    pub format: Format,
    /// Weight type: safetensors is bf16 only; GGUF takes bf16, q8_0 or q4_k_m.
    #[arg(long, value_enum, default_value = "bf16")]
    pub quant: Quant,
    /// Output: a directory for safetensors, a .gguf file for gguf.
    #[arg(long)]
    pub out: PathBuf,
    /// RNG seed; the same seed gives byte-identical output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// GGUF whose tokenizer provides the regular tokens and merges. Default:
    /// llama.cpp's ggml-vocab-qwen35.gguf in $LUCEBOX_TEST_DATA or
    /// .cache/test-data (scripts/fetch-test-data.sh) when present, else a
    /// byte-level vocabulary.
    #[arg(long)]
    pub vocab_from: Option<PathBuf>,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

fn load_config(spec: &str) -> anyhow::Result<Qwen35Config> {
    if let Some(c) = Qwen35Config::builtin(spec) {
        return Ok(c);
    }
    let mut path = PathBuf::from(spec);
    if path.is_dir() {
        path = path.join("config.json");
    }
    if !path.exists() {
        bail!(
            "--config `{spec}` is neither a built-in config ({}) nor an existing config.json",
            Qwen35Config::BUILTIN_NAMES.join(", ")
        );
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Qwen35Config::from_hf_json(&text, spec)?)
}

fn default_vocab() -> Option<PathBuf> {
    let dir = std::env::var_os("LUCEBOX_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".cache/test-data"));
    let p = dir.join("ggml-vocab-qwen35.gguf");
    p.exists().then_some(p)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = load_config(&args.config)?;
    if args.out.exists() && !args.force {
        bail!("{} exists (pass --force to overwrite)", args.out.display());
    }
    let opts = SynthOptions {
        format: match args.format {
            Format::Safetensors => SynthFormat::Safetensors,
            Format::Gguf => SynthFormat::Gguf,
        },
        quant: match args.quant {
            Quant::Bf16 => SynthQuant::Bf16,
            Quant::Q8_0 => SynthQuant::Q8_0,
            Quant::Q4KM => SynthQuant::Q4KM,
        },
        seed: args.seed,
        vocab_base: args.vocab_from.clone().or_else(default_vocab),
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    eprintln!(
        "writing {} ({} parameters) as {:?} {:?} to {}",
        cfg.name,
        cfg.parameter_count(),
        args.format,
        args.quant,
        args.out.display()
    );
    let report = synth(&cfg, &args.out, &opts, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    eprintln!("vocabulary: {}", report.vocab);
    println!(
        "wrote {} tensors, {:.3} GB to {} in {:.1} s ({:.2} s/GB)",
        report.tensors,
        report.bytes as f64 / 1e9,
        report.path.display(),
        report.seconds,
        report.seconds_per_gb()
    );
    Ok(())
}
