//! A WASM reward plugin that fails part-way through a GRPO run: the real `panicking`
//! example plugin traps on any completion that says "panic", and the toy tokenizer spells
//! token 5 as "panic", so some groups fail and others do not. `on_reward_error` decides:
//! `zero` and `skip` keep training and count the failures in the metrics, `fail` stops
//! the run with an error that names the plugin and the cause. The held-out evaluation
//! follows the same policy: the trainer's own, and in a pipeline the GRPO stage's or,
//! outside GRPO stages, the recipe's.

use crate::plugin_support;
use crate::recipe_support;

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

fn prompts() -> Vec<GrpoPrompt> {
    (0..8u32)
        .map(|i| GrpoPrompt {
            sample: Sample {
                prompt: format!("p{i}"),
                ..Default::default()
            },
            tokens: vec![i + 1, 2, 3],
        })
        .collect()
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
    let prompts = prompts();
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

/// A judge that traps on the prompts ending in an odd digit ("p1", "p3", …) and scores
/// the others 1: the request of one sample is its count, the prompt's length, then the
/// prompt, so the prompt's last byte is at offset 3.
fn odd_prompt_judge(plugin_host: &r1_host::plugin::PluginHost) -> r1_host::plugin::PluginReward {
    let trap_on_odd = "(if (i32.and (i32.load8_u offset=3 (local.get $ptr)) (i32.const 1)) (then (unreachable)))";
    let plugin = plugin_support::WatPlugin {
        score: plugin_support::GOOD_SCORE.replace("(local.set $n", &format!("{trap_on_odd} (local.set $n")),
        ..plugin_support::WatPlugin::default()
    };
    plugin_support::load_wat(plugin_host, &plugin, "judge").expect("the judge loads")
}

#[test]
fn held_out_evaluation_handles_judge_failures_by_the_trainers_policy() {
    let plugin_host = host(2);
    let judge = odd_prompt_judge(&plugin_host);
    let held_out = prompts();
    for policy in [OnRewardError::Fail, OnRewardError::Zero, OnRewardError::Skip] {
        let (backend, mut trainer, params) = setup(policy);
        let result = trainer.evaluate(&backend, &params, &Words, &held_out, &judge);
        if policy == OnRewardError::Fail {
            match result {
                Err(GrpoTrainError::Reward(e)) => {
                    assert_eq!(e.reward, "judge");
                    assert!(e.to_string().contains("unreachable"), "{e}");
                }
                other => panic!("`fail` must stop the evaluation, got {other:?}"),
            }
            continue;
        }
        let eval = result.unwrap_or_else(|e| panic!("{policy:?}: {e}"));
        assert_eq!(eval.answers.len(), 8);
        assert_eq!((eval.failures.groups, eval.failures.samples), (4, 4), "{policy:?}");
        let expected = match policy {
            // The 4 failed answers count as wrong; the other 4 score 1.
            OnRewardError::Zero => 0.5,
            // The failed answers are left out: every answer judged was right.
            _ => 1.0,
        };
        assert_eq!(eval.accuracy, Some(expected), "{policy:?}");
    }
}

/// A plugin whose `r1_score` always traps, as a `.wat` file a recipe can name.
fn trapping_judge(dir: &std::path::Path) -> std::path::PathBuf {
    let plugin = plugin_support::WatPlugin {
        score: r#"(func (export "r1_score") (param i32 i32) (result i64) (unreachable))"#.to_string(),
        ..plugin_support::WatPlugin::default()
    };
    let path = dir.join("judge.wat");
    std::fs::write(&path, plugin.text()).expect("write the plugin");
    path
}

/// A tiny SFT → GRPO recipe judged by the trapping plugin, with `recipe_policy` as the
/// recipe's `on_reward_error` and `stage_policy` as the GRPO stage's (if any).
fn judged_recipe(judge: &std::path::Path, recipe_policy: Option<&str>, stage_policy: Option<&str>) -> String {
    let grpo = recipe_support::GrpoStage {
        eval_steps: 2,
        ..recipe_support::GrpoStage::small("grpo", 2, 2)
    };
    let stage_policy = stage_policy
        .map(|p| format!("on_reward_error = \"{p}\"\n"))
        .unwrap_or_default();
    let grpo = grpo.toml().replace(
        "[stages.grpo]\n",
        &format!("rewards = [\"format\"]\n[stages.grpo]\n{stage_policy}"),
    );
    let recipe_policy = recipe_policy
        .map(|p| format!("on_reward_error = \"{p}\"\n"))
        .unwrap_or_default();
    let judge = format!(
        "[[rewards]]\nname = \"judge\"\nplugin = {{ path = {:?} }}\n\n",
        judge.display().to_string()
    );
    let head = recipe_support::TinyRecipe::one_layer("judged", 5)
        .toml()
        .replace(
            "eval_reward = \"format\"\n",
            &format!("eval_reward = \"judge\"\n{recipe_policy}"),
        )
        .replace("[[stages]]\n", &format!("{judge}[[stages]]\n"));
    format!("{head}{grpo}")
}

fn run_judged(recipe_text: &str, dir: &std::path::Path) -> anyhow::Result<r1_host::pipeline::PipelineOutcome> {
    let recipe = r1_host::pipeline::Recipe::from_toml(recipe_text).expect("the recipe parses");
    let backend = CpuBackend::with_threads(1).expect("backend");
    let progress = r1_host::progress::NoProgress;
    let stop = r1_host::stop::StopSignal::new();
    r1_host::pipeline::run_pipeline(&backend, &recipe, recipe_text, dir, false, &progress, &stop)
}

#[test]
fn a_pipelines_held_out_evaluation_follows_on_reward_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let judge = trapping_judge(tmp.path());

    // The default, `fail`: the evaluation before training stops the run, naming it.
    let run = tmp.path().join("fail");
    let error = run_judged(&judged_recipe(&judge, None, None), &run).expect_err("the judge fails");
    let message = format!("{error:#}");
    assert!(message.contains("held-out evaluation with reward `judge`"), "{message}");
    assert!(message.contains("unreachable"), "{message}");
    assert!(!run.join("cold_start.r1ckpt").exists());

    // `zero` for the recipe, inherited by the GRPO stage: every answer judged wrong.
    let run = tmp.path().join("zero");
    let report = run_judged(&judged_recipe(&judge, Some("zero"), None), &run)
        .expect("the run goes on")
        .finished()
        .expect("nothing stops it");
    assert_eq!(report.initial_accuracy, Some(0.0));
    let accuracies: Vec<Option<f64>> = report.stages.iter().map(|s| s.eval_accuracy).collect();
    assert_eq!(accuracies, vec![Some(0.0), Some(0.0)]);

    // `skip` for the recipe, `fail` for the GRPO stage: the SFT stage's evaluation skips
    // every answer (no accuracy), the GRPO stage's own evaluation stops the run.
    let run = tmp.path().join("stage");
    let error = run_judged(&judged_recipe(&judge, Some("skip"), Some("fail")), &run).expect_err("the stage fails");
    assert!(
        format!("{error:#}").contains("held-out evaluation with reward `judge`"),
        "{error:#}"
    );
    assert!(run.join("cold_start.r1ckpt").is_file(), "the SFT stage finished");
    assert!(!run.join("grpo.r1ckpt").exists(), "the GRPO stage did not");
}
