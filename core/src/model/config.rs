//! `ModelConfig`: the fields of a Hugging Face `config.json` for `LlamaForCausalLM` and
//! `Qwen2ForCausalLM`, under the same names, and the list of weights such a model has.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// The decoder architectures r1 builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Architecture {
    /// `LlamaForCausalLM`: no q/k/v bias unless `attention_bias`.
    Llama,
    /// `Qwen2ForCausalLM`: q/k/v projections carry a bias, o_proj does not.
    Qwen2,
    /// `DeepseekV3ForCausalLM` (DeepSeek-V3, R1 and R1-Zero): multi-head latent attention
    /// and DeepSeekMoE, set by [`ModelConfig::deepseek_v3`].
    DeepseekV3,
}

impl Architecture {
    /// The Hugging Face class name.
    pub fn hf_class(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::DeepseekV3 => "DeepseekV3ForCausalLM",
        }
    }

    /// The Hugging Face `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::DeepseekV3 => "deepseek_v3",
        }
    }
}

/// A config field that is missing, out of range or inconsistent.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    /// The `config.json` key at fault, under its HF name.
    pub field: &'static str,
    /// What is wrong with its value.
    pub detail: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config field `{}`: {}", self.field, self.detail)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ConfigError {}

/// Most decoder layers a config may have (DeepSeek-V3 has 61, Llama 3.1 405B 126).
pub const MAX_LAYERS: usize = 4096;
/// Most a width (hidden, MLP, heads, head dim) may be (Llama 3.1 405B's MLP: 53,248).
pub const MAX_WIDTH: usize = 1 << 20;
/// Most routed experts a MoE layer may have (DeepSeek-V3: 256): each is three named
/// weights, so the bound keeps a hostile config from naming millions of tensors.
pub const MAX_EXPERTS: usize = 4096;
/// Most weights a model may have (2^40, about 1.1 trillion).
pub const MAX_PARAMS: u64 = 1 << 40;

fn default_rms_norm_eps() -> f32 {
    1e-6
}

fn default_rope_theta() -> f32 {
    10000.0
}

fn default_max_positions() -> usize {
    2048
}

/// Hugging Face `config.json` fields of a Llama/Qwen2 causal LM (unknown keys are
/// ignored: real configs carry many that do not change the math).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelConfig {
    /// e.g. `["Qwen2ForCausalLM"]`.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// e.g. `"qwen2"`; used when `architectures` is absent.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Width `H` of the residual stream (embedding and every layer's input and output).
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP's hidden layer (`gate_proj`/`up_proj` outputs).
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads per layer.
    pub num_attention_heads: usize,
    /// Defaults to `num_attention_heads` (multi-head attention).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// `eps` of every RMSNorm (default 1e-6, as in HF's Llama and Qwen2 configs).
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f32,
    /// RoPE base frequency `theta` (default 10000).
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f32,
    /// Rows of the embedding table and width of the logits; at most `i32::MAX` (ids are i32).
    pub vocab_size: usize,
    /// When true the LM head reuses `model.embed_tokens.weight` and there is no
    /// `lm_head.weight`.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Most positions a sequence may have, prompt plus completion (default 2048): a graph's
    /// KV-cache capacity, or its length without a cache, may not exceed it.
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// Llama's switch for q/k/v/o biases (Qwen2 always has q/k/v biases).
    #[serde(default)]
    pub attention_bias: bool,
    /// Beginning-of-sequence token id, if the model has one.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id (when HF gives a list, the host keeps its first entry).
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// Padding token id, if the model declares one.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// DeepSeek-V3's attention and MoE settings (present exactly for `DeepseekV3ForCausalLM`;
    /// HF writes them at the top level of `config.json`, the host's reader gathers them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deepseek_v3: Option<DeepseekV3Config>,
}

fn default_true() -> bool {
    true
}

fn default_one() -> usize {
    1
}

