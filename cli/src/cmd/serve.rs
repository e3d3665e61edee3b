//! `lucebox serve`: OpenAI- and Anthropic-compatible HTTP server (see
//! docs/serve.md and `lucebox_cli::serve`).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use lucebox_models::{Engine, LoadedModel};

use crate::backend::{EngineChoice, open_engine};

use crate::serve::codec::TextCodec;
use crate::serve::model_codec::ModelCodec;
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
    /// Model: an HF directory (config.json, *.safetensors, tokenizer.json,
    /// tokenizer_config.json with a chat_template), a .gguf file, or an HF repo id.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// 0 picks a free port (the address is printed on stdout).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
    pub backend: BackendKind,
    /// Model id shown in /v1/models and responses (default: the directory or file name).
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
        // Ctrl-C: stop accepting and let running requests finish; a second
        // Ctrl-C exits at once.
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("lucebox serve: shutting down (Ctrl-C again to exit now)");
            tokio::spawn(async {
                let _ = tokio::signal::ctrl_c().await;
                std::process::exit(130);
            });
        };
        crate::serve::serve(listener, state, shutdown)
            .await
            .context("serving HTTP")
    })
}

/// A model opened for serving: weights (memory-mapped), tokenizer and chat
/// template.
pub struct ModelFiles {
    pub model: LoadedModel,
    pub codec: ModelCodec,
    /// Default model id: the directory or file name.
    pub name: String,
    /// EOS ids from the config (and generation_config.json / the tokenizer's
    /// `eos_token` in an HF directory).
    pub stop_tokens: Vec<u32>,
}

/// Open the model at `path` (HF directory, `.gguf` file or HF repo id).
pub fn open_model_files(path: &Path) -> anyhow::Result<ModelFiles> {
    let spec = path
        .to_str()
        .with_context(|| format!("{}: the path is not UTF-8", path.display()))?;
    let model = lucebox_models::load::open(spec)?;
    let codec = ModelCodec::for_model(&model.source_path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", model.source_path.display()))?;
    if !codec.has_own_template {
        tracing::warn!(
            "{} has no chat template; using lucebox's built-in ChatML",
            model.source_path.display()
        );
    }
    let name = model
        .source_path
        .file_stem()
        .and_then(|n| n.to_str())
        .unwrap_or("model")
        .to_string();
    let stop_tokens = stop_tokens(&model, &codec);
    Ok(ModelFiles {
        model,
        codec,
        name,
        stop_tokens,
    })
}

impl ModelFiles {
    /// Vocabulary size as a token id bound.
    pub fn codec_vocab(&self) -> u32 {
        u32::try_from(self.codec.vocab_size()).unwrap_or(u32::MAX)
    }
}

/// The engine of `kind` for `files`, wrapped for the server.
pub fn load_backend(
    files: ModelFiles,
    kind: BackendKind,
    model_id: Option<String>,
) -> anyhow::Result<Backend> {
    let engine: Box<dyn Engine> = match kind {
        BackendKind::Scripted => Box::new(ScriptedEngine::new(
            files.codec_vocab(),
            files.model.config.max_position_embeddings,
        )),
        BackendKind::Cpu => open_engine(&files.model, EngineChoice::Cpu, "lucebox serve")?,
        BackendKind::Gpu => open_engine(&files.model, EngineChoice::Gpu, "lucebox serve")?,
        BackendKind::Auto => open_engine(&files.model, EngineChoice::Auto, "lucebox serve")?,
    };
    Ok(Backend {
        engine,
        codec: Arc::new(files.codec),
        model_id: model_id.unwrap_or(files.name),
        stop_tokens: files.stop_tokens,
    })
}

/// EOS ids: the config's, then (HF directories) generation_config.json's and
/// the id of tokenizer_config.json's `eos_token`, without duplicates.
fn stop_tokens(model: &LoadedModel, codec: &ModelCodec) -> Vec<u32> {
    let mut ids = model.config.eos_token_ids.clone();
    let dir = &model.source_path;
    let read_json = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    };
    if dir.is_dir() {
        if let Some(v) = read_json("generation_config.json") {
            match v.get("eos_token_id") {
                Some(serde_json::Value::Number(n)) => ids.extend(n.as_u64().map(|i| i as u32)),
                Some(serde_json::Value::Array(a)) => {
                    ids.extend(a.iter().filter_map(|x| x.as_u64()).map(|i| i as u32))
                }
                _ => {}
            }
        }
        if let Some(v) = read_json("tokenizer_config.json") {
            let eos = match v.get("eos_token") {
                Some(serde_json::Value::String(s)) => Some(s.as_str()),
                Some(o) => o.get("content").and_then(|c| c.as_str()),
                None => None,
            };
            ids.extend(eos.and_then(|t| codec.tokenizer().token_id(t)));
        }
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|i| seen.insert(*i));
    ids
}
