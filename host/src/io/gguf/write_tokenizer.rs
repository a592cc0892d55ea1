//! A tokenizer as the `tokenizer.ggml.*` metadata llama.cpp's converter writes
//! (`convert_hf_to_gguf.py`'s `get_vocab_base` and `SpecialVocab`): the inverse of
//! `tokenizer.rs`, so a file r1 writes reads back to the same ids in r1 and in llama.cpp.
//!
//! Byte-level BPE only (`tokenizer.ggml.model = "gpt2"`). llama.cpp names its
//! pre-tokenizer instead of storing the regex, so the `tokenizer.json` pre-tokenizer is
//! matched against the ones r1 knows: Qwen2's split regex → `qwen2`, Llama 3's →
//! `llama-bpe`, GPT-2's byte-level regex → `gpt-2` (and a byte-level pre-tokenizer over a
//! vocabulary without merges, such as r1's byte-level tokenizer, where splitting cannot
//! change the ids). Any other is an error naming it.

use serde_json::Value;

use crate::io::error::IoError;
use crate::io::gguf::read::{MetaArray, MetaValue};
use crate::io::gguf::tokenizer::{CONTROL, LLAMA3_REGEX, QWEN2_REGEX, USER_DEFINED};
use crate::io::tokenizer::Tokenizer;

/// llama.cpp's `LLAMA_TOKEN_TYPE_NORMAL` and `_UNUSED` (ids the embedding has and the
/// tokenizer does not, written as `[PAD{id}]` by the converter).
const NORMAL: i32 = 1;
const UNUSED: i32 = 5;

/// The special ids the converter writes beside the vocabulary.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
}

