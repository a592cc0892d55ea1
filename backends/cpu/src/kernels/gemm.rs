//! GEMM: `C ← α·A·B + β·C` on strided matrices through matrixmultiply's `sgemm` (packed
//! AVX-512/AVX2 micro-kernels; any strides, so transposes cost nothing), split over the
//! pool by blocks of rows of C (or of columns when C has few rows). A product with very
//! few rows (decode: one token per sequence) skips packing and runs SIMD dot products or
//! row updates, which read each weight once.
//!
//! With `β = 0`, C is written without being read (it may hold stale arena values).

use std::marker::PhantomData;

use super::gemm_bf16::gemm_bf16;
use crate::parallel::{SharedOut, Threads};
use crate::simd::bf16_dot::Bf16Dot;
use crate::simd::{Isa, MAX_LANES, Simd, SimdLevel, SimdTask, math};

/// Which products take the packing-free path when B's columns are contiguous: those of
/// at most `rows` rows of C, and those whose A holds at most `a_values` values.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DotLimit {
    pub(crate) rows: usize,
    a_values: usize,
}

impl DotLimit {
    fn takes(self, isa: Isa, m: usize, k: usize) -> bool {
        // Decode-sized products (every step of serving) decide on the first test.
        m <= self.rows
            || (m <= PREFILL_ROWS
                && m.saturating_mul(k) <= self.a_values
                && (k >= AVX2_PREFILL_DOT_MIN_K || isa.level() != SimdLevel::Avx2))
    }
}

/// Depth from which a product of more rows than [`DotLimit::rows`] (a prefill chunk, a
/// training step's products) may take the packing-free path with AVX2. Shallower ones
/// pack: on Zen 3 (`benches/decode_gemm.rs`, one thread, 128–512 rows, `small` and
/// `medium` at K = 256–688) the dot tiles ran 29–72 GFLOP/s against sgemm's 38–78 in the
/// same run, and 60–79 beside sgemm's 61–81 once these packed (each element's lanes summed
/// at the end cost more the shorter the sum); from K = 896 (Qwen2.5-0.5B,
/// R1-Distill-Qwen-1.5B) they ran alike.
const AVX2_PREFILL_DOT_MIN_K: usize = 768;

/// Rows of C up to which a product counts as a prefill chunk (llama.cpp's default
/// micro-batch): [`DotLimit`]'s size of A applies up to them, so training and scoring
/// products past them take sgemm whatever the depth and round as they did; and A is read
/// in place ([`unpacked_a`]) only past them.
const PREFILL_ROWS: usize = 512;

/// The packing-free limit of most products: up to 8 rows of C, with B's columns
/// contiguous (register-blocked dot products over column tiles that stay in cache) and
/// with B's rows contiguous (M passes over B).
pub(crate) const SMALL_M_DOT: DotLimit = DotLimit { rows: 8, a_values: 0 };
/// The packing-free limit for the product of activations with a shared transposed
/// weight (`MatMul` with a 2-D `b`). Continuous batching decodes up to 64 sequences
/// without packing a weight, and a row's result does not depend on the others up to that
/// many rows. Past them, a prefill chunk (at most [`PREFILL_ROWS`]) still skips packing
/// while A fits a core's L2 (2^18 values, 1 MiB), reading the weight once with B outer ([`dot_tiles`]):
/// sgemm copies each weight from memory into its panels before any multiply-add, which
/// on weights read from DRAM made Qwen2.5-0.5B's 128-row products 261–276 GFLOP/s on two
/// threads against 278–327 without packing (`decode_gemm` with `R1_GEMM_COLD_MIB=400`); with
/// a larger A, sgemm is faster (K = 896 at 512 rows: 375 against 310). Other products
/// (attention, batched, training-sized) keep [`SMALL_M_DOT`], so their rounding is what it
/// was.
pub(crate) const WEIGHT_DOT: DotLimit = DotLimit {
    rows: 64,
    a_values: 1 << 18,
};
const SMALL_M_ROWS: usize = 4;
/// Column tiles of B that the B-outer order of [`dot_tiles`] takes at a time (1, 2 and
/// 4 measured within noise on Qwen2.5-0.5B f32 prefill; 2 the best).
const OUTER_TILES: usize = 2;
/// Floats of A per row tile of the packing-free dot path (32 KiB: L1).
const DOT_TILE_FLOATS: usize = 8192;
/// How many column tiles ahead [`dot_tiles`] asks for B's columns (1 to 8 measured
/// within noise of each other).
const PREFETCH_TILES: usize = 2;
/// Values of B (1 MiB, a core's L2) from which [`dot_tiles`] prefetches it (but see
/// [`prefetch_min_b`]) — the B of the piece one thread multiplies, which is what has to
/// stream through its core. Measured on Intel (AVX-512): f32 decode of Qwen2.5-0.5B
/// (weights from DRAM), one thread, 12.5 → 13.6 tok/s; but `bench serve --preset small`
/// (weights in L3) 8% slower at one stream and 3% at 32 when its products prefetched too.
const PREFETCH_MIN_B: usize = 1 << 18;

