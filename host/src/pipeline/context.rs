//! What every stage of a pipeline run shares: the backend, the recipe, the run directory,
//! the datasets and rewards, the metrics files with the step counted over the whole
//! pipeline, the held-out evaluation, and where progress goes.

use std::path::PathBuf;

use r1_core::backend::Backend;

use anyhow::Context;

use crate::engine::{Completion, Engine};
use crate::io::{export_hf_dir, write_peft_adapter};
use crate::model::Model;
use crate::pipeline::datasets::{Datasets, encode_prompts};
use crate::pipeline::recipe::Recipe;
use crate::pipeline::state::{FinishedStage, PipelineState};
use crate::plugin::OnRewardError;
use crate::progress::Progress;
use crate::run_dir::RunDir;
use crate::stop::StopSignal;
use crate::train::dist::{self, Collective};
use crate::train::grpo::{GrpoPrompt, HeldOutEval, NamedReward, evaluate};
use crate::train::metrics::{EvalMetrics, MetricsWriter, StageLine};

/// One held-out prompt with the completion the model gave it.
pub(super) type EvalSample = (String, Completion);

/// Everything a stage needs from the run.
pub(super) struct StageContext<'a, B: Backend> {
    pub backend: &'a B,
    pub recipe: &'a Recipe,
    pub dir: RunDir,
    pub data: Datasets,
    pub rewards: Vec<NamedReward>,
    pub progress: &'a dyn Progress,
    /// Read between optimizer steps and generations: a set signal ends the stage early
    /// (with [`StopRequested`](super::StopRequested)) where a resume can continue.
    pub stop: &'a StopSignal,
    /// The processes running the pipeline together ([`dist::world`]): only rank 0 writes
    /// metrics, samples, checkpoints and exports, and only it evaluates held-out accuracy.
    pub world: &'static dyn Collective,
    /// `metrics.jsonl` and `samples.jsonl` (rank 0's; `None` on the other processes).
    files: Option<(MetricsWriter, MetricsWriter)>,
    /// Metric lines written so far over the whole pipeline (an eval line shares its step).
    global_step: usize,
    /// The held-out prompts, tokenized for the current model.
    eval_prompts: Vec<GrpoPrompt>,
    /// Answers the held-out prompts (rebuilt when distillation swaps the model).
    eval_engine: Engine<B>,
    /// Where the model the current stage starts from lives outside r1 (a LoRA adapter's
    /// `base_model_name_or_path`), when it does.
    pub base_model: Option<PathBuf>,
}

