//! Training graphs of a causal LM for one batch shape: the forward pass, an objective on
//! its logits, and the backward pass to every weight, planned once and run many times.
//!
//! Two objectives serve all of r1's stages:
//! - [`Objective::CrossEntropy`]: SFT / distillation. A scalar `Σ w_i · NLL_i` with
//!   per-position weights fed by the caller (mask / token count), seeded with 1.
//! - [`Objective::TokenLogProbs`]: GRPO. The per-token log-prob of each target under
//!   `softmax(logits / temperature)` (as TRL scores completions), plus its entropy; the
//!   backward pass is seeded with d loss / d logp, which the caller computes from the
//!   downloaded log-probs between [`LmGraph::forward`] and [`LmGraph::backward`].

use std::ops::Range;

use r1_core::backend::{Backend, BackendError, TensorRef, f32_bytes, i32_bytes};
use r1_core::exec::{Bindings, Executor};
use r1_core::model::{
    BuildError, BuildOptions, CausalLm, DROPOUT_SEED, ModelConfig, WeightTypes, build_causal_lm_typed,
};
use r1_core::{Graph, GraphError, NodeId, Plan, TensorDesc, autodiff};

use crate::weights::ParamBuffer;

/// A dropout seed from the numbers that name one forward pass (a trainer's seed, step,
/// micro-batch, …), so a resumed run draws the masks it would have.
pub fn dropout_seed(parts: &[u64]) -> u32 {
    (seed_of(parts) >> 32) as u32
}

/// A seed from the numbers that name one random draw (a trainer's seed, step, group, …):
/// a splitmix64 chain over them.
pub fn seed_of(parts: &[u64]) -> u64 {
    let mut z = 0x9e37_79b9_7f4a_7c15u64;
    for &p in parts {
        z = (z ^ p).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
    }
    z
}

/// Gradient checkpointing of a training graph: the first `layers` decoder layers are
/// computed again in the backward pass instead of keeping their activations from the
/// forward pass (0: off). What stays live between the passes is then each recomputed
/// layer's input alone; the gradients are bit for bit the same, for one more forward pass
/// through those layers. All layers is what `gradient_checkpointing = true` does in
/// transformers; fewer trade memory back for time (Megatron's `recompute_num_layers`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Checkpointing {
    pub layers: usize,
}

impl Checkpointing {
    /// No recomputation.
    pub const OFF: Checkpointing = Checkpointing { layers: 0 };

    /// From a trainer's settings (TrainingArguments' `gradient_checkpointing`, and r1's
    /// `gradient_checkpointing_layers`: how many layers, all when unset).
    pub fn from_settings(enabled: bool, layers: Option<usize>) -> Checkpointing {
        match (enabled, layers) {
            (false, _) => Checkpointing::OFF,
            (true, None) => Checkpointing { layers: usize::MAX },
            (true, Some(n)) => Checkpointing { layers: n },
        }
    }
}

/// What the graph computes from the logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Objective {
    CrossEntropy,
    TokenLogProbs { temperature: f32 },
}

/// One batch's data: `[B, T]` token ids and targets (target −1 = no loss there), and for
/// cross-entropy the per-position loss weights.
pub struct Feed<'a> {
    pub ids: &'a [i32],
    pub targets: &'a [i32],
    pub weights: Option<&'a [f32]>,
}

/// The per-batch inputs of the graph, all bound to one feed buffer.
struct FeedSlots {
    targets: NodeId,
    /// Cross-entropy loss weights.
    weights: Option<NodeId>,
    /// The `[B, T]` d loss / d logp input (token log-probs objective only).
    seed: Option<NodeId>,
    /// The `[1]` i32 seed of the LoRA dropout masks (training graphs of an adapter with
    /// dropout only).
    dropout_seed: Option<NodeId>,
    /// Where each input lives in the feed buffer.
    at: FeedOffsets,
}

