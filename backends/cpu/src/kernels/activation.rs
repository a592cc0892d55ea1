//! SiLU and SwiGLU (the Llama/Qwen2 MLP gate) with their backward kernels.
//!
//! `silu(x) = x·σ(x) = x / (1 + e^{−x})`, `silu'(x) = σ(x)·(1 + x·(1 − σ(x)))`;
//! `swiglu(g, u) = silu(g)·u`, so `∂/∂g = dy·u·silu'(g)` and `∂/∂u = dy·silu(g)`.

use r1_core::BackendError;

use super::{Ctx, size_error};
use crate::simd::{Simd, SimdTask, math};

#[derive(Clone, Copy)]
enum Kind {
    Silu,
    SiluBackward,
    SwiGlu,
    SwiGluBackward,
}

/// One chunk of an activation kernel; unused operands are empty.
struct Act<'a> {
    kind: Kind,
    a: &'a [f32],
    b: &'a [f32],
    c: &'a [f32],
    out: &'a mut [f32],
    /// Second output (`dup` of SwiGLU's backward).
    out2: &'a mut [f32],
}

impl SimdTask for Act<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Act {
            kind,
            a,
            b,
            c,
            out,
            out2,
        } = self;
        match kind {
            Kind::Silu => math::lanes!(s, out, |x = a| silu_v(s, x)),
            Kind::SiluBackward => math::lanes!(s, out, |x = a, dy = b| s.mul(dy, silu_grad_v(s, x))),
            Kind::SwiGlu => math::lanes!(s, out, |g = a, u = b| s.mul(silu_v(s, g), u)),
            Kind::SwiGluBackward => {
                math::lanes!(s, out, |g = a, u = b, dy = c| s.mul(s.mul(dy, u), silu_grad_v(s, g)));
                math::lanes!(s, out2, |g = a, dy = c| s.mul(dy, silu_v(s, g)));
            }
        }
    }
}

/// `x / (1 + e^{−x})`.
#[inline(always)]
fn silu_v<S: Simd>(s: S, x: S::V) -> S::V {
    s.div(x, s.add(s.splat(1.0), math::exp(s, s.sub(s.splat(0.0), x))))
}

/// `σ(x)·(1 + x·(1 − σ(x)))`.
#[inline(always)]
fn silu_grad_v<S: Simd>(s: S, x: S::V) -> S::V {
    let one = s.splat(1.0);
    let sg = math::sigmoid(s, x);
    s.mul(sg, s.mul_add(x, s.sub(one, sg), one))
}

fn same_len(op: &'static str, lens: &[usize], out: usize) -> Result<(), BackendError> {
    if lens.iter().any(|&l| l != out) {
        return Err(size_error(
            op,
            format!("operands of {lens:?} elements for {out} outputs"),
        ));
    }
    Ok(())
}

/// `out = silu(x)`.
pub(crate) fn silu(ctx: Ctx<'_>, x: &[f32], out: &mut [f32]) -> Result<(), BackendError> {
    same_len("silu", &[x.len()], out.len())?;
    ctx.threads.for_rows(out, 1, 8, |i, o| {
        let n = o.len();
        ctx.isa.run(Act {
            kind: Kind::Silu,
            a: &x[i..i + n],
            b: &[],
            c: &[],
            out: o,
            out2: &mut [],
        });
    });
    Ok(())
}

/// `out = dy · silu'(x)`.
pub(crate) fn silu_backward(ctx: Ctx<'_>, x: &[f32], dy: &[f32], out: &mut [f32]) -> Result<(), BackendError> {
    same_len("silu_backward", &[x.len(), dy.len()], out.len())?;
    ctx.threads.for_rows(out, 1, 8, |i, o| {
        let n = o.len();
        ctx.isa.run(Act {
            kind: Kind::SiluBackward,
            a: &x[i..i + n],
            b: &dy[i..i + n],
            c: &[],
            out: o,
            out2: &mut [],
        });
    });
    Ok(())
}

/// `out = silu(gate) · up`.
pub(crate) fn swiglu(ctx: Ctx<'_>, gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<(), BackendError> {
    same_len("swiglu", &[gate.len(), up.len()], out.len())?;
    ctx.threads.for_rows(out, 1, 8, |i, o| {
        let n = o.len();
        ctx.isa.run(Act {
            kind: Kind::SwiGlu,
            a: &gate[i..i + n],
            b: &up[i..i + n],
            c: &[],
            out: o,
            out2: &mut [],
        });
    });
    Ok(())
}

/// `out = [dgate | dup]` (packed, each `gate.len()` long).
pub(crate) fn swiglu_backward(
    ctx: Ctx<'_>,
    gate: &[f32],
    up: &[f32],
    dy: &[f32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    let n = gate.len();
    same_len("swiglu_backward", &[up.len(), dy.len(), out.len() / 2], n)?;
    if out.len() != 2 * n {
        return Err(size_error(
            "swiglu_backward",
            format!("packed output of {} for 2 × {n}", out.len()),
        ));
    }
    let (dgate, dup) = out.split_at_mut(n);
    // Cut both halves at the same places: zip the chunks of `dgate` with those of `dup`.
    let chunk = n.div_ceil(4 * ctx.threads.count()).max(4096);
    let mut pairs: Vec<(usize, &mut [f32], &mut [f32])> = dgate
        .chunks_mut(chunk)
        .zip(dup.chunks_mut(chunk))
        .enumerate()
        .map(|(c, (g, u))| (c * chunk, g, u))
        .collect();
    let run = |(i, g, u): (usize, &mut [f32], &mut [f32])| {
        let m = g.len();
        ctx.isa.run(Act {
            kind: Kind::SwiGluBackward,
            a: &gate[i..i + m],
            b: &up[i..i + m],
            c: &dy[i..i + m],
            out: g,
            out2: u,
        });
    };
    if ctx.threads.worth_splitting(8 * n) {
        ctx.threads.for_each_owned(std::mem::take(&mut pairs), run);
    } else {
        pairs.into_iter().for_each(run);
    }
    Ok(())
}
