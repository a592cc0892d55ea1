//! Continuous batching: the running sequences of any number of requests share one KV
//! cache of `slots` rows and decode together, one token each per step. A sequence joins
//! at any step (its prompt is prefilled once into a free row, then copied to the rows of
//! the request's other completions) and leaves as soon as it ends: the last row moves into
//! its place, so the running rows are always `0..len` and a finished row costs nothing.
//!
//! Step graphs come from [`StepPlans`]: one per `(rows, new tokens, capacity)`, built on
//! first use and kept, so a decode step only uploads token ids and positions.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use r1_core::backend::Backend;
use r1_core::exec::Executor;
use r1_core::model::{KvCacheTypes, ModelConfig};
use r1_core::sampling::{Rng, Sampled, Sampler, SamplingParams, top_logprobs};

use super::kv_cache::KvCache;
use super::service::TokenLogprob;
use super::step_plan::{StepFeed, StepPlans};
use super::text::TextStream;
use super::{Detokenizer, EngineError, FinishReason};
use crate::weights::ParamBuffer;

/// How the completions of one request are drawn (shared by its rows).
#[derive(Clone, Debug, PartialEq)]
pub struct SeqConfig {
    pub sampling: SamplingParams,
    /// Tokens a completion may add (the EOS token included).
    pub max_new_tokens: usize,
    /// Stop strings (see [`TextStream`]).
    pub stop: Vec<String>,
    /// Report raw log-probs with this many alternatives.
    pub top_logprobs: Option<usize>,
    /// Do not stop at EOS.
    pub ignore_eos: bool,
    /// Report each token's log-prob under the distribution it was drawn from (after
    /// penalties, temperature and truncation) instead of the raw one, and report the EOS
    /// token too: what a remote GRPO trainer needs of its sampler.
    pub sampler_logprobs: bool,
}

/// One running completion.
pub struct Seq {
    /// The caller's key for the request this completion belongs to.
    pub owner: u64,
    /// Which of the request's completions this is.
    pub index: usize,
    config: Arc<SeqConfig>,
    /// Prompt then generated tokens (EOS excluded).
    history: Vec<u32>,
    prompt_len: usize,
    /// Positions in the cache.
    past: usize,
    /// The token the next decode step feeds.
    next: u32,
    /// Tokens sampled so far, EOS included.
    sampled: usize,
    /// The sampler's log-prob of each sampled token.
    pub logprobs: Vec<f32>,
    rng: Rng,
    text: TextStream,
    pub finish: Option<FinishReason>,
}

impl Seq {
    /// The generated tokens (without EOS).
    pub fn tokens(&self) -> &[u32] {
        &self.history[self.prompt_len..]
    }

    /// Tokens sampled so far, EOS included.
    pub fn sampled(&self) -> usize {
        self.sampled
    }

    /// Positions this sequence holds in the KV cache.
    pub fn cached(&self) -> usize {
        self.past
    }
}

/// A request to start: its prompt, the caller's key, how its completions are drawn, and
/// one random stream per completion.
pub struct Admission {
    pub prompt: Vec<u32>,
    pub owner: u64,
    pub config: Arc<SeqConfig>,
    pub rngs: Vec<Rng>,
}

/// What one sequence produced in a step.
#[derive(Debug)]
pub struct StepToken {
    pub owner: u64,
    pub index: usize,
    /// The token sampled (EOS included, then with `finish == Some(Eos)`).
    pub token: TokenLogprob,
    /// Text that can be sent now (see [`TextStream`]).
    pub text: String,
    /// Set when this token ended the sequence.
    pub finish: Option<FinishReason>,
    /// Report `token` to the client even when it is the EOS token.
    pub report_eos: bool,
}

/// What sampling one row gave, before the text and finish rules ([`Batch::finish_token`]).
struct Draw {
    sampled: Sampled,
    /// The token's log-prob under the raw distribution, when top log-probs were asked for.
    logprob: f32,
    top: Vec<(u32, f32)>,
}

/// What the plan of one lane of a decode step gave: its rows' logits.
type LaneLogits = Result<Vec<f32>, r1_core::GraphError>;

