//! The GRPO policy loss on per-token log-probs and its exact gradient with respect to each
//! log-prob, with the definitions of TRL 1.x's `GRPOTrainer._compute_loss` (every
//! `loss_type`, token or sequence importance sampling, ε_low/ε_high clipping, the δ cap and
//! the β-weighted k3 KL). The trainer back-propagates the gradient through its graph.
//!
//! Notation, per sequence `b` and position `t`: `m` the completion mask, `A_b` the advantage,
//! `s` the log importance weight — `logp_t − old_t` (token level) or
//! `Σ_t m_t (logp_t − old_t) / max(Σ_t m_t, 1)` (sequence level) — and `ρ = exp(s)`.
//!
//! Policy term per token:
//! - clipped surrogate (grpo, bnpo, dr_grpo, dapo, luspo):
//!   `−min(ρ' A, clip(ρ, 1 − ε_low, 1 + ε_high) A)` with `ρ' = min(ρ, δ)` when δ is set;
//! - cispo: `−sg(min(ρ, ε_high)) A logp_t` (`sg`: no gradient through the weight);
//! - sapo: `−σ(τ (ρ − 1)) · 4/τ · A`, with τ = `sapo_temperature_pos` if `A > 0`, else `_neg`.
//!
//! KL term: `β · k3 · (ρ if use_bias_correction_kl)`, `k3 = exp(ref − logp) − (ref − logp) − 1`.
//!
//! The loss is `Σ_{b,t} w_{b,t} (policy + KL)` with `w = m ·`
//! `1/(B·max(n_b,1))` (grpo, sapo), `1/max(N,1)` (bnpo), `1/(B·max_completion_length)`
//! (dr_grpo), `1/max(num_items_in_batch,1)` (dapo, cispo), `1/B` (luspo), where `n_b` is the
//! sequence's active tokens and `N` the micro-batch's. Where TRL's `min` ties (ρ inside the
//! clip range), autograd gives each branch half the gradient; so does this code.
//!
//! TRL divides grpo/bnpo/dr_grpo/luspo/sapo losses by the gradient-accumulation steps and
//! dapo/cispo by `num_items_in_batch · accumulation_steps / steps_per_generation`; here the
//! caller passes the dapo denominator and scales for accumulation itself.

use alloc::vec;
use alloc::vec::Vec;

use super::{GrpoConfig, GrpoError, ImportanceSamplingLevel, LossMetrics, LossType};

/// Per-token inputs of one micro-batch of `B` completions padded to `completion_len`
/// positions; per-token slices are row-major `[B × completion_len]`.
#[derive(Clone, Copy, Debug)]
pub struct LossInputs<'a> {
    /// Log-probs of the sampled tokens under the policy being trained (the values the
    /// gradient is taken with respect to).
    pub logp: &'a [f32],
    /// Log-probs under the policy that sampled the completions; `None` when it is the current
    /// policy (one update per generation: ρ = 1 with gradient, TRL's `logp.detach()`).
    pub old_logp: Option<&'a [f32]>,
    /// Log-probs under the frozen reference model; required when `beta != 0`.
    pub ref_logp: Option<&'a [f32]>,
    /// One advantage per completion (`B` values).
    pub advantages: &'a [f32],
    /// 1 for completion tokens that count, 0 for padding (and masked tool output).
    pub mask: &'a [f32],
    /// Positions per completion (the padded length `T`).
    pub completion_len: usize,
    /// dapo/cispo denominator: active tokens of the whole generation batch (TRL's
    /// `num_items_in_batch`, already divided by processes and scaled for accumulation).
    /// `None` uses this micro-batch's active tokens.
    pub num_items_in_batch: Option<f64>,
    /// Truncated importance-sampling weights per token (TRL's `importance_sampling_ratio`
    /// with `vllm_importance_sampling_correction`: `min(exp(old_logp − sampler_logp), C)`
    /// when another engine sampled the completions). They scale the policy term of each
    /// token, not its KL term, and carry no gradient. `None`: all 1.
    pub is_ratio: Option<&'a [f32]>,
}

/// The loss of a micro-batch, its gradient with respect to every `logp`, and TRL's metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct LossOutput {
    /// The micro-batch's loss (policy term plus β·KL), weighted as `loss_type` says.
    pub loss: f32,
    /// `∂loss/∂logp`, same layout as [`LossInputs::logp`] (0 at masked positions).
    pub grad_logp: Vec<f32>,
    /// The metrics TRL logs for this loss evaluation.
    pub metrics: LossMetrics,
}

