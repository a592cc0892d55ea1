//! What every architecture's graph builder shares: the shape of a forward graph
//! ([`BuildOptions`]), the node ids it hands back ([`CausalLm`]), the weights as graph
//! parameters ([`ParamTable`]), the LM head, and [`build_causal_lm`], which asks the
//! config's architecture module ([`crate::model::Family`]) to build the graph.
//!
//! One graph shape serves training and generation: with `kv_cache` set, each layer
//! appends its new keys/values to caller-owned cache buffers (inputs named
//! `cache.{l}.k` / `cache.{l}.v`, shape `[B, capacity, kv_width]`, of the spec's
//! [`KvCacheTypes`]: f32, f16, bf16 or GGML Q8_0/Q4_0 blocks) at the per-sequence
//! positions of the `past [B]` i32 input, and attends over them. The positions are data,
//! not part of the graph, so a decode graph and its plan are built once per
//! `(batch, capacity)` and reused at every step.
//!
//! Weights are f32 and trainable unless [`WeightTypes`] says a weight is stored in
//! another type (f16, bf16, a GGML block format, as a GGUF file keeps it): such a weight
//! becomes a frozen `param_typed` node, which the graph lets feed only a `MatMul` as its
//! 2-D `b` — the q/k/v/o and MLP projections and `lm_head.weight` — and an `Embedding`
//! as its table (so a tied LM head and the embedding share one stored table). Norms and
//! biases stay f32.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::error::GraphError;
use crate::graph::{Graph, NodeId};
use crate::model::config::{ConfigError, ModelConfig, ParamSpec};
use crate::model::kv_cache::{KvCacheTypes, KvCacheWidthError};
use crate::model::lora::{LoraError, LoraSpec};
use crate::tensor::{DType, TensorDesc};

/// Name of the token-id input (`[B, T]` i32).
pub const INPUT_IDS: &str = "input_ids";

/// Name of the input that picks each sequence's last row out of `[B·T, H]` (`[B]` i32,
/// `b·T + T − 1`), in graphs of several multi-token sequences with [`LogitsFor::Last`]
/// (a shared prefill); [`last_rows`] gives its values.
pub const LAST_ROWS: &str = "last_rows";

/// The values of the [`LAST_ROWS`] input of a `batch × seq` graph.
pub fn last_rows(batch: usize, seq: usize) -> impl Iterator<Item = usize> {
    (0..batch).map(move |b| b * seq + seq - 1)
}

/// Name of the per-sequence cached-length input of KV-cache graphs (`[B]` i32): the
/// number of tokens already in sequence `b`'s cache rows, where its new tokens go.
pub const PAST: &str = "past";

/// KV-cache geometry and element types for generation graphs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCacheSpec {
    /// Rows each cache buffer holds per sequence.
    pub capacity: usize,
    /// What the cached keys and values are stored as.
    pub types: KvCacheTypes,
}

impl KvCacheSpec {
    /// An f32 cache of `capacity` rows per sequence.
    pub fn f32(capacity: usize) -> KvCacheSpec {
        KvCacheSpec {
            capacity,
            types: KvCacheTypes::F32,
        }
    }
}

/// Which positions get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsFor {
    /// Every position: `[B, T, V]`.
    All,
    /// Only each sequence's last position: `[B, V]` (prefill and decode).
    Last,
}

/// The shape of one forward graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildOptions {
    /// Sequences per run, `B`.
    pub batch: usize,
    /// New tokens per sequence per run, `T` (1 for a decode step); at most the cache capacity.
    pub seq: usize,
    /// `Some` for generation graphs that append to caller-owned KV caches; `None` for
    /// full-sequence graphs.
    pub kv_cache: Option<KvCacheSpec>,
    /// Which positions get logits.
    pub logits: LogitsFor,
    /// A graph that trains: a LoRA adapter with `dropout > 0` drops its input, the masks
    /// drawn from the [`DROPOUT_SEED`] input (in PEFT's terms, `train()` rather than `eval()`).
    pub train: bool,
}

impl BuildOptions {
    /// A full-sequence graph (scoring): logits at every position.
    pub fn full(batch: usize, seq: usize) -> Self {
        BuildOptions {
            batch,
            seq,
            kv_cache: None,
            logits: LogitsFor::All,
            train: false,
        }
    }

