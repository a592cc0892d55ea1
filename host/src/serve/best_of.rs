//! Best-of-N: the reward plugins loaded at start (`--reward-plugin NAME=path.wasm`) and
//! the ranking of a prompt's candidates — by a plugin's score in its sandbox, or by mean
//! token log-prob — keeping the best `n`. A plugin that traps, times out or answers
//! nonsense fails that request only (a 422 naming the plugin and the cause).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use r1_core::reward::{Sample, Score};
use serde::Serialize;

use super::choice::ChoiceAssembly;
use super::error::{ApiError, ServeError};
use super::metrics::Metrics;
use super::plan::{Plan, Ranking};
use crate::plugin::{HostConfig, PluginConfig, PluginHost, PluginReward};

/// The reward plugins of a server, by the name requests use.
#[derive(Default)]
pub struct RewardPlugins {
    /// Kept alive for its scoring threads and epoch ticker.
    _host: Option<PluginHost>,
    plugins: BTreeMap<String, Arc<PluginReward>>,
}

impl RewardPlugins {
    /// Loads each `(name, plugin)` on one plugin host; requests name them in `reward`.
    pub fn load(host: HostConfig, plugins: &[(String, PluginConfig)]) -> Result<Self, ServeError> {
        if plugins.is_empty() {
            return Ok(RewardPlugins::default());
        }
        let error = |name: &str, path: &Path, message: String| ServeError::Plugin {
            name: name.to_string(),
            path: path.display().to_string(),
            message,
        };
        let host = PluginHost::new(host).map_err(|e| ServeError::PluginHost(e.to_string()))?;
        let mut loaded = BTreeMap::new();
        for (name, config) in plugins {
            if loaded.contains_key(name) {
                return Err(error(name, &config.path, "two reward plugins have this name".into()));
            }
            let mut config = config.clone();
            config.name = Some(name.clone());
            let plugin = host
                .load(&config)
                .map_err(|e| error(name, &config.path, e.to_string()))?;
            loaded.insert(name.clone(), Arc::new(plugin));
        }
        Ok(RewardPlugins {
            _host: Some(host),
            plugins: loaded,
        })
    }

    pub fn get(&self, name: &str) -> Option<Arc<PluginReward>> {
        self.plugins.get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.plugins.keys().cloned().collect()
    }
}

/// One candidate in the response's `r1.candidates`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CandidateScore {
    /// Which prompt (completions with several prompts; 0 otherwise).
    pub prompt_index: usize,
    /// The candidate's index among its prompt's candidates (engine order).
    pub index: usize,
    /// The reward (or mean log-prob); `None` when the plugin found it not applicable.
    pub score: Option<f32>,
    /// Whether it is among the returned choices.
    pub chosen: bool,
    pub text: String,
}

/// What ranking decided: per prompt, the candidate indices to return, best first, and
/// every candidate's score.
pub struct Ranked {
    pub chosen: Vec<Vec<usize>>,
    pub candidates: Vec<CandidateScore>,
    /// The reward plugin's name, or `"mean_logprob"`.
    pub ranked_by: String,
}

/// Ranks each prompt's candidates (`choices` holds `prompts × candidates` assemblies).
pub async fn rank(plan: &Plan, choices: &[ChoiceAssembly], metrics: &Metrics) -> Result<Ranked, ApiError> {
    let k = plan.candidates;
    let mut ranked = Ranked {
        chosen: Vec::new(),
        candidates: Vec::new(),
        ranked_by: String::new(),
    };
    for (p, prompt) in plan.prompts.iter().enumerate() {
        let group = choices.get(p * k..(p + 1) * k).unwrap_or_default();
        let scores: Vec<Option<f32>> = match &plan.ranking {
            Some(Ranking::Reward { name, plugin }) => {
                ranked.ranked_by = name.clone();
                let samples = group
                    .iter()
                    .map(|c| Sample {
                        prompt: prompt.text.clone(),
                        completion: c.text.clone(),
                        reference: plan.reference.clone(),
                        metadata: plan.metadata.clone(),
                    })
                    .collect();
                score_with(name, plugin.clone(), samples, metrics).await?
            }
            Some(Ranking::MeanLogprob) | None => {
                ranked.ranked_by = "mean_logprob".into();
                group
                    .iter()
                    .map(|c| Some(c.mean_logprob()).filter(|v| v.is_finite()))
                    .collect()
            }
        };
        let best = best_indices(&scores, plan.n);
        for (i, (c, score)) in group.iter().zip(&scores).enumerate() {
            ranked.candidates.push(CandidateScore {
                prompt_index: p,
                index: i,
                score: *score,
                chosen: best.contains(&i),
                text: c.text.clone(),
            });
        }
        ranked.chosen.push(best);
    }
    Ok(ranked)
}

/// Runs the plugin on a blocking thread (it is CPU work under its own deadline).
async fn score_with(
    name: &str,
    plugin: Arc<PluginReward>,
    samples: Vec<Sample>,
    metrics: &Metrics,
) -> Result<Vec<Option<f32>>, ApiError> {
    let expected = samples.len();
    let result = tokio::task::spawn_blocking(move || plugin.score_detailed(&samples))
        .await
        .map_err(|e| ApiError::internal(format!("reward plugin `{name}` stopped: {e}")))?;
    metrics.record_plugin(name, result.is_err());
    let scored = result.map_err(|e| ApiError::reward_failed(format!("reward plugin failed on the candidates: {e}")))?;
    if scored.scores.len() != expected {
        return Err(ApiError::reward_failed(format!(
            "reward plugin `{name}` returned {} scores for {expected} candidates",
            scored.scores.len()
        )));
    }
    Ok(scored
        .scores
        .into_iter()
        .map(|s| match s {
            Score::Value(v) => Some(v),
            Score::NotApplicable => None,
        })
        .collect())
}

/// The `n` best indices, best first; unscored candidates rank last, ties keep engine
/// order.
pub fn best_indices(scores: &[Option<f32>], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    let key = |i: usize| scores.get(i).copied().flatten().unwrap_or(f32::NEG_INFINITY);
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    order.truncate(n);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_first_unscored_last_ties_in_order() {
        let scores = [Some(0.5), None, Some(1.0), Some(0.5)];
        assert_eq!(best_indices(&scores, 3), vec![2, 0, 3]);
        assert_eq!(best_indices(&scores, 4), vec![2, 0, 3, 1]);
    }
}
