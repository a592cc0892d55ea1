//! Writing systems by Unicode block, and word counts per script: the evidence the
//! language-consistency reward weighs. Scripts written without spaces (Han, kana) count one
//! word per character; the others one word per run of two or more letters (a lone letter is
//! usually a math variable). LaTeX commands (`\frac`) are not words.

use core::fmt;

/// A writing system, told apart by Unicode block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Script {
    /// Latin letters, ASCII and accented (English, French, Vietnamese…).
    Latin,
    /// Greek and Greek Extended.
    Greek,
    /// Cyrillic (Russian, Ukrainian, Bulgarian…).
    Cyrillic,
    /// Armenian.
    Armenian,
    /// Hebrew letters.
    Hebrew,
    /// Arabic letters (Arabic, Persian, Urdu…), presentation forms included.
    Arabic,
    /// Devanagari (Hindi, Marathi, Nepali…).
    Devanagari,
    /// Bengali–Assamese.
    Bengali,
    /// Thai.
    Thai,
    /// Georgian.
    Georgian,
    /// Korean hangul syllables and jamo.
    Hangul,
    /// Japanese hiragana; one word per character.
    Hiragana,
    /// Japanese katakana (half-width forms included); one word per character.
    Katakana,
    /// CJK ideographs (Chinese hanzi, Japanese kanji, Korean hanja); one word per character.
    Han,
}

impl Script {
    /// Every script, in declaration order (the tie-break order of [`ScriptCounts::dominant`]).
    pub const ALL: [Script; 14] = [
        Script::Latin,
        Script::Greek,
        Script::Cyrillic,
        Script::Armenian,
        Script::Hebrew,
        Script::Arabic,
        Script::Devanagari,
        Script::Bengali,
        Script::Thai,
        Script::Georgian,
        Script::Hangul,
        Script::Hiragana,
        Script::Katakana,
        Script::Han,
    ];

    /// Lower-case name, as configs write it (`"latin"`, `"han"`).
    pub fn name(self) -> &'static str {
        match self {
            Script::Latin => "latin",
            Script::Greek => "greek",
            Script::Cyrillic => "cyrillic",
            Script::Armenian => "armenian",
            Script::Hebrew => "hebrew",
            Script::Arabic => "arabic",
            Script::Devanagari => "devanagari",
            Script::Bengali => "bengali",
            Script::Thai => "thai",
            Script::Georgian => "georgian",
            Script::Hangul => "hangul",
            Script::Hiragana => "hiragana",
            Script::Katakana => "katakana",
            Script::Han => "han",
        }
    }

    /// Written without spaces between words: each character counts as a word.
    pub fn counts_characters(self) -> bool {
        matches!(self, Script::Han | Script::Hiragana | Script::Katakana)
    }

    /// The script of a letter, `None` for digits, punctuation, symbols, marks and spaces.
    #[inline]
    pub fn of(c: char) -> Option<Script> {
        if c.is_ascii() {
            return if c.is_ascii_alphabetic() {
                Some(Script::Latin)
            } else {
                None
            };
        }
        Self::of_non_ascii(c)
    }

    fn of_non_ascii(c: char) -> Option<Script> {
        let u = c as u32;
        let s = match u {
            0x41..=0x5A | 0x61..=0x7A => Script::Latin,
            0xC0..=0x24F if u != 0xD7 && u != 0xF7 => Script::Latin,
            0x1E00..=0x1EFF | 0xFF21..=0xFF3A | 0xFF41..=0xFF5A => Script::Latin,
            0x370..=0x3FF | 0x1F00..=0x1FFF => Script::Greek,
            0x400..=0x52F | 0x1C80..=0x1C8F | 0x2DE0..=0x2DFF | 0xA640..=0xA69F => Script::Cyrillic,
            0x531..=0x58F => Script::Armenian,
            0x5D0..=0x5FF => Script::Hebrew,
            0x620..=0x64A | 0x66E..=0x6D3 | 0x750..=0x77F | 0x8A0..=0x8FF | 0xFB50..=0xFDFF | 0xFE70..=0xFEFF => {
                Script::Arabic
            }
            0x900..=0x97F => Script::Devanagari,
            0x980..=0x9FF => Script::Bengali,
            0xE00..=0xE7F => Script::Thai,
            0x10A0..=0x10FF => Script::Georgian,
            0x1100..=0x11FF | 0x3130..=0x318F | 0xAC00..=0xD7AF => Script::Hangul,
            0x3040..=0x309F => Script::Hiragana,
            0x30A0..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F => Script::Katakana,
            0x3005 | 0x3007 | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3134F => Script::Han,
            _ => return None,
        };
        // Han and Hangul blocks hold only letters; elsewhere only letters are words (not ª, º,
        // modifier signs, the katakana middle dot).
        if matches!(s, Script::Han | Script::Hangul) || c.is_alphabetic() {
            Some(s)
        } else {
            None
        }
    }
}

