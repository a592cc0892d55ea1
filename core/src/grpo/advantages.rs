//! Group-relative advantages from rewards laid out as consecutive groups of G completions of
//! one prompt, exactly as TRL 1.x's `GRPOTrainer._generate_and_score_completions` computes
//! them: weighted combination of several rewards, NaN ("not applicable") rewards left out of
//! the statistics with advantage 0, and `scale_rewards` ∈ {group, batch, none}.

use alloc::vec;
use alloc::vec::Vec;

use super::stats::{finite_or_none, nan_mean, nan_std};
use super::{GrpoConfig, GrpoError, MultiObjectiveAggregation, ScaleRewards};

/// The ε in `A = (r − mean) / (std + ε)`.
pub const STD_EPSILON: f64 = 1e-4;

/// `torch.isclose(std, 0)` with its default `atol`: the group's rewards do not spread.
const ZERO_STD_ATOL: f64 = 1e-8;

/// Mean and standard deviation of one reward over the batch, ignoring "not applicable"
/// (logged as `rewards/<name>/mean` and `rewards/<name>/std`). `None` where TRL logs NaN.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RewardStats {
    /// Mean over the applicable samples; `None` when none applies.
    pub mean: Option<f32>,
    /// Unbiased (n−1) standard deviation over the applicable samples, as TRL's `nanstd`;
    /// `None` with fewer than two.
    pub std: Option<f32>,
}

impl RewardStats {
    /// Stats of `values` (NaN = not applicable).
    pub fn of(values: &[f32]) -> RewardStats {
        let it = values.iter().map(|&v| v as f64);
        RewardStats {
            mean: finite_or_none(nan_mean(it.clone())),
            std: finite_or_none(nan_std(it)),
        }
    }
}

/// Advantages of a generation batch, with the reward metrics TRL logs alongside.
#[derive(Clone, Debug, PartialEq)]
pub struct Advantages {
    /// One advantage per completion (0 for completions no reward applied to).
    pub advantages: Vec<f32>,
    /// The weighted sum of the rewards per completion (NaN where no reward applied).
    pub rewards: Vec<f32>,
    /// `reward`: mean of [`Self::rewards`].
    pub reward: RewardStats,
    /// `rewards/<name>/mean` and `/std`, one per reward function, in input order.
    pub per_reward: Vec<RewardStats>,
    /// `frac_reward_zero_std`: share of completions whose normalising std is 0.
    pub frac_reward_zero_std: f32,
}

fn check_group(batch: usize, group_size: usize) -> Result<(), GrpoError> {
    if group_size == 0 {
        return Err(GrpoError::ZeroGroupSize);
    }
    if !batch.is_multiple_of(group_size) {
        return Err(GrpoError::GroupSizeDoesNotDivide { batch, group_size });
    }
    Ok(())
}

/// Group advantages of already combined rewards (`sum_then_normalize` with one reward):
///
/// `A_i = (r_i − mean_g) / (std + 1e-4)`, with `mean_g` the NaN-ignoring mean of `r_i`'s group
/// and `std` the unbiased NaN-ignoring standard deviation of the group (`Group`), of the whole
/// batch (`Batch`), or no division at all (`None`). A NaN reward, or a group with fewer than
/// two scorable completions, gives advantage 0.
pub fn group_advantages(rewards: &[f32], group_size: usize, scale: ScaleRewards) -> Result<Vec<f32>, GrpoError> {
    check_rewards(&[rewards])?;
    check_group(rewards.len(), group_size)?;
    let r: Vec<f64> = rewards.iter().map(|&v| v as f64).collect();
    let mut adv = vec![0.0; r.len()];
    normalize_in_groups(&r, group_size, scale, &mut adv);
    Ok(adv.into_iter().map(|a| a as f32).collect())
}

/// Weighted sum of several rewards per completion, `Σ_k w_k r_k` over the rewards that
/// apply (NaN terms are skipped, as `torch.nansum`); NaN when none applies.
/// `per_reward[k][i]` is reward function `k`'s score of completion `i`.
pub fn combine_rewards(per_reward: &[&[f32]], weights: &[f64]) -> Result<Vec<f32>, GrpoError> {
    let n = check_rewards(per_reward)?;
    check_weights(per_reward.len(), weights)?;
    Ok((0..n).map(|i| weighted_nansum(per_reward, weights, i) as f32).collect())
}

