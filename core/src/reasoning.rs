//! Splitting a reasoning model's output into its chain of thought and its answer, the
//! way the DeepSeek API and llama-server fill `reasoning_content`: the text inside
//! `<think>…</think>` is reasoning; an unclosed think block is all reasoning; a lone
//! `</think>` (templates that open the block in the prompt) ends the reasoning.

/// Opening tag of the chain of thought.
pub const THINK_OPEN: &str = "<think>";
/// Closing tag of the chain of thought.
pub const THINK_CLOSE: &str = "</think>";

/// A completion split into reasoning and answer (both borrowed from the text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split<'a> {
    /// The chain of thought, `None` when the text has no think block.
    pub reasoning: Option<&'a str>,
    /// Everything after the think block (trimmed), or the whole text without one.
    pub answer: &'a str,
}

/// Splits `text` into reasoning and answer.
pub fn split_reasoning(text: &str) -> Split<'_> {
    match (text.find(THINK_OPEN), text.find(THINK_CLOSE)) {
        (Some(open), close) if close.is_none_or(|c| c > open) => {
            let body = &text[open + THINK_OPEN.len()..];
            match body.find(THINK_CLOSE) {
                Some(c) => Split {
                    reasoning: Some(body[..c].trim()),
                    answer: body[c + THINK_CLOSE.len()..].trim(),
                },
                None => Split {
                    reasoning: Some(body.trim()),
                    answer: "",
                },
            }
        }
        (_, Some(close)) => Split {
            reasoning: Some(text[..close].trim()),
            answer: text[close + THINK_CLOSE.len()..].trim(),
        },
        _ => Split {
            reasoning: None,
            answer: text.trim(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_block_then_answer() {
        let s = split_reasoning("<think>7+8=15</think> <answer>15</answer>");
        assert_eq!(
            s,
            Split {
                reasoning: Some("7+8=15"),
                answer: "<answer>15</answer>"
            }
        );
    }

    #[test]
    fn unclosed_think_block_is_all_reasoning() {
        let s = split_reasoning("<think>still thinking");
        assert_eq!(
            s,
            Split {
                reasoning: Some("still thinking"),
                answer: ""
            }
        );
    }

    #[test]
    fn lone_closing_tag_ends_reasoning_opened_by_the_template() {
        let s = split_reasoning("first I add\n</think>\n\n42");
        assert_eq!(
            s,
            Split {
                reasoning: Some("first I add"),
                answer: "42"
            }
        );
    }

    #[test]
    fn no_think_block_is_all_answer() {
        assert_eq!(
            split_reasoning(" 42 "),
            Split {
                reasoning: None,
                answer: "42"
            }
        );
    }
}
