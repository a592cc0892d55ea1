//! LoRA stages in the pipeline: a GRPO stage with `[stages.lora]` trains an adapter over
//! the frozen cold-start model (β > 0, so its reference is that base; dropout 0.05 on the
//! adapter's input), writes it in PEFT's format, hands the next stage the merged model,
//! and resumes after a stop to exactly the adapter and weights of an uninterrupted run.

use crate::recipe_support;

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use r1_backend_cpu::CpuBackend;
use r1_host::adapter::merge_adapter;
use r1_host::io::checkpoint::load_checkpoint;
use r1_host::io::read_peft_adapter;
use r1_host::pipeline::{PipelineOutcome, Recipe, run_pipeline};
use r1_host::progress::{NoProgress, Progress};
use r1_host::stop::StopSignal;
use recipe_support::{GrpoStage, TinyRecipe, checkpoint_bits};

fn recipe() -> &'static str {
    static RECIPE: OnceLock<String> = OnceLock::new();
    RECIPE.get_or_init(|| {
        let grpo = GrpoStage::small("grpo_lora", 6, 4).toml();
        // Partial credit per tag, so groups have reward spread from the first step.
        let tags = "\n[[rewards]]\nname = \"tags\"\nbuiltin = { type = \"tag_count\", strict_newlines = false }\n";
        format!(
            "{}{tags}{grpo}beta = 0.04\n[stages.grpo.optim]\nlearning_rate = 2e-3\n[stages.lora]\nr = 4\nlora_alpha = 8\nlora_dropout = 0.05\ntarget_modules = [\"all-linear\"]\n",
            TinyRecipe::one_layer("tiny-lora", 11).toml()
        )
    })
}

fn run(dir: &Path, resume: bool, progress: &dyn Progress, stop: &StopSignal) -> PipelineOutcome {
    let text = recipe();
    let recipe = Recipe::from_toml(text).expect("the recipe parses");
    let backend = CpuBackend::with_threads(1).expect("backend");
    run_pipeline(&backend, &recipe, text, dir, resume, progress, stop).expect("the pipeline runs")
}

/// Raises `stop` at the `at`-th step of stage `stage`.
struct StopAt<'a> {
    stage: &'a str,
    at: u64,
    stop: &'a StopSignal,
    current: Mutex<(String, u64)>,
}

impl Progress for StopAt<'_> {
    fn log(&self, _line: &str) {}
    fn begin(&self, label: &str, _total: u64, done: u64) {
        *self.current.lock().expect("lock") = (label.to_string(), done);
    }
    fn step(&self, _message: &str) {
        let mut current = self.current.lock().expect("lock");
        current.1 += 1;
        if current.0 == self.stage && current.1 == self.at {
            self.stop.request();
        }
    }
    fn end(&self) {}
}

#[test]
fn a_lora_grpo_stage_writes_a_peft_adapter_and_hands_on_the_merged_model() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("run");
    assert!(run(&dir, false, &NoProgress, &StopSignal::new()).finished().is_some());

    let adapter = read_peft_adapter(&dir.join("adapters/grpo_lora")).expect("the stage's PEFT adapter");
    assert_eq!((adapter.spec.rank, adapter.spec.alpha), (4, 8.0));
    assert_eq!(adapter.spec.targets.names().len(), 7, "all-linear");
    let base_path = adapter.base_model.as_deref().expect("base_model_name_or_path");
    assert!(base_path.ends_with("models/cold_start"), "{base_path}");
    assert!(
        adapter
            .weights
            .iter()
            .any(|t| t.name.ends_with("lora_B.weight") && t.data.iter().any(|&x| x != 0.0)),
        "the adapter trained"
    );

    // The stage's checkpoint is the cold-start model with the adapter merged in.
    let mut base = load_checkpoint(&dir.join("cold_start.r1ckpt"))
        .expect("cold start")
        .weights;
    let before = base.clone();
    assert_eq!(merge_adapter(&mut base, &adapter).expect("merge"), 7);
    let stage = load_checkpoint(&dir.join("grpo_lora.r1ckpt"))
        .expect("stage checkpoint")
        .weights;
    assert_eq!(stage, base, "the stage's model is base + adapter");
    assert_ne!(stage, before, "and not the base");
    // Only adapted weights moved: the embeddings and norms are the cold start's.
    for name in [
        "model.embed_tokens.weight",
        "model.norm.weight",
        "model.layers.0.input_layernorm.weight",
    ] {
        assert_eq!(stage.get(name), before.get(name), "{name}");
    }
}

#[test]
fn a_stopped_lora_stage_resumes_to_the_adapter_of_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let reference = tmp.path().join("reference");
    let never = StopSignal::new();
    assert!(run(&reference, false, &NoProgress, &never).finished().is_some());

    let stopped = tmp.path().join("stopped");
    let stop = StopSignal::new();
    let at = StopAt {
        stage: "grpo_lora",
        at: 4,
        stop: &stop,
        current: Mutex::new((String::new(), 0)),
    };
    match run(&stopped, false, &at, &stop) {
        PipelineOutcome::Stopped { stage, step } => assert_eq!((stage.as_str(), step), ("grpo_lora", 4)),
        PipelineOutcome::Finished(_) => panic!("a stopped run finished"),
    }
    assert!(
        stopped
            .join("grpo_lora.latest.lora/adapter_model.safetensors")
            .is_file()
    );
    assert!(!stopped.join("grpo_lora.r1ckpt").exists());
    assert!(run(&stopped, true, &NoProgress, &never).finished().is_some());

    assert!(
        checkpoint_bits(&reference.join("grpo_lora.r1ckpt")) == checkpoint_bits(&stopped.join("grpo_lora.r1ckpt")),
        "the resumed run's merged weights differ"
    );
    let (a, b) = (
        read_peft_adapter(&reference.join("adapters/grpo_lora")).expect("adapter"),
        read_peft_adapter(&stopped.join("adapters/grpo_lora")).expect("adapter"),
    );
    assert_eq!(a.weights, b.weights, "the resumed run's adapter differs");
}
