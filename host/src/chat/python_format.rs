//! Values written the way Python writes them, so templates render what transformers
//! renders: `json.dumps` (the `tojson` filter transformers installs, with its
//! `ensure_ascii=False` default and `indent` / `separators` / `sort_keys` options) and
//! `str()` of printed values (`None`, `True`, `1.0`, `['a', 1]`).

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Value};

/// `json.dumps` options, as transformers' `tojson(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)` takes them.
#[derive(Clone, Debug, Default)]
pub struct JsonOptions {
    ensure_ascii: bool,
    /// The text of one indentation level; `None` writes everything on one line.
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    sort_keys: bool,
}

impl JsonOptions {
    /// Reads the filter's arguments, positional (in Python's order) or by keyword.
    pub fn from_args(args: &[Value], kwargs: &Kwargs) -> Result<JsonOptions, Error> {
        const NAMES: [&str; 4] = ["ensure_ascii", "indent", "separators", "sort_keys"];
        if args.len() > NAMES.len() {
            return Err(Error::new(
                ErrorKind::TooManyArguments,
                "tojson takes at most 4 arguments",
            ));
        }
        let mut values: [Option<Value>; 4] = Default::default();
        for (slot, name) in values.iter_mut().zip(NAMES) {
            *slot = kwargs.get::<Option<Value>>(name)?;
        }
        for (i, arg) in args.iter().enumerate() {
            if values[i].is_some() {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson got multiple values for argument `{}`", NAMES[i]),
                ));
            }
            values[i] = Some(arg.clone());
        }
        kwargs.assert_all_used()?;
        let [ensure_ascii, indent, separators, sort_keys] = values;
        let indent = match indent.filter(|v| !v.is_none()) {
            None => None,
            Some(v) if v.kind() == ValueKind::String => v.as_str().map(str::to_string),
            // Python: ' ' * indent (a bool counts as 0 or 1, a negative count as 0).
            Some(v) if v.kind() == ValueKind::Bool => Some(" ".repeat(usize::from(v.is_true()))),
            Some(v) => match v.as_i64() {
                Some(n) => Some(" ".repeat(usize::try_from(n.clamp(0, 1024)).unwrap_or(0))),
                None => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: indent must be an integer or a string",
                    ));
                }
            },
        };
        let (item_separator, key_separator) = match separators.filter(|v| !v.is_none()) {
            Some(v) => {
                let parts: Vec<String> = v
                    .try_iter()?
                    .map(|p| p.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .filter(|p: &Vec<String>| p.len() == 2)
                    .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings"))?;
                (parts[0].clone(), parts[1].clone())
            }
            None if indent.is_some() => (",".into(), ": ".into()),
            None => (", ".into(), ": ".into()),
        };
        Ok(JsonOptions {
            ensure_ascii: ensure_ascii.is_some_and(|v| v.is_true()),
            indent,
            item_separator,
            key_separator,
            sort_keys: sort_keys.is_some_and(|v| v.is_true()),
        })
    }
}

/// `json.dumps(value, **options)`.
pub fn to_json(value: &Value, options: &JsonOptions) -> Result<String, Error> {
    let mut out = String::new();
    write_json(value, options, 0, &mut out)?;
    Ok(out)
}

fn write_json(value: &Value, o: &JsonOptions, depth: usize, out: &mut String) -> Result<(), Error> {
    if depth > 256 {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson: value nested too deeply",
        ));
    }
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_json_number(value, out),
        ValueKind::String => write_json_str(value.as_str().unwrap_or_default(), o.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, o, depth, '[', ']', items.len(), |i, out| {
                write_json(&items[i], o, depth + 1, out)
            })?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((json_key(&key)?, item));
            }
            if o.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(out, o, depth, '{', '}', entries.len(), |i, out| {
                write_json_str(&entries[i].0, o.ensure_ascii, out);
                out.push_str(&o.key_separator);
                write_json(&entries[i].1, o, depth + 1, out)
            })?;
        }
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a value of type {kind} is not JSON serializable"),
            ));
        }
    }
    Ok(())
}

/// Writes `[a, b]` / `{..}`, or one item per line when indenting (Python's layout: an
/// empty container stays `[]`).
fn write_container(
    out: &mut String,
    o: &JsonOptions,
    depth: usize,
    open: char,
    close: char,
    len: usize,
    mut item: impl FnMut(usize, &mut String) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if len > 0 {
        let newline = |out: &mut String, level: usize| {
            if let Some(indent) = &o.indent {
                out.push('\n');
                for _ in 0..level {
                    out.push_str(indent);
                }
            }
        };
        for i in 0..len {
            if i > 0 {
                out.push_str(&o.item_separator);
            }
            newline(out, depth + 1);
            item(i, out)?;
        }
        newline(out, depth);
    }
    out.push(close);
    Ok(())
}

/// A map key as `json.dumps` writes it: strings as they are, numbers, booleans and None
/// as their JSON text; anything else is Python's TypeError.
fn json_key(key: &Value) -> Result<String, Error> {
    Ok(match key.kind() {
        ValueKind::String => key.as_str().unwrap_or_default().to_string(),
        ValueKind::None => "null".into(),
        ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).into(),
        ValueKind::Number => {
            let mut s = String::new();
            write_json_number(key, &mut s);
            s
        }
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: keys must be str, int, float, bool or None, not {kind}"),
            ));
        }
    })
}

