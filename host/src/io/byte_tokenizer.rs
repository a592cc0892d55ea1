//! The byte-level tokenizer of models made from scratch: ids 0..=255 are the bytes of
//! the UTF-8 text, then five special tokens (`<|endoftext|>` for EOS and padding, and
//! the R1 reasoning tags). Any text round-trips exactly; no vocabulary file is needed.

use crate::io::error::IoError;

/// The special tokens, in id order from [`ByteLevelTokenizer::FIRST_SPECIAL`].
pub const BYTE_LEVEL_SPECIAL_TOKENS: [&str; 5] = ["<|endoftext|>", "<think>", "</think>", "<answer>", "</answer>"];

/// Bytes, then [`BYTE_LEVEL_SPECIAL_TOKENS`]. A special token's text anywhere in the input
/// encodes as its single id (so the reasoning tags cost one position each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByteLevelTokenizer;

impl ByteLevelTokenizer {
    pub const FIRST_SPECIAL: u32 = 256;
    /// `<|endoftext|>`: end of sequence and padding.
    pub const EOS_ID: u32 = 256;
    pub const VOCAB_SIZE: usize = 256 + BYTE_LEVEL_SPECIAL_TOKENS.len();

    pub fn vocab_size(&self) -> usize {
        Self::VOCAB_SIZE
    }

    pub fn eos_id(&self) -> u32 {
        Self::EOS_ID
    }

    /// Special tokens with their ids.
    pub fn special_tokens(&self) -> Vec<(String, u32)> {
        BYTE_LEVEL_SPECIAL_TOKENS
            .iter()
            .zip(Self::FIRST_SPECIAL..)
            .map(|(s, id)| (s.to_string(), id))
            .collect()
    }

    /// The id of a single token: a special token's text, or a one-byte string.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        if let Some(i) = BYTE_LEVEL_SPECIAL_TOKENS.iter().position(|s| *s == token) {
            return Some(Self::FIRST_SPECIAL + i as u32);
        }
        match token.as_bytes() {
            [b] => Some(u32::from(*b)),
            _ => None,
        }
    }

    /// One id per byte, except special-token texts which become their id (leftmost match).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let bytes = text.as_bytes();
        let mut ids = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'<'
                && let Some((k, len)) = BYTE_LEVEL_SPECIAL_TOKENS
                    .iter()
                    .enumerate()
                    .find(|(_, s)| bytes[i..].starts_with(s.as_bytes()))
                    .map(|(k, s)| (k, s.len()))
            {
                ids.push(Self::FIRST_SPECIAL + k as u32);
                i += len;
                continue;
            }
            ids.push(u32::from(bytes[i]));
            i += 1;
        }
        ids
    }

    /// The exact bytes `ids` stand for (special tokens as their text).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, IoError> {
        let mut out = Vec::with_capacity(ids.len());
        for (position, &id) in ids.iter().enumerate() {
            match u8::try_from(id) {
                Ok(b) => out.push(b),
                Err(_) => {
                    let special = id
                        .checked_sub(Self::FIRST_SPECIAL)
                        .and_then(|k| BYTE_LEVEL_SPECIAL_TOKENS.get(k as usize))
                        .ok_or(IoError::TokenOutOfRange {
                            id,
                            position,
                            vocab_size: Self::VOCAB_SIZE,
                        })?;
                    out.extend_from_slice(special.as_bytes());
                }
            }
        }
        Ok(out)
    }

    /// The text `ids` stand for; `decode(encode(s)) == s` for every string. Ids that do
    /// not form valid UTF-8 (a sampled sequence cut inside a character) become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, IoError> {
        let bytes = self.decode_bytes(ids)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}
