//! GRPO end to end on a toy objective: a random tiny policy is rewarded for how often it
//! writes one particular token. The whole loop — sampling, scoring through the `Reward`
//! trait, group advantages, the TRL loss and its gradient through the model graph, AdamW —
//! must raise the reward well above where it started.

use std::sync::Arc;

use r1_backend_cpu::CpuBackend;
use r1_core::model::ModelConfig;
use r1_core::reward::{Reward, RewardError, Sample, Score};
use r1_host::engine::Detokenizer;
use r1_host::train::grpo::{GrpoPrompt, GrpoTrainConfig, GrpoTrainer, NamedReward};
use r1_host::train::optim::{LrSchedule, OptimConfig};
use r1_host::weights::random_params;

struct Ids;

impl Detokenizer for Ids {
    fn decode(&self, tokens: &[u32]) -> String {
        tokens.iter().map(|t| format!("<{t}>")).collect()
    }
    fn eos_id(&self) -> Option<u32> {
        None
    }
}

/// Share of the completion's tokens that are `<7>`.
struct CountSevens;

impl Reward for CountSevens {
    fn name(&self) -> &str {
        "sevens"
    }
    fn score(&self, batch: &[Sample]) -> Result<Vec<Score>, RewardError> {
        Ok(batch
            .iter()
            .map(|s| {
                let total = s.completion.matches('<').count().max(1);
                Score::Value(s.completion.matches("<7>").count() as f32 / total as f32)
            })
            .collect())
    }
}

fn toy_model() -> ModelConfig {
    serde_json::from_value(serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 16,
        "tie_word_embeddings": true, "max_position_embeddings": 64,
    }))
    .unwrap()
}

/// Eight prompts of 3 tokens, and of 3 or 5 when `mixed` (prompts of two lengths).
fn toy_prompts(mixed: bool) -> Vec<GrpoPrompt> {
    (0..8u32)
        .map(|i| GrpoPrompt {
            sample: Sample {
                prompt: format!("p{i}"),
                ..Default::default()
            },
            tokens: if mixed && i % 3 == 0 {
                vec![i + 1, 2, 3, 4, 5]
            } else {
                vec![i + 1, 2, 3]
            },
        })
        .collect()
}

#[test]
fn grpo_raises_a_toy_reward() {
    let backend = CpuBackend::new();
    let cfg = toy_model();
    let params = random_params(&backend, &cfg, 1).unwrap();
    let prompts = toy_prompts(false);
    let mut config = GrpoTrainConfig {
        optim: OptimConfig {
            learning_rate: 3e-3,
            lr_scheduler_type: LrSchedule::Constant,
            ..Default::default()
        },
        per_device_train_batch_size: 32,
        max_steps: 25,
        ..Default::default()
    };
    config.grpo.num_generations = 8;
    config.grpo.max_completion_length = 8;
    let rewards = vec![NamedReward {
        name: "sevens".into(),
        reward: Arc::new(CountSevens),
    }];
    let mut trainer = GrpoTrainer::new(&backend, cfg, &params, config, rewards, prompts).unwrap();
    let mut curve = Vec::new();
    while trainer.state.step < 25 {
        trainer
            .train_generation(&backend, &params, &Ids, |r| {
                curve.push(r.metrics.reward.unwrap());
                Ok(())
            })
            .unwrap();
    }
    let start: f64 = curve[..3].iter().sum::<f64>() / 3.0;
    let end: f64 = curve[curve.len() - 3..].iter().sum::<f64>() / 3.0;
    // A uniform policy writes <7> 1/16 of the time.
    assert!(start < 0.2, "start {start}");
    assert!(end > start + 0.3, "reward went from {start} to {end}: {curve:?}");
}

/// Generating every group of a step on one running batch (the default) trains exactly as
/// generating one group at a time (`generation_kv_cache_mib = 0`): the same completions,
/// rewards and weights, bit for bit.
#[test]
fn groups_generated_together_train_exactly_as_one_at_a_time() {
    let backend = CpuBackend::new();
    let cfg = toy_model();
    let run = |kv_mib: usize| {
        let params = random_params(&backend, &cfg, 3).unwrap();
        let mut config = GrpoTrainConfig {
            optim: OptimConfig {
                learning_rate: 3e-3,
                lr_scheduler_type: LrSchedule::Constant,
                ..Default::default()
            },
            per_device_train_batch_size: 48,
            max_steps: 3,
            generation_kv_cache_mib: kv_mib,
            ..Default::default()
        };
        config.grpo.num_generations = 6;
        config.grpo.max_completion_length = 10;
        let rewards = vec![NamedReward {
            name: "sevens".into(),
            reward: Arc::new(CountSevens),
        }];
        let mut trainer = GrpoTrainer::new(&backend, cfg.clone(), &params, config, rewards, toy_prompts(true)).unwrap();
        let mut curve = Vec::new();
        while trainer.state.step < 3 {
            trainer
                .train_generation(&backend, &params, &Ids, |r| {
                    curve.push(r.metrics.reward.unwrap().to_bits());
                    Ok(())
                })
                .unwrap();
        }
        let weights: Vec<Vec<u32>> = params
            .download_all(&backend)
            .unwrap()
            .into_iter()
            .map(|(_, _, values)| values.iter().map(|v| v.to_bits()).collect())
            .collect();
        (curve, weights)
    };
    let (together, one_by_one) = (run(1024), run(0));
    assert_eq!(together.0, one_by_one.0, "rewards");
    assert!(together.1 == one_by_one.1, "the weights differ");
}
