//! The trait a Rust reward plugin implements; the export macros turn it into the ABI v1
//! exports. Each host evaluation is a fresh instance: `new` runs, then one `score_batch`.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use r1_core::reward::{RewardError, Sample, Score};

use crate::diagnostics::Diagnostics;
use crate::host;

/// What `r1_info` reports, as static strings.
#[derive(Clone, Copy, Debug)]
pub struct PluginInfoStatic {
    pub name: &'static str,
    pub version: &'static str,
    pub description: &'static str,
}

/// Why a plugin could not start or score a group. The SDK logs it through `r1.log`
/// (after announcing its sample, when it has one) and traps, so the host reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreError {
    pub sample: Option<usize>,
    pub message: String,
}

impl ScoreError {
    pub fn new(message: impl Into<String>) -> Self {
        ScoreError {
            sample: None,
            message: message.into(),
        }
    }

    pub fn on_sample(sample: usize, message: impl Into<String>) -> Self {
        ScoreError {
            sample: Some(sample),
            message: message.into(),
        }
    }
}

impl fmt::Display for ScoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sample {
            Some(i) => write!(f, "sample {i}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl From<RewardError> for ScoreError {
    fn from(e: RewardError) -> Self {
        ScoreError {
            sample: e.sample,
            message: alloc::format!("{}", e.kind),
        }
    }
}

impl From<String> for ScoreError {
    fn from(message: String) -> Self {
        ScoreError::new(message)
    }
}

impl From<&str> for ScoreError {
    fn from(message: &str) -> Self {
        ScoreError::new(message)
    }
}

/// A reward plugin. Implement [`score`](RewardPlugin::score) for a per-sample reward, or
/// override [`score_batch`](RewardPlugin::score_batch) for one that looks at the whole
/// group (or reuses an `r1_core::reward::Reward`).
pub trait RewardPlugin: Sized {
    const INFO: PluginInfoStatic;

    /// Builds the plugin from the run's config: JSON text, `null` when the run gives none.
    /// An error rejects the config; the host refuses to load the plugin with it.
    fn new(config: &str) -> Result<Self, ScoreError>;

    /// Scores one sample.
    fn score(&self, sample: &Sample, diagnostics: &mut Diagnostics) -> Score;

    /// Scores one group, exactly one score per sample, in order. The default scores each
    /// sample with [`score`](RewardPlugin::score), telling the host which sample it is on
    /// so a trap or timeout is reported against it.
    fn score_batch(&self, samples: &[Sample], diagnostics: &mut Diagnostics) -> Result<Vec<Score>, ScoreError> {
        let mut scores = Vec::with_capacity(samples.len());
        for (i, sample) in samples.iter().enumerate() {
            host::begin_sample(i);
            diagnostics.set_sample(Some(i));
            scores.push(self.score(sample, diagnostics));
        }
        diagnostics.set_sample(None);
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use r1_core::reward::RewardErrorKind;

    #[test]
    fn reward_errors_keep_their_sample_and_cause() {
        let e = RewardError {
            reward: "accuracy".into(),
            sample: Some(2),
            kind: RewardErrorKind::Config("bad".into()),
        };
        let e = ScoreError::from(e);
        assert_eq!(e, ScoreError::on_sample(2, "invalid config: bad"));
        assert_eq!(alloc::format!("{e}"), "sample 2: invalid config: bad");
    }
}
