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
}

impl Architecture {
    /// The Hugging Face class name.
    pub fn hf_class(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    /// The Hugging Face `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
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
            _ => None,
        };
        if let Some(first) = self.architectures.first() {
            return from_name(first).ok_or_else(|| ConfigError {
                field: "architectures",
                detail: format!("`{first}` is not supported (supported: LlamaForCausalLM, Qwen2ForCausalLM)"),
            });
        }
        match &self.model_type {
            Some(t) => from_name(t).ok_or_else(|| ConfigError {
                field: "model_type",
                detail: format!("`{t}` is not supported (supported: llama, qwen2)"),
            }),
            None => Err(ConfigError {
                field: "architectures",
                detail: "missing (and no `model_type`)".into(),
            }),
        }
    }

    /// Number of key/value heads: `num_key_value_heads`, or `num_attention_heads` when absent.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head: `head_dim`, or `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
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
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
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
        let one_layer = ModelConfig {
            num_hidden_layers: 1,
            ..self.clone()
        };
        let (mut per_layer, mut rest) = (0usize, 0usize);
        for spec in arch.family().param_specs(&one_layer) {
            let n = spec.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
            let sum = if spec.name.starts_with("model.layers.0.") {
                &mut per_layer
            } else {
                &mut rest
            };
            *sum = sum.checked_add(n)?;
        }
        per_layer.checked_mul(self.num_hidden_layers)?.checked_add(rest)
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
