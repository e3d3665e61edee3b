//! `lucebox serve`: OpenAI- and Anthropic-compatible HTTP server (see
//! docs/serve.md and `lucebox_cli::serve`).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use lucebox_models::{Engine, Qwen35Config};

use crate::serve::hf_codec::HfTextCodec;
use crate::serve::scripted::ScriptedEngine;
use crate::serve::{AppState, Backend, ServeOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// The GPU when one is usable, the CPU reference otherwise.
    Auto,
    /// The CPU reference forward (slow; for tests and machines without a GPU).
    Cpu,
    /// The GPU megakernel.
    Gpu,
    /// Deterministic pseudo-random tokens, no model math (HTTP-layer tests).
    #[value(hide = true)]
    Scripted,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory (config.json, model.safetensors, tokenizer.json,
    /// tokenizer_config.json with a chat_template).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// 0 picks a free port (the address is printed on stdout).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
    pub backend: BackendKind,
    /// Model id shown in /v1/models and responses (default: the directory name).
    #[arg(long)]
    pub model_id: Option<String>,
    /// Requests that may wait for the engine; more are refused with 503.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Largest request body in bytes; larger ones are refused with 413.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Cap the context (prompt + reply tokens) below the model's.
    #[arg(long)]
    pub max_context: Option<usize>,
    /// Require this key (`Authorization: Bearer KEY` or `x-api-key: KEY`) on /v1/*.
    #[arg(long, env = "LUCEBOX_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let files = open_model_files(&args.model)?;
    let backend = load_backend(files, args.backend, args.model_id.clone())?;
    let options = ServeOptions {
        queue_capacity: args.queue,
        max_body_bytes: args.max_body_bytes,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        max_context: args.max_context,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let addr = SocketAddr::new(args.host, args.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let state = AppState::start(backend, options).context("starting the generation worker")?;
        eprintln!(
            "lucebox serve: model `{}` on {} (context {} tokens)",
            state.info.id, state.info.engine, state.info.context_length
        );
        // Tests and scripts read this line to learn the port.
        let mut stdout = std::io::stdout();
        writeln!(stdout, "lucebox serve: listening on http://{local}")?;
        stdout.flush()?;
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        crate::serve::serve(listener, state, shutdown)
            .await
            .context("serving HTTP")
    })
}

/// What the server reads from a model directory besides the weights.
pub struct ModelFiles {
    pub dir: PathBuf,
    /// The directory name (default model id).
    pub name: String,
    pub config: Qwen35Config,
    pub codec: HfTextCodec,
    /// EOS ids from config.json, generation_config.json and the tokenizer.
    pub stop_tokens: Vec<u32>,
}

/// Read config, tokenizer and chat template of the model at `path`.
pub fn open_model_files(path: &Path) -> anyhow::Result<ModelFiles> {
    let dir = model_dir(path)?;
    let codec =
        HfTextCodec::from_dir(&dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let config_path = dir.join("config.json");
    let config_text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model")
        .to_string();
    let config = Qwen35Config::from_hf_json(&config_text, &name)?;
    let stop_tokens = stop_tokens(&dir, &config, &codec);
    Ok(ModelFiles {
        dir,
        name,
        config,
        codec,
        stop_tokens,
    })
}

/// The engine of `kind` for `files`, wrapped for the server.
pub fn load_backend(
    files: ModelFiles,
    kind: BackendKind,
    model_id: Option<String>,
) -> anyhow::Result<Backend> {
    let engine: Box<dyn Engine> = match kind {
        BackendKind::Scripted => Box::new(ScriptedEngine::new(
            codec_vocab(&files.codec),
            files.config.max_position_embeddings,
        )),
        BackendKind::Cpu | BackendKind::Gpu | BackendKind::Auto => {
            bail!("the {kind:?} backend is not wired into `lucebox serve` yet")
        }
    };
    Ok(Backend {
        engine,
        codec: Arc::new(files.codec),
        model_id: model_id.unwrap_or(files.name),
        stop_tokens: files.stop_tokens,
    })
}

impl ModelFiles {
    /// Vocabulary size as a token id bound.
    pub fn codec_vocab(&self) -> u32 {
        codec_vocab(&self.codec)
    }
}

fn codec_vocab(codec: &HfTextCodec) -> u32 {
    use crate::serve::codec::TextCodec;
    u32::try_from(codec.vocab_size()).unwrap_or(u32::MAX)
}

fn model_dir(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_dir() {
        Ok(path.to_path_buf())
    } else if path.file_name().is_some_and(|n| n == "config.json") {
        Ok(path.parent().unwrap_or(Path::new(".")).to_path_buf())
    } else if path.exists() {
        bail!(
            "{}: expected a model directory (config.json, safetensors, tokenizer files)",
            path.display()
        )
    } else {
        bail!("{}: no such directory", path.display())
    }
}

/// EOS ids from config.json, generation_config.json and the tokenizer's
/// `eos_token`, without duplicates.
fn stop_tokens(dir: &Path, config: &Qwen35Config, codec: &HfTextCodec) -> Vec<u32> {
    let mut ids = config.eos_token_ids.clone();
    if let Ok(text) = std::fs::read_to_string(dir.join("generation_config.json"))
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
    {
        match v.get("eos_token_id") {
            Some(serde_json::Value::Number(n)) => ids.extend(n.as_u64().map(|i| i as u32)),
            Some(serde_json::Value::Array(a)) => {
                ids.extend(a.iter().filter_map(|x| x.as_u64()).map(|i| i as u32))
            }
            _ => {}
        }
    }
    ids.extend(codec.token_id(codec.eos_token()));
    let mut seen = std::collections::HashSet::new();
    ids.retain(|i| seen.insert(*i));
    ids
}
