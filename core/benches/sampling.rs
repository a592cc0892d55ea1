//! One sampled token from a row of logits (`Sampler::sample`): what decoding pays per token
//! on the CPU after the forward pass, for the vocabularies of the `small` preset (512),
//! the `medium` one (4,096) and Qwen2.5 / R1-Distill (151,936). Logits are normal with
//! standard deviation 3 (about a trained model's spread), sampled at temperature 1 with
//! no truncation (what an OpenAI client asks for by default), with top-p 0.95, and greedy.
//!
//! Run: `cargo bench -p r1-core --bench sampling`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use r1_core::sampling::{Rng, Sampler, SamplingParams};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sample one token");
    group.throughput(Throughput::Elements(1));
    for vocab in [512usize, 4096, 151_936] {
        let mut rng = Rng::new(3);
        let logits: Vec<f32> = (0..vocab).map(|_| (rng.normal() * 3.0) as f32).collect();
        let settings = [
            ("temperature 1", SamplingParams::default()),
            (
                "top-p 0.95",
                SamplingParams {
                    top_p: 0.95,
                    ..SamplingParams::default()
                },
            ),
            (
                "greedy",
                SamplingParams {
                    temperature: 0.0,
                    ..SamplingParams::default()
                },
            ),
        ];
        for (name, params) in settings {
            let mut sampler = Sampler::new();
            let mut row = logits.clone();
            let mut draw = Rng::new(11);
            group.bench_function(format!("vocab {vocab}, {name}"), |b| {
                b.iter(|| {
                    row.copy_from_slice(&logits);
                    black_box(sampler.sample(&mut row, &[], &params, &mut draw))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
