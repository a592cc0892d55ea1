//! `r1host bench decode --model FILE`: decode and prefill tokens/s of a real model file
//! (GGUF, Hugging Face directory, r1 checkpoint) beside the memory-bandwidth bound,
//! optionally beside llama.cpp on the same file (bench/reference/llamacpp_decode.py, given
//! the same threads, rounds and KV cache types).
//!
//! Figures, all from one process:
//! - `load_s`: `Model::load` (read, convert, upload);
//! - `prefill_tok_s`: prompt tokens over the time from the call to the first sampled token;
//! - `decode_tok_s`: tokens sampled after the first over the time after it (median of
//!   `--rounds` timed runs after one untimed run of the same shape, so no plan is built
//!   while timed);
//! - `peak_rss_mb`: the process's peak resident set (`VmHWM`) after decoding;
//! - `read_gb_s`: memory read bandwidth, every thread summing its share of a buffer far
//!   larger than the caches (best of several passes);
//! - `bytes_per_token`: the weight bytes one decoded token reads (every weight but an
//!   untied embedding, of which one row is read) plus the KV cache at the mean context
//!   (in the `--cache-type-k`/`--cache-type-v` types, default f32; `kv_bytes_per_token`
//!   is one position's, every layer);
//! - `bound_tok_s` = `read_gb_s` ÷ `bytes_per_token`, and `of_bound` = decode ÷ bound.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use r1_core::backend::Backend;
use r1_core::model::KvCacheTypes;
use r1_core::sampling::{Rng, SamplingParams};

use super::bench::{NoText, run_reference};
use crate::device::DeviceArgs;
use crate::engine::{Engine, GenerationConfig};
use crate::model::Model;

/// What one `bench decode --model` run decodes.
#[derive(Clone, Copy, Debug)]
pub struct DecodeRun {
    /// New tokens per completion.
    pub tokens: usize,
    /// Prompt tokens.
    pub prompt: usize,
    /// Completions decoded together.
    pub batch: usize,
    /// Timed runs (the median is reported).
    pub rounds: usize,
    /// What the KV cache stores keys and values as.
    pub cache: KvCacheTypes,
}

/// One timed generation: prefill seconds (to the first sampled token) and decode
/// tokens/s after it.
struct Timing {
    prefill_s: f64,
    decode_tok_s: f64,
}

