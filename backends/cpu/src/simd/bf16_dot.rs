//! bf16 × bf16 dot products with AVX-512 BF16 (`vdpbf16ps`): 32 products per instruction,
//! each exact in f32 (two 8-bit significands), summed in f32 lanes. This is how llama.cpp
//! multiplies bf16 weights on such CPUs (its `vec_dot_type` for BF16 is BF16: the
//! activations are rounded to bf16 once per call).
//!
//! [`Bf16Dot::products`] takes the activation rows as bf16 bits and the weight rows as
//! stored (little-endian bf16 bytes, `[N, K]`, K contiguous in both), so neither operand
//! is packed or widened: a tile's sums stay in registers, each weight vector loaded once
//! per tile and used by every activation row, and are summed across lanes sixteen at a
//! time by one transpose ([`Simd::transpose_sum`]: every slot by the same tree, so a sum
//! does not depend on its tile). Up to 4 activation rows (decode) take tiles of 4 × 4 and
//! weight rows a block at a time (a block fits L2); more (prefill) take `OUTER_ROWS`
//! weight rows at a time (in L1) against every activation row (from L2) in tiles of
//! 3 activation rows × 8 weight rows, so each activation vector loaded from L2 serves
//! eight weight rows and the weight is read from memory once.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use super::{Avx512, Simd};

/// Proof that this CPU runs AVX-512F, AVX-512BW and AVX-512 BF16, with AVX2 and FMA (made only by
/// [`Bf16Dot::detect`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bf16Dot(());

/// Bytes of weight rows a block holds (half of a 1 MiB L2).
const BLOCK_BYTES: usize = 512 << 10;
/// Weight rows per block when there is more than one tile of activation rows: one 3 × 8
/// tile's (16 measured within noise on Qwen2.5-0.5B, 5% slower on R1-Distill-Qwen-1.5B).
const OUTER_ROWS: usize = 8;
/// bf16 values per vector.
const STEP: usize = 32;
/// How many tiles of weight rows ahead a decode product asks for (when it prefetches).
const PREFETCH_TILES: usize = 2;

/// How [`tiles`] walks the weight rows.
#[derive(Clone, Copy)]
enum Walk {
    /// A decode step's one tile of activation rows: four weight rows at a time, those
    /// [`PREFETCH_TILES`] tiles on asked for when `prefetch` says so (`prefetcht1`, the
    /// hint [`super::prefetch`] gives, one line of each row per step).
    Decode { prefetch: bool },
    /// More activation rows: eight weight rows at a time where the sums fit registers.
    Outer,
}