/// A row of a decode step handed to a thread: its sequence, its logits, what it drew.
type RowToDraw<'a> = (&'a mut Seq, &'a mut [f32], Option<Draw>);

/// Draws `seq`'s next token from its logits `row` (the penalties change `row`), and the
/// top log-probs it asked for. Touches nothing but `seq`'s random stream and this
/// thread's sampler scratch, so rows may be drawn on several threads.
fn draw(seq: &mut Seq, row: &mut [f32]) -> Draw {
    let cfg = &seq.config;
    let raw = cfg.top_logprobs.map(|_| row.to_vec());
    let sampled = SAMPLER.with_borrow_mut(|sampler| {
        sampler.sample_completion(row, &seq.history, seq.prompt_len, &cfg.sampling, &mut seq.rng)
    });
    let (logprob, top) = match (&raw, cfg.top_logprobs) {
        (Some(raw), Some(k)) => top_logprobs(raw, sampled.token, k),
        _ => (0.0, Vec::new()),
    };
    Draw { sampled, logprob, top }
}

/// About what drawing one row costs, in nanoseconds on a current core
/// (`core/benches/sampling.rs`: a full draw ~15 per vocabulary entry, greedy ~0.5).
fn sampling_work(cfg: &SeqConfig, vocab: usize) -> usize {
    if cfg.sampling.temperature == 0.0 && cfg.top_logprobs.is_none() {
        vocab / 2
    } else {
        vocab * 15
    }
}

/// Sampling work of a decode step (see [`sampling_work`]) past which its rows are drawn on
/// the backend's threads: 50 µs, well over what handing rows to a pool costs.
const PARALLEL_SAMPLING_WORK: usize = 50_000;

thread_local! {
    /// Scratch of the rows drawn on this thread (the engine's and the pool's threads keep
    /// theirs between steps).
    static SAMPLER: RefCell<Sampler> = RefCell::new(Sampler::new());
}

/// The running batch: KV cache rows, plans and the sequences in them.
pub struct Batch<B: Backend> {
    cfg: ModelConfig,
    slots: usize,
    capacity: usize,
    cache: KvCache<B>,
    plans: StepPlans,
    executor: Executor<B>,
    /// The arenas of a decode step's other lanes ([`Batch::decode_logits`]).
    lane_executors: Vec<Executor<B>>,
    feed: Option<StepFeed<B>>,
    seqs: Vec<Seq>,
}

impl<B: Backend> Batch<B> {
    /// A batch of at most `slots` sequences of `capacity` positions each, keys and values
    /// cached as `cache_types` says.
    pub fn new(
        backend: &B,
        cfg: &ModelConfig,
        slots: usize,
        capacity: usize,
        cache_types: KvCacheTypes,
    ) -> Result<Self, EngineError> {
        Ok(Batch {
            cfg: cfg.clone(),
            slots,
            capacity,
            cache: KvCache::new(backend, cfg, slots, capacity, cache_types)?,
            plans: StepPlans::new(cache_types),
            executor: Executor::new(),
            lane_executors: Vec::new(),
            feed: None,
            seqs: Vec::new(),
        })
    }

