//! OpenAI-compatible endpoints: `/v1/models`, `/v1/chat/completions`,
//! `/v1/completions`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::AppState;
use super::codec::ChatTurn;
use super::error::{ApiError, ErrorKind, parse_json};
use super::generate::{self, SamplingInput, new_id, unix_now};
use super::sse_response;
use super::worker::{Finish, FinishReason, GenEvent};

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

impl StopField {
    fn into_vec(self) -> Vec<String> {
        match self {
            StopField::One(s) => vec![s],
            StopField::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// The body of both `/v1/chat/completions` and `/v1/completions` (one flat
/// struct, so that type errors name the field; the endpoint checks which of
/// `messages` / `prompt` it needs). Unknown fields (tools, user, ...) are
/// ignored.
#[derive(Debug, Deserialize)]
pub struct CommonParams {
    #[serde(default)]
    pub messages: Option<Vec<ChatMessage>>,
    #[serde(default)]
    pub prompt: Option<PromptField>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Option<StopField>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub repetition_penalty: Option<f64>,
    #[serde(default)]
    pub n: Option<u64>,
    #[serde(default)]
    pub logprobs: Option<Value>,
    #[serde(default)]
    pub echo: Option<bool>,
    #[serde(default)]
    pub best_of: Option<u64>,
    /// Extra chat-template variables (vLLM's extension); `enable_thinking`
    /// is passed on (Qwen templates read it).
    #[serde(default)]
    pub chat_template_kwargs: Option<ChatTemplateKwargs>,
}

#[derive(Debug, Deserialize)]
pub struct ChatTemplateKwargs {
    #[serde(default)]
    pub enable_thinking: Option<bool>,
}

impl CommonParams {
    fn sampling(&self) -> SamplingInput {
        SamplingInput {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repetition_penalty: self.repetition_penalty,
        }
    }

    /// Refuse what the server cannot do rather than silently ignoring it.
    fn check_supported(&self) -> Result<(), ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid("n", "only `n: 1` is supported"));
        }
        match &self.logprobs {
            None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(()),
            Some(_) => Err(ApiError::invalid("logprobs", "logprobs are not supported")),
        }
    }

    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// Flatten OpenAI messages into template turns (text only).
fn chat_turns(messages: Vec<ChatMessage>) -> Result<Vec<ChatTurn>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must not be empty",
        ));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                "tool" | "function" => "tool",
                other => {
                    return Err(ApiError::invalid(
                        &format!("messages[{i}].role"),
                        format!(
                            "unknown role `{other}` (expected system, developer, user, assistant or tool)"
                        ),
                    ));
                }
            };
            let content = match m.content {
                Some(MessageContent::Text(t)) => t,
                Some(MessageContent::Parts(parts)) => {
                    let mut texts = Vec::with_capacity(parts.len());
                    for (j, p) in parts.into_iter().enumerate() {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => texts.push(t),
                            ("text", None) => {
                                return Err(ApiError::invalid(
                                    &format!("messages[{i}].content[{j}].text"),
                                    "a text part needs `text`",
                                ));
                            }
                            (other, _) => {
                                return Err(ApiError::invalid(
                                    &format!("messages[{i}].content[{j}].type"),
                                    format!("content parts of type `{other}` are not supported (text only)"),
                                ));
                            }
                        }
                    }
                    texts.join("\n")
                }
                // Assistant turns that only carried tool calls.
                None if role == "assistant" || role == "tool" => String::new(),
                None => {
                    return Err(ApiError::invalid(
                        &format!("messages[{i}].content"),
                        "`content` is required",
                    ));
                }
            };
            Ok(ChatTurn {
                role: role.to_string(),
                content,
            })
        })
        .collect()
}

fn finish_reason(reason: &FinishReason) -> &'static str {
    match reason {
        FinishReason::StopToken | FinishReason::StopString(_) => "stop",
        FinishReason::Length => "length",
    }
}

fn usage(finish: &Finish) -> Value {
    json!({
        "prompt_tokens": finish.prompt_tokens,
        "completion_tokens": finish.completion_tokens,
        "total_tokens": finish.prompt_tokens + finish.completion_tokens,
    })
}

