//! Anthropic-compatible endpoints: `POST /v1/messages` (plain and streaming)
//! and `POST /v1/messages/count_tokens`. Errors use Anthropic's shape.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::AppState;
use super::codec::ChatTurn;
use super::error::{ApiError, Flavour, parse_json};
use super::generate::{self, SamplingInput, new_id};
use super::sse_response;
use super::worker::{Finish, FinishReason, GenEvent};

#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub system: Option<Content>,
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<i64>,
    /// `{"type": "enabled" | "disabled", ...}`: sets the template's
    /// `enable_thinking` (Qwen templates read it).
    #[serde(default)]
    pub thinking: Option<Thinking>,
}

#[derive(Debug, Deserialize)]
pub struct Thinking {
    #[serde(rename = "type")]
    pub kind: String,
}

impl Thinking {
    fn enabled(&self) -> Option<bool> {
        match self.kind.as_str() {
            "enabled" | "adaptive" => Some(true),
            "disabled" => Some(false),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: Content,
}

/// A string, or a list of content blocks.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Deserialize)]
pub struct Block {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    /// `tool_result` blocks: a string or a list of blocks.
    #[serde(default)]
    pub content: Option<Value>,
    /// `tool_use` blocks.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub input: Option<Value>,
}

/// Text of a content value; tool blocks are written out as text, other
/// non-text blocks (images, documents) are refused.
fn content_text(content: Content, param: &str) -> Result<String, ApiError> {
    let blocks = match content {
        Content::Text(t) => return Ok(t),
        Content::Blocks(b) => b,
    };
    let mut texts = Vec::with_capacity(blocks.len());
    for (j, b) in blocks.into_iter().enumerate() {
        match b.kind.as_str() {
            "text" => texts.push(b.text.ok_or_else(|| {
                ApiError::invalid(&format!("{param}[{j}].text"), "a text block needs `text`")
            })?),
            "tool_result" => texts.push(match b.content {
                Some(Value::String(s)) => s,
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => String::new(),
            }),
            "tool_use" => texts.push(
                json!({"name": b.name, "arguments": b.input.unwrap_or(Value::Null)}).to_string(),
            ),
            // Reasoning blocks from earlier turns carry no prompt text here.
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(ApiError::invalid(
                    &format!("{param}[{j}].type"),
                    format!("content blocks of type `{other}` are not supported (text only)"),
                ));
            }
        }
    }
    Ok(texts.join("\n"))
}

fn turns_of(system: Option<Content>, messages: Vec<Message>) -> Result<Vec<ChatTurn>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must not be empty",
        ));
    }
    let mut turns = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = system {
        let text = content_text(system, "system")?;
        if !text.is_empty() {
            turns.push(ChatTurn {
                role: "system".into(),
                content: text,
            });
        }
    }
    for (i, m) in messages.into_iter().enumerate() {
        if m.role != "user" && m.role != "assistant" {
            return Err(ApiError::invalid(
                &format!("messages[{i}].role"),
                format!("unknown role `{}` (expected user or assistant)", m.role),
            ));
        }
        let content = content_text(m.content, &format!("messages[{i}].content"))?;
        turns.push(ChatTurn {
            role: m.role,
            content,
        });
    }
    Ok(turns)
}

fn stop_reason(reason: &FinishReason) -> (&'static str, Value) {
    match reason {
        FinishReason::StopToken => ("end_turn", Value::Null),
        FinishReason::StopString(s) => ("stop_sequence", Value::String(s.clone())),
        FinishReason::Length => ("max_tokens", Value::Null),
    }
}

pub async fn messages(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match messages_inner(state, body).await {
        Ok(r) => r,
        Err(e) => e.flavour(Flavour::Anthropic).into_response(),
    }
}

