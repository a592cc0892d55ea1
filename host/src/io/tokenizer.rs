//! `Tokenizer`: text ↔ token ids, either the byte-level tokenizer of models made from
//! scratch or a Hugging Face `tokenizer.json` run by the `tokenizers` crate (the same
//! code `transformers`' fast tokenizers run, so ids match Python exactly).

use std::path::Path;

use r1_core::model::ModelConfig;
use serde_json::Value;

use crate::io::byte_tokenizer::ByteLevelTokenizer;
use crate::io::error::IoError;

pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// EOS tokens of common model families, tried in this order when neither
/// `tokenizer_config.json` nor `config.json` names one.
const KNOWN_EOS_TOKENS: [&str; 5] = [
    "<｜end▁of▁sentence｜>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "</s>",
    "<eos>",
];

/// How to rebuild a tokenizer: what a checkpoint stores so it is self-contained.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TokenizerSpec {
    ByteLevel,
    /// The full `tokenizer.json` text and the EOS token's text.
    HuggingFace {
        tokenizer_json: String,
        eos_token: String,
    },
    /// No tokenizer: the model runs on token ids only. (Last, so that checkpoints written
    /// before it existed decode unchanged.)
    Missing,
}

/// A tokenizer r1 can train and generate with.
#[derive(Clone, Debug)]
pub enum Tokenizer {
    ByteLevel(ByteLevelTokenizer),
    /// Boxed: the `tokenizers` value is large and the byte-level variant is empty.
    HuggingFace(Box<HfTokenizer>),
    /// A model without a tokenizer (a Hugging Face directory with no `tokenizer.json`): it
    /// runs on token ids, and whatever needs text fails with [`IoError::NoTokenizer`].
    Missing(MissingTokenizer),
}

/// What stands in for the tokenizer of a model that has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingTokenizer {
    /// The model's path, for messages.
    pub model: String,
    /// The config's `eos_token_id`, if it names one.
    pub eos_id: Option<u32>,
}

/// A Hugging Face `tokenizer.json` with its EOS token resolved.
#[derive(Clone, Debug)]
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    json: String,
    eos_token: String,
    eos_id: u32,
    label: String,
    /// `chat_template` of the model's `tokenizer_config.json` (a string, or a list of
    /// named templates), kept so an export carries it.
    chat_template: Option<Value>,
}

impl Tokenizer {
    pub fn byte_level() -> Tokenizer {
        Tokenizer::ByteLevel(ByteLevelTokenizer)
    }

    /// The tokenizer of a model directory: `tokenizer.json` if present (EOS from
    /// `tokenizer_config.json`, else `config.eos_token_id`, else a known EOS token), or
    /// `None` when the directory has no tokenizer.
    pub fn from_model_dir(dir: &Path, config: &ModelConfig) -> Result<Option<Tokenizer>, IoError> {
        let path = dir.join(TOKENIZER_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let bytes = std::fs::read(&path).map_err(|e| IoError::file(&path, e))?;
        let label = path.display().to_string();
        let fields = read_tokenizer_config(&dir.join(TOKENIZER_CONFIG_FILE))?;
        let mut hf = HfTokenizer::from_json_bytes(&bytes, &label, fields.eos_token.as_deref(), config.eos_token_id)?;
        hf.chat_template = fields.chat_template;
        Ok(Some(Tokenizer::HuggingFace(Box::new(hf))))
    }

    /// The stand-in for a model at `model` that has no tokenizer.
    pub fn missing(model: &str, config: &ModelConfig) -> Tokenizer {
        Tokenizer::Missing(MissingTokenizer {
            model: model.to_string(),
            eos_id: config.eos_token_id,
        })
    }

    /// This tokenizer if it can turn text into ids, else [`IoError::NoTokenizer`] naming
    /// the model: what a command that takes text asks before doing anything else.
    pub fn require_text(&self) -> Result<&Tokenizer, IoError> {
        match self {
            Tokenizer::Missing(m) => Err(m.error()),
            _ => Ok(self),
        }
    }

    /// Rebuilds the tokenizer a checkpoint describes.
    pub fn from_spec(spec: &TokenizerSpec) -> Result<Tokenizer, IoError> {
        Ok(match spec {
            TokenizerSpec::ByteLevel => Tokenizer::byte_level(),
            TokenizerSpec::HuggingFace {
                tokenizer_json,
                eos_token,
            } => Tokenizer::HuggingFace(Box::new(HfTokenizer::from_json_bytes(
                tokenizer_json.as_bytes(),
                "<checkpoint>",
                Some(eos_token),
                None,
            )?)),
            TokenizerSpec::Missing => Tokenizer::Missing(MissingTokenizer {
                model: "<checkpoint>".into(),
                eos_id: None,
            }),
        })
    }

    /// What a checkpoint stores to rebuild this tokenizer.
    pub fn spec(&self) -> TokenizerSpec {
        match self {
            Tokenizer::ByteLevel(_) => TokenizerSpec::ByteLevel,
            Tokenizer::HuggingFace(t) => TokenizerSpec::HuggingFace {
                tokenizer_json: t.json.clone(),
                eos_token: t.eos_token.clone(),
            },
            Tokenizer::Missing(_) => TokenizerSpec::Missing,
        }
    }

    /// Token ids of `text`, without BOS/EOS or other added special tokens (special-token
    /// texts inside `text` do become their ids).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, IoError> {
        match self {
            Tokenizer::ByteLevel(t) => Ok(t.encode(text)),
            Tokenizer::HuggingFace(t) => t.encode(text),
            Tokenizer::Missing(m) => Err(m.error()),
        }
    }

