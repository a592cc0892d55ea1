//! The GRPO loss, its gradient, the advantages and the logged metrics against TRL 1.16's own
//! `GRPOTrainer` code, on the fixtures `fixtures/trl/gen_trl_grpo.py` produced.

use r1_core::grpo::{
    GrpoConfig, ImportanceSamplingLevel, LossInputs, LossType, MultiObjectiveAggregation, ScaleRewards,
    compute_advantages, policy_loss,
};
use serde::Deserialize;
use std::collections::BTreeMap;

const REL: f64 = 1e-5;

/// `|a − e| ≤ 1e-5·|e|`, with an absolute floor far below f32 resolution of the tensor's scale
/// (exact zeros, such as masked positions, must come out as zeros or nearly).
fn close(actual: f64, expected: f64, scale: f64) -> bool {
    (actual - expected).abs() <= REL * expected.abs() + 1e-7 * scale.max(1e-30)
}

#[derive(Deserialize)]
struct Fixture<C> {
    trl: String,
    cases: Vec<C>,
}

#[derive(Deserialize)]
struct LossCase {
    name: String,
    num_sequences: usize,
    completion_len: usize,
    config: LossConfig,
    logp: Vec<f32>,
    old_logp: Option<Vec<f32>>,
    ref_logp: Option<Vec<f32>>,
    advantages: Vec<f32>,
    mask: Vec<f32>,
    num_items_in_batch: f64,
    expected: LossExpected,
}

#[derive(Deserialize)]
struct LossConfig {
    loss_type: LossType,
    epsilon: f64,
    epsilon_high: Option<f64>,
    beta: f64,
    delta: Option<f64>,
    importance_sampling_level: ImportanceSamplingLevel,
    use_bias_correction_kl: bool,
    max_completion_length: usize,
    sapo_temperature_pos: f64,
    sapo_temperature_neg: f64,
}

#[derive(Deserialize)]
struct LossExpected {
    loss: f64,
    grad_logp: Vec<f64>,
    metrics: BTreeMap<String, Option<f64>>,
}

