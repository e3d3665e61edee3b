//! The tokenizer section of a GGUF file (`tokenizer.ggml.*`) as plain data:
//! read from a GGUF, written into a GGUF or an HF `tokenizer.json`, and the
//! synthetic vocabulary that `lucebox synth` ships with its checkpoints.

use serde_json::{Value, json};

use super::bpe::QWEN35_PRE_REGEX;
use super::bytes::byte_char;
use crate::error::{ModelError, Result};
use crate::gguf::{GgufFile, MetaArray, MetaValue};

/// llama.cpp `llama_token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Undefined,
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    pub fn from_i32(v: i32) -> Self {
        match v {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Undefined,
        }
    }
    pub fn to_i32(self) -> i32 {
        match self {
            Self::Undefined => 0,
            Self::Normal => 1,
            Self::Unknown => 2,
            Self::Control => 3,
            Self::UserDefined => 4,
            Self::Unused => 5,
            Self::Byte => 6,
        }
    }
}

/// Qwen3.5 special tokens and their ids in the real 248320-token vocabulary
/// (spec §1.1: pad/eos 248044, chat eos 248046).
pub const QWEN35_SPECIALS: [(&str, u32); 3] = [
    ("<|endoftext|>", 248_044),
    ("<|im_start|>", 248_045),
    ("<|im_end|>", 248_046),
];

#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerData {
    /// `tokenizer.ggml.model` (`gpt2` = byte-level BPE).
    pub model: String,
    /// `tokenizer.ggml.pre`.
    pub pre: String,
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub chat_template: Option<String>,
}

impl TokenizerData {
    pub fn token_type(&self, i: usize) -> TokenType {
        self.token_types
            .get(i)
            .map(|&t| TokenType::from_i32(t))
            .unwrap_or(TokenType::Normal)
    }

