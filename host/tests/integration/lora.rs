//! LoRA adapters against PEFT: adapters PEFT saved (tests/fixtures/lora, made by
//! tests/fixtures/make_lora_fixtures.py) load over their base, give PEFT's log-probs and
//! PEFT's gradients of the adapter weights, merge into PEFT's merged weights, and write
//! back as the files PEFT reads; training moves the adapter only.

use crate::io_support;

use std::path::PathBuf;
use std::sync::Arc;

use io_support::fixtures;
use r1_backend_cpu::CpuBackend;
use r1_core::model::{LoraSpec, LoraTargets};
use r1_host::adapter::merge_adapter;
use r1_host::io::peft::{ADAPTER_CONFIG_FILE, adapter_config_json};
use r1_host::io::{IoError, PeftAdapter, read_peft_adapter, read_safetensors, write_peft_adapter};
use r1_host::model::{Model, read_model};
use r1_host::train::lm_graph::{Checkpointing, Feed, LmGraph, Objective};
use r1_host::train::sft::{SftConfig, SftExample, train_sft};

const FIXTURES: [&str; 2] = ["qwen2_q_v_gate_down", "llama_all_linear_rslora"];

struct Fixture {
    dir: PathBuf,
    base: PathBuf,
    tokens: Vec<i32>,
    logprobs: Vec<f32>,
    loss: f32,
}

