//! Chat templates: a model's Jinja chat template rendered exactly as Hugging Face's
//! `apply_chat_template` renders it (same environment, globals, `tojson` and message
//! preparation), so a served or generated prompt is token for token what transformers
//! would feed the model. Models without a template get r1's own ([`default_template`]).

mod environment;
mod error;
mod messages;
mod model_templates;
mod python_format;

use std::path::Path;
use std::sync::Arc;

use minijinja::{Environment, ErrorKind};
use r1_core::model::ModelConfig;
use serde_json::{Map, Value};

pub use environment::DEFAULT_FUEL;
pub use error::ChatError;

use crate::io::{R1_CHAT_TEMPLATE, Tokenizer};
use environment::{RaisedException, hf_environment, without_generation_tags};

/// A compiled chat template with the special-token texts it is rendered with. Cheap to
/// clone; one value serves any number of threads.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    /// The template rendered by default (its name in `env`, which error messages show).
    default: String,
    /// Hugging Face's `tool_use` template, rendered instead when tools are passed.
    tool_use: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    fuel: Option<u64>,
}

/// What a render is asked for besides the messages.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    /// End with the header of an assistant turn, for the model to write it.
    pub add_generation_prompt: bool,
    /// Tool (function) schemas, OpenAI style: the template's `tools` (`none` when absent).
    /// A model's `tool_use` template, if it has one, renders instead of its default.
    pub tools: Option<Value>,
    /// Further template variables, as `apply_chat_template`'s extra keyword arguments
    /// (`enable_thinking`, `date_string`, …).
    pub extra: Map<String, Value>,
}

/// Variables `render` sets itself.
const RESERVED: [&str; 4] = ["messages", "tools", "documents", "add_generation_prompt"];

impl ChatTemplate {
    /// The chat template of the model at `path`, the way transformers loads it: in a
    /// directory, `chat_template.jinja` (and `additional_chat_templates/*.jinja`) if
    /// present, else `tokenizer_config.json`'s `chat_template` — a string, or a list of
    /// `{"name", "template"}` of which `name` (default: `"default"`, and `"tool_use"` when
    /// tools are given) is used. BOS/EOS texts come from `tokenizer_config.json` (a string
    /// or `{"content": …}`). An r1 checkpoint (a file) or a directory without any
    /// template: `Ok(None)`.
    pub fn from_model_path(path: &Path, name: Option<&str>) -> Result<Option<ChatTemplate>, ChatError> {
        match model_templates::read(path)? {
            Some(found) => ChatTemplate::from_found(found, path, name).map(Some),
            None => Ok(None),
        }
    }

    /// The chat template of a `tokenizer_config.json` given as bytes, picked as
    /// [`ChatTemplate::from_model_path`] picks it (`path` only names the file in
    /// messages); `Ok(None)` when the file has no `chat_template`.
    pub fn from_tokenizer_config(
        bytes: &[u8],
        path: &Path,
        name: Option<&str>,
    ) -> Result<Option<ChatTemplate>, ChatError> {
        match model_templates::from_tokenizer_config(bytes, path)? {
            Some(found) => ChatTemplate::from_found(found, path, name).map(Some),
            None => Ok(None),
        }
    }

    /// The template named `name` (default: `default`, with `tool_use` beside it) of a
    /// model's templates, compiled.
    fn from_found(
        found: model_templates::ModelTemplates,
        path: &Path,
        name: Option<&str>,
    ) -> Result<ChatTemplate, ChatError> {
        let model = path.display().to_string();
        let no_template = |name: &str| ChatError::NoTemplate {
            model: model.clone(),
            name: name.to_string(),
            available: found.templates.iter().map(|t| t.name.clone()).collect(),
        };
        let pick = |name: &str| found.templates.iter().find(|t| t.name == name);
        let (default, tool_use) = match name {
            Some(name) => (pick(name).ok_or_else(|| no_template(name))?, None),
            None => (
                pick(model_templates::DEFAULT).ok_or_else(|| no_template(model_templates::DEFAULT))?,
                pick(model_templates::TOOL_USE),
            ),
        };
        let mut env = hf_environment(Some(DEFAULT_FUEL));
        add_template(&mut env, &default.label, &default.source)?;
        if let Some(t) = tool_use {
            add_template(&mut env, &t.label, &t.source)?;
        }
        Ok(ChatTemplate {
            env: Arc::new(env),
            default: default.label.clone(),
            tool_use: tool_use.map(|t| t.label.clone()),
            bos_token: found.bos_token,
            eos_token: found.eos_token,
            fuel: Some(DEFAULT_FUEL),
        })
    }

