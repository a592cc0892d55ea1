//! The bodies of the fuzz targets: one function per decoder of outside bytes, taking any
//! bytes and returning only when the decoder did (an `Ok` or an error, never a panic).
//! `fuzz/fuzz_targets/*.rs` hand libFuzzer's input to these functions (with a nightly
//! toolchain), and `host/tests/integration/fuzz_replay.rs` replays a committed corpus and
//! deterministic mutations of it through the same functions on stable, so every CI run
//! exercises them. Not an API: hidden from the docs, and free to change with the targets.

use std::path::Path;
use std::sync::OnceLock;

use r1_core::quant::{self, GgmlType};
use serde_json::Value;

use crate::chat::{ChatTemplate, RenderOptions, default_template};
use crate::io::checkpoint::checkpoint_frame;
use crate::io::gguf::{GgufFile, gguf_model_from_bytes, gguf_tokenizer_json};
use crate::io::{
    ByteLevelTokenizer, DatasetFields, HfTokenizer, Tokenizer, decode_safetensors, hf_config_json,
    load_checkpoint_bytes, parse_hf_config, parse_jsonl, weights_from_safetensors_bytes,
};
use crate::serve::ServeConfig;
use crate::serve::plan::{Endpoint, check_fields};
use crate::serve::prompt::{chat_prompt_with, completion_prompts_with};
use crate::serve::request::{GenerationBody, parse_json};

/// A fuzz target's body: any bytes in, a panic the only failure.
pub type TargetBody = fn(&[u8]);

/// Every target: its name (the directory of its corpus, `fuzz/corpus/<name>/`) and body.
pub const TARGETS: [(&str, TargetBody); 11] = [
    ("safetensors_load", safetensors_load),
    ("hf_config", hf_config),
    ("checkpoint_decode", checkpoint_decode),
    ("jsonl_dataset", jsonl_dataset),
    ("byte_tokenizer", byte_tokenizer),
    ("tokenizer_json", tokenizer_json),
    ("chat_template", chat_template),
    ("serve_request", serve_request),
    ("gguf_read", gguf_read),
    ("quant_blocks", quant_blocks),
    ("peft_adapter_config", peft_adapter_config),
];

/// A tiny model's `config.json`, for assembling weights from fuzzed safetensors.
const TINY_CONFIG: &[u8] = br#"{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 8, "intermediate_size": 12,
    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 20,
    "tie_word_embeddings": true}"#;

/// Any bytes as a safetensors file: decoding and assembling a model's weights return
/// `Ok` or an error, never panic or allocate without bound.
pub fn safetensors_load(data: &[u8]) {
    let _ = decode_safetensors(data, "fuzz");
    if let Ok(config) = parse_hf_config(TINY_CONFIG, "fuzz config") {
        let _ = weights_from_safetensors_bytes(&config, data);
    }
}

/// Any bytes as a `config.json`: parsing and validation return a config or an error; a
/// config that parses also produces its weight list and serializes back.
pub fn hf_config(data: &[u8]) {
    if let Ok(config) = parse_hf_config(data, "fuzz") {
        // Validated configs may still be huge; only walk the weight list when it is small.
        if config.num_hidden_layers <= 64 {
            let _ = config.param_specs();
        }
        let _ = hf_config_json(&config);
    }
}

/// Any bytes as a checkpoint. The first byte picks the input as a whole file (frame
/// checks: magic, version, length, checksum) or (0) as a payload wrapped in a valid frame,
/// so the postcard decoder and the consistency checks behind the checksum are reached.
pub fn checkpoint_decode(data: &[u8]) {
    match data.split_first() {
        Some((0, payload)) => {
            let _ = load_checkpoint_bytes(&checkpoint_frame(payload));
        }
        _ => {
            let _ = load_checkpoint_bytes(data);
        }
    }
}

/// Any bytes as a JSONL dataset, under SFT and GRPO field names: rows or an error naming
/// the line.
pub fn jsonl_dataset(data: &[u8]) {
    let _ = parse_jsonl(data, "fuzz", &DatasetFields::sft());
    let _ = parse_jsonl(data, "fuzz", &DatasetFields::grpo());
}

