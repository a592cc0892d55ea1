//! The generation engine: continuous batching over a KV cache ([`batch`]), sampling each
//! token (temperature, top-k, top-p, min-p, repetition/presence/frequency penalties, seed)
//! until EOS, a stop string, or the token budget, with text streamed in whole characters
//! ([`text`]).
//!
//! The completions of one prompt share its prefill: the prompt runs once, its keys/values
//! are copied into the other rows. Requests that start at one step with prompts of one
//! length share one forward. Sequences join and leave the running batch
//! at every step. Graphs and their memory plans are built once per shape bucket `(rows,
//! new tokens, cache capacity)` and kept ([`step_plan`]): a decode step only uploads its
//! token ids and each sequence's cached length (the `past` input) and runs a kept plan.
//!
//! [`Engine`] runs one request to completion on the caller's thread (GRPO rollouts, CLI
//! commands); [`service`] runs many concurrent requests on an engine thread (the server).

pub mod batch;
pub mod kv_cache;
mod scheduler;
pub mod score;
pub mod service;
pub mod step_plan;
pub mod text;

use std::sync::Arc;

use r1_core::GraphError;
use r1_core::backend::{Backend, BackendError};
use r1_core::model::{BuildError, KvCacheTypes, ModelConfig};
use r1_core::reasoning::split_reasoning;
use r1_core::sampling::{Rng, SamplingParams};

use crate::weights::ParamBuffer;
use batch::{Admission, Batch, Seq, SeqConfig};
use kv_cache::KvCache;

pub use service::{EngineService, GenEvent, GenRequest, ServiceOptions, SubmitError, TokenLogprob};

/// Prompt tokens one shared prefill of several prompts runs at most. The CPU backend
/// computes a weight product of up to 64 rows without packing, each row on its own, so
/// prompts prefilled together within this budget get, bit for bit, the logits each gets
/// alone (`tests/tests/e2e/engine.rs` checks it). Longer prompts are prefilled one request at
/// a time: the packed product they take is already efficient, and it does not promise
/// the same bits for a row whatever rows surround it.
const SHARED_PREFILL_TOKENS: usize = 64;

/// Rows [`Engine::generate_many`] runs at once at most: the CPU backend computes a
/// weight product of up to 64 rows without packing, each row on its own, so a row's
/// logits do not depend on how many rows run beside it.
pub const BATCH_ROWS: usize = 64;

/// The KV-cache memory batched generation outside the server takes by default (GRPO's
/// `generation_kv_cache_mib`, evaluation, rejection sampling).
pub const DEFAULT_GENERATION_KV_MIB: usize = 1024;

/// KV-cache capacities are rounded up to a multiple of this many positions.
const CAPACITY_STEP: usize = 64;

/// What to generate.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation stops after any of these strings (kept in the text).
    pub stop: Vec<String>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 256,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
        }
    }
}

/// Why a completion ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced its end-of-sequence token (not included in `tokens`).
    Eos,
    /// A stop string was produced.
    Stop,
    /// `max_new_tokens` (or the context) ran out.
    Length,
}

/// One generated completion.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Completion {
    /// Generated token ids (without the EOS token).
    pub tokens: Vec<u32>,
    pub text: String,
    /// The chain of thought (`<think>` block), if any.
    pub reasoning: Option<String>,
    /// The text after the chain of thought.
    pub answer: String,
    pub finish_reason: FinishReason,
    /// The sampler's log-prob of each generated token (EOS included when produced).
    pub logprobs: Vec<f32>,
}

/// One prompt's share of [`Engine::generate_many`]: `rngs.len()` completions of `prompt`,
/// completion `i` sampling with `rngs[i]`.
pub struct PromptGroup<'a> {
    pub prompt: &'a [u32],
    pub rngs: Vec<Rng>,
}

