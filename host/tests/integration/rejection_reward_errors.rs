//! Rejection sampling under a reward that fails on some groups: the recipe's
//! `on_reward_error` decides. `fail` stops with the reward named; `zero` and `skip` go on,
//! keep no sample of a failed group (its score reaches no threshold), keep the others as
//! they would be kept anyway, and count the failed samples in the statistics.

use std::collections::BTreeMap;
use std::sync::Arc;

use r1_backend_cpu::CpuBackend;
use r1_core::model::ModelConfig;
use r1_core::reward::{Reward, RewardError, RewardErrorKind, Sample, Score};
use r1_host::model::Model;
use r1_host::pipeline::recipe::RejectionConfig;
use r1_host::pipeline::rejection::{RejectionStats, rejection_sample};
use r1_host::plugin::OnRewardError;
use r1_host::stop::StopSignal;
use r1_host::train::grpo::{GrpoPrompt, NamedReward};

/// 1 for every sample of a prompt `even…`; fails on the groups of prompts `odd…`.
struct FailsOnOdd;

impl Reward for FailsOnOdd {
    fn name(&self) -> &str {
        "judge"
    }
    fn score(&self, batch: &[Sample]) -> Result<Vec<Score>, RewardError> {
        if batch.iter().any(|s| s.prompt.starts_with("odd")) {
            return Err(RewardError {
                reward: "judge".into(),
                sample: None,
                kind: RewardErrorKind::Timeout,
            });
        }
        Ok(vec![Score::Value(1.0); batch.len()])
    }
}

fn prompts() -> Vec<GrpoPrompt> {
    (0..4u32)
        .map(|i| {
            let prompt = format!("{} {i}", if i % 2 == 0 { "even" } else { "odd" });
            GrpoPrompt {
                tokens: prompt.bytes().map(u32::from).collect(),
                sample: Sample {
                    prompt,
                    ..Default::default()
                },
            }
        })
        .collect()
}

/// Kept rows (prompt, completion) and the statistics, under `policy`.
fn sample(policy: OnRewardError, dir: &std::path::Path) -> anyhow::Result<(Vec<(String, String)>, RejectionStats)> {
    let backend = CpuBackend::with_threads(1)?;
    let cfg: ModelConfig = serde_json::from_value(serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 261,
        "tie_word_embeddings": true, "max_position_embeddings": 64,
    }))?;
    let model = Model::init(&backend, cfg, 7)?;
    let rewards = vec![NamedReward {
        name: "judge".into(),
        reward: Arc::new(FailsOnOdd),
    }];
    let config = RejectionConfig {
        prompts: 4,
        samples_per_prompt: 3,
        max_per_prompt: 3,
        max_new_tokens: 4,
        temperature: 1.0,
        top_p: 1.0,
        min_reward: BTreeMap::from([("judge".to_string(), 0.5)]),
        seed: 11,
    };
    let out = dir.join(format!("{}.jsonl", policy.name()));
    let stats = rejection_sample(
        &backend,
        &model,
        &prompts(),
        &rewards,
        &config,
        policy,
        &out,
        &StopSignal::new(),
    )?;
    let rows = std::fs::read_to_string(&out)?
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON row");
            (
                v["prompt"].as_str().unwrap_or_default().to_string(),
                v["completion"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    Ok((rows, stats))
}

#[test]
fn rejection_sampling_follows_on_reward_error() {
    let tmp = tempfile::tempdir().expect("tempdir");

    let error = sample(OnRewardError::Fail, tmp.path()).expect_err("the judge fails");
    let message = format!("{error:#}");
    assert!(message.contains("judge"), "{message}");
    assert!(!tmp.path().join("fail.jsonl").exists(), "nothing is written");

    for policy in [OnRewardError::Zero, OnRewardError::Skip] {
        let (rows, stats) = sample(policy, tmp.path()).expect("the run goes on");
        assert!(!rows.is_empty(), "{policy:?}: the even prompts' samples are kept");
        assert!(
            rows.iter().all(|(p, _)| p.starts_with("even")),
            "{policy:?}: no sample of a failed group is kept: {rows:?}"
        );
        assert_eq!(stats.sampled, 12);
        assert_eq!(
            stats.reward_failures,
            BTreeMap::from([("judge".to_string(), 6)]),
            "{policy:?}: two odd prompts × 3 samples"
        );
        assert_eq!(stats.pass_rate["judge"], 0.5, "{policy:?}");
    }
}
