//! Every trainer stops on a non-finite loss or gradient norm with the same error,
//! `NonFiniteStep`, naming the step, before the optimizer applies it — SFT, GRPO, and
//! (through the pipeline) distillation's SFT of its student — so a run that diverges ends
//! with a clear message and finite weights instead of training on NaN.

use crate::recipe_support;

use std::sync::Arc;

use r1_backend_cpu::CpuBackend;
use r1_core::model::ModelConfig;
use r1_core::reward::{Reward, RewardError, Sample, Score};
use r1_host::engine::Detokenizer;
use r1_host::pipeline::{Recipe, run_pipeline};
use r1_host::progress::NoProgress;
use r1_host::stop::StopSignal;
use r1_host::train::grpo::{GrpoPrompt, GrpoTrainConfig, GrpoTrainError, GrpoTrainer, NamedReward};
use r1_host::train::optim::{NonFiniteQuantity, NonFiniteStep, OptimConfig};
use r1_host::train::sft::{SftConfig, SftError, SftExample, train_sft};
use r1_host::weights::{ParamBuffer, random_params};
use recipe_support::TinyRecipe;

fn tiny() -> (CpuBackend, ModelConfig, ParamBuffer<CpuBackend>) {
    let backend = CpuBackend::with_threads(1).expect("backend");
    let cfg: ModelConfig = serde_json::from_value(serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 16,
        "tie_word_embeddings": true, "max_position_embeddings": 32,
    }))
    .expect("config");
    let params = random_params(&backend, &cfg, 3).expect("weights");
    (backend, cfg, params)
}

/// Every weight, bit for bit.
fn weights(backend: &CpuBackend, params: &ParamBuffer<CpuBackend>) -> Vec<Vec<u32>> {
    let weights = params.download_all(backend).expect("download");
    weights
        .into_iter()
        .map(|(_, _, values)| values.iter().map(|v| v.to_bits()).collect())
        .collect()
}

fn all_finite(backend: &CpuBackend, params: &ParamBuffer<CpuBackend>) -> bool {
    let weights = params.download_all(backend).expect("download");
    weights
        .iter()
        .all(|(_, _, values)| values.iter().all(|v| v.is_finite()))
}

fn assert_stopped_at(error: &NonFiniteStep, step: u64) {
    assert_eq!(error.step, step, "{error}");
    assert!(!error.value.is_finite(), "{error}");
    let message = error.to_string();
    assert!(message.starts_with(&format!("step {step}: ")), "{message}");
    assert!(
        message.contains("not a finite number; training stopped before applying the step"),
        "{message}"
    );
}

/// SFT of the tiny model with `norm` as its final norm's weights: the error of step 1.
fn sft_step_one_with_final_norm(norm: f32) -> NonFiniteStep {
    let (backend, cfg, params) = tiny();
    params
        .upload(&backend, "model.norm.weight", &vec![norm; cfg.hidden_size])
        .expect("upload");
    let before = weights(&backend, &params);
    let examples = vec![
        SftExample {
            prompt: vec![1, 2],
            completion: vec![3, 4],
        };
        4
    ];
    let config = SftConfig {
        per_device_train_batch_size: 2,
        max_steps: Some(3),
        ..SftConfig::default()
    };
    let mut steps = 0;
    let result = train_sft(&backend, &cfg, &params, &examples, &config, 0, |_| {
        steps += 1;
        Ok(())
    });
    assert_eq!(steps, 0, "no step was reported");
    assert!(weights(&backend, &params) == before, "the update was applied");
    match result {
        Err(SftError::NonFinite(e)) => {
            assert_stopped_at(&e, 1);
            e
        }
        other => panic!("expected step 1 to stop, got {other:?}"),
    }
}

#[test]
fn sft_stops_on_a_nan_loss_before_the_update() {
    let error = sft_step_one_with_final_norm(f32::NAN);
    assert_eq!(error.quantity, NonFiniteQuantity::Loss);
}

#[test]
fn sft_stops_on_an_overflowing_gradient_before_the_update() {
    // Finite weights whose products overflow f32: the final norm scales by 1e38.
    let error = sft_step_one_with_final_norm(1e38);
    assert_eq!(error.quantity, NonFiniteQuantity::GradNorm);
    assert_eq!(
        error.to_string(),
        format!(
            "step 1: the gradient norm is {}, not a finite number; training stopped before applying the step \
             (the weights are those of the step before)",
            error.value
        )
    );
}

/// Token 5 is "x", everything else "y".
struct Letters;

