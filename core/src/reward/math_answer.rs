//! Reading a final answer as a value and comparing two answers, the way math graders do:
//! integers, decimals, thousands separators (`1,234`, `1{,}234`, `1\,234`), fractions (`3/4`,
//! `\frac{3}{4}`, `\dfrac34`), percentages, negative numbers (`-`, `−`), scientific notation,
//! simple LaTeX wrappers (`$…$`, `\(…\)`, `\text{}`, `\mathrm{}`, `\left`/`\right`, `^\circ`),
//! an `x =` prefix and trailing units; anything else is compared as normalised text.

use alloc::string::String;

use super::extract::{braced, last_boxed};

/// A numeric answer; `percent` when it was written with `%` (then `25%` also equals `0.25`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Number {
    /// The number as written (`25` for `25%`).
    pub value: f64,
    /// Written with a `%` sign.
    pub percent: bool,
}

/// An answer read for comparison.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// A number: integer, decimal, fraction, percentage or scientific notation.
    Number(Number),
    /// Normalised text: LaTeX wrappers and spacing removed, whitespace dropped, ASCII lowercase.
    Text(String),
}

/// How close two numbers must be: `|a − b| ≤ abs + rel · max(|a|, |b|)`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tolerance {
    /// Relative tolerance (default 1e-6).
    pub rel: f64,
    /// Absolute tolerance (default 1e-9).
    pub abs: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance { rel: 1e-6, abs: 1e-9 }
    }
}

impl Tolerance {
    /// Whether `a` and `b` are equal within this tolerance.
    pub fn close(self, a: f64, b: f64) -> bool {
        libm::fabs(a - b) <= self.abs + self.rel * libm::fmax(libm::fabs(a), libm::fabs(b))
    }
}

/// Nesting limit of `\text{…}`-style wrappers we unwrap (deeper content is dropped).
const MAX_DEPTH: usize = 16;

/// Longest text read as an answer (bytes): anything longer is prose, not an answer, and
/// reading it is never worth more than linear time.
pub const MAX_ANSWER_BYTES: usize = 1024;

/// Rewrites `s` into `out` without LaTeX presentation: math delimiters, spacing commands,
/// `\left`/`\right`, degree marks, currency signs and LaTeX thousands separators removed;
/// `\text{…}`-like wrappers unwrapped; `\dfrac`/`\tfrac` → `\frac`; Unicode minus → `-`;
/// full-width digits → ASCII. Returns whether a `%` was seen.
pub fn normalize_latex(s: &str, out: &mut String) -> bool {
    let mut percent = false;
    normalize_into(s, out, &mut percent, 0);
    let t = out.trim_end_matches(|c: char| c.is_whitespace() || c == '.').len();
    out.truncate(t);
    let lead = out.len() - out.trim_start().len();
    out.drain(..lead);
    percent
}

fn normalize_into(s: &str, out: &mut String, percent: &mut bool, depth: usize) {
    let mut i = 0;
    while let Some(c) = s[i..].chars().next() {
        let rest = &s[i..];
        match c {
            '\\' => {
                let name_len = rest[1..].bytes().take_while(u8::is_ascii_alphabetic).count();
                if name_len == 0 {
                    let Some(n) = rest[1..].chars().next() else { return };
                    match n {
                        '%' => *percent = true,
                        '$' | '!' | ',' | ';' | ':' | ' ' | '(' | ')' | '[' | ']' => {}
                        _ => {
                            out.push('\\');
                            out.push(n);
                        }
                    }
                    i += 1 + n.len_utf8();
                    continue;
                }
                let name = &rest[1..1 + name_len];
                let after = i + 1 + name_len;
                match name {
                    "left" | "right" | "displaystyle" | "textstyle" | "quad" | "qquad" | "big" | "Big" | "bigl"
                    | "bigr" | "Bigl" | "Bigr" | "circ" | "degree" => {}
                    "dfrac" | "tfrac" => out.push_str("\\frac"),
                    "text" | "textbf" | "textit" | "textrm" | "texttt" | "textnormal" | "mathrm" | "mathbf"
                    | "mathit" | "mathsf" | "mathtt" | "mbox" | "operatorname" | "boxed" | "fbox" | "emph" => {
                        let a = s[after..].trim_start();
                        if let Some(inner) = braced(a) {
                            if depth < MAX_DEPTH {
                                out.push(' ');
                                normalize_into(inner, out, percent, depth + 1);
                                out.push(' ');
                            }
                            i = s.len() - a.len() + inner.len() + 2;
                            continue;
                        }
                    }
                    _ => out.push_str(&rest[..1 + name_len]),
                }
                i = after;
                continue;
            }
            '^' if rest.starts_with("^\\circ") => {
                i += "^\\circ".len();
                continue;
            }
            '^' if rest.starts_with("^{\\circ}") => {
                i += "^{\\circ}".len();
                continue;
            }
            '{' if rest.starts_with("{,}") => {
                i += 3;
                continue;
            }
            '%' | '％' => *percent = true,
            '°' | '$' | '€' | '£' | '¥' => {}
            '−' | '–' => out.push('-'),
            '~' => out.push(' '),
            '０'..='９' => out.push(char::from(b'0' + (c as u32 - '０' as u32) as u8)),
            _ => out.push(c),
        }
        i += c.len_utf8();
    }
}

