//! Data-parallel GRPO: N processes train one model as one process would with the whole
//! generation batch.
//!
//! - **Rollouts.** Every process draws the same prompts (the prompt order's RNG advances
//!   alike everywhere) and generates a contiguous share of the round's groups
//!   ([`dist::group_share`]); each group samples from a seed of (stage seed, step, round,
//!   group), never from a stream shared with other groups, so its completions are those
//!   one process would sample. Advantages are per group, hence local.
//! - **Loss.** One process cuts its generation batch of `R` rows into micro-batches of
//!   `P = per_device_train_batch_size` rows; an optimizer step over micro-batches `C` uses
//!   `g = s · Σ_{m∈C} ∇L_m` with `s = 1/|C|` (or 1 for dapo/cispo), where `L_m` is the
//!   loss `r1_core::grpo::loss` gives micro-batch `m`. Its per-token weights depend on the
//!   micro-batch only through its rows `B_m` (grpo, sapo: `1/(B_m·max(n_b,1))`; dr_grpo:
//!   `1/(B_m·L)`; luspo: `1/B_m`) or its active tokens `N_m` (bnpo: `1/max(N_m,1)`); dapo
//!   and cispo use the step's active tokens `Σ_{m∈C} N_m`, all-reduced. A process's rows
//!   are cut where the whole batch's micro-batches end ([`dist::micro_parts`]), and the
//!   loss of a part `p` of micro-batch `m`, computed over the part alone, is multiplied by
//!   [`part_scale`] — `B_p/B_m`, or `max(N_p,1)/max(N_m,1)` for bnpo, 1 for dapo/cispo —
//!   so that `Σ_{p⊂m} c_p L_p = L_m`. Summing the accumulated gradients over processes
//!   then gives `Σ_{m∈C} ∇L_m`, and `s` stays the same, so AdamW, the gradient norm and
//!   its clipping see the one-process gradient (up to the order of float additions).
//! - **Metrics.** The loss, entropy and sampler drift are sums and are reduced; reward,
//!   completion-length and token figures are reduced over the whole batch
//!   ([`BatchFigures`]); TRL's policy metrics (`kl`, `clip_ratio/*`) are the mean over
//!   every process's parts (the one-process value when no micro-batch is split between
//!   processes); `generation_time` and `step_time` are rank 0's own.
//!
//! LoRA trains the same way (the summed gradient is the adapter's); its dropout masks are
//! hashed from an element's place in the scored batch, so a micro-batch split between
//! processes draws other masks than one process would — the same distribution, not the
//! same values.
//!
//! Refused with several processes: DAPO dynamic sampling (the processes would need to
//! agree on which groups to keep and how many to draw again), `scale_rewards = "batch"`
//! and `multi_objective_aggregation = "normalize_then_sum"` (batch-wide statistics of the
//! advantages), DeepSeek-V3 router-bias balancing (per-process expert loads), remote
//! rollout servers (`[stages.grpo.rollout]`: every process would push its weights), and
//! fewer groups per generation than processes.

use r1_core::grpo::{Advantages, LossOutput, LossType, MultiObjectiveAggregation, RewardStats, ScaleRewards};

use super::{GrpoTrainConfig, GrpoTrainError, GrpoTrainer, Packed, Rollout, StepTally};
use crate::engine::FinishReason;
use crate::plugin::RewardFailures;
use crate::train::dist::{self, Collective, CollectiveError};
use r1_core::backend::Backend;
use r1_core::grpo::LossMetrics;

/// Refuses, with `size` processes, what data-parallel GRPO does not reproduce.
pub fn check_supported(config: &GrpoTrainConfig, size: usize) -> Result<(), GrpoTrainError> {
    if size <= 1 {
        return Ok(());
    }
    let refuse = |detail: String| Err(GrpoTrainError::DataParallel { size, detail });
    let g = &config.grpo;
    let groups = config.generation_batch() / g.num_generations.max(1);
    if config.dynamic_sampling {
        return refuse("dynamic_sampling is not supported; run it in one process".into());
    }
    if g.scale_rewards == ScaleRewards::Batch {
        return refuse(
            "scale_rewards = \"batch\" is not supported (a batch-wide std); use \"group\" or \"none\"".into(),
        );
    }
    if g.multi_objective_aggregation == MultiObjectiveAggregation::NormalizeThenSum {
        return refuse(
            "multi_objective_aggregation = \"normalize_then_sum\" is not supported (batch-wide statistics)".into(),
        );
    }
    if config.rollout.is_some() {
        return refuse(
            "[stages.grpo.rollout] (remote rollout servers) is not supported: every process would push its weights"
                .into(),
        );
    }
    if config.optim.bias_update_speed > 0.0 {
        return refuse("optim.bias_update_speed > 0 (router-bias balancing) is not supported".into());
    }
    if groups < size {
        return refuse(format!(
            "a generation has {groups} groups (per_device_train_batch_size × steps_per_generation / num_generations); \
             each process needs at least one"
        ));
    }
    Ok(())
}