    /// The text of `ids`, special tokens kept. Ids outside the vocabulary are an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String, IoError> {
        match self {
            Tokenizer::ByteLevel(t) => t.decode(ids),
            Tokenizer::HuggingFace(t) => t.decode(ids),
            Tokenizer::Missing(m) => Err(m.error()),
        }
    }

    /// Number of ids, added tokens included (0 for a missing tokenizer: it fits any model).
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::ByteLevel(t) => t.vocab_size(),
            Tokenizer::HuggingFace(t) => t.inner.get_vocab_size(true),
            Tokenizer::Missing(_) => 0,
        }
    }

    /// End of sequence (also used for padding). A model without a tokenizer has its
    /// config's `eos_token_id`, or 0 when the config names none: callers that append EOS
    /// to encoded text fail at [`Tokenizer::encode`] before the id matters.
    pub fn eos_id(&self) -> u32 {
        match self {
            Tokenizer::ByteLevel(t) => t.eos_id(),
            Tokenizer::HuggingFace(t) => t.eos_id,
            Tokenizer::Missing(m) => m.eos_id.unwrap_or(0),
        }
    }

    /// Special tokens with their ids, in id order.
    pub fn special_tokens(&self) -> Vec<(String, u32)> {
        match self {
            Tokenizer::ByteLevel(t) => t.special_tokens(),
            Tokenizer::HuggingFace(t) => {
                let mut v: Vec<(String, u32)> = t
                    .inner
                    .get_added_tokens_decoder()
                    .into_iter()
                    .filter(|(_, tok)| tok.special)
                    .map(|(id, tok)| (tok.content, id))
                    .collect();
                v.sort_by_key(|(_, id)| *id);
                v
            }
            Tokenizer::Missing(_) => Vec::new(),
        }
    }

    /// The id of one token's text (e.g. `"<think>"`), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        match self {
            Tokenizer::ByteLevel(t) => t.token_id(token),
            Tokenizer::HuggingFace(t) => t.inner.token_to_id(token),
            Tokenizer::Missing(_) => None,
        }
    }

    /// Checks that every id this tokenizer produces is an embedding row of `config`.
    pub fn check_fits(&self, config: &ModelConfig) -> Result<(), IoError> {
        if self.vocab_size() > config.vocab_size {
            return Err(IoError::Field {
                file: "config".into(),
                field: "vocab_size".into(),
                detail: format!(
                    "{} is smaller than the tokenizer's {} ids",
                    config.vocab_size,
                    self.vocab_size()
                ),
            });
        }
        Ok(())
    }
}