    /// Whether this batch has `slots` rows of at least `capacity` positions and nothing running.
    pub fn fits(&self, slots: usize, capacity: usize) -> bool {
        self.slots >= slots && self.capacity >= capacity && self.seqs.is_empty()
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn free_slots(&self) -> usize {
        self.slots - self.seqs.len()
    }

    pub fn seqs(&self) -> &[Seq] {
        &self.seqs
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Step graphs built so far.
    pub fn plans_built(&self) -> usize {
        self.plans.built()
    }

    /// Drops the step plans (the weights changed type or adapter; they are rebuilt on use).
    pub fn clear_plans(&mut self) {
        self.plans.clear();
    }

    /// Bytes one cached token takes.
    pub fn kv_bytes_per_token(&self) -> usize {
        self.cache.bytes_per_token()
    }

    /// Runs `ids` (`rows × t`) for cache rows `first_row..first_row + rows` at positions
    /// `past`; returns the last position's logits per row.
    fn forward(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        ids: &[u32],
        past: &[usize],
        first_row: usize,
    ) -> Result<Vec<f32>, EngineError> {
        let rows = past.len();
        let t = ids.len() / rows.max(1);
        let planned = self.plans.get(backend, &self.cfg, params, rows, t, self.capacity)?;
        let feed = Self::upload_feed(&mut self.feed, backend, ids, past)?;
        let logits = planned.run(backend, &mut self.executor, params, feed, 0, &self.cache, first_row)?;
        self.check_finite(&logits, first_row)?;
        Ok(logits)
    }

    /// The feed buffer (grown if a `rows × t` step does not fit it), holding `ids` and
    /// `past`.
    fn upload_feed<'f>(
        feed: &'f mut Option<StepFeed<B>>,
        backend: &B,
        ids: &[u32],
        past: &[usize],
    ) -> Result<&'f StepFeed<B>, EngineError> {
        let (rows, t) = (past.len(), ids.len() / past.len().max(1));
        if feed.as_ref().is_none_or(|f| !f.fits(rows, t)) {
            *feed = None;
            *feed = Some(StepFeed::new(backend, rows, t)?);
        }
        let feed = feed
            .as_ref()
            .ok_or_else(|| EngineError::Internal("no feed buffer".into()))?;
        feed.upload(backend, ids, past)?;
        Ok(feed)
    }

    /// Sampling from NaN/inf logits would pass garbage off as text.
    fn check_finite(&self, logits: &[f32], first_row: usize) -> Result<(), EngineError> {
        match logits.iter().position(|v| !v.is_finite()) {
            Some(i) => Err(EngineError::NonFinite {
                row: first_row + i / self.cfg.vocab_size.max(1),
            }),
            None => Ok(()),
        }
    }

    /// The logits of a decode step over cache rows `0..rows`: one plan over all the rows
    /// whose ops each split over the backend's threads, or, where the backend finds it
    /// faster ([`Backend::lanes`]: on the CPU, enough rows and weights that stay in cache),
    /// the rows cut into contiguous groups, each a plan of its own on one thread
    /// ([`Backend::run_lanes`]). A row's logits do not depend on the rows beside it (the
    /// decode products, attention and norms work row by row), so both give the same
    /// tokens.
    fn decode_logits(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        ids: &[u32],
        past: &[usize],
    ) -> Result<Vec<f32>, EngineError> {
        let rows = past.len();
        let lanes = backend.lanes(rows, params.resident_bytes()).min(rows);
        if lanes < 2 {
            return self.forward(backend, params, ids, past, 0);
        }
        let cuts: Vec<(usize, usize)> = (0..lanes).map(|i| (rows * i / lanes, rows * (i + 1) / lanes)).collect();
        let sizes: Vec<usize> = cuts.iter().map(|&(a, b)| b - a).collect();
        let plans = self.plans.get_all(backend, &self.cfg, params, &sizes, self.capacity)?;
        let feed = Self::upload_feed(&mut self.feed, backend, ids, past)?;
        if self.lane_executors.len() + 1 < lanes {
            self.lane_executors.resize_with(lanes - 1, Executor::new);
        }
        // Each lane's arena and what its plan gave.
        let lanes_state: Vec<Mutex<(&mut Executor<B>, Option<LaneLogits>)>> = std::iter::once(&mut self.executor)
            .chain(self.lane_executors.iter_mut())
            .take(lanes)
            .map(|executor| Mutex::new((executor, None)))
            .collect();
        let cache = &self.cache;
        backend.run_lanes(lanes, &|i| {
            let first = cuts[i].0;
            // A poisoned lock only means another lane panicked; this lane's cell is intact.
            let mut lane = lanes_state[i].lock().unwrap_or_else(|e| e.into_inner());
            let (executor, out) = &mut *lane;
            *out = Some(plans[i].run(backend, executor, params, feed, first, cache, first));
        });
        let mut logits = Vec::with_capacity(rows * self.cfg.vocab_size);
        for (i, lane) in lanes_state.into_iter().enumerate() {
            match lane.into_inner().unwrap_or_else(|e| e.into_inner()).1 {
                Some(out) => logits.extend_from_slice(&out?),
                None => return Err(EngineError::Internal(format!("decode lane {i} did not run"))),
            }
        }
        self.check_finite(&logits, 0)?;
        Ok(logits)
    }