fn fixture(name: &str) -> Fixture {
    let dir = fixtures().join("lora").join(name);
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("expected.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let floats = |k: &str| -> Vec<f32> {
        v[k].as_array()
            .expect(k)
            .iter()
            .map(|x| x.as_f64().expect("number") as f32)
            .collect()
    };
    Fixture {
        base: fixtures().join("hf").join(v["base"].as_str().expect("base")),
        tokens: v["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .map(|x| x.as_i64().expect("id") as i32)
            .collect(),
        logprobs: floats("logprobs"),
        loss: v["loss"].as_f64().expect("loss") as f32,
        dir,
    }
}

fn adapted_model(backend: &CpuBackend, fx: &Fixture) -> Model<CpuBackend> {
    let mut model = Model::load(backend, &fx.base).expect("base model");
    let adapter = read_peft_adapter(&fx.dir).expect("PEFT adapter");
    model.attach_adapter(backend, &adapter).expect("attach");
    model
}

/// `log p(tokens[i+1] | tokens[..=i])` through `model` (an adapter included) as scoring
/// computes them.
fn scored(backend: &CpuBackend, model: &Model<CpuBackend>, tokens: &[i32]) -> Vec<f32> {
    let n = tokens.len() - 1;
    let types = model.params.weight_types();
    let objective = Objective::TokenLogProbs { temperature: 1.0 };
    let mut graph = LmGraph::with_types(backend, &model.config, &types, 1, n, objective).expect("graph");
    let feed = Feed {
        ids: &tokens[..n],
        targets: &tokens[1..],
        weights: None,
    };
    graph.forward(backend, &model.params, &feed).expect("forward").0
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn peft_adapters_give_pefts_log_probs() {
    let backend = CpuBackend::new();
    for name in FIXTURES {
        let fx = fixture(name);
        let model = adapted_model(&backend, &fx);
        assert!(
            model.params.weight_types().lora().is_some(),
            "{name}: the graph sees the adapter"
        );
        let diff = max_abs_diff(&scored(&backend, &model, &fx.tokens), &fx.logprobs);
        assert!(diff < 2e-5, "{name}: log-probs differ from PEFT's by {diff}");

        // The same tokens without the adapter are far from these: the adapter counts.
        let base = Model::load(&backend, &fx.base).expect("base");
        let without = scored(&backend, &base, &fx.tokens);
        assert!(
            max_abs_diff(&without, &fx.logprobs) > 0.05,
            "{name}: the adapter changes nothing"
        );
    }
}

#[test]
fn adapter_gradients_match_pefts_and_reach_no_base_weight() {
    let backend = CpuBackend::new();
    for name in FIXTURES {
        let fx = fixture(name);
        let model = adapted_model(&backend, &fx);
        let (loss, grads) = loss_and_grads(&backend, &model, &fx.tokens);
        assert!(
            (loss - fx.loss).abs() < 2e-5,
            "{name}: loss {loss} vs PEFT's {}",
            fx.loss
        );
        let expected = read_safetensors(&fx.dir.join("grads.safetensors")).expect("grads");
        // Exactly the adapter's weights get a gradient, none of the base's.
        let names: Vec<&str> = grads.iter().map(|(n, _)| n.as_str()).collect();
        let adapter: Vec<&str> = model.params.layout.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, adapter, "{name}: gradients reach the adapter only");
        for (weight, got) in &grads {
            let want = expected
                .iter()
                .find(|t| &t.name == weight)
                .unwrap_or_else(|| panic!("{name}: PEFT has no gradient for {weight}"));
            let scale = want.data.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
            let diff = max_abs_diff(got, &want.data);
            assert!(
                diff / scale < 1e-4,
                "{name}: {weight} differs by {diff} (scale {scale})"
            );
        }
    }
}

#[test]
fn merging_gives_pefts_merged_weights_and_the_adapted_log_probs() {
    let backend = CpuBackend::new();
    for name in FIXTURES {
        let fx = fixture(name);
        let adapter = read_peft_adapter(&fx.dir).expect("adapter");
        let mut weights = read_model(&fx.base).expect("base").weights;
        let merged = merge_adapter(&mut weights, &adapter).expect("merge");
        let expected = read_safetensors(&fx.dir.join("grads.safetensors")).expect("merged weights");
        let want: Vec<_> = expected.iter().filter(|t| t.name.starts_with("merged.")).collect();
        assert_eq!(merged, want.len(), "{name}: every adapted module merged");
        for t in want {
            let w = weights.get(&t.name["merged.".len()..]).expect("merged weight");
            let diff = max_abs_diff(&w.data, &t.data);
            assert!(diff < 1e-6, "{name}: {} differs from PEFT's merge by {diff}", w.name);
        }

        // The adapter model's own weights() are the merge, and score as the adapter does.
        let model = adapted_model(&backend, &fx);
        let downloaded = model.weights(&backend).expect("merged download");
        for (a, b) in downloaded.iter().zip(weights.iter()) {
            assert_eq!(a.name, b.name);
            assert!(max_abs_diff(&a.data, &b.data) < 1e-6, "{name}: {}", a.name);
        }
        let host = read_model(&fx.base).expect("base");
        let plain = Model::from_weights(&backend, host.config, host.tokenizer, downloaded).expect("merged model");
        let got = scored(&backend, &plain, &fx.tokens);
        assert!(max_abs_diff(&got, &fx.logprobs) < 5e-5, "{name}: merged log-probs");
    }
}

#[test]
fn written_adapters_read_back_identical_and_keep_pefts_keys() {
    for name in FIXTURES {
        let fx = fixture(name);
        let adapter = read_peft_adapter(&fx.dir).expect("adapter");
        let out = tempfile::tempdir().expect("temp dir");
        write_peft_adapter(out.path(), &adapter).expect("write");
        let back = read_peft_adapter(out.path()).expect("read back");
        assert_eq!(back, adapter, "{name}");

        // Same tensor keys as PEFT's own file, and every config key r1 writes has PEFT's
        // value where PEFT wrote one (target_modules compared as module kinds).
        let keys = |dir: &std::path::Path| {
            let bytes = std::fs::read(dir.join("adapter_model.safetensors")).expect("weights");
            let mut k: Vec<String> = safetensors::SafeTensors::deserialize(&bytes)
                .expect("safetensors")
                .names()
                .into_iter()
                .map(str::to_string)
                .collect();
            k.sort();
            k
        };
        assert_eq!(keys(out.path()), keys(&fx.dir), "{name}: tensor keys");
        let read_json = |dir: &std::path::Path| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(dir.join(ADAPTER_CONFIG_FILE)).expect("config")).expect("json")
        };
        let (ours, peft) = (read_json(out.path()), read_json(&fx.dir));
        for (k, v) in ours.as_object().expect("object") {
            if k == "target_modules" || k == "base_model_name_or_path" {
                continue;
            }
            assert_eq!(Some(v), peft.get(k), "{name}: `{k}`");
        }
    }
}

