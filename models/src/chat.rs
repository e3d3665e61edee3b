//! Chat templates: HF / GGUF Jinja templates rendered with minijinja in the
//! same mode transformers uses (`trim_blocks`, `lstrip_blocks`, Python string
//! methods via minijinja-contrib's pycompat, `raise_exception`).

use std::path::Path;

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value, context};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// A message's content: a string, or a list of parts of which only text parts
/// are used (tools and images are not supported yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

impl MessageContent {
    /// The text parts joined.
    pub fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Parts(parts) => parts
                .iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text.as_deref())
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: MessageContent,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: MessageContent::Text(content.into()),
        }
    }
}

/// The template built into lucebox for checkpoints without one (synthetic
/// checkpoints): Qwen-style ChatML, optional empty think block when
/// `enable_thinking` is false.
pub const DEFAULT_CHATML_TEMPLATE: &str = r#"{%- if messages | length == 0 %}
    {{- raise_exception('at least one message is required') }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role not in ['system', 'user', 'assistant', 'tool'] %}
        {{- raise_exception('unknown role: ' ~ message.role) }}
    {%- endif %}
    {%- if message.role == 'system' and not loop.first %}
        {{- raise_exception('the system message must come first') }}
    {%- endif %}
    {%- set content = message.content %}
    {%- if message.role == 'assistant' and '</think>' in content %}
        {%- set content = content.split('</think>')[-1].lstrip('\n') %}
    {%- endif %}
    {%- if message.role == 'tool' %}
        {{- '<|im_start|>user\n<tool_response>\n' + content.strip() + '\n</tool_response><|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}
"#;

pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("len", &self.source.len())
            .finish()
    }
}

fn raise_exception(msg: String) -> std::result::Result<Value, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
}

fn jinja_err(e: JinjaError) -> ModelError {
    // Include the template's own message (raise_exception) and the location.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    ModelError::ChatTemplate(msg)
}