    /// Starts `rngs.len()` completions of `prompt`: one prefill into the next free row,
    /// copied to the others, and each row's first token sampled. The caller checked that
    /// the rows are free and that the prompt fits the capacity.
    #[allow(clippy::too_many_arguments)]
    pub fn admit(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        tok: &dyn Detokenizer,
        prompt: &[u32],
        owner: u64,
        config: Arc<SeqConfig>,
        rngs: Vec<Rng>,
    ) -> Result<Vec<StepToken>, EngineError> {
        let request = Admission {
            prompt: prompt.to_vec(),
            owner,
            config,
            rngs,
        };
        self.admit_many(backend, params, tok, vec![request])
    }

    /// Starts several requests whose prompts have the same length with one prefill of
    /// all of them (one row each, at batch `requests.len()`); each request's prompt is
    /// then copied to the rows of its other completions, and every row's first token is
    /// sampled. Rows are `[each request's first completion…, the other completions…]`.
    /// A prompt's logits are those of its prefill alone wherever the backend computes a
    /// row independently of the others (see [`SHARED_PREFILL_TOKENS`]).
    ///
    /// [`SHARED_PREFILL_TOKENS`]: super::SHARED_PREFILL_TOKENS
    pub fn admit_many(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        tok: &dyn Detokenizer,
        requests: Vec<Admission>,
    ) -> Result<Vec<StepToken>, EngineError> {
        let row0 = self.seqs.len();
        let rows: usize = requests.iter().map(|r| r.rngs.len()).sum();
        let len = requests.first().map_or(0, |r| r.prompt.len());
        let fits = !requests.is_empty()
            && requests.iter().all(|r| !r.rngs.is_empty() && r.prompt.len() == len)
            && len > 0
            && len < self.capacity
            && row0 + rows <= self.slots;
        if !fits {
            return Err(EngineError::Internal(format!(
                "cannot start {rows} sequences of {} prompt(s) of lengths {:?} in {} free rows of {} positions",
                requests.len(),
                requests.iter().map(|r| r.prompt.len()).collect::<Vec<_>>(),
                self.free_slots(),
                self.capacity
            )));
        }
        let k = requests.len();
        let ids: Vec<u32> = requests.iter().flat_map(|r| r.prompt.iter().copied()).collect();
        let logits = self.forward(backend, params, &ids, &vec![0; k], row0)?;
        let vocab = self.cfg.vocab_size;
        // Each request's other completions take the rows after the first completions.
        let mut extra_row = row0 + k;
        let mut extras = Vec::new();
        let mut out = Vec::with_capacity(rows);
        for (j, (request, row_logits)) in requests.into_iter().zip(logits.chunks_exact(vocab)).enumerate() {
            let n = request.rngs.len();
            if n > 1 {
                self.cache
                    .copy_rows(backend, row0 + j, extra_row..extra_row + n - 1, len)?;
                extra_row += n - 1;
            }
            for (index, rng) in request.rngs.into_iter().enumerate() {
                let mut seq = Seq {
                    owner: request.owner,
                    index,
                    config: request.config.clone(),
                    history: request.prompt.clone(),
                    prompt_len: len,
                    past: len,
                    next: 0,
                    sampled: 0,
                    logprobs: Vec::new(),
                    rng,
                    text: TextStream::new(),
                    finish: None,
                };
                let mut row = row_logits.to_vec();
                out.push(self.sample(tok, &mut seq, &mut row));
                if index == 0 {
                    self.seqs.push(seq);
                } else {
                    extras.push(seq);
                }
            }
        }
        self.seqs.append(&mut extras);
        Ok(out)
    }

