//! FP8 block-scaled checkpoints (DeepSeek-V3/R1's F8_E4M3 weights with `weight_scale_inv`):
//! the committed fixture against transformers' dequantization, shards that split a weight
//! from its scale, and one test per kind of bad input.

use crate::io_support;

use std::path::{Path, PathBuf};

use io_support::{fixtures, model_dir, raw_safetensors, tiny_config, tiny_weights};
use r1_host::io::fp8::e4m3_to_f32;
use r1_host::io::{
    IoError, decode_safetensors, hf_config_json, load_hf_model, read_safetensors, weights_from_safetensors_bytes,
};
use safetensors::tensor::{SafeTensors, TensorView};
use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    fixtures().join("hf").join(name)
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn fp8_fixture_loads_as_transformers_dequantizes_it_bit_for_bit() {
    // Also a checkpoint smaller than 2 bytes per weight: FP8 takes one.
    let m = load_hf_model(&fixture("llama_fp8_blocks")).expect("load the FP8 fixture");
    let original = load_hf_model(&fixture("llama_gqa_untied")).expect("load the original");
    assert_eq!(m.config, original.config);
    let dequantized =
        read_safetensors(&fixture("llama_fp8_blocks").join("dequantized.safetensors")).expect("reference");
    let reference = |name: &str| dequantized.iter().find(|t| t.name == name);
    let mut quantized = 0;
    for (t, o) in m.weights.iter().zip(original.weights.iter()) {
        assert_eq!((&t.name, &t.dims), (&o.name, &o.dims));
        match reference(&t.name) {
            Some(r) => {
                quantized += 1;
                assert_eq!(t.dims, r.dims, "{}", t.name);
                assert_eq!(bits(&t.data), bits(&r.data), "{}", t.name);
                // Dequantized, not passed through: FP8 moved the values, a little.
                assert_ne!(bits(&t.data), bits(&o.data), "{}", t.name);
                let worst = t
                    .data
                    .iter()
                    .zip(&o.data)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                let amax = o.data.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
                assert!(worst <= amax / 16.0, "{}: off by {worst}", t.name);
            }
            None => assert_eq!(bits(&t.data), bits(&o.data), "{}", t.name),
        }
    }
    assert_eq!(quantized, 14, "2 layers x 7 projections");
}

#[test]
fn e4m3_decoder_matches_torch_on_every_code() {
    let dequantized =
        read_safetensors(&fixture("llama_fp8_blocks").join("dequantized.safetensors")).expect("reference");
    let table = dequantized.iter().find(|t| t.name == "e4m3_table").expect("e4m3_table");
    assert_eq!(table.data.len(), 256);
    for (code, &torch) in (0..=255u8).zip(&table.data) {
        let ours = e4m3_to_f32(code);
        if torch.is_nan() {
            assert!(ours.is_nan(), "{code:#04X}: {ours}");
        } else {
            assert_eq!(ours.to_bits(), torch.to_bits(), "{code:#04X}: {ours} vs torch {torch}");
        }
    }
}

/// The fixture's tensors regrouped into three shards so that layer 0's weights come before
/// their scales and layer 1's scales before their weights.
fn write_split_shards(dir: &Path) {
    let bytes = std::fs::read(fixture("llama_fp8_blocks").join("model.safetensors")).expect("fixture");
    let st = SafeTensors::deserialize(&bytes).expect("fixture parses");
    let shard_of = |name: &str| {
        let scale = name.ends_with("_scale_inv");
        let fp8 = scale || st.tensor(&format!("{name}_scale_inv")).is_ok();
        match (name.starts_with("model.layers.0."), fp8, scale) {
            (_, false, _) => "model-00003-of-00003.safetensors",
            (true, _, false) | (false, _, true) => "model-00001-of-00003.safetensors",
            _ => "model-00002-of-00003.safetensors",
        }
    };
    let mut weight_map = serde_json::Map::new();
    for shard in [1, 2, 3].map(|i| format!("model-0000{i}-of-00003.safetensors")) {
        let views: Vec<(String, TensorView)> = st
            .tensors()
            .into_iter()
            .filter(|(name, _)| shard_of(name) == shard)
            .collect();
        for (name, _) in &views {
            weight_map.insert(name.clone(), json!(shard));
        }
        let out = safetensors::serialize(views, None).expect("serialize shard");
        std::fs::write(dir.join(&shard), out).expect("write shard");
    }
    let index = json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).expect("write index");
    std::fs::copy(fixture("llama_fp8_blocks").join("config.json"), dir.join("config.json")).expect("config");
}

