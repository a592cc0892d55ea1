//! Reward plugin for the R1 output format: the completion reasons inside one
//! `<think>…</think>` block and then answers, by default inside one `<answer>…</answer>`
//! block (DeepSeek-R1's training template). Shows a plugin with a config: `r1_init`
//! receives `{"require_answer_tags": false}` to accept a bare answer after `</think>`
//! (the R1-Distill chat format).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

use r1_plugin::{Diagnostics, PluginInfoStatic, RewardPlugin, Sample, Score, ScoreError};

#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThinkFormat {
    /// Whether the answer must be wrapped in `<answer>…</answer>`.
    pub require_answer_tags: bool,
}

impl Default for ThinkFormat {
    fn default() -> Self {
        ThinkFormat {
            require_answer_tags: true,
        }
    }
}

/// The single block `open…close` of `text`: (inside, after), or why there is none.
fn single_block<'a>(text: &'a str, open: &str, close: &str) -> Result<(&'a str, &'a str), &'static str> {
    if text.matches(open).count() != 1 || text.matches(close).count() != 1 {
        return Err("expected exactly one opening and one closing tag");
    }
    let start = text.find(open).ok_or("missing opening tag")? + open.len();
    let end = text[start..].find(close).ok_or("closing tag before opening tag")? + start;
    Ok((&text[start..end], &text[end + close.len()..]))
}

impl ThinkFormat {
    /// `Ok` when `completion` has the format, else what is wrong.
    pub fn check(&self, completion: &str) -> Result<(), &'static str> {
        let text = completion.trim_start();
        if !text.starts_with("<think>") {
            return Err("does not start with <think>");
        }
        let (thought, rest) =
            single_block(text, "<think>", "</think>").map_err(|_| "needs exactly one <think>…</think>")?;
        if thought.trim().is_empty() {
            return Err("empty <think> block");
        }
        let rest = rest.trim();
        if rest.is_empty() {
            return Err("no answer after </think>");
        }
        if !self.require_answer_tags {
            return Ok(());
        }
        if !rest.starts_with("<answer>") || !rest.ends_with("</answer>") {
            return Err("the answer is not wrapped in <answer>…</answer>");
        }
        let (answer, _) =
            single_block(rest, "<answer>", "</answer>").map_err(|_| "needs exactly one <answer>…</answer>")?;
        if answer.trim().is_empty() {
            return Err("empty <answer> block");
        }
        Ok(())
    }
}

impl RewardPlugin for ThinkFormat {
    const INFO: PluginInfoStatic = PluginInfoStatic {
        name: "think-format",
        version: env!("CARGO_PKG_VERSION"),
        description: "1 when the completion reasons in one <think> block, then answers (in <answer> tags unless \
                      configured otherwise)",
    };

    fn new(config: &str) -> Result<Self, ScoreError> {
        let config: Option<ThinkFormat> =
            serde_json::from_str(config).map_err(|e| ScoreError::new(alloc::format!("config: {e}")))?;
        Ok(config.unwrap_or_default())
    }

    fn score(&self, sample: &Sample, diagnostics: &mut Diagnostics) -> Score {
        match self.check(&sample.completion) {
            Ok(()) => Score::Value(1.0),
            Err(why) => {
                diagnostics.note(why);
                Score::Value(0.0)
            }
        }
    }
}

r1_plugin::export_plugin!(ThinkFormat);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r1_template_passes_and_its_breakages_fail() {
        let f = ThinkFormat::default();
        assert_eq!(f.check("<think>\n6*7 is 42\n</think>\n<answer>42</answer>"), Ok(()));
        assert_eq!(f.check("  <think>x</think> <answer> 42 </answer>\n"), Ok(()));
        assert!(f.check("<answer>42</answer>").is_err());
        assert!(f.check("<think></think><answer>42</answer>").is_err());
        assert!(f.check("<think>x</think><think>y</think><answer>42</answer>").is_err());
        assert!(f.check("<think>x</think>42").is_err());
        assert!(f.check("<think>x</think><answer>42</answer> trailing").is_err());
        assert!(f.check("<think>x</think><answer> </answer>").is_err());
    }

    #[test]
    fn config_can_drop_the_answer_tags() {
        let f = ThinkFormat::new(r#"{"require_answer_tags": false}"#).unwrap();
        assert_eq!(f.check("<think>x</think>\n\nThe answer is 42."), Ok(()));
        assert!(f.check("<think>x</think>").is_err());
        assert_eq!(ThinkFormat::new("null").unwrap(), ThinkFormat::default());
        assert!(ThinkFormat::new(r#"{"strict": true}"#).is_err());
    }
}