    /// A template from its Jinja source, rendered with these special-token texts.
    pub fn from_source(
        source: &str,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<ChatTemplate, ChatError> {
        ChatTemplate::from_named_source("chat_template", source, bos_token, eos_token)
    }

    /// [`ChatTemplate::from_source`] with the name error messages call the template by.
    pub fn from_named_source(
        name: &str,
        source: &str,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<ChatTemplate, ChatError> {
        let mut env = hf_environment(Some(DEFAULT_FUEL));
        add_template(&mut env, name, source)?;
        Ok(ChatTemplate {
            env: Arc::new(env),
            default: name.to_string(),
            tool_use: None,
            bos_token,
            eos_token,
            fuel: Some(DEFAULT_FUEL),
        })
    }

    /// The same template with another render budget (`None`: unbounded — only for
    /// templates you trust).
    pub fn with_fuel(mut self, fuel: Option<u64>) -> ChatTemplate {
        Arc::make_mut(&mut self.env).set_fuel(fuel);
        self.fuel = fuel;
        self
    }

    /// The text the template sees as `bos_token`, if the model names one.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    /// The text the template sees as `eos_token`, if the model names one.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// The prompt for `messages` (OpenAI-style message objects: `role`, `content` as a
    /// string or a list of `{"type": "text", "text"}` parts, and whatever else the
    /// template reads — `reasoning_content`, `tool_calls`, `name`, `tool_call_id` — passed
    /// through).
    pub fn render(&self, messages: &[Value], opts: &RenderOptions) -> Result<String, ChatError> {
        if messages.is_empty() {
            return Err(ChatError::EmptyConversation);
        }
        let name = match (&opts.tools, &self.tool_use) {
            (Some(_), Some(tool_use)) => tool_use,
            _ => &self.default,
        };
        let template = self.env.get_template(name).map_err(|e| self.error(e))?;
        let context = minijinja::Value::from(minijinja::value::Serde(self.context(messages, opts)?));
        template.render(context).map_err(|e| self.error(e))
    }

    /// `{bos_token, eos_token, **extra, messages, tools, documents, add_generation_prompt}`.
    fn context(&self, messages: &[Value], opts: &RenderOptions) -> Result<Map<String, Value>, ChatError> {
        if let Some(key) = RESERVED.iter().find(|k| opts.extra.contains_key(**k)) {
            return Err(ChatError::ReservedArgument(key.to_string()));
        }
        let mut context = Map::new();
        let tokens = [("bos_token", &self.bos_token), ("eos_token", &self.eos_token)];
        for (key, token) in tokens {
            if let Some(token) = token {
                context.insert(key.into(), Value::String(token.clone()));
            }
        }
        context.extend(opts.extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        context.insert("messages".into(), Value::Array(messages::template_messages(messages)?));
        context.insert("tools".into(), opts.tools.clone().unwrap_or(Value::Null));
        context.insert("documents".into(), Value::Null);
        context.insert("add_generation_prompt".into(), Value::Bool(opts.add_generation_prompt));
        Ok(context)
    }

    fn error(&self, e: minijinja::Error) -> ChatError {
        render_error(e, self.fuel.unwrap_or(0), &self.default)
    }
}

/// The template to chat with the model at `path`: its own ([`ChatTemplate::from_model_path`]),
/// else r1's [`default_template`] with the BOS/EOS texts of the model's tokenizer.
pub fn template_for_model(path: &Path, tokenizer: &Tokenizer, config: &ModelConfig) -> Result<ChatTemplate, ChatError> {
    if let Some(template) = ChatTemplate::from_model_path(path, None)? {
        return Ok(template);
    }
    let text = |id: Option<u32>| id.and_then(|id| tokenizer.decode(&[id]).ok()).filter(|t| !t.is_empty());
    default_template(text(config.bos_token_id), text(Some(tokenizer.eos_id())))
}

/// r1's template for models that come without one ([`R1_CHAT_TEMPLATE`]: `User:` /
/// `Assistant:` turns, a generation prompt that opens `<think>`).
pub fn default_template(bos: Option<String>, eos: Option<String>) -> Result<ChatTemplate, ChatError> {
    ChatTemplate::from_named_source("r1 default chat template", R1_CHAT_TEMPLATE, bos, eos)
}

fn add_template(env: &mut Environment<'static>, name: &str, source: &str) -> Result<(), ChatError> {
    let source = without_generation_tags(source).into_owned();
    env.add_template_owned(name.to_string(), source)
        .map_err(|e| render_error(e, 0, name))
}

/// A minijinja error as a [`ChatError`]: `raise_exception`'s message as it is, otherwise
/// the template's name and line with what went wrong.
fn render_error(e: minijinja::Error, fuel: u64, fallback_name: &str) -> ChatError {
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(raised) = s.downcast_ref::<RaisedException>() {
            return ChatError::Raised(raised.0.clone());
        }
        source = s.source();
    }
    let template = e.name().unwrap_or(fallback_name).to_string();
    let line = e.line();
    let detail = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    match e.kind() {
        ErrorKind::SyntaxError => ChatError::Syntax {
            template,
            line,
            detail: e.detail().unwrap_or("unexpected input").to_string(),
        },
        ErrorKind::OutOfFuel => ChatError::OutOfFuel { template, line, fuel },
        _ => ChatError::Render { template, line, detail },
    }
}

#[cfg(test)]
mod tests;
