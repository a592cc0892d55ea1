//! The tokenizer a GGUF file carries in its metadata, rebuilt as a Hugging Face
//! `tokenizer.json` run by the `tokenizers` crate, and its chat template.
//!
//! `tokenizer.ggml.model = "gpt2"` is byte-level BPE: `tokenizer.ggml.tokens` (id order)
//! is the vocabulary, `.merges` the merges (`"a b"`), `.token_type` marks control tokens
//! (special added tokens) and user-defined ones (added, not special). llama.cpp does not
//! store the pre-tokenizer's regex, only a name (`tokenizer.ggml.pre`) for the one it
//! compiled in; the names of R1-Distill models map to the `tokenizer.json` pre-tokenizers
//! their Hugging Face tokenizers have:
//!
//! | `pre` | pre-tokenizer |
//! |---|---|
//! | `qwen2`, `deepseek-r1-qwen` | Qwen2's split regex (single digits), then byte-level |
//! | `llama-bpe` | Llama 3's split regex (digits in threes), then byte-level; merges ignored for whole-word vocabulary hits |
//! | `gpt-2` | GPT-2's byte-level pre-tokenizer with its own regex |
//!
//! No normalizer, as llama.cpp applies none for these (Qwen2's own `tokenizer.json` adds
//! NFC: text not already in NFC form, which is rare, can encode differently there). Any
//! other `pre`, or another tokenizer model, is an error naming it.

use serde_json::{Map, Value, json};

use crate::io::error::IoError;
use crate::io::gguf::GgufError;
use crate::io::gguf::read::{GgufHeader, MetaValue, gguf_err};
use crate::io::tokenizer::HfTokenizer;

