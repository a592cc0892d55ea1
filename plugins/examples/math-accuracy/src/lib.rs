//! Reward plugin: answer accuracy for math, the reward DeepSeek-R1 trained on. It is
//! r1-core's own `Accuracy` rule reward (answer extraction after `</think>`, `\boxed{}`,
//! LaTeX normalisation, numeric tolerance) compiled to WebAssembly, so a run scores the
//! same in-process or through the plugin host. The config is `AccuracyConfig` as JSON.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::vec::Vec;

use r1_core::reward::{Accuracy, AccuracyConfig, Reward};
use r1_plugin::{Diagnostics, PluginInfoStatic, RewardPlugin, Sample, Score, ScoreError};

pub struct MathAccuracy(Accuracy);

impl RewardPlugin for MathAccuracy {
    const INFO: PluginInfoStatic = PluginInfoStatic {
        name: "math-accuracy",
        version: env!("CARGO_PKG_VERSION"),
        description: "1 when the final answer (after </think>; boxed, tagged or last number) equals the reference, \
                      by r1-core's accuracy reward",
    };

    fn new(config: &str) -> Result<Self, ScoreError> {
        let config: Option<AccuracyConfig> =
            serde_json::from_str(config).map_err(|e| ScoreError::new(alloc::format!("config: {e}")))?;
        Ok(MathAccuracy(Accuracy::new(config.unwrap_or_default())?))
    }

    fn score(&self, sample: &Sample, _diagnostics: &mut Diagnostics) -> Score {
        self.0.score_one(&sample.completion, sample.reference.as_deref())
    }

    /// The whole group at once: the core reward reads the shared reference only once.
    fn score_batch(&self, samples: &[Sample], _diagnostics: &mut Diagnostics) -> Result<Vec<Score>, ScoreError> {
        Ok(self.0.score(samples)?)
    }
}

r1_plugin::export_plugin!(MathAccuracy);
