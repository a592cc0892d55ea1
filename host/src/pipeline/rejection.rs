//! Rejection sampling: sample K completions per prompt, keep those every named reward
//! accepts (score ≥ its threshold), and write them as a new SFT set — R1's way of turning
//! an RL checkpoint into clean supervised data, and distillation's trace writer. A reward
//! that fails on a group is handled by the recipe's `on_reward_error`: `fail` stops the
//! stage, `zero` scores the group 0 and `skip` leaves it unscored; either way a sample
//! whose score did not reach a threshold is not kept, and the failures are counted.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use r1_core::backend::Backend;
use r1_core::reward::Sample;
use r1_core::sampling::Rng;

use crate::engine::{DEFAULT_GENERATION_KV_MIB, Engine, GenerationConfig, PromptGroup};
use crate::io::atomic::write_bytes_atomically;
use crate::model::Model;
use crate::pipeline::StopRequested;
use crate::pipeline::context::StageContext;
use crate::pipeline::datasets::encode_prompts;
use crate::pipeline::recipe::RejectionConfig;
use crate::pipeline::state::{FinishedStage, PipelineState};
use crate::plugin::{OnRewardError, RewardFailures};
use crate::stop::StopSignal;
use crate::train::grpo::{GrpoPrompt, NamedReward};

/// Prompts sampled on one running batch hold this many batches' worth of rows, so
/// continuous batching keeps the batch full until the window's tail.
const WINDOW_BATCHES: usize = 4;

/// What rejection sampling kept.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RejectionStats {
    pub prompts: usize,
    pub sampled: usize,
    pub kept: usize,
    /// Prompts with at least one kept completion.
    pub prompts_covered: usize,
    /// Fraction of samples passing each reward's threshold.
    pub pass_rate: BTreeMap<String, f64>,
    /// Mean score of each reward over all samples (a sample left unscored, as `skip`
    /// leaves a failed group, adds 0).
    pub mean_reward: BTreeMap<String, f64>,
    /// Samples whose group each reward failed to score (handled by `on_reward_error`);
    /// rewards that never failed are absent.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reward_failures: BTreeMap<String, u64>,
}

/// Samples, filters and writes `{"prompt","completion"}` rows to `out` (atomically).
/// A reward that fails on a group is handled by `policy` (see the module docs).
/// A raised `stop` ends it between windows of prompts (each one running batch) with
/// [`StopRequested`], writing nothing (the stage is redone on resume).
#[allow(clippy::too_many_arguments)]
pub fn rejection_sample<B: Backend>(
    backend: &B,
    model: &Model<B>,
    prompts: &[GrpoPrompt],
    rewards: &[NamedReward],
    cfg: &RejectionConfig,
    policy: OnRewardError,
    out: &Path,
    stop: &StopSignal,
) -> anyhow::Result<RejectionStats> {
    cfg.validate().map_err(|e| anyhow::anyhow!("rejection sampling: {e}"))?;
    let generation = GenerationConfig {
        max_new_tokens: cfg.max_new_tokens,
        sampling: cfg.sampling(),
        stop: Vec::new(),
    };
    let mut engine = Engine::new(model.config.clone());
    let mut rng = Rng::new(cfg.seed);
    let mut stats = RejectionStats {
        prompts: cfg.prompts.min(prompts.len()),
        ..Default::default()
    };
    let mut failures: BTreeMap<String, RewardFailures> = BTreeMap::new();
    let mut passes: BTreeMap<String, usize> = BTreeMap::new();
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    let mut rows = Vec::new();
    let prompts = &prompts[..cfg.prompts.min(prompts.len())];
    let longest = prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
    let batch_rows = engine.rows_within(DEFAULT_GENERATION_KV_MIB, longest + cfg.max_new_tokens)?;
    // Windows of prompts share one running batch; a stop is honoured between windows.
    let per_window = (batch_rows * WINDOW_BATCHES)
        .div_ceil(cfg.samples_per_prompt.max(1))
        .max(1);
    for window in prompts.chunks(per_window) {
        if stop.is_requested() {
            return Err(StopRequested { step: 0 }.into());
        }
        let requests = window
            .iter()
            .map(|p| PromptGroup {
                prompt: &p.tokens,
                rngs: (0..cfg.samples_per_prompt).map(|_| rng.fork()).collect(),
            })
            .collect();
        let generated = engine.generate_many(
            backend,
            &model.params,
            &model.tokenizer,
            requests,
            &generation,
            batch_rows,
        )?;
        for (p, completions) in window.iter().zip(generated) {
            let group: Vec<Sample> = completions
                .iter()
                .map(|c| Sample {
                    completion: c.text.clone(),
                    ..p.sample.clone()
                })
                .collect();
            stats.sampled += group.len();
            let mut accepted = vec![true; group.len()];
            for r in rewards {
                let failed = failures.entry(r.name.clone()).or_default();
                let scores = policy.apply(group.len(), r.reward.score(&group), failed)?;
                let threshold = cfg.min_reward.get(&r.name).copied();
                for (i, s) in scores.iter().enumerate() {
                    let v = s.value();
                    *sums.entry(r.name.clone()).or_default() += v.unwrap_or(0.0) as f64;
                    let ok = match threshold {
                        Some(t) => v.is_some_and(|v| v as f64 >= t),
                        None => true,
                    };
                    if ok {
                        *passes.entry(r.name.clone()).or_default() += 1;
                    }
                    accepted[i] &= ok;
                }
            }
            let mut kept_here = 0;
            let mut seen = std::collections::HashSet::new();
            for (c, ok) in completions.iter().zip(&accepted) {
                // Distinct completions only: duplicates teach nothing new.
                if *ok && kept_here < cfg.max_per_prompt.max(1) && seen.insert(c.text.clone()) {
                    rows.push(serde_json::json!({"prompt": p.sample.prompt, "completion": c.text}));
                    kept_here += 1;
                }
            }
            stats.kept += kept_here;
            if kept_here > 0 {
                stats.prompts_covered += 1;
            }
        }
    }
    let n = stats.sampled.max(1) as f64;
    for r in rewards {
        stats
            .pass_rate
            .insert(r.name.clone(), passes.get(&r.name).copied().unwrap_or(0) as f64 / n);
        stats
            .mean_reward
            .insert(r.name.clone(), sums.get(&r.name).copied().unwrap_or(0.0) / n);
    }
    stats.reward_failures = failures
        .into_iter()
        .filter(|(_, f)| f.samples > 0)
        .map(|(name, f)| (name, f.samples))
        .collect();
    let mut bytes = Vec::new();
    for row in rows {
        writeln!(bytes, "{row}")?;
    }
    write_bytes_atomically(out, &bytes)?;
    Ok(stats)
}