/// Byte offsets of the feed buffer's regions `[ids i32 | targets i32 | weights f32 |
/// seed f32]`, one value per position each, then the dropout seed (one i32), and its size.
#[derive(Clone, Copy, Debug)]
struct FeedOffsets {
    targets: usize,
    weights: usize,
    seed: usize,
    dropout_seed: usize,
    total: usize,
}

impl FeedOffsets {
    fn new(positions: usize) -> FeedOffsets {
        let ids = TensorDesc::i32(&[positions]).bytes();
        let targets = ids;
        let weights = targets + TensorDesc::i32(&[positions]).bytes();
        let seed = weights + TensorDesc::f32(&[positions]).bytes();
        let dropout_seed = seed + TensorDesc::f32(&[positions]).bytes();
        FeedOffsets {
            targets,
            weights,
            seed,
            dropout_seed,
            total: dropout_seed + TensorDesc::i32(&[1]).bytes(),
        }
    }
}

/// Binds params and the feed buffer (see [`FeedOffsets`]).
fn bind_all<'a, B: Backend>(
    graph: &Graph,
    lm: &CausalLm,
    slots: &FeedSlots,
    feed: &'a B::Buffer,
    params: &'a ParamBuffer<B>,
) -> Result<Bindings<'a, B::Buffer>, LmGraphError> {
    let mut b = Bindings::new(graph);
    params.bind(lm, &mut b)?;
    b.bind(lm.input_ids, feed, 0)?;
    b.bind(slots.targets, feed, slots.at.targets)?;
    if let Some(w) = slots.weights {
        b.bind(w, feed, slots.at.weights)?;
    }
    if let Some(s) = slots.seed {
        b.bind(s, feed, slots.at.seed)?;
    }
    if let Some(s) = slots.dropout_seed {
        b.bind(s, feed, slots.at.dropout_seed)?;
    }
    Ok(b)
}

/// Why an [`LmGraph`] has no backward part.
#[derive(Clone, Debug)]
enum Frozen {
    /// A weight kept in a stored type and no adapter: nothing can train.
    Stored(String),
    /// Built with [`LmGraph::scoring`].
    Scoring,
}

/// A planned forward + backward graph for one `[B, T]` shape.
pub struct LmGraph<B: Backend> {
    pub graph: Graph,
    pub lm: CausalLm,
    pub plan: Plan,
    pub objective: Objective,
    pub batch: usize,
    pub seq: usize,
    slots: FeedSlots,
    /// The scalar loss (cross-entropy) or `[B, T]` log-probs.
    pub output: NodeId,
    /// `[B, T]` entropies (token log-probs objective only).
    pub entropy: Option<NodeId>,
    /// Gradient node of every trainable parameter that gets one, by name (the whole model,
    /// or a LoRA adapter's weights).
    pub grads: Vec<(String, NodeId)>,
    forward_steps: usize,
    /// Why the graph has no backward part, when it has none.
    frozen: Option<Frozen>,
    feed: B::Buffer,
    executor: Executor<B>,
}

/// Errors running a training graph.
#[derive(Debug, thiserror::Error)]
pub enum LmGraphError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("batch data: {0}")]
    Feed(String),
    #[error("this graph scores only: the model keeps weights in a stored type (e.g. `{0}`), which cannot be trained")]
    ForwardOnly(String),
    #[error("this graph was built to score only (LmGraph::scoring): it has no backward part")]
    ScoringOnly,
}

impl<B: Backend> LmGraph<B> {
    /// Builds, differentiates and plans the graph for `batch × seq` tokens.
    pub fn new(
        backend: &B,
        cfg: &ModelConfig,
        batch: usize,
        seq: usize,
        objective: Objective,
    ) -> Result<Self, LmGraphError> {
        Self::with_types(backend, cfg, &WeightTypes::all_f32(), batch, seq, objective)
    }

