//! Shared by the `serve` tests: a tiny random model (a checkpoint on disk and a running
//! engine), a scripted engine whose text the test chooses, the server started
//! in-process on 127.0.0.1:0, and the `r1host serve` binary run as a process.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use r1_backend_cpu::CpuBackend;
use r1_core::model::ModelConfig;
use r1_host::engine::FinishReason;
use r1_host::engine::service::{
    EngineService, GenEvent, GenRequest, ServedModel, ServiceOptions, ServiceStats, SubmitError, TokenLogprob,
};
use r1_host::io::Tokenizer;
use r1_host::model::Model;
use r1_host::serve::{AppState, Generator, ModelRegistry, RewardPlugins, ServeConfig};
use tokio::sync::mpsc;

/// Positions of the tiny model: small, so "prompt too long" is cheap to provoke.
pub const CONTEXT: usize = 192;

/// A 2-layer byte-level Llama with random weights.
pub fn tiny_config() -> ModelConfig {
    serde_json::from_value(serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 261,
        "max_position_embeddings": CONTEXT, "tie_word_embeddings": true, "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5, "eos_token_id": 256,
    }))
    .expect("tiny config")
}

/// Writes the tiny model as a checkpoint under `dir` (what `r1host serve --model` loads).
pub fn tiny_checkpoint(dir: &Path) -> PathBuf {
    let backend = CpuBackend::with_threads(1).expect("cpu backend");
    let model = Model::init(&backend, tiny_config(), 7).expect("init tiny model");
    let path = dir.join("tiny.r1ckpt");
    model.save(&backend, &path, None, Vec::new()).expect("save tiny model");
    path
}

/// The tiny model in a running engine, named `name`.
pub fn tiny_engine(name: &str, opts: ServiceOptions) -> Arc<dyn Generator> {
    let service = EngineService::start_with(name, None, opts, || {
        let backend = CpuBackend::with_threads(1)?;
        let model = Model::init(&backend, tiny_config(), 7)?;
        Ok((backend, model))
    })
    .expect("start tiny engine");
    Arc::new(service)
}

pub fn small_options() -> ServiceOptions {
    ServiceOptions {
        kv_cache_mib: 16,
        context: None,
        max_batch: 16,
        max_queue: 64,
        ..ServiceOptions::default()
    }
}

/// An engine that answers every request with the test's text: completion `i` of a
/// request is `candidates[i % len]`, one delta per piece, then `Finished(Stop)`.
pub struct Scripted {
    model: ServedModel,
    stats: ServiceStats,
    pub candidates: Vec<Vec<String>>,
    pub submitted: AtomicUsize,
    /// When set, deltas come this far apart from a task that stops (and sets
    /// `cancelled`) as soon as the receiver is dropped.
    pub delay: Option<Duration>,
    pub cancelled: Arc<AtomicBool>,
}

impl Scripted {
    pub fn new(name: &str, candidates: &[&[&str]]) -> Arc<Self> {
        let candidates = candidates
            .iter()
            .map(|c| c.iter().map(|s| s.to_string()).collect())
            .collect();
        Arc::new(Self::build(name, candidates, None))
    }

    /// One completion of `pieces` deltas `"x"`, `delay` apart.
    pub fn slow(name: &str, pieces: usize, delay: Duration) -> Arc<Self> {
        Arc::new(Self::build(name, vec![vec!["x".to_string(); pieces]], Some(delay)))
    }

