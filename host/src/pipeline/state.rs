//! `pipeline.json`: the stages a run has finished (with their checkpoints and outputs) and
//! the held-out accuracy before training, so a resumed run skips finished stages, starts
//! from the last checkpoint, and still reports its gain over the untrained model.

use std::path::PathBuf;

use anyhow::Context;

use crate::io::atomic::write_bytes_atomically;
use crate::io::load_checkpoint;
use crate::pipeline::recipe::{Recipe, StageSpec};
use crate::run_dir::RunDir;
use crate::train::grpo::GrpoState;

/// What a finished stage left behind.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FinishedStage {
    pub name: String,
    /// The model after the stage.
    pub checkpoint: PathBuf,
    /// A JSONL of SFT rows the stage wrote (rejection sampling, distillation traces).
    pub output: Option<PathBuf>,
    /// Held-out accuracy after the stage, when measured.
    pub eval_accuracy: Option<f64>,
    /// Optimizer steps the stage took.
    pub steps: usize,
}

/// `pipeline.json`: the finished stages of a run.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PipelineState {
    pub recipe: String,
    pub finished: Vec<FinishedStage>,
    /// Held-out accuracy before any training, when measured (absent in older runs).
    #[serde(default)]
    pub initial_accuracy: Option<f64>,
}

/// Why a run directory cannot be used for a run.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("{dir} already holds a run; use --resume to continue it or pick another --run-dir")]
    HoldsARun { dir: PathBuf },
    #[error("the recipe differs from the one this run started with (kept in {state})")]
    RecipeChanged { state: PathBuf },
}

impl PipelineState {
    fn path(dir: &RunDir) -> PathBuf {
        dir.root.join("pipeline.json")
    }

    /// The state of the run in `dir`: read back when resuming (the recipe must be the
    /// one the run started with), a fresh one otherwise (refusing to overwrite a run).
    pub fn open(dir: &RunDir, recipe_text: &str, resume: bool) -> anyhow::Result<Self> {
        let path = Self::path(dir);
        if !path.is_file() {
            return Ok(PipelineState {
                recipe: recipe_text.to_string(),
                ..PipelineState::default()
            });
        }
        if !resume {
            return Err(RunDirError::HoldsARun { dir: dir.root.clone() }.into());
        }
        let state: PipelineState =
            serde_json::from_slice(&std::fs::read(&path)?).with_context(|| format!("{}", path.display()))?;
        if state.recipe != recipe_text {
            return Err(RunDirError::RecipeChanged { state: path }.into());
        }
        Ok(state)
    }

    /// Writes the state (atomically: a killed run keeps the previous one).
    pub fn save(&self, dir: &RunDir) -> anyhow::Result<()> {
        write_bytes_atomically(&Self::path(dir), &serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    pub fn is_finished(&self, stage: &str) -> bool {
        self.finished.iter().any(|s| s.name == stage)
    }

    /// Optimizer steps already taken: the finished stages', plus those an interrupted
    /// GRPO stage had checkpointed (the pipeline's global step resumes after them).
    pub fn steps_done(&self, dir: &RunDir, recipe: &Recipe) -> usize {
        let finished: usize = self.finished.iter().map(|s| s.steps).sum();
        let next = recipe.stages.iter().find(|s| !self.is_finished(s.name()));
        let interrupted = match next {
            Some(StageSpec::Grpo { name, .. }) => load_checkpoint(&dir.checkpoint(&format!("{name}.latest")))
                .ok()
                .and_then(|c| postcard::from_bytes::<GrpoState>(&c.trainer_state).ok())
                .map_or(0, |s| s.step),
            _ => 0,
        };
        finished + interrupted
    }
}
