//! The plugin host: the engines and epoch ticker, the module cache, the bound on live
//! evaluations and the scoring thread pool. One per process; plugins loaded from it
//! share all of these.

use std::sync::Arc;

use r1_core::reward::{Reward, RewardError, Sample, Score};
use rayon::prelude::*;

use super::cache::ModuleCache;
use super::config::{HostConfig, PluginConfig};
use super::engine::Engines;
use super::error::PluginError;
use super::reward::{PluginReward, read_module};
use super::slots::Slots;

pub(crate) struct HostShared {
    pub engines: Engines,
    /// `Ok(None)`: caching is off; `Err`: the directory could not be opened (why).
    pub cache: Result<Option<ModuleCache>, String>,
    pub slots: Slots,
    pool: rayon::ThreadPool,
}

impl HostShared {
    /// Runs `f` on the scoring threads (rayon work inside it stays on them).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }
}

/// Evaluations alive at once so far, and how many had to wait for a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvaluationUsage {
    pub capacity: usize,
    pub peak: usize,
    pub waited: u64,
}

/// Loads plugins and scores groups in parallel. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct PluginHost {
    shared: Arc<HostShared>,
    config: Arc<HostConfig>,
}

/// Native stack of a scoring thread beyond the wasm stack a call may use: room for the
/// host's own frames (wasmtime's entry trampolines, decoding, the reward code).
const HOST_STACK_MARGIN: usize = 2 << 20;

impl PluginHost {
    pub fn new(config: HostConfig) -> Result<Self, PluginError> {
        config.validate()?;
        let threads = config.resolved_threads();
        let engines = Engines::new(&config, threads)?;
        let cache = match &config.cache_dir {
            None => Ok(None),
            Some(dir) => ModuleCache::open(dir)
                .map(Some)
                .map_err(|e| format!("cache directory {}: {e}", dir.display())),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("r1-reward-{i}"))
            .stack_size(config.max_wasm_stack_bytes + HOST_STACK_MARGIN)
            .build()
            .map_err(|e| PluginError::Host(format!("cannot start the scoring threads: {e}")))?;
        let shared = HostShared {
            engines,
            cache,
            slots: Slots::new(threads),
            pool,
        };
        Ok(PluginHost {
            shared: Arc::new(shared),
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Reads, compiles (or fetches from the cache), checks and probes the plugin.
    pub fn load(&self, plugin: &PluginConfig) -> Result<PluginReward, PluginError> {
        plugin.validate()?;
        let label = plugin.name.clone().unwrap_or_else(|| plugin.path.display().to_string());
        let bytes = read_module(&plugin.path, plugin.max_module_bytes, &label)?;
        self.load_bytes(&bytes, plugin)
    }

    /// As [`load`](Self::load), from module bytes (`plugin.path` only names it).
    pub fn load_bytes(&self, bytes: &[u8], plugin: &PluginConfig) -> Result<PluginReward, PluginError> {
        PluginReward::load(Arc::clone(&self.shared), bytes, plugin)
    }

    /// Scores each group with `reward` on the host's threads (a plugin evaluation per
    /// group, each in its own store); one result per group, in order. Works the same for
    /// rule rewards and plugins.
    pub fn score_groups<G>(&self, reward: &dyn Reward, groups: &[G]) -> Vec<Result<Vec<Score>, RewardError>>
    where
        G: AsRef<[Sample]> + Sync,
    {
        self.shared
            .pool
            .install(|| groups.par_iter().map(|group| reward.score(group.as_ref())).collect())
    }

    /// Runs `f` on the host's scoring threads (for callers that fan out themselves).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.shared.pool.install(f)
    }

    pub fn evaluation_usage(&self) -> EvaluationUsage {
        let (peak, waited) = self.shared.slots.usage();
        EvaluationUsage {
            capacity: self.shared.slots.capacity(),
            peak,
            waited,
        }
    }
}
