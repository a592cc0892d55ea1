//! Element-wise arithmetic and whole-tensor reductions: `Fill`, broadcast `Add`/`Mul`,
//! `Scale`, `SumAll`, `ReduceToShape` (the gradient of a broadcast operand), and the
//! optimizer-side `axpby` and `sum_squares`. Sums over many elements add fixed-size
//! chunks in f32 and the chunks in f64, so they are accurate and independent of threads.

use r1_core::BackendError;

use super::{Ctx, size_error};
use crate::simd::{Simd, SimdTask, math};

/// Elements per chunk of the f64-combined reductions.
const SUM_CHUNK: usize = 4096;

/// `out ← value`.
pub(crate) fn fill(out: &mut [f32], value: f32) {
    out.fill(value);
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Binary {
    Add,
    Mul,
}

/// `out[r, j] = x[r, j] ∘ y[j]` for rows of `y.len()` (one row: same shapes; `y` of one
/// element: a scalar operand).
struct BroadcastRows<'a> {
    op: Binary,
    x: &'a [f32],
    y: &'a [f32],
    out: &'a mut [f32],
}

impl SimdTask for BroadcastRows<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let BroadcastRows { op, x, y, out } = self;
        if y.len() == 1 {
            let c = s.splat(y[0]);
            match op {
                Binary::Add => math::lanes!(s, out, |v = x| s.add(v, c)),
                Binary::Mul => math::lanes!(s, out, |v = x| s.mul(v, c)),
            }
            return;
        }
        for (xr, or) in x.chunks_exact(y.len()).zip(out.chunks_exact_mut(y.len())) {
            match op {
                Binary::Add => math::lanes!(s, or, |a = xr, b = y| s.add(a, b)),
                Binary::Mul => math::lanes!(s, or, |a = xr, b = y| s.mul(a, b)),
            }
        }
    }
}

/// `out = x ∘ y` where `y` repeats over the leading elements of `x` (its shape is a
/// suffix of `x`'s).
pub(crate) fn broadcast(ctx: Ctx<'_>, op: Binary, x: &[f32], y: &[f32], out: &mut [f32]) -> Result<(), BackendError> {
    let name = match op {
        Binary::Add => "add",
        Binary::Mul => "mul",
    };
    let (nx, ny) = (x.len(), y.len());
    if out.len() != nx || (nx > 0 && (ny == 0 || nx % ny != 0)) {
        return Err(size_error(
            name,
            format!(
                "{nx} elements with an operand of {ny} repeating into {} outputs",
                out.len()
            ),
        ));
    }
    if nx == 0 {
        return Ok(());
    }
    if ny == nx {
        // Same shapes: cut anywhere.
        ctx.threads.for_rows(out, 1, 1, |i, o| {
            let n = o.len();
            ctx.isa.run(BroadcastRows {
                op,
                x: &x[i..i + n],
                y: &y[i..i + n],
                out: o,
            });
        });
    } else if ny == 1 {
        ctx.threads.for_rows(out, 1, 1, |i, o| {
            let n = o.len();
            ctx.isa.run(BroadcastRows {
                op,
                x: &x[i..i + n],
                y,
                out: o,
            });
        });
    } else {
        ctx.threads.for_rows(out, ny, ny, |r, o| {
            let n = o.len();
            ctx.isa.run(BroadcastRows {
                op,
                x: &x[r * ny..r * ny + n],
                y,
                out: o,
            });
        });
    }
    Ok(())
}

struct ScaleTask<'a> {
    factor: f32,
    x: &'a [f32],
    out: &'a mut [f32],
}

impl SimdTask for ScaleTask<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let c = s.splat(self.factor);
        let (x, out) = (self.x, self.out);
        math::lanes!(s, out, |v = x| s.mul(v, c));
    }
}

/// `out = x · mask / (1 − p)` with the mask of `r1_core::graph::dropout_keeps` (forward and
/// backward alike).
pub(crate) fn dropout(
    ctx: Ctx<'_>,
    p: f32,
    salt: u32,
    seed: u32,
    x: &[f32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    if x.len() != out.len() {
        return Err(size_error(
            "dropout",
            format!("{} inputs for {} outputs", x.len(), out.len()),
        ));
    }
    let keep_scale = 1.0 / (1.0 - p);
    ctx.threads.for_rows(out, 1, 8, |i, o| {
        for (j, (y, &v)) in o.iter_mut().zip(&x[i..]).enumerate() {
            let kept = r1_core::graph::dropout_keeps(seed, salt, (i + j) as u64, p);
            *y = if kept { v * keep_scale } else { 0.0 };
        }
    });
    Ok(())
}

/// `out = factor · x`.
pub(crate) fn scale(ctx: Ctx<'_>, factor: f32, x: &[f32], out: &mut [f32]) -> Result<(), BackendError> {
    if x.len() != out.len() {
        return Err(size_error(
            "scale",
            format!("{} inputs for {} outputs", x.len(), out.len()),
        ));
    }
    ctx.threads.for_rows(out, 1, 1, |i, o| {
        let n = o.len();
        ctx.isa.run(ScaleTask {
            factor,
            x: &x[i..i + n],
            out: o,
        });
    });
    Ok(())
}

#[derive(Clone, Copy)]
enum SumKind {
    Plain,
    Squares,
}

struct ChunkSum<'a> {
    kind: SumKind,
    x: &'a [f32],
}

