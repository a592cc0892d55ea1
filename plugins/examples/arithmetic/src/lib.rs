//! Reward plugin for the bundled arithmetic task: a prompt like "What is 37*12?", the
//! answer in `<answer>…</answer>` (or the last integer of the completion). Scores 1 when
//! the answer equals the sample's reference, or, without one, the value of the prompt's
//! expression; "not applicable" when there is nothing to check against.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use r1_plugin::{Diagnostics, Sample, Score};

/// `a op b` for the first such expression in `text` (`op` one of `+ - * x × /`); `None`
/// when there is none, it overflows i64, or a division is not exact.
pub fn evaluate_prompt(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_digit()) {
            let negative = i > 0 && bytes[i - 1] == b'-' && (i < 2 || !bytes[i - 2].is_ascii_digit());
            if let Some((a, after_a)) = read_integer(text, i) {
                let a = if negative { a.checked_neg()? } else { a };
                if let Some(value) = read_operation(text, a, after_a) {
                    return Some(value);
                }
                i = after_a;
                continue;
            }
        }
        i += 1;
    }
    None
}

/// Digits from `start`: the value and the index after them.
fn read_integer(text: &str, start: usize) -> Option<(i64, usize)> {
    let digits = text[start..].bytes().take_while(u8::is_ascii_digit).count();
    let value = text[start..start + digits].parse().ok()?;
    Some((value, start + digits))
}

/// ` op b` after the first operand, evaluated.
fn read_operation(text: &str, a: i64, from: usize) -> Option<i64> {
    let rest = text[from..].trim_start();
    let mut chars = rest.chars();
    let op = chars.next()?;
    let rest = chars.as_str().trim_start();
    let (negative, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let start = text.len() - rest.len();
    let (b, _) = read_integer(text, start)?;
    let b = if negative { b.checked_neg()? } else { b };
    match op {
        '+' => a.checked_add(b),
        '-' | '−' => a.checked_sub(b),
        '*' | 'x' | 'X' | '×' | '·' => a.checked_mul(b),
        '/' | '÷' if b != 0 && a % b == 0 => Some(a / b),
        _ => None,
    }
}

/// The text inside the last `<answer>…</answer>`, or the whole completion.
pub fn answer_span(completion: &str) -> &str {
    match completion.rfind("<answer>") {
        Some(open) => {
            let inner = &completion[open + "<answer>".len()..];
            match inner.find("</answer>") {
                Some(close) => &inner[..close],
                None => inner,
            }
        }
        None => completion,
    }
}

/// The last integer in `text` (an optional `-`, digits, `,` between digit groups).
pub fn last_integer(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let mut end = bytes.len();
    while end > 0 && !bytes[end - 1].is_ascii_digit() {
        end -= 1;
    }
    if end == 0 {
        return None;
    }
    let mut start = end;
    while start > 0
        && (bytes[start - 1].is_ascii_digit()
            || (bytes[start - 1] == b',' && start > 1 && bytes[start - 2].is_ascii_digit()))
    {
        start -= 1;
    }
    let negative = start > 0 && bytes[start - 1] == b'-';
    let mut value: i64 = 0;
    for &b in &bytes[start..end] {
        if b.is_ascii_digit() {
            value = value.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
        }
    }
    Some(if negative { -value } else { value })
}

pub fn score_arithmetic(sample: &Sample, diagnostics: &mut Diagnostics) -> Score {
    let expected = match sample.reference.as_deref() {
        Some(reference) => match last_integer(reference.trim()) {
            Some(v) => v,
            None => {
                diagnostics.note(format!("reference `{reference}` is not an integer"));
                return Score::NotApplicable;
            }
        },
        None => match evaluate_prompt(&sample.prompt) {
            Some(v) => v,
            None => {
                diagnostics.note("no reference and no arithmetic expression in the prompt");
                return Score::NotApplicable;
            }
        },
    };
    match last_integer(answer_span(&sample.completion)) {
        Some(found) if found == expected => Score::Value(1.0),
        Some(found) => {
            diagnostics.note(format!("expected {expected}, found {found}"));
            Score::Value(0.0)
        }
        None => {
            diagnostics.note("no integer in the answer");
            Score::Value(0.0)
        }
    }
}

r1_plugin::export_reward! {
    name: "arithmetic",
    version: env!("CARGO_PKG_VERSION"),
    description: "1 when the answer to an arithmetic question (\"What is 37*12?\") is right",
    score: score_arithmetic,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(prompt: &str, completion: &str, reference: Option<&str>) -> Sample {
        Sample {
            prompt: prompt.into(),
            completion: completion.into(),
            reference: reference.map(Into::into),
            metadata: Vec::new(),
        }
    }

    #[test]
    fn prompt_expressions_evaluate() {
        assert_eq!(evaluate_prompt("What is 37*12?"), Some(444));
        assert_eq!(evaluate_prompt("What is 7 - 19?"), Some(-12));
        assert_eq!(evaluate_prompt("What is -3 × 4?"), Some(-12));
        assert_eq!(evaluate_prompt("Compute 84 / 7."), Some(12));
        assert_eq!(evaluate_prompt("Compute 85 / 7."), None);
        assert_eq!(evaluate_prompt("What is 9223372036854775807 + 1?"), None);
        assert_eq!(evaluate_prompt("Hello"), None);
    }

    #[test]
    fn answers_are_read_from_answer_tags_or_the_last_integer() {
        assert_eq!(
            last_integer(answer_span("<think>37*12 = 444? 1</think><answer>444</answer>")),
            Some(444)
        );
        assert_eq!(last_integer(answer_span("so the total is 1,234.")), Some(1234));
        assert_eq!(last_integer("-12"), Some(-12));
        assert_eq!(last_integer("none"), None);
    }

    #[test]
    fn scores_against_reference_then_prompt() {
        let mut d = Diagnostics::new();
        assert_eq!(
            score_arithmetic(&sample("What is 37*12?", "<answer>444</answer>", Some("444")), &mut d),
            Score::Value(1.0)
        );
        assert_eq!(
            score_arithmetic(&sample("What is 37*12?", "<answer>440</answer>", None), &mut d),
            Score::Value(0.0)
        );
        assert_eq!(
            score_arithmetic(&sample("Say hi", "hi", None), &mut d),
            Score::NotApplicable
        );
        assert_eq!(d.as_slice().len(), 2);
        assert_eq!(d.as_slice()[0].message, "expected 444, found 440");
    }
}
