//! The R1 pipeline: runs a [`Recipe`]'s stages in order — cold-start SFT, GRPO,
//! rejection sampling, SFT on the accepted samples, GRPO with more rewards, distillation
//! — each from the previous stage's checkpoint, with one `metrics.jsonl` (every line
//! tagged with its `stage` and a `global_step`), held-out accuracy after each training
//! stage, and a `pipeline.json` that records finished stages so a resumed run skips
//! them and continues an interrupted GRPO stage from its last checkpoint.
//!
//! The pipeline runs on any [`Backend`] the caller opens, and reports progress through
//! [`Progress`]: the CLI draws bars, tests pass `NoProgress`. A [`StopSignal`] ends a run
//! early: the GRPO stage checkpoints its latest step, other stages give up their partial
//! work (they are redone, identically, on resume), and the run returns
//! [`PipelineOutcome::Stopped`]; resuming it ends with the weights of an uninterrupted run.

mod adapter_state;
mod context;
mod datasets;
mod distill;
mod grpo_stage;
pub mod recipe;
pub mod rejection;
mod report;
mod rewards;
mod sft_stage;
mod state;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use r1_core::backend::Backend;

use crate::io::atomic::write_bytes_atomically;
use crate::model::Model;
use crate::plugin::{HostConfig, PluginHost};
use crate::progress::Progress;
use crate::run_dir::RunDir;
use crate::stop::StopSignal;
use context::{EvalSample, StageContext};
use grpo_stage::GrpoStage;

pub use datasets::{Datasets, load_datasets};
pub use recipe::{DataSpec, Recipe, RewardSpec, StageSpec};
pub use report::{AccuracyGain, Baseline, PipelineReport};
pub use rewards::build_rewards;
pub use state::{FinishedStage, PipelineState, RunDirError};

/// The recipe `r1host run` runs without arguments.
pub const DEFAULT_RECIPE: &str = include_str!("default_recipe.toml");

/// How a pipeline run ended (errors aside).
#[derive(Debug)]
pub enum PipelineOutcome {
    /// Every stage ran.
    Finished(Box<PipelineReport>),
    /// The [`StopSignal`] was raised: the run directory holds what a resume continues from.
    Stopped {
        /// The stage that was running (or about to start).
        stage: String,
        /// The stage's step a resume continues from (a GRPO stage's checkpointed step;
        /// 0 for the stages that are redone whole).
        step: usize,
    },
}

impl PipelineOutcome {
    /// The report of a finished run; `None` when it was stopped.
    pub fn finished(self) -> Option<PipelineReport> {
        match self {
            PipelineOutcome::Finished(report) => Some(*report),
            PipelineOutcome::Stopped { .. } => None,
        }
    }
}

/// A stage ended early because its run's [`StopSignal`] was raised, leaving what a
/// resume continues from; `run_pipeline` turns it into [`PipelineOutcome::Stopped`].
#[derive(Debug, thiserror::Error)]
#[error("stopped on request at step {step}")]
pub(crate) struct StopRequested {
    /// The stage's step a resume continues from.
    pub step: usize,
}