impl fmt::Display for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of scripts (a language may use several: Japanese is Han + kana).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ScriptSet(u16);

impl ScriptSet {
    /// The set with no script.
    pub const EMPTY: ScriptSet = ScriptSet(0);

    /// The set of `scripts`.
    pub fn of(scripts: &[Script]) -> ScriptSet {
        ScriptSet(scripts.iter().fold(0, |m, s| m | 1 << *s as u8))
    }

    /// Whether `s` is in the set.
    pub fn contains(self, s: Script) -> bool {
        self.0 & (1 << s as u8) != 0
    }

    /// Whether the set holds no script.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Scripts in either set.
    pub fn union(self, other: ScriptSet) -> ScriptSet {
        ScriptSet(self.0 | other.0)
    }

    /// The scripts of a script name (`latin`, `cjk`, `han`…) or a language code (`en`, `zh`,
    /// `ja`, `ko`, `ru`, `zh-Hans`…; the part before `-`/`_` is used). Case-insensitive.
    pub fn from_name(name: &str) -> Option<ScriptSet> {
        use Script::*;
        let base = name.split(['-', '_']).next().unwrap_or(name);
        let eq = |s: &str| base.eq_ignore_ascii_case(s);
        if let Some(s) = Script::ALL.iter().find(|s| eq(s.name())) {
            return Some(ScriptSet::of(&[*s]));
        }
        let latin_langs = [
            "en", "fr", "de", "es", "it", "pt", "nl", "sv", "no", "nb", "da", "fi", "pl", "cs", "sk", "hu", "ro", "tr",
            "vi", "id", "ms", "tl", "ca", "hr", "sl", "et", "lv", "lt", "sq", "sw", "eu", "ga", "is", "af", "uz", "az",
        ];
        let set = if latin_langs.iter().any(|l| eq(l)) {
            ScriptSet::of(&[Latin])
        } else if ["ru", "uk", "be", "bg", "sr", "mk", "kk", "ky", "mn", "tg"]
            .iter()
            .any(|l| eq(l))
        {
            ScriptSet::of(&[Cyrillic])
        } else if eq("zh") || eq("chinese") {
            ScriptSet::of(&[Han])
        } else if eq("ja") || eq("japanese") {
            ScriptSet::of(&[Han, Hiragana, Katakana])
        } else if eq("ko") || eq("korean") {
            ScriptSet::of(&[Hangul, Han])
        } else if eq("cjk") {
            ScriptSet::of(&[Han, Hiragana, Katakana, Hangul])
        } else if eq("el") {
            ScriptSet::of(&[Greek])
        } else if eq("ar") || eq("fa") || eq("ur") {
            ScriptSet::of(&[Arabic])
        } else if eq("he") || eq("yi") {
            ScriptSet::of(&[Hebrew])
        } else if eq("hi") || eq("mr") || eq("ne") {
            ScriptSet::of(&[Devanagari])
        } else if eq("bn") {
            ScriptSet::of(&[Bengali])
        } else if eq("th") {
            ScriptSet::of(&[Thai])
        } else if eq("ka") {
            ScriptSet::of(&[Georgian])
        } else if eq("hy") {
            ScriptSet::of(&[Armenian])
        } else {
            return None;
        };
        Some(set)
    }
}