/// [`PREFETCH_MIN_B`] on this CPU: 0 (every B) where [`crate::simd::prefetch_cached`]
/// says so (AMD). `bench serve --preset small` (12 MiB of weights, from L3 on every step),
/// the builds before and after in turns, medians: on Zen 3 (AVX2), six rounds, 1 / 8 / 32
/// streams 1.72k / 3.52k / 5.40k → 2.12k / 5.51k / 6.15k tok/s (faster in every round at
/// each count), `bench grpo --preset small`'s generation 0.119 → 0.087 s (five rounds); on
/// Zen 4 (AVX-512), four rounds, 3.9k / 6.4k / 10.1k → 4.7k / 13.1k / 12.4k.
fn prefetch_min_b() -> usize {
    if crate::simd::prefetch_cached() {
        0
    } else {
        PREFETCH_MIN_B
    }
}

/// Whether a packing-free product whose one thread's piece of the weight holds `values`
/// values asks for it ahead of use ([`prefetch_min_b`]; bf16 weights too).
pub(crate) fn prefetches(values: usize) -> bool {
    values >= prefetch_min_b()
}

/// Rows of A up to which a packing-free product whose B streams from memory
/// ([`PREFETCH_MIN_B`]) takes tiles of this many rows and two columns (AVX-512).
const STREAMED_TILE_ROWS: usize = 8;
/// Most columns of a packing-free dot tile (4 × 4 with AVX-512, 4 × 3 with AVX2).
const MAX_TILE_COLS: usize = 4;
/// Vectors of a row of C kept in registers by the row-update path (64 values with AVX-512:
/// one attention head's output row).
const ROW_UPDATE_VECTORS: usize = 8;
/// Multiply-adds below which a GEMM stays on one thread (about 20 µs of work).
const MIN_PARALLEL_MACS: usize = 1 << 20;
/// What reading one value of B costs, in multiply-adds, when deciding whether to split a
/// product over threads. A decode product (one row of activations) is bound by streaming
/// its weight from L3 at ~28 GB/s per core (`decode_gemm`'s cold M = 1 column); so it is
/// split once the weight is a few tens of KiB (measured on `bench serve`, one stream:
/// 8 → 16 → 32 → 64 gave `small` 2.2k → 2.7k → 2.9k → 3.0k tok/s against 1.7k unsplit;
/// `medium` 141 → 341 tok/s). Products with 32 rows or more are priced by their
/// multiply-adds as before.
const B_VALUE_MACS: usize = 32;
/// Values of A (with contiguous rows) from which a product skips packing A
/// ([`super::gemm_bcast`]): 4 MiB, past what L2 and a core's share of L3 hold, where
/// sgemm's copy of A costs a third of its multiply-adds' time (`benches/decode_gemm.rs`,
/// 8192 rows: 169–202 GFLOP/s packed, 183–231 not).
const BCAST_MIN_A: usize = 1 << 20;
/// Row and column blocks handed to threads are multiples of this (the AVX-512
/// micro-kernel's `MR = NR = 16`), so no thread gets a ragged micro-tile it need not.
const BLOCK: usize = 16;
/// Columns of B that matrixmultiply's sgemm packs at once (its `S_NC`; only tunes the cut).
const SGEMM_NC: usize = 1024;

/// A read-only strided matrix: element `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat<'a> {
    pub(super) data: &'a [f32],
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) rs: usize,
    pub(super) cs: usize,
}

/// Index of the last element of a `rows × cols` strided matrix, plus one.
fn footprint(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

impl<'a> Mat<'a> {
    /// Panics if the matrix does not fit `data` (shapes are checked before kernels run,
    /// so this is an internal invariant, never a reaction to outside input).
    pub(crate) fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Mat<'a> {
        assert!(
            footprint(rows, cols, rs, cs) <= data.len(),
            "matrix {rows}x{cols} (strides {rs},{cs}) exceeds {}",
            data.len()
        );
        Mat {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// A contiguous row-major `rows × cols` matrix.
    pub(crate) fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Mat<'a> {
        Mat::new(data, rows, cols, cols, 1)
    }

    /// The transpose (a view: strides swap).
    pub(crate) fn t(self) -> Mat<'a> {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Rows `r0 .. r0 + rows`.
    fn rows_range(self, r0: usize, rows: usize) -> Mat<'a> {
        let start = (r0 * self.rs).min(self.data.len());
        Mat::new(&self.data[start..], rows, self.cols, self.rs, self.cs)
    }

    /// Columns `c0 .. c0 + cols`.
    fn cols_range(self, c0: usize, cols: usize) -> Mat<'a> {
        let start = (c0 * self.cs).min(self.data.len());
        Mat::new(&self.data[start..], self.rows, cols, self.rs, self.cs)
    }
}

/// A writable matrix with contiguous rows (`cs = 1`, `rs ≥ cols`), so row and column
/// blocks of it never share an element.
pub(crate) struct MatMut<'a> {
    ptr: *mut f32,
    pub(super) rows: usize,
    pub(super) cols: usize,
    rs: usize,
    _owner: PhantomData<&'a mut [f32]>,
}

