//! The `MatMul` op: `op(a) · op(b)` over the last two dims, with `b` shared over `a`'s
//! leading dims or batched alongside them. A shared, untransposed product flattens `a`'s
//! batch into the rows of one GEMM; batched products run one GEMM per item, over the pool
//! when there are enough items, else each GEMM split over the pool.

use r1_core::{BackendError, Shape};

use super::gemm::{Mat, MatMut, SMALL_M_DOT, WEIGHT_DOT, gemm_group_par, gemm_in, gemm_par};
use super::{Ctx, size_error};

/// Multiply-adds per batch item above which items run in parallel.
const MIN_ITEM_MACS: usize = 1 << 14;

/// `out = op(a) · op(b)`; shapes as in `Op::MatMul`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    ctx: Ctx<'_>,
    trans_a: bool,
    trans_b: bool,
    a: &[f32],
    sa: &Shape,
    b: &[f32],
    sb: &Shape,
    out: &mut [f32],
    so: &Shape,
) -> Result<(), BackendError> {
    let err = || {
        size_error(
            "matmul",
            format!(
                "{sa}{} x {sb}{} -> {so}",
                if trans_a { "ᵀ" } else { "" },
                if trans_b { "ᵀ" } else { "" }
            ),
        )
    };
    if sa.rank() < 2 || sb.rank() < 2 {
        return Err(err());
    }
    let (m, k) = if trans_a {
        (sa.dim_from_end(0), sa.dim_from_end(1))
    } else {
        (sa.dim_from_end(1), sa.dim_from_end(0))
    };
    let (kb, n) = if trans_b {
        (sb.dim_from_end(0), sb.dim_from_end(1))
    } else {
        (sb.dim_from_end(1), sb.dim_from_end(0))
    };
    let lead = &sa.dims()[..sa.rank() - 2];
    let batched = sb.rank() > 2;
    let mut want = lead.to_vec();
    want.extend([m, n]);
    if k != kb || (batched && &sb.dims()[..sb.rank() - 2] != lead) || so.dims() != want.as_slice() {
        return Err(err());
    }
    let items: usize = lead.iter().product();
    if a.len() != items * m * k || b.len() != if batched { items } else { 1 } * k * n || out.len() != items * m * n {
        return Err(err());
    }
    if !batched && !trans_a {
        // [.., M, K] is [items·M, K]: one GEMM.
        let (a2, b2) = (Mat::row_major(a, items * m, k), operand(b, trans_b, k, n));
        gemm_par(
            ctx.threads,
            ctx.isa,
            ctx.bf16,
            WEIGHT_DOT,
            1.0,
            a2,
            b2,
            0.0,
            MatMut::new(out, items * m, n, n),
        );
        return Ok(());
    }
    let a_of = |i: usize| operand(&a[i * m * k..(i + 1) * m * k], trans_a, m, k);
    let b_of = |i: usize| {
        if batched {
            operand(&b[i * k * n..(i + 1) * k * n], trans_b, k, n)
        } else {
            operand(b, trans_b, k, n)
        }
    };
    let macs = m * n * k;
    if items >= ctx.threads.count() && macs >= MIN_ITEM_MACS {
        ctx.threads.for_rows(out, m * n, macs, |i0, chunk| {
            for (j, c) in chunk.chunks_exact_mut(m * n).enumerate() {
                gemm_in(
                    ctx.isa,
                    ctx.bf16,
                    1.0,
                    a_of(i0 + j),
                    b_of(i0 + j),
                    0.0,
                    MatMut::new(c, m, n, n),
                );
            }
        });
    } else {
        for (i, c) in out.chunks_exact_mut((m * n).max(1)).enumerate() {
            gemm_par(
                ctx.threads,
                ctx.isa,
                ctx.bf16,
                SMALL_M_DOT,
                1.0,
                a_of(i),
                b_of(i),
                0.0,
                MatMut::new(c, m, n, n),
            );
        }
    }
    Ok(())
}

/// Several `a · w_iᵀ` of one `a [.., M, K]` and 2-D f32 weights `w_i [N_i, K]` into
/// `out_i [.., M, N_i]` (`products`: each weight, its shape, its output and the output's
/// shape), in one parallel region ([`gemm_group_par`]); each output is what
/// [`matmul`] writes for its product alone.
pub(crate) fn matmul_group(
    ctx: Ctx<'_>,
    a: &[f32],
    sa: &Shape,
    products: Vec<(&[f32], &Shape, &mut [f32], &Shape)>,
) -> Result<(), BackendError> {
    if sa.rank() < 2 {
        return Err(size_error("matmul", format!("{sa} is not a matrix")));
    }
    let (m, k) = (sa.dim_from_end(1), sa.dim_from_end(0));
    let lead = &sa.dims()[..sa.rank() - 2];
    let rows = lead.iter().product::<usize>() * m;
    if a.len() != rows * k {
        return Err(size_error("matmul", format!("{} values for {sa}", a.len())));
    }
    let mut mats = Vec::with_capacity(products.len());
    for (w, sw, out, so) in products {
        let n = sw.dims().first().copied().unwrap_or(0);
        let mut want = lead.to_vec();
        want.extend([m, n]);
        if sw.rank() != 2
            || sw.dims()[1] != k
            || w.len() != n * k
            || so.dims() != want.as_slice()
            || out.len() != rows * n
        {
            return Err(size_error("matmul", format!("{sa} x {sw}ᵀ -> {so}")));
        }
        mats.push((operand(w, true, k, n), MatMut::new(out, rows, n, n)));
    }
    gemm_group_par(
        ctx.threads,
        ctx.isa,
        ctx.bf16,
        WEIGHT_DOT,
        1.0,
        Mat::row_major(a, rows, k),
        mats,
        0.0,
    );
    Ok(())
}

/// `op(X)` as a `rows × cols` matrix: `X` is stored `rows × cols`, or `cols × rows` when
/// `trans`.
fn operand(data: &[f32], trans: bool, rows: usize, cols: usize) -> Mat<'_> {
    if trans {
        Mat::row_major(data, cols, rows).t()
    } else {
        Mat::row_major(data, rows, cols)
    }
}
