//! The engine as a service: one thread owns a backend, a model's weights and the
//! generation engine; any number of callers (HTTP handlers, CLI commands) submit
//! [`GenRequest`]s through a cloneable [`EngineService`] and receive [`GenEvent`]s as the
//! tokens come. Requests wait in a bounded queue; past it, [`SubmitError::QueueFull`].
//! Dropping the receiver cancels the request: its rows leave the batch at the next step.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use r1_core::backend::Backend;
use r1_core::model::{KvCacheTypes, ModelConfig};
use r1_core::sampling::SamplingParams;
use tokio::sync::mpsc as tmpsc;

use super::FinishReason;
use super::scheduler::{Scheduler, SchedulerOptions};
use crate::device::{Device, DeviceArgs};
use crate::io::tokenizer::Tokenizer;
use crate::io::{PeftAdapter, Weights};
use crate::model::Model;

/// What to generate for one request.
#[derive(Clone, Debug, PartialEq)]
pub struct GenRequest {
    /// Prompt token ids (already templated and encoded).
    pub prompt: Vec<u32>,
    /// Completions to draw; they share one prefill of the prompt.
    pub n: usize,
    /// Tokens each completion may add (the context may end it sooner: `Length`).
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Seeds completion `i` with `Rng::new(seed).fork()` taken `i + 1` times: the same
    /// seed and request give the same text whatever else the engine is running.
    pub seed: u64,
    /// Generation of a completion stops when its text contains any of these; the stop
    /// string and anything after it are not part of the output.
    pub stop: Vec<String>,
    /// `Some(k)`: report each generated token's log-prob and the `k` most likely
    /// alternatives (log-softmax of the model's raw logits, before any sampling setting).
    pub top_logprobs: Option<usize>,
    /// Keep generating past the EOS token (benchmarks).
    pub ignore_eos: bool,
    /// Token log-probs (when `top_logprobs` is set) are the sampler's: under the
    /// distribution each token was drawn from (penalties, temperature, truncation), as
    /// vLLM's `processed_logprobs`; and the EOS token is reported as a token too. For
    /// GRPO trainers that generate on this server.
    pub sampler_logprobs: bool,
}

impl Default for GenRequest {
    fn default() -> Self {
        GenRequest {
            prompt: Vec::new(),
            n: 1,
            max_new_tokens: 256,
            sampling: SamplingParams::default(),
            seed: 0,
            stop: Vec::new(),
            top_logprobs: None,
            ignore_eos: false,
            sampler_logprobs: false,
        }
    }
}

/// The receiving end of a request's events.
pub type GenEvents = tmpsc::UnboundedReceiver<GenEvent>;

/// One generated token with its log-probs, when the request asked for them.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    /// Log-prob of `id` under the model's raw distribution.
    pub logprob: f32,
    /// The most likely tokens and their log-probs, best first.
    pub top: Vec<(u32, f32)>,
}

/// What a request's receiver gets, in order per completion `index`.
#[derive(Clone, Debug, PartialEq)]
pub enum GenEvent {
    /// New output of completion `index`: whole UTF-8 characters only, a stop string never
    /// (text that may begin one is held back until it cannot). `tokens` are the tokens
    /// sampled since the last delta (log-probs filled only when asked for).
    Delta {
        index: usize,
        text: String,
        tokens: Vec<TokenLogprob>,
    },
    /// Completion `index` ended; `completion_tokens` counts its generated tokens (EOS
    /// included when produced). `weight_version`: the version of the weights that drew
    /// the whole completion (0 until the first [`EngineService::update_weights`]).
    Finished {
        index: usize,
        reason: FinishReason,
        completion_tokens: usize,
        weight_version: u64,
    },
    /// The request failed as a whole; nothing follows.
    Failed(String),
}

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SubmitError {
    /// The queue is full; try again after about `retry_after_s` seconds.
    #[error("the server is busy ({queued} requests queued); retry after {retry_after_s} s")]
    QueueFull { queued: usize, retry_after_s: u64 },
    /// The request can never run (bad sampling values, prompt too long, bad token id, …).
    #[error("{0}")]
    Invalid(String),
    /// The engine is stopping or has stopped.
    #[error("the engine is shutting down")]
    ShuttingDown,
}