// SAFETY: a `MatMut` is the unique handle to the elements it spans (it comes from a
// `&mut` slice, or from a `SharedOut` whose caller promised disjointness).
unsafe impl Send for MatMut<'_> {}

impl<'a> MatMut<'a> {
    /// A `rows × cols` matrix with row stride `rs` inside `data`.
    pub(crate) fn new(data: &'a mut [f32], rows: usize, cols: usize, rs: usize) -> MatMut<'a> {
        assert!(rs >= cols || rows <= 1, "row stride {rs} < {cols} columns");
        assert!(
            footprint(rows, cols, rs, 1) <= data.len(),
            "matrix {rows}x{cols} (stride {rs}) exceeds {}",
            data.len()
        );
        MatMut {
            ptr: data.as_mut_ptr(),
            rows,
            cols,
            rs: rs.max(cols),
            _owner: PhantomData,
        }
    }

    /// A `rows × cols` matrix with row stride `rs` starting at element `offset` of `out`.
    ///
    /// # Safety
    /// While the result is alive, no other slice or matrix obtained from `out` may touch
    /// the elements it spans.
    pub(crate) unsafe fn from_shared(
        out: &SharedOut<'a>,
        offset: usize,
        rows: usize,
        cols: usize,
        rs: usize,
    ) -> MatMut<'a> {
        assert!(rs >= cols || rows <= 1, "row stride {rs} < {cols} columns");
        assert!(
            offset + footprint(rows, cols, rs, 1) <= out.len(),
            "matrix exceeds its shared output"
        );
        // SAFETY: in bounds (asserted above).
        let ptr = unsafe { out.base().add(offset) };
        MatMut {
            ptr,
            rows,
            cols,
            rs: rs.max(cols),
            _owner: PhantomData,
        }
    }

    fn split_rows(self, at: usize) -> (MatMut<'a>, MatMut<'a>) {
        let at = at.min(self.rows);
        // SAFETY: `at ≤ rows`, so the offset stays inside (or one past) the span.
        let lower = unsafe { self.ptr.add(at * self.rs) };
        let top = MatMut {
            ptr: self.ptr,
            rows: at,
            cols: self.cols,
            rs: self.rs,
            _owner: PhantomData,
        };
        let bottom = MatMut {
            ptr: lower,
            rows: self.rows - at,
            cols: self.cols,
            rs: self.rs,
            _owner: PhantomData,
        };
        (top, bottom)
    }

    fn split_cols(self, at: usize) -> (MatMut<'a>, MatMut<'a>) {
        let at = at.min(self.cols);
        // SAFETY: `at ≤ cols ≤ rs`, inside the first row (or one past it).
        let right = unsafe { self.ptr.add(at) };
        let left = MatMut {
            ptr: self.ptr,
            rows: self.rows,
            cols: at,
            rs: self.rs,
            _owner: PhantomData,
        };
        let rest = MatMut {
            ptr: right,
            rows: self.rows,
            cols: self.cols - at,
            rs: self.rs,
            _owner: PhantomData,
        };
        (left, rest)
    }

    /// Row `i` as a slice.
    pub(super) fn row(&mut self, i: usize) -> &mut [f32] {
        assert!(i < self.rows);
        // SAFETY: row `i` of the span this handle owns exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.rs), self.cols) }
    }
}

/// `C ← α·A·B + β·C` on the calling thread.
pub(crate) fn gemm(isa: Isa, alpha: f32, a: Mat<'_>, b: Mat<'_>, beta: f32, c: MatMut<'_>) {
    gemm_rows(isa, None, SMALL_M_DOT, unpacked_a(isa, a), alpha, a, b, beta, c)
}

/// [`gemm`], in bf16 products when `bf16` is set and the product is past the packing-free
/// size ([`bf16_for`]).
pub(crate) fn gemm_in(isa: Isa, bf16: Option<Bf16Dot>, alpha: f32, a: Mat<'_>, b: Mat<'_>, beta: f32, c: MatMut<'_>) {
    gemm_rows(
        isa,
        bf16_for(bf16, a.rows, SMALL_M_DOT),
        SMALL_M_DOT,
        unpacked_a(isa, a),
        alpha,
        a,
        b,
        beta,
        c,
    )
}

/// `bf16` if a product of `m` rows computes in bf16: past the packing-free limit's rows
/// (decode and other few-row products stay f32: they are bound by reading B).
fn bf16_for(bf16: Option<Bf16Dot>, m: usize, dot: DotLimit) -> Option<Bf16Dot> {
    bf16.filter(|_| m > dot.rows)
}

