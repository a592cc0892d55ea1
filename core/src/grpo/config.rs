//! `GrpoConfig`: the GRPO hyper-parameters that shape advantages and the policy loss, under
//! TRL's `GRPOConfig` field names and with TRL 1.x defaults, so a TRL config carries over.
//! Unknown keys are rejected with their name.

use alloc::format;
use alloc::vec::Vec;
use core::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::GrpoError;

/// How token losses are aggregated into the loss (TRL's `loss_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Mean over each sequence's tokens, then mean over sequences (the GRPO paper; length-biased).
    Grpo,
    /// Mean over all active tokens of the micro-batch.
    Bnpo,
    /// Sum over tokens / (sequences × `max_completion_length`) (Dr. GRPO).
    DrGrpo,
    /// Sum over tokens / active tokens of the whole generation batch (DAPO, TRL's default).
    #[default]
    Dapo,
    /// `−min(ρ, ε_high)·A·logp` with the weight held constant (MiniMax-M1 CISPO), aggregated as dapo.
    Cispo,
    /// Soft gate `σ(τ(ρ−1))·4/τ` instead of hard clipping (SAPO), aggregated as grpo.
    Sapo,
    /// Sum over each sequence's tokens, then mean over sequences (LUSPO).
    Luspo,
}

impl LossType {
    /// Every loss type, in declaration order.
    pub const ALL: [LossType; 7] = [
        LossType::Grpo,
        LossType::Bnpo,
        LossType::DrGrpo,
        LossType::Dapo,
        LossType::Cispo,
        LossType::Sapo,
        LossType::Luspo,
    ];

    /// TRL's name for the loss type.
    pub fn as_str(self) -> &'static str {
        match self {
            LossType::Grpo => "grpo",
            LossType::Bnpo => "bnpo",
            LossType::DrGrpo => "dr_grpo",
            LossType::Dapo => "dapo",
            LossType::Cispo => "cispo",
            LossType::Sapo => "sapo",
            LossType::Luspo => "luspo",
        }
    }

    /// The loss types whose policy term is the clipped surrogate (and that log `clip_ratio/*`).
    pub fn is_clipped_surrogate(self) -> bool {
        matches!(
            self,
            LossType::Grpo | LossType::Bnpo | LossType::DrGrpo | LossType::Dapo | LossType::Luspo
        )
    }
}

/// Whether the importance ratio is per token or one per sequence (GSPO), TRL's
/// `importance_sampling_level`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportanceSamplingLevel {
    /// `ρ_t = exp(logp_t − old_logp_t)`.
    #[default]
    Token,
    /// `ρ = exp(Σ_t m_t (logp_t − old_logp_t) / max(Σ_t m_t, 1))`, shared by the sequence's tokens.
    Sequence,
}

/// How rewards are scaled into advantages (TRL's `scale_rewards`; `true` means `group` and
/// `false` means `none`, as in TRL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScaleRewards {
    /// Divide by the group's standard deviation (+1e-4).
    #[default]
    Group,
    /// Divide by the whole batch's standard deviation (+1e-4); the mean is still the group's.
    Batch,
    /// Only subtract the group mean (Dr. GRPO).
    None,
}

impl ScaleRewards {
    /// TRL's name for the setting (`"group"`, `"batch"`, `"none"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ScaleRewards::Group => "group",
            ScaleRewards::Batch => "batch",
            ScaleRewards::None => "none",
        }
    }
}

