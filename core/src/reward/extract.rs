//! Finding the final answer in a completion without allocating: the last `\boxed{…}` (nested
//! braces balanced), the last `<answer>…</answer>`, the text after "the answer is" /
//! "answer:", or the last number. Every function returns a slice of its input; every index
//! it slices at comes from an ASCII match, so arbitrary UTF-8 is safe.

/// How many candidate `\boxed`/`\frac` occurrences a search examines from the end: each
/// try may scan to the end of the text, so this keeps degenerate completions (thousands of
/// unclosed boxes) linear.
pub const MAX_CANDIDATES: usize = 64;

/// Where an answer was found, in the order [`extract_answer`] tries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerSource {
    /// `\boxed{…}` or `\fbox{…}` (the last one).
    Boxed,
    /// `<answer>…</answer>` (the last one).
    AnswerTag,
    /// The rest of the line after the last "answer is" or "answer:" (any case).
    Phrase,
    /// The last number in the text.
    LastNumber,
}

/// An extracted answer: a slice of the text it was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extracted<'a> {
    /// The answer text, a slice of the searched text.
    pub text: &'a str,
    /// Which extractor found it.
    pub source: AnswerSource,
}

/// Which extractors [`extract_answer`] may use (all by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Extractors {
    /// Try the last `\boxed{…}` / `\fbox{…}`.
    pub boxed: bool,
    /// Try the last `<answer>…</answer>`.
    pub answer_tag: bool,
    /// Try the rest of the line after "answer is" / "answer:".
    pub phrase: bool,
    /// Fall back to the last number in the text.
    pub last_number: bool,
}

impl Default for Extractors {
    fn default() -> Self {
        Extractors {
            boxed: true,
            answer_tag: true,
            phrase: true,
            last_number: true,
        }
    }
}

/// The final answer of `text`: the last boxed expression, else the last answer tag (its own
/// boxed expression if it holds one), else the "answer is" phrase, else the last number.
pub fn extract_answer(text: &str, use_: Extractors) -> Option<Extracted<'_>> {
    let found = |text, source| Some(Extracted { text, source });
    if use_.boxed
        && let Some(b) = last_boxed(text)
    {
        return found(b, AnswerSource::Boxed);
    }
    if use_.answer_tag
        && let Some(a) = last_answer_tag(text)
    {
        return found(a, AnswerSource::AnswerTag);
    }
    if use_.phrase
        && let Some(p) = answer_phrase(text)
    {
        return found(p, AnswerSource::Phrase);
    }
    if use_.last_number
        && let Some(n) = last_number(text)
    {
        return found(n, AnswerSource::LastNumber);
    }
    None
}

/// The content of the last balanced `\boxed{…}` / `\fbox{…}` (or `\boxed 5`), trimmed.
pub fn last_boxed(text: &str) -> Option<&str> {
    let mut best: Option<(usize, &str)> = None;
    for cmd in ["\\boxed", "\\fbox"] {
        let mut end = text.len();
        let mut tries = 0;
        while let Some(at) = text[..end].rfind(cmd) {
            end = at;
            tries += 1;
            if tries > MAX_CANDIDATES {
                break;
            }
            if best.is_some_and(|(b, _)| b > at) {
                break;
            }
            let rest = &text[at + cmd.len()..];
            if rest.as_bytes().first().is_some_and(|c| c.is_ascii_alphabetic()) {
                continue; // `\boxedsomething` is another command
            }
            let after = rest.trim_start();
            let content = if after.starts_with('{') {
                braced(after)
            } else if rest.starts_with(' ') {
                // `\boxed 5`: one token.
                let tok_end = after
                    .find(|c: char| c.is_whitespace() || c == '$')
                    .unwrap_or(after.len());
                Some(&after[..tok_end])
            } else {
                None
            };
            if let Some(c) = content {
                best = Some((at, c.trim()));
                break;
            }
        }
    }
    best.map(|(_, c)| c)
}