/// Whether a product past the packing-free sizes reads A in place
/// ([`super::gemm_bcast`]): with AVX-512 only, A's rows contiguous, more than a prefill
/// chunk of them ([`PREFILL_ROWS`]: fewer take the packed sgemm, which was 2–3× faster on
/// R1-Distill-Qwen-1.5B's down projection, K = 8960, at 128–512 rows) and at least
/// [`BCAST_MIN_A`] values. With AVX2 (Zen 3) the in-place product ran at 26–58 GFLOP/s a
/// thread against sgemm's 58–82 on every 8192-row product of `benches/decode_gemm.rs`
/// (2.5–3× slower at K ≥ 4864: its panels of B span all of K and leave L1), so AVX2 packs.
fn unpacked_a(isa: Isa, a: Mat<'_>) -> bool {
    isa.level() == SimdLevel::Avx512
        && a.cs == 1
        && a.rows > PREFILL_ROWS
        && a.rows.saturating_mul(a.cols) >= BCAST_MIN_A
}

/// [`gemm`] with `dot` as the packing-free limit for a B with contiguous columns,
/// in bf16 products when `bf16` is set (the caller decided, see [`bf16_for`]), A read in
/// place past that when `unpacked_a` (the caller decided for the whole product, see
/// [`unpacked_a`]), else matrixmultiply's packed sgemm.
#[allow(clippy::too_many_arguments)]
fn gemm_rows(
    isa: Isa,
    bf16: Option<Bf16Dot>,
    dot: DotLimit,
    unpacked_a: bool,
    alpha: f32,
    a: Mat<'_>,
    b: Mat<'_>,
    beta: f32,
    c: MatMut<'_>,
) {
    assert!(a.rows == c.rows && b.cols == c.cols && a.cols == b.rows, "gemm shapes");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    if let Some(dot) = bf16.filter(|_| k > 0) {
        gemm_bf16(dot, alpha, a, b, beta, c);
        return;
    }
    if k > 0 && ((dot.takes(isa, m, k) && b.rs == 1) || (m <= SMALL_M_ROWS && b.cs == 1)) {
        isa.run(SmallM { alpha, a, b, beta, c });
        return;
    }
    if k > 0 && unpacked_a {
        super::gemm_bcast::gemm_bcast(isa, alpha, a, b, beta, c);
        return;
    }
    // SAFETY: `Mat::new`/`MatMut::new` checked that every element (i, j) of A (m×k),
    // B (k×n) and C (m×n) lies inside its slice; C's rows are disjoint (cs = 1, rs ≥ n)
    // so no two C elements alias, and C is owned exclusively by this handle, so it
    // overlaps neither A nor B.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.ptr,
            c.rs as isize,
            1,
        );
    }
}

/// [`gemm`] split over the pool: `threads.count()` blocks of rows of C, or of columns
/// when C has too few rows for that; one thread for small products.
/// `dot`: the packing-free limit (see [`WEIGHT_DOT`]); `bf16`: compute in bf16 products
/// when the product has more rows than its `rows` ([`bf16_for`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_par(
    threads: &Threads,
    isa: Isa,
    bf16: Option<Bf16Dot>,
    dot: DotLimit,
    alpha: f32,
    a: Mat<'_>,
    b: Mat<'_>,
    beta: f32,
    c: MatMut<'_>,
) {
    if threads.count() <= 1 || product_work(a.rows, a.cols, b.cols) < MIN_PARALLEL_MACS {
        // What `gemm_group_par` does with one small product, without its lists.
        let bf16 = bf16_for(bf16, a.rows, dot);
        gemm_rows(isa, bf16, dot, unpacked_a(isa, a), alpha, a, b, beta, c);
        return;
    }
    gemm_group_par(threads, isa, bf16, dot, alpha, a, vec![(b, c)], beta);
}

/// What a product `[m, k] · [k, n]` costs when deciding whether to split it, in
/// multiply-adds: with few rows the time goes into reading B (a weight that does not
/// stay in cache), not into the multiply-adds, so each value of B is priced as
/// `B_VALUE_MACS` of them.
fn product_work(m: usize, k: usize, n: usize) -> usize {
    let macs = m.saturating_mul(k).saturating_mul(n);
    macs.max(k.saturating_mul(n).saturating_mul(B_VALUE_MACS))
}

/// Several products of one A, `C_i ← α·A·B_i + β·C_i` (a layer's q/k/v or gate/up
/// projections), in one parallel region: each product is cut as [`gemm_par`] cuts it
/// alone and all the pieces go to the pool together, so every element is what
/// [`gemm_par`] computes and the threads meet once instead of once per product. One
/// thread when all of them together are small.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_group_par<'a, 'c>(
    threads: &Threads,
    isa: Isa,
    bf16: Option<Bf16Dot>,
    dot: DotLimit,
    alpha: f32,
    a: Mat<'a>,
    products: Vec<(Mat<'a>, MatMut<'c>)>,
    beta: f32,
) {
    let (m, k) = (a.rows, a.cols);
    let bf16 = bf16_for(bf16, m, dot);
    // Decided for the whole product, so a piece computes what the whole would.
    let unpacked = unpacked_a(isa, a);
    let parts = threads.count();
    let work = products
        .iter()
        .map(|(b, _)| product_work(m, k, b.cols))
        .fold(0usize, usize::saturating_add);
    if parts <= 1 || work < MIN_PARALLEL_MACS {
        for (b, c) in products {
            gemm_rows(isa, bf16, dot, unpacked, alpha, a, b, beta, c);
        }
        return;
    }
    let mut jobs = Vec::with_capacity(parts * products.len());
    for (b, c) in products {
        cut(parts, a, b, c, &mut jobs);
    }
    // Piece-major order (every product's first piece, then every product's second…; a
    // stable sort of a few entries, in place): the pool halves the list between
    // threads, so each half holds a share of each product.
    jobs.sort_by_key(|&(piece, ..)| piece);
    threads.for_each_owned(jobs, |(_, a, b, c)| {
        gemm_rows(isa, bf16, dot, unpacked, alpha, a, b, beta, c)
    });
}

