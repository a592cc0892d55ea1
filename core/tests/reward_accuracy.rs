//! The accuracy reward on realistic completions: answer extraction (boxed with nested
//! braces, answer tags, "the answer is", the last number), value reading (fractions,
//! thousands separators, percentages, negatives, LaTeX wrappers) and references from GSM8K
//! and MATH.

use r1_core::reward::accuracy::{Verdict, grade_against};
use r1_core::reward::extract::{AnswerSource, Extractors, extract_answer, first_number, last_boxed, last_number};
use r1_core::reward::math_answer::{Answer, Tolerance, parse_answer, parse_number, reference_answer};
use r1_core::reward::{Accuracy, AccuracyConfig, Reward, Sample, Score};

fn verdict(completion: &str, reference: &str) -> Verdict {
    grade_against(completion, reference, &AccuracyConfig::default())
}

#[track_caller]
fn right(completion: &str, reference: &str) {
    assert_eq!(
        verdict(completion, reference),
        Verdict::Correct,
        "{completion:?} should match {reference:?}"
    );
}

#[track_caller]
fn wrong(completion: &str, reference: &str) {
    assert_eq!(
        verdict(completion, reference),
        Verdict::Incorrect,
        "{completion:?} should not match {reference:?}"
    );
}

#[test]
fn boxed_answers_with_nested_braces_are_extracted() {
    assert_eq!(last_boxed(r"so \boxed{\frac{1}{2}} done"), Some(r"\frac{1}{2}"));
    assert_eq!(
        last_boxed(r"\boxed{a} then \boxed{ \left\{ 1, 2 \right\} }"),
        Some(r"\left\{ 1, 2 \right\}")
    );
    assert_eq!(last_boxed(r"\fbox{7}"), Some("7"));
    assert_eq!(last_boxed(r"\boxed 5 is it"), Some("5"));
    assert_eq!(last_boxed(r"\boxed{unclosed"), None, "a truncated box is no answer");
    assert_eq!(
        last_boxed(r"\boxed{3} and later \boxed{4"),
        Some("3"),
        "the last balanced box counts"
    );
    assert_eq!(last_boxed(r"\boxedsomething{3}"), None);
}

#[test]
fn extraction_prefers_boxed_then_tags_then_phrase_then_last_number() {
    let all = Extractors::default();
    let e = extract_answer(r"<answer>The result is \boxed{12}</answer>", all).unwrap();
    assert_eq!((e.text, e.source), ("12", AnswerSource::Boxed));
    let e = extract_answer("<answer> 42 </answer>", all).unwrap();
    assert_eq!((e.text, e.source), ("42", AnswerSource::AnswerTag));
    let e = extract_answer("We add 3 and 4.\nThe answer is: **7**.\nCheck: 7 - 3 = 4", all).unwrap();
    assert_eq!((e.text, e.source), ("7", AnswerSource::Phrase));
    let e = extract_answer("Final Answer:\n\n  -12.5\n", all).unwrap();
    assert_eq!((e.text, e.source), ("-12.5", AnswerSource::Phrase));
    let e = extract_answer("She has 5 apples, buys 3 more, so 8 apples.", all).unwrap();
    assert_eq!((e.text, e.source), ("8", AnswerSource::LastNumber));
    assert_eq!(extract_answer("no digits here", all), None);
    let only_boxed = Extractors {
        answer_tag: false,
        phrase: false,
        last_number: false,
        ..all
    };
    assert_eq!(extract_answer("the answer is 4", only_boxed), None);
}

#[test]
fn last_and_first_number_read_whole_numbers() {
    assert_eq!(last_number("total: $1,234.50."), Some("1,234.50"));
    assert_eq!(last_number("so x = -7"), Some("-7"));
    assert_eq!(last_number("5-3=2"), Some("2"));
    assert_eq!(last_number("x-5"), Some("5"), "a binary minus is not a sign");
    assert_eq!(last_number("the ratio is 3/4"), Some("3/4"));
    assert_eq!(last_number("a rise of 12.5%"), Some("12.5%"));
    assert_eq!(last_number(r"so $x = \frac{3}{4}$"), Some(r"\frac{3}{4}"));
    assert_eq!(
        last_number(r"so $x = -\dfrac{\frac{1}{2}}{3}$."),
        Some(r"-\dfrac{\frac{1}{2}}{3}")
    );
    assert_eq!(last_number("points 1,5 and 2"), Some("2"));
    assert_eq!(last_number("2,50"), Some("50"), "not a thousands group");
    assert_eq!(first_number("18 dollars, i.e. 9 * 2"), Some("18"));
    assert_eq!(first_number("около −3 градусов"), Some("−3"));
}