/// Sizes of the service.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// Memory for the KV cache, in MiB; it decides how many sequences run at once.
    pub kv_cache_mib: usize,
    /// Positions each sequence may use (prompt + completion); defaults to the model's
    /// `max_position_embeddings`, and is capped by it.
    pub context: Option<usize>,
    /// Sequences decoded together at most (and KV slots), whatever the memory allows.
    pub max_batch: usize,
    /// Requests waiting for room beyond those running; past that, `QueueFull`.
    pub max_queue: usize,
    /// What the KV cache stores keys and values as; the budget counts their bytes.
    pub cache_types: KvCacheTypes,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            kv_cache_mib: 512,
            context: None,
            max_batch: 32,
            max_queue: 64,
            cache_types: KvCacheTypes::F32,
        }
    }
}

/// Live figures of the service (for `/metrics`).
#[derive(Debug, Default)]
pub struct ServiceStats {
    /// Requests waiting to start.
    pub queued: AtomicUsize,
    /// Sequences (completions) being decoded.
    pub running: AtomicUsize,
    /// Rows of the last decode step.
    pub last_batch: AtomicUsize,
    /// KV positions in use and available, over all slots.
    pub kv_tokens_used: AtomicUsize,
    pub kv_tokens_total: AtomicUsize,
    /// Bytes one cached token takes (all layers, keys and values).
    pub kv_bytes_per_token: AtomicUsize,
    /// Totals since start.
    pub requests: AtomicU64,
    pub rejected: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub decode_steps: AtomicU64,
    /// The version of the weights in use (see [`EngineService::update_weights`]).
    pub weight_version: AtomicU64,
}

/// A request handed to the engine thread.
pub(crate) struct Submission {
    pub request: GenRequest,
    pub events: tmpsc::UnboundedSender<GenEvent>,
}

/// New weights for the served model (`POST /v1/weights`): the whole model, or a LoRA
/// adapter put on (or in place of the adapter on) the weights it serves.
pub enum WeightUpdate {
    Full(Weights),
    Adapter(PeftAdapter),
}

/// A weight update waiting for the engine thread, which applies it between requests.
pub(crate) struct PendingUpdate {
    pub update: WeightUpdate,
    pub version: u64,
    pub reply: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// The queue between callers and the engine thread.
pub(crate) struct Inbox {
    pub queue: Mutex<VecDeque<Submission>>,
    /// Weight updates: while one waits, no request starts; it is applied once the running
    /// ones have finished, so every completion is drawn by one version of the weights.
    pub updates: Mutex<VecDeque<PendingUpdate>>,
    pub wake: mpsc::SyncSender<()>,
    /// No new requests; finish what was accepted, then stop.
    pub stopping: AtomicBool,
    /// Stop now: fail what runs.
    pub abort: AtomicBool,
}

impl Inbox {
    pub fn aborting(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }
}

/// What callers need to know of the served model.
#[derive(Clone, Debug)]
pub struct ServedModel {
    /// The name clients use (`model` in requests).
    pub name: String,
    pub config: ModelConfig,
    pub tokenizer: Arc<Tokenizer>,
    /// The directory or checkpoint it was loaded from (chat templates live beside it).
    pub path: Option<PathBuf>,
    /// Positions a sequence may use (prompt + completion).
    pub context: usize,
    /// Sequences decoded at once (KV rows): the most completions one request may ask for.
    pub max_sequences: usize,
}

/// A handle on a running engine thread. Cheap to clone; the thread stops when
/// [`EngineService::shutdown`] is called or the last handle is dropped.
#[derive(Clone)]
pub struct EngineService {
    inner: Arc<ServiceInner>,
}

struct ServiceInner {
    inbox: Arc<Inbox>,
    stats: Arc<ServiceStats>,
    model: ServedModel,
    max_queue: usize,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ServiceInner {
    /// Tells the engine thread to stop (after its running sequences unless `abort` was
    /// set), wakes it and waits for it.
    fn stop_and_join(&self) {
        self.inbox.stopping.store(true, Ordering::SeqCst);
        let _ = self.inbox.wake.try_send(());
        if let Ok(mut t) = self.thread.lock()
            && let Some(t) = t.take()
        {
            let _ = t.join();
        }
    }
}

impl Drop for ServiceInner {
    fn drop(&mut self) {
        self.inbox.abort.store(true, Ordering::SeqCst);
        self.stop_and_join();
    }
}

impl EngineService {
    /// Loads the model at `path` on the device `device` names, in a new engine thread.
    pub fn start(device: &DeviceArgs, path: &Path, name: &str, opts: ServiceOptions) -> anyhow::Result<Self> {
        let (device, threads, compute) = (device.device, device.threads, device.compute);
        let path_owned = path.to_path_buf();
        match device {
            Device::Cpu => Self::start_with(name, Some(path.to_path_buf()), opts, move || {
                // The engine thread is one of the kernels' threads.
                let backend = compute.apply(r1_backend_cpu::CpuBackend::with_threads(threads.unwrap_or(0))?)?;
                let model = Model::load(&backend, &path_owned)
                    .map_err(|e| anyhow::anyhow!("loading {}: {e}", path_owned.display()))?;
                Ok((backend, model))
            }),
            Device::Cuda(_) => {
                // Refused with the same message every command gives.
                crate::device::with_backend(
                    &DeviceArgs {
                        device,
                        threads,
                        ..DeviceArgs::default()
                    },
                    NoJob,
                )?;
                anyhow::bail!("device {device} cannot be used")
            }
        }
    }

