//! Loading and saving Hugging Face model directories: the committed transformers fixtures,
//! round trips, and one test per kind of bad input.

use crate::io_support;

use std::path::Path;

use io_support::{fixtures, model_dir, raw_safetensors, tiny_config, tiny_weights};
use r1_host::io::{
    IoError, NamedTensor, decode_safetensors, encode_safetensors, hf_config_json, load_hf_model, read_safetensors,
    save_hf_model, weights_from_safetensors_bytes,
};

const FIXTURES: [&str; 6] = [
    "qwen2_gqa_tied",
    "qwen2_mha_untied",
    "llama_gqa_untied",
    "llama_tied_sharded",
    "qwen2_bf16",
    "llama_f16",
];

fn fixture(name: &str) -> std::path::PathBuf {
    fixtures().join("hf").join(name)
}

fn expected(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json parses")
}

#[test]
fn every_fixture_loads_with_the_weights_its_config_implies() {
    for name in FIXTURES {
        let m = load_hf_model(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let specs = m.config.param_specs();
        assert_eq!(m.weights.len(), specs.len(), "{name}");
        for (t, s) in m.weights.iter().zip(&specs) {
            assert_eq!((&t.name, &t.dims), (&s.name, &s.dims), "{name}");
            assert_eq!(t.data.len(), s.numel(), "{name}: {}", t.name);
            assert!(t.data.iter().all(|v| v.is_finite()), "{name}: {}", t.name);
        }
        // The generator randomises norm weights and biases: none may load as HF's 1 / 0 init.
        let norm = m.weights.get("model.norm.weight").expect("final norm");
        assert!(
            norm.data.iter().any(|&v| (v - 1.0).abs() > 1e-3),
            "{name}: norm weight looks uninitialised"
        );
    }
}

#[test]
fn v5_configs_read_rope_theta_from_rope_parameters() {
    let m = load_hf_model(&fixture("qwen2_mha_untied")).expect("load");
    assert_eq!(m.config.rope_theta, 1.0e6);
    assert_eq!(m.config.kv_heads(), 4);
    assert!(!m.config.tie_word_embeddings);
    let l = load_hf_model(&fixture("llama_gqa_untied")).expect("load");
    assert_eq!(l.config.rms_norm_eps, 1e-5);
    assert_eq!((l.config.num_attention_heads, l.config.kv_heads()), (6, 2));
}

#[test]
fn tied_models_have_no_lm_head_and_untied_ones_do() {
    let tied = load_hf_model(&fixture("qwen2_gqa_tied")).expect("load");
    assert!(tied.config.tie_word_embeddings);
    assert!(tied.weights.get("lm_head.weight").is_none());
    let untied = load_hf_model(&fixture("llama_gqa_untied")).expect("load");
    let head = untied.weights.get("lm_head.weight").expect("lm_head");
    assert_eq!(head.dims, [160, 48]);
}

#[test]
fn sharded_model_loads_every_shard() {
    let dir = fixture("llama_tied_sharded");
    assert!(!dir.join("model.safetensors").exists());
    let m = load_hf_model(&dir).expect("load");
    assert!(m.config.attention_bias);
    assert!(m.weights.get("model.layers.1.self_attn.o_proj.bias").is_some());
    // Every shard's tensors land where they belong: compare with the shards read directly.
    for entry in std::fs::read_dir(&dir).expect("dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.starts_with("model-") {
            for t in read_safetensors(&path).expect("shard") {
                assert_eq!(m.weights.get(&t.name), Some(&t), "{name}: {}", t.name);
            }
        }
    }
}

#[test]
fn bf16_and_f16_weights_widen_exactly() {
    let bf = load_hf_model(&fixture("qwen2_bf16")).expect("load");
    for t in bf.weights.iter() {
        assert!(
            t.data.iter().all(|&v| half::bf16::from_f32(v).to_f32() == v),
            "{} is not bf16-exact",
            t.name
        );
    }
    let hf = load_hf_model(&fixture("llama_f16")).expect("load");
    for t in hf.weights.iter() {
        assert!(
            t.data.iter().all(|&v| half::f16::from_f32(v).to_f32() == v),
            "{} is not f16-exact",
            t.name
        );
    }
    // Multi-query attention with head_dim (16) != hidden / heads (8).
    let q = hf.weights.get("model.layers.0.self_attn.q_proj.weight").expect("q");
    assert_eq!(q.dims, [64, 32]);
    let k = hf.weights.get("model.layers.0.self_attn.k_proj.weight").expect("k");
    assert_eq!(k.dims, [16, 32]);
}

