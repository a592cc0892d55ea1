//! The pipeline's stop hook: a raised `StopSignal` ends a run with
//! `PipelineOutcome::Stopped`, leaving what a resume continues from, and the resumed run
//! ends with exactly the weights and metrics of an uninterrupted one — whether the stop
//! came before any stage, in an SFT stage (redone whole) or in a GRPO stage between
//! checkpoints (its latest step is checkpointed on the way out).

use crate::recipe_support;

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use r1_backend_cpu::CpuBackend;
use r1_host::pipeline::{PipelineOutcome, Recipe, run_pipeline};
use r1_host::progress::{NoProgress, Progress};
use r1_host::stop::StopSignal;
use recipe_support::{GrpoStage, TinyRecipe, checkpoint_bits};

/// A tiny SFT → GRPO recipe; GRPO checkpoints every 3 steps.
fn recipe() -> &'static str {
    static RECIPE: OnceLock<String> = OnceLock::new();
    RECIPE.get_or_init(|| {
        let grpo = GrpoStage {
            eval_steps: 6,
            ..GrpoStage::small("grpo", 8, 2)
        };
        format!("{}{}", TinyRecipe::one_layer("tiny-stop", 5).toml(), grpo.toml())
    })
}

/// Raises `stop` when stage `stage` reports its `at`-th step.
struct StopAt<'a> {
    stage: &'a str,
    at: u64,
    stop: &'a StopSignal,
    current: Mutex<(String, u64)>,
}

impl<'a> StopAt<'a> {
    fn new(stage: &'a str, at: u64, stop: &'a StopSignal) -> Self {
        StopAt {
            stage,
            at,
            stop,
            current: Mutex::new((String::new(), 0)),
        }
    }
}

impl Progress for StopAt<'_> {
    fn log(&self, _line: &str) {}
    fn begin(&self, label: &str, _total: u64, done: u64) {
        *self.current.lock().unwrap() = (label.to_string(), done);
    }
    fn step(&self, _message: &str) {
        let mut current = self.current.lock().unwrap();
        current.1 += 1;
        if current.0 == self.stage && current.1 == self.at {
            self.stop.request();
        }
    }
    fn end(&self) {}
}

fn run(dir: &Path, resume: bool, progress: &dyn Progress, stop: &StopSignal) -> PipelineOutcome {
    let recipe_text = recipe();
    let recipe = Recipe::from_toml(recipe_text).expect("the recipe parses");
    let backend = CpuBackend::with_threads(1).expect("backend");
    run_pipeline(&backend, &recipe, recipe_text, dir, resume, progress, stop).expect("the pipeline runs")
}

fn metrics(dir: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| {
            let mut m: serde_json::Map<String, serde_json::Value> = serde_json::from_str(l).expect("json");
            m.retain(|k, _| !k.ends_with("_time") && !k.ends_with("per_second"));
            m
        })
        .collect()
}

fn assert_same_run(reference: &Path, resumed: &Path) {
    for stage in ["cold_start", "grpo"] {
        let file = format!("{stage}.r1ckpt");
        assert!(
            checkpoint_bits(&reference.join(&file)) == checkpoint_bits(&resumed.join(&file)),
            "{stage}: the resumed run's weights differ"
        );
    }
    assert_eq!(metrics(reference), metrics(resumed));
}

#[test]
fn a_stopped_run_resumes_to_the_weights_of_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let reference = tmp.path().join("reference");
    let never = StopSignal::new();
    assert!(matches!(
        run(&reference, false, &NoProgress, &never),
        PipelineOutcome::Finished(_)
    ));

    // Raised before the run: the first stage does not start.
    let early = tmp.path().join("early");
    let stop = StopSignal::new();
    stop.request();
    match run(&early, false, &NoProgress, &stop) {
        PipelineOutcome::Stopped { stage, step } => assert_eq!((stage.as_str(), step), ("cold_start", 0)),
        PipelineOutcome::Finished(_) => panic!("a stopped run finished"),
    }
    assert!(!early.join("cold_start.r1ckpt").exists());

    // In SFT: the stage's partial work is dropped, and redone on resume.
    let sft = tmp.path().join("sft");
    let stop = StopSignal::new();
    match run(&sft, false, &StopAt::new("cold_start", 2, &stop), &stop) {
        PipelineOutcome::Stopped { stage, step } => assert_eq!((stage.as_str(), step), ("cold_start", 0)),
        PipelineOutcome::Finished(_) => panic!("a stopped run finished"),
    }
    assert!(!sft.join("cold_start.r1ckpt").exists());
    assert!(run(&sft, true, &NoProgress, &never).finished().is_some());
    assert_same_run(&reference, &sft);

    // In GRPO at step 4, between the checkpoints of steps 3 and 6: step 4 is checkpointed.
    let grpo = tmp.path().join("grpo");
    let stop = StopSignal::new();
    match run(&grpo, false, &StopAt::new("grpo", 4, &stop), &stop) {
        PipelineOutcome::Stopped { stage, step } => assert_eq!((stage.as_str(), step), ("grpo", 4)),
        PipelineOutcome::Finished(_) => panic!("a stopped run finished"),
    }
    assert!(!grpo.join("grpo.r1ckpt").exists());
    let lines = metrics(&grpo);
    assert_eq!(lines.iter().filter(|m| m["stage"] == "grpo").count(), 4);
    assert!(run(&grpo, true, &NoProgress, &never).finished().is_some());
    assert_same_run(&reference, &grpo);
}