/// The loss and metrics without the gradient (which [`policy_loss_into`] writes in place).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossSummary {
    /// The micro-batch's loss, as in [`LossOutput::loss`].
    pub loss: f32,
    /// The metrics TRL logs for this loss evaluation.
    pub metrics: LossMetrics,
}

/// Computes the GRPO loss, `∂loss/∂logp` and the metrics. See the module docs for the math.
pub fn policy_loss(config: &GrpoConfig, inputs: &LossInputs<'_>) -> Result<LossOutput, GrpoError> {
    let mut grad = vec![0.0f32; inputs.logp.len()];
    let s = policy_loss_into(config, inputs, &mut grad)?;
    Ok(LossOutput {
        loss: s.loss,
        grad_logp: grad,
        metrics: s.metrics,
    })
}

/// [`policy_loss`] writing the gradient into `grad_logp` (length `B × completion_len`), so a
/// training step allocates nothing.
pub fn policy_loss_into(
    config: &GrpoConfig,
    inputs: &LossInputs<'_>,
    grad_logp: &mut [f32],
) -> Result<LossSummary, GrpoError> {
    config.validate()?;
    let t_len = inputs.completion_len;
    let b_len = inputs.advantages.len();
    let total_active = check_inputs(config, inputs, grad_logp.len())?;

    let p = Params::new(config);
    let num_seqs = b_len as f64;
    let items = match inputs.num_items_in_batch {
        Some(v) if !(v.is_finite() && v >= 0.0) => {
            return Err(GrpoError::NonFinite {
                tensor: "num_items_in_batch",
                index: 0,
                value: v as f32,
            });
        }
        Some(v) => v,
        None => total_active,
    };

    let mut acc = Accumulators::default();
    for b in 0..b_len {
        let row = b * t_len..(b + 1) * t_len;
        let lp = &inputs.logp[row.clone()];
        let old = inputs.old_logp.map(|o| &o[row.clone()]);
        let rf = inputs.ref_logp.map(|r| &r[row.clone()]);
        let is = inputs.is_ratio.map(|r| &r[row.clone()]);
        let m = &inputs.mask[row.clone()];
        let grad = &mut grad_logp[row];
        let adv = inputs.advantages[b] as f64;
        let n_b = count_active(m) as f64;

        // Aggregation weight of each active token of this sequence.
        let agg = match config.loss_type {
            LossType::Grpo | LossType::Sapo => 1.0 / (n_b.max(1.0) * num_seqs),
            LossType::Bnpo => 1.0 / total_active.max(1.0),
            LossType::DrGrpo => 1.0 / (num_seqs * config.max_completion_length as f64),
            LossType::Dapo | LossType::Cispo => 1.0 / items.max(1.0),
            LossType::Luspo => 1.0 / num_seqs,
        };
        let row_in = Row {
            lp,
            old,
            rf,
            is,
            m,
            adv,
            agg,
            n_b,
        };
        match config.importance_sampling_level {
            ImportanceSamplingLevel::Token => token_level(&p, &row_in, grad, &mut acc),
            ImportanceSamplingLevel::Sequence => sequence_level(&p, &row_in, grad, &mut acc),
        }
    }

    if !acc.loss.is_finite() {
        return Err(GrpoError::NonFinite {
            tensor: "loss",
            index: 0,
            value: acc.loss as f32,
        });
    }
    if let Some((i, g)) = first_non_finite(grad_logp) {
        return Err(GrpoError::NonFinite {
            tensor: "grad_logp",
            index: i,
            value: g,
        });
    }
    Ok(LossSummary {
        loss: acc.loss as f32,
        metrics: acc.metrics(config, total_active, num_seqs),
    })
}