impl Bf16Dot {
    /// The token, if this CPU has AVX-512 BF16 (never on other architectures).
    pub(crate) fn detect() -> Option<Bf16Dot> {
        #[cfg(target_arch = "x86_64")]
        {
            // Avx512's own features too: the products sum lanes with its transpose.
            let ok = Avx512::detect().is_some()
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512bf16");
            ok.then_some(Bf16Dot(()))
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    }

    /// `dst[r·cols + c] = Σ_l a[r·k + l] · w_c[l]` for the `rows = a.len() / k` activation
    /// rows `a` (bf16 bits) and the `cols` weight rows of `w` (little-endian bf16, `2k`
    /// bytes each). Each element's sum depends only on its two rows and `k`, never on the
    /// tile or block it falls in.
    /// `prefetch`: a decode product asks for its weight rows ahead of use (as
    /// `kernels/gemm.rs` decides for f32 weights: without it, Qwen2.5-0.5B's BF16 decode on
    /// Zen 4 read its weights at 0.69 of the bandwidth bound, with it 0.92).
    pub(crate) fn products(self, a: &[u16], k: usize, w: &[u8], cols: usize, dst: &mut [f32], prefetch: bool) {
        let rows = a.len().checked_div(k).unwrap_or(0);
        assert!(
            a.len() == rows * k && w.len() == 2 * k * cols && dst.len() == rows * cols,
            "bf16 products: {} activations, {} weight bytes, {} outputs for k = {k}, {cols} columns",
            a.len(),
            w.len(),
            dst.len()
        );
        if k == 0 {
            dst.fill(0.0);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token exists only if avx512f, avx512bw and avx512bf16 were detected;
        // the lengths were asserted above.
        unsafe {
            products_x86(a, rows, k, w, cols, dst, prefetch)
        };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn products_x86(a: &[u16], rows: usize, k: usize, w: &[u8], cols: usize, dst: &mut [f32], prefetch: bool) {
    let row_bytes = 2 * k;
    if rows <= 4 {
        // One tile of activation rows (decode): weight rows a block at a time, four side
        // by side (more streams from memory than that read slower).
        let block = (BLOCK_BYTES / row_bytes).max(4) / 4 * 4;
        for c0 in (0..cols).step_by(block) {
            row_tiles(
                a,
                k,
                w,
                (0, rows),
                (c0, (c0 + block).min(cols), cols),
                Walk::Decode { prefetch },
                dst,
            );
        }
    } else {
        // B outer: `OUTER_ROWS` weight rows (in L1) against every activation row (from L2)
        // in 3 × 8 tiles — each activation vector loaded from L2 serves eight weight rows.
        for c0 in (0..cols).step_by(OUTER_ROWS) {
            let c_end = (c0 + OUTER_ROWS).min(cols);
            for r in (0..rows).step_by(3) {
                row_tiles(a, k, w, (r, (rows - r).min(3)), (c0, c_end, cols), Walk::Outer, dst);
            }
        }
    }
}

/// [`tiles`] of activation rows `r .. r + rt` (`rt ≤ 4`) of `a`, their sums at row `r` of
/// `dst` (a function, not a closure, so it is compiled with the caller's features).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn row_tiles(
    a: &[u16],
    k: usize,
    w: &[u8],
    (r, rt): (usize, usize),
    cols: (usize, usize, usize),
    walk: Walk,
    dst: &mut [f32],
) {
    let (a, dst) = (&a[r * k..(r + rt) * k], &mut dst[r * cols.2..]);
    match rt {
        1 => tiles::<1>(a, k, w, cols, walk, dst),
        2 => tiles::<2>(a, k, w, cols, walk, dst),
        3 => tiles::<3>(a, k, w, cols, walk, dst),
        _ => tiles::<4>(a, k, w, cols, walk, dst),
    }
}

/// `R` activation rows (`a`) against weight rows `c .. c_end` of `w` (`ld` rows in all) in
/// tiles of 8 (with [`Walk::Outer`] and `R ≤ 3`, so the 24 sums stay in registers) or 4,
/// then 2 and 1; the sums go to `dst[r·ld + c]`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tiles<const R: usize>(
    a: &[u16],
    k: usize,
    w: &[u8],
    (mut c, c_end, ld): (usize, usize, usize),
    walk: Walk,
    dst: &mut [f32],
) {
    let row_bytes = 2 * k;
    while c < c_end {
        let left = c_end - c;
        let ct = if matches!(walk, Walk::Outer) && R <= 3 && left >= 8 {
            8
        } else if left >= 4 {
            4
        } else if left >= 2 {
            2
        } else {
            1
        };
        let ahead_c = c + PREFETCH_TILES * ct;
        let ahead = (matches!(walk, Walk::Decode { prefetch: true }) && ahead_c + ct <= ld)
            .then(|| &w[ahead_c * row_bytes..(ahead_c + ct) * row_bytes]);
        let at = Tile {
            a,
            k,
            w: &w[c * row_bytes..(c + ct) * row_bytes],
            ahead,
            dst: &mut dst[c..],
            ld,
        };
        match ct {
            8 => at.run::<R, 8>(),
            4 => at.run::<R, 4>(),
            2 => at.run::<R, 2>(),
            _ => at.run::<R, 1>(),
        }
        c += ct;
    }
}

/// Rows of A per micro-tile of the packed GEMM ([`Bf16Dot::micro`]).
pub(crate) const MR: usize = 12;
/// Columns of B per micro-tile (two vectors).
pub(crate) const NR: usize = 32;

impl Bf16Dot {
    /// The packed GEMM's micro-kernel: `out[i][j] = Σ_p a_p[i] · b_p[j]` over `pairs`
    /// steps, where a step's `a_p` is `MR` bf16 pairs (`a[p·MR + i]`: the values of
    /// depth `2p` in the low half, `2p + 1` in the high half) and `b_p` is `NR` such pairs
    /// (`b[p·NR + j]`). Each step adds both products of a pair to the f32 sum, which stays
    /// in a register for the whole depth: one `vdpbf16ps` per 16 columns of a row.
    pub(crate) fn micro(self, a: &[u32], b: &[u32], pairs: usize, out: &mut [[f32; NR]; MR]) {
        assert!(
            a.len() >= pairs * MR && b.len() >= pairs * NR,
            "bf16 micro-kernel: {} / {} packed pairs for {pairs} steps",
            a.len(),
            b.len()
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token exists only if avx512f, avx512bw and avx512bf16 were detected;
        // the lengths were asserted above.
        unsafe {
            micro_x86(a, b, pairs, out)
        };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn micro_x86(a: &[u32], b: &[u32], pairs: usize, out: &mut [[f32; NR]; MR]) {
    // SAFETY: step `p` reads `b[p·NR .. p·NR + 32]` and `a[p·MR .. p·MR + 12]`, inside the
    // lengths the caller asserted; the stores write whole rows of `out`.
    unsafe {
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for p in 0..pairs {
            let b0 = bh(_mm512_loadu_si512(bp.add(p * NR).cast()));
            let b1 = bh(_mm512_loadu_si512(bp.add(p * NR + 16).cast()));
            for (i, acc) in acc.iter_mut().enumerate() {
                let av = bh(_mm512_set1_epi32(*ap.add(p * MR + i) as i32));
                acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
            }
        }
        for (row, acc) in out.iter_mut().zip(&acc) {
            _mm512_storeu_ps(row.as_mut_ptr(), acc[0]);
            _mm512_storeu_ps(row.as_mut_ptr().add(16), acc[1]);
        }
    }
}

/// Panels to pack: lane `j < lanes` at depth `d < k` is `data[j·ls + d·ds]`; panel `P`
/// holds lanes `P·width ..` for pairs `p0 .. p0 + pairs`, at
/// `out[(P·pairs + p)·width + j % width]` (zeros past `lanes` and past `k`).
pub(crate) struct PanelSrc<'a> {
    pub data: &'a [f32],
    pub ls: usize,
    pub ds: usize,
    pub lanes: usize,
    pub k: usize,
}

impl Bf16Dot {
    /// Packs `lanes.div_ceil(width)` panels (see [`PanelSrc`]) of `width` lanes — a
    /// multiple of 16, or at most 16 —, every value rounded to bf16 exactly as
    /// `r1_core::quant::float::f32_to_bf16` rounds it (nearest even, NaNs made quiet; no
    /// flush of subnormals), 16 values at a time. The source is read along its rows.
    pub(crate) fn pack(self, src: &PanelSrc<'_>, width: usize, p0: usize, pairs: usize, out: &mut [u32]) {
        let panels = src.lanes.div_ceil(width.max(1));
        assert!(
            width > 0 && (width <= 16 || width.is_multiple_of(16)) && out.len() >= panels * pairs * width,
            "bf16 panel shape"
        );
        if src.lanes == 0 || pairs == 0 {
            return;
        }
        let last = (src.lanes - 1) * src.ls + (src.k.max(1) - 1) * src.ds;
        assert!(last < src.data.len(), "bf16 panel exceeds its matrix");
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token exists only if avx512f, avx512bw and avx512bf16 were detected;
        // every element read is at `j·ls + d·ds` for `j < lanes`, `d < k`, asserted inside
        // `data` above; writes stay in `out[..panels·pairs·width]`, asserted above.
        unsafe {
            pack_x86(src, width, p0, pairs, out)
        };
    }
}

impl Bf16Dot {
    /// `out[i] = f32_to_bf16(a[i])` (`r1_core::quant::float`: nearest even, NaNs made
    /// quiet, no flush of subnormals), 16 values at a time.
    pub(crate) fn round(self, a: &[f32], out: &mut [u16]) {
        assert_eq!(
            a.len(),
            out.len(),
            "bf16 rounding: {} values into {}",
            a.len(),
            out.len()
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token exists only if avx512f and avx512bw were detected; the lengths
        // are equal (asserted above).
        unsafe {
            round_x86(a, out)
        };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn round_x86(a: &[f32], out: &mut [u16]) {
    for (src, dst) in a.chunks(16).zip(out.chunks_mut(16)) {
        let m = ((1u32 << src.len()) - 1) as __mmask16;
        // SAFETY: masked loads and stores touch the `src.len()` (≤ 16) values of the chunks.
        unsafe {
            let v = round16(_mm512_maskz_loadu_epi32(m, src.as_ptr().cast()));
            _mm256_mask_storeu_epi16(dst.as_mut_ptr().cast(), m, _mm512_cvtepi32_epi16(v));
        }
    }
}

/// `f32_to_bf16` of 16 lanes, in the low half of each 32-bit lane (high half zero).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn round16(v: __m512i) -> __m512i {
    // SAFETY: plain AVX-512F integer ops; the callers run with avx512f enabled.
    unsafe {
        let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(v), _mm512_set1_epi32(1));
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(v, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))));
        let abs = _mm512_and_si512(v, _mm512_set1_epi32(0x7fff_ffff));
        let nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f80_0000));
        let quiet = _mm512_or_si512(_mm512_srli_epi32::<16>(v), _mm512_set1_epi32(64));
        _mm512_mask_mov_epi32(rounded, nan, _mm512_and_si512(quiet, _mm512_set1_epi32(0xffff)))
    }
}