fn load<C: for<'de> Deserialize<'de>>(file: &str) -> Fixture<C> {
    let path = format!("{}/tests/fixtures/trl/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn loss_and_gradient_match_trl_for_every_loss_type_and_setting() {
    let fx: Fixture<LossCase> = load("grpo_loss.json");
    assert!(fx.trl.starts_with("1.16"), "fixtures are from TRL {}", fx.trl);
    assert!(fx.cases.len() >= 40);
    let mut seen_types = std::collections::BTreeSet::new();
    for c in &fx.cases {
        let cfg = GrpoConfig {
            loss_type: c.config.loss_type,
            epsilon: c.config.epsilon,
            epsilon_high: c.config.epsilon_high,
            beta: c.config.beta,
            delta: c.config.delta,
            importance_sampling_level: c.config.importance_sampling_level,
            use_bias_correction_kl: c.config.use_bias_correction_kl,
            max_completion_length: c.config.max_completion_length,
            sapo_temperature_pos: c.config.sapo_temperature_pos,
            sapo_temperature_neg: c.config.sapo_temperature_neg,
            ..GrpoConfig::default()
        };
        seen_types.insert(cfg.loss_type.as_str());
        let inputs = LossInputs {
            logp: &c.logp,
            old_logp: c.old_logp.as_deref(),
            ref_logp: c.ref_logp.as_deref(),
            advantages: &c.advantages,
            mask: &c.mask,
            completion_len: c.completion_len,
            num_items_in_batch: Some(c.num_items_in_batch),
            is_ratio: None,
        };
        assert_eq!(c.logp.len(), c.num_sequences * c.completion_len);
        let out = policy_loss(&cfg, &inputs).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let e = &c.expected;
        assert!(
            close(out.loss as f64, e.loss, e.loss.abs()),
            "{}: loss {} vs TRL {}",
            c.name,
            out.loss,
            e.loss
        );
        let scale = e.grad_logp.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        for (i, (&g, &ge)) in out.grad_logp.iter().zip(&e.grad_logp).enumerate() {
            assert!(
                close(g as f64, ge, scale),
                "{}: d loss/d logp[{i}] = {g} vs TRL {ge}",
                c.name
            );
        }
        // Every metric TRL logged, we log under the same name with the same value, and no other.
        let ours: BTreeMap<&str, f32> = out.metrics.entries().collect();
        for (name, v) in &e.metrics {
            match (v, out.metrics.get(name)) {
                (None, None) => {}
                (Some(v), Some(o)) => assert!(close(o as f64, *v, 1.0), "{}: {name} {o} vs TRL {v}", c.name),
                (v, o) => panic!("{}: metric {name}: ours {o:?}, TRL {v:?}", c.name),
            }
        }
        for name in ours.keys() {
            assert!(e.metrics.contains_key(*name), "{}: we log {name}, TRL does not", c.name);
        }
    }
    assert_eq!(seen_types.len(), 7, "fixtures cover {seen_types:?}");
}

#[derive(Deserialize)]
struct AdvCase {
    name: String,
    rewards: Vec<Vec<Option<f32>>>,
    weights: Vec<f64>,
    group_size: usize,
    scale_rewards: ScaleRewards,
    multi_objective_aggregation: MultiObjectiveAggregation,
    expected: AdvExpected,
}

#[derive(Deserialize)]
struct AdvExpected {
    advantages: Vec<f64>,
    metrics: BTreeMap<String, Option<f64>>,
}

fn metric_matches(name: &str, ours: Option<f32>, trl: Option<f64>) -> bool {
    match (ours, trl) {
        (None, None) => true,
        (Some(o), Some(t)) => close(o as f64, t, 1.0),
        _ => panic!("{name}: ours {ours:?}, TRL {trl:?}"),
    }
}

#[test]
fn advantages_and_reward_metrics_match_trl_including_not_applicable_rewards() {
    let fx: Fixture<AdvCase> = load("grpo_advantages.json");
    assert!(fx.cases.len() >= 15);
    for c in &fx.cases {
        let per: Vec<Vec<f32>> = c
            .rewards
            .iter()
            .map(|r| r.iter().map(|v| v.unwrap_or(f32::NAN)).collect())
            .collect();
        let refs: Vec<&[f32]> = per.iter().map(|r| r.as_slice()).collect();
        let out = compute_advantages(
            &refs,
            &c.weights,
            c.group_size,
            c.scale_rewards,
            c.multi_objective_aggregation,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let scale = c.expected.advantages.iter().fold(0.0f64, |m, a| m.max(a.abs()));
        for (i, (&a, &ae)) in out.advantages.iter().zip(&c.expected.advantages).enumerate() {
            assert!(
                close(a as f64, ae, scale),
                "{}: advantage[{i}] = {a} vs TRL {ae}",
                c.name
            );
        }
        assert_eq!(out.advantages.len(), c.expected.advantages.len());
        let m = &c.expected.metrics;
        assert!(metric_matches("reward", out.reward.mean, m["reward"]), "{}", c.name);
        assert!(
            metric_matches("reward_std", out.reward.std, m["reward_std"]),
            "{}",
            c.name
        );
        assert!(
            metric_matches(
                "frac_reward_zero_std",
                Some(out.frac_reward_zero_std),
                m["frac_reward_zero_std"]
            ),
            "{}",
            c.name
        );
        for (k, s) in out.per_reward.iter().enumerate() {
            assert!(
                metric_matches("mean", s.mean, m[&format!("rewards/r{k}/mean")]),
                "{}: reward {k}",
                c.name
            );
            assert!(
                metric_matches("std", s.std, m[&format!("rewards/r{k}/std")]),
                "{}: reward {k}",
                c.name
            );
        }
    }
}