/// Validates shapes and values; returns the number of active tokens.
fn check_inputs(config: &GrpoConfig, inputs: &LossInputs<'_>, grad_len: usize) -> Result<f64, GrpoError> {
    let b_len = inputs.advantages.len();
    if b_len == 0 {
        return Err(GrpoError::EmptyBatch {
            what: "no completions (advantages is empty)",
        });
    }
    if inputs.completion_len == 0 {
        return Err(GrpoError::EmptyBatch {
            what: "completion_len is 0",
        });
    }
    let expected = b_len
        .checked_mul(inputs.completion_len)
        .ok_or(GrpoError::LengthMismatch {
            tensor: "logp",
            expected: usize::MAX,
            actual: inputs.logp.len(),
        })?;
    let mut tensors: [(&'static str, Option<&[f32]>); 5] = [
        ("logp", Some(inputs.logp)),
        ("old_logp", inputs.old_logp),
        ("ref_logp", inputs.ref_logp),
        ("mask", Some(inputs.mask)),
        ("is_ratio", inputs.is_ratio),
    ];
    for (name, t) in &mut tensors {
        if let Some(t) = t {
            if t.len() != expected {
                return Err(GrpoError::LengthMismatch {
                    tensor: name,
                    expected,
                    actual: t.len(),
                });
            }
            if *name != "mask"
                && let Some((i, v)) = first_non_finite(t)
            {
                return Err(GrpoError::NonFinite {
                    tensor: name,
                    index: i,
                    value: v,
                });
            }
        }
    }
    if grad_len != expected {
        return Err(GrpoError::LengthMismatch {
            tensor: "grad_logp",
            expected,
            actual: grad_len,
        });
    }
    if let Some((i, v)) = first_non_finite(inputs.advantages) {
        return Err(GrpoError::NonFinite {
            tensor: "advantages",
            index: i,
            value: v,
        });
    }
    if config.beta != 0.0 && inputs.ref_logp.is_none() {
        return Err(GrpoError::MissingInput {
            tensor: "ref_logp",
            reason: "beta != 0 needs reference log-probs",
        });
    }
    // Branch-free scans (they vectorise); the slow path finds the culprit.
    if inputs.mask.iter().fold(false, |bad, &v| bad | (v != 0.0 && v != 1.0))
        && let Some((i, &v)) = inputs.mask.iter().enumerate().find(|(_, v)| **v != 0.0 && **v != 1.0)
    {
        return Err(GrpoError::InvalidMask { index: i, value: v });
    }
    Ok(count_active(inputs.mask) as f64)
}

/// Positions whose mask is 1 (the mask holds only 0 and 1).
fn count_active(mask: &[f32]) -> usize {
    mask.iter().map(|&v| usize::from(v != 0.0)).sum()
}

/// The first NaN or infinity of `t`, with its index.
fn first_non_finite(t: &[f32]) -> Option<(usize, f32)> {
    if t.iter().fold(false, |bad, v| bad | !v.is_finite()) {
        t.iter().copied().enumerate().find(|(_, v)| !v.is_finite())
    } else {
        None
    }
}

/// Config values resolved once.
struct Params {
    loss_type: LossType,
    lo: f64,
    hi: f64,
    eps_high: f64,
    delta: Option<f64>,
    beta: f64,
    bias_kl: bool,
    tau_pos: f64,
    tau_neg: f64,
}

impl Params {
    fn new(c: &GrpoConfig) -> Params {
        Params {
            loss_type: c.loss_type,
            lo: 1.0 - c.epsilon_low(),
            hi: 1.0 + c.epsilon_high(),
            eps_high: c.epsilon_high(),
            delta: c.delta,
            beta: c.beta,
            bias_kl: c.use_bias_correction_kl,
            tau_pos: c.sapo_temperature_pos,
            tau_neg: c.sapo_temperature_neg,
        }
    }
}

/// One sequence's slices and scalars.
struct Row<'a> {
    lp: &'a [f32],
    old: Option<&'a [f32]>,
    rf: Option<&'a [f32]>,
    /// Importance-sampling weight per token (see [`LossInputs::is_ratio`]).
    is: Option<&'a [f32]>,
    m: &'a [f32],
    adv: f64,
    agg: f64,
    n_b: f64,
}

/// The policy term at one ratio: `value + weight·logp`, its derivative with respect to ρ
/// (the constant `weight` carries no gradient), and which clip regions ρ falls in.
#[derive(Clone, Copy, Default)]
struct PolicyTerm {
    value: f64,
    d_rho: f64,
    weight: f64,
    low: bool,
    high: bool,
    cispo: bool,
}