fn default_scaling() -> f32 {
    1.0
}

/// The `config.json` fields of `DeepseekV3ForCausalLM` beyond a Llama's, under HF's names
/// and with `DeepseekV3Config`'s defaults where HF has one that r1 can assume.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeepseekV3Config {
    /// Rank of the query's low-rank projection (`q_a_proj` → norm → `q_b_proj`); `None`:
    /// one `q_proj`.
    #[serde(default)]
    pub q_lora_rank: Option<usize>,
    /// Width of the compressed key/value latent (`kv_a_proj_with_mqa`'s first part).
    pub kv_lora_rank: usize,
    /// Per-head query/key dims without position (`qk_nope_head_dim`).
    pub qk_nope_head_dim: usize,
    /// Per-head query/key dims with RoPE (`qk_rope_head_dim`); the rotary key is shared by
    /// every head.
    pub qk_rope_head_dim: usize,
    /// Per-head value width (`v_head_dim`).
    pub v_head_dim: usize,
    /// Routed experts per MoE layer (`n_routed_experts`).
    pub n_routed_experts: usize,
    /// Shared experts, one SwiGLU MLP of `n_shared_experts · moe_intermediate_size`.
    #[serde(default = "default_one")]
    pub n_shared_experts: usize,
    /// Width of one expert's hidden layer (`moe_intermediate_size`).
    pub moe_intermediate_size: usize,
    /// Experts per token (`num_experts_per_tok`).
    pub num_experts_per_tok: usize,
    /// Expert groups (`n_group`, `null` = 1).
    #[serde(default = "default_one", deserialize_with = "null_as_one")]
    pub n_group: usize,
    /// Groups a token may use (`topk_group`, `null` = 1).
    #[serde(default = "default_one", deserialize_with = "null_as_one")]
    pub topk_group: usize,
    /// The first layers keep a dense SwiGLU MLP of `intermediate_size`
    /// (`first_k_dense_replace`).
    #[serde(default)]
    pub first_k_dense_replace: usize,
    /// Normalise the chosen experts' weights (`norm_topk_prob`).
    #[serde(default = "default_true")]
    pub norm_topk_prob: bool,
    /// Multiplies the routed experts' weights (`routed_scaling_factor`).
    #[serde(default = "default_scaling")]
    pub routed_scaling_factor: f32,
    /// Rotary pairs interleaved (`rope_interleave`, transformers' default true).
    #[serde(default = "default_true")]
    pub rope_interleave: bool,
    /// YaRN scaling (`rope_scaling` / `rope_parameters` with type `yarn`).
    #[serde(default)]
    pub rope_scaling: Option<YarnConfig>,
    /// Multi-token-prediction modules shipped after the decoder (`num_nextn_predict_layers`,
    /// stored as layers `num_hidden_layers..`): not part of the causal LM, their weights
    /// are skipped on load as transformers skips them.
    #[serde(default)]
    pub num_nextn_predict_layers: usize,
    /// r1's own switch, never read from or written to `config.json`: decode graphs cache
    /// full per-head keys and values (`heads · head_dim()` each) instead of the compressed
    /// latent (`kv_lora_rank + qk_rope_head_dim` per token and layer, the default) — the
    /// baseline the compressed cache is measured against.
    #[serde(skip)]
    pub full_kv_cache: bool,
}

fn null_as_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v: Option<usize> = serde::Deserialize::deserialize(d)?;
    Ok(v.unwrap_or(1))
}

fn default_beta_fast() -> f32 {
    32.0
}

