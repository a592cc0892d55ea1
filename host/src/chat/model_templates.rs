//! Finding a model directory's chat templates and special-token texts where transformers
//! looks: `chat_template.jinja` and `additional_chat_templates/<name>.jinja` (which take
//! priority), else `tokenizer_config.json`'s `chat_template`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::chat::ChatError;
use crate::io::gguf;
use crate::io::tokenizer::TOKENIZER_CONFIG_FILE;

pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";
pub const CHAT_TEMPLATE_DIR: &str = "additional_chat_templates";
/// The template used when none is named.
pub const DEFAULT: &str = "default";
/// The template used when tools are passed, if the model has one.
pub const TOOL_USE: &str = "tool_use";

/// One named template and where it came from.
pub struct NamedTemplate {
    pub name: String,
    /// Where it came from, for messages: `DIR/tokenizer_config.json (chat_template)`.
    pub label: String,
    pub source: String,
}

/// A model directory's templates and special tokens.
pub struct ModelTemplates {
    pub templates: Vec<NamedTemplate>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

/// The templates of the model at `path`: a directory's files, or a GGUF file's
/// `tokenizer.chat_template`; `None` for a checkpoint file or a model without any.
pub fn read(path: &Path) -> Result<Option<ModelTemplates>, ChatError> {
    let meta = std::fs::metadata(path).map_err(|source| ChatError::File {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return gguf_templates(path);
    }
    let config_path = path.join(TOKENIZER_CONFIG_FILE);
    let config = read_json(&config_path)?;
    let mut templates = template_files(path)?;
    if templates.is_empty()
        && let Some(config) = &config
    {
        templates = config_templates(&config_path, config)?;
    }
    if templates.is_empty() {
        return Ok(None);
    }
    let token = |key: &str| config.as_ref().and_then(|c| token_text(c.get(key)?));
    Ok(Some(ModelTemplates {
        bos_token: token("bos_token"),
        eos_token: token("eos_token"),
        templates,
    }))
}

/// A GGUF file's `tokenizer.chat_template` (as the `default` template) with its BOS and
/// EOS token texts; `None` for a file that is not GGUF or has no template.
fn gguf_templates(path: &Path) -> Result<Option<ModelTemplates>, ChatError> {
    if !gguf::is_gguf_file(path) {
        return Ok(None);
    }
    let bad = |e: crate::io::IoError| ChatError::BadConfig {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let file = gguf::GgufFile::open(path).map_err(bad)?;
    let Some(source) = gguf::gguf_chat_template(&file.header, &file.label).map_err(bad)? else {
        return Ok(None);
    };
    Ok(Some(ModelTemplates {
        templates: vec![NamedTemplate {
            name: DEFAULT.into(),
            label: format!("{} (tokenizer.chat_template)", path.display()),
            source,
        }],
        bos_token: gguf::token_text(&file.header, "tokenizer.ggml.bos_token_id"),
        eos_token: gguf::token_text(&file.header, "tokenizer.ggml.eos_token_id"),
    }))
}

/// The templates of a `tokenizer_config.json` given as bytes (`path` only names it in
/// messages); `None` when it has no `chat_template`.
pub fn from_tokenizer_config(bytes: &[u8], path: &Path) -> Result<Option<ModelTemplates>, ChatError> {
    let config = parse_json(bytes, path)?;
    let templates = config_templates(path, &config)?;
    if templates.is_empty() {
        return Ok(None);
    }
    Ok(Some(ModelTemplates {
        bos_token: config.get("bos_token").and_then(token_text),
        eos_token: config.get("eos_token").and_then(token_text),
        templates,
    }))
}

/// `tokenizer_config.json`, or `None` when there is none.
fn read_json(path: &Path) -> Result<Option<Value>, ChatError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ChatError::File {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    parse_json(&bytes, path).map(Some)
}

fn parse_json(bytes: &[u8], path: &Path) -> Result<Value, ChatError> {
    serde_json::from_slice(bytes).map_err(|e| ChatError::BadConfig {
        path: path.to_path_buf(),
        detail: format!("not valid JSON: {e}"),
    })
}

/// `chat_template.jinja` as `default`, and each `additional_chat_templates/NAME.jinja`.
fn template_files(dir: &Path) -> Result<Vec<NamedTemplate>, ChatError> {
    let mut found = Vec::new();
    let main = dir.join(CHAT_TEMPLATE_FILE);
    if main.is_file() {
        found.push(file_template(DEFAULT, main)?);
    }
    let extra_dir = dir.join(CHAT_TEMPLATE_DIR);
    if extra_dir.is_dir() {
        let entries = std::fs::read_dir(&extra_dir).map_err(|source| ChatError::File {
            path: extra_dir.clone(),
            source,
        })?;
        let mut extra = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|source| ChatError::File {
                    path: extra_dir.clone(),
                    source,
                })?
                .path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".jinja"))
                .map(str::to_string);
            if let Some(name) = name.filter(|_| path.is_file()) {
                extra.push((name, path));
            }
        }
        extra.sort();
        for (name, path) in extra {
            found.push(file_template(&name, path)?);
        }
    }
    Ok(found)
}

fn file_template(name: &str, path: PathBuf) -> Result<NamedTemplate, ChatError> {
    let source = std::fs::read_to_string(&path).map_err(|source| ChatError::File {
        path: path.clone(),
        source,
    })?;
    Ok(NamedTemplate {
        name: name.to_string(),
        label: path.display().to_string(),
        source,
    })
}

/// `chat_template` of `tokenizer_config.json`: a string, or a list of `{name, template}`.
fn config_templates(path: &Path, config: &Value) -> Result<Vec<NamedTemplate>, ChatError> {
    let bad = |detail: String| ChatError::BadConfig {
        path: path.to_path_buf(),
        detail,
    };
    let label = |name: Option<&str>| match name {
        None => format!("{} (chat_template)", path.display()),
        Some(n) => format!("{} (chat_template `{n}`)", path.display()),
    };
    match config.get("chat_template") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(source)) => Ok(vec![NamedTemplate {
            name: DEFAULT.into(),
            label: label(None),
            source: source.clone(),
        }]),
        Some(Value::Array(entries)) => entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let name = entry.get("name").and_then(Value::as_str);
                let source = entry.get("template").and_then(Value::as_str);
                match (name, source) {
                    (Some(name), Some(source)) => Ok(NamedTemplate {
                        name: name.to_string(),
                        label: label(Some(name)),
                        source: source.to_string(),
                    }),
                    _ => Err(bad(format!(
                        "chat_template[{i}] must be an object with string `name` and `template`"
                    ))),
                }
            })
            .collect(),
        Some(_) => Err(bad(
            "chat_template must be a string or a list of {name, template}".into()
        )),
    }
}

/// A special token's text: a string, or an added-token object with `content`.
fn token_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}
