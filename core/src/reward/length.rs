//! DAPO's soft overlong punishment (Eq. 13 of the DAPO paper, TRL's
//! `get_soft_overlong_punishment`): no penalty up to `L_max − L_cache`, then a linear ramp to
//! −1 at `L_max`, and −1 beyond. Lengths are in tokens, read from the sample's metadata (the
//! trainer writes the completion's token count under [`COMPLETION_TOKENS_KEY`]), or in chars
//! or bytes of the text.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::{Reward, RewardError, RewardErrorKind, Sample, Score};

/// The metadata key under which the trainer gives each sample its completion's token count.
pub const COMPLETION_TOKENS_KEY: &str = "completion_tokens";

/// What a length is measured in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LengthUnit {
    /// Tokens, from the metadata key `metadata_key`.
    #[default]
    Tokens,
    /// Unicode scalar values of the completion.
    Chars,
    /// UTF-8 bytes of the completion.
    Bytes,
}

/// Configuration of [`SoftOverlong`] (`max_completion_len` and `soft_punish_cache` have no
/// default, as in TRL).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftOverlongConfig {
    /// `L_max`: at and beyond this length the penalty is −1.
    pub max_completion_len: u64,
    /// `L_cache`: the length of the ramp before `L_max` (0: a hard cut at `L_max`).
    pub soft_punish_cache: u64,
    /// What lengths are measured in (default tokens, read from `metadata_key`).
    #[serde(default)]
    pub unit: LengthUnit,
    /// Where token counts are read from when `unit = "tokens"`.
    #[serde(default = "default_metadata_key")]
    pub metadata_key: String,
}

fn default_metadata_key() -> String {
    String::from(COMPLETION_TOKENS_KEY)
}

impl SoftOverlongConfig {
    /// `L_max` and `L_cache` in tokens, read from [`COMPLETION_TOKENS_KEY`].
    pub fn new(max_completion_len: u64, soft_punish_cache: u64) -> SoftOverlongConfig {
        SoftOverlongConfig {
            max_completion_len,
            soft_punish_cache,
            unit: LengthUnit::Tokens,
            metadata_key: default_metadata_key(),
        }
    }
}

/// `R(|y|) = 0` if `|y| ≤ L_max − L_cache`; `((L_max − L_cache) − |y|) / L_cache` if
/// `L_max − L_cache < |y| ≤ L_max`; `−1` if `|y| > L_max`.
pub fn soft_overlong_punishment(len: u64, max_completion_len: u64, soft_punish_cache: u64) -> f32 {
    let start = max_completion_len.saturating_sub(soft_punish_cache);
    if len <= start {
        0.0
    } else if len <= max_completion_len {
        // soft_punish_cache > 0 here: start < len ≤ max means the ramp is not empty.
        -(((len - start) as f64) / soft_punish_cache as f64) as f32
    } else {
        -1.0
    }
}

/// The soft overlong punishment rule reward (see the module docs).
#[derive(Clone, Debug)]
pub struct SoftOverlong {
    name: String,
    config: SoftOverlongConfig,
}

impl SoftOverlong {
    /// The name it logs under unless [`SoftOverlong::named`] renames it.
    pub const DEFAULT_NAME: &'static str = "soft_overlong_punishment";

    /// The reward with `config`; errors unless `0 < max_completion_len` and
    /// `soft_punish_cache <= max_completion_len`.
    pub fn new(config: SoftOverlongConfig) -> Result<SoftOverlong, RewardError> {
        if config.max_completion_len == 0 || config.soft_punish_cache > config.max_completion_len {
            return Err(RewardError {
                reward: String::from(Self::DEFAULT_NAME),
                sample: None,
                kind: RewardErrorKind::Config(format!(
                    "`max_completion_len` = {} and `soft_punish_cache` = {}: need 0 <= soft_punish_cache <= max_completion_len and max_completion_len > 0",
                    config.max_completion_len, config.soft_punish_cache
                )),
            });
        }
        Ok(SoftOverlong {
            name: String::from(Self::DEFAULT_NAME),
            config,
        })
    }

    /// The same reward logged under another name.
    pub fn named(mut self, name: impl Into<String>) -> SoftOverlong {
        self.name = name.into();
        self
    }

    /// The completion's length in the configured unit.
    pub fn length(&self, sample: &Sample) -> Result<u64, RewardErrorKind> {
        match self.config.unit {
            LengthUnit::Chars => Ok(sample.completion.chars().count() as u64),
            LengthUnit::Bytes => Ok(sample.completion.len() as u64),
            LengthUnit::Tokens => {
                let key = &self.config.metadata_key;
                let (_, v) = sample.metadata.iter().find(|(k, _)| k == key).ok_or_else(|| {
                    RewardErrorKind::InvalidSample(format!(
                        "metadata `{key}` (the completion's token count) is missing; set `unit` to \"chars\" or \"bytes\" to measure the text instead"
                    ))
                })?;
                v.trim().parse::<u64>().map_err(|_| {
                    RewardErrorKind::InvalidSample(format!("metadata `{key}` = {v:?} is not a token count"))
                })
            }
        }
    }

    /// The penalty of one sample, in `[−1, 0]`; errors when `unit` is tokens and the
    /// sample's token count is missing or not a number.
    pub fn score_one(&self, sample: &Sample) -> Result<f32, RewardErrorKind> {
        let len = self.length(sample)?;
        Ok(soft_overlong_punishment(
            len,
            self.config.max_completion_len,
            self.config.soft_punish_cache,
        ))
    }
}

impl Reward for SoftOverlong {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, batch: &[Sample]) -> Result<Vec<Score>, RewardError> {
        batch
            .iter()
            .enumerate()
            .map(|(i, s)| {
                self.score_one(s).map(Score::Value).map_err(|kind| RewardError {
                    reward: self.name.clone(),
                    sample: Some(i),
                    kind,
                })
            })
            .collect()
    }
}
