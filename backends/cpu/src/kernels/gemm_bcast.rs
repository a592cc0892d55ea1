//! A GEMM that packs B only: `C ← α·A·B + β·C` in register blocks of `MR` rows × `NV`
//! vectors of C, each summed over the inner index in order (one fused multiply-add per
//! step, A's value broadcast to a vector). B — in the products it serves, a weight of
//! `k × n` values — is copied into panels of `NV` vectors of columns, contiguous per step
//! of the inner index; A — tens of thousands of activation rows in a training step, more
//! than the caches hold — is read in place, a pass of rows at a time that stays in L2
//! while every panel goes over it. A packing GEMM copies all of A for every product.

use super::gemm::{Mat, MatMut};
use crate::simd::{Simd, SimdTask, math};

/// Floats of A per pass of rows (128 KiB: L2, with room for a panel of B).
const PASS_FLOATS: usize = 1 << 15;

thread_local! {
    /// B's panels, reused between calls on this thread.
    static PANELS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `C ← α·A·B + β·C` for any strides.
pub(crate) fn gemm_bcast(isa: crate::simd::Isa, alpha: f32, a: Mat<'_>, b: Mat<'_>, beta: f32, c: MatMut<'_>) {
    PANELS.with_borrow_mut(|panels| {
        isa.run(Bcast {
            alpha,
            a,
            b,
            beta,
            c,
            panels,
        });
    });
}

struct Bcast<'a, 'c, 'p> {
    alpha: f32,
    a: Mat<'a>,
    b: Mat<'a>,
    beta: f32,
    c: MatMut<'c>,
    panels: &'p mut Vec<f32>,
}

impl SimdTask for Bcast<'_, '_, '_> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        if S::LANES >= 16 {
            blocks::<S, 4, 4>(s, self);
        } else {
            blocks::<S, 4, 2>(s, self);
        }
    }
}

/// Packs B, then the passes, panels and register blocks (`MR` rows × `NV` vectors).
#[inline(always)]
fn blocks<S: Simd, const MR: usize, const NV: usize>(s: S, task: Bcast<'_, '_, '_>) {
    let Bcast {
        alpha,
        a,
        b,
        beta,
        mut c,
        panels,
    } = task;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let nr = NV * S::LANES;
    let count = n.div_ceil(nr);
    // Panel q, step p: B[p, q·nr .. q·nr + nr] (zeros past n) at (q·k + p)·nr. Every
    // value read is written here first, so the buffer only grows.
    if panels.len() < count * k * nr {
        panels.resize(count * k * nr, 0.0);
    }
    let panels = &mut panels[..count * k * nr];
    for (q, panel) in panels.chunks_exact_mut(k * nr).enumerate() {
        let j0 = q * nr;
        let width = (n - j0).min(nr);
        if width < nr {
            for dst in panel.chunks_exact_mut(nr) {
                dst[width..].fill(0.0);
            }
        }
        if b.cs == 1 {
            for (p, dst) in panel.chunks_exact_mut(nr).enumerate() {
                dst[..width].copy_from_slice(&b.data[p * b.rs + j0..p * b.rs + j0 + width]);
            }
        } else {
            // Column j of B is contiguous (or strided) along p: read it down once.
            for jj in 0..width {
                let j = (j0 + jj) * b.cs;
                for p in 0..k {
                    panel[p * nr + jj] = b.data[j + p * b.rs];
                }
            }
        }
    }
    let pass = (PASS_FLOATS / k.max(1) / MR * MR).max(MR);
    for r0 in (0..m).step_by(pass) {
        let r1 = (r0 + pass).min(m);
        for (q, panel) in panels.chunks_exact(k * nr).enumerate() {
            let j0 = q * nr;
            let width = (n - j0).min(nr);
            for i in (r0..r1).step_by(MR) {
                let block = Block {
                    alpha,
                    beta,
                    a,
                    panel,
                    i,
                    j0,
                    width,
                };
                match (r1 - i).min(MR) {
                    1 => block.run::<S, 1, NV>(s, &mut c),
                    2 => block.run::<S, 2, NV>(s, &mut c),
                    3 => block.run::<S, 3, NV>(s, &mut c),
                    _ => block.run::<S, MR, NV>(s, &mut c),
                }
            }
        }
    }
}

