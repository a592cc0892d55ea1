//! `LlamaForCausalLM` as a graph, following Hugging Face's `modeling_llama.py` op for op:
//! pre-norm RMSNorm, RoPE in the rotate-half layout, grouped-query causal attention,
//! SwiGLU MLP, tied or untied LM head; q/k/v/o biases when `attention_bias`. The
//! decoder is written once here; Qwen2 ([`crate::model::qwen2`]) is this decoder with
//! its own bias layout.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use crate::error::GraphError;
use crate::graph::{AttentionSpec, Graph, NodeId, RopeSpec};
use crate::model::builder::{
    BuildError, BuildOptions, CausalLm, Decoded, LayerCache, ParamTable, WeightTypes, finish_causal_lm, graph_inputs,
    linear, linears,
};
use crate::model::config::{Architecture, ModelConfig, ParamSpec};
use crate::model::family::Family;
use crate::tensor::TensorDesc;

/// The Llama family.
pub struct Llama;

/// Which projections of a Llama-style decoder carry a bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Biases {
    /// q_proj, k_proj and v_proj.
    pub qkv: bool,
    /// o_proj.
    pub o: bool,
}

impl Family for Llama {
    fn architecture(&self) -> Architecture {
        Architecture::Llama
    }

    fn param_specs(&self, cfg: &ModelConfig) -> Vec<ParamSpec> {
        decoder_param_specs(cfg, llama_biases(cfg))
    }

    fn build(
        &self,
        g: &mut Graph,
        cfg: &ModelConfig,
        opts: &BuildOptions,
        types: &WeightTypes,
    ) -> Result<CausalLm, BuildError> {
        build_decoder(g, cfg, opts, llama_biases(cfg), types)
    }
}

/// Llama's `attention_bias` switches all four attention biases.
fn llama_biases(cfg: &ModelConfig) -> Biases {
    Biases {
        qkv: cfg.attention_bias,
        o: cfg.attention_bias,
    }
}

/// The weights of a Llama-style decoder (embeddings, layers, final norm, lm_head unless
/// tied), under their HF names.
pub fn decoder_param_specs(cfg: &ModelConfig, biases: Biases) -> Vec<ParamSpec> {
    let h = cfg.hidden_size;
    let hd = cfg.head_dim();
    let q = cfg.num_attention_heads * hd;
    let kv = cfg.kv_heads() * hd;
    let f = cfg.intermediate_size;
    let spec = |name: alloc::string::String, dims: &[usize]| ParamSpec {
        name,
        dims: dims.to_vec(),
    };
    let mut out = vec![spec("model.embed_tokens.weight".into(), &[cfg.vocab_size, h])];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}.");
        out.push(spec(format!("{p}input_layernorm.weight"), &[h]));
        out.push(spec(format!("{p}self_attn.q_proj.weight"), &[q, h]));
        out.push(spec(format!("{p}self_attn.k_proj.weight"), &[kv, h]));
        out.push(spec(format!("{p}self_attn.v_proj.weight"), &[kv, h]));
        if biases.qkv {
            out.push(spec(format!("{p}self_attn.q_proj.bias"), &[q]));
            out.push(spec(format!("{p}self_attn.k_proj.bias"), &[kv]));
            out.push(spec(format!("{p}self_attn.v_proj.bias"), &[kv]));
        }
        out.push(spec(format!("{p}self_attn.o_proj.weight"), &[h, q]));
        if biases.o {
            out.push(spec(format!("{p}self_attn.o_proj.bias"), &[h]));
        }
        out.push(spec(format!("{p}post_attention_layernorm.weight"), &[h]));
        out.push(spec(format!("{p}mlp.gate_proj.weight"), &[f, h]));
        out.push(spec(format!("{p}mlp.up_proj.weight"), &[f, h]));
        out.push(spec(format!("{p}mlp.down_proj.weight"), &[h, f]));
    }
    out.push(spec("model.norm.weight".into(), &[h]));
    if !cfg.tie_word_embeddings {
        out.push(spec("lm_head.weight".into(), &[cfg.vocab_size, h]));
    }
    out
}

/// What one layer reads besides its input: the weights, the cache and positions.
struct LayerCtx<'a> {
    cfg: &'a ModelConfig,
    opts: &'a BuildOptions,
    params: &'a ParamTable,
    types: &'a WeightTypes,
    past: Option<NodeId>,
    biases: Biases,
}

impl LayerCtx<'_> {
    /// [`linears`]: several linear layers of layer `l` on one input, their products side
    /// by side.
    fn linears<const N: usize>(
        &self,
        g: &mut Graph,
        l: usize,
        modules: [&str; N],
        x: NodeId,
        bias: bool,
    ) -> Result<[NodeId; N], GraphError> {
        let prefixes = modules.map(|m| format!("model.layers.{l}.{m}"));
        linears(
            g,
            self.params,
            self.types,
            self.opts,
            x,
            prefixes.each_ref().map(alloc::string::String::as_str),
            bias,
        )
    }

    /// Linear layer `module` (e.g. `self_attn.q_proj`) of layer `l`, with its LoRA adapter
    /// when it has one.
    fn linear(&self, g: &mut Graph, l: usize, module: &str, x: NodeId, bias: bool) -> Result<NodeId, GraphError> {
        linear(
            g,
            self.params,
            self.types,
            self.opts,
            x,
            &format!("model.layers.{l}.{module}"),
            bias,
        )
    }
}