    /// [`LmGraph::new`] for weights stored as `types` (a [`ParamBuffer::weight_types`]).
    /// With a LoRA adapter, the backward part reaches the adapter's weights only. Without
    /// one, any weight not f32 makes the graph forward only (scoring: `r1host logprobs`):
    /// there is no backward part, and [`LmGraph::backward`] refuses. A LoRA adapter's
    /// dropout does not apply (scoring); trainers build with [`LmGraph::for_training`].
    pub fn with_types(
        backend: &B,
        cfg: &ModelConfig,
        types: &WeightTypes,
        batch: usize,
        seq: usize,
        objective: Objective,
    ) -> Result<Self, LmGraphError> {
        let backward = Some(Checkpointing::OFF);
        Self::build(backend, cfg, types, BuildOptions::full(batch, seq), objective, backward)
    }

    /// A forward-only graph (no backward part, so no gradient buffers in its arena): what
    /// scores a frozen model — GRPO's reference, `r1host logprobs`.
    pub fn scoring(
        backend: &B,
        cfg: &ModelConfig,
        types: &WeightTypes,
        batch: usize,
        seq: usize,
        objective: Objective,
    ) -> Result<Self, LmGraphError> {
        Self::build(backend, cfg, types, BuildOptions::full(batch, seq), objective, None)
    }

    /// [`LmGraph::with_types`] for a trainer: a LoRA adapter's dropout applies, its masks
    /// drawn from the seed [`LmGraph::set_dropout_seed`] sets (0 until then); the layers
    /// `checkpoint` names are recomputed in the backward pass.
    #[allow(clippy::too_many_arguments)]
    pub fn for_training(
        backend: &B,
        cfg: &ModelConfig,
        types: &WeightTypes,
        batch: usize,
        seq: usize,
        objective: Objective,
        checkpoint: Checkpointing,
    ) -> Result<Self, LmGraphError> {
        let opts = BuildOptions::training(batch, seq);
        Self::build(backend, cfg, types, opts, objective, Some(checkpoint))
    }

    /// The graph of `opts` with `objective`, and a backward part (checkpointed as it
    /// says) unless `backward` is `None`.
    fn build(
        backend: &B,
        cfg: &ModelConfig,
        types: &WeightTypes,
        opts: BuildOptions,
        objective: Objective,
        backward: Option<Checkpointing>,
    ) -> Result<Self, LmGraphError> {
        let (batch, seq) = (opts.batch, opts.seq);
        let mut g = Graph::new();
        let lm = build_causal_lm_typed(&mut g, cfg, &opts, types)?;
        let dropout_seed = g.find(DROPOUT_SEED);
        let targets = g.input("targets", TensorDesc::i32(&[batch, seq]))?;
        let (output, entropy, weights, seed_pair, seed) = match objective {
            Objective::CrossEntropy => {
                let v = cfg.vocab_size;
                let logits = g.reshape(lm.logits, &[batch * seq, v])?;
                let t = g.reshape(targets, &[batch * seq])?;
                let w = g.input("loss_weights", TensorDesc::f32(&[batch * seq]))?;
                let loss = g.cross_entropy(logits, t, w)?;
                let one = g.fill(1.0, &[])?;
                (loss, None, Some(w), (loss, one), None)
            }
            Objective::TokenLogProbs { temperature } => {
                if !(temperature.is_finite() && temperature > 0.0) {
                    return Err(LmGraphError::Feed(format!(
                        "temperature {temperature} must be positive"
                    )));
                }
                let scaled = if temperature == 1.0 {
                    lm.logits
                } else {
                    g.scale(lm.logits, 1.0 / temperature)?
                };
                let logp = g.token_log_probs(scaled, targets)?;
                let ent = g.entropy(scaled)?;
                let d = g.input("d_logp", TensorDesc::f32(&[batch, seq]))?;
                (logp, Some(ent), None, (logp, d), Some(d))
            }
        };
        let forward_outputs: Vec<NodeId> = std::iter::once(output).chain(entropy).collect();
        let grads = if let Some(checkpoint) = backward.filter(|_| types.trains()) {
            let trained: Vec<&(String, NodeId)> = lm
                .params
                .iter()
                .filter(|(_, id)| matches!(g.nodes()[id.index()].op, r1_core::Op::Param { trainable: true }))
                .collect();
            let wrt: Vec<NodeId> = trained.iter().map(|(_, id)| *id).collect();
            let recomputed = &lm.layers[..checkpoint.layers.min(lm.layers.len())];
            let d = autodiff::backward_checkpointed(&mut g, &[seed_pair], &wrt, recomputed)?;
            trained
                .iter()
                .zip(d)
                .filter_map(|((name, _), d)| d.map(|d| (name.clone(), d)))
                .collect()
        } else {
            Vec::new()
        };
        let frozen = match (backward, types.trains()) {
            (None, _) => Some(Frozen::Scoring),
            (Some(_), true) => None,
            (Some(_), false) => types.iter().next().map(|(name, _)| Frozen::Stored(name.to_string())),
        };
        let mut outputs = forward_outputs.clone();
        outputs.extend(grads.iter().map(|(_, d)| *d));
        // MoE routing weights stay readable after the pass (expert loads).
        outputs.extend(lm.routers.iter().map(|(_, gates)| *gates));
        let plan = Plan::for_backend(&g, &outputs, backend)?;
        let forward_steps = forward_outputs
            .iter()
            .map(|&o| plan.steps_through(&g, o))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .max()
            .unwrap_or(0);
        let at = FeedOffsets::new(batch * seq);
        let feed = backend.alloc(at.total)?;
        backend.upload(&feed, at.dropout_seed, &i32_bytes(&[0]))?;
        Ok(LmGraph {
            graph: g,
            lm,
            plan,
            objective,
            batch,
            seq,
            slots: FeedSlots {
                targets,
                weights,
                seed,
                dropout_seed,
                at,
            },
            output,
            entropy,
            grads,
            forward_steps,
            frozen,
            feed,
            executor: Executor::new(),
        })
    }

