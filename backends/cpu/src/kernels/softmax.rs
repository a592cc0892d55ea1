//! Row-wise softmax, log-softmax and entropy over the last dim, and the softmax and
//! log-softmax backward kernels.
//!
//! `softmax(x)_i = e^{x_i − m} / Σ_j e^{x_j − m}` with `m = max x` (stable);
//! `log_softmax(x)_i = x_i − m − ln Σ_j e^{x_j − m}`;
//! `entropy = −Σ p log p = ln s − Σ_j e^{z_j} z_j / s` with `z = x − m`, `s = Σ e^{z}`;
//! softmax backward `y·(dy − Σ dy·y)`; log-softmax backward `dy − e^{y}·Σ dy`.

use r1_core::BackendError;

use super::{Ctx, size_error};
use crate::simd::{Simd, SimdTask, math};

#[derive(Clone, Copy)]
pub(crate) enum RowOp {
    Softmax,
    LogSoftmax,
    SoftmaxBackward,
    LogSoftmaxBackward,
}

impl RowOp {
    fn name(self) -> &'static str {
        match self {
            RowOp::Softmax => "softmax",
            RowOp::LogSoftmax => "log_softmax",
            RowOp::SoftmaxBackward => "softmax_backward",
            RowOp::LogSoftmaxBackward => "log_softmax_backward",
        }
    }
}

struct Rows<'a> {
    op: RowOp,
    cols: usize,
    /// `x` (forward) or the forward output `y` (backward).
    x: &'a [f32],
    /// `dy` (backward only).
    dy: &'a [f32],
    out: &'a mut [f32],
}

/// Softmax of one row into `y`.
#[inline(always)]
pub(crate) fn softmax_row<S: Simd>(s: S, x: &[f32], y: &mut [f32]) {
    let m = math::max(s, x);
    let total = math::exp_store_sum(s, x, m, y);
    math::scale_in_place(s, y, 1.0 / total);
}

/// `ln Σ e^{x}` of one row, computed stably.
#[inline(always)]
pub(crate) fn log_sum_exp<S: Simd>(s: S, x: &[f32]) -> f32 {
    let m = math::max(s, x);
    m + math::sum_exp(s, x, m).ln()
}

impl SimdTask for Rows<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Rows { op, cols, x, dy, out } = self;
        for (r, (xr, or)) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)).enumerate() {
            match op {
                RowOp::Softmax => softmax_row(s, xr, or),
                RowOp::LogSoftmax => {
                    let lse = s.splat(log_sum_exp(s, xr));
                    math::lanes!(s, or, |v = xr| s.sub(v, lse));
                }
                RowOp::SoftmaxBackward => {
                    let dyr = &dy[r * cols..(r + 1) * cols];
                    let d = s.splat(math::dot(s, xr, dyr));
                    math::lanes!(s, or, |yv = xr, dv = dyr| s.mul(yv, s.sub(dv, d)));
                }
                RowOp::LogSoftmaxBackward => {
                    let dyr = &dy[r * cols..(r + 1) * cols];
                    let total = s.splat(math::sum(s, dyr));
                    math::lanes!(s, or, |yv = xr, dv = dyr| s.sub(dv, s.mul(math::exp(s, yv), total)));
                }
            }
        }
    }
}

/// Applies `op` to every row of `cols` (`dy` is empty for the forward ops).
pub(crate) fn rows(
    ctx: Ctx<'_>,
    op: RowOp,
    cols: usize,
    x: &[f32],
    dy: &[f32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    let backward = matches!(op, RowOp::SoftmaxBackward | RowOp::LogSoftmaxBackward);
    if cols == 0 || !x.len().is_multiple_of(cols) || out.len() != x.len() || (backward && dy.len() != x.len()) {
        return Err(size_error(
            op.name(),
            format!("rows of {cols}: x {}, dy {}, output {}", x.len(), dy.len(), out.len()),
        ));
    }
    ctx.threads.for_rows(out, cols, 6 * cols, |r0, o| {
        let n = o.len();
        let dy = if backward { &dy[r0 * cols..r0 * cols + n] } else { dy };
        ctx.isa.run(Rows {
            op,
            cols,
            x: &x[r0 * cols..r0 * cols + n],
            dy,
            out: o,
        });
    });
    Ok(())
}

struct EntropyRows<'a> {
    cols: usize,
    x: &'a [f32],
    out: &'a mut [f32],
}

impl SimdTask for EntropyRows<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        for (xr, h) in self.x.chunks_exact(self.cols).zip(self.out.iter_mut()) {
            let m = math::max(s, xr);
            let mv = s.splat(m);
            let floor = s.splat(-104.0);
            let (mut total, mut weighted) = (s.splat(0.0), s.splat(0.0));
            let mut chunks = xr.chunks_exact(S::LANES);
            for c in &mut chunks {
                let z = s.sub(s.load(c), mv);
                let e = math::exp(s, z);
                total = s.add(total, e);
                // A −inf logit has e = 0; clamping z keeps 0·(−inf) from making a NaN.
                weighted = s.mul_add(e, s.max(floor, z), weighted);
            }
            let rest = chunks.remainder();
            if !rest.is_empty() {
                // Missing lanes: z = −inf gives e = 0; weight them by z = 0, not −inf.
                let z = s.sub(s.load_partial(rest, f32::NEG_INFINITY), mv);
                let e = math::exp(s, z);
                let zf = s.sub(s.load_partial(rest, m), mv);
                total = s.add(total, e);
                weighted = s.mul_add(e, s.max(floor, zf), weighted);
            }
            let (total, weighted) = (s.reduce_sum(total), s.reduce_sum(weighted));
            *h = total.ln() - weighted / total;
        }
    }
}

/// `out[r] = entropy(softmax(x[r, :]))`.
pub(crate) fn entropy(ctx: Ctx<'_>, cols: usize, x: &[f32], out: &mut [f32]) -> Result<(), BackendError> {
    if cols == 0 || x.len() != out.len() * cols {
        return Err(size_error(
            "entropy",
            format!("{} logits in rows of {cols} for {} rows", x.len(), out.len()),
        ));
    }
    ctx.threads.for_rows(out, 1, 6 * cols, |r0, o| {
        let n = o.len();
        ctx.isa.run(EntropyRows {
            cols,
            x: &x[r0 * cols..(r0 + n) * cols],
            out: o,
        });
    });
    Ok(())
}
