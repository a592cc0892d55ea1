//! What a run does when a reward fails on a group: the `on_reward_error` policy, and the
//! failure count that is logged as a metric.

use r1_core::reward::{RewardError, Score};
use serde::{Deserialize, Serialize};

/// `on_reward_error` in a run's config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRewardError {
    /// Stop the run with the error.
    #[default]
    Fail,
    /// Score every sample of the failed group 0.
    Zero,
    /// Score every sample of the failed group "not applicable" (left out of the group's
    /// statistics, advantage 0; TRL's NaN reward).
    Skip,
}

/// Failures a policy absorbed, for the metrics line (`rewards/<name>/failures`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RewardFailures {
    /// Groups whose scoring failed and were scored by the policy instead.
    pub groups: u64,
    /// Samples in those groups.
    pub samples: u64,
    /// The most recent error, for the log.
    pub last: Option<RewardError>,
}

impl RewardFailures {
    pub fn record(&mut self, group_len: usize, error: RewardError) {
        self.groups += 1;
        self.samples += group_len as u64;
        self.last = Some(error);
    }
}

impl OnRewardError {
    /// The name a recipe gives the policy.
    pub fn name(self) -> &'static str {
        match self {
            OnRewardError::Fail => "fail",
            OnRewardError::Zero => "zero",
            OnRewardError::Skip => "skip",
        }
    }

    /// Applies the policy to the result of scoring one group of `group_len` samples:
    /// scores pass through; an error is returned (`fail`) or replaced by zeros (`zero`) or
    /// "not applicable" (`skip`) and counted in `failures`.
    pub fn apply(
        self,
        group_len: usize,
        result: Result<Vec<Score>, RewardError>,
        failures: &mut RewardFailures,
    ) -> Result<Vec<Score>, RewardError> {
        let error = match result {
            Ok(scores) => return Ok(scores),
            Err(e) => e,
        };
        let fill = match self {
            OnRewardError::Fail => return Err(error),
            OnRewardError::Zero => Score::Value(0.0),
            OnRewardError::Skip => Score::NotApplicable,
        };
        failures.record(group_len, error);
        Ok(vec![fill; group_len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use r1_core::reward::RewardErrorKind;

    fn timeout() -> RewardError {
        RewardError {
            reward: "math".into(),
            sample: Some(2),
            kind: RewardErrorKind::Timeout,
        }
    }

    #[test]
    fn policy_names_are_lowercase() {
        #[derive(Deserialize)]
        struct Run {
            on_reward_error: OnRewardError,
        }
        let run: Run = toml::from_str("on_reward_error = \"skip\"").unwrap();
        assert_eq!(run.on_reward_error, OnRewardError::Skip);
        assert!(toml::from_str::<Run>("on_reward_error = \"Skip\"").is_err());
        assert_eq!(serde_json::to_string(&OnRewardError::Zero).unwrap(), "\"zero\"");
        for policy in [OnRewardError::Fail, OnRewardError::Zero, OnRewardError::Skip] {
            assert_eq!(
                serde_json::to_string(&policy).unwrap(),
                format!("\"{}\"", policy.name())
            );
        }
    }

    #[test]
    fn fail_returns_the_error_and_counts_nothing() {
        let mut failures = RewardFailures::default();
        assert_eq!(
            OnRewardError::Fail.apply(3, Err(timeout()), &mut failures),
            Err(timeout())
        );
        assert_eq!(failures.groups, 0);
    }

    #[test]
    fn zero_and_skip_fill_the_group_and_count_it() {
        let mut failures = RewardFailures::default();
        assert_eq!(
            OnRewardError::Zero.apply(2, Err(timeout()), &mut failures),
            Ok(vec![Score::Value(0.0); 2])
        );
        assert_eq!(
            OnRewardError::Skip.apply(3, Err(timeout()), &mut failures),
            Ok(vec![Score::NotApplicable; 3])
        );
        assert_eq!((failures.groups, failures.samples), (2, 5));
        assert_eq!(failures.last, Some(timeout()));
        let ok = vec![Score::Value(1.0)];
        assert_eq!(OnRewardError::Skip.apply(1, Ok(ok.clone()), &mut failures), Ok(ok));
        assert_eq!(failures.groups, 2);
    }
}
