//! Reward-plugin throughput and overhead: scores per second per core for a trivial plugin
//! and for the example plugins on realistic completions, the fixed cost of one evaluation
//! (fresh store + instantiate + init + score call) and the same reward in-process vs as a
//! plugin. Single-threaded (one evaluation at a time), so element throughput is per core.
//!
//! `cargo bench -p r1-host --bench plugin -- --warm-up-time 1 --measurement-time 3`

#[path = "../tests/integration/plugin_support/mod.rs"]
mod plugin_support;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use r1_core::reward::{Accuracy, AccuracyConfig, Reward, Sample, ThinkFormat};
use r1_host::plugin::PluginConfig;

use plugin_support::{WatPlugin, examples, host, load};

/// G = 16 completions of one prompt, as a GRPO step scores them.
const GROUP: usize = 16;

/// R1-style completions of about 1.5 KB: a think block of arithmetic steps, then an
/// answer (right for even samples, wrong for odd ones).
fn math_group() -> Vec<Sample> {
    (0..GROUP)
        .map(|i| {
            let mut thought = String::from("<think>\nWe need 37*12. ");
            for step in 0..40 {
                thought.push_str(&format!("Step {step}: 37*{step} = {}, keep going. ", 37 * step));
            }
            thought.push_str("So 37*12 = 444.\n</think>\n");
            let answer = if i % 2 == 0 { 444 } else { 440 + i };
            Sample {
                prompt: "What is 37*12?".to_string(),
                completion: format!("{thought}<answer>The answer is \\boxed{{{answer}}}</answer>"),
                reference: Some("444".to_string()),
                metadata: vec![("task".to_string(), "arithmetic".to_string())],
            }
        })
        .collect()
}

fn trivial_group(n: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| plugin_support::sample("What is 1+1?", &format!("<answer>{}</answer>", i % 3), Some("2")))
        .collect()
}

fn bench_plugins(c: &mut Criterion) {
    let host = host(1);
    let trivial = host
        .load_bytes(
            &WatPlugin::default().wasm(),
            &PluginConfig {
                name: Some("trivial".into()),
                ..PluginConfig::new("t.wasm")
            },
        )
        .expect("trivial plugin");
    let examples = examples();
    let arithmetic = load(&host, &examples.arithmetic);
    let think_format = load(&host, &examples.think_format);
    let wat = load(&host, &examples.contains_reference_wat);
    let math_plugin = load(&host, &examples.math_accuracy);
    let math_in_process = Accuracy::new(AccuracyConfig::default()).expect("accuracy");
    let format_in_process = ThinkFormat::new(Default::default()).expect("think format");

    let mut overhead = c.benchmark_group("plugin_overhead");
    let one = trivial_group(1);
    overhead.bench_function("trivial_group_of_1", |b| {
        b.iter(|| trivial.score(&one).expect("scores"))
    });
    let empty: Vec<Sample> = Vec::new();
    overhead.bench_function("arithmetic_empty_group", |b| {
        b.iter(|| arithmetic.score(&empty).expect("scores"))
    });
    overhead.finish();

    let mut throughput = c.benchmark_group("plugin_scores");
    throughput.throughput(Throughput::Elements(GROUP as u64));
    let small = trivial_group(GROUP);
    throughput.bench_function("trivial_wat_group_of_16", |b| {
        b.iter(|| trivial.score(&small).expect("scores"))
    });
    let math = math_group();
    throughput.bench_function("contains_reference_wat_1.5kB", |b| {
        b.iter(|| wat.score(&math).expect("scores"))
    });
    throughput.bench_function("arithmetic_1.5kB", |b| {
        b.iter(|| arithmetic.score(&math).expect("scores"))
    });
    throughput.bench_function("think_format_1.5kB", |b| {
        b.iter(|| think_format.score(&math).expect("scores"))
    });
    throughput.bench_function("math_accuracy_1.5kB", |b| {
        b.iter(|| math_plugin.score(&math).expect("scores"))
    });
    throughput.finish();

    // The same rule rewards without the sandbox, for the plugin's cost side by side.
    let mut in_process = c.benchmark_group("in_process_scores");
    in_process.throughput(Throughput::Elements(GROUP as u64));
    in_process.bench_function("math_accuracy_1.5kB", |b| {
        b.iter(|| math_in_process.score(&math).expect("scores"))
    });
    in_process.bench_function("think_format_1.5kB", |b| {
        b.iter(|| format_in_process.score(&math).expect("scores"))
    });
    in_process.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_plugins
}
criterion_main!(benches);
