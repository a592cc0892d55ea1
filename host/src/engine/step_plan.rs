//! Planned step graphs: a forward graph and its memory plan per shape bucket
//! `(batch, new tokens, cache capacity)`, built on first use and kept (least recently
//! used first out), so decoding N tokens builds one graph, not N. The cached lengths are
//! an input (`past [B]`), uploaded with the token ids (and, for a shared prefill, each
//! sequence's last row) into one small feed buffer.

use r1_core::backend::{Backend, BackendError, i32_bytes};
use r1_core::exec::{Bindings, Executor};
use r1_core::model::{
    BuildOptions, CausalLm, KvCacheSpec, KvCacheTypes, LogitsFor, LoraSpec, ModelConfig, build_causal_lm_typed,
    last_rows,
};
use r1_core::{Graph, GraphError, Plan, TensorDesc};

use super::EngineError;
use super::kv_cache::{KvCache, Side};
use crate::weights::ParamBuffer;

/// Step plans kept at once: decode plans for each batch size continuous batching passes
/// through, plus recent prefill lengths. A running batch that drains from
/// [`super::BATCH_ROWS`] rows to none visits every row count once per generation, and an
/// LRU smaller than that cycle would rebuild a plan at every step, so it holds twice as
/// many (a plan is a graph and its memory plan, a few KiB; the arena is the executor's).
const MAX_PLANS: usize = 2 * super::BATCH_ROWS;

/// The per-step inputs: `[ids (rows × tokens) i32 | past (rows) i32 | last rows (rows) i32]`.
pub struct StepFeed<B: Backend> {
    buffer: B::Buffer,
    /// Token ids it has room for.
    ids: usize,
    /// Sequences it has room for.
    rows: usize,
}

impl<B: Backend> StepFeed<B> {
    /// Room for `batch × t` token ids and `batch` positions (at least 64 of each, so
    /// decode and short prefills share one buffer).
    pub fn new(backend: &B, batch: usize, t: usize) -> Result<Self, BackendError> {
        let ids = batch.saturating_mul(t).max(64);
        let rows = batch.max(64);
        let bytes = TensorDesc::i32(&[ids])
            .bytes()
            .saturating_add(2 * TensorDesc::i32(&[rows]).bytes());
        Ok(StepFeed {
            buffer: backend.alloc(bytes)?,
            ids,
            rows,
        })
    }

    /// Whether a `batch × t` step fits.
    pub fn fits(&self, batch: usize, t: usize) -> bool {
        batch.saturating_mul(t) <= self.ids && batch <= self.rows
    }

    /// Byte offset of the positions region.
    fn past_offset(&self) -> usize {
        TensorDesc::i32(&[self.ids]).bytes()
    }

    /// Byte offset of the last-rows region.
    fn last_rows_offset(&self) -> usize {
        self.past_offset() + TensorDesc::i32(&[self.rows]).bytes()
    }

    /// Uploads one step's token ids (`past.len()` rows of equal length), each sequence's
    /// cached length, and, for several multi-token rows, where each row's last token is.
    pub fn upload(&self, backend: &B, ids: &[u32], past: &[usize]) -> Result<(), EngineError> {
        let to_i32 = |v: usize| i32::try_from(v).map_err(|_| EngineError::Internal(format!("{v} exceeds i32")));
        let (rows, t) = (past.len(), ids.len() / past.len().max(1));
        let last: Vec<i32> = if rows > 1 && t > 1 {
            last_rows(rows, t).map(to_i32).collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let ids: Vec<i32> = ids.iter().map(|&x| to_i32(x as usize)).collect::<Result<_, _>>()?;
        let past: Vec<i32> = past.iter().map(|&x| to_i32(x)).collect::<Result<_, _>>()?;
        backend.upload(&self.buffer, 0, &i32_bytes(&ids))?;
        backend.upload(&self.buffer, self.past_offset(), &i32_bytes(&past))?;
        if !last.is_empty() {
            backend.upload(&self.buffer, self.last_rows_offset(), &i32_bytes(&last))?;
        }
        Ok(())
    }
}

/// One bucket's graph, plan and node ids.
pub struct PlannedStep {
    key: (usize, usize, usize),
    /// The LoRA adapter the graph computes (a model gains or loses one between stages;
    /// its stored weight types are fixed for its life).
    lora: Option<LoraSpec>,
    graph: Graph,
    plan: Plan,
    lm: CausalLm,
    last_used: u64,
}

impl PlannedStep {
    /// Binds weights, the feed's rows `feed_row..feed_row + batch` and cache rows
    /// `first_row..first_row + batch`, runs the plan and returns the logits `[batch, V]`.
    /// Only a one-token step may start past the feed's first row (a prefill's last-row
    /// indices are its own; a one-token step has none).
    #[allow(clippy::too_many_arguments)]
    pub fn run<B: Backend>(
        &self,
        backend: &B,
        executor: &mut Executor<B>,
        params: &ParamBuffer<B>,
        feed: &StepFeed<B>,
        feed_row: usize,
        cache: &KvCache<B>,
        first_row: usize,
    ) -> Result<Vec<f32>, GraphError> {
        let (batch, t, _) = self.key;
        if feed_row > 0 && t != 1 {
            return Err(GraphError::Shape {
                op: "step",
                detail: format!("a {batch}×{t} step cannot start at feed row {feed_row}"),
            });
        }
        let (k_offset, v_offset) = (
            first_row * cache.row_bytes(Side::Keys),
            first_row * cache.row_bytes(Side::Values),
        );
        let id_bytes = TensorDesc::i32(&[1]).bytes();
        let mut b = Bindings::new(&self.graph);
        params.bind(&self.lm, &mut b)?;
        b.bind(self.lm.input_ids, &feed.buffer, feed_row * t * id_bytes)?;
        if let Some(p) = self.lm.past {
            b.bind(p, &feed.buffer, feed.past_offset() + feed_row * id_bytes)?;
        }
        if let Some(r) = self.lm.last_rows {
            b.bind(r, &feed.buffer, feed.last_rows_offset())?;
        }
        for (l, &(kc, vc)) in self.lm.caches.iter().enumerate() {
            let (kbuf, vbuf) = cache.layers.get(l).ok_or(GraphError::UnknownNode(kc.0))?;
            b.bind(kc, kbuf, k_offset)?;
            if let (Some(vc), Some(vbuf)) = (vc, vbuf) {
                b.bind(vc, vbuf, v_offset)?;
            }
        }
        executor.run(backend, &self.graph, &self.plan, &b)?;
        executor.read_f32(backend, &self.graph, &self.plan, &b, self.lm.logits)
    }
}

/// The kept step plans, all over caches of one pair of element types.
pub struct StepPlans {
    plans: Vec<PlannedStep>,
    clock: u64,
    built: usize,
    cache_types: KvCacheTypes,
}

impl StepPlans {
    /// No plans yet; every plan will read and write caches of `cache_types`.
    pub fn new(cache_types: KvCacheTypes) -> StepPlans {
        StepPlans {
            plans: Vec::new(),
            clock: 0,
            built: 0,
            cache_types,
        }
    }

