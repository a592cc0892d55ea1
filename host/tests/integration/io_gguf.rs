//! GGUF files (`r1_host::io::gguf`) against `tests/fixtures/gguf/`, written by gguf-py's
//! `GGUFWriter` as llama.cpp's converter lays them out (`make_gguf_fixtures.py`):
//! the header and shapes, the model mapping (the same tiny Qwen2 and Llama as a Hugging
//! Face directory and as F32/F16 GGUF give the same log-probs — llama through the q/k
//! permutation), the tokenizer of the metadata against `tokenizers`' ids, the chat
//! template, the "not yet" error of a Q8_0 file, the writer's round trip, and truncated
//! or corrupted files (an error naming where, never a panic).

use crate::io_support;

use std::path::PathBuf;

use r1_backend_cpu::{CpuBackend, SimdLevel};
use r1_core::DType;
use r1_core::model::ModelConfig;
use r1_core::quant::GgmlType as QuantType;
use r1_host::chat::{ChatTemplate, RenderOptions};
use r1_host::io::gguf::model::permute_rows;
use r1_host::io::gguf::tokenizer::gguf_tokenizer;
use r1_host::io::gguf::write::ggml_dims;
use r1_host::io::gguf::{
    GgmlType, GgufError, GgufFile, GgufWriter, MetaArray, MetaValue, gguf_model_from_bytes, parse_header,
};
use r1_host::io::{HfTokenizer, IoError, Weights, load_hf_model};
use r1_host::model::{Model, read_model};
use r1_host::train::lm_graph::{Feed, LmGraph, Objective};
use serde_json::Value;

use io_support::fixtures;

fn dir() -> PathBuf {
    fixtures().join("gguf")
}

fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(dir().join("expected.json")).expect("expected.json")).expect("json")
}

/// Ids every model fixture knows (vocab 96), long enough to cross several RoPE angles.
const TOKENS: [u32; 20] = [0, 5, 17, 44, 95, 3, 60, 61, 62, 1, 2, 90, 33, 12, 7, 80, 94, 50, 25, 4];