/// `r1host bench decode --model`: see the module docs.
pub fn bench_decode_model<B: Backend>(
    be: &B,
    path: &Path,
    device: &DeviceArgs,
    run: DecodeRun,
    reference: Option<PathBuf>,
    python: &str,
) -> anyhow::Result<()> {
    if run.tokens < 2 || run.prompt == 0 || run.batch == 0 || run.rounds == 0 {
        bail!("bench decode needs --tokens ≥ 2, --prompt ≥ 1, --batch ≥ 1 and --rounds ≥ 1");
    }
    let t = Instant::now();
    let model = Model::load(be, path).with_context(|| format!("loading {}", path.display()))?;
    let load_s = t.elapsed().as_secs_f64();
    let cfg = model.config.clone();
    if run.prompt + run.tokens > cfg.max_position_embeddings {
        bail!(
            "--prompt {} + --tokens {} exceeds the model's {} positions",
            run.prompt,
            run.tokens,
            cfg.max_position_embeddings
        );
    }
    let prompt: Vec<u32> = (0..run.prompt)
        .map(|i| ((i * 7919 + 13) % cfg.vocab_size) as u32)
        .collect();
    let g = GenerationConfig {
        max_new_tokens: run.tokens,
        sampling: SamplingParams::greedy(),
        stop: vec![],
    };
    let mut engine = Engine::with_cache_types(cfg.clone(), run.cache);
    let mut rng = Rng::new(0);
    let mut timed = |engine: &mut Engine<B>| -> anyhow::Result<Timing> {
        let start = Instant::now();
        let mut first = None;
        let out = engine.generate(be, &model.params, &NoText, &prompt, run.batch, &g, &mut rng, |_, _| {
            first.get_or_insert_with(Instant::now);
        })?;
        let end = Instant::now();
        let first = first.context("no token was sampled")?;
        let n: usize = out.iter().map(|c| c.tokens.len()).sum();
        // Each completion's first token comes out of the prefill.
        let decoded = n.saturating_sub(run.batch);
        Ok(Timing {
            prefill_s: (first - start).as_secs_f64(),
            decode_tok_s: decoded as f64 / (end - first).as_secs_f64().max(1e-9),
        })
    };
    timed(&mut engine)?; // warm-up: the cache and the step plans of this shape
    let mut rounds = (0..run.rounds)
        .map(|_| timed(&mut engine))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let peak_rss = peak_rss_bytes();
    rounds.sort_by(|a, b| a.decode_tok_s.total_cmp(&b.decode_tok_s));
    let decode: Vec<f64> = rounds.iter().map(|r| r.decode_tok_s).collect();
    let median = &rounds[rounds.len() / 2];
    let mut prefill: Vec<f64> = rounds.iter().map(|r| run.prompt as f64 / r.prefill_s).collect();
    prefill.sort_by(f64::total_cmp);

    let threads = device
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let bandwidth = read_bandwidth(threads);
    let kv_per_token = engine.kv_bytes_per_token().unwrap_or(0);
    let kv = kv_per_token * run.batch * (run.prompt + run.tokens / 2);
    let per_token = decode_weight_bytes(&model) + kv;
    let bound = bandwidth / per_token as f64;

    let round1 = |x: f64| (x * 10.0).round() / 10.0;
    let mut line = serde_json::json!({
        "bench": "decode", "model": path.display().to_string(), "backend": be.name(),
        "threads": threads, "batch": run.batch, "prompt": run.prompt, "tokens": run.tokens,
        "cache_type_k": run.cache.k.name(), "cache_type_v": run.cache.v.name(),
        "kv_bytes_per_token": kv_per_token,
        "load_s": (load_s * 100.0).round() / 100.0,
        "weights_mb": round1(model.resident_weight_bytes() as f64 / 1e6),
        "peak_rss_mb": peak_rss.map(|b| round1(b as f64 / 1e6)),
        "r1_prefill_tok_s": round1(prefill[prefill.len() / 2]),
        "r1_decode_tok_s": round1(median.decode_tok_s),
        "r1_decode_tok_s_range": [round1(decode[0]), round1(decode[decode.len() - 1])],
        "read_gb_s": round1(bandwidth / 1e9),
        "bytes_per_token_mb": round1(per_token as f64 / 1e6),
        "bound_tok_s": round1(bound),
        "of_bound": (median.decode_tok_s / bound * 1000.0).round() / 1000.0,
    });
    if let Some(script) = reference {
        let args = [
            path.display().to_string(),
            run.tokens.to_string(),
            run.prompt.to_string(),
            threads.to_string(),
            run.rounds.to_string(),
            run.cache.k.name().to_string(),
            run.cache.v.name().to_string(),
        ];
        let r = run_reference(python, &script, &args)?;
        let ratio = |ours: f64, key: &str| {
            let theirs = r.get(key).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
            (ours / theirs * 100.0).round() / 100.0
        };
        line["decode_speedup"] = serde_json::json!(ratio(median.decode_tok_s, "decode_tok_s"));
        line["prefill_speedup"] = serde_json::json!(ratio(prefill[prefill.len() / 2], "prefill_tok_s"));
        line["reference"] = r;
    }
    crate::outln!("{line}")?;
    Ok(())
}

/// The weight bytes one decoded token reads: every resident weight, except that an untied
/// embedding is read one row at a time (a tied one is the LM head, read whole).
pub fn decode_weight_bytes<B: Backend>(model: &Model<B>) -> usize {
    let all = model.resident_weight_bytes();
    if model.config.tie_word_embeddings {
        return all;
    }
    let embedding = model
        .params
        .stored
        .iter()
        .find(|s| s.name == "model.embed_tokens.weight")
        .map_or(model.config.vocab_size * model.config.hidden_size * 4, |s| {
            s.desc.bytes()
        });
    all.saturating_sub(embedding)
}

/// The process's peak resident set in bytes (`VmHWM` of `/proc/self/status`), where the
/// system reports one.
pub fn peak_rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Memory read bandwidth in bytes/s: `threads` threads each sum their share of a 512 MiB
/// buffer (16 times the largest caches here) with independent accumulators; the best of
/// five passes.
pub fn read_bandwidth(threads: usize) -> f64 {
    const BYTES: usize = 512 << 20;
    let threads = threads.max(1);
    let words: Vec<u64> = (0..BYTES / 8).map(|i| i as u64).collect();
    let chunk = words.len().div_ceil(threads);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = words.chunks(chunk).map(|c| s.spawn(move || sum_words(c))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0, u64::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.min(t.elapsed().as_secs_f64());
    }
    BYTES as f64 / best
}

/// A wrapping sum with eight independent lanes, so the loads, not the adds, set the pace.
fn sum_words(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let (blocks, rest) = words.as_chunks::<8>();
    for b in blocks {
        for (a, w) in acc.iter_mut().zip(b) {
            *a = a.wrapping_add(*w);
        }
    }
    rest.iter().chain(&acc).fold(0, |s: u64, w| s.wrapping_add(*w))
}
