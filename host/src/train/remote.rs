//! GRPO generation on a fleet of OpenAI-compatible servers (`[stages.grpo.rollout]`):
//! `r1host serve` instances on other machines, or vLLM. Each group (one prompt, G
//! completions) is one `POST /v1/completions` with the prompt as token ids and `n = G`, so
//! the server shares the prompt's prefill; completions come back as token ids with the
//! sampler's log-probs (`logprobs: 0`, `return_tokens_as_token_ids`,
//! `logprobs_mode: "processed_logprobs"`).
//!
//! Groups are spread over the servers, at most `max_in_flight` at a time on each (the
//! back-pressure: a slow server gets fewer). A failed attempt (connection refused, timeout,
//! an error status, a response that does not parse, a stale weight version) sends the
//! group to another server; a server that fails `max_failures` times in a row, cannot be
//! reached, or serves stale weights is dropped for the rest of the stage, and the run goes
//! on with the others. A 429 waits its `Retry-After` and tries again, without counting.
//!
//! Weights: before generating, the trainer pushes its policy to every live server
//! (`POST /v1/weights`, r1's extension; see `serve::weights`) every `sync_every` optimizer
//! steps, as safetensors (full fine-tuning) or as a PEFT adapter (LoRA; the base is sent
//! once, at the stage's first sync). The version is the stage's optimizer step; a
//! completion reports the version that drew it, and one older than `max_staleness` steps
//! (or newer than the trainer's: another trainer's) is refused and drawn again elsewhere.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use r1_core::sampling::SamplingParams;
use serde_json::{Value, json};

use crate::engine::FinishReason;

/// Where and how a GRPO stage generates remotely (`[stages.grpo.rollout]`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    /// Base URLs of the servers (`http://host:port`; the API is under `/v1`).
    pub servers: Vec<String>,
    /// The environment variable holding the servers' API key (sent as a bearer token;
    /// unset or empty: no key).
    pub api_key_env: String,
    /// The served model name to request (default: the first model each server lists).
    pub model: Option<String>,
    /// Seconds one request may take.
    pub timeout_s: f64,
    /// Attempts per group before the step fails.
    pub retries: usize,
    /// Failed attempts in a row after which a server is dropped.
    pub max_failures: usize,
    /// Groups in flight per server.
    pub max_in_flight: usize,
    /// Push the policy's weights every this many optimizer steps (0: never; the servers
    /// then sample with whatever weights they have, and importance sampling corrects).
    pub sync_every: usize,
    /// Optimizer steps a completion's weights may lag behind the trainer's (default:
    /// `sync_every − 1`, what syncing every `sync_every` steps produces; no bound when
    /// weights are never pushed).
    pub max_staleness: Option<u64>,
    /// Truncated importance sampling (TRL's `vllm_importance_sampling_correction`): each
    /// completion token's policy loss is weighted by `min(π_train / π_sampler, cap)`.
    pub importance_sampling_correction: bool,
    /// TRL's `vllm_importance_sampling_cap`.
    pub importance_sampling_cap: f32,
    /// What the servers are: `r1` (`r1host serve`: weights pushed over HTTP) or `vllm`
    /// (started on the stage's base model with `--enable-lora`, `--logprobs-mode
    /// processed_logprobs` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`: a LoRA policy's
    /// adapters are written under `adapter_dir` and loaded with its
    /// `/v1/load_lora_adapter`; full weights cannot be pushed to it).
    pub server_kind: ServerKind,
    /// With `server_kind = "vllm"`: a directory the trainer writes adapters to and every
    /// server reads them from (a shared filesystem), as `r1-v{version}/`.
    pub adapter_dir: Option<std::path::PathBuf>,
}

/// The kind of the rollout servers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    #[default]
    R1,
    Vllm,
}

/// What the names of r1's adapters on vLLM servers start with (the version follows).
const LORA_PREFIX: &str = "r1-v";

/// The served name of the adapter of weight version `version` on vLLM servers.
fn lora_name(version: u64) -> String {
    format!("{LORA_PREFIX}{version}")
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            servers: Vec::new(),
            api_key_env: "R1_ROLLOUT_API_KEY".into(),
            model: None,
            timeout_s: 600.0,
            retries: 4,
            max_failures: 2,
            max_in_flight: 4,
            sync_every: 1,
            max_staleness: None,
            importance_sampling_correction: true,
            importance_sampling_cap: 2.0,
            server_kind: ServerKind::R1,
            adapter_dir: None,
        }
    }
}

