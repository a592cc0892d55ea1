//! The tag-count reward (open-r1's `tag_count_reward`): partial credit for the R1-Zero
//! layout, 0.25 for each of `<think>`, `</think>`, `<answer>`, `</answer>` present exactly
//! once, so a policy is pulled towards the format before it masters it.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::think_format::{ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, ThinkInPrompt};
use super::{Reward, RewardError, Sample, Score};

/// Configuration of [`TagCount`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TagCountConfig {
    /// Count open-r1's exact forms `<think>\n`, `\n</think>\n`, `\n<answer>\n`, `\n</answer>`
    /// rather than the bare tags.
    pub strict_newlines: bool,
    /// A think block opened by the prompt counts as the completion's `<think>`.
    pub think_in_prompt: ThinkInPrompt,
}

impl Default for TagCountConfig {
    fn default() -> Self {
        TagCountConfig {
            strict_newlines: true,
            think_in_prompt: ThinkInPrompt::Auto,
        }
    }
}

/// `0.25 × |{tags present exactly once}|`, in `[0, 1]`.
pub fn tag_count_score(prompt: &str, completion: &str, config: &TagCountConfig) -> f32 {
    let tags: [&str; 4] = if config.strict_newlines {
        ["<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>"]
    } else {
        [THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE]
    };
    let opened = config.think_in_prompt.opened(prompt) && !completion.contains(THINK_OPEN);
    let mut score = 0.0;
    for (i, tag) in tags.iter().enumerate() {
        let n = completion.matches(tag).count() + usize::from(i == 0 && opened);
        if n == 1 {
            score += 0.25;
        }
    }
    score
}

/// The tag-count rule reward (see the module docs).
#[derive(Clone, Debug)]
pub struct TagCount {
    name: String,
    config: TagCountConfig,
}

impl TagCount {
    /// The name it logs under unless [`TagCount::named`] renames it.
    pub const DEFAULT_NAME: &'static str = "tag_count";

    /// The reward with `config` (every config is valid).
    pub fn new(config: TagCountConfig) -> TagCount {
        TagCount {
            name: String::from(Self::DEFAULT_NAME),
            config,
        }
    }

    /// The same reward logged under another name.
    pub fn named(mut self, name: impl Into<String>) -> TagCount {
        self.name = name.into();
        self
    }
}

impl Reward for TagCount {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, batch: &[Sample]) -> Result<Vec<Score>, RewardError> {
        Ok(batch
            .iter()
            .map(|s| Score::Value(tag_count_score(&s.prompt, &s.completion, &self.config)))
            .collect())
    }
}
