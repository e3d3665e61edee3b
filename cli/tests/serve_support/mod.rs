//! Helpers shared by the `serve_*` integration tests: start a server on
//! 127.0.0.1:0 with the committed tiny checkpoint, talk HTTP with ureq or,
//! to watch one connection, by hand ([`RawConn`]).
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
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

/// A client that keeps connections alive between requests, as real clients
/// do: the server must keep them usable after its error replies too.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
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

/// One HTTP/1.1 connection driven by hand, to see whether the server keeps
/// it between requests (a pooling client would hide a reconnect).
pub struct RawConn {
    reader: BufReader<TcpStream>,
}

/// A response read off a [`RawConn`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        json_of(self.status, &self.body).1
    }
}

impl RawConn {
    pub fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        // A server that stops answering fails the test instead of hanging it.
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Self {
            reader: BufReader::new(stream),
        }
    }

    /// Write a request. With `body_delay`, the body follows its head after
    /// that pause, as from a client that streams its body: the server sees
    /// the head alone first.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        extra_headers: &[(&str, &str)],
        body: &[u8],
        body_delay: Option<Duration>,
    ) {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\n");
        for (name, value) in extra_headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() {
            head.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream
            .write_all(head.as_bytes())
            .unwrap_or_else(|e| panic!("the server closed the connection: {e}"));
        stream.flush().unwrap();
        if let Some(delay) = body_delay {
            std::thread::sleep(delay);
        }
        stream
            .write_all(body)
            .unwrap_or_else(|e| panic!("the server dropped the connection mid-request: {e}"));
        stream.flush().unwrap();
    }

    /// Read one whole response (the server's replies carry a Content-Length).
    pub fn read_response(&mut self) -> RawResponse {
        let mut status_line = String::new();
        let n = self
            .reader
            .read_line(&mut status_line)
            .unwrap_or_else(|e| panic!("reading the status line: {e}"));
        assert!(
            n > 0,
            "the server closed the connection instead of answering"
        );
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = vec![];
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {line:?}"));
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no content-length in {headers:?}"));
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).unwrap();
        RawResponse {
            status,
            headers,
            body: String::from_utf8(body).unwrap(),
        }
    }
}