impl<'a, B: Backend> StageContext<'a, B> {
    /// Opens the run's metrics files — fresh, or on resume trimmed to the steps already
    /// done — for `model`, the model the next stage starts from.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        backend: &'a B,
        recipe: &'a Recipe,
        dir: RunDir,
        data: Datasets,
        rewards: Vec<NamedReward>,
        state: &PipelineState,
        model: &Model<B>,
        resume: bool,
        progress: &'a dyn Progress,
        stop: &'a StopSignal,
    ) -> anyhow::Result<Self> {
        let world = dist::world();
        let global_step = if resume { state.steps_done(&dir, recipe) } else { 0 };
        let files = match (world.is_writer(), resume) {
            (false, _) => None,
            (true, true) => Some((
                MetricsWriter::resume(&dir.metrics(), "global_step", global_step)?,
                MetricsWriter::resume(&dir.samples(), "global_step", global_step)?,
            )),
            (true, false) => Some((
                MetricsWriter::create(&dir.metrics())?,
                MetricsWriter::create(&dir.samples())?,
            )),
        };
        Ok(StageContext {
            backend,
            recipe,
            dir,
            eval_prompts: encode_prompts(model, &data.eval)?,
            data,
            rewards,
            progress,
            stop,
            world,
            files,
            global_step,
            eval_engine: Engine::new(model.config.clone()),
            base_model: None,
        })
    }

    /// The pipeline's model is now `model` (distillation's student): held-out prompts are
    /// tokenized and answered for it.
    pub fn switch_model(&mut self, model: &Model<B>) -> anyhow::Result<()> {
        self.eval_prompts = encode_prompts(model, &self.data.eval)?;
        self.eval_engine = Engine::new(model.config.clone());
        Ok(())
    }

    fn eval_reward(&self) -> Option<&NamedReward> {
        let name = self.recipe.eval_reward.as_ref()?;
        self.rewards.iter().find(|r| &r.name == name)
    }

    /// Held-out accuracy of `model` with its answers (None without an eval reward or
    /// eval prompts), the eval reward's failures handled by `on_reward_error` — the
    /// policy of the GRPO stage measuring it, else the recipe's — and logged.
    pub fn evaluate(
        &mut self,
        model: &Model<B>,
        on_reward_error: OnRewardError,
    ) -> anyhow::Result<Option<HeldOutEval>> {
        let Some(judge) = self.eval_reward().filter(|_| self.world.is_writer()) else {
            return Ok(None);
        };
        if self.eval_prompts.is_empty() {
            return Ok(None);
        }
        let (name, judge) = (judge.name.clone(), judge.reward.clone());
        let result = evaluate(
            &mut self.eval_engine,
            self.backend,
            &model.params,
            &model.tokenizer,
            &self.eval_prompts,
            judge.as_ref(),
            self.recipe.eval_max_new_tokens,
            on_reward_error,
        )
        .with_context(|| format!("held-out evaluation with reward `{name}`"))?;
        if let Some(last) = &result.failures.last {
            self.progress.log(&format!(
                "held-out evaluation: reward `{name}` failed on {} of {} prompts, handled by \
                 on_reward_error = {} (last: {last})",
                result.failures.samples,
                self.eval_prompts.len(),
                on_reward_error.name()
            ));
        }
        Ok(Some(result))
    }

    /// Held-out accuracy of `model` (None without an eval reward or eval prompts, or when
    /// `skip` left out every answer).
    pub fn accuracy(&mut self, model: &Model<B>, on_reward_error: OnRewardError) -> anyhow::Result<Option<f64>> {
        Ok(self.evaluate(model, on_reward_error)?.and_then(|e| e.accuracy))
    }

    /// Writes one step's metrics of `stage` as the pipeline's next step.
    pub fn write_metrics<M: serde::Serialize>(&mut self, stage: &str, metrics: &M) -> anyhow::Result<()> {
        self.global_step += 1;
        if let Some((file, _)) = &mut self.files {
            file.write(&StageLine {
                metrics,
                stage,
                global_step: self.global_step,
            })?;
        }
        Ok(())
    }

    /// Writes a held-out accuracy line; it shares the step of the line before it.
    fn write_eval(&mut self, stage: &str, accuracy: f64) -> anyhow::Result<()> {
        self.global_step = self.global_step.saturating_sub(1);
        self.write_metrics(stage, &EvalMetrics { accuracy })
    }

    /// Writes a rollout to `samples.jsonl` under the current step.
    pub fn write_sample(&mut self, stage: &str, sample: &crate::train::grpo::RolloutSample) -> anyhow::Result<()> {
        if let Some((_, file)) = &mut self.files {
            file.write(&SampleLine {
                sample,
                stage,
                global_step: self.global_step,
            })?;
        }
        Ok(())
    }

    /// Whether a stop was requested of any process (so every process stops at the same
    /// step: one that went on would wait for the others in its next reduction).
    pub fn stop_requested(&self) -> anyhow::Result<bool> {
        Ok(self.world.any(self.stop.is_requested())?)
    }

    /// Runs `write` on rank 0 only, then waits until it has (a checkpoint the other
    /// processes may load on resume is on disk before any goes on).
    pub fn written_by_rank_0(&self, write: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
        if self.world.is_writer() {
            write()?;
        }
        self.world.barrier()?;
        Ok(())
    }

    /// Saves the stage's model and reports its held-out accuracy: `known_accuracy` when
    /// the stage measured it on its last step, else measured now (reward failures handled
    /// by `on_reward_error`) and written as an eval line. Only rank 0 writes and measures.
    pub fn finish_training_stage(
        &mut self,
        model: &Model<B>,
        name: &str,
        steps: usize,
        known_accuracy: Option<f64>,
        on_reward_error: OnRewardError,
    ) -> anyhow::Result<FinishedStage> {
        let checkpoint = self.dir.checkpoint(name);
        self.written_by_rank_0(|| self.save_stage_model(model, name))?;
        let accuracy = match known_accuracy {
            Some(a) => Some(a),
            None => {
                let measured = self.accuracy(model, on_reward_error)?;
                if let Some(a) = measured {
                    self.write_eval(name, a)?;
                }
                measured
            }
        };
        if let Some(a) = accuracy {
            self.progress
                .log(&format!("stage `{name}`: held-out accuracy {:.1}%", a * 100.0));
        }
        Ok(FinishedStage {
            name: name.to_string(),
            checkpoint,
            output: None,
            eval_accuracy: accuracy,
            steps,
        })
    }

    /// Writes a finished stage's model: its checkpoint, its Hugging Face export and, for a
    /// LoRA stage, its adapter.
    fn save_stage_model(&self, model: &Model<B>, name: &str) -> anyhow::Result<()> {
        let checkpoint = self.dir.checkpoint(name);
        model.save(self.backend, &checkpoint, None, Vec::new())?;
        // The same model as a Hugging Face directory, so it can leave r1 (transformers,
        // llama.cpp's converter, vLLM) without an export step.
        let hf_dir = self.dir.hf_model(name);
        let weights = model.weights(self.backend)?;
        export_hf_dir(&hf_dir, &model.config, &model.tokenizer, &weights)
            .with_context(|| format!("exporting stage `{name}` to {}", hf_dir.display()))?;
        // A LoRA stage's adapter too, in PEFT's format, over the model the stage started from.
        let base = self.base_model.as_ref().map(|p| p.display().to_string());
        if let Some(adapter) = model.adapter(self.backend, base)? {
            let dir = self.dir.adapter(name);
            write_peft_adapter(&dir, &adapter)
                .with_context(|| format!("writing stage `{name}`'s adapter to {}", dir.display()))?;
            self.progress
                .log(&format!("stage `{name}`: LoRA adapter written to {}", dir.display()));
        }
        Ok(())
    }

    /// The checkpoint holding the current model: the previous stage's, or a new one.
    pub fn current_checkpoint(&self, state: &PipelineState, model: &Model<B>) -> anyhow::Result<PathBuf> {
        if let Some(last) = state.finished.last() {
            return Ok(last.checkpoint.clone());
        }
        let path = self.dir.checkpoint("initial");
        model.save(self.backend, &path, None, Vec::new())?;
        Ok(path)
    }
}

/// A line of `samples.jsonl`: a rollout tagged with its stage and the pipeline step.
#[derive(serde::Serialize)]
struct SampleLine<'a> {
    stage: &'a str,
    global_step: usize,
    #[serde(flatten)]
    sample: &'a crate::train::grpo::RolloutSample,
}