#[inline(always)]
fn policy_term(p: &Params, rho: f64, adv: f64) -> PolicyTerm {
    match p.loss_type {
        LossType::Cispo => PolicyTerm {
            weight: -rho.min(p.eps_high) * adv,
            cispo: rho > p.eps_high && adv > 0.0,
            ..PolicyTerm::default()
        },
        LossType::Sapo => {
            let tau = if adv > 0.0 { p.tau_pos } else { p.tau_neg };
            let sig = 1.0 / (1.0 + libm::exp(-tau * (rho - 1.0)));
            PolicyTerm {
                value: -sig * 4.0 / tau * adv,
                d_rho: -4.0 * sig * (1.0 - sig) * adv,
                ..PolicyTerm::default()
            }
        }
        _ => {
            // torch.clamp(ρ, lo, hi) = min(max(ρ, lo), hi); its gradient passes for lo ≤ ρ ≤ hi.
            let clipped = rho.max(p.lo).min(p.hi);
            let d_clipped = if rho >= p.lo && rho <= p.hi { 1.0 } else { 0.0 };
            let (capped, d_capped) = match p.delta {
                Some(d) if rho > d => (d, 0.0),
                _ => (rho, 1.0),
            };
            let (v1, v2) = (capped * adv, clipped * adv);
            // torch.minimum: the smaller branch takes the gradient, a tie splits it.
            let (g1, g2) = if v1 < v2 {
                (1.0, 0.0)
            } else if v2 < v1 {
                (0.0, 1.0)
            } else {
                (0.5, 0.5)
            };
            PolicyTerm {
                value: -v1.min(v2),
                d_rho: -adv * (g1 * d_capped + g2 * d_clipped),
                weight: 0.0,
                low: capped < p.lo && adv < 0.0,
                high: capped > p.hi && adv > 0.0,
                cispo: false,
            }
        }
    }
}

/// `k3 = exp(ref − logp) − (ref − logp) − 1` and `∂k3/∂logp = 1 − exp(ref − logp)`.
#[inline(always)]
fn k3(lp: f64, rf: f64) -> (f64, f64) {
    let d = rf - lp;
    let e = libm::exp(d);
    (e - d - 1.0, 1.0 - e)
}

#[derive(Default)]
struct Accumulators {
    loss: f64,
    kl_sum: f64,
    low: f64,
    high: f64,
    region: f64,
    cispo: f64,
    low_min: Option<f64>,
    high_max: Option<f64>,
}

impl Accumulators {
    /// Per-sequence clip shares feed `low_min`/`high_max`; NaN shares (no tokens) are skipped.
    fn sequence_shares(&mut self, low: f64, high: f64) {
        if !low.is_nan() {
            self.low_min = Some(self.low_min.map_or(low, |v| v.min(low)));
        }
        if !high.is_nan() {
            self.high_max = Some(self.high_max.map_or(high, |v| v.max(high)));
        }
    }

