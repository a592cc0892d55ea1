//! `DeepseekV3ForCausalLM` (DeepSeek-V3, R1 and R1-Zero) as a graph, following Hugging
//! Face's `modeling_deepseek_v3.py`: multi-head latent attention (an optional low-rank
//! query, a compressed key/value latent with its own RMSNorm, a rotary key part shared by
//! every head, interleaved or rotate-half RoPE, YaRN with `mscale_all_dim` folded into the
//! softmax scale) and DeepSeekMoE (sigmoid router with a selection-only bias and
//! group-limited top-k, routed experts multiplied per expert, shared experts, the first
//! `first_k_dense_replace` layers dense).
//!
//! Attention runs at width `d = max(qk_head_dim, v_head_dim)` per head: the narrower of
//! query/key and value is padded with zero columns (which change no score and no output),
//! the query is pre-scaled so the attention op's `1/sqrt(d)` gives HF's scale, and the
//! output's padding is cut off. A graph with a KV cache stores these full keys and values
//! (`kv_heads() · head_dim()` = `heads · d` per row).

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::error::GraphError;
use crate::graph::{AttentionSpec, Graph, MoeRouting, NodeId, RopeSpec};
use crate::model::builder::{
    BuildError, BuildOptions, CausalLm, Decoded, LayerCache, ParamTable, WeightTypes, finish_causal_lm, graph_inputs,
    linear,
};
use crate::model::config::{Architecture, ConfigError, DeepseekV3Config, ModelConfig, ParamSpec};
use crate::model::family::Family;
use crate::model::lora::LoraError;
use crate::tensor::TensorDesc;

/// The DeepSeek-V3 family.
pub struct DeepseekV3;

/// `eps` of the q/kv latent norms: `DeepseekV3RMSNorm`'s default (HF does not pass the
/// config's `rms_norm_eps` to them).
const LATENT_NORM_EPS: f32 = 1e-6;

fn settings(cfg: &ModelConfig) -> Result<&DeepseekV3Config, ConfigError> {
    cfg.deepseek_v3.as_ref().ok_or_else(DeepseekV3Config::missing)
}

impl Family for DeepseekV3 {
    fn architecture(&self) -> Architecture {
        Architecture::DeepseekV3
    }

    fn param_specs(&self, cfg: &ModelConfig) -> Vec<ParamSpec> {
        match &cfg.deepseek_v3 {
            Some(ds) => param_specs(cfg, ds),
            None => Vec::new(),
        }
    }

    fn build(
        &self,
        g: &mut Graph,
        cfg: &ModelConfig,
        opts: &BuildOptions,
        types: &WeightTypes,
    ) -> Result<CausalLm, BuildError> {
        let ds = settings(cfg)?;
        if types.lora().is_some() {
            // PEFT's target names for MLA and the experts (q_a_proj, kv_b_proj, experts.N…)
            // are not LoRA modules r1 knows yet: refuse rather than adapt only some layers.
            return Err(LoraError {
                field: "target_modules",
                detail: "LoRA adapters on DeepseekV3ForCausalLM are not supported yet (train the full model)".into(),
            }
            .into());
        }
        build(g, cfg, ds, opts, types)
    }
}

fn spec(name: String, dims: &[usize]) -> ParamSpec {
    ParamSpec {
        name,
        dims: dims.to_vec(),
    }
}