/// Qwen2's `tokenizer.json` split regex (llama.cpp runs an equivalent without `(?i:`).
pub(crate) const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's `tokenizer.json` split regex.
pub(crate) const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.ggml.pre` names r1 reads.
pub const SUPPORTED_PRE: [&str; 4] = ["qwen2", "deepseek-r1-qwen", "llama-bpe", "gpt-2"];

/// llama.cpp's token types (`enum llama_token_type`).
pub(crate) const CONTROL: i64 = 3;
pub(crate) const USER_DEFINED: i64 = 4;

fn meta_err(file: &str, key: &str, detail: String) -> IoError {
    gguf_err(
        file,
        GgufError::Metadata {
            key: key.to_string(),
            detail,
        },
    )
}

/// The tokenizer of the metadata, with the chat template of `tokenizer.chat_template`;
/// `None` when the file has no `tokenizer.ggml.model`. EOS is
/// `tokenizer.ggml.eos_token_id`'s token (`eos_id`, already read into the config).
pub fn gguf_tokenizer(header: &GgufHeader, file: &str, eos_id: Option<u32>) -> Result<Option<HfTokenizer>, IoError> {
    let Some(json) = gguf_tokenizer_json(header, file)? else {
        return Ok(None);
    };
    let tokens = token_list(header, file)?;
    let eos_token = match eos_id {
        Some(id) => Some(tokens.get(id as usize).ok_or_else(|| {
            meta_err(
                file,
                "tokenizer.ggml.eos_token_id",
                format!("{id} is outside the {} tokens", tokens.len()),
            )
        })?),
        None => None,
    };
    let label = format!("{file} (tokenizer.ggml.*)");
    let tokenizer = HfTokenizer::from_json_bytes(json.as_bytes(), &label, eos_token.map(String::as_str), None)?;
    Ok(Some(tokenizer.with_chat_template(
        gguf_chat_template(header, file)?.map(Value::String),
    )))
}

/// `tokenizer.chat_template`, if the file has one.
pub fn gguf_chat_template(header: &GgufHeader, file: &str) -> Result<Option<String>, IoError> {
    let key = "tokenizer.chat_template";
    match header.get(key) {
        None => Ok(None),
        Some(MetaValue::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(meta_err(
            file,
            key,
            format!("expected a string, found {}", v.type_name()),
        )),
    }
}

fn token_list<'a>(header: &'a GgufHeader, file: &str) -> Result<&'a [String], IoError> {
    let key = "tokenizer.ggml.tokens";
    match header.get(key) {
        Some(MetaValue::Array(a)) => a.as_strings().ok_or_else(|| {
            meta_err(
                file,
                key,
                format!("expected an array of string, found {}", a.type_name()),
            )
        }),
        Some(v) => Err(meta_err(
            file,
            key,
            format!("expected an array of string, found {}", v.type_name()),
        )),
        None => Err(meta_err(file, key, "missing".into())),
    }
}

/// The `tokenizer.json` text equivalent to the metadata's tokenizer; `None` when the file
/// has no `tokenizer.ggml.model`.
pub fn gguf_tokenizer_json(header: &GgufHeader, file: &str) -> Result<Option<String>, IoError> {
    let model_key = "tokenizer.ggml.model";
    let Some(model) = header.get_str(model_key).map_err(|d| meta_err(file, model_key, d))? else {
        return Ok(None);
    };
    if model != "gpt2" {
        return Err(meta_err(
            file,
            model_key,
            format!("`{model}` is not read by r1 yet (it reads `gpt2`, byte-level BPE)"),
        ));
    }
    let pre_key = "tokenizer.ggml.pre";
    let pre = header
        .get_str(pre_key)
        .map_err(|d| meta_err(file, pre_key, d))?
        .unwrap_or("(missing)");
    let split = |regex: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}
        ]})
    };
    let (pre_tokenizer, ignore_merges) = match pre {
        "qwen2" | "deepseek-r1-qwen" => (split(QWEN2_REGEX), false),
        "llama-bpe" => (split(LLAMA3_REGEX), true),
        "gpt-2" => (
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}),
            false,
        ),
        other => {
            return Err(meta_err(
                file,
                pre_key,
                format!(
                    "pre-tokenizer `{other}` is not one r1 knows (it knows {})",
                    SUPPORTED_PRE.join(", ")
                ),
            ));
        }
    };

    let tokens = token_list(header, file)?;
    let types_key = "tokenizer.ggml.token_type";
    let types: Vec<i64> = match header.get(types_key) {
        None => vec![1; tokens.len()],
        Some(v) => {
            let t = v.as_array().and_then(|a| a.to_i64s()).ok_or_else(|| {
                meta_err(
                    file,
                    types_key,
                    format!("expected an integer array, found {}", v.type_name()),
                )
            })?;
            if t.len() != tokens.len() {
                return Err(meta_err(
                    file,
                    types_key,
                    format!("{} entries for {} tokens", t.len(), tokens.len()),
                ));
            }
            t
        }
    };
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, (token, &ty)) in tokens.iter().zip(&types).enumerate() {
        if let Some(first) = vocab.insert(token.clone(), json!(id)) {
            return Err(meta_err(
                file,
                "tokenizer.ggml.tokens",
                format!("token {token:?} appears twice (ids {first} and {id})"),
            ));
        }
        if ty == CONTROL || ty == USER_DEFINED {
            added.push(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": ty == CONTROL,
            }));
        }
    }
    let merges_key = "tokenizer.ggml.merges";
    let merges: Vec<Value> = match header.get(merges_key) {
        None => Vec::new(),
        Some(v) => {
            let list = v.as_array().and_then(|a| a.as_strings()).ok_or_else(|| {
                meta_err(
                    file,
                    merges_key,
                    format!("expected an array of string, found {}", v.type_name()),
                )
            })?;
            let mut out = Vec::with_capacity(list.len());
            for (i, m) in list.iter().enumerate() {
                // As llama.cpp splits: at the first space after the first character.
                let cut = m.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(at, _)| at);
                let Some(cut) = cut else {
                    return Err(meta_err(
                        file,
                        merges_key,
                        format!("merge #{i} {m:?} is not two tokens separated by a space"),
                    ));
                };
                out.push(json!([&m[..cut], &m[cut + 1..]]));
            }
            out
        }
    };
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges,
        },
    });
    Ok(Some(tokenizer.to_string()))
}
