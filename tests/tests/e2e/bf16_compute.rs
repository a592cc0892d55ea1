//! `--compute bf16` against f32 on a whole training step of a small Qwen2 model (160
//! tokens, so every projection, the LM head and their backward products go through the
//! bf16 GEMM): the loss agrees within 1e-2 relative and each parameter's gradient within
//! 3e-2 relative L2 error. The tolerance is bf16's: each operand is rounded to 8 bits of
//! significand (relative error ≤ 2⁻⁹ ≈ 2e-3 per value), the errors of a K-term sum grow
//! like √K relative to the sum's own spread, and a gradient passes through a few such
//! products. Skipped, saying so, on a CPU without AVX-512 BF16.

use r1_backend_cpu::CpuBackend;
use r1_core::Backend;
use r1_core::model::ModelConfig;
use r1_host::train::lm_graph::{Feed, LmGraph, Objective};
use r1_host::weights::{ParamLayout, init_weights, upload_weights};

fn config() -> ModelConfig {
    serde_json::from_value(serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"],
        "hidden_size": 128,
        "intermediate_size": 344,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 300,
        "tie_word_embeddings": true,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": 128,
    }))
    .unwrap()
}

/// The loss and every parameter's gradient (by name) of one cross-entropy step.
fn step(backend: &CpuBackend, cfg: &ModelConfig) -> (f32, Vec<(String, Vec<f32>)>) {
    let layout = ParamLayout::for_config(cfg);
    let params = upload_weights(
        backend,
        layout,
        init_weights(cfg, 5).into_iter().map(|(n, _, v)| (n, v)),
    )
    .unwrap();
    let (b, t) = (2, 80);
    let ids: Vec<i32> = (0..b * t).map(|i| ((i * 37 + 11) % cfg.vocab_size) as i32).collect();
    let targets: Vec<i32> = (0..b * t).map(|i| ((i * 53 + 7) % cfg.vocab_size) as i32).collect();
    let w = vec![1.0 / (b * t) as f32; b * t];
    let mut graph = LmGraph::new(backend, cfg, b, t, Objective::CrossEntropy).unwrap();
    let feed = Feed {
        ids: &ids,
        targets: &targets,
        weights: Some(&w),
    };
    let (loss, _) = graph.forward(backend, &params, &feed).unwrap();
    graph.backward(backend, &params, None).unwrap();
    let mut grads = Vec::new();
    graph
        .for_each_grad(&params, |i, g| {
            let mut v = vec![0.0; g.desc.numel()];
            backend.download_f32(g.buffer, g.offset / 4, &mut v)?;
            grads.push((params.layout.entries()[i].name.clone(), v));
            Ok(())
        })
        .unwrap();
    (loss[0], grads)
}

#[test]
fn a_bf16_compute_step_matches_f32_within_bf16_rounding() {
    let f32_be = CpuBackend::with_threads(2).unwrap();
    let bf16_be = match CpuBackend::with_threads(2).unwrap().with_bf16_compute() {
        Ok(be) => be,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    assert!(bf16_be.name().contains("bf16 compute"));
    let cfg = config();
    let (loss32, grads32) = step(&f32_be, &cfg);
    let (loss16, grads16) = step(&bf16_be, &cfg);
    assert!(
        ((loss16 - loss32) / loss32).abs() <= 1e-2,
        "loss: bf16 compute {loss16} vs f32 {loss32}"
    );
    assert_eq!(grads32.len(), grads16.len());
    let mut differs = false;
    let mut worst = (0.0f64, String::new());
    for ((name, g32), (name16, g16)) in grads32.iter().zip(&grads16) {
        assert_eq!(name, name16);
        let diff: f64 = g32
            .iter()
            .zip(g16)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = g32.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
        assert!(diff <= 3e-2 * norm, "{name}: relative L2 error {}", diff / norm);
        differs |= diff > 0.0;
        if diff / norm > worst.0 {
            worst = (diff / norm, name.clone());
        }
    }
    eprintln!(
        "loss {loss16} vs {loss32}; worst gradient: {} at {:.2e}",
        worst.1, worst.0
    );
    // The bf16 path ran: its rounding shows in the gradients.
    assert!(differs, "bf16 compute gave f32's gradients bit for bit");
}
