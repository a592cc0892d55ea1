//! The built-in rule rewards as configuration data: one tagged enum (`type = "accuracy"`…)
//! that a run's TOML or a plugin's JSON config deserialises, and builds the reward.

use alloc::boxed::Box;

use serde::{Deserialize, Serialize};

use super::accuracy::{Accuracy, AccuracyConfig};
use super::language::{LanguageConfig, LanguageConsistency};
use super::length::{SoftOverlong, SoftOverlongConfig};
use super::tag_count::{TagCount, TagCountConfig};
use super::think_format::{ThinkFormat, ThinkFormatConfig};
use super::{Reward, RewardError};

/// A built-in rule reward and its configuration, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BuiltinRewardConfig {
    /// `type = "think_format"`: [`ThinkFormat`].
    ThinkFormat(ThinkFormatConfig),
    /// `type = "tag_count"`: [`TagCount`].
    TagCount(TagCountConfig),
    /// `type = "accuracy"`: [`Accuracy`].
    Accuracy(AccuracyConfig),
    /// `type = "language_consistency"`: [`LanguageConsistency`].
    LanguageConsistency(LanguageConfig),
    /// `type = "soft_overlong_punishment"`: [`SoftOverlong`].
    SoftOverlongPunishment(SoftOverlongConfig),
}

impl BuiltinRewardConfig {
    /// The name the reward logs under unless renamed.
    pub fn default_name(&self) -> &'static str {
        match self {
            BuiltinRewardConfig::ThinkFormat(_) => ThinkFormat::DEFAULT_NAME,
            BuiltinRewardConfig::TagCount(_) => TagCount::DEFAULT_NAME,
            BuiltinRewardConfig::Accuracy(_) => Accuracy::DEFAULT_NAME,
            BuiltinRewardConfig::LanguageConsistency(_) => LanguageConsistency::DEFAULT_NAME,
            BuiltinRewardConfig::SoftOverlongPunishment(_) => SoftOverlong::DEFAULT_NAME,
        }
    }

    /// Builds the reward, named `name` (or its default name).
    pub fn build(&self, name: Option<&str>) -> Result<Box<dyn Reward>, RewardError> {
        let name = name.unwrap_or(self.default_name());
        Ok(match self {
            BuiltinRewardConfig::ThinkFormat(c) => Box::new(ThinkFormat::new(c.clone())?.named(name)),
            BuiltinRewardConfig::TagCount(c) => Box::new(TagCount::new(c.clone()).named(name)),
            BuiltinRewardConfig::Accuracy(c) => Box::new(Accuracy::new(c.clone())?.named(name)),
            BuiltinRewardConfig::LanguageConsistency(c) => Box::new(LanguageConsistency::new(c.clone())?.named(name)),
            BuiltinRewardConfig::SoftOverlongPunishment(c) => Box::new(SoftOverlong::new(c.clone())?.named(name)),
        })
    }
}
