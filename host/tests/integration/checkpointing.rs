//! Gradient checkpointing changes memory and not the result: a training graph that
//! recomputes its decoder layers in the backward pass gives bit-for-bit the loss and the
//! gradients of one that keeps their activations, for both objectives, both families, a
//! LoRA adapter with dropout included, and through the SFT trainer; and its activation
//! arena is smaller, the more layers it recomputes.

use r1_backend_cpu::CpuBackend;
use r1_core::model::{LoraSpec, LoraTargets, ModelConfig};
use r1_host::model::Model;
use r1_host::train::lm_graph::{Checkpointing, Feed, LmGraph, Objective};
use r1_host::train::sft::{SftConfig, SftExample, train_sft};

const LAYERS: usize = 4;

fn config(arch: &str) -> ModelConfig {
    serde_json::from_value(serde_json::json!({
        "architectures": [arch],
        "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": LAYERS,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
        "tie_word_embeddings": arch == "Qwen2ForCausalLM", "max_position_embeddings": 128,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
    }))
    .expect("config")
}

/// What one training pass of a graph gives: its forward output, every gradient by
/// weight name, and the graph's activation memory.
struct Pass {
    output: Vec<f32>,
    grads: Vec<(String, Vec<f32>)>,
    arena: usize,
}

const BATCH: usize = 4;
const SEQ: usize = 48;

fn pass(backend: &CpuBackend, model: &Model<CpuBackend>, objective: Objective, checkpoint: Checkpointing) -> Pass {
    let types = model.params.weight_types();
    let mut graph = LmGraph::for_training(backend, &model.config, &types, BATCH, SEQ, objective, checkpoint)
        .expect("training graph");
    graph.set_dropout_seed(backend, 7).expect("seed");
    let n = BATCH * SEQ;
    let ids: Vec<i32> = (0..n as i32).map(|i| (i * 37 + 5) % 300).collect();
    let targets: Vec<i32> = (0..n as i32)
        .map(|i| if i % 5 == 4 { -1 } else { (i * 11 + 3) % 300 })
        .collect();
    let weights: Vec<f32> = targets.iter().map(|&t| if t >= 0 { 0.05 } else { 0.0 }).collect();
    let feed = Feed {
        ids: &ids,
        targets: &targets,
        weights: matches!(objective, Objective::CrossEntropy).then_some(weights.as_slice()),
    };
    let (output, _) = graph.forward(backend, &model.params, &feed).expect("forward");
    let d_logp: Vec<f32> = (0..n).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
    let seed = matches!(objective, Objective::TokenLogProbs { .. }).then_some(d_logp.as_slice());
    graph.backward(backend, &model.params, seed).expect("backward");
    let mut grads = Vec::new();
    graph
        .for_each_grad(&model.params, |i, g| {
            let mut v = vec![0.0; g.desc.numel()];
            backend.download_f32(g.buffer, g.offset / 4, &mut v)?;
            grads.push((model.params.layout.entries()[i].name.clone(), v));
            Ok(())
        })
        .expect("gradients");
    Pass {
        output,
        grads,
        arena: graph.arena_bytes(),
    }
}

/// Runs `model` with no, some and all layers recomputed and checks the results are the
/// same bits and the memory goes down.
fn same_result_less_memory(backend: &CpuBackend, model: &Model<CpuBackend>, objective: Objective, what: &str) {
    let kept = pass(backend, model, objective, Checkpointing::OFF);
    assert!(!kept.grads.is_empty(), "{what}: no gradients");
    let mut arenas = vec![kept.arena];
    for layers in [2, LAYERS, usize::MAX] {
        let recomputed = pass(backend, model, objective, Checkpointing { layers });
        assert_eq!(
            recomputed.output, kept.output,
            "{what}, {layers} layers: forward output"
        );
        assert_eq!(recomputed.grads.len(), kept.grads.len(), "{what}: gradient count");
        for ((name, a), (_, b)) in recomputed.grads.iter().zip(&kept.grads) {
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{what}, {layers} layers: gradient of {name} differs"
            );
        }
        arenas.push(recomputed.arena);
    }
    println!("{what}: activation arena without / 2 layers / all / all: {arenas:?} bytes");
    assert!(
        arenas[1] < arenas[0],
        "{what}: recomputing 2 layers saves memory: {arenas:?}"
    );
    assert!(
        arenas[2] < arenas[1],
        "{what}: recomputing every layer saves more: {arenas:?}"
    );
    assert_eq!(
        arenas[2], arenas[3],
        "{what}: more layers than the model has is all of them"
    );
}