pub async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_object(&state)]}))
}

pub async fn model(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if id == state.info.id {
        Json(model_object(&state)).into_response()
    } else {
        ApiError::new(
            ErrorKind::NotFound,
            format!(
                "model `{id}` is not served here (this server serves `{}`)",
                state.info.id
            ),
        )
        .with_param("model")
        .into_response()
    }
}

fn model_object(state: &AppState) -> Value {
    json!({
        "id": state.info.id,
        "object": "model",
        "created": state.info.created,
        "owned_by": "lucebox",
        "context_length": state.info.context_length,
        "max_model_len": state.info.context_length,
    })
}

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match chat_inner(state, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn chat_inner(
    state: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut req: CommonParams = parse_json(body)?;
    req.check_supported()?;
    let Some(messages) = req.messages.take() else {
        return Err(ApiError::invalid("messages", "`messages` is required"));
    };
    let (max_tokens, param) = match (req.max_completion_tokens, req.max_tokens) {
        (Some(n), _) => (Some(n), "max_completion_tokens"),
        (None, n) => (n, "max_tokens"),
    };
    let sampling = generate::sampling_params(&req.sampling())?;
    let stops = generate::stop_strings(
        "stop",
        req.stop.take().map(StopField::into_vec).unwrap_or_default(),
    )?;
    let turns = chat_turns(messages)?;
    let enable_thinking = req
        .chat_template_kwargs
        .as_ref()
        .and_then(|k| k.enable_thinking);
    let prompt = generate::chat_prompt(&state, turns, enable_thinking).await?;
    let planned = generate::plan(&state, prompt, max_tokens, param, sampling, stops)?;
    let rx = generate::submit(&state, planned)?;
    let id = new_id("chatcmpl-");
    let created = unix_now();
    let model = state.info.id.clone();
    if req.stream.unwrap_or(false) {
        let include_usage = req.include_usage();
        return Ok(sse_response(move |tx| {
            stream_chat(rx, tx, id, created, model, include_usage)
        }));
    }
    let (text, finish) = generate::collect(rx).await?;
    Ok(Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": system_fingerprint(),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": null,
            "finish_reason": finish_reason(&finish.reason),
        }],
        "usage": usage(&finish),
    }))
    .into_response())
}

fn system_fingerprint() -> String {
    format!("lucebox-{}", env!("CARGO_PKG_VERSION"))
}

type SseSender = mpsc::Sender<Result<Event, Infallible>>;

/// Send one `data:` event; false when the client has gone.
async fn send_data(tx: &SseSender, value: &Value) -> bool {
    tx.send(Ok(Event::default().data(value.to_string())))
        .await
        .is_ok()
}

async fn send_done(tx: &SseSender) {
    let _ = tx.send(Ok(Event::default().data("[DONE]"))).await;
}

async fn stream_chat(
    rx: mpsc::UnboundedReceiver<GenEvent>,
    tx: SseSender,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
) {
    let head = StreamHead {
        object: "chat.completion.chunk",
        id,
        created,
        model,
        include_usage,
    };
    let first = json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null});
    if !send_data(&tx, &head.chunk(first)).await {
        return;
    }
    stream_choices(rx, tx, head, |text, finish| {
        let delta = text.map_or_else(|| json!({}), |t| json!({"content": t}));
        json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
    })
    .await;
}

/// What every chunk of one streamed OpenAI response repeats.
struct StreamHead {
    object: &'static str,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl StreamHead {
    fn chunk(&self, choice: Value) -> Value {
        let mut c = self.base(json!([choice]));
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }
    fn base(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": system_fingerprint(),
            "choices": choices,
        })
    }
}