fn log_probs(config: &ModelConfig, weights: Weights) -> Vec<f32> {
    let backend = CpuBackend::new();
    let model =
        Model::from_weights(&backend, config.clone(), r1_host::io::Tokenizer::byte_level(), weights).expect("upload");
    let ids: Vec<i32> = TOKENS.iter().map(|&t| t as i32).collect();
    let n = ids.len() - 1;
    let mut graph = LmGraph::new(&backend, config, 1, n, Objective::TokenLogProbs { temperature: 1.0 }).expect("graph");
    let (logp, _) = graph
        .forward(
            &backend,
            &model.params,
            &Feed {
                ids: &ids[..n],
                targets: &ids[1..],
                weights: None,
            },
        )
        .expect("forward");
    logp
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn the_header_of_a_converter_file_reads_with_ggml_dims_innermost_first() {
    let file = GgufFile::open(&dir().join("llama_tiny.f16.gguf")).expect("open");
    let h = &file.header;
    assert_eq!(h.version, 3);
    assert_eq!(h.alignment, 32);
    assert_eq!(h.data_start % 32, 0);
    assert_eq!(h.get("general.architecture"), Some(&MetaValue::String("llama".into())));
    assert_eq!(h.get("llama.embedding_length").and_then(MetaValue::as_u64), Some(24));
    assert_eq!(
        h.get("llama.attention.layer_norm_rms_epsilon"),
        Some(&MetaValue::F32(1e-5))
    );
    let tokens = h
        .get("tokenizer.ggml.tokens")
        .and_then(MetaValue::as_array)
        .expect("tokens");
    assert_eq!(tokens.len(), 96);
    assert_eq!(tokens.as_strings().map(|t| t[0].as_str()), Some("<|endoftext|>"));
    // `[out, in]` = [96, 24] in PyTorch is ne = [24, 96] in GGUF.
    let embd = h.tensor("token_embd.weight").expect("token_embd");
    assert_eq!(embd.dims, [24, 96]);
    assert_eq!(embd.row_major_shape(), [96, 24]);
    assert_eq!(embd.ggml_type, GgmlType::F16);
    assert_eq!(embd.size, 96 * 24 * 2);
    // 1-D tensors stay F32 in an F16 file, as the converter keeps them.
    assert_eq!(
        h.tensor("blk.1.attn_norm.weight").map(|t| t.ggml_type),
        Some(GgmlType::F32)
    );
    assert_eq!(h.tensor("blk.0.attn_q.bias").map(|t| t.dims.clone()), Some(vec![24]));
    let down = h.tensor("blk.0.ffn_down.weight").expect("ffn_down");
    assert_eq!(down.row_major_shape(), [24, 40]);
    assert_eq!(file.tensor_bytes(down).expect("bytes").len(), 24 * 40 * 2);
}

#[test]
fn gguf_models_equal_their_hugging_face_directories_f32_bit_for_bit_and_f16_rounded() {
    let exp = expected();
    for (name, m) in exp["models"].as_object().expect("models") {
        let hf = load_hf_model(&dir().join(m["hf_dir"].as_str().expect("hf_dir"))).expect("hf dir");
        let reference = log_probs(&hf.config, hf.weights.clone());

        let f32_path = dir().join(m["files"]["f32"].as_str().expect("f32"));
        let g = read_model(&f32_path).unwrap_or_else(|e| panic!("{name} f32: {e}"));
        assert_eq!(g.config, hf.config, "{name}: the config from the metadata");
        // The F32 matrices stay in the file (lent in place, not copied into the layout);
        // training takes them into the f32 layout.
        assert!(
            !g.stored.is_empty() && g.stored.iter().all(|s| s.desc.dtype == DType::F32),
            "{name}: f32 matrices kept stored"
        );
        let g = g.trainable().expect("trainable");
        assert!(g.stored.is_empty(), "{name}: training widens every f32 matrix");
        for (a, b) in g.weights.iter().zip(hf.weights.iter()) {
            assert_eq!((&a.name, &a.dims), (&b.name, &b.dims));
            assert_eq!(bits(&a.data), bits(&b.data), "{name}: {} (f32)", a.name);
        }
        assert_eq!(
            bits(&log_probs(&g.config, g.weights)),
            bits(&reference),
            "{name}: f32 log-probs"
        );
        // Run on the file's own F32 bytes: the same kernels, the same bits.
        let backend = CpuBackend::new();
        let in_place = Model::load(&backend, &f32_path).expect("load f32");
        assert!(!in_place.params.stored.is_empty(), "{name}: f32 matrices not copied");
        assert_eq!(
            bits(&quantized_log_probs(&backend, &in_place)),
            bits(&reference),
            "{name}: f32 log-probs computed in place"
        );
        let trainable = Model::load_trainable(&backend, &f32_path).expect("load f32 to train");
        assert!(trainable.params.stored.is_empty(), "{name}: trainable layout");
        trainable
            .params
            .check_trainable("SFT training")
            .expect("f32 GGUF trains");

        // F16: the HF weights rounded to f16 where the converter stored F16.
        let f16_names: Vec<&str> = m["f16_tensors"]
            .as_array()
            .expect("f16_tensors")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut rounded = hf.weights.clone();
        for t in &mut rounded.tensors {
            if f16_names.contains(&t.name.as_str()) {
                for v in &mut t.data {
                    *v = half::f16::from_f32(*v).to_f32();
                }
            }
        }
        let f16_path = dir().join(m["files"]["f16"].as_str().expect("f16"));
        let g16 = read_model(&f16_path).unwrap_or_else(|e| panic!("{name} f16: {e}"));
        // The F16 matrices stay f16 in memory; widened, they are the rounded HF weights.
        assert!(
            !g16.stored.is_empty() && g16.stored.iter().all(|s| s.desc.dtype == DType::F16),
            "{name}: f16 matrices kept as f16"
        );
        let widened = g16.into_f32_weights().expect("widen");
        assert_eq!(widened, rounded, "{name}: f16 weights");
        // Run on the f16 bytes, the log-probs equal the f32 path on the rounded weights up
        // to the summation order of the f16 kernel (each product is exact in f32).
        let backend = CpuBackend::new();
        let model = Model::load(&backend, &f16_path).expect("load f16");
        let got = quantized_log_probs(&backend, &model);
        let want = log_probs(&hf.config, rounded);
        let worst = max_abs_diff(&got, &want);
        eprintln!("{name}: f16 kernel vs f32 on the rounded weights: max |Δ log-prob| = {worst:.2e}");
        assert!(worst < HALF_TOLERANCE, "{name}: f16 log-probs {got:?} vs {want:?}");
        // And near the f32 model (f16 rounding moves log-probs by far less than 0.05).
        for (a, b) in got.iter().zip(&reference) {
            assert!((a - b).abs() < 0.05, "{name}: f16 {a} vs f32 {b}");
        }
    }
}

/// The llama fixture rewritten with every 2-D weight as BF16 (the F32 file's values
/// rounded by `half`, as torch rounds them) loads as the HF weights rounded the same way.
#[test]
fn bf16_weights_are_widened_exactly() {
    let file = GgufFile::open(&dir().join("llama_tiny.f32.gguf")).expect("open");
    let mut w = GgufWriter::new();
    for (k, v) in &file.header.metadata {
        w.add_metadata(k, v.clone()).expect("metadata");
    }
    for t in &file.header.tensors {
        let raw = file.tensor_bytes(t).expect("bytes");
        if t.dims.len() == 2 {
            let data = raw
                .chunks_exact(4)
                .flat_map(|c| half::bf16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes())
                .collect();
            w.add_tensor(&t.name, &t.dims, GgmlType::BF16, data).expect("bf16");
        } else {
            w.add_tensor(&t.name, &t.dims, t.ggml_type, raw.to_vec()).expect("f32");
        }
    }
    let path = scratch("llama_tiny.bf16.gguf");
    w.write(&path).expect("write bf16 file");
    let g = read_model(&path).expect("bf16 model");
    let hf = load_hf_model(&dir().join("llama_tiny_hf")).expect("hf");
    let mut want = hf.weights;
    for t in want.tensors.iter_mut().filter(|t| t.dims.len() == 2) {
        for v in &mut t.data {
            *v = half::bf16::from_f32(*v).to_f32();
        }
    }
    // Every matrix stays bf16 (projections, head, embedding); widened, they are exact.
    assert_eq!(
        g.stored.len(),
        want.tensors.iter().filter(|t| t.dims.len() == 2).count()
    );
    assert!(g.stored.iter().all(|s| s.desc.dtype == DType::BF16));
    let config = g.config.clone();
    assert_eq!(g.into_f32_weights().expect("widen"), want);
    // A bf16 weight takes bf16 activations (as in llama.cpp): the log-probs are the f32
    // path's on the rounded weights up to that rounding (2⁻⁹ relative per activation,
    // which this tiny random model's layers move by at most ~3.4e-2)…
    let backend = CpuBackend::new();
    let model = Model::load(&backend, &path).expect("load bf16");
    let got = quantized_log_probs(&backend, &model);
    let worst = max_abs_diff(&got, &log_probs(&config, want));
    eprintln!("bf16 weights and activations vs f32 on the rounded weights: max |Δ log-prob| = {worst:.2e}");
    assert!(worst < BF16_ACTIVATION_TOLERANCE, "bf16 log-probs differ by {worst}");
    // …and every SIMD level rounds the activations the same way (AVX-512 BF16 dot
    // products, or the rounded values widened back to f32): only the summation order
    // differs.
    for level in SimdLevel::available() {
        let other = CpuBackend::with_config(0, level).expect("backend");
        let model = Model::load(&other, &path).expect("load bf16");
        let worst = max_abs_diff(&quantized_log_probs(&other, &model), &got);
        assert!(worst < HALF_TOLERANCE, "bf16 log-probs on {level} differ by {worst}");
    }
}

/// Largest |a − b| allowed between log-probs of the tiny llama fixture with bf16 weights
/// (and so bf16 activations) and the f32 path on the same weights.
const BF16_ACTIVATION_TOLERANCE: f32 = 0.05;

/// Largest |a − b| allowed between log-probs computed on f16/bf16 weights by the typed
/// kernel and by the f32 path on the same (widened) values: both products are exact in
/// f32, only the summation order differs (the typed kernel sums in 8-wide lanes).
const HALF_TOLERANCE: f32 = 1e-4;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn without_undoing_the_llama_permutation_the_log_probs_would_differ() {
    // The permutation is not a no-op on this model: the stored q rows are not HF's.
    let file = GgufFile::open(&dir().join("llama_tiny.f32.gguf")).expect("open");
    let q = file.header.tensor("blk.0.attn_q.weight").expect("attn_q");
    let stored: Vec<f32> = file
        .tensor_bytes(q)
        .expect("bytes")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let hf = load_hf_model(&dir().join("llama_tiny_hf")).expect("hf");
    let hf_q = hf
        .weights
        .get("model.layers.0.self_attn.q_proj.weight")
        .expect("q_proj");
    assert_ne!(bits(&stored), bits(&hf_q.data));
    // Row 1 of the file (head 0, i = 1, j = 0) is HF's row 3 (= head_dim 6 / 2).
    assert_eq!(bits(&stored[24..48]), bits(&hf_q.data[3 * 24..4 * 24]));
}

/// gguf-py's Q8_0 file loads with its `ffn_down` kept quantized, byte for byte as the
/// file stores it; a block format r1 has no kernel for (Q5_1) is refused by name.
#[test]
fn a_q8_0_weight_loads_quantized_and_an_unknown_block_format_is_refused() {
    let exp = expected();
    let q = &exp["q8_0"];
    let path = dir().join(q["file"].as_str().expect("file"));
    let file = GgufFile::open(&path).expect("the header itself reads");
    let name = q["tensor"].as_str().expect("tensor");
    let t = file.header.tensor(name).expect("the tensor");
    assert_eq!(t.ggml_type, GgmlType::Q8_0);
    assert_eq!(t.dims, [32, 16]);
    assert_eq!(t.size, 16 * 34, "16 rows of 32 values: one 34-byte block each");
    let model = read_model(&path).expect("a Q8_0 weight loads");
    let stored = model
        .stored
        .iter()
        .find(|s| s.name == "model.layers.0.mlp.down_proj.weight")
        .expect("kept quantized");
    assert_eq!(stored.desc.dtype, QuantType::Q8_0.dtype());
    assert_eq!(stored.desc.shape.dims(), [16, 32]);
    assert_eq!(&*stored.bytes, file.tensor_bytes(t).expect("bytes"));
    assert!(model.weights.get("model.layers.0.mlp.down_proj.weight").is_none());

    let mut w = GgufWriter::new();
    for (k, v) in &file.header.metadata {
        w.add_metadata(k, v.clone()).expect("metadata");
    }
    for t in &file.header.tensors {
        let raw = file.tensor_bytes(t).expect("bytes");
        if t.name == name {
            let q5 = GgmlType::from_name("Q5_1").expect("Q5_1");
            w.add_tensor(&t.name, &t.dims, q5, vec![0; 16 * 24]).expect("q5_1");
        } else {
            w.add_tensor(&t.name, &t.dims, t.ggml_type, raw.to_vec())
                .expect("tensor");
        }
    }
    let err = gguf_model_from_bytes(&w.to_bytes(), "q5_1.gguf")
        .expect_err("Q5_1 has no kernel")
        .to_string();
    assert!(err.contains(name) && err.contains("Q5_1"), "{err}");
    assert!(err.contains("Q8_0, Q4_0, Q5_0, Q4_K and Q6_K"), "{err}");
}

fn tokenizer_of(file: &str) -> HfTokenizer {
    let f = GgufFile::open(&dir().join(file)).expect("open");
    gguf_tokenizer(&f.header, &f.label, Some(0))
        .expect("tokenizer")
        .expect("the file has one")
}

#[test]
fn the_metadata_tokenizer_encodes_as_tokenizers_does_for_each_pre_tokenizer() {
    let exp = expected();
    for (pre, t) in exp["tokenizers"].as_object().expect("tokenizers") {
        let tok = tokenizer_of(t["file"].as_str().expect("file"));
        assert_eq!(tok.vocab_size(), 320, "{pre}");
        assert_eq!(tok.eos_token(), "<|endoftext|>");
        for case in t["cases"].as_array().expect("cases") {
            let text = case["text"].as_str().expect("text");
            let want: Vec<u32> = case["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_u64().expect("id") as u32)
                .collect();
            assert_eq!(tok.encode(text).expect("encode"), want, "{pre}: {text:?}");
        }
    }
}

#[test]
fn the_gpt2_gguf_tokenizer_matches_the_tokenizer_json_it_was_made_from() {
    let tok = tokenizer_of("tokenizer_gpt-2.gguf");
    let json_dir = fixtures().join("tokenizer");
    let reference = HfTokenizer::from_json_bytes(
        &std::fs::read(json_dir.join("tokenizer.json")).expect("tokenizer.json"),
        "tokenizer.json",
        Some("<|endoftext|>"),
        None,
    )
    .expect("reference");
    let exp: Value =
        serde_json::from_slice(&std::fs::read(json_dir.join("expected.json")).expect("expected")).expect("json");
    let mut texts: Vec<String> = exp["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| c["text"].as_str().expect("text").to_string())
        .collect();
    texts.push("<think>x</think> <answer>  7</answer>\n\n\ttabs ünïcödé 🙂".into());
    for case in exp["cases"].as_array().expect("cases") {
        let text = case["text"].as_str().expect("text");
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_u64().expect("id") as u32)
            .collect();
        assert_eq!(tok.encode(text).expect("encode"), ids, "{text:?}");
        assert_eq!(
            tok.decode(&ids).expect("decode"),
            case["decoded"].as_str().expect("decoded")
        );
    }
    for text in &texts {
        assert_eq!(
            tok.encode(text).expect("encode"),
            reference.encode(text).expect("encode"),
            "{text:?}"
        );
    }
    // Special tokens are control tokens in the GGUF, special again here.
    assert_eq!(tok.encode("<think>").expect("encode"), [1]);
}

#[test]
fn the_chat_template_comes_from_the_metadata() {
    let path = dir().join("qwen2_tiny.f32.gguf");
    let template = ChatTemplate::from_model_path(&path, None)
        .expect("reads")
        .expect("the file has one");
    assert_eq!(template.eos_token(), Some("<|endoftext|>"));
    let messages = vec![serde_json::json!({"role": "user", "content": "2+2?"})];
    let text = template
        .render(
            &messages,
            &RenderOptions {
                add_generation_prompt: true,
                ..RenderOptions::default()
            },
        )
        .expect("render");
    assert_eq!(text, "<｜User｜>2+2?<｜Assistant｜><think>\n");
    let model = read_model(&path).expect("model");
    let r1_host::io::Tokenizer::HuggingFace(t) = &model.tokenizer else {
        panic!("a GGUF with tokenizer metadata has a Hugging Face tokenizer")
    };
    assert_eq!(
        t.chat_template(),
        Some(&Value::String(
            expected()["chat_template"].as_str().expect("template").into()
        ))
    );
}

fn sample_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    let meta = [
        ("general.architecture", MetaValue::String("qwen2".into())),
        ("a.u8", MetaValue::U8(200)),
        ("a.i8", MetaValue::I8(-5)),
        ("a.u16", MetaValue::U16(60000)),
        ("a.i16", MetaValue::I16(-30000)),
        ("a.u32", MetaValue::U32(4_000_000_000)),
        ("a.i32", MetaValue::I32(-2_000_000_000)),
        ("a.u64", MetaValue::U64(u64::MAX)),
        ("a.i64", MetaValue::I64(i64::MIN)),
        ("a.f32", MetaValue::F32(1.5e-6)),
        ("a.f64", MetaValue::F64(-2.25e300)),
        ("a.bool", MetaValue::Bool(true)),
        ("a.string", MetaValue::String("héllo 🙂".into())),
        (
            "a.strings",
            MetaValue::Array(MetaArray::String(vec!["".into(), "Ġa b".into(), "東京".into()])),
        ),
        ("a.i32s", MetaValue::Array(MetaArray::I32(vec![1, -3, 4]))),
        ("a.f64s", MetaValue::Array(MetaArray::F64(vec![0.5, -1.0]))),
        ("a.bools", MetaValue::Array(MetaArray::Bool(vec![false, true]))),
        ("a.u8s", MetaValue::Array(MetaArray::U8(vec![]))),
        ("general.alignment", MetaValue::U32(64)),
    ];
    for (k, v) in meta {
        w.add_metadata(k, v).expect("metadata");
    }
    w.add_f32("t.f32", &[3, 2], &[1.0, -2.0, 3.5, 0.0, -0.0, 7.25])
        .expect("f32");
    w.add_f16("t.f16", &[5], &[0.5, 1.0, -3.0, 65504.0, 1e-3]).expect("f16");
    w.add_tensor("t.q8_0", &[64, 1], GgmlType::Q8_0, (0..68).collect())
        .expect("q8_0");
    w
}

#[test]
fn the_writer_round_trips_every_value_type_and_tensor() {
    let w = sample_writer();
    let bytes = w.to_bytes();
    let file = GgufFile::from_bytes(bytes.clone(), "<bytes>").expect("reads back");
    let h = &file.header;
    assert_eq!(h.alignment, 64);
    assert_eq!(h.data_start % 64, 0);
    assert_eq!(h.metadata.len(), 19);
    assert_eq!(h.get("a.i64"), Some(&MetaValue::I64(i64::MIN)));
    assert_eq!(
        h.get("a.strings"),
        Some(&MetaValue::Array(MetaArray::String(vec![
            "".into(),
            "Ġa b".into(),
            "東京".into()
        ])))
    );
    assert_eq!(h.get("a.f32"), Some(&MetaValue::F32(1.5e-6)));
    let names: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["t.f32", "t.f16", "t.q8_0"]);
    assert!(h.tensors.iter().all(|t| t.offset % 64 == 0));
    let f32s = h.tensor("t.f32").expect("t.f32");
    assert_eq!(f32s.dims, [2, 3]);
    let raw = file.tensor_bytes(f32s).expect("bytes");
    assert_eq!(&raw[8..12], &3.5f32.to_le_bytes());
    let q = h.tensor("t.q8_0").expect("q8_0");
    assert_eq!(file.tensor_bytes(q).expect("bytes"), (0..68).collect::<Vec<u8>>());

    // Written atomically to disk, it reads back the same.
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("x.gguf");
    w.write(&path).expect("write");
    assert_eq!(std::fs::read(&path).expect("read"), bytes);
    assert_eq!(GgufFile::open(&path).expect("open").header, file.header);
    assert_eq!(
        std::fs::read_dir(tmp.path()).expect("ls").count(),
        1,
        "no temporary left"
    );
}

