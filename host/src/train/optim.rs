//! AdamW with decoupled weight decay and bias correction (as `torch.optim.AdamW`), with
//! f32 or 8-bit moments, the learning-rate schedules of `transformers` (linear warmup,
//! then cosine / linear / constant), global-norm gradient clipping and gradient
//! accumulation, on any backend.

use r1_core::backend::{AdamWStep, Backend, BackendError, TensorRef};

use crate::train::moments::Moments;
use crate::weights::{ParamBuffer, ParamLayout};

/// Optimizer settings, under the `transformers` `TrainingArguments` names.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// `adamw` (f32 moments) or `adamw_8bit` (transformers' `optim` names).
    pub optimizer: OptimizerType,
    pub learning_rate: f32,
    pub weight_decay: f32,
    pub adam_beta1: f32,
    pub adam_beta2: f32,
    pub adam_epsilon: f32,
    /// Global-norm clipping threshold; 0 disables.
    pub max_grad_norm: f32,
    pub warmup_steps: usize,
    /// Fraction of the total steps spent warming up (used when `warmup_steps` is 0).
    pub warmup_ratio: f32,
    pub lr_scheduler_type: LrSchedule,
    /// The cosine schedule decays to `min_lr_ratio × learning_rate`.
    pub min_lr_ratio: f32,
    /// DeepSeek-V3's auxiliary-loss-free load balancing (γ, the paper's bias update speed,
    /// 0.001 in its pre-training): after each optimizer step every MoE layer's
    /// `e_score_correction_bias` moves by this much per expert, up for experts that took
    /// fewer tokens than the layer's mean in the step, down for those that took more.
    /// 0 (the default) leaves the biases as loaded; dense models ignore it.
    pub bias_update_speed: f32,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            optimizer: OptimizerType::Adamw,
            learning_rate: 1e-3,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            warmup_steps: 0,
            warmup_ratio: 0.0,
            lr_scheduler_type: LrSchedule::Cosine,
            min_lr_ratio: 0.0,
            bias_update_speed: 0.0,
        }
    }
}

/// How AdamW keeps its moments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OptimizerType {
    /// f32 moments: 8 bytes of state per trained weight.
    #[serde(rename = "adamw", alias = "adamw_torch")]
    Adamw,
    /// Blockwise 8-bit moments (`r1_core::optim8`, after bitsandbytes' `AdamW8bit`) for
    /// tensors of 4096 values or more: 2 bytes of state per weight.
    #[serde(rename = "adamw_8bit")]
    Adamw8bit,
}

/// Learning-rate schedule after warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    Cosine,
    Linear,
    Constant,
}

impl OptimConfig {
    pub fn validate(&self) -> Result<(), String> {
        let checks: [(&str, bool); 7] = [
            (
                "bias_update_speed",
                self.bias_update_speed.is_finite() && self.bias_update_speed >= 0.0,
            ),
            (
                "learning_rate",
                self.learning_rate.is_finite() && self.learning_rate >= 0.0,
            ),
            (
                "weight_decay",
                self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            ),
            ("adam_beta1", (0.0..1.0).contains(&self.adam_beta1)),
            ("adam_beta2", (0.0..1.0).contains(&self.adam_beta2)),
            ("adam_epsilon", self.adam_epsilon.is_finite() && self.adam_epsilon > 0.0),
            (
                "max_grad_norm",
                self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0,
            ),
        ];
        for (field, ok) in checks {
            if !ok {
                return Err(format!("optimizer field `{field}` is out of range"));
            }
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) || !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err("optimizer fields `warmup_ratio` and `min_lr_ratio` must be in [0, 1]".into());
        }
        Ok(())
    }

    /// Learning rate for 0-based optimizer step `step` of `total` (as `transformers`'
    /// `get_cosine_schedule_with_warmup` and friends: linear warmup from 0).
    pub fn lr_at(&self, step: usize, total: usize) -> f32 {
        let warmup = if self.warmup_steps > 0 {
            self.warmup_steps
        } else {
            (self.warmup_ratio * total as f32).ceil() as usize
        };
        let lr = self.learning_rate;
        if step < warmup {
            return lr * step as f32 / warmup.max(1) as f32;
        }
        let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
        let progress = progress.min(1.0);
        let floor = self.min_lr_ratio as f64;
        let factor = match self.lr_scheduler_type {
            LrSchedule::Constant => 1.0,
            LrSchedule::Linear => floor + (1.0 - floor) * (1.0 - progress),
            LrSchedule::Cosine => floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        };
        (lr as f64 * factor) as f32
    }
}

/// The quantity of a training step that came out NaN or infinite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonFiniteQuantity {
    Loss,
    GradNorm,
    /// A per-token input of the GRPO loss that the model computed (`logp`, `old_logp`,
    /// `ref_logp`) or its gradient (`grad_logp`), at a flat index.
    Tensor {
        name: &'static str,
        index: usize,
    },
}

impl std::fmt::Display for NonFiniteQuantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NonFiniteQuantity::Loss => f.write_str("the loss"),
            NonFiniteQuantity::GradNorm => f.write_str("the gradient norm"),
            NonFiniteQuantity::Tensor { name, index } => write!(f, "`{name}[{index}]`"),
        }
    }
}

