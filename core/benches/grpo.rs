//! Advantages + GRPO loss + its gradient for one training batch of 64 completions × 1024
//! tokens (8 prompts × G = 8), the shape of a typical R1-Zero step: what the trainer pays on
//! the CPU between the forward and the backward pass. It should be negligible next to the
//! forward pass itself (seconds for a 1.5B model on that batch).
//!
//! For reference, TRL 1.16's `_compute_loss` + `backward()` on the same shape in float32 on
//! the CPU: `python core/tests/fixtures/trl/gen_trl_grpo.py --time` prints its figure.

use criterion::{Criterion, criterion_group, criterion_main};
use r1_core::grpo::{GrpoConfig, ImportanceSamplingLevel, LossInputs, LossType, policy_loss_into};
use r1_core::sampling::Rng;
use std::hint::black_box;

const SEQS: usize = 64;
const LEN: usize = 1024;
const G: usize = 8;

struct Batch {
    rewards: Vec<f32>,
    logp: Vec<f32>,
    old: Vec<f32>,
    rf: Vec<f32>,
    mask: Vec<f32>,
}

fn batch() -> Batch {
    let mut rng = Rng::new(7);
    let logp: Vec<f32> = (0..SEQS * LEN).map(|_| -(rng.next_f64() * 3.0) as f32).collect();
    let old = logp.iter().map(|&l| l + (rng.normal() * 0.1) as f32).collect();
    let rf = logp.iter().map(|&l| l + (rng.normal() * 0.3) as f32).collect();
    let lens: Vec<usize> = (0..SEQS)
        .map(|_| 200 + rng.below((LEN - 200) as u64) as usize)
        .collect();
    let mask = (0..SEQS * LEN)
        .map(|i| if i % LEN < lens[i / LEN] { 1.0 } else { 0.0 })
        .collect();
    let rewards = (0..SEQS)
        .map(|_| if rng.next_f64() < 0.4 { 1.0 } else { 0.0 })
        .collect();
    Batch {
        rewards,
        logp,
        old,
        rf,
        mask,
    }
}

fn step(cfg: &GrpoConfig, b: &Batch, grad: &mut [f32]) -> f32 {
    let adv = cfg.advantages(&[&b.rewards]).expect("valid rewards").advantages;
    let inputs = LossInputs {
        logp: &b.logp,
        old_logp: Some(&b.old),
        ref_logp: Some(&b.rf),
        advantages: &adv,
        mask: &b.mask,
        completion_len: LEN,
        num_items_in_batch: None,
        is_ratio: None,
    };
    policy_loss_into(cfg, &inputs, grad).expect("valid batch").loss
}

fn bench(c: &mut Criterion) {
    let b = batch();
    let mut grad = vec![0.0f32; SEQS * LEN];
    let mut group = c.benchmark_group("grpo_step_64x1024");
    let configs = [
        (
            "dapo_token_beta0",
            GrpoConfig {
                num_generations: G,
                ..GrpoConfig::default()
            },
        ),
        (
            "dapo_token_beta0.04",
            GrpoConfig {
                num_generations: G,
                beta: 0.04,
                ..GrpoConfig::default()
            },
        ),
        (
            "grpo_sequence_beta0.04",
            GrpoConfig {
                num_generations: G,
                beta: 0.04,
                loss_type: LossType::Grpo,
                importance_sampling_level: ImportanceSamplingLevel::Sequence,
                ..GrpoConfig::default()
            },
        ),
    ];
    for (name, cfg) in &configs {
        group.bench_function(*name, |bench| {
            bench.iter(|| black_box(step(cfg, black_box(&b), &mut grad)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
