//! `ChatError`: what can go wrong loading or rendering a chat template, with the template
//! (its file, or what it is) and line a user needs to find the fault.

use std::path::PathBuf;

#[derive(thiserror::Error, Debug)]
pub enum ChatError {
    /// The template does not parse.
    #[error("chat template {template}{}: syntax error: {detail}", at_line(*line))]
    Syntax {
        template: String,
        line: Option<usize>,
        detail: String,
    },
    /// The template called `raise_exception(message)`: it refuses these messages (for
    /// instance roles it does not support).
    #[error("{0}")]
    Raised(String),
    /// Rendering failed (an undefined attribute, a type error, an unknown filter…).
    #[error("chat template {template}{}: {detail}", at_line(*line))]
    Render {
        template: String,
        line: Option<usize>,
        detail: String,
    },
    /// Rendering used up its budget: the template loops too long or builds too much text.
    #[error(
        "chat template {template}{}: stopped after {fuel} units of fuel (about {fuel} instructions or {} MB of text); \
         the template loops too long or renders too much",
        at_line(*line),
        fuel / 16_384
    )]
    OutOfFuel {
        template: String,
        line: Option<usize>,
        fuel: u64,
    },
    /// A file of the model could not be read.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `tokenizer_config.json` (or another file) holds something that is not a template.
    #[error("{}: {detail}", path.display())]
    BadConfig { path: PathBuf, detail: String },
    /// The template asked for by name is not among the model's templates.
    #[error("{model}: no chat template named `{name}` (the model has: {})", available.join(", "))]
    NoTemplate {
        model: String,
        name: String,
        available: Vec<String>,
    },
    /// `render` was given no messages (transformers refuses them too).
    #[error("cannot apply a chat template to an empty conversation: give at least one message")]
    EmptyConversation,
    /// A message is not a JSON object, or its content parts are malformed.
    #[error("message {index}: {detail}")]
    BadMessage { index: usize, detail: String },
    /// `RenderOptions::extra` sets a variable that `render` sets itself.
    #[error("template argument `{0}` is set by the renderer and cannot be passed as an extra argument")]
    ReservedArgument(String),
}

fn at_line(line: Option<usize>) -> String {
    line.map_or_else(String::new, |l| format!(", line {l}"))
}
