//! Shared pieces of the `io_*` tests: a tiny config, deterministic weights, and raw
//! safetensors bytes for the corrupt-file cases.

#![allow(dead_code)]

use std::path::PathBuf;

use r1_core::model::ModelConfig;
use r1_host::io::{NamedTensor, Weights};

/// `tests/fixtures` of the workspace.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// A 1-layer Qwen2 small enough to write by hand (hidden 8, 2 heads, 1 kv head).
pub fn tiny_config(tied: bool) -> ModelConfig {
    let json = format!(
        r#"{{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 8, "intermediate_size": 12,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "vocab_size": 20, "tie_word_embeddings": {tied}, "rope_theta": 10000.0}}"#
    );
    r1_host::io::parse_hf_config(json.as_bytes(), "tiny").expect("tiny config is valid")
}

/// Distinct, deterministic values for every weight of `config`.
pub fn tiny_weights(config: &ModelConfig) -> Weights {
    let mut k = 0u32;
    let tensors = config
        .param_specs()
        .into_iter()
        .map(|s| {
            let data = (0..s.numel())
                .map(|_| {
                    k += 1;
                    ((k * 7919) % 1000) as f32 / 1000.0 - 0.5
                })
                .collect();
            NamedTensor {
                name: s.name,
                dims: s.dims,
                data,
            }
        })
        .collect();
    Weights { tensors }
}

/// A safetensors file built by hand: `header` JSON (padded to 8 bytes) then `data`.
pub fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// Writes `config.json` (from JSON text) and `model.safetensors` into a fresh temp dir.
pub fn model_dir(config_json: &str, safetensors: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("config.json"), config_json).expect("write config");
    std::fs::write(dir.path().join("model.safetensors"), safetensors).expect("write weights");
    dir
}
