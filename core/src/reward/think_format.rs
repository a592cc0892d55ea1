//! The think-format reward: is the completion a chain of thought in `<think>…</think>`
//! followed by a non-empty answer (optionally wrapped in `<answer>…</answer>`, the R1-Zero
//! prompt's format)? Strict mode wants open-r1's exact newlines; lenient mode is TRL's
//! `think_format_reward` plus a non-empty answer. Templates that open `<think>` in the prompt
//! (DeepSeek-R1-Distill) are recognised.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::{Reward, RewardError, RewardErrorKind, Sample, Score};
pub use crate::reasoning::{THINK_CLOSE, THINK_OPEN};
/// Opening tag of the answer (R1-Zero format).
pub const ANSWER_OPEN: &str = "<answer>";
/// Closing tag of the answer (R1-Zero format).
pub const ANSWER_CLOSE: &str = "</answer>";

/// How exactly the tags must be laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormatMode {
    /// `<think>\n…\n</think>\n…` (and `<answer>\n…\n</answer>` at the very end), as
    /// open-r1's `format_reward`; nothing before `<think>`.
    Strict,
    /// Whitespace is free; one think block, closed, with something in it and after it.
    #[default]
    Lenient,
}

/// Whether the chat template already wrote `<think>` at the end of the prompt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThinkInPrompt {
    /// When the prompt ends with `<think>` (ignoring whitespace).
    #[default]
    Auto,
    /// The prompt always opens the think block: the completion starts inside it.
    Always,
    /// The prompt never opens it: the completion must open `<think>` itself.
    Never,
}

impl ThinkInPrompt {
    /// Whether `prompt` opened the think block, so the completion starts inside it.
    pub fn opened(self, prompt: &str) -> bool {
        match self {
            ThinkInPrompt::Auto => prompt.trim_end().ends_with(THINK_OPEN),
            ThinkInPrompt::Always => true,
            ThinkInPrompt::Never => false,
        }
    }
}

/// Configuration of [`ThinkFormat`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThinkFormatConfig {
    /// How strictly the tags' layout is checked.
    pub mode: FormatMode,
    /// The answer after `</think>` must be `<answer>…</answer>` (R1-Zero prompts).
    pub answer_tags: bool,
    /// Whether the prompt's chat template already opened `<think>`.
    pub think_in_prompt: ThinkInPrompt,
    /// Score of a well-formed completion.
    pub correct: f32,
    /// Score of any other completion.
    pub incorrect: f32,
}

impl Default for ThinkFormatConfig {
    fn default() -> Self {
        ThinkFormatConfig {
            mode: FormatMode::Lenient,
            answer_tags: false,
            think_in_prompt: ThinkInPrompt::Auto,
            correct: 1.0,
            incorrect: 0.0,
        }
    }
}

/// Whether `completion` (answering `prompt`) has the think format `config` asks for.
pub fn has_think_format(prompt: &str, completion: &str, config: &ThinkFormatConfig) -> bool {
    let opened = config.think_in_prompt.opened(prompt);
    match config.mode {
        FormatMode::Lenient => lenient(completion, opened, config.answer_tags),
        FormatMode::Strict => strict(completion, opened, config.answer_tags),
    }
}

fn lenient(completion: &str, opened: bool, answer_tags: bool) -> bool {
    let text = completion.trim_start();
    let body = match text.strip_prefix(THINK_OPEN) {
        Some(rest) => rest,
        None if opened => text,
        None => return false,
    };
    if body.contains(THINK_OPEN) {
        return false;
    }
    let Some(close) = body.find(THINK_CLOSE) else {
        return false;
    };
    let (reasoning, answer) = (&body[..close], &body[close + THINK_CLOSE.len()..]);
    if reasoning.trim().is_empty() || answer.contains(THINK_CLOSE) {
        return false;
    }
    let answer = answer.trim();
    if !answer_tags {
        return !answer.is_empty();
    }
    match answer
        .strip_prefix(ANSWER_OPEN)
        .and_then(|a| a.strip_suffix(ANSWER_CLOSE))
    {
        Some(inner) => !inner.contains(ANSWER_OPEN) && !inner.contains(ANSWER_CLOSE) && !inner.trim().is_empty(),
        None => false,
    }
}

fn strict(completion: &str, opened: bool, answer_tags: bool) -> bool {
    let body = if opened {
        completion
    } else {
        match completion.strip_prefix("<think>\n") {
            Some(b) => b,
            None => return false,
        }
    };
    const CLOSE: &str = "\n</think>\n";
    if body.contains(THINK_OPEN) || body.matches(THINK_CLOSE).count() != 1 {
        return false;
    }
    let Some(close) = body.find(CLOSE) else { return false };
    let (reasoning, answer) = (&body[..close], &body[close + CLOSE.len()..]);
    if reasoning.trim().is_empty() {
        return false;
    }
    if !answer_tags {
        return !answer.trim().is_empty();
    }
    let Some(rest) = answer.strip_prefix("<answer>\n") else {
        return false;
    };
    let Some(end) = rest.find("\n</answer>") else {
        return false;
    };
    let inner = &rest[..end];
    let tail = &rest[end + "\n</answer>".len()..];
    !inner.trim().is_empty() && !inner.contains(ANSWER_OPEN) && !inner.contains(ANSWER_CLOSE) && tail.trim().is_empty()
}

/// The think-format rule reward (see the module docs).
#[derive(Clone, Debug)]
pub struct ThinkFormat {
    name: String,
    config: ThinkFormatConfig,
}

impl ThinkFormat {
    /// The name it logs under unless [`ThinkFormat::named`] renames it.
    pub const DEFAULT_NAME: &'static str = "think_format";

    /// The reward with `config`; errors when `correct` or `incorrect` is not finite.
    pub fn new(config: ThinkFormatConfig) -> Result<ThinkFormat, RewardError> {
        check_scores(Self::DEFAULT_NAME, config.correct, config.incorrect)?;
        Ok(ThinkFormat {
            name: String::from(Self::DEFAULT_NAME),
            config,
        })
    }

    /// The same reward logged under another name.
    pub fn named(mut self, name: impl Into<String>) -> ThinkFormat {
        self.name = name.into();
        self
    }

    /// The configuration it checks with.
    pub fn config(&self) -> &ThinkFormatConfig {
        &self.config
    }

    /// The score of one completion.
    pub fn score_one(&self, prompt: &str, completion: &str) -> f32 {
        if has_think_format(prompt, completion, &self.config) {
            self.config.correct
        } else {
            self.config.incorrect
        }
    }
}

impl Reward for ThinkFormat {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, batch: &[Sample]) -> Result<Vec<Score>, RewardError> {
        Ok(batch
            .iter()
            .map(|s| Score::Value(self.score_one(&s.prompt, &s.completion)))
            .collect())
    }
}

/// Scores a reward hands out must be finite; the error names the reward.
pub(crate) fn check_scores(reward: &str, correct: f32, incorrect: f32) -> Result<(), RewardError> {
    for (field, v) in [("correct", correct), ("incorrect", incorrect)] {
        if !v.is_finite() {
            return Err(RewardError {
                reward: String::from(reward),
                sample: None,
                kind: RewardErrorKind::Config(alloc::format!("`{field}` is {v}, expected a finite score")),
            });
        }
    }
    Ok(())
}