    /// Read `tokenizer.ggml.*` from a GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let err = |m: String| ModelError::Tokenizer(format!("{}: {m}", file.path.display()));
        let s = |k: &str| {
            file.metadata(k)
                .and_then(MetaValue::as_str)
                .map(str::to_string)
        };
        let id = |k: &str| {
            file.metadata(k)
                .and_then(MetaValue::as_u64)
                .and_then(|v| u32::try_from(v).ok())
        };
        let model =
            s("tokenizer.ggml.model").ok_or_else(|| err("no tokenizer.ggml.model".into()))?;
        let tokens = match file.metadata("tokenizer.ggml.tokens") {
            Some(MetaValue::Array(MetaArray::String(v))) => v.clone(),
            _ => {
                return Err(err(
                    "tokenizer.ggml.tokens is missing or not a string array".into(),
                ));
            }
        };
        let token_types = match file.metadata("tokenizer.ggml.token_type") {
            Some(MetaValue::Array(a)) => a
                .as_i64s()
                .ok_or_else(|| err("tokenizer.ggml.token_type is not an integer array".into()))?
                .into_iter()
                .map(|v| v as i32)
                .collect(),
            _ => vec![1; tokens.len()],
        };
        if token_types.len() != tokens.len() {
            return Err(err(format!(
                "{} token types for {} tokens",
                token_types.len(),
                tokens.len()
            )));
        }
        let merges = match file.metadata("tokenizer.ggml.merges") {
            Some(MetaValue::Array(MetaArray::String(v))) => v.clone(),
            None => vec![],
            _ => return Err(err("tokenizer.ggml.merges is not a string array".into())),
        };
        let data = Self {
            model,
            pre: s("tokenizer.ggml.pre").unwrap_or_else(|| "default".into()),
            tokens,
            token_types,
            merges,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            pad: id("tokenizer.ggml.padding_token_id"),
            add_bos: file
                .metadata("tokenizer.ggml.add_bos_token")
                .and_then(MetaValue::as_bool)
                .unwrap_or(false),
            chat_template: s("tokenizer.chat_template"),
        };
        for (what, v) in [("bos", data.bos), ("eos", data.eos), ("pad", data.pad)] {
            if let Some(v) = v
                && v as usize >= data.tokens.len()
            {
                return Err(err(format!(
                    "{what} token id {v} is outside the vocabulary"
                )));
            }
        }
        Ok(data)
    }

    /// GGUF metadata entries (`tokenizer.*`), in llama.cpp's usual order.
    pub fn to_gguf_metadata(&self) -> Vec<(String, MetaValue)> {
        let mut kv = vec![
            (
                "tokenizer.ggml.model".to_string(),
                MetaValue::String(self.model.clone()),
            ),
            (
                "tokenizer.ggml.pre".to_string(),
                MetaValue::String(self.pre.clone()),
            ),
            (
                "tokenizer.ggml.tokens".to_string(),
                MetaValue::Array(MetaArray::String(self.tokens.clone())),
            ),
            (
                "tokenizer.ggml.token_type".to_string(),
                MetaValue::Array(MetaArray::I32(self.token_types.clone())),
            ),
            (
                "tokenizer.ggml.merges".to_string(),
                MetaValue::Array(MetaArray::String(self.merges.clone())),
            ),
        ];
        for (k, v) in [
            ("tokenizer.ggml.eos_token_id", self.eos),
            ("tokenizer.ggml.padding_token_id", self.pad),
            ("tokenizer.ggml.bos_token_id", self.bos),
        ] {
            if let Some(v) = v {
                kv.push((k.to_string(), MetaValue::U32(v)));
            }
        }
        kv.push((
            "tokenizer.ggml.add_bos_token".to_string(),
            MetaValue::Bool(self.add_bos),
        ));
        if let Some(t) = &self.chat_template {
            kv.push((
                "tokenizer.chat_template".to_string(),
                MetaValue::String(t.clone()),
            ));
        }
        kv
    }

    /// An HF `tokenizer.json` equivalent to this vocabulary (byte-level BPE,
    /// the same pre-tokenizer regex, control tokens as added special tokens).
    pub fn to_hf_tokenizer_json(&self) -> Result<Value> {
        if self.model != "gpt2" {
            return Err(ModelError::Tokenizer(format!(
                "cannot export tokenizer model `{}` as tokenizer.json",
                self.model
            )));
        }
        let regex = super::bpe::pre_regex(&self.pre).unwrap_or(QWEN35_PRE_REGEX);
        let mut vocab = serde_json::Map::with_capacity(self.tokens.len());
        let mut added = Vec::new();
        for (i, t) in self.tokens.iter().enumerate() {
            match self.token_type(i) {
                TokenType::Control | TokenType::UserDefined => added.push(json!({
                    "id": i, "content": t, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false,
                    "special": self.token_type(i) == TokenType::Control,
                })),
                _ => {}
            }
            vocab.insert(t.clone(), json!(i));
        }
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
        Ok(json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                byte_level,
            ]},
            "post_processor": byte_level,
            "decoder": byte_level,
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": "", "end_of_word_suffix": "",
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": self.merges,
            },
        }))
    }

    /// HF `tokenizer_config.json` for this vocabulary.
    pub fn to_hf_tokenizer_config(&self) -> Value {
        let name = |id: Option<u32>| id.and_then(|i| self.tokens.get(i as usize)).cloned();
        json!({
            "tokenizer_class": "Qwen2Tokenizer",
            "add_bos_token": self.add_bos,
            "bos_token": name(self.bos),
            "eos_token": name(self.eos),
            "pad_token": name(self.pad),
            "model_max_length": 262144,
            "chat_template": self.chat_template,
        })
    }

    /// The vocabulary shipped with synthetic checkpoints, exactly
    /// `vocab_size` tokens, deterministic.
    ///
    /// Regular tokens and merges come from `base` when given and it fits
    /// (`lucebox synth` passes llama.cpp's `ggml-vocab-qwen35.gguf` test
    /// vocabulary when the test data is present: the 151,643 Qwen BPE tokens
    /// with their merges); otherwise they are the 256 byte tokens alone (every
    /// text still encodes, one token per byte). `<|endoftext|>`,
    /// `<|im_start|>`, `<|im_end|>` sit at their real Qwen3.5 ids (248044..6)
    /// when the vocabulary is that large, else right after the regular tokens;
    /// every other id is an unused `[PAD{id}]` token, as llama.cpp's converter
    /// pads vocabularies.
    pub fn synthetic(
        vocab_size: usize,
        base: Option<&TokenizerData>,
        chat_template: Option<String>,
    ) -> Result<Self> {
        let byte_tokens = || -> (Vec<String>, Vec<String>) {
            (
                (0..=255u8).map(|b| byte_char(b).to_string()).collect(),
                vec![],
            )
        };
        let (regular, merges) = match base {
            Some(b) => {
                let regular: Vec<String> = b
                    .tokens
                    .iter()
                    .enumerate()
                    .take_while(|(i, _)| b.token_type(*i) == TokenType::Normal)
                    .map(|(_, t)| t.clone())
                    .collect();
                if regular.len() + QWEN35_SPECIALS.len() <= vocab_size {
                    (regular, b.merges.clone())
                } else {
                    byte_tokens()
                }
            }
            None => byte_tokens(),
        };
        if regular.len() + QWEN35_SPECIALS.len() > vocab_size {
            return Err(ModelError::Tokenizer(format!(
                "vocab_size {vocab_size} is too small for a byte-level vocabulary (needs >= {})",
                regular.len() + QWEN35_SPECIALS.len()
            )));
        }
        let first_special = if vocab_size > QWEN35_SPECIALS[2].1 as usize {
            QWEN35_SPECIALS[0].1 as usize
        } else {
            regular.len()
        };
        let mut tokens = Vec::with_capacity(vocab_size);
        let mut types = Vec::with_capacity(vocab_size);
        for i in 0..vocab_size {
            if i < regular.len() {
                tokens.push(regular[i].clone());
                types.push(TokenType::Normal.to_i32());
            } else if (first_special..first_special + 3).contains(&i) {
                tokens.push(QWEN35_SPECIALS[i - first_special].0.to_string());
                types.push(TokenType::Control.to_i32());
            } else {
                tokens.push(format!("[PAD{i}]"));
                types.push(TokenType::Unused.to_i32());
            }
        }
        let sp = |k: usize| Some((first_special + k) as u32);
        Ok(Self {
            model: "gpt2".into(),
            pre: "qwen35".into(),
            tokens,
            token_types: types,
            merges,
            bos: sp(0),
            eos: sp(2),
            pad: sp(0),
            add_bos: false,
            chat_template,
        })
    }
}