/// Forwards generation events as SSE chunks: `choice(text, finish)` builds
/// the one element of `choices` (text `None` on the finishing chunk), then
/// the usage chunk when asked for and `[DONE]`.
async fn stream_choices(
    mut rx: mpsc::UnboundedReceiver<GenEvent>,
    tx: SseSender,
    head: StreamHead,
    choice: impl Fn(Option<&str>, Option<&str>) -> Value,
) {
    while let Some(event) = rx.recv().await {
        match event {
            GenEvent::Delta(text) => {
                if !send_data(&tx, &head.chunk(choice(Some(&text), None))).await {
                    return;
                }
            }
            GenEvent::Finished(finish) => {
                let last = choice(None, Some(finish_reason(&finish.reason)));
                if !send_data(&tx, &head.chunk(last)).await {
                    return;
                }
                if head.include_usage {
                    let mut usage_chunk = head.base(json!([]));
                    usage_chunk["usage"] = usage(&finish);
                    if !send_data(&tx, &usage_chunk).await {
                        return;
                    }
                }
                send_done(&tx).await;
                return;
            }
            GenEvent::Failed(msg) => {
                let err = ApiError::internal(format!("generation failed: {msg}"));
                let _ = send_data(&tx, &err.body()).await;
                send_done(&tx).await;
                return;
            }
        }
    }
    let err = ApiError::internal("the generation worker stopped before finishing the request");
    let _ = send_data(&tx, &err.body()).await;
    send_done(&tx).await;
}

/// `prompt`: text or token ids, alone or in a one-element list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    Text(String),
    Tokens(Vec<u32>),
    Texts(Vec<String>),
    TokenLists(Vec<Vec<u32>>),
}

async fn completion_prompt(
    state: &Arc<AppState>,
    prompt: PromptField,
) -> Result<Vec<u32>, ApiError> {
    let one = |n: usize| {
        if n == 1 {
            Ok(())
        } else {
            Err(ApiError::invalid(
                "prompt",
                format!("exactly one prompt per request is supported, got {n}"),
            ))
        }
    };
    let ids = match prompt {
        PromptField::Text(t) => generate::encode_text(state, t).await?,
        PromptField::Tokens(ids) => ids,
        PromptField::Texts(mut v) => {
            one(v.len())?;
            generate::encode_text(state, v.remove(0)).await?
        }
        PromptField::TokenLists(mut v) => {
            one(v.len())?;
            v.remove(0)
        }
    };
    let vocab = state.codec.vocab_size();
    if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::invalid(
            "prompt",
            format!("token id {bad} is outside the vocabulary (size {vocab})"),
        ));
    }
    Ok(ids)
}

pub async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match completions_inner(state, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn completions_inner(
    state: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut req: CommonParams = parse_json(body)?;
    req.check_supported()?;
    let Some(prompt) = req.prompt.take() else {
        return Err(ApiError::invalid("prompt", "`prompt` is required"));
    };
    if req.echo == Some(true) {
        return Err(ApiError::invalid("echo", "`echo` is not supported"));
    }
    if req.best_of.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid(
            "best_of",
            "only `best_of: 1` is supported",
        ));
    }
    let sampling = generate::sampling_params(&req.sampling())?;
    let stops = generate::stop_strings(
        "stop",
        req.stop.take().map(StopField::into_vec).unwrap_or_default(),
    )?;
    let prompt = completion_prompt(&state, prompt).await?;
    // OpenAI's default for the legacy endpoint is 16 tokens.
    let max_tokens = Some(req.max_tokens.unwrap_or(16));
    let planned = generate::plan(&state, prompt, max_tokens, "max_tokens", sampling, stops)?;
    let rx = generate::submit(&state, planned)?;
    let id = new_id("cmpl-");
    let created = unix_now();
    let model = state.info.id.clone();
    if req.stream.unwrap_or(false) {
        let include_usage = req.include_usage();
        return Ok(sse_response(move |tx| {
            stream_completion(rx, tx, id, created, model, include_usage)
        }));
    }
    let (text, finish) = generate::collect(rx).await?;
    Ok(Json(json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": system_fingerprint(),
        "choices": [{
            "index": 0,
            "text": text,
            "logprobs": null,
            "finish_reason": finish_reason(&finish.reason),
        }],
        "usage": usage(&finish),
    }))
    .into_response())
}

async fn stream_completion(
    rx: mpsc::UnboundedReceiver<GenEvent>,
    tx: SseSender,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
) {
    let head = StreamHead {
        object: "text_completion",
        id,
        created,
        model,
        include_usage,
    };
    stream_choices(rx, tx, head, |text, finish| {
        json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish})
    })
    .await;
}
