//! A generation request checked against the server's limits and the model, and turned
//! into engine requests: every policy of the API (defaults, limits, what is clipped and
//! what is refused) is decided here, in one place.

use std::sync::Arc;

use r1_core::sampling::SamplingParams;

use super::error::ApiError;
use super::prompt::{PreparedPrompt, chat_prompt, completion_prompts};
use super::registry::LoadedModel;
use super::request::{GenerationBody, StopInput};
use super::state::{AppState, ServeConfig};
use crate::engine::service::GenRequest;
use crate::plugin::PluginReward;

/// Which endpoint a request came to; the response shapes differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

/// `/v1/completions` without `max_tokens` generates this many tokens, as OpenAI's does.
pub const COMPLETIONS_DEFAULT_MAX_TOKENS: usize = 16;
/// Most stop strings a request may give.
pub const MAX_STOP_STRINGS: usize = 16;
/// Most alternatives per token a request may ask for.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// How best-of-N candidates are ranked.
pub enum Ranking {
    /// By a reward plugin's score.
    Reward { name: String, plugin: Arc<PluginReward> },
    /// By mean token log-prob (OpenAI's `best_of` without a reward).
    MeanLogprob,
}

/// A request ready to run.
pub struct Plan {
    pub endpoint: Endpoint,
    pub model: Arc<LoadedModel>,
    pub prompts: Vec<PreparedPrompt>,
    /// One engine request per prompt, each drawing `candidates` completions.
    pub requests: Vec<GenRequest>,
    /// Choices returned per prompt.
    pub n: usize,
    /// Completions drawn per prompt (`best_of`, else `n`).
    pub candidates: usize,
    pub stream: bool,
    pub include_usage: bool,
    /// Split the chain of thought into `reasoning_content` (chat with
    /// `reasoning_format` "deepseek").
    pub split_reasoning: bool,
    /// Alternatives per token to report; `None`: no log-probs in the response.
    pub logprobs: Option<usize>,
    /// Set when candidates are ranked (best-of-N).
    pub ranking: Option<Ranking>,
    pub reference: Option<String>,
    pub metadata: Vec<(String, String)>,
    /// Name tokens `token_id:N` in log-prob entries.
    pub token_ids: bool,
}

/// What a request asks for, checked against the server's limits without its model.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestedFields {
    /// Choices returned per prompt.
    pub n: usize,
    /// Completions drawn per prompt (`best_of`, else `n`).
    pub candidates: usize,
    pub stream: bool,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub logprobs: Option<usize>,
    pub split_reasoning: bool,
    /// The completion budget asked for (`max_completion_tokens` or `max_tokens`; the
    /// completions default when neither is given).
    pub max_tokens: Option<usize>,
}

/// Checks every field of `body` that needs neither the model nor the reward plugins:
/// unsupported features, `n`/`best_of`, sampling, stop strings, log-probs, the reasoning
/// format and `max_tokens`. (The fuzz target `serve_request` runs this on any bytes.)
pub fn check_fields(
    config: &ServeConfig,
    endpoint: Endpoint,
    body: &GenerationBody,
) -> Result<RequestedFields, ApiError> {
    refuse_unsupported(body, endpoint)?;
    let n = body.n.unwrap_or(1);
    if n == 0 || n > config.max_n {
        return Err(ApiError::invalid(
            "n",
            format!("`n` must be between 1 and {}; got {n}", config.max_n),
        ));
    }
    let candidates = body.best_of.unwrap_or(n);
    if candidates < n || candidates > config.max_n {
        return Err(ApiError::invalid(
            "best_of",
            format!(
                "`best_of` must be between n ({n}) and {}; got {candidates}",
                config.max_n
            ),
        ));
    }
    let sampling = sampling(body)?;
    let stop = stop_strings(body.stop.as_ref())?;
    let logprobs = logprobs(endpoint, body.logprobs.as_ref(), body.top_logprobs)?;
    let split_reasoning = match body.reasoning_format.as_deref() {
        None | Some("deepseek") | Some("auto") => endpoint == Endpoint::Chat,
        Some("none") => false,
        Some(other) => {
            return Err(ApiError::invalid(
                "reasoning_format",
                format!("`reasoning_format` must be \"deepseek\" or \"none\"; got \"{other}\""),
            ));
        }
    };
    let (max_tokens, max_param) = match endpoint {
        Endpoint::Chat => match body.max_completion_tokens {
            Some(m) => (Some(m), "max_completion_tokens"),
            None => (body.max_tokens, "max_tokens"),
        },
        Endpoint::Completions => (
            Some(body.max_tokens.unwrap_or(COMPLETIONS_DEFAULT_MAX_TOKENS)),
            "max_tokens",
        ),
    };
    if let Some(m) = max_tokens {
        if m == 0 {
            return Err(ApiError::invalid(
                max_param,
                format!("`{max_param}` must be at least 1"),
            ));
        }
        if let Some(limit) = config.max_tokens_limit
            && m > limit
        {
            return Err(ApiError::invalid(
                max_param,
                format!("`{max_param}` is {m}; this server allows at most {limit}"),
            ));
        }
    }
    Ok(RequestedFields {
        n,
        candidates,
        stream: body.stream.unwrap_or(false),
        sampling,
        stop,
        logprobs,
        split_reasoning,
        max_tokens,
    })
}

