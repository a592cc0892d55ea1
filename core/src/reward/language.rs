//! The language-consistency reward of DeepSeek-R1: the share of the chain of thought's
//! words written in the target language, which stops a policy from mixing languages in its
//! reasoning. Languages are told apart by Unicode script (Latin, CJK, Cyrillic, …); the target
//! is the prompt's dominant script unless the config or the sample's metadata names one.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::script::{Script, ScriptCounts, ScriptSet};
use super::{Reward, RewardError, RewardErrorKind, Sample, Score};
use crate::reasoning::split_reasoning;

/// The language the chain of thought should be in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LanguageTarget {
    /// The dominant script of the prompt (Japanese kana or Korean hangul bring Han along).
    #[default]
    Prompt,
    /// These scripts (from a script name, `cjk`, or a language code such as `en`, `zh`, `ru`).
    Scripts(ScriptSet),
}

impl Serialize for LanguageTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LanguageTarget::Prompt => s.serialize_str("prompt"),
            LanguageTarget::Scripts(set) => {
                let names: Vec<&str> = Script::ALL
                    .iter()
                    .filter(|x| set.contains(**x))
                    .map(|x| x.name())
                    .collect();
                s.serialize_str(&names.join("+"))
            }
        }
    }
}

impl<'de> Deserialize<'de> for LanguageTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LanguageTarget;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"prompt\", a script name (latin, cyrillic, han, cjk…) or a language code (en, zh, ru…)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LanguageTarget, E> {
                parse_target(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_str(V)
    }
}

/// `prompt`, or scripts joined by `+` (`latin+han`), each a script name or language code.
fn parse_target(v: &str) -> Option<LanguageTarget> {
    if v.eq_ignore_ascii_case("prompt") {
        return Some(LanguageTarget::Prompt);
    }
    let mut set = ScriptSet::EMPTY;
    for part in v.split('+') {
        set = set.union(ScriptSet::from_name(part.trim())?);
    }
    Some(LanguageTarget::Scripts(set))
}

/// Which part of the completion is judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LanguageScope {
    /// The chain of thought (the whole completion when it has no think block).
    #[default]
    Reasoning,
    /// The text after the chain of thought.
    Answer,
    /// All of it.
    Completion,
}

/// Configuration of [`LanguageConsistency`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LanguageConfig {
    /// The language the judged text should be in (default: the prompt's).
    pub target: LanguageTarget,
    /// Which part of the completion is judged (default: the chain of thought).
    pub scope: LanguageScope,
    /// A metadata key (dataset column) whose value, a language code or script name,
    /// overrides `target` for that sample when present. Off by default: datasets often have a
    /// `language` column that means something else (a programming language).
    pub metadata_key: Option<String>,
}

impl Default for LanguageConfig {
    fn default() -> Self {
        LanguageConfig {
            target: LanguageTarget::Prompt,
            scope: LanguageScope::Reasoning,
            metadata_key: None,
        }
    }
}

/// The scripts a prompt is written in: its dominant script, plus Han for Japanese and Korean.
pub fn prompt_scripts(prompt: &str) -> Option<ScriptSet> {
    let counts = ScriptCounts::of(prompt);
    let set = match counts.dominant()? {
        Script::Hiragana | Script::Katakana => ScriptSet::of(&[Script::Han, Script::Hiragana, Script::Katakana]),
        // Han with kana around it is Japanese.
        Script::Han if counts.get(Script::Hiragana) + counts.get(Script::Katakana) > 0 => {
            ScriptSet::of(&[Script::Han, Script::Hiragana, Script::Katakana])
        }
        Script::Hangul => ScriptSet::of(&[Script::Hangul, Script::Han]),
        s => ScriptSet::of(&[s]),
    };
    Some(set)
}

/// The share of `text`'s words written in `target`, `None` when it has no words.
pub fn language_share(text: &str, target: ScriptSet) -> Option<f32> {
    let counts = ScriptCounts::of(text);
    let total = counts.total();
    if total == 0 {
        None
    } else {
        Some((counts.in_set(target) as f64 / total as f64) as f32)
    }
}

/// The language-consistency rule reward (see the module docs).
#[derive(Clone, Debug)]
pub struct LanguageConsistency {
    name: String,
    config: LanguageConfig,
}

impl LanguageConsistency {
    /// The name it logs under unless [`LanguageConsistency::named`] renames it.
    pub const DEFAULT_NAME: &'static str = "language_consistency";

    /// The reward with `config`; errors when `target` names no script.
    pub fn new(config: LanguageConfig) -> Result<LanguageConsistency, RewardError> {
        if let LanguageTarget::Scripts(s) = config.target
            && s.is_empty()
        {
            return Err(RewardError {
                reward: String::from(Self::DEFAULT_NAME),
                sample: None,
                kind: RewardErrorKind::Config(String::from("`target` names no script")),
            });
        }
        Ok(LanguageConsistency {
            name: String::from(Self::DEFAULT_NAME),
            config,
        })
    }

    /// The same reward logged under another name.
    pub fn named(mut self, name: impl Into<String>) -> LanguageConsistency {
        self.name = name.into();
        self
    }

    /// The score of one sample: the target-language share in `[0, 1]`, not applicable when
    /// the judged text or the prompt (for a `prompt` target) has no words; an error when the
    /// metadata names an unknown language.
    pub fn score_one(&self, sample: &Sample) -> Result<Score, RewardErrorKind> {
        let from_meta = self
            .config
            .metadata_key
            .as_deref()
            .and_then(|k| sample.metadata.iter().find(|(key, _)| key == k))
            .map(|(k, v)| {
                parse_target(v).ok_or_else(|| {
                    RewardErrorKind::InvalidSample(format!("metadata `{k}` = {v:?} is not a known language or script"))
                })
            })
            .transpose()?;
        let target = match from_meta.unwrap_or(self.config.target) {
            LanguageTarget::Scripts(s) => s,
            LanguageTarget::Prompt => match prompt_scripts(&sample.prompt) {
                Some(s) => s,
                None => return Ok(Score::NotApplicable),
            },
        };
        let split = split_reasoning(&sample.completion);
        let text = match self.config.scope {
            LanguageScope::Reasoning => split.reasoning.unwrap_or(&sample.completion),
            LanguageScope::Answer => split.answer,
            LanguageScope::Completion => &sample.completion,
        };
        Ok(language_share(text, target).map_or(Score::NotApplicable, Score::Value))
    }
}

impl Reward for LanguageConsistency {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, batch: &[Sample]) -> Result<Vec<Score>, RewardError> {
        batch
            .iter()
            .enumerate()
            .map(|(i, s)| {
                self.score_one(s).map_err(|kind| RewardError {
                    reward: self.name.clone(),
                    sample: Some(i),
                    kind,
                })
            })
            .collect()
    }
}