#[test]
fn unsupported_peft_settings_are_refused_by_name() {
    let fx = fixture(FIXTURES[0]);
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.dir.join(ADAPTER_CONFIG_FILE)).expect("config")).expect("json");
    let cases = [
        ("use_dora", serde_json::json!(true)),
        ("bias", serde_json::json!("all")),
        ("rank_pattern", serde_json::json!({"q_proj": 8})),
        ("layers_to_transform", serde_json::json!([0])),
        ("modules_to_save", serde_json::json!(["lm_head"])),
        ("peft_type", serde_json::json!("IA3")),
        ("target_modules", serde_json::json!(["embed_tokens"])),
        ("r", serde_json::json!(0)),
    ];
    for (key, value) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::copy(
            fx.dir.join("adapter_model.safetensors"),
            dir.path().join("adapter_model.safetensors"),
        )
        .expect("copy");
        let mut config = original.clone();
        config[key] = value;
        std::fs::write(dir.path().join(ADAPTER_CONFIG_FILE), config.to_string()).expect("write");
        match read_peft_adapter(dir.path()) {
            Err(IoError::Field { field, .. }) => assert_eq!(field, key),
            other => panic!("`{key}`: expected a field error, got {other:?}"),
        }
    }
}

#[test]
fn an_adapter_that_does_not_fit_is_refused_naming_the_weight_and_the_model_stays_whole() {
    let backend = CpuBackend::new();
    let (llama, qwen) = (fixture("llama_all_linear_rslora"), fixture("qwen2_q_v_gate_down"));
    // Another model's adapter: the first weight whose shape differs is named.
    let mut model = Model::load(&backend, &qwen.base).expect("base");
    let other = read_peft_adapter(&llama.dir).expect("adapter");
    let err = model.attach_adapter(&backend, &other).expect_err("wrong model");
    assert!(
        err.to_string().contains("q_proj.lora_A.weight") && err.to_string().contains("shape"),
        "{err}"
    );
    // A weight missing from the file is named with PEFT's key.
    let mut truncated = read_peft_adapter(&qwen.dir).expect("adapter");
    truncated
        .weights
        .retain(|t| !t.name.contains("layers.1.mlp.down_proj.lora_B"));
    let err = model.attach_adapter(&backend, &truncated).expect_err("missing weight");
    assert!(
        err.to_string()
            .contains("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"),
        "{err}"
    );
    // After refused adapters the model is whole and plain.
    assert!(model.params.base.is_none());
    assert_eq!(
        model.weights(&backend).expect("weights"),
        read_model(&qwen.base).expect("base").weights
    );
}

fn tiny_sft_examples() -> Vec<SftExample> {
    (0..8u32)
        .map(|i| SftExample {
            prompt: vec![1 + i % 5, 7, 9],
            completion: vec![20 + i % 3, 30, 2],
        })
        .collect()
}

