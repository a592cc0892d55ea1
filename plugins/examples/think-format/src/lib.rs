//! Reward plugin for the R1 output format: a chain of thought in one `<think>…</think>`
//! block, then a non-empty answer (in `<answer>…</answer>` when configured). It is
//! r1-core's `ThinkFormat` rule reward compiled to WebAssembly, and shows a plugin with a
//! config: `r1_init` receives `ThinkFormatConfig` as JSON, e.g.
//! `{"mode": "strict", "answer_tags": true}`.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use r1_core::reward::{ThinkFormat, ThinkFormatConfig};
use r1_plugin::{Diagnostics, PluginInfoStatic, RewardPlugin, Sample, Score, ScoreError};

pub struct ThinkFormatPlugin(ThinkFormat);

impl RewardPlugin for ThinkFormatPlugin {
    const INFO: PluginInfoStatic = PluginInfoStatic {
        name: "think-format",
        version: env!("CARGO_PKG_VERSION"),
        description: "1 when the completion reasons in one <think> block and then answers, by r1-core's think-format \
                      reward",
    };

    fn new(config: &str) -> Result<Self, ScoreError> {
        let config: Option<ThinkFormatConfig> =
            serde_json::from_str(config).map_err(|e| ScoreError::new(alloc::format!("config: {e}")))?;
        Ok(ThinkFormatPlugin(ThinkFormat::new(config.unwrap_or_default())?))
    }

    fn score(&self, sample: &Sample, diagnostics: &mut Diagnostics) -> Score {
        let score = self.0.score_one(&sample.prompt, &sample.completion);
        if score != self.0.config().correct {
            diagnostics.note("not in the think format");
        }
        Score::Value(score)
    }
}

r1_plugin::export_plugin!(ThinkFormatPlugin);