#[test]
fn bf16_values_are_the_bytes_on_disk() {
    // The first values of the embedding, decoded by hand from the file's bytes.
    let bytes = std::fs::read(fixture("qwen2_bf16").join("model.safetensors")).expect("read");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let info = &header["model.embed_tokens.weight"];
    assert_eq!(info["dtype"], "BF16");
    let start = 8 + n + info["data_offsets"][0].as_u64().expect("offset") as usize;
    let by_hand: Vec<f32> = bytes[start..start + 8]
        .chunks_exact(2)
        .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
        .collect();
    let m = load_hf_model(&fixture("qwen2_bf16")).expect("load");
    assert_eq!(
        &m.weights.get("model.embed_tokens.weight").expect("embed").data[..4],
        &by_hand[..]
    );
}

#[test]
fn expected_json_tokens_fit_each_fixture_vocabulary() {
    for name in FIXTURES {
        let m = load_hf_model(&fixture(name)).expect("load");
        let e = expected(name);
        let tokens: Vec<u64> = e["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .filter_map(|v| v.as_u64())
            .collect();
        assert_eq!(tokens.len(), 24);
        assert!(tokens.iter().all(|&t| (t as usize) < m.config.vocab_size));
        assert!(tokens.contains(&(m.config.vocab_size as u64 - 1)));
        assert_eq!(e["logprobs"].as_array().expect("logprobs").len(), 23);
        let logits = e["logits_first3"].as_array().expect("logits");
        assert_eq!(logits.len(), 3);
        assert!(
            logits
                .iter()
                .all(|row| row.as_array().map(Vec::len) == Some(m.config.vocab_size))
        );
        let grads = read_safetensors(&fixture(name).join("grads.safetensors")).expect("grads");
        for g in &grads {
            let w = m
                .weights
                .get(&g.name)
                .unwrap_or_else(|| panic!("{name}: grad of unknown {}", g.name));
            assert_eq!(w.dims, g.dims);
        }
    }
}

#[test]
fn saved_model_loads_back_identical() {
    for tied in [true, false] {
        let config = tiny_config(tied);
        let weights = tiny_weights(&config);
        let dir = tempfile::tempdir().expect("temp dir");
        save_hf_model(dir.path(), &config, &weights).expect("save");
        let m = load_hf_model(dir.path()).expect("load");
        assert_eq!(m.weights, weights);
        assert_eq!(m.config.param_specs(), config.param_specs());
        assert_eq!(m.config.rope_theta, config.rope_theta);
        assert_eq!(m.config.tie_word_embeddings, tied);
        // The config names the model the way transformers' AutoConfig needs.
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).expect("read")).expect("json");
        assert_eq!(json["model_type"], "qwen2");
        assert_eq!(json["architectures"][0], "Qwen2ForCausalLM");
        assert_eq!(
            json["rms_norm_eps"].as_f64(),
            Some(1e-6),
            "written as the f32's shortest decimal"
        );
        assert_eq!(json["rope_parameters"]["rope_theta"].as_f64(), Some(10000.0));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".r1-tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left behind");
    }
}

#[test]
fn save_rejects_weights_that_do_not_fit_the_config() {
    let config = tiny_config(false);
    let mut weights = tiny_weights(&config);
    weights.tensors.retain(|t| t.name != "model.norm.weight");
    let dir = tempfile::tempdir().expect("temp dir");
    let err = save_hf_model(dir.path(), &config, &weights).expect_err("must fail");
    assert!(
        matches!(&err, IoError::MissingTensor { name, .. } if name == "model.norm.weight"),
        "{err}"
    );
    assert!(!dir.path().join("model.safetensors").exists());
}

// ---- bad input -------------------------------------------------------------------------

fn tiny_dir_with(tensors: &[NamedTensor], tied: bool) -> tempfile::TempDir {
    let config = tiny_config(tied);
    model_dir(
        &hf_config_json(&config).expect("config"),
        &encode_safetensors(tensors).expect("encode"),
    )
}

fn load_err(dir: &Path) -> IoError {
    load_hf_model(dir).expect_err("loading must fail")
}

#[test]
fn missing_tensor_is_named() {
    let config = tiny_config(false);
    let mut w = tiny_weights(&config);
    w.tensors.retain(|t| t.name != "model.layers.0.mlp.up_proj.weight");
    let dir = tiny_dir_with(&w.tensors, false);
    let err = load_err(dir.path());
    assert!(matches!(&err, IoError::MissingTensor { name, .. } if name == "model.layers.0.mlp.up_proj.weight"));
    assert!(err.to_string().contains("model.layers.0.mlp.up_proj.weight"), "{err}");
}