/// Checks `body` and builds the plan (resolving, and maybe loading, the model).
pub async fn plan(state: &AppState, endpoint: Endpoint, body: GenerationBody) -> Result<Plan, ApiError> {
    let config = state.config();
    let RequestedFields {
        n,
        candidates,
        stream,
        sampling,
        stop,
        logprobs,
        split_reasoning,
        max_tokens,
    } = check_fields(config, endpoint, &body)?;
    let ranking = ranking(state, &body, n, candidates)?;
    if stream && ranking.is_some() {
        let param = if body.reward.is_some() { "reward" } else { "best_of" };
        return Err(ApiError::invalid(
            param,
            "best-of-N (`best_of` above `n`, or a `reward`) cannot be streamed: the candidates are ranked once all are done",
        ));
    }
    let model = state.models().resolve(&body.model).await?;
    let rows = model.generator.model().max_sequences;
    if candidates > rows {
        let param = if body.best_of.is_some() { "best_of" } else { "n" };
        return Err(ApiError::invalid(
            param,
            format!(
                "`{param}` is {candidates}; the model `{}` decodes at most {rows} sequences at once",
                model.name()
            ),
        ));
    }
    let prompts = match endpoint {
        Endpoint::Chat => {
            let messages = body
                .messages
                .ok_or_else(|| ApiError::invalid("messages", "`messages` is required"))?;
            vec![chat_prompt(&model, &messages, body.tools, body.chat_template_kwargs)?]
        }
        Endpoint::Completions => {
            let prompt = body
                .prompt
                .ok_or_else(|| ApiError::invalid("prompt", "`prompt` is required"))?;
            completion_prompts(&model, prompt)?
        }
    };
    let sampler_logprobs = match body.logprobs_mode.as_deref() {
        None | Some("raw_logprobs") => false,
        Some("processed_logprobs") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "logprobs_mode",
                format!("`logprobs_mode` must be \"raw_logprobs\" or \"processed_logprobs\", not {other:?}"),
            ));
        }
    };
    let context = model.generator.model().context;
    let prompt_param = if endpoint == Endpoint::Chat {
        "messages"
    } else {
        "prompt"
    };
    let mut requests = Vec::with_capacity(prompts.len());
    for p in &prompts {
        let room = context.saturating_sub(p.tokens.len());
        if room == 0 {
            return Err(ApiError::invalid(
                prompt_param,
                format!(
                    "the prompt is {} tokens; the model `{}` has a context of {context} tokens (prompt and completion together)",
                    p.tokens.len(),
                    model.name()
                ),
            )
            .with_code("context_length_exceeded"));
        }
        // Clipped to the room the context leaves: the completion then ends with "length".
        let wanted = max_tokens.or(config.max_tokens_limit).unwrap_or(room);
        requests.push(GenRequest {
            prompt: p.tokens.clone(),
            n: candidates,
            max_new_tokens: wanted.min(room),
            sampling: sampling.clone(),
            seed: body.seed.map(|s| s.value()).unwrap_or_else(|| state.fresh_seed()),
            stop: stop.clone(),
            // Mean log-prob ranking needs each token's log-prob even when the client
            // asked for none.
            top_logprobs: logprobs.or(matches!(ranking, Some(Ranking::MeanLogprob)).then_some(0)),
            ignore_eos: body.ignore_eos.unwrap_or(false),
            sampler_logprobs,
        });
    }
    Ok(Plan {
        endpoint,
        model,
        prompts,
        requests,
        n,
        candidates,
        stream,
        include_usage: body.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
        split_reasoning,
        logprobs,
        ranking,
        reference: body.reference,
        metadata: body.metadata.map(|m| m.into_iter().collect()).unwrap_or_default(),
        token_ids: body.return_tokens_as_token_ids.unwrap_or(false),
    })
}