    /// [`BuildOptions::full`] for a graph that trains (see [`BuildOptions::train`]).
    pub fn training(batch: usize, seq: usize) -> Self {
        BuildOptions {
            train: true,
            ..BuildOptions::full(batch, seq)
        }
    }
}

/// Name of the `[1]` i32 input that seeds LoRA dropout masks in training graphs.
pub const DROPOUT_SEED: &str = "dropout_seed";

/// Node ids of a built causal LM.
#[derive(Clone, Debug)]
pub struct CausalLm {
    /// `[B, T]` i32 token ids.
    pub input_ids: NodeId,
    /// `[B]` i32 cached lengths when built with a KV cache (see [`PAST`]).
    pub past: Option<NodeId>,
    /// Every weight as `(HF name, node)` in [`ModelConfig::param_specs`] order.
    pub params: Vec<(alloc::string::String, NodeId)>,
    /// `[B]` i32 row of each sequence's last position (see [`LAST_ROWS`]), in graphs of
    /// several multi-token sequences with [`LogitsFor::Last`].
    pub last_rows: Option<NodeId>,
    /// Per layer `(k_cache, v_cache)` inputs when built with a KV cache (no value cache
    /// where [`ModelConfig::kv_cache_widths`] gives it width 0).
    pub caches: Vec<LayerCache>,
    /// The final normed hidden state, `[B, T, H]`.
    pub hidden: NodeId,
    /// Logits, `[B, T, V]` or `[B, V]` (see [`LogitsFor`]).
    pub logits: NodeId,
    /// The nodes of each decoder layer, in order (the segments gradient checkpointing
    /// recomputes: [`crate::autodiff::backward_checkpointed`]).
    pub layers: Vec<core::ops::Range<usize>>,
    /// Per MoE layer, its router's selection bias (the HF name of the buffer) and its
    /// routing weights `[B, T, E]` (nonzero where a token goes): what DeepSeek-V3's
    /// auxiliary-loss-free load balancing reads. Empty for dense models.
    pub routers: Vec<(alloc::string::String, NodeId)>,
}

/// One layer's cache inputs: the key cache, and the value cache unless the model's
/// value rows have width 0 ([`ModelConfig::kv_cache_widths`]).
pub type LayerCache = (NodeId, Option<NodeId>);

/// Errors of building a model graph.
#[derive(Clone, Debug, PartialEq)]
pub enum BuildError {
    /// The config is invalid, or asks for more positions than `max_position_embeddings`.
    Config(ConfigError),
    /// The graph could not be built (bad geometry, or an op combination not supported).
    Graph(GraphError),
    /// A quantized KV cache type on a model whose cache rows are not whole blocks.
    KvCache(KvCacheWidthError),
    /// A LoRA adapter setting out of range.
    Lora(LoraError),
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BuildError::Config(e) => e.fmt(f),
            BuildError::Graph(e) => e.fmt(f),
            BuildError::KvCache(e) => e.fmt(f),
            BuildError::Lora(e) => e.fmt(f),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for BuildError {}

impl From<GraphError> for BuildError {
    fn from(e: GraphError) -> Self {
        BuildError::Graph(e)
    }
}

impl From<KvCacheWidthError> for BuildError {
    fn from(e: KvCacheWidthError) -> Self {
        BuildError::KvCache(e)
    }
}

impl From<LoraError> for BuildError {
    fn from(e: LoraError) -> Self {
        BuildError::Lora(e)
    }
}

impl From<ConfigError> for BuildError {
    fn from(e: ConfigError) -> Self {
        BuildError::Config(e)
    }
}

/// The weights kept in a stored type, by Hugging Face name: each a frozen parameter of
/// that type (bf16, a block format, or f32 lent in place from a model file) outside the
/// trainable f32 layout; every weight not listed is a trainable f32 parameter. And the
/// LoRA adapter on top, when there is one (then every base weight is frozen and only the
/// adapter trains).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WeightTypes {
    types: BTreeMap<String, DType>,
    lora: Option<LoraSpec>,
}

