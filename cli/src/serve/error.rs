//! Error responses in the two wire formats the server speaks, and the JSON
//! body parser that turns every client mistake (bad JSON, wrong types,
//! oversized bodies) into a 4xx instead of axum's plain-text rejections.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

/// Which API family an error is reported to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `{"error": {"message", "type", "param", "code"}}`
    OpenAi,
    /// `{"type": "error", "error": {"type", "message"}}`
    Anthropic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    ContextLengthExceeded,
    NotFound,
    MethodNotAllowed,
    RequestTooLarge,
    Unauthorized,
    Overloaded,
    Internal,
}

impl ErrorKind {
    fn status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::ContextLengthExceeded => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
    /// (`type`, `code`) of an OpenAI error object.
    fn openai(self) -> (&'static str, Option<&'static str>) {
        match self {
            ErrorKind::InvalidRequest => ("invalid_request_error", None),
            ErrorKind::ContextLengthExceeded => {
                ("invalid_request_error", Some("context_length_exceeded"))
            }
            ErrorKind::NotFound => ("invalid_request_error", Some("not_found")),
            ErrorKind::MethodNotAllowed => ("invalid_request_error", Some("method_not_allowed")),
            ErrorKind::RequestTooLarge => ("invalid_request_error", Some("request_too_large")),
            ErrorKind::Unauthorized => ("authentication_error", Some("invalid_api_key")),
            ErrorKind::Overloaded => ("server_error", Some("server_overloaded")),
            ErrorKind::Internal => ("server_error", None),
        }
    }
    /// `error.type` of an Anthropic error object.
    fn anthropic(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest
            | ErrorKind::ContextLengthExceeded
            | ErrorKind::MethodNotAllowed => "invalid_request_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::Unauthorized => "authentication_error",
            ErrorKind::Overloaded => "overloaded_error",
            ErrorKind::Internal => "api_error",
        }
    }
}

/// An error answered to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    pub flavour: Flavour,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            param: None,
            flavour: Flavour::OpenAi,
        }
    }
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message).with_param(param)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }
    pub fn flavour(mut self, flavour: Flavour) -> Self {
        self.flavour = flavour;
        self
    }
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }
    /// The JSON error object (also sent as an SSE event when a stream fails).
    pub fn body(&self) -> serde_json::Value {
        match self.flavour {
            Flavour::OpenAi => {
                let (ty, code) = self.kind.openai();
                json!({"error": {
                    "message": self.message,
                    "type": ty,
                    "param": self.param,
                    "code": code,
                }})
            }
            Flavour::Anthropic => json!({
                "type": "error",
                "error": {"type": self.kind.anthropic(), "message": self.message},
            }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.kind == ErrorKind::Internal {
            tracing::error!("{}", self.message);
        } else {
            tracing::debug!(status = %self.status(), "{}", self.message);
        }
        (self.status(), Json(self.body())).into_response()
    }
}

/// Parse a request body as `T`, naming the offending field on type errors.
/// Takes the body extractor's result so that a body over the size limit
/// becomes a 413 in our error format.
pub fn parse_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorKind::RequestTooLarge,
                "request body is larger than the server's limit (see `--max-body-bytes`)",
            )
        } else {
            ApiError::new(
                ErrorKind::InvalidRequest,
                format!("could not read the request body: {}", rejection.body_text()),
            )
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            ErrorKind::InvalidRequest,
            "request body is empty; expected a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data if path != "." => {
                ApiError::invalid(&path, format!("invalid value for `{path}`: {inner}"))
            }
            serde_json::error::Category::Data => ApiError::new(
                ErrorKind::InvalidRequest,
                format!("invalid request: {inner}"),
            ),
            _ => ApiError::new(
                ErrorKind::InvalidRequest,
                format!("request body is not valid JSON: {inner}"),
            ),
        }
    })?;
    de.end().map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidRequest,
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    Ok(value)
}