    fn build(name: &str, candidates: Vec<Vec<String>>, delay: Option<Duration>) -> Self {
        Scripted {
            model: ServedModel {
                name: name.to_string(),
                config: tiny_config(),
                tokenizer: Arc::new(Tokenizer::byte_level()),
                path: None,
                context: CONTEXT,
                max_sequences: 16,
            },
            stats: ServiceStats::default(),
            candidates,
            submitted: AtomicUsize::new(0),
            delay,
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    fn events(&self, request: &GenRequest) -> Vec<GenEvent> {
        let tokenizer = Tokenizer::byte_level();
        let mut events = Vec::new();
        for i in 0..request.n {
            let pieces = &self.candidates[i % self.candidates.len()];
            let mut count = 0;
            for piece in pieces {
                let ids = tokenizer.encode(piece).unwrap_or_default();
                count += ids.len();
                let tokens = ids
                    .into_iter()
                    .map(|id| TokenLogprob {
                        id,
                        logprob: -0.25,
                        top: (0..request.top_logprobs.unwrap_or(0))
                            .map(|k| (id + k as u32, -0.25 - k as f32))
                            .collect(),
                    })
                    .collect();
                events.push(GenEvent::Delta {
                    index: i,
                    text: piece.clone(),
                    tokens,
                });
            }
            events.push(GenEvent::Finished {
                index: i,
                reason: FinishReason::Stop,
                completion_tokens: count,
                weight_version: 0,
            });
        }
        events
    }
}

impl Generator for Scripted {
    fn model(&self) -> &ServedModel {
        &self.model
    }
    fn stats(&self) -> &ServiceStats {
        &self.stats
    }
    fn submit(&self, request: GenRequest) -> Result<mpsc::UnboundedReceiver<GenEvent>, SubmitError> {
        self.submitted.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::unbounded_channel();
        let events = self.events(&request);
        match self.delay {
            None => {
                for e in events {
                    let _ = tx.send(e);
                }
            }
            Some(delay) => {
                let cancelled = self.cancelled.clone();
                tokio::spawn(async move {
                    for e in events {
                        tokio::time::sleep(delay).await;
                        if tx.send(e).is_err() {
                            cancelled.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                });
            }
        }
        Ok(rx)
    }
    fn shutdown(&self, _drain: bool) {}
}

/// A server running in-process; dropping it does not stop it, [`TestServer::stop`] does.
pub struct TestServer {
    pub url: String,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Starts the API on 127.0.0.1:0 with `models`.
    pub async fn start(config: ServeConfig, models: Vec<Arc<dyn Generator>>, rewards: RewardPlugins) -> Self {
        let registry = ModelRegistry::new(None);
        for m in models {
            registry.insert(m).expect("register model");
        }
        let state = AppState::new(config, registry, rewards).expect("app state");
        Self::start_state(state).await
    }

    pub async fn start_state(state: AppState) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serve_state = state.clone();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            r1_host::serve::serve(listener, serve_state, shutdown)
                .await
                .expect("serve");
        });
        TestServer {
            url,
            state,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Signals shutdown and waits for the server to drain and stop.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("http client")
}

/// GETs `url` and parses its JSON body.
pub async fn get_json(url: &str) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("a JSON body")
}

/// POSTs `body` as JSON; returns the status and the parsed body.
pub async fn post(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = client().post(url).json(&body).send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, value)
}

/// POSTs a streaming request and returns the `data:` payloads of its events.
pub async fn post_stream(url: &str, body: serde_json::Value) -> (u16, Vec<String>) {
    let r = client().post(url).json(&body).send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_string())
        .collect();
    (status, data)
}

/// The JSON chunks of a stream (everything before `[DONE]`), asserting it ends with it.
pub fn chunks(data: &[String]) -> Vec<serde_json::Value> {
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "stream must end with [DONE]: {data:?}"
    );
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("chunk is JSON"))
        .collect()
}

/// A running `r1host serve` process and the URL it printed; killed when dropped.
pub struct ServeProcess {
    pub child: Child,
    pub url: String,
}

impl ServeProcess {
    /// Starts `r1host serve ARGS` (without `R1_API_KEY` from the test's environment) and
    /// reads the `listening on URL` line.
    pub fn start<A: AsRef<OsStr>>(args: impl IntoIterator<Item = A>) -> ServeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_r1host"))
            .arg("serve")
            .args(args)
            .env_remove("R1_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start r1host serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        ServeProcess { child, url }
    }

    /// Sends SIGTERM and waits (up to 30 s) for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(Instant::now() < deadline, "r1host serve did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
