//! The compute floor a benchmark's figure is set beside: the step's floating-point
//! operations (from the model's shape, counted as `2 × multiply-adds`) divided by the
//! throughput of one GEMM measured in the same run on the same backend — f32, or bf16
//! products with `--compute bf16` — a product of the shape the step spends most of its
//! time in (`tokens × hidden` activations by the widest projection). A step at
//! `of_bound = 1` would run every operation at that GEMM's speed; element-wise kernels,
//! softmaxes and the decode products of few rows all run slower, so real steps sit below
//! it.
//!
//! Llama/Qwen2-family models only (a mixture-of-experts layer's work depends on the
//! routing): the others report no bound.

use std::time::Instant;

use r1_core::backend::{Backend, f32_bytes};
use r1_core::exec::{Bindings, Executor};
use r1_core::model::ModelConfig;
use r1_core::sampling::Rng;
use r1_core::{Graph, Plan, TensorDesc};

/// Multiply-adds of the linear layers (projections, MLP, LM head) per token.
fn linear_macs(cfg: &ModelConfig) -> f64 {
    let (h, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (
        cfg.num_attention_heads * cfg.head_dim(),
        cfg.kv_heads() * cfg.head_dim(),
    );
    let layer = h * q + 2 * h * kv + q * h + 3 * h * f;
    (cfg.num_hidden_layers * layer + h * v) as f64
}

/// Forward FLOPs of `tokens` tokens that attend `attended` cached-or-earlier positions in
/// all (summed over the tokens); `None` for mixture-of-experts models.
pub(super) fn forward_flops(cfg: &ModelConfig, tokens: f64, attended: f64) -> Option<f64> {
    if cfg.deepseek_v3.is_some() {
        return None;
    }
    // Scores q·kᵀ and the weighted sum of values: 2 multiply-adds per head dim, head and
    // attended position.
    let attention = 2.0 * (cfg.num_attention_heads * cfg.head_dim() * cfg.num_hidden_layers) as f64 * attended;
    Some(2.0 * (linear_macs(cfg) * tokens + attention))
}

/// Positions attended by a causal pass over `seq` tokens after `past` cached ones.
pub(super) fn causal_attended(past: usize, seq: usize) -> f64 {
    (0..seq).map(|t| (past + t + 1) as f64).sum()
}

/// Forward + backward FLOPs of a training pass: the backward pass takes twice the
/// forward's products (the input's and the weights' gradients); with a frozen base (LoRA)
/// only the input's gradient is computed (the adapter's own products are not counted).
pub(super) fn training_flops(cfg: &ModelConfig, tokens: f64, attended: f64, frozen_base: bool) -> Option<f64> {
    let f = forward_flops(cfg, tokens, attended)?;
    Some(if frozen_base { 2.0 * f } else { 3.0 * f })
}

/// FLOP/s of the GEMM `x [m, k] · w [n, k]ᵀ` of f32 tensors on `be` — in bf16 products on
/// a bf16-compute backend — (the best of twenty runs after a warm-up), and the shape
/// measured.
pub(super) fn gemm_rate<B: Backend>(be: &B, m: usize, k: usize, n: usize) -> anyhow::Result<(f64, [usize; 3])> {
    let mut g = Graph::new();
    let x = g.input("x", TensorDesc::f32(&[m, k]))?;
    let w = g.param("w", &[n, k], false)?;
    let y = g.matmul(x, w, false, true)?;
    let plan = Plan::for_backend(&g, &[y], be)?;
    let mut rng = Rng::new(7);
    let mut fill = |len: usize| -> anyhow::Result<B::Buffer> {
        let values: Vec<f32> = (0..len).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let buf = be.alloc(4 * len)?;
        be.upload(&buf, 0, &f32_bytes(&values))?;
        Ok(buf)
    };
    let (xb, wb) = (fill(m * k)?, fill(n * k)?);
    let mut b = Bindings::new(&g);
    b.bind(x, &xb, 0)?;
    b.bind(w, &wb, 0)?;
    let mut ex = Executor::new();
    ex.run(be, &g, &plan, &b)?;
    let mut best = f64::INFINITY;
    for _ in 0..20 {
        let t = Instant::now();
        ex.run(be, &g, &plan, &b)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok((2.0 * (m * k * n) as f64 / best, [m, k, n]))
}

/// The JSON fields of a bound: FLOPs per step, the GEMM measured, the floor in seconds
/// and how close `step_s` (and the reference's, when given) comes to it.
pub(super) fn bound_fields(
    flops: Option<f64>,
    rate: (f64, [usize; 3]),
    step_s: f64,
    reference_s: Option<f64>,
) -> serde_json::Value {
    let Some(flops) = flops else {
        return serde_json::json!({ "bound": null });
    };
    let bound_s = flops / rate.0;
    let round3 = |v: f64| (v * 1e3).round() / 1e3;
    serde_json::json!({
        "gflop_per_step": round3(flops / 1e9),
        "gemm_gflop_s": (rate.0 / 1e8).round() / 10.0,
        "gemm_shape": rate.1,
        "bound_s": (bound_s * 1e4).round() / 1e4,
        "r1_of_bound": round3(bound_s / step_s),
        "reference_of_bound": reference_s.map(|r| round3(bound_s / r)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_counts_every_product_of_a_small_qwen2() {
        let cfg: ModelConfig = serde_json::from_value(serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"], "hidden_size": 8, "intermediate_size": 12,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 10,
            "max_position_embeddings": 32,
        }))
        .expect("config");
        // Per layer: q 8·8, k and v 8·4 each, o 8·8, MLP 3·8·12 = 480; head 8·10.
        assert_eq!(linear_macs(&cfg), (2 * 480 + 80) as f64);
        assert_eq!(causal_attended(0, 3), 6.0);
        assert_eq!(causal_attended(5, 2), 13.0);
        // 3 tokens attending 6 positions: 2·(1040·3 + 2·(2·4·2)·6).
        assert_eq!(
            forward_flops(&cfg, 3.0, 6.0),
            Some(2.0 * (1040.0 * 3.0 + 2.0 * 16.0 * 6.0))
        );
        assert_eq!(
            training_flops(&cfg, 1.0, 1.0, false),
            forward_flops(&cfg, 1.0, 1.0).map(|f| 3.0 * f)
        );
        assert_eq!(
            training_flops(&cfg, 1.0, 1.0, true),
            forward_flops(&cfg, 1.0, 1.0).map(|f| 2.0 * f)
        );
    }
}