/// The answer inside a dataset's reference: its last `\boxed{…}` (MATH solutions), else what
/// follows the last `####` (GSM8K), else the whole text, trimmed.
pub fn reference_answer(reference: &str) -> &str {
    if let Some(b) = last_boxed(reference) {
        return b;
    }
    match reference.rfind("####") {
        Some(at) => reference[at + 4..].trim(),
        None => reference.trim(),
    }
}

/// Reads `s` as a number (see the module docs for the forms accepted), or `None` (also for
/// texts over [`MAX_ANSWER_BYTES`]).
pub fn parse_number(s: &str) -> Option<Number> {
    if s.len() > MAX_ANSWER_BYTES {
        return None;
    }
    let mut buf = String::with_capacity(s.len());
    let percent = normalize_latex(s, &mut buf);
    parse_normalized(&buf).map(|value| Number { value, percent })
}

/// Reads `s` as a number, else as normalised text; `None` when nothing is left or `s` is
/// over [`MAX_ANSWER_BYTES`].
pub fn parse_answer(s: &str) -> Option<Answer> {
    if s.len() > MAX_ANSWER_BYTES {
        return None;
    }
    let mut buf = String::with_capacity(s.len());
    let percent = normalize_latex(s, &mut buf);
    if let Some(value) = parse_normalized(&buf) {
        return Some(Answer::Number(Number { value, percent }));
    }
    let text = canonical_text(&buf);
    if text.is_empty() {
        None
    } else {
        Some(Answer::Text(text))
    }
}

/// Whether two answers are the same: numbers within `tol` (a percentage also matches its
/// fraction, `25% = 0.25`, and its bare number, `25% = 25`), texts equal.
pub fn answers_match(a: &Answer, b: &Answer, tol: Tolerance) -> bool {
    match (a, b) {
        (Answer::Number(x), Answer::Number(y)) => numbers_match(*x, *y, tol),
        (Answer::Text(x), Answer::Text(y)) => x == y,
        _ => false,
    }
}

/// Numeric equality with percent equivalence, see [`answers_match`].
pub fn numbers_match(a: Number, b: Number, tol: Tolerance) -> bool {
    tol.close(a.value, b.value)
        || (a.percent && tol.close(a.value / 100.0, b.value))
        || (b.percent && tol.close(a.value, b.value / 100.0))
}

/// Whitespace dropped, ASCII lowercased, `\sqrt3` → `\sqrt{3}`, an `x=` prefix and the
/// parentheses of a lone choice letter `(b)` removed.
fn canonical_text(normalized: &str) -> String {
    let rhs = strip_assignment(normalized);
    let mut out = String::with_capacity(rhs.len());
    let mut chars = rhs.chars().filter(|c| !c.is_whitespace()).peekable();
    while let Some(c) = chars.next() {
        out.push(c.to_ascii_lowercase());
        if out.ends_with("\\sqrt")
            && let Some(&n) = chars.peek()
            && n != '{'
            && n != '['
            && n.is_ascii_alphanumeric()
        {
            out.push('{');
            out.push(n.to_ascii_lowercase());
            out.push('}');
            chars.next();
        }
    }
    let trimmed = out.trim_end_matches('.');
    let inner = trimmed.trim_start_matches('(').trim_end_matches(')');
    if inner.chars().count() == 1 && inner.chars().all(|c| c.is_ascii_alphabetic()) {
        return String::from(inner);
    }
    String::from(trimmed)
}

/// `x = 5` → `5`: a short variable name before a single `=`.
fn strip_assignment(s: &str) -> &str {
    let Some(eq) = s.find('=') else { return s };
    if s[eq + 1..].contains('=') {
        return s;
    }
    let lhs = s[..eq].trim();
    let rhs = s[eq + 1..].trim();
    let is_var = !lhs.is_empty()
        && lhs.len() <= 8
        && lhs.as_bytes()[0].is_ascii_alphabetic()
        && lhs
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'{' | b'}' | b'\\'));
    if is_var && !rhs.is_empty() { rhs } else { s }
}

fn parse_normalized(s: &str) -> Option<f64> {
    let s = strip_assignment(s);
    let mut p = Parser {
        s,
        b: s.as_bytes(),
        i: 0,
    };
    let v = p.signed(0)?;
    let spaced = p.ws();
    let rest = &s[p.i..];
    // A trailing unit (`18 dollars`, `5 cm^2`, `60 km/h`) is allowed after a space.
    let unit = spaced
        && rest.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && rest
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b' ' | b'/' | b'^' | b'.'));
    if (rest.is_empty() || unit) && v.is_finite() {
        Some(v)
    } else {
        None
    }
}