#[test]
fn recomputed_layers_give_the_same_loss_and_gradients_in_less_memory() {
    let backend = CpuBackend::new();
    for arch in ["LlamaForCausalLM", "Qwen2ForCausalLM"] {
        let model = Model::init(&backend, config(arch), 3).expect("model");
        same_result_less_memory(
            &backend,
            &model,
            Objective::CrossEntropy,
            &format!("{arch} cross-entropy"),
        );
        let logp = Objective::TokenLogProbs { temperature: 0.9 };
        same_result_less_memory(&backend, &model, logp, &format!("{arch} token log-probs"));
    }
}

#[test]
fn a_lora_adapter_with_dropout_recomputes_the_same_masks() {
    let backend = CpuBackend::new();
    let mut model = Model::init(&backend, config("Qwen2ForCausalLM"), 4).expect("model");
    let spec = LoraSpec {
        rank: 4,
        alpha: 8.0,
        dropout: 0.2,
        rslora: false,
        targets: LoraTargets::all_linear(),
    };
    model.attach_new_adapter(&backend, spec, 9).expect("adapter");
    // A fresh adapter's B is zero, so A would get no gradient: move B off zero first.
    let examples = sft_examples();
    let mut warm = SftConfig::default();
    warm.optim.learning_rate = 1e-2;
    warm.max_steps = Some(1);
    warm.max_seq_length = 16;
    train_sft(&backend, &model.config, &model.params, &examples, &warm, 0, |_| Ok(())).expect("warm-up step");
    same_result_less_memory(
        &backend,
        &model,
        Objective::TokenLogProbs { temperature: 1.0 },
        "LoRA r4, dropout 0.2",
    );
}

fn sft_examples() -> Vec<SftExample> {
    (0..8u32)
        .map(|i| SftExample {
            prompt: vec![1 + i % 5, 7, 9, 40 + i],
            completion: vec![20 + i % 3, 30, 100 + i, 2],
        })
        .collect()
}

#[test]
fn sft_with_gradient_checkpointing_trains_to_the_same_weights() {
    let backend = CpuBackend::new();
    let run = |checkpointing: bool| {
        let model = Model::init(&backend, config("LlamaForCausalLM"), 5).expect("model");
        let mut sft = SftConfig::default();
        sft.optim.learning_rate = 3e-3;
        sft.max_steps = Some(3);
        sft.per_device_train_batch_size = 4;
        sft.max_seq_length = 16;
        sft.gradient_checkpointing = checkpointing;
        let metrics = train_sft(&backend, &model.config, &model.params, &sft_examples(), &sft, 0, |_| {
            Ok(())
        })
        .expect("SFT");
        let losses: Vec<f64> = metrics.iter().map(|m| m.loss).collect();
        (losses, model.params.download_all(&backend).expect("weights"))
    };
    let (losses, weights) = run(false);
    let (losses_ckpt, weights_ckpt) = run(true);
    assert_eq!(losses, losses_ckpt, "per-step losses");
    assert!(losses[2] < losses[0], "it trains: {losses:?}");
    assert_eq!(weights, weights_ckpt, "weights after 3 steps");
}

#[test]
fn checkpointing_settings_parse_as_trainers_name_them() {
    let sft: SftConfig =
        toml::from_str("gradient_checkpointing = true\ngradient_checkpointing_layers = 6\n").expect("SFT settings");
    assert_eq!(
        Checkpointing::from_settings(sft.gradient_checkpointing, sft.gradient_checkpointing_layers),
        Checkpointing { layers: 6 }
    );
    let all = Checkpointing::from_settings(true, None);
    assert_eq!(all.layers, usize::MAX);
    assert_eq!(Checkpointing::from_settings(false, Some(3)), Checkpointing::OFF);
    let grpo: r1_host::train::grpo::GrpoTrainConfig =
        toml::from_str("gradient_checkpointing = true\n").expect("GRPO settings");
    assert!(grpo.gradient_checkpointing && grpo.gradient_checkpointing_layers.is_none());
}
