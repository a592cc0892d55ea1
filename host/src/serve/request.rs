//! The body of `/v1/chat/completions` and `/v1/completions` requests, with OpenAI's field
//! names (and the llama-server/vLLM extensions `top_k`, `min_p`, `repetition_penalty`,
//! `ignore_eos`, `reasoning_format`), and the extractor that turns a body into it.
//!
//! Unknown fields are ignored (clients send `user`, `metadata`, `store`, … freely); a
//! known field of the wrong type is a 400 naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The fields both generation endpoints take (each checks the ones that are its own).
#[derive(Debug, Default, Deserialize)]
pub struct GenerationBody {
    pub model: String,
    /// Chat: the conversation, as OpenAI message objects (checked in `prompt.rs`).
    pub messages: Option<Vec<serde_json::Value>>,
    /// Completions: the prompt.
    pub prompt: Option<PromptInput>,
    pub n: Option<usize>,
    pub best_of: Option<usize>,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// vLLM's `-1` (and 0) disable it.
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub seed: Option<Seed>,
    pub stop: Option<StopInput>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Chat: a boolean; completions: how many alternatives per token (an integer).
    pub logprobs: Option<serde_json::Value>,
    /// Chat: alternatives per token when `logprobs` is true.
    pub top_logprobs: Option<usize>,
    /// `"deepseek"` (default): the chain of thought goes to `reasoning_content`;
    /// `"none"`: everything is `content`.
    pub reasoning_format: Option<String>,
    pub ignore_eos: Option<bool>,
    /// vLLM's: log-prob entries name tokens `token_id:N`.
    pub return_tokens_as_token_ids: Option<bool>,
    /// `"raw_logprobs"` (default): log-probs of the model's distribution;
    /// `"processed_logprobs"`: of the distribution each token was drawn from (after
    /// penalties, temperature, top-k/p, min-p), and the EOS token is listed too — vLLM's
    /// `--logprobs-mode` names, per request here. What a GRPO trainer sampling here needs.
    pub logprobs_mode: Option<String>,
    /// Best-of-N: the reward plugin (as named by `--reward-plugin NAME=…`) ranking the
    /// candidates.
    pub reward: Option<String>,
    /// Best-of-N: the reference answer handed to the reward plugin.
    pub reference: Option<String>,
    /// OpenAI's request metadata; handed to the reward plugin as sample metadata.
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
    /// Chat: tools, for templates that render them.
    pub tools: Option<serde_json::Value>,
    /// Chat: extra variables for the chat template (vLLM's name).
    pub chat_template_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
    /// Completions: unsupported when true.
    pub echo: Option<bool>,
    /// Completions: unsupported when non-empty.
    pub suffix: Option<String>,
    /// Unsupported when non-empty.
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
    /// Only `{"type": "text"}` is supported.
    pub response_format: Option<ResponseFormat>,
}

/// `prompt`: text, several texts, token ids, or several lists of token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// `stop`: one string or several.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum StopInput {
    One(String),
    Many(Vec<String>),
}

impl StopInput {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopInput::One(s) => vec![s],
            StopInput::Many(v) => v,
        }
    }
}

/// `seed`: any 64-bit integer (negative seeds are taken modulo 2^64).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(untagged)]
pub enum Seed {
    Unsigned(u64),
    Signed(i64),
}

impl Seed {
    pub fn value(self) -> u64 {
        match self {
            Seed::Unsigned(s) => s,
            Seed::Signed(s) => s as u64,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
}

/// A JSON body parsed into `T`, every failure an OpenAI error: 413 over the size limit,
/// 400 for bad JSON or a field of the wrong type (naming it as `param`).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().map(|l| l.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::body_too_large(limit.unwrap_or_default())
            } else {
                ApiError::bad_request(format!("could not read the request body: {}", rejection.body_text()))
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The body-size limit in force, put in each request's extensions for error messages.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// Parses `bytes` as `T`, naming the field at fault in the error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request(format!("the request body is not valid JSON: {inner}"));
        }
        let message = inner.to_string();
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(field, _)| field.to_string());
        if let Some(field) = missing {
            ApiError::invalid(field.clone(), format!("`{field}` is required"))
        } else if path.is_empty() || path == "." {
            ApiError::bad_request(format!("the request body is not a valid request: {inner}"))
        } else {
            ApiError::invalid(path.clone(), format!("`{path}`: {inner}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_type_names_the_field() {
        let e = parse_json::<GenerationBody>(br#"{"model": "m", "n": "two"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("n"));
        assert!(e.message.contains("invalid type"), "{}", e.message);
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        let e = parse_json::<GenerationBody>(br#"{"model": "m","#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }

    #[test]
    fn unknown_openai_fields_are_ignored() {
        let b: GenerationBody =
            parse_json(br#"{"model": "m", "user": "u1", "store": false, "seed": -1, "stop": "x"}"#).unwrap();
        assert_eq!(b.seed.map(Seed::value), Some(u64::MAX));
        assert_eq!(b.stop.map(StopInput::into_vec), Some(vec!["x".to_string()]));
    }

    #[test]
    fn missing_model_is_named() {
        let e = parse_json::<GenerationBody>(br#"{"messages": []}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
        assert_eq!(e.message, "`model` is required");
    }

    #[test]
    fn token_id_prompts_parse() {
        let b: GenerationBody = parse_json(br#"{"model": "m", "prompt": [1, 2, 3]}"#).unwrap();
        assert!(matches!(b.prompt, Some(PromptInput::Tokens(ref t)) if t == &[1, 2, 3]));
    }
}
