//! Export: a model (config, tokenizer, f32 weights) written as a Hugging Face directory
//! that `transformers` `from_pretrained` — and r1's own loader — read back exactly:
//! `config.json`, `model.safetensors`, `generation_config.json`, and `tokenizer.json` +
//! `tokenizer_config.json` (chat template included) when the model has a tokenizer.

use std::path::{Path, PathBuf};

use r1_core::model::ModelConfig;
use serde_json::{Value, json};

use crate::io::atomic::write_bytes_atomically;
use crate::io::error::IoError;
use crate::io::hf::{CONFIG_FILE, WEIGHTS_FILE, save_hf_model};
use crate::io::tensors::Weights;
use crate::io::tokenizer::{TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, Tokenizer};

pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";

/// The chat template of models that came without one: R1's plain `User:` / `Assistant:`
/// turns, earlier answers stripped of their reasoning (as DeepSeek-R1's template does),
/// and a generation prompt that opens `<think>`.
pub const R1_CHAT_TEMPLATE: &str = "{%- if messages and messages[0]['role'] == 'system' -%}\
{{ messages[0]['content'] + '\\n' }}\
{%- endif -%}\
{%- for message in messages -%}\
{%- if message['role'] == 'user' -%}\
{{ 'User: ' + message['content'] + '\\n' }}\
{%- elif message['role'] == 'assistant' -%}\
{%- set content = message['content'] -%}\
{%- if '</think>' in content -%}{%- set content = content.split('</think>')[-1] -%}{%- endif -%}\
{{ 'Assistant: ' + content + eos_token + '\\n' }}\
{%- endif -%}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{ 'Assistant: <think>' }}{%- endif -%}";

/// Writes `dir` (created if needed) as a Hugging Face model directory and returns the
/// files written. `weights` must be exactly the weights of `config`; a tied model gets no
/// `lm_head.weight`. The BOS/EOS/padding ids missing from `config` are taken from the
/// tokenizer (EOS, which r1 also pads with). Every file is written to a temporary file
/// and renamed; a model without a tokenizer removes a stale `tokenizer.json` from `dir`
/// so the directory cannot pair these weights with another model's vocabulary.
pub fn export_hf_dir(
    dir: &Path,
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    weights: &Weights,
) -> Result<Vec<PathBuf>, IoError> {
    if dir.exists() && !dir.is_dir() {
        return Err(IoError::file(
            dir,
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists and is not a directory"),
        ));
    }
    let config = with_special_ids(config, tokenizer);
    save_hf_model(dir, &config, weights)?;
    let mut written = vec![dir.join(WEIGHTS_FILE), dir.join(CONFIG_FILE)];
    written.push(write_json(
        &dir.join(GENERATION_CONFIG_FILE),
        &generation_config(&config),
    )?);
    match tokenizer_json(tokenizer)? {
        Some(text) => {
            let path = dir.join(TOKENIZER_FILE);
            write_bytes_atomically(&path, text.as_bytes())?;
            written.push(path);
            let tc = tokenizer_config(&config, tokenizer);
            written.push(write_json(&dir.join(TOKENIZER_CONFIG_FILE), &tc)?);
        }
        None => {
            for stale in [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE] {
                let path = dir.join(stale);
                if path.is_file() {
                    std::fs::remove_file(&path).map_err(|e| IoError::file(&path, e))?;
                }
            }
        }
    }
    Ok(written)
}

/// `config` with `eos_token_id` (and `bos_token_id`, `pad_token_id`, which r1 never
/// inserts) filled from the tokenizer's EOS where unset.
fn with_special_ids(config: &ModelConfig, tokenizer: &Tokenizer) -> ModelConfig {
    let mut config = config.clone();
    if let Ok(t) = tokenizer.require_text() {
        let eos = t.eos_id();
        config.eos_token_id.get_or_insert(eos);
        config.bos_token_id.get_or_insert(eos);
        config.pad_token_id.get_or_insert(eos);
    }
    config
}

fn generation_config(config: &ModelConfig) -> Value {
    json!({
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    })
}

/// The `tokenizer.json` text of `tokenizer`, or `None` for a model without one.
fn tokenizer_json(tokenizer: &Tokenizer) -> Result<Option<String>, IoError> {
    Ok(match tokenizer {
        Tokenizer::ByteLevel(b) => Some(b.tokenizer_json()?),
        Tokenizer::HuggingFace(h) => Some(h.json().to_string()),
        Tokenizer::Missing(_) => None,
    })
}

/// `tokenizer_config.json`: the generic fast tokenizer over `tokenizer.json` (so ids are
/// exactly the file's), the special tokens by text, and the chat template — the model's
/// own when it came with one, else [`R1_CHAT_TEMPLATE`].
fn tokenizer_config(config: &ModelConfig, tokenizer: &Tokenizer) -> Value {
    let text_of = |id: Option<u32>| -> Value {
        let token = id.and_then(|id| match tokenizer {
            Tokenizer::ByteLevel(b) => b.decode(&[id]).ok(),
            Tokenizer::HuggingFace(h) => h.id_to_token(id),
            Tokenizer::Missing(_) => None,
        });
        token.map_or(Value::Null, Value::from)
    };
    let chat_template = match tokenizer {
        Tokenizer::HuggingFace(h) => h.chat_template().cloned(),
        _ => None,
    }
    .unwrap_or_else(|| Value::from(R1_CHAT_TEMPLATE));
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": text_of(config.bos_token_id),
        "eos_token": text_of(Some(tokenizer.eos_id())),
        "pad_token": text_of(config.pad_token_id),
        "unk_token": null,
        "add_bos_token": false,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": config.max_position_embeddings,
        "chat_template": chat_template,
    })
}

/// Writes pretty JSON atomically and returns the path.
fn write_json(path: &Path, value: &Value) -> Result<PathBuf, IoError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| IoError::Field {
        file: path.display().to_string(),
        field: "(root)".into(),
        detail: format!("does not serialize: {e}"),
    })?;
    write_bytes_atomically(path, text.as_bytes())?;
    Ok(path.to_path_buf())
}
