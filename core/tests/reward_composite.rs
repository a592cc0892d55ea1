//! Composite rewards: weighted totals with TRL's "not applicable" rule, per-component
//! scores and the `rewards/<name>/mean|std` metrics, built-ins built from config, and
//! components that misbehave.

use r1_core::grpo::{GrpoConfig, ScaleRewards};
use r1_core::reward::{
    Accuracy, AccuracyConfig, BuiltinRewardConfig, Composite, Reward, RewardError, RewardErrorKind, Sample, Score,
    ThinkFormat, ThinkFormatConfig,
};

fn group() -> Vec<Sample> {
    let s = |c: &str, r: Option<&str>| Sample {
        prompt: "What is 7 + 8?".into(),
        completion: c.into(),
        reference: r.map(String::from),
        metadata: vec![],
    };
    vec![
        s("<think>7+8=15</think> \\boxed{15}", Some("15")),
        s("<think>7+8=14</think> \\boxed{14}", Some("15")),
        s("\\boxed{15}", Some("15")),
        s("<think>7+8</think> 15", None),
    ]
}

fn r1_rewards() -> Composite {
    Composite::new("r1")
        .with(1.0, Box::new(Accuracy::new(AccuracyConfig::default()).unwrap()))
        .unwrap()
        .with(0.5, Box::new(ThinkFormat::new(ThinkFormatConfig::default()).unwrap()))
        .unwrap()
}

#[test]
fn the_total_is_the_weighted_sum_of_what_applies() {
    let out = r1_rewards().score_components(&group()).unwrap();
    assert_eq!(
        out.components[0].scores,
        vec![
            Score::Value(1.0),
            Score::Value(0.0),
            Score::Value(1.0),
            Score::NotApplicable
        ]
    );
    assert_eq!(
        out.components[1].scores,
        vec![
            Score::Value(1.0),
            Score::Value(1.0),
            Score::Value(0.0),
            Score::Value(1.0)
        ]
    );
    assert_eq!(
        out.total,
        vec![
            Score::Value(1.5),
            Score::Value(0.5),
            Score::Value(1.0),
            Score::Value(0.5)
        ]
    );
    assert_eq!(r1_rewards().score(&group()).unwrap(), out.total);
}

#[test]
fn each_component_is_reported_for_logging() {
    let out = r1_rewards().score_components(&group()).unwrap();
    let m = out.metrics();
    let names: Vec<&str> = m.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "rewards/accuracy/mean",
            "rewards/accuracy/std",
            "rewards/think_format/mean",
            "rewards/think_format/std"
        ]
    );
    // accuracy over the three samples it applies to: [1, 0, 1].
    assert!((m[0].1.unwrap() - 2.0 / 3.0).abs() < 1e-6);
    assert!((m[1].1.unwrap() - (1.0f32 / 3.0).sqrt()).abs() < 1e-6);
    assert_eq!(m[2].1, Some(0.75));
}

#[test]
fn component_scores_feed_the_advantages_with_their_weights() {
    let c = r1_rewards();
    let out = c.score_components(&group()).unwrap();
    let per: Vec<Vec<f32>> = out.components.iter().map(|x| x.as_f32()).collect();
    let refs: Vec<&[f32]> = per.iter().map(|v| v.as_slice()).collect();
    let cfg = GrpoConfig {
        num_generations: 4,
        reward_weights: Some(c.weights()),
        ..GrpoConfig::default()
    };
    let adv = cfg.advantages(&refs).unwrap();
    let total: Vec<f32> = out.total.iter().map(|s| s.as_f32()).collect();
    assert_eq!(
        adv.rewards, total,
        "the trainer's combined reward is the composite's total"
    );
    let direct = r1_core::grpo::group_advantages(&total, 4, ScaleRewards::Group).unwrap();
    for (a, b) in adv.advantages.iter().zip(&direct) {
        assert!((a - b).abs() < 1e-6);
    }
}