/// A piece of a product: its index within the product, A, B and C.
type Piece<'a, 'c> = (usize, Mat<'a>, Mat<'a>, MatMut<'c>);

/// The pieces of one product for `parts` threads: blocks of rows of C, or of columns when
/// C has too few rows for that.
fn cut<'a, 'c>(parts: usize, a: Mat<'a>, b: Mat<'a>, c: MatMut<'c>, jobs: &mut Vec<Piece<'a, 'c>>) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // Each thread packs its own operands. sgemm packs B once per call and A once per panel
    // of `NC` columns, so a row cut packs all of B in every thread (k·n extra values) and a
    // column cut packs A once per thread (m·k extra while each thread has at most one
    // panel, nothing extra beyond). Cut the dimension that duplicates less.
    let extra_for_columns = if n / parts > SGEMM_NC { 0 } else { m * k };
    if (k * n <= extra_for_columns && m >= parts * BLOCK) || n < parts * BLOCK {
        let step = m.div_ceil(parts).div_ceil(BLOCK) * BLOCK;
        let mut rest = c;
        let mut r0 = 0;
        while r0 < m {
            let rows = step.min(m - r0);
            let (top, bottom) = rest.split_rows(rows);
            jobs.push((r0 / step, a.rows_range(r0, rows), b, top));
            rest = bottom;
            r0 += rows;
        }
    } else {
        let step = n.div_ceil(parts).div_ceil(BLOCK) * BLOCK;
        let mut rest = c;
        let mut c0 = 0;
        while c0 < n {
            let cols = step.min(n - c0);
            let (left, right) = rest.split_cols(cols);
            jobs.push((c0 / step, a, b.cols_range(c0, cols), left));
            rest = right;
            c0 += cols;
        }
    }
}

/// The packing-free product for a few rows of C: B with contiguous columns (a transposed
/// weight) takes one dot product per element of C; B with contiguous rows takes row
/// updates `C[i, :] += α·A[i, k]·B[k, :]`.
struct SmallM<'a, 'c> {
    alpha: f32,
    a: Mat<'a>,
    b: Mat<'a>,
    beta: f32,
    c: MatMut<'c>,
}

impl SimdTask for SmallM<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let SmallM {
            alpha,
            a,
            b,
            beta,
            mut c,
        } = self;
        let (m, k, n) = (a.rows, a.cols, b.cols);
        // Rows of A as contiguous slices: A's own rows when they are (activations), else
        // gathered once into a buffer (A transposed).
        let gathered: Vec<f32>;
        let (a_data, a_rs) = if a.cs == 1 {
            (a.data, a.rs)
        } else {
            let mut g = vec![0.0f32; m * k];
            for (i, row) in g.chunks_exact_mut(k).enumerate() {
                for (p, v) in row.iter_mut().enumerate() {
                    *v = a.data[i * a.rs + p * a.cs];
                }
            }
            gathered = g;
            (gathered.as_slice(), k)
        };
        let row = |i: usize| &a_data[i * a_rs..i * a_rs + k];
        if b.rs == 1 {
            // Column j of B is `b.data[j·cs .. j·cs + k]`.
            let col = |j: usize| &b.data[j * b.cs..j * b.cs + k];
            if m == 1 && k.saturating_mul(n) >= PREFETCH_MIN_B {
                // One row of A (decode) and a B that streams from memory: one column at a
                // time, so that each thread reads its weights as one stream (four side by
                // side are four streams, which the hardware prefetcher follows worse:
                // Qwen2.5-0.5B f32 decode 19.0 → 22.6 tok/s on two threads). Each sum is
                // the same (one accumulator per element; `transpose_sum` reduces every
                // slot by the same tree).
                dot_tiles::<S, 1, 1>(s, (alpha, beta), (&row, m), (&col, n), k, &mut c);
            } else if S::LANES >= 16 && m <= STREAMED_TILE_ROWS && k.saturating_mul(n) >= PREFETCH_MIN_B {
                // A few rows (a batch's decode step) and a B from memory: two columns at a
                // time with up to eight rows, so each thread reads two weight rows side by
                // side rather than four (`bench grpo --preset medium`, whose generation
                // decodes 8 rows over 97 MB of weights: 0.577 → 0.527 s per step's
                // generation, four alternations; 8 × 1 and 4 × 2 tiles measured alike).
                dot_tiles::<S, STREAMED_TILE_ROWS, 2>(s, (alpha, beta), (&row, m), (&col, n), k, &mut c);
            } else if S::LANES >= 16 {
                dot_tiles::<S, 4, 4>(s, (alpha, beta), (&row, m), (&col, n), k, &mut c);
            } else if m == 1 {
                // AVX2, one row: four columns, four sums side by side.
                dot_tiles::<S, 1, 4>(s, (alpha, beta), (&row, m), (&col, n), k, &mut c);
            } else {
                // AVX2: twelve accumulators, three columns' vectors and one row's in the
                // sixteen registers. Four rows rather than three: a lane's 16 rows (a
                // 32-stream batch on two threads) are four whole tiles, where 3 × 4 tiles
                // left a one-row tile that did four multiply-adds per five loads. One
                // thread, `decode_gemm small`, 16 rows, three alternations: gate/up
                // 51–58 → 60–62 GFLOP/s (2 × 4 tiles whose accumulators were stored every
                // step: 43–48); `bench serve --preset small`, 32 streams, six alternations:
                // median 7.2k → 8.1k tok/s (5.7–8.3k → 6.5–8.7k: this VM is noisy).
                dot_tiles::<S, 4, 3>(s, (alpha, beta), (&row, m), (&col, n), k, &mut c);
            }
        } else {
            // `C[i, j] ← fma(α·A[i, p], B[p, j], C[i, j])` for p in order (the order of
            // one `y += α·x` pass per p), with a block of C's row held in registers over all p
            // (stored once instead of once per p).
            let l = S::LANES;
            for i in 0..m {
                let a_i = row(i);
                let out = c.row(i);
                if beta == 0.0 {
                    out.fill(0.0);
                } else if beta != 1.0 {
                    out.iter_mut().for_each(|v| *v *= beta);
                }
                let mut j = 0;
                while j < n {
                    let width = (n - j).min(ROW_UPDATE_VECTORS * l);
                    let block = &mut out[j..j + width];
                    match width.div_ceil(l) {
                        1 => row_update::<S, 1>(s, alpha, a_i, b, j, block),
                        2 => row_update::<S, 2>(s, alpha, a_i, b, j, block),
                        3 => row_update::<S, 3>(s, alpha, a_i, b, j, block),
                        4 => row_update::<S, 4>(s, alpha, a_i, b, j, block),
                        5 => row_update::<S, 5>(s, alpha, a_i, b, j, block),
                        6 => row_update::<S, 6>(s, alpha, a_i, b, j, block),
                        7 => row_update::<S, 7>(s, alpha, a_i, b, j, block),
                        _ => row_update::<S, 8>(s, alpha, a_i, b, j, block),
                    }
                    j += width;
                }
            }
        }
    }
}

