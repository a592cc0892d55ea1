//! `r1host bench serve`: the engine service under 1…N concurrent streaming clients on a
//! random model of a preset shape. Each client submits one request (its own prompt,
//! greedy or sampled at `--temperature` from its own seed, EOS ignored so every
//! completion has the same length) and timestamps every
//! token as it arrives: time to first token (submit → first token), inter-token latency
//! (gaps between a stream's tokens) and aggregate decode tokens/s (all tokens ÷ wall time
//! from the first submit to the last token). Prints one JSON line per client count and a
//! summary with the N-client throughput relative to 1 client.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use r1_core::model::KvCacheTypes;
use r1_core::sampling::SamplingParams;

use super::bench::preset;
use crate::device::{Device, DeviceArgs};
use crate::engine::{EngineService, GenEvent, GenRequest, ServiceOptions};
use crate::model::Model;

/// Timestamps of one client's stream.
struct Stream {
    ttft: Duration,
    gaps: Vec<Duration>,
    tokens: usize,
    done: Instant,
}

/// What each client count is measured with.
pub(super) struct Load {
    /// Tokens each client streams.
    pub tokens: usize,
    /// Prompt tokens of each request.
    pub prompt: usize,
    /// Seconds of rounds per client count (at least [`MIN_ROUNDS`]).
    pub min_secs: f64,
    /// What the KV cache stores keys and values as.
    pub cache: KvCacheTypes,
    /// 0: greedy; else each client samples at this temperature (no truncation).
    pub temperature: f32,
}

/// Rounds per client count at the least: one round of a single stream lasts tens of
/// milliseconds, shorter than the machine's hiccups.
const MIN_ROUNDS: usize = 3;

pub(super) fn bench_serve(preset_name: &str, device: &DeviceArgs, clients: &[usize], load: Load) -> anyhow::Result<()> {
    let Load {
        tokens,
        prompt,
        min_secs,
        cache,
        temperature,
    } = load;
    if device.device != Device::Cpu {
        bail!(
            "bench serve runs on the CPU backend only for now (device {})",
            device.device
        );
    }
    let cfg = preset(preset_name)?;
    let most = clients.iter().copied().max().unwrap_or(1).max(1);
    if prompt == 0 || tokens == 0 {
        bail!("--prompt and --tokens must be at least 1");
    }
    if !(min_secs.is_finite() && (0.0..=3600.0).contains(&min_secs)) {
        bail!("--min-secs must be between 0 and 3600 (got {min_secs})");
    }
    if !(temperature.is_finite() && temperature >= 0.0) {
        bail!("--temperature must be a finite number at least 0 (got {temperature})");
    }
    let context = prompt + tokens;
    let opts = ServiceOptions {
        kv_cache_mib: 1 << 14,
        context: Some(context),
        max_batch: most,
        max_queue: most,
        cache_types: cache,
    };
    let threads = device.threads;
    let model_cfg = cfg.clone();
    let svc = EngineService::start_with(preset_name, None, opts, move || {
        // As the server's engine: its thread is one of the kernels' threads.
        let backend = r1_backend_cpu::CpuBackend::with_threads(threads.unwrap_or(0))?;
        let model = Model::init(&backend, model_cfg, 0)?;
        Ok((backend, model))
    })?;
    let vocab = cfg.vocab_size as u64;
    let request = |client: usize| GenRequest {
        prompt: (0..prompt as u64)
            .map(|i| ((client as u64 * 131 + i * 7 + 1) % vocab) as u32)
            .collect(),
        max_new_tokens: tokens,
        sampling: if temperature == 0.0 {
            SamplingParams::greedy()
        } else {
            SamplingParams {
                temperature,
                ..SamplingParams::default()
            }
        },
        seed: client as u64,
        ignore_eos: true,
        ..Default::default()
    };
    let runtime = super::serve::http_runtime()?;
    // Warm-up: plans for the prefill length and every batch size along the way.
    for &c in clients {
        run_clients(&runtime, &svc, c, &request)?;
    }
    let mut by_clients = Vec::new();
    for &c in clients {
        let started = Instant::now();
        let mut rounds = Vec::new();
        let mut ttft = Vec::new();
        let mut gaps = Vec::new();
        while rounds.len() < MIN_ROUNDS || started.elapsed().as_secs_f64() < min_secs {
            let start = Instant::now();
            let streams = run_clients(&runtime, &svc, c, &request)?;
            let end = streams.iter().map(|s| s.done).max().unwrap_or(start);
            let total: usize = streams.iter().map(|s| s.tokens).sum();
            rounds.push(total as f64 / (end - start).as_secs_f64().max(1e-9));
            ttft.extend(streams.iter().map(|s| s.ttft.as_secs_f64() * 1e3));
            gaps.extend(
                streams
                    .iter()
                    .flat_map(|s| s.gaps.iter().map(|g| g.as_secs_f64() * 1e3)),
            );
        }
        let n_rounds = rounds.len();
        let tps = percentile(&mut rounds, 0.5);
        let line = serde_json::json!({
            "bench": "serve", "preset": preset_name, "clients": c, "tokens_per_client": tokens,
            "prompt_tokens": prompt, "cache_type_k": cache.k.name(), "cache_type_v": cache.v.name(), "temperature": temperature, "rounds": n_rounds, "aggregate_tok_s": round1(tps),
            "aggregate_tok_s_range": [round1(rounds[0]), round1(rounds[n_rounds - 1])],
            "ttft_ms": {"p50": round2(percentile(&mut ttft, 0.5)), "p99": round2(percentile(&mut ttft, 0.99))},
            "itl_ms": {"p50": round2(percentile(&mut gaps, 0.5)), "p99": round2(percentile(&mut gaps, 0.99))},
            "kv_bytes_per_token": svc.stats().kv_bytes_per_token.load(std::sync::atomic::Ordering::Relaxed),
        });
        crate::outln!("{line}")?;
        by_clients.push((c, tps));
    }
    if let (Some(&(c1, one)), Some(&(cn, many))) = (by_clients.first(), by_clients.last())
        && cn != c1
    {
        crate::outln!(
            "{}",
            serde_json::json!({"bench": "serve", "preset": preset_name, "summary": format!("{cn} clients vs {c1}"), "throughput_ratio": round2(many / one)})
        )?;
    }
    svc.shutdown(false);
    Ok(())
}

