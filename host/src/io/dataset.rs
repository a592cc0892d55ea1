//! JSONL datasets: one JSON object per line with a prompt field and a target field
//! (`completion` for SFT, `answer` for GRPO, or any names the run configures). Other
//! fields ride along as metadata for rewards. Blank lines are skipped; every error names
//! the line (1-based, counting blank lines) and the field.

use std::path::Path;

use serde_json::{Map, Value};

use crate::io::error::{IoError, json_message};

/// Which fields of a row hold the prompt and the target text.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetFields {
    pub prompt: String,
    /// `completion` (SFT) or `answer` (GRPO reference answers).
    pub target: String,
    /// Whether the target may be a JSON number (`"answer": 42`); a completion must be
    /// text, which a model is trained to write, and not empty.
    #[serde(default)]
    pub numeric_target: bool,
}

impl DatasetFields {
    /// `{"prompt", "completion"}`: SFT rows.
    pub fn sft() -> DatasetFields {
        DatasetFields {
            prompt: "prompt".into(),
            target: "completion".into(),
            numeric_target: false,
        }
    }

    /// `{"prompt", "answer"}`: GRPO rows with a reference answer.
    pub fn grpo() -> DatasetFields {
        DatasetFields {
            prompt: "prompt".into(),
            target: "answer".into(),
            numeric_target: true,
        }
    }
}

impl Default for DatasetFields {
    fn default() -> Self {
        DatasetFields::sft()
    }
}

/// One row of a dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetRow {
    /// 1-based line in the file, for messages about this row later on.
    pub line: usize,
    pub prompt: String,
    /// The value of [`DatasetFields::target`].
    pub target: String,
    /// Every other field, sorted by key; strings as they are, other values as JSON text.
    pub metadata: Vec<(String, String)>,
}

/// Reads a JSONL file.
pub fn read_jsonl(path: &Path, fields: &DatasetFields) -> Result<Vec<DatasetRow>, IoError> {
    let bytes = std::fs::read(path).map_err(|e| IoError::file(path, e))?;
    parse_jsonl(&bytes, &path.display().to_string(), fields)
}

/// Parses JSONL bytes; `file` names the source in errors. An empty result is an error.
pub fn parse_jsonl(bytes: &[u8], file: &str, fields: &DatasetFields) -> Result<Vec<DatasetRow>, IoError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut rows = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let line_err = |detail: String| IoError::DatasetLine {
            file: file.to_string(),
            line,
            detail,
        };
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|e| line_err(format!("invalid UTF-8: {e}")))?;
        if text.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| line_err(format!("invalid JSON at column {}: {}", e.column(), json_message(&e))))?;
        let Value::Object(mut obj) = value else {
            return Err(line_err(format!("expected a JSON object, found {}", kind(&value))));
        };
        let prompt = take_text(&mut obj, &fields.prompt, false, file, line)?;
        let target = take_text(&mut obj, &fields.target, fields.numeric_target, file, line)?;
        if !fields.numeric_target && target.is_empty() {
            // Nothing to learn from: the row would train on the end-of-sequence token only.
            return Err(line_err(format!("field `{}` is empty", fields.target)));
        }
        let mut metadata: Vec<(String, String)> = obj.into_iter().map(|(k, v)| (k, value_text(v))).collect();
        // Sorted here, not by the map: serde_json keeps the file's key order.
        metadata.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        rows.push(DatasetRow {
            line,
            prompt,
            target,
            metadata,
        });
    }
    if rows.is_empty() {
        return Err(IoError::EmptyDataset { file: file.to_string() });
    }
    Ok(rows)
}

/// Removes `field` from the row: a string, or with `numbers` also a number (answers are
/// often numbers); anything else is an error naming the field.
fn take_text(
    obj: &mut Map<String, Value>,
    field: &str,
    numbers: bool,
    file: &str,
    line: usize,
) -> Result<String, IoError> {
    match obj.remove(field) {
        None => Err(IoError::MissingField {
            file: file.to_string(),
            line,
            field: field.to_string(),
        }),
        Some(Value::String(s)) => Ok(s),
        Some(Value::Number(n)) if numbers => Ok(n.to_string()),
        Some(other) => Err(IoError::DatasetLine {
            file: file.to_string(),
            line,
            detail: format!("field `{field}` must be a string, found {}", kind(&other)),
        }),
    }
}

fn value_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
