//! DeepSeek-V3's mixture of experts and the head-wise reshuffles of its latent attention.
//!
//! - `HeadSlice` / `HeadSliceBackward` / `ConcatHeads` / `SumHeads`: copies between the
//!   heads of `[rows, H·w]` tensors.
//! - `MoeGate` / `MoeGateBackward`: per row, the router of `r1_core::graph::MoeRouting`
//!   (its selection rule is defined there, once, for every backend).
//! - `MoeExperts` / `MoeExpertsBackward`: for each expert, the rows routed to it are
//!   gathered into one matrix, multiplied through its SwiGLU MLP with the pool's GEMM, and
//!   scattered back weighted by their gate: the work is that of the chosen experts only.

use r1_core::BackendError;
use r1_core::graph::MoeRouting;

use super::activation::{swiglu, swiglu_backward};
use super::gemm::{Mat, MatMut, SMALL_M_DOT, gemm_par};
use super::{Ctx, size_error};

/// `out[r, h, 0..len] = x[r, h, start..start + len]` for heads of `width` values.
pub(crate) fn head_slice(
    width: usize,
    start: usize,
    len: usize,
    x: &[f32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    if width == 0
        || len == 0
        || start + len > width
        || !x.len().is_multiple_of(width)
        || out.len() != x.len() / width * len
    {
        return Err(size_error(
            "head_slice",
            format!("{} values, heads {width}, {start}+{len}", x.len()),
        ));
    }
    for (xh, oh) in x.chunks_exact(width).zip(out.chunks_exact_mut(len)) {
        oh.copy_from_slice(&xh[start..start + len]);
    }
    Ok(())
}

/// The transpose of [`head_slice`]: `dy`'s heads placed at `start..start + len` of heads
/// of `width`, zeros elsewhere.
pub(crate) fn head_slice_backward(
    width: usize,
    start: usize,
    len: usize,
    dy: &[f32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    if width == 0
        || len == 0
        || start + len > width
        || !dy.len().is_multiple_of(len)
        || out.len() != dy.len() / len * width
    {
        return Err(size_error(
            "head_slice_backward",
            format!("{} values, heads {width}, {start}+{len}", dy.len()),
        ));
    }
    for (dh, oh) in dy.chunks_exact(len).zip(out.chunks_exact_mut(width)) {
        oh.fill(0.0);
        oh[start..start + len].copy_from_slice(dh);
    }
    Ok(())
}

/// `out[r, h] = a[r, h] ‖ b[r, h]` (or `b[r, 0]` when `b_shared`), for `a` heads of `wa`
/// values and `b` heads of `wb`.
pub(crate) fn concat_heads(
    heads: usize,
    wa: usize,
    wb: usize,
    b_shared: bool,
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    let b_heads = if b_shared { 1 } else { heads };
    let (ra, rb, ro) = (heads * wa, b_heads * wb, heads * (wa + wb));
    let rows = a.len().checked_div(ra).unwrap_or(0);
    if ra == 0 || rb == 0 || a.len() != rows * ra || b.len() != rows * rb || out.len() != rows * ro {
        return Err(size_error(
            "concat_heads",
            format!(
                "a {}, b {}, out {} with {heads} heads of {wa} + {wb}",
                a.len(),
                b.len(),
                out.len()
            ),
        ));
    }
    for ((ar, br), or) in a.chunks_exact(ra).zip(b.chunks_exact(rb)).zip(out.chunks_exact_mut(ro)) {
        for (h, oh) in or.chunks_exact_mut(wa + wb).enumerate() {
            let bh = if b_shared { 0 } else { h };
            oh[..wa].copy_from_slice(&ar[h * wa..(h + 1) * wa]);
            oh[wa..].copy_from_slice(&br[bh * wb..(bh + 1) * wb]);
        }
    }
    Ok(())
}

/// `out [B, A, C] = x [A, B, C]` with its first two dims swapped.
pub(crate) fn swap_dims01(a: usize, b: usize, c: usize, x: &[f32], out: &mut [f32]) -> Result<(), BackendError> {
    if x.len() != a * b * c || out.len() != x.len() {
        return Err(size_error(
            "swap_dims01",
            format!("{} values as [{a}, {b}, {c}]", x.len()),
        ));
    }
    for i in 0..a {
        for j in 0..b {
            out[(j * a + i) * c..(j * a + i + 1) * c].copy_from_slice(&x[(i * b + j) * c..(i * b + j + 1) * c]);
        }
    }
    Ok(())
}

/// `out[r] = Σ_h x[r, h]` for `heads` heads of `d` values.
pub(crate) fn sum_heads(heads: usize, d: usize, x: &[f32], out: &mut [f32]) -> Result<(), BackendError> {
    let rows = out.len().checked_div(d).unwrap_or(0);
    if heads == 0 || d == 0 || out.len() != rows * d || x.len() != rows * heads * d {
        return Err(size_error(
            "sum_heads",
            format!("{} values into {} with {heads} heads of {d}", x.len(), out.len()),
        ));
    }
    for (xr, or) in x.chunks_exact(heads * d).zip(out.chunks_exact_mut(d)) {
        or.copy_from_slice(&xr[..d]);
        for xh in xr[d..].chunks_exact(d) {
            for (o, v) in or.iter_mut().zip(xh) {
                *o += v;
            }
        }
    }
    Ok(())
}

/// The routing weights of every row of `logits [rows, E]` (see `MoeRouting::weights`).
pub(crate) fn moe_gate(
    routing: &MoeRouting,
    logits: &[f32],
    bias: &[f32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    let e = bias.len();
    if e == 0 || !logits.len().is_multiple_of(e) || out.len() != logits.len() {
        return Err(size_error("moe_gate", format!("logits {}, bias {e}", logits.len())));
    }
    let mut scores = vec![0f32; e];
    for (l, o) in logits.chunks_exact(e).zip(out.chunks_exact_mut(e)) {
        routing.weights(l, bias, &mut scores, o);
    }
    Ok(())
}

/// d logits of [`moe_gate`] given `dy`.
pub(crate) fn moe_gate_backward(
    routing: &MoeRouting,
    logits: &[f32],
    bias: &[f32],
    dy: &[f32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    let e = bias.len();
    if e == 0 || !logits.len().is_multiple_of(e) || out.len() != logits.len() || dy.len() != logits.len() {
        return Err(size_error(
            "moe_gate_backward",
            format!("logits {}, bias {e}", logits.len()),
        ));
    }
    let mut scores = vec![0f32; e];
    for ((l, d), o) in logits
        .chunks_exact(e)
        .zip(dy.chunks_exact(e))
        .zip(out.chunks_exact_mut(e))
    {
        routing.weights_backward(l, bias, d, &mut scores, o);
    }
    Ok(())
}

/// One expert's weights: `gate [F, H]`, `up [F, H]`, `down [H, F]`.
pub(crate) struct Expert<'a> {
    pub gate: &'a [f32],
    pub up: &'a [f32],
    pub down: &'a [f32],
}

/// Checks the sizes of `x [rows, H]`, `gates [rows, E]` and the experts; returns rows.
fn check_experts(
    op: &'static str,
    h: usize,
    x: &[f32],
    gates: &[f32],
    experts: &[Expert<'_>],
) -> Result<usize, BackendError> {
    let e = experts.len();
    let rows = x.len().checked_div(h).unwrap_or(0);
    if h == 0 || e == 0 || x.len() != rows * h || gates.len() != rows * e {
        return Err(size_error(
            op,
            format!("x {}, gates {} for hidden {h} and {e} experts", x.len(), gates.len()),
        ));
    }
    for (i, w) in experts.iter().enumerate() {
        let f = w.gate.len() / h;
        if f == 0 || w.gate.len() != f * h || w.up.len() != f * h || w.down.len() != h * f {
            return Err(size_error(
                op,
                format!(
                    "expert {i}: gate {}, up {}, down {}",
                    w.gate.len(),
                    w.up.len(),
                    w.down.len()
                ),
            ));
        }
    }
    Ok(rows)
}

/// The rows routed to expert `ex` (nonzero gate), and `x`'s rows gathered into `xg`.
fn gather(h: usize, e: usize, ex: usize, x: &[f32], gates: &[f32], rows: &mut Vec<usize>, xg: &mut Vec<f32>) {
    rows.clear();
    xg.clear();
    for (r, g) in gates.chunks_exact(e).enumerate() {
        if g[ex] != 0.0 {
            rows.push(r);
            xg.extend_from_slice(&x[r * h..(r + 1) * h]);
        }
    }
}

/// `c [m, n] = a [m, k] · wᵀ` for a weight `w [n, k]`, over the pool.
fn times_wt(ctx: Ctx<'_>, a: &[f32], m: usize, k: usize, w: &[f32], n: usize, c: &mut [f32]) {
    gemm_par(
        ctx.threads,
        ctx.isa,
        ctx.bf16,
        SMALL_M_DOT,
        1.0,
        Mat::row_major(a, m, k),
        Mat::row_major(w, n, k).t(),
        0.0,
        MatMut::new(c, m, n, n),
    );
}

/// One expert's forward on its gathered rows: `g1 = xg·gateᵀ`, `u = xg·upᵀ`,
/// `act = silu(g1)·u`, `o = act·downᵀ`.
struct ExpertPass {
    g1: Vec<f32>,
    u: Vec<f32>,
    act: Vec<f32>,
    o: Vec<f32>,
}

impl ExpertPass {
    fn run(ctx: Ctx<'_>, h: usize, w: &Expert<'_>, xg: &[f32], m: usize) -> Result<ExpertPass, BackendError> {
        let f = w.gate.len() / h;
        let mut p = ExpertPass {
            g1: vec![0.0; m * f],
            u: vec![0.0; m * f],
            act: vec![0.0; m * f],
            o: vec![0.0; m * h],
        };
        times_wt(ctx, xg, m, h, w.gate, f, &mut p.g1);
        times_wt(ctx, xg, m, h, w.up, f, &mut p.u);
        swiglu(ctx, &p.g1, &p.u, &mut p.act)?;
        times_wt(ctx, &p.act, m, f, w.down, h, &mut p.o);
        Ok(p)
    }
}

/// `out [rows, H]` = the experts' outputs weighted by `gates [rows, E]` (see `Op::MoeExperts`).
pub(crate) fn moe_experts(
    ctx: Ctx<'_>,
    h: usize,
    x: &[f32],
    gates: &[f32],
    experts: &[Expert<'_>],
    out: &mut [f32],
) -> Result<(), BackendError> {
    check_experts("moe_experts", h, x, gates, experts)?;
    if out.len() != x.len() {
        return Err(size_error(
            "moe_experts",
            format!("out {} for x {}", out.len(), x.len()),
        ));
    }
    let e = experts.len();
    out.fill(0.0);
    let (mut rows, mut xg) = (Vec::new(), Vec::new());
    for (ex, w) in experts.iter().enumerate() {
        gather(h, e, ex, x, gates, &mut rows, &mut xg);
        if rows.is_empty() {
            continue;
        }
        let p = ExpertPass::run(ctx, h, w, &xg, rows.len())?;
        for (&r, o) in rows.iter().zip(p.o.chunks_exact(h)) {
            let g = gates[r * e + ex];
            for (y, v) in out[r * h..(r + 1) * h].iter_mut().zip(o) {
                *y += g * v;
            }
        }
    }
    Ok(())
}

/// The packed gradient of [`moe_experts`]: `[dx | dgates | d gate_0 | d up_0 | d down_0 | …]`.
pub(crate) fn moe_experts_backward(
    ctx: Ctx<'_>,
    h: usize,
    x: &[f32],
    gates: &[f32],
    experts: &[Expert<'_>],
    dy: &[f32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    let n_rows = check_experts("moe_experts_backward", h, x, gates, experts)?;
    let weights: usize = experts.iter().map(|w| w.gate.len() + w.up.len() + w.down.len()).sum();
    if dy.len() != x.len() || out.len() != x.len() + gates.len() + weights {
        return Err(size_error(
            "moe_experts_backward",
            format!(
                "dy {}, out {} for x {} and gates {}",
                dy.len(),
                out.len(),
                x.len(),
                gates.len()
            ),
        ));
    }
    let e = experts.len();
    out.fill(0.0);
    let (dx, rest) = out.split_at_mut(n_rows * h);
    let (dgates, mut dw) = rest.split_at_mut(gates.len());
    let (mut rows, mut xg) = (Vec::new(), Vec::new());
    for (ex, w) in experts.iter().enumerate() {
        let f = w.gate.len() / h;
        let (d_gate, tail) = dw.split_at_mut(f * h);
        let (d_up, tail) = tail.split_at_mut(f * h);
        let (d_down, tail) = tail.split_at_mut(h * f);
        dw = tail;
        gather(h, e, ex, x, gates, &mut rows, &mut xg);
        let m = rows.len();
        if m == 0 {
            continue;
        }
        let p = ExpertPass::run(ctx, h, w, &xg, m)?;
        // d gate[r, ex] = dy_r · o_i; d o_i = gate[r, ex] · dy_r.
        let mut d_o = vec![0f32; m * h];
        for (i, &r) in rows.iter().enumerate() {
            let g = gates[r * e + ex];
            let dyr = &dy[r * h..(r + 1) * h];
            let oi = &p.o[i * h..(i + 1) * h];
            dgates[r * e + ex] = dyr.iter().zip(oi).map(|(a, b)| a * b).sum();
            for (d, v) in d_o[i * h..(i + 1) * h].iter_mut().zip(dyr) {
                *d = g * v;
            }
        }
        // d down [H, F] = d_oᵀ · act; d act [m, F] = d_o · down.
        gemm_par(
            ctx.threads,
            ctx.isa,
            ctx.bf16,
            SMALL_M_DOT,
            1.0,
            Mat::row_major(&d_o, m, h).t(),
            Mat::row_major(&p.act, m, f),
            0.0,
            MatMut::new(d_down, h, f, f),
        );
        let mut d_act = vec![0f32; m * f];
        gemm_par(
            ctx.threads,
            ctx.isa,
            ctx.bf16,
            SMALL_M_DOT,
            1.0,
            Mat::row_major(&d_o, m, h),
            Mat::row_major(w.down, h, f),
            0.0,
            MatMut::new(&mut d_act, m, f, f),
        );
        let mut d_gu = vec![0f32; 2 * m * f];
        swiglu_backward(ctx, &p.g1, &p.u, &d_act, &mut d_gu)?;
        let (d_g1, d_u) = d_gu.split_at(m * f);
        // d gate [F, H] = d_g1ᵀ · xg, d up likewise; d xg = d_g1 · gate + d_u · up.
        for (dwt, dz) in [(&mut *d_gate, d_g1), (&mut *d_up, d_u)] {
            gemm_par(
                ctx.threads,
                ctx.isa,
                ctx.bf16,
                SMALL_M_DOT,
                1.0,
                Mat::row_major(dz, m, f).t(),
                Mat::row_major(&xg, m, h),
                0.0,
                MatMut::new(dwt, f, h, h),
            );
        }
        let mut d_xg = vec![0f32; m * h];
        for (wt, dz, beta) in [(w.gate, d_g1, 0.0), (w.up, d_u, 1.0)] {
            gemm_par(
                ctx.threads,
                ctx.isa,
                ctx.bf16,
                SMALL_M_DOT,
                1.0,
                Mat::row_major(dz, m, f),
                Mat::row_major(wt, f, h),
                beta,
                MatMut::new(&mut d_xg, m, h, h),
            );
        }
        for (&r, d) in rows.iter().zip(d_xg.chunks_exact(h)) {
            for (a, b) in dx[r * h..(r + 1) * h].iter_mut().zip(d) {
                *a += b;
            }
        }
    }
    Ok(())
}
