//! Chosen-token ops over logits rows of `V`: gather/scatter of the last dim, the chosen
//! token's log-prob (`x[t] − ln Σ e^{x}`, without materialising the log-softmax), and
//! weighted cross-entropy with an ignore mask, each with its backward:
//! `∂ logp_t / ∂x = onehot(t) − softmax(x)`; `∂ CE / ∂x_i = w_i·(softmax(x_i) − onehot(t_i))`.
//! Ids come from outside: every one is checked before any work.

use r1_core::BackendError;

use super::softmax::{log_sum_exp, softmax_row};
use super::{Ctx, check_ids, size_error};
use crate::simd::{Simd, SimdTask, math};

/// Rows per partial sum of the cross-entropy (fixed, so the sum ignores thread count).
const CE_ROWS_PER_PARTIAL: usize = 16;

fn check_rows(op: &'static str, logits: usize, vocab: usize, rows: usize) -> Result<(), BackendError> {
    if vocab == 0 || logits != rows * vocab {
        return Err(size_error(op, format!("{logits} logits for {rows} rows of {vocab}")));
    }
    Ok(())
}

/// `out[r] = x[r, idx[r]]`.
pub(crate) fn gather_last_dim(vocab: usize, x: &[f32], idx: &[i32], out: &mut [f32]) -> Result<(), BackendError> {
    check_rows("gather_last_dim", x.len(), vocab, idx.len())?;
    if out.len() != idx.len() {
        return Err(size_error(
            "gather_last_dim",
            format!("{} outputs for {} indices", out.len(), idx.len()),
        ));
    }
    check_ids("gather_last_dim", idx, vocab, false)?;
    for (r, (o, &t)) in out.iter_mut().zip(idx).enumerate() {
        *o = x[r * vocab + t as usize];
    }
    Ok(())
}

/// `out[r, :] = 0` except `out[r, idx[r]] = dy[r]`.
pub(crate) fn scatter_last_dim(vocab: usize, idx: &[i32], dy: &[f32], out: &mut [f32]) -> Result<(), BackendError> {
    check_rows("scatter_last_dim", out.len(), vocab, idx.len())?;
    if dy.len() != idx.len() {
        return Err(size_error(
            "scatter_last_dim",
            format!("{} gradients for {} indices", dy.len(), idx.len()),
        ));
    }
    check_ids("scatter_last_dim", idx, vocab, false)?;
    out.fill(0.0);
    for (r, (&g, &t)) in dy.iter().zip(idx).enumerate() {
        out[r * vocab + t as usize] = g;
    }
    Ok(())
}

struct LogProbRows<'a> {
    vocab: usize,
    x: &'a [f32],
    targets: &'a [i32],
    out: &'a mut [f32],
}

impl SimdTask for LogProbRows<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        for (r, (o, &t)) in self.out.iter_mut().zip(self.targets).enumerate() {
            let row = &self.x[r * self.vocab..(r + 1) * self.vocab];
            *o = row[t as usize] - log_sum_exp(s, row);
        }
    }
}

/// `out[r] = log_softmax(x[r, :])[targets[r]]`.
pub(crate) fn token_log_probs(
    ctx: Ctx<'_>,
    vocab: usize,
    x: &[f32],
    targets: &[i32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    check_rows("token_log_probs", x.len(), vocab, targets.len())?;
    if out.len() != targets.len() {
        return Err(size_error(
            "token_log_probs",
            format!("{} outputs for {} targets", out.len(), targets.len()),
        ));
    }
    check_ids("token_log_probs", targets, vocab, false)?;
    ctx.threads.for_rows(out, 1, 4 * vocab, |r0, o| {
        let n = o.len();
        ctx.isa.run(LogProbRows {
            vocab,
            x: &x[r0 * vocab..(r0 + n) * vocab],
            targets: &targets[r0..r0 + n],
            out: o,
        });
    });
    Ok(())
}

/// Rows of `coef[r] · (softmax(x_r) − onehot(t_r))`; a row whose target is negative is
/// zero. Token log-prob backward uses `coef = −dy[r]`, cross-entropy `dy·w[r]`.
struct SoftmaxMinusOnehot<'a> {
    vocab: usize,
    x: &'a [f32],
    targets: &'a [i32],
    coef: &'a dyn Fn(usize) -> f32,
    first_row: usize,
    out: &'a mut [f32],
}

impl SimdTask for SoftmaxMinusOnehot<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let v = self.vocab;
        for (r, (or, &t)) in self.out.chunks_exact_mut(v).zip(self.targets).enumerate() {
            if t < 0 {
                or.fill(0.0);
                continue;
            }
            let c = (self.coef)(self.first_row + r);
            softmax_row(s, &self.x[r * v..(r + 1) * v], or);
            math::scale_in_place(s, or, c);
            or[t as usize] -= c;
        }
    }
}