impl Serialize for ScaleRewards {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ScaleRewards {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ScaleRewards;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"group\", \"batch\", \"none\", true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ScaleRewards, E> {
                Ok(if v { ScaleRewards::Group } else { ScaleRewards::None })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScaleRewards, E> {
                match v {
                    "group" => Ok(ScaleRewards::Group),
                    "batch" => Ok(ScaleRewards::Batch),
                    "none" => Ok(ScaleRewards::None),
                    _ => Err(E::unknown_variant(v, &["group", "batch", "none"])),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// How several reward functions become one advantage (TRL's `multi_objective_aggregation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MultiObjectiveAggregation {
    /// Weighted sum of the rewards, then group normalisation as `scale_rewards` says.
    #[default]
    SumThenNormalize,
    /// Normalise each reward within its group, take the weighted sum, then normalise over the
    /// batch (GDPO); `scale_rewards` is not used.
    NormalizeThenSum,
}

/// GRPO hyper-parameters, with TRL's `GRPOConfig` names and TRL 1.x defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoConfig {
    /// Completions sampled per prompt, G (the group size).
    pub num_generations: usize,
    /// Longest completion, in tokens; the `dr_grpo` denominator.
    pub max_completion_length: usize,
    /// KL coefficient β (0 disables the KL term and the reference model).
    pub beta: f64,
    /// Lower clipping ε: `clip(ρ, 1 − ε, 1 + ε_high)`.
    pub epsilon: f64,
    /// Upper clipping ε (defaults to `epsilon`); for `cispo`, the cap on ρ itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epsilon_high: Option<f64>,
    /// Two-sided clipping (INTELLECT-2): cap ρ at δ in the unclipped term.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    /// How token losses are aggregated, TRL's `loss_type` (default `dapo`).
    pub loss_type: LossType,
    /// Per-token ratios, or one per sequence (GSPO); TRL's `importance_sampling_level`.
    pub importance_sampling_level: ImportanceSamplingLevel,
    /// How rewards are normalised into advantages (default `group`).
    pub scale_rewards: ScaleRewards,
    /// One weight per reward function (all 1 when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward_weights: Option<Vec<f64>>,
    /// How several rewards combine into one advantage (default `sum_then_normalize`).
    pub multi_objective_aggregation: MultiObjectiveAggregation,
    /// Multiply the per-token KL by ρ (DeepSeek-V3.2's unbiased KL gradient); TRL 1.x default on.
    pub use_bias_correction_kl: bool,
    /// SAPO gate temperature for tokens with positive advantage.
    pub sapo_temperature_pos: f64,
    /// SAPO gate temperature for tokens with non-positive advantage.
    pub sapo_temperature_neg: f64,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        GrpoConfig {
            num_generations: 8,
            max_completion_length: 512,
            beta: 0.0,
            epsilon: 0.2,
            epsilon_high: None,
            delta: None,
            loss_type: LossType::Dapo,
            importance_sampling_level: ImportanceSamplingLevel::Token,
            scale_rewards: ScaleRewards::Group,
            reward_weights: None,
            multi_objective_aggregation: MultiObjectiveAggregation::SumThenNormalize,
            use_bias_correction_kl: true,
            sapo_temperature_pos: 1.0,
            sapo_temperature_neg: 1.05,
        }
    }
}

impl GrpoConfig {
    /// ε_low, the lower clipping distance.
    pub fn epsilon_low(&self) -> f64 {
        self.epsilon
    }

    /// ε_high as TRL resolves it: `epsilon_high`, else `epsilon`.
    pub fn epsilon_high(&self) -> f64 {
        self.epsilon_high.unwrap_or(self.epsilon)
    }

    /// Checks every field's range; the loss and advantage functions call it too.
    pub fn validate(&self) -> Result<(), GrpoError> {
        fn bad(field: &'static str, reason: alloc::string::String) -> Result<(), GrpoError> {
            Err(GrpoError::InvalidConfig { field, reason })
        }
        if self.num_generations < 2 {
            return bad(
                "num_generations",
                format!(
                    "{} (GRPO needs at least 2 completions per prompt)",
                    self.num_generations
                ),
            );
        }
        if self.max_completion_length == 0 {
            return bad("max_completion_length", "0 (must be at least 1)".into());
        }
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return bad("beta", format!("{} (must be finite and >= 0)", self.beta));
        }
        if !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return bad("epsilon", format!("{} (must be finite and >= 0)", self.epsilon));
        }
        let eh = self.epsilon_high();
        if !(eh.is_finite() && eh >= 0.0) || (self.loss_type == LossType::Cispo && eh <= 0.0) {
            return bad(
                "epsilon_high",
                format!("{eh} (must be finite and >= 0, and > 0 for cispo)"),
            );
        }
        if let Some(d) = self.delta
            && !(d.is_finite() && d > 0.0)
        {
            return bad("delta", format!("{d} (must be finite and > 0)"));
        }
        if let Some(w) = &self.reward_weights
            && let Some((i, v)) = w.iter().enumerate().find(|(_, v)| !v.is_finite())
        {
            return bad("reward_weights", format!("weight {i} is {v} (must be finite)"));
        }
        for (field, t) in [
            ("sapo_temperature_pos", self.sapo_temperature_pos),
            ("sapo_temperature_neg", self.sapo_temperature_neg),
        ] {
            if !(t.is_finite() && t > 0.0) {
                return bad(field, format!("{t} (must be finite and > 0)"));
            }
        }
        Ok(())
    }
}
