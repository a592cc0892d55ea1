//! A GRPO stage: the pipeline's model trained in place by [`GrpoTrainer`] with the
//! stage's rewards (weighted as the recipe says), held-out accuracy every `eval_steps`,
//! and a checkpoint every `save_steps` from which an interrupted stage resumes exactly.
//! A stop request is honoured after the generation in progress: its step is checkpointed
//! (if `save_steps` did not just do it) and the stage ends with [`StopRequested`].

use anyhow::Context;
use r1_core::backend::Backend;

use crate::io::load_checkpoint;
use crate::model::{Model, restore_optimizer};
use crate::pipeline::StopRequested;
use crate::pipeline::adapter_state::{AdapterState, load_adapter_state, save_adapter_state};
use crate::pipeline::context::StageContext;
use crate::pipeline::datasets::encode_prompts;
use crate::pipeline::state::FinishedStage;
use crate::train::grpo::{GrpoStepReport, GrpoTrainConfig, GrpoTrainer, NamedReward, RolloutSample};

/// Completions per step written to `samples.jsonl`, in whole groups (at least one).
const LOGGED_SAMPLES: usize = 32;

/// The first groups of a step's rollouts, whole, up to [`LOGGED_SAMPLES`] completions
/// (one group even when it alone has more).
fn logged_samples(samples: &[RolloutSample]) -> Vec<RolloutSample> {
    // Groups are contiguous: cut at the first group boundary past the budget.
    let mut cut = 0;
    for (i, s) in samples.iter().enumerate() {
        let ends_group = samples.get(i + 1).is_none_or(|next| next.group != s.group);
        if ends_group {
            if i + 1 > LOGGED_SAMPLES && cut > 0 {
                break;
            }
            cut = i + 1;
        }
    }
    samples[..cut].to_vec()
}

/// A GRPO stage of the recipe.
pub(super) struct GrpoStage<'s> {
    pub name: &'s str,
    pub config: &'s GrpoTrainConfig,
    /// Reward names (empty: every reward of the recipe).
    pub rewards: &'s [String],
    pub eval_steps: usize,
    pub save_steps: usize,
}

/// Trains `model` in place; with `resume`, continues from the stage's last checkpoint.
pub(super) fn run_grpo_stage<B: Backend>(
    run: &mut StageContext<'_, B>,
    model: &mut Model<B>,
    stage: &GrpoStage<'_>,
    resume: bool,
) -> anyhow::Result<FinishedStage> {
    let name = stage.name;
    let rewards = stage_rewards(run, stage.rewards);
    let config = with_recipe_weights(run, stage.config, &rewards);
    let max = config.max_steps;
    // The stage's reward policy covers its held-out evaluations too.
    let policy = config.on_reward_error;
    let prompts = encode_prompts(model, &run.data.train)?;
    let mut trainer = GrpoTrainer::new(
        run.backend,
        model.config.clone(),
        &model.params,
        config,
        rewards,
        prompts,
    )
    .with_context(|| format!("stage `{name}`"))?;
    let latest = run.dir.checkpoint(&format!("{name}.latest"));
    let adapter_state = run.dir.adapter_state(name);
    let lora = model.params.lora().is_some();
    if resume
        && lora
        && let Some(saved) = load_adapter_state(&adapter_state)?
    {
        restore_adapter(run, model, &mut trainer, name, saved)?;
    } else if resume && !lora && latest.is_file() {
        restore_trainer(run, model, &mut trainer, name)?;
    } else if trainer.reference_is_copy(&model.params) {
        // The frozen reference is the model as this stage starts.
        run.written_by_rank_0(|| Ok(model.save(run.backend, &reference_path(run, name), None, Vec::new())?))?;
    }
    run.progress.begin(name, max as u64, trainer.state.step as u64);
    let mut last_acc = None;
    if trainer.state.step == 0 && stage.eval_steps > 0 {
        last_acc = run.accuracy(model, policy)?;
    }
    while trainer.state.step < max {
        let mut reports = Vec::new();
        trainer
            .train_generation(run.backend, &model.params, &model.tokenizer, |r| {
                // Only the first few samples are logged: copy only those.
                reports.push(GrpoStepReport {
                    metrics: r.metrics.clone(),
                    samples: logged_samples(&r.samples),
                });
                Ok(())
            })
            .with_context(|| format!("stage `{name}`"))?;
        let step = trainer.state.step;
        let eval_now = stage.eval_steps > 0 && (step.is_multiple_of(stage.eval_steps) || step >= max);
        let acc = if eval_now { run.accuracy(model, policy)? } else { None };
        if acc.is_some() {
            last_acc = acc;
        }
        log_generation(run, name, reports, acc, last_acc)?;
        let stopping = run.stop_requested()? && step < max;
        if (stage.save_steps > 0 && step.is_multiple_of(stage.save_steps)) || step >= max || stopping {
            let state = postcard::to_allocvec(&trainer.state)?;
            run.written_by_rank_0(|| {
                if lora {
                    save_adapter_state(run.backend, &adapter_state, model, &trainer.optimizer, &state)?;
                } else {
                    model.save(run.backend, &latest, Some(&trainer.optimizer), state)?;
                }
                Ok(())
            })?;
        }
        if stopping {
            run.progress.end();
            return Err(StopRequested { step }.into());
        }
    }
    run.progress.end();
    let failures: u64 = trainer.failures().iter().map(|f| f.samples).sum();
    if failures > 0 {
        run.progress.log(&format!(
            "stage `{name}`: {failures} samples' rewards failed and were handled by on_reward_error"
        ));
    }
    let known = if stage.eval_steps > 0 { last_acc } else { None };
    run.finish_training_stage(model, name, max, known, policy)
}

