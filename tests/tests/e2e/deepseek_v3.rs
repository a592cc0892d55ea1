//! DeepSeek-V3 decoding: the engine's decode graphs over the compressed MLA cache (one
//! latent + rotary-key row per token and layer, the key/value up-projections absorbed
//! into the query and output) must give, token for token, what a full forward pass over
//! the whole sequence gives — for the transformers-made parity fixtures (q LoRA + YaRN +
//! interleaved RoPE + dense first layer; plain q + tied + rotate-half RoPE + v wider than
//! q/k; bf16) — and the same tokens as the expanded full-KV cache, in a fraction of its
//! bytes; and an FP8 block-scaled V3 checkpoint gives transformers' log-probs.

use std::path::Path;

use r1_backend_cpu::CpuBackend;
use r1_core::model::{KvCacheTypes, ModelConfig};
use r1_core::sampling::{Rng, SamplingParams};
use r1_host::engine::kv_cache::KvCache;
use r1_host::engine::{Detokenizer, Engine, GenerationConfig};
use r1_host::io::load_hf_model;
use r1_host::train::lm_graph::{Feed, LmGraph, Objective};
use r1_host::weights::{ParamBuffer, ParamLayout, upload_weights};

const MODELS: [&str; 3] = ["deepseek_v3_qlora_yarn", "deepseek_v3_plain_tied", "deepseek_v3_bf16"];

struct Ids;

impl Detokenizer for Ids {
    fn decode(&self, tokens: &[u32]) -> String {
        tokens.iter().map(|t| format!("<{t}>")).collect()
    }
    fn eos_id(&self) -> Option<u32> {
        None
    }
}