/// Splits requests that start at one step into prefill groups: requests whose prompts
/// (`len` of each) have one length share a forward, in the order their first member
/// came, while the group stays within [`SHARED_PREFILL_TOKENS`] prompt tokens; a longer
/// prompt is a group of its own.
pub(crate) fn prefill_groups<T>(items: Vec<T>, len: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    for item in items {
        let l = len(&item);
        let open = groups
            .iter_mut()
            .find(|g| g.first().is_some_and(|f| len(f) == l) && (g.len() + 1) * l <= SHARED_PREFILL_TOKENS);
        match open {
            Some(g) => g.push(item),
            None => groups.push(vec![item]),
        }
    }
    groups
}

/// Errors of generation.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("prompt of {prompt} tokens plus {new} new tokens exceeds the model's {max} positions")]
    TooLong { prompt: usize, new: usize, max: usize },
    #[error("empty prompt")]
    EmptyPrompt,
    #[error("0 completions requested: ask for at least one")]
    NoCompletions,
    #[error("the model produced non-finite logits (NaN or infinity) for sequence row {row}")]
    NonFinite { row: usize },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    BadToken { id: u32, vocab: usize },
    #[error("invalid sampling settings: {0}")]
    Sampling(String),
    #[error("engine: {0}")]
    Internal(String),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// How the engine turns tokens into text and knows when to stop.
pub trait Detokenizer {
    fn decode(&self, tokens: &[u32]) -> String;
    fn eos_id(&self) -> Option<u32>;
}

/// Generation state reused across calls: a [`Batch`] (KV cache, planned step graphs,
/// sampler), re-made only when a call needs more rows or positions.
pub struct Engine<B: Backend> {
    cfg: ModelConfig,
    cache_types: KvCacheTypes,
    batch: Option<Batch<B>>,
    /// Graphs built by batches this engine dropped.
    plans_dropped: usize,
}

impl<B: Backend> Engine<B> {
    /// An engine for models of `cfg` (weights are passed to each call), with an f32 KV
    /// cache.
    pub fn new(cfg: ModelConfig) -> Self {
        Engine::with_cache_types(cfg, KvCacheTypes::F32)
    }

    /// An engine whose KV cache stores keys and values as `cache_types` says (llama.cpp's
    /// `--cache-type-k` / `--cache-type-v`). A quantized type the model's cache rows
    /// cannot hold is refused by the first `generate`.
    pub fn with_cache_types(cfg: ModelConfig, cache_types: KvCacheTypes) -> Self {
        Engine {
            cfg,
            cache_types,
            batch: None,
            plans_dropped: 0,
        }
    }

    /// What the KV cache stores keys and values as.
    pub fn cache_types(&self) -> KvCacheTypes {
        self.cache_types
    }

    /// The model config this engine generates for.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// How many step graphs have been built and planned so far (one per shape bucket,
    /// however many tokens were decoded).
    pub fn plans_built(&self) -> usize {
        self.plans_dropped + self.batch.as_ref().map_or(0, Batch::plans_built)
    }

    /// Bytes the KV cache takes per cached token (all layers, keys and values), once a
    /// cache exists.
    pub fn kv_bytes_per_token(&self) -> Option<usize> {
        self.batch.as_ref().map(Batch::kv_bytes_per_token)
    }