impl WeightTypes {
    /// Every weight f32 and trainable.
    pub fn all_f32() -> WeightTypes {
        WeightTypes::default()
    }

    /// Declares weight `name` kept (frozen) in its stored type `dtype`, f32 included.
    pub fn set(&mut self, name: &str, dtype: DType) {
        self.types.insert(name.into(), dtype);
    }

    /// The element type of weight `name`: its stored type, or f32.
    pub fn get(&self, name: &str) -> DType {
        self.stored(name).unwrap_or(DType::F32)
    }

    /// The stored type of weight `name` when it is kept in one (a frozen parameter).
    pub fn stored(&self, name: &str) -> Option<DType> {
        self.types.get(name).copied()
    }

    /// Whether every weight is a trainable f32 parameter (none kept in a stored type).
    pub fn is_all_f32(&self) -> bool {
        self.types.is_empty()
    }

    /// Adds a LoRA adapter over the (then frozen) weights.
    pub fn with_lora(mut self, lora: LoraSpec) -> WeightTypes {
        self.lora = Some(lora);
        self
    }

    /// The LoRA adapter, when the model has one.
    pub fn lora(&self) -> Option<&LoraSpec> {
        self.lora.as_ref()
    }

    /// Whether the graph has weights to train: the adapter's, or every weight when all
    /// are f32 and there is no adapter.
    pub fn trains(&self) -> bool {
        self.lora.is_some() || self.is_all_f32()
    }

    /// The weights kept in a stored type, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, DType)> {
        self.types.iter().map(|(n, &t)| (n.as_str(), t))
    }
}

/// Whether weight `name` is a buffer in HF (saved with the model, never trained): DeepSeek-V3's
/// router bias `e_score_correction_bias`, which only picks experts (an optimizer updates it
/// by its own rule, not by gradient).
pub fn is_buffer(name: &str) -> bool {
    name.ends_with(".e_score_correction_bias")
}

/// The model's weights as graph parameters, found by Hugging Face name.
pub struct ParamTable {
    /// `(name, node)` in the family's `param_specs` order.
    pub list: Vec<(String, NodeId)>,
    index: BTreeMap<String, NodeId>,
}

impl ParamTable {
    /// Adds every weight of `specs` to `g`: a trainable f32 parameter, or a frozen one of
    /// the type `types` gives it; with a LoRA adapter, every weight of `specs` frozen and
    /// the adapter's `lora_A`/`lora_B` after them, trainable.
    pub fn new(g: &mut Graph, specs: Vec<ParamSpec>, types: &WeightTypes) -> Result<ParamTable, GraphError> {
        let adapters = types.lora().map(|l| l.adapter_specs(&specs)).unwrap_or_default();
        let base_trains = types.lora().is_none();
        let mut list = Vec::with_capacity(specs.len() + adapters.len());
        let mut index = BTreeMap::new();
        for s in specs {
            let id = match types.stored(&s.name) {
                None if is_buffer(&s.name) => g.param(&s.name, &s.dims, false)?,
                None => g.param(&s.name, &s.dims, base_trains)?,
                Some(dtype) => g.param_typed(&s.name, TensorDesc::new(dtype, &s.dims), false)?,
            };
            index.insert(s.name.clone(), id);
            list.push((s.name, id));
        }
        for s in adapters {
            let id = g.param(&s.name, &s.dims, true)?;
            index.insert(s.name.clone(), id);
            list.push((s.name, id));
        }
        Ok(ParamTable { list, index })
    }

    /// Whether the parameter `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The parameter named `name`.
    pub fn get(&self, name: &str) -> Result<NodeId, GraphError> {
        self.index.get(name).copied().ok_or_else(|| GraphError::Unbound {
            node: u32::MAX,
            name: name.into(),
        })
    }
}

/// A linear layer `x [.., in] · wᵀ (+ b)` → `[.., out]` of the weights `{prefix}.weight`
/// (and `{prefix}.bias` when `bias`), plus `s · (x · Aᵀ) · Bᵀ` when the table has a LoRA
/// adapter on it (`{prefix}.lora_A.weight`, `{prefix}.lora_B.weight`), added after the
/// bias as PEFT's `Linear.forward` adds it.
pub fn linear(
    g: &mut Graph,
    params: &ParamTable,
    types: &WeightTypes,
    opts: &BuildOptions,
    x: NodeId,
    prefix: &str,
    bias: bool,
) -> Result<NodeId, GraphError> {
    let [y] = linears(g, params, types, opts, x, [prefix], bias)?;
    Ok(y)
}