#[test]
fn the_writer_refuses_what_it_cannot_write_consistently() {
    let mut w = GgufWriter::new();
    w.add_metadata("k", MetaValue::U8(1)).expect("first");
    assert!(w.add_metadata("k", MetaValue::U8(2)).is_err());
    assert!(w.add_metadata("general.alignment", MetaValue::U32(48)).is_err());
    assert!(
        w.add_tensor("q", &[48, 2], GgmlType::Q8_0, vec![0; 102]).is_err(),
        "48 is not whole blocks"
    );
    assert!(w.add_tensor("f", &[2, 2], GgmlType::F32, vec![0; 15]).is_err());
    assert!(w.add_tensor("f", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0; 4]).is_err());
}

fn gguf_kind(e: IoError) -> GgufError {
    match e {
        IoError::Gguf { kind, .. } => kind,
        other => panic!("not a GGUF error: {other}"),
    }
}

/// Offset of the first tensor info's type field in `sample_writer`'s bytes.
fn first_type_field(bytes: &[u8]) -> usize {
    let h = parse_header(bytes, "x").expect("valid");
    let info = h.tensors[0].info_at as usize;
    // name (8 + 5 bytes "t.f32"), n_dims (4), 2 dims (16).
    info + 8 + 5 + 4 + 16
}

