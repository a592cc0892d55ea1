//! RMSNorm (HF `Qwen2RMSNorm` / `LlamaRMSNorm`) and its backward.
//!
//! Forward, per row of `D`: `r = 1/sqrt(mean(x²) + eps)`, `y = (x·r)·w`.
//! Backward: with `c = Σ_j w_j·dy_j·x_j`,
//! `dx_i = r·w_i·dy_i − x_i·r³·c/D` and `dw_j = Σ_rows dy_j·x_j·r`.
//! `dw` sums per-chunk partials (fixed chunks of rows) so it does not depend on threads.

use r1_core::BackendError;

use super::{Ctx, size_error};
use crate::simd::{Simd, SimdTask, math};

/// Rows per partial `dw` of the backward pass.
const ROWS_PER_PARTIAL: usize = 32;

struct Forward<'a> {
    eps: f32,
    x: &'a [f32],
    w: &'a [f32],
    out: &'a mut [f32],
}

impl SimdTask for Forward<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let d = self.w.len();
        for (x, y) in self.x.chunks_exact(d).zip(self.out.chunks_exact_mut(d)) {
            let r = 1.0 / (math::sum_sq(s, x) / d as f32 + self.eps).sqrt();
            let rv = s.splat(r);
            let w = self.w;
            math::lanes!(s, y, |xv = x, wv = w| s.mul(s.mul(xv, rv), wv));
        }
    }
}

/// `out = rms_norm(x) · w` per row of `w.len()`.
pub(crate) fn rms_norm(ctx: Ctx<'_>, eps: f32, x: &[f32], w: &[f32], out: &mut [f32]) -> Result<(), BackendError> {
    let d = w.len();
    if d == 0 || !x.len().is_multiple_of(d) || out.len() != x.len() {
        return Err(size_error(
            "rms_norm",
            format!("x of {} elements, weight of {d}, output of {}", x.len(), out.len()),
        ));
    }
    ctx.threads.for_rows(out, d, 3 * d, |r, o| {
        ctx.isa.run(Forward {
            eps,
            x: &x[r * d..r * d + o.len()],
            w,
            out: o,
        });
    });
    Ok(())
}

struct Backward<'a> {
    eps: f32,
    x: &'a [f32],
    w: &'a [f32],
    dy: &'a [f32],
    dx: &'a mut [f32],
    dw: &'a mut [f32],
}

impl SimdTask for Backward<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Backward { eps, x, w, dy, dx, dw } = self;
        let d = w.len();
        dw.fill(0.0);
        for ((x, dy), dx) in x.chunks_exact(d).zip(dy.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
            let r = 1.0 / (math::sum_sq(s, x) / d as f32 + eps).sqrt();
            let c = math::dot3(s, w, dy, x);
            let rv = s.splat(r);
            let kv = s.splat(r * r * r * c / d as f32);
            // dx = r·w·dy − k·x
            math::lanes!(s, dx, |wv = w, dyv = dy, xv = x| s.sub(s.mul(rv, s.mul(wv, dyv)), s.mul(kv, xv)));
            // dw += r·dy·x
            math::lanes!(s, dw <- |acc, dyv = dy, xv = x| s.mul_add(s.mul(rv, dyv), xv, acc));
        }
    }
}

/// `out = [dx (x.len()) | dw (w.len())]`.
pub(crate) fn rms_norm_backward(
    ctx: Ctx<'_>,
    eps: f32,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    let d = w.len();
    if d == 0 || !x.len().is_multiple_of(d) || dy.len() != x.len() || out.len() != x.len() + d {
        return Err(size_error(
            "rms_norm_backward",
            format!(
                "x {}, weight {d}, dy {}, packed output {}",
                x.len(),
                dy.len(),
                out.len()
            ),
        ));
    }
    let (dx, dw) = out.split_at_mut(x.len());
    let partials = ctx
        .threads
        .map_row_chunks(dx, d, ROWS_PER_PARTIAL, 6 * d, |_, r0, dxc| {
            let n = dxc.len();
            let mut part = vec![0.0f32; d];
            ctx.isa.run(Backward {
                eps,
                x: &x[r0 * d..r0 * d + n],
                w,
                dy: &dy[r0 * d..r0 * d + n],
                dx: dxc,
                dw: &mut part,
            });
            part
        });
    dw.fill(0.0);
    for p in &partials {
        for (a, b) in dw.iter_mut().zip(p) {
            *a += b;
        }
    }
    Ok(())
}