impl ChatTemplate {
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source.to_string())
            .map_err(jinja_err)?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos_token: None,
            eos_token: None,
        })
    }

    /// The built-in Qwen-style ChatML template.
    pub fn default_chatml() -> Self {
        // The built-in template is a constant that the tests render.
        Self::new(DEFAULT_CHATML_TEMPLATE)
            .unwrap_or_else(|e| unreachable!("built-in template does not parse: {e}"))
            .with_special_tokens(None, Some("<|im_end|>".into()))
    }

    pub fn with_special_tokens(mut self, bos: Option<String>, eos: Option<String>) -> Self {
        self.bos_token = bos;
        self.eos_token = eos;
        self
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// From an HF `tokenizer_config.json` (`chat_template` as a string or as
    /// a list of named templates, `default` preferred). None when it has none.
    pub fn from_tokenizer_config(path: impl AsRef<Path>) -> Result<Option<Self>> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::ChatTemplate(format!("{}: not JSON: {e}", path.display())))?;
        let src = match v.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(list)) => {
                let named = |n: &str| {
                    list.iter()
                        .find(|t| t.get("name").and_then(|x| x.as_str()) == Some(n))
                        .and_then(|t| t.get("template"))
                        .and_then(|t| t.as_str())
                        .map(str::to_string)
                };
                named("default").or_else(|| {
                    list.first()
                        .and_then(|t| t.get("template"))
                        .and_then(|t| t.as_str())
                        .map(str::to_string)
                })
            }
            _ => None,
        };
        // Special tokens may be strings or {"content": ...} objects.
        let tok = |k: &str| match v.get(k) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(o) => o
                .get("content")
                .and_then(|c| c.as_str())
                .map(str::to_string),
            None => None,
        };
        match src {
            Some(s) => Ok(Some(
                Self::new(&s)?.with_special_tokens(tok("bos_token"), tok("eos_token")),
            )),
            None => Ok(None),
        }
    }

    /// The chat template of a model: `tokenizer_config.json` (or a separate
    /// `chat_template.jinja`) in an HF directory, `tokenizer.chat_template` in
    /// a GGUF file; None when the model has none.
    pub fn for_model(path: impl AsRef<Path>) -> Result<Option<Self>> {
        let path = path.as_ref();
        if path.is_dir() {
            let jinja = path.join("chat_template.jinja");
            if jinja.exists() {
                let s = std::fs::read_to_string(&jinja).map_err(|e| ModelError::io(&jinja, e))?;
                return Ok(Some(Self::new(&s)?));
            }
            let cfg = path.join("tokenizer_config.json");
            if cfg.exists() {
                return Self::from_tokenizer_config(cfg);
            }
            return Ok(None);
        }
        let file = crate::gguf::GgufFile::open(path)?;
        match file
            .metadata("tokenizer.chat_template")
            .and_then(crate::gguf::MetaValue::as_str)
        {
            Some(s) => Ok(Some(Self::new(s)?)),
            None => Ok(None),
        }
    }

    /// Render `messages`; list contents are flattened to their text parts.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with(messages, add_generation_prompt, None)
    }

    /// Render with `enable_thinking` set (Qwen templates read it).
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        enable_thinking: Option<bool>,
    ) -> Result<String> {
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| context! { role => m.role.clone(), content => m.content.text() })
            .collect();
        let tmpl = self.env.get_template("chat").map_err(jinja_err)?;
        let ctx = match enable_thinking {
            Some(t) => context! {
                messages => msgs, add_generation_prompt, bos_token => self.bos_token.clone(),
                eos_token => self.eos_token.clone(), enable_thinking => t,
            },
            None => context! {
                messages => msgs, add_generation_prompt, bos_token => self.bos_token.clone(),
                eos_token => self.eos_token.clone(),
            },
        };
        tmpl.render(ctx).map_err(jinja_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_template_renders_chatml() {
        let t = ChatTemplate::default_chatml();
        let out = t
            .render(
                &[
                    ChatMessage::new("system", "Be brief."),
                    ChatMessage::new("user", "Hi"),
                    ChatMessage::new("assistant", "<think>\nhmm\n</think>\n\nHello!"),
                    ChatMessage::new("user", "Bye"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        let no_think = t
            .render_with(&[ChatMessage::new("user", "x")], true, Some(false))
            .unwrap();
        assert!(no_think.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
    }

    #[test]
    fn raise_exception_becomes_an_error_with_its_message() {
        let t = ChatTemplate::default_chatml();
        let err = t
            .render(
                &[
                    ChatMessage::new("user", "a"),
                    ChatMessage::new("system", "b"),
                ],
                false,
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("system message must come first"), "{err}");
        let err = t
            .render(&[ChatMessage::new("robot", "a")], false)
            .unwrap_err();
        assert!(err.to_string().contains("unknown role: robot"));
    }

    #[test]
    fn list_contents_use_their_text_parts() {
        let msg: ChatMessage = serde_json::from_str(
            r#"{"role":"user","content":[{"type":"text","text":"a"},{"type":"image"},{"type":"text","text":"b"}]}"#,
        )
        .unwrap();
        let out = ChatTemplate::default_chatml()
            .render(&[msg], false)
            .unwrap();
        assert_eq!(out, "<|im_start|>user\nab<|im_end|>\n");
    }

    /// A Qwen3-style template using the Python string methods templates rely
    /// on (`startswith`, `endswith`, `strip`, `split`, `rstrip`), a reversed
    /// namespace loop, and `raise_exception`.
    const QWEN3_STYLE: &str = r#"{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set content = message.content %}
        {%- set reasoning_content = '' %}
        {%- if '</think>' in content %}
            {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\n') %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role != "system" %}
        {{- raise_exception('Unexpected message role.') }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"#;

    #[test]
    fn qwen3_style_template_with_python_methods() {
        let t = ChatTemplate::new(QWEN3_STYLE).unwrap();
        let msgs = [
            ChatMessage::new("system", "S"),
            ChatMessage::new("user", "Q1"),
            ChatMessage::new("assistant", "<think>\nR1\n</think>\n\nA1"),
            ChatMessage::new("user", "Q2"),
        ];
        let out = t.render_with(&msgs, true, Some(false)).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n\
             <|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n\
             <|im_start|>assistant\n<think>\n\n</think>\n\n"
        );
        let err = t
            .render(
                &[ChatMessage::new("user", "x"), ChatMessage::new("bot", "y")],
                false,
            )
            .unwrap_err();
        assert!(err.to_string().contains("Unexpected message role"));
    }
}
