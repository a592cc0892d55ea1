//! Any bytes as a safetensors file: decoding and assembling a model's weights must return
//! `Ok` or an error, never panic or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r1_host::io::{decode_safetensors, parse_hf_config, weights_from_safetensors_bytes};

const CONFIG: &[u8] = br#"{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 8, "intermediate_size": 12,
    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 20,
    "tie_word_embeddings": true}"#;

fuzz_target!(|data: &[u8]| {
    let _ = decode_safetensors(data, "fuzz");
    if let Ok(config) = parse_hf_config(CONFIG, "fuzz config") {
        let _ = weights_from_safetensors_bytes(&config, data);
    }
});