#[test]
fn sft_with_an_adapter_lowers_the_loss_and_leaves_the_base_untouched() {
    let backend = CpuBackend::new();
    let fx = fixture("qwen2_q_v_gate_down");
    let mut model = Model::load(&backend, &fx.base).expect("base");
    let before = model.weights(&backend).expect("weights");
    let spec = LoraSpec {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        rslora: false,
        targets: LoraTargets::all_linear(),
    };
    model.attach_new_adapter(&backend, spec, 7).expect("adapter");
    // PEFT's initialisation: B = 0, so the adapted model starts as the base.
    let start = model.weights(&backend).expect("merged");
    assert_eq!(start, before, "a fresh adapter changes nothing");

    let mut sft = SftConfig::default();
    sft.optim.learning_rate = 5e-3;
    sft.num_train_epochs = 8.0;
    sft.per_device_train_batch_size = 4;
    sft.max_seq_length = 16;
    let metrics = train_sft(
        &backend,
        &model.config,
        &model.params,
        &tiny_sft_examples(),
        &sft,
        0,
        |_| Ok(()),
    )
    .expect("SFT with an adapter");
    let (first, last) = (metrics[0].loss, metrics[metrics.len() - 1].loss);
    assert!(last < first * 0.8, "loss {first} → {last}");

    let base = &model.params.base.as_ref().expect("base").params;
    let base_now = r1_host::io::Weights::from_triples(base.download_all(&backend).expect("base weights"));
    assert_eq!(base_now, before, "the frozen base did not move");
    let adapter: PeftAdapter = model.adapter(&backend, None).expect("adapter").expect("some");
    assert!(
        adapter
            .weights
            .iter()
            .any(|t| t.name.ends_with("lora_B.weight") && t.data.iter().any(|&x| x != 0.0)),
        "lora_B trained"
    );
    assert!(Arc::strong_count(base) >= 1);
    let config = adapter_config_json(&adapter.spec, None);
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 8);

    // Merged in place (the base is held by nothing else): the same weights as the merge
    // `weights()` computes, and a plain model again.
    let merged = model.weights(&backend).expect("merge");
    assert!(model.merge_adapter(&backend).expect("merge in place"));
    assert!(model.params.base.is_none() && model.params.lora().is_none());
    assert_eq!(model.weights(&backend).expect("weights"), merged);
    assert!(!model.merge_adapter(&backend).expect("nothing to merge"));
}

/// A PEFT-style adapter over every linear layer of `cfg` with random weights (B too).
fn random_adapter(cfg: &r1_core::model::ModelConfig, seed: u64) -> PeftAdapter {
    let spec = LoraSpec {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        rslora: false,
        targets: LoraTargets::all_linear(),
    };
    r1_host::adapter::random_adapter(cfg, spec, seed, 0.2)
}

/// Loss and adapter gradients (by name) of a cross-entropy step on `tokens`.
fn loss_and_grads(backend: &CpuBackend, model: &Model<CpuBackend>, tokens: &[i32]) -> (f32, Vec<(String, Vec<f32>)>) {
    let n = tokens.len() - 1;
    let types = model.params.weight_types();
    let mut graph = LmGraph::with_types(backend, &model.config, &types, 1, n, Objective::CrossEntropy).expect("graph");
    let weights = vec![1.0 / n as f32; n];
    let feed = Feed {
        ids: &tokens[..n],
        targets: &tokens[1..],
        weights: Some(&weights),
    };
    let loss = graph.forward(backend, &model.params, &feed).expect("forward").0[0];
    graph.backward(backend, &model.params, None).expect("backward");
    let mut grads = Vec::new();
    graph
        .for_each_grad(&model.params, |i, g| {
            let mut bytes = vec![0u8; g.desc.bytes()];
            r1_core::backend::Backend::download(backend, g.buffer, g.offset, &mut bytes)?;
            grads.push((
                model.params.layout.entries()[i].name.clone(),
                r1_core::backend::f32_from_bytes(&bytes),
            ));
            Ok(())
        })
        .expect("gradients");
    (loss, grads)
}