    /// Starts an engine thread whose backend and model `open` makes (on that thread).
    pub fn start_with<B, F>(name: &str, path: Option<PathBuf>, opts: ServiceOptions, open: F) -> anyhow::Result<Self>
    where
        B: Backend + 'static,
        F: FnOnce() -> anyhow::Result<(B, Model<B>)> + Send + 'static,
    {
        let (wake_tx, wake_rx) = mpsc::sync_channel::<()>(1);
        let inbox = Arc::new(Inbox {
            queue: Mutex::new(VecDeque::new()),
            updates: Mutex::new(VecDeque::new()),
            wake: wake_tx,
            stopping: AtomicBool::new(false),
            abort: AtomicBool::new(false),
        });
        let stats = Arc::new(ServiceStats::default());
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<(ModelConfig, Tokenizer, usize, usize)>>();
        let thread_inbox = inbox.clone();
        let thread_stats = stats.clone();
        let sched_opts = SchedulerOptions {
            kv_cache_bytes: opts.kv_cache_mib.saturating_mul(1 << 20),
            cache_types: opts.cache_types,
            context: opts.context,
            max_batch: opts.max_batch.max(1),
        };
        let thread = std::thread::Builder::new()
            .name(format!("r1-engine-{name}"))
            .spawn(move || {
                let (backend, mut model) = match open() {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut scheduler = match Scheduler::new(&backend, &model, sched_opts, thread_stats) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok((
                    model.config.clone(),
                    model.tokenizer.clone(),
                    scheduler.context(),
                    scheduler.slots(),
                )));
                scheduler.serve(&backend, &mut model, &thread_inbox, &wake_rx);
            })?;
        let (config, tokenizer, context, max_sequences) = match ready_rx.recv() {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                anyhow::bail!("the engine thread of {name} stopped while loading");
            }
        };
        Ok(EngineService {
            inner: Arc::new(ServiceInner {
                inbox,
                stats,
                model: ServedModel {
                    name: name.to_string(),
                    config,
                    tokenizer: Arc::new(tokenizer),
                    path,
                    context,
                    max_sequences,
                },
                max_queue: opts.max_queue,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// The served model.
    pub fn model(&self) -> &ServedModel {
        &self.inner.model
    }

    /// Live figures.
    pub fn stats(&self) -> &ServiceStats {
        &self.inner.stats
    }

    /// Checks `request` and queues it. Events arrive on the returned receiver; dropping it
    /// cancels the request.
    pub fn submit(&self, request: GenRequest) -> Result<GenEvents, SubmitError> {
        let inner = &self.inner;
        if inner.inbox.stopping.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        validate(&request, &inner.model)?;
        let (tx, rx) = tmpsc::unbounded_channel();
        {
            let mut q = inner.inbox.queue.lock().map_err(|_| SubmitError::ShuttingDown)?;
            if q.len() >= inner.max_queue {
                inner.stats.rejected.fetch_add(1, Ordering::Relaxed);
                // A rough wait: the requests ahead, a second each at the least.
                let retry_after_s = (q.len() as u64 / 4).clamp(1, 60);
                return Err(SubmitError::QueueFull {
                    queued: q.len(),
                    retry_after_s,
                });
            }
            q.push_back(Submission { request, events: tx });
            inner.stats.queued.store(q.len(), Ordering::Relaxed);
        }
        inner.stats.requests.fetch_add(1, Ordering::Relaxed);
        let _ = inner.inbox.wake.try_send(());
        Ok(rx)
    }

    /// Queues new weights under `version` (the caller's numbering: a trainer numbers its
    /// stage's steps from 0 again in its next stage). The engine thread lets the running
    /// requests finish, holds back queued ones, swaps the weights and answers on the
    /// returned channel; later completions report `version`.
    pub fn update_weights(
        &self,
        update: WeightUpdate,
        version: u64,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), String>>, SubmitError> {
        let inner = &self.inner;
        if inner.inbox.stopping.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        inner
            .inbox
            .updates
            .lock()
            .map_err(|_| SubmitError::ShuttingDown)?
            .push_back(PendingUpdate {
                update,
                version,
                reply: tx,
            });
        let _ = inner.inbox.wake.try_send(());
        Ok(rx)
    }

    /// Stops taking requests; running and queued ones finish first when `drain`, else
    /// they fail with "shutting down". Returns when the engine thread has stopped.
    pub fn shutdown(&self, drain: bool) {
        let inner = &self.inner;
        if !drain {
            if let Ok(mut q) = inner.inbox.queue.lock() {
                for s in q.drain(..) {
                    let _ = s.events.send(GenEvent::Failed("the server is shutting down".into()));
                }
            }
            inner.inbox.abort.store(true, Ordering::SeqCst);
        }
        inner.stop_and_join();
    }

    /// Runs `request` to completion on the calling thread's behalf (blocking), returning
    /// each completion's text, tokens and finish reason in order. For CLI commands and tests.
    pub fn generate_blocking(&self, request: GenRequest) -> anyhow::Result<Vec<GeneratedText>> {
        let n = request.n.max(1);
        let mut rx = self.submit(request)?;
        let mut out: Vec<GeneratedText> = (0..n).map(|_| GeneratedText::default()).collect();
        let mut done = 0;
        while done < n {
            match rx.blocking_recv() {
                Some(GenEvent::Delta { index, text, tokens }) => {
                    let o = out
                        .get_mut(index)
                        .ok_or_else(|| anyhow::anyhow!("engine sent completion {index} of {n}"))?;
                    o.text.push_str(&text);
                    o.tokens.extend(tokens);
                }
                Some(GenEvent::Finished {
                    index,
                    reason,
                    completion_tokens,
                    ..
                }) => {
                    let o = out
                        .get_mut(index)
                        .ok_or_else(|| anyhow::anyhow!("engine sent completion {index} of {n}"))?;
                    o.finish_reason = Some(reason);
                    o.completion_tokens = completion_tokens;
                    done += 1;
                }
                Some(GenEvent::Failed(e)) => anyhow::bail!("{e}"),
                None => anyhow::bail!("the engine stopped before the request finished"),
            }
        }
        Ok(out)
    }
}

/// One completion collected by [`EngineService::generate_blocking`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GeneratedText {
    pub text: String,
    pub tokens: Vec<TokenLogprob>,
    pub finish_reason: Option<FinishReason>,
    pub completion_tokens: usize,
}

/// Refuses requests that can never run, before they take a place in the queue.
fn validate(r: &GenRequest, model: &ServedModel) -> Result<(), SubmitError> {
    let bad = |m: String| Err(SubmitError::Invalid(m));
    if r.prompt.is_empty() {
        return bad("the prompt is empty".into());
    }
    let vocab = model.config.vocab_size;
    if let Some(&id) = r.prompt.iter().find(|&&t| t as usize >= vocab) {
        return bad(format!("token id {id} is outside the vocabulary of {vocab}"));
    }
    if r.prompt.len() >= model.context {
        return bad(format!(
            "the prompt has {} tokens; this model's context is {} (prompt and completion together)",
            r.prompt.len(),
            model.context
        ));
    }
    if r.n == 0 {
        return bad("n must be at least 1".into());
    }
    if r.n > model.max_sequences {
        return bad(format!(
            "n = {} completions exceed the {} sequences this server runs at once",
            r.n, model.max_sequences
        ));
    }
    if r.max_new_tokens == 0 {
        return bad("max_tokens must be at least 1".into());
    }
    if let Err(e) = r.sampling.validate() {
        return bad(e.to_string());
    }
    if r.stop.iter().any(String::is_empty) {
        return bad("stop strings must not be empty".into());
    }
    Ok(())
}

/// A job that only opens the backend (to get the device's refusal message).
struct NoJob;

impl crate::device::BackendJob for NoJob {
    type Output = ();
    fn run<B: Backend>(self, _backend: &B) -> anyhow::Result<()>
    where
        B::Buffer: Send + Sync,
    {
        Ok(())
    }
}

/// How long the idle engine thread sleeps between checks of its stop flag.
pub(crate) const IDLE_POLL: Duration = Duration::from_millis(200);