/// Where this process's `local` rows sit in the generation batch: (first row, rows of the
/// whole batch).
pub(super) fn rows_of_batch<B: Backend>(trainer: &GrpoTrainer<B>, local: usize) -> (usize, usize) {
    let world = trainer.world;
    if world.size() <= 1 {
        return (0, local);
    }
    let g = trainer.config.grpo.num_generations;
    let groups = trainer.config.generation_batch() / g;
    let share = dist::group_share(groups, world.rank(), world.size());
    (share.start * g, groups * g)
}

/// The factor that turns the loss `r1_core::grpo` computes over part `p` of micro-batch
/// `m` alone into the part's share of `m`'s loss (the module docs give the weights): rows
/// `part_rows` of `whole_rows`, active tokens `part_active` of `whole_active`.
pub fn part_scale(loss: LossType, part_rows: usize, whole_rows: usize, part_active: f64, whole_active: f64) -> f64 {
    match loss {
        LossType::Grpo | LossType::Sapo | LossType::DrGrpo | LossType::Luspo => part_rows as f64 / whole_rows as f64,
        LossType::Bnpo => part_active.max(1.0) / whole_active.max(1.0),
        // Already divided by the step's active tokens over every process.
        LossType::Dapo | LossType::Cispo => 1.0,
    }
}

/// The active tokens of each micro-batch of the whole batch (summed over processes), and
/// each local part's [`part_scale`].
pub(super) fn normalisers(
    world: &dyn Collective,
    loss: LossType,
    (micro, packed, micro_of): (&[Vec<usize>], &[Packed], &[usize]),
    total_rows: usize,
    size: usize,
) -> Result<(Vec<f64>, Vec<f32>), CollectiveError> {
    let part_active: Vec<f64> = packed
        .iter()
        .map(|p| p.mask.iter().map(|&v| v as f64).sum::<f64>())
        .collect();
    let mut active = vec![0.0f64; total_rows.div_ceil(size)];
    for (&m, &a) in micro_of.iter().zip(&part_active) {
        active[m] += a;
    }
    world.all_reduce_sum_f64(&mut active)?;
    let scale = micro_of
        .iter()
        .enumerate()
        .map(|(p, &m)| {
            let whole_rows = size.min(total_rows - m * size);
            part_scale(loss, micro[p].len(), whole_rows, part_active[p], active[m]) as f32
        })
        .collect();
    Ok((active, scale))
}

/// Scales a part's loss and its gradient by its [`part_scale`] (both are linear in the
/// token weights).
pub(super) fn scale_part(out: &mut LossOutput, scale: f32) {
    if scale != 1.0 {
        out.loss *= scale;
        out.grad_logp.iter_mut().for_each(|g| *g *= scale);
    }
}

/// Each reward's (failed groups, failed samples) so far.
pub(super) fn failure_counts(failures: &[RewardFailures]) -> Vec<(u64, u64)> {
    failures.iter().map(|f| (f.groups, f.samples)).collect()
}

/// Adds every other process's reward failures since `before` to `failures`, so each
/// process (and rank 0's metrics and checkpoints) counts the whole batch's.
pub(super) fn sum_failures(
    world: &dyn Collective,
    failures: &mut [RewardFailures],
    before: &[(u64, u64)],
) -> Result<(), CollectiveError> {
    if world.size() <= 1 {
        return Ok(());
    }
    let mut new: Vec<f64> = failures
        .iter()
        .zip(before)
        .flat_map(|(f, &(g, s))| [(f.groups - g) as f64, (f.samples - s) as f64])
        .collect();
    world.all_reduce_sum_f64(&mut new)?;
    for ((f, &(g, s)), d) in failures.iter_mut().zip(before).zip(new.chunks(2)) {
        f.groups = g + d[0] as u64;
        f.samples = s + d[1] as u64;
    }
    Ok(())
}

