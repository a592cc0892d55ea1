//! The JSON the API answers with, in OpenAI's shapes: `chat.completion` and its
//! `chat.completion.chunk`s, `text_completion`, `usage`, and both log-prob layouts
//! (chat's `content: [{token, logprob, bytes, top_logprobs}]`, completions'
//! `tokens/token_logprobs/top_logprobs/text_offset`).

use serde_json::{Map, Value, json};

use super::choice::{ChoiceAssembly, Piece, finish_reason_str};
use super::plan::Endpoint;
use crate::engine::service::TokenLogprob;
use crate::io::Tokenizer;

/// What every response object of one request shares.
#[derive(Clone, Debug)]
pub struct ResponseMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
    /// Log-prob entries name tokens as `token_id:N` (vLLM's `return_tokens_as_token_ids`).
    pub token_ids: bool,
}

impl ResponseMeta {
    /// `chatcmpl-…` or `cmpl-…` with `suffix` (unique per request).
    pub fn new(endpoint: Endpoint, suffix: &str, model: &str) -> Self {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completions => "cmpl",
        };
        ResponseMeta {
            id: format!("{prefix}-{suffix}"),
            created: unix_now(),
            model: model.to_string(),
            token_ids: false,
        }
    }

    fn object(&self, object: &str, choices: Vec<Value>) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("object".into(), json!(object));
        m.insert("created".into(), json!(self.created));
        m.insert("model".into(), json!(self.model));
        m.insert("system_fingerprint".into(), Value::Null);
        m.insert("choices".into(), Value::Array(choices));
        m
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Token counts of a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub reasoning_tokens: usize,
}

impl Usage {
    pub fn json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        })
    }
}

/// A token's text and bytes, for log-prob entries.
fn token_piece(tokenizer: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    match tokenizer {
        Tokenizer::ByteLevel(b) => {
            let bytes = b.decode_bytes(&[id]).unwrap_or_default();
            (String::from_utf8_lossy(&bytes).into_owned(), bytes)
        }
        Tokenizer::Missing(_) => (format!("token_id:{id}"), Vec::new()),
        _ => {
            let text = tokenizer.decode(&[id]).unwrap_or_default();
            let bytes = text.as_bytes().to_vec();
            (text, bytes)
        }
    }
}

/// A token as log-prob entries name it: its text and bytes, or `token_id:N` (with its
/// text's bytes) when `as_ids`.
fn token_entry(tokenizer: &Tokenizer, id: u32, as_ids: bool) -> (String, Vec<u8>) {
    let (text, bytes) = token_piece(tokenizer, id);
    if as_ids {
        (format!("token_id:{id}"), bytes)
    } else {
        (text, bytes)
    }
}

/// Chat's log-prob object for `tokens`.
pub fn chat_logprobs(tokenizer: &Tokenizer, tokens: &[TokenLogprob], as_ids: bool) -> Value {
    let entry = |id: u32, logprob: f32| {
        let (token, bytes) = token_entry(tokenizer, id, as_ids);
        json!({"token": token, "logprob": logprob, "bytes": bytes})
    };
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let mut e = entry(t.id, t.logprob);
            let top: Vec<Value> = t.top.iter().map(|&(id, lp)| entry(id, lp)).collect();
            if let Some(obj) = e.as_object_mut() {
                obj.insert("top_logprobs".into(), Value::Array(top));
            }
            e
        })
        .collect();
    json!({"content": content})
}