/// The stage's rewards: those it names, or every reward of the recipe.
fn stage_rewards<B: Backend>(run: &StageContext<'_, B>, names: &[String]) -> Vec<NamedReward> {
    if names.is_empty() {
        return run.rewards.clone();
    }
    names
        .iter()
        .filter_map(|n| run.rewards.iter().find(|r| &r.name == n).cloned())
        .collect()
}

/// The stage's config with the recipe's `[[rewards]]` weights, unless the stage sets
/// TRL's `reward_weights` itself.
fn with_recipe_weights<B: Backend>(
    run: &StageContext<'_, B>,
    config: &GrpoTrainConfig,
    rewards: &[NamedReward],
) -> GrpoTrainConfig {
    let mut config = config.clone();
    if config.grpo.reward_weights.is_none() {
        let weight = |r: &NamedReward| {
            run.recipe
                .rewards
                .iter()
                .find(|spec| spec.name == r.name)
                .map_or(1.0, |spec| spec.weight)
        };
        config.grpo.reward_weights = Some(rewards.iter().map(weight).collect());
    }
    config
}

fn reference_path<B: Backend>(run: &StageContext<'_, B>, stage: &str) -> std::path::PathBuf {
    run.dir.checkpoint(&format!("{stage}.reference"))
}

/// Puts an interrupted stage back as it was at its last checkpoint: weights, optimizer
/// moments, trainer state (step, data order, sampling RNG) and the frozen reference.
fn restore_trainer<B: Backend>(
    run: &StageContext<'_, B>,
    model: &mut Model<B>,
    trainer: &mut GrpoTrainer<B>,
    name: &str,
) -> anyhow::Result<()> {
    let backend = run.backend;
    let ckpt = load_checkpoint(&run.dir.checkpoint(&format!("{name}.latest")))?;
    for t in ckpt.weights.iter() {
        model.params.upload(backend, &t.name, &t.data)?;
    }
    if let Some(opt) = &ckpt.optimizer {
        restore_optimizer(backend, &mut trainer.optimizer, opt)?;
    }
    trainer.resume_from(postcard::from_bytes(&ckpt.trainer_state).context("GRPO trainer state in the checkpoint")?);
    if let Some(reference) = trainer
        .reference
        .as_ref()
        .filter(|_| trainer.reference_is_copy(&model.params))
    {
        let r = load_checkpoint(&reference_path(run, name))?;
        for t in r.weights.iter() {
            reference.upload(backend, &t.name, &t.data)?;
        }
    }
    run.progress
        .log(&format!("stage `{name}`: resumed at step {}", trainer.state.step));
    Ok(())
}

/// Puts an interrupted LoRA stage back as it was at its last checkpoint: the adapter's
/// weights, their optimizer moments and the trainer state (the base never moved).
fn restore_adapter<B: Backend>(
    run: &StageContext<'_, B>,
    model: &mut Model<B>,
    trainer: &mut GrpoTrainer<B>,
    name: &str,
    saved: AdapterState,
) -> anyhow::Result<()> {
    let backend = run.backend;
    if model.params.lora() != Some(&saved.adapter.spec) {
        anyhow::bail!("stage `{name}`: the saved adapter's settings differ from the recipe's; start the run afresh");
    }
    saved.adapter.check_for(&model.config, "the stage's saved adapter")?;
    for t in &saved.adapter.weights {
        model.params.upload(backend, &t.name, &t.data)?;
    }
    restore_optimizer(backend, &mut trainer.optimizer, &saved.optimizer)?;
    trainer.resume_from(postcard::from_bytes(&saved.trainer_state).context("GRPO trainer state of the saved adapter")?);
    run.progress.log(&format!(
        "stage `{name}`: resumed the LoRA adapter at step {}",
        trainer.state.step
    ));
    Ok(())
}

/// Writes one generation's step reports: a metrics line per step (the last carrying the
/// held-out accuracy `acc` when measured), its first rollouts to `samples.jsonl`, and a
/// progress step.
fn log_generation<B: Backend>(
    run: &mut StageContext<'_, B>,
    name: &str,
    reports: Vec<GrpoStepReport>,
    acc: Option<f64>,
    last_acc: Option<f64>,
) -> anyhow::Result<()> {
    let n = reports.len();
    for (i, mut report) in reports.into_iter().enumerate() {
        if i + 1 == n {
            report.metrics.eval_accuracy = acc;
        }
        run.write_metrics(name, &report.metrics)?;
        for sample in &report.samples {
            run.write_sample(name, sample)?;
        }
        let reward = report.metrics.reward.unwrap_or(f64::NAN);
        let acc = last_acc.map(|a| format!(" acc {:.1}%", a * 100.0)).unwrap_or_default();
        run.progress.step(&format!("reward {reward:.3}{acc}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(groups: usize, size: usize) -> Vec<RolloutSample> {
        (0..groups * size)
            .map(|i| RolloutSample {
                group: i / size,
                prompt: String::new(),
                completion: String::new(),
                reward: None,
                advantage: 0.0,
                rewards: Default::default(),
            })
            .collect()
    }

    #[test]
    fn whole_groups_are_logged_within_the_budget() {
        assert_eq!(logged_samples(&samples(16, 8)).len(), 32, "four groups of 8");
        assert_eq!(
            logged_samples(&samples(16, 5)).len(),
            30,
            "six groups of 5, not a part of the 7th"
        );
        assert_eq!(
            logged_samples(&samples(2, 40)).len(),
            40,
            "one group even past the budget"
        );
        assert_eq!(logged_samples(&samples(3, 4)).len(), 12, "all of a small step");
        assert!(logged_samples(&[]).is_empty());
    }
}
