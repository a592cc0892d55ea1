//! GRPO math (TRL-compatible): group advantages, the per-token clipped policy loss with
//! a k3 KL penalty, its aggregations and its gradient with respect to each log-prob.
//!
//! Definitions follow TRL 1.x's `GRPOTrainer` line by line (fixtures generated from TRL itself
//! check it, see `core/tests/fixtures/trl/`), so a run here is comparable with a TRL run of
//! the same config. Everything works on flat slices: rewards `[num_completions]`, per-token
//! values `[num_completions × completion_len]` row-major with a 0/1 mask.

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
