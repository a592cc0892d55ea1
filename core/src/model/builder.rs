//! The Llama/Qwen2 decoder as a graph: `config → graph`, following Hugging Face's
//! `modeling_llama.py` / `modeling_qwen2.py` op for op (pre-norm RMSNorm, RoPE in the
//! rotate-half layout, grouped-query causal attention, SwiGLU MLP, optional q/k/v
//! biases, tied or untied LM head).
//!
//! One builder serves training and generation: with `kv_cache` set, each layer appends
//! its new keys/values to caller-owned cache buffers (inputs named `cache.{l}.k` /
//! `cache.{l}.v`, shape `[B, capacity, kv_heads·head_dim]`) and attends over
//! `past + T` positions.

use alloc::format;
use alloc::vec::Vec;

use crate::error::GraphError;
use crate::graph::{AttentionSpec, Graph, NodeId, RopeSpec};
use crate::model::config::{ConfigError, ModelConfig};
use crate::tensor::{DType, TensorDesc};

/// Name of the token-id input (`[B, T]` i32).
pub const INPUT_IDS: &str = "input_ids";

/// KV-cache geometry for generation graphs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCacheSpec {
    /// Tokens already in the cache (the new tokens' first position).
    pub past: usize,
    /// Rows each cache buffer holds.
    pub capacity: usize,
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
    pub batch: usize,
    pub seq: usize,
    pub kv_cache: Option<KvCacheSpec>,
    pub logits: LogitsFor,
}

impl BuildOptions {
    /// A full-sequence graph (training, scoring): logits at every position.
    pub fn full(batch: usize, seq: usize) -> Self {
        BuildOptions {
            batch,
            seq,
            kv_cache: None,
            logits: LogitsFor::All,
        }
    }
}

/// Node ids of a built causal LM.
#[derive(Clone, Debug)]
pub struct CausalLm {
    /// `[B, T]` i32 token ids.
    pub input_ids: NodeId,
    /// Every weight as `(HF name, node)` in [`ModelConfig::param_specs`] order.
    pub params: Vec<(alloc::string::String, NodeId)>,
    /// Per layer `(k_cache, v_cache)` inputs when built with a KV cache.
    pub caches: Vec<(NodeId, NodeId)>,
    /// The final normed hidden state, `[B, T, H]`.
    pub hidden: NodeId,
    /// Logits, `[B, T, V]` or `[B, V]` (see [`LogitsFor`]).
    pub logits: NodeId,
}