/// The byte-level tokenizer: any UTF-8 text round-trips exactly, and any ids decode to
/// text or to an out-of-vocabulary error.
pub fn byte_tokenizer(data: &[u8]) {
    let t = ByteLevelTokenizer;
    if let Ok(text) = std::str::from_utf8(data) {
        let ids = t.encode(text);
        assert!(ids.iter().all(|&id| (id as usize) < ByteLevelTokenizer::VOCAB_SIZE));
        assert_eq!(t.decode(&ids).ok().as_deref(), Some(text));
    }
    let ids: Vec<u32> = data
        .chunks_exact(2)
        .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
        .collect();
    match t.decode_bytes(&ids) {
        Ok(_) => assert!(ids.iter().all(|&id| (id as usize) < ByteLevelTokenizer::VOCAB_SIZE)),
        Err(_) => assert!(ids.iter().any(|&id| (id as usize) >= ByteLevelTokenizer::VOCAB_SIZE)),
    }
}

/// Any bytes as a `tokenizer.json`: a tokenizer or an error. A tokenizer that loads
/// encodes and decodes a fixed text.
pub fn tokenizer_json(data: &[u8]) {
    if let Ok(t) = HfTokenizer::from_json_bytes(data, "fuzz", None, None)
        && let Ok(ids) = t.encode("Hello <think>world</think> 🙂")
    {
        let _ = t.decode(&ids);
    }
}

/// Conversations every fuzzed template renders when the input brings none: system and
/// user turns, an assistant turn with reasoning, tool calls and a tool result.
const CONVERSATIONS: &str = r#"[
  [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
  [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
   {"role": "assistant", "content": "<think>greet</think>Hello!", "reasoning_content": "greet"},
   {"role": "user", "content": "Weather?"},
   {"role": "assistant", "content": null, "tool_calls": [{"type": "function",
     "function": {"name": "weather", "arguments": {"city": "Paris"}}}]},
   {"role": "tool", "content": "sunny", "tool_call_id": "0"}]
]"#;

