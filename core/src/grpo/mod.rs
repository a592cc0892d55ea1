//! GRPO math (TRL-compatible): group advantages, the per-token clipped policy loss with
//! a k3 KL penalty, its aggregations and its gradient with respect to each log-prob.
//!
//! Definitions follow TRL 1.x's `GRPOTrainer` line by line (fixtures generated from TRL itself
//! check it, see `core/tests/fixtures/trl/`), so a run here is comparable with a TRL run of
//! the same config. Everything works on flat slices: rewards `[num_completions]`, per-token
//! values `[num_completions × completion_len]` row-major with a 0/1 mask.
//!
//! Covered from TRL 1.16: `scale_rewards` group/batch/none, `multi_objective_aggregation`
//! sum_then_normalize/normalize_then_sum, reward weights and NaN ("not applicable") rewards;
//! loss types grpo, bnpo, dr_grpo, dapo, cispo, sapo, luspo; token and sequence importance
//! sampling; ε_low/ε_high, δ, β with `use_bias_correction_kl`; the `kl`, `clip_ratio/*`,
//! `cispo_clip_ratio`, `reward`, `reward_std`, `rewards/<name>/*` and `frac_reward_zero_std`
//! metrics. Not covered (a config naming them is rejected): vespo, the entropy bonus and
//! `top_entropy_quantile`, `off_policy_mask_threshold`, vLLM importance-sampling correction,
//! per-token advantages. The gradient-accumulation division TRL folds into the loss is left to
//! the caller (see [`LossInputs::num_items_in_batch`]).

mod advantages;
mod config;
mod error;
mod loss;
mod metrics;
pub mod stats;

pub use advantages::{Advantages, RewardStats, STD_EPSILON, combine_rewards, compute_advantages, group_advantages};
pub use config::{GrpoConfig, ImportanceSamplingLevel, LossType, MultiObjectiveAggregation, ScaleRewards};
pub use error::GrpoError;
pub use loss::{LossInputs, LossOutput, LossSummary, policy_loss, policy_loss_into};
pub use metrics::LossMetrics;
