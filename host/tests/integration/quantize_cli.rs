//! `r1host quantize` as a user runs it, on a tiny Qwen2 (tied) and Llama (untied) whose
//! rows are 256 wide (K-quant blocks) except `ffn_down`'s 288 (32-blocks only, so the
//! Q4_K_M mix falls back there): every file type reads back in r1 as exactly r1's own
//! quantize → dequantize of the source, the Q4_K_M mix is llama.cpp's, log-probs stay
//! near the source model's, the metadata is what llama.cpp's converter writes, gguf-py
//! reads and dequantizes every tensor to the same values (with `$R1_PY`), bf16
//! directories, GGUF inputs, and the inputs it refuses.

use crate::{cli_support, io_support};

use std::path::{Path, PathBuf};
use std::process::Command;

use r1_backend_cpu::CpuBackend;
use r1_core::model::ModelConfig;
use r1_core::quant::GgmlType as QuantType;
use r1_host::io::gguf::quant_mix::{FileType, MixContext, tensor_type};
use r1_host::io::gguf::write::ggml_dims;
use r1_host::io::gguf::{GgufFile, MetaValue, model::gguf_name};
use r1_host::io::{HfTokenizer, Tokenizer, Weights, export_hf_dir, load_hf_model};
use r1_host::model::{Model, read_model};
use r1_host::train::lm_graph::{Feed, LmGraph, Objective};

use cli_support::{path, r1host, text};
use io_support::fixtures;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

const TYPES: [(&str, FileType); 6] = [
    ("f32", FileType::F32),
    ("f16", FileType::F16),
    ("bf16", FileType::Bf16),
    ("q8_0", FileType::Q8_0),
    ("q4_0", FileType::Q4_0),
    ("q4_k_m", FileType::Q4_K_M),
];

fn config(arch: &str, tied: bool) -> ModelConfig {
    let class = if arch == "llama" {
        "LlamaForCausalLM"
    } else {
        "Qwen2ForCausalLM"
    };
    let json = format!(
        r#"{{"architectures": ["{class}"], "model_type": "{arch}", "hidden_size": 256,
            "intermediate_size": 288, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 336, "tie_word_embeddings": {tied},
            "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 128,
            "eos_token_id": 0}}"#
    );
    r1_host::io::parse_hf_config(json.as_bytes(), "quantize test").expect("config")
}

/// A Hugging Face directory of `config` with weights of std 0.1 (so log-probs spread)
/// and the byte-level BPE fixture tokenizer (320 tokens; ids 320–335 are padding).
fn hf_dir(root: &Path, arch: &str, tied: bool) -> (PathBuf, ModelConfig) {
    let cfg = config(arch, tied);
    let dir = root.join(format!("{arch}_hf"));
    let triples = r1_host::weights::init_weights(&cfg, 11)
        .into_iter()
        .map(|(name, dims, mut values)| {
            if dims.len() == 2 {
                values.iter_mut().for_each(|v| *v *= 5.0);
            }
            (name, dims, values)
        })
        .collect();
    let weights = Weights::from_triples(triples);
    let bytes = std::fs::read(fixtures().join("tokenizer/tokenizer.json")).expect("tokenizer fixture");
    let tok = HfTokenizer::from_json_bytes(&bytes, "fixture", Some("<|endoftext|>"), None).expect("tokenizer");
    export_hf_dir(&dir, &cfg, &Tokenizer::HuggingFace(Box::new(tok)), &weights).expect("export");
    (dir, cfg)
}

fn quantize(model: &Path, ty: &str, out: &Path) -> String {
    let o = r1host(&["quantize", "--model", path(model), "--type", ty, "--out", path(out)]);
    assert!(o.status.success(), "quantize {ty}: {}", text(&o.stderr));
    text(&o.stdout)
}

