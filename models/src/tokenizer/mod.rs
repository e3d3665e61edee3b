//! Tokenizers: HF `tokenizer.json` (through the `tokenizers` crate) and the
//! GGUF-embedded byte-level BPE (implemented here), with one interface and an
//! incremental, UTF-8-safe detokeniser for streaming.

pub mod bpe;
pub mod bytes;
pub mod vocab;

use std::path::Path;

pub use bpe::ByteLevelBpe;
pub use vocab::{TokenType, TokenizerData};

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

pub enum Tokenizer {
    Hf(Box<tokenizers::Tokenizer>),
    Bpe(Box<ByteLevelBpe>),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hf(_) => write!(f, "Tokenizer::Hf({} tokens)", self.vocab_size()),
            Self::Bpe(_) => write!(f, "Tokenizer::Bpe({} tokens)", self.vocab_size()),
        }
    }
}

impl Tokenizer {
    /// Load an HF `tokenizer.json`.
    pub fn from_hf_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let t = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self::Hf(Box::new(t)))
    }

    /// Build from HF `tokenizer.json` bytes.
    pub fn from_hf_bytes(bytes: &[u8]) -> Result<Self> {
        let t = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| ModelError::Tokenizer(format!("tokenizer.json: {e}")))?;
        Ok(Self::Hf(Box::new(t)))
    }

    /// The tokenizer embedded in a GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        Self::from_data(TokenizerData::from_gguf(file)?)
    }

    pub fn from_data(data: TokenizerData) -> Result<Self> {
        Ok(Self::Bpe(Box::new(ByteLevelBpe::new(data)?)))
    }

    /// The tokenizer of a model: `tokenizer.json` in an HF directory, or the
    /// one embedded in a `.gguf` file.
    pub fn for_model(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            let json = path.join("tokenizer.json");
            if !json.exists() {
                return Err(ModelError::Tokenizer(format!(
                    "{} has no tokenizer.json",
                    path.display()
                )));
            }
            Self::from_hf_file(json)
        } else {
            Self::from_gguf(&GgufFile::open(path)?)
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Hf(t) => t.get_vocab_size(true),
            Self::Bpe(b) => b.vocab_size(),
        }
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        match self {
            Self::Hf(t) => t.token_to_id(token),
            Self::Bpe(b) => b.token_id(token),
        }
    }

    /// Token ids of `text`, no BOS/EOS added. `parse_special`: special-token
    /// texts (e.g. `<|im_start|>`) become their ids, as needed for rendered
    /// chat templates.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        match self {
            Self::Hf(t) => {
                // tokenizers always splits added tokens; to treat them as
                // plain text we would need a separate path. Qwen-style
                // tokenizers mark all added tokens special, so callers that
                // pass `parse_special = false` get them split as well.
                let enc = t
                    .encode_fast(text, false)
                    .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
                let _ = parse_special;
                Ok(enc.get_ids().to_vec())
            }
            Self::Bpe(b) => b.encode(text, parse_special),
        }
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        match self {
            Self::Hf(t) => t
                .decode(ids, skip_special)
                .map_err(|e| ModelError::Tokenizer(e.to_string())),
            Self::Bpe(b) => b.decode(ids, skip_special),
        }
    }

    /// A streaming detokeniser bound to this tokenizer.
    pub fn stream(&self, skip_special: bool) -> StreamDecoder<'_> {
        StreamDecoder {
            tok: self,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
            skip_special,
        }
    }
}

/// Incremental detokeniser: feed ids one at a time, get text as soon as it is
/// complete UTF-8. Decodes a short window (the previous emitted tokens as
/// context plus the new ones) and emits the difference, so byte-level tokens
/// that split a character and decoders that depend on neighbours (leading
/// spaces) both work.
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    skip_special: bool,
}

impl StreamDecoder<'_> {
    /// Add one token; returns the newly completed text, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let prefix = self.tok.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special,
        )?;
        let full = self
            .tok
            .decode(&self.ids[self.prefix_offset..], self.skip_special)?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') && full.starts_with(&prefix) {
            let new = full[prefix.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(Some(new))
        } else {
            Ok(None)
        }
    }

    /// Whatever is left (incomplete UTF-8 becomes U+FFFD).
    pub fn finish(self) -> Result<Option<String>> {
        let prefix = self.tok.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special,
        )?;
        let full = self
            .tok
            .decode(&self.ids[self.prefix_offset..], self.skip_special)?;
        Ok((full.len() > prefix.len() && full.starts_with(&prefix))
            .then(|| full[prefix.len()..].to_string()))
    }
}