#[test]
fn wrong_shape_names_tensor_and_both_shapes() {
    let config = tiny_config(false);
    let mut w = tiny_weights(&config);
    let t = w
        .tensors
        .iter_mut()
        .find(|t| t.name == "model.layers.0.self_attn.k_proj.weight")
        .expect("k");
    t.dims = vec![8, 4];
    let dir = tiny_dir_with(&w.tensors, false);
    match load_err(dir.path()) {
        IoError::Shape {
            name, expected, found, ..
        } => {
            assert_eq!(name, "model.layers.0.self_attn.k_proj.weight");
            assert_eq!((expected, found), (vec![4, 8], vec![8, 4]));
        }
        other => panic!("expected a shape error, got {other}"),
    }
}

#[test]
fn unexpected_tensor_is_named() {
    // A 2-layer checkpoint under a 1-layer config.
    let config = tiny_config(false);
    let mut w = tiny_weights(&config);
    w.tensors.push(NamedTensor {
        name: "model.layers.1.input_layernorm.weight".into(),
        dims: vec![8],
        data: vec![1.0; 8],
    });
    let dir = tiny_dir_with(&w.tensors, false);
    let err = load_err(dir.path());
    assert!(matches!(&err, IoError::UnexpectedTensor { name, .. } if name == "model.layers.1.input_layernorm.weight"));
}

#[test]
fn tied_checkpoint_may_store_an_identical_lm_head() {
    let config = tiny_config(true);
    let mut w = tiny_weights(&config);
    let embed = w.get("model.embed_tokens.weight").expect("embed").clone();
    w.tensors.push(NamedTensor {
        name: "lm_head.weight".into(),
        ..embed
    });
    let dir = tiny_dir_with(&w.tensors, true);
    let m = load_hf_model(dir.path()).expect("identical lm_head is accepted");
    assert!(m.weights.get("lm_head.weight").is_none());
}

#[test]
fn tied_checkpoint_with_a_different_lm_head_is_rejected() {
    let config = tiny_config(true);
    let mut w = tiny_weights(&config);
    let mut head = w.get("model.embed_tokens.weight").expect("embed").clone();
    head.name = "lm_head.weight".into();
    head.data[5] += 0.25;
    w.tensors.push(head);
    let dir = tiny_dir_with(&w.tensors, true);
    assert!(matches!(load_err(dir.path()), IoError::TiedMismatch { .. }));
}

#[test]
fn integer_dtype_is_rejected_with_tensor_name() {
    let config = tiny_config(true);
    let header = r#"{"model.embed_tokens.weight":{"dtype":"I32","shape":[20,8],"data_offsets":[0,640]}}"#;
    let dir = model_dir(
        &hf_config_json(&config).expect("config"),
        &raw_safetensors(header, &[0u8; 640]),
    );
    match load_err(dir.path()) {
        IoError::Dtype { name, dtype, .. } => {
            assert_eq!(name, "model.embed_tokens.weight");
            assert_eq!(dtype, "I32");
        }
        other => panic!("expected a dtype error, got {other}"),
    }
}

#[test]
fn truncated_safetensors_is_rejected() {
    let config = tiny_config(false);
    let bytes = encode_safetensors(&tiny_weights(&config).tensors).expect("encode");
    for cut in [0, 5, 8, 40, bytes.len() / 2, bytes.len() - 1] {
        let err = decode_safetensors(&bytes[..cut], "cut.safetensors").expect_err("truncated");
        assert!(matches!(err, IoError::Safetensors { .. }), "cut at {cut}: {err}");
        assert!(err.to_string().contains("cut.safetensors"), "{err}");
    }
    let err = weights_from_safetensors_bytes(&config, &bytes[..bytes.len() - 4]).expect_err("truncated");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn header_length_beyond_the_file_is_rejected() {
    let mut bytes = raw_safetensors("{}", &[]);
    bytes[..8].copy_from_slice(&1_000_000u64.to_le_bytes());
    let err = decode_safetensors(&bytes, "big.safetensors").expect_err("bad header length");
    let msg = err.to_string();
    assert!(
        msg.contains("header length 1000000") && msg.contains("past the end"),
        "{msg}"
    );
    // A length near u64::MAX must not overflow either.
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(decode_safetensors(&bytes, "max.safetensors").is_err());
}

#[test]
fn offsets_out_of_range_are_rejected() {
    // Offsets past the data section, a gap, and an end before the start.
    let cases = [
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,800]}}"#,
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
        r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
    ];
    for header in cases {
        let bytes = raw_safetensors(header, &[0u8; 8]);
        let err = decode_safetensors(&bytes, "off.safetensors").expect_err(header);
        assert!(matches!(err, IoError::Safetensors { .. }), "{header}: {err}");
    }
}

#[test]
fn header_that_is_not_json_is_rejected() {
    let bytes = raw_safetensors("{not json", &[]);
    let err = decode_safetensors(&bytes, "x.safetensors").expect_err("bad json");
    assert!(err.to_string().contains("JSON"), "{err}");
}