/// [`linear`] for several layers of one input (a layer's q/k/v or gate/up projections):
/// the products `x · wᵀ` come first, side by side in the graph, then each one's bias and
/// adapter. The nodes compute what separate [`linear`]s compute; a backend may run
/// products of one input that follow each other as one (the CPU backend does).
pub fn linears<const N: usize>(
    g: &mut Graph,
    params: &ParamTable,
    types: &WeightTypes,
    opts: &BuildOptions,
    x: NodeId,
    prefixes: [&str; N],
    bias: bool,
) -> Result<[NodeId; N], GraphError> {
    let mut out = [x; N];
    for (y, prefix) in out.iter_mut().zip(prefixes) {
        *y = g.matmul(x, params.get(&format!("{prefix}.weight"))?, false, true)?;
    }
    for (y, prefix) in out.iter_mut().zip(prefixes) {
        *y = linear_rest(g, params, types, opts, x, *y, prefix, bias)?;
    }
    Ok(out)
}

/// The bias and LoRA adapter of [`linear`] after its product `y = x · wᵀ`.
#[allow(clippy::too_many_arguments)]
fn linear_rest(
    g: &mut Graph,
    params: &ParamTable,
    types: &WeightTypes,
    opts: &BuildOptions,
    x: NodeId,
    mut y: NodeId,
    prefix: &str,
    bias: bool,
) -> Result<NodeId, GraphError> {
    if bias {
        y = g.add(y, params.get(&format!("{prefix}.bias"))?)?;
    }
    let a_name = format!("{prefix}.lora_A.weight");
    match types.lora() {
        Some(lora) if params.has(&a_name) => {
            // PEFT's `lora_dropout` on the adapter's input, in training graphs only; each
            // module its own mask (the salt is a hash of its name).
            let x = if opts.train && lora.dropout > 0.0 {
                let seed = match g.find(DROPOUT_SEED) {
                    Some(s) => s,
                    None => g.input(DROPOUT_SEED, TensorDesc::i32(&[1]))?,
                };
                g.dropout(x, seed, lora.dropout, fnv1a(prefix))?
            } else {
                x
            };
            let down = g.matmul(x, params.get(&a_name)?, false, true)?;
            let up = g.matmul(down, params.get(&format!("{prefix}.lora_B.weight"))?, false, true)?;
            let scaled = g.scale(up, lora.scaling())?;
            g.add(y, scaled)
        }
        _ => Ok(y),
    }
}