/// Transposes 16 vectors of 16 32-bit values: afterwards `r[c][i]` is what `r[i][c]` was.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn transpose16(r: &mut [__m512i; 16]) {
    // SAFETY: plain AVX-512F shuffles; the callers run with avx512f enabled.
    unsafe {
        let mut t = [_mm512_setzero_si512(); 16];
        // 32-bit pairs of rows 2i, 2i + 1 within each 128-bit lane.
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        // Lane L of r[4i + m]: column 4L + m of rows 4i .. 4i + 4.
        for i in 0..4 {
            r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
            r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
            r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
            r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
        }
        // Then whole 128-bit lanes: across groups of 4 rows, then of 8.
        for i in 0..2 {
            for j in 0..4 {
                let (x, y) = (r[8 * i + j], r[8 * i + j + 4]);
                t[8 * i + j] = _mm512_shuffle_i32x4::<0x88>(x, y);
                t[8 * i + j + 4] = _mm512_shuffle_i32x4::<0xdd>(x, y);
            }
        }
        for j in 0..8 {
            r[j] = _mm512_shuffle_i32x4::<0x88>(t[j], t[j + 8]);
            r[j + 8] = _mm512_shuffle_i32x4::<0xdd>(t[j], t[j + 8]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn pack_x86(src: &PanelSrc<'_>, width: usize, p0: usize, pairs: usize, out: &mut [u32]) {
    let PanelSrc { data, ls, ds, lanes, k } = *src;
    let ptr = data.as_ptr();
    let optr = out.as_mut_ptr();
    // Lanes go in groups of `group` (16, or the whole panel when narrower), never across
    // a panel's edge; group `j0` lands at `slot(j0, p)`.
    let group = width.min(16);
    let padded = lanes.div_ceil(width) * width;
    let slot = |j0: usize, p: usize| (j0 / width * pairs + p) * width + j0 % width;
    let mask = |n: usize| ((1u32 << n) - 1) as __mmask16;
    // SAFETY (every block below): reads are at `j·ls + d·ds` with `j < lanes`, `d < k`
    // (masked lanes past `lanes` or `k` never fault), inside `data` as `pack` asserted;
    // writes are `group` lanes at a slot inside `out[..panels·pairs·width]`.
    if ls == 1 {
        // Lanes contiguous: row `d` gives a group's lanes at depth `d`, two rows a pair;
        // each pair of rows is read once, from start to end.
        for p in 0..pairs {
            let d = 2 * (p0 + p);
            for j0 in (0..padded).step_by(group) {
                let m = mask(lanes.saturating_sub(j0).min(group));
                let row = |d: usize| unsafe {
                    if d < k {
                        round16(_mm512_maskz_loadu_epi32(m, ptr.add(j0.min(lanes) + d * ds).cast()))
                    } else {
                        _mm512_setzero_si512()
                    }
                };
                let v = _mm512_or_si512(row(d), _mm512_slli_epi32::<16>(row(d + 1)));
                unsafe { _mm512_mask_storeu_epi32(optr.add(slot(j0, p)).cast(), mask(group), v) };
            }
        }
    } else if ds == 1 {
        // Depth contiguous: 32 depths (16 pairs) of each lane of a group, transposed in
        // registers so that each pair's lanes are stored at once; the group's rows are
        // read from start to end side by side.
        let half = |j: usize, d: usize| unsafe {
            let m = mask(k.saturating_sub(d).min(16));
            _mm512_cvtepi32_epi16(round16(_mm512_maskz_loadu_epi32(m, ptr.add(j * ls + d.min(k)).cast())))
        };
        for j0 in (0..padded).step_by(group) {
            for q0 in (0..pairs).step_by(16) {
                let d0 = 2 * (p0 + q0);
                let mut r = [_mm512_setzero_si512(); 16];
                for (jj, r) in r.iter_mut().enumerate().take(group) {
                    if j0 + jj < lanes {
                        *r = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(half(j0 + jj, d0)), half(j0 + jj, d0 + 16));
                    }
                }
                transpose16(&mut r);
                for (q, v) in r.iter().enumerate().take(pairs - q0) {
                    unsafe { _mm512_mask_storeu_epi32(optr.add(slot(j0, q0 + q)).cast(), mask(group), *v) };
                }
            }
        }
    } else {
        for j in 0..padded {
            for p in 0..pairs {
                let at = |d: usize| {
                    if j < lanes && d < k {
                        u32::from(r1_core::quant::float::f32_to_bf16(data[j * ls + d * ds]))
                    } else {
                        0
                    }
                };
                let d = 2 * (p0 + p);
                out[slot(j - j % group, p) + j % group] = at(d) | (at(d + 1) << 16);
            }
        }
    }
}

/// `R` activation rows (`a`, `R·k` bf16 bits) against `C` weight rows (`w`, `C·2k`
/// bytes), the `R × C` sums written at `dst[r·ld + c]`; `ahead`: `C` weight rows to ask
/// for meanwhile, a line of each per step.
#[cfg(target_arch = "x86_64")]
struct Tile<'a> {
    a: &'a [u16],
    k: usize,
    w: &'a [u8],
    ahead: Option<&'a [u8]>,
    dst: &'a mut [f32],
    ld: usize,
}

#[cfg(target_arch = "x86_64")]
impl Tile<'_> {
    // `c` and `r` index the accumulators and the rows' offsets alike.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    fn run<const R: usize, const C: usize>(self) {
        let Tile {
            a,
            k,
            w,
            ahead,
            dst,
            ld,
        } = self;
        assert!(a.len() == R * k && w.len() == C * 2 * k && dst.len() > (R - 1) * ld + C - 1);
        let (ap, wp) = (a.as_ptr(), w.as_ptr() as *const u16);
        // SAFETY: the caller (`products_x86`) runs with avx512f, avx512bw and avx512bf16
        // enabled and detected. Every full load reads 32 values at `l < k - 31` of a row
        // inside `a` or `w` (asserted lengths); the tail loads are masked to the `k % 32`
        // values left, and masked-off lanes never fault.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); C]; R];
            let full = k / STEP * STEP;
            let mut l = 0;
            // Two loops, so that the one without prefetches tests nothing per step.
            if let Some(ahead) = ahead {
                let pp = ahead.as_ptr();
                while l < full {
                    for c in 0..C {
                        _mm_prefetch::<_MM_HINT_T1>(pp.add(c * 2 * k + 2 * l).cast());
                    }
                    full_step(&mut acc, ap, wp, k, l);
                    l += STEP;
                }
            }
            while l < full {
                full_step(&mut acc, ap, wp, k, l);
                l += STEP;
            }
            if l < k {
                let m: __mmask32 = (1u32 << (k - l)) - 1;
                let av: [__m512bh; R] =
                    std::array::from_fn(|r| bh(_mm512_maskz_loadu_epi16(m, ap.add(r * k + l).cast())));
                for c in 0..C {
                    let wv = bh(_mm512_maskz_loadu_epi16(m, wp.add(c * k + l).cast()));
                    for r in 0..R {
                        acc[r][c] = _mm512_dpbf16_ps(acc[r][c], av[r], wv);
                    }
                }
            }
            // Lanes summed sixteen accumulators at a time (one transpose; every slot by
            // the same tree, so a sum does not depend on its tile).
            // SAFETY: `Bf16Dot::detect` checked what `Avx512::detect` checks.
            let s = Avx512::assume_detected();
            let zero = _mm512_setzero_ps();
            let mut sums = [0.0f32; 32];
            let mut slots = [zero; 16];
            for base in (0..R * C).step_by(16) {
                for (i, slot) in slots.iter_mut().enumerate() {
                    let e = base + i;
                    *slot = if e < R * C { acc[e / C][e % C] } else { zero };
                }
                s.store(s.transpose_sum(&slots), &mut sums[base..]);
            }
            for r in 0..R {
                dst[r * ld..r * ld + C].copy_from_slice(&sums[r * C..r * C + C]);
            }
        }
    }
}

