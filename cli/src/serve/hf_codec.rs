//! [`TextCodec`] for a Hugging Face checkpoint directory: `tokenizer.json`
//! through the `tokenizers` crate and the `chat_template` of
//! `tokenizer_config.json` rendered with minijinja (Python-compatible string
//! methods enabled, as HF templates use them).

use std::path::Path;

use minijinja::{Environment, context};

use super::codec::{ChatTurn, CodecError, TextCodec};

pub struct HfTextCodec {
    tokenizer: tokenizers::Tokenizer,
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

const TEMPLATE_NAME: &str = "chat";

impl HfTextCodec {
    /// Read `tokenizer.json` and `tokenizer_config.json` from `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, CodecError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|e| CodecError(format!("{}: {e}", path.display())))
        };
        Self::from_json(&read("tokenizer.json")?, &read("tokenizer_config.json")?)
    }

    pub fn from_json(
        tokenizer_json: &str,
        tokenizer_config_json: &str,
    ) -> Result<Self, CodecError> {
        let tokenizer: tokenizers::Tokenizer = tokenizer_json
            .parse()
            .map_err(|e| CodecError(format!("tokenizer.json: {e}")))?;
        let config: serde_json::Value = serde_json::from_str(tokenizer_config_json)
            .map_err(|e| CodecError(format!("tokenizer_config.json: {e}")))?;
        let template = chat_template_of(&config)?;
        // Special tokens are written either as strings or as
        // `{"content": "..."}` objects.
        let token = |key: &str| match config.get(key) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        };
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned(TEMPLATE_NAME, template)
            .map_err(|e| CodecError(format!("chat template does not parse: {e}")))?;
        Ok(Self {
            tokenizer,
            env,
            bos_token: token("bos_token"),
            eos_token: token("eos_token"),
        })
    }

    /// Id of a token given by its text (e.g. `<|im_end|>`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }
}

/// The default template: a string, or a list of `{name, template}`.
fn chat_template_of(config: &serde_json::Value) -> Result<String, CodecError> {
    match config.get("chat_template") {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| CodecError("tokenizer_config.json: empty chat_template list".into())),
        _ => Err(CodecError(
            "tokenizer_config.json has no chat_template".into(),
        )),
    }
}

impl TextCodec for HfTextCodec {
    fn encode(&self, text: &str) -> Result<Vec<u32>, CodecError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| CodecError(format!("tokenizer: {e}")))
    }

    fn decode(&self, ids: &[u32]) -> Result<String, CodecError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| CodecError(format!("tokenizer: {e}")))
    }

    fn render_chat(&self, turns: &[ChatTurn]) -> Result<String, CodecError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| CodecError(format!("chat template: {e}")))?;
        template
            .render(context! {
                messages => turns,
                add_generation_prompt => true,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|e| CodecError(format!("chat template: {e}")))
    }

    fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
}