#[test]
fn numbers_are_read_in_their_usual_forms() {
    let v = |s: &str| parse_number(s).map(|n| n.value);
    assert_eq!(v("42"), Some(42.0));
    assert_eq!(v("-17"), Some(-17.0));
    assert_eq!(v("−17"), Some(-17.0), "Unicode minus");
    assert_eq!(v("3.25"), Some(3.25));
    assert_eq!(v(".5"), Some(0.5));
    assert_eq!(v("1,234,567"), Some(1_234_567.0));
    assert_eq!(v("1{,}234"), Some(1234.0));
    assert_eq!(v(r"1\,234"), Some(1234.0));
    assert_eq!(v("12,34"), None, "not thousands groups");
    assert_eq!(v("1234,567"), None);
    assert_eq!(v("3/4"), Some(0.75));
    assert_eq!(v(r"\frac{3}{4}"), Some(0.75));
    assert_eq!(v(r"\dfrac{3}{4}"), Some(0.75));
    assert_eq!(v(r"\tfrac34"), Some(0.75));
    assert_eq!(v(r"-\frac{7}{2}"), Some(-3.5));
    assert_eq!(v(r"\frac{-7}{2}"), Some(-3.5));
    assert_eq!(v(r"\frac{\frac{1}{2}}{4}"), Some(0.125));
    assert_eq!(v(r"\frac{1}{0}"), None);
    assert_eq!(v("$18$"), Some(18.0));
    assert_eq!(v(r"\$18.00"), Some(18.0));
    assert_eq!(v(r"\(  5 \)"), Some(5.0));
    assert_eq!(v(r"90^\circ"), Some(90.0));
    assert_eq!(v(r"90^{\circ}"), Some(90.0));
    assert_eq!(v("90°"), Some(90.0));
    assert_eq!(v(r"5\text{ cm}"), Some(5.0));
    assert_eq!(v(r"\text{5}"), Some(5.0));
    assert_eq!(v("18 dollars"), Some(18.0));
    assert_eq!(v("60 km/h"), Some(60.0));
    assert_eq!(v("x = 5"), Some(5.0));
    assert_eq!(v(r"\left( 3 \right)"), None, "parentheses are not a number");
    assert_eq!(v("1.5e3"), Some(1500.0));
    assert_eq!(v(r"2.5 \times 10^{3}"), Some(2500.0));
    assert_eq!(v("４２"), Some(42.0), "full-width digits");
    assert_eq!(v("5x"), None);
    assert_eq!(v(r"2\sqrt{3}"), None);
    let p = parse_number(r"12.5\%").unwrap();
    assert!(p.percent && p.value == 12.5);
}

#[test]
fn references_from_gsm8k_and_math_are_read() {
    assert_eq!(
        reference_answer("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"),
        "72"
    );
    assert_eq!(reference_answer(r"The sum is $\boxed{\frac{5}{2}}$."), r"\frac{5}{2}");
    assert_eq!(reference_answer("  1,000 "), "1,000");
    assert_eq!(parse_answer(r"\sqrt{2}"), Some(Answer::Text(r"\sqrt{2}".into())));
    assert_eq!(parse_answer(" $ $ "), None);
}

#[test]
fn r1_style_completions_are_graded() {
    right(
        "<think>\n48/2 = 24 clips in May, 48 + 24 = 72.\n</think>\n\nNatalia sold **72** clips.\n\n\\boxed{72}",
        "#### 72",
    );
    right(
        "<think>half of 48 is 24, and 48+24=72</think>\nThe answer is 72.",
        "Natalia sold 48/2 = 24 clips.\n#### 72",
    );
    right(
        r"<think>compute</think> The probability is $\boxed{\dfrac{1}{4}}$.",
        r"\frac{1}{4}",
    );
    right(r"<think>compute</think> \boxed{0.25}", r"\frac{1}{4}");
    right(r"<think>compute</think> \boxed{\frac{2}{8}}", "0.25");
    right("<think>...</think>\n**Final Answer**\n\\[\n\\boxed{1,234}\n\\]", "1234");
    right(r"<think>...</think> $\boxed{-\frac{3}{2}}$", "-1.5");
    right(r"<think>...</think> \boxed{x = -3}", "-3");
    right(r"<think>...</think> \boxed{90^\circ}", "90");
    right(r"<think>...</think> The angle is \boxed{45^{\circ}}.", r"45^\circ");
    right(r"<think>...</think> \boxed{\$18}", "18");
    right(r"<think>...</think> \boxed{18 \text{ dollars}}", "18");
    right(r"<think>...</think> \boxed{25\%}", "0.25");
    right(r"<think>...</think> \boxed{25\%}", "25");
    right(r"<think>...</think> \boxed{0.25}", r"25\%");
    right(r"<think>...</think> \boxed{\sqrt{2}}", r"\sqrt{2}");
    right(r"<think>...</think> \boxed{\sqrt2}", r"\sqrt{2}");
    right(r"<think>...</think> \boxed{\dfrac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}");
    right(r"<think>...</think> The answer is (B).", "B");
    right("<think>...</think> <answer>The total is 42 apples.</answer>", "42");
    right("<think>...</think> <answer>42</answer>", "42.0");
    right(
        "<think>...</think> The answer is 18 dollars, since 9 * 2 = 18 and she spent 3",
        "18",
    );
    right("<think>...</think>\nShe has 5 apples left.", "5");
    right("<think>...</think>\n答案是 -12。", "-12");
    right("<think>...</think> 1.000001", "1");
    wrong("<think>...</think> 1.0001", "1");
    wrong("<think>...</think> 0.333", r"\frac{1}{3}");
    wrong(r"<think>...</think> \boxed{71}", "#### 72");
    wrong(r"<think>...</think> \boxed{-72}", "72");
    wrong(r"<think>...</think> \boxed{\sqrt{3}}", r"\sqrt{2}");
    wrong("<think>...</think> no idea", "7");
}

