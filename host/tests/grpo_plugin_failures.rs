//! A WASM reward plugin that fails part-way through a GRPO run: the real `panicking`
//! example plugin traps on any completion that says "panic", and the toy tokenizer spells
//! token 5 as "panic", so some groups fail and others do not. `on_reward_error` decides:
//! `zero` and `skip` keep training and count the failures in the metrics, `fail` stops
//! the run with an error that names the plugin and the cause.

mod plugin_support;

use std::sync::Arc;

use r1_backend_cpu::CpuBackend;
use r1_core::model::ModelConfig;
use r1_core::reward::{Reward, RewardError, Sample, Score};
use r1_host::engine::Detokenizer;
use r1_host::plugin::OnRewardError;
use r1_host::train::grpo::{GrpoPrompt, GrpoTrainConfig, GrpoTrainError, GrpoTrainer, NamedReward};
use r1_host::weights::{ParamBuffer, random_params};

use plugin_support::{examples, host, load};

struct Words;

impl Detokenizer for Words {
    fn decode(&self, tokens: &[u32]) -> String {
        tokens
            .iter()
            .map(|&t| if t == 5 { " panic".to_string() } else { format!(" w{t}") })
            .collect()
    }
    fn eos_id(&self) -> Option<u32> {
        None
    }
}

/// Length of the completion in words: an in-process reward that never fails.
struct Words1;

impl Reward for Words1 {
    fn name(&self) -> &str {
        "words"
    }
    fn score(&self, batch: &[Sample]) -> Result<Vec<Score>, RewardError> {
        Ok(batch
            .iter()
            .map(|s| Score::Value(s.completion.split_whitespace().count() as f32))
            .collect())
    }
}

fn setup(policy: OnRewardError) -> (CpuBackend, GrpoTrainer<CpuBackend>, ParamBuffer<CpuBackend>) {
    let backend = CpuBackend::new();
    let cfg: ModelConfig = serde_json::from_value(serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 16,
        "tie_word_embeddings": true, "max_position_embeddings": 64,
    }))
    .expect("config");
    let params = random_params(&backend, &cfg, 3).expect("weights");
    let prompts: Vec<GrpoPrompt> = (0..8u32)
        .map(|i| GrpoPrompt {
            sample: Sample {
                prompt: format!("p{i}"),
                ..Default::default()
            },
            tokens: vec![i + 1, 2, 3],
        })
        .collect();
    let mut config = GrpoTrainConfig {
        per_device_train_batch_size: 16,
        max_steps: 6,
        on_reward_error: policy,
        ..Default::default()
    };
    config.grpo.num_generations = 4;
    config.grpo.max_completion_length = 6;
    let plugin_host = host(2);
    let plugin = load(&plugin_host, &examples().panicking);
    let rewards = vec![
        NamedReward {
            name: "words".into(),
            reward: Arc::new(Words1),
        },
        NamedReward {
            name: "panicking".into(),
            reward: Arc::new(plugin),
        },
    ];
    let trainer = GrpoTrainer::new(&backend, cfg, &params, config, rewards, prompts).expect("trainer");
    (backend, trainer, params)
}

#[test]
fn zero_and_skip_keep_training_and_count_failures() {
    for policy in [OnRewardError::Zero, OnRewardError::Skip] {
        let (backend, mut trainer, params) = setup(policy);
        let mut logged = Vec::new();
        while trainer.state.step < 6 {
            trainer
                .train_generation(&backend, &params, &Words, |r| {
                    logged.push(
                        r.metrics
                            .get("rewards/panicking/failures")
                            .and_then(|v| v.as_f64())
                            .expect("failures metric"),
                    );
                    Ok(())
                })
                .expect("training goes on past plugin failures");
        }
        assert_eq!(logged.len(), 6);
        let failures = &trainer.failures()[1];
        // 96 completions of 6 tokens over 16 ids: about 30% of them say "panic".
        assert!(failures.groups > 0, "{policy:?}: no group failed");
        assert!(failures.samples < 96, "{policy:?}: every group failed");
        assert_eq!(
            logged.last().copied(),
            Some(failures.samples as f64),
            "{policy:?}: the metric is the running count"
        );
        assert!(trainer.failures()[0].groups == 0, "the in-process reward never fails");
        // A trainer resumed from the saved state continues the same counts.
        let (_, mut resumed, _) = setup(policy);
        resumed.resume_from(trainer.state.clone());
        assert_eq!(resumed.failures()[1].groups, failures.groups);
        assert_eq!(resumed.failures()[1].samples, failures.samples);
        let last = failures.last.as_ref().expect("the last error is kept");
        assert_eq!(last.reward, "panicking");
        assert!(last.to_string().contains("asked to panic"), "{last}");
    }
}

#[test]
fn fail_stops_with_the_plugin_named() {
    let (backend, mut trainer, params) = setup(OnRewardError::Fail);
    let mut result = Ok(());
    for _ in 0..6 {
        result = trainer.train_generation(&backend, &params, &Words, |_| Ok(()));
        if result.is_err() {
            break;
        }
    }
    match result {
        Err(GrpoTrainError::Reward(e)) => {
            assert_eq!(e.reward, "panicking");
            assert!(e.to_string().contains("asked to panic"), "{e}");
        }
        other => panic!("expected the plugin's failure to stop the run, got {other:?}"),
    }
}
