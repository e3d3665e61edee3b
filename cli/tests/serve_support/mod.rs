//! Helpers shared by the `serve_*` integration tests: start a server on
//! 127.0.0.1:0 with the committed tiny checkpoint, talk HTTP with ureq.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lucebox_cli::cmd::serve::{BackendKind, ModelFiles, load_backend, open_model_files};
use lucebox_cli::serve::{Backend, BackgroundServer, ServeOptions};
use lucebox_models::Engine;
use serde_json::Value;

pub fn tiny_model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/assets/tiny-chat-model")
}

pub fn tiny_files() -> ModelFiles {
    open_model_files(&tiny_model_dir()).unwrap()
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// The server on the tiny checkpoint with the CPU reference engine.
pub fn start_cpu(options: ServeOptions) -> BackgroundServer {
    let backend = load_backend(tiny_files(), BackendKind::Cpu, None).unwrap();
    BackgroundServer::start(backend, options, localhost()).unwrap()
}

/// The server on the tiny checkpoint's tokenizer with a stand-in engine.
pub fn start_with_engine(engine: Box<dyn Engine>, options: ServeOptions) -> BackgroundServer {
    let files = tiny_files();
    let backend = Backend {
        engine,
        codec: std::sync::Arc::new(files.codec),
        model_id: files.name.clone(),
        stop_tokens: files.stop_tokens,
    };
    BackgroundServer::start(backend, options, localhost()).unwrap()
}

/// A client that opens a fresh connection per request. The server closes a
/// connection after some error replies (e.g. 413, or a 404 sent before the
/// request body was read); a pooled connection could then be reused just
/// after that close and fail with "Peer disconnected" (seen once in CI).
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .build()
        .into()
}

fn json_of(status: u16, text: &str) -> (u16, Value) {
    let v = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, v)
}

pub fn get(agent: &ureq::Agent, url: &str) -> (u16, Value) {
    let mut r = agent.get(url).call().unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    json_of(status, &text)
}

pub fn post_raw(agent: &ureq::Agent, url: &str, body: &str) -> (u16, Value) {
    let mut r = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    json_of(status, &text)
}

pub fn post(agent: &ureq::Agent, url: &str, body: &Value) -> (u16, Value) {
    post_raw(agent, url, &body.to_string())
}

/// One server-sent event: its `event:` name (if any) and `data:` payload.
#[derive(Debug, Clone)]
pub struct Sse {
    pub event: Option<String>,
    pub data: String,
}

/// POST and read the whole SSE stream.
pub fn post_sse(agent: &ureq::Agent, url: &str, body: &Value) -> (u16, Vec<Sse>) {
    let r = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap();
    let status = r.status().as_u16();
    assert!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream")),
        "not an event stream: {:?}",
        r.headers()
    );
    let reader = BufReader::new(r.into_body().into_reader());
    let mut events = vec![];
    let mut event = None;
    let mut data = String::new();
    for line in reader.lines() {
        let line = line.unwrap();
        if line.is_empty() {
            if !data.is_empty() {
                events.push(Sse {
                    event: event.take(),
                    data: std::mem::take(&mut data),
                });
            }
            event = None;
        } else if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    (status, events)
}

/// Poll `/health` until `pred` holds (panics after `timeout`).
pub fn wait_health(
    agent: &ureq::Agent,
    base: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let (status, h) = get(agent, &format!("{base}/health"));
        assert_eq!(status, 200);
        if pred(&h) {
            return h;
        }
        assert!(
            start.elapsed() < timeout,
            "health never reached the expected state; last: {h}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn chat_body(content: &str, max_tokens: u64) -> Value {
    serde_json::json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

/// The backend the model tests run on (`--backend` value).
pub const MODEL_BACKEND: &str = "cpu";

/// The server on the tiny checkpoint with the engine the model tests use.
pub fn start_model(options: ServeOptions) -> BackgroundServer {
    let backend = load_backend(tiny_files(), BackendKind::Cpu, None).unwrap();
    BackgroundServer::start(backend, options, localhost()).unwrap()
}