/// HF's YaRN `rope_scaling` fields.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct YarnConfig {
    /// Context extension factor.
    pub factor: f32,
    /// Context length the model was trained with before extension.
    pub original_max_position_embeddings: usize,
    /// Fast boundary of the ramp (default 32).
    #[serde(default = "default_beta_fast")]
    pub beta_fast: f32,
    /// Slow boundary of the ramp (default 1).
    #[serde(default = "default_scaling")]
    pub beta_slow: f32,
    /// YaRN `mscale` (numerator of the cos/sin magnitude).
    #[serde(default)]
    pub mscale: Option<f32>,
    /// YaRN `mscale_all_dim` (denominator of the magnitude; also scales the softmax).
    #[serde(default)]
    pub mscale_all_dim: Option<f32>,
    /// The cos/sin magnitude when given outright.
    #[serde(default)]
    pub attention_factor: Option<f32>,
    /// Round the ramp's ends outward (default true).
    #[serde(default = "default_true")]
    pub truncate: bool,
}

/// YaRN's `0.1 · mscale · ln(scale) + 1` (1 for `scale <= 1`).
pub fn yarn_get_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * libm::log(scale) + 1.0
    }
}

impl YarnConfig {
    /// The graph's [`crate::graph::Yarn`] for rotary dims of width `dim` and base `theta`,
    /// computed as transformers' `_compute_yarn_parameters` does (in f64, as Python).
    pub fn spec(&self, dim: usize, theta: f32) -> crate::graph::Yarn {
        let factor = self.factor as f64;
        let attention_factor = match (self.attention_factor, self.mscale, self.mscale_all_dim) {
            (Some(a), _, _) => a as f64,
            (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                yarn_get_mscale(factor, m as f64) / yarn_get_mscale(factor, all as f64)
            }
            _ => yarn_get_mscale(factor, 1.0),
        };
        let base = theta as f64;
        let orig = self.original_max_position_embeddings as f64;
        let correction = |rotations: f64| {
            (dim as f64 * libm::log(orig / (rotations * 2.0 * core::f64::consts::PI))) / (2.0 * libm::log(base))
        };
        let (mut low, mut high) = (correction(self.beta_fast as f64), correction(self.beta_slow as f64));
        if self.truncate {
            low = libm::floor(low);
            high = libm::ceil(high);
        }
        crate::graph::Yarn {
            factor: self.factor,
            low: low.max(0.0) as f32,
            high: high.min(dim as f64 - 1.0) as f32,
            attention_factor: attention_factor as f32,
        }
    }

    /// The factor MLA's softmax scale is multiplied by: `mscale(factor, mscale_all_dim)²`
    /// when `mscale_all_dim` is set (transformers' `yarn_apply_mscale`), else 1.
    pub fn softmax_factor(&self) -> f32 {
        match self.mscale_all_dim {
            Some(all) if all != 0.0 => {
                let m = yarn_get_mscale(self.factor as f64, all as f64);
                (m * m) as f32
            }
            _ => 1.0,
        }
    }
}

impl DeepseekV3Config {
    /// The error of a `DeepseekV3ForCausalLM` config without these fields.
    pub fn missing() -> ConfigError {
        ConfigError {
            field: "kv_lora_rank",
            detail: "a DeepseekV3ForCausalLM config needs its attention and MoE fields".into(),
        }
    }