#[test]
fn an_adapter_over_quantized_weights_trains_like_one_over_their_dequantized_values() {
    let backend = CpuBackend::new();
    let gguf = fixtures().join("gguf/qwen2_tiny.q8_0.gguf");
    let mut quantized = Model::load(&backend, &gguf).expect("Q8_0 model");
    assert!(!quantized.params.stored.is_empty(), "projections stay Q8_0");
    let host = read_model(&gguf).expect("read");
    let (config, tokenizer) = (host.config.clone(), host.tokenizer.clone());
    let mut widened = Model::from_weights(
        &backend,
        config,
        tokenizer,
        host.into_f32_weights().expect("dequantize"),
    )
    .expect("f32 model");
    let adapter = random_adapter(&quantized.config, 3);
    quantized.attach_adapter(&backend, &adapter).expect("QLoRA");
    widened.attach_adapter(&backend, &adapter).expect("LoRA");

    let tokens: Vec<i32> = (0..20)
        .map(|i| ((i * 37 + 11) % quantized.config.vocab_size) as i32)
        .collect();
    let (lq, gq) = loss_and_grads(&backend, &quantized, &tokens);
    let (lf, gf) = loss_and_grads(&backend, &widened, &tokens);
    // The quantized forward rounds activations to 8 bits (llama.cpp's Q8_0 dot products):
    // the only difference, small against the adapter's own effect.
    assert!((lq - lf).abs() < 2e-3 * lf.abs(), "loss {lq} vs {lf}");
    assert_eq!(gq.len(), gf.len());
    for ((name, a), (name_f, b)) in gq.iter().zip(&gf) {
        assert_eq!(name, name_f);
        let scale = b.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
        let diff = max_abs_diff(a, b);
        assert!(
            diff / scale < 3e-2,
            "{name}: gradient differs by {diff} (scale {scale})"
        );
    }

    // Merged, the quantized base is widened: the same merge as over the f32 model.
    let merged_q = quantized.weights(&backend).expect("merge over Q8_0");
    let merged_f = widened.weights(&backend).expect("merge over f32");
    assert_eq!(merged_q, merged_f);
}

#[test]
fn lora_dropout_drops_in_training_graphs_only_with_masks_from_the_seed() {
    let backend = CpuBackend::new();
    let fx = fixture("qwen2_q_v_gate_down");
    let mut adapter = read_peft_adapter(&fx.dir).expect("adapter");
    adapter.spec.dropout = 0.1;
    let mut model = Model::load(&backend, &fx.base).expect("base");
    model.attach_adapter(&backend, &adapter).expect("attach");
    let n = fx.tokens.len() - 1;
    let types = model.params.weight_types();
    let objective = Objective::TokenLogProbs { temperature: 1.0 };
    let feed = Feed {
        ids: &fx.tokens[..n],
        targets: &fx.tokens[1..],
        weights: None,
    };
    // Scoring is PEFT's eval(): no dropout, PEFT's log-probs.
    let scored = scored(&backend, &model, &fx.tokens);
    assert!(max_abs_diff(&scored, &fx.logprobs) < 2e-5);
    // Training drops: the same seed gives the same pass, another seed another one.
    let mut train =
        LmGraph::for_training(&backend, &model.config, &types, 1, n, objective, Checkpointing::OFF).expect("graph");
    let mut pass = |seed: u32| {
        train.set_dropout_seed(&backend, seed).expect("seed");
        train.forward(&backend, &model.params, &feed).expect("forward").0
    };
    let (a, again, b) = (pass(1), pass(1), pass(2));
    assert_eq!(a, again, "a seed fixes the masks");
    assert_ne!(a, b, "another seed, other masks");
    assert!(max_abs_diff(&a, &scored) > 1e-4, "training drops the adapter's input");

    // SFT trains through the dropout and still lowers the loss.
    let mut fresh = Model::load(&backend, &fx.base).expect("base");
    let mut spec = adapter.spec;
    spec.targets = LoraTargets::all_linear();
    fresh.attach_new_adapter(&backend, spec, 5).expect("adapter");
    let mut sft = SftConfig::default();
    sft.optim.learning_rate = 5e-3;
    sft.num_train_epochs = 8.0;
    sft.per_device_train_batch_size = 4;
    sft.max_seq_length = 16;
    let m = train_sft(
        &backend,
        &fresh.config,
        &fresh.params,
        &tiny_sft_examples(),
        &sft,
        0,
        |_| Ok(()),
    )
    .expect("SFT with dropout");
    assert!(
        m[m.len() - 1].loss < m[0].loss * 0.8,
        "loss {} → {}",
        m[0].loss,
        m[m.len() - 1].loss
    );
}
