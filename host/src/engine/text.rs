//! Turning a growing list of tokens into streamed text: each step yields only whole UTF-8
//! characters (a character split over tokens waits for its last byte), finds stop strings
//! anywhere in the new text (also across token boundaries) and holds back the text that
//! could be the start of one, so no stop string, nor a piece of one, is ever sent.

use super::Detokenizer;

/// Incremental detokenizer + stop-string matcher for one completion.
#[derive(Debug, Default)]
pub struct TextStream {
    /// Tokens decoded so far.
    tokens: Vec<u32>,
    /// Tokens before `prefix` are final text; `prefix..read` is re-decoded as context so a
    /// tokenizer that merges spaces across tokens decodes the same as the whole.
    prefix: usize,
    read: usize,
    /// All text produced so far, and how much of it was sent.
    text: String,
    sent: usize,
    /// Set once a stop string was found: the text is final up to there.
    stopped: bool,
}

/// The text a step adds, and whether a stop string ended the completion.
#[derive(Debug, Default, PartialEq)]
pub struct TextDelta {
    pub text: String,
    pub stopped: bool,
}

impl TextStream {
    pub fn new() -> Self {
        TextStream::default()
    }

    /// All text so far (stop strings included): what `decode(tokens)` gives.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Adds `token`; returns the text that can be sent now.
    pub fn push(&mut self, tok: &dyn Detokenizer, token: u32, stop: &[String]) -> TextDelta {
        self.tokens.push(token);
        if self.stopped {
            return TextDelta::default();
        }
        let before = tok.decode(&self.tokens[self.prefix..self.read]);
        let now = tok.decode(&self.tokens[self.prefix..]);
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') && now.is_char_boundary(before.len()) {
            self.text.push_str(&now[before.len()..]);
            self.prefix = self.read;
            self.read = self.tokens.len();
        }
        self.release(stop, false)
    }

    /// Flushes what was held back as a possible stop-string start (the completion ended
    /// for another reason), and any partial character as U+FFFD.
    pub fn finish(&mut self, tok: &dyn Detokenizer, stop: &[String]) -> TextDelta {
        if self.stopped {
            return TextDelta::default();
        }
        if self.read < self.tokens.len() {
            let before = tok.decode(&self.tokens[self.prefix..self.read]);
            let now = tok.decode(&self.tokens[self.prefix..]);
            if let Some(tail) = now.get(before.len()..) {
                self.text.push_str(tail);
            }
            self.read = self.tokens.len();
        }
        self.release(stop, true)
    }

    /// Sends what is safe: up to a stop string (and then stops), else all but the longest
    /// suffix that begins some stop string (all of it at the end).
    fn release(&mut self, stop: &[String], at_end: bool) -> TextDelta {
        // A stop string found now lies at least partly in unsent text.
        let longest = stop.iter().map(String::len).max().unwrap_or(0);
        let mut from = self.sent.saturating_sub(longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let hit = stop
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min();
        let end = match hit {
            Some(i) => {
                self.stopped = true;
                i.max(self.sent)
            }
            None if at_end => self.text.len(),
            None => self.text.len() - held_back(&self.text[self.sent..], stop),
        };
        let text = self.text[self.sent..end].to_string();
        self.sent = end;
        TextDelta {
            text,
            stopped: self.stopped,
        }
    }
}

/// Length of the longest suffix of `unsent` that is a proper prefix of some stop string,
/// starting on a character boundary.
fn held_back(unsent: &str, stop: &[String]) -> usize {
    let mut best = 0;
    for s in stop {
        let max = s.len().saturating_sub(1).min(unsent.len());
        for len in (best + 1..=max).rev() {
            let start = unsent.len() - len;
            if unsent.is_char_boundary(start) && s.starts_with(&unsent[start..]) {
                best = len;
                break;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each token is one byte of UTF-8 (so characters split over tokens).
    struct Bytes;
    impl Detokenizer for Bytes {
        fn decode(&self, tokens: &[u32]) -> String {
            let bytes: Vec<u8> = tokens.iter().map(|&t| t as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        fn eos_id(&self) -> Option<u32> {
            None
        }
    }

    fn stream(text: &str, stop: &[&str]) -> (Vec<String>, bool) {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let mut s = TextStream::new();
        let mut out = Vec::new();
        let mut stopped = false;
        for b in text.bytes() {
            let d = s.push(&Bytes, b as u32, &stop);
            out.push(d.text);
            if d.stopped {
                stopped = true;
                break;
            }
        }
        if !stopped {
            out.push(s.finish(&Bytes, &stop).text);
        }
        (out, stopped)
    }

    #[test]
    fn characters_split_over_tokens_wait_for_their_last_byte() {
        let (out, _) = stream("aé€", &[]);
        assert_eq!(out.concat(), "aé€");
        // Only whole characters were ever sent.
        assert!(out.iter().all(|d| !d.contains('\u{FFFD}')));
        assert_eq!(out.iter().filter(|d| !d.is_empty()).count(), 3);
    }

    #[test]
    fn stop_strings_are_cut_and_never_sent_in_part() {
        let (out, stopped) = stream("the answer</ans>ignored", &["</ans>"]);
        assert!(stopped);
        assert_eq!(out.concat(), "the answer");
        // A false start is released once it cannot be a stop string.
        let (out, stopped) = stream("a</b c</an", &["</ans>"]);
        assert!(!stopped);
        assert_eq!(out.concat(), "a</b c</an");
        // Multi-byte stop strings and stop strings spanning characters.
        let (out, stopped) = stream("x→y", &["→"]);
        assert!(stopped);
        assert_eq!(out.concat(), "x");
    }

    #[test]
    fn the_earliest_of_several_stop_strings_wins() {
        let (out, stopped) = stream("abcdef", &["def", "cd"]);
        assert!(stopped);
        assert_eq!(out.concat(), "ab");
    }

    proptest::proptest! {
        #[test]
        fn streamed_text_is_the_text_up_to_the_first_stop(text in "[ab→c]{0,24}", stop in "[ab→]{1,3}") {
            let (out, stopped) = stream(&text, &[stop.as_str()]);
            let want = match text.find(stop.as_str()) {
                Some(i) => &text[..i],
                None => &text[..],
            };
            proptest::prop_assert_eq!(out.concat(), want);
            proptest::prop_assert_eq!(stopped, text.contains(stop.as_str()));
        }
    }
}