    /// Checks the fields the graph relies on (sizes are bounded as the others are).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field: &'static str, detail: String| Err(ConfigError { field, detail });
        let sizes = [
            ("kv_lora_rank", self.kv_lora_rank),
            ("qk_nope_head_dim", self.qk_nope_head_dim),
            ("qk_rope_head_dim", self.qk_rope_head_dim),
            ("v_head_dim", self.v_head_dim),
            ("n_routed_experts", self.n_routed_experts),
            ("moe_intermediate_size", self.moe_intermediate_size),
            ("num_experts_per_tok", self.num_experts_per_tok),
            ("n_group", self.n_group),
            ("topk_group", self.topk_group),
            ("q_lora_rank", self.q_lora_rank.unwrap_or(1)),
        ];
        for (field, v) in sizes {
            if v == 0 || v > MAX_WIDTH {
                return err(field, format!("{v} must be between 1 and {MAX_WIDTH}"));
            }
        }
        if self.n_routed_experts > MAX_EXPERTS {
            return err(
                "n_routed_experts",
                format!(
                    "{} is beyond any real model (at most {MAX_EXPERTS})",
                    self.n_routed_experts
                ),
            );
        }
        if self.n_shared_experts > MAX_WIDTH {
            return err(
                "n_shared_experts",
                format!("{} is beyond any real model", self.n_shared_experts),
            );
        }
        if !self.qk_rope_head_dim.is_multiple_of(2) {
            return err(
                "qk_rope_head_dim",
                format!("{} must be even (RoPE)", self.qk_rope_head_dim),
            );
        }
        let e = self.n_routed_experts;
        if !e.is_multiple_of(self.n_group) || self.n_group > crate::graph::MAX_GROUPS {
            return err(
                "n_group",
                format!(
                    "{} groups must divide the {e} experts (at most {})",
                    self.n_group,
                    crate::graph::MAX_GROUPS
                ),
            );
        }
        let per_group = e / self.n_group;
        if self.topk_group > self.n_group || (self.topk_group < self.n_group && per_group < 2) {
            return err(
                "topk_group",
                format!("{} of {} groups of {per_group} experts", self.topk_group, self.n_group),
            );
        }
        let k = self.num_experts_per_tok;
        if k > crate::graph::MAX_TOP_K || k > self.topk_group * per_group {
            return err(
                "num_experts_per_tok",
                format!("{k} experts from {} groups of {per_group}", self.topk_group),
            );
        }
        if !(self.routed_scaling_factor.is_finite() && self.routed_scaling_factor > 0.0) {
            return err(
                "routed_scaling_factor",
                format!("{} must be a positive number", self.routed_scaling_factor),
            );
        }
        if let Some(y) = &self.rope_scaling {
            let fine = |v: Option<f32>| v.is_none_or(|v| v.is_finite() && v >= 0.0);
            if !(y.factor.is_finite() && y.factor >= 1.0)
                || y.original_max_position_embeddings == 0
                || !(y.beta_fast.is_finite() && y.beta_slow.is_finite() && y.beta_fast > 0.0 && y.beta_slow > 0.0)
                || !fine(y.mscale)
                || !fine(y.mscale_all_dim)
                || !y.attention_factor.is_none_or(|a| a.is_finite() && a > 0.0)
            {
                return err("rope_scaling", format!("YaRN settings out of range: {y:?}"));
            }
        }
        Ok(())
    }

    /// Query/key width of one head: `qk_nope_head_dim + qk_rope_head_dim`.
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// Whether layer `l` has the MoE (else the dense MLP).
    pub fn is_moe_layer(&self, l: usize) -> bool {
        l >= self.first_k_dense_replace
    }
}

/// Name and shape of one weight, under its Hugging Face tensor name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// HF tensor name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Shape in HF's layout (linear weights are `[out, in]`).
    pub dims: Vec<usize>,
}

impl ParamSpec {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
}

impl ModelConfig {
    /// Which architecture this config describes, from `architectures` or `model_type`.
    pub fn architecture(&self) -> Result<Architecture, ConfigError> {
        let from_name = |s: &str| match s {
            "LlamaForCausalLM" | "llama" => Some(Architecture::Llama),
            "Qwen2ForCausalLM" | "qwen2" => Some(Architecture::Qwen2),
            "DeepseekV3ForCausalLM" | "deepseek_v3" => Some(Architecture::DeepseekV3),
            _ => None,
        };
        if let Some(first) = self.architectures.first() {
            return from_name(first).ok_or_else(|| ConfigError {
                field: "architectures",
                detail: format!(
                    "`{first}` is not supported (supported: LlamaForCausalLM, Qwen2ForCausalLM, DeepseekV3ForCausalLM)"
                ),
            });
        }
        match &self.model_type {
            Some(t) => from_name(t).ok_or_else(|| ConfigError {
                field: "model_type",
                detail: format!("`{t}` is not supported (supported: llama, qwen2, deepseek_v3)"),
            }),
            None => Err(ConfigError {
                field: "architectures",
                detail: "missing (and no `model_type`)".into(),
            }),
        }
    }

