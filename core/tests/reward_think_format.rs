//! The think-format and tag-count rewards on realistic completions: R1 outputs, R1-Zero
//! `<answer>` outputs, templates that open `<think>` in the prompt, and the usual ways a
//! policy breaks the format.

use r1_core::reward::tag_count::tag_count_score;
use r1_core::reward::think_format::{FormatMode, ThinkInPrompt, has_think_format};
use r1_core::reward::{Reward, Sample, Score, TagCount, TagCountConfig, ThinkFormat, ThinkFormatConfig};

const PLAIN_PROMPT: &str = "<｜User｜>What is 7 + 8?<｜Assistant｜>";
const OPENED_PROMPT: &str = "<｜User｜>What is 7 + 8?<｜Assistant｜><think>\n";

fn cfg(mode: FormatMode, answer_tags: bool) -> ThinkFormatConfig {
    ThinkFormatConfig {
        mode,
        answer_tags,
        ..ThinkFormatConfig::default()
    }
}

fn ok(prompt: &str, completion: &str, c: &ThinkFormatConfig) -> bool {
    has_think_format(prompt, completion, c)
}

#[test]
fn lenient_mode_accepts_a_closed_think_block_and_an_answer() {
    let c = cfg(FormatMode::Lenient, false);
    assert!(ok(
        PLAIN_PROMPT,
        "<think>\n7 + 8 = 15\n</think>\n\nThe answer is 15.",
        &c
    ));
    assert!(ok(PLAIN_PROMPT, "  <think>7+8=15</think>15", &c), "whitespace is free");
    assert!(ok(PLAIN_PROMPT, "<think>七加八等于十五</think>\n答案是 15。", &c));
    assert!(!ok(PLAIN_PROMPT, "The answer is 15.", &c), "no think block");
    assert!(!ok(PLAIN_PROMPT, "<think>7 + 8 = 15", &c), "never closed");
    assert!(
        !ok(PLAIN_PROMPT, "<think>7 + 8 = 15</think>   \n", &c),
        "no answer after the reasoning"
    );
    assert!(!ok(PLAIN_PROMPT, "<think>  </think> 15", &c), "empty reasoning");
    assert!(
        !ok(PLAIN_PROMPT, "<think>a</think><think>b</think> 15", &c),
        "two think blocks"
    );
    assert!(!ok(PLAIN_PROMPT, "<think>a<think>b</think> 15", &c), "nested think");
    assert!(
        !ok(PLAIN_PROMPT, "<think>a</think> 15 </think>", &c),
        "a stray closing tag"
    );
    assert!(
        !ok(PLAIN_PROMPT, "Sure! <think>a</think> 15", &c),
        "text before the think block"
    );
}

#[test]
fn strict_mode_wants_open_r1_newlines() {
    let c = cfg(FormatMode::Strict, false);
    assert!(ok(
        PLAIN_PROMPT,
        "<think>\n7 + 8 = 15\n</think>\n\nThe answer is 15.",
        &c
    ));
    assert!(
        !ok(PLAIN_PROMPT, "<think>7 + 8 = 15</think>\nThe answer is 15.", &c),
        "no newlines inside the tags"
    );
    assert!(
        !ok(PLAIN_PROMPT, " <think>\n7 + 8 = 15\n</think>\n15", &c),
        "leading space"
    );
    assert!(!ok(PLAIN_PROMPT, "<think>\n7 + 8 = 15\n</think>\n", &c), "empty answer");
}

#[test]
fn the_answer_tag_variant_matches_r1_zero_outputs() {
    let strict = cfg(FormatMode::Strict, true);
    let lenient = cfg(FormatMode::Lenient, true);
    let good = "<think>\n7 + 8 = 15\n</think>\n<answer>\n15\n</answer>";
    assert!(ok(PLAIN_PROMPT, good, &strict));
    assert!(
        ok(PLAIN_PROMPT, &format!("{good}\n"), &strict),
        "a final newline is fine"
    );
    assert!(ok(PLAIN_PROMPT, good, &lenient));
    assert!(ok(PLAIN_PROMPT, "<think>7+8</think> <answer>15</answer> ", &lenient));
    assert!(!ok(PLAIN_PROMPT, "<think>7+8</think> <answer>15</answer>", &strict));
    assert!(
        !ok(PLAIN_PROMPT, "<think>\n7+8\n</think>\n15", &strict),
        "no answer tags"
    );
    assert!(
        !ok(
            PLAIN_PROMPT,
            "<think>\n7+8\n</think>\n<answer>\n15\n</answer>\nExtra",
            &strict
        ),
        "text after the answer"
    );
    assert!(
        !ok(PLAIN_PROMPT, "<think>7+8</think><answer> </answer>", &lenient),
        "empty answer"
    );
    assert!(
        !ok(PLAIN_PROMPT, "<think>7+8</think><answer>1<answer>5</answer>", &lenient),
        "nested answer tag"
    );
    assert!(
        !ok(PLAIN_PROMPT, "<think>7+8</think><answer>15", &lenient),
        "answer never closed"
    );
}