/// Every weight under its HF name (per-expert tensors as DeepSeek ships them), layer by
/// layer in module order.
fn param_specs(cfg: &ModelConfig, ds: &DeepseekV3Config) -> Vec<ParamSpec> {
    let h = cfg.hidden_size;
    let nh = cfg.num_attention_heads;
    let bias = cfg.attention_bias;
    let mut out = vec![spec("model.embed_tokens.weight".into(), &[cfg.vocab_size, h])];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}.");
        out.push(spec(format!("{p}input_layernorm.weight"), &[h]));
        let a = format!("{p}self_attn.");
        match ds.q_lora_rank {
            Some(r) => {
                out.push(spec(format!("{a}q_a_proj.weight"), &[r, h]));
                if bias {
                    out.push(spec(format!("{a}q_a_proj.bias"), &[r]));
                }
                out.push(spec(format!("{a}q_a_layernorm.weight"), &[r]));
                out.push(spec(format!("{a}q_b_proj.weight"), &[nh * ds.qk_head_dim(), r]));
            }
            None => out.push(spec(format!("{a}q_proj.weight"), &[nh * ds.qk_head_dim(), h])),
        }
        let kv_a = ds.kv_lora_rank + ds.qk_rope_head_dim;
        out.push(spec(format!("{a}kv_a_proj_with_mqa.weight"), &[kv_a, h]));
        if bias {
            out.push(spec(format!("{a}kv_a_proj_with_mqa.bias"), &[kv_a]));
        }
        out.push(spec(format!("{a}kv_a_layernorm.weight"), &[ds.kv_lora_rank]));
        let kv_b = nh * (ds.qk_nope_head_dim + ds.v_head_dim);
        out.push(spec(format!("{a}kv_b_proj.weight"), &[kv_b, ds.kv_lora_rank]));
        out.push(spec(format!("{a}o_proj.weight"), &[h, nh * ds.v_head_dim]));
        if bias {
            out.push(spec(format!("{a}o_proj.bias"), &[h]));
        }
        out.push(spec(format!("{p}post_attention_layernorm.weight"), &[h]));
        let m = format!("{p}mlp.");
        if ds.is_moe_layer(l) {
            let (e, f) = (ds.n_routed_experts, ds.moe_intermediate_size);
            out.push(spec(format!("{m}gate.weight"), &[e, h]));
            out.push(spec(format!("{m}gate.e_score_correction_bias"), &[e]));
            for i in 0..e {
                out.push(spec(format!("{m}experts.{i}.gate_proj.weight"), &[f, h]));
                out.push(spec(format!("{m}experts.{i}.up_proj.weight"), &[f, h]));
                out.push(spec(format!("{m}experts.{i}.down_proj.weight"), &[h, f]));
            }
            if ds.n_shared_experts > 0 {
                let fs = f * ds.n_shared_experts;
                out.push(spec(format!("{m}shared_experts.gate_proj.weight"), &[fs, h]));
                out.push(spec(format!("{m}shared_experts.up_proj.weight"), &[fs, h]));
                out.push(spec(format!("{m}shared_experts.down_proj.weight"), &[h, fs]));
            }
        } else {
            let f = cfg.intermediate_size;
            out.push(spec(format!("{m}gate_proj.weight"), &[f, h]));
            out.push(spec(format!("{m}up_proj.weight"), &[f, h]));
            out.push(spec(format!("{m}down_proj.weight"), &[h, f]));
        }
    }
    out.push(spec("model.norm.weight".into(), &[h]));
    if !cfg.tie_word_embeddings {
        out.push(spec("lm_head.weight".into(), &[cfg.vocab_size, h]));
    }
    out
}

/// What one layer reads besides its input.
struct LayerCtx<'a> {
    cfg: &'a ModelConfig,
    ds: &'a DeepseekV3Config,
    opts: &'a BuildOptions,
    params: &'a ParamTable,
    types: &'a WeightTypes,
    past: Option<NodeId>,
}

impl LayerCtx<'_> {
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

    fn weight(&self, l: usize, name: &str) -> Result<NodeId, GraphError> {
        self.params.get(&format!("model.layers.{l}.{name}"))
    }
}

fn build(
    g: &mut Graph,
    cfg: &ModelConfig,
    ds: &DeepseekV3Config,
    opts: &BuildOptions,
    types: &WeightTypes,
) -> Result<CausalLm, BuildError> {
    let params = ParamTable::new(g, param_specs(cfg, ds), types)?;
    let (input_ids, past) = graph_inputs(g, opts)?;
    let mut x = g.embedding(params.get("model.embed_tokens.weight")?, input_ids)?;
    let ctx = LayerCtx {
        cfg,
        ds,
        opts,
        params: &params,
        types,
        past,
    };
    let mut caches = Vec::new();
    let mut routers = Vec::new();
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for l in 0..cfg.num_hidden_layers {
        let first = g.len();
        let xn = g.rms_norm(x, ctx.weight(l, "input_layernorm.weight")?, cfg.rms_norm_eps)?;
        let (o, cache) = latent_attention(g, &ctx, l, xn)?;
        caches.extend(cache);
        x = g.add(x, o)?;
        let xn = g.rms_norm(x, ctx.weight(l, "post_attention_layernorm.weight")?, cfg.rms_norm_eps)?;
        let mlp = if ds.is_moe_layer(l) {
            let (out, gates) = moe(g, &ctx, l, xn)?;
            routers.push((format!("model.layers.{l}.mlp.gate.e_score_correction_bias"), gates));
            out
        } else {
            swiglu(g, &ctx, l, "mlp", xn)?
        };
        x = g.add(x, mlp)?;
        layers.push(first..g.len());
    }
    let decoded = Decoded {
        x,
        inputs: (input_ids, past),
        caches,
        layers,
        routers,
    };
    Ok(finish_causal_lm(g, cfg, opts, params, decoded)?)
}