/// A recursive-descent reader of the numeric forms, on ASCII bytes (anything else stops it).
struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Skips whitespace; whether there was any.
    fn ws(&mut self) -> bool {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
        self.i > start
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.b[self.i..].starts_with(s.as_bytes()) {
            self.i += s.len();
            true
        } else {
            false
        }
    }

    /// A command such as `\frac`, not followed by more letters.
    fn eat_cmd(&mut self, s: &str) -> bool {
        let end = self.i + s.len();
        if self.b[self.i..].starts_with(s.as_bytes()) && !self.b.get(end).is_some_and(u8::is_ascii_alphabetic) {
            self.i = end;
            true
        } else {
            false
        }
    }

    /// `[+-]* (\frac A B | decimal [/ decimal]) [\times 10^e]`.
    fn signed(&mut self, depth: usize) -> Option<f64> {
        let mut neg = false;
        loop {
            self.ws();
            if self.eat("-") {
                neg = !neg;
            } else if !self.eat("+") {
                break;
            }
        }
        let mut v = if self.eat_cmd("\\frac") {
            self.ws();
            let n = self.frac_part(depth)?;
            self.ws();
            let d = self.frac_part(depth)?;
            if d == 0.0 {
                return None;
            }
            n / d
        } else {
            let n = self.decimal()?;
            let save = self.i;
            self.ws();
            if self.eat("/") {
                self.ws();
                let d = self.decimal()?;
                if d == 0.0 {
                    return None;
                }
                n / d
            } else {
                self.i = save;
                n
            }
        };
        let save = self.i;
        self.ws();
        if self.eat_cmd("\\times") || self.eat_cmd("\\cdot") {
            self.ws();
            if self.eat("10^") {
                let braces = self.eat("{");
                let e = self.signed_int()?;
                if braces && !self.eat("}") {
                    return None;
                }
                v *= libm::pow(10.0, e as f64);
            } else {
                self.i = save;
            }
        } else {
            self.i = save;
        }
        Some(if neg { -v } else { v })
    }

    /// A `\frac` argument: `{expression}` or one digit (`\frac34`).
    fn frac_part(&mut self, depth: usize) -> Option<f64> {
        match self.peek()? {
            b'{' => {
                // `i` only ever moves over ASCII bytes, so it is a char boundary.
                let inner = braced(&self.s[self.i..])?;
                if depth >= MAX_DEPTH {
                    return None;
                }
                let mut p = Parser {
                    s: inner,
                    b: inner.as_bytes(),
                    i: 0,
                };
                let v = p.signed(depth + 1)?;
                p.ws();
                if p.i != p.b.len() {
                    return None;
                }
                self.i += inner.len() + 2;
                Some(v)
            }
            c if c.is_ascii_digit() => {
                self.i += 1;
                Some((c - b'0') as f64)
            }
            _ => None,
        }
    }

    fn signed_int(&mut self) -> Option<i32> {
        let neg = self.eat("-");
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) && self.i - start < 4 {
            self.i += 1;
        }
        if self.i == start || self.peek().is_some_and(|c| c.is_ascii_digit()) {
            return None;
        }
        let mut e: i32 = 0;
        for &c in &self.b[start..self.i] {
            e = e * 10 + (c - b'0') as i32;
        }
        Some(if neg { -e } else { e })
    }

    /// `1234`, `1,234,567`, `3.25`, `.5`, `1e-3`.
    fn decimal(&mut self) -> Option<f64> {
        let mut mantissa: f64 = 0.0;
        let mut digits = 0usize;
        let mut grouped = false;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                mantissa = mantissa * 10.0 + (c - b'0') as f64;
                digits += 1;
                self.i += 1;
            } else if c == b',' && (grouped || (1..=3).contains(&digits)) && self.thousands_group_at(self.i + 1) {
                // A separator: 1–3 leading digits, then groups of exactly three.
                grouped = true;
                self.i += 1;
            } else {
                break;
            }
        }
        let mut scale = 1.0;
        if self.peek() == Some(b'.') && self.b.get(self.i + 1).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
            while let Some(c) = self.peek().filter(u8::is_ascii_digit) {
                mantissa = mantissa * 10.0 + (c - b'0') as f64;
                scale *= 10.0;
                digits += 1;
                self.i += 1;
            }
        }
        if digits == 0 {
            self.i = start;
            return None;
        }
        let mut v = mantissa / scale;
        // Exponent: `e`/`E`, optional sign, digits (and not the start of a unit word).
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let save = self.i;
            self.i += 1;
            match self.signed_int() {
                Some(e) if !self.peek().is_some_and(|c| c.is_ascii_alphabetic()) => v *= libm::pow(10.0, e as f64),
                _ => self.i = save,
            }
        }
        Some(v)
    }

    /// Exactly three digits at `i`, then no digit.
    fn thousands_group_at(&self, i: usize) -> bool {
        i + 3 <= self.b.len()
            && self.b[i..i + 3].iter().all(u8::is_ascii_digit)
            && !self.b.get(i + 3).is_some_and(u8::is_ascii_digit)
    }
}
