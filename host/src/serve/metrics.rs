//! `/metrics` in the Prometheus text format: what the HTTP layer counts itself (requests
//! and rejections by endpoint and status, tokens, time to first token and inter-token
//! latency, reward-plugin failures) and, read at scrape time, each engine's live figures
//! (queue depth, running sequences, batch size, KV-cache use).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use super::error::ServeError;
use super::registry::LoadedModel;

/// The server's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    http_requests: IntCounterVec,
    http_rejections: IntCounterVec,
    prompt_tokens: IntCounterVec,
    completion_tokens: IntCounterVec,
    reasoning_tokens: IntCounterVec,
    ttft: HistogramVec,
    inter_token: HistogramVec,
    plugin_evaluations: IntCounterVec,
    plugin_failures: IntCounterVec,
    engine: EngineGauges,
}

/// Figures copied from each engine's `ServiceStats` when scraped.
struct EngineGauges {
    queue_depth: IntGaugeVec,
    running: IntGaugeVec,
    batch_size: IntGaugeVec,
    kv_tokens_used: IntGaugeVec,
    kv_tokens_total: IntGaugeVec,
    kv_bytes_per_token: IntGaugeVec,
    requests: IntGaugeVec,
    rejected: IntGaugeVec,
    generated_tokens: IntGaugeVec,
    decode_steps: IntGaugeVec,
}

/// Buckets of the latency histograms (seconds): 1 ms to 60 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0,
];

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, ServeError> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGaugeVec, ServeError> {
    let g = IntGaugeVec::new(Opts::new(name, help), &["model"])?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram(registry: &Registry, name: &str, help: &str) -> Result<HistogramVec, ServeError> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        &["model"],
    )?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    pub fn new() -> Result<Self, ServeError> {
        let r = Registry::new();
        let engine = EngineGauges {
            queue_depth: gauge(&r, "r1_queue_depth", "Requests waiting for the engine")?,
            running: gauge(&r, "r1_running_sequences", "Sequences being decoded")?,
            batch_size: gauge(&r, "r1_batch_size", "Rows of the last decode step")?,
            kv_tokens_used: gauge(&r, "r1_kv_cache_tokens_used", "KV-cache positions in use")?,
            kv_tokens_total: gauge(&r, "r1_kv_cache_tokens_total", "KV-cache positions available")?,
            kv_bytes_per_token: gauge(
                &r,
                "r1_kv_bytes_per_token",
                "Bytes one cached token takes (all layers, K and V)",
            )?,
            requests: gauge(&r, "r1_engine_requests", "Requests the engine accepted since start")?,
            rejected: gauge(
                &r,
                "r1_engine_rejected",
                "Requests the engine refused (queue full) since start",
            )?,
            generated_tokens: gauge(
                &r,
                "r1_engine_generated_tokens",
                "Tokens the engine generated since start",
            )?,
            decode_steps: gauge(&r, "r1_engine_decode_steps", "Decode steps the engine ran since start")?,
        };
        let inner = Inner {
            http_requests: counter(
                &r,
                "r1_http_requests_total",
                "HTTP requests by endpoint and status",
                &["endpoint", "status"],
            )?,
            http_rejections: counter(
                &r,
                "r1_http_rejections_total",
                "HTTP requests answered with an error status, by endpoint and status",
                &["endpoint", "status"],
            )?,
            prompt_tokens: counter(
                &r,
                "r1_prompt_tokens_total",
                "Prompt tokens of finished requests",
                &["model"],
            )?,
            completion_tokens: counter(
                &r,
                "r1_completion_tokens_total",
                "Generated tokens of finished requests",
                &["model"],
            )?,
            reasoning_tokens: counter(
                &r,
                "r1_reasoning_tokens_total",
                "Generated tokens inside the chain of thought",
                &["model"],
            )?,
            ttft: histogram(
                &r,
                "r1_time_to_first_token_seconds",
                "From request to its first token, at the HTTP layer",
            )?,
            inter_token: histogram(
                &r,
                "r1_inter_token_latency_seconds",
                "Between consecutive tokens of a completion",
            )?,
            plugin_evaluations: counter(
                &r,
                "r1_reward_plugin_evaluations_total",
                "Best-of-N scoring calls by plugin",
                &["plugin"],
            )?,
            plugin_failures: counter(
                &r,
                "r1_reward_plugin_failures_total",
                "Best-of-N scoring calls that failed, by plugin",
                &["plugin"],
            )?,
            engine,
            registry: r,
        };
        Ok(Metrics { inner: Arc::new(inner) })
    }

    pub fn record_http(&self, endpoint: &str, status: u16) {
        let status = status.to_string();
        let labels = [endpoint, status.as_str()];
        if let Ok(c) = self.inner.http_requests.get_metric_with_label_values(&labels) {
            c.inc();
        }
        if (status.starts_with('4') || status.starts_with('5'))
            && let Ok(c) = self.inner.http_rejections.get_metric_with_label_values(&labels)
        {
            c.inc();
        }
    }

    pub fn record_tokens(&self, model: &str, prompt: usize, completion: usize, reasoning: usize) {
        for (vec, n) in [
            (&self.inner.prompt_tokens, prompt),
            (&self.inner.completion_tokens, completion),
            (&self.inner.reasoning_tokens, reasoning),
        ] {
            if let Ok(c) = vec.get_metric_with_label_values(&[model]) {
                c.inc_by(n as u64);
            }
        }
    }

    pub fn observe_ttft(&self, model: &str, d: Duration) {
        if let Ok(h) = self.inner.ttft.get_metric_with_label_values(&[model]) {
            h.observe(d.as_secs_f64());
        }
    }

    pub fn observe_inter_token(&self, model: &str, seconds: f64) {
        if let Ok(h) = self.inner.inter_token.get_metric_with_label_values(&[model]) {
            h.observe(seconds);
        }
    }

    pub fn record_plugin(&self, plugin: &str, failed: bool) {
        if let Ok(c) = self.inner.plugin_evaluations.get_metric_with_label_values(&[plugin]) {
            c.inc();
        }
        if failed && let Ok(c) = self.inner.plugin_failures.get_metric_with_label_values(&[plugin]) {
            c.inc();
        }
    }

    /// The text exposition, with each engine's figures read now.
    pub fn render(&self, models: &[Arc<LoadedModel>]) -> String {
        let g = &self.inner.engine;
        for m in models {
            let stats = m.generator.stats();
            let name = m.name();
            let set = |gauge: &IntGaugeVec, v: u64| {
                if let Ok(x) = gauge.get_metric_with_label_values(&[name]) {
                    x.set(i64::try_from(v).unwrap_or(i64::MAX));
                }
            };
            let load = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Relaxed) as u64;
            set(&g.queue_depth, load(&stats.queued));
            set(&g.running, load(&stats.running));
            set(&g.batch_size, load(&stats.last_batch));
            set(&g.kv_tokens_used, load(&stats.kv_tokens_used));
            set(&g.kv_tokens_total, load(&stats.kv_tokens_total));
            set(&g.kv_bytes_per_token, load(&stats.kv_bytes_per_token));
            set(&g.requests, stats.requests.load(Ordering::Relaxed));
            set(&g.rejected, stats.rejected.load(Ordering::Relaxed));
            set(&g.generated_tokens, stats.generated_tokens.load(Ordering::Relaxed));
            set(&g.decode_steps, stats.decode_steps.load(Ordering::Relaxed));
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.inner.registry.gather(), &mut out) {
            return format!("# metrics could not be encoded: {e}\n");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