    fn metrics(&self, c: &GrpoConfig, total_active: f64, num_seqs: f64) -> LossMetrics {
        // TRL's global_masked_mean: over active tokens, or over sequences at sequence level.
        let denom = match c.importance_sampling_level {
            ImportanceSamplingLevel::Token => total_active.max(1.0),
            ImportanceSamplingLevel::Sequence => num_seqs.max(1.0),
        };
        let mut m = LossMetrics::default();
        if c.beta != 0.0 {
            m.kl = Some((self.kl_sum / total_active.max(1.0)) as f32);
        }
        if c.loss_type.is_clipped_surrogate() {
            m.clip_ratio_low_mean = Some((self.low / denom) as f32);
            m.clip_ratio_high_mean = Some((self.high / denom) as f32);
            m.clip_ratio_region_mean = Some((self.region / denom) as f32);
            m.clip_ratio_low_min = self.low_min.map(|v| v as f32);
            m.clip_ratio_high_max = self.high_max.map(|v| v as f32);
        }
        if c.loss_type == LossType::Cispo {
            m.cispo_clip_ratio = Some((self.cispo / denom) as f32);
        }
        m
    }
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// One ratio per token: every quantity is local to its position.
fn token_level(p: &Params, r: &Row<'_>, grad: &mut [f32], acc: &mut Accumulators) {
    // Local sums keep the hot loop in registers.
    let (mut loss, mut kl_sum, mut low, mut high, mut region, mut cispo) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for t in 0..r.lp.len() {
        if r.m[t] == 0.0 {
            // Padding: no loss, no gradient, no metric (the mask is checked to be 0 or 1).
            grad[t] = 0.0;
            continue;
        }
        let lp = r.lp[t] as f64;
        let s = r.old.map_or(0.0, |o| lp - o[t] as f64);
        let rho = libm::exp(s);
        let pt = policy_term(p, rho, r.adv);
        let w_is = r.is.map_or(1.0, |w| w[t] as f64);
        let mut value = (pt.value + pt.weight * lp) * w_is;
        // ∂ρ/∂logp = ρ at token level.
        let mut d = (pt.d_rho * rho + pt.weight) * w_is;
        if p.beta != 0.0
            && let Some(rf) = r.rf
        {
            let (k, dk) = k3(lp, rf[t] as f64);
            let (kl, dkl) = if p.bias_kl {
                (k * rho, dk * rho + k * rho)
            } else {
                (k, dk)
            };
            value += p.beta * kl;
            d += p.beta * dkl;
            kl_sum += kl;
        }
        loss += r.agg * value;
        grad[t] = (r.agg * d) as f32;
        low += flag(pt.low);
        high += flag(pt.high);
        region += flag(pt.low || pt.high);
        cispo += flag(pt.cispo);
    }
    acc.loss += loss;
    acc.kl_sum += kl_sum;
    acc.low += low;
    acc.high += high;
    acc.region += region;
    acc.cispo += cispo;
    // TRL's masked_seq_mean divides by the unclamped token count: NaN for an empty sequence.
    acc.sequence_shares(low / r.n_b, high / r.n_b);
}

/// One ratio per sequence from the masked mean log-ratio, shared by its tokens.
fn sequence_level(p: &Params, r: &Row<'_>, grad: &mut [f32], acc: &mut Accumulators) {
    let n = r.n_b.max(1.0);
    let s = match r.old {
        Some(o) => {
            r.lp.iter()
                .zip(o)
                .zip(r.m)
                .map(|((&l, &o), &m)| (l as f64 - o as f64) * m as f64)
                .sum::<f64>()
                / n
        }
        None => 0.0,
    };
    let rho = libm::exp(s);
    let pt = policy_term(p, rho, r.adv);
    let kl = |t: usize| match r.rf {
        Some(rf) if p.beta != 0.0 => Some(k3(r.lp[t] as f64, rf[t] as f64)),
        _ => None,
    };
    // First pass: the loss, and ∂loss/∂s gathered over the tokens (the shared policy value,
    // and the bias-corrected KL, depend on every token through s).
    // Each token's share of the policy term: its aggregation weight times its
    // importance-sampling weight (TRL broadcasts the (B, 1) term over the (B, T) ratios).
    let w_is = |t: usize| r.is.map_or(1.0, |w| w[t] as f64);
    let w_sum = match r.is {
        None => r.n_b * r.agg,
        Some(_) => (0..r.lp.len()).map(|t| r.m[t] as f64 * w_is(t)).sum::<f64>() * r.agg,
    };
    let mut loss = w_sum * pt.value;
    let mut d_s = w_sum * pt.d_rho * rho;
    for t in 0..r.lp.len() {
        if r.m[t] == 0.0 {
            continue;
        }
        let mt = r.m[t] as f64;
        let w = mt * r.agg;
        let mut value = pt.weight * w_is(t) * r.lp[t] as f64;
        if let Some((k, _)) = kl(t) {
            let k = if p.bias_kl { k * rho } else { k };
            value += p.beta * k;
            acc.kl_sum += mt * k;
            if p.bias_kl {
                d_s += w * p.beta * k;
            }
        }
        loss += w * value;
    }
    // Second pass: each token's direct gradient plus its share of ∂loss/∂s, ∂s/∂logp_t = m_t / n.
    for (t, g) in grad.iter_mut().enumerate() {
        if r.m[t] == 0.0 {
            *g = 0.0;
            continue;
        }
        let mt = r.m[t] as f64;
        let mut d = pt.weight * w_is(t);
        if let Some((_, dk)) = kl(t) {
            d += p.beta * if p.bias_kl { dk * rho } else { dk };
        }
        *g = (mt * r.agg * d + d_s * mt / n) as f32;
    }
    acc.loss += loss;
    acc.low += flag(pt.low);
    acc.high += flag(pt.high);
    acc.region += flag(pt.low || pt.high);
    acc.cispo += flag(pt.cispo);
    acc.sequence_shares(flag(pt.low), flag(pt.high));
}