/// Log-probs of a fixed sequence through the model at `path` as r1 runs it (quantized
/// weights kept quantized).
fn log_probs(path: &Path) -> Vec<f32> {
    let backend = CpuBackend::new();
    let model = Model::load(&backend, path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ids: Vec<i32> = (0..24).map(|i| (i * 37 + 5) % 336).collect();
    let n = ids.len() - 1;
    let types = model.params.weight_types();
    let objective = Objective::TokenLogProbs { temperature: 1.0 };
    let mut graph = LmGraph::with_types(&backend, &model.config, &types, 1, n, objective).expect("graph");
    let feed = Feed {
        ids: &ids[..n],
        targets: &ids[1..],
        weights: None,
    };
    graph.forward(&backend, &model.params, &feed).expect("forward").0
}

/// Largest |Δ log-prob| allowed against the source f32 model, per file type, about 1.5×
/// what these models measure (weights of std 0.1, log-probs ≈ −5.8 ± 2, 23 positions):
/// 0 (f32), 4.9e-3 (f16), 6.3e-2 (bf16), 1.6e-1 (q8_0), 2.2 (q4_0), 2.3 (q4_k_m). The
/// 4-bit types move single log-probs by nats on such random models; what ties them to
/// llama.cpp is the exact read-back above, not this bound.
fn tolerance(ft: FileType) -> f32 {
    match ft {
        FileType::F32 => 1e-6,
        FileType::F16 => 1e-2,
        FileType::Bf16 => 0.1,
        FileType::Q8_0 => 0.25,
        FileType::Q4_0 | FileType::Q4_K_M => 3.5,
    }
}

#[test]
fn every_type_reads_back_as_r1s_own_quantize_then_dequantize_of_the_source() {
    let root = tempfile::tempdir().expect("tempdir");
    for (arch, tied) in [("qwen2", true), ("llama", false)] {
        let (dir, cfg) = hf_dir(root.path(), arch, tied);
        let source = load_hf_model(&dir).expect("source");
        let reference = log_probs(&dir);
        let ctx = MixContext {
            layers: cfg.num_hidden_layers,
            tied,
        };
        for (name, ft) in TYPES {
            let label = format!("{arch} {name}");
            let out = root.path().join(format!("{arch}.{name}.gguf"));
            let stdout = quantize(&dir, name, &out);
            assert!(stdout.contains("tensors"), "{label}: {stdout}");
            let back = read_model(&out).unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(back.config.hidden_size, cfg.hidden_size, "{label}");
            assert_eq!(back.config.tie_word_embeddings, tied, "{label}");
            assert_eq!(back.config.vocab_size, cfg.vocab_size, "{label}");
            let weights = back.into_f32_weights().expect("f32 weights");
            for src in source.weights.iter() {
                let file_name = gguf_name(&src.name).expect("llama.cpp name");
                let ty = tensor_type(ft, &file_name, &ggml_dims(&src.dims), ctx)
                    .expect("type")
                    .ty;
                let bytes = r1_core::quant::quantize(ty, &src.data).expect("quantize");
                let want = r1_core::quant::dequantize(ty, &bytes, src.data.len()).expect("dequantize");
                let got = weights.get(&src.name).expect("weight read back");
                assert_eq!(got.dims, src.dims, "{label}: {}", src.name);
                assert!(bits(&got.data) == bits(&want), "{label}: {} ({ty:?}) differs", src.name);
            }
            let got = log_probs(&out);
            let worst = got
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            eprintln!("{label}: max |Δ log-prob| vs the f32 source = {worst:.2e}");
            assert!(worst <= tolerance(ft), "{label}: {worst}");
        }
    }
}

fn types_of(file: &GgufFile) -> Vec<(String, String)> {
    file.header
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.ggml_type.name.to_string()))
        .collect()
}