/// One 32-value step of a [`Tile`]: `acc[r][c] += a_r[l..l + 32] · w_c[l..l + 32]`.
///
/// # Safety
/// avx512f, avx512bw and avx512bf16 are enabled in the caller and detected; `ap` holds
/// `R` rows and `wp` `C` rows of `k` values, and `l + 32 ≤ k`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn full_step<const R: usize, const C: usize>(
    acc: &mut [[__m512; C]; R],
    ap: *const u16,
    wp: *const u16,
    k: usize,
    l: usize,
) {
    // SAFETY: the loads read inside the rows (the caller's contract).
    unsafe {
        let av: [__m512bh; R] = std::array::from_fn(|r| bh(_mm512_loadu_si512(ap.add(r * k + l).cast())));
        for c in 0..C {
            let wv = bh(_mm512_loadu_si512(wp.add(c * k + l).cast()));
            for r in 0..R {
                acc[r][c] = _mm512_dpbf16_ps(acc[r][c], av[r], wv);
            }
        }
    }
}

/// 32 bf16 values, as the dot-product instruction takes them.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn bh(v: __m512i) -> __m512bh {
    // SAFETY: both are 512 bits of plain data; every bit pattern is a valid value of each.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

#[cfg(test)]
mod tests {
    use r1_core::quant::float::{bf16_to_f32, f32_to_bf16};

