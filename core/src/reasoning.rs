//! Splitting a reasoning model's output into its chain of thought and its answer, the
//! way the DeepSeek API and llama-server fill `reasoning_content`: the text inside
//! `<think>…</think>` is reasoning; an unclosed think block is all reasoning; a lone
//! `</think>` (templates that open the block in the prompt) ends the reasoning.
//! [`split_reasoning`] splits a finished text; [`ReasoningParser`] does the same to a
//! stream of chunks, as a server needs for `reasoning_content` deltas.

use alloc::string::String;

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

/// Whether a rendered prompt ends inside an open think block: its last `<think>` comes
/// after its last `</think>` (templates such as DeepSeek-R1's open the block in the
/// generation prompt, so the completion starts with reasoning and only closes it).
pub fn prompt_opens_reasoning(prompt: &str) -> bool {
    match (prompt.rfind(THINK_OPEN), prompt.rfind(THINK_CLOSE)) {
        (Some(open), Some(close)) => open > close,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// What one chunk of a stream adds to the reasoning and to the answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReasoningDelta {
    /// More of the chain of thought (`reasoning_content`).
    pub reasoning: String,
    /// More of the answer (`content`).
    pub content: String,
}

impl ReasoningDelta {
    /// Nothing new in either part.
    pub fn is_empty(&self) -> bool {
        self.reasoning.is_empty() && self.content.is_empty()
    }
}

/// Splits a stream of text chunks into reasoning and answer deltas.
///
/// The concatenated deltas of a stream, however it is chunked, are exactly
/// [`split_reasoning`] of the whole text, with the reasoning `None` read as empty:
///
/// * `starts_in_reasoning` (the prompt opened `<think>`, see [`prompt_opens_reasoning`]):
///   the stream is read as if it began with `<think>`, i.e. `split_reasoning("<think>" + text)`
///   — everything up to the first `</think>` is reasoning, the rest the answer.
/// * otherwise, when the text (after leading whitespace) starts with `<think>` or
///   `</think>`, or has no tag at all, the result is `split_reasoning(text)`.
/// * otherwise the answer started before any tag. Tags after the answer started are
///   literal answer text — as `split_reasoning` treats tags after `</think>` — so the
///   whole text is the answer. (`split_reasoning` would instead drop the text before a
///   later `<think>`, or call it reasoning before a later `</think>`; a stream cannot
///   take back text it has sent.)
///
/// Inside the think block, a second `<think>` is literal reasoning text, as in
/// `split_reasoning`. Both parts are trimmed like `split_reasoning` trims them: leading
/// whitespace is dropped, whitespace is held back until something else follows it, and
/// whitespace still held at the end of a part (before `</think>`, or at [`finish`]) is
/// dropped. A suffix that could begin a tag is held back too, so a tag split across
/// chunks is still recognised.
///
/// [`finish`]: ReasoningParser::finish
#[derive(Clone, Debug)]
pub struct ReasoningParser {
    state: StreamState,
    /// Text received but not yet attributed: a possible start of a tag.
    pending: String,
    reasoning: TrimmedPart,
    content: TrimmedPart,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamState {
    /// Only whitespace so far, and the prompt did not open a think block.
    Start,
    Reasoning,
    /// The answer: everything from here on, tags included, is content.
    Content,
}

/// One part (reasoning or answer) written out trimmed, whitespace held until it is
/// known not to be trailing.
#[derive(Clone, Debug, Default)]
struct TrimmedPart {
    started: bool,
    held_whitespace: String,
}

impl TrimmedPart {
    fn write(&mut self, text: &str, out: &mut String) {
        let text = if self.started { text } else { text.trim_start() };
        if text.is_empty() {
            return;
        }
        self.started = true;
        let body = text.trim_end();
        if !body.is_empty() {
            out.push_str(&self.held_whitespace);
            self.held_whitespace.clear();
            out.push_str(body);
        }
        self.held_whitespace.push_str(&text[body.len()..]);
    }

    /// The part is over: whitespace still held was trailing.
    fn end(&mut self) {
        self.held_whitespace.clear();
    }
}

impl ReasoningParser {
    /// A parser for a completion whose prompt ended inside an open think block
    /// (`starts_in_reasoning`), or not.
    pub fn new(starts_in_reasoning: bool) -> Self {
        ReasoningParser {
            state: if starts_in_reasoning {
                StreamState::Reasoning
            } else {
                StreamState::Start
            },
            pending: String::new(),
            reasoning: TrimmedPart::default(),
            content: TrimmedPart::default(),
        }
    }

    /// The reasoning and answer text that `text` (the next chunk) makes certain.
    pub fn push(&mut self, text: &str) -> ReasoningDelta {
        self.pending.push_str(text);
        let mut delta = ReasoningDelta::default();
        self.drain(&mut delta, false);
        delta
    }

    /// Ends the stream: held text is flushed (an unclosed think block is reasoning, a
    /// partial tag is plain text) and trailing whitespace dropped.
    pub fn finish(&mut self) -> ReasoningDelta {
        let mut delta = ReasoningDelta::default();
        self.drain(&mut delta, true);
        self.reasoning.end();
        self.content.end();
        delta
    }

    /// Whether the stream is inside the think block now.
    pub fn in_reasoning(&self) -> bool {
        self.state == StreamState::Reasoning
    }

    /// The whole of `text` at once: what the deltas of any chunking add up to.
    pub fn split(text: &str, starts_in_reasoning: bool) -> ReasoningDelta {
        let mut parser = ReasoningParser::new(starts_in_reasoning);
        let mut all = parser.push(text);
        let last = parser.finish();
        all.reasoning.push_str(&last.reasoning);
        all.content.push_str(&last.content);
        all
    }

    /// Attributes as much of `pending` as is certain (all of it when `at_end`).
    fn drain(&mut self, delta: &mut ReasoningDelta, at_end: bool) {
        loop {
            match self.state {
                StreamState::Start => {
                    let start = self.pending.len() - self.pending.trim_start().len();
                    self.pending.drain(..start);
                    if self.pending.is_empty() {
                        return;
                    }
                    if self.pending.starts_with(THINK_OPEN) {
                        self.pending.drain(..THINK_OPEN.len());
                        self.state = StreamState::Reasoning;
                    } else if self.pending.starts_with(THINK_CLOSE) {
                        self.pending.drain(..THINK_CLOSE.len());
                        self.state = StreamState::Content;
                    } else if !at_end
                        && (THINK_OPEN.starts_with(self.pending.as_str())
                            || THINK_CLOSE.starts_with(self.pending.as_str()))
                    {
                        return;
                    } else {
                        self.state = StreamState::Content;
                    }
                }
                StreamState::Reasoning => {
                    if let Some(close) = self.pending.find(THINK_CLOSE) {
                        self.reasoning.write(&self.pending[..close], &mut delta.reasoning);
                        self.reasoning.end();
                        self.pending.drain(..close + THINK_CLOSE.len());
                        self.state = StreamState::Content;
                    } else {
                        let held = if at_end {
                            0
                        } else {
                            partial_tag_len(&self.pending, THINK_CLOSE)
                        };
                        let certain = self.pending.len() - held;
                        self.reasoning.write(&self.pending[..certain], &mut delta.reasoning);
                        self.pending.drain(..certain);
                        return;
                    }
                }
                StreamState::Content => {
                    self.content.write(&self.pending, &mut delta.content);
                    self.pending.clear();
                    return;
                }
            }
        }
    }
}

/// Length of the longest proper prefix of `tag` that `text` ends with. `tag` is ASCII,
/// so the suffix starts on a character boundary.
fn partial_tag_len(text: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .find(|&k| text.as_bytes().ends_with(&tag.as_bytes()[..k]))
        .unwrap_or(0)
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

    /// Feeds `chunks` one by one and concatenates every delta, `finish` included.
    fn stream(starts_in_reasoning: bool, chunks: &[&str]) -> (String, String) {
        let mut parser = ReasoningParser::new(starts_in_reasoning);
        let mut all = ReasoningDelta::default();
        for chunk in chunks {
            let d = parser.push(chunk);
            all.reasoning.push_str(&d.reasoning);
            all.content.push_str(&d.content);
        }
        let d = parser.finish();
        all.reasoning.push_str(&d.reasoning);
        all.content.push_str(&d.content);
        (all.reasoning, all.content)
    }

    fn owned(reasoning: &str, content: &str) -> (String, String) {
        (reasoning.into(), content.into())
    }

    #[test]
    fn tags_split_across_chunks_are_recognised() {
        let chunks = ["<th", "ink>\n7+8", "=15\n</", "thi", "nk>\n\n", "15"];
        assert_eq!(stream(false, &chunks), owned("7+8=15", "15"));
    }

    #[test]
    fn a_partial_closing_tag_is_held_back_not_sent_as_reasoning() {
        let mut parser = ReasoningParser::new(true);
        assert_eq!(parser.push("so 42 </thi").reasoning, "so 42");
        assert!(parser.in_reasoning());
        let d = parser.push("nk> 42");
        assert_eq!(
            d,
            ReasoningDelta {
                reasoning: String::new(),
                content: "42".into()
            }
        );
        assert!(!parser.in_reasoning());
    }

    #[test]
    fn a_partial_tag_that_never_completes_is_text() {
        assert_eq!(stream(true, &["a </thi", "x"]), owned("a </thix", ""));
        assert_eq!(stream(true, &["a </thi"]), owned("a </thi", ""));
        assert_eq!(stream(false, &["<thi"]), owned("", "<thi"));
    }

    #[test]
    fn prompt_that_opened_the_block_starts_in_reasoning() {
        let mut parser = ReasoningParser::new(true);
        assert!(parser.in_reasoning());
        assert_eq!(parser.push("\nfirst I add").reasoning, "first I add");
        assert_eq!(
            stream(true, &["\nfirst I add\n", "</think>\n\n42"]),
            owned("first I add", "42")
        );
    }

    #[test]
    fn unclosed_think_block_streams_as_reasoning() {
        assert_eq!(
            stream(false, &["<think>still ", "thinking  "]),
            owned("still thinking", "")
        );
        assert_eq!(stream(true, &["still thinking"]), owned("still thinking", ""));
    }

    #[test]
    fn text_without_tags_is_all_content() {
        assert_eq!(stream(false, &[" 4", "2 ", "\n"]), owned("", "42"));
    }

    #[test]
    fn lone_closing_tag_at_the_start_ends_an_empty_reasoning() {
        assert_eq!(stream(false, &["</think>", " 42"]), owned("", "42"));
    }

    #[test]
    fn tags_after_the_answer_started_are_answer_text() {
        assert_eq!(
            stream(false, &["<think>a</think> b <think>c</think>"]),
            owned("a", "b <think>c</think>")
        );
        assert_eq!(
            stream(false, &["hi <think>a</think> b"]),
            owned("", "hi <think>a</think> b")
        );
    }

    #[test]
    fn whitespace_is_sent_only_once_something_follows_it() {
        let mut parser = ReasoningParser::new(false);
        assert_eq!(
            parser.push("  a  "),
            ReasoningDelta {
                reasoning: String::new(),
                content: "a".into()
            }
        );
        assert_eq!(parser.push(" \n").content, "");
        assert_eq!(parser.push("b").content, "   \nb");
        assert_eq!(parser.push(" ").content, "");
        assert!(parser.finish().is_empty());
    }

    #[test]
    fn non_ascii_text_and_tags_stream_intact() {
        assert_eq!(
            stream(false, &["<think>東京", "は</th", "ink>答え🙂"]),
            owned("東京は", "答え🙂")
        );
    }

    #[test]
    fn prompt_opens_reasoning_when_its_last_tag_is_an_open_one() {
        assert!(prompt_opens_reasoning("<｜User｜>hi<｜Assistant｜><think>\n"));
        assert!(!prompt_opens_reasoning("User: hi\nAssistant:"));
        assert!(!prompt_opens_reasoning("<think>a</think>b"));
        assert!(prompt_opens_reasoning("<think>a</think>b<think>"));
    }
}
