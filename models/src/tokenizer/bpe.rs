//! The GGUF-embedded byte-level BPE tokenizer (`tokenizer.ggml.model = gpt2`),
//! as llama.cpp runs it: special tokens split out first, then the
//! pre-tokenizer regex of `tokenizer.ggml.pre`, then byte-level BPE by merge
//! rank on each piece.

use std::collections::HashMap;

use fancy_regex::Regex;

use super::bytes::{decode_chars, encode_bytes};
use super::vocab::{TokenType, TokenizerData};
use crate::error::{ModelError, Result};

/// llama.cpp `LLAMA_VOCAB_PRE_TYPE_QWEN35` (llama-vocab.cpp): the
/// tokenizer.json regex with `(?i:...)` spelled out.
pub const QWEN35_PRE_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// llama.cpp `LLAMA_VOCAB_PRE_TYPE_QWEN2`.
pub const QWEN2_PRE_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer regex for a `tokenizer.ggml.pre` name.
pub fn pre_regex(pre: &str) -> Option<&'static str> {
    match pre {
        "qwen35" => Some(QWEN35_PRE_REGEX),
        "qwen2" | "deepseek-r1-qwen" => Some(QWEN2_PRE_REGEX),
        _ => None,
    }
}

#[derive(Debug)]
pub struct ByteLevelBpe {
    data: TokenizerData,
    ids: HashMap<String, u32>,
    /// (left, right) -> (rank, merged id)
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Special (control / user-defined) tokens, longest first.
    specials: Vec<(String, u32)>,
    /// Token id of each byte's single-char token.
    byte_ids: [Option<u32>; 256],
    pre: Regex,
}

impl ByteLevelBpe {
    pub fn new(data: TokenizerData) -> Result<Self> {
        if data.model != "gpt2" {
            return Err(ModelError::Tokenizer(format!(
                "tokenizer.ggml.model `{}` is not supported (only byte-level BPE `gpt2`)",
                data.model
            )));
        }
        let pattern = pre_regex(&data.pre).ok_or_else(|| {
            ModelError::Tokenizer(format!(
                "pre-tokenizer `{}` is not supported (qwen35, qwen2)",
                data.pre
            ))
        })?;
        let pre = Regex::new(pattern)
            .map_err(|e| ModelError::Tokenizer(format!("pre-tokenizer regex: {e}")))?;
        let mut ids = HashMap::with_capacity(data.tokens.len());
        for (i, t) in data.tokens.iter().enumerate() {
            // First occurrence wins, like llama.cpp's token_to_id map.
            ids.entry(t.clone()).or_insert(i as u32);
        }
        let mut merges = HashMap::with_capacity(data.merges.len());
        for (rank, m) in data.merges.iter().enumerate() {
            let Some((a, b)) = m.split_once(' ') else {
                return Err(ModelError::Tokenizer(format!(
                    "merge #{rank} `{m}` has no space"
                )));
            };
            let (Some(&ia), Some(&ib), Some(&im)) =
                (ids.get(a), ids.get(b), ids.get(&format!("{a}{b}")))
            else {
                continue;
            };
            merges.entry((ia, ib)).or_insert((rank as u32, im));
        }
        let mut specials: Vec<(String, u32)> = data
            .tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                matches!(
                    data.token_type(*i),
                    TokenType::Control | TokenType::UserDefined
                )
            })
            .map(|(i, t)| (t.clone(), i as u32))
            .filter(|(t, _)| !t.is_empty())
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = ids.get(&encode_bytes(&[b as u8])).copied();
        }
        Ok(Self {
            data,
            ids,
            merges,
            specials,
            byte_ids,
            pre,
        })
    }

    pub fn data(&self) -> &TokenizerData {
        &self.data
    }
    pub fn vocab_size(&self) -> usize {
        self.data.tokens.len()
    }
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// Encode `text`; with `parse_special`, special-token texts in `text`
    /// become their ids (llama.cpp `parse_special`).
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        if !parse_special || self.specials.is_empty() {
            self.encode_plain(text, &mut out)?;
            return Ok(out);
        }
        let mut rest = text;
        while !rest.is_empty() {
            // Earliest special occurrence; longest wins at the same position.
            let mut best: Option<(usize, &(String, u32))> = None;
            for sp in &self.specials {
                if let Some(pos) = rest.find(sp.0.as_str())
                    && best.is_none_or(|(p, _)| pos < p)
                {
                    best = Some((pos, sp));
                }
            }
            match best {
                Some((pos, (s, id))) => {
                    self.encode_plain(&rest[..pos], &mut out)?;
                    out.push(*id);
                    rest = &rest[pos + s.len()..];
                }
                None => {
                    self.encode_plain(rest, &mut out)?;
                    break;
                }
            }
        }
        Ok(out)
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        for m in self.pre.find_iter(text) {
            let m = m.map_err(|e| ModelError::Tokenizer(format!("pre-tokenizer: {e}")))?;
            self.bpe_piece(m.as_str().as_bytes(), out)?;
        }
        Ok(())
    }

    fn bpe_piece(&self, piece: &[u8], out: &mut Vec<u32>) -> Result<()> {
        // A whole piece that is a token (common words) needs no merging.
        let mapped = encode_bytes(piece);
        if let Some(&id) = self.ids.get(&mapped) {
            out.push(id);
            return Ok(());
        }
        let mut syms: Vec<u32> = piece
            .iter()
            .map(|&b| {
                self.byte_ids[b as usize].ok_or_else(|| {
                    ModelError::Tokenizer(format!("vocabulary has no token for byte {b:#04x}"))
                })
            })
            .collect::<Result<_>>()?;
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..syms.len().saturating_sub(1) {
                if let Some(&(rank, merged)) = self.merges.get(&(syms[i], syms[i + 1]))
                    && best.is_none_or(|(r, _, _)| rank < r)
                {
                    best = Some((rank, i, merged));
                }
            }
            let Some((_, i, merged)) = best else { break };
            syms[i] = merged;
            syms.remove(i + 1);
        }
        out.extend(syms);
        Ok(())
    }

    /// Raw bytes of one token: byte-level decoded for normal tokens, the text
    /// itself for control / user-defined tokens.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let t = self.data.tokens.get(id as usize)?;
        match self.data.token_type(id as usize) {
            TokenType::Normal => decode_chars(t).or_else(|| Some(t.as_bytes().to_vec())),
            _ => Some(t.as_bytes().to_vec()),
        }
    }

    pub fn is_special(&self, id: u32) -> bool {
        matches!(
            self.data.token_type(id as usize),
            TokenType::Control | TokenType::Unused
        )
    }

    /// Decode ids to text (invalid UTF-8 becomes U+FFFD).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            if skip_special && self.is_special(id) {
                continue;
            }
            let b = self.token_bytes(id).ok_or_else(|| {
                ModelError::Tokenizer(format!(
                    "token id {id} is outside the vocabulary of {}",
                    self.vocab_size()
                ))
            })?;
            bytes.extend(b);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}