#[test]
fn broken_headers_are_errors_naming_the_place() {
    let good = sample_writer().to_bytes();

    let mut b = good.clone();
    b[0] = b'X';
    assert!(matches!(
        gguf_kind(parse_header(&b, "x").expect_err("magic")),
        GgufError::Magic { .. }
    ));

    let mut b = good.clone();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(gguf_kind(parse_header(&b, "x").expect_err("v1")), GgufError::Version(1));
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert_eq!(gguf_kind(parse_header(&b, "x").expect_err("be")), GgufError::BigEndian);

    let mut b = good.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = parse_header(&b, "x").expect_err("count").to_string();
    assert!(e.contains("18446744073709551615 tensors"), "{e}");

    let mut b = good.clone();
    let at = first_type_field(&b);
    b[at..at + 4].copy_from_slice(&4u32.to_le_bytes());
    let e = parse_header(&b, "file.gguf").expect_err("type 4");
    assert!(
        e.to_string().contains("t.f32") && e.to_string().contains("type id 4"),
        "{e}"
    );
    b[at..at + 4].copy_from_slice(&13u32.to_le_bytes()); // Q5_K: 2 is not a whole block
    let e = parse_header(&b, "x").expect_err("Q5_K").to_string();
    assert!(e.contains("t.f32") && e.contains("Q5_K"), "{e}");
    b[at + 4..at + 12].copy_from_slice(&3u64.to_le_bytes());
    b[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
    let e = parse_header(&b, "x").expect_err("misaligned").to_string();
    assert!(e.contains("t.f32") && e.contains("alignment 64"), "{e}");

    // Truncated inside the data: the tensor is named.
    let e = parse_header(&good[..good.len() - 64], "x")
        .expect_err("short")
        .to_string();
    assert!(e.contains("t.q8_0") && e.contains("past the end"), "{e}");
    // Truncated inside a metadata string: the key and offset are named.
    let cut = good.windows(9).position(|w| w == b"a.strings").expect("key") + 20;
    let e = parse_header(&good[..cut], "x").expect_err("short").to_string();
    assert!(
        e.contains("a.strings") && e.contains(&format!("byte {}", cut - 3)),
        "{e}"
    );
}

#[test]
fn a_type_r1_does_not_read_is_named() {
    let mut w = GgufWriter::new();
    let cfg = std::fs::read(dir().join("qwen2_tiny.f32.gguf")).expect("fixture");
    let h = parse_header(&cfg, "x").expect("header");
    for (k, v) in &h.metadata {
        w.add_metadata(k, v.clone()).expect("meta");
    }
    let file = GgufFile::from_bytes(cfg.clone(), "x").expect("file");
    for t in &h.tensors {
        let (ty, data) = if t.name == "blk.1.attn_k.weight" {
            (GgmlType::from_name("I8").expect("I8"), vec![0u8; t.elems() as usize])
        } else {
            (t.ggml_type, file.tensor_bytes(t).expect("bytes").to_vec())
        };
        w.add_tensor(&t.name, &t.dims, ty, data).expect("tensor");
    }
    let e = gguf_model_from_bytes(&w.to_bytes(), "m.gguf")
        .expect_err("I8")
        .to_string();
    assert!(
        e.contains("tensor `blk.1.attn_k.weight` has type I8, which r1 does not read yet"),
        "{e}"
    );
}

/// Every truncation of a valid file is an error (up to the end of its last tensor), and
/// every byte of its header and the start of its data, overwritten, gives `Ok` or an
/// error — never a panic.
#[test]
fn every_truncation_and_corruption_of_a_valid_file_is_an_error_not_a_panic() {
    let good = std::fs::read(dir().join("qwen2_tiny.f16.gguf")).expect("fixture");
    let h = parse_header(&good, "x").expect("valid");
    let end = h
        .tensors
        .iter()
        .map(|t| h.data_start + t.offset + t.size)
        .max()
        .expect("tensors") as usize;
    assert!(gguf_model_from_bytes(&good, "x").is_ok());
    for cut in 0..good.len() {
        let r = gguf_model_from_bytes(&good[..cut], "x");
        if cut < end {
            assert!(r.is_err(), "truncated to {cut} bytes but read");
        }
    }
    let header_end = h.data_start as usize + 64;
    for at in 0..header_end.min(good.len()) {
        for value in [0x00, 0xff, good[at] ^ 0x01, good[at].wrapping_add(0x40)] {
            let mut b = good.clone();
            b[at] = value;
            let _ = gguf_model_from_bytes(&b, "x");
        }
    }
}

#[test]
fn logprobs_and_generate_run_on_a_gguf_file() {
    let path = dir().join("llama_tiny.f16.gguf");
    let p = path.to_str().expect("utf-8");
    let tokens = TOKENS.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_r1host"))
            .args(args)
            .output()
            .expect("run r1host");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out: Value = serde_json::from_str(&run(&["logprobs", "--model", p, "--tokens", &tokens])).expect("json");
    // The binary computes on the f16 bytes, as the library does.
    let backend = CpuBackend::new();
    let want = quantized_log_probs(&backend, &Model::load(&backend, &path).expect("model"));
    let got: Vec<f32> = out["logprobs"]
        .as_array()
        .expect("logprobs")
        .iter()
        .map(|v| v.as_f64().expect("f64") as f32)
        .collect();
    assert_eq!(bits(&got), bits(&want));
    let text = run(&[
        "generate",
        "--model",
        p,
        "--prompt",
        "Hi",
        "--max-new-tokens",
        "5",
        "--temperature",
        "0",
    ]);
    assert!(!text.is_empty());
    let chat = run(&[
        "generate",
        "--model",
        p,
        "--prompt",
        "Hi",
        "--chat",
        "--max-new-tokens",
        "3",
        "--temperature",
        "0",
        "--json",
    ]);
    assert!(serde_json::from_str::<Value>(&chat).is_ok(), "{chat}");
}

/// `file` rewritten with `edit` applied to its metadata (tensors unchanged).
fn with_metadata(file: &str, edit: impl Fn(&str, &MetaValue) -> Option<MetaValue>) -> Vec<u8> {
    let f = GgufFile::open(&dir().join(file)).expect("open");
    let mut w = GgufWriter::new();
    for (k, v) in &f.header.metadata {
        if let Some(v) = edit(k, v) {
            w.add_metadata(k, v).expect("metadata");
        }
    }
    for t in &f.header.tensors {
        let bytes = f.tensor_bytes(t).expect("bytes").to_vec();
        w.add_tensor(&t.name, &t.dims, t.ggml_type, bytes).expect("tensor");
    }
    w.to_bytes()
}

#[test]
fn metadata_r1_cannot_use_is_named_by_key() {
    let cases: [(&str, MetaValue, &[&str]); 4] = [
        (
            "tokenizer.ggml.pre",
            MetaValue::String("falcon".into()),
            &[
                "tokenizer.ggml.pre",
                "`falcon`",
                "qwen2, deepseek-r1-qwen, llama-bpe, gpt-2",
            ],
        ),
        (
            "tokenizer.ggml.model",
            MetaValue::String("llama".into()),
            &["tokenizer.ggml.model", "`llama` is not read by r1 yet"],
        ),
        (
            "general.architecture",
            MetaValue::String("gemma".into()),
            &["general.architecture", "`gemma`", "qwen2 and llama"],
        ),
        (
            "qwen2.attention.head_count_kv",
            MetaValue::U32(3),
            &["qwen2.attention.head_count_kv", "must divide"],
        ),
    ];
    for (key, value, needles) in cases {
        let bytes = with_metadata("qwen2_tiny.f32.gguf", |k, v| {
            Some(if k == key { value.clone() } else { v.clone() })
        });
        let e = gguf_model_from_bytes(&bytes, "m.gguf").expect_err(key).to_string();
        for needle in needles {
            assert!(e.contains(needle), "{key}: missing `{needle}` in: {e}");
        }
    }
    let bytes = with_metadata("qwen2_tiny.f32.gguf", |k, v| {
        (k != "qwen2.block_count").then(|| v.clone())
    });
    let e = gguf_model_from_bytes(&bytes, "m.gguf")
        .expect_err("missing")
        .to_string();
    assert!(e.contains("metadata key `qwen2.block_count`: missing"), "{e}");
    // Without tokenizer metadata the model still loads (ids only).
    let bytes = with_metadata("qwen2_tiny.f32.gguf", |k, v| {
        (!k.starts_with("tokenizer.")).then(|| v.clone())
    });
    let m = gguf_model_from_bytes(&bytes, "m.gguf").expect("loads without a tokenizer");
    assert!(m.tokenizer.is_none());
    assert_eq!(m.config.vocab_size, 96, "from token_embd.weight");
}

// ---- models with quantized weights ---------------------------------------------------

/// A tiny model whose projections' input widths (hidden 256, MLP 256) are whole blocks
/// of every format, K-quants' 256 included; vocabulary 96 as the fixtures' tokenizer.
fn quant_config(arch: &str, tied: bool) -> ModelConfig {
    let class = if arch == "llama" {
        "LlamaForCausalLM"
    } else {
        "Qwen2ForCausalLM"
    };
    ModelConfig {
        architectures: vec![class.into()],
        model_type: Some(arch.into()),
        hidden_size: 256,
        intermediate_size: 256,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        head_dim: None,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        vocab_size: 96,
        tie_word_embeddings: tied,
        max_position_embeddings: 128,
        attention_bias: false,
        bos_token_id: None,
        eos_token_id: Some(0),
        pad_token_id: None,
        deepseek_v3: None,
    }
}

/// llama.cpp's name of a Hugging Face weight name.
fn gguf_name(hf: &str) -> String {
    r1_host::io::gguf::model::gguf_name(hf).expect("a weight with a llama.cpp name")
}

/// Writes `cfg` with random weights as a GGUF file whose projections (and untied head)
/// are `ty` (quantized with r1's quantizer), the embedding `embd_ty`, the rest F32, with
/// the llama fixture's tokenizer; llama's q/k rows permuted as the converter does.
/// Returns the file and the f32 weights the quantized ones dequantize to (what the f32
/// path should run).
fn write_quantized(cfg: &ModelConfig, ty: QuantType, embd_ty: QuantType, path: &std::path::Path) -> Weights {
    let arch = cfg.model_type.clone().expect("model_type");
    let tok = GgufFile::open(&dir().join("llama_tiny.f16.gguf")).expect("tokenizer fixture");
    let mut w = GgufWriter::new();
    let meta = |k: &str| format!("{arch}.{k}");
    let u = |n: usize| MetaValue::U32(n as u32);
    w.add_metadata("general.architecture", MetaValue::String(arch.clone()))
        .expect("meta");
    for (k, v) in [
        ("embedding_length", u(cfg.hidden_size)),
        ("feed_forward_length", u(cfg.intermediate_size)),
        ("block_count", u(cfg.num_hidden_layers)),
        ("attention.head_count", u(cfg.num_attention_heads)),
        ("attention.head_count_kv", u(cfg.kv_heads())),
        ("context_length", u(cfg.max_position_embeddings)),
        ("attention.layer_norm_rms_epsilon", MetaValue::F32(cfg.rms_norm_eps)),
        ("rope.freq_base", MetaValue::F32(cfg.rope_theta)),
    ] {
        w.add_metadata(&meta(k), v).expect("meta");
    }
    for (k, v) in &tok.header.metadata {
        if k.starts_with("tokenizer.") {
            w.add_metadata(k, v.clone()).expect("tokenizer meta");
        }
    }
    let mut dequantized = Vec::new();
    for (name, dims, values) in r1_host::weights::init_weights(cfg, 7) {
        let kind = if name.contains("_proj.weight") || name == "lm_head.weight" {
            Some(ty)
        } else if name == "model.embed_tokens.weight" {
            Some(embd_ty)
        } else {
            None
        };
        let Some(kind) = kind.filter(|&k| k != QuantType::F32) else {
            w.add_f32(&gguf_name(&name), &dims, &values).expect("f32");
            dequantized.push((name, dims, values));
            continue;
        };
        let bytes = r1_core::quant::quantize(kind, &values).expect("quantize");
        let back = r1_core::quant::dequantize(kind, &bytes, values.len()).expect("dequantize");
        let heads = if arch != "llama" {
            None
        } else if name.contains(".q_proj.") {
            Some(cfg.num_attention_heads)
        } else if name.contains(".k_proj.") {
            Some(cfg.kv_heads())
        } else {
            None
        };
        let mut file_bytes = bytes;
        if let Some(heads) = heads {
            let row = file_bytes.len() / dims[0];
            permute_rows(&mut file_bytes, &[dims[0], row], heads, cfg.head_dim());
        }
        let file_ty = GgmlType::from_id(kind.id()).expect("type");
        w.add_tensor(&gguf_name(&name), &ggml_dims(&dims), file_ty, file_bytes)
            .expect("tensor");
        dequantized.push((name, dims, back));
    }
    w.write(path).expect("write");
    Weights::from_triples(dequantized)
}

/// Log-probs of `TOKENS` through the model as loaded (quantized weights kept) on `backend`.
fn quantized_log_probs(backend: &CpuBackend, model: &Model<CpuBackend>) -> Vec<f32> {
    let ids: Vec<i32> = TOKENS.iter().map(|&t| t as i32).collect();
    let n = ids.len() - 1;
    let types = model.params.weight_types();
    let mut graph = LmGraph::with_types(
        backend,
        &model.config,
        &types,
        1,
        n,
        Objective::TokenLogProbs { temperature: 1.0 },
    )
    .expect("graph");
    let feed = Feed {
        ids: &ids[..n],
        targets: &ids[1..],
        weights: None,
    };
    graph.forward(backend, &model.params, &feed).expect("forward").0
}

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("io_gguf_quant");
    std::fs::create_dir_all(&d).expect("scratch dir");
    d.join(name)
}

