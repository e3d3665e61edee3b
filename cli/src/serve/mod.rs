//! `lucebox serve`: an OpenAI- and Anthropic-compatible HTTP server.
//!
//! One engine serves every client: a single worker thread owns it and runs
//! requests in arrival order ([`worker`]); HTTP handlers (axum, tokio) only
//! parse, validate, tokenize, queue and stream. `/health` reads atomic
//! counters and never waits for the engine.

pub mod anthropic;
pub mod codec;
mod drain;
pub mod error;
pub mod generate;
pub mod model_codec;
pub mod openai;
pub mod scripted;
pub mod text;
pub mod worker;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lucebox_models::Engine;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use codec::TextCodec;
use error::{ApiError, ErrorKind, Flavour};
use worker::WorkerHandle;

/// What clients are told about the served model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The id in `/v1/models` and in responses. Requests may name any model:
    /// the one loaded answers.
    pub id: String,
    /// Prompt + reply tokens one request may use.
    pub context_length: usize,
    /// Tokens that end a reply (EOS and friends).
    pub stop_tokens: Vec<u32>,
    /// Unix time the server started.
    pub created: u64,
    /// The engine's own description, for `/health`.
    pub engine: String,
}

/// Server limits and switches.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Requests that may wait for the engine; more get 503.
    pub queue_capacity: usize,
    /// Largest request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// When set, `/v1/*` needs `Authorization: Bearer KEY` or `x-api-key: KEY`.
    pub api_key: Option<String>,
    /// Caps the context below the engine's (`None`: the engine's).
    pub max_context: Option<usize>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 64,
            max_body_bytes: 8 << 20,
            api_key: None,
            max_context: None,
        }
    }
}

/// An engine plus what the server needs to talk text to it.
pub struct Backend {
    pub engine: Box<dyn Engine>,
    pub codec: Arc<dyn TextCodec>,
    pub model_id: String,
    pub stop_tokens: Vec<u32>,
}

pub struct AppState {
    pub info: ModelInfo,
    pub codec: Arc<dyn TextCodec>,
    pub worker: WorkerHandle,
    pub options: ServeOptions,
}

impl AppState {
    /// Start the generation worker for `backend`.
    pub fn start(backend: Backend, options: ServeOptions) -> std::io::Result<Arc<Self>> {
        let engine_context = backend.engine.max_context();
        let context_length = options
            .max_context
            .map_or(engine_context, |c| c.min(engine_context));
        let info = ModelInfo {
            id: backend.model_id,
            context_length,
            stop_tokens: backend.stop_tokens,
            created: generate::unix_now(),
            engine: backend.engine.describe(),
        };
        let worker = WorkerHandle::spawn(
            backend.engine,
            backend.codec.clone(),
            options.queue_capacity,
        )?;
        Ok(Arc::new(Self {
            info,
            codec: backend.codec,
            worker,
            options,
        }))
    }
}

/// Every route, with the body limit, auth and JSON error fallbacks. The
/// outermost layer reads request bodies that replies left unread, so that
/// connections stay usable after a 404, 405 or 401 (see `drain.rs`).
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{id}", get(openai::model))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    Router::new()
        .route("/health", get(health))
        .merge(v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.options.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            drain::drain_unread_body,
        ))
        .with_state(state)
}

fn flavour_of(uri: &Uri) -> Flavour {
    if uri.path().starts_with("/v1/messages") {
        Flavour::Anthropic
    } else {
        Flavour::OpenAi
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "model": state.info.id,
        "engine": state.info.engine,
        "context_length": state.info.context_length,
        "queue_capacity": state.options.queue_capacity,
        "requests": state.worker.stats(),
    }))
}

async fn not_found(uri: Uri) -> Response {
    ApiError::new(ErrorKind::NotFound, format!("no route for {}", uri.path()))
        .flavour(flavour_of(&uri))
        .into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
    .flavour(flavour_of(&uri))
    .into_response()
}

async fn require_api_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let Some(key) = state.options.api_key.as_deref() else {
        return next.run(request).await;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let x_api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    if bearer == Some(key) || x_api_key == Some(key) {
        next.run(request).await
    } else {
        ApiError::new(
            ErrorKind::Unauthorized,
            "missing or wrong API key (send `Authorization: Bearer KEY` or `x-api-key: KEY`)",
        )
        .flavour(flavour_of(request.uri()))
        .into_response()
    }
}

/// An SSE response fed by `produce`, which runs as its own task and sends
/// events until done. When the client goes away the stream is dropped, the
/// producer's sends fail, and it returns (dropping the job's receiver, which
/// stops the generation).
pub fn sse_response<F, Fut>(produce: F) -> Response
where
    F: FnOnce(mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(produce(tx));
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response()
}

/// Serve `state` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A server running on its own thread and runtime (tests, embedding); it
/// stops when dropped.
pub struct BackgroundServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundServer {
    /// Bind `addr` (port 0 picks a free port) and serve `backend` there.
    pub fn start(
        backend: Backend,
        options: ServeOptions,
        addr: SocketAddr,
    ) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = AppState::start(backend, options)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (tx, rx) = oneshot::channel::<()>();
        let serve_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("lucebox-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => {
                            let stop = async {
                                let _ = rx.await;
                            };
                            if let Err(e) = serve(listener, serve_state, stop).await {
                                tracing::error!("server stopped: {e}");
                            }
                        }
                        Err(e) => tracing::error!("cannot use the listener: {e}"),
                    }
                });
            })?;
        Ok(Self {
            addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
