//! The byte-level tokenizer of models made from scratch: ids 0..=255 are the bytes of
//! the UTF-8 text, then five special tokens (`<|endoftext|>` for EOS and padding, and
//! the R1 reasoning tags). Any text round-trips exactly; no vocabulary file is needed,
//! though [`ByteLevelTokenizer::tokenizer_json`] writes one for other tools.

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

    /// This tokenizer as a `tokenizer.json` the `tokenizers` library (and so transformers'
    /// `PreTrainedTokenizerFast`) loads and encodes with the same ids: a BPE without
    /// merges over GPT-2's byte-to-character alphabet, so byte `b` is token `b`, and the
    /// special tokens added after it (ids 256…), matched anywhere in the text as here.
    pub fn tokenizer_json(&self) -> Result<String, IoError> {
        use tokenizers::models::bpe::BPE;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;

        let err = |detail: String| IoError::Tokenizer {
            file: "byte-level tokenizer.json".into(),
            detail,
        };
        let vocab: [(String, u32); 256] = std::array::from_fn(|b| (gpt2_byte_char(b as u8).to_string(), b as u32));
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, Vec::new())
            .build()
            .map_err(|e| err(e.to_string()))?;
        let mut tokenizer = tokenizers::Tokenizer::new(bpe);
        // No regex split and no prefix space: the text is only mapped byte by byte.
        let byte_level = ByteLevel::new(false, false, false);
        tokenizer.with_pre_tokenizer(Some(byte_level));
        tokenizer.with_decoder(Some(byte_level));
        let specials: Vec<tokenizers::AddedToken> = BYTE_LEVEL_SPECIAL_TOKENS
            .iter()
            .map(|s| tokenizers::AddedToken::from(*s, true))
            .collect();
        tokenizer.add_special_tokens(specials).map_err(|e| err(e.to_string()))?;
        tokenizer.to_string(true).map_err(|e| err(e.to_string()))
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

/// The character GPT-2's byte-level BPE shows byte `b` as (`bytes_to_unicode` in
/// openai/gpt-2 `encoder.py`): printable Latin-1 bytes stand for themselves, the other
/// 68 take the code points from U+0100 on, in byte order.
fn gpt2_byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap_or(char::REPLACEMENT_CHARACTER)
}