/// The content of the `{…}` group `s` starts with, braces balanced (escaped `\{`, `\}`
/// skipped); `None` when it never closes.
pub fn braced(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    if b.first() != Some(&b'{') {
        return None;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1, // skip the escaped byte (an ASCII brace, or a char's first byte)
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&s[1..i]);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The content of the last `<answer>…</answer>`, trimmed.
pub fn last_answer_tag(text: &str) -> Option<&str> {
    let close = text.rfind("</answer>")?;
    let open = text[..close].rfind("<answer>")?;
    Some(text[open + "<answer>".len()..close].trim())
}

/// The answer stated after the last "answer is" / "answer:" (ASCII case-insensitive): the rest
/// of that line, or the next non-empty line when the phrase ends its line; markdown bold,
/// colons and a final period trimmed.
pub fn answer_phrase(text: &str) -> Option<&str> {
    let at = ["answer is", "answer:"]
        .iter()
        .filter_map(|p| rfind_ascii_ci(text, p).map(|i| i + p.len()))
        .max()?;
    let mut rest = &text[at..];
    loop {
        let line_end = rest.find('\n').unwrap_or(rest.len());
        let line = trim_decoration(&rest[..line_end]);
        if !line.is_empty() {
            return Some(line);
        }
        if line_end == rest.len() {
            return None;
        }
        rest = &rest[line_end + 1..];
    }
}

fn trim_decoration(s: &str) -> &str {
    let s = s.trim_start_matches(|c: char| c.is_whitespace() || c == ':' || c == '*');
    s.trim_end_matches(|c: char| c.is_whitespace() || c == '.' || c == '*')
}

/// Last position of `pat` (ASCII) in `text`, ignoring ASCII case.
pub(crate) fn rfind_ascii_ci(text: &str, pat: &str) -> Option<usize> {
    let (t, p) = (text.as_bytes(), pat.as_bytes());
    if p.is_empty() || t.len() < p.len() {
        return None;
    }
    (0..=t.len() - p.len())
        .rev()
        .find(|&i| t[i..i + p.len()].eq_ignore_ascii_case(p))
}

/// The last number in `text`: optional sign, digits with valid thousands separators, an
/// optional decimal part, a `/denominator`, a trailing `%`; or the whole `\frac{…}{…}` the
/// last digit belongs to.
pub fn last_number(text: &str) -> Option<&str> {
    let last = text.as_bytes().iter().rposition(u8::is_ascii_digit)?;
    Some(number_at(text, last))
}

/// The first number in `text`, read as [`last_number`] reads the last.
pub fn first_number(text: &str) -> Option<&str> {
    let first = text.as_bytes().iter().position(u8::is_ascii_digit)?;
    Some(number_at(text, first))
}

/// The number the ASCII digit at byte `i` belongs to.
fn number_at(text: &str, i: usize) -> &str {
    if let Some(span) = enclosing_frac(text, i) {
        return span;
    }
    let b = text.as_bytes();
    let (mut start, mut end) = number_around(b, i);
    // `a/b`, from either side of the slash.
    if start >= 2 && b[start - 1] == b'/' && b[start - 2].is_ascii_digit() {
        start = number_around(b, start - 2).0;
    } else if end + 1 < b.len() && b[end] == b'/' && b[end + 1].is_ascii_digit() {
        end = number_around(b, end + 1).1;
    }
    if end < b.len() && b[end] == b'%' {
        end += 1;
    }
    // A sign belongs to the number unless it is a binary minus (`x-5`, `3-2`).
    let prev = text[..start].chars().next_back();
    let before_sign = text[..start].chars().rev().nth(1);
    if matches!(prev, Some('-' | '+' | '−'))
        && !before_sign.is_some_and(|c| c.is_alphanumeric() || c == ')' || c == '}')
    {
        start -= prev.map_or(0, char::len_utf8);
    }
    &text[start..end]
}

/// The digits, decimal point and thousands groups around the digit at `i`.
fn number_around(b: &[u8], i: usize) -> (usize, usize) {
    let mut start = i;
    while start > 0 {
        let c = b[start - 1];
        let thousands = c == b',' && is_thousands_group(b, start);
        let point = c == b'.' && start >= 2 && b[start - 2].is_ascii_digit();
        if c.is_ascii_digit() || thousands || point {
            start -= 1;
        } else {
            break;
        }
    }
    let mut end = i + 1;
    while end < b.len() {
        let c = b[end];
        let thousands = c == b',' && is_thousands_group(b, end + 1);
        let point = c == b'.' && b.get(end + 1).is_some_and(u8::is_ascii_digit);
        if c.is_ascii_digit() || thousands || point {
            end += 1;
        } else {
            break;
        }
    }
    (start, end)
}

/// Exactly three digits start at `i` and no digit follows them.
fn is_thousands_group(b: &[u8], i: usize) -> bool {
    i + 3 <= b.len() && b[i..i + 3].iter().all(u8::is_ascii_digit) && !b.get(i + 3).is_some_and(u8::is_ascii_digit)
}

/// The `\frac{…}{…}` (or `\dfrac`, `\tfrac`, with a leading `-`) whose braces hold byte `i`.
fn enclosing_frac(text: &str, i: usize) -> Option<&str> {
    let b = text.as_bytes();
    let mut search_end = i;
    let mut tries = 0;
    while let Some(at) = text[..search_end].rfind("frac") {
        search_end = at;
        tries += 1;
        if tries > MAX_CANDIDATES {
            return None;
        }
        let cmd_start = if at >= 1 && b[at - 1] == b'\\' {
            at - 1
        } else if at >= 2 && b[at - 2] == b'\\' && matches!(b[at - 1], b'd' | b't') {
            at - 2
        } else {
            continue;
        };
        let a = text[at + 4..].trim_start();
        let Some(num) = braced(a) else { continue };
        let rest = a[num.len() + 2..].trim_start();
        let Some(den) = braced(rest) else { continue };
        let span_end = text.len() - rest.len() + den.len() + 2;
        if i < span_end {
            let start = if cmd_start > 0 && b[cmd_start - 1] == b'-' {
                cmd_start - 1
            } else {
                cmd_start
            };
            return Some(&text[start..span_end]);
        }
    }
    None
}