#[test]
fn the_answer_must_come_after_the_chain_of_thought() {
    // The reasoning mentions the right number, the answer gives another.
    wrong(r"<think>maybe \boxed{72}? no.</think> \boxed{70}", "72");
    // Unfinished reasoning has no answer.
    wrong(r"<think>so far \boxed{72} and counting", "72");
    // A template that opened <think> in the prompt leaves a lone </think>.
    right("48/2 = 24, total 72\n</think>\n\nThe answer is 72.", "72");
    let whole = AccuracyConfig {
        answer_after_think: false,
        ..AccuracyConfig::default()
    };
    assert_eq!(
        grade_against(r"<think>so far \boxed{72} and counting", "72", &whole),
        Verdict::Correct
    );
}

#[test]
fn unreadable_references_are_not_applicable() {
    let solution = "First we compute the area of the triangle using Heron's formula, then we divide by the \
                    semi-perimeter to obtain the inradius, which is what the question asks for.";
    assert_eq!(verdict(r"\boxed{3}", solution), Verdict::NotApplicable);
    assert_eq!(verdict(r"\boxed{3}", "   "), Verdict::NotApplicable);
    assert_eq!(verdict(r"\boxed{3}", r"$\boxed{}$"), Verdict::NotApplicable);
}

#[test]
fn the_reward_scores_a_group_with_its_config() {
    let acc = Accuracy::new(AccuracyConfig {
        correct: 2.0,
        incorrect: -1.0,
        ..AccuracyConfig::default()
    })
    .unwrap();
    let sample = |completion: &str, reference: Option<&str>| Sample {
        prompt: "How many clips did Natalia sell?".into(),
        completion: completion.into(),
        reference: reference.map(String::from),
        metadata: vec![],
    };
    let batch = [
        sample(r"<think>24+48</think> \boxed{72}", Some("#### 72")),
        sample(r"<think>24+48</think> \boxed{70}", Some("#### 72")),
        sample(r"<think>24+48</think> \boxed{72}", None),
        sample(
            r"<think>24+48</think> \boxed{72}",
            Some(
                "see the worked solution in the appendix of the textbook, chapter four, where every step of the derivation is given",
            ),
        ),
    ];
    assert_eq!(acc.name(), "accuracy");
    assert_eq!(
        acc.score(&batch).unwrap(),
        vec![
            Score::Value(2.0),
            Score::Value(-1.0),
            Score::NotApplicable,
            Score::NotApplicable
        ]
    );
    let bad = AccuracyConfig {
        tolerance: Tolerance {
            rel: f64::NAN,
            abs: 0.0,
        },
        ..AccuracyConfig::default()
    };
    let e = Accuracy::new(bad).unwrap_err();
    assert!(e.to_string().contains("tolerance"), "{e}");
    let e = Accuracy::new(AccuracyConfig {
        correct: f32::INFINITY,
        ..AccuracyConfig::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("correct"), "{e}");
}

#[test]
fn config_defaults_and_unknown_keys() {
    let c: AccuracyConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, AccuracyConfig::default());
    let c: AccuracyConfig =
        serde_json::from_str(r#"{"extractors": {"last_number": false}, "tolerance": {"rel": 1e-3}}"#).unwrap();
    assert!(!c.extractors.last_number && c.extractors.boxed);
    assert_eq!(c.tolerance.rel, 1e-3);
    let e = serde_json::from_str::<AccuracyConfig>(r#"{"tolerence": {}}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tolerence"), "{e}");
}

#[test]
fn degenerate_completions_still_get_a_verdict() {
    // A policy stuck repeating an unclosed box: no box is an answer, the last number is.
    let stuck = format!("<think>x</think>{} 7", r"\boxed{".repeat(20_000));
    assert_eq!(verdict(&stuck, "7"), Verdict::Correct);
    // Thousands of fractions before the last digit.
    let fracs = format!("<think>x</think>{}so 12", r"\frac{1}{".repeat(20_000));
    assert_eq!(verdict(&fracs, "12"), Verdict::Correct);
    // An answer tag holding a long text: its last number is the answer.
    let long = format!("<think>x</think><answer>{} 42</answer>", "words ".repeat(5_000));
    assert_eq!(verdict(&long, "42"), Verdict::Correct);
    assert_eq!(parse_answer(&"1".repeat(5_000)), None, "over the answer length limit");
}
