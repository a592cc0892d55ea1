//! `metrics.jsonl`: one JSON object per line per step, flushed as written so a killed run
//! keeps every finished step, and trimmed on resume so it never holds a step twice; and
//! the typed lines written there (a GRPO step's metrics under TRL's names, a pipeline
//! stage's tag, a held-out evaluation), whose keys plots and earlier runs read.

use std::collections::BTreeMap;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// Appends metric lines to a JSONL file.
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Opens (creating) `path` for appending.
    pub fn append(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(MetricsWriter {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Creates `path` empty (truncating an old file).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        File::create(path)?;
        Self::append(path)
    }

    /// Opens `path` keeping only lines whose `key` (e.g. `"step"`) is at most `last`
    /// (resume: the steps after the checkpoint will be written again).
    pub fn resume(path: &Path, key: &str, last: usize) -> std::io::Result<Self> {
        let mut kept = Vec::new();
        if path.exists() {
            for line in BufReader::new(File::open(path)?).lines() {
                let line = line?;
                let step = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get(key).and_then(|s| s.as_u64()));
                if step.is_some_and(|s| s as usize <= last) {
                    kept.push(line);
                }
            }
        }
        let tmp = path.with_extension("jsonl.tmp");
        {
            let mut f = File::create(&tmp)?;
            for l in &kept {
                writeln!(f, "{l}")?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        Self::append(path)
    }

    /// Writes one record as a line.
    pub fn write<T: serde::Serialize>(&mut self, record: &T) -> std::io::Result<()> {
        let line = serde_json::to_string(record).map_err(std::io::Error::other)?;
        writeln!(self.file, "{line}")?;
        self.file.flush()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Metrics of one GRPO optimizer step, under TRL's `GRPOTrainer` names (the keys of
/// `metrics.jsonl`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GrpoStepMetrics {
    /// Optimizer steps done in the stage, this one included.
    pub step: usize,
    /// The policy loss, summed over the step's micro-batches.
    pub loss: f64,
    pub grad_norm: f64,
    pub learning_rate: f64,
    /// Mean of the weighted reward sum per completion (`None` when no reward applied).
    pub reward: Option<f64>,
    pub reward_std: Option<f64>,
    /// `rewards/<name>/mean`, `/std` and `/failures`, one set per reward.
    #[serde(flatten)]
    pub rewards: PerRewardMetrics,
    /// The loss's own metrics (`kl`, `clip_ratio/*`, `cispo_clip_ratio`) averaged over the
    /// micro-batches, present when `r1_core::grpo` reports them for this configuration.
    #[serde(flatten)]
    pub policy: BTreeMap<String, f64>,
    /// Mean entropy of the completion tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entropy: Option<f64>,
    /// Mean `|log π_train − log π_sampler|` on the first step of a batch.
    #[serde(rename = "sampling/logp_diff_mean", skip_serializing_if = "Option::is_none")]
    pub sampler_logp_diff_mean: Option<f64>,
    #[serde(rename = "sampling/logp_diff_max", skip_serializing_if = "Option::is_none")]
    pub sampler_logp_diff_max: Option<f64>,
    /// Truncated importance-sampling weights of remotely sampled tokens (TRL's names).
    #[serde(
        rename = "sampling/importance_sampling_ratio/min",
        skip_serializing_if = "Option::is_none"
    )]
    pub importance_sampling_ratio_min: Option<f64>,
    #[serde(
        rename = "sampling/importance_sampling_ratio/mean",
        skip_serializing_if = "Option::is_none"
    )]
    pub importance_sampling_ratio_mean: Option<f64>,
    #[serde(
        rename = "sampling/importance_sampling_ratio/max",
        skip_serializing_if = "Option::is_none"
    )]
    pub importance_sampling_ratio_max: Option<f64>,
    /// Rollout servers still in use.
    #[serde(rename = "rollout/servers", skip_serializing_if = "Option::is_none")]
    pub rollout_servers: Option<usize>,
    /// Seconds the last weight push to the rollout servers took.
    #[serde(rename = "rollout/weight_sync_time", skip_serializing_if = "Option::is_none")]
    pub weight_sync_time: Option<f64>,
    #[serde(rename = "completions/mean_length")]
    pub completion_mean_length: f64,
    #[serde(rename = "completions/min_length")]
    pub completion_min_length: usize,
    #[serde(rename = "completions/max_length")]
    pub completion_max_length: usize,
    /// Share of completions cut at `max_completion_length`.
    #[serde(rename = "completions/clipped_ratio")]
    pub completion_clipped_ratio: f64,
    pub frac_reward_zero_std: f64,
    #[serde(rename = "dynamic_sampling/dropped_groups")]
    pub dropped_groups: usize,
    /// Prompt and completion tokens of the generation batch.
    pub num_tokens: usize,
    pub generation_time: f64,
    pub step_time: f64,
    /// Held-out accuracy, on the steps where the pipeline measures it.
    #[serde(rename = "eval/accuracy", skip_serializing_if = "Option::is_none")]
    pub eval_accuracy: Option<f64>,
}

