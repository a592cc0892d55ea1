//! One completion as it is assembled from engine events: its raw text, its split into
//! reasoning and answer (when the request asked for the split), its tokens with their
//! log-probs, and how many of them were generated while the model was reasoning. The
//! stream and the one-shot response both build on it.

use r1_core::reasoning::ReasoningParser;

use crate::engine::FinishReason;
use crate::engine::service::TokenLogprob;

/// What one engine delta adds to a completion, split for the response.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Piece {
    /// New chain-of-thought text (empty without the split).
    pub reasoning: String,
    /// New answer text (all new text without the split).
    pub content: String,
    /// The tokens behind it.
    pub tokens: Vec<TokenLogprob>,
}

/// One completion being assembled.
pub struct ChoiceAssembly {
    parser: Option<ReasoningParser>,
    /// The text as generated.
    pub text: String,
    pub reasoning: String,
    pub content: String,
    pub tokens: Vec<TokenLogprob>,
    pub reasoning_tokens: usize,
    pub completion_tokens: usize,
    pub finish_reason: Option<FinishReason>,
    /// The version of the weights that drew it (see `POST /v1/weights`).
    pub weight_version: u64,
}

impl ChoiceAssembly {
    /// `split`: separate reasoning from answer; `starts_in_reasoning`: the prompt already
    /// opened the `<think>` block.
    pub fn new(split: bool, starts_in_reasoning: bool) -> Self {
        ChoiceAssembly {
            parser: split.then(|| ReasoningParser::new(starts_in_reasoning)),
            text: String::new(),
            reasoning: String::new(),
            content: String::new(),
            tokens: Vec::new(),
            reasoning_tokens: 0,
            completion_tokens: 0,
            finish_reason: None,
            weight_version: 0,
        }
    }

    /// Adds an engine delta and returns what it adds to the response.
    pub fn push(&mut self, text: &str, tokens: Vec<TokenLogprob>) -> Piece {
        self.text.push_str(text);
        let piece = match &mut self.parser {
            Some(parser) => {
                let was_reasoning = parser.in_reasoning();
                let d = parser.push(text);
                // A delta's tokens count as reasoning when they were generated inside the
                // think block: before it closed, or when they produced reasoning text.
                if was_reasoning || !d.reasoning.is_empty() {
                    self.reasoning_tokens += tokens.len();
                }
                Piece {
                    reasoning: d.reasoning,
                    content: d.content,
                    tokens,
                }
            }
            None => Piece {
                reasoning: String::new(),
                content: text.to_string(),
                tokens,
            },
        };
        self.reasoning.push_str(&piece.reasoning);
        self.content.push_str(&piece.content);
        self.tokens.extend(piece.tokens.iter().cloned());
        piece
    }

    /// Ends the completion; returns text the parser was still holding back.
    pub fn finish(&mut self, reason: FinishReason, completion_tokens: usize) -> Piece {
        self.finish_reason = Some(reason);
        self.completion_tokens = completion_tokens;
        let piece = match &mut self.parser {
            Some(parser) => {
                let d = parser.finish();
                Piece {
                    reasoning: d.reasoning,
                    content: d.content,
                    tokens: Vec::new(),
                }
            }
            None => Piece::default(),
        };
        self.reasoning.push_str(&piece.reasoning);
        self.content.push_str(&piece.content);
        // The EOS token (counted by the engine, never shown) ends reasoning only if the
        // block was still open; it is counted with the reasoning then.
        self.reasoning_tokens = self.reasoning_tokens.min(completion_tokens);
        piece
    }

    /// Mean log-prob of the generated tokens (best-of-N without a reward); `-inf` for none.
    pub fn mean_logprob(&self) -> f32 {
        if self.tokens.is_empty() {
            return f32::NEG_INFINITY;
        }
        self.tokens.iter().map(|t| t.logprob).sum::<f32>() / self.tokens.len() as f32
    }
}

/// OpenAI's `finish_reason`.
pub fn finish_reason_str(reason: Option<FinishReason>) -> Option<&'static str> {
    reason.map(|r| match r {
        FinishReason::Eos | FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    })
}