#[test]
fn templates_that_open_think_in_the_prompt_are_recognised() {
    let lenient = cfg(FormatMode::Lenient, false);
    let strict = cfg(FormatMode::Strict, false);
    // DeepSeek-R1-Distill: the prompt ends with `<think>\n`, the completion only closes it.
    assert!(ok(OPENED_PROMPT, "7 + 8 = 15\n</think>\n\nThe answer is 15.", &lenient));
    assert!(ok(OPENED_PROMPT, "7 + 8 = 15\n</think>\n\nThe answer is 15.", &strict));
    assert!(!ok(PLAIN_PROMPT, "7 + 8 = 15\n</think>\n\nThe answer is 15.", &lenient));
    assert!(
        !ok(OPENED_PROMPT, "7 + 8 = 15\n</think>\n", &lenient),
        "still needs an answer"
    );
    let never = ThinkFormatConfig {
        think_in_prompt: ThinkInPrompt::Never,
        ..lenient.clone()
    };
    assert!(!ok(OPENED_PROMPT, "7 + 8 = 15\n</think>\n\n15", &never));
    let always = ThinkFormatConfig {
        think_in_prompt: ThinkInPrompt::Always,
        ..lenient
    };
    assert!(ok("", "7 + 8 = 15\n</think>\n\n15", &always));
}

#[test]
fn tag_count_gives_a_quarter_per_tag_present_once() {
    let strict = TagCountConfig::default();
    let s = |c: &str| tag_count_score(PLAIN_PROMPT, c, &strict);
    assert_eq!(s("<think>\n7+8\n</think>\n<answer>\n15\n</answer>"), 1.0);
    assert_eq!(s("<think>\n7+8\n</think>\n15"), 0.5);
    assert_eq!(s("<think>\n7+8"), 0.25);
    assert_eq!(
        s("<think>\n<think>\n7+8\n</think>\n<answer>\n15\n</answer>"),
        0.75,
        "a doubled tag earns nothing"
    );
    assert_eq!(s("15"), 0.0);
    assert_eq!(
        s("<think>7+8</think><answer>15</answer>"),
        0.0,
        "strict wants the newlines"
    );
    let bare = TagCountConfig {
        strict_newlines: false,
        ..TagCountConfig::default()
    };
    assert_eq!(
        tag_count_score(PLAIN_PROMPT, "<think>7+8</think><answer>15</answer>", &bare),
        1.0
    );
    assert_eq!(
        tag_count_score(OPENED_PROMPT, "7+8\n</think>\n<answer>\n15\n</answer>", &strict),
        1.0
    );
}

#[test]
fn the_rewards_score_a_group() {
    let sample = |c: &str| Sample {
        prompt: PLAIN_PROMPT.into(),
        completion: c.into(),
        ..Sample::default()
    };
    let batch = [sample("<think>\na\n</think>\n<answer>\n15\n</answer>"), sample("15")];
    let fmt = ThinkFormat::new(ThinkFormatConfig {
        incorrect: -0.5,
        ..ThinkFormatConfig::default()
    })
    .unwrap();
    assert_eq!(fmt.score(&batch).unwrap(), vec![Score::Value(1.0), Score::Value(-0.5)]);
    assert_eq!(fmt.name(), "think_format");
    let tags = TagCount::new(TagCountConfig::default()).named("tags");
    assert_eq!(tags.score(&batch).unwrap(), vec![Score::Value(1.0), Score::Value(0.0)]);
    assert_eq!(tags.name(), "tags");
    let e = ThinkFormat::new(ThinkFormatConfig {
        correct: f32::NAN,
        ..ThinkFormatConfig::default()
    })
    .unwrap_err();
    assert!(
        e.to_string().contains("think_format") && e.to_string().contains("correct"),
        "{e}"
    );
}

#[test]
fn config_is_read_with_defaults_and_unknown_keys_are_named() {
    let c: ThinkFormatConfig = serde_json::from_str(r#"{"mode": "strict", "answer_tags": true}"#).unwrap();
    assert_eq!((c.mode, c.answer_tags, c.correct), (FormatMode::Strict, true, 1.0));
    let e = serde_json::from_str::<ThinkFormatConfig>(r#"{"mod": "strict"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mod"), "{e}");
    let e = serde_json::from_str::<TagCountConfig>(r#"{"strict": true}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("strict"), "{e}");
}