async fn messages_inner(
    state: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: MessagesRequest = parse_json(body)?;
    let Some(max_tokens) = req.max_tokens else {
        return Err(ApiError::invalid("max_tokens", "`max_tokens` is required"));
    };
    let sampling = generate::sampling_params(&SamplingInput {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        ..SamplingInput::default()
    })?;
    let stops = generate::stop_strings("stop_sequences", req.stop_sequences.unwrap_or_default())?;
    let enable_thinking = req.thinking.as_ref().and_then(Thinking::enabled);
    let turns = turns_of(req.system, req.messages)?;
    let prompt = generate::chat_prompt(&state, turns, enable_thinking).await?;
    let planned = generate::plan(
        &state,
        prompt,
        Some(max_tokens),
        "max_tokens",
        sampling,
        stops,
    )?;
    let prompt_tokens = planned.request.prompt.len();
    let rx = generate::submit(&state, planned)?;
    let id = new_id("msg_");
    let model = state.info.id.clone();
    if req.stream.unwrap_or(false) {
        return Ok(sse_response(move |tx| {
            stream_message(rx, tx, id, model, prompt_tokens)
        }));
    }
    let (text, finish) = generate::collect(rx).await?;
    let (reason, stop_sequence) = stop_reason(&finish.reason);
    Ok(Json(json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": reason,
        "stop_sequence": stop_sequence,
        "usage": usage(&finish),
    }))
    .into_response())
}

fn usage(finish: &Finish) -> Value {
    json!({"input_tokens": finish.prompt_tokens, "output_tokens": finish.completion_tokens})
}

type SseSender = mpsc::Sender<Result<Event, Infallible>>;

async fn send_event(tx: &SseSender, name: &str, value: Value) -> bool {
    tx.send(Ok(Event::default().event(name).data(value.to_string())))
        .await
        .is_ok()
}

async fn stream_message(
    mut rx: mpsc::UnboundedReceiver<GenEvent>,
    tx: SseSender,
    id: String,
    model: String,
    prompt_tokens: usize,
) {
    let start = json!({
        "type": "message_start",
        "message": {
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": 0},
        },
    });
    if !send_event(&tx, "message_start", start).await
        || !send_event(
            &tx,
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        )
        .await
    {
        return;
    }
    while let Some(event) = rx.recv().await {
        match event {
            GenEvent::Delta(text) => {
                let delta = json!({
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                });
                if !send_event(&tx, "content_block_delta", delta).await {
                    return;
                }
            }
            GenEvent::Finished(finish) => {
                let (reason, stop_sequence) = stop_reason(&finish.reason);
                let _ = send_event(
                    &tx,
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 0}),
                )
                .await
                    && send_event(
                        &tx,
                        "message_delta",
                        json!({
                            "type": "message_delta",
                            "delta": {"stop_reason": reason, "stop_sequence": stop_sequence},
                            "usage": {"output_tokens": finish.completion_tokens},
                        }),
                    )
                    .await
                    && send_event(&tx, "message_stop", json!({"type": "message_stop"})).await;
                return;
            }
            GenEvent::Failed(msg) => {
                let err = ApiError::internal(format!("generation failed: {msg}"))
                    .flavour(Flavour::Anthropic);
                let _ = send_event(&tx, "error", err.body()).await;
                return;
            }
        }
    }
    let err = ApiError::internal("the generation worker stopped before finishing the request")
        .flavour(Flavour::Anthropic);
    let _ = send_event(&tx, "error", err.body()).await;
}

#[derive(Debug, Deserialize)]
pub struct CountTokensRequest {
    pub messages: Vec<Message>,
    #[serde(default)]
    pub system: Option<Content>,
}

pub async fn count_tokens(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let req: CountTokensRequest = parse_json(body)?;
        let turns = turns_of(req.system, req.messages)?;
        let prompt = generate::chat_prompt(&state, turns, None).await?;
        Ok::<_, ApiError>(Json(json!({"input_tokens": prompt.len()})).into_response())
    }
    .await;
    result.unwrap_or_else(|e| e.flavour(Flavour::Anthropic).into_response())
}