impl Detokenizer for Letters {
    fn decode(&self, tokens: &[u32]) -> String {
        tokens.iter().map(|&t| if t == 5 { 'x' } else { 'y' }).collect()
    }
    fn eos_id(&self) -> Option<u32> {
        None
    }
}

/// The number of x's in a completion: rewards that differ within a group, so the
/// advantages (and gradients) are not all zero.
struct CountX;

impl Reward for CountX {
    fn name(&self) -> &str {
        "count_x"
    }
    fn score(&self, batch: &[Sample]) -> Result<Vec<Score>, RewardError> {
        Ok(batch
            .iter()
            .map(|s| Score::Value(s.completion.matches('x').count() as f32))
            .collect())
    }
}

#[test]
fn grpo_stops_on_a_diverging_step_before_the_update() {
    let (backend, cfg, params) = tiny();
    let prompts: Vec<GrpoPrompt> = (0..4u32)
        .map(|i| GrpoPrompt {
            sample: Sample {
                prompt: format!("p{i}"),
                ..Default::default()
            },
            tokens: vec![i + 1, 2],
        })
        .collect();
    // A learning rate of 1e30 throws every weight to ±1e30 in step 1; the second pass
    // over the same generation (num_iterations = 2) then overflows.
    let mut config = GrpoTrainConfig {
        per_device_train_batch_size: 8,
        num_iterations: 2,
        max_steps: 4,
        optim: OptimConfig {
            learning_rate: 1e30,
            max_grad_norm: 0.0,
            ..OptimConfig::default()
        },
        ..GrpoTrainConfig::default()
    };
    config.grpo.num_generations = 4;
    config.grpo.max_completion_length = 4;
    config.grpo.beta = 0.0;
    let rewards = vec![NamedReward {
        name: "count_x".into(),
        reward: Arc::new(CountX),
    }];
    let mut trainer = GrpoTrainer::new(&backend, cfg, &params, config, rewards, prompts).expect("trainer");
    let mut reported = Vec::new();
    let result = trainer.train_generation(&backend, &params, &Letters, |r| {
        reported.push(r.metrics.step);
        Ok(())
    });
    match result {
        Err(GrpoTrainError::NonFinite(e)) => assert_stopped_at(&e, 2),
        other => panic!("expected a non-finite step 2, got {other:?} after steps {reported:?}"),
    }
    assert_eq!(reported, vec![1]);
    assert_eq!(trainer.state.step, 1, "step 2 was not counted");
    assert!(all_finite(&backend, &params), "step 2's update was applied");
}

#[test]
fn distillation_stops_on_a_diverging_student_naming_the_stage_and_step() {
    let recipe_text = format!(
        "{}{}",
        TinyRecipe::one_layer("diverging", 5).toml(),
        r#"
[[stages]]
kind = "distill"
name = "distill"
[stages.distill.student_init]
architectures = ["Qwen2ForCausalLM"]
hidden_size = 16
intermediate_size = 32
num_hidden_layers = 1
num_attention_heads = 2
num_key_value_heads = 1
vocab_size = 261
tie_word_embeddings = true
max_position_embeddings = 96
[stages.distill.traces]
prompts = 8
samples_per_prompt = 2
max_new_tokens = 8
[stages.distill.sft]
per_device_train_batch_size = 4
max_steps = 6
max_seq_length = 80
[stages.distill.sft.optim]
learning_rate = 1e30
max_grad_norm = 0.0
"#
    );
    let recipe = Recipe::from_toml(&recipe_text).expect("the recipe parses");
    let backend = CpuBackend::with_threads(1).expect("backend");
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = tmp.path().join("run");
    let error = run_pipeline(
        &backend,
        &recipe,
        &recipe_text,
        &run,
        false,
        &NoProgress,
        &StopSignal::new(),
    )
    .expect_err("the student diverges");
    let message = format!("{error:#}");
    assert!(message.starts_with("stage `distill`: step "), "{message}");
    assert!(message.contains("not a finite number"), "{message}");
    let non_finite = error
        .chain()
        .find_map(|e| e.downcast_ref::<SftError>())
        .and_then(|e| match e {
            SftError::NonFinite(e) => Some(e),
            _ => None,
        });
    let step = non_finite.expect("an SftError::NonFinite in the chain").step;
    assert!(step >= 2, "step 1 starts from finite weights: {message}");
    assert!(run.join("cold_start.r1ckpt").is_file(), "the stage before finished");
    assert!(!run.join("distill.r1ckpt").exists(), "a diverged student was saved");
}
