//! Text <-> token ids for the server: prompt encoding, chat-template
//! rendering and decoding. A trait so that the HTTP layer does not depend on
//! one tokenizer implementation (and tests can swap it).

use std::fmt;

/// One chat turn after the wire format has been flattened to text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChatTurn {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

pub trait TextCodec: Send + Sync {
    /// Token ids of `text`; special-token markup in `text` (e.g. `<|im_start|>`)
    /// becomes the special token, as in a rendered chat prompt.
    fn encode(&self, text: &str) -> Result<Vec<u32>, CodecError>;
    /// Text of `ids`, special tokens left out.
    fn decode(&self, ids: &[u32]) -> Result<String, CodecError>;
    /// The prompt for `turns` from the model's chat template, ending with the
    /// assistant's generation prompt; `enable_thinking` is passed to templates
    /// that read it (Qwen) when given.
    fn render_chat(
        &self,
        turns: &[ChatTurn],
        enable_thinking: Option<bool>,
    ) -> Result<String, CodecError>;
    /// Number of token ids the codec can produce or decode.
    fn vocab_size(&self) -> usize;
}