/// Refuses OpenAI features the server does not implement, rather than ignoring them.
fn refuse_unsupported(body: &GenerationBody, endpoint: Endpoint) -> Result<(), ApiError> {
    let unsupported = |param: &str, what: &str| Err(ApiError::invalid(param, format!("{what} is not supported")));
    if body.echo == Some(true) {
        return unsupported("echo", "`echo`");
    }
    if body.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return unsupported("suffix", "`suffix`");
    }
    if body.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return unsupported("logit_bias", "`logit_bias`");
    }
    if let Some(f) = &body.response_format
        && f.kind != "text"
    {
        return unsupported("response_format", &format!("`response_format` of type \"{}\"", f.kind));
    }
    if endpoint == Endpoint::Completions && body.prompt.is_none() && body.messages.is_some() {
        return Err(ApiError::invalid(
            "prompt",
            "/v1/completions takes a `prompt`; send `messages` to /v1/chat/completions",
        ));
    }
    Ok(())
}

fn ranking(state: &AppState, body: &GenerationBody, n: usize, candidates: usize) -> Result<Option<Ranking>, ApiError> {
    match &body.reward {
        Some(name) => match state.rewards().get(name) {
            Some(plugin) => Ok(Some(Ranking::Reward {
                name: name.clone(),
                plugin,
            })),
            None => {
                let known = state.rewards().names();
                let have = if known.is_empty() {
                    "this server has none (start it with --reward-plugin NAME=path.wasm)".to_string()
                } else {
                    format!("this server has {}", known.join(", "))
                };
                Err(ApiError::invalid(
                    "reward",
                    format!("no reward plugin is named `{name}`; {have}"),
                ))
            }
        },
        None if candidates > n => Ok(Some(Ranking::MeanLogprob)),
        None => Ok(None),
    }
}

fn sampling(body: &GenerationBody) -> Result<SamplingParams, ApiError> {
    let defaults = SamplingParams::default();
    let temperature = body.temperature.unwrap_or(defaults.temperature);
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(ApiError::invalid("temperature", "`temperature` must be a number >= 0"));
    }
    let top_p = body.top_p.unwrap_or(defaults.top_p);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid("top_p", "`top_p` must be in (0, 1]"));
    }
    let min_p = body.min_p.unwrap_or(defaults.min_p);
    if !(0.0..=1.0).contains(&min_p) {
        return Err(ApiError::invalid("min_p", "`min_p` must be in [0, 1]"));
    }
    let top_k = match body.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k > 0 => usize::try_from(k).unwrap_or(usize::MAX),
        Some(_) => {
            return Err(ApiError::invalid(
                "top_k",
                "`top_k` must be >= 1, or -1 or 0 to disable it",
            ));
        }
    };
    let repetition_penalty = body.repetition_penalty.unwrap_or(defaults.repetition_penalty);
    if !(repetition_penalty.is_finite() && repetition_penalty > 0.0) {
        return Err(ApiError::invalid(
            "repetition_penalty",
            "`repetition_penalty` must be a number > 0",
        ));
    }
    let penalty = |value: Option<f32>, param: &str| -> Result<f32, ApiError> {
        let v = value.unwrap_or(0.0);
        if (-2.0..=2.0).contains(&v) {
            Ok(v)
        } else {
            Err(ApiError::invalid(param, format!("`{param}` must be in [-2, 2]")))
        }
    };
    Ok(SamplingParams {
        temperature,
        top_k,
        top_p,
        min_p,
        repetition_penalty,
        presence_penalty: penalty(body.presence_penalty, "presence_penalty")?,
        frequency_penalty: penalty(body.frequency_penalty, "frequency_penalty")?,
    })
}