/// A training step whose loss, gradient norm or log-probabilities are not finite. Every
/// trainer (SFT, distillation's SFT, GRPO) stops with it before the optimizer applies the
/// step, so the weights stay those of the step before instead of turning into NaN.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "step {step}: {quantity} is {value}, not a finite number; training stopped before applying the step \
     (the weights are those of the step before)"
)]
pub struct NonFiniteStep {
    /// The stage's 1-based step (the `step` of its metrics line).
    pub step: u64,
    pub quantity: NonFiniteQuantity,
    pub value: f64,
}

/// Why an optimizer step was not taken.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    NonFinite(#[from] NonFiniteStep),
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Global gradient norm before clipping (of the averaged gradient).
    pub grad_norm: f64,
    pub learning_rate: f32,
}

/// AdamW state on the backend: accumulated gradients and both moments, in the model's
/// parameter layout.
pub struct AdamW<B: Backend> {
    pub config: OptimConfig,
    pub grads: ParamBuffer<B>,
    pub moments: Moments<B>,
    /// Optimizer steps taken so far.
    pub step: u64,
}

impl<B: Backend> AdamW<B> {
    pub fn new(backend: &B, layout: &ParamLayout, config: OptimConfig) -> Result<Self, BackendError> {
        let moments = Moments::zeros(backend, layout, config.optimizer == OptimizerType::Adamw8bit)?;
        Ok(AdamW {
            config,
            grads: ParamBuffer::zeros(backend, layout.clone())?,
            moments,
            step: 0,
        })
    }

    /// Adds one micro-batch's gradient of parameter `i` (`first` overwrites instead).
    pub fn accumulate(
        &self,
        backend: &B,
        i: usize,
        grad: TensorRef<'_, B::Buffer>,
        first: bool,
    ) -> Result<(), BackendError> {
        backend.axpby(self.grads.tensor(i), 1.0, grad, if first { 0.0 } else { 1.0 })
    }

    /// Global L2 norm of the accumulated gradient times `scale`.
    pub fn grad_norm(&self, backend: &B, scale: f32) -> Result<f64, BackendError> {
        Ok(backend.sum_squares(self.grads.flat())?.sqrt() * scale as f64)
    }

    /// Clips the accumulated gradient (scaled by `grad_scale`, e.g. 1 / micro-batches when
    /// the loss was not already averaged) to `max_grad_norm` and applies one AdamW update.
    /// A non-finite `loss` (the step's, as its metrics report it) or gradient norm is
    /// refused with [`NonFiniteStep`] before any weight or moment changes; the step it
    /// names is this optimizer's next (trainers keep it equal to their own step count).
    pub fn step(
        &mut self,
        backend: &B,
        params: &ParamBuffer<B>,
        lr: f32,
        grad_scale: f32,
        loss: f64,
    ) -> Result<StepStats, OptimError> {
        let non_finite = |quantity, value| NonFiniteStep {
            step: self.step + 1,
            quantity,
            value,
        };
        if !loss.is_finite() {
            return Err(non_finite(NonFiniteQuantity::Loss, loss).into());
        }
        let grad_norm = self.grad_norm(backend, grad_scale)?;
        if !grad_norm.is_finite() {
            return Err(non_finite(NonFiniteQuantity::GradNorm, grad_norm).into());
        }
        let clip = if self.config.max_grad_norm > 0.0 && grad_norm > self.config.max_grad_norm as f64 {
            // torch.nn.utils.clip_grad_norm_: coefficient max_norm / (norm + 1e-6).
            (self.config.max_grad_norm as f64 / (grad_norm + 1e-6)) as f32
        } else {
            1.0
        };
        self.step += 1;
        for (i, e) in params.layout.entries().iter().enumerate() {
            let hp = AdamWStep {
                lr,
                beta1: self.config.adam_beta1,
                beta2: self.config.adam_beta2,
                eps: self.config.adam_epsilon,
                weight_decay: if e.decays() { self.config.weight_decay } else { 0.0 },
                step: self.step,
                grad_scale: grad_scale * clip,
            };
            self.moments
                .adamw(backend, i, params.tensor(i), self.grads.tensor(i), &hp)?;
        }
        Ok(StepStats {
            grad_norm,
            learning_rate: lr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_warms_up_then_decays_to_the_floor() {
        let c = OptimConfig {
            learning_rate: 1.0,
            warmup_steps: 10,
            min_lr_ratio: 0.1,
            ..Default::default()
        };
        assert_eq!(c.lr_at(0, 110), 0.0);
        assert!((c.lr_at(5, 110) - 0.5).abs() < 1e-6);
        assert!((c.lr_at(10, 110) - 1.0).abs() < 1e-6);
        assert!((c.lr_at(60, 110) - 0.55).abs() < 1e-6);
        assert!((c.lr_at(110, 110) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn warmup_ratio_counts_steps() {
        let c = OptimConfig {
            learning_rate: 2.0,
            warmup_ratio: 0.1,
            lr_scheduler_type: LrSchedule::Constant,
            ..Default::default()
        };
        assert!((c.lr_at(5, 100) - 1.0).abs() < 1e-6);
        assert_eq!(c.lr_at(50, 100), 2.0);
    }

    #[test]
    fn out_of_range_fields_are_named() {
        let c = OptimConfig {
            adam_beta2: 1.5,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("adam_beta2"));
    }
}