/// Largest |a − b| allowed between the log-probs of the quantized path and the f32 path
/// on the dequantized weights: activations are rounded to 8 bits per block (Q8_0, or
/// Q8_K for the K-quants) before the integer dot products. Measured on these models
/// (weights N(0, 0.02²), log-probs ≈ −4.6): 4.8e-3 (Q8_0) to 1.0e-2 (Q6_K, Q4_K).
const QUANT_TOLERANCE: f32 = 3e-2;

#[test]
fn quantized_models_run_with_their_weights_kept_and_match_the_dequantized_f32_model() {
    let cases = [
        ("qwen2", false, QuantType::Q8_0, QuantType::F32),
        ("llama", false, QuantType::Q8_0, QuantType::Q8_0),
        ("qwen2", true, QuantType::Q4_0, QuantType::Q4_0),
        ("llama", false, QuantType::Q4_0, QuantType::F32),
        // llama.cpp's Q4_K_M stores rows that are not whole 256-blocks as Q5_0.
        ("llama", false, QuantType::Q5_0, QuantType::Q5_0),
        ("qwen2", false, QuantType::Q4_K, QuantType::Q6_K),
        ("llama", true, QuantType::Q6_K, QuantType::Q4_K),
    ];
    for (arch, tied, ty, embd_ty) in cases {
        let label = format!("{arch} {ty:?} (embedding {embd_ty:?}, tied {tied})");
        let cfg = quant_config(arch, tied);
        let path = scratch(&format!("{arch}_{ty:?}_{embd_ty:?}_{tied}.gguf"));
        let want_weights = write_quantized(&cfg, ty, embd_ty, &path);
        let host = read_model(&path).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(host.config, cfg, "{label}: config");
        // Every projection, an untied head and the embedding (F32 too) kept as stored.
        let matrices = cfg.num_hidden_layers * 7 + usize::from(!tied) + 1;
        assert_eq!(host.stored.len(), matrices, "{label}");
        for s in &host.stored {
            let want = if s.name == "model.embed_tokens.weight" {
                embd_ty
            } else {
                ty
            };
            assert_eq!(s.desc.dtype, want.dtype(), "{label}: {}", s.name);
        }
        assert!(
            host.weights.get("model.embed_tokens.weight").is_none(),
            "{label}: the embedding is not in the f32 layout"
        );
        // llama's q/k rows of bytes are put back: dequantized, they are the HF rows.
        for s in &host.stored {
            let q = QuantType::from_dtype(s.desc.dtype).expect("type");
            let back = r1_core::quant::dequantize(q, &s.bytes, s.desc.shape.numel()).expect("dequantize");
            let want = want_weights.get(&s.name).expect("weight");
            assert_eq!(bits(&back), bits(&want.data), "{label}: {}", s.name);
        }

        let reference = log_probs(&cfg, want_weights.clone());
        let backend = CpuBackend::new();
        let model = Model::load(&backend, &path).unwrap_or_else(|e| panic!("{label}: {e}"));
        let got = quantized_log_probs(&backend, &model);
        let worst = got
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{label}: max |Δ log-prob| vs dequantized f32 = {worst:.2e}");
        assert!(worst < QUANT_TOLERANCE, "{label}: {worst} ({got:?} vs {reference:?})");
        // Bit-identical across runs and thread counts.
        assert_eq!(
            bits(&quantized_log_probs(&backend, &model)),
            bits(&got),
            "{label}: rerun"
        );
        for threads in [1, 3] {
            let b = CpuBackend::with_threads(threads).expect("backend");
            let m = Model::load(&b, &path).expect("load");
            assert_eq!(
                bits(&quantized_log_probs(&b, &m)),
                bits(&got),
                "{label}: {threads} threads"
            );
        }
    }
}