    /// Seeds the LoRA dropout masks of the next runs (no-op for a graph without dropout).
    pub fn set_dropout_seed(&self, backend: &B, seed: u32) -> Result<(), LmGraphError> {
        if self.slots.dropout_seed.is_some() {
            backend.upload(&self.feed, self.slots.at.dropout_seed, &i32_bytes(&[seed as i32]))?;
        }
        Ok(())
    }

    fn positions(&self) -> usize {
        self.batch * self.seq
    }

    /// Uploads a batch and runs the forward part. Returns the scalar loss (cross-entropy)
    /// or the `[B·T]` log-probs, and the entropies when computed.
    pub fn forward(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        feed: &Feed<'_>,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>), LmGraphError> {
        let n = self.positions();
        if feed.ids.len() != n || feed.targets.len() != n {
            return Err(LmGraphError::Feed(format!(
                "{} ids and {} targets for a {}×{} batch",
                feed.ids.len(),
                feed.targets.len(),
                self.batch,
                self.seq
            )));
        }
        backend.upload(&self.feed, 0, &i32_bytes(feed.ids))?;
        if let Objective::TokenLogProbs { .. } = self.objective {
            // Positions without a target score token 0: the caller ignores their log-prob
            // and seeds them with a zero gradient.
            let t: Vec<i32> = feed.targets.iter().map(|&x| x.max(0)).collect();
            backend.upload(&self.feed, self.slots.at.targets, &i32_bytes(&t))?;
        } else {
            backend.upload(&self.feed, self.slots.at.targets, &i32_bytes(feed.targets))?;
        }
        match (self.slots.weights, feed.weights) {
            (Some(_), Some(w)) if w.len() == n => backend.upload(&self.feed, self.slots.at.weights, &f32_bytes(w))?,
            (Some(_), _) => return Err(LmGraphError::Feed(format!("cross-entropy needs {n} loss weights"))),
            _ => {}
        }
        self.run(backend, params, 0..self.forward_steps)?;
        let b = bind_all(&self.graph, &self.lm, &self.slots, &self.feed, params)?;
        let out = self
            .executor
            .read_f32(backend, &self.graph, &self.plan, &b, self.output)?;
        let ent = match self.entropy {
            Some(e) => Some(self.executor.read_f32(backend, &self.graph, &self.plan, &b, e)?),
            None => None,
        };
        Ok((out, ent))
    }

