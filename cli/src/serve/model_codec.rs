//! [`TextCodec`] over the model crate's tokenizer and chat template: an HF
//! directory (`tokenizer.json`, `tokenizer_config.json` / `chat_template.jinja`)
//! or a `.gguf` file (embedded tokenizer and `tokenizer.chat_template`).

use std::path::Path;

use lucebox_models::{ChatMessage, ChatTemplate, Tokenizer};

use super::codec::{ChatTurn, CodecError, TextCodec};

pub struct ModelCodec {
    tokenizer: Tokenizer,
    template: ChatTemplate,
    /// False when the model has no chat template and the built-in ChatML one is used.
    pub has_own_template: bool,
}

impl ModelCodec {
    pub fn new(tokenizer: Tokenizer, template: Option<ChatTemplate>) -> Self {
        let has_own_template = template.is_some();
        Self {
            tokenizer,
            template: template.unwrap_or_else(ChatTemplate::default_chatml),
            has_own_template,
        }
    }

    /// The tokenizer and chat template of the model at `path`.
    pub fn for_model(path: &Path) -> Result<Self, CodecError> {
        let tokenizer = Tokenizer::for_model(path).map_err(|e| CodecError(e.to_string()))?;
        let template = ChatTemplate::for_model(path).map_err(|e| CodecError(e.to_string()))?;
        Ok(Self::new(tokenizer, template))
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

impl TextCodec for ModelCodec {
    fn encode(&self, text: &str) -> Result<Vec<u32>, CodecError> {
        self.tokenizer
            .encode(text, true)
            .map_err(|e| CodecError(e.to_string()))
    }

    fn decode(&self, ids: &[u32]) -> Result<String, CodecError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| CodecError(e.to_string()))
    }

    fn render_chat(
        &self,
        turns: &[ChatTurn],
        enable_thinking: Option<bool>,
    ) -> Result<String, CodecError> {
        let messages: Vec<ChatMessage> = turns
            .iter()
            .map(|t| ChatMessage::new(t.role.clone(), t.content.clone()))
            .collect();
        self.template
            .render_with(&messages, true, enable_thinking)
            .map_err(|e| CodecError(e.to_string()))
    }

    fn vocab_size(&self) -> usize {
        self.tokenizer.vocab_size()
    }
}