/// The reward and completion figures of a whole generation batch, over every process.
#[derive(Clone, Debug)]
pub(super) struct BatchFigures {
    pub reward: RewardStats,
    pub per_reward: Vec<RewardStats>,
    pub frac_reward_zero_std: f64,
    pub completion_mean_length: f64,
    pub completion_min_length: usize,
    pub completion_max_length: usize,
    pub completion_clipped_ratio: f64,
    pub num_tokens: usize,
}

impl BatchFigures {
    /// The figures of `rollouts` (this process's) with their `advantages`, reduced over
    /// `world`'s processes.
    pub fn of(world: &dyn Collective, rollouts: &[Rollout], adv: &Advantages) -> Result<Self, CollectiveError> {
        let lens: Vec<usize> = rollouts.iter().map(|r| r.loss_tokens.len()).collect();
        let clipped = rollouts
            .iter()
            .filter(|r| r.completion.finish_reason == FinishReason::Length)
            .count();
        let num_tokens: usize = rollouts
            .iter()
            .map(|r| r.prompt_tokens.len() + r.loss_tokens.len())
            .sum();
        let (min, max) = (
            lens.iter().min().copied().unwrap_or(0),
            lens.iter().max().copied().unwrap_or(0),
        );
        if world.size() <= 1 {
            let n = lens.len().max(1) as f64;
            return Ok(BatchFigures {
                reward: adv.reward,
                per_reward: adv.per_reward.clone(),
                frac_reward_zero_std: f64::from(adv.frac_reward_zero_std),
                completion_mean_length: lens.iter().sum::<usize>() as f64 / n,
                completion_min_length: min,
                completion_max_length: max,
                completion_clipped_ratio: clipped as f64 / n,
                num_tokens,
            });
        }
        let n_local = lens.len() as f64;
        let zero_std = (f64::from(adv.frac_reward_zero_std) * n_local).round();
        let mut sums = [
            n_local,
            lens.iter().sum::<usize>() as f64,
            clipped as f64,
            num_tokens as f64,
            zero_std,
        ];
        world.all_reduce_sum_f64(&mut sums)?;
        let mut extremes = [-(min as f64), max as f64];
        world.all_reduce_max_f64(&mut extremes)?;
        let n = sums[0].max(1.0);
        let mut series: Vec<Vec<f32>> = vec![adv.rewards.clone()];
        let rewards = rollouts.first().map_or(0, |r| r.rewards.len());
        series.extend((0..rewards).map(|k| rollouts.iter().map(|r| r.rewards[k]).collect()));
        let mut stats = reward_stats(world, &series)?.into_iter();
        Ok(BatchFigures {
            reward: stats.next().unwrap_or(RewardStats { mean: None, std: None }),
            per_reward: stats.collect(),
            frac_reward_zero_std: sums[4] / n,
            completion_mean_length: sums[1] / n,
            completion_min_length: (-extremes[0]) as usize,
            completion_max_length: extremes[1] as usize,
            completion_clipped_ratio: sums[2] / n,
            num_tokens: sums[3] as usize,
        })
    }
}

/// NaN-skipping mean and unbiased std of each series over every process (two passes:
/// the means, then the squared deviations from them), as [`RewardStats::of`] computes
/// them for one.
fn reward_stats(world: &dyn Collective, series: &[Vec<f32>]) -> Result<Vec<RewardStats>, CollectiveError> {
    let finite = |s: &[f32]| {
        s.iter()
            .filter(|v| v.is_finite())
            .map(|&v| v as f64)
            .collect::<Vec<f64>>()
    };
    let values: Vec<Vec<f64>> = series.iter().map(|s| finite(s)).collect();
    let mut moments: Vec<f64> = values
        .iter()
        .flat_map(|v| [v.len() as f64, v.iter().sum::<f64>()])
        .collect();
    world.all_reduce_sum_f64(&mut moments)?;
    let means: Vec<f64> = moments.chunks(2).map(|c| c[1] / c[0].max(1.0)).collect();
    let mut squares: Vec<f64> = values
        .iter()
        .zip(&means)
        .map(|(v, &mean)| v.iter().map(|x| (x - mean) * (x - mean)).sum())
        .collect();
    world.all_reduce_sum_f64(&mut squares)?;
    Ok(moments
        .chunks(2)
        .zip(means.iter().zip(&squares))
        .map(|(c, (&mean, &sq))| RewardStats {
            mean: (c[0] > 0.0).then_some(mean as f32),
            std: (c[0] > 1.0).then(|| (sq / (c[0] - 1.0)).sqrt() as f32),
        })
        .collect())
}

