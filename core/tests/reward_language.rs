//! The language-consistency reward on chains of thought in English, Chinese, Russian,
//! Japanese and mixtures, with the target taken from the prompt, the config or metadata.

use r1_core::reward::language::{LanguageScope, LanguageTarget, language_share, prompt_scripts};
use r1_core::reward::script::{Script, ScriptCounts, ScriptSet};
use r1_core::reward::{LanguageConfig, LanguageConsistency, Reward, RewardErrorKind, Sample, Score};

fn sample(prompt: &str, completion: &str) -> Sample {
    Sample {
        prompt: prompt.into(),
        completion: completion.into(),
        ..Sample::default()
    }
}

fn score(prompt: &str, completion: &str) -> Score {
    let r = LanguageConsistency::new(LanguageConfig::default()).unwrap();
    r.score_one(&sample(prompt, completion)).unwrap()
}

fn value(s: Score) -> f32 {
    s.value().expect("a score")
}

#[test]
fn words_are_counted_per_script() {
    let c = ScriptCounts::of("Let x be 5. Then 设 x 为 5，所以 答案 是 10. Итак, ответ 10.");
    assert_eq!(c.get(Script::Latin), 3, "Let, be, Then (x is a variable, not a word)");
    assert_eq!(c.get(Script::Han), 7, "设为所以答案是: one per character");
    assert_eq!(c.get(Script::Cyrillic), 2);
    assert_eq!(
        ScriptCounts::of(r"\frac{a}{b} + \sqrt{2}").total(),
        0,
        "LaTeX commands are not words"
    );
    assert_eq!(ScriptCounts::of("カタカナ と ひらがな").get(Script::Katakana), 4);
    assert_eq!(ScriptCounts::of("한국어 문장").get(Script::Hangul), 2);
    assert_eq!(ScriptCounts::of("Ελληνικά κείμενο").get(Script::Greek), 2);
    assert_eq!(ScriptCounts::of("12 + 30 = 42 ✓").total(), 0);
}

#[test]
fn the_target_comes_from_the_prompt() {
    assert_eq!(prompt_scripts("What is 7 + 8?"), Some(ScriptSet::of(&[Script::Latin])));
    assert_eq!(prompt_scripts("七加八等于多少？"), Some(ScriptSet::of(&[Script::Han])));
    assert_eq!(
        prompt_scripts("Сколько будет 7 + 8?"),
        Some(ScriptSet::of(&[Script::Cyrillic]))
    );
    let ja = ScriptSet::of(&[Script::Han, Script::Hiragana, Script::Katakana]);
    assert_eq!(prompt_scripts("七たす八はいくつですか？"), Some(ja));
    assert_eq!(prompt_scripts("7 + 8 = ?"), None);
}

#[test]
fn a_chain_of_thought_in_the_prompts_language_scores_one() {
    let en = "<think>First, add seven and eight. That gives fifteen, so the sum is 15.</think>\n15";
    assert_eq!(value(score("What is 7 + 8?", en)), 1.0);
    let zh = "<think>\n首先，七加八等于十五。\n</think>\n答案是 15";
    assert_eq!(value(score("七加八等于多少？", zh)), 1.0);
    let ru = "<think>Сначала сложим семь и восемь, получим пятнадцать.</think> Ответ: 15";
    assert_eq!(value(score("Сколько будет 7 + 8?", ru)), 1.0);
    let ja = "<think>七に八を足すと十五になります。</think>答えは15です。";
    assert_eq!(value(score("七たす八はいくつですか？", ja)), 1.0);
}

#[test]
fn mixing_languages_lowers_the_score_in_proportion() {
    // 6 Han characters and 4 English words.
    let mixed = "<think>七加八等于 fifteen so the answer 十五</think> 15";
    let s = value(score("七加八等于多少？", mixed));
    assert!((s - 7.0 / 11.0).abs() < 1e-6, "{s}");
    // An English prompt answered with Chinese reasoning.
    let s = value(score("What is 7 + 8?", "<think>七加八等于十五</think> 15"));
    assert_eq!(s, 0.0);
    // Variables and LaTeX inside Chinese reasoning do not count against it.
    let s = value(score(
        "解方程 2x + 3 = 7",
        r"<think>移项得 2x = 4，所以 x = \frac{4}{2} = 2</think> x = 2",
    ));
    assert_eq!(s, 1.0);
}