/// `x` with `extra` zero columns appended to each of its `heads` heads (none: `x`).
fn pad_heads(g: &mut Graph, x: NodeId, heads: usize, extra: usize) -> Result<NodeId, GraphError> {
    if extra == 0 {
        return Ok(x);
    }
    let s = g.shape(x)?;
    let mut dims = s.dims().to_vec();
    let last = dims.len() - 1;
    dims[last] = heads * extra;
    let zeros = g.fill(0.0, &dims)?;
    g.concat_heads(x, zeros, heads, heads)
}

/// The parts of one layer's MLA projections that every path shares.
struct Projected {
    /// `[B, T, heads·qk_nope_head_dim]`.
    q_nope: NodeId,
    /// `[B, T, heads·qk_rope_head_dim]`, rotated.
    q_pe: NodeId,
    /// The normed latent, `[B, T, kv_lora_rank]`.
    latent: NodeId,
    /// The shared key part, `[B, T, qk_rope_head_dim]`, rotated.
    k_pe: NodeId,
}

/// HF's softmax scale: `qk_head_dim^-0.5`, times `mscale(factor, mscale_all_dim)²` with YaRN.
fn softmax_scale(ds: &DeepseekV3Config) -> f32 {
    1.0 / libm::sqrtf(ds.qk_head_dim() as f32) * ds.rope_scaling.as_ref().map_or(1.0, |y| y.softmax_factor())
}

/// Multi-head latent attention of layer `l` (HF `DeepseekV3Attention`). Returns the
/// o_proj output and the layer's cache inputs when the graph has a cache.
fn latent_attention(
    g: &mut Graph,
    ctx: &LayerCtx<'_>,
    l: usize,
    xn: NodeId,
) -> Result<(NodeId, Option<LayerCache>), GraphError> {
    let (cfg, ds, opts) = (ctx.cfg, ctx.ds, ctx.opts);
    let nh = cfg.num_attention_heads;
    let (nope, rope) = (ds.qk_nope_head_dim, ds.qk_rope_head_dim);
    let qk = ds.qk_head_dim();
    let bias = cfg.attention_bias;

    let q = match ds.q_lora_rank {
        Some(_) => {
            let a = ctx.linear(g, l, "self_attn.q_a_proj", xn, bias)?;
            let a = g.rms_norm(a, ctx.weight(l, "self_attn.q_a_layernorm.weight")?, LATENT_NORM_EPS)?;
            ctx.linear(g, l, "self_attn.q_b_proj", a, false)?
        }
        None => ctx.linear(g, l, "self_attn.q_proj", xn, false)?,
    };
    let q_nope = g.head_slice(q, qk, 0, nope)?;
    let q_pe = g.head_slice(q, qk, nope, rope)?;
    let kv_a = ctx.linear(g, l, "self_attn.kv_a_proj_with_mqa", xn, bias)?;
    let kv_a_width = ds.kv_lora_rank + rope;
    let latent = g.head_slice(kv_a, kv_a_width, 0, ds.kv_lora_rank)?;
    let latent = g.rms_norm(
        latent,
        ctx.weight(l, "self_attn.kv_a_layernorm.weight")?,
        LATENT_NORM_EPS,
    )?;
    let k_pe = g.head_slice(kv_a, kv_a_width, ds.kv_lora_rank, rope)?;
    let rope_spec = |n_heads| RopeSpec {
        interleaved: ds.rope_interleave,
        yarn: ds.rope_scaling.as_ref().map(|y| y.spec(rope, cfg.rope_theta)),
        ..RopeSpec::new(n_heads, rope, cfg.rope_theta)
    };
    let (q_pe, k_pe) = match ctx.past {
        Some(past) => (
            g.rope_at(q_pe, rope_spec(nh), past)?,
            g.rope_at(k_pe, rope_spec(1), past)?,
        ),
        None => (g.rope(q_pe, rope_spec(nh))?, g.rope(k_pe, rope_spec(1))?),
    };
    let p = Projected {
        q_nope,
        q_pe,
        latent,
        k_pe,
    };
    let (a, cache) = match (opts.kv_cache, ctx.past) {
        (Some(kv), Some(past)) if !ds.full_kv_cache => {
            let dims = [opts.batch, kv.capacity, kv_a_width];
            let kc = g.input(&format!("cache.{l}.k"), TensorDesc::new(kv.types.k.dtype(), &dims))?;
            (absorbed_attention(g, ctx, l, &p, kc, past)?, Some((kc, None)))
        }
        (Some(kv), Some(past)) => {
            let (q, k, v) = expanded(g, ctx, l, &p)?;
            let dims = [opts.batch, kv.capacity, nh * cfg.head_dim()];
            let kc = g.input(&format!("cache.{l}.k"), TensorDesc::new(kv.types.k.dtype(), &dims))?;
            let vc = g.input(&format!("cache.{l}.v"), TensorDesc::new(kv.types.v.dtype(), &dims))?;
            let k_all = g.kv_write_at(kc, k, past)?;
            let v_all = g.kv_write_at(vc, v, past)?;
            let spec = expanded_spec(cfg, opts);
            let a = g.attention_at(q, k_all, v_all, spec, past)?;
            (cut_value_padding(g, cfg, ds, a)?, Some((kc, Some(vc))))
        }
        _ => {
            let (q, k, v) = expanded(g, ctx, l, &p)?;
            let a = g.attention(q, k, v, expanded_spec(cfg, opts))?;
            (cut_value_padding(g, cfg, ds, a)?, None)
        }
    };
    let o = ctx.linear(g, l, "self_attn.o_proj", a, bias)?;
    Ok((o, cache))
}