    /// Tokens each expert of each MoE layer was routed in the last [`LmGraph::forward`],
    /// counting the positions whose target is not negative (the ones the batch trains
    /// on): `(router bias name, tokens per expert)`. Empty for a dense model.
    pub fn expert_loads(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        targets: &[i32],
    ) -> Result<Vec<(String, Vec<u64>)>, LmGraphError> {
        if self.lm.routers.is_empty() {
            return Ok(Vec::new());
        }
        if targets.len() != self.positions() {
            return Err(LmGraphError::Feed(format!(
                "{} targets for {} positions",
                targets.len(),
                self.positions()
            )));
        }
        let b = bind_all(&self.graph, &self.lm, &self.slots, &self.feed, params)?;
        let mut loads = Vec::with_capacity(self.lm.routers.len());
        for (name, gates) in &self.lm.routers {
            let w = self.executor.read_f32(backend, &self.graph, &self.plan, &b, *gates)?;
            let experts = w.len() / targets.len().max(1);
            let mut count = vec![0u64; experts];
            for (row, _) in w.chunks_exact(experts.max(1)).zip(targets).filter(|(_, t)| **t >= 0) {
                for (c, g) in count.iter_mut().zip(row) {
                    *c += u64::from(*g != 0.0);
                }
            }
            loads.push((name.clone(), count));
        }
        Ok(loads)
    }

    /// Runs the backward part (after [`LmGraph::forward`] on the same batch), seeded with
    /// `d_logp` for the log-prob objective.
    pub fn backward(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        d_logp: Option<&[f32]>,
    ) -> Result<(), LmGraphError> {
        match &self.frozen {
            Some(Frozen::Stored(name)) => return Err(LmGraphError::ForwardOnly(name.clone())),
            Some(Frozen::Scoring) => return Err(LmGraphError::ScoringOnly),
            None => {}
        }
        if self.slots.seed.is_some() {
            let d = d_logp.ok_or_else(|| LmGraphError::Feed("the log-prob objective needs d loss / d logp".into()))?;
            if d.len() != self.positions() {
                return Err(LmGraphError::Feed(format!(
                    "{} gradients for {} positions",
                    d.len(),
                    self.positions()
                )));
            }
            backend.upload(&self.feed, self.slots.at.seed, &f32_bytes(d))?;
        }
        let total = self.plan.steps().len();
        self.run(backend, params, self.forward_steps..total)
    }

    fn run(&mut self, backend: &B, params: &ParamBuffer<B>, range: Range<usize>) -> Result<(), LmGraphError> {
        let b = bind_all(&self.graph, &self.lm, &self.slots, &self.feed, params)?;
        self.executor.run_steps(backend, &self.graph, &self.plan, &b, range)?;
        Ok(())
    }

    /// Calls `f(param_index, gradient)` for every parameter that received a gradient, by
    /// its index in `params.layout` (valid after [`LmGraph::backward`]).
    pub fn for_each_grad(
        &self,
        params: &ParamBuffer<B>,
        mut f: impl FnMut(usize, TensorRef<'_, B::Buffer>) -> Result<(), BackendError>,
    ) -> Result<(), LmGraphError> {
        let b = bind_all(&self.graph, &self.lm, &self.slots, &self.feed, params)?;
        for (name, g) in &self.grads {
            let i = params
                .layout
                .index_of(name)
                .ok_or_else(|| LmGraphError::Feed(format!("trained weight `{name}` is not in the parameter buffer")))?;
            let t = self.executor.tensor(&self.graph, &self.plan, &b, *g)?;
            f(i, t)?;
        }
        Ok(())
    }

    /// Activation memory of this graph in bytes.
    pub fn arena_bytes(&self) -> usize {
        self.plan.arena_bytes()
    }
}
