//! Reading `metrics.jsonl` once into typed records: each line's stage and the number (if
//! any) under every key, so the rest of plotting never touches JSON.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::PlotError;

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct MetricRecord {
    /// The `stage` key, when it is a string.
    pub stage: Option<String>,
    /// Every key of the line, with its value when that is a finite number (null, strings
    /// and non-finite numbers are gaps).
    values: BTreeMap<String, Option<f64>>,
}

impl MetricRecord {
    /// The record of a JSON object; `None` for any other JSON value.
    pub fn from_json(value: &Value) -> Option<MetricRecord> {
        let object = value.as_object()?;
        Some(MetricRecord {
            stage: object.get("stage").and_then(Value::as_str).map(str::to_string),
            values: object
                .iter()
                .map(|(k, v)| (k.clone(), v.as_f64().filter(|v| v.is_finite())))
                .collect(),
        })
    }

    /// A finite number stored under `key`, if any.
    pub fn number(&self, key: &str) -> Option<f64> {
        self.values.get(key).copied().flatten()
    }

    /// Every key of the line, numeric or not.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// This record placed at `x` on the axis (written as its `global_step`).
    pub fn at_global_step(&self, x: f64) -> MetricRecord {
        let mut moved = self.clone();
        moved
            .values
            .insert("global_step".into(), Some(x).filter(|x| x.is_finite()));
        moved
    }
}

/// Reads `metrics.jsonl` as one JSON object per non-blank line. A last line that does not
/// parse and has no newline is skipped: it is a line a live run is still writing.
pub(super) fn read_metric_records(path: &Path) -> Result<Vec<MetricRecord>, PlotError> {
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => PlotError::MissingMetrics {
            path: path.to_path_buf(),
        },
        _ => PlotError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let complete = bytes.ends_with(b"\n");
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let mut records = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let bad = |detail: String| PlotError::BadLine {
            path: path.to_path_buf(),
            line: i + 1,
            detail,
        };
        match serde_json::from_slice::<Value>(line) {
            Ok(value) => match MetricRecord::from_json(&value) {
                Some(record) => records.push(record),
                None => return Err(bad(format!("expected a JSON object, found `{value}`"))),
            },
            Err(_) if i + 1 == lines.len() && !complete => {}
            Err(e) => return Err(bad(format!("not valid JSON: {e}"))),
        }
    }
    Ok(records)
}

/// Records from JSON literals, for the unit tests of the other plot modules.
#[cfg(test)]
pub(super) fn records(values: &[Value]) -> Vec<MetricRecord> {
    values
        .iter()
        .map(|v| MetricRecord::from_json(v).expect("an object"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nulls_strings_and_missing_keys_are_gaps_but_their_keys_are_kept() {
        let record =
            MetricRecord::from_json(&json!({"stage": "sft", "loss": null, "kl": "nan", "step": 3})).expect("an object");
        assert_eq!(record.stage.as_deref(), Some("sft"));
        assert_eq!(record.number("step"), Some(3.0));
        assert_eq!(record.number("loss"), None);
        assert_eq!(record.number("kl"), None);
        assert_eq!(record.number("reward"), None);
        assert_eq!(record.keys().collect::<Vec<_>>(), vec!["kl", "loss", "stage", "step"]);
        assert_eq!(record.at_global_step(7.0).number("global_step"), Some(7.0));
    }

    #[test]
    fn a_stage_that_is_not_a_string_is_no_stage() {
        let record = MetricRecord::from_json(&json!({"stage": 2})).expect("an object");
        assert_eq!(record.stage, None);
        assert_eq!(MetricRecord::from_json(&json!([1, 2])), None);
    }
}