#[test]
fn malformed_config_json_reports_line_and_column() {
    let dir = model_dir("{\n  \"hidden_size\": 8,\n  \"vocab_size\" 20\n}", &[]);
    match load_err(dir.path()) {
        IoError::Json { line, column, file, .. } => {
            assert_eq!(line, 3);
            assert!(column > 0);
            assert!(file.ends_with("config.json"));
        }
        other => panic!("expected a JSON error, got {other}"),
    }
}

#[test]
fn config_missing_field_is_named() {
    let dir = model_dir(
        r#"{"architectures":["LlamaForCausalLM"],"hidden_size":8,"num_hidden_layers":1,
            "num_attention_heads":2,"vocab_size":20}"#,
        &[],
    );
    let err = load_err(dir.path());
    assert!(
        matches!(&err, IoError::Field { field, .. } if field == "intermediate_size"),
        "{err}"
    );
}

#[test]
fn config_field_of_wrong_type_is_named() {
    let dir = model_dir(
        r#"{"architectures":["LlamaForCausalLM"],"hidden_size":8,"intermediate_size":12,"num_hidden_layers":1,
            "num_attention_heads":"two","vocab_size":20}"#,
        &[],
    );
    let err = load_err(dir.path());
    assert!(
        matches!(&err, IoError::Field { field, .. } if field == "num_attention_heads"),
        "{err}"
    );
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = model_dir(
        r#"{"architectures":["GPT2LMHeadModel"],"hidden_size":8,"intermediate_size":12,"num_hidden_layers":1,
            "num_attention_heads":2,"vocab_size":20}"#,
        &[],
    );
    let err = load_err(dir.path());
    assert!(
        matches!(&err, IoError::Field { field, .. } if field == "architectures"),
        "{err}"
    );
    assert!(err.to_string().contains("GPT2LMHeadModel"));
}

#[test]
fn math_r1_does_not_implement_is_refused_not_ignored() {
    let base = r#""architectures":["LlamaForCausalLM"],"hidden_size":8,"intermediate_size":12,"num_hidden_layers":1,
        "num_attention_heads":2,"vocab_size":20"#;
    let cases = [
        (
            r#""rope_scaling":{"rope_type":"llama3","factor":8.0}"#,
            "rope_scaling.rope_type",
        ),
        (
            r#""rope_parameters":{"rope_type":"yarn","rope_theta":10000.0}"#,
            "rope_parameters.rope_type",
        ),
        (r#""hidden_act":"gelu""#, "hidden_act"),
        (r#""mlp_bias":true"#, "mlp_bias"),
        (r#""use_sliding_window":true"#, "use_sliding_window"),
    ];
    for (extra, field) in cases {
        let dir = model_dir(&format!("{{{base},{extra}}}"), &[]);
        let err = load_err(dir.path());
        assert!(
            matches!(&err, IoError::Field { field: f, .. } if f == field),
            "{extra}: {err}"
        );
    }
}

#[test]
fn index_naming_a_missing_shard_names_it() {
    let src = fixture("llama_tied_sharded");
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(&src).expect("dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_owned();
        if name != "model-00002-of-00005.safetensors" {
            std::fs::copy(&path, dir.path().join(name)).expect("copy");
        }
    }
    match load_err(dir.path()) {
        IoError::MissingShard { shard, tensor, .. } => {
            assert_eq!(shard, "model-00002-of-00005.safetensors");
            assert!(tensor.starts_with("model."), "{tensor}");
        }
        other => panic!("expected a missing-shard error, got {other}"),
    }
}

#[test]
fn index_pointing_outside_the_directory_is_rejected() {
    let config = tiny_config(true);
    let dir = model_dir(&hf_config_json(&config).expect("config"), &[]);
    std::fs::remove_file(dir.path().join("model.safetensors")).expect("rm");
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        r#"{"weight_map":{"model.embed_tokens.weight":"../model.safetensors"}}"#,
    )
    .expect("write index");
    let err = load_err(dir.path());
    assert!(
        matches!(&err, IoError::Field { field, .. } if field == "weight_map.model.embed_tokens.weight"),
        "{err}"
    );
}

#[test]
fn directory_without_weights_says_so() {
    let config = tiny_config(true);
    let dir = model_dir(&hf_config_json(&config).expect("config"), &[]);
    std::fs::remove_file(dir.path().join("model.safetensors")).expect("rm");
    std::fs::write(dir.path().join("pytorch_model.bin"), b"pickle").expect("write");
    let err = load_err(dir.path());
    assert!(matches!(err, IoError::NoWeights { .. }));
    assert!(err.to_string().contains("convert them to safetensors"), "{err}");
}

#[test]
fn missing_config_json_names_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = load_err(dir.path());
    assert!(
        matches!(&err, IoError::File { path, .. } if path.ends_with("config.json")),
        "{err}"
    );
}
