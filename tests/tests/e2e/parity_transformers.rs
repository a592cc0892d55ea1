//! Parity with Hugging Face `transformers`: small random Qwen2 and Llama models built and
//! saved by `tests/fixtures/gen_hf_parity.py`, and DeepSeek-V3 models (MLA with and without
//! the q LoRA, YaRN, interleaved and rotate-half RoPE, DeepSeekMoE with group-limited
//! routing, dense first layers, shared experts, tied and untied, f32 and bf16) saved by
//! `tests/fixtures/gen_deepseek_v3_parity.py`, are loaded from their HF directories and
//! run by r1; per-position log-probs, logits, the cross-entropy loss and parameter
//! gradients must match what torch computed (within 1e-4).

use std::path::{Path, PathBuf};

use r1_backend_cpu::CpuBackend;
use r1_core::exec::{Bindings, Executor};
use r1_core::model::{BuildOptions, build_causal_lm};
use r1_core::{Graph, Plan};
use r1_host::io::{load_hf_model, read_safetensors};
use r1_host::train::lm_graph::{Feed, LmGraph, Objective};
use r1_host::weights::{ParamBuffer, ParamLayout, upload_weights};

const MODELS: [&str; 9] = [
    "qwen2_gqa_tied",
    "qwen2_mha_untied",
    "qwen2_bf16",
    "llama_gqa_untied",
    "llama_tied_sharded",
    "llama_f16",
    "deepseek_v3_qlora_yarn",
    "deepseek_v3_plain_tied",
    "deepseek_v3_bf16",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hf").join(name)
}

struct Loaded {
    cfg: r1_core::model::ModelConfig,
    params: ParamBuffer<CpuBackend>,
    expected: serde_json::Value,
    tokens: Vec<i32>,
}

fn load(backend: &CpuBackend, name: &str) -> Loaded {
    let dir = fixture(name);
    let model = load_hf_model(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    let layout = ParamLayout::for_config(&model.config);
    let weights = model.weights.into_triples().into_iter().map(|(n, _, v)| (n, v));
    let params = upload_weights(backend, layout, weights).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let tokens = expected["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap() as i32)
        .collect();
    Loaded {
        cfg: model.config,
        params,
        expected,
        tokens,
    }
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: r1 {g} vs transformers {w}"
        );
    }
}

#[test]
fn next_token_log_probs_match_transformers() {
    let backend = CpuBackend::new();
    for name in MODELS {
        let m = load(&backend, name);
        let n = m.tokens.len() - 1;
        let mut graph = LmGraph::new(&backend, &m.cfg, 1, n, Objective::TokenLogProbs { temperature: 1.0 }).unwrap();
        let (logp, _) = graph
            .forward(
                &backend,
                &m.params,
                &Feed {
                    ids: &m.tokens[..n],
                    targets: &m.tokens[1..],
                    weights: None,
                },
            )
            .unwrap();
        assert_close(
            &format!("{name} logprobs"),
            &logp,
            &floats(&m.expected["logprobs"]),
            1e-4,
        );
    }
}

#[test]
fn logits_match_transformers() {
    let backend = CpuBackend::new();
    for name in MODELS {
        let m = load(&backend, name);
        let t = m.tokens.len();
        let mut g = Graph::new();
        let lm = build_causal_lm(&mut g, &m.cfg, &BuildOptions::full(1, t)).unwrap();
        let plan = Plan::new(&g, &[lm.logits]).unwrap();
        let ids = backend.alloc_f32(t).unwrap();
        let bytes: Vec<u8> = m.tokens.iter().flat_map(|v| v.to_le_bytes()).collect();
        r1_core::Backend::upload(&backend, &ids, 0, &bytes).unwrap();
        let mut b = Bindings::new(&g);
        m.params.bind(&lm, &mut b).unwrap();
        b.bind(lm.input_ids, &ids, 0).unwrap();
        let mut ex = Executor::new();
        ex.run(&backend, &g, &plan, &b).unwrap();
        let logits = ex.read_f32(&backend, &g, &plan, &b, lm.logits).unwrap();
        let v = m.cfg.vocab_size;
        for (pos, want) in m.expected["logits_first3"].as_array().unwrap().iter().enumerate() {
            assert_close(
                &format!("{name} logits[{pos}]"),
                &logits[pos * v..(pos + 1) * v],
                &floats(want),
                1e-4,
            );
        }
    }
}

#[test]
fn cross_entropy_loss_and_gradients_match_torch() {
    let backend = CpuBackend::new();
    for name in MODELS {
        let m = load(&backend, name);
        let n = m.tokens.len() - 1;
        let mut graph = LmGraph::new(&backend, &m.cfg, 1, n, Objective::CrossEntropy).unwrap();
        let w = vec![1.0 / n as f32; n];
        let (loss, _) = graph
            .forward(
                &backend,
                &m.params,
                &Feed {
                    ids: &m.tokens[..n],
                    targets: &m.tokens[1..],
                    weights: Some(&w),
                },
            )
            .unwrap();
        let want = m.expected["loss"].as_f64().unwrap() as f32;
        assert!(
            (loss[0] - want).abs() <= 1e-4 * (1.0 + want.abs()),
            "{name} loss: r1 {} vs torch {want}",
            loss[0]
        );
        graph.backward(&backend, &m.params, None).unwrap();
        let mut grads = std::collections::HashMap::new();
        graph
            .for_each_grad(&m.params, |i, g| {
                let mut v = vec![0.0; g.desc.numel()];
                backend.download_f32(g.buffer, g.offset / 4, &mut v)?;
                grads.insert(m.params.layout.entries()[i].name.clone(), v);
                Ok(())
            })
            .unwrap();
        let torch = read_safetensors(&fixture(name).join("grads.safetensors")).unwrap();
        assert!(torch.len() >= 4, "{name}: too few reference gradients");
        for t in torch {
            let got = grads
                .get(&t.name)
                .unwrap_or_else(|| panic!("{name}: no gradient for {}", t.name));
            assert_close(&format!("{name} d loss / d {}", t.name), got, &t.data, 1e-4);
        }
    }
}
