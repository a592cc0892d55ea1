//! The real example plugins (built from `plugins/examples` for wasm32 by the test helper)
//! scored through the host: right answers, diagnostics, configs, the on-disk module cache,
//! panics, policies, and plugins and rule rewards behind one `Reward` trait.

use crate::plugin_support;

use plugin_support::{examples, host, load, sample};
use r1_core::plugin_abi::Diagnostic;
use r1_core::reward::{Accuracy, AccuracyConfig, Reward, RewardErrorKind, Sample, Score, ThinkFormat};
use r1_host::plugin::{CacheOutcome, HostConfig, OnRewardError, PluginConfig, PluginError, PluginHost, RewardFailures};

#[test]
fn arithmetic_plugin_scores_answers_against_reference_or_prompt() {
    let host = host(2);
    let plugin = load(&host, &examples().arithmetic);
    assert_eq!(plugin.name(), "arithmetic");
    assert_eq!(plugin.info().version, "0.1.0");
    let group = [
        sample(
            "What is 37*12?",
            "<think>37*12 = 370+74</think><answer>444</answer>",
            Some("444"),
        ),
        sample("What is 37*12?", "<think>hmm</think><answer>440</answer>", Some("444")),
        sample("What is 9-20?", "so it is -11", None),
        sample("Tell me a joke", "no numbers here", None),
    ];
    let scored = plugin.score_detailed(&group).expect("scores");
    assert_eq!(
        scored.scores,
        vec![
            Score::Value(1.0),
            Score::Value(0.0),
            Score::Value(1.0),
            Score::NotApplicable
        ]
    );
    assert_eq!(
        scored.diagnostics,
        vec![
            Diagnostic {
                sample: Some(1),
                message: "expected 444, found 440".into()
            },
            Diagnostic {
                sample: Some(3),
                message: "no reference and no arithmetic expression in the prompt".into()
            },
        ]
    );
}

#[test]
fn think_format_plugin_checks_the_r1_template() {
    let host = host(2);
    let plugin = load(&host, &examples().think_format);
    let group = [
        sample("q", "<think>\nreasoning\n</think>\n<answer>42</answer>", None),
        sample("q", "<answer>42</answer>", None),
        sample("q", "<think>reasoning</think>\nThe answer is 42.", None),
        sample("q", "<think>reasoning, never closed", None),
    ];
    let scored = plugin.score_detailed(&group).expect("scores");
    assert_eq!(
        scored.scores,
        vec![
            Score::Value(1.0),
            Score::Value(0.0),
            Score::Value(1.0),
            Score::Value(0.0)
        ]
    );
    assert_eq!(
        scored.diagnostics,
        vec![
            Diagnostic {
                sample: Some(1),
                message: "not in the think format".into()
            },
            Diagnostic {
                sample: Some(3),
                message: "not in the think format".into()
            },
        ]
    );
}

#[test]
fn think_format_plugin_takes_its_config_through_init() {
    let host = host(2);
    let config = PluginConfig {
        config: Some(serde_json::json!({ "answer_tags": true, "incorrect": -1.0 })),
        ..PluginConfig::new(&examples().think_format)
    };
    let plugin = host.load(&config).expect("loads with config");
    assert!(plugin.has_init());
    let group = [
        sample("q", "<think>reasoning</think>\nThe answer is 42.", None),
        sample("q", "<think>reasoning</think>\n<answer>42</answer>", None),
    ];
    assert_eq!(
        plugin.score(&group).expect("scores"),
        vec![Score::Value(-1.0), Score::Value(1.0)]
    );
}

#[test]
fn plugin_that_rejects_its_config_does_not_load() {
    let host = host(2);
    let config = PluginConfig {
        config: Some(serde_json::json!({ "strict": true })),
        ..PluginConfig::new(&examples().think_format)
    };
    match host.load(&config) {
        Err(PluginError::ConfigRejected { plugin, reason }) => {
            assert_eq!(plugin, "r1_plugin_think_format.wasm");
            assert!(reason.contains("unknown field `strict`"), "{reason}");
        }
        other => panic!("expected the config to be rejected, got {other:?}"),
    }
}

