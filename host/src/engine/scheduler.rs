//! The engine thread's loop: admit queued requests while KV rows are free (first come,
//! first served; a request starts when all its completions fit), run one decode step for
//! every running sequence, send each token to its request, and retire the sequences that
//! ended or whose client went away. Prefills run between decode steps, so a long prompt
//! delays the running streams by one prefill. Requests admitted together whose prompts
//! have one length share a prefill (see [`prefill_groups`]).
//!
//! Memory: the KV cache has `slots` rows of `context` positions; `slots` is what the
//! budget (`--kv-cache-mib`) allows, counted in bytes of the cache's types
//! (`--cache-type-k` / `--cache-type-v`), capped by `max_batch`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use r1_core::backend::Backend;
use r1_core::model::KvCacheTypes;
use r1_core::sampling::Rng;
use tokio::sync::mpsc as tmpsc;

use super::batch::{Admission, Batch, SeqConfig, StepToken};
use super::kv_cache::KvCache;
use super::service::{GenEvent, IDLE_POLL, Inbox, PendingUpdate, ServiceStats, Submission, WeightUpdate};
use super::{CAPACITY_STEP, EngineError, prefill_groups};
use crate::model::Model;

/// Sizes the scheduler works within.
#[derive(Clone, Debug)]
pub(crate) struct SchedulerOptions {
    pub kv_cache_bytes: usize,
    pub cache_types: KvCacheTypes,
    pub context: Option<usize>,
    pub max_batch: usize,
}

/// A request being decoded.
struct Live {
    events: tmpsc::UnboundedSender<GenEvent>,
    /// Completions not finished yet.
    open: usize,
    /// The weights' version when it started (they do not change while it runs).
    weight_version: u64,
}

pub(crate) struct Scheduler<B: Backend> {
    batch: Batch<B>,
    live: HashMap<u64, Live>,
    next_id: u64,
    stats: Arc<ServiceStats>,
}