/// Runs `recipe` in `run_dir` on `backend`. With `resume`, finished stages are skipped and
/// an interrupted GRPO stage continues from its last checkpoint. `stop` is read between
/// optimizer steps and stages; once raised the run checkpoints and returns
/// [`PipelineOutcome::Stopped`].
pub fn run_pipeline<B: Backend>(
    backend: &B,
    recipe: &Recipe,
    recipe_text: &str,
    run_dir: &Path,
    resume: bool,
    progress: &dyn Progress,
    stop: &StopSignal,
) -> anyhow::Result<PipelineOutcome> {
    // Everything the stages read is checked before anything is written: the recipe
    // (every stage's settings), the datasets, and the rewards with their plugins loaded.
    recipe.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let world = crate::train::dist::world();
    check_data_parallel(recipe, world.size())?;
    let data = load_datasets(recipe)?;
    let host = PluginHost::new(HostConfig::default()).context("starting the plugin host")?;
    let rewards = build_rewards(recipe, &host)?;
    // With several processes only rank 0 writes to the run directory.
    let dir = match world.is_writer() {
        true => RunDir::create(run_dir)?,
        false => RunDir {
            root: run_dir.to_path_buf(),
        },
    };
    let mut state = PipelineState::open(&dir, recipe_text, resume)?;
    if world.is_writer() {
        write_bytes_atomically(&dir.root.join("recipe.toml"), recipe_text.as_bytes())?;
    }
    let mut model = starting_model(backend, recipe, &state)?;
    let mut run = StageContext::open(
        backend, recipe, dir, data, rewards, &state, &model, resume, progress, stop,
    )?;
    world.barrier()?;
    if state.finished.is_empty() {
        state.initial_accuracy = run.accuracy(&model, recipe.on_reward_error)?;
        if let Some(a) = state.initial_accuracy {
            progress.log(&format!("held-out accuracy before training: {:.1}%", a * 100.0));
        }
    }
    for stage in &recipe.stages {
        let name = stage.name();
        if state.is_finished(name) {
            progress.log(&format!("stage `{name}`: finished earlier, skipped"));
            continue;
        }
        if run.stop_requested()? {
            return Ok(stopped(progress, name, 0));
        }
        let started = Instant::now();
        run.base_model = base_model_path(&run, recipe, &state);
        let finished = match run_stage(&mut run, &mut model, &state, stage, resume) {
            Ok(finished) => finished,
            Err(e) => match e.downcast_ref::<StopRequested>() {
                Some(s) => return Ok(stopped(progress, name, s.step)),
                None => return Err(e),
            },
        };
        progress.log(&format!(
            "stage `{name}` done in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        state.finished.push(finished);
        if world.is_writer() {
            state.save(&run.dir)?;
        }
    }
    let sample = run
        .evaluate(&model, recipe.on_reward_error)?
        .and_then(|e| sample_answer(e.answers));
    let plots = match world.is_writer() {
        true => crate::plot::plot_run(&run.dir.root).unwrap_or_else(|e| {
            progress.log(&format!("plots not written: {e}"));
            Vec::new()
        }),
        false => Vec::new(),
    };
    Ok(PipelineOutcome::Finished(Box::new(PipelineReport {
        run_dir: run.dir.root.clone(),
        stages: state.finished,
        initial_accuracy: state.initial_accuracy,
        sample,
        plots,
    })))
}

/// Refuses, with several processes, a recipe with stages other than GRPO: data-parallel
/// training is GRPO's (`train/grpo/data_parallel.rs`); SFT, rejection sampling and
/// distillation run in one process.
fn check_data_parallel(recipe: &Recipe, processes: usize) -> anyhow::Result<()> {
    if processes <= 1 {
        return Ok(());
    }
    for stage in &recipe.stages {
        let StageSpec::Grpo { grpo, .. } = stage else {
            anyhow::bail!(
                "stage `{}`: only GRPO stages run data-parallel over {processes} processes; \
                 run this recipe in one process, or split its other stages into a recipe of their own",
                stage.name()
            );
        };
        // Every stage's settings are checked before the first one starts.
        crate::train::grpo::check_data_parallel(grpo, processes)
            .with_context(|| format!("stage `{}`", stage.name()))?;
    }
    Ok(())
}

fn stopped(progress: &dyn Progress, stage: &str, step: usize) -> PipelineOutcome {
    progress.log(&format!(
        "stopped in stage `{stage}`; a resume continues at its step {step}"
    ));
    PipelineOutcome::Stopped {
        stage: stage.to_string(),
        step,
    }
}

/// The model the next stage starts from: the last finished stage's checkpoint, or the
/// recipe's starting point.
fn starting_model<B: Backend>(backend: &B, recipe: &Recipe, state: &PipelineState) -> anyhow::Result<Model<B>> {
    Ok(match state.finished.last() {
        Some(last) => Model::load_trainable(backend, &last.checkpoint)?,
        None => match (&recipe.model.init, &recipe.model.path) {
            (Some(cfg), _) => Model::init(backend, cfg.clone(), recipe.seed)?,
            (None, Some(p)) => Model::load_trainable(backend, p).with_context(|| format!("loading {}", p.display()))?,
            (None, None) => anyhow::bail!("[model] needs `init` or `path`"),
        },
    })
}

/// Where the model the next stage starts from lives outside r1 (what a LoRA adapter's
/// `base_model_name_or_path` names): the last finished training stage's Hugging Face
/// export, or the recipe's model.
fn base_model_path<B: Backend>(run: &StageContext<'_, B>, recipe: &Recipe, state: &PipelineState) -> Option<PathBuf> {
    match state.finished.last() {
        Some(last) => Some(run.dir.hf_model(&last.name)).filter(|p| p.is_dir()),
        None => recipe.model.path.clone(),
    }
}

/// Runs one stage on the pipeline's model (which GRPO and SFT train in place — in full,
/// or through a LoRA adapter merged in when the stage ends — and distillation replaces
/// with its student).
fn run_stage<B: Backend>(
    run: &mut StageContext<'_, B>,
    model: &mut Model<B>,
    state: &PipelineState,
    stage: &StageSpec,
    resume: bool,
) -> anyhow::Result<FinishedStage> {
    let name = stage.name();
    let lora = stage.lora().map_err(|e| anyhow::anyhow!("stage `{name}`: {e}"))?;
    if let Some(spec) = lora {
        model
            .attach_new_adapter(run.backend, spec, run.recipe.seed)
            .with_context(|| format!("stage `{name}`"))?;
        run.progress.log(&format!(
            "stage `{name}`: training a LoRA adapter (r={}, alpha={}, {}: {} weights) over the frozen model",
            spec.rank,
            spec.alpha,
            spec.targets.names().join(", "),
            model.params.layout.num_params()
        ));
    }
    let finished = run_stage_kind(run, model, state, stage, resume)?;
    if lora.is_some() {
        model
            .merge_adapter(run.backend)
            .with_context(|| format!("stage `{name}`: merging the adapter"))?;
    }
    Ok(finished)
}

fn run_stage_kind<B: Backend>(
    run: &mut StageContext<'_, B>,
    model: &mut Model<B>,
    state: &PipelineState,
    stage: &StageSpec,
    resume: bool,
) -> anyhow::Result<FinishedStage> {
    let name = stage.name();
    match stage {
        StageSpec::Sft { sft, data, .. } => sft_stage::run_sft_stage(run, model, state, name, sft, data),
        StageSpec::Grpo {
            grpo,
            rewards,
            eval_steps,
            save_steps,
            ..
        } => {
            let stage = GrpoStage {
                name,
                config: grpo,
                rewards,
                eval_steps: *eval_steps,
                save_steps: *save_steps,
            };
            grpo_stage::run_grpo_stage(run, model, &stage, resume)
        }
        StageSpec::RejectionSampling { rejection_sampling, .. } => {
            rejection::run_rejection_stage(run, model, state, name, rejection_sampling)
        }
        StageSpec::Distill { distill, .. } => distill::run_distill_stage(run, model, name, distill),
    }
}

/// The answer to show: the first with visible reasoning, else the first.
fn sample_answer(mut answers: Vec<EvalSample>) -> Option<EvalSample> {
    let i = answers.iter().position(|(_, c)| c.reasoning.is_some()).unwrap_or(0);
    (!answers.is_empty()).then(|| answers.swap_remove(i))
}