fn write_json_number(value: &Value, out: &mut String) {
    match float_of(value) {
        Some(f) if f.is_nan() => out.push_str("NaN"),
        Some(f) if f.is_infinite() => out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" }),
        Some(f) => out.push_str(&python_float_repr(f)),
        None => out.push_str(&value.to_string()),
    }
}

/// The value as an `f64` when it is a float (integers are written as integers).
fn float_of(value: &Value) -> Option<f64> {
    if value.is_number() && !value.is_integer() {
        f64::try_from(value.clone()).ok()
    } else {
        None
    }
}

/// A JSON string literal as Python's `json` module escapes it.
fn write_json_str(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ensure_ascii && !(' '..='~').contains(&c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: the shortest digits that round-trip, positional notation for
/// exponents -4..16 (always with a fractional part), scientific (`1e+16`) outside.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return (if f > 0.0 { "inf" } else { "-inf" }).into();
    }
    // `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let body = if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() > int_len {
                format!("{}.{}", &digits[..int_len], &digits[int_len..])
            } else {
                format!("{}{}.0", digits, "0".repeat(int_len - digits.len()))
            }
        } else {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        };
        format!("{sign}{body}")
    } else {
        let mantissa = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exp.abs())
    }
}

/// Python's `str(value)`, which Jinja2 prints: `None`, `True`/`False`, floats as `repr`,
/// lists and dicts as their `repr`. `None` is returned for values Python has no
/// counterpart for (functions, namespaces…), which the caller prints its own way.
pub fn python_str(value: &Value) -> Option<String> {
    match value.kind() {
        ValueKind::Undefined => Some(String::new()),
        ValueKind::String => value.as_str().map(str::to_string),
        ValueKind::None | ValueKind::Bool | ValueKind::Number | ValueKind::Seq | ValueKind::Map => {
            python_repr(value, 0)
        }
        _ => None,
    }
}

/// Python's `repr(value)` for the JSON-like values chat templates hold.
fn python_repr(value: &Value, depth: usize) -> Option<String> {
    if depth > 64 {
        return None;
    }
    Some(match value.kind() {
        ValueKind::None | ValueKind::Undefined => "None".into(),
        ValueKind::Bool => (if value.is_true() { "True" } else { "False" }).into(),
        ValueKind::Number => match float_of(value) {
            Some(f) => python_float_repr(f),
            None => value.to_string(),
        },
        ValueKind::String => python_str_repr(value.as_str().unwrap_or_default()),
        ValueKind::Seq => {
            let items: Option<Vec<String>> = value.try_iter().ok()?.map(|v| python_repr(&v, depth + 1)).collect();
            format!("[{}]", items?.join(", "))
        }
        ValueKind::Map => {
            let mut items = Vec::new();
            for key in value.try_iter().ok()? {
                let item = value.get_item(&key).ok()?;
                items.push(format!(
                    "{}: {}",
                    python_repr(&key, depth + 1)?,
                    python_repr(&item, depth + 1)?
                ));
            }
            format!("{{{}}}", items.join(", "))
        }
        _ => return None,
    })
}

/// Python's `repr(str)`: single quotes unless the text has a single quote and no double
/// one; backslash escapes for the quote, backslash and non-printable characters (control
/// characters and separators other than the space; Python's full `isprintable` also
/// escapes format characters, which this leaves as they are).
fn python_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                let n = c as u32;
                if n < 0x100 {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n < 0x10000 {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_repr() {
        for (f, s) in [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (26.1, "26.1"),
            (123456789.0, "123456789.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5e-7, "-2.5e-07"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ] {
            assert_eq!(python_float_repr(f), s, "{f}");
        }
    }

    #[test]
    fn json_matches_python_json_dumps() {
        let v = Value::from(minijinja::value::Serde(serde_json::json!({
            "b": [1, 2.0, "é\n\"q\"", null, true],
            "a": {},
            "c": []
        })));
        let default = JsonOptions::from_args(&[], &Kwargs::from_iter(std::iter::empty::<(&str, Value)>())).unwrap();
        assert_eq!(
            to_json(&v, &default).unwrap(),
            r#"{"b": [1, 2.0, "é\n\"q\"", null, true], "a": {}, "c": []}"#
        );
        let indented = JsonOptions::from_args(&[], &Kwargs::from_iter([("indent", Value::from(2))])).unwrap();
        assert_eq!(
            to_json(&v, &indented).unwrap(),
            "{\n  \"b\": [\n    1,\n    2.0,\n    \"é\\n\\\"q\\\"\",\n    null,\n    true\n  ],\n  \"a\": {},\n  \"c\": []\n}"
        );
        let ascii_sorted = JsonOptions::from_args(
            &[Value::from(true)],
            &Kwargs::from_iter([
                ("sort_keys", Value::from(true)),
                ("separators", Value::from(vec![",", ":"])),
            ]),
        )
        .unwrap();
        assert_eq!(
            to_json(&v, &ascii_sorted).unwrap(),
            r#"{"a":{},"b":[1,2.0,"\u00e9\n\"q\"",null,true],"c":[]}"#
        );
    }

    #[test]
    fn printed_values_read_as_python_str() {
        let v = Value::from(minijinja::value::Serde(
            serde_json::json!({"k": ["it's", 1.0, null, false]}),
        ));
        assert_eq!(python_str(&v).unwrap(), r#"{'k': ["it's", 1.0, None, False]}"#);
        assert_eq!(python_str(&Value::from(())).unwrap(), "None");
        assert_eq!(python_str(&Value::from(true)).unwrap(), "True");
        assert_eq!(python_str(&Value::from("plain")).unwrap(), "plain");
    }
}
