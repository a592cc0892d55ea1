//! OpenAI-style messages prepared the way Hugging Face hands them to a template
//! (`apply_chat_template` in transformers 5): keys whose value is `null` dropped, the
//! reasoning copied under both names templates read (`reasoning_content`, `thinking`),
//! and — as `transformers serve` does for text-only models — content given as a list of
//! text parts joined into one string.

use serde_json::{Map, Value};

use crate::chat::ChatError;

/// Names a message's reasoning may come under, the first present wins
/// (transformers' `_REASONING_FIELDS`).
const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

/// The messages as the template sees them.
pub fn template_messages(messages: &[Value]) -> Result<Vec<Value>, ChatError> {
    messages
        .iter()
        .enumerate()
        .map(|(index, m)| template_message(m).map_err(|detail| ChatError::BadMessage { index, detail }))
        .collect()
}

fn template_message(message: &Value) -> Result<Value, String> {
    let Value::Object(fields) = message else {
        return Err(format!("must be a JSON object, not {}", json_kind(message)));
    };
    let mut out: Map<String, Value> = fields
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(Value::Array(parts)) = out.get("content")
        && parts.iter().all(is_text_part)
    {
        let texts = parts.iter().map(part_text).collect::<Result<Vec<_>, _>>()?;
        out.insert("content".into(), Value::String(texts.join(" ")));
    }
    let reasoning = REASONING_FIELDS.iter().find_map(|k| out.get(*k)).cloned();
    if let Some(reasoning) = reasoning {
        // {"thinking": r, **message, "reasoning_content": r}
        let mut aliased = Map::with_capacity(out.len() + 2);
        aliased.insert("thinking".into(), reasoning.clone());
        aliased.extend(out);
        aliased.insert("reasoning_content".into(), reasoning);
        out = aliased;
    }
    Ok(Value::Object(out))
}

fn is_text_part(part: &Value) -> bool {
    part.get("type").and_then(Value::as_str) == Some("text")
}

fn part_text(part: &Value) -> Result<&str, String> {
    part.get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| "a content part of type `text` needs a string `text`".to_string())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn null_fields_are_dropped_and_text_parts_joined() {
        let m = template_messages(&[json!({
            "role": "user",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "name": null
        })])
        .unwrap();
        assert_eq!(m[0], json!({"role": "user", "content": "a b"}));
    }

    #[test]
    fn reasoning_is_readable_as_reasoning_content_and_thinking() {
        let m = template_messages(&[json!({"role": "assistant", "content": "4", "reasoning": "2+2"})]).unwrap();
        assert_eq!(
            serde_json::to_string(&m[0]).unwrap(),
            r#"{"thinking":"2+2","role":"assistant","content":"4","reasoning":"2+2","reasoning_content":"2+2"}"#
        );
    }

    #[test]
    fn a_message_that_is_not_an_object_is_refused_with_its_index() {
        let err = template_messages(&[json!({"role": "user", "content": "hi"}), json!("hi")]).unwrap_err();
        assert_eq!(err.to_string(), "message 1: must be a JSON object, not a string");
    }
}