/// A rejection-sampling stage: the current model's accepted samples of the training
/// prompts go to `<stage>.jsonl` (for a later SFT stage); the model itself is unchanged.
pub(super) fn run_rejection_stage<B: Backend>(
    run: &mut StageContext<'_, B>,
    model: &Model<B>,
    state: &PipelineState,
    name: &str,
    cfg: &RejectionConfig,
) -> anyhow::Result<FinishedStage> {
    let out = run.dir.root.join(format!("{name}.jsonl"));
    let stats = sample_training_prompts(run, model, name, cfg, &out)?;
    run.progress.log(&format!(
        "stage `{name}`: kept {} of {} completions ({} of {} prompts covered) → {}",
        stats.kept,
        stats.sampled,
        stats.prompts_covered,
        stats.prompts,
        out.display()
    ));
    Ok(FinishedStage {
        name: name.to_string(),
        checkpoint: run.current_checkpoint(state, model)?,
        output: Some(out),
        eval_accuracy: None,
        steps: 0,
    })
}

/// Rejection-samples the training prompts with `model` into `out`, and writes the
/// stage's statistics next to it as `<stage>.stats.json`.
pub(super) fn sample_training_prompts<B: Backend>(
    run: &StageContext<'_, B>,
    model: &Model<B>,
    stage: &str,
    cfg: &RejectionConfig,
    out: &Path,
) -> anyhow::Result<RejectionStats> {
    let prompts = encode_prompts(model, &run.data.train)?;
    let policy = run.recipe.on_reward_error;
    let stats = rejection_sample(run.backend, model, &prompts, &run.rewards, cfg, policy, out, run.stop)
        .map_err(|e| e.context(format!("stage `{stage}`")))?;
    for (reward, samples) in &stats.reward_failures {
        run.progress.log(&format!(
            "stage `{stage}`: reward `{reward}` failed on {samples} samples, handled by on_reward_error = {}",
            policy.name()
        ));
    }
    let stats_path: PathBuf = run.dir.root.join(format!("{stage}.stats.json"));
    write_bytes_atomically(&stats_path, &serde_json::to_vec_pretty(&stats)?)?;
    Ok(stats)
}