    /// Number of key/value heads: `num_key_value_heads`, or `num_attention_heads` when absent
    /// (always `num_attention_heads` for DeepSeek-V3, whose expanded keys have every head).
    pub fn kv_heads(&self) -> usize {
        if self.deepseek_v3.is_some() {
            return self.num_attention_heads;
        }
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head: `head_dim`, or `hidden_size / num_attention_heads`.
    /// For DeepSeek-V3 the width its attention runs at, `max(qk_head_dim, v_head_dim)`
    /// (the narrower side padded with zeros), which is also the width of one head of its
    /// full key/value cache rows.
    pub fn head_dim(&self) -> usize {
        if let Some(ds) = &self.deepseek_v3 {
            return ds.qk_head_dim().max(ds.v_head_dim);
        }
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Values per token of one layer's key cache and value cache: `kv_heads · head_dim`
    /// each, or for DeepSeek-V3's compressed cache one row of `kv_lora_rank +
    /// qk_rope_head_dim` (the normed latent and the rotated key part) and no value cache
    /// (width 0): attention reads the latent row as key and value.
    pub fn kv_cache_widths(&self) -> (usize, usize) {
        match &self.deepseek_v3 {
            Some(ds) if !ds.full_kv_cache => (ds.kv_lora_rank + ds.qk_rope_head_dim, 0),
            _ => {
                let w = self.kv_heads() * self.head_dim();
                (w, w)
            }
        }
    }

    /// Checks every field the graph builder relies on.
    pub fn validate(&self) -> Result<Architecture, ConfigError> {
        let arch = self.architecture()?;
        let positive = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(ConfigError {
                    field,
                    detail: "must be positive".into(),
                });
            }
        }
        match (arch, &self.deepseek_v3) {
            (Architecture::DeepseekV3, Some(ds)) => ds.validate()?,
            (Architecture::DeepseekV3, None) => return Err(DeepseekV3Config::missing()),
            (_, Some(_)) => {
                return Err(ConfigError {
                    field: "architectures",
                    detail: format!("DeepSeek-V3 fields on a {} config", arch.hf_class()),
                });
            }
            (_, None) => {}
        }
        let kv = self.kv_heads();
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return Err(ConfigError {
                field: "num_key_value_heads",
                detail: format!("{kv} must divide num_attention_heads = {}", self.num_attention_heads),
            });
        }
        let hd = self.head_dim();
        if hd == 0 || !hd.is_multiple_of(2) {
            return Err(ConfigError {
                field: "head_dim",
                detail: format!("{hd} must be positive and even (RoPE)"),
            });
        }
        if self.head_dim.is_none()
            && self.deepseek_v3.is_none()
            && !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(ConfigError {
                field: "hidden_size",
                detail: format!(
                    "{} is not divisible by num_attention_heads = {}",
                    self.hidden_size, self.num_attention_heads
                ),
            });
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(ConfigError {
                field: "rms_norm_eps",
                detail: format!("{} must be a positive number", self.rms_norm_eps),
            });
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(ConfigError {
                field: "rope_theta",
                detail: format!("{} must be a positive number", self.rope_theta),
            });
        }
        if self.vocab_size > i32::MAX as usize {
            return Err(ConfigError {
                field: "vocab_size",
                detail: "exceeds the i32 token-id range".into(),
            });
        }
        // Bounds before any arithmetic on the sizes: a config is outside input, and the
        // parameter count below multiplies them.
        let bounded = [
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("hidden_size", self.hidden_size, MAX_WIDTH),
            ("intermediate_size", self.intermediate_size, MAX_WIDTH),
            ("num_attention_heads", self.num_attention_heads, MAX_WIDTH),
            ("num_key_value_heads", kv, MAX_WIDTH),
            ("head_dim", hd, MAX_WIDTH),
        ];
        for (field, v, max) in bounded {
            if v > max {
                return Err(ConfigError {
                    field,
                    detail: format!("{v} is beyond any real model (at most {max})"),
                });
            }
        }
        match self.checked_num_params() {
            Some(n) if n as u64 <= MAX_PARAMS => Ok(arch),
            n => Err(ConfigError {
                field: "(sizes)",
                detail: match n {
                    Some(n) => format!("{n} parameters is more than r1 handles ({MAX_PARAMS})"),
                    None => "the parameter count overflows".into(),
                },
            }),
        }
    }

    /// The number of weights computed from one layer's specs with checked arithmetic
    /// (`None` on overflow or an unknown architecture), without building every layer's
    /// specs: what a loader compares with a file before allocating anything.
    pub fn checked_num_params(&self) -> Option<usize> {
        let arch = self.architecture().ok()?;
        // Layers come in at most two kinds (DeepSeek-V3: dense, then MoE): count one of each.
        let dense = match &self.deepseek_v3 {
            Some(ds) => ds.first_k_dense_replace.min(self.num_hidden_layers),
            None => self.num_hidden_layers,
        };
        let one_layer = |dense: bool| ModelConfig {
            num_hidden_layers: 1,
            deepseek_v3: self.deepseek_v3.clone().map(|ds| DeepseekV3Config {
                first_k_dense_replace: usize::from(dense),
                ..ds
            }),
            ..self.clone()
        };
        let count = |cfg: &ModelConfig| -> Option<(usize, usize)> {
            let (mut per_layer, mut rest) = (0usize, 0usize);
            for spec in arch.family().param_specs(cfg) {
                let n = spec.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
                let sum = if spec.name.starts_with("model.layers.0.") {
                    &mut per_layer
                } else {
                    &mut rest
                };
                *sum = sum.checked_add(n)?;
            }
            Some((per_layer, rest))
        };
        let (dense_layer, rest) = count(&one_layer(true))?;
        let moe_layer = if dense < self.num_hidden_layers {
            count(&one_layer(false))?.0
        } else {
            0
        };
        dense_layer
            .checked_mul(dense)?
            .checked_add(moe_layer.checked_mul(self.num_hidden_layers - dense)?)?
            .checked_add(rest)
    }

    /// Every weight of the model with its HF name and shape, in its architecture's
    /// stable order (see [`crate::model::Family::param_specs`]); empty when the
    /// architecture is not one r1 builds ([`ModelConfig::validate`] says which).
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        match self.architecture() {
            Ok(arch) => arch.family().param_specs(self),
            Err(_) => Vec::new(),
        }
    }

    /// Total number of weights.
    pub fn num_params(&self) -> usize {
        self.param_specs().iter().map(ParamSpec::numel).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn qwen() -> ModelConfig {
        ModelConfig {
            architectures: vec!["Qwen2ForCausalLM".into()],
            model_type: None,
            hidden_size: 64,
            intermediate_size: 96,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            head_dim: None,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            vocab_size: 100,
            tie_word_embeddings: true,
            max_position_embeddings: 128,
            attention_bias: false,
            bos_token_id: None,
            eos_token_id: None,
            pad_token_id: None,
            deepseek_v3: None,
        }
    }

    #[test]
    fn qwen2_has_qkv_biases_and_tied_embeddings_have_no_lm_head() {
        let specs = qwen().param_specs();
        assert!(
            specs
                .iter()
                .any(|s| s.name == "model.layers.1.self_attn.k_proj.bias" && s.dims == [32])
        );
        assert!(!specs.iter().any(|s| s.name.contains("o_proj.bias")));
        assert!(!specs.iter().any(|s| s.name == "lm_head.weight"));
        // 2 layers × 12 tensors + embeddings + final norm.
        assert_eq!(specs.len(), 2 * 12 + 2);
    }

    #[test]
    fn yarn_frequencies_and_softmax_scale_match_transformers_for_deepseek_v3s_settings() {
        // DeepSeek-V3's `rope_scaling`; the values are what transformers 5.25 computes
        // (`ROPE_INIT_FUNCTIONS["yarn"]` with qk_rope_head_dim 64, `yarn_apply_mscale`
        // with qk_head_dim 192), including the ramp between the two regimes (i = 11..22).
        let yarn = YarnConfig {
            factor: 40.0,
            original_max_position_embeddings: 4096,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: Some(1.0),
            mscale_all_dim: Some(1.0),
            attention_factor: None,
            truncate: true,
        };
        let spec = crate::graph::RopeSpec {
            yarn: Some(yarn.spec(64, 10000.0)),
            ..crate::graph::RopeSpec::new(1, 64, 10000.0)
        };
        let hf: [f64; 32] = [
            1.0,
            0.7498942017555237,
            0.5623413324356079,
            0.4216965138912201,
            0.3162277638912201,
            0.23713736236095428,
            0.17782793939113617,
            0.1333521455526352,
            0.10000000149011612,
            0.07498941570520401,
            0.05623412877321243,
            0.039006926119327545,
            0.026879360899329185,
            0.01837814413011074,
            0.012447956018149853,
            0.0083345090970397,
            0.005500000435858965,
            0.0035619973205029964,
            0.002249365206807852,
            0.0013705134624615312,
            0.0007905694073997438,
            0.0004149904125370085,
            0.00017782794020604342,
            3.333803397254087e-05,
            2.499999936844688e-05,
            1.8747354260995053e-05,
            1.4058532542549074e-05,
            1.0542412383074407e-05,
            7.905694474175107e-06,
            5.928434347879374e-06,
            4.445698323252145e-06,
            3.3338035336782923e-06,
        ];
        for (i, (got, want)) in spec.inv_freq().iter().zip(hf).enumerate() {
            assert!(
                (*got as f64 - want).abs() <= 1e-6 * want,
                "inv_freq[{i}]: {got} vs {want}"
            );
        }
        assert_eq!(spec.magnitude(), 1.0);
        let scale = yarn.softmax_factor() as f64 / libm::sqrt(192.0);
        assert!((scale - 0.1352337788608801).abs() < 1e-7, "{scale}");
    }

    #[test]
    fn a_config_naming_millions_of_experts_is_refused_before_any_weight_is_listed() {
        let text = r#"{"architectures": ["DeepseekV3ForCausalLM"], "hidden_size": 8,
            "intermediate_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 8,
            "deepseek_v3": {"kv_lora_rank": 4, "qk_nope_head_dim": 2, "qk_rope_head_dim": 2,
            "v_head_dim": 2, "n_routed_experts": 1000000, "moe_intermediate_size": 2,
            "num_experts_per_tok": 1}}"#;
        let mut c: ModelConfig = serde_json::from_str(text).expect("json");
        assert_eq!(c.validate().unwrap_err().field, "n_routed_experts");
        // Absent routing groups are one group, as in HF (`null` too).
        let ds = c.deepseek_v3.as_mut().expect("deepseek");
        ds.n_routed_experts = 4;
        assert_eq!((ds.n_group, ds.topk_group), (1, 1));
        assert_eq!(c.validate(), Ok(Architecture::DeepseekV3));
    }

    #[test]
    fn kv_heads_must_divide_heads() {
        let mut c = qwen();
        c.num_key_value_heads = Some(3);
        assert_eq!(c.validate().unwrap_err().field, "num_key_value_heads");
    }

    #[test]
    fn unsupported_architecture_is_named() {
        let mut c = qwen();
        c.architectures = vec!["GPT2LMHeadModel".into()];
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "architectures");
        assert!(e.detail.contains("GPT2LMHeadModel"));
    }
}