    /// One decode step: every running sequence feeds its last token and samples the next.
    pub fn decode(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        tok: &dyn Detokenizer,
    ) -> Result<Vec<StepToken>, EngineError> {
        if self.seqs.iter().any(|s| s.finish.is_some()) {
            return Err(EngineError::Internal(
                "decode with finished rows still in the batch".into(),
            ));
        }
        if self.seqs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<u32> = self.seqs.iter().map(|s| s.next).collect();
        let past: Vec<usize> = self.seqs.iter().map(|s| s.past).collect();
        let mut logits = self.decode_logits(backend, params, &ids, &past)?;
        let vocab = self.cfg.vocab_size;
        let mut seqs = std::mem::take(&mut self.seqs);
        for seq in seqs.iter_mut() {
            seq.past += 1;
        }
        let work: usize = seqs.iter().map(|s| sampling_work(&s.config, vocab)).sum();
        let draws: Vec<Draw> = if seqs.len() > 1 && work >= PARALLEL_SAMPLING_WORK {
            // Each row draws from its own random stream, so the rows may go in any order
            // on any thread: the tokens are the ones a serial loop draws.
            let cells: Vec<Mutex<RowToDraw>> = seqs
                .iter_mut()
                .zip(logits.chunks_exact_mut(vocab))
                .map(|(seq, row)| Mutex::new((seq, row, None)))
                .collect();
            backend.for_each_index(cells.len(), &|i| {
                let mut cell = cells[i].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let (seq, row, out) = &mut *cell;
                *out = Some(draw(seq, row));
            });
            cells
                .into_iter()
                .map(|cell| {
                    let (seq, row, out) = cell.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
                    // Every row was drawn above; one that was not is drawn here.
                    out.unwrap_or_else(|| draw(seq, row))
                })
                .collect()
        } else {
            seqs.iter_mut()
                .zip(logits.chunks_exact_mut(vocab))
                .map(|(seq, row)| draw(seq, row))
                .collect()
        };
        let out = seqs
            .iter_mut()
            .zip(draws)
            .map(|(seq, d)| self.finish_token(tok, seq, d))
            .collect();
        self.seqs = seqs;
        Ok(out)
    }

    /// Samples `seq`'s next token from its logits `row` and decides whether it ends there.
    fn sample(&self, tok: &dyn Detokenizer, seq: &mut Seq, row: &mut [f32]) -> StepToken {
        let d = draw(seq, row);
        self.finish_token(tok, seq, d)
    }

    /// Records the token `d` drew for `seq`, releases its text and decides whether the
    /// sequence ends there.
    fn finish_token(&self, tok: &dyn Detokenizer, seq: &mut Seq, d: Draw) -> StepToken {
        let cfg = seq.config.clone();
        let s = d.sampled;
        seq.logprobs.push(s.logprob);
        seq.sampled += 1;
        let token = TokenLogprob {
            id: s.token,
            logprob: if cfg.sampler_logprobs { s.logprob } else { d.logprob },
            top: d.top,
        };
        let text = if !cfg.ignore_eos && Some(s.token) == tok.eos_id() {
            seq.finish = Some(FinishReason::Eos);
            seq.text.finish(tok, &cfg.stop).text
        } else {
            seq.history.push(s.token);
            seq.next = s.token;
            let mut delta = seq.text.push(tok, s.token, &cfg.stop);
            if delta.stopped {
                seq.finish = Some(FinishReason::Stop);
            } else if seq.sampled >= cfg.max_new_tokens || seq.history.len() >= self.capacity {
                seq.finish = Some(FinishReason::Length);
                delta.text.push_str(&seq.text.finish(tok, &cfg.stop).text);
            }
            delta.text
        };
        StepToken {
            owner: seq.owner,
            index: seq.index,
            token,
            text,
            finish: seq.finish,
            report_eos: cfg.sampler_logprobs,
        }
    }

    /// Takes out every sequence that finished or that `cancel` names; the last rows move
    /// into the freed ones (their cached positions copied along).
    pub fn retire(&mut self, backend: &B, cancel: impl Fn(&Seq) -> bool) -> Result<Vec<Seq>, EngineError> {
        let mut out = Vec::new();
        for i in (0..self.seqs.len()).rev() {
            if self.seqs[i].finish.is_none() && !cancel(&self.seqs[i]) {
                continue;
            }
            let last = self.seqs.len() - 1;
            if i != last {
                self.cache
                    .copy_rows(backend, last, std::iter::once(i), self.seqs[last].past)?;
            }
            out.push(self.seqs.swap_remove(i));
        }
        out.reverse();
        Ok(out)
    }
}
