//! From a request's `messages` or `prompt` to token ids: roles checked, content parts
//! flattened, the model's chat template applied, text encoded with the model's tokenizer.

use serde_json::{Map, Value};

use super::error::ApiError;
use super::registry::LoadedModel;
use super::request::PromptInput;
use crate::chat::{ChatError, ChatTemplate, RenderOptions};
use crate::io::{IoError, Tokenizer};

/// The roles a chat message may have.
pub const ROLES: [&str; 5] = ["system", "user", "assistant", "tool", "developer"];

/// One prompt ready for the engine.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedPrompt {
    pub tokens: Vec<u32>,
    /// What a reward plugin sees as the sample's prompt: the last user message of a chat,
    /// the text of a completion prompt.
    pub text: String,
    /// The rendered prompt ends inside an open `<think>` block (chat only).
    pub opens_reasoning: bool,
}

/// Renders and encodes a chat with the model's template and tokenizer.
pub fn chat_prompt(
    model: &LoadedModel,
    messages: &[Value],
    tools: Option<Value>,
    extra: Option<Map<String, Value>>,
) -> Result<PreparedPrompt, ApiError> {
    let tokenizer = &model.generator.model().tokenizer;
    chat_prompt_with(&model.template, tokenizer, model.name(), messages, tools, extra)
}

/// [`chat_prompt`] with the template and tokenizer given (`model` names the model in
/// messages).
pub fn chat_prompt_with(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    model: &str,
    messages: &[Value],
    tools: Option<Value>,
    extra: Option<Map<String, Value>>,
) -> Result<PreparedPrompt, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must hold at least one message",
        ));
    }
    let normalized = messages
        .iter()
        .enumerate()
        .map(|(i, m)| normalize_message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let last_user = normalized
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(text_of)
        .unwrap_or_default();
    let options = RenderOptions {
        add_generation_prompt: true,
        tools,
        extra: extra.unwrap_or_default(),
    };
    let rendered = template
        .render(&normalized, &options)
        .map_err(|e| render_error(e, model))?;
    let tokens = encode(tokenizer, &rendered, model, "messages")?;
    Ok(PreparedPrompt {
        tokens,
        text: last_user,
        opens_reasoning: r1_core::reasoning::prompt_opens_reasoning(&rendered),
    })
}

/// A template that refuses the messages is the request's fault (400); one that cannot
/// be read or parsed is the server's (500).
fn render_error(e: ChatError, model: &str) -> ApiError {
    match e {
        ChatError::Syntax { .. }
        | ChatError::File { .. }
        | ChatError::BadConfig { .. }
        | ChatError::NoTemplate { .. } => ApiError::internal(format!("the chat template of `{model}` is broken: {e}")),
        ChatError::ReservedArgument(_) => ApiError::invalid("chat_template_kwargs", e.to_string()),
        other => ApiError::invalid("messages", format!("the chat template refused the messages: {other}")),
    }
}

/// A message with a known role and, when its content is a list of parts, only text
/// parts; `developer` becomes `system` (the templates of open models know no developer
/// role). The chat module prepares the rest as transformers does.
fn normalize_message(i: usize, message: &Value) -> Result<Value, ApiError> {
    let Some(obj) = message.as_object() else {
        return Err(ApiError::invalid(
            format!("messages[{i}]"),
            format!("messages[{i}] must be an object"),
        ));
    };
    let role = match obj.get("role") {
        Some(Value::String(r)) => r.as_str(),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("messages[{i}].role"),
                format!("messages[{i}].role must be a string"),
            ));
        }
        None => {
            return Err(ApiError::invalid(
                format!("messages[{i}].role"),
                format!("messages[{i}] has no `role`"),
            ));
        }
    };
    if !ROLES.contains(&role) {
        return Err(ApiError::invalid(
            format!("messages[{i}].role"),
            format!(
                "messages[{i}] has the unknown role `{role}`; expected one of {}",
                ROLES.join(", ")
            ),
        ));
    }
    match obj.get("content") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(Value::Array(parts)) => check_parts(i, parts)?,
        Some(_) => {
            return Err(ApiError::invalid(
                format!("messages[{i}].content"),
                format!("messages[{i}].content must be a string or an array of text parts"),
            ));
        }
    }
    let mut out = obj.clone();
    if role == "developer" {
        out.insert("role".into(), Value::String("system".into()));
    }
    Ok(Value::Object(out))
}