/// `out[r, :] = dy[r] · (onehot(targets[r]) − softmax(x[r, :]))`.
pub(crate) fn token_log_probs_backward(
    ctx: Ctx<'_>,
    vocab: usize,
    x: &[f32],
    targets: &[i32],
    dy: &[f32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    check_rows("token_log_probs_backward", x.len(), vocab, targets.len())?;
    if dy.len() != targets.len() || out.len() != x.len() {
        return Err(size_error(
            "token_log_probs_backward",
            format!("dy {} and output {} for {} rows", dy.len(), out.len(), targets.len()),
        ));
    }
    check_ids("token_log_probs_backward", targets, vocab, false)?;
    let coef = |r: usize| -dy[r];
    ctx.threads.for_rows(out, vocab, 5 * vocab, |r0, o| {
        let n = o.len() / vocab;
        ctx.isa.run(SoftmaxMinusOnehot {
            vocab,
            x: &x[r0 * vocab..(r0 + n) * vocab],
            targets: &targets[r0..r0 + n],
            coef: &coef,
            first_row: r0,
            out: o,
        });
    });
    Ok(())
}

struct CrossEntropyRows<'a> {
    vocab: usize,
    x: &'a [f32],
    targets: &'a [i32],
    weights: &'a [f32],
}

impl SimdTask for CrossEntropyRows<'_> {
    type Output = f64;
    #[inline(always)]
    fn run<S: Simd>(self, s: S) -> f64 {
        let mut total = 0.0f64;
        for (r, (&t, &w)) in self.targets.iter().zip(self.weights).enumerate() {
            if t < 0 {
                continue;
            }
            let row = &self.x[r * self.vocab..(r + 1) * self.vocab];
            total += w as f64 * (log_sum_exp(s, row) - row[t as usize]) as f64;
        }
        total
    }
}

fn check_cross_entropy(
    op: &'static str,
    vocab: usize,
    x: &[f32],
    targets: &[i32],
    weights: &[f32],
) -> Result<(), BackendError> {
    check_rows(op, x.len(), vocab, targets.len())?;
    if weights.len() != targets.len() {
        return Err(size_error(
            op,
            format!("{} weights for {} targets", weights.len(), targets.len()),
        ));
    }
    check_ids(op, targets, vocab, true)
}

/// `out = Σ_{r: t_r ≥ 0} w_r · (−log_softmax(x_r)[t_r])`.
pub(crate) fn cross_entropy(
    ctx: Ctx<'_>,
    vocab: usize,
    x: &[f32],
    targets: &[i32],
    weights: &[f32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    check_cross_entropy("cross_entropy", vocab, x, targets, weights)?;
    if out.len() != 1 {
        return Err(size_error(
            "cross_entropy",
            format!("output of {} elements, expected a scalar", out.len()),
        ));
    }
    let rows = targets.len();
    let chunks = rows.div_ceil(CE_ROWS_PER_PARTIAL);
    let partials = ctx.threads.map_tasks(chunks, CE_ROWS_PER_PARTIAL * 4 * vocab, |c| {
        let r0 = c * CE_ROWS_PER_PARTIAL;
        let r1 = (r0 + CE_ROWS_PER_PARTIAL).min(rows);
        ctx.isa.run(CrossEntropyRows {
            vocab,
            x: &x[r0 * vocab..r1 * vocab],
            targets: &targets[r0..r1],
            weights: &weights[r0..r1],
        })
    });
    out[0] = partials.iter().sum::<f64>() as f32;
    Ok(())
}

/// `out[r, :] = dy · w_r · (softmax(x_r) − onehot(t_r))`, zero on ignored rows.
pub(crate) fn cross_entropy_backward(
    ctx: Ctx<'_>,
    vocab: usize,
    x: &[f32],
    targets: &[i32],
    weights: &[f32],
    dy: &[f32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    check_cross_entropy("cross_entropy_backward", vocab, x, targets, weights)?;
    if dy.len() != 1 || out.len() != x.len() {
        return Err(size_error(
            "cross_entropy_backward",
            format!(
                "dy of {} elements, output {} for {} logits",
                dy.len(),
                out.len(),
                x.len()
            ),
        ));
    }
    let g = dy[0];
    let coef = |r: usize| g * weights[r];
    ctx.threads.for_rows(out, vocab, 5 * vocab, |r0, o| {
        let n = o.len() / vocab;
        ctx.isa.run(SoftmaxMinusOnehot {
            vocab,
            x: &x[r0 * vocab..(r0 + n) * vocab],
            targets: &targets[r0..r0 + n],
            coef: &coef,
            first_row: r0,
            out: o,
        });
    });
    Ok(())
}