impl StepTally {
    /// Sums the step's tallies over every process (the drift's maximum is the largest).
    pub(super) fn all_reduce(&mut self, world: &dyn Collective) -> Result<(), CollectiveError> {
        let mut sums = vec![
            self.loss_sum,
            self.entropy.0,
            self.entropy.1,
            self.drift.0,
            self.drift.2,
        ];
        for name in LossMetrics::NAMES {
            let (sum, n) = self.metric_sums.get(name).copied().unwrap_or((0.0, 0));
            sums.extend([sum, n as f64]);
        }
        world.all_reduce_sum_f64(&mut sums)?;
        let mut max = [self.drift.1];
        world.all_reduce_max_f64(&mut max)?;
        self.loss_sum = sums[0];
        self.entropy = (sums[1], sums[2]);
        self.drift = (sums[3], max[0], sums[4]);
        self.metric_sums = LossMetrics::NAMES
            .into_iter()
            .zip(sums[5..].chunks(2))
            .filter(|(_, c)| c[1] > 0.0)
            .map(|(name, c)| (name, (c[0], c[1] as usize)))
            .collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole micro-batch's loss weight of one token of a sequence with `n_b` active
    /// tokens, and what a part gives it after [`part_scale`].
    fn weights(loss: LossType, n_b: f64, (part_rows, whole_rows): (usize, usize), (np, nm): (f64, f64)) -> (f64, f64) {
        let l = 16.0;
        let w = |rows: f64, active: f64| match loss {
            LossType::Grpo | LossType::Sapo => 1.0 / (rows * n_b.max(1.0)),
            LossType::DrGrpo => 1.0 / (rows * l),
            LossType::Luspo => 1.0 / rows,
            LossType::Bnpo => 1.0 / active.max(1.0),
            LossType::Dapo | LossType::Cispo => 1.0 / 100.0,
        };
        let whole = w(whole_rows as f64, nm);
        let part = w(part_rows as f64, np) * part_scale(loss, part_rows, whole_rows, np, nm);
        (whole, part)
    }

    #[test]
    fn a_scaled_part_weighs_each_token_as_its_whole_micro_batch_does() {
        for loss in LossType::ALL {
            let (whole, part) = weights(loss, 5.0, (3, 8), (17.0, 40.0));
            assert!((whole - part).abs() <= 1e-15 * whole, "{loss:?}: {whole} vs {part}");
        }
        assert_eq!(part_scale(LossType::Grpo, 3, 8, 17.0, 40.0), 0.375);
        assert_eq!(part_scale(LossType::Bnpo, 3, 8, 17.0, 40.0), 17.0 / 40.0);
        assert_eq!(part_scale(LossType::Dapo, 3, 8, 17.0, 40.0), 1.0);
        for loss in LossType::ALL {
            assert_eq!(
                part_scale(loss, 8, 8, 40.0, 40.0),
                1.0,
                "a whole micro-batch is unscaled"
            );
        }
    }

    #[test]
    fn refusals_name_what_several_processes_cannot_reproduce() {
        let mut config = GrpoTrainConfig::default();
        config.grpo.num_generations = 4;
        assert!(check_supported(&config, 2).is_ok(), "8 rows: 2 groups for 2 processes");
        let fails = |c: &GrpoTrainConfig, size: usize, what: &str| {
            let e = check_supported(c, size).expect_err(what).to_string();
            assert!(e.contains(what), "{e}");
        };
        fails(&config, 3, "at least one");
        let mut c = config.clone();
        c.dynamic_sampling = true;
        fails(&c, 2, "dynamic_sampling");
        let mut c = config.clone();
        c.grpo.scale_rewards = ScaleRewards::Batch;
        fails(&c, 2, "scale_rewards");
        assert!(check_supported(&c, 1).is_ok(), "one process runs everything");
    }
}
