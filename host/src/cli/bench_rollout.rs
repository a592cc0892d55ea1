//! `r1host bench rollout`: GRPO generation on a fleet of local `r1host serve` workers
//! against in-process generation, on a random model of a preset shape. In process, the
//! trainer's engine draws one group (G completions of one prompt) after another, as a
//! GRPO step does; on the fleet, `RemoteRollouts` spreads the same groups over 1, 2, 4, …
//! worker processes started from this binary (each with `cores / workers` threads). Both
//! sample at temperature 1 with EOS left in, so lengths are the model's. Also timed: a
//! weight push to every worker, whole model (safetensors) and a LoRA adapter (rank
//! `--lora` on every linear layer), the per-step overhead of keeping the fleet on-policy.
//!
//! Prints one JSON line per worker count (completion tokens/s, the in-process figure of
//! the same run, their ratio, the push seconds and bytes).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use r1_core::model::{LoraSpec, LoraTargets};
use r1_core::sampling::{Rng, SamplingParams};

use super::bench::preset;
use crate::device::{Device, DeviceArgs};
use crate::engine::{Detokenizer, Engine, GenerationConfig};
use crate::io::{PeftAdapter, encode_safetensors, peft_adapter_parts};
use crate::model::Model;
use crate::train::remote::{GroupRequest, RemoteRollouts, RolloutConfig, WeightsPayload};

/// The API key the bench's workers are started with.
const KEY: &str = "r1-bench-rollout";

/// What one measurement draws.
pub(super) struct RolloutLoad {
    pub workers: Vec<usize>,
    pub groups: usize,
    pub generations: usize,
    pub completion: usize,
    pub prompt: usize,
    pub lora: usize,
    pub in_flight: usize,
}

/// A worker process, killed when dropped.
struct Worker(Child, String);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_worker(model: &std::path::Path, threads: usize) -> anyhow::Result<Worker> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut child = Command::new(exe)
        .arg("serve")
        .arg("--model")
        .arg(format!("{}=bench", model.display()))
        .args(["--port", "0", "--api-key", KEY, "--weight-updates", "--max-batch", "64"])
        .args(["--threads", &threads.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting r1host serve")?;
    let stdout = child.stdout.take().context("the worker's stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("the worker printed {line:?}"))?
        .to_string();
    Ok(Worker(child, url))
}

pub(super) fn bench_rollout(preset_name: &str, device: &DeviceArgs, load: RolloutLoad) -> anyhow::Result<()> {
    if device.device != Device::Cpu {
        bail!(
            "bench rollout runs on the CPU backend only for now (device {})",
            device.device
        );
    }
    if load.groups == 0 || load.generations == 0 || load.completion == 0 || load.prompt == 0 || load.lora == 0 {
        bail!("--groups, --generations, --completion, --prompt and --lora must be at least 1");
    }
    let cfg = preset(preset_name)?;
    let cores = device
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let backend = r1_backend_cpu::CpuBackend::with_threads(cores)?;
    let model = Model::init(&backend, cfg.clone(), 0)?;
    let scratch = tempfile::tempdir()?;
    let ckpt = scratch.path().join("bench.r1ckpt");
    model.save(&backend, &ckpt, None, Vec::new())?;

    let mut rng = Rng::new(1);
    let vocab = cfg.vocab_size as u64;
    let groups: Vec<GroupRequest> = (0..load.groups)
        .map(|_| GroupRequest {
            prompt: (0..load.prompt).map(|_| rng.below(vocab) as u32).collect(),
            n: load.generations,
            max_tokens: load.completion,
            sampling: SamplingParams::default(),
            seed: rng.next_u64(),
        })
        .collect();

    // In process: the GRPO trainer's engine, one group after another.
    let mut engine = Engine::new(cfg.clone());
    let generation = GenerationConfig {
        max_new_tokens: load.completion,
        sampling: SamplingParams::default(),
        stop: Vec::new(),
    };
    let tok = &model.tokenizer as &dyn Detokenizer;
    let mut local = |gs: &[GroupRequest]| -> anyhow::Result<usize> {
        let mut tokens = 0;
        for g in gs {
            let mut r = Rng::new(g.seed);
            let done = engine.generate(
                &backend,
                &model.params,
                tok,
                &g.prompt,
                g.n,
                &generation,
                &mut r,
                |_, _| {},
            )?;
            tokens += done.iter().map(|c| c.logprobs.len()).sum::<usize>();
        }
        Ok(tokens)
    };
    local(&groups[..1])?;
    let t = Instant::now();
    let local_tokens = local(&groups)?;
    let local_rate = local_tokens as f64 / t.elapsed().as_secs_f64();

    let full = encode_safetensors(&model.weights(&backend)?.tensors)?;
    let adapter = random_adapter(&cfg, load.lora);
    let (adapter_config, adapter_bytes) = peft_adapter_parts(&adapter)?;
    let (full_bytes, lora_bytes) = (full.len(), adapter_bytes.len());
    let lora_payload = WeightsPayload::Adapter {
        config: adapter_config,
        bytes: adapter_bytes.into(),
    };
    let full_payload = WeightsPayload::Full(full.into());

    for &w in &load.workers {
        if w == 0 {
            bail!("--workers counts must be at least 1");
        }
        let threads = (cores / w).max(1);
        let workers: Vec<Worker> = (0..w)
            .map(|_| start_worker(&ckpt, threads))
            .collect::<anyhow::Result<_>>()?;
        let config = RolloutConfig {
            servers: workers.iter().map(|x| x.1.clone()).collect(),
            max_in_flight: load.in_flight,
            sync_every: 0,
            ..RolloutConfig::default()
        };
        let mut fleet = RemoteRollouts::connect_with_key(config, tok.eos_id(), Some(KEY.to_string()))?;
        // Weight pushes (the whole model, then an adapter on it), then back to the base.
        let push_full = fleet.push(&full_payload, 1)?;
        let push_lora = fleet.push(&lora_payload, 2)?;
        fleet.push(&full_payload, 3)?;
        fleet.generate(&groups[..1], 3)?;
        let t = Instant::now();
        let drawn = fleet.generate(&groups, 3)?;
        let secs = t.elapsed().as_secs_f64();
        let tokens: usize = drawn.iter().flatten().map(|c| c.logprobs.len()).sum();
        let rate = tokens as f64 / secs;
        println!(
            "{}",
            serde_json::json!({
                "bench": "rollout", "preset": preset_name, "workers": w, "threads_per_worker": threads,
                "groups": load.groups, "generations": load.generations, "completion": load.completion,
                "completion_tokens": tokens, "completion_tokens_per_s": round1(rate),
                "in_process_tokens_per_s": round1(local_rate), "vs_in_process": round2(rate / local_rate),
                "sync_full_s": round3(push_full), "sync_full_bytes": full_bytes,
                "sync_lora_s": round3(push_lora), "sync_lora_bytes": lora_bytes, "lora_rank": load.lora,
            })
        );
        drop(workers);
    }
    Ok(())
}

/// A LoRA adapter of rank `r` (alpha 2r) on every linear layer, small random weights.
fn random_adapter(cfg: &r1_core::model::ModelConfig, r: usize) -> PeftAdapter {
    let spec = LoraSpec {
        rank: r,
        alpha: 2.0 * r as f32,
        dropout: 0.0,
        rslora: false,
        targets: LoraTargets::all_linear(),
    };
    crate::adapter::random_adapter(cfg, spec, 7, 0.01)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