#[test]
fn a_sample_no_component_applies_to_is_not_applicable() {
    let c = Composite::new("acc")
        .with(1.0, Box::new(Accuracy::new(AccuracyConfig::default()).unwrap()))
        .unwrap();
    assert_eq!(c.score(&group()[3..]).unwrap(), vec![Score::NotApplicable]);
}

struct Broken(Vec<Score>);

impl Reward for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn score(&self, _: &[Sample]) -> Result<Vec<Score>, RewardError> {
        Ok(self.0.clone())
    }
}

struct Failing;

impl Reward for Failing {
    fn name(&self) -> &str {
        "math.wasm"
    }
    fn score(&self, _: &[Sample]) -> Result<Vec<Score>, RewardError> {
        Err(RewardError {
            reward: "math.wasm".into(),
            sample: Some(2),
            kind: RewardErrorKind::OutOfFuel,
        })
    }
}

#[test]
fn misbehaving_components_are_errors_that_name_them() {
    let short = Composite::new("c")
        .with(1.0, Box::new(Broken(vec![Score::Value(1.0)])))
        .unwrap();
    let e = short.score(&group()).unwrap_err();
    assert_eq!(e.reward, "broken");
    assert!(
        matches!(&e.kind, RewardErrorKind::BadOutput(m) if m.contains("1 scores for 4 samples")),
        "{e}"
    );
    let nan = Composite::new("c")
        .with(1.0, Box::new(Broken(vec![Score::Value(f32::NAN); 4])))
        .unwrap();
    let e = nan.score(&group()).unwrap_err();
    assert_eq!((e.reward.as_str(), e.sample), ("broken", Some(0)));
    let fail = Composite::new("c").with(1.0, Box::new(Failing)).unwrap();
    let e = fail.score(&group()).unwrap_err();
    assert_eq!(e.to_string(), "reward `math.wasm` on sample 2: ran out of fuel");
    let e = Composite::new("c").with(f32::NAN, Box::new(Failing)).err().unwrap();
    assert!(e.to_string().contains("math.wasm"), "{e}");
    let dup = r1_rewards().with(1.0, Box::new(Accuracy::new(AccuracyConfig::default()).unwrap()));
    let e = dup.err().unwrap();
    assert!(e.to_string().contains("two rewards are named `accuracy`"), "{e}");
}

#[test]
fn builtins_are_built_from_tagged_config() {
    let cfgs: Vec<BuiltinRewardConfig> = serde_json::from_str(
        r#"[{"type": "accuracy", "correct": 2.0},
            {"type": "think_format", "mode": "strict", "answer_tags": true},
            {"type": "tag_count"},
            {"type": "language_consistency", "target": "en"},
            {"type": "soft_overlong_punishment", "max_completion_len": 1024, "soft_punish_cache": 256}]"#,
    )
    .unwrap();
    let mut c = Composite::new("all");
    for cfg in &cfgs {
        c.add(1.0, cfg.build(None).unwrap()).unwrap();
    }
    let names: Vec<&str> = c.components().iter().map(|x| x.reward.name()).collect();
    assert_eq!(
        names,
        [
            "accuracy",
            "think_format",
            "tag_count",
            "language_consistency",
            "soft_overlong_punishment"
        ]
    );
    assert_eq!(cfgs[0].build(Some("math")).unwrap().name(), "math");
    let e = serde_json::from_str::<BuiltinRewardConfig>(r#"{"type": "accuracy", "corect": 2.0}"#).unwrap_err();
    assert!(e.to_string().contains("corect"), "{e}");
    let e = serde_json::from_str::<BuiltinRewardConfig>(r#"{"type": "bleu"}"#).unwrap_err();
    assert!(e.to_string().contains("bleu"), "{e}");
    let bad: BuiltinRewardConfig = serde_json::from_str(
        r#"{"type": "soft_overlong_punishment", "max_completion_len": 10, "soft_punish_cache": 20}"#,
    )
    .unwrap();
    assert!(matches!(
        bad.build(None),
        Err(RewardError {
            kind: RewardErrorKind::Config(_),
            ..
        })
    ));
}
