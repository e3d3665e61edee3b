//! What the OpenAI and Anthropic handlers share: checking sampling parameters,
//! fitting a prompt and `max_tokens` into the context, queueing the job and
//! collecting its text.

use std::sync::Arc;

use lucebox_models::{GenerationRequest, SamplingParams};
use tokio::sync::mpsc;

use super::AppState;
use super::codec::ChatTurn;
use super::error::{ApiError, ErrorKind};
use super::worker::{Finish, GenEvent, GenerationJob, SubmitError};

/// Most stop strings one request may give.
pub const MAX_STOP_STRINGS: usize = 16;
/// Longest stop string, in bytes.
pub const MAX_STOP_LEN: usize = 1024;

/// Sampling fields as they arrive (all optional), before checking.
#[derive(Debug, Default, Clone)]
pub struct SamplingInput {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub repetition_penalty: Option<f64>,
}

fn in_range(param: &str, v: Option<f64>, lo: f64, hi: f64, default: f64) -> Result<f64, ApiError> {
    match v {
        None => Ok(default),
        Some(x) if x.is_finite() && x >= lo && x <= hi => Ok(x),
        Some(x) => Err(ApiError::invalid(
            param,
            format!("`{param}` must be between {lo} and {hi}, got {x}"),
        )),
    }
}

/// Check ranges and fill defaults (OpenAI's: temperature 1, top_p 1, no
/// penalties; a random seed when none is given).
pub fn sampling_params(input: &SamplingInput) -> Result<SamplingParams, ApiError> {
    let mut temperature = in_range("temperature", input.temperature, 0.0, 2.0, 1.0)?;
    let top_p = in_range("top_p", input.top_p, 0.0, 1.0, 1.0)?;
    if top_p == 0.0 {
        // Only the most likely token survives: greedy.
        temperature = 0.0;
    }
    let top_k = match input.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k > 0 => usize::try_from(k).unwrap_or(usize::MAX),
        Some(k) => {
            return Err(ApiError::invalid(
                "top_k",
                format!("`top_k` must be positive (or 0 / -1 for no limit), got {k}"),
            ));
        }
    };
    let presence_penalty = in_range("presence_penalty", input.presence_penalty, -2.0, 2.0, 0.0)?;
    let frequency_penalty = in_range("frequency_penalty", input.frequency_penalty, -2.0, 2.0, 0.0)?;
    let repetition_penalty = in_range(
        "repetition_penalty",
        input.repetition_penalty,
        0.01,
        10.0,
        1.0,
    )?;
    let seed = match input.seed {
        Some(s) => s as u64,
        None => rand::random(),
    };
    Ok(SamplingParams {
        temperature: temperature as f32,
        top_k,
        top_p: top_p as f32,
        repetition_penalty: repetition_penalty as f32,
        presence_penalty: presence_penalty as f32,
        frequency_penalty: frequency_penalty as f32,
        seed,
    })
}

/// Stop strings: empty ones are dropped, too many or too long ones refused.
pub fn stop_strings(param: &str, stops: Vec<String>) -> Result<Vec<String>, ApiError> {
    let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
    if stops.len() > MAX_STOP_STRINGS {
        return Err(ApiError::invalid(
            param,
            format!(
                "at most {MAX_STOP_STRINGS} stop sequences are allowed, got {}",
                stops.len()
            ),
        ));
    }
    if let Some(long) = stops.iter().find(|s| s.len() > MAX_STOP_LEN) {
        return Err(ApiError::invalid(
            param,
            format!(
                "stop sequences are limited to {MAX_STOP_LEN} bytes, got one of {}",
                long.len()
            ),
        ));
    }
    Ok(stops)
}

/// Render chat turns with the model's chat template and encode the prompt,
/// off the async executor (a long prompt takes a while to tokenize).
pub async fn chat_prompt(
    state: &Arc<AppState>,
    turns: Vec<ChatTurn>,
    enable_thinking: Option<bool>,
) -> Result<Vec<u32>, ApiError> {
    let state = state.clone();
    blocking(move || chat_prompt_blocking(&state, &turns, enable_thinking)).await
}