fn stop_strings(stop: Option<&StopInput>) -> Result<Vec<String>, ApiError> {
    let stop = stop.map(|s| s.clone().into_vec()).unwrap_or_default();
    if stop.len() > MAX_STOP_STRINGS {
        return Err(ApiError::invalid(
            "stop",
            format!("at most {MAX_STOP_STRINGS} stop strings are allowed"),
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid("stop", "stop strings must not be empty"));
    }
    Ok(stop)
}

/// Chat: `logprobs: true` with `top_logprobs: k`; completions: `logprobs: k`.
fn logprobs(
    endpoint: Endpoint,
    logprobs: Option<&serde_json::Value>,
    top_logprobs: Option<usize>,
) -> Result<Option<usize>, ApiError> {
    use serde_json::Value;
    let too_many = |param: &str, k: usize| {
        ApiError::invalid(
            param,
            format!("`{param}` is {k}; at most {MAX_TOP_LOGPROBS} alternatives per token"),
        )
    };
    match endpoint {
        Endpoint::Chat => {
            let on = match logprobs {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(ApiError::invalid("logprobs", "`logprobs` must be a boolean")),
            };
            match (on, top_logprobs) {
                (_, Some(k)) if k > MAX_TOP_LOGPROBS => Err(too_many("top_logprobs", k)),
                (false, Some(_)) => Err(ApiError::invalid(
                    "top_logprobs",
                    "`top_logprobs` needs `logprobs: true`",
                )),
                (false, None) => Ok(None),
                (true, k) => Ok(Some(k.unwrap_or(0))),
            }
        }
        Endpoint::Completions => match logprobs {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(k)) => match k.as_u64().and_then(|k| usize::try_from(k).ok()) {
                Some(k) if k <= MAX_TOP_LOGPROBS => Ok(Some(k)),
                Some(k) => Err(too_many("logprobs", k)),
                None => Err(ApiError::invalid("logprobs", "`logprobs` must be an integer >= 0")),
            },
            Some(_) => Err(ApiError::invalid(
                "logprobs",
                "`logprobs` must be an integer (alternatives per token)",
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_logprobs_take_a_bool_and_completions_an_int() {
        assert_eq!(logprobs(Endpoint::Chat, Some(&json!(true)), Some(3)), Ok(Some(3)));
        assert_eq!(logprobs(Endpoint::Chat, None, None), Ok(None));
        assert_eq!(
            logprobs(Endpoint::Chat, Some(&json!(2)), None)
                .unwrap_err()
                .param
                .as_deref(),
            Some("logprobs")
        );
        assert_eq!(logprobs(Endpoint::Completions, Some(&json!(2)), None), Ok(Some(2)));
        assert_eq!(
            logprobs(Endpoint::Completions, Some(&json!(true)), None)
                .unwrap_err()
                .param
                .as_deref(),
            Some("logprobs")
        );
        assert_eq!(
            logprobs(Endpoint::Chat, Some(&json!(true)), Some(99))
                .unwrap_err()
                .param
                .as_deref(),
            Some("top_logprobs")
        );
    }

    #[test]
    fn sampling_ranges_name_the_parameter() {
        let body = |v: serde_json::Value| -> GenerationBody { serde_json::from_value(v).unwrap() };
        let err = |v| sampling(&body(v)).unwrap_err().param;
        assert_eq!(
            err(json!({"model": "m", "temperature": -1.0})).as_deref(),
            Some("temperature")
        );
        assert_eq!(err(json!({"model": "m", "top_p": 0.0})).as_deref(), Some("top_p"));
        assert_eq!(
            err(json!({"model": "m", "presence_penalty": 3.0})).as_deref(),
            Some("presence_penalty")
        );
        assert_eq!(err(json!({"model": "m", "top_k": -5})).as_deref(), Some("top_k"));
        let s = sampling(&body(json!({"model": "m", "top_k": -1, "temperature": 0}))).unwrap();
        assert_eq!((s.top_k, s.temperature), (0, 0.0));
    }

    #[test]
    fn empty_stop_strings_are_refused() {
        assert!(stop_strings(Some(&StopInput::One(String::new()))).is_err());
        assert_eq!(
            stop_strings(Some(&StopInput::One("x".into()))),
            Ok(vec!["x".to_string()])
        );
    }
}