#[test]
fn a_q8_0_models_weights_take_about_a_quarter_of_f32_and_cannot_be_trained_or_saved() {
    let cfg = quant_config("qwen2", false);
    let path = scratch("resident_q8_0.gguf");
    write_quantized(&cfg, QuantType::Q8_0, QuantType::F32, &path);
    let backend = CpuBackend::new();
    let model = Model::load(&backend, &path).expect("load");
    // A qwen2 file's weights are computed on in the file's memory map, not copied (a
    // llama file's q/k rows are reordered, so those two are copies).
    assert!(
        model.params.stored.iter().all(|s| s.buffer.is_mapped()),
        "stored weights lent from the map"
    );
    let llama = scratch("resident_q8_0_llama.gguf");
    write_quantized(&quant_config("llama", false), QuantType::Q8_0, QuantType::F32, &llama);
    let m = Model::load(&backend, &llama).expect("load llama");
    for s in &m.params.stored {
        let permuted = s.name.contains(".q_proj.") || s.name.contains(".k_proj.");
        assert_eq!(s.buffer.is_mapped(), !permuted, "{}", s.name);
    }
    let q8: Vec<_> = model
        .params
        .stored
        .iter()
        .filter(|s| s.desc.dtype != DType::F32)
        .collect();
    let stored: usize = q8.iter().map(|s| s.desc.bytes()).sum();
    let stored_f32: usize = q8.iter().map(|s| s.desc.shape.numel() * 4).sum();
    // 32 values in 34 bytes instead of 128: 1/3.76 of f32.
    assert_eq!(stored * 128, stored_f32 * 34);
    // The F32 embedding is lent from the file as well.
    let embedding: usize = model
        .params
        .stored
        .iter()
        .filter(|s| s.desc.dtype == DType::F32)
        .map(|s| s.desc.bytes())
        .sum();
    assert_eq!(embedding, cfg.vocab_size * cfg.hidden_size * 4);
    assert_eq!(
        model.resident_weight_bytes(),
        model.params.layout.total_bytes() + stored + embedding
    );
    let f32_model = Model::from_weights(
        &backend,
        cfg.clone(),
        r1_host::io::Tokenizer::byte_level(),
        Weights::from_triples(r1_host::weights::init_weights(&cfg, 7)),
    )
    .expect("f32 model");
    let ratio = f32_model.resident_weight_bytes() as f64 / model.resident_weight_bytes() as f64;
    eprintln!(
        "resident weights: Q8_0 {} bytes, f32 {} bytes ({ratio:.2}x)",
        model.resident_weight_bytes(),
        f32_model.resident_weight_bytes()
    );
    assert!(ratio > 3.0, "{ratio}");

    let save = model
        .save(&backend, &scratch("q8_0.ckpt"), None, Vec::new())
        .expect_err("a quantized model is not saved as an r1 checkpoint")
        .to_string();
    assert!(save.contains("checkpoint") && save.contains("q8_0"), "{save}");
    let train = model
        .params
        .check_trainable("SFT training")
        .expect_err("not trainable")
        .to_string();
    assert!(train.contains("cannot be trained"), "{train}");
}