#[test]
fn q4_k_m_mixes_types_as_llama_quantize_and_counts_them() {
    let root = tempfile::tempdir().expect("tempdir");
    let (dir, _) = hf_dir(root.path(), "llama", false);
    let out = root.path().join("llama.q4_k_m.gguf");
    let stdout = quantize(&dir, "q4_k_m", &out);
    let file = GgufFile::open(&out).expect("open");
    let types = types_of(&file);
    let of = |n: &str| types.iter().find(|(t, _)| t == n).map(|(_, ty)| ty.as_str()).expect(n);
    // 2 layers: use_more_bits picks layer 1 only (7·2/8 = 1).
    assert_eq!(of("output.weight"), "Q6_K");
    assert_eq!(of("token_embd.weight"), "Q4_K");
    assert_eq!(of("blk.0.attn_v.weight"), "Q4_K");
    assert_eq!(of("blk.1.attn_v.weight"), "Q6_K");
    // ffn_down rows are 288: Q4_K → Q5_0 and Q6_K → Q8_0, as in llama.cpp.
    assert_eq!(of("blk.0.ffn_down.weight"), "Q5_0");
    assert_eq!(of("blk.1.ffn_down.weight"), "Q8_0");
    for part in ["attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"] {
        assert_eq!(of(&format!("blk.1.{part}.weight")), "Q4_K", "{part}");
    }
    assert_eq!(of("blk.0.attn_norm.weight"), "F32");
    assert_eq!(of("output_norm.weight"), "F32");
    // The summary: token_embd + 2·5 + attn_v.0 Q4_K; output + attn_v.1 Q6_K; 2 fallbacks.
    assert!(stdout.contains(" q4_K: 12 tensors"), "{stdout}");
    assert!(stdout.contains(" q6_K: 2 tensors"), "{stdout}");
    assert!(stdout.contains(" q5_0: 1 tensors"), "{stdout}");
    assert!(stdout.contains(" q8_0: 1 tensors"), "{stdout}");
    assert!(
        stdout.contains("fallback: blk.0.ffn_down.weight q4_K → q5_0 (rows"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fallback: blk.1.ffn_down.weight q6_K → q8_0"),
        "{stdout}"
    );
    // Data is aligned as llama.cpp requires.
    assert_eq!(file.header.data_start % 32, 0);
}

#[test]
fn the_metadata_is_what_llama_cpps_converter_writes() {
    let root = tempfile::tempdir().expect("tempdir");
    for (arch, tied, name, ftype) in [("qwen2", true, "q8_0", 7u64), ("llama", false, "q4_k_m", 15)] {
        let (dir, cfg) = hf_dir(root.path(), arch, tied);
        let out = root.path().join(format!("{arch}.{name}.gguf"));
        quantize(&dir, name, &out);
        let file = GgufFile::open(&out).expect("open");
        let h = &file.header;
        let num = |k: &str| h.get(k).and_then(MetaValue::as_u64);
        let key = |k: &str| format!("{arch}.{k}");
        assert_eq!(h.get_str("general.architecture").expect("str"), Some(arch));
        assert_eq!(num("general.file_type"), Some(ftype));
        assert_eq!(num("general.quantization_version"), Some(2));
        assert_eq!(num(&key("block_count")), Some(2));
        assert_eq!(num(&key("context_length")), Some(128));
        assert_eq!(num(&key("embedding_length")), Some(256));
        assert_eq!(num(&key("feed_forward_length")), Some(288));
        assert_eq!(num(&key("attention.head_count")), Some(4));
        assert_eq!(num(&key("attention.head_count_kv")), Some(2));
        assert_eq!(h.get(&key("rope.freq_base")), Some(&MetaValue::F32(10000.0)));
        assert_eq!(
            h.get(&key("attention.layer_norm_rms_epsilon")),
            Some(&MetaValue::F32(1e-6))
        );
        let llama_only = if arch == "llama" { Some(64) } else { None };
        assert_eq!(num(&key("rope.dimension_count")), llama_only);
        assert_eq!(h.get_str("tokenizer.ggml.model").expect("str"), Some("gpt2"));
        assert_eq!(h.get_str("tokenizer.ggml.pre").expect("str"), Some("gpt-2"));
        let tokens = h
            .get("tokenizer.ggml.tokens")
            .and_then(MetaValue::as_array)
            .expect("tokens");
        assert_eq!(tokens.len(), cfg.vocab_size);
        let strings = tokens.as_strings().expect("strings");
        assert_eq!(strings[0], "<|endoftext|>");
        assert_eq!(strings[335], "[PAD335]");
        let token_types = h
            .get("tokenizer.ggml.token_type")
            .and_then(MetaValue::as_array)
            .expect("types");
        let token_types = token_types.to_i64s().expect("ints");
        assert_eq!((token_types[0], token_types[100], token_types[335]), (3, 1, 5));
        let merges = h
            .get("tokenizer.ggml.merges")
            .and_then(MetaValue::as_array)
            .expect("merges");
        assert_eq!(merges.as_strings().map(|m| m[0].as_str()), Some("Ġ a"));
        assert_eq!(num("tokenizer.ggml.eos_token_id"), Some(0));
        let template = h
            .get_str("tokenizer.chat_template")
            .expect("str")
            .expect("chat template");
        assert!(template.contains("Assistant: <think>"), "{template}");
        // The tokenizer rebuilt from the metadata encodes as the source's.
        let back = read_model(&out).expect("read");
        let source = read_model(&dir).expect("source");
        let sample = "Hello there, 123 <think>ok</think>";
        assert_eq!(
            back.tokenizer.encode(sample).expect("encode"),
            source.tokenizer.encode(sample).expect("encode")
        );
    }
}

#[test]
fn a_float_gguf_requantizes_to_the_converters_own_f16_file_and_a_quantized_one_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let gguf = fixtures().join("gguf");
    // The llama fixture's F32 file (from gguf-py, as convert_hf_to_gguf.py lays it out:
    // q/k permuted, biases included) to F16 gives the converter's own F16 file: the same
    // tensors with the same types and bytes (r1 writes them in Hugging Face order), and
    // the same tokenizer metadata.
    let out = root.path().join("llama_tiny.f16.gguf");
    quantize(&gguf.join("llama_tiny.f32.gguf"), "f16", &out);
    let ours = GgufFile::open(&out).expect("ours");
    let theirs = GgufFile::open(&gguf.join("llama_tiny.f16.gguf")).expect("fixture");
    assert_eq!(ours.header.tensors.len(), theirs.header.tensors.len());
    for a in &ours.header.tensors {
        let b = theirs.header.tensor(&a.name).expect("the fixture has the tensor");
        assert_eq!((&a.dims, a.ggml_type), (&b.dims, b.ggml_type), "{}", a.name);
        assert!(
            ours.tensor_bytes(a).expect("bytes") == theirs.tensor_bytes(b).expect("bytes"),
            "{}",
            a.name
        );
    }
    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.eos_token_id",
        "llama.rope.dimension_count",
        "llama.vocab_size",
        "general.file_type",
    ] {
        let (a, b) = (ours.header.get(key), theirs.header.get(key));
        assert!(a.is_some() && a.map(|v| v.as_u64()) == b.map(|v| v.as_u64()), "{key}");
        if let (Some(MetaValue::Array(x)), Some(MetaValue::Array(y))) = (a, b) {
            assert!(x.as_strings() == y.as_strings() && x.to_i64s() == y.to_i64s(), "{key}");
        }
        if let (Some(MetaValue::String(x)), Some(MetaValue::String(y))) = (a, b) {
            assert_eq!(x, y, "{key}");
        }
    }

    // A vocabulary without merges gets no merges key, as gguf-py's `SpecialVocab` writes it.
    assert!(ours.header.get("tokenizer.ggml.merges").is_none());
    assert!(theirs.header.get("tokenizer.ggml.merges").is_none());

    let o = r1host(&[
        "quantize",
        "--model",
        path(&gguf.join("qwen2_tiny.q8_0.gguf")),
        "--type",
        "q4_k_m",
        "--out",
        path(&root.path().join("x.gguf")),
    ]);
    let stderr = text(&o.stderr);
    assert!(!o.status.success() && !stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("is Q8_0") && stderr.contains("F32, F16 and BF16 GGUF files only"),
        "{stderr}"
    );
    assert!(!root.path().join("x.gguf").exists());
}

