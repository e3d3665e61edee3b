//! GPT-2 byte-level alphabet: every byte maps to one printable Unicode char
//! (`bytes_to_unicode` in GPT-2 / HF `ByteLevel`).

use std::sync::OnceLock;

struct Tables {
    to_char: [char; 256],
    to_byte: std::collections::HashMap<char, u8>,
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let printable = |b: u32| {
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
        };
        let mut to_char = ['\0'; 256];
        let mut n = 0u32;
        for b in 0..256u32 {
            to_char[b as usize] = if printable(b) {
                char::from_u32(b).unwrap_or('\0')
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap_or('\0')
            };
        }
        let to_byte = to_char
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        Tables { to_char, to_byte }
    })
}

/// The byte-level char of byte `b`.
pub fn byte_char(b: u8) -> char {
    tables().to_char[b as usize]
}

/// Map raw bytes to their byte-level string.
pub fn encode_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_char(b)).collect()
}

/// Map a byte-level string back to bytes; None if a char is outside the alphabet.
pub fn decode_chars(s: &str) -> Option<Vec<u8>> {
    let t = tables();
    s.chars().map(|c| t.to_byte.get(&c).copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_is_a_bijection_with_gpt2_landmarks() {
        assert_eq!(byte_char(b' '), 'Ġ');
        assert_eq!(byte_char(b'\n'), 'Ċ');
        assert_eq!(byte_char(b'a'), 'a');
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_chars(&encode_bytes(&all)).unwrap(), all);
    }
}