#[test]
fn sharded_fp8_checkpoint_pairs_weights_and_scales_across_shards() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_split_shards(dir.path());
    let sharded = load_hf_model(dir.path()).expect("load shards");
    let single = load_hf_model(&fixture("llama_fp8_blocks")).expect("load single file");
    assert_eq!(sharded.weights.len(), single.weights.len());
    for (a, b) in sharded.weights.iter().zip(single.weights.iter()) {
        assert_eq!((&a.name, bits(&a.data)), (&b.name, bits(&b.data)));
    }
}

// ---- Small checkpoints built in memory: the tiny Qwen2 (hidden 8, q_proj [8, 8]) with
// q_proj in FP8, blocks of 4 x 4 unless a test says otherwise.

const Q: &str = "model.layers.0.self_attn.q_proj.weight";
const Q_SCALE: &str = "model.layers.0.self_attn.q_proj.weight_scale_inv";

/// A tensor of a hand-built file: name, safetensors dtype, shape, bytes.
struct Raw {
    name: String,
    dtype: &'static str,
    dims: Vec<usize>,
    bytes: Vec<u8>,
}

fn f32_raw(name: &str, dims: &[usize], values: &[f32]) -> Raw {
    Raw {
        name: name.into(),
        dtype: "F32",
        dims: dims.to_vec(),
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn fp8_raw(name: &str, dims: &[usize], codes: Vec<u8>) -> Raw {
    Raw {
        name: name.into(),
        dtype: "F8_E4M3",
        dims: dims.to_vec(),
        bytes: codes,
    }
}

/// A safetensors file holding `tensors` in the given order.
fn safetensors_bytes(tensors: &[Raw]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for t in tensors {
        let start = data.len();
        data.extend_from_slice(&t.bytes);
        header.insert(
            t.name.clone(),
            json!({"dtype": t.dtype, "shape": t.dims, "data_offsets": [start, data.len()]}),
        );
    }
    raw_safetensors(&Value::Object(header).to_string(), &data)
}

/// Every code but the two NaNs, spread over the range.
fn q_codes() -> Vec<u8> {
    (0..64u32)
        .map(|i| ((i * 37 + 11) % 256) as u8)
        .map(|c| if c & 0x7F == 0x7F { 0x38 } else { c })
        .collect()
}

const Q_SCALES: [f32; 4] = [0.001, 0.002, 0.0005, 0.25];

/// The tiny model's weights as F32, q_proj and any weight named in `replacement` replaced
/// by it (placed first).
fn tiny_tensors(replacement: Vec<Raw>) -> Vec<Raw> {
    let config = tiny_config(false);
    let mut out = replacement;
    for t in tiny_weights(&config).tensors {
        if t.name != Q && !out.iter().any(|r| r.name == t.name) {
            out.push(f32_raw(&t.name, &t.dims, &t.data));
        }
    }
    out
}

fn q_fp8() -> Raw {
    fp8_raw(Q, &[8, 8], q_codes())
}

fn q_scale_f32() -> Raw {
    f32_raw(Q_SCALE, &[2, 2], &Q_SCALES)
}

/// The tiny config, with `quantization_config` set to `quant` unless it is null.
fn config_with(quant: Value) -> String {
    let mut config: Value = serde_json::from_str(&hf_config_json(&tiny_config(false)).expect("config")).expect("json");
    if !quant.is_null() {
        config["quantization_config"] = quant;
    }
    config.to_string()
}

fn fp8_config(block: [usize; 2]) -> Value {
    json!({"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": block})
}

fn fp8_dir(tensors: &[Raw]) -> tempfile::TempDir {
    model_dir(&config_with(fp8_config([4, 4])), &safetensors_bytes(tensors))
}

fn expected_q(scales: &[f32]) -> Vec<f32> {
    let codes = q_codes();
    (0..64)
        .map(|i| {
            let (r, c) = (i / 8, i % 8);
            e4m3_to_f32(codes[i]) * scales[(r / 4) * 2 + c / 4]
        })
        .collect()
}

fn load_err(tensors: &[Raw]) -> IoError {
    load_hf_model(fp8_dir(tensors).path()).expect_err("loading must fail")
}

/// The tensor an FP8 error names, and its message.
fn fp8_err(err: IoError) -> (String, String) {
    let message = err.to_string();
    match err {
        IoError::Fp8 { name, .. } => (name, message),
        other => panic!("expected an FP8 error, got {other}"),
    }
}

#[test]
fn fp8_weight_loads_with_an_f32_scale_that_comes_before_it() {
    let m = load_hf_model(fp8_dir(&tiny_tensors(vec![q_scale_f32(), q_fp8()])).path()).expect("load");
    let q = m.weights.get(Q).expect("q_proj");
    assert_eq!(q.dims, [8, 8]);
    assert_eq!(bits(&q.data), bits(&expected_q(&Q_SCALES)));
    assert!(m.weights.get(Q_SCALE).is_none(), "scales are not weights");
}

#[test]
fn bf16_and_f16_scales_widen_before_scaling() {
    for dtype in ["BF16", "F16"] {
        let halves: Vec<[u8; 2]> = Q_SCALES
            .iter()
            .map(|&s| match dtype {
                "BF16" => half::bf16::from_f32(s).to_le_bytes(),
                _ => half::f16::from_f32(s).to_le_bytes(),
            })
            .collect();
        let widened: Vec<f32> = halves
            .iter()
            .map(|b| match dtype {
                "BF16" => half::bf16::from_le_bytes(*b).to_f32(),
                _ => half::f16::from_le_bytes(*b).to_f32(),
            })
            .collect();
        let scale = Raw {
            name: Q_SCALE.into(),
            dtype,
            dims: vec![2, 2],
            bytes: halves.concat(),
        };
        let m = load_hf_model(fp8_dir(&tiny_tensors(vec![q_fp8(), scale])).path()).expect(dtype);
        let q = m.weights.get(Q).expect("q_proj");
        assert_eq!(bits(&q.data), bits(&expected_q(&widened)), "{dtype}");
    }
}

#[test]
fn fp8_weight_without_its_scale_is_named() {
    let (name, msg) = fp8_err(load_err(&tiny_tensors(vec![q_fp8()])));
    assert_eq!(name, Q);
    assert!(
        msg.contains(Q_SCALE) && msg.contains("none of the checkpoint's files"),
        "{msg}"
    );
}

#[test]
fn scale_of_the_wrong_shape_is_named_with_the_shape_it_needs() {
    let scale = f32_raw(Q_SCALE, &[1, 4], &Q_SCALES);
    let (name, msg) = fp8_err(load_err(&tiny_tensors(vec![q_fp8(), scale])));
    assert_eq!(name, Q_SCALE);
    assert!(msg.contains("[1, 4]") && msg.contains("needs [2, 2]"), "{msg}");
    // Blocks of 8 x 3 need ceil(8 / 8) x ceil(8 / 3) = 1 x 3: the same 2 x 2 scale is wrong.
    let dir = model_dir(
        &config_with(fp8_config([8, 3])),
        &safetensors_bytes(&tiny_tensors(vec![q_fp8(), q_scale_f32()])),
    );
    let (name, msg) = fp8_err(load_hf_model(dir.path()).expect_err("shape"));
    assert_eq!(name, Q_SCALE);
    assert!(msg.contains("needs [1, 3]"), "{msg}");
}

#[test]
fn scale_for_a_weight_that_is_not_fp8_is_named() {
    let config = tiny_config(false);
    let q = tiny_weights(&config).get(Q).expect("q").clone();
    // The scale after the weight, and before it.
    for order in [0, 1] {
        let mut pair = vec![f32_raw(Q, &q.dims, &q.data), q_scale_f32()];
        if order == 1 {
            pair.reverse();
        }
        let (name, msg) = fp8_err(load_err(&tiny_tensors(pair)));
        assert_eq!(name, Q_SCALE);
        assert!(msg.contains("stored as F32") && msg.contains(Q), "{msg}");
    }
}

#[test]
fn scale_without_any_weight_is_named() {
    let scale = f32_raw("model.layers.0.mlp.extra.weight_scale_inv", &[1, 1], &[1.0]);
    let (name, msg) = fp8_err(load_err(&tiny_tensors(vec![q_fp8(), q_scale_f32(), scale])));
    assert_eq!(name, "model.layers.0.mlp.extra.weight_scale_inv");
    assert!(msg.contains("none of the checkpoint's files holds"), "{msg}");
}

#[test]
fn fp8_without_an_fp8_quantization_config_is_named() {
    let tensors = safetensors_bytes(&tiny_tensors(vec![q_fp8(), q_scale_f32()]));
    let dir = model_dir(&config_with(Value::Null), &tensors);
    let (name, msg) = fp8_err(load_hf_model(dir.path()).expect_err("no config"));
    assert_eq!(name, Q);
    assert!(msg.contains("quantization_config"), "{msg}");
    // A scale without the config is named too, whichever comes first.
    let tensors = safetensors_bytes(&tiny_tensors(vec![q_scale_f32(), q_fp8()]));
    let dir = model_dir(&config_with(Value::Null), &tensors);
    let (name, _) = fp8_err(load_hf_model(dir.path()).expect_err("no config"));
    assert_eq!(name, Q_SCALE);
}

#[test]
fn other_quantization_configs_are_refused_by_field() {
    let tensors = safetensors_bytes(&tiny_tensors(vec![q_fp8(), q_scale_f32()]));
    let cases = [
        (
            json!({"quant_method": "bitsandbytes", "load_in_4bit": true}),
            "quant_method",
        ),
        (json!({"quant_method": "fp8", "fmt": "e5m2"}), "fmt"),
        (
            json!({"quant_method": "fp8", "weight_block_size": [128, 0]}),
            "weight_block_size",
        ),
        (
            json!({"quant_method": "fp8", "weight_block_size": [0, 0]}),
            "weight_block_size",
        ),
    ];
    for (quant, field) in cases {
        let dir = model_dir(&config_with(quant.clone()), &tensors);
        match load_hf_model(dir.path()).expect_err("refused") {
            IoError::Field { field: f, file, .. } => {
                assert_eq!(f, format!("quantization_config.{field}"), "{quant}");
                assert!(file.ends_with("config.json"), "{file}");
            }
            other => panic!("{quant}: expected a field error, got {other}"),
        }
    }
}

#[test]
fn nan_codes_and_scales_are_named_with_their_position() {
    let mut codes = q_codes();
    codes[8 * 5 + 6] = 0x7F;
    let (name, msg) = fp8_err(load_err(&tiny_tensors(vec![fp8_raw(Q, &[8, 8], codes), q_scale_f32()])));
    assert_eq!(name, Q);
    assert!(
        msg.contains("NaN") && msg.contains("0x7F") && msg.contains("[5, 6]"),
        "{msg}"
    );
    let scale = f32_raw(Q_SCALE, &[2, 2], &[1.0, 1.0, f32::NAN, 1.0]);
    let (name, msg) = fp8_err(load_err(&tiny_tensors(vec![q_fp8(), scale])));
    assert_eq!(name, Q_SCALE);
    assert!(msg.contains("NaN") && msg.contains("block [1, 0]"), "{msg}");
}

#[test]
fn fp8_tensors_that_are_not_weight_matrices_are_named() {
    let norm = "model.norm.weight";
    let (name, msg) = fp8_err(load_err(&tiny_tensors(vec![
        q_fp8(),
        q_scale_f32(),
        fp8_raw(norm, &[8], vec![0x38; 8]),
    ])));
    assert_eq!(name, norm);
    assert!(msg.contains("matrices"), "{msg}");
    let scale = fp8_raw(Q_SCALE, &[2, 2], vec![0x38; 4]);
    let (name, msg) = fp8_err(load_err(&tiny_tensors(vec![q_fp8(), scale])));
    assert_eq!(name, Q_SCALE);
    assert!(msg.contains("F32, BF16 or F16"), "{msg}");
}

#[test]
fn fp8_weight_of_the_wrong_shape_is_a_shape_error() {
    let wrong = fp8_raw(Q, &[4, 16], q_codes());
    let scale = f32_raw(Q_SCALE, &[1, 4], &[1.0; 4]);
    match load_err(&tiny_tensors(vec![wrong, scale])) {
        IoError::Shape { name, found, .. } => assert_eq!((name.as_str(), found), (Q, vec![4, 16])),
        other => panic!("expected a shape error, got {other}"),
    }
}

#[test]
fn fp8_stored_twice_is_a_duplicate() {
    let tensors = safetensors_bytes(&tiny_tensors(vec![q_fp8(), q_scale_f32()]));
    let dir = model_dir(&config_with(fp8_config([4, 4])), &tensors);
    // The same shard twice under two names in the index: each FP8 tensor is met twice.
    std::fs::remove_file(dir.path().join("model.safetensors")).expect("rm");
    let mut map = serde_json::Map::new();
    let st = SafeTensors::deserialize(&tensors).expect("parse");
    for (i, name) in st.names().into_iter().enumerate() {
        map.insert(name.to_string(), json!(format!("s{}.safetensors", i % 2)));
    }
    std::fs::write(dir.path().join("s0.safetensors"), &tensors).expect("s0");
    std::fs::write(dir.path().join("s1.safetensors"), &tensors).expect("s1");
    let index = json!({"weight_map": map});
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).expect("index");
    let err = load_hf_model(dir.path()).expect_err("duplicate");
    assert!(matches!(err, IoError::DuplicateTensor { .. }), "{err}");
}

#[test]
fn plain_safetensors_decoding_refuses_fp8_by_name() {
    let bytes = safetensors_bytes(&[f32_raw("a", &[1], &[1.0]), fp8_raw("b.weight", &[2, 2], vec![0x38; 4])]);
    let (name, msg) = fp8_err(decode_safetensors(&bytes, "plain.safetensors").expect_err("fp8"));
    assert_eq!(name, "b.weight");
    assert!(msg.contains("plain.safetensors") && msg.contains("F8_E4M3"), "{msg}");
    let tensors = safetensors_bytes(&tiny_tensors(vec![q_fp8(), q_scale_f32()]));
    let (name, _) = fp8_err(weights_from_safetensors_bytes(&tiny_config(false), &tensors).expect_err("fp8"));
    assert_eq!(name, Q);
}

#[test]
fn fp8_codes_of_the_wrong_length_are_refused() {
    // The safetensors header check already ties bytes to shape × dtype.
    let bytes = safetensors_bytes(&[fp8_raw(Q, &[8, 8], vec![0x38; 63])]);
    assert!(matches!(
        decode_safetensors(&bytes, "short.safetensors").expect_err("short"),
        IoError::Safetensors { .. }
    ));
}