/// Completions' log-prob object for `tokens`, whose text starts at `offset` in the choice.
pub fn completion_logprobs(tokenizer: &Tokenizer, tokens: &[TokenLogprob], mut offset: usize, as_ids: bool) -> Value {
    let (mut texts, mut lps, mut tops, mut offsets) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in tokens {
        let (text, bytes) = token_entry(tokenizer, t.id, as_ids);
        offsets.push(offset);
        offset += bytes.len();
        texts.push(text);
        lps.push(t.logprob);
        let top: Map<String, Value> = t
            .top
            .iter()
            .map(|&(id, lp)| (token_entry(tokenizer, id, as_ids).0, json!(lp)))
            .collect();
        tops.push(Value::Object(top));
    }
    json!({"tokens": texts, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

/// The whole (non-streamed) response. `order` lists `(choice index, assembly)` as they
/// are returned.
pub fn full_response(
    endpoint: Endpoint,
    meta: &ResponseMeta,
    order: &[&ChoiceAssembly],
    logprobs: bool,
    tokenizer: &Tokenizer,
    usage: Usage,
) -> Map<String, Value> {
    let choices: Vec<Value> = order
        .iter()
        .enumerate()
        .map(|(index, c)| {
            let finish = finish_reason_str(c.finish_reason);
            match endpoint {
                Endpoint::Chat => {
                    let mut message = json!({"role": "assistant", "content": c.content});
                    if let Some(m) = message.as_object_mut()
                        && !c.reasoning.is_empty()
                    {
                        m.insert("reasoning_content".into(), json!(c.reasoning));
                    }
                    let lp = logprobs.then(|| chat_logprobs(tokenizer, &c.tokens, meta.token_ids));
                    json!({"index": index, "message": message, "finish_reason": finish, "logprobs": lp})
                }
                Endpoint::Completions => {
                    let lp = logprobs.then(|| completion_logprobs(tokenizer, &c.tokens, 0, meta.token_ids));
                    json!({"index": index, "text": c.content, "finish_reason": finish, "logprobs": lp})
                }
            }
        })
        .collect();
    let object = match endpoint {
        Endpoint::Chat => "chat.completion",
        Endpoint::Completions => "text_completion",
    };
    let mut m = meta.object(object, choices);
    m.insert("usage".into(), usage.json());
    m
}

/// One stream chunk's choice: the new text of completion `index` (`offset`: where that
/// text starts in the completion, for completions' `text_offset`; `as_ids`: tokens named
/// `token_id:N`).
pub fn chunk_choice(
    endpoint: Endpoint,
    index: usize,
    piece: &Piece,
    logprobs: bool,
    tokenizer: &Tokenizer,
    offset: usize,
    as_ids: bool,
) -> Value {
    match endpoint {
        Endpoint::Chat => {
            let mut delta = Map::new();
            if !piece.reasoning.is_empty() {
                delta.insert("reasoning_content".into(), json!(piece.reasoning));
            }
            if !piece.content.is_empty() {
                delta.insert("content".into(), json!(piece.content));
            }
            let lp = logprobs.then(|| chat_logprobs(tokenizer, &piece.tokens, as_ids));
            json!({"index": index, "delta": delta, "finish_reason": null, "logprobs": lp})
        }
        Endpoint::Completions => {
            let lp = logprobs.then(|| completion_logprobs(tokenizer, &piece.tokens, offset, as_ids));
            json!({"index": index, "text": piece.content, "finish_reason": null, "logprobs": lp})
        }
    }
}

/// The first chunk of a chat choice: the assistant role.
pub fn role_choice(index: usize) -> Value {
    json!({"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": null, "logprobs": null})
}

/// The last chunk of a choice: its finish reason.
pub fn finish_choice(endpoint: Endpoint, index: usize, c: &ChoiceAssembly) -> Value {
    let finish = finish_reason_str(c.finish_reason);
    match endpoint {
        Endpoint::Chat => json!({"index": index, "delta": {}, "finish_reason": finish, "logprobs": null}),
        Endpoint::Completions => json!({"index": index, "text": "", "finish_reason": finish, "logprobs": null}),
    }
}

/// A chunk object around `choices`; with `include_usage`, `usage: null` as OpenAI sends.
pub fn chunk(endpoint: Endpoint, meta: &ResponseMeta, choices: Vec<Value>, include_usage: bool) -> Value {
    let object = match endpoint {
        Endpoint::Chat => "chat.completion.chunk",
        Endpoint::Completions => "text_completion",
    };
    let mut m = meta.object(object, choices);
    if include_usage {
        m.insert("usage".into(), Value::Null);
    }
    Value::Object(m)
}

/// The usage chunk ending a stream with `include_usage`: no choices.
pub fn usage_chunk(endpoint: Endpoint, meta: &ResponseMeta, usage: Usage) -> Value {
    let mut c = chunk(endpoint, meta, Vec::new(), true);
    if let Some(m) = c.as_object_mut() {
        m.insert("usage".into(), usage.json());
    }
    c
}