/// `out[q] ← fma(α·a[p], B[p, j0 + q], out[q])` for p in order, `out` (at most `V`
/// vectors, the last one possibly partial) held in registers for the whole sum.
#[inline(always)]
fn row_update<S: Simd, const V: usize>(s: S, alpha: f32, a: &[f32], b: Mat<'_>, j0: usize, out: &mut [f32]) {
    let l = S::LANES;
    let width = out.len();
    debug_assert!(width <= V * l && width > (V - 1) * l);
    let last = width - (V - 1) * l;
    let mut acc = [s.splat(0.0); V];
    for (v, acc_v) in acc.iter_mut().enumerate() {
        *acc_v = math::load_n(s, out, v * l, if v + 1 == V { last } else { l });
    }
    for (p, &a_p) in a.iter().enumerate() {
        let coef = s.splat(alpha * a_p);
        let b_p = &b.data[p * b.rs + j0..p * b.rs + j0 + width];
        for (v, acc_v) in acc.iter_mut().enumerate() {
            let bv = math::load_n(s, b_p, v * l, if v + 1 == V { last } else { l });
            *acc_v = s.mul_add(coef, bv, *acc_v);
        }
    }
    for (v, acc_v) in acc.iter().enumerate() {
        math::store_n(s, *acc_v, out, v * l, if v + 1 == V { last } else { l });
    }
}