/// Why the budget cannot hold one sequence.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SchedulerError {
    #[error(
        "--kv-cache-mib {mib} holds {fits} sequence(s) of {context} positions ({per_token} bytes per token, {types}); at least 1 is needed: raise it to {need}, lower --ctx or choose smaller --cache-type-k/--cache-type-v"
    )]
    Budget {
        mib: usize,
        types: KvCacheTypes,
        fits: usize,
        context: usize,
        per_token: usize,
        need: usize,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl<B: Backend> Scheduler<B> {
    pub fn new(
        backend: &B,
        model: &Model<B>,
        opts: SchedulerOptions,
        stats: Arc<ServiceStats>,
    ) -> Result<Self, SchedulerError> {
        let cfg = &model.config;
        let max_pos = cfg.max_position_embeddings;
        let context = opts.context.unwrap_or(max_pos).clamp(2, max_pos.max(2));
        // Positions per row, rounded to the plan bucket step (never past the model's).
        let capacity = context.next_multiple_of(CAPACITY_STEP).min(max_pos.max(2));
        let per_token = KvCache::<B>::bytes_per_token_for(cfg, opts.cache_types).map_err(EngineError::from)?;
        let per_seq = per_token.saturating_mul(capacity).max(1);
        let fits = opts.kv_cache_bytes / per_seq;
        if fits == 0 {
            return Err(SchedulerError::Budget {
                mib: opts.kv_cache_bytes >> 20,
                types: opts.cache_types,
                fits,
                context: capacity,
                per_token,
                need: per_seq.div_ceil(1 << 20),
            });
        }
        let slots = fits.min(opts.max_batch).max(1);
        let batch = Batch::new(backend, cfg, slots, capacity, opts.cache_types)?;
        stats.kv_tokens_total.store(slots * capacity, Ordering::Relaxed);
        stats.kv_bytes_per_token.store(per_token, Ordering::Relaxed);
        Ok(Scheduler {
            batch,
            live: HashMap::new(),
            next_id: 0,
            stats,
        })
    }

    /// Positions one sequence may use (prompt + completion).
    pub fn context(&self) -> usize {
        self.batch.capacity()
    }

    /// Sequences that can run at once.
    pub fn slots(&self) -> usize {
        self.batch.slots()
    }

    /// Serves until the inbox says stop and nothing is left to do (or, on abort, at once).
    pub fn serve(&mut self, backend: &B, model: &mut Model<B>, inbox: &Inbox, wake: &mpsc::Receiver<()>) {
        loop {
            if inbox.aborting() {
                self.fail_all("the server is shutting down");
                self.refuse_updates(inbox, "the server is shutting down");
                return;
            }
            // A waiting weight update holds back new requests until the running ones end.
            let updating = inbox.updates.lock().map(|u| !u.is_empty()).unwrap_or(false);
            if updating && self.batch.is_empty() {
                self.apply_updates(backend, model, inbox);
            } else if !updating {
                for group in prefill_groups(self.take_admissible(inbox), |s| s.request.prompt.len()) {
                    self.start(backend, model, group);
                }
            }
            self.publish();
            if self.batch.is_empty() {
                let queued = inbox.queue.lock().map(|q| q.len()).unwrap_or(0);
                if inbox.stopping.load(Ordering::SeqCst) && queued == 0 {
                    return;
                }
                let _ = wake.recv_timeout(IDLE_POLL);
                continue;
            }
            if let Err(e) = self.step(backend, model) {
                // A failed step leaves the batch in an unknown state: fail what runs,
                // keep serving the queue.
                self.fail_all(&format!("generation failed: {e}"));
                if let Err(e) = self.batch.retire(backend, |_| true) {
                    eprintln!("r1host engine: cannot reset the batch after a failed step: {e}");
                    return;
                }
            }
        }
    }

    /// Applies every waiting weight update in order (the batch is empty), answering each.
    fn apply_updates(&mut self, backend: &B, model: &mut Model<B>, inbox: &Inbox) {
        let pending: Vec<PendingUpdate> = match inbox.updates.lock() {
            Ok(mut u) => u.drain(..).collect(),
            Err(_) => return,
        };
        for p in pending {
            let result = apply_update(backend, model, p.update).map(|()| {
                // Plans were built for the old weights' types and adapter.
                self.batch.clear_plans();
                self.stats.weight_version.store(p.version, Ordering::SeqCst);
            });
            let _ = p.reply.send(result);
        }
    }

    /// Answers every waiting weight update with `why`.
    fn refuse_updates(&self, inbox: &Inbox, why: &str) {
        if let Ok(mut u) = inbox.updates.lock() {
            for p in u.drain(..) {
                let _ = p.reply.send(Err(why.to_string()));
            }
        }
    }

    /// Pops the queued requests that can start now (in order; the first that does not fit
    /// waits, and so does everything behind it). Requests whose client left are dropped.
    fn take_admissible(&mut self, inbox: &Inbox) -> Vec<Submission> {
        let mut out = Vec::new();
        let Ok(mut q) = inbox.queue.lock() else {
            return out;
        };
        let mut free = self.batch.free_slots();
        while let Some(front) = q.front() {
            if front.events.is_closed() {
                q.pop_front();
                continue;
            }
            let n = front.request.n.max(1);
            if n > self.batch.slots() {
                if let Some(s) = q.pop_front() {
                    let _ = s.events.send(GenEvent::Failed(format!(
                        "n = {n} completions exceed the {} sequences this server runs at once",
                        self.batch.slots()
                    )));
                }
                continue;
            }
            if n > free {
                break;
            }
            free -= n;
            if let Some(s) = q.pop_front() {
                out.push(s);
            }
        }
        self.stats.queued.store(q.len(), Ordering::Relaxed);
        out
    }

    /// Prefills a group of requests whose prompts have one length (one forward) and
    /// sends their first tokens; if that fails, each of them gets the error.
    fn start(&mut self, backend: &B, model: &Model<B>, group: Vec<Submission>) {
        let context = self.batch.capacity();
        let mut admissions = Vec::with_capacity(group.len());
        let mut events = Vec::with_capacity(group.len());
        for s in group {
            let r = s.request;
            let n = r.n.max(1);
            // `EngineService::submit` refused prompts that do not fit; `Batch::admit_many`
            // checks again.
            let config = Arc::new(SeqConfig {
                sampling: r.sampling,
                max_new_tokens: r.max_new_tokens.max(1).min(context.saturating_sub(r.prompt.len())),
                stop: r.stop,
                top_logprobs: r.top_logprobs,
                ignore_eos: r.ignore_eos,
                sampler_logprobs: r.sampler_logprobs,
            });
            let mut seed = Rng::new(r.seed);
            let rngs = (0..n).map(|_| seed.fork()).collect();
            let owner = self.next_id;
            self.next_id += 1;
            admissions.push(Admission {
                prompt: r.prompt,
                owner,
                config,
                rngs,
            });
            events.push((owner, n, s.events));
        }
        let prompt_tokens: usize = admissions.iter().map(|a| a.prompt.len()).sum();
        match self
            .batch
            .admit_many(backend, &model.params, &model.tokenizer, admissions)
        {
            Ok(tokens) => {
                self.stats
                    .prompt_tokens
                    .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
                let weight_version = self.stats.weight_version.load(Ordering::SeqCst);
                for (owner, open, events) in events {
                    self.live.insert(
                        owner,
                        Live {
                            events,
                            open,
                            weight_version,
                        },
                    );
                }
                self.dispatch(tokens);
                if let Err(e) = self.retire(backend) {
                    self.fail_all(&format!("generation failed: {e}"));
                }
            }
            Err(e) => {
                for (_, _, events) in events {
                    let _ = events.send(GenEvent::Failed(format!("generation failed: {e}")));
                }
            }
        }
    }

    /// One decode step for every running sequence.
    fn step(&mut self, backend: &B, model: &Model<B>) -> Result<(), EngineError> {
        // Clients that went away stop costing compute before the step, not after.
        let live = &self.live;
        let gone = |owner: u64| live.get(&owner).is_none_or(|l| l.events.is_closed());
        let cancelled = self.batch.retire(backend, |s| gone(s.owner))?;
        for seq in cancelled {
            self.live.remove(&seq.owner);
        }
        if self.batch.is_empty() {
            return Ok(());
        }
        self.stats.last_batch.store(self.batch.seqs().len(), Ordering::Relaxed);
        let tokens = self.batch.decode(backend, &model.params, &model.tokenizer)?;
        self.stats.decode_steps.fetch_add(1, Ordering::Relaxed);
        self.dispatch(tokens);
        self.retire(backend)
    }

    /// Sends each sampled token to its request.
    fn dispatch(&mut self, tokens: Vec<StepToken>) {
        self.stats
            .generated_tokens
            .fetch_add(tokens.len() as u64, Ordering::Relaxed);
        for t in tokens {
            let Some(live) = self.live.get_mut(&t.owner) else {
                continue;
            };
            let eos = t.finish == Some(super::FinishReason::Eos);
            let delta = GenEvent::Delta {
                index: t.index,
                text: t.text,
                tokens: if eos && !t.report_eos {
                    Vec::new()
                } else {
                    vec![t.token]
                },
            };
            let _ = live.events.send(delta);
        }
    }

    /// Takes finished sequences out of the batch and tells their requests.
    fn retire(&mut self, backend: &B) -> Result<(), EngineError> {
        for seq in self.batch.retire(backend, |_| false)? {
            let Some(live) = self.live.get_mut(&seq.owner) else {
                continue;
            };
            if let Some(reason) = seq.finish {
                let _ = live.events.send(GenEvent::Finished {
                    index: seq.index,
                    reason,
                    completion_tokens: seq.sampled(),
                    weight_version: live.weight_version,
                });
            }
            live.open = live.open.saturating_sub(1);
            if live.open == 0 {
                self.live.remove(&seq.owner);
            }
        }
        Ok(())
    }

    /// Fails every running request.
    fn fail_all(&mut self, why: &str) {
        for (_, live) in self.live.drain() {
            let _ = live.events.send(GenEvent::Failed(why.to_string()));
        }
    }

    /// Updates the gauges.
    fn publish(&self) {
        let seqs = self.batch.seqs();
        self.stats.running.store(seqs.len(), Ordering::Relaxed);
        let used: usize = seqs.iter().map(|s| s.cached()).sum();
        self.stats.kv_tokens_used.store(used, Ordering::Relaxed);
    }
}

/// Puts `update` in place of the served weights: the whole model (f32; an adapter on the
/// old weights goes with them), or a LoRA adapter on the served base (replacing the
/// adapter there was, if any). On error the model is as it was.
fn apply_update<B: Backend>(backend: &B, model: &mut Model<B>, update: WeightUpdate) -> Result<(), String> {
    match update {
        WeightUpdate::Full(weights) => {
            let fresh = Model::from_weights(backend, model.config.clone(), model.tokenizer.clone(), weights)
                .map_err(|e| format!("the new weights were refused: {e}"))?;
            model.params = fresh.params;
            Ok(())
        }
        WeightUpdate::Adapter(adapter) => model
            .replace_adapter(backend, &adapter)
            .map_err(|e| format!("the adapter was refused: {e}")),
    }
}
