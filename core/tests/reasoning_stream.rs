//! The streaming reasoning parser against the batch split: for random texts with tags at
//! random places, cut into random chunks, the concatenated deltas equal
//! `split_reasoning` of the whole text (read as starting with `<think>` when the prompt
//! opened the block), except where the answer began before any tag — there the whole
//! text is the answer, tags included (documented on `ReasoningParser`).

use proptest::prelude::*;
use r1_core::reasoning::{ReasoningDelta, ReasoningParser, THINK_CLOSE, THINK_OPEN, split_reasoning};

/// Text made of tags, tag fragments, whitespace and multi-byte characters.
fn tagged_text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "<think>", "</think>", "<", "</", "<th", "</thi", "think>", ">", " ", "\n", "\t", "a", "42", "東京", "🙂",
        "x y",
    ]);
    prop::collection::vec(pieces, 0..24).prop_map(|p| p.concat())
}

/// The batch result the stream must reproduce.
fn expected(text: &str, starts_in_reasoning: bool) -> (String, String) {
    let split = |t: &str| {
        let s = split_reasoning(t);
        (s.reasoning.unwrap_or("").to_string(), s.answer.to_string())
    };
    let rest = text.trim_start();
    if starts_in_reasoning {
        split(&format!("{THINK_OPEN}{text}"))
    } else if rest.starts_with(THINK_OPEN)
        || rest.starts_with(THINK_CLOSE)
        || (!text.contains(THINK_OPEN) && !text.contains(THINK_CLOSE))
    {
        split(text)
    } else {
        (String::new(), text.trim().to_string())
    }
}

/// `text` cut at the (char-boundary-rounded) `cuts`, fed chunk by chunk.
fn streamed(text: &str, cuts: &[usize], starts_in_reasoning: bool) -> (String, String) {
    let mut bounds: Vec<usize> = cuts
        .iter()
        .map(|&c| {
            let mut c = c % (text.len() + 1);
            while !text.is_char_boundary(c) {
                c -= 1;
            }
            c
        })
        .collect();
    bounds.push(0);
    bounds.push(text.len());
    bounds.sort_unstable();
    let mut parser = ReasoningParser::new(starts_in_reasoning);
    let mut all = ReasoningDelta::default();
    for w in bounds.windows(2) {
        let d = parser.push(&text[w[0]..w[1]]);
        all.reasoning.push_str(&d.reasoning);
        all.content.push_str(&d.content);
    }
    let d = parser.finish();
    all.reasoning.push_str(&d.reasoning);
    all.content.push_str(&d.content);
    (all.reasoning, all.content)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn reasoning_deltas_in_any_chunking_equal_the_batch_split(
        text in tagged_text(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        starts_in_reasoning in any::<bool>(),
    ) {
        prop_assert_eq!(streamed(&text, &cuts, starts_in_reasoning), expected(&text, starts_in_reasoning));
    }

    #[test]
    fn reasoning_fed_one_char_at_a_time_equals_the_whole_text_at_once(text in tagged_text(), starts_in_reasoning in any::<bool>()) {
        let every_char: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        let whole = ReasoningParser::split(&text, starts_in_reasoning);
        prop_assert_eq!(streamed(&text, &every_char, starts_in_reasoning), (whole.reasoning, whole.content));
    }
}

#[test]
fn reasoning_of_texts_that_start_with_a_tag_or_have_none_is_split_reasoning_as_is() {
    for text in [
        "<think>7+8=15</think> <answer>15</answer>",
        "<think>still thinking",
        " 42 ",
        "  </think> x",
    ] {
        let s = split_reasoning(text);
        let d = ReasoningParser::split(text, false);
        assert_eq!(
            (d.reasoning.as_str(), d.content.as_str()),
            (s.reasoning.unwrap_or(""), s.answer),
            "{text:?}"
        );
    }
}