/// One register block: rows `i ..` (R of them) × columns `j0 .. j0 + width` of a panel.
#[derive(Clone, Copy)]
struct Block<'a> {
    alpha: f32,
    beta: f32,
    a: Mat<'a>,
    panel: &'a [f32],
    i: usize,
    j0: usize,
    width: usize,
}

impl Block<'_> {
    #[inline(always)]
    fn run<S: Simd, const R: usize, const NV: usize>(self, s: S, c: &mut MatMut<'_>) {
        let l = S::LANES;
        let Block {
            alpha,
            beta,
            a,
            panel,
            i,
            j0,
            width,
        } = self;
        let k = a.cols;
        let nr = NV * l;
        let zero = s.splat(0.0);
        let mut acc = [[zero; NV]; R];
        let mut rows = [a.data; R];
        for (r, x) in rows.iter_mut().enumerate() {
            let start = (i + r) * a.rs;
            *x = &a.data[start..start + (k - 1) * a.cs + 1];
        }
        for (p, bp) in panel.chunks_exact(nr).enumerate().take(k) {
            let mut bv = [zero; NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = s.load(&bp[v * l..]);
            }
            for (acc_r, a_r) in acc.iter_mut().zip(&rows) {
                let av = s.splat(a_r[p * a.cs]);
                for (x, y) in acc_r.iter_mut().zip(&bv) {
                    *x = s.mul_add(av, *y, *x);
                }
            }
        }
        let vecs = width.div_ceil(l);
        for (r, acc_r) in acc.iter().enumerate() {
            let out = &mut c.row(i + r)[j0..j0 + width];
            for (v, x) in acc_r.iter().enumerate().take(vecs) {
                let lanes = if v + 1 == vecs { width - v * l } else { l };
                let mut y = s.mul(*x, s.splat(alpha));
                if beta != 0.0 {
                    y = s.mul_add(math::load_n(s, out, v * l, lanes), s.splat(beta), y);
                }
                math::store_n(s, y, out, v * l, lanes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{Isa, SimdLevel};

    #[test]
    fn alpha_and_beta_scale_the_product_and_the_old_c() {
        // C ← α·A·B + β·C against the f64 definition, B with contiguous rows and with
        // contiguous columns, partial row blocks and panels.
        let (m, k, n) = (7, 19, 37);
        let val = |i: usize| ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
        let a: Vec<f32> = (0..m * k).map(val).collect();
        let b: Vec<f32> = (0..k * n).map(|i| val(i + 3)).collect();
        let c0: Vec<f32> = (0..m * n).map(|i| val(i + 11)).collect();
        let (alpha, beta) = (0.5f32, -2.0f32);
        for level in SimdLevel::available() {
            let isa = Isa::new(level).expect("level");
            for b_by_columns in [false, true] {
                // The same B (k × n) stored row-major, or column-major.
                let stored: Vec<f32> = if b_by_columns {
                    (0..n * k).map(|t| b[(t % k) * n + t / k]).collect()
                } else {
                    b.clone()
                };
                let bm = if b_by_columns {
                    Mat::row_major(&stored, n, k).t()
                } else {
                    Mat::row_major(&stored, k, n)
                };
                let mut c = c0.clone();
                gemm_bcast(
                    isa,
                    alpha,
                    Mat::row_major(&a, m, k),
                    bm,
                    beta,
                    MatMut::new(&mut c, m, n, n),
                );
                for i in 0..m {
                    for j in 0..n {
                        let dot: f64 = (0..k).map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j])).sum();
                        let want = f64::from(alpha) * dot + f64::from(beta) * f64::from(c0[i * n + j]);
                        let got = f64::from(c[i * n + j]);
                        assert!(
                            (got - want).abs() < 1e-4,
                            "{level:?} by columns {b_by_columns} ({i}, {j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