impl RolloutConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.servers.is_empty() {
            return Err("rollout.servers is empty: name at least one server URL".into());
        }
        for s in &self.servers {
            if !(s.starts_with("http://") || s.starts_with("https://")) {
                return Err(format!("rollout server {s:?} is not an http:// URL"));
            }
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err("rollout.timeout_s must be positive".into());
        }
        if self.retries == 0 || self.max_failures == 0 || self.max_in_flight == 0 {
            return Err("rollout.retries, max_failures and max_in_flight must be at least 1".into());
        }
        if !(self.importance_sampling_cap.is_finite() && self.importance_sampling_cap > 0.0) {
            return Err("rollout.importance_sampling_cap must be positive".into());
        }
        if self.server_kind == ServerKind::Vllm && self.sync_every > 0 && self.adapter_dir.is_none() {
            return Err(
                "rollout.server_kind = \"vllm\" syncs LoRA adapters through a directory the servers read: set rollout.adapter_dir (or sync_every = 0)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The staleness bound in force (`None`: none).
    pub fn staleness(&self) -> Option<u64> {
        match (self.max_staleness, self.sync_every) {
            (Some(s), _) => Some(s),
            (None, 0) => None,
            (None, every) => Some(every as u64 - 1),
        }
    }
}

/// One group to generate.
#[derive(Clone, Debug)]
pub struct GroupRequest {
    pub prompt: Vec<u32>,
    pub n: usize,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub seed: u64,
}

/// One completion as a server returned it.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteCompletion {
    /// Generated tokens, without the EOS token.
    pub tokens: Vec<u32>,
    /// The sampler's log-prob of each generated token, EOS included when produced.
    pub logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
    /// The weights' version that drew it, when the server reports it.
    pub weight_version: Option<u64>,
}

/// Weights to push to the servers (the bytes are shared by every request, not copied).
pub enum WeightsPayload {
    /// A whole model as safetensors (Hugging Face names).
    Full(Bytes),
    /// A PEFT adapter: `adapter_config.json` and `adapter_model.safetensors`.
    Adapter { config: Value, bytes: Bytes },
}

/// Why a server was dropped, or an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("rollout: {0}")]
    Setup(String),
    #[error("rollout: every server was dropped ({0})")]
    NoServers(String),
    #[error("rollout: a group failed {attempts} times; last error: {last}")]
    Retries { attempts: usize, last: String },
}

/// A server of the fleet and what the trainer knows of it.
#[derive(Debug)]
struct Server {
    url: String,
    alive: AtomicBool,
    /// Failed attempts in a row.
    failures: AtomicUsize,
    /// The version last pushed to it.
    version: Mutex<Option<u64>>,
    /// Why it was dropped.
    dropped_because: Mutex<Option<String>>,
}

impl Server {
    fn drop_it(&self, why: String) {
        if self.alive.swap(false, Ordering::SeqCst) {
            eprintln!("rollout: dropping server {}: {why}", self.url);
            if let Ok(mut w) = self.dropped_because.lock() {
                *w = Some(why);
            }
        }
    }
}