fn load(backend: &CpuBackend, name: &str) -> (ModelConfig, ParamBuffer<CpuBackend>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hf").join(name);
    let model = load_hf_model(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    let layout = ParamLayout::for_config(&model.config);
    let weights = model.weights.into_triples().into_iter().map(|(n, _, v)| (n, v));
    let params = upload_weights(backend, layout, weights).unwrap();
    (model.config, params)
}

/// The log-probs of every vocabulary entry after `seq`, by one full forward pass (no cache).
fn next_logprobs(backend: &CpuBackend, cfg: &ModelConfig, params: &ParamBuffer<CpuBackend>, seq: &[u32]) -> Vec<f32> {
    let n = seq.len();
    let v = cfg.vocab_size;
    let mut ids: Vec<i32> = Vec::with_capacity(n * v);
    let mut targets = Vec::with_capacity(n * v);
    // One row per candidate: the sequence, then the candidate as the last target.
    for cand in 0..v {
        ids.extend(seq.iter().map(|&t| t as i32));
        targets.extend(seq[1..].iter().map(|&t| t as i32));
        targets.push(cand as i32);
    }
    let mut g = LmGraph::new(backend, cfg, v, n, Objective::TokenLogProbs { temperature: 1.0 }).unwrap();
    let (lp, _) = g
        .forward(
            backend,
            params,
            &Feed {
                ids: &ids,
                targets: &targets,
                weights: None,
            },
        )
        .unwrap();
    (0..v).map(|c| lp[c * n + n - 1]).collect()
}

fn generate(
    backend: &CpuBackend,
    cfg: &ModelConfig,
    params: &ParamBuffer<CpuBackend>,
    prompt: &[u32],
    n: usize,
    sampling: SamplingParams,
) -> Vec<r1_host::engine::Completion> {
    let mut engine = Engine::new(cfg.clone());
    let generation = GenerationConfig {
        max_new_tokens: 10,
        sampling,
        stop: vec![],
    };
    engine
        .generate(
            backend,
            params,
            &Ids,
            prompt,
            n,
            &generation,
            &mut Rng::new(7),
            |_, _| {},
        )
        .unwrap()
}

#[test]
fn decoding_over_the_compressed_cache_equals_the_full_forward_token_for_token() {
    let backend = CpuBackend::new();
    for name in MODELS {
        let (cfg, params) = load(&backend, name);
        let prompt = [5u32, 17, 3, 42, 8, 0, 29];
        // Greedy: every token the full forward's argmax.
        let out = generate(&backend, &cfg, &params, &prompt, 2, SamplingParams::greedy());
        assert_eq!(out[0].tokens, out[1].tokens, "{name}: rows sharing a prefill agree");
        assert_eq!(out[0].tokens.len(), 10);
        let mut seq = prompt.to_vec();
        for (step, &t) in out[0].tokens.iter().enumerate() {
            let full = next_logprobs(&backend, &cfg, &params, &seq);
            let best = (0..full.len()).max_by(|&a, &b| full[a].total_cmp(&full[b])).unwrap();
            assert_eq!(t as usize, best, "{name}: step {step} after {seq:?}");
            seq.push(t);
        }
        // Sampled at temperature 1: every log-prob the full forward's.
        let out = generate(&backend, &cfg, &params, &prompt, 2, SamplingParams::default());
        for c in &out {
            let mut seq = prompt.to_vec();
            for (step, (&t, &lp)) in c.tokens.iter().zip(&c.logprobs).enumerate() {
                let want = next_logprobs(&backend, &cfg, &params, &seq)[t as usize];
                assert!(
                    (lp - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{name}: step {step}: cached log-prob {lp} vs full forward {want}"
                );
                seq.push(t);
            }
        }
        assert_ne!(out[0].tokens, out[1].tokens, "{name}: sampled rows should differ");
    }
}

#[test]
fn the_compressed_cache_decodes_as_the_full_kv_cache_in_fewer_bytes() {
    let backend = CpuBackend::new();
    for name in MODELS {
        let (cfg, params) = load(&backend, name);
        let mut full_cfg = cfg.clone();
        if let Some(ds) = full_cfg.deepseek_v3.as_mut() {
            ds.full_kv_cache = true;
        }
        let prompt = [1u32, 2, 3, 4, 60, 61];
        let compressed = generate(&backend, &cfg, &params, &prompt, 1, SamplingParams::default());
        let full = generate(&backend, &full_cfg, &params, &prompt, 1, SamplingParams::default());
        assert_eq!(compressed[0].tokens, full[0].tokens, "{name}");
        for (a, b) in compressed[0].logprobs.iter().zip(&full[0].logprobs) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{name}: {a} vs {b}");
        }
        let ds = cfg.deepseek_v3.as_ref().unwrap();
        let layers = cfg.num_hidden_layers;
        let small = KvCache::<CpuBackend>::bytes_per_token_for(&cfg, KvCacheTypes::F32).unwrap();
        let big = KvCache::<CpuBackend>::bytes_per_token_for(&full_cfg, KvCacheTypes::F32).unwrap();
        assert_eq!(small, layers * (ds.kv_lora_rank + ds.qk_rope_head_dim) * 4, "{name}");
        assert_eq!(big, layers * 2 * cfg.num_attention_heads * cfg.head_dim() * 4, "{name}");
        assert!(small < big);
    }
}

#[test]
fn multi_token_prediction_layers_are_skipped_on_load_only_when_the_config_declares_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hf/deepseek_v3_plain_tied");
    let model = load_hf_model(&src).expect("fixture");
    let layers = model.config.num_hidden_layers;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut tensors = model.weights.tensors.clone();
    // DeepSeek ships its MTP module as the layer after the decoder.
    tensors.push(r1_host::io::NamedTensor {
        name: format!("model.layers.{layers}.eh_proj.weight"),
        dims: vec![2, 2],
        data: vec![1.0, 2.0, 3.0, 4.0],
    });
    r1_host::io::write_safetensors(&tmp.path().join("model.safetensors"), &tensors).expect("weights");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).expect("config")).expect("json");
    std::fs::write(tmp.path().join("config.json"), config.to_string()).expect("config");
    let err = load_hf_model(tmp.path()).expect_err("an undeclared extra layer");
    assert!(err.to_string().contains("eh_proj"), "{err}");
    config["num_nextn_predict_layers"] = 1.into();
    std::fs::write(tmp.path().join("config.json"), config.to_string()).expect("config");
    let loaded = load_hf_model(tmp.path()).expect("MTP layer skipped");
    assert_eq!(loaded.weights, model.weights);
}

#[test]
fn an_fp8_block_scaled_deepseek_v3_checkpoint_gives_transformers_log_probs() {
    // Made by tests/fixtures/make_deepseek_v3_fp8_fixture.py: every decoder projection and
    // expert as float8_e4m3fn with 128×128 `weight_scale_inv` blocks, as DeepSeek ships.
    let backend = CpuBackend::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hf/deepseek_v3_fp8");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).expect("expected.json")).expect("json");
    let tokens: Vec<i32> = expected["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|v| v.as_i64().expect("id") as i32)
        .collect();
    let (cfg, params) = load(&backend, "deepseek_v3_fp8");
    let n = tokens.len() - 1;
    let mut g = LmGraph::new(&backend, &cfg, 1, n, Objective::TokenLogProbs { temperature: 1.0 }).unwrap();
    let (logp, _) = g
        .forward(
            &backend,
            &params,
            &Feed {
                ids: &tokens[..n],
                targets: &tokens[1..],
                weights: None,
            },
        )
        .unwrap();
    let want: Vec<f32> = expected["logprobs"]
        .as_array()
        .expect("logprobs")
        .iter()
        .map(|v| v.as_f64().expect("number") as f32)
        .collect();
    assert_eq!(logp.len(), want.len());
    for (i, (a, b)) in logp.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "position {i}: r1 {a} vs transformers {b}"
        );
    }
}