/// Words counted per script.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScriptCounts([u32; Script::ALL.len()]);

impl ScriptCounts {
    /// Counts the words of `text` by script (see the module docs). Markup tags such as
    /// `<think>` and `</answer>` are not words either.
    pub fn of(text: &str) -> ScriptCounts {
        let mut counts = ScriptCounts::default();
        let mut run: Option<(Script, u32)> = None;
        let close_run = |run: &mut Option<(Script, u32)>, counts: &mut ScriptCounts| {
            if let Some((s, n)) = run.take()
                && n >= 2
            {
                counts.add(s, 1);
            }
        };
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            // ASCII (most of any chain of thought) without decoding.
            let c = match bytes[i] {
                b if b.is_ascii() => b as char,
                _ => match text[i..].chars().next() {
                    Some(c) => c,
                    None => break,
                },
            };
            let skip = match c {
                '\\' => 1 + ascii_letters(&text[i + 1..]),
                '<' => tag_len(&text[i..]),
                _ => 0,
            };
            if skip > 0 {
                close_run(&mut run, &mut counts);
                i += skip;
                continue;
            }
            match Script::of(c) {
                Some(s) if s.counts_characters() => {
                    close_run(&mut run, &mut counts);
                    counts.add(s, 1);
                }
                Some(s) => match &mut run {
                    Some((r, n)) if *r == s => *n += 1,
                    _ => {
                        close_run(&mut run, &mut counts);
                        run = Some((s, 1));
                    }
                },
                // Combining marks continue the word they belong to (Devanagari vowel signs…).
                None if is_mark(c) && run.is_some() => {}
                None => close_run(&mut run, &mut counts),
            }
            i += c.len_utf8();
        }
        close_run(&mut run, &mut counts);
        counts
    }

    fn add(&mut self, s: Script, n: u32) {
        let slot = &mut self.0[s as usize];
        *slot = slot.saturating_add(n);
    }

    /// Words counted in script `s`.
    pub fn get(&self, s: Script) -> u32 {
        self.0[s as usize]
    }

    /// Words counted in all scripts together.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|&n| n as u64).sum()
    }

    /// Words in any script of `set`.
    pub fn in_set(&self, set: ScriptSet) -> u64 {
        Script::ALL
            .iter()
            .filter(|s| set.contains(**s))
            .map(|&s| self.get(s) as u64)
            .sum()
    }

    /// The script with the most words (the first in [`Script::ALL`] order on a tie).
    pub fn dominant(&self) -> Option<Script> {
        let best = Script::ALL
            .iter()
            .copied()
            .max_by_key(|&s| (self.get(s), core::cmp::Reverse(s as u8)))?;
        if self.get(best) == 0 { None } else { Some(best) }
    }
}

fn ascii_letters(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_alphabetic).count()
}

/// Length of a markup tag `<name>` or `</name>` at the start of `s`, else 0.
fn tag_len(s: &str) -> usize {
    let b = s.as_bytes();
    let start = if b.get(1) == Some(&b'/') { 2 } else { 1 };
    let n = ascii_letters(&s[start..]);
    if n > 0 && b.get(start + n) == Some(&b'>') {
        start + n + 1
    } else {
        0
    }
}

/// Combining marks of the scripts we count (general-category M, by block).
fn is_mark(c: char) -> bool {
    matches!(c as u32,
        0x300..=0x36F | 0x483..=0x489 | 0x591..=0x5C7 | 0x610..=0x61A | 0x64B..=0x65F | 0x670
        | 0x900..=0x903 | 0x93A..=0x94F | 0x951..=0x957 | 0x962..=0x963
        | 0x981..=0x983 | 0x9BC..=0x9D7 | 0xE31 | 0xE34..=0xE3A | 0xE47..=0xE4E
        | 0x3099..=0x309A)
}
