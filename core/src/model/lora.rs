//! LoRA adapters (Hu et al. 2021, as PEFT's `LoraLayer` computes them): a target linear
//! layer `y = x · Wᵀ (+ b)` becomes `y = x · Wᵀ (+ b) + s · (x · Aᵀ) · Bᵀ` with `A [r, in]`,
//! `B [out, r]` and `s = alpha / r` (`alpha / √r` with rsLoRA). The base weights are frozen
//! (any stored type); only `A` and `B` train. Adapter weights are named after their target
//! as PEFT names them without the `base_model.model.` prefix and the adapter name:
//! `model.layers.0.self_attn.q_proj.lora_A.weight`.
//!
//! PEFT's `lora_dropout` drops the adapter's input in training graphs
//! ([`crate::model::BuildOptions::train`], an [`crate::graph::Op::Dropout`] per module);
//! generation and scoring graphs compute the adapter as PEFT's `eval()` does.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::model::config::ParamSpec;

/// Most a LoRA rank may be (PEFT puts no bound; a rank past the layer's width is pointless).
pub const MAX_RANK: usize = 1 << 14;

/// A linear layer of a Llama-style decoder layer that an adapter can target, by its HF
/// module name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraModule {
    /// `self_attn.q_proj`.
    QProj,
    /// `self_attn.k_proj`.
    KProj,
    /// `self_attn.v_proj`.
    VProj,
    /// `self_attn.o_proj`.
    OProj,
    /// `mlp.gate_proj`.
    GateProj,
    /// `mlp.up_proj`.
    UpProj,
    /// `mlp.down_proj`.
    DownProj,
}

impl LoraModule {
    /// Every module, in the order the decoder uses them.
    pub const ALL: [LoraModule; 7] = [
        LoraModule::QProj,
        LoraModule::KProj,
        LoraModule::VProj,
        LoraModule::OProj,
        LoraModule::GateProj,
        LoraModule::UpProj,
        LoraModule::DownProj,
    ];

    /// The HF module name (`q_proj`, …).
    pub fn name(self) -> &'static str {
        match self {
            LoraModule::QProj => "q_proj",
            LoraModule::KProj => "k_proj",
            LoraModule::VProj => "v_proj",
            LoraModule::OProj => "o_proj",
            LoraModule::GateProj => "gate_proj",
            LoraModule::UpProj => "up_proj",
            LoraModule::DownProj => "down_proj",
        }
    }

    /// The module's path inside a decoder layer (`self_attn.q_proj`, `mlp.down_proj`).
    pub fn path(self) -> &'static str {
        match self {
            LoraModule::QProj => "self_attn.q_proj",
            LoraModule::KProj => "self_attn.k_proj",
            LoraModule::VProj => "self_attn.v_proj",
            LoraModule::OProj => "self_attn.o_proj",
            LoraModule::GateProj => "mlp.gate_proj",
            LoraModule::UpProj => "mlp.up_proj",
            LoraModule::DownProj => "mlp.down_proj",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The set of modules an adapter targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoraTargets(u8);

impl LoraTargets {
    /// Every linear layer of the decoder layers (PEFT's `"all-linear"`, which leaves the
    /// LM head out).
    pub fn all_linear() -> LoraTargets {
        LoraTargets(LoraModule::ALL.iter().fold(0, |m, t| m | t.bit()))
    }

    /// Targets by HF module name (`q_proj`, …, or `all-linear`); an unknown name is an error
    /// that lists the known ones.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<LoraTargets, LoraError> {
        let mut bits = 0u8;
        for name in names {
            if name == "all-linear" {
                bits |= LoraTargets::all_linear().0;
                continue;
            }
            let m = LoraModule::ALL.iter().find(|m| m.name() == name).ok_or_else(|| {
                LoraError::new(
                    "target_modules",
                    format!(
                        "`{name}` is not a linear layer r1 can adapt (known: all-linear, {})",
                        LoraModule::ALL.map(LoraModule::name).join(", ")
                    ),
                )
            })?;
            bits |= m.bit();
        }
        if bits == 0 {
            return Err(LoraError::new("target_modules", "no module to adapt".into()));
        }
        Ok(LoraTargets(bits))
    }

    /// Whether `module` is targeted.
    pub fn contains(self, module: LoraModule) -> bool {
        self.0 & module.bit() != 0
    }

    /// The targeted modules, in decoder order.
    pub fn modules(self) -> impl Iterator<Item = LoraModule> {
        LoraModule::ALL.into_iter().filter(move |m| self.contains(*m))
    }

    /// The targeted module names, in decoder order.
    pub fn names(self) -> Vec<String> {
        self.modules().map(|m| m.name().to_string()).collect()
    }
}

/// One LoRA adapter's hyper-parameters (PEFT's `LoraConfig` fields of the same names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoraSpec {
    /// `r`: the adapter's inner width.
    pub rank: usize,
    /// `lora_alpha`.
    pub alpha: f32,
    /// `lora_dropout`: the probability an input element of the adapter is zeroed in
    /// training (the kept ones scaled by `1 / (1 − p)`), in `[0, 1)`.
    pub dropout: f32,
    /// `use_rslora`: scale by `alpha / √r` instead of `alpha / r`.
    pub rslora: bool,
    /// `target_modules`.
    pub targets: LoraTargets,
}