/// Any bytes as a `tokenizer_config.json` whose `chat_template` (a string or a list of
/// `{name, template}`) is compiled and rendered as a served model's would be. The bytes
/// after the first NUL, if any, are the conversation (a JSON list of messages); without
/// them a few fixed conversations are rendered, with and without a generation prompt and
/// tools. Renders run on the template's fuel budget: an error, never a hang.
pub fn chat_template(data: &[u8]) {
    let (config, messages) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Ok(Some(template)) = ChatTemplate::from_tokenizer_config(config, Path::new("tokenizer_config.json"), None)
    else {
        return;
    };
    let conversations: Vec<Value> = match messages {
        Some(bytes) => match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Array(messages)) => vec![Value::Array(messages)],
            _ => return,
        },
        None => serde_json::from_str(CONVERSATIONS).unwrap_or_default(),
    };
    let tools = serde_json::json!([{"type": "function", "function": {"name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    for conversation in conversations {
        let Value::Array(messages) = conversation else { continue };
        for (add_generation_prompt, tools) in [(true, None), (false, Some(tools.clone()))] {
            let options = RenderOptions {
                add_generation_prompt,
                tools,
                ..RenderOptions::default()
            };
            let _ = template.render(&messages, &options);
        }
    }
}

/// r1's default chat template and the byte-level tokenizer: what a model without its own
/// is served with.
fn served_template() -> Option<&'static (ChatTemplate, Tokenizer)> {
    static SERVED: OnceLock<Option<(ChatTemplate, Tokenizer)>> = OnceLock::new();
    SERVED
        .get_or_init(|| {
            let template = default_template(Some("<s>".into()), Some("</s>".into())).ok()?;
            Some((template, Tokenizer::byte_level()))
        })
        .as_ref()
}

/// Any bytes as the body of `POST /v1/chat/completions` and of `POST /v1/completions`:
/// parsed as the server parses it, every field checked against the default limits
/// without a model, and the messages or prompt rendered and encoded as for a model
/// served with r1's default template. A 400-style error or a request within the limits.
pub fn serve_request(data: &[u8]) {
    let Ok(body) = parse_json::<GenerationBody>(data) else {
        return;
    };
    let config = ServeConfig::default();
    for endpoint in [Endpoint::Chat, Endpoint::Completions] {
        if let Ok(fields) = check_fields(&config, endpoint, &body) {
            assert!(1 <= fields.n && fields.n <= fields.candidates && fields.candidates <= config.max_n);
            assert!(fields.max_tokens != Some(0));
            assert!(fields.stop.iter().all(|s| !s.is_empty()));
        }
    }
    let Some((template, tokenizer)) = served_template() else {
        return;
    };
    if let Some(messages) = &body.messages {
        let tools = body.tools.clone();
        let extra = body.chat_template_kwargs.clone();
        let _ = chat_prompt_with(template, tokenizer, "fuzz", messages, tools, extra);
    }
    if let Some(prompt) = body.prompt
        && let Ok(prompts) = completion_prompts_with(tokenizer, "fuzz", prompt)
    {
        assert!(prompts.iter().all(|p| !p.tokens.is_empty()));
    }
}

/// Any bytes as a GGUF file: the header (every count, length and offset checked against
/// the file), each tensor's bytes (exactly its size), the metadata tokenizer as a
/// `tokenizer.json`, and the whole model mapping — config, F32/F16/BF16 weights widened,
/// llama's q/k rows put back, the tokenizer built and run — give a value or an error.
pub fn gguf_read(data: &[u8]) {
    if let Ok(file) = GgufFile::from_bytes(data.to_vec(), "fuzz") {
        for t in &file.header.tensors {
            let bytes = file.tensor_bytes(t);
            assert!(bytes.is_ok_and(|b| b.len() as u64 == t.size), "tensor `{}`", t.name);
        }
        let _ = gguf_tokenizer_json(&file.header, "fuzz");
    }
    if let Ok(model) = gguf_model_from_bytes(data, "fuzz")
        && let Some(tokenizer) = model.tokenizer
        && let Ok(ids) = tokenizer.encode("Hello <think>world</think> 🙂")
    {
        let _ = tokenizer.decode(&ids);
    }
}

/// Any bytes as GGML blocks: the first byte picks a type by GGML number, the rest are
/// dequantized as the whole blocks they hold (and once with one element too many, which
/// must be refused), quantized back, and — for a weight type — dotted with the quantized
/// activation row, as the CPU kernels do. Each step gives a value or an error.
pub fn quant_blocks(data: &[u8]) {
    let Some((&id, bytes)) = data.split_first() else {
        return;
    };
    let Ok(ty) = GgmlType::from_id(u32::from(id)) else {
        return;
    };
    let elements = bytes.len() / ty.type_size().max(1) * ty.block_size();
    let whole = &bytes[..ty.row_bytes(elements as u64).unwrap_or(0).min(bytes.len())];
    assert!(
        quant::dequantize(ty, whole, elements + 1).is_err(),
        "{} accepts a partial block",
        ty.name()
    );
    let Ok(values) = quant::dequantize(ty, whole, elements) else {
        return;
    };
    assert_eq!(values.len(), elements);
    if let Ok(again) = quant::quantize(ty, &values) {
        assert_eq!(again.len(), whole.len(), "{}", ty.name());
    }
    if let Some(act) = ty.vec_dot_type()
        && let Ok(a) = quant::quantize(act, &values)
    {
        let _ = quant::vec_dot(ty, whole, &a, elements);
    }
}

/// Any bytes as a PEFT `adapter_config.json`: a LoRA spec or an error naming the field; a
/// spec that parses lists its weights for a tiny model and writes back as a config that
/// parses to the same spec.
pub fn peft_adapter_config(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok((spec, base)) = crate::io::peft::parse_adapter_config(&value, "fuzz") else {
        return;
    };
    if let Ok(config) = parse_hf_config(TINY_CONFIG, "tiny") {
        let _ = spec.adapter_specs(&config.param_specs());
    }
    let written = crate::io::peft::adapter_config_json(&spec, base.as_deref());
    match crate::io::peft::parse_adapter_config(&written, "fuzz (written)") {
        Ok((reread, _)) => assert_eq!(reread, spec, "a written adapter config reads back equal"),
        Err(e) => panic!("a written adapter config does not read back: {e}"),
    }
}
