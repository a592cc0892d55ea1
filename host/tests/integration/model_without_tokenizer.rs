//! A model directory without `tokenizer.json` (vocab smaller than the byte-level
//! tokenizer's 261) loads and runs on ids; asking it for text is an error naming the
//! model, and a checkpoint of it stays tokenizer-less.

use crate::io_support;

use io_support::fixtures;
use r1_backend_cpu::CpuBackend;
use r1_host::io::{IoError, Tokenizer, TokenizerSpec, load_checkpoint};
use r1_host::model::{Model, ModelError};

#[test]
fn directory_without_tokenizer_loads_with_a_missing_tokenizer() {
    let backend = CpuBackend::new();
    let dir = fixtures().join("hf/llama_f16");
    let model = Model::load(&backend, &dir).expect("a vocab-100 model without tokenizer.json loads");
    assert_eq!(model.config.vocab_size, 100);
    assert!(matches!(model.tokenizer, Tokenizer::Missing(_)));
    let err = match model.text_tokenizer() {
        Err(ModelError::Io(e @ IoError::NoTokenizer { .. })) => e.to_string(),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a missing tokenizer must not serve text"),
    };
    assert!(
        err.contains("llama_f16") && err.contains("has no tokenizer.json"),
        "{err}"
    );
    assert!(err.contains("this command needs text"), "{err}");
    assert!(model.encode("hi").is_err());
}

#[test]
fn checkpoint_of_a_tokenizerless_model_reloads_without_one() {
    let backend = CpuBackend::new();
    let model = Model::load(&backend, &fixtures().join("hf/qwen2_gqa_tied")).expect("load");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("m.r1ckpt");
    model.save(&backend, &path, None, Vec::new()).expect("save");
    assert_eq!(load_checkpoint(&path).expect("read").tokenizer, TokenizerSpec::Missing);
    let back = Model::load(&backend, &path).expect("reload");
    let err = back.text_tokenizer().expect_err("still no tokenizer").to_string();
    assert!(err.contains("m.r1ckpt"), "{err}");
}

#[test]
fn byte_level_models_keep_serving_text() {
    let backend = CpuBackend::new();
    let config = serde_json::from_value(serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 261,
        "tie_word_embeddings": true, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
    }))
    .expect("config");
    let model = Model::init(&backend, config, 0).expect("init");
    let tokenizer = model.text_tokenizer().expect("byte-level serves text");
    assert_eq!(tokenizer.encode("<think>").expect("encode"), [257]);
}