/// Attention geometry of the expanded path: every head its own key and value of width
/// `head_dim()`.
fn expanded_spec(cfg: &ModelConfig, opts: &BuildOptions) -> AttentionSpec {
    let nh = cfg.num_attention_heads;
    AttentionSpec {
        n_heads: nh,
        n_kv_heads: nh,
        head_dim: cfg.head_dim(),
        q_offset: 0,
        kv_len: opts.seq,
    }
}

/// HF's computation: per-head keys and values from `kv_b_proj(latent)`, the rotary key
/// part repeated for every head, all padded to `head_dim()`; the query pre-scaled.
fn expanded(
    g: &mut Graph,
    ctx: &LayerCtx<'_>,
    l: usize,
    p: &Projected,
) -> Result<(NodeId, NodeId, NodeId), GraphError> {
    let (cfg, ds) = (ctx.cfg, ctx.ds);
    let nh = cfg.num_attention_heads;
    let (nope, vd, qk, d) = (ds.qk_nope_head_dim, ds.v_head_dim, ds.qk_head_dim(), cfg.head_dim());
    let kv = ctx.linear(g, l, "self_attn.kv_b_proj", p.latent, false)?;
    let k_nope = g.head_slice(kv, nope + vd, 0, nope)?;
    let v = g.head_slice(kv, nope + vd, nope, vd)?;
    let q = g.concat_heads(p.q_nope, p.q_pe, nh, nh)?;
    let k = g.concat_heads(k_nope, p.k_pe, nh, 1)?;
    let q = pad_heads(g, q, nh, d - qk)?;
    let k = pad_heads(g, k, nh, d - qk)?;
    let v = pad_heads(g, v, nh, d - vd)?;
    // HF scores are `q·k · softmax_scale`; the op divides by sqrt(d).
    let q = g.scale(q, softmax_scale(ds) * libm::sqrtf(d as f32))?;
    Ok((q, k, v))
}

/// The attention output of the expanded path without its value padding.
fn cut_value_padding(g: &mut Graph, cfg: &ModelConfig, ds: &DeepseekV3Config, a: NodeId) -> Result<NodeId, GraphError> {
    let d = cfg.head_dim();
    if ds.v_head_dim < d {
        g.head_slice(a, d, 0, ds.v_head_dim)
    } else {
        Ok(a)
    }
}

