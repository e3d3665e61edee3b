//! `lucebox run`: generate from token ids or a text prompt.
//!
//! Contract: with `--output json`, stdout holds exactly
//! `{"prompt_ids": [...], "generated_ids": [...]}`. With `--output text`
//! (default) generated text (or ids, without a tokenizer) streams to stdout
//! and the speed is reported on stderr.

use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Arc;

use anyhow::Context;
use lucebox_models::reference::ReferenceModel;
use lucebox_models::{CpuEngine, Engine, GenerationRequest, SamplingParams};
use serde::Serialize;

use super::logits::Backend;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// HF model directory, .gguf file, or HF repo id (Org/Name).
    #[arg(long)]
    pub model: String,
    /// Prompt as comma-separated token ids.
    #[arg(long, value_delimiter = ',', num_args = 1.., conflicts_with = "prompt", required_unless_present = "prompt")]
    pub ids: Vec<u32>,
    /// Prompt as text (needs the model's tokenizer).
    #[arg(long)]
    pub prompt: Option<String>,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// 0 disables top-k.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Default: the GPU when present, else the CPU reference.
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// Check every tensor's shape and scan all values for NaN/Inf first.
    #[arg(long)]
    pub check: bool,
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    prompt_ids: &'a [u32],
    generated_ids: &'a [u32],
}

/// Text prompts need the tokenizer module (GGUF/HF tokenizers), which lands
/// with the GGUF work; swap this for `lucebox_models::tokenizer` then.
fn tokenize(_loaded: &lucebox_models::LoadedModel, _text: &str) -> anyhow::Result<Vec<u32>> {
    anyhow::bail!(
        "--prompt needs tokenizer support, which is not merged into this build yet; pass token ids with --ids"
    )
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.backend {
        Some(Backend::Gpu) => {
            anyhow::bail!("GPU backend not available in this build yet; use --backend cpu")
        }
        Some(Backend::Cpu) => {}
        None => eprintln!("note: no GPU backend in this build; running the CPU reference (slow)"),
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
    let prompt = match &args.prompt {
        Some(text) => tokenize(&loaded, text)?,
        None => args.ids.clone(),
    };
    let model = Arc::new(ReferenceModel::load(loaded.weights.as_ref()).context("loading weights")?);
    let mut engine = CpuEngine::new(model, loaded.config.max_position_embeddings);
    let request = GenerationRequest {
        prompt: prompt.clone(),
        max_tokens: args.max_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            repetition_penalty: args.repetition_penalty,
            presence_penalty: args.presence_penalty,
            frequency_penalty: args.frequency_penalty,
            seed: args.seed,
        },
        stop_tokens: if args.ignore_eos {
            vec![]
        } else {
            loaded.config.eos_token_ids.clone()
        },
    };
    let stream = args.output == OutputFormat::Text;
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    let outcome = engine.generate(&request, &mut |token| {
        if stream {
            // Without a tokenizer in this build, stream the ids.
            if let Err(e) = write!(stdout, "{token} ").and_then(|_| stdout.flush()) {
                write_error = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = write_error {
        return Err(e).context("writing to stdout");
    }
    match args.output {
        OutputFormat::Json => {
            let json = serde_json::to_string(&JsonOutput {
                prompt_ids: &prompt,
                generated_ids: &outcome.generated,
            })?;
            writeln!(stdout, "{json}")?;
        }
        OutputFormat::Text => writeln!(stdout)?,
    }
    let n = outcome.generated.len();
    eprintln!(
        "{}: prompt {} tokens in {:.2} s ({:.1} tok/s), generated {n} tokens in {:.2} s ({:.2} tok/s), stop: {:?}",
        engine.describe(),
        prompt.len(),
        outcome.prefill_seconds,
        prompt.len() as f64 / outcome.prefill_seconds.max(1e-9),
        outcome.decode_seconds,
        n as f64 / outcome.decode_seconds.max(1e-9),
        outcome.stop
    );
    Ok(())
}
