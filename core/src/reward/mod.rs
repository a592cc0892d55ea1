//! Rewards: the [`Reward`] trait that scores one group of samples, shared by the rule
//! rewards in this module and by WASM plugins in the host, plus the sample and score
//! types (which are also the plugin ABI's wire types, encoded with postcard).

pub mod accuracy;
pub mod builtin;
pub mod composite;
pub mod extract;
pub mod language;
pub mod length;
pub mod math_answer;
pub mod script;
pub mod tag_count;
pub mod think_format;

pub use accuracy::{Accuracy, AccuracyConfig};
pub use builtin::BuiltinRewardConfig;
pub use composite::{ComponentScores, Composite, CompositeScores};
pub use language::{LanguageConfig, LanguageConsistency};
pub use length::{COMPLETION_TOKENS_KEY, SoftOverlong, SoftOverlongConfig};
pub use tag_count::{TagCount, TagCountConfig};
pub use think_format::{ThinkFormat, ThinkFormatConfig};

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// One completion to score, with what the dataset row knows about it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// The prompt text of the dataset row.
    pub prompt: String,
    /// The model's generated text for that prompt (decoded, without the prompt).
    pub completion: String,
    /// The reference answer, when the dataset has one.
    pub reference: Option<String>,
    /// Other fields of the dataset row, as key/value strings.
    pub metadata: Vec<(String, String)>,
}

/// A reward's verdict on one sample: a finite score, or "not applicable" (left out of
/// the group's mean and std, advantage 0 — TRL's NaN reward).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Score {
    /// A finite score.
    Value(f32),
    /// The reward does not apply to this sample (e.g. no reference to check against).
    NotApplicable,
}

impl Score {
    /// The score as TRL represents it: NaN for "not applicable".
    pub fn as_f32(self) -> f32 {
        match self {
            Score::Value(v) => v,
            Score::NotApplicable => f32::NAN,
        }
    }

    /// The score, or `None` for "not applicable".
    pub fn value(self) -> Option<f32> {
        match self {
            Score::Value(v) => Some(v),
            Score::NotApplicable => None,
        }
    }
}

/// Why a reward could not score a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct RewardError {
    /// The reward's name (`accuracy`, `math.wasm`…).
    pub reward: String,
    /// The sample the failure belongs to, when it belongs to one.
    pub sample: Option<usize>,
    /// What went wrong.
    pub kind: RewardErrorKind,
}

/// The cause of a [`RewardError`].
#[derive(Clone, Debug, PartialEq)]
pub enum RewardErrorKind {
    /// The reward's configuration is invalid.
    Config(String),
    /// A sample is not something this reward can score (and "not applicable" would be a
    /// lie, e.g. a required metadata key is missing).
    InvalidSample(String),
    /// A plugin exceeded its wall-time deadline.
    Timeout,
    /// A plugin ran out of fuel (deterministic instruction budget).
    OutOfFuel,
    /// A plugin hit its memory limit.
    MemoryLimit,
    /// A plugin overflowed its stack.
    StackOverflow,
    /// A plugin trapped; the message is the trap's (and the plugin's panic message when
    /// the SDK could report it).
    Trap(String),
    /// A plugin returned output that breaks the ABI (bad pointer, bad encoding, wrong
    /// number of scores, a non-finite score…).
    BadOutput(String),
    /// Anything else (the host could not load or instantiate the plugin…).
    Other(String),
}

impl fmt::Display for RewardErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RewardErrorKind::Config(m) => write!(f, "invalid config: {m}"),
            RewardErrorKind::InvalidSample(m) => write!(f, "invalid sample: {m}"),
            RewardErrorKind::Timeout => f.write_str("timed out"),
            RewardErrorKind::OutOfFuel => f.write_str("ran out of fuel"),
            RewardErrorKind::MemoryLimit => f.write_str("hit its memory limit"),
            RewardErrorKind::StackOverflow => f.write_str("overflowed its stack"),
            RewardErrorKind::Trap(m) => write!(f, "trapped: {m}"),
            RewardErrorKind::BadOutput(m) => write!(f, "bad output: {m}"),
            RewardErrorKind::Other(m) => f.write_str(m),
        }
    }
}

impl fmt::Display for RewardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reward `{}`", self.reward)?;
        if let Some(i) = self.sample {
            write!(f, " on sample {i}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for RewardError {}

/// Scores one group (batch) of samples: exactly one [`Score`] per sample, in order, or
/// an error for the batch.
pub trait Reward: Send + Sync {
    /// The name metrics are logged under (`rewards/<name>/mean`).
    fn name(&self) -> &str;

    /// Scores `batch` (for GRPO, the G completions of one prompt): one [`Score`] per
    /// sample, in order.
    fn score(&self, batch: &[Sample]) -> Result<Vec<Score>, RewardError>;
}
