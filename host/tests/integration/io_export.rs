//! `export_hf_dir`: an exported directory reloads with the same weights bit for bit and so
//! the same log-probs, carries a `tokenizer.json` the `tokenizers` library encodes with
//! r1's ids, names its special tokens, and refuses an output path that is a file.

use crate::io_support;

use std::path::Path;

use io_support::fixtures;
use r1_backend_cpu::CpuBackend;
use r1_core::model::ModelConfig;
use r1_host::io::{ByteLevelTokenizer, IoError, Tokenizer, export_hf_dir, read_safetensors};
use r1_host::model::{Model, read_model};
use r1_host::train::lm_graph::{Feed, LmGraph, Objective};

const FIXTURES: [&str; 4] = ["qwen2_gqa_tied", "qwen2_mha_untied", "llama_tied_sharded", "llama_f16"];

/// Texts that exercise every path of the byte-level tokenizer: ASCII, multi-byte UTF-8,
/// whitespace runs, special tokens anywhere, and partial tags that stay bytes.
const TEXTS: [&str; 7] = [
    "What is 12+34?",
    "<think>2+4=6;1+3=4;</think><answer>46</answer><|endoftext|>",
    "  leading and trailing spaces \n\n\ttabs ",
    "héllo wörld — ½ ∑ 漢字 🦀",
    "<thin <think <answer> </answer",
    "a<think>b</think>c<|endoftext|>d",
    "",
];

fn log_probs(backend: &CpuBackend, model: &Model<CpuBackend>, ids: &[i32]) -> Vec<f32> {
    let n = ids.len() - 1;
    let objective = Objective::TokenLogProbs { temperature: 1.0 };
    let mut graph = LmGraph::new(backend, &model.config, 1, n, objective).expect("graph");
    let feed = Feed {
        ids: &ids[..n],
        targets: &ids[1..],
        weights: None,
    };
    graph.forward(backend, &model.params, &feed).expect("forward").0
}

fn ids_for(config: &ModelConfig) -> Vec<i32> {
    (0..24).map(|i| ((i * 37 + 5) % config.vocab_size) as i32).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn exported_fixtures_reload_with_bit_identical_weights_and_log_probs() {
    let backend = CpuBackend::new();
    for name in FIXTURES {
        let src = fixtures().join("hf").join(name);
        let out = tempfile::tempdir().expect("temp dir");
        let host = read_model(&src).unwrap_or_else(|e| panic!("{name}: {e}"));
        export_hf_dir(out.path(), &host.config, &host.tokenizer, &host.weights)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = read_model(out.path()).unwrap_or_else(|e| panic!("{name}: reload: {e}"));
        assert_eq!(back.weights.len(), host.weights.len(), "{name}");
        for (a, b) in host.weights.iter().zip(back.weights.iter()) {
            assert_eq!((&a.name, &a.dims), (&b.name, &b.dims), "{name}");
            assert!(bits(&a.data) == bits(&b.data), "{name}: {} differs", a.name);
        }
        let original = Model::load(&backend, &src).expect("load original");
        let exported = Model::load(&backend, out.path()).expect("load export");
        let ids = ids_for(&original.config);
        let (want, got) = (
            log_probs(&backend, &original, &ids),
            log_probs(&backend, &exported, &ids),
        );
        assert_eq!(bits(&got), bits(&want), "{name}: log-probs");
    }
}

#[test]
fn tied_exports_store_no_lm_head_and_untied_ones_do() {
    for (name, tied) in [("qwen2_gqa_tied", true), ("qwen2_mha_untied", false)] {
        let host = read_model(&fixtures().join("hf").join(name)).expect("read");
        let out = tempfile::tempdir().expect("temp dir");
        export_hf_dir(out.path(), &host.config, &host.tokenizer, &host.weights).expect("export");
        let stored = read_safetensors(&out.path().join("model.safetensors")).expect("safetensors");
        let has_head = stored.iter().any(|t| t.name == "lm_head.weight");
        assert_eq!(has_head, !tied, "{name}");
    }
}

#[test]
fn config_json_has_what_transformers_needs() {
    let host = read_model(&fixtures().join("hf/llama_gqa_untied")).expect("read");
    let out = tempfile::tempdir().expect("temp dir");
    export_hf_dir(out.path(), &host.config, &host.tokenizer, &host.weights).expect("export");
    let json = |file: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.path().join(file)).expect(file)).expect(file)
    };
    let config = json("config.json");
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    assert_eq!(config["model_type"], "llama");
    assert_eq!(config["torch_dtype"], "float32");
    assert_eq!(config["hidden_act"], "silu");
    assert_eq!(config["num_key_value_heads"], 2);
    assert_eq!(config["mlp_bias"], false);
    // No tokenizer: no ids invented, and no tokenizer files written.
    assert!(config["eos_token_id"].is_null());
    assert!(!out.path().join("tokenizer.json").exists());
    assert!(out.path().join("generation_config.json").is_file());
}