    /// Generates `n` completions of `prompt` sharing one prefill, on the continuous
    /// batching engine ([`batch`]): a completion that ends leaves the batch. Completion
    /// `i` samples with the `i`-th fork of `rng`. `on_token(row, token)` sees every token
    /// but EOS as it is sampled (streaming). Stop strings stay in `Completion::text`.
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        tok: &dyn Detokenizer,
        prompt: &[u32],
        n: usize,
        generation: &GenerationConfig,
        rng: &mut Rng,
        mut on_token: impl FnMut(usize, u32),
    ) -> Result<Vec<Completion>, EngineError> {
        let (budget, capacity) = self.check(prompt, n, generation)?;
        let batch = self.batch_for(backend, n, capacity)?;
        let config = seq_config(generation, budget);
        let rngs = (0..n).map(|_| rng.fork()).collect();
        let mut done: Vec<Option<Completion>> = (0..n).map(|_| None).collect();
        let mut step = batch.admit(backend, params, tok, prompt, 0, config, rngs)?;
        loop {
            for t in &step {
                if t.finish != Some(FinishReason::Eos) {
                    on_token(t.index, t.token.id);
                }
            }
            for seq in batch.retire(backend, |_| false)? {
                let index = seq.index;
                if let Some(slot) = done.get_mut(index) {
                    *slot = Some(completion(tok, seq));
                }
            }
            if batch.is_empty() {
                break;
            }
            step = batch.decode(backend, params, tok)?;
        }
        done.into_iter()
            .map(|c| c.ok_or_else(|| EngineError::Internal("a completion never finished".into())))
            .collect()
    }

    /// Rows of `positions` positions each whose keys and values fit in `kv_mib` MiB (in
    /// this engine's cache types), within [`BATCH_ROWS`] and at least 1: the `max_rows` to
    /// pass [`Engine::generate_many`] under a memory budget.
    pub fn rows_within(&self, kv_mib: usize, positions: usize) -> Result<usize, EngineError> {
        let per_token = KvCache::<B>::bytes_per_token_for(&self.cfg, self.cache_types)?;
        let per_row = per_token.saturating_mul(positions.max(1)).max(1);
        Ok((kv_mib.saturating_mul(1 << 20) / per_row).clamp(1, BATCH_ROWS))
    }

    /// Checks one prompt's request; returns its token budget and the cache capacity it
    /// needs.
    fn check(&self, prompt: &[u32], n: usize, generation: &GenerationConfig) -> Result<(usize, usize), EngineError> {
        generation
            .sampling
            .validate()
            .map_err(|e| EngineError::Sampling(e.to_string()))?;
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let vocab = self.cfg.vocab_size;
        if let Some(&id) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(EngineError::BadToken { id, vocab });
        }
        let max_pos = self.cfg.max_position_embeddings;
        if prompt.len() >= max_pos {
            return Err(EngineError::TooLong {
                prompt: prompt.len(),
                new: generation.max_new_tokens,
                max: max_pos,
            });
        }
        if n == 0 {
            return Err(EngineError::NoCompletions);
        }
        let budget = generation.max_new_tokens.min(max_pos - prompt.len());
        // Capacities come in steps of 64 positions, so prompts of similar lengths share
        // one cache and one decode plan.
        let capacity = (prompt.len() + budget).next_multiple_of(CAPACITY_STEP).min(max_pos);
        Ok((budget, capacity))
    }

    /// The batch, re-made unless it has `slots` rows of `capacity` positions.
    fn batch_for(&mut self, backend: &B, slots: usize, capacity: usize) -> Result<&mut Batch<B>, EngineError> {
        if self.batch.as_ref().is_none_or(|b| !b.fits(slots, capacity)) {
            self.plans_dropped += self.batch.as_ref().map_or(0, Batch::plans_built);
            self.batch = None;
            self.batch = Some(Batch::new(backend, &self.cfg, slots, capacity, self.cache_types)?);
        }
        self.batch
            .as_mut()
            .ok_or_else(|| EngineError::Internal("no batch".into()))
    }

    /// Generates several prompts' completions on one running batch: every group's rows
    /// join as soon as the batch has room for the whole group, groups admitted together
    /// whose prompts have one length share a prefill, and rows leave as they end. At most
    /// `max_rows` rows run at once (never fewer than the largest group); the batch is
    /// also kept within [`BATCH_ROWS`], where the CPU backend computes every row
    /// independently of the rows beside it, so each completion is, bit for bit, the one
    /// [`Engine::generate`] gives its group alone with the same forks. Completion `i` of
    /// group `g` samples with `groups[g].rngs[i]`. Returns each group's completions in
    /// order.
    pub fn generate_many(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        tok: &dyn Detokenizer,
        groups: Vec<PromptGroup<'_>>,
        generation: &GenerationConfig,
        max_rows: usize,
    ) -> Result<Vec<Vec<Completion>>, EngineError> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let mut capacity = 0;
        let mut budgets = Vec::with_capacity(groups.len());
        for g in &groups {
            let (budget, cap) = self.check(g.prompt, g.rngs.len(), generation)?;
            capacity = capacity.max(cap);
            budgets.push(budget);
        }
        let widest = groups.iter().map(|g| g.rngs.len()).max().unwrap_or(1);
        let total: usize = groups.iter().map(|g| g.rngs.len()).sum();
        let slots = total.min(max_rows.min(BATCH_ROWS)).max(widest);
        let batch = self.batch_for(backend, slots, capacity)?;
        let configs: Vec<Arc<SeqConfig>> = budgets.into_iter().map(|b| seq_config(generation, b)).collect();
        let mut done: Vec<Vec<Option<Completion>>> = groups
            .iter()
            .map(|g| (0..g.rngs.len()).map(|_| None).collect())
            .collect();
        let mut waiting: std::collections::VecDeque<(usize, PromptGroup<'_>)> =
            groups.into_iter().enumerate().collect();
        loop {
            // A batch kept from an earlier call may have more rows than this call may use.
            let mut free = slots.saturating_sub(batch.seqs().len());
            let mut admitted = Vec::new();
            while let Some((_, g)) = waiting.front() {
                if g.rngs.len() > free {
                    break;
                }
                free -= g.rngs.len();
                admitted.extend(waiting.pop_front());
            }
            for shared in prefill_groups(admitted, |(_, g)| g.prompt.len()) {
                let admissions = shared
                    .into_iter()
                    .map(|(i, g)| Admission {
                        prompt: g.prompt.to_vec(),
                        owner: i as u64,
                        config: configs[i].clone(),
                        rngs: g.rngs,
                    })
                    .collect();
                batch.admit_many(backend, params, tok, admissions)?;
            }
            for seq in batch.retire(backend, |_| false)? {
                let (owner, index) = (seq.owner as usize, seq.index);
                if let Some(slot) = done.get_mut(owner).and_then(|d| d.get_mut(index)) {
                    *slot = Some(completion(tok, seq));
                }
            }
            if batch.is_empty() && waiting.is_empty() {
                break;
            }
            batch.decode(backend, params, tok)?;
        }
        done.into_iter()
            .map(|d| {
                d.into_iter()
                    .map(|c| c.ok_or_else(|| EngineError::Internal("a completion never finished".into())))
                    .collect()
            })
            .collect()
    }
}