impl GrpoStepMetrics {
    /// The metric logged under `key` (as a reader of `metrics.jsonl` sees it).
    pub fn get(&self, key: &str) -> Option<serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut m)) => m.remove(key),
            _ => None,
        }
    }
}

/// One reward's figures for a GRPO step.
#[derive(Clone, Debug, PartialEq)]
pub struct RewardStepMetrics {
    pub name: String,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    /// Samples whose score failed and was handled by `on_reward_error`, in the stage so far.
    pub failures: u64,
}

/// Every reward's figures, logged as `rewards/<name>/mean`, `/std` and `/failures`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PerRewardMetrics(pub Vec<RewardStepMetrics>);

impl serde::Serialize for PerRewardMetrics {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(3 * self.0.len()))?;
        for r in &self.0 {
            map.serialize_entry(&format!("rewards/{}/mean", r.name), &r.mean)?;
            map.serialize_entry(&format!("rewards/{}/std", r.name), &r.std)?;
            map.serialize_entry(&format!("rewards/{}/failures", r.name), &r.failures)?;
        }
        map.end()
    }
}

/// A held-out evaluation logged on its own line (after a stage without per-step evals).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct EvalMetrics {
    #[serde(rename = "eval/accuracy")]
    pub accuracy: f64,
}

/// A line of a pipeline's `metrics.jsonl`: a stage's metrics tagged with the stage and the
/// step counted over the whole pipeline.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StageLine<'a, M: serde::Serialize> {
    #[serde(flatten)]
    pub metrics: &'a M,
    pub stage: &'a str,
    pub global_step: usize,
}

/// Reads every line of a metrics file as JSON (for plots and reports); bad lines are
/// reported with their number.
pub fn read_metrics(path: &Path) -> Result<Vec<serde_json::Value>, String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?);
    }
    Ok(out)
}

/// A GRPO step with every field set, for tests of the writer and its readers (plots).
#[cfg(test)]
pub(crate) fn example_grpo_step() -> GrpoStepMetrics {
    GrpoStepMetrics {
        step: 3,
        loss: 0.25,
        grad_norm: 1.5,
        learning_rate: 1e-3,
        reward: Some(0.75),
        reward_std: None,
        rewards: PerRewardMetrics(vec![RewardStepMetrics {
            name: "accuracy".into(),
            mean: Some(0.5),
            std: Some(0.5),
            failures: 2,
        }]),
        policy: [("kl".to_string(), 0.125)].into_iter().collect(),
        entropy: Some(2.0),
        sampler_logp_diff_mean: None,
        sampler_logp_diff_max: None,
        importance_sampling_ratio_min: None,
        importance_sampling_ratio_mean: None,
        importance_sampling_ratio_max: None,
        rollout_servers: None,
        weight_sync_time: None,
        completion_mean_length: 12.5,
        completion_min_length: 4,
        completion_max_length: 32,
        completion_clipped_ratio: 0.25,
        frac_reward_zero_std: 0.5,
        dropped_groups: 1,
        num_tokens: 400,
        generation_time: 0.5,
        step_time: 0.75,
        eval_accuracy: Some(0.625),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_drops_steps_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let mut w = MetricsWriter::append(&p).unwrap();
        for s in 1..=5 {
            w.write(&serde_json::json!({"step": s, "loss": 1.0 / s as f64}))
                .unwrap();
        }
        drop(w);
        let mut w = MetricsWriter::resume(&p, "step", 3).unwrap();
        w.write(&serde_json::json!({"step": 4, "loss": 0.0})).unwrap();
        let steps: Vec<u64> = read_metrics(&p)
            .unwrap()
            .iter()
            .map(|v| v["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);
    }

    fn grpo_metrics() -> GrpoStepMetrics {
        super::example_grpo_step()
    }

    #[test]
    fn grpo_step_metrics_are_written_under_trl_keys_with_the_stage_tag() {
        let m = grpo_metrics();
        let line = serde_json::to_value(StageLine {
            metrics: &m,
            stage: "grpo1",
            global_step: 9,
        })
        .unwrap();
        let expected = serde_json::json!({
            "step": 3, "loss": 0.25, "grad_norm": 1.5, "learning_rate": 1e-3,
            "reward": 0.75, "reward_std": null,
            "rewards/accuracy/mean": 0.5, "rewards/accuracy/std": 0.5, "rewards/accuracy/failures": 2,
            "kl": 0.125, "entropy": 2.0,
            "completions/mean_length": 12.5, "completions/min_length": 4, "completions/max_length": 32,
            "completions/clipped_ratio": 0.25, "frac_reward_zero_std": 0.5,
            "dynamic_sampling/dropped_groups": 1, "num_tokens": 400,
            "generation_time": 0.5, "step_time": 0.75, "eval/accuracy": 0.625,
            "stage": "grpo1", "global_step": 9,
        });
        assert_eq!(line, expected);
        assert_eq!(m.get("rewards/accuracy/failures"), Some(serde_json::json!(2)));
        assert_eq!(m.get("sampling/logp_diff_mean"), None, "unmeasured drift is not logged");
    }
}