impl MissingTokenizer {
    pub fn error(&self) -> IoError {
        IoError::NoTokenizer {
            model: self.model.clone(),
        }
    }
}

impl HfTokenizer {
    /// Loads a `tokenizer.json`. The EOS token is `eos_token` when given, else the token of
    /// `eos_id`, else the first of [`KNOWN_EOS_TOKENS`] in the vocabulary.
    pub fn from_json_bytes(
        bytes: &[u8],
        label: &str,
        eos_token: Option<&str>,
        eos_id: Option<u32>,
    ) -> Result<HfTokenizer, IoError> {
        let err = |detail: String| IoError::Tokenizer {
            file: label.to_string(),
            detail,
        };
        let json = std::str::from_utf8(bytes)
            .map_err(|e| err(format!("not UTF-8: {e}")))?
            .to_string();
        // serde_json first, for a located message on malformed files.
        serde_json::from_str::<serde::de::IgnoredAny>(&json).map_err(|e| IoError::json(label, &e))?;
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| err(e.to_string()))?;
        let eos_token = match (eos_token, eos_id) {
            (Some(t), _) => t.to_string(),
            (None, Some(id)) => inner
                .id_to_token(id)
                .ok_or_else(|| err(format!("config.json eos_token_id {id} is not in the vocabulary")))?,
            (None, None) => KNOWN_EOS_TOKENS
                .iter()
                .find(|t| inner.token_to_id(t).is_some())
                .map(|t| t.to_string())
                .ok_or_else(|| err("no EOS token: set `eos_token` in tokenizer_config.json".into()))?,
        };
        let eos_id = inner
            .token_to_id(&eos_token)
            .ok_or_else(|| err(format!("EOS token `{eos_token}` is not in the vocabulary")))?;
        Ok(HfTokenizer {
            inner,
            json,
            eos_token,
            eos_id,
            label: label.to_string(),
            chat_template: None,
        })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, IoError> {
        let enc = self.inner.encode(text, false).map_err(|e| IoError::Tokenizer {
            file: self.label.clone(),
            detail: e.to_string(),
        })?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, IoError> {
        if let Some((position, &id)) = ids
            .iter()
            .enumerate()
            .find(|(_, id)| self.inner.id_to_token(**id).is_none())
        {
            return Err(IoError::TokenOutOfRange {
                id,
                position,
                vocab_size: self.inner.get_vocab_size(true),
            });
        }
        self.inner.decode(ids, false).map_err(|e| IoError::Tokenizer {
            file: self.label.clone(),
            detail: e.to_string(),
        })
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Sets the chat template a model file carries beside its tokenizer (a GGUF file's
    /// `tokenizer.chat_template`).
    pub fn with_chat_template(mut self, template: Option<Value>) -> HfTokenizer {
        self.chat_template = template;
        self
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// The `tokenizer.json` text this tokenizer was loaded from.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The chat template of the model's `tokenizer_config.json`, if it had one.
    pub fn chat_template(&self) -> Option<&Value> {
        self.chat_template.as_ref()
    }

    /// The text of token `id`, if the vocabulary has it.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}

/// What r1 reads from a `tokenizer_config.json`.
#[derive(Default)]
struct TokenizerConfigFields {
    eos_token: Option<String>,
    chat_template: Option<Value>,
}

/// `eos_token` (a string, or an object with `content`) and `chat_template` of a
/// `tokenizer_config.json`; both absent when the file is.
fn read_tokenizer_config(path: &Path) -> Result<TokenizerConfigFields, IoError> {
    if !path.is_file() {
        return Ok(TokenizerConfigFields::default());
    }
    let bytes = std::fs::read(path).map_err(|e| IoError::file(path, e))?;
    let label = path.display().to_string();
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| IoError::json(&label, &e))?;
    let eos_token = match v.get("eos_token") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    let chat_template = v.get("chat_template").filter(|t| !t.is_null()).cloned();
    Ok(TokenizerConfigFields {
        eos_token,
        chat_template,
    })
}