/// `c` clients submit at once and stream to the end, each an async task on a runtime
/// like the server's (where each HTTP stream is a task reading its engine events).
fn run_clients(
    runtime: &tokio::runtime::Runtime,
    svc: &EngineService,
    c: usize,
    request: &(dyn Fn(usize) -> GenRequest + Sync),
) -> anyhow::Result<Vec<Stream>> {
    let receivers = (0..c)
        .map(|client| Ok((client, Instant::now(), svc.submit(request(client))?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    runtime
        .block_on(async {
            let tasks: Vec<_> = receivers
                .into_iter()
                .map(|(client, sent, mut rx)| {
                    tokio::spawn(async move {
                        let mut last: Option<Instant> = None;
                        let mut stream = Stream {
                            ttft: Duration::ZERO,
                            gaps: Vec::new(),
                            tokens: 0,
                            done: sent,
                        };
                        while let Some(event) = rx.recv().await {
                            match event {
                                GenEvent::Delta { tokens, .. } if !tokens.is_empty() => {
                                    let now = Instant::now();
                                    match last {
                                        None => stream.ttft = now - sent,
                                        Some(t) => stream.gaps.push(now - t),
                                    }
                                    last = Some(now);
                                    stream.tokens += tokens.len();
                                }
                                GenEvent::Delta { .. } => {}
                                GenEvent::Finished { .. } => {
                                    stream.done = Instant::now();
                                    return Ok(stream);
                                }
                                GenEvent::Failed(e) => bail!("client {client}: {e}"),
                            }
                        }
                        bail!("client {client}: the stream ended without a finish event")
                    })
                })
                .collect();
            let mut streams = Vec::with_capacity(tasks.len());
            for t in tasks {
                streams.push(t.await.map_err(|e| anyhow::anyhow!("a client task failed: {e}"))??);
            }
            Ok::<_, anyhow::Error>(streams)
        })
        .context("bench serve")
}

/// The `q` quantile (nearest rank) of `xs` (sorted in place); 0 when empty.
fn percentile(xs: &mut [f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let rank = ((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    xs[rank - 1]
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
