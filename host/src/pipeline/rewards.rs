//! A recipe's `[[rewards]]` built into reward functions: built-in rule rewards, the
//! bundled task's rewards, and WASM plugins (loaded through one shared plugin host, the
//! bundled arithmetic checker from the bytes compiled into r1host).

use std::sync::Arc;

use anyhow::Context;
use r1_core::reward::Reward;

use crate::pipeline::recipe::{Recipe, RewardSpec, TaskReward};
use crate::plugin::PluginHost;
use crate::train::grpo::NamedReward;

/// The arithmetic-checker plugin built into r1host (empty if it could not be built).
const BUNDLED_ARITHMETIC: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/arithmetic.wasm"));

/// Builds every reward of the recipe (plugins through one shared host).
pub fn build_rewards(recipe: &Recipe, host: &PluginHost) -> anyhow::Result<Vec<NamedReward>> {
    recipe
        .rewards
        .iter()
        .map(|spec| {
            Ok(NamedReward {
                name: spec.name.clone(),
                reward: build_reward(spec, host)?,
            })
        })
        .collect()
}

fn build_reward(spec: &RewardSpec, host: &PluginHost) -> anyhow::Result<Arc<dyn Reward>> {
    Ok(match (&spec.builtin, &spec.plugin) {
        _ if spec.task == Some(TaskReward::ArithmeticWorking) => Arc::new(crate::task::ArithmeticWorking),
        (Some(b), _) => Arc::from(b.build(Some(&spec.name)).map_err(|e| anyhow::anyhow!("{e}"))?),
        (None, Some(p)) => {
            let mut p = p.clone();
            p.name = Some(spec.name.clone());
            let loaded = match p.path.to_str() {
                Some("bundled:arithmetic") => {
                    if BUNDLED_ARITHMETIC.is_empty() {
                        anyhow::bail!(
                            "reward `{}`: the bundled arithmetic plugin was not built into this r1host \
                             (run `rustup target add wasm32-unknown-unknown` and rebuild)",
                            spec.name
                        );
                    }
                    host.load_bytes(BUNDLED_ARITHMETIC, &p)
                }
                _ => host.load(&p),
            };
            Arc::new(loaded.with_context(|| format!("reward `{}`", spec.name))?)
        }
        (None, None) => anyhow::bail!("reward `{}` has neither `builtin`, `plugin` nor `task`", spec.name),
    })
}