#[test]
fn nothing_to_judge_is_not_applicable() {
    assert_eq!(
        score("What is 7 + 8?", "<think>7+8=15</think> 15"),
        Score::NotApplicable
    );
    assert_eq!(
        score("7 + 8 = ?", "<think>seven plus eight</think> 15"),
        Score::NotApplicable
    );
}

#[test]
fn the_target_can_be_configured_or_given_per_sample() {
    let zh = LanguageConsistency::new(LanguageConfig {
        target: LanguageTarget::Scripts(ScriptSet::from_name("zh").unwrap()),
        ..LanguageConfig::default()
    })
    .unwrap();
    let s = zh
        .score_one(&sample("What is 7 + 8?", "<think>七加八等于十五</think> 15"))
        .unwrap();
    assert_eq!(s, Score::Value(1.0));

    let r = LanguageConsistency::new(LanguageConfig {
        metadata_key: Some("language".into()),
        ..LanguageConfig::default()
    })
    .unwrap();
    let mut x = sample("What is 7 + 8?", "<think>Сначала сложим числа</think> 15");
    x.metadata = vec![("language".into(), "ru".into())];
    assert_eq!(r.score_one(&x).unwrap(), Score::Value(1.0));
    // Without a metadata key configured, the column is not read.
    let plain = LanguageConsistency::new(LanguageConfig::default()).unwrap();
    assert_eq!(plain.score_one(&x).unwrap(), Score::Value(0.0));
    x.metadata = vec![("language".into(), "klingon".into())];
    match r.score(std::slice::from_ref(&x)) {
        Err(e) => {
            assert_eq!(e.sample, Some(0));
            assert!(
                matches!(&e.kind, RewardErrorKind::InvalidSample(m) if m.contains("klingon")),
                "{e}"
            );
        }
        Ok(s) => panic!("{s:?}"),
    }
}

#[test]
fn the_scope_picks_reasoning_answer_or_everything() {
    let c = "<think>seven plus eight is fifteen</think> 答案是十五";
    let with = |scope| {
        LanguageConsistency::new(LanguageConfig {
            scope,
            ..LanguageConfig::default()
        })
        .unwrap()
        .score_one(&sample("What is 7 + 8?", c))
        .unwrap()
    };
    assert_eq!(with(LanguageScope::Reasoning), Score::Value(1.0));
    assert_eq!(with(LanguageScope::Answer), Score::Value(0.0));
    let all = value(with(LanguageScope::Completion));
    assert!((all - 5.0 / 10.0).abs() < 1e-6, "{all}");
    // No think block: the whole completion is the reasoning.
    let s = LanguageConsistency::new(LanguageConfig::default())
        .unwrap()
        .score_one(&sample("What is 7 + 8?", "seven plus eight is fifteen"))
        .unwrap();
    assert_eq!(s, Score::Value(1.0));
}

#[test]
fn targets_parse_from_names_and_codes() {
    let t: LanguageConfig = serde_json::from_str(r#"{"target": "latin+han"}"#).unwrap();
    assert_eq!(
        t.target,
        LanguageTarget::Scripts(ScriptSet::of(&[Script::Latin, Script::Han]))
    );
    let t: LanguageConfig = serde_json::from_str(r#"{"target": "zh-Hans"}"#).unwrap();
    assert_eq!(t.target, LanguageTarget::Scripts(ScriptSet::of(&[Script::Han])));
    let t: LanguageConfig = serde_json::from_str(r#"{"target": "cjk", "metadata_key": "lang"}"#).unwrap();
    assert_eq!(t.metadata_key.as_deref(), Some("lang"));
    let e = serde_json::from_str::<LanguageConfig>(r#"{"target": "elvish"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("elvish"), "{e}");
    let e = serde_json::from_str::<LanguageConfig>(r#"{"targets": "en"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("targets"), "{e}");
    assert_eq!(
        language_share("hello world", ScriptSet::of(&[Script::Latin])),
        Some(1.0)
    );
    assert_eq!(language_share("", ScriptSet::of(&[Script::Latin])), None);
    let back: LanguageConfig = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
    assert_eq!(back, t);
}
