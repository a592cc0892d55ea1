//! The generation engine: prefill a prompt once, then decode a batch of completions with
//! a KV cache, sampling each token (temperature, top-k, top-p, min-p, repetition
//! penalty, seed) until EOS, a stop string, or the token budget.
//!
//! The G completions of one prompt share its prefill: the prompt runs once at batch 1,
//! its keys/values are copied into the other rows, and decoding proceeds at batch G.
//! Graphs and their memory plans are built once per shape bucket `(batch, new tokens,
//! cache capacity)` and kept ([`step_plan`]): a decode step only uploads its token ids
//! and each sequence's cached length (the `past` input) and runs the same plan again.

pub mod kv_cache;
pub mod step_plan;

use r1_core::GraphError;
use r1_core::backend::{Backend, BackendError};
use r1_core::exec::Executor;
use r1_core::model::{BuildError, ModelConfig};
use r1_core::reasoning::split_reasoning;
use r1_core::sampling::{Rng, Sampler, SamplingParams};

use crate::weights::ParamBuffer;
use kv_cache::KvCache;
use step_plan::{StepFeed, StepPlans};

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

/// Errors of generation.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("prompt of {prompt} tokens plus {new} new tokens exceeds the model's {max} positions")]
    TooLong { prompt: usize, new: usize, max: usize },
    #[error("empty prompt")]
    EmptyPrompt,
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

/// Generation state reused across calls: KV cache, planned step graphs, arena, scratch.
pub struct Engine<B: Backend> {
    cfg: ModelConfig,
    cache: Option<KvCache<B>>,
    plans: StepPlans,
    executor: Executor<B>,
    sampler: Sampler,
    feed: Option<StepFeed<B>>,
}

impl<B: Backend> Engine<B> {
    /// An engine for models of `cfg` (weights are passed to each call).
    pub fn new(cfg: ModelConfig) -> Self {
        Engine {
            cfg,
            cache: None,
            plans: StepPlans::default(),
            executor: Executor::new(),
            sampler: Sampler::new(),
            feed: None,
        }
    }

    /// The model config this engine generates for.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// How many step graphs have been built and planned so far (one per shape bucket,
    /// however many tokens were decoded).
    pub fn plans_built(&self) -> usize {
        self.plans.built()
    }

    /// Bytes the KV cache takes per cached token (all layers, keys and values), once a
    /// cache exists.
    pub fn kv_bytes_per_token(&self) -> Option<usize> {
        self.cache.as_ref().map(KvCache::bytes_per_token)
    }

    /// Runs one forward step: `ids` (`batch × t`, row-major) at position `past` of every
    /// row, writing keys/values into the cache; returns the last position's logits per
    /// row (`[batch, V]`). The step's graph and plan come from the shape bucket's cache.
    fn step(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        ids: &[u32],
        batch: usize,
        past: usize,
    ) -> Result<Vec<f32>, EngineError> {
        let cache = self
            .cache
            .as_ref()
            .ok_or_else(|| EngineError::Internal("decode step before the KV cache exists".into()))?;
        let t = ids.len() / batch;
        let planned = self.plans.get(backend, &self.cfg, batch, t, cache.capacity)?;
        if self.feed.as_ref().is_none_or(|f| !f.fits(batch, t)) {
            self.feed = None;
            self.feed = Some(StepFeed::new(backend, batch, t)?);
        }
        let feed = self
            .feed
            .as_ref()
            .ok_or_else(|| EngineError::Internal("no feed buffer".into()))?;
        let pasts = vec![past; batch];
        feed.upload(backend, ids, &pasts)?;
        Ok(planned.run(backend, &mut self.executor, params, feed, cache)?)
    }

    /// Generates `n` completions of `prompt` sharing one prefill. `on_token(row, token)`
    /// sees every token as it is sampled (streaming).
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
        let n = n.max(1);
        let budget = generation.max_new_tokens.min(max_pos - prompt.len());
        // Capacities come in steps of 64 positions, so prompts of similar lengths share
        // one cache and one decode plan.
        let capacity = (prompt.len() + budget).next_multiple_of(CAPACITY_STEP).min(max_pos);
        if self.cache.as_ref().is_none_or(|c| !c.fits(n, capacity)) {
            self.cache = None;
            self.cache = Some(KvCache::new(backend, &self.cfg, n, capacity)?);
        }

        // Prefill at batch 1 into cache row 0, then share it with every row.
        let mut logits = self.step(backend, params, prompt, 1, 0)?;
        if let Some(c) = &self.cache {
            c.broadcast_row0(backend, prompt.len())?;
        }
        let mut rows: Vec<Row> = (0..n).map(|_| Row::new(rng.fork())).collect();
        let first = logits.clone();
        logits = (0..n).flat_map(|_| first.iter().copied()).collect();

        let eos = tok.eos_id();
        let mut past = prompt.len();
        let mut history: Vec<u32> = prompt.to_vec();
        for step in 0..budget {
            let mut next = Vec::with_capacity(n);
            for (r, row) in rows.iter_mut().enumerate() {
                if row.finish.is_some() {
                    next.push(eos.unwrap_or(0));
                    continue;
                }
                history.truncate(prompt.len());
                history.extend_from_slice(&row.tokens);
                let l = &mut logits[r * vocab..(r + 1) * vocab];
                let s = self.sampler.sample(l, &history, &generation.sampling, &mut row.rng);
                row.logprobs.push(s.logprob);
                if Some(s.token) == eos {
                    row.finish = Some(FinishReason::Eos);
                } else {
                    row.tokens.push(s.token);
                    on_token(r, s.token);
                    if !generation.stop.is_empty() {
                        let text = tok.decode(&row.tokens);
                        if generation.stop.iter().any(|st| text.ends_with(st.as_str())) {
                            row.finish = Some(FinishReason::Stop);
                        }
                    }
                }
                next.push(s.token);
            }
            if rows.iter().all(|r| r.finish.is_some()) || step + 1 == budget {
                break;
            }
            logits = self.step(backend, params, &next, n, past)?;
            past += 1;
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let text = tok.decode(&row.tokens);
                let split = split_reasoning(&text);
                let (reasoning, answer) = (split.reasoning.map(str::to_string), split.answer.to_string());
                Completion {
                    finish_reason: row.finish.unwrap_or(FinishReason::Length),
                    tokens: row.tokens,
                    reasoning,
                    answer,
                    text,
                    logprobs: row.logprobs,
                }
            })
            .collect())
    }
}

/// Decoding state of one completion.
struct Row {
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    finish: Option<FinishReason>,
    rng: Rng,
}

impl Row {
    fn new(rng: Rng) -> Row {
        Row {
            tokens: Vec::new(),
            logprobs: Vec::new(),
            finish: None,
            rng,
        }
    }
}