/// FNV-1a of `s`, 32 bits.
fn fnv1a(s: &str) -> u32 {
    s.bytes()
        .fold(0x811c_9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

/// Checks the batch/sequence/cache geometry of `opts` against the model's positions, and
/// that a quantized cache type can store the model's cache rows.
pub fn check_geometry(cfg: &ModelConfig, opts: &BuildOptions) -> Result<(), BuildError> {
    if let Some(kv) = opts.kv_cache {
        kv.types.bytes_per_token_per_layer(cfg.kv_cache_widths())?;
    }
    let (b, t) = (opts.batch, opts.seq);
    let capacity = opts.kv_cache.map_or(t, |kv| kv.capacity);
    if t > capacity || b == 0 || t == 0 {
        return Err(GraphError::Shape {
            op: "build_causal_lm",
            detail: format!("batch {b} × {t} new tokens do not fit a capacity of {capacity}"),
        }
        .into());
    }
    if capacity > cfg.max_position_embeddings {
        return Err(ConfigError {
            field: "max_position_embeddings",
            detail: format!(
                "{capacity} positions requested, the model supports {}",
                cfg.max_position_embeddings
            ),
        }
        .into());
    }
    Ok(())
}

/// The token-id input and, with a KV cache, the `past` positions input.
pub fn graph_inputs(g: &mut Graph, opts: &BuildOptions) -> Result<(NodeId, Option<NodeId>), GraphError> {
    let input_ids = g.input(INPUT_IDS, TensorDesc::i32(&[opts.batch, opts.seq]))?;
    let past = match opts.kv_cache {
        Some(_) => Some(g.input(PAST, TensorDesc::i32(&[opts.batch]))?),
        None => None,
    };
    Ok((input_ids, past))
}

/// The logits of `hidden [B, T, H]` through `head [V, H]` at the positions `opts` asks
/// for. Last-position logits of several multi-token sequences pick their rows with a
/// [`LAST_ROWS`] input this adds.
pub fn lm_logits(g: &mut Graph, hidden: NodeId, head: NodeId, opts: &BuildOptions) -> Result<NodeId, GraphError> {
    let (b, t) = (opts.batch, opts.seq);
    let h = g.shape(hidden)?.last();
    match opts.logits {
        LogitsFor::All => g.matmul(hidden, head, false, true),
        LogitsFor::Last => {
            let last = if t == 1 {
                g.reshape(hidden, &[b, h])?
            } else if b == 1 {
                g.slice(hidden, (t - 1) * h, &[1, h])?
            } else {
                let rows = g.input(LAST_ROWS, TensorDesc::i32(&[b]))?;
                let flat = g.reshape(hidden, &[b * t, h])?;
                g.embedding(flat, rows)?
            };
            g.matmul(last, head, false, true)
        }
    }
}

/// What a family's decoder stack built, for [`finish_causal_lm`].
pub struct Decoded {
    /// The residual stream after the last layer, `[B, T, H]`.
    pub x: NodeId,
    /// The token-id input and the cache positions input ([`graph_inputs`]).
    pub inputs: (NodeId, Option<NodeId>),
    /// Per layer cache inputs (decode graphs).
    pub caches: Vec<LayerCache>,
    /// Node ranges of the layers.
    pub layers: Vec<core::ops::Range<usize>>,
    /// MoE routers (see [`CausalLm::routers`]).
    pub routers: Vec<(String, NodeId)>,
}

/// The end every family shares: the final RMSNorm (`model.norm.weight`), the LM head
/// (`lm_head.weight`, or the embedding table when tied) at the positions `opts` asks for,
/// and the [`CausalLm`] handles.
pub fn finish_causal_lm(
    g: &mut Graph,
    cfg: &ModelConfig,
    opts: &BuildOptions,
    params: ParamTable,
    d: Decoded,
) -> Result<CausalLm, GraphError> {
    let hidden = g.rms_norm(d.x, params.get("model.norm.weight")?, cfg.rms_norm_eps)?;
    let head = if cfg.tie_word_embeddings {
        params.get("model.embed_tokens.weight")?
    } else {
        params.get("lm_head.weight")?
    };
    let logits = lm_logits(g, hidden, head, opts)?;
    let (input_ids, past) = d.inputs;
    Ok(CausalLm {
        input_ids,
        past,
        last_rows: g.find(LAST_ROWS),
        params: params.list,
        caches: d.caches,
        hidden,
        logits,
        layers: d.layers,
        routers: d.routers,
    })
}

/// Appends a causal LM forward pass to `g`, built by the module of the config's
/// architecture. Weights are trainable f32 `Param` nodes named as in Hugging Face
/// checkpoints.
pub fn build_causal_lm(g: &mut Graph, cfg: &ModelConfig, opts: &BuildOptions) -> Result<CausalLm, BuildError> {
    build_causal_lm_typed(g, cfg, opts, &WeightTypes::all_f32())
}

/// [`build_causal_lm`] with weights stored as `types` says (frozen where not f32). A
/// non-f32 type on a weight that does not feed a matmul as its `b` is a graph error
/// naming the op.
pub fn build_causal_lm_typed(
    g: &mut Graph,
    cfg: &ModelConfig,
    opts: &BuildOptions,
    types: &WeightTypes,
) -> Result<CausalLm, BuildError> {
    let arch = cfg.validate()?;
    check_geometry(cfg, opts)?;
    if let Some(lora) = types.lora() {
        lora.validate()?;
    }
    arch.family().build(g, cfg, opts, types)
}