/// Why each dropped server was dropped, `url: reason; …`.
fn dropped_reasons(servers: &[Server]) -> String {
    servers
        .iter()
        .filter_map(|s| {
            let why = s.dropped_because.lock().ok()?.clone()?;
            Some(format!("{}: {why}", s.url))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The client of the fleet, owned by a GRPO trainer.
pub struct RemoteRollouts {
    config: RolloutConfig,
    key: Option<String>,
    model: String,
    eos: Option<u32>,
    servers: Arc<Vec<Server>>,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    /// The base was pushed (LoRA: adapters follow). vLLM servers hold it from their start.
    base_sent: bool,
    /// vLLM: the adapter name requests use (the version last loaded).
    lora: Option<String>,
}

/// How one attempt went.
enum Attempt {
    Done(Vec<RemoteCompletion>),
    /// Try again (elsewhere); counts against the server unless `transient`.
    Failed {
        why: String,
        drop: bool,
        transient: Option<Duration>,
    },
}

impl RemoteRollouts {
    /// Connects: every server must answer `GET /v1/models` (and list the model, when one
    /// is named); those that do not are dropped at once.
    pub fn connect(config: RolloutConfig, eos: Option<u32>) -> Result<Self, RolloutError> {
        let key = std::env::var(&config.api_key_env).ok().filter(|k| !k.is_empty());
        Self::connect_with_key(config, eos, key)
    }

    /// [`RemoteRollouts::connect`] with the API key given (not read from the environment).
    pub fn connect_with_key(
        config: RolloutConfig,
        eos: Option<u32>,
        key: Option<String>,
    ) -> Result<Self, RolloutError> {
        config.validate().map_err(RolloutError::Setup)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RolloutError::Setup(format!("starting the HTTP runtime: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(config.timeout_s))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| RolloutError::Setup(format!("HTTP client: {e}")))?;
        let servers: Vec<Server> = config
            .servers
            .iter()
            .map(|u| Server {
                url: u.trim_end_matches('/').to_string(),
                alive: AtomicBool::new(true),
                failures: AtomicUsize::new(0),
                version: Mutex::new(None),
                dropped_because: Mutex::new(None),
            })
            .collect();
        let mut me = RemoteRollouts {
            model: config.model.clone().unwrap_or_default(),
            config,
            key,
            eos,
            servers: Arc::new(servers),
            client,
            runtime,
            base_sent: false,
            lora: None,
        };
        me.base_sent = me.config.server_kind == ServerKind::Vllm;
        me.discover()?;
        Ok(me)
    }

    /// The model name, from the first server that lists one (or checks the named one).
    fn discover(&mut self) -> Result<(), RolloutError> {
        let named = self.config.model.clone();
        let (client, key, servers) = (self.client.clone(), self.key.clone(), self.servers.clone());
        let found = self.runtime.block_on(async move {
            let mut found: Option<String> = named.clone();
            for s in servers.iter() {
                let url = format!("{}/v1/models", s.url);
                let r = with_key(client.get(&url), key.as_deref()).send().await;
                let listed: Result<Vec<String>, String> = match r {
                    Ok(r) if r.status().is_success() => r.json::<Value>().await.map_err(|e| e.to_string()).map(|v| {
                        v.get("data")
                            .and_then(Value::as_array)
                            .map(|d| {
                                d.iter()
                                    .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default()
                    }),
                    Ok(r) => Err(format!("GET /v1/models answered {}", r.status())),
                    Err(e) => Err(e.to_string()),
                };
                match listed {
                    Ok(ids) => match &found {
                        Some(m) if !ids.contains(m) => {
                            s.drop_it(format!("it does not serve model {m:?} (it has {ids:?})"))
                        }
                        Some(_) => {}
                        None => match ids.first() {
                            Some(first) => found = Some(first.clone()),
                            None => s.drop_it("it serves no model".into()),
                        },
                    },
                    Err(e) => s.drop_it(e),
                }
            }
            found
        });
        self.alive_or_fail()?;
        self.model = found.ok_or_else(|| RolloutError::NoServers(self.dropped_reasons()))?;
        Ok(())
    }

    /// The servers still in use.
    pub fn alive(&self) -> usize {
        self.servers.iter().filter(|s| s.alive.load(Ordering::SeqCst)).count()
    }

    fn dropped_reasons(&self) -> String {
        dropped_reasons(&self.servers)
    }

    fn alive_or_fail(&self) -> Result<(), RolloutError> {
        if self.alive() == 0 {
            Err(RolloutError::NoServers(self.dropped_reasons()))
        } else {
            Ok(())
        }
    }

    /// Whether the base must still be pushed before adapters (LoRA).
    pub fn needs_base(&self) -> bool {
        !self.base_sent
    }

    /// Pushes `payload` as `version` to every live server, in parallel; a server that
    /// refuses or fails is dropped. Returns the seconds it took.
    pub fn push(&mut self, payload: &WeightsPayload, version: u64) -> Result<f64, RolloutError> {
        if self.config.server_kind == ServerKind::Vllm {
            return self.push_vllm(payload, version);
        }
        let started = std::time::Instant::now();
        let (client, key, servers, model) = (
            self.client.clone(),
            self.key.clone(),
            self.servers.clone(),
            self.model.clone(),
        );
        // Cloning `Bytes` shares the payload: no copy per server.
        let (format, body, header) = match payload {
            WeightsPayload::Full(b) => ("safetensors", b.clone(), None),
            WeightsPayload::Adapter { config, bytes } => ("peft", bytes.clone(), Some(config.to_string())),
        };
        self.runtime.block_on(async move {
            let mut tasks = Vec::new();
            for (i, s) in servers.iter().enumerate() {
                if !s.alive.load(Ordering::SeqCst) {
                    continue;
                }
                let mut req = with_key(client.post(format!("{}/v1/weights", s.url)), key.as_deref())
                    .query(&[("model", model.as_str()), ("format", format)])
                    .query(&[("version", version)])
                    .body(body.clone());
                if let Some(h) = &header {
                    req = req.header("x-r1-adapter-config", h.as_str());
                }
                tasks.push((i, tokio::spawn(req.send())));
            }
            for (i, t) in tasks {
                let s = &servers[i];
                let outcome = match t.await {
                    Ok(Ok(r)) if r.status().is_success() => Ok(()),
                    Ok(Ok(r)) => {
                        let status = r.status();
                        Err(format!(
                            "POST /v1/weights answered {status}: {}",
                            r.text().await.unwrap_or_default()
                        ))
                    }
                    Ok(Err(e)) => Err(format!("POST /v1/weights failed: {e}")),
                    Err(e) => Err(format!("POST /v1/weights stopped: {e}")),
                };
                match outcome {
                    Ok(()) => {
                        if let Ok(mut v) = s.version.lock() {
                            *v = Some(version);
                        }
                    }
                    Err(why) => s.drop_it(why),
                }
            }
        });
        self.alive_or_fail()?;
        if matches!(payload, WeightsPayload::Full(_)) {
            self.base_sent = true;
        }
        Ok(started.elapsed().as_secs_f64())
    }

    /// [`RemoteRollouts::push`] to vLLM servers: the adapter is written as a PEFT
    /// directory `adapter_dir/r1-v{version}` and loaded on every live server under that
    /// name (`POST /v1/load_lora_adapter`); then the previous one is unloaded and removed.
    fn push_vllm(&mut self, payload: &WeightsPayload, version: u64) -> Result<f64, RolloutError> {
        let started = std::time::Instant::now();
        let WeightsPayload::Adapter { config, bytes } = payload else {
            return Err(RolloutError::Setup(
                "vLLM servers take LoRA adapters only (their runtime LoRA loading): train a LoRA policy, or set rollout.sync_every = 0".into(),
            ));
        };
        let root = self
            .config
            .adapter_dir
            .clone()
            .ok_or_else(|| RolloutError::Setup("rollout.adapter_dir is not set".into()))?;
        let name = lora_name(version);
        let dir = root.join(&name);
        let io = |e: std::io::Error| RolloutError::Setup(format!("writing the adapter to {}: {e}", dir.display()));
        std::fs::create_dir_all(&dir).map_err(io)?;
        let text = serde_json::to_string_pretty(config).map_err(|e| RolloutError::Setup(e.to_string()))?;
        crate::io::atomic::write_bytes_atomically(&dir.join("adapter_config.json"), text.as_bytes())
            .map_err(|e| RolloutError::Setup(e.to_string()))?;
        crate::io::atomic::write_bytes_atomically(&dir.join("adapter_model.safetensors"), bytes)
            .map_err(|e| RolloutError::Setup(e.to_string()))?;
        let path = std::path::absolute(&dir).map_err(io)?;
        let (client, key, servers) = (self.client.clone(), self.key.clone(), self.servers.clone());
        let old = self.lora.clone();
        let body = json!({"lora_name": name, "lora_path": path.display().to_string()});
        self.runtime.block_on(async move {
            for s in servers.iter().filter(|s| s.alive.load(Ordering::SeqCst)) {
                let load = with_key(client.post(format!("{}/v1/load_lora_adapter", s.url)), key.as_deref())
                    .json(&body)
                    .send()
                    .await;
                match load {
                    Ok(r) if r.status().is_success() => {
                        if let Ok(mut v) = s.version.lock() {
                            *v = Some(version);
                        }
                        if let Some(old) = &old {
                            // Best effort: an adapter left loaded only costs the server memory.
                            let _ = with_key(client.post(format!("{}/v1/unload_lora_adapter", s.url)), key.as_deref())
                                .json(&json!({"lora_name": old}))
                                .send()
                                .await;
                        }
                    }
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        s.drop_it(format!("POST /v1/load_lora_adapter answered {status}: {text}"));
                    }
                    Err(e) => s.drop_it(format!("POST /v1/load_lora_adapter failed: {e}")),
                }
            }
        });
        self.alive_or_fail()?;
        if let Some(old) = self.lora.replace(name) {
            let _ = std::fs::remove_dir_all(root.join(old));
        }
        Ok(started.elapsed().as_secs_f64())
    }

    /// Generates every group, spread over the live servers; `version`: the trainer's
    /// current weight version (completions older than the staleness bound are re-drawn).
    pub fn generate(
        &mut self,
        groups: &[GroupRequest],
        version: u64,
    ) -> Result<Vec<Vec<RemoteCompletion>>, RolloutError> {
        self.alive_or_fail()?;
        let versions = self.config.staleness().map(|s| (version.saturating_sub(s), version));
        let shared = Arc::new(Shared {
            queue: Mutex::new((0..groups.len()).map(|i| (i, 0usize)).collect()),
            results: Mutex::new(vec![None; groups.len()]),
            in_flight: AtomicUsize::new(0),
            fatal: Mutex::new(None),
        });
        let bodies: Arc<Vec<Value>> = Arc::new(groups.iter().map(|g| self.body(g)).collect());
        let ns: Arc<Vec<usize>> = Arc::new(groups.iter().map(|g| g.n).collect());
        let ctx = Arc::new(Ctx {
            client: self.client.clone(),
            key: self.key.clone(),
            eos: self.eos,
            retries: self.config.retries,
            max_failures: self.config.max_failures,
            versions,
        });
        let servers = self.servers.clone();
        let per_server = self.config.max_in_flight;
        self.runtime
            .block_on(async move {
                let mut workers = Vec::new();
                for si in 0..servers.len() {
                    for _ in 0..per_server {
                        let (servers, shared, bodies, ns, ctx) =
                            (servers.clone(), shared.clone(), bodies.clone(), ns.clone(), ctx.clone());
                        workers.push(tokio::spawn(async move {
                            worker(si, servers, shared, bodies, ns, ctx).await
                        }));
                    }
                }
                for w in workers {
                    let _ = w.await;
                }
                let fatal = shared.fatal.lock().ok().and_then(|mut f| f.take());
                match fatal {
                    Some(e) => Err(e),
                    None => {
                        let results = std::mem::take(
                            &mut *shared
                                .results
                                .lock()
                                .map_err(|_| RolloutError::Setup("the results lock was poisoned".into()))?,
                        );
                        Ok(results)
                    }
                }
            })
            .and_then(|results| {
                results
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| RolloutError::NoServers(self.dropped_reasons()))
            })
    }

    /// The `/v1/completions` body of a group.
    fn body(&self, g: &GroupRequest) -> Value {
        let s = &g.sampling;
        json!({
            "model": self.lora.as_deref().unwrap_or(&self.model),
            "prompt": g.prompt,
            "n": g.n,
            "max_tokens": g.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "top_k": if s.top_k == 0 { -1 } else { s.top_k as i64 },
            "min_p": s.min_p,
            "repetition_penalty": s.repetition_penalty,
            "presence_penalty": s.presence_penalty,
            "frequency_penalty": s.frequency_penalty,
            "seed": g.seed,
            "logprobs": 0,
            "return_tokens_as_token_ids": true,
            "logprobs_mode": "processed_logprobs",
            "skip_special_tokens": false,
            "stream": false,
        })
    }
}

/// The work queue shared by the workers of one `generate`.
struct Shared {
    /// (group, attempts so far)
    queue: Mutex<VecDeque<(usize, usize)>>,
    results: Mutex<Vec<Option<Vec<RemoteCompletion>>>>,
    in_flight: AtomicUsize,
    fatal: Mutex<Option<RolloutError>>,
}

/// What every worker reads.
struct Ctx {
    client: reqwest::Client,
    key: Option<String>,
    eos: Option<u32>,
    retries: usize,
    max_failures: usize,
    /// Accepted weight versions, inclusive (`None`: any).
    versions: Option<(u64, u64)>,
}

fn with_key(req: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::RequestBuilder {
    match key {
        Some(k) => req.bearer_auth(k),
        None => req,
    }
}

/// One of a server's `max_in_flight` workers: takes groups until the queue is empty and
/// nothing is in flight anywhere (a failed group may come back), or its server is dropped.
async fn worker(
    si: usize,
    servers: Arc<Vec<Server>>,
    shared: Arc<Shared>,
    bodies: Arc<Vec<Value>>,
    ns: Arc<Vec<usize>>,
    ctx: Arc<Ctx>,
) {
    let server = &servers[si];
    loop {
        if !server.alive.load(Ordering::SeqCst) || shared.fatal.lock().map(|f| f.is_some()).unwrap_or(true) {
            return;
        }
        let job = {
            let Ok(mut q) = shared.queue.lock() else { return };
            let job = q.pop_front();
            if job.is_some() {
                shared.in_flight.fetch_add(1, Ordering::SeqCst);
            }
            job
        };
        let Some((gi, attempts)) = job else {
            if shared.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let attempt = attempt(server, &ctx, &bodies[gi], ns[gi]).await;
        match attempt {
            Attempt::Done(completions) => {
                server.failures.store(0, Ordering::SeqCst);
                if let Ok(mut r) = shared.results.lock() {
                    r[gi] = Some(completions);
                }
            }
            Attempt::Failed { why, drop, transient } => {
                if let Some(wait) = transient {
                    tokio::time::sleep(wait).await;
                } else {
                    let n = server.failures.fetch_add(1, Ordering::SeqCst) + 1;
                    if drop || n >= ctx.max_failures {
                        server.drop_it(why.clone());
                    }
                }
                let attempts = attempts + usize::from(transient.is_none());
                if attempts >= ctx.retries {
                    if let Ok(mut f) = shared.fatal.lock() {
                        f.get_or_insert(RolloutError::Retries { attempts, last: why });
                    }
                } else if let Ok(mut q) = shared.queue.lock() {
                    q.push_back((gi, attempts));
                }
            }
        }
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        // Every server dropped with work left: nobody would take it.
        if servers.iter().all(|s| !s.alive.load(Ordering::SeqCst))
            && let Ok(mut f) = shared.fatal.lock()
        {
            f.get_or_insert(RolloutError::NoServers(dropped_reasons(&servers)));
        }
    }
}

/// One `POST /v1/completions` of a group on `server`.
async fn attempt(server: &Server, ctx: &Ctx, body: &Value, n: usize) -> Attempt {
    let failed = |why: String| Attempt::Failed {
        why,
        drop: false,
        transient: None,
    };
    let req = with_key(
        ctx.client.post(format!("{}/v1/completions", server.url)),
        ctx.key.as_deref(),
    )
    .json(body);
    let response = match req.send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() => {
            return Attempt::Failed {
                why: format!("cannot connect: {e}"),
                drop: true,
                transient: None,
            };
        }
        Err(e) => return failed(format!("request failed: {e}")),
    };
    let status = response.status();
    if status.as_u16() == 429 {
        let wait = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1)
            .clamp(1, 30);
        return Attempt::Failed {
            why: "busy (429)".into(),
            drop: false,
            transient: Some(Duration::from_secs(wait)),
        };
    }
    let text = match response.text().await {
        Ok(t) => t,
        Err(e) => return failed(format!("reading the response: {e}")),
    };
    if !status.is_success() {
        let cut: String = text.chars().take(300).collect();
        return failed(format!("POST /v1/completions answered {status}: {cut}"));
    }
    let value: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return failed(format!("the response is not JSON: {e}")),
    };
    let known = server.version.lock().ok().and_then(|v| *v);
    match parse_completions(&value, n, ctx.eos, known) {
        Ok(completions) => {
            let Some((oldest, newest)) = ctx.versions else {
                return Attempt::Done(completions);
            };
            if let Some(v) = completions
                .iter()
                .filter_map(|c| c.weight_version)
                .find(|v| *v < oldest || *v > newest)
            {
                return Attempt::Failed {
                    why: format!("it serves weight version {v}, outside {oldest}..={newest}"),
                    drop: true,
                    transient: None,
                };
            }
            Attempt::Done(completions)
        }
        Err(why) => failed(format!("bad response: {why}")),
    }
}

/// The `n` completions of a `/v1/completions` response made with token-id log-probs,
/// in choice order. `known_version`: what the trainer last pushed there, used when the
/// server does not report versions itself.
pub fn parse_completions(
    value: &Value,
    n: usize,
    eos: Option<u32>,
    known_version: Option<u64>,
) -> Result<Vec<RemoteCompletion>, String> {
    let choices = value
        .get("choices")
        .and_then(Value::as_array)
        .ok_or("no `choices` array")?;
    if choices.len() != n {
        return Err(format!("{} choices for n = {n}", choices.len()));
    }
    // r1's report, or the version in the name of the vLLM adapter that answered.
    let reported = value
        .get("r1")
        .and_then(|r| r.get("weight_version"))
        .and_then(Value::as_u64)
        .or_else(|| {
            value
                .get("model")
                .and_then(Value::as_str)
                .and_then(|m| m.strip_prefix(LORA_PREFIX))
                .and_then(|v| v.parse().ok())
        });
    let mut out: Vec<Option<RemoteCompletion>> = vec![None; n];
    for (k, c) in choices.iter().enumerate() {
        let index = c.get("index").and_then(Value::as_u64).map_or(k, |i| i as usize);
        let slot = out.get_mut(index).ok_or(format!("choice index {index} of {n}"))?;
        if slot.is_some() {
            return Err(format!("choice index {index} twice"));
        }
        let lp = c
            .get("logprobs")
            .ok_or("a choice has no `logprobs` (ask for logprobs: 0)")?;
        let names = lp
            .get("tokens")
            .and_then(Value::as_array)
            .ok_or("`logprobs.tokens` missing")?;
        let values = lp
            .get("token_logprobs")
            .and_then(Value::as_array)
            .ok_or("`logprobs.token_logprobs` missing")?;
        if names.len() != values.len() {
            return Err(format!("{} tokens but {} log-probs", names.len(), values.len()));
        }
        let mut tokens = Vec::with_capacity(names.len());
        let mut logprobs = Vec::with_capacity(names.len());
        for (name, v) in names.iter().zip(values) {
            let id = name
                .as_str()
                .and_then(|s| s.strip_prefix("token_id:"))
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| format!("token {name} is not `token_id:N` (ask for return_tokens_as_token_ids)"))?;
            let logprob = match v {
                Value::Number(x) => x.as_f64().map_or(f32::NAN, |x| x as f32),
                // -inf is sent as null by some servers.
                Value::Null => f32::NEG_INFINITY,
                other => return Err(format!("log-prob {other} is not a number")),
            };
            tokens.push(id);
            logprobs.push(logprob);
        }
        let finish = c.get("finish_reason").and_then(Value::as_str).unwrap_or("");
        let ends_with_eos = eos.is_some() && tokens.last().copied() == eos;
        let finish_reason = match finish {
            _ if ends_with_eos => {
                tokens.pop();
                FinishReason::Eos
            }
            "length" => FinishReason::Length,
            "stop" => FinishReason::Stop,
            other => return Err(format!("finish_reason {other:?}")),
        };
        *slot = Some(RemoteCompletion {
            tokens,
            logprobs,
            finish_reason,
            weight_version: reported.or(known_version),
        });
    }
    out.into_iter()
        .map(|c| c.ok_or_else(|| "a choice index is missing".to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(index: usize, ids: &[u32], lps: &[f32], finish: &str) -> Value {
        let names: Vec<String> = ids.iter().map(|i| format!("token_id:{i}")).collect();
        json!({"index": index, "text": "", "finish_reason": finish,
               "logprobs": {"tokens": names, "token_logprobs": lps, "top_logprobs": [], "text_offset": []}})
    }

    #[test]
    fn completions_parse_with_eos_split_off_and_versions() {
        let v = json!({"choices": [choice(1, &[5, 6], &[-0.5, -0.25], "length"), choice(0, &[7, 2], &[-1.0, -0.125], "stop")],
                        "r1": {"weight_version": 3}});
        let c = parse_completions(&v, 2, Some(2), Some(9)).unwrap();
        assert_eq!(c[0].tokens, vec![7]);
        assert_eq!(c[0].logprobs, vec![-1.0, -0.125]);
        assert_eq!(c[0].finish_reason, FinishReason::Eos);
        assert_eq!(c[1].finish_reason, FinishReason::Length);
        assert_eq!(c[1].weight_version, Some(3));
        // Without the server's report, the version last pushed there.
        let v = json!({"choices": [choice(0, &[5], &[-0.5], "length")]});
        assert_eq!(
            parse_completions(&v, 1, Some(2), Some(9)).unwrap()[0].weight_version,
            Some(9)
        );
    }

    #[test]
    fn malformed_responses_are_errors() {
        let ok = choice(0, &[5], &[-0.5], "length");
        assert!(parse_completions(&json!({}), 1, None, None).is_err());
        assert!(parse_completions(&json!({"choices": [ok.clone(), ok.clone()]}), 1, None, None).is_err());
        assert!(parse_completions(&json!({"choices": [ok.clone(), ok]}), 2, None, None).is_err());
        let text_tokens = json!({"choices": [{"index": 0, "finish_reason": "length",
            "logprobs": {"tokens": ["hello"], "token_logprobs": [-0.5]}}]});
        assert!(
            parse_completions(&text_tokens, 1, None, None)
                .unwrap_err()
                .contains("token_id")
        );
        let uneven = json!({"choices": [{"index": 0, "finish_reason": "length",
            "logprobs": {"tokens": ["token_id:1"], "token_logprobs": []}}]});
        assert!(parse_completions(&uneven, 1, None, None).is_err());
        let no_lp = json!({"choices": [{"index": 0, "finish_reason": "length", "text": "x"}]});
        assert!(parse_completions(&no_lp, 1, None, None).is_err());
    }

    #[test]
    fn config_is_validated() {
        assert!(RolloutConfig::default().validate().is_err());
        let ok = RolloutConfig {
            servers: vec!["http://127.0.0.1:1".into()],
            ..RolloutConfig::default()
        };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.staleness(), Some(0));
        let bad = RolloutConfig {
            servers: vec!["ftp://x".into()],
            ..RolloutConfig::default()
        };
        assert!(bad.validate().is_err());
        let k = RolloutConfig {
            sync_every: 4,
            ..ok.clone()
        };
        assert_eq!(k.staleness(), Some(3));
        let never = RolloutConfig { sync_every: 0, ..ok };
        assert_eq!(never.staleness(), None);
    }

    /// Serves `app` on 127.0.0.1 from a thread of its own; returns its URL.
    fn serve_on_thread(app: axum::Router) -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        format!("http://{}", rx.recv().unwrap())
    }

    /// A fake server on 127.0.0.1: `/v1/models` lists `m`; `/v1/completions` answers
    /// with `answer(n)` (status, body). Returns its URL; it runs on its own thread.
    fn fake_server(answer: fn(usize) -> (u16, Value)) -> String {
        use axum::routing::{get, post};
        let app = axum::Router::new()
            .route(
                "/v1/models",
                get(|| async { axum::Json(json!({"data": [{"id": "m"}]})) }),
            )
            .route(
                "/v1/completions",
                post(move |axum::Json(body): axum::Json<Value>| async move {
                    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1) as usize;
                    let (status, v) = answer(n);
                    (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(v))
                }),
            );
        serve_on_thread(app)
    }

    fn good(n: usize) -> (u16, Value) {
        let choices: Vec<Value> = (0..n)
            .map(|i| choice(i, &[3, 4, 2], &[-0.5, -0.5, -0.1], "stop"))
            .collect();
        (200, json!({"choices": choices, "r1": {"weight_version": 5}}))
    }

    fn groups(k: usize) -> Vec<GroupRequest> {
        (0..k)
            .map(|i| GroupRequest {
                prompt: vec![1, 2, 3],
                n: 2,
                max_tokens: 4,
                sampling: SamplingParams::default(),
                seed: i as u64,
            })
            .collect()
    }

    fn fleet(servers: Vec<String>, staleness: u64) -> RemoteRollouts {
        let config = RolloutConfig {
            servers,
            max_staleness: Some(staleness),
            timeout_s: 10.0,
            api_key_env: "R1_TEST_NO_SUCH_KEY".into(),
            ..RolloutConfig::default()
        };
        RemoteRollouts::connect(config, Some(2)).unwrap()
    }

    #[test]
    fn bad_and_dead_servers_are_dropped_and_their_groups_redrawn() {
        let garbage = fake_server(|_| (200, json!({"choices": "nope"})));
        let failing = fake_server(|_| (500, json!({"error": {"message": "boom"}})));
        let ok = fake_server(good);
        // A port nobody listens on: dropped when the model list is asked.
        let dead = "http://127.0.0.1:9".to_string();
        let mut f = fleet(vec![garbage, dead, failing, ok.clone()], 0);
        assert_eq!(f.alive(), 3);
        let out = f.generate(&groups(12), 5).unwrap();
        assert_eq!(out.len(), 12);
        for g in &out {
            assert_eq!(g.len(), 2);
            assert_eq!(g[0].tokens, vec![3, 4]);
            assert_eq!(g[0].finish_reason, FinishReason::Eos);
        }
        assert_eq!(f.alive(), 1, "only {ok} is left");
    }

    #[test]
    fn stale_weights_are_refused() {
        let ok = fake_server(good);
        let mut f = fleet(vec![ok.clone()], 1);
        // Versions 5..=6 are accepted at trainer version 6 (staleness 1).
        assert!(f.generate(&groups(2), 6).is_ok());
        // At version 7 the server's 5 is too old: it is dropped and nothing is left.
        let e = f.generate(&groups(2), 7).unwrap_err().to_string();
        assert!(e.contains("weight version 5"), "{e}");
        assert_eq!(f.alive(), 0);
        // A version newer than the trainer's is another trainer's weights.
        let mut g = fleet(vec![ok], 0);
        assert!(g.generate(&groups(1), 4).is_err());
    }

    /// A fake vLLM speaking its runtime-LoRA API: `/v1/load_lora_adapter` checks the
    /// adapter directory holds PEFT's two files and records the name; completions answer
    /// with the requested model as `model`, as vLLM does.
    fn fake_vllm(loaded: Arc<Mutex<Vec<String>>>) -> String {
        use axum::routing::{get, post};
        let l2 = loaded.clone();
        let app = axum::Router::new()
            .route(
                "/v1/models",
                get(|| async { axum::Json(json!({"data": [{"id": "base"}]})) }),
            )
            .route(
                "/v1/load_lora_adapter",
                post(move |axum::Json(body): axum::Json<Value>| {
                    let loaded = loaded.clone();
                    async move {
                        let path = std::path::PathBuf::from(body["lora_path"].as_str().unwrap_or_default());
                        let ok = path.join("adapter_config.json").is_file()
                            && path.join("adapter_model.safetensors").is_file();
                        if ok {
                            loaded
                                .lock()
                                .unwrap()
                                .push(body["lora_name"].as_str().unwrap().to_string());
                            (axum::http::StatusCode::OK, "Success")
                        } else {
                            (axum::http::StatusCode::BAD_REQUEST, "no adapter there")
                        }
                    }
                }),
            )
            .route(
                "/v1/unload_lora_adapter",
                post(move |axum::Json(body): axum::Json<Value>| {
                    let loaded = l2.clone();
                    async move {
                        let name = body["lora_name"].as_str().unwrap_or_default().to_string();
                        loaded.lock().unwrap().retain(|n| *n != name);
                        "Success"
                    }
                }),
            )
            .route(
                "/v1/completions",
                post(|axum::Json(body): axum::Json<Value>| async move {
                    let n = body["n"].as_u64().unwrap_or(1) as usize;
                    let (_, mut v) = good(n);
                    v.as_object_mut().unwrap().remove("r1");
                    v["model"] = body["model"].clone();
                    axum::Json(v)
                }),
            );
        serve_on_thread(app)
    }

    #[test]
    fn vllm_servers_load_adapters_from_the_shared_directory() {
        let loaded = Arc::new(Mutex::new(Vec::new()));
        let url = fake_vllm(loaded.clone());
        let dir = tempfile::tempdir().unwrap();
        let config = RolloutConfig {
            servers: vec![url],
            server_kind: ServerKind::Vllm,
            adapter_dir: Some(dir.path().to_path_buf()),
            api_key_env: "R1_TEST_NO_SUCH_KEY".into(),
            ..RolloutConfig::default()
        };
        let mut f = RemoteRollouts::connect(config, Some(2)).unwrap();
        assert!(!f.needs_base(), "a vLLM server holds its base from its start");
        // Full weights cannot go to vLLM.
        let e = f
            .push(&WeightsPayload::Full(vec![0; 8].into()), 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("LoRA adapters only"), "{e}");
        let adapter = |v: u8| WeightsPayload::Adapter {
            config: json!({"peft_type": "LORA", "r": 4}),
            bytes: vec![v; 16].into(),
        };
        f.push(&adapter(1), 0).unwrap();
        f.push(&adapter(2), 1).unwrap();
        assert_eq!(
            *loaded.lock().unwrap(),
            vec!["r1-v1".to_string()],
            "the old adapter is unloaded"
        );
        assert!(!dir.path().join("r1-v0").exists() && dir.path().join("r1-v1/adapter_model.safetensors").is_file());
        // Requests name the adapter; its name carries the version back.
        let out = f.generate(&groups(2), 1).unwrap();
        assert!(out.iter().flatten().all(|c| c.weight_version == Some(1)));
        // Syncing vLLM needs the shared directory.
        let shared = RolloutConfig {
            servers: vec![fake_vllm(Arc::new(Mutex::new(Vec::new())))],
            server_kind: ServerKind::Vllm,
            adapter_dir: Some(dir.path().join("elsewhere")),
            ..RolloutConfig::default()
        };
        assert!(shared.validate().is_ok());
        let no_dir = RolloutConfig {
            adapter_dir: None,
            ..shared.clone()
        };
        assert!(no_dir.validate().is_err());
        assert!(
            RolloutConfig {
                sync_every: 0,
                ..no_dir
            }
            .validate()
            .is_ok()
        );
    }
}