/// The per-sequence settings of a completion of `generation` with `budget` new tokens.
fn seq_config(generation: &GenerationConfig, budget: usize) -> Arc<SeqConfig> {
    Arc::new(SeqConfig {
        sampling: generation.sampling.clone(),
        max_new_tokens: budget,
        stop: generation.stop.clone(),
        top_logprobs: None,
        ignore_eos: false,
        sampler_logprobs: false,
    })
}

/// A finished sequence as a [`Completion`] (the whole text, stop strings included).
fn completion(tok: &dyn Detokenizer, seq: Seq) -> Completion {
    let finish = seq.finish.unwrap_or(FinishReason::Length);
    completion_from_tokens(tok, seq.tokens().to_vec(), finish, seq.logprobs)
}

/// A [`Completion`] of generated `tokens` (without EOS) and the sampler's `logprobs`:
/// the text decoded and split into reasoning and answer.
pub fn completion_from_tokens(
    tok: &dyn Detokenizer,
    tokens: Vec<u32>,
    finish_reason: FinishReason,
    logprobs: Vec<f32>,
) -> Completion {
    let text = tok.decode(&tokens);
    let split = split_reasoning(&text);
    let (reasoning, answer) = (split.reasoning.map(str::to_string), split.answer.to_string());
    Completion {
        finish_reason,
        tokens,
        reasoning,
        answer,
        text,
        logprobs,
    }
}
