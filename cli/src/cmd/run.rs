//! `lucebox run`: generate from token ids or a text prompt.
//!
//! Contract: with `--output json`, stdout holds exactly
//! `{"prompt_ids": [...], "generated_ids": [...]}`. With `--output text`
//! (default) generated text (ids when the model has no tokenizer) streams to
//! stdout and the speed is reported on stderr.

use std::io::Write;
use std::ops::ControlFlow;

use anyhow::Context;
use lucebox_models::{GenerationRequest, SamplingParams};
use serde::Serialize;

use crate::backend::{EngineChoice, open_engine};

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
    /// `auto`: the GPU decode megakernel when a GPU is usable, else the CPU reference.
    #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
    pub backend: EngineChoice,
    /// Check every tensor's shape and scan all values for NaN/Inf first.
    #[arg(long)]
    pub check: bool,
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    prompt_ids: &'a [u32],
    generated_ids: &'a [u32],
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let loaded = lucebox_models::load::open(&args.model)
        .with_context(|| format!("opening model `{}`", args.model))?;
    if args.check {
        let report = lucebox_models::validate_all(loaded.weights.as_ref(), true)?;
        eprintln!(
            "check: {} tensors, {} values, shapes match and all values are finite",
            report.tensors, report.elements
        );
    }
    // The tokenizer is needed for a text prompt, and used (when the model
    // has one) to stream text instead of ids.
    let tokenizer = match (&args.prompt, loaded.tokenizer()) {
        (_, Ok(t)) => Some(t),
        (Some(_), Err(e)) => return Err(e).context("--prompt needs the model's tokenizer"),
        (None, Err(_)) => None,
    };
    let prompt = match (&args.prompt, &tokenizer) {
        (Some(text), Some(t)) => t.encode(text, true)?,
        _ => args.ids.clone(),
    };
    if prompt.is_empty() {
        anyhow::bail!("the prompt is empty");
    }
    let mut engine = open_engine(&loaded, args.backend, "lucebox run")?;
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
    let mut decoder = tokenizer.as_ref().map(|t| t.stream(true));
    let mut failure: Option<anyhow::Error> = None;
    let outcome = engine.generate(&request, &mut |token| {
        if !stream {
            return ControlFlow::Continue(());
        }
        // Text when the model has a tokenizer, else the ids.
        let piece = match decoder.as_mut().map(|d| d.push(token)) {
            Some(Ok(Some(text))) => text,
            Some(Ok(None)) => return ControlFlow::Continue(()),
            Some(Err(e)) => {
                failure = Some(e.into());
                return ControlFlow::Break(());
            }
            None => format!("{token} "),
        };
        if let Err(e) = write!(stdout, "{piece}").and_then(|_| stdout.flush()) {
            failure = Some(anyhow::Error::new(e).context("writing to stdout"));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if stream && let Some(rest) = decoder.map(|d| d.finish()).transpose()?.flatten() {
        write!(stdout, "{rest}")?;
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