/// Errors of building a model graph.
#[derive(Clone, Debug, PartialEq)]
pub enum BuildError {
    Config(ConfigError),
    Graph(GraphError),
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BuildError::Config(e) => e.fmt(f),
            BuildError::Graph(e) => e.fmt(f),
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

impl From<ConfigError> for BuildError {
    fn from(e: ConfigError) -> Self {
        BuildError::Config(e)
    }
}

/// Appends a causal LM forward pass to `g`. Weights are trainable `Param` nodes named as
/// in Hugging Face checkpoints.
pub fn build_causal_lm(g: &mut Graph, cfg: &ModelConfig, opts: &BuildOptions) -> Result<CausalLm, BuildError> {
    cfg.validate()?;
    let (b, t) = (opts.batch, opts.seq);
    let h = cfg.hidden_size;
    let hd = cfg.head_dim();
    let (nh, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
    let (past, capacity) = match opts.kv_cache {
        Some(kv) => (kv.past, kv.capacity),
        None => (0, t),
    };
    if past + t > capacity || b == 0 || t == 0 {
        return Err(GraphError::Shape {
            op: "build_causal_lm",
            detail: format!("batch {b} × {t} new tokens after {past} cached ones do not fit a capacity of {capacity}"),
        }
        .into());
    }
    if past + t > cfg.max_position_embeddings {
        return Err(ConfigError {
            field: "max_position_embeddings",
            detail: format!(
                "{} positions requested, the model supports {}",
                past + t,
                cfg.max_position_embeddings
            ),
        }
        .into());
    }

    // Params in param_specs() order, so the list matches the config's.
    let mut params = Vec::new();
    let mut ids = alloc::collections::BTreeMap::new();
    for s in cfg.param_specs() {
        let id = g.param(&s.name, &s.dims, true)?;
        ids.insert(s.name.clone(), id);
        params.push((s.name, id));
    }
    let p = |name: &str| -> Result<NodeId, GraphError> {
        ids.get(name).copied().ok_or_else(|| GraphError::Unbound {
            node: u32::MAX,
            name: name.into(),
        })
    };

    let input_ids = g.input(INPUT_IDS, TensorDesc::new(DType::I32, &[b, t]))?;
    let mut x = g.embedding(p("model.embed_tokens.weight")?, input_ids)?;
    let rope = |n_heads| RopeSpec {
        n_heads,
        head_dim: hd,
        theta: cfg.rope_theta,
        pos_offset: past,
        inverse: false,
    };
    let mut caches = Vec::new();
    for l in 0..cfg.num_hidden_layers {
        let pre = format!("model.layers.{l}.");
        let w = |s: &str| p(&format!("{pre}{s}"));
        // Attention block.
        let xn = g.rms_norm(x, w("input_layernorm.weight")?, cfg.rms_norm_eps)?;
        let mut q = g.matmul(xn, w("self_attn.q_proj.weight")?, false, true)?;
        let mut k = g.matmul(xn, w("self_attn.k_proj.weight")?, false, true)?;
        let mut v = g.matmul(xn, w("self_attn.v_proj.weight")?, false, true)?;
        if cfg.qkv_bias() {
            q = g.add(q, w("self_attn.q_proj.bias")?)?;
            k = g.add(k, w("self_attn.k_proj.bias")?)?;
            v = g.add(v, w("self_attn.v_proj.bias")?)?;
        }
        let q = g.rope(q, rope(nh))?;
        let k = g.rope(k, rope(nkv))?;
        let (k_all, v_all) = match opts.kv_cache {
            Some(_) => {
                let desc = TensorDesc::f32(&[b, capacity, nkv * hd]);
                let kc = g.input(&format!("cache.{l}.k"), desc)?;
                let vc = g.input(&format!("cache.{l}.v"), desc)?;
                caches.push((kc, vc));
                (g.kv_write(kc, k, past)?, g.kv_write(vc, v, past)?)
            }
            None => (k, v),
        };
        let spec = AttentionSpec {
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            q_offset: past,
            kv_len: past + t,
        };
        let a = g.attention(q, k_all, v_all, spec)?;
        let mut o = g.matmul(a, w("self_attn.o_proj.weight")?, false, true)?;
        if cfg.o_bias() {
            o = g.add(o, w("self_attn.o_proj.bias")?)?;
        }
        x = g.add(x, o)?;
        // MLP block.
        let xn = g.rms_norm(x, w("post_attention_layernorm.weight")?, cfg.rms_norm_eps)?;
        let gate = g.matmul(xn, w("mlp.gate_proj.weight")?, false, true)?;
        let up = g.matmul(xn, w("mlp.up_proj.weight")?, false, true)?;
        let act = g.swiglu(gate, up)?;
        let down = g.matmul(act, w("mlp.down_proj.weight")?, false, true)?;
        x = g.add(x, down)?;
    }
    let hidden = g.rms_norm(x, p("model.norm.weight")?, cfg.rms_norm_eps)?;
    let head = if cfg.tie_word_embeddings {
        p("model.embed_tokens.weight")?
    } else {
        p("lm_head.weight")?
    };
    let logits = match opts.logits {
        LogitsFor::All => g.matmul(hidden, head, false, true)?,
        LogitsFor::Last => {
            let last = if t == 1 {
                g.reshape(hidden, &[b, h])?
            } else if b == 1 {
                g.slice(hidden, (t - 1) * h, &[1, h])?
            } else {
                return Err(GraphError::Unsupported {
                    op: "build_causal_lm",
                    detail: format!("last-position logits of a batch of {b} multi-token sequences"),
                }
                .into());
            };
            g.matmul(last, head, false, true)?
        }
    };
    Ok(CausalLm {
        input_ids,
        params,
        caches,
        hidden,
        logits,
    })
}
