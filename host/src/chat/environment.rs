//! The Jinja environment Hugging Face renders chat templates in
//! (`transformers.utils.chat_template_utils._cached_compile_jinja_template`), rebuilt on
//! minijinja: `trim_blocks` and `lstrip_blocks`, loop controls, the globals
//! `raise_exception` and `strftime_now`, the `tojson` filter with Python's `json.dumps`
//! output, Python string/dict methods, values printed as Python prints them, and
//! `{% generation %}` blocks (assistant-mask tracking) rendered as plain blocks.

use std::borrow::Cow;
use std::fmt::Write as _;

use minijinja::value::{Kwargs, Rest};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Value};

use crate::chat::python_format::{JsonOptions, python_str, to_json};

/// Fuel a render may use by default: about as many instructions, or 64 bytes of text
/// each (so at most ~256 MB). Real conversations use a few thousand.
pub const DEFAULT_FUEL: u64 = 4_000_000;

/// What `raise_exception(message)` attaches to the template error, so the caller can
/// tell the template's own refusal from a fault of the template.
#[derive(Debug)]
pub struct RaisedException(pub String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

/// An environment configured like transformers' `ImmutableSandboxedEnvironment`.
pub fn hf_environment(fuel: Option<u64>) -> Environment<'static> {
    let mut env = Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build();
    // The default delimiters always build; keep minijinja's defaults if that changes.
    if let Ok(syntax) = syntax {
        env.set_syntax(syntax);
    }
    // Templates are named after their files; a `.json` or `.html` name must not switch
    // on escaping.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(fuel);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(|out, state, value| match python_str(value) {
        Some(text) => out.write_str(&text).map_err(Error::from),
        None => minijinja::escape_formatter(out, state, value),
    });
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_filter("tojson", tojson);
    env
}

fn raise_exception(message: Rest<Value>) -> Result<Value, Error> {
    let message = message
        .iter()
        .map(|v| python_str(v).unwrap_or_else(|| v.to_string()))
        .collect::<Vec<_>>();
    let message = message.join(" ");
    Err(Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(RaisedException(message)))
}

/// `datetime.now().strftime(format)`: the local time, formatted with strftime's
/// specifiers (as chrono implements them).
fn strftime_now(format: String) -> Result<String, Error> {
    let items = chrono::format::StrftimeItems::new(&format);
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format_with_items(items)).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format string {format:?}"),
        )
    })?;
    Ok(out)
}

fn tojson(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<String, Error> {
    to_json(value, &JsonOptions::from_args(&args, &kwargs)?)
}

/// The template with `{% generation %}` / `{% endgeneration %}` (transformers' assistant
/// mask extension, which renders its body unchanged) turned into a block that always
/// renders, keeping the tags' whitespace control so trimming is unchanged.
pub fn without_generation_tags(source: &str) -> Cow<'_, str> {
    if !source.contains("generation") {
        return Cow::Borrowed(source);
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        match generation_tag(tag) {
            Some((len, replacement)) => {
                out.push_str(&replacement);
                rest = &tag[len..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// If `tag` starts with `{%[-+] generation|endgeneration [-+]%}`, its length and the
/// equivalent `if true` / `endif` tag.
fn generation_tag(tag: &str) -> Option<(usize, String)> {
    let inner = &tag[2..];
    let open_mod = inner.chars().next().filter(|c| *c == '-' || *c == '+');
    let inner = &inner[open_mod.map_or(0, char::len_utf8)..];
    let trimmed = inner.trim_start();
    let (word, replacement) = if let Some(r) = trimmed.strip_prefix("endgeneration") {
        (r, "endif")
    } else if let Some(r) = trimmed.strip_prefix("generation") {
        (r, "if true")
    } else {
        return None;
    };
    let after = word.trim_start();
    if after.len() == word.len() && !after.starts_with(['-', '+', '%']) {
        return None; // `generation_x`: another name
    }
    let close_mod = after.chars().next().filter(|c| *c == '-' || *c == '+');
    let after = &after[close_mod.map_or(0, char::len_utf8)..];
    let after = after.strip_prefix("%}")?;
    let len = tag.len() - after.len();
    let m = |c: Option<char>| c.map(String::from).unwrap_or_default();
    Some((len, format!("{{%{} {replacement} {}%}}", m(open_mod), m(close_mod))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_plain_blocks_with_their_whitespace_control() {
        assert_eq!(
            without_generation_tags("{%- generation %}x{% endgeneration -%}{% generations %}"),
            "{%- if true %}x{% endif -%}{% generations %}"
        );
        assert_eq!(without_generation_tags("{{ a }}"), "{{ a }}");
    }
}
