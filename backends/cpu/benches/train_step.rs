//! One SFT training step (forward, backward, AdamW) of the issue's random Qwen2 models on
//! the CPU backend, batch 8×128, in tokens/s, plus a per-op time profile of one step so
//! the hot kernels are visible. The graph comes from `r1-core`'s model builder and
//! autodiff and runs on its executor, as training does.
//!
//! `benches/torch_train_step.py` prints PyTorch's figures for the same models and batch.
//!
//! Run: `cargo bench -p r1-backend-cpu --bench train_step -- --warm-up-time 1 --measurement-time 5`

use std::collections::BTreeMap;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use r1_backend_cpu::{CpuBackend, CpuBuffer};
use r1_core::backend::{AdamWStep, Backend, TensorRef};
use r1_core::model::builder::{BuildOptions, build_causal_lm};
use r1_core::model::config::ModelConfig;
use r1_core::{Bindings, DType, Executor, Graph, NodeId, Plan, TensorDesc, autodiff};

const BATCH: usize = 8;
const SEQ: usize = 128;

fn config(hidden: usize, layers: usize, heads: usize, ffn: usize, vocab: usize) -> ModelConfig {
    let json = format!(
        r#"{{"architectures": ["Qwen2ForCausalLM"], "hidden_size": {hidden}, "intermediate_size": {ffn},
            "num_hidden_layers": {layers}, "num_attention_heads": {heads}, "num_key_value_heads": 2,
            "vocab_size": {vocab}, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": false}}"#
    );
    serde_json::from_str(&json).unwrap()
}

/// A built training step: graph, plan, and the buffers bound to it.
struct Step {
    graph: Graph,
    plan: Plan,
    /// (param node, grad node, param buffer, m, v)
    params: Vec<(NodeId, NodeId, CpuBuffer, CpuBuffer, CpuBuffer)>,
    inputs: Vec<(NodeId, CpuBuffer)>,
    exec: Executor<CpuBackend>,
    t: u64,
}

impl Step {
    fn new(be: &CpuBackend, cfg: &ModelConfig) -> Step {
        let mut g = Graph::new();
        let lm = build_causal_lm(&mut g, cfg, &BuildOptions::full(BATCH, SEQ)).unwrap();
        let n = BATCH * SEQ;
        let logits = g.reshape(lm.logits, &[n, cfg.vocab_size]).unwrap();
        let targets = g.input("targets", TensorDesc::new(DType::I32, &[n])).unwrap();
        let weights = g.input("weights", TensorDesc::f32(&[n])).unwrap();
        let loss = g.cross_entropy(logits, targets, weights).unwrap();
        let seed = g.fill(1.0, &[]).unwrap();
        let wrt: Vec<NodeId> = lm.params.iter().map(|(_, id)| *id).collect();
        let grads = autodiff::backward(&mut g, &[(loss, seed)], &wrt).unwrap();
        let mut outs = vec![loss];
        outs.extend(grads.iter().map(|d| d.unwrap()));
        let plan = Plan::new(&g, &outs).unwrap();
        let mut state = 0x1234_5678u32;
        let mut rnd = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32 - 0.5) * 0.04
        };
        let params = lm
            .params
            .iter()
            .zip(&grads)
            .map(|((name, id), d)| {
                let numel = g.desc(*id).unwrap().numel();
                let init: Vec<f32> = if name.ends_with("norm.weight") {
                    vec![1.0; numel]
                } else {
                    (0..numel).map(|_| rnd()).collect()
                };
                let p = be.buffer_from_f32(&init).unwrap();
                (
                    *id,
                    d.unwrap(),
                    p,
                    be.alloc_f32(numel).unwrap(),
                    be.alloc_f32(numel).unwrap(),
                )
            })
            .collect();
        let tok: Vec<i32> = (0..n).map(|i| ((i * 7919) % cfg.vocab_size) as i32).collect();
        let next: Vec<i32> = (0..n).map(|i| (((i + 1) * 7919) % cfg.vocab_size) as i32).collect();
        let inputs = vec![
            (lm.input_ids, CpuBuffer::from_i32(&tok).unwrap()),
            (targets, CpuBuffer::from_i32(&next).unwrap()),
            (weights, be.buffer_from_f32(&vec![1.0 / n as f32; n]).unwrap()),
        ];
        Step {
            graph: g,
            plan,
            params,
            inputs,
            exec: Executor::new(),
            t: 0,
        }
    }

    /// Forward + backward + AdamW; with `profile`, times each op kind.
    fn run(&mut self, be: &CpuBackend, mut profile: Option<&mut BTreeMap<String, f64>>) {
        self.t += 1;
        let bindings = {
            let mut b = Bindings::new(&self.graph);
            for (id, _, p, ..) in &self.params {
                b.bind(*id, p, 0).unwrap();
            }
            for (id, buf) in &self.inputs {
                b.bind(*id, buf, 0).unwrap();
            }
            b
        };
        match profile.as_deref_mut() {
            None => self.exec.run(be, &self.graph, &self.plan, &bindings).unwrap(),
            Some(prof) => {
                for i in 0..self.plan.steps().len() {
                    let id = self.plan.steps()[i];
                    let t = Instant::now();
                    self.exec
                        .run_steps(be, &self.graph, &self.plan, &bindings, i..i + 1)
                        .unwrap();
                    *prof
                        .entry(self.graph.node(id).unwrap().op.name().to_string())
                        .or_default() += t.elapsed().as_secs_f64();
                }
            }
        }
        let step = AdamWStep {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.01,
            step: self.t,
            grad_scale: 1.0,
        };
        let t = Instant::now();
        for (id, d, p, m, v) in &self.params {
            let desc = self.graph.desc(*id).unwrap();
            let grad = self.exec.tensor(&self.graph, &self.plan, &bindings, *d).unwrap();
            let r = |b| TensorRef {
                buffer: b,
                offset: 0,
                desc,
            };
            be.adamw(r(p), grad, r(m), r(v), &step).unwrap();
        }
        if let Some(prof) = profile {
            *prof.entry("adamw (all params)".to_string()).or_default() += t.elapsed().as_secs_f64();
        }
    }
}