/// Content parts must be `{"type": "text", "text": …}`: the models served read text only.
fn check_parts(i: usize, parts: &[Value]) -> Result<(), ApiError> {
    for (j, part) in parts.iter().enumerate() {
        let param = || format!("messages[{i}].content[{j}]");
        match (part.get("type").and_then(Value::as_str), part.get("text")) {
            (Some("text"), Some(Value::String(_))) => {}
            (Some(other), _) if other != "text" => {
                return Err(ApiError::invalid(
                    param(),
                    format!(
                        "{}: content parts of type `{other}` are not supported (only text)",
                        param()
                    ),
                ));
            }
            _ => {
                return Err(ApiError::invalid(
                    param(),
                    format!("{} must be {{\"type\": \"text\", \"text\": …}}", param()),
                ));
            }
        }
    }
    Ok(())
}

/// A message's text: its string content, or its text parts joined by spaces (as the
/// chat module joins them for the template).
fn text_of(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The prompts of a `/v1/completions` request (one per string or token list).
pub fn completion_prompts(model: &LoadedModel, prompt: PromptInput) -> Result<Vec<PreparedPrompt>, ApiError> {
    completion_prompts_with(&model.generator.model().tokenizer, model.name(), prompt)
}

/// [`completion_prompts`] with the tokenizer given (`model` names the model in messages).
pub fn completion_prompts_with(
    tokenizer: &Tokenizer,
    model: &str,
    prompt: PromptInput,
) -> Result<Vec<PreparedPrompt>, ApiError> {
    let from_text = |text: String| -> Result<PreparedPrompt, ApiError> {
        Ok(PreparedPrompt {
            tokens: encode(tokenizer, &text, model, "prompt")?,
            text,
            opens_reasoning: false,
        })
    };
    let from_ids = |tokens: Vec<u32>| PreparedPrompt {
        text: tokenizer.decode(&tokens).unwrap_or_default(),
        tokens,
        opens_reasoning: false,
    };
    let prompts = match prompt {
        PromptInput::Text(t) => vec![from_text(t)?],
        PromptInput::Texts(ts) => ts.into_iter().map(from_text).collect::<Result<_, _>>()?,
        PromptInput::Tokens(ids) => vec![from_ids(ids)],
        PromptInput::TokenLists(lists) => lists.into_iter().map(from_ids).collect(),
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid("prompt", "`prompt` must not be an empty list"));
    }
    if prompts.iter().any(|p| p.tokens.is_empty()) {
        return Err(ApiError::invalid("prompt", "the prompt is empty"));
    }
    Ok(prompts)
}

fn encode(tokenizer: &Tokenizer, text: &str, model: &str, param: &str) -> Result<Vec<u32>, ApiError> {
    tokenizer.encode(text).map_err(|e| match e {
        IoError::NoTokenizer { .. } => ApiError::invalid(
            param,
            format!(
                "the model `{model}` has no tokenizer: it takes token ids only (a `prompt` of ids on /v1/completions)"
            ),
        ),
        other => ApiError::invalid(param, format!("could not encode the {param}: {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_role_is_named() {
        let e = normalize_message(2, &json!({"role": "wizard", "content": "hi"})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[2].role"));
        assert!(e.message.contains("`wizard`"), "{}", e.message);
    }

    #[test]
    fn text_parts_pass_and_developer_is_system() {
        let parts = json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]);
        let m = normalize_message(0, &json!({"role": "developer", "content": parts})).unwrap();
        assert_eq!(m, json!({"role": "system", "content": parts}));
        assert_eq!(text_of(&m), "a b");
    }

    #[test]
    fn image_parts_are_refused() {
        let e = normalize_message(
            0,
            &json!({"role": "user", "content": [{"type": "image_url", "image_url": {}}]}),
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
    }
}
