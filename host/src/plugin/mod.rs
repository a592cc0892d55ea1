//! The reward-plugin host on wasmtime: users' reward functions, compiled to WebAssembly
//! against ABI v1 (`plugins/ABI.md`), run sandboxed (no WASI, only the `r1` imports) with
//! a wall-time deadline, optional fuel, memory/table/stack limits, a module size cap and
//! limits on what compiling a module may cost (checked before compiling);
//! a fresh store per evaluation; compiled modules cached on disk. A loaded plugin is an
//! `r1_core::reward::Reward`, so trainers treat it like any rule reward.
//!
//! ```no_run
//! use r1_host::plugin::{HostConfig, PluginConfig, PluginHost};
//! use r1_core::reward::{Reward, Sample};
//!
//! let host = PluginHost::new(HostConfig::default())?;
//! let math = host.load(&PluginConfig::new("math_accuracy.wasm"))?;
//! let group = vec![Sample { prompt: "What is 6*7?".into(), completion: "<answer>42</answer>".into(),
//!                           reference: Some("42".into()), metadata: vec![] }];
//! let scores = math.score(&group)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cache;
mod config;
mod conformance;
mod engine;
mod error;
mod host;
mod module_scan;
mod policy;
mod reward;
mod sandbox;
mod slots;

pub use cache::CacheOutcome;
pub use config::{HostConfig, ModuleLimits, PluginConfig, default_cache_dir};
pub use error::PluginError;
pub use host::{EvaluationUsage, PluginHost};
pub use policy::{OnRewardError, RewardFailures};
pub use reward::{PluginReward, PluginStats, Scored};