/// `C ← α·A·Bᵀ + β·C` for the packing-free path, in tiles of `R` rows × `C` columns
/// (`row(i)`, `col(j)`: rows of A and columns of B, `k` long). Each element is one
/// accumulator summed over the vectors of `k` in order (the tail zero-filled), its lanes
/// then summed together with the tile's others by [`Simd::transpose_sum`] (one
/// transpose for sixteen elements, where a horizontal sum each cost about as much).
/// Every element takes that path whatever `m` is, so a row's result does not depend on
/// how many rows run beside it.
#[inline(always)]
fn dot_tiles<'x, S: Simd, const R: usize, const C: usize>(
    s: S,
    (alpha, beta): (f32, f32),
    (row, m): (&impl Fn(usize) -> &'x [f32], usize),
    (col, n): (&impl Fn(usize) -> &'x [f32], usize),
    k: usize,
    c: &mut MatMut<'_>,
) {
    // Rows per pass: about 32 KiB of A, so those rows and the C columns of B they are
    // multiplied by stay in L1 while every row tile of the pass goes over them.
    let pass = (DOT_TILE_FLOATS / k.max(1) / R * R).max(R);
    // More rows than one pass (a batch of many sequences, a prefill chunk): B outer
    // instead, `OUTER_TILES` column tiles of B (in L1) against every row of A (from L2),
    // then the next ones, so B is read from memory once rather than once per pass
    // (`decode_gemm`, weights from DRAM, two threads, 32 and 64 rows: 153–226 → 227–332
    // GFLOP/s; Qwen2.5-0.5B f32 prefill of 128 tokens with the 128-row products here:
    // 350 → 383 tok/s).
    let (pass, block) = if m > pass { (m, OUTER_TILES * C) } else { (pass, n) };
    let streamed = prefetches(k.saturating_mul(n));
    for (c0, r0) in (0..n)
        .step_by(block)
        .flat_map(|c0| (0..m).step_by(pass).map(move |r0| (c0, r0)))
    {
        let r1 = (r0 + pass).min(m);
        for j in (c0..(c0 + block).min(n)).step_by(C) {
            // Columns past n repeat the last one; their sums are not stored.
            let cols: [&[f32]; C] = {
                let mut cols = [col(j); C];
                for (q, c) in cols.iter_mut().enumerate() {
                    *c = col((j + q).min(n - 1));
                }
                cols
            };
            let width = (n - j).min(C);
            // A B too large to stay in cache (any B on AMD: `prefetch_min_b`): the first
            // row tile asks for the columns PREFETCH_TILES tiles on, a line of each per
            // vector step, since C weight rows read side by side are more streams than the
            // hardware prefetcher keeps up with.
            let ahead = j + PREFETCH_TILES * C;
            let mut ahead = (streamed && ahead + C <= n).then(|| std::array::from_fn(|q| col(ahead + q)));
            for i in (r0..r1).step_by(R) {
                let ahead = ahead.take();
                let sums = match (r1 - i).min(R) {
                    1 => dot_tile::<S, 1, C>(s, alpha, [row(i)], cols, ahead, k),
                    2 if R >= 2 => dot_tile::<S, 2, C>(s, alpha, [row(i), row(i + 1)], cols, ahead, k),
                    3 if R >= 3 => dot_tile::<S, 3, C>(s, alpha, [row(i), row(i + 1), row(i + 2)], cols, ahead, k),
                    4 if R > 4 => dot_tile::<S, 4, C>(s, alpha, std::array::from_fn(|r| row(i + r)), cols, ahead, k),
                    left => {
                        // Rows past the last (5 to 7 of an 8-row tile) repeat it; their sums
                        // are not stored.
                        let mut rows = [row(i); R];
                        for (r, a) in rows.iter_mut().enumerate() {
                            *a = row(i + r.min(left - 1));
                        }
                        dot_tile::<S, R, C>(s, alpha, rows, cols, ahead, k)
                    }
                };
                for r in 0..(r1 - i).min(R) {
                    let out = &mut c.row(i + r)[j..j + width];
                    let d = &sums[r * C..r * C + width];
                    if beta != 0.0 {
                        for (o, &d) in out.iter_mut().zip(d) {
                            *o = d + beta * *o;
                        }
                    } else if let (Ok(out), Ok(d)) = (<&mut [f32; C]>::try_from(&mut *out), <&[f32; C]>::try_from(d)) {
                        // A whole tile's row: one fixed-size copy, no call.
                        *out = *d;
                    } else {
                        out.copy_from_slice(d);
                    }
                }
            }
        }
    }
}

/// The `RR × C` dot products `a[r] · b[c]` of one tile (`RR ≤ R` rows of it) times
/// `alpha`, returned by slot `r·C + c` (see [`dot_tiles`]); each line of `ahead`'s columns
/// is asked for ([`crate::simd::prefetch_at`]) beside the step that loads the same line of
/// `b`'s.
#[inline(always)]
fn dot_tile<S: Simd, const RR: usize, const C: usize>(
    s: S,
    alpha: f32,
    a: [&[f32]; RR],
    b: [&[f32]; C],
    ahead: Option<[&[f32]; C]>,
    k: usize,
) -> [f32; 4 * MAX_TILE_COLS] {
    let l = S::LANES;
    let zero = s.splat(0.0);
    let mut acc = [[zero; C]; RR];
    let (a, b) = (a.map(|x| &x[..k]), b.map(|x| &x[..k]));
    // Blocks of `LINE_FLOATS` (one cache line of each row and column), the steps of a
    // block unrolled over slices of known length, so that no step checks bounds and the
    // prefetch is decided once per block rather than tested on every step (the 4 × 3
    // AVX2 tile ran about ten cycles per step for six cycles of multiply-adds with both
    // in its loop). The products are added in the same order as one step at a time.
    let mut p = 0;
    if l <= LINE_FLOATS && LINE_FLOATS.is_multiple_of(l) {
        // Two loops, with and without the prefetch, on purpose: one loop testing `ahead`
        // once per line measured slower (`decode_gemm small`, 16 rows: lm_head 57 → 40,
        // gate/up 51–58 → 40–55 GFLOP/s, three alternations).
        match ahead {
            Some(ahead) => {
                while p + LINE_FLOATS <= k {
                    for col in &ahead {
                        crate::simd::prefetch_at(col, p);
                    }
                    dot_block::<S, RR, C>(
                        s,
                        &mut acc,
                        a.map(|x| &x[p..p + LINE_FLOATS]),
                        b.map(|x| &x[p..p + LINE_FLOATS]),
                    );
                    p += LINE_FLOATS;
                }
            }
            None => {
                while p + LINE_FLOATS <= k {
                    dot_block::<S, RR, C>(
                        s,
                        &mut acc,
                        a.map(|x| &x[p..p + LINE_FLOATS]),
                        b.map(|x| &x[p..p + LINE_FLOATS]),
                    );
                    p += LINE_FLOATS;
                }
            }
        }
    }
    while p + l <= k {
        dot_step::<S, RR, C>(s, &mut acc, a.map(|x| &x[p..p + l]), b.map(|x| &x[p..p + l]));
        p += l;
    }
    if p < k {
        let mut bv = [zero; C];
        for (v, col) in bv.iter_mut().zip(&b) {
            *v = s.load_partial(&col[p..], 0.0);
        }
        for r in 0..RR {
            let av = s.load_partial(&a[r][p..], 0.0);
            for q in 0..C {
                acc[r][q] = s.mul_add(av, bv[q], acc[r][q]);
            }
        }
    }
    let mut sums = [0.0f32; 4 * MAX_TILE_COLS];
    if l == 1 || RR * C == 1 {
        // One element (a decode row against a streamed weight): one horizontal sum, the
        // same tree as a transpose's slot.
        for r in 0..RR {
            for q in 0..C {
                sums[r * C + q] = alpha * s.reduce_sum(acc[r][q]);
            }
        }
    } else {
        // One transpose per LANES elements of the tile (4 × 4 or 8 × 2 with AVX-512: one;
        // 4 × 3 with AVX2: two), slots past RR·C zeros. Filled by loops whose bounds are
        // constants, so that every index is one once unrolled: an index the compiler cannot
        // resolve (a closure over all MAX_LANES slots) kept the accumulators in memory, stored
        // on every step of the sum.
        assert!(
            RR * C <= sums.len() && sums.len() % l == 0,
            "a dot tile's sums fit whole transposes"
        );
        for start in (0..RR * C).step_by(l) {
            let mut slots = [zero; MAX_LANES];
            for (r, acc_r) in acc.iter().enumerate() {
                for (q, &acc_rq) in acc_r.iter().enumerate() {
                    if let Some(slot) = (r * C + q).checked_sub(start).filter(|&e| e < l) {
                        slots[slot] = acc_rq;
                    }
                }
            }
            s.store(s.mul(s.splat(alpha), s.transpose_sum(&slots[..l])), &mut sums[start..]);
        }
    }
    sums
}

/// Floats of one 64-byte cache line: the block [`dot_tile`] unrolls its steps over.
const LINE_FLOATS: usize = 16;

/// The `LINE_FLOATS / LANES` steps of [`dot_step`] over one block (`a`, `b`: each
/// `LINE_FLOATS` long).
#[inline(always)]
fn dot_block<S: Simd, const RR: usize, const C: usize>(
    s: S,
    acc: &mut [[S::V; C]; RR],
    a: [&[f32]; RR],
    b: [&[f32]; C],
) {
    let l = S::LANES;
    let mut p = 0;
    while p < LINE_FLOATS {
        dot_step::<S, RR, C>(s, acc, a.map(|x| &x[p..p + l]), b.map(|x| &x[p..p + l]));
        p += l;
    }
}

/// One vector step of [`dot_tile`]: `acc[r][q] += a[r] · b[q]` lane by lane (`a`, `b`:
/// one vector each). The vectors of the shorter side are loaded first, then the other
/// side's one at a time: min(RR, C) + 1 registers beside the accumulators (AVX2's 4 × 3
/// tile fills its sixteen exactly). Either order adds the same products to each
/// accumulator in the same order.
#[inline(always)]
fn dot_step<S: Simd, const RR: usize, const C: usize>(
    s: S,
    acc: &mut [[S::V; C]; RR],
    a: [&[f32]; RR],
    b: [&[f32]; C],
) {
    let zero = s.splat(0.0);
    if RR <= C {
        let mut av = [zero; RR];
        for (v, row) in av.iter_mut().zip(&a) {
            *v = s.load(row);
        }
        for q in 0..C {
            let bv = s.load(b[q]);
            for r in 0..RR {
                acc[r][q] = s.mul_add(av[r], bv, acc[r][q]);
            }
        }
    } else {
        let mut bv = [zero; C];
        for (v, col) in bv.iter_mut().zip(&b) {
            *v = s.load(col);
        }
        for r in 0..RR {
            let av = s.load(a[r]);
            for q in 0..C {
                acc[r][q] = s.mul_add(av, bv[q], acc[r][q]);
            }
        }
    }
}
