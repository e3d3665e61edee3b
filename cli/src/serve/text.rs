//! Turning a stream of generated token ids into a stream of text: the
//! incremental detokeniser (never splits a UTF-8 character across two deltas)
//! and the stop-string matcher (cuts the text before a stop string and never
//! sends a piece of text that may turn out to start one).

use super::codec::TextCodec;

/// Decodes tokens one at a time. Each step decodes a small window
/// (`prefix_offset..`) and emits what it adds to the previous window, so
/// byte-level tokens that only make a character together are held until the
/// character is complete (the decoded window would end in U+FFFD).
#[derive(Debug, Default)]
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Text made final by `token` (often empty while a character is incomplete).
    pub fn push(&mut self, codec: &dyn TextCodec, token: u32) -> String {
        self.ids.push(token);
        let prefix = codec
            .decode(&self.ids[self.prefix_offset..self.read_offset])
            .unwrap_or_default();
        let full = codec
            .decode(&self.ids[self.prefix_offset..])
            .unwrap_or_default();
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') {
            let new = suffix_after(&full, &prefix);
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            new
        } else {
            String::new()
        }
    }

    /// Whatever is still held back (an incomplete character decodes as U+FFFD).
    pub fn flush(&mut self, codec: &dyn TextCodec) -> String {
        if self.read_offset == self.ids.len() {
            return String::new();
        }
        let prefix = codec
            .decode(&self.ids[self.prefix_offset..self.read_offset])
            .unwrap_or_default();
        let full = codec
            .decode(&self.ids[self.prefix_offset..])
            .unwrap_or_default();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        suffix_after(&full, &prefix)
    }
}

fn suffix_after(full: &str, prefix: &str) -> String {
    if let Some(rest) = full.strip_prefix(prefix) {
        rest.to_string()
    } else {
        // A decoder that rewrites earlier text (rare): keep what lies past the
        // old length, on a character boundary.
        let mut cut = prefix.len().min(full.len());
        while !full.is_char_boundary(cut) {
            cut += 1;
        }
        full[cut..].to_string()
    }
}

/// Finds the first stop string in the generated text.
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

/// What one piece of text released.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Text that is certainly not part of a stop string.
    pub text: String,
    /// The stop string that matched; generation must end.
    pub stop: Option<String>,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
        }
    }

    pub fn push(&mut self, piece: &str) -> Released {
        self.pending.push_str(piece);
        if self.stops.is_empty() {
            return Released {
                text: std::mem::take(&mut self.pending),
                stop: None,
            };
        }
        // Earliest match wins; on a tie the longer stop string.
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, s)| (*at, usize::MAX - s.len()));
        if let Some((at, stop)) = hit {
            let stop = stop.clone();
            let text = self.pending[..at].to_string();
            self.pending.clear();
            return Released {
                text,
                stop: Some(stop),
            };
        }
        let hold = self
            .stops
            .iter()
            .map(|s| longest_suffix_prefix(&self.pending, s))
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - hold;
        let text = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        Released { text, stop: None }
    }

    /// The held-back tail once generation ended without a stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Length of the longest proper prefix of `stop` that `text` ends with.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    (1..stop.len())
        .rev()
        .find(|&k| stop.is_char_boundary(k) && text.ends_with(&stop[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::serve::codec::{ChatTurn, CodecError};

    /// Each token is one byte; decoding is lossy UTF-8 like a byte-level BPE.
    struct ByteCodec;
    impl TextCodec for ByteCodec {
        fn encode(&self, text: &str) -> Result<Vec<u32>, CodecError> {
            Ok(text.bytes().map(u32::from).collect())
        }
        fn decode(&self, ids: &[u32]) -> Result<String, CodecError> {
            let bytes: Vec<u8> = ids.iter().map(|&i| i as u8).collect();
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
        fn render_chat(&self, _: &[ChatTurn], _: Option<bool>) -> Result<String, CodecError> {
            Ok(String::new())
        }
        fn vocab_size(&self) -> usize {
            256
        }
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        let text = "héllo 😀 wörld";
        let mut dec = IncrementalDecoder::new();
        let mut pieces = vec![];
        for id in ByteCodec.encode(text).unwrap() {
            let p = dec.push(&ByteCodec, id);
            assert!(!p.contains('\u{FFFD}'), "split character in {p:?}");
            pieces.push(p);
        }
        pieces.push(dec.flush(&ByteCodec));
        assert_eq!(pieces.concat(), text);
        // The 4-byte emoji came out in one piece.
        assert!(pieces.iter().any(|p| p == "😀"));
    }

    #[test]
    fn flush_releases_an_incomplete_character() {
        let mut dec = IncrementalDecoder::new();
        assert_eq!(dec.push(&ByteCodec, b'a' as u32), "a");
        assert_eq!(dec.push(&ByteCodec, 0xF0), "");
        assert_eq!(dec.flush(&ByteCodec), "\u{FFFD}");
        assert_eq!(dec.flush(&ByteCodec), "");
    }

    #[test]
    fn stop_string_split_across_pieces_cuts_the_text() {
        let mut m = StopMatcher::new(vec!["END".into(), "\n\n".into()]);
        let mut out = String::new();
        let mut stop = None;
        for piece in ["Hello E", "N", "D wo", "rld"] {
            let r = m.push(piece);
            out.push_str(&r.text);
            if r.stop.is_some() {
                stop = r.stop;
                break;
            }
        }
        assert_eq!(out, "Hello ");
        assert_eq!(stop.as_deref(), Some("END"));
    }

    #[test]
    fn text_that_only_looks_like_a_stop_prefix_is_released() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.push("a ST").text, "a ");
        assert_eq!(m.push("AR").text, "STAR");
        assert_eq!(m.push(" S").text, " ");
        assert_eq!(m.finish(), "S");
    }

    #[test]
    fn earliest_stop_wins() {
        let mut m = StopMatcher::new(vec!["bc".into(), "ab".into(), String::new()]);
        let r = m.push("xabcd");
        assert_eq!(r.text, "x");
        assert_eq!(r.stop.as_deref(), Some("ab"));
    }

    #[test]
    fn no_stop_strings_pass_text_through() {
        let mut m = StopMatcher::new(vec![]);
        assert_eq!(m.push("abc").text, "abc");
        assert_eq!(m.finish(), "");
    }
}