/// The Llama-style decoder graph, each weight stored as `types` says (every projection
/// and the LM head is `x · wᵀ` with the 2-D weight as the matmul's `b`, so any of them
/// may be stored quantized, as may the embedding table, which a tied head reuses).
pub fn build_decoder(
    g: &mut Graph,
    cfg: &ModelConfig,
    opts: &BuildOptions,
    biases: Biases,
    types: &WeightTypes,
) -> Result<CausalLm, BuildError> {
    let params = ParamTable::new(g, decoder_param_specs(cfg, biases), types)?;
    let (input_ids, past) = graph_inputs(g, opts)?;
    let mut x = g.embedding(params.get("model.embed_tokens.weight")?, input_ids)?;
    let ctx = LayerCtx {
        cfg,
        opts,
        params: &params,
        types,
        past,
        biases,
    };
    let mut caches = Vec::new();
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for l in 0..cfg.num_hidden_layers {
        let first = g.len();
        let pre = format!("model.layers.{l}.");
        let w = |s: &str| params.get(&format!("{pre}{s}"));
        let xn = g.rms_norm(x, w("input_layernorm.weight")?, cfg.rms_norm_eps)?;
        let (o, cache) = self_attention(g, &ctx, l, xn)?;
        caches.extend(cache);
        x = g.add(x, o)?;
        let xn = g.rms_norm(x, w("post_attention_layernorm.weight")?, cfg.rms_norm_eps)?;
        let down = swiglu_mlp(g, &ctx, l, xn)?;
        x = g.add(x, down)?;
        layers.push(first..g.len());
    }
    let decoded = Decoded {
        x,
        inputs: (input_ids, past),
        caches,
        layers,
        routers: Vec::new(),
    };
    Ok(finish_causal_lm(g, cfg, opts, params, decoded)?)
}

/// Grouped-query self-attention of layer `l` with RoPE, appending to the KV cache when
/// the graph has one. Returns the o_proj output and the layer's `(k, v)` cache inputs.
fn self_attention(
    g: &mut Graph,
    ctx: &LayerCtx<'_>,
    l: usize,
    xn: NodeId,
) -> Result<(NodeId, Option<LayerCache>), GraphError> {
    let (cfg, opts) = (ctx.cfg, ctx.opts);
    let hd = cfg.head_dim();
    let (nh, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
    let [q, k, v] = ctx.linears(
        g,
        l,
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        xn,
        ctx.biases.qkv,
    )?;
    let rope = |n_heads| RopeSpec {
        n_heads,
        head_dim: hd,
        theta: cfg.rope_theta,
        pos_offset: 0,
        inverse: false,
        interleaved: false,
        yarn: None,
    };
    let spec = AttentionSpec {
        n_heads: nh,
        n_kv_heads: nkv,
        head_dim: hd,
        q_offset: 0,
        kv_len: opts.seq,
    };
    let (a, cache) = match (opts.kv_cache, ctx.past) {
        (Some(kv), Some(past)) => {
            let q = g.rope_at(q, rope(nh), past)?;
            let k = g.rope_at(k, rope(nkv), past)?;
            let dims = [opts.batch, kv.capacity, nkv * hd];
            let kc = g.input(&format!("cache.{l}.k"), TensorDesc::new(kv.types.k.dtype(), &dims))?;
            let vc = g.input(&format!("cache.{l}.v"), TensorDesc::new(kv.types.v.dtype(), &dims))?;
            let k_all = g.kv_write_at(kc, k, past)?;
            let v_all = g.kv_write_at(vc, v, past)?;
            (g.attention_at(q, k_all, v_all, spec, past)?, Some((kc, Some(vc))))
        }
        _ => {
            let q = g.rope(q, rope(nh))?;
            let k = g.rope(k, rope(nkv))?;
            (g.attention(q, k, v, spec)?, None)
        }
    };
    let o = ctx.linear(g, l, "self_attn.o_proj", a, ctx.biases.o)?;
    Ok((o, cache))
}

/// `down(silu(gate(x)) * up(x))`.
fn swiglu_mlp(g: &mut Graph, ctx: &LayerCtx<'_>, l: usize, xn: NodeId) -> Result<NodeId, GraphError> {
    let [gate, up] = ctx.linears(g, l, ["mlp.gate_proj", "mlp.up_proj"], xn, false)?;
    let act = g.swiglu(gate, up)?;
    ctx.linear(g, l, "mlp.down_proj", act, false)
}