#[test]
fn wat_plugin_reads_the_abi_without_an_sdk() {
    let host = host(2);
    let plugin = load(&host, &examples().contains_reference_wat);
    assert_eq!(plugin.name(), "contains-reference");
    let mut with_metadata = sample("q", "the answer is 42", Some("42"));
    with_metadata.metadata = vec![("source".into(), "gsm8k".into()), ("id".into(), "7".into())];
    let group = [
        with_metadata,
        sample("q", "the answer is 41", Some("42")),
        sample("q", "no reference", None),
        sample("q", "empty reference", Some("")),
        sample("q", "ünïcödé 答案 42", Some("答案")),
    ];
    assert_eq!(
        plugin.score(&group).expect("scores"),
        vec![
            Score::Value(1.0),
            Score::Value(0.0),
            Score::NotApplicable,
            Score::NotApplicable,
            Score::Value(1.0)
        ]
    );
}

#[test]
fn rust_panic_becomes_a_trap_with_its_message_on_its_sample() {
    let host = host(2);
    let plugin = load(&host, &examples().panicking);
    let group = [sample("q", "fine", None), sample("q", "please panic now", None)];
    let error = plugin.score(&group).expect_err("the plugin panics");
    assert_eq!(error.reward, "panicking");
    assert_eq!(error.sample, Some(1));
    match &error.kind {
        RewardErrorKind::Trap(m) => {
            assert!(m.contains("panicked at"), "{m}");
            assert!(m.contains("asked to panic by the completion `please panic now`"), "{m}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // The next call on the same plugin is a fresh instance.
    assert_eq!(plugin.score(&group[..1]).expect("scores"), vec![Score::Value(1.0)]);
}

#[test]
fn on_reward_error_policy_absorbs_a_failing_group_and_counts_it() {
    let host = host(2);
    let plugin = load(&host, &examples().panicking);
    let groups = vec![
        vec![sample("q", "ok", None)],
        vec![sample("q", "panic", None), sample("q", "ok", None)],
    ];
    let results = host.score_groups(&plugin, &groups);
    let mut failures = RewardFailures::default();
    let mut zeroed = Vec::new();
    for (group, result) in groups.iter().zip(results.clone()) {
        zeroed.push(
            OnRewardError::Zero
                .apply(group.len(), result, &mut failures)
                .expect("zero policy"),
        );
    }
    assert_eq!(zeroed, vec![vec![Score::Value(1.0)], vec![Score::Value(0.0); 2]]);
    assert_eq!((failures.groups, failures.samples), (1, 2));
    assert!(failures.last.as_ref().is_some_and(|e| e.sample == Some(0)));
    let fail = OnRewardError::Fail.apply(2, results[1].clone(), &mut failures);
    assert!(fail.is_err());
}

#[test]
fn compiled_modules_are_cached_on_disk_and_a_corrupt_entry_is_recompiled() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = || HostConfig {
        threads: 1,
        cache_dir: Some(dir.path().to_path_buf()),
        ..HostConfig::default()
    };
    let path = &examples().arithmetic;
    let group = [sample("What is 2*3?", "6", None)];

    let first = PluginHost::new(config())
        .expect("host")
        .load(&PluginConfig::new(path))
        .expect("loads");
    assert_eq!(first.cache_outcome(), &CacheOutcome::Stored);
    let second = PluginHost::new(config())
        .expect("host")
        .load(&PluginConfig::new(path))
        .expect("loads");
    assert_eq!(second.cache_outcome(), &CacheOutcome::Hit);
    assert_eq!(second.score(&group).expect("scores"), vec![Score::Value(1.0)]);

    // Flip one byte of the entry: its digest no longer matches, so it is never deserialized.
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(entries.len(), 1, "one entry, no temp files left behind: {entries:?}");
    let name = entries[0].file_name().expect("name").to_string_lossy().into_owned();
    assert!(name.starts_with(first.sha256()) && name.ends_with(".cwasm"), "{name}");
    let mut bytes = std::fs::read(&entries[0]).expect("read entry");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entries[0], &bytes).expect("corrupt entry");
    let third = PluginHost::new(config())
        .expect("host")
        .load(&PluginConfig::new(path))
        .expect("loads");
    assert_eq!(third.cache_outcome(), &CacheOutcome::Stored);
    assert_eq!(third.score(&group).expect("scores"), vec![Score::Value(1.0)]);

    // A fuel-metered engine compiles different code: a different entry.
    let fueled = PluginConfig {
        fuel: Some(10_000_000),
        ..PluginConfig::new(path)
    };
    let fourth = PluginHost::new(config()).expect("host").load(&fueled).expect("loads");
    assert_eq!(fourth.cache_outcome(), &CacheOutcome::Stored);
    assert_eq!(fourth.score(&group).expect("scores"), vec![Score::Value(1.0)]);
}

#[test]
fn parallel_scoring_matches_one_at_a_time() {
    let host = host(2);
    let plugin = load(&host, &examples().arithmetic);
    let groups: Vec<Vec<_>> = (0..24)
        .map(|g| {
            (0..4)
                .map(|i| {
                    sample(
                        &format!("What is {g}*{i}?"),
                        &format!("<answer>{}</answer>", g * i + (i % 2)),
                        None,
                    )
                })
                .collect()
        })
        .collect();
    let sequential: Vec<_> = groups.iter().map(|g| plugin.score(g).expect("scores")).collect();
    let parallel: Vec<_> = host
        .score_groups(&plugin, &groups)
        .into_iter()
        .map(|r| r.expect("scores"))
        .collect();
    assert_eq!(parallel, sequential);
    assert_eq!(
        sequential[5],
        vec![
            Score::Value(1.0),
            Score::Value(0.0),
            Score::Value(1.0),
            Score::Value(0.0)
        ]
    );
    assert_eq!(plugin.stats().scores, 2 * 24 * 4);
}

/// Realistic completions for the math reward: boxed, tagged, LaTeX, wrong, unfinished.
fn math_group() -> Vec<Sample> {
    vec![
        sample(
            "What is 37*12?",
            "<think>37*12 = 370 + 74 = 444</think>\nThe answer is \\boxed{444}.",
            Some("444"),
        ),
        sample(
            "What is 37*12?",
            "<think>37*12 is about 440</think>\n<answer>440</answer>",
            Some("444"),
        ),
        sample("Half of 3?", "<think>3/2</think> \\boxed{\\frac{3}{2}}", Some("1.5")),
        sample("Half of 3?", "<think>3/2 = 1.5, so \\boxed{1.5}", Some("1.5")),
        sample(
            "Capital of France?",
            "<think>easy</think><answer>Paris</answer>",
            Some("Paris"),
        ),
        sample("No reference", "<think>x</think> 7", None),
        sample("What is 10^3?", "<think>10*10*10</think> It is 1,000.", Some("1000")),
    ]
}

#[test]
fn math_accuracy_plugin_scores_exactly_like_the_core_reward_in_process() {
    let host = host(2);
    let plugin = load(&host, &examples().math_accuracy);
    assert_eq!(plugin.name(), "math-accuracy");
    let group = math_group();
    let in_process = Accuracy::new(AccuracyConfig::default())
        .expect("accuracy")
        .score(&group)
        .expect("scores");
    let as_plugin = plugin.score(&group).expect("scores");
    assert_eq!(as_plugin, in_process);
    assert_eq!(as_plugin[0], Score::Value(1.0));
    assert_eq!(as_plugin[1], Score::Value(0.0));
    assert_eq!(as_plugin[5], Score::NotApplicable);

    // The same with a non-default config handed through `r1_init`.
    let config = AccuracyConfig {
        correct: 2.0,
        incorrect: -0.5,
        answer_after_think: false,
        ..AccuracyConfig::default()
    };
    let plugin = host
        .load(&PluginConfig {
            config: Some(serde_json::to_value(&config).expect("config as JSON")),
            ..PluginConfig::new(&examples().math_accuracy)
        })
        .expect("loads with config");
    let in_process = Accuracy::new(config).expect("accuracy").score(&group).expect("scores");
    assert_eq!(plugin.score(&group).expect("scores"), in_process);
}

#[test]
fn plugins_and_rule_rewards_share_the_reward_trait() {
    let host = host(2);
    let rewards: Vec<Box<dyn Reward>> = vec![
        Box::new(load(&host, &examples().math_accuracy)),
        Box::new(ThinkFormat::new(Default::default()).expect("think format")),
    ];
    let groups = vec![math_group()[..2].to_vec()];
    let table: Vec<(String, Vec<Score>)> = rewards
        .iter()
        .map(|r| {
            (
                r.name().to_string(),
                host.score_groups(r.as_ref(), &groups).remove(0).expect("scores"),
            )
        })
        .collect();
    assert_eq!(
        table,
        vec![
            ("math-accuracy".to_string(), vec![Score::Value(1.0), Score::Value(0.0)]),
            ("think_format".to_string(), vec![Score::Value(1.0), Score::Value(1.0)]),
        ]
    );
}