    /// Forgets every plan (`built` keeps counting).
    pub fn clear(&mut self) {
        self.plans.clear();
    }

    /// Graphs built so far.
    pub fn built(&self) -> usize {
        self.built
    }

    /// The plan of a `batch × t` step over a cache of `capacity` rows, built on first use
    /// with each weight of `params` in its stored type.
    pub fn get<B: Backend>(
        &mut self,
        backend: &B,
        cfg: &ModelConfig,
        params: &ParamBuffer<B>,
        batch: usize,
        t: usize,
        capacity: usize,
    ) -> Result<&PlannedStep, EngineError> {
        self.clock += 1;
        let key = (batch, t, capacity);
        let lora = params.lora().copied();
        let i = match self.plans.iter().position(|p| p.key == key && p.lora == lora) {
            Some(i) => i,
            None => {
                let step = Self::build(backend, cfg, params, key, self.cache_types)?;
                if self.plans.len() >= MAX_PLANS
                    && let Some(oldest) = (0..self.plans.len()).min_by_key(|&i| self.plans[i].last_used)
                {
                    self.plans.swap_remove(oldest);
                }
                self.plans.push(step);
                self.built += 1;
                self.plans.len() - 1
            }
        };
        let step = &mut self.plans[i];
        step.last_used = self.clock;
        Ok(step)
    }

    /// [`StepPlans::get`] for one-token steps of each of `batches` rows, all at once: the
    /// plans of a decode step cut into lanes.
    pub fn get_all<B: Backend>(
        &mut self,
        backend: &B,
        cfg: &ModelConfig,
        params: &ParamBuffer<B>,
        batches: &[usize],
        capacity: usize,
    ) -> Result<Vec<&PlannedStep>, EngineError> {
        for &batch in batches {
            // Each lookup marks its plan the newest, so a later build evicts none of them
            // (MAX_PLANS is far more than the lanes).
            self.get(backend, cfg, params, batch, 1, capacity)?;
        }
        let lora = params.lora().copied();
        batches
            .iter()
            .map(|&batch| {
                self.plans
                    .iter()
                    .find(|p| p.key == (batch, 1, capacity) && p.lora == lora)
                    .ok_or_else(|| EngineError::Internal(format!("no plan for {batch} rows after building it")))
            })
            .collect()
    }

    fn build<B: Backend>(
        backend: &B,
        cfg: &ModelConfig,
        params: &ParamBuffer<B>,
        key: (usize, usize, usize),
        types: KvCacheTypes,
    ) -> Result<PlannedStep, EngineError> {
        let (batch, seq, capacity) = key;
        let mut graph = Graph::new();
        let opts = BuildOptions {
            batch,
            seq,
            kv_cache: Some(KvCacheSpec { capacity, types }),
            logits: LogitsFor::Last,
            train: false,
        };
        let lm = build_causal_lm_typed(&mut graph, cfg, &opts, &params.weight_types())?;
        let plan = Plan::for_backend(&graph, &[lm.logits], backend)?;
        Ok(PlannedStep {
            key,
            lora: params.lora().copied(),
            graph,
            plan,
            lm,
            last_used: 0,
        })
    }
}
