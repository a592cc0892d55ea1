//! Training: the causal-LM training graphs, the optimizer and schedules, and the stages
//! of the R1 recipe built on them.

pub mod dist;
pub mod expert_balance;
pub mod grpo;
pub mod lm_graph;
pub mod metrics;
pub mod moments;
pub mod optim;
pub mod remote;
pub mod sft;