/// The `tokenizer.*` metadata of `tokenizer` for an embedding of `vocab_size` rows, in
/// the converter's order; empty for a model without a tokenizer.
pub fn tokenizer_metadata(
    tokenizer: &Tokenizer,
    vocab_size: usize,
    ids: SpecialIds,
) -> Result<Vec<(String, MetaValue)>, IoError> {
    let (json, chat_template) = match tokenizer {
        Tokenizer::Missing(_) => return Ok(Vec::new()),
        Tokenizer::ByteLevel(b) => (b.tokenizer_json()?, None),
        Tokenizer::HuggingFace(h) => (h.json().to_string(), h.chat_template().cloned()),
    };
    let err = |detail: String| IoError::Tokenizer {
        file: "tokenizer.json (for GGUF metadata)".into(),
        detail,
    };
    let tj: Value = serde_json::from_str(&json).map_err(|e| err(format!("not JSON: {e}")))?;
    let model = &tj["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(err(format!(
            "model type {} is not byte-level BPE, the only tokenizer r1 writes to GGUF",
            model["type"]
        )));
    }
    let merges = merges_of(&model["merges"]).ok_or_else(|| err("`model.merges` is not a list of pairs".into()))?;
    let pre = pre_name(&tj["pre_tokenizer"], merges.is_empty()).ok_or_else(|| {
        let mut shown = tj["pre_tokenizer"].to_string();
        shown.truncate(300);
        err(format!(
            "its pre-tokenizer has no llama.cpp name r1 knows (Qwen2's, Llama 3's or GPT-2's byte-level split): {shown}"
        ))
    })?;
    let (tokens, types) = token_table(&tj, vocab_size).map_err(err)?;

    let mut meta = vec![
        ("tokenizer.ggml.model".to_string(), MetaValue::String("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), MetaValue::String(pre.into())),
        (
            "tokenizer.ggml.tokens".to_string(),
            MetaValue::Array(MetaArray::String(tokens)),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            MetaValue::Array(MetaArray::I32(types)),
        ),
    ];
    // As `SpecialVocab` does: no key for a vocabulary without merges.
    if !merges.is_empty() {
        meta.push((
            "tokenizer.ggml.merges".into(),
            MetaValue::Array(MetaArray::String(merges)),
        ));
    }
    let eos = ids.eos.unwrap_or_else(|| tokenizer.eos_id());
    let special = [
        ("bos_token_id", ids.bos),
        ("eos_token_id", Some(eos)),
        ("padding_token_id", ids.pad),
    ];
    for (key, id) in special.into_iter().filter_map(|(key, id)| Some((key, id?))) {
        meta.push((format!("tokenizer.ggml.{key}"), MetaValue::U32(id)));
    }
    meta.push((
        "tokenizer.ggml.add_bos_token".into(),
        MetaValue::Bool(adds_bos(&tj["post_processor"])),
    ));
    meta.extend(chat_template_metadata(chat_template.as_ref()));
    Ok(meta)
}

/// Merges as the converter writes them, `"a b"`, from either `tokenizer.json` spelling
/// (`"a b"` or `["a", "b"]`).
fn merges_of(v: &Value) -> Option<Vec<String>> {
    let Some(list) = v.as_array() else {
        return v.is_null().then(Vec::new);
    };
    list.iter()
        .map(|m| match m {
            Value::String(s) => Some(s.clone()),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => Some(format!("{a} {b}")),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The `tokenizer.ggml.pre` name of a `tokenizer.json` pre-tokenizer.
fn pre_name(pre: &Value, no_merges: bool) -> Option<&'static str> {
    let byte_level = |v: &Value| v["type"] == "ByteLevel";
    if byte_level(pre) && (pre["use_regex"] == true || no_merges) && pre["add_prefix_space"] != true {
        return Some("gpt-2");
    }
    let parts = pre["pretokenizers"].as_array()?;
    let [split, last] = parts.as_slice() else {
        return None;
    };
    if pre["type"] != "Sequence" || split["type"] != "Split" || !byte_level(last) || last["use_regex"] == true {
        return None;
    }
    match split["pattern"]["Regex"].as_str()? {
        r if r == QWEN2_REGEX => Some("qwen2"),
        r if r == LLAMA3_REGEX => Some("llama-bpe"),
        _ => None,
    }
}

/// Tokens and token types by id, `vocab_size` of them: added tokens are control
/// (special) or user-defined, ids the tokenizer lacks are `[PAD{id}]`, unused.
fn token_table(tj: &Value, vocab_size: usize) -> Result<(Vec<String>, Vec<i32>), String> {
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; vocab_size];
    let mut place = |id: Option<u64>, text: &str, ty: i32| -> Result<(), String> {
        let id = id
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(|| format!("token {text:?} has no valid id"))?;
        let slot = tokens
            .get_mut(id)
            .ok_or_else(|| format!("token {text:?} has id {id}, past the embedding's {vocab_size} rows"))?;
        *slot = Some((text.to_string(), ty));
        Ok(())
    };
    let vocab = tj["model"]["vocab"]
        .as_object()
        .ok_or("`model.vocab` is not an object of token → id")?;
    for (text, id) in vocab {
        place(id.as_u64(), text, NORMAL)?;
    }
    for added in tj["added_tokens"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let text = added["content"].as_str().ok_or("an added token without `content`")?;
        let ty = if added["special"] == true {
            CONTROL
        } else {
            USER_DEFINED
        };
        place(added["id"].as_u64(), text, ty as i32)?;
    }
    Ok(tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| t.unwrap_or_else(|| (format!("[PAD{id}]"), UNUSED)))
        .unzip())
}

/// Whether the post-processor puts a special token before the text (Llama 3's BOS).
fn adds_bos(post: &Value) -> bool {
    if post["type"] == "Sequence" {
        return post["processors"].as_array().is_some_and(|p| p.iter().any(adds_bos));
    }
    post["type"] == "TemplateProcessing" && post["single"][0].get("SpecialToken").is_some()
}

/// `tokenizer.chat_template`, and `tokenizer.chat_template.NAME` for the other named
/// templates of a list (`[{"name": "default", "template": …}, …]`), as the converter
/// writes them.
fn chat_template_metadata(template: Option<&Value>) -> Vec<(String, MetaValue)> {
    match template {
        Some(Value::String(t)) => vec![("tokenizer.chat_template".into(), MetaValue::String(t.clone()))],
        Some(Value::Array(named)) => named
            .iter()
            .filter_map(|t| {
                let (name, text) = (t["name"].as_str()?, t["template"].as_str()?);
                let key = if name == "default" {
                    "tokenizer.chat_template".to_string()
                } else {
                    format!("tokenizer.chat_template.{name}")
                };
                Some((key, MetaValue::String(text.to_string())))
            })
            .collect(),
        _ => Vec::new(),
    }
}