/// Encode raw text (no template), off the async executor.
pub async fn encode_text(state: &Arc<AppState>, text: String) -> Result<Vec<u32>, ApiError> {
    let state = state.clone();
    blocking(move || {
        state
            .codec
            .encode(&text)
            .map_err(|e| ApiError::internal(format!("could not tokenize the prompt: {e}")))
    })
    .await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))?
}

fn chat_prompt_blocking(
    state: &AppState,
    turns: &[ChatTurn],
    enable_thinking: Option<bool>,
) -> Result<Vec<u32>, ApiError> {
    let text = state
        .codec
        .render_chat(turns, enable_thinking)
        .map_err(|e| {
            // Templates reject some conversations (e.g. roles out of order) with
            // raise_exception: that is the client's mistake.
            ApiError::new(
                ErrorKind::InvalidRequest,
                format!("could not apply the chat template: {e}"),
            )
            .with_param("messages")
        })?;
    state
        .codec
        .encode(&text)
        .map_err(|e| ApiError::internal(format!("could not tokenize the prompt: {e}")))
}

/// A job ready for the queue.
pub struct Planned {
    pub request: GenerationRequest,
    pub stop_strings: Vec<String>,
}

/// Fit the prompt and the requested `max_tokens` into the context. A prompt
/// that leaves no room is refused (400); `max_tokens` beyond the room left is
/// clamped to it; no `max_tokens` means "up to the end of the context".
pub fn plan(
    state: &AppState,
    prompt: Vec<u32>,
    max_tokens: Option<u64>,
    max_tokens_param: &str,
    sampling: SamplingParams,
    stop_strings: Vec<String>,
) -> Result<Planned, ApiError> {
    let context = state.info.context_length;
    if prompt.is_empty() {
        return Err(ApiError::invalid("prompt", "the prompt is empty"));
    }
    if prompt.len() >= context {
        return Err(ApiError::new(
            ErrorKind::ContextLengthExceeded,
            format!(
                "the prompt is {} tokens long, but the model's context is {context} tokens \
                 (at least one must be left for the reply)",
                prompt.len()
            ),
        )
        .with_param("messages"));
    }
    let room = context - prompt.len();
    let max_tokens = match max_tokens {
        None => room,
        Some(0) => {
            return Err(ApiError::invalid(
                max_tokens_param,
                format!("`{max_tokens_param}` must be at least 1"),
            ));
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX).min(room),
    };
    Ok(Planned {
        request: GenerationRequest {
            prompt,
            max_tokens,
            sampling,
            stop_tokens: state.info.stop_tokens.clone(),
        },
        stop_strings,
    })
}

/// Queue the job; the receiver yields its events. Dropping the receiver
/// cancels the job.
pub fn submit(
    state: &AppState,
    planned: Planned,
) -> Result<mpsc::UnboundedReceiver<GenEvent>, ApiError> {
    let (tx, rx) = mpsc::unbounded_channel();
    state
        .worker
        .submit(GenerationJob {
            request: planned.request,
            stop_strings: planned.stop_strings,
            events: tx,
        })
        .map_err(|e| match e {
            SubmitError::QueueFull { capacity } => ApiError::new(
                ErrorKind::Overloaded,
                format!("the server is busy: {capacity} requests are already waiting; retry later"),
            ),
            SubmitError::WorkerGone => ApiError::internal("the generation worker has stopped"),
        })?;
    Ok(rx)
}

/// Wait for the whole text of a job.
pub async fn collect(
    mut rx: mpsc::UnboundedReceiver<GenEvent>,
) -> Result<(String, Finish), ApiError> {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            GenEvent::Delta(t) => text.push_str(&t),
            GenEvent::Finished(finish) => return Ok((text, finish)),
            GenEvent::Failed(msg) => {
                return Err(ApiError::internal(format!("generation failed: {msg}")));
            }
        }
    }
    Err(ApiError::internal(
        "the generation worker stopped before finishing the request",
    ))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A random request id with the given prefix (`chatcmpl-`, `msg_`, ...).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{:024x}", rand::random::<u128>() >> 32)
}