    use super::*;

    #[test]
    fn packing_rounds_as_core_does_in_every_layout() {
        let Some(dot) = Bf16Dot::detect() else {
            eprintln!("skipped: this CPU has no AVX-512 BF16");
            return;
        };
        // Ties both ways, a subnormal, NaNs (one whose payload sits in the dropped half),
        // infinities, and ordinary values.
        let special = [
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::from_bits(0x0000_0001),
            f32::from_bits(0x7f80_0001),
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            -0.0,
        ];
        let (lanes, k) = (29, 37);
        let values: Vec<f32> = (0..lanes * k)
            .map(|i| special.get(i % 29).copied().unwrap_or(i as f32 * 0.37 - 50.0))
            .collect();
        for (width, p0, pairs) in [(16, 0, 19), (32, 3, 16), (12, 0, 17), (32, 0, 1)] {
            // Lanes contiguous (ls = 1), depth contiguous (ds = 1), neither (both strided).
            for (ls, ds, len) in [(1, lanes, lanes * k), (k, 1, lanes * k), (2 * k, 2, 2 * lanes * k)] {
                let data: Vec<f32> = (0..len).map(|i| values[i % values.len()]).collect();
                let src = PanelSrc {
                    data: &data,
                    ls,
                    ds,
                    lanes,
                    k,
                };
                let panels = lanes.div_ceil(width);
                let mut out = vec![u32::MAX; panels * pairs * width];
                dot.pack(&src, width, p0, pairs, &mut out);
                for p in 0..pairs {
                    for j in 0..panels * width {
                        let at = |d: usize| {
                            if j < lanes && d < k {
                                u32::from(f32_to_bf16(data[j * ls + d * ds]))
                            } else {
                                0
                            }
                        };
                        let d = 2 * (p0 + p);
                        assert_eq!(
                            out[(j / width * pairs + p) * width + j % width],
                            at(d) | (at(d + 1) << 16),
                            "width {width} ls {ls} ds {ds}: pair {p} lane {j}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rounding_is_cores_for_every_class_of_value() {
        let Some(dot) = Bf16Dot::detect() else {
            eprintln!("skipped: this CPU has no AVX-512 BF16");
            return;
        };
        // Ties both ways, the largest finite values, subnormals, infinities, NaNs with
        // payloads only in the low half; 37 values, so a partial chunk too.
        let mut a: Vec<f32> = [
            0x3f80_8000u32,
            0x3f81_8000,
            0x3f80_7fff,
            0x7f7f_ffff,
            0xff7f_8000,
            0x0000_0001,
            0x8000_8000,
            0x007f_ffff,
            0x7f80_0000,
            0xff80_0000,
            0x7f80_0001,
            0xffc0_0000,
            0x7fbf_ffff,
        ]
        .into_iter()
        .map(f32::from_bits)
        .collect();
        a.extend((0..24).map(|i| (i as f32 - 11.3) * 0.37));
        let mut got = vec![0u16; a.len()];
        dot.round(&a, &mut got);
        for (x, g) in a.iter().zip(&got) {
            assert_eq!(*g, f32_to_bf16(*x), "{:#010x}", x.to_bits());
        }
    }

    #[test]
    fn products_equal_the_exact_sums_for_every_tile_and_tail() {
        let Some(dot) = Bf16Dot::detect() else {
            eprintln!("skipped: this CPU has no AVX-512 BF16");
            return;
        };
        let mut seed = 7u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        };
        for (rows, cols, k) in [
            (1, 1, 1),
            (1, 9, 31),
            (3, 5, 33),
            (5, 7, 64),
            (9, 13, 100),
            (2, 600, 300),
        ] {
            let a: Vec<u16> = (0..rows * k).map(|_| f32_to_bf16(next())).collect();
            let wv: Vec<u16> = (0..cols * k).map(|_| f32_to_bf16(next())).collect();
            let w: Vec<u8> = wv.iter().flat_map(|h| h.to_le_bytes()).collect();
            let mut got = vec![f32::NAN; rows * cols];
            dot.products(&a, k, &w, cols, &mut got, false);
            let mut prefetched = vec![f32::NAN; rows * cols];
            dot.products(&a, k, &w, cols, &mut prefetched, true);
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                prefetched.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "rows {rows} cols {cols} k {k}: prefetching changed a sum"
            );
            for r in 0..rows {
                for c in 0..cols {
                    let want: f64 = (0..k)
                        .map(|l| f64::from(bf16_to_f32(a[r * k + l])) * f64::from(bf16_to_f32(wv[c * k + l])))
                        .sum();
                    let g = f64::from(got[r * cols + c]);
                    assert!(
                        (g - want).abs() <= 1e-6 * (k as f64) + 1e-7,
                        "rows {rows} cols {cols} k {k}: ({r}, {c}) is {g}, exactly {want}"
                    );
                }
            }
        }
    }
}
