//! GRPO config parsing and validation, worked examples, and bad inputs: every malformed
//! batch gives a typed error naming the tensor and index, never a panic.

use r1_core::grpo::{
    GrpoConfig, GrpoError, ImportanceSamplingLevel, LossInputs, LossMetrics, LossType, MultiObjectiveAggregation,
    ScaleRewards, combine_rewards, compute_advantages, group_advantages, policy_loss, policy_loss_into,
};

#[test]
fn config_defaults_follow_trl_1x() {
    let c: GrpoConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, GrpoConfig::default());
    assert_eq!(c.epsilon, 0.2);
    assert_eq!(c.epsilon_high(), 0.2);
    assert_eq!(c.beta, 0.0);
    assert_eq!(c.delta, None);
    assert_eq!(c.loss_type, LossType::Dapo);
    assert_eq!(c.importance_sampling_level, ImportanceSamplingLevel::Token);
    assert_eq!(c.scale_rewards, ScaleRewards::Group);
    assert_eq!(
        c.multi_objective_aggregation,
        MultiObjectiveAggregation::SumThenNormalize
    );
    assert!(c.use_bias_correction_kl);
    assert_eq!((c.num_generations, c.max_completion_length), (8, 512));
    c.validate().unwrap();
}

#[test]
fn config_reads_trl_field_names_and_values() {
    let c: GrpoConfig = serde_json::from_str(
        r#"{"epsilon": 0.2, "epsilon_high": 0.28, "beta": 0.001, "delta": 1.5, "loss_type": "dr_grpo",
            "importance_sampling_level": "sequence", "scale_rewards": false, "reward_weights": [1.0, 0.5],
            "multi_objective_aggregation": "normalize_then_sum", "num_generations": 16}"#,
    )
    .unwrap();
    assert_eq!(c.epsilon_high(), 0.28);
    assert_eq!(c.loss_type, LossType::DrGrpo);
    assert_eq!(c.importance_sampling_level, ImportanceSamplingLevel::Sequence);
    assert_eq!(
        c.scale_rewards,
        ScaleRewards::None,
        "TRL reads scale_rewards=False as 'none'"
    );
    assert_eq!(c.reward_weights.as_deref(), Some(&[1.0, 0.5][..]));
    let c: GrpoConfig = serde_json::from_str(r#"{"scale_rewards": true}"#).unwrap();
    assert_eq!(c.scale_rewards, ScaleRewards::Group);
    let c: GrpoConfig = serde_json::from_str(r#"{"scale_rewards": "batch"}"#).unwrap();
    assert_eq!(c.scale_rewards, ScaleRewards::Batch);
    // Round trip: what a run directory records reads back the same.
    let back: GrpoConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
}

#[test]
fn config_rejects_unknown_keys_and_values_by_name() {
    let e = serde_json::from_str::<GrpoConfig>(r#"{"epsilon_hihg": 0.3}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("epsilon_hihg"), "{e}");
    let e = serde_json::from_str::<GrpoConfig>(r#"{"loss_type": "ppo"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ppo") && e.contains("dapo"), "{e}");
    let e = serde_json::from_str::<GrpoConfig>(r#"{"scale_rewards": "groups"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("groups"), "{e}");
}

#[test]
fn config_validation_names_the_field() {
    let cases = [
        (
            GrpoConfig {
                num_generations: 1,
                ..GrpoConfig::default()
            },
            "num_generations",
        ),
        (
            GrpoConfig {
                beta: -0.1,
                ..GrpoConfig::default()
            },
            "beta",
        ),
        (
            GrpoConfig {
                epsilon: f64::NAN,
                ..GrpoConfig::default()
            },
            "epsilon",
        ),
        (
            GrpoConfig {
                epsilon_high: Some(-1.0),
                ..GrpoConfig::default()
            },
            "epsilon_high",
        ),
        (
            GrpoConfig {
                delta: Some(0.0),
                ..GrpoConfig::default()
            },
            "delta",
        ),
        (
            GrpoConfig {
                max_completion_length: 0,
                ..GrpoConfig::default()
            },
            "max_completion_length",
        ),
        (
            GrpoConfig {
                reward_weights: Some(vec![1.0, f64::INFINITY]),
                ..GrpoConfig::default()
            },
            "reward_weights",
        ),
        (
            GrpoConfig {
                sapo_temperature_neg: 0.0,
                ..GrpoConfig::default()
            },
            "sapo_temperature_neg",
        ),
    ];
    for (c, field) in cases {
        match c.validate() {
            Err(GrpoError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn binary_rewards_give_the_textbook_advantages() {
    // Group [1, 0, 0, 1]: mean 0.5, unbiased std sqrt(1/3).
    let a = group_advantages(&[1.0, 0.0, 0.0, 1.0], 4, ScaleRewards::Group).unwrap();
    let expected = 0.5 / ((1.0f64 / 3.0).sqrt() + 1e-4);
    for (x, sign) in a.iter().zip([1.0, -1.0, -1.0, 1.0]) {
        assert!((*x as f64 - sign * expected).abs() < 1e-6, "{a:?}");
    }
    // Without scaling only the mean is removed.
    assert_eq!(
        group_advantages(&[1.0, 0.0, 0.0, 1.0], 4, ScaleRewards::None).unwrap(),
        vec![0.5, -0.5, -0.5, 0.5]
    );
    // A group where every completion is right carries no signal.
    assert_eq!(
        group_advantages(&[1.0, 1.0, 0.0, 1.0, 1.0, 1.0], 3, ScaleRewards::Group).unwrap()[3..],
        [0.0; 3]
    );
}

#[test]
fn not_applicable_rewards_are_left_out_of_the_group_statistics() {
    let nan = f32::NAN;
    let a = group_advantages(&[1.0, nan, 0.0, 1.0], 4, ScaleRewards::Group).unwrap();
    assert_eq!(a[1], 0.0);
    // The other three: mean 2/3, std sqrt(1/3).
    let s = (1.0f64 / 3.0).sqrt() + 1e-4;
    assert!((a[0] as f64 - (1.0 / 3.0) / s).abs() < 1e-6);
    assert!((a[2] as f64 + (2.0 / 3.0) / s).abs() < 1e-6);
    // One scorable completion in a group: no baseline, advantage 0.
    assert_eq!(
        group_advantages(&[nan, 3.0, nan, nan], 4, ScaleRewards::Group).unwrap(),
        vec![0.0; 4]
    );
}

#[test]
fn weighted_rewards_skip_what_does_not_apply() {
    let nan = f32::NAN;
    let acc = [1.0, 0.0, nan];
    let fmt = [1.0, nan, nan];
    let r = combine_rewards(&[&acc, &fmt], &[2.0, 0.5]).unwrap();
    assert_eq!(r[0], 2.5);
    assert_eq!(r[1], 0.0);
    assert!(r[2].is_nan(), "no reward applies: the completion is unscorable");
}

#[test]
fn reward_batches_that_do_not_fit_are_errors() {
    assert_eq!(
        group_advantages(&[1.0; 6], 4, ScaleRewards::Group),
        Err(GrpoError::GroupSizeDoesNotDivide {
            batch: 6,
            group_size: 4
        })
    );
    assert_eq!(
        group_advantages(&[1.0; 6], 0, ScaleRewards::Group),
        Err(GrpoError::ZeroGroupSize)
    );
    assert_eq!(
        group_advantages(&[1.0, f32::INFINITY], 2, ScaleRewards::Group),
        Err(GrpoError::InfiniteReward {
            reward: 0,
            sample: 1,
            value: f32::INFINITY
        })
    );
    let e = combine_rewards(&[&[1.0, 2.0], &[1.0]], &[1.0, 1.0]).unwrap_err();
    assert_eq!(
        e,
        GrpoError::LengthMismatch {
            tensor: "rewards",
            expected: 2,
            actual: 1
        }
    );
    let e = combine_rewards(&[&[1.0, 2.0]], &[1.0, 1.0]).unwrap_err();
    assert_eq!(
        e,
        GrpoError::LengthMismatch {
            tensor: "reward_weights",
            expected: 1,
            actual: 2
        }
    );
    let e = compute_advantages(
        &[],
        &[],
        2,
        ScaleRewards::Group,
        MultiObjectiveAggregation::SumThenNormalize,
    );
    assert!(matches!(e, Err(GrpoError::EmptyBatch { .. })));
    let cfg = GrpoConfig {
        reward_weights: Some(vec![1.0]),
        num_generations: 2,
        ..GrpoConfig::default()
    };
    assert!(matches!(
        cfg.advantages(&[&[1.0, 0.0], &[0.0, 1.0]]),
        Err(GrpoError::LengthMismatch { .. })
    ));
    let e = GrpoError::GroupSizeDoesNotDivide {
        batch: 6,
        group_size: 4,
    }
    .to_string();
    assert!(
        e.contains('6') && e.contains('4') && e.contains("num_generations"),
        "{e}"
    );
}

fn two_by_three<'a>(logp: &'a [f32], mask: &'a [f32]) -> LossInputs<'a> {
    LossInputs {
        logp,
        old_logp: None,
        ref_logp: None,
        advantages: &[1.0, -1.0],
        mask,
        completion_len: 3,
        num_items_in_batch: None,
        is_ratio: None,
    }
}

#[test]
fn malformed_loss_inputs_are_errors_naming_the_tensor() {
    let cfg = GrpoConfig::default();
    let lp = [-0.5f32; 6];
    let mask = [1.0f32, 1.0, 0.0, 1.0, 1.0, 1.0];

    let e = policy_loss(&cfg, &two_by_three(&lp[..5], &mask)).unwrap_err();
    assert_eq!(
        e,
        GrpoError::LengthMismatch {
            tensor: "logp",
            expected: 6,
            actual: 5
        }
    );

    let mut bad = lp;
    bad[4] = f32::NAN;
    match policy_loss(&cfg, &two_by_three(&bad, &mask)) {
        Err(GrpoError::NonFinite {
            tensor: "logp",
            index: 4,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let inf_old = [-0.5, f32::NEG_INFINITY, -0.5, -0.5, -0.5, -0.5];
    let x = LossInputs {
        old_logp: Some(&inf_old),
        ..two_by_three(&lp, &mask)
    };
    assert!(matches!(
        policy_loss(&cfg, &x),
        Err(GrpoError::NonFinite {
            tensor: "old_logp",
            index: 1,
            ..
        })
    ));

    let half = [1.0, 0.5, 0.0, 1.0, 1.0, 1.0];
    assert_eq!(
        policy_loss(&cfg, &two_by_three(&lp, &half)),
        Err(GrpoError::InvalidMask { index: 1, value: 0.5 })
    );

    let kl = GrpoConfig {
        beta: 0.04,
        ..GrpoConfig::default()
    };
    assert!(matches!(
        policy_loss(&kl, &two_by_three(&lp, &mask)),
        Err(GrpoError::MissingInput { tensor: "ref_logp", .. })
    ));

    let x = LossInputs {
        advantages: &[1.0, f32::NAN],
        ..two_by_three(&lp, &mask)
    };
    assert!(matches!(
        policy_loss(&cfg, &x),
        Err(GrpoError::NonFinite {
            tensor: "advantages",
            index: 1,
            ..
        })
    ));

    let x = LossInputs {
        advantages: &[],
        logp: &[],
        mask: &[],
        ..two_by_three(&lp, &mask)
    };
    assert!(matches!(policy_loss(&cfg, &x), Err(GrpoError::EmptyBatch { .. })));

    let mut grad = [0.0f32; 4];
    assert_eq!(
        policy_loss_into(&cfg, &two_by_three(&lp, &mask), &mut grad),
        Err(GrpoError::LengthMismatch {
            tensor: "grad_logp",
            expected: 6,
            actual: 4
        })
    );

    let x = LossInputs {
        num_items_in_batch: Some(f64::NAN),
        is_ratio: None,
        ..two_by_three(&lp, &mask)
    };
    assert!(matches!(
        policy_loss(&cfg, &x),
        Err(GrpoError::NonFinite {
            tensor: "num_items_in_batch",
            ..
        })
    ));

    let e = GrpoError::NonFinite {
        tensor: "logp",
        index: 4,
        value: f32::NAN,
    }
    .to_string();
    assert!(e.contains("logp[4]") && e.contains("NaN"), "{e}");
}

#[test]
fn dapo_on_policy_worked_example() {
    // Two completions, lengths 2 and 3, A = [1, -1]; on policy ρ = 1 so the token loss is −A.
    // dapo divides the token sum by the generation batch's active tokens (10 here).
    let lp = [-0.5f32; 6];
    let mask = [1.0f32, 1.0, 0.0, 1.0, 1.0, 1.0];
    let x = LossInputs {
        num_items_in_batch: Some(10.0),
        is_ratio: None,
        ..two_by_three(&lp, &mask)
    };
    let out = policy_loss(&GrpoConfig::default(), &x).unwrap();
    assert!((out.loss - (-(2.0 - 3.0) / 10.0)).abs() < 1e-7, "{}", out.loss);
    // ∂/∂logp of −ρA = −A·ρ, spread over 10 items; padding gets nothing.
    assert_eq!(out.grad_logp, vec![-0.1, -0.1, 0.0, 0.1, 0.1, 0.1]);
    let names: Vec<&str> = out.metrics.entries().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "clip_ratio/low_mean",
            "clip_ratio/high_mean",
            "clip_ratio/region_mean",
            "clip_ratio/low_min",
            "clip_ratio/high_max"
        ]
    );
    assert_eq!(LossMetrics::NAMES[0], "kl");
    assert_eq!(out.metrics.get("clip_ratio/high_max"), Some(0.0));
}

/// Truncated importance sampling (TRL's `vllm_importance_sampling_correction`): each
/// token's policy term and its gradient are scaled by its weight, the KL term is not, and
/// weights of 1 change nothing.
#[test]
fn importance_sampling_weights_scale_the_policy_term_only() {
    let lp = [-0.5f32, -1.0, -0.2, -0.7, -0.3, -0.9];
    let old = [-0.6f32, -0.9, -0.2, -0.8, -0.3, -1.0];
    let rf = [-0.4f32, -1.1, -0.3, -0.6, -0.2, -0.8];
    let mask = [1.0f32, 1.0, 0.0, 1.0, 1.0, 1.0];
    let w = [0.5f32, 2.0, 7.0, 1.0, 0.25, 1.5];
    let ones = [1.0f32; 6];
    for level in ["token", "sequence"] {
        let base = GrpoConfig {
            importance_sampling_level: if level == "token" {
                ImportanceSamplingLevel::Token
            } else {
                ImportanceSamplingLevel::Sequence
            },
            ..GrpoConfig::default()
        };
        let with = |beta: f64, is: Option<&[f32]>| {
            let cfg = GrpoConfig { beta, ..base.clone() };
            let x = LossInputs {
                old_logp: Some(&old),
                ref_logp: Some(&rf),
                is_ratio: is,
                ..two_by_three(&lp, &mask)
            };
            policy_loss(&cfg, &x).unwrap()
        };
        // Weights of 1 are no weights, bit for bit.
        assert_eq!(with(0.04, None), with(0.04, Some(&ones)), "{level}");
        let (plain, weighted) = (with(0.0, None), with(0.0, Some(&w)));
        if level == "token" {
            // β = 0: every active token's gradient is scaled by its own weight.
            for t in 0..6 {
                let expect = plain.grad_logp[t] * w[t] * mask[t];
                assert!((weighted.grad_logp[t] - expect).abs() < 1e-6, "{level} t{t}");
            }
        }
        assert!(
            (weighted.loss - plain.loss).abs() > 1e-4,
            "{level}: the weights must matter"
        );
        // The KL term is added unweighted: (β-loss − 0-loss) does not depend on the weights.
        let kl_plain = with(0.04, None).loss - plain.loss;
        let kl_weighted = with(0.04, Some(&w)).loss - weighted.loss;
        assert!(
            (kl_plain - kl_weighted).abs() < 1e-6,
            "{level}: {kl_plain} vs {kl_weighted}"
        );
    }
    let short = [1.0f32; 5];
    let x = LossInputs {
        is_ratio: Some(&short),
        ..two_by_three(&lp, &mask)
    };
    assert!(matches!(
        policy_loss(&GrpoConfig::default(), &x),
        Err(GrpoError::LengthMismatch { tensor: "is_ratio", .. })
    ));
}