impl LoraSpec {
    /// The factor on `B · A` (PEFT's `scaling`), computed in f64 as Python does and
    /// rounded once to f32 (as torch rounds a Python float multiplying an f32 tensor).
    pub fn scaling(&self) -> f32 {
        let r = self.rank as f64;
        let denominator = if self.rslora { libm::sqrt(r) } else { r };
        (self.alpha as f64 / denominator) as f32
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), LoraError> {
        if self.rank == 0 || self.rank > MAX_RANK {
            return Err(LoraError::new("r", format!("{} is not in 1..={MAX_RANK}", self.rank)));
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(LoraError::new("lora_alpha", format!("{} must be positive", self.alpha)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(LoraError::new(
                "lora_dropout",
                format!("{} is not in [0, 1)", self.dropout),
            ));
        }

        if self.targets.0 == 0 {
            return Err(LoraError::new("target_modules", "no module to adapt".into()));
        }
        Ok(())
    }

    /// The adapter weights for a model whose weights are `base` (a family's
    /// `param_specs`): `lora_A [r, in]` and `lora_B [out, r]` for every 2-D
    /// `model.layers.{l}.{module}.weight` of a targeted module, in `base` order.
    pub fn adapter_specs(&self, base: &[ParamSpec]) -> Vec<ParamSpec> {
        let mut out = Vec::new();
        for s in base {
            let Some(prefix) = self.target_of(&s.name) else {
                continue;
            };
            if let [rows, cols] = s.dims[..] {
                out.push(ParamSpec {
                    name: format!("{prefix}.lora_A.weight"),
                    dims: alloc::vec![self.rank, cols],
                });
                out.push(ParamSpec {
                    name: format!("{prefix}.lora_B.weight"),
                    dims: alloc::vec![rows, self.rank],
                });
            }
        }
        out
    }

    /// The module prefix (`model.layers.3.mlp.up_proj`) when `weight_name` is the weight of
    /// a targeted module of a decoder layer.
    pub fn target_of<'a>(&self, weight_name: &'a str) -> Option<&'a str> {
        let prefix = weight_name.strip_suffix(".weight")?;
        let rest = prefix.strip_prefix("model.layers.")?;
        let (layer, path) = rest.split_once('.')?;
        if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        self.targets.modules().any(|m| m.path() == path).then_some(prefix)
    }
}

/// A LoRA setting out of range.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraError {
    /// The PEFT `LoraConfig` field at fault.
    pub field: &'static str,
    /// What is wrong with its value.
    pub detail: String,
}

impl LoraError {
    fn new(field: &'static str, detail: String) -> LoraError {
        LoraError { field, detail }
    }
}

impl fmt::Display for LoraError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LoRA `{}`: {}", self.field, self.detail)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for LoraError {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn spec(targets: &[&str]) -> LoraSpec {
        LoraSpec {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            rslora: false,
            targets: LoraTargets::from_names(targets.iter().copied()).expect("targets"),
        }
    }

    #[test]
    fn adapters_follow_their_targets_shapes() {
        let base = vec![
            ParamSpec {
                name: "model.embed_tokens.weight".into(),
                dims: vec![100, 16],
            },
            ParamSpec {
                name: "model.layers.0.self_attn.q_proj.weight".into(),
                dims: vec![32, 16],
            },
            ParamSpec {
                name: "model.layers.0.self_attn.q_proj.bias".into(),
                dims: vec![32],
            },
            ParamSpec {
                name: "model.layers.0.mlp.down_proj.weight".into(),
                dims: vec![16, 48],
            },
            ParamSpec {
                name: "lm_head.weight".into(),
                dims: vec![100, 16],
            },
        ];
        let got: Vec<(String, Vec<usize>)> = spec(&["q_proj", "down_proj"])
            .adapter_specs(&base)
            .into_iter()
            .map(|s| (s.name, s.dims))
            .collect();
        assert_eq!(
            got,
            vec![
                ("model.layers.0.self_attn.q_proj.lora_A.weight".into(), vec![4, 16]),
                ("model.layers.0.self_attn.q_proj.lora_B.weight".into(), vec![32, 4]),
                ("model.layers.0.mlp.down_proj.lora_A.weight".into(), vec![4, 48]),
                ("model.layers.0.mlp.down_proj.lora_B.weight".into(), vec![16, 4]),
            ]
        );
        assert!(spec(&["v_proj"]).adapter_specs(&base).is_empty());
    }

    #[test]
    fn scaling_is_alpha_over_rank_or_over_its_root() {
        let mut s = spec(&["all-linear"]);
        assert_eq!(s.scaling(), 2.0);
        s.rslora = true;
        assert_eq!(s.scaling(), 4.0);
        s.rank = 2;
        assert!((s.scaling() - 8.0 / core::f32::consts::SQRT_2).abs() < 1e-6);
    }

    #[test]
    fn bad_settings_name_their_field() {
        let err = LoraTargets::from_names(["q_proj", "lm_head"]).expect_err("lm_head");
        assert_eq!(err.field, "target_modules");
        assert!(err.detail.contains("lm_head"), "{err}");
        let mut s = spec(&["q_proj"]);
        s.rank = 0;
        assert_eq!(s.validate().expect_err("rank 0").field, "r");
        s.rank = 4;
        s.dropout = 1.0;
        assert_eq!(s.validate().expect_err("dropout 1").field, "lora_dropout");
        s.dropout = 0.05;
        assert!(s.validate().is_ok());
        s.dropout = 0.0;
        s.alpha = f32::NAN;
        assert_eq!(s.validate().expect_err("alpha").field, "lora_alpha");
    }

    #[test]
    fn only_decoder_layer_weights_are_targets() {
        let s = spec(&["all-linear"]);
        assert_eq!(
            s.target_of("model.layers.12.mlp.gate_proj.weight"),
            Some("model.layers.12.mlp.gate_proj")
        );
        assert_eq!(s.target_of("model.layers.x.mlp.gate_proj.weight"), None);
        assert_eq!(s.target_of("model.layers.1.self_attn.q_proj.bias"), None);
        assert_eq!(s.target_of("lm_head.weight"), None);
    }
}