/// Decode over the compressed cache (DeepSeek's "absorbed" MLA): each cached row is the
/// latent and the rotary key, `kv_lora_rank + qk_rope_head_dim` values for all heads.
/// `kv_b_proj`'s key half is multiplied into the query (`q_nope_h · W_UK_h`, so scores
/// are taken against the latent directly) and its value half into the output
/// (`(Σ_j p_j · latent_j) · W_UV_hᵀ`): the same scores and outputs as the expanded path,
/// with one shared key/value row per token instead of `heads` of each.
fn absorbed_attention(
    g: &mut Graph,
    ctx: &LayerCtx<'_>,
    l: usize,
    p: &Projected,
    cache: NodeId,
    past: NodeId,
) -> Result<NodeId, GraphError> {
    let (cfg, ds, opts) = (ctx.cfg, ctx.ds, ctx.opts);
    let nh = cfg.num_attention_heads;
    let (nope, vd, r) = (ds.qk_nope_head_dim, ds.v_head_dim, ds.kv_lora_rank);
    let width = r + ds.qk_rope_head_dim;
    let rows = opts.batch * opts.seq;
    let row = g.concat_heads(p.latent, p.k_pe, 1, 1)?;
    let all = g.kv_write_at(cache, row, past)?;
    // W [heads·(nope + v), r] per head: the first `nope` rows (keys), then `v` (values).
    let w = ctx.weight(l, "self_attn.kv_b_proj.weight")?;
    let per_head = (nope + vd) * r;
    let w = g.reshape(w, &[nh, per_head])?;
    let w_uk = g.head_slice(w, per_head, 0, nope * r)?;
    let w_uk = g.reshape(w_uk, &[nh, nope, r])?;
    let w_uv = g.head_slice(w, per_head, nope * r, vd * r)?;
    let w_uv = g.reshape(w_uv, &[nh, vd, r])?;
    // q_abs [heads, rows, r] = q_nope_h [rows, nope] · W_UK_h [nope, r].
    let q = g.reshape(p.q_nope, &[rows, nh, nope])?;
    let q = g.swap_dims01(q)?;
    let q = g.matmul(q, w_uk, false, false)?;
    let q = g.swap_dims01(q)?;
    let q = g.reshape(q, &[opts.batch, opts.seq, nh * r])?;
    let q = g.concat_heads(q, p.q_pe, nh, nh)?;
    let q = g.scale(q, softmax_scale(ds) * libm::sqrtf(width as f32))?;
    let spec = AttentionSpec {
        n_heads: nh,
        n_kv_heads: 1,
        head_dim: width,
        q_offset: 0,
        kv_len: opts.seq,
    };
    // Keys and values are the same cached rows; the rotary part of the output is unused.
    let a = g.attention_at(q, all, all, spec, past)?;
    let a = g.head_slice(a, width, 0, r)?;
    let a = g.reshape(a, &[rows, nh, r])?;
    let a = g.swap_dims01(a)?;
    let o = g.matmul(a, w_uv, false, true)?;
    let o = g.swap_dims01(o)?;
    g.reshape(o, &[opts.batch, opts.seq, nh * vd])
}

/// `down(silu(gate(x)) * up(x))` of the module `{module}.gate_proj` etc. of layer `l`.
fn swiglu(g: &mut Graph, ctx: &LayerCtx<'_>, l: usize, module: &str, xn: NodeId) -> Result<NodeId, GraphError> {
    let gate = ctx.linear(g, l, &format!("{module}.gate_proj"), xn, false)?;
    let up = ctx.linear(g, l, &format!("{module}.up_proj"), xn, false)?;
    let act = g.swiglu(gate, up)?;
    ctx.linear(g, l, &format!("{module}.down_proj"), act, false)
}

/// DeepSeekMoE of layer `l` (HF `DeepseekV3MoE`): the routed experts weighted by the
/// router, plus the shared experts. Returns the output and the routing weights.
fn moe(g: &mut Graph, ctx: &LayerCtx<'_>, l: usize, xn: NodeId) -> Result<(NodeId, NodeId), GraphError> {
    let ds = ctx.ds;
    let logits = g.matmul(xn, ctx.weight(l, "mlp.gate.weight")?, false, true)?;
    let routing = MoeRouting {
        n_group: ds.n_group,
        topk_group: ds.topk_group,
        top_k: ds.num_experts_per_tok,
        norm_topk_prob: ds.norm_topk_prob,
        scaling: ds.routed_scaling_factor,
    };
    let gates = g.moe_gate(logits, ctx.weight(l, "mlp.gate.e_score_correction_bias")?, routing)?;
    let experts = (0..ds.n_routed_experts)
        .map(|i| {
            let w = |p: &str| ctx.weight(l, &format!("mlp.experts.{i}.{p}.weight"));
            Ok([w("gate_proj")?, w("up_proj")?, w("down_proj")?])
        })
        .collect::<Result<Vec<_>, GraphError>>()?;
    let routed = g.moe_experts(xn, gates, &experts)?;
    if ds.n_shared_experts == 0 {
        return Ok((routed, gates));
    }
    let shared = swiglu(g, ctx, l, "mlp.shared_experts", xn)?;
    Ok((g.add(routed, shared)?, gates))
}