/// The whole TRL advantage step: combine `per_reward` with `weights`, then normalise as
/// `aggregation` and `scale` say, and report TRL's reward metrics.
///
/// `normalize_then_sum` (GDPO): each reward is first normalised within its group,
/// `(r_k − mean_g,k) / (std_g,k + 1e-4)`; the weighted NaN-skipping sum of those is then
/// normalised over the whole batch, `(s − mean(s)) / (std(s) + 1e-4)`.
pub fn compute_advantages(
    per_reward: &[&[f32]],
    weights: &[f64],
    group_size: usize,
    scale: ScaleRewards,
    aggregation: MultiObjectiveAggregation,
) -> Result<Advantages, GrpoError> {
    let n = check_rewards(per_reward)?;
    check_weights(per_reward.len(), weights)?;
    check_group(n, group_size)?;

    // The weighted sum is what TRL logs as `reward` in both aggregation modes.
    let combined: Vec<f64> = (0..n).map(|i| weighted_nansum(per_reward, weights, i)).collect();
    let mut adv = vec![0.0; n];
    let zero_std = match aggregation {
        MultiObjectiveAggregation::SumThenNormalize => normalize_in_groups(&combined, group_size, scale, &mut adv),
        MultiObjectiveAggregation::NormalizeThenSum => {
            let mut summed = vec![0.0f64; n];
            let mut any = vec![false; n];
            for (k, rk) in per_reward.iter().enumerate() {
                for (g, chunk) in rk.chunks(group_size).enumerate() {
                    let it = chunk.iter().map(|&v| v as f64);
                    let mean = nan_mean(it.clone());
                    let std = if group_size > 1 { nan_std(it) } else { 0.0 };
                    for (j, &v) in chunk.iter().enumerate() {
                        let i = g * group_size + j;
                        if !v.is_nan() {
                            any[i] = true;
                        }
                        let z = (v as f64 - mean) / (std + STD_EPSILON) * weights[k];
                        if !z.is_nan() {
                            summed[i] += z;
                        }
                    }
                }
            }
            for i in 0..n {
                if !any[i] {
                    summed[i] = f64::NAN;
                }
            }
            let mean = nan_mean(summed.iter().copied());
            let std = if n > 1 { nan_std(summed.iter().copied()) } else { 0.0 };
            for (a, &s) in adv.iter_mut().zip(&summed) {
                let v = (s - mean) / (std + STD_EPSILON);
                *a = if v.is_nan() { 0.0 } else { v };
            }
            if is_zero_std(std) { n } else { 0 }
        }
    };

    let rewards: Vec<f32> = combined.iter().map(|&v| v as f32).collect();
    Ok(Advantages {
        advantages: adv.into_iter().map(|a| a as f32).collect(),
        reward: RewardStats::of(&rewards),
        per_reward: per_reward.iter().map(|r| RewardStats::of(r)).collect(),
        rewards,
        frac_reward_zero_std: if n == 0 { 0.0 } else { zero_std as f32 / n as f32 },
    })
}

impl GrpoConfig {
    /// [`compute_advantages`] with this config's group size (`num_generations`),
    /// `reward_weights` (1 each when absent), `scale_rewards` and `multi_objective_aggregation`.
    pub fn advantages(&self, per_reward: &[&[f32]]) -> Result<Advantages, GrpoError> {
        self.validate()?;
        let ones;
        let weights = match &self.reward_weights {
            Some(w) => w.as_slice(),
            None => {
                ones = vec![1.0; per_reward.len()];
                ones.as_slice()
            }
        };
        compute_advantages(
            per_reward,
            weights,
            self.num_generations,
            self.scale_rewards,
            self.multi_objective_aggregation,
        )
    }
}

/// Subtracts each group's mean and divides by the std `scale` picks; writes `out`, returns
/// how many completions have a zero std.
fn normalize_in_groups(r: &[f64], group_size: usize, scale: ScaleRewards, out: &mut [f64]) -> usize {
    let n = r.len();
    let batch_std = match scale {
        ScaleRewards::Batch if n > 1 => nan_std(r.iter().copied()),
        _ => 0.0,
    };
    let mut zero_std = 0;
    for (chunk, adv) in r.chunks(group_size).zip(out.chunks_mut(group_size)) {
        let mean = nan_mean(chunk.iter().copied());
        let std = match scale {
            ScaleRewards::Batch => batch_std,
            // With `none` the std only feeds the zero-spread metric, as in TRL.
            ScaleRewards::Group | ScaleRewards::None if group_size > 1 => nan_std(chunk.iter().copied()),
            _ => 0.0,
        };
        if is_zero_std(std) {
            zero_std += chunk.len();
        }
        for (a, &v) in adv.iter_mut().zip(chunk) {
            let mut d = v - mean;
            if scale != ScaleRewards::None {
                d /= std + STD_EPSILON;
            }
            *a = if d.is_nan() { 0.0 } else { d };
        }
    }
    zero_std
}

fn is_zero_std(std: f64) -> bool {
    libm::fabs(std) <= ZERO_STD_ATOL
}

fn weighted_nansum(per_reward: &[&[f32]], weights: &[f64], i: usize) -> f64 {
    let mut sum = 0.0;
    let mut any = false;
    for (r, &w) in per_reward.iter().zip(weights) {
        let v = r[i];
        if !v.is_nan() {
            sum += v as f64 * w;
            any = true;
        }
    }
    if any { sum } else { f64::NAN }
}

/// Every reward vector has the same length and no infinity; returns that length.
fn check_rewards(per_reward: &[&[f32]]) -> Result<usize, GrpoError> {
    let Some(first) = per_reward.first() else {
        return Err(GrpoError::EmptyBatch {
            what: "no reward functions",
        });
    };
    let n = first.len();
    for (k, r) in per_reward.iter().enumerate() {
        if r.len() != n {
            return Err(GrpoError::LengthMismatch {
                tensor: "rewards",
                expected: n,
                actual: r.len(),
            });
        }
        if let Some((i, &v)) = r.iter().enumerate().find(|(_, v)| v.is_infinite()) {
            return Err(GrpoError::InfiniteReward {
                reward: k,
                sample: i,
                value: v,
            });
        }
    }
    Ok(n)
}

fn check_weights(num_rewards: usize, weights: &[f64]) -> Result<(), GrpoError> {
    if weights.len() != num_rewards {
        return Err(GrpoError::LengthMismatch {
            tensor: "reward_weights",
            expected: num_rewards,
            actual: weights.len(),
        });
    }
    if let Some((i, &w)) = weights.iter().enumerate().find(|(_, w)| !w.is_finite()) {
        return Err(GrpoError::NonFinite {
            tensor: "reward_weights",
            index: i,
            value: w as f32,
        });
    }
    Ok(())
}