impl SimdTask for ChunkSum<'_> {
    type Output = f32;
    #[inline(always)]
    fn run<S: Simd>(self, s: S) -> f32 {
        match self.kind {
            SumKind::Plain => math::sum(s, self.x),
            SumKind::Squares => math::sum_sq(s, self.x),
        }
    }
}

fn chunked_sum(ctx: Ctx<'_>, kind: SumKind, x: &[f32]) -> f64 {
    let chunks = x.len().div_ceil(SUM_CHUNK);
    let partial = ctx.threads.map_tasks(chunks, SUM_CHUNK, |c| {
        let part = &x[c * SUM_CHUNK..((c + 1) * SUM_CHUNK).min(x.len())];
        ctx.isa.run(ChunkSum { kind, x: part }) as f64
    });
    partial.iter().sum()
}

/// `Σ x`, into a scalar.
pub(crate) fn sum_all(ctx: Ctx<'_>, x: &[f32], out: &mut [f32]) -> Result<(), BackendError> {
    if out.len() != 1 {
        return Err(size_error(
            "sum_all",
            format!("output has {} elements, expected a scalar", out.len()),
        ));
    }
    out[0] = chunked_sum(ctx, SumKind::Plain, x) as f32;
    Ok(())
}

/// `Σ x²` accumulated in f64 (gradient norms).
pub(crate) fn sum_squares(ctx: Ctx<'_>, x: &[f32]) -> f64 {
    chunked_sum(ctx, SumKind::Squares, x)
}

struct AccumulateRows<'a> {
    x: &'a [f32],
    out: &'a mut [f32],
    /// Distance between consecutive rows of `x`.
    stride: usize,
}

impl SimdTask for AccumulateRows<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let AccumulateRows { x, out, stride } = self;
        let n = out.len();
        out.copy_from_slice(&x[..n]);
        for row in x.chunks(stride).skip(1) {
            math::lanes!(s, out <- |a, b = row| s.add(a, b));
        }
    }
}

/// `out[j] = Σ_r x[r·n + j]` with `n = out.len()`: sums `x` over its leading dims.
pub(crate) fn reduce_to_shape(ctx: Ctx<'_>, x: &[f32], out: &mut [f32]) -> Result<(), BackendError> {
    let n = out.len();
    if n == 0 || !x.len().is_multiple_of(n) {
        return Err(size_error(
            "reduce_to_shape",
            format!("{} elements do not fold into {n}", x.len()),
        ));
    }
    if n == 1 {
        out[0] = chunked_sum(ctx, SumKind::Plain, x) as f32;
        return Ok(());
    }
    let rows = x.len() / n;
    // Columns are independent: each thread sums all rows of its block of columns, in row
    // order (so the result does not depend on the split).
    ctx.threads.for_rows(out, 1, rows, |j, o| {
        ctx.isa.run(AccumulateRows {
            x: &x[j..],
            out: o,
            stride: n,
        });
    });
    Ok(())
}

struct Axpby<'a> {
    /// `Some((a, x))`, or `None` for `a = 0` (x unread).
    ax: Option<(f32, &'a [f32])>,
    b: f32,
    y: &'a mut [f32],
}

impl SimdTask for Axpby<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Axpby { ax, b, y } = self;
        let bv = s.splat(b);
        match ax {
            // `y` is not read when b = 0: zeroing must clear NaN and infinities too.
            None if b == 0.0 => y.fill(0.0),
            None => math::scale_in_place(s, y, b),
            Some((a, x)) if b == 0.0 => {
                let av = s.splat(a);
                math::lanes!(s, y, |xv = x| s.mul(av, xv));
            }
            Some((a, x)) => {
                let av = s.splat(a);
                math::lanes!(s, y <- |yv, xv = x| s.mul_add(av, xv, s.mul(bv, yv)));
            }
        }
    }
}

/// `y ← a·x + b·y` with `ax = Some((a, x))`, or `y ← b·y` with `None`; with `b = 0`,
/// `y`'s old contents are never read.
pub(crate) fn axpby(ctx: Ctx<'_>, y: &mut [f32], ax: Option<(f32, &[f32])>, b: f32) -> Result<(), BackendError> {
    if let Some((_, x)) = ax
        && x.len() != y.len()
    {
        return Err(size_error(
            "axpby",
            format!("x has {} elements, y has {}", x.len(), y.len()),
        ));
    }
    ctx.threads.for_rows(y, 1, 2, |i, o| {
        let n = o.len();
        let ax = ax.map(|(a, x)| (a, &x[i..i + n]));
        ctx.isa.run(Axpby { ax, b, y: o });
    });
    Ok(())
}
