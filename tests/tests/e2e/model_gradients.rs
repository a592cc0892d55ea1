//! The whole model graph, differentiated by r1's autodiff and run on the CPU backend,
//! against central finite differences of its own loss: every op's backward composed
//! the way a Llama/Qwen2 model composes them (GQA, biases, tied and untied heads).

use r1_backend_cpu::CpuBackend;
use r1_core::model::ModelConfig;
use r1_host::train::lm_graph::{Feed, LmGraph, Objective};
use r1_host::weights::{ParamLayout, init_weights, upload_weights};

fn tiny(arch: &str, tied: bool) -> ModelConfig {
    serde_json::from_value(serde_json::json!({
        "architectures": [arch],
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 29,
        "tie_word_embeddings": tied,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": 64,
    }))
    .unwrap()
}

/// Random weights with biases and norm weights away from their (0, 1) initial values so
/// their gradients are exercised.
fn weights(cfg: &ModelConfig, seed: u64) -> Vec<(String, Vec<f32>)> {
    let mut rng = r1_core::sampling::Rng::new(seed ^ 0xABCD);
    init_weights(cfg, seed)
        .into_iter()
        .map(|(name, _, mut v)| {
            for x in v.iter_mut() {
                *x = if name.ends_with("norm.weight") {
                    1.0 + 0.3 * rng.normal() as f32
                } else if name.ends_with(".bias") {
                    0.2 * rng.normal() as f32
                } else {
                    *x * 10.0 // std 0.2: large enough that attention is not uniform
                };
            }
            (name, v)
        })
        .collect()
}

fn check_gradients(cfg: ModelConfig, objective: Objective) {
    let backend = CpuBackend::with_threads(1).unwrap();
    let layout = ParamLayout::for_config(&cfg);
    let w = weights(&cfg, 3);
    let params = upload_weights(&backend, layout.clone(), w.clone()).unwrap();
    let (b, t) = (2, 7);
    let ids: Vec<i32> = (0..b * t).map(|i| ((i * 7 + 3) % cfg.vocab_size) as i32).collect();
    let mut targets: Vec<i32> = (0..b * t).map(|i| ((i * 5 + 1) % cfg.vocab_size) as i32).collect();
    targets[3] = -1; // an ignored position
    let weights_ce: Vec<f32> = targets.iter().map(|&x| if x >= 0 { 0.1 } else { 0.0 }).collect();
    // For the log-prob objective, a fixed random upstream gradient d loss / d logp.
    let d_logp: Vec<f32> = (0..b * t)
        .map(|i| {
            if targets[i] >= 0 {
                ((i as f32) * 0.37).sin()
            } else {
                0.0
            }
        })
        .collect();
    let mut graph = LmGraph::new(&backend, &cfg, b, t, objective).unwrap();
    let feed = Feed {
        ids: &ids,
        targets: &targets,
        weights: Some(&weights_ce),
    };
    let feed_lp = Feed {
        ids: &ids,
        targets: &targets,
        weights: None,
    };
    let is_ce = matches!(objective, Objective::CrossEntropy);
    let loss_of = |graph: &mut LmGraph<CpuBackend>, p: &r1_host::weights::ParamBuffer<CpuBackend>| -> f64 {
        let (out, _) = graph
            .forward(&backend, p, if is_ce { &feed } else { &feed_lp })
            .unwrap();
        if is_ce {
            out[0] as f64
        } else {
            out.iter().zip(&d_logp).map(|(a, b)| (*a * *b) as f64).sum()
        }
    };
    loss_of(&mut graph, &params);
    graph
        .backward(&backend, &params, if is_ce { None } else { Some(&d_logp) })
        .unwrap();
    let mut grads: Vec<Vec<f32>> = vec![Vec::new(); layout.entries().len()];
    graph
        .for_each_grad(&params, |i, g| {
            let mut v = vec![0.0; g.desc.numel()];
            backend.download_f32(g.buffer, g.offset / 4, &mut v)?;
            grads[i] = v;
            Ok(())
        })
        .unwrap();

    let eps = 1e-2f32;
    let mut checked = 0;
    for (pi, entry) in layout.entries().iter().enumerate() {
        assert_eq!(grads[pi].len(), entry.len, "no gradient for {}", entry.name);
        // A few coordinates of every parameter.
        for k in [0, entry.len / 2, entry.len - 1] {
            let mut plus = w.clone();
            plus[pi].1[k] += eps;
            let mut minus = w.clone();
            minus[pi].1[k] -= eps;
            let pp = upload_weights(&backend, layout.clone(), plus).unwrap();
            let pm = upload_weights(&backend, layout.clone(), minus).unwrap();
            let fd = (loss_of(&mut graph, &pp) - loss_of(&mut graph, &pm)) / (2.0 * eps as f64);
            let an = grads[pi][k] as f64;
            let tol = 2e-3 + 2e-2 * fd.abs().max(an.abs());
            assert!(
                (fd - an).abs() <= tol,
                "{}[{k}]: autodiff {an} vs finite difference {fd}",
                entry.name
            );
            checked += 1;
        }
    }
    assert!(checked >= 3 * layout.entries().len());
}

#[test]
fn qwen2_cross_entropy_gradients_match_finite_differences() {
    check_gradients(tiny("Qwen2ForCausalLM", true), Objective::CrossEntropy);
}

#[test]
fn llama_untied_cross_entropy_gradients_match_finite_differences() {
    check_gradients(tiny("LlamaForCausalLM", false), Objective::CrossEntropy);
}

#[test]
fn token_log_prob_gradients_at_a_temperature_match_finite_differences() {
    check_gradients(
        tiny("Qwen2ForCausalLM", false),
        Objective::TokenLogProbs { temperature: 0.7 },
    );
}
