//! The bf16-compute GEMM (`CpuBackend::with_bf16_compute`): `C ← α·A·B + β·C` with A and B
//! rounded to bf16 as they are packed (`Bf16Dot::pack`: ggml's round-to-nearest-even) and every product
//! summed in f32 by [`Bf16Dot::micro`] (AVX-512 BF16). The f32 operands stay the master
//! copies; only this product sees them rounded.
//!
//! BLIS's loop order: the depth in blocks of `KC` pairs; per block, all of B packed into
//! panels of `NR` columns (pairs of depth interleaved, as `vdpbf16ps` takes them), then A
//! `MC` rows at a time into panels of `MR` rows, and every (B panel, A panel) pair through
//! the micro-kernel — a B panel (`KC·NR` pairs, 32 KiB) stays in L1 while the A block
//! (`MC·KC` pairs) streams from L2. Padding rows, columns and the odd depth are zeros.
//! Each element's sum runs over the depth in the same order whatever M, N or the thread
//! split, so a row's result does not depend on the others.

use std::cell::RefCell;

use super::gemm::{Mat, MatMut};
use crate::simd::bf16_dot::{Bf16Dot, MR, NR, PanelSrc};

/// Depth pairs per block (B panel: `KC · NR · 4` bytes = 32 KiB).
const KC: usize = 256;
/// Rows of A per packed block (a multiple of `MR`; `MC · KC · 4` bytes = 96 KiB).
const MC: usize = 8 * MR;

/// `C ← α·A·B + β·C` in bf16 products with f32 sums (β = 0: C is not read), for a
/// non-empty depth.
pub(crate) fn gemm_bf16(dot: Bf16Dot, alpha: f32, a: Mat<'_>, b: Mat<'_>, beta: f32, c: MatMut<'_>) {
    assert!(a.rows == c.rows && b.cols == c.cols && a.cols == b.rows, "gemm shapes");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // An empty depth (C ← β·C) is the f32 GEMM's: `gemm_rows` sends it there.
    assert!(k > 0, "bf16 GEMM with an empty depth");
    if m == 0 || n == 0 {
        return;
    }
    let pairs = k.div_ceil(2);
    let panels_n = n.div_ceil(NR);
    PANELS.with_borrow_mut(|(ap, bp)| {
        grow(bp, panels_n * KC.min(pairs) * NR);
        grow(ap, MC.min(m.div_ceil(MR) * MR) * KC.min(pairs));
        blocks(dot, alpha, a, b, beta, c, ap, bp);
    });
}

thread_local! {
    /// The packed panels of A and B, kept per thread: a fresh multi-MiB vector per product
    /// (B of a 4096-word LM head is 4 MiB) cost a page fault and a zeroed page per 4 KiB
    /// every time. Every value a product reads is written by its own packing first.
    static PANELS: RefCell<(Vec<u32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

fn grow(v: &mut Vec<u32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0);
    }
}

/// The loops of [`gemm_bf16`] over packed blocks, in `ap` and `bp`.
#[allow(clippy::too_many_arguments)]
fn blocks(
    dot: Bf16Dot,
    alpha: f32,
    a: Mat<'_>,
    b: Mat<'_>,
    beta: f32,
    mut c: MatMut<'_>,
    ap: &mut [u32],
    bp: &mut [u32],
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let pairs = k.div_ceil(2);
    let panels_n = n.div_ceil(NR);
    let mut tile = [[0.0f32; NR]; MR];
    for p0 in (0..pairs).step_by(KC) {
        let pc = KC.min(pairs - p0);
        // B's block: panel `jp` holds pairs `p0..p0 + pc` of columns `jp·NR..`, pair-major.
        let src = PanelSrc {
            data: b.data,
            ls: b.cs,
            ds: b.rs,
            lanes: n,
            k,
        };
        dot.pack(&src, NR, p0, pc, &mut bp[..panels_n * pc * NR]);
        for i0 in (0..m).step_by(MC) {
            let mc = MC.min(m - i0);
            let panels_m = mc.div_ceil(MR);
            let src = PanelSrc {
                data: &a.data[i0 * a.rs..],
                ls: a.rs,
                ds: a.cs,
                lanes: mc,
                k,
            };
            dot.pack(&src, MR, p0, pc, &mut ap[..panels_m * pc * MR]);
            for jp in 0..panels_n {
                let b_panel = &bp[jp * pc * NR..(jp + 1) * pc * NR];
                let (c0, cols) = (jp * NR, NR.min(n - jp * NR));
                for ip in 0..panels_m {
                    dot.micro(&ap[ip * pc * MR..(ip + 1) * pc * MR], b_panel, pc, &mut tile);
                    let (r0, rows) = (i0 + ip * MR, MR.min(mc - ip * MR));
                    for (i, t) in tile.iter().enumerate().take(rows) {
                        let out = c.row(r0 + i)[c0..c0 + cols].iter_mut().zip(t);
                        if p0 > 0 {
                            out.for_each(|(o, &v)| *o += alpha * v);
                        } else if beta == 0.0 {
                            out.for_each(|(o, &v)| *o = alpha * v);
                        } else {
                            out.for_each(|(o, &v)| *o = alpha * v + beta * *o);
                        }
                    }
                }
            }
        }
    }
}