#[test]
fn generate_and_logprobs_run_a_q8_0_gguf_through_the_binary() {
    let cfg = quant_config("llama", false);
    let path = scratch("cli_q8_0.gguf");
    write_quantized(&cfg, QuantType::Q8_0, QuantType::Q8_0, &path);
    let p = path.to_str().expect("utf-8");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_r1host"))
            .args(args)
            .output()
            .expect("run r1host");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let greedy = [
        "generate",
        "--model",
        p,
        "--prompt",
        "Hi",
        "--max-new-tokens",
        "6",
        "--temperature",
        "0",
    ];
    let (text, log) = run(&greedy);
    assert!(!text.is_empty());
    assert!(log.contains("bytes resident"), "{log}");
    assert_eq!(run(&greedy).0, text, "greedy generation is deterministic");
    let tokens = TOKENS.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
    let (out, _) = run(&["logprobs", "--model", p, "--tokens", &tokens]);
    let out: Value = serde_json::from_str(&out).expect("json");
    let backend = CpuBackend::new();
    let model = Model::load(&backend, &path).expect("load");
    let want = quantized_log_probs(&backend, &model);
    let got: Vec<f32> = out["logprobs"]
        .as_array()
        .expect("logprobs")
        .iter()
        .map(|v| v.as_f64().expect("f64") as f32)
        .collect();
    assert_eq!(bits(&got), bits(&want));
}