/// CPU time of this process (all threads) in seconds, from `/proc/self/stat` (Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn train_step(c: &mut Criterion) {
    let be = CpuBackend::new();
    let models = [
        ("h256 L4 ffn688 V512", config(256, 4, 4, 688, 512)),
        ("h512 L8 ffn1376 V4096", config(512, 8, 8, 1376, 4096)),
    ];
    let mut group = c.benchmark_group(format!("train_step {}", be.name()));
    group.sample_size(10);
    for (name, cfg) in &models {
        let mut step = Step::new(&be, cfg);
        step.run(&be, None);
        group.throughput(Throughput::Elements((BATCH * SEQ) as u64));
        group.bench_function(*name, |b| b.iter(|| step.run(&be, None)));
    }
    group.finish();

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nload average {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    for (name, cfg) in &models {
        let mut step = Step::new(&be, cfg);
        step.run(&be, None);
        // Plain steps: wall-clock tokens/s and tokens per CPU-second (the per-core rate,
        // which a busy machine does not distort much).
        let (t, cpu0) = (Instant::now(), cpu_seconds());
        let reps = 3;
        for _ in 0..reps {
            step.run(&be, None);
        }
        let (wall, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds().zip(cpu0).map(|(b, a)| b - a));
        let tokens = (reps * BATCH * SEQ) as f64;
        println!(
            "{name}: {:.0} tokens/s wall, {:.0} tokens per CPU-second ({} threads)",
            tokens / wall,
            cpu.map_or(f64::NAN, |c| tokens / c),
            be.threads()
        );
        let mut prof = BTreeMap::new();
        let t = Instant::now();
        step.run(&be, Some(&mut prof));
        let total = t.elapsed().as_secs_f64();
        let mut rows: Vec<_> = prof.into_iter().collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        println!(
            "profile of one step ({:.1} ms with per-op synchronisation):",
            total * 1e3
        );
        for (op, secs) in rows {
            println!("  {op:<26} {:>8.2} ms {:>5.1}%", secs * 1e3, 100.0 * secs / total);
        }
    }
}

criterion_group!(benches, train_step);
criterion_main!(benches);