#[test]
fn byte_level_model_exports_a_tokenizer_json_that_encodes_to_the_same_ids() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("hf");
    write_byte_level_checkpoint(&dir.path().join("model.ckpt"));
    let host = read_model(&dir.path().join("model.ckpt")).expect("read checkpoint");
    export_hf_dir(&out, &host.config, &host.tokenizer, &host.weights).expect("export");
    let hf = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).expect("tokenizers loads it");
    assert_eq!(hf.get_vocab_size(true), ByteLevelTokenizer::VOCAB_SIZE);
    for text in TEXTS {
        let want = ByteLevelTokenizer.encode(text);
        let got = hf.encode(text, true).expect("encode").get_ids().to_vec();
        assert_eq!(got, want, "{text:?}");
        assert_eq!(hf.decode(&got, false).expect("decode"), text, "{text:?}");
    }
    let every_byte: Vec<u32> = (0..=255).collect();
    let decoded = hf.decode(&every_byte, false).expect("decode bytes");
    assert_eq!(decoded, ByteLevelTokenizer.decode(&every_byte).expect("decode"));
    // r1 reloads it as a `tokenizer.json` tokenizer with the same EOS.
    let back = read_model(&out).expect("reload");
    assert!(matches!(back.tokenizer, Tokenizer::HuggingFace(_)));
    assert_eq!(back.tokenizer.eos_id(), ByteLevelTokenizer::EOS_ID);
    assert_eq!(back.config.eos_token_id, Some(ByteLevelTokenizer::EOS_ID));
    assert_eq!(
        back.tokenizer.encode(TEXTS[1]).expect("encode"),
        ByteLevelTokenizer.encode(TEXTS[1])
    );
}

#[test]
fn tokenizer_config_names_the_special_tokens_and_a_think_chat_template() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_byte_level_checkpoint(&dir.path().join("model.ckpt"));
    let host = read_model(&dir.path().join("model.ckpt")).expect("read");
    export_hf_dir(&dir.path().join("hf"), &host.config, &host.tokenizer, &host.weights).expect("export");
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.path().join("hf").join(f)).expect(f)).expect(f)
    };
    let tc = read("tokenizer_config.json");
    assert_eq!(tc["eos_token"], "<|endoftext|>");
    assert_eq!(tc["pad_token"], "<|endoftext|>");
    assert_eq!(tc["tokenizer_class"], "PreTrainedTokenizerFast");
    let template = tc["chat_template"].as_str().expect("a template string");
    assert!(
        template.contains("<think>") && template.contains("</think>"),
        "{template}"
    );
    let generation = read("generation_config.json");
    assert_eq!(generation["eos_token_id"], 256);
    assert_eq!(generation["bos_token_id"], 256);
}

#[test]
fn export_to_a_path_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("taken");
    std::fs::write(&file, b"not a directory").expect("write");
    let host = read_model(&fixtures().join("hf/qwen2_gqa_tied")).expect("read");
    let err = export_hf_dir(&file, &host.config, &host.tokenizer, &host.weights).expect_err("a file");
    assert!(matches!(err, IoError::File { .. }), "{err}");
    assert!(err.to_string().contains("is not a directory"), "{err}");
    assert_eq!(std::fs::read(&file).expect("still there"), b"not a directory");
}

/// A fresh byte-level Qwen2 (vocab 261) saved as an r1 checkpoint.
fn write_byte_level_checkpoint(path: &Path) {
    let config: ModelConfig = serde_json::from_value(serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
        "vocab_size": 261, "tie_word_embeddings": true, "max_position_embeddings": 64,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
    }))
    .expect("config");
    let backend = CpuBackend::new();
    let model = Model::init(&backend, config, 7).expect("init");
    model.save(&backend, path, None, Vec::new()).expect("save");
}