#[test]
fn rows_that_fit_no_q8_0_block_are_refused_naming_the_tensor() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = root.path().join("x.gguf");
    let model = fixtures().join("gguf/qwen2_tiny_hf");
    let o = r1host(&[
        "quantize",
        "--model",
        path(&model),
        "--type",
        "q8_0",
        "--out",
        path(&out),
    ]);
    let stderr = text(&o.stderr);
    assert!(!o.status.success() && !stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("token_embd.weight") && stderr.contains("rows of 16"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn bf16_writes_a_hugging_face_directory_whole() {
    let root = tempfile::tempdir().expect("tempdir");
    let (dir, _) = hf_dir(root.path(), "qwen2", true);
    let out = root.path().join("bf16");
    let o = r1host(&["quantize", "--model", path(&dir), "--type", "bf16", "--out", path(&out)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let source = load_hf_model(&dir).expect("source");
    let back = load_hf_model(&out).expect("bf16 dir");
    assert_eq!(back.config, source.config);
    for (a, b) in back.weights.iter().zip(source.weights.iter()) {
        let rounded: Vec<f32> = b.data.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
        assert_eq!(bits(&a.data), bits(&rounded), "{}", a.name);
    }
    let header = std::fs::read(out.join("model.safetensors")).expect("weights");
    assert!(text(&header[..2000.min(header.len())]).contains("\"BF16\""));
    for name in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        assert_eq!(
            std::fs::read(out.join(name)).expect(name),
            std::fs::read(dir.join(name)).expect(name),
            "{name} copied"
        );
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).expect("config")).expect("json");
    assert_eq!(config["torch_dtype"], "bfloat16");
    // No temporary directory is left beside it, and a non-empty --out is refused.
    let leftovers: Vec<_> = std::fs::read_dir(root.path())
        .expect("read root")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());
    let o = r1host(&["quantize", "--model", path(&dir), "--type", "bf16", "--out", path(&out)]);
    assert!(!o.status.success() && text(&o.stderr).contains("is not an empty directory"));
    // Another type to safetensors is refused.
    let o = r1host(&[
        "quantize",
        "--model",
        path(&dir),
        "--type",
        "q8_0",
        "--format",
        "safetensors",
        "--out",
        path(&root.path().join("q8")),
    ]);
    assert!(!o.status.success() && text(&o.stderr).contains("bf16 only"));
}

/// gguf-py (`gguf.GGUFReader`, `gguf.quants.dequantize`) reads every file type back and
/// dequantizes each tensor to the values r1's dequantizer gives the same bytes.
#[test]
fn gguf_py_reads_and_dequantizes_every_tensor_as_r1_does() {
    let Some(python) = std::env::var_os("R1_PY").filter(|p| !p.is_empty()) else {
        eprintln!(
            "skipped: set R1_PY to a Python with the `gguf` package (.ci/run does) to run tests/e2e/gguf_readback.py"
        );
        return;
    };
    let root = tempfile::tempdir().expect("tempdir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/gguf_readback.py");
    for (arch, tied) in [("qwen2", true), ("llama", false)] {
        let (dir, _) = hf_dir(root.path(), arch, tied);
        for (name, _) in TYPES {
            let label = format!("{arch} {name}");
            let out = root.path().join(format!("{arch}.{name}.gguf"));
            quantize(&dir, name, &out);
            // r1's values: every tensor dequantized from the file's bytes, in file order.
            let file = GgufFile::open(&out).expect("open");
            let dump = root.path().join(format!("{arch}.{name}.f32"));
            let mut raw = Vec::new();
            for t in &file.header.tensors {
                let ty = QuantType::from_id(t.ggml_type.id).expect("a type r1 writes");
                let bytes = file.tensor_bytes(t).expect("bytes");
                let values = r1_core::quant::dequantize(ty, bytes, t.elems() as usize).expect("dequantize");
                raw.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            }
            std::fs::write(&dump, raw).expect("dump");
            let o = Command::new(&python)
                .arg(&script)
                .args([path(&out), path(&dump)])
                .output()
                .expect("run gguf_readback.py");
            assert!(o.status.success(), "{label}: {}\n{}", text(&o.stdout), text(&o.stderr));
            let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON report");
            let tensors = report["tensors"].as_array().expect("tensors");
            assert_eq!(tensors.len(), file.header.tensors.len(), "{label}");
            for (t, info) in tensors.iter().zip(&file.header.tensors) {
                assert_eq!(t["name"], info.name.as_str(), "{label}");
                assert_eq!(t["type"], info.ggml_type.name, "{label}");
                assert_eq!(t["max_abs_diff"], 0.0, "{label}: {t}");
            }
            assert_eq!(report["architecture"], arch, "{label}");
        }
    }
}
