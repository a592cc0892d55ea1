//! Every rule reward and every extractor on arbitrary text: no panic (UTF-8 slicing
//! included), one score per sample, each finite or "not applicable", and extracted answers
//! that are slices of their input.

use proptest::prelude::*;
use r1_core::reward::extract::{answer_phrase, braced, extract_answer, first_number, last_boxed, last_number};
use r1_core::reward::math_answer::{normalize_latex, parse_answer, parse_number, reference_answer};
use r1_core::reward::script::ScriptCounts;
use r1_core::reward::{BuiltinRewardConfig, COMPLETION_TOKENS_KEY, Composite, Reward, RewardErrorKind, Sample, Score};

/// Text built from the pieces answer extraction and format checks look for, so the
/// interesting paths are hit far more often than by uniform Unicode.
fn tricky_text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "<think>",
        "</think>",
        "<answer>",
        "</answer>",
        "\\boxed{",
        "\\boxed ",
        "\\fbox{",
        "{",
        "}",
        "\\",
        "\\frac",
        "\\dfrac",
        "\\tfrac",
        "\\text{",
        "\\left(",
        "\\right)",
        "^\\circ",
        "^{\\circ}",
        "{,}",
        "\\,",
        "\\%",
        "\\$",
        "$",
        "1",
        "23",
        "456",
        "0",
        ",",
        ".",
        "-",
        "−",
        "+",
        "/",
        "%",
        "e",
        "E",
        "x = ",
        "=",
        " ",
        "\n",
        "####",
        "the answer is",
        "Answer:",
        "**",
        "答案是",
        "十五",
        "Ответ",
        "é",
        "́",
        "🙂",
        "\u{0}",
        "\\times 10^{",
        "４",
        "ひらがな",
        "한국어",
        "\\sqrt",
        "(B)",
        "km/h",
        "\\frac{",
        "}{",
    ]);
    prop_oneof![
        3 => prop::collection::vec(pieces, 0..40).prop_map(|v| v.concat()),
        1 => any::<String>(),
    ]
}

fn metadata() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (
            prop::sample::select(vec![COMPLETION_TOKENS_KEY, "language", "other"]).prop_map(String::from),
            prop_oneof![
                any::<String>(),
                (0u64..5000).prop_map(|n| n.to_string()),
                Just("zh".to_string())
            ],
        ),
        0..3,
    )
}

fn sample() -> impl Strategy<Value = Sample> {
    (
        tricky_text(),
        tricky_text(),
        prop::option::of(tricky_text()),
        metadata(),
    )
        .prop_map(|(prompt, completion, reference, metadata)| Sample {
            prompt,
            completion,
            reference,
            metadata,
        })
}

fn all_builtins() -> Vec<Box<dyn Reward>> {
    let configs = [
        r#"{"type": "accuracy"}"#,
        r#"{"type": "accuracy", "answer_after_think": false}"#,
        r#"{"type": "think_format"}"#,
        r#"{"type": "think_format", "mode": "strict", "answer_tags": true}"#,
        r#"{"type": "tag_count"}"#,
        r#"{"type": "tag_count", "strict_newlines": false}"#,
        r#"{"type": "language_consistency", "metadata_key": "language"}"#,
        r#"{"type": "language_consistency", "target": "cjk", "scope": "completion"}"#,
        r#"{"type": "soft_overlong_punishment", "max_completion_len": 100, "soft_punish_cache": 20}"#,
        r#"{"type": "soft_overlong_punishment", "max_completion_len": 100, "soft_punish_cache": 20, "unit": "chars"}"#,
    ];
    configs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let cfg: BuiltinRewardConfig = serde_json::from_str(c).unwrap();
            cfg.build(Some(&format!("r{i}"))).unwrap()
        })
        .collect()
}

fn is_slice_of(part: &str, whole: &str) -> bool {
    let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_builtin_scores_arbitrary_samples_without_panicking(batch in prop::collection::vec(sample(), 0..4)) {
        for r in all_builtins() {
            match r.score(&batch) {
                Ok(scores) => {
                    prop_assert_eq!(scores.len(), batch.len());
                    for s in scores {
                        prop_assert!(matches!(s, Score::NotApplicable) || s.as_f32().is_finite(), "{} gave {:?}", r.name(), s);
                    }
                }
                // Only per-sample metadata problems are errors, and they name the sample.
                Err(e) => {
                    prop_assert!(matches!(e.kind, RewardErrorKind::InvalidSample(_)), "{e}");
                    prop_assert!(e.sample.is_some_and(|i| i < batch.len()), "{e}");
                }
            }
        }
    }

    // Without the rewards whose per-sample metadata may be malformed (those are errors).
    #[test]
    fn a_composite_of_every_builtin_scores_arbitrary_samples(batch in prop::collection::vec(sample(), 1..3)) {
        let mut c = Composite::new("all");
        for r in all_builtins().into_iter().filter(|r| !matches!(r.name(), "r6" | "r8")) {
            c.add(0.5, r).unwrap();
        }
        let out = c.score_components(&batch).unwrap();
        prop_assert_eq!(out.total.len(), batch.len());
        prop_assert!(out.total.iter().all(|s| matches!(s, Score::NotApplicable) || s.as_f32().is_finite()));
    }

    #[test]
    fn extractors_return_slices_of_their_input(text in tricky_text()) {
        for found in [last_boxed(&text), answer_phrase(&text), last_number(&text), first_number(&text), braced(&text)]
            .into_iter()
            .flatten()
        {
            prop_assert!(is_slice_of(found, &text));
        }
        if let Some(e) = extract_answer(&text, Default::default()) {
            prop_assert!(is_slice_of(e.text, &text));
        }
        prop_assert!(is_slice_of(reference_answer(&text), &text));
    }

    #[test]
    fn answer_reading_never_panics_and_numbers_are_finite(text in tricky_text()) {
        if let Some(n) = parse_number(&text) {
            prop_assert!(n.value.is_finite());
        }
        let _ = parse_answer(&text);
        let mut out = String::new();
        normalize_latex(&text, &mut out);
        let _ = ScriptCounts::of(&text);
    }
}
