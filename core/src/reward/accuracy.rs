//! The accuracy reward: extract the completion's final answer (after its chain of thought)
//! and compare it with the reference answer as math graders do. A reference we cannot read
//! as an answer scores "not applicable", as open-r1 / TRL's `accuracy_reward` returns `None`.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::extract::{AnswerSource, Extractors, extract_answer, first_number, last_number};
use super::math_answer::{Answer, Tolerance, answers_match, parse_answer, parse_number, reference_answer};
use super::think_format::check_scores;
use super::{Reward, RewardError, RewardErrorKind, Sample, Score};
use crate::reasoning::split_reasoning;

/// Configuration of [`Accuracy`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccuracyConfig {
    /// Score of a right answer.
    pub correct: f32,
    /// Score of a wrong or missing answer.
    pub incorrect: f32,
    /// Which ways of finding the answer to use, tried in order boxed → answer tag →
    /// "answer is" phrase → last number.
    pub extractors: Extractors,
    /// Numeric tolerance.
    pub tolerance: Tolerance,
    /// Look for the answer only after the chain of thought (`</think>`); an unfinished
    /// chain of thought then has no answer. `false` searches the whole completion.
    pub answer_after_think: bool,
    /// A reference whose answer part is longer than this (in chars) is a worked solution
    /// without a marked answer: not applicable.
    pub max_reference_chars: usize,
}

impl Default for AccuracyConfig {
    fn default() -> Self {
        AccuracyConfig {
            correct: 1.0,
            incorrect: 0.0,
            extractors: Extractors::default(),
            tolerance: Tolerance::default(),
            answer_after_think: true,
            max_reference_chars: 100,
        }
    }
}

/// The verdict on one completion against one reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The extracted answer matches the reference (within the tolerance for numbers).
    Correct,
    /// The answer differs, or no answer could be extracted.
    Incorrect,
    /// The reference is not an answer we can read.
    NotApplicable,
}

/// Reads the reference's answer: a number or normalised text; `None` when unreadable.
pub fn read_reference(reference: &str, config: &AccuracyConfig) -> Option<Answer> {
    let r = reference_answer(reference);
    if r.chars().count() > config.max_reference_chars {
        return None;
    }
    parse_answer(r)
}

/// Grades `completion` against an already read reference answer.
pub fn grade(completion: &str, reference: &Answer, config: &AccuracyConfig) -> Verdict {
    let region = if config.answer_after_think {
        split_reasoning(completion).answer
    } else {
        completion
    };
    let Some(found) = extract_answer(region, config.extractors) else {
        return Verdict::Incorrect;
    };
    let right = match reference {
        Answer::Number(r) => {
            let whole = parse_number(found.text);
            // A sentence after "answer is" or inside <answer> may wrap the number in words.
            let inner = || match found.source {
                AnswerSource::Phrase => first_number(found.text).and_then(parse_number),
                AnswerSource::AnswerTag => last_number(found.text).and_then(parse_number),
                _ => None,
            };
            whole
                .or_else(inner)
                .is_some_and(|a| answers_match(&Answer::Number(a), &Answer::Number(*r), config.tolerance))
        }
        Answer::Text(_) => parse_answer(found.text).is_some_and(|a| answers_match(&a, reference, config.tolerance)),
    };
    if right { Verdict::Correct } else { Verdict::Incorrect }
}

/// Grades `completion` against the raw `reference` text (see [`read_reference`]).
pub fn grade_against(completion: &str, reference: &str, config: &AccuracyConfig) -> Verdict {
    match read_reference(reference, config) {
        Some(r) => grade(completion, &r, config),
        None => Verdict::NotApplicable,
    }
}

/// The accuracy rule reward (see the module docs).
#[derive(Clone, Debug)]
pub struct Accuracy {
    name: String,
    config: AccuracyConfig,
}

impl Accuracy {
    /// The name it logs under unless [`Accuracy::named`] renames it.
    pub const DEFAULT_NAME: &'static str = "accuracy";

    /// The reward with `config`; errors when a score is not finite or the tolerance is
    /// negative or not finite.
    pub fn new(config: AccuracyConfig) -> Result<Accuracy, RewardError> {
        check_scores(Self::DEFAULT_NAME, config.correct, config.incorrect)?;
        let t = config.tolerance;
        if !(t.rel.is_finite() && t.rel >= 0.0 && t.abs.is_finite() && t.abs >= 0.0) {
            return Err(RewardError {
                reward: String::from(Self::DEFAULT_NAME),
                sample: None,
                kind: RewardErrorKind::Config(alloc::format!(
                    "`tolerance` is rel {} abs {}, expected finite values >= 0",
                    t.rel,
                    t.abs
                )),
            });
        }
        Ok(Accuracy {
            name: String::from(Self::DEFAULT_NAME),
            config,
        })
    }

    /// The same reward logged under another name.
    pub fn named(mut self, name: impl Into<String>) -> Accuracy {
        self.name = name.into();
        self
    }

    /// The configuration it grades with.
    pub fn config(&self) -> &AccuracyConfig {
        &self.config
    }

    /// The score of one completion; no reference is "not applicable".
    pub fn score_one(&self, completion: &str, reference: Option<&str>) -> Score {
        let Some(reference) = reference else {
            return Score::NotApplicable;
        };
        match grade_against(completion, reference, &self.config) {
            Verdict::Correct => Score::Value(self.config.correct),
            Verdict::Incorrect => Score::Value(self.config.incorrect),
            Verdict::NotApplicable => Score::NotApplicable,
        }
    }
}

impl Reward for Accuracy {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, batch: &[Sample]) -> Result<Vec<Score>, RewardError> {
        // The G completions of a group share one reference: read it once per distinct text.
        let mut cached: Option<(&str, Option<Answer>)> = None;
        let mut out = Vec::with_capacity(batch.len());
        for s in batch {
            let Some(reference) = s.reference.as_deref() else {
                out.push(Score::NotApplicable);
                continue;
            };
            if cached.as_ref().is_none_or(|(text, _)| *text != reference) {
                cached = Some((reference, read_reference(reference, &self.config)));
            }
            let score = match cached.as_ref().and_then(|(_, r)| r.as_ref()) {
                None => Score::NotApplicable,
                Some(r) => match grade(&s.completion, r, &self.config) {
                    Verdict::Correct => Score::Value(self.config.correct),
                    _ => Score::Value(self.config.incorrect),
                },
            };
            out.push(score);
        }
        Ok(out)
    }
}
