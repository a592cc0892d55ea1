//! Q8_0, Q4_0 and Q5_0 weight rows repacked sixteen at a time, so that AVX-512 VNNI sums
//! sixteen rows in the sixteen 32-bit lanes of one register with no reduction, reading
//! the weights as one sequential stream (llama.cpp repacks Q4_0 the same way for its
//! x86 kernels, eight rows at a time). AVX2 (with F16C) takes the same groups as two
//! halves of eight rows, `maddubs` + `madd` in place of `dpbusd`, and gives the same bits.
//!
//! The stored layout ([`IntIsa::dot8_q8`]'s input) keeps each row's blocks together: a
//! decode step that dots eight rows side by side reads eight streams at once, which the
//! hardware prefetcher follows badly, and needs one horizontal reduction per block. A
//! packed group holds sixteen consecutive rows of `nb` blocks in the same number of
//! bytes, block after block, each block's scales right after its levels (one stream: with
//! the scales of a group kept apart, a second stream, the 1.5B shape's Q4_0 decode was
//! 14% slower):
//!
//! - block `b`'s levels, `levels_bytes(kind)` bytes at `b · (levels_bytes + 32)`: vectors
//!   of 64 bytes whose byte `4i + e` belongs to row `i` (its 32-bit lane), element `e` of
//!   a four-element chunk:
//!   - Q8_0: eight vectors, vector `c` the quants `4c..4c+4` of each row, stored as
//!     `x + 128` (u8, what `dpbusd` takes; the sum then takes `128 · Σa` off);
//!   - Q4_0: four vectors of the block's nibble bytes `4c..4c+4` of each row, as stored:
//!     the low nibbles are chunk `c` (elements `4c..`), the high ones chunk `c + 4`
//!     (elements `16 + 4c..`), unsigned levels with bias 8;
//!   - Q5_0: Q4_0's four vectors, then eight 64-bit masks, mask `c` holding bit 4 of
//!     chunk `c`'s levels (bit `4i + e` for row `i`, element `e`), bias 16;
//! - then the block's scales: the sixteen rows' f16 scales (32 bytes).
//!
//! [`dot16`] takes one group and `R` Q8_0 activation rows: per block the levels are
//! decoded once (Q4_0, Q5_0) for all `R` rows, each row's four-quant words are broadcast
//! to every lane, and eight `dpbusd` give the sixteen rows' exact block sums; then each
//! lane takes `quant::vec_dot`'s f32 steps in its order, as [`IntIsa::dot8_q8`] does — so
//! the outputs are the same bits.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::int8::{IntIsa, Q8Weight};

/// Weight rows per packed group.
pub(crate) const ROWS: usize = 16;

/// Elements per block.
const BLOCK: usize = 32;

/// How far ahead of the block in use [`dot16`] asks for the weights' bytes: a tile of a
/// decode step is a few short streams, each of which the hardware prefetcher would
/// first have to learn (Qwen2.5-0.5B Q4_0 decode ~70-82 → 83-95 tok/s on a 2-core VM
/// with it; 1, 4, 8 and 16 KiB measured alike).
const PREFETCH_AHEAD: usize = 4096;

/// Bytes of one block's levels in a packed group (sixteen rows).
const fn levels_bytes(kind: Q8Weight) -> usize {
    match kind {
        Q8Weight::Q8_0 => 8 * 64,
        Q8Weight::Q4_0 => 4 * 64,
        Q8Weight::Q5_0 => 4 * 64 + 8 * 8,
    }
}

/// Bytes of a packed group of sixteen rows of `nb` blocks: what the rows take stored.
pub(crate) const fn group_bytes(kind: Q8Weight, nb: usize) -> usize {
    ROWS * nb * kind.block_bytes()
}

/// Whether [`pack`] and the `dot16` kernels run here: AVX-512 with VNNI, or AVX2 with
/// F16C (each 64-byte vector of a group taken as two 256-bit halves, rows 0..8 and
/// 8..16).
pub(crate) fn available(int: IntIsa) -> bool {
    match int {
        #[cfg(target_arch = "x86_64")]
        IntIsa::Vnni(_) => true,
        #[cfg(target_arch = "x86_64")]
        IntIsa::Avx2(_) => is_x86_feature_detected!("f16c"),
        IntIsa::Scalar => false,
    }
}

/// Packs sixteen stored rows `w` (`row_bytes` each, `nb` blocks of `kind` at their start)
/// into `dst` ([`group_bytes`]). Plain byte moves: the packed group holds exactly the
/// stored levels and scales.
pub(crate) fn pack(kind: Q8Weight, w: &[u8], row_bytes: usize, nb: usize, dst: &mut [u8]) {
    let bb = kind.block_bytes();
    let lb = levels_bytes(kind);
    assert!(row_bytes >= nb * bb && w.len() >= ROWS * row_bytes && dst.len() == group_bytes(kind, nb));
    for (b, out) in dst.chunks_exact_mut(lb + 32).enumerate() {
        let (lv, scales) = out.split_at_mut(lb);
        for i in 0..ROWS {
            let block = &w[i * row_bytes + b * bb..i * row_bytes + (b + 1) * bb];
            scales[2 * i..2 * i + 2].copy_from_slice(&block[..2]);
            match kind {
                Q8Weight::Q8_0 => {
                    for (j, &q) in block[2..].iter().enumerate() {
                        lv[64 * (j / 4) + 4 * i + j % 4] = q ^ 0x80;
                    }
                }
                Q8Weight::Q4_0 | Q8Weight::Q5_0 => {
                    let qs = &block[bb - 16..];
                    for (j, &q) in qs.iter().enumerate() {
                        lv[64 * (j / 4) + 4 * i + j % 4] = q;
                    }
                    if kind == Q8Weight::Q5_0 {
                        let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
                        for c in 0..8 {
                            // Chunk c < 4 holds elements 4c..4c+4, chunk c ≥ 4 elements 16 + 4(c − 4)...
                            let first = if c < 4 { 4 * c } else { 16 + 4 * (c - 4) };
                            let bits = (qh >> first) & 0xF;
                            let at = 256 + 8 * c;
                            let mut m = u64::from_le_bytes(lv[at..at + 8].try_into().unwrap_or([0; 8]));
                            m |= u64::from(bits) << (4 * i);
                            lv[at..at + 8].copy_from_slice(&m.to_le_bytes());
                        }
                    }
                }
            }
        }
    }
}

/// The sixteen rows of packed group `g` ([`pack`], `nb` blocks) times `R` Q8_0 activation
/// rows (quants `a`, rows of `32·nb`; block sums `asum` and scales `da`, rows of `nb`):
/// `out[r][i]` is row `i`'s dot product with activation row `r`, the same bits as
/// `quant::vec_dot`. `None` where [`available`] is false.
pub(crate) fn dot16<const R: usize>(
    int: IntIsa,
    kind: Q8Weight,
    g: &[u8],
    nb: usize,
    a: &[i8],
    asum: &[i32],
    da: &[f32],
) -> Option<[[f32; ROWS]; R]> {
    assert!(
        g.len() >= group_bytes(kind, nb) && a.len() >= R * BLOCK * nb && asum.len() >= R * nb && da.len() >= R * nb
    );
    match int {
        // SAFETY: the token proves avx512f/bw/vl/vnni; lengths checked above.
        #[cfg(target_arch = "x86_64")]
        IntIsa::Vnni(_) => Some(unsafe {
            match kind {
                Q8Weight::Q8_0 => dot16_vnni::<R, 0>(g, nb, a, asum, da),
                Q8Weight::Q4_0 => dot16_vnni::<R, 1>(g, nb, a, asum, da),
                Q8Weight::Q5_0 => dot16_vnni::<R, 2>(g, nb, a, asum, da),
            }
        }),
        // SAFETY: the token proves avx2 (and fma), `available` checked f16c; lengths
        // checked above.
        #[cfg(target_arch = "x86_64")]
        IntIsa::Avx2(_) if available(int) => Some(unsafe {
            match kind {
                Q8Weight::Q8_0 => dot16_avx2::<R, 0>(g, nb, a, asum, da),
                Q8Weight::Q4_0 => dot16_avx2::<R, 1>(g, nb, a, asum, da),
                Q8Weight::Q5_0 => dot16_avx2::<R, 2>(g, nb, a, asum, da),
            }
        }),
        _ => None,
    }
}

/// The weight kind of a `dot16_*` kernel's `KIND`: 0, 1, 2 = Q8_0, Q4_0, Q5_0.
const fn kind_of(kind: u8) -> Q8Weight {
    match kind {
        0 => Q8Weight::Q8_0,
        1 => Q8Weight::Q4_0,
        _ => Q8Weight::Q5_0,
    }
}

/// [`dot16`] with VNNI; `KIND` 0, 1, 2 = Q8_0, Q4_0, Q5_0.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vl,avx2")]
fn dot16_vnni<const R: usize, const KIND: u8>(
    g: &[u8],
    nb: usize,
    a: &[i8],
    asum: &[i32],
    da: &[f32],
) -> [[f32; ROWS]; R] {
    let kind = kind_of(KIND);
    let (lb, bias) = (levels_bytes(kind), [128, 8, 16][KIND as usize]);
    let nibbles = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..nb {
        // SAFETY (loads): block b's levels and scales lie inside the group (caller
        // checked its length); four quants at word c of row r's block b inside `a`.
        let p = g[b * (lb + 32)..].as_ptr();
        // The bytes PREFETCH_AHEAD on (past the group too: the next group follows in
        // memory; a prefetch never faults, so the address may lie past the slice).
        for line in (0..lb + 32).step_by(64) {
            // `prefetcht0` is a hint (SSE, x86_64's baseline).
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD + line) as *const i8);
        }
        let lv: [__m512i; 8] = unsafe {
            if KIND == 0 {
                std::array::from_fn(|c| _mm512_loadu_si512(p.add(64 * c) as *const __m512i))
            } else {
                let v: [__m512i; 4] = std::array::from_fn(|c| _mm512_loadu_si512(p.add(64 * c) as *const __m512i));
                let mut lv: [__m512i; 8] = std::array::from_fn(|c| {
                    if c < 4 {
                        _mm512_and_si512(v[c], nibbles)
                    } else {
                        _mm512_and_si512(_mm512_srli_epi16::<4>(v[c - 4]), nibbles)
                    }
                });
                if KIND == 2 {
                    let sixteen = _mm512_set1_epi8(16);
                    for (c, l) in lv.iter_mut().enumerate() {
                        let m = std::ptr::read_unaligned(p.add(256 + 8 * c) as *const u64);
                        *l = _mm512_mask_add_epi8(*l, m, *l, sixteen);
                    }
                }
                lv
            }
        };
        let d = unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.add(lb) as *const __m256i)) };
        for (r, acc) in acc.iter_mut().enumerate() {
            let ap = a[(r * nb + b) * BLOCK..].as_ptr() as *const i32;
            let y = |c: usize| unsafe { _mm512_set1_epi32(std::ptr::read_unaligned(ap.add(c))) };
            let mut s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lv[0], y(0));
            let mut s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lv[1], y(1));
            for c in (2..8).step_by(2) {
                s0 = _mm512_dpbusd_epi32(s0, lv[c], y(c));
                s1 = _mm512_dpbusd_epi32(s1, lv[c + 1], y(c + 1));
            }
            let s = _mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_set1_epi32(bias * asum[r * nb + b]));
            let s = _mm512_cvtepi32_ps(s);
            let t = if KIND == 1 {
                // ggml_vec_dot_q4_0_q8_0: sumi · d_w · d_a, left to right.
                _mm512_mul_ps(_mm512_mul_ps(s, d), _mm512_set1_ps(da[r * nb + b]))
            } else {
                // Q8_0: sumi · (d_w · d_a); Q5_0's (d_w · d_a) · sumi is the same product.
                _mm512_mul_ps(s, _mm512_mul_ps(d, _mm512_set1_ps(da[r * nb + b])))
            };
            *acc = _mm512_add_ps(*acc, t);
        }
    }
    let mut out = [[0.0f32; ROWS]; R];
    for (o, acc) in out.iter_mut().zip(acc) {
        // SAFETY: sixteen f32 fit `o`.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), acc) };
    }
    out
}

/// [`dot16`] with AVX2 (`KIND` as [`dot16_vnni`]): each 64-byte level vector is two
/// halves of eight rows. `maddubs` takes u8 × i8 with saturating pair sums, so Q8_0
/// levels go back to signed (`x`, from the stored `x + 128`) and take `|x| · ±y` (pairs
/// at most 2 · 128 · 127); Q4_0 and Q5_0 levels are below 32. `madd` by ones then gives
/// each row's four-quant sums in its 32-bit lane, so every block sum is the same integer
/// as `dpbusd`'s, and the f32 steps are [`dot16_vnni`]'s, lane by lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot16_avx2<const R: usize, const KIND: u8>(
    g: &[u8],
    nb: usize,
    a: &[i8],
    asum: &[i32],
    da: &[f32],
) -> [[f32; ROWS]; R] {
    let kind = kind_of(KIND);
    let (lb, bias) = (levels_bytes(kind), [0, 8, 16][KIND as usize]);
    let nibbles = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for b in 0..nb {
        // SAFETY (loads): as in `dot16_vnni`.
        let p = g[b * (lb + 32)..].as_ptr();
        for line in (0..lb + 32).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD + line) as *const i8);
        }
        for h in 0..2 {
            let half = |at: usize| unsafe { _mm256_loadu_si256(p.add(at + 32 * h) as *const __m256i) };
            let lv: [__m256i; 8] = if KIND == 0 {
                std::array::from_fn(|c| _mm256_xor_si256(half(64 * c), _mm256_set1_epi8(-128)))
            } else {
                let v: [__m256i; 4] = std::array::from_fn(|c| half(64 * c));
                let mut lv: [__m256i; 8] = std::array::from_fn(|c| {
                    if c < 4 {
                        _mm256_and_si256(v[c], nibbles)
                    } else {
                        _mm256_and_si256(_mm256_srli_epi16::<4>(v[c - 4]), nibbles)
                    }
                });
                if KIND == 2 {
                    for (c, l) in lv.iter_mut().enumerate() {
                        // This half's 32 bits of chunk c's mask, bit j for byte j.
                        let m = unsafe { std::ptr::read_unaligned(p.add(256 + 8 * c + 4 * h) as *const i32) };
                        *l = _mm256_or_si256(*l, super::int8::fifth_bits_avx2(m));
                    }
                }
                lv
            };
            let d = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.add(lb + 16 * h) as *const __m128i)) };
            for (r, acc) in acc.iter_mut().enumerate() {
                let ap = a[(r * nb + b) * BLOCK..].as_ptr() as *const i32;
                let y = |c: usize| unsafe { _mm256_set1_epi32(std::ptr::read_unaligned(ap.add(c))) };
                let pairs = |c: usize| {
                    if KIND == 0 {
                        _mm256_maddubs_epi16(_mm256_sign_epi8(lv[c], lv[c]), _mm256_sign_epi8(y(c), lv[c]))
                    } else {
                        _mm256_maddubs_epi16(lv[c], y(c))
                    }
                };
                // The i16 pair sums of `chunks` chunks added before one `madd` where they
                // cannot overflow: Q4_0's pairs are at most 2 · 15 · 127 (eight chunks
                // below 2^15), Q5_0's 2 · 31 · 127 (four); Q8_0's take a `madd` each.
                let per = [1, 8, 4][KIND as usize];
                let mut sum = _mm256_setzero_si256();
                for c0 in (0..8).step_by(per) {
                    let mut p = pairs(c0);
                    for c in c0 + 1..c0 + per {
                        p = _mm256_add_epi16(p, pairs(c));
                    }
                    sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p, ones));
                }
                let s = _mm256_sub_epi32(sum, _mm256_set1_epi32(bias * asum[r * nb + b]));
                let s = _mm256_cvtepi32_ps(s);
                let t = if KIND == 1 {
                    _mm256_mul_ps(_mm256_mul_ps(s, d), _mm256_set1_ps(da[r * nb + b]))
                } else {
                    _mm256_mul_ps(s, _mm256_mul_ps(d, _mm256_set1_ps(da[r * nb + b])))
                };
                acc[h] = _mm256_add_ps(acc[h], t);
            }
        }
    }
    let mut out = [[0.0f32; ROWS]; R];
    for (o, acc) in out.iter_mut().zip(acc) {
        for (h, acc) in acc.into_iter().enumerate() {
            // SAFETY: eight f32 fit each half of `o`.
            unsafe { _mm256_storeu_ps(o[8 * h..].as_mut_ptr(), acc) };
        }
    }
    out
}

/// Bytes of one Q4_K block of sixteen packed rows: 32 level vectors of 64 bytes, the
/// rows' `d` and `dmin` (f16, 32 bytes each), then their eight sub-block scales and
/// eight mins as bytes (`16·j + i` for row `i`, 128 bytes each).
const Q4K_BLOCK: usize = 32 * 64 + 64 + 256;

/// Elements of a Q4_K block.
const QK_K: usize = 256;

/// Bytes of a packed Q4_K group of sixteen rows of `nb` blocks (148 per row and block,
/// against 144 stored: the scales and mins unpacked from their six bits).
pub(crate) const fn q4k_group_bytes(nb: usize) -> usize {
    nb * Q4K_BLOCK
}

/// Packs sixteen stored Q4_K rows `w` (`row_bytes` each, `nb` blocks at their start) into
/// `dst` ([`q4k_group_bytes`]). Level vector `8q + l` of a block holds, in row `i`'s
/// lane, elements `64q + l + 8t` (`t` = 0..4, low nibbles: sub-block `2q`) and
/// `64q + 32 + l + 8t` (high nibbles: sub-block `2q + 1`): the four elements of a lane
/// share `index mod 8`, which is how ggml's scalar Q4_K dot product keeps its eight
/// lanes apart, so `dpbusd` sums within one of them.
pub(crate) fn pack_q4k(w: &[u8], row_bytes: usize, nb: usize, dst: &mut [u8]) {
    use r1_core::quant::q4_k;
    for_row_blocks::<{ q4_k::BLOCK_BYTES }>(w, row_bytes, nb, dst, Q4K_BLOCK, |out, i, block| {
        for q in 0..4 {
            for l in 0..8 {
                for t in 0..4 {
                    let e = 64 * q + l + 8 * t;
                    out[64 * (8 * q + l) + 4 * i + t] = q4_k::level(block, e) | q4_k::level(block, e + 32) << 4;
                }
            }
        }
        out[2048 + 2 * i..2048 + 2 * i + 2].copy_from_slice(&block[..2]);
        out[2080 + 2 * i..2080 + 2 * i + 2].copy_from_slice(&block[2..4]);
        for j in 0..8 {
            let (sc, m) = q4_k::scale_min(block, j);
            out[2112 + 16 * j + i] = sc;
            out[2240 + 16 * j + i] = m;
        }
    });
}

/// Calls `f(out, i, block)` for each packed block `out` (`packed` bytes) of `dst` and
/// each of the sixteen stored rows `i` of `w` (`row_bytes` each, `nb` blocks of `N`
/// bytes at their start), `block` being row `i`'s stored block at that index.
fn for_row_blocks<const N: usize>(
    w: &[u8],
    row_bytes: usize,
    nb: usize,
    dst: &mut [u8],
    packed: usize,
    mut f: impl FnMut(&mut [u8], usize, &[u8; N]),
) {
    assert!(row_bytes >= nb * N && w.len() >= ROWS * row_bytes && dst.len() == nb * packed);
    for (b, out) in dst.chunks_exact_mut(packed).enumerate() {
        for i in 0..ROWS {
            let at = i * row_bytes + b * N;
            if let Some(block) = w[at..].first_chunk::<N>() {
                f(out, i, block);
            }
        }
    }
}

/// An activation row prepared for a packed K-quant kernel: `dot16` is that kernel
/// ([`dot16_q4k`], [`dot16_q6k`]) on a group of sixteen packed rows and `R` such rows.
pub(crate) trait PackedActivation: Sized {
    fn dot16<const R: usize>(int: IntIsa, g: &[u8], nb: usize, acts: [&Self; R]) -> Option<[[f32; ROWS]; R]>;
}

impl PackedActivation for Q4kActivation {
    fn dot16<const R: usize>(int: IntIsa, g: &[u8], nb: usize, acts: [&Self; R]) -> Option<[[f32; ROWS]; R]> {
        dot16_q4k(int, g, nb, acts)
    }
}

impl PackedActivation for Q6kActivation {
    fn dot16<const R: usize>(int: IntIsa, g: &[u8], nb: usize, acts: [&Self; R]) -> Option<[[f32; ROWS]; R]> {
        dot16_q6k(int, g, nb, acts)
    }
}

/// One Q8_K activation row as [`dot16_q4k`] takes it: per block, the quants in the order
/// of the packed level vectors (word `8j + l` = quants `32j + l + 8t`, `t` = 0..4), the
/// eight sub-block sums `bsum(2j) + bsum(2j + 1)` and the scale.
pub(crate) struct Q4kActivation {
    pub words: Vec<i8>,
    pub sub_sums: Vec<i32>,
    pub scales: Vec<f32>,
}

impl Q4kActivation {
    /// From Q8_K blocks.
    pub(crate) fn new(blocks: &[r1_core::quant::q8_k::Block]) -> Q4kActivation {
        use r1_core::quant::q8_k;
        let mut words = Vec::with_capacity(QK_K * blocks.len());
        let mut sub_sums = Vec::with_capacity(8 * blocks.len());
        for y in blocks {
            for j in 0..8 {
                for l in 0..8 {
                    words.extend((0..4).map(|t| q8_k::quant(y, 32 * j + l + 8 * t)));
                }
                sub_sums.push(i32::from(q8_k::bsum(y, 2 * j)) + i32::from(q8_k::bsum(y, 2 * j + 1)));
            }
        }
        Q4kActivation {
            words,
            sub_sums,
            scales: blocks.iter().map(q8_k::scale).collect(),
        }
    }
}

/// The sixteen Q4_K rows of packed group `g` ([`pack_q4k`], `nb` blocks) times `R` Q8_K
/// activation rows (`acts`, blocks `0..nb` of each), each block's levels unpacked once for
/// all `R`: row `i`'s dot product with activation `r` in lane `i` of result `r`, the same
/// bits as `quant::vec_dot` (its eight f32 lane sums, the mins term, then the lanes added
/// in order). `None` where [`available`] is false.
pub(crate) fn dot16_q4k<const R: usize>(
    int: IntIsa,
    g: &[u8],
    nb: usize,
    acts: [&Q4kActivation; R],
) -> Option<[[f32; ROWS]; R]> {
    assert!(
        g.len() >= q4k_group_bytes(nb)
            && acts
                .iter()
                .all(|a| a.words.len() >= QK_K * nb && a.sub_sums.len() >= 8 * nb && a.scales.len() >= nb)
    );
    match int {
        // SAFETY: the token proves avx512f/bw/vl/vnni; lengths checked above.
        #[cfg(target_arch = "x86_64")]
        IntIsa::Vnni(_) => Some(unsafe { dot16_q4k_vnni::<R>(g, nb, acts) }),
        // SAFETY: the token proves avx2 (and fma), `available` checked f16c; lengths
        // checked above.
        #[cfg(target_arch = "x86_64")]
        IntIsa::Avx2(_) if available(int) => Some(unsafe { dot16_q4k_avx2::<R>(g, nb, acts) }),
        _ => None,
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vl,avx2")]
fn dot16_q4k_vnni<const R: usize>(g: &[u8], nb: usize, acts: [&Q4kActivation; R]) -> [[f32; ROWS]; R] {
    let nibbles = _mm512_set1_epi8(0x0F);
    let zero = _mm512_setzero_si512();
    let mut sums = [[_mm512_setzero_ps(); 8]; R];
    let mut sumf = [_mm512_setzero_ps(); R];
    for b in 0..nb {
        let p = g[b * Q4K_BLOCK..].as_ptr();
        for line in (0..Q4K_BLOCK).step_by(64) {
            // `prefetcht0` is a hint (SSE, x86_64's baseline); see `dot16_vnni`.
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD + line) as *const i8);
        }
        let aw: [*const i32; R] = std::array::from_fn(|r| acts[r].words[QK_K * b..].as_ptr() as *const i32);
        // SAFETY (loads): the block's bytes lie inside the group and its 64 activation
        // words inside each row's (caller checked the lengths).
        let y = |r: usize, w: usize| unsafe { _mm512_set1_epi32(std::ptr::read_unaligned(aw[r].add(w))) };
        let bytes = |at: usize| unsafe { _mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(at) as *const __m128i)) };
        let mut lanes = [[zero; 8]; R];
        for q in 0..4 {
            let (s_lo, s_hi) = (bytes(2112 + 32 * q), bytes(2112 + 32 * q + 16));
            for l in 0..8 {
                let v = unsafe { _mm512_loadu_si512(p.add(64 * (8 * q + l)) as *const __m512i) };
                let (v_lo, v_hi) = (
                    _mm512_and_si512(v, nibbles),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibbles),
                );
                for (r, lanes) in lanes.iter_mut().enumerate() {
                    let lo = _mm512_dpbusd_epi32(zero, v_lo, y(r, 16 * q + l));
                    let hi = _mm512_dpbusd_epi32(zero, v_hi, y(r, 16 * q + 8 + l));
                    lanes[l] = _mm512_add_epi32(
                        lanes[l],
                        _mm512_add_epi32(_mm512_mullo_epi32(lo, s_lo), _mm512_mullo_epi32(hi, s_hi)),
                    );
                }
            }
        }
        let (dw, dmin) = unsafe {
            (
                _mm512_cvtph_ps(_mm256_loadu_si256(p.add(2048) as *const __m256i)),
                _mm512_cvtph_ps(_mm256_loadu_si256(p.add(2080) as *const __m256i)),
            )
        };
        for r in 0..R {
            let mut summs = zero;
            for j in 0..8 {
                summs = _mm512_add_epi32(
                    summs,
                    _mm512_mullo_epi32(bytes(2240 + 16 * j), _mm512_set1_epi32(acts[r].sub_sums[8 * b + j])),
                );
            }
            let da = _mm512_set1_ps(acts[r].scales[b]);
            let d = _mm512_mul_ps(dw, da);
            for (s, lane) in sums[r].iter_mut().zip(lanes[r]) {
                *s = _mm512_add_ps(*s, _mm512_mul_ps(d, _mm512_cvtepi32_ps(lane)));
            }
            sumf[r] = _mm512_sub_ps(
                sumf[r],
                _mm512_mul_ps(_mm512_mul_ps(dmin, da), _mm512_cvtepi32_ps(summs)),
            );
        }
    }
    let mut out = [[0.0f32; ROWS]; R];
    for r in 0..R {
        let mut total = sumf[r];
        for s in sums[r] {
            total = _mm512_add_ps(total, s);
        }
        // SAFETY: sixteen f32 fit a row of `out`.
        unsafe { _mm512_storeu_ps(out[r].as_mut_ptr(), total) };
    }
    out
}

/// [`dot16_q4k`] with AVX2, half a level vector (eight rows) at a time: `maddubs` of
/// the nibbles (below 16) by the activation words, then `madd` by the sub-block's scale
/// in both 16-bit halves of each lane, which is `scale · Σ` of the lane's four products
/// as [`dot16_q4k_vnni`] computes it with `dpbusd` and `mullo`; the f32 steps are its own.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot16_q4k_avx2<const R: usize>(g: &[u8], nb: usize, acts: [&Q4kActivation; R]) -> [[f32; ROWS]; R] {
    let nibbles = _mm256_set1_epi8(0x0F);
    let zero = _mm256_setzero_si256();
    let mut sums = [[[_mm256_setzero_ps(); 8]; 2]; R];
    let mut sumf = [[_mm256_setzero_ps(); 2]; R];
    for b in 0..nb {
        let p = g[b * Q4K_BLOCK..].as_ptr();
        for line in (0..Q4K_BLOCK).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD + line) as *const i8);
        }
        let aw: [*const i32; R] = std::array::from_fn(|r| acts[r].words[QK_K * b..].as_ptr() as *const i32);
        // SAFETY (loads): as in `dot16_q4k_vnni`.
        let y = |r: usize, w: usize| unsafe { _mm256_set1_epi32(std::ptr::read_unaligned(aw[r].add(w))) };
        for h in 0..2 {
            // Eight rows' bytes at `at` (rows 8h..8h + 8) as i32 lanes.
            let bytes =
                |at: usize| unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(at + 8 * h) as *const __m128i)) };
            // A scale in both 16-bit halves of its lane (for `madd`).
            let pair = |at: usize| {
                let s = bytes(at);
                _mm256_or_si256(s, _mm256_slli_epi32::<16>(s))
            };
            let mut lanes = [[zero; 8]; R];
            for q in 0..4 {
                let (s_lo, s_hi) = (pair(2112 + 32 * q), pair(2112 + 32 * q + 16));
                for l in 0..8 {
                    let v = unsafe { _mm256_loadu_si256(p.add(64 * (8 * q + l) + 32 * h) as *const __m256i) };
                    let (v_lo, v_hi) = (
                        _mm256_and_si256(v, nibbles),
                        _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibbles),
                    );
                    for (r, lanes) in lanes.iter_mut().enumerate() {
                        let lo = _mm256_madd_epi16(_mm256_maddubs_epi16(v_lo, y(r, 16 * q + l)), s_lo);
                        let hi = _mm256_madd_epi16(_mm256_maddubs_epi16(v_hi, y(r, 16 * q + 8 + l)), s_hi);
                        lanes[l] = _mm256_add_epi32(lanes[l], _mm256_add_epi32(lo, hi));
                    }
                }
            }
            let (dw, dmin) = unsafe {
                (
                    _mm256_cvtph_ps(_mm_loadu_si128(p.add(2048 + 16 * h) as *const __m128i)),
                    _mm256_cvtph_ps(_mm_loadu_si128(p.add(2080 + 16 * h) as *const __m128i)),
                )
            };
            for r in 0..R {
                let mut summs = zero;
                for j in 0..8 {
                    summs = _mm256_add_epi32(
                        summs,
                        _mm256_mullo_epi32(bytes(2240 + 16 * j), _mm256_set1_epi32(acts[r].sub_sums[8 * b + j])),
                    );
                }
                let da = _mm256_set1_ps(acts[r].scales[b]);
                let d = _mm256_mul_ps(dw, da);
                for (s, lane) in sums[r][h].iter_mut().zip(lanes[r]) {
                    *s = _mm256_add_ps(*s, _mm256_mul_ps(d, _mm256_cvtepi32_ps(lane)));
                }
                sumf[r][h] = _mm256_sub_ps(
                    sumf[r][h],
                    _mm256_mul_ps(_mm256_mul_ps(dmin, da), _mm256_cvtepi32_ps(summs)),
                );
            }
        }
    }
    let mut out = [[0.0f32; ROWS]; R];
    for r in 0..R {
        for h in 0..2 {
            let mut total = sumf[r][h];
            for s in sums[r][h] {
                total = _mm256_add_ps(total, s);
            }
            // SAFETY: eight f32 fit each half of a row of `out`.
            unsafe { _mm256_storeu_ps(out[r][8 * h..].as_mut_ptr(), total) };
        }
    }
    out
}

/// Bytes of one Q6_K block of sixteen packed rows: 64 level vectors of 64 bytes (levels
/// as i8, −32..=31), eight vectors of the rows' sub-block scale pairs (i16), eight of
/// the offset corrections (i32), then the rows' `d` (f16).
const Q6K_BLOCK: usize = 64 * 64 + 8 * 64 + 8 * 64 + 32;

/// Bytes of a packed Q6_K group of sixteen rows of `nb` blocks (322 per row and block
/// against 210 stored: levels widened to bytes, scales and offsets laid out for the
/// kernel; packed for prefill only, where it is computed on rather than streamed).
pub(crate) const fn q6k_group_bytes(nb: usize) -> usize {
    nb * Q6K_BLOCK
}

/// Packs sixteen stored Q6_K rows `w` (`row_bytes` each, `nb` blocks at their start) into
/// `dst` ([`q6k_group_bytes`]). Level vector `8p + l` of a block holds, in row `i`'s
/// lane, elements `32p + l`, `32p + l + 8` (sub-block `2p`) and `32p + 16 + l`,
/// `32p + 24 + l` (sub-block `2p + 1`): all of index `l` mod 8 (ggml's lanes), two per
/// sub-block, so `maddubs` pairs share a scale and `madd` applies the two scales. The
/// activations come as `a + 128` (u8), so the kernel takes off `128 · Σ scale · level`,
/// per row, lane and block: the correction vectors.
pub(crate) fn pack_q6k(w: &[u8], row_bytes: usize, nb: usize, dst: &mut [u8]) {
    use r1_core::quant::q6_k;
    for_row_blocks::<{ q6_k::BLOCK_BYTES }>(w, row_bytes, nb, dst, Q6K_BLOCK, |out, i, block| {
        let mut corr = [0i32; 8];
        for p in 0..8 {
            for l in 0..8 {
                for (t, e) in [32 * p + l, 32 * p + l + 8, 32 * p + 16 + l, 32 * p + 24 + l]
                    .into_iter()
                    .enumerate()
                {
                    let level = q6_k::level(block, e);
                    out[64 * (8 * p + l) + 4 * i + t] = level as u8;
                    corr[l] += 128 * i32::from(q6_k::sub_scale(block, e / 16)) * i32::from(level);
                }
            }
            let pair = [q6_k::sub_scale(block, 2 * p), q6_k::sub_scale(block, 2 * p + 1)].map(i16::from);
            out[4096 + 64 * p + 4 * i..4096 + 64 * p + 4 * i + 2].copy_from_slice(&pair[0].to_le_bytes());
            out[4096 + 64 * p + 4 * i + 2..4096 + 64 * p + 4 * i + 4].copy_from_slice(&pair[1].to_le_bytes());
        }
        for (l, c) in corr.iter().enumerate() {
            out[4608 + 64 * l + 4 * i..4608 + 64 * l + 4 * i + 4].copy_from_slice(&c.to_le_bytes());
        }
        out[5120 + 2 * i..5120 + 2 * i + 2].copy_from_slice(&block[208..210]);
    });
}

/// One Q8_K activation row as [`dot16_q6k`] takes it: per block, word `8p + l` the
/// quants `32p + l`, `+ 8`, `+ 16`, `+ 24` plus 128 (u8), and the scale.
pub(crate) struct Q6kActivation {
    pub words: Vec<u8>,
    pub scales: Vec<f32>,
}

impl Q6kActivation {
    /// From Q8_K blocks.
    pub(crate) fn new(blocks: &[r1_core::quant::q8_k::Block]) -> Q6kActivation {
        use r1_core::quant::q8_k;
        let mut words = Vec::with_capacity(QK_K * blocks.len());
        for y in blocks {
            for p in 0..8 {
                for l in 0..8 {
                    words.extend([0, 8, 16, 24].map(|o| (q8_k::quant(y, 32 * p + l + o) as u8) ^ 0x80));
                }
            }
        }
        Q6kActivation {
            words,
            scales: blocks.iter().map(q8_k::scale).collect(),
        }
    }
}

/// The sixteen Q6_K rows of packed group `g` ([`pack_q6k`], `nb` blocks) times `R` Q8_K
/// activation rows: `out[r][i]` is row `i`'s dot product with activation row `r`, the
/// same bits as `quant::vec_dot` (eight f32 lane sums, added in order from zero).
/// `None` where [`available`] is false.
pub(crate) fn dot16_q6k<const R: usize>(
    int: IntIsa,
    g: &[u8],
    nb: usize,
    acts: [&Q6kActivation; R],
) -> Option<[[f32; ROWS]; R]> {
    assert!(g.len() >= q6k_group_bytes(nb) && acts.iter().all(|a| a.words.len() >= QK_K * nb && a.scales.len() >= nb));
    match int {
        // SAFETY: the token proves avx512f/bw/vl/vnni; lengths checked above.
        #[cfg(target_arch = "x86_64")]
        IntIsa::Vnni(_) => Some(unsafe { dot16_q6k_vnni::<R>(g, nb, acts) }),
        // SAFETY: the token proves avx2 (and fma), `available` checked f16c; lengths
        // checked above.
        #[cfg(target_arch = "x86_64")]
        IntIsa::Avx2(_) if available(int) => Some(unsafe { dot16_q6k_avx2::<R>(g, nb, acts) }),
        _ => None,
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vl,avx2")]
fn dot16_q6k_vnni<const R: usize>(g: &[u8], nb: usize, acts: [&Q6kActivation; R]) -> [[f32; ROWS]; R] {
    let zero = _mm512_setzero_si512();
    let mut sums = [[_mm512_setzero_ps(); 8]; R];
    for b in 0..nb {
        let p = g[b * Q6K_BLOCK..].as_ptr();
        let aw: [*const i32; R] = std::array::from_fn(|r| acts[r].words[QK_K * b..].as_ptr() as *const i32);
        // SAFETY (loads): the block's bytes lie inside the group and its 64 activation
        // words inside each row's (caller checked the lengths).
        let y = |r: usize, w: usize| unsafe { _mm512_set1_epi32(std::ptr::read_unaligned(aw[r].add(w))) };
        let vec = |at: usize| unsafe { _mm512_loadu_si512(p.add(at) as *const __m512i) };
        let mut lanes = [[zero; 8]; R];
        for q in 0..8 {
            let sc = vec(4096 + 64 * q);
            for l in 0..8 {
                let v = vec(64 * (8 * q + l));
                for (r, lanes) in lanes.iter_mut().enumerate() {
                    let pairs = _mm512_maddubs_epi16(y(r, 8 * q + l), v);
                    lanes[l] = _mm512_add_epi32(lanes[l], _mm512_madd_epi16(pairs, sc));
                }
            }
        }
        let dw = unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.add(5120) as *const __m256i)) };
        for r in 0..R {
            let d = _mm512_mul_ps(dw, _mm512_set1_ps(acts[r].scales[b]));
            for (l, s) in sums[r].iter_mut().enumerate() {
                let lane = _mm512_sub_epi32(lanes[r][l], vec(4608 + 64 * l));
                *s = _mm512_add_ps(*s, _mm512_mul_ps(d, _mm512_cvtepi32_ps(lane)));
            }
        }
    }
    let mut out = [[0.0f32; ROWS]; R];
    for r in 0..R {
        let mut f = _mm512_setzero_ps();
        for s in sums[r] {
            f = _mm512_add_ps(f, s);
        }
        // SAFETY: sixteen f32 fit `out[r]`.
        unsafe { _mm512_storeu_ps(out[r].as_mut_ptr(), f) };
    }
    out
}

/// [`dot16_q6k`] with AVX2, half a level vector (eight rows) at a time: the same
/// `maddubs` (activations + 128 as u8, levels as i8: pairs at most 2 · 255 · 32) and
/// `madd` by the scale pairs as [`dot16_q6k_vnni`], and its f32 steps.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot16_q6k_avx2<const R: usize>(g: &[u8], nb: usize, acts: [&Q6kActivation; R]) -> [[f32; ROWS]; R] {
    let zero = _mm256_setzero_si256();
    let mut sums = [[[_mm256_setzero_ps(); 8]; R]; 2];
    for b in 0..nb {
        let p = g[b * Q6K_BLOCK..].as_ptr();
        let aw: [*const i32; R] = std::array::from_fn(|r| acts[r].words[QK_K * b..].as_ptr() as *const i32);
        // SAFETY (loads): as in `dot16_q6k_vnni`.
        let y = |r: usize, w: usize| unsafe { _mm256_set1_epi32(std::ptr::read_unaligned(aw[r].add(w))) };
        for (h, sums) in sums.iter_mut().enumerate() {
            let vec = |at: usize| unsafe { _mm256_loadu_si256(p.add(at + 32 * h) as *const __m256i) };
            let mut lanes = [[zero; 8]; R];
            for q in 0..8 {
                let sc = vec(4096 + 64 * q);
                for l in 0..8 {
                    let v = vec(64 * (8 * q + l));
                    for (r, lanes) in lanes.iter_mut().enumerate() {
                        let pairs = _mm256_maddubs_epi16(y(r, 8 * q + l), v);
                        lanes[l] = _mm256_add_epi32(lanes[l], _mm256_madd_epi16(pairs, sc));
                    }
                }
            }
            let dw = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.add(5120 + 16 * h) as *const __m128i)) };
            for r in 0..R {
                let d = _mm256_mul_ps(dw, _mm256_set1_ps(acts[r].scales[b]));
                for (l, s) in sums[r].iter_mut().enumerate() {
                    let lane = _mm256_sub_epi32(lanes[r][l], vec(4608 + 64 * l));
                    *s = _mm256_add_ps(*s, _mm256_mul_ps(d, _mm256_cvtepi32_ps(lane)));
                }
            }
        }
    }
    let mut out = [[0.0f32; ROWS]; R];
    for r in 0..R {
        for h in 0..2 {
            let mut f = _mm256_setzero_ps();
            for s in sums[h][r] {
                f = _mm256_add_ps(f, s);
            }
            // SAFETY: eight f32 fit each half of `out[r]`.
            unsafe { _mm256_storeu_ps(out[r][8 * h..].as_mut_ptr(), f) };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use r1_core::quant::{self, GgmlType};

    fn ty(kind: Q8Weight) -> GgmlType {
        match kind {
            Q8Weight::Q8_0 => GgmlType::Q8_0,
            Q8Weight::Q4_0 => GgmlType::Q4_0,
            Q8Weight::Q5_0 => GgmlType::Q5_0,
        }
    }

    /// The integer sets of this CPU that run the packed kernels (AVX2, and AVX-512 VNNI
    /// where the CPU has it), each tested.
    fn packed_sets() -> Vec<IntIsa> {
        let sets: Vec<IntIsa> = crate::simd::SimdLevel::available()
            .into_iter()
            .filter_map(crate::simd::Isa::new)
            .map(IntIsa::for_isa)
            .filter(|&i| available(i))
            .collect();
        if sets.is_empty() {
            eprintln!("skipped: this CPU has neither AVX2 with F16C nor AVX-512 VNNI (the packed kernels' levels)");
        }
        sets
    }

    /// A deterministic value in −scale..scale.
    fn value(i: usize, salt: u64, scale: f32) -> f32 {
        let x = (i as u64 ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
        ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }

    #[test]
    fn packed_q4_k_groups_give_vec_dot_bit_for_bit() {
        for int in packed_sets() {
            for nb in [1usize, 2, 6] {
                let k = nb * QK_K;
                let row_bytes = GgmlType::Q4_K.row_bytes(k as u64).unwrap();
                let mut w = vec![0u8; ROWS * row_bytes];
                for i in 0..ROWS {
                    let scale = if i == 0 { 1.0 } else { 0.01 * (i as f32 + 1.0) };
                    let row: Vec<f32> = (0..k)
                        .map(|j| value(i * k + j, 3, scale) + if i == 1 { 0.5 } else { 0.0 })
                        .collect();
                    quant::quantize_into(GgmlType::Q4_K, &row, &mut w[i * row_bytes..(i + 1) * row_bytes]).unwrap();
                }
                let mut g = vec![0u8; q4k_group_bytes(nb)];
                pack_q4k(&w, row_bytes, nb, &mut g);
                let acts: Vec<(Vec<u8>, Q4kActivation)> = (0..3)
                    .map(|r| {
                        let x: Vec<f32> = (0..k)
                            .map(|j| value(r * k + j, 41, if r == 0 { 100.0 } else { 1.0 }))
                            .collect();
                        let mut act = vec![0u8; GgmlType::Q8_K.row_bytes(k as u64).unwrap()];
                        quant::quantize_into(GgmlType::Q8_K, &x, &mut act).unwrap();
                        let blocks: Vec<quant::q8_k::Block> =
                            act.chunks_exact(292).map(|b| b.try_into().unwrap()).collect();
                        let prepared = Q4kActivation::new(&blocks);
                        (act, prepared)
                    })
                    .collect();
                let check = |r: usize, out: &[f32; ROWS]| {
                    for (i, got) in out.iter().enumerate() {
                        let want =
                            quant::vec_dot(GgmlType::Q4_K, &w[i * row_bytes..(i + 1) * row_bytes], &acts[r].0, k)
                                .unwrap();
                        assert_eq!(got.to_bits(), want.to_bits(), "nb {nb} row {i} act {r}");
                    }
                };
                for (r, (_, prepared)) in acts.iter().enumerate() {
                    let [out] = dot16_q4k::<1>(int, &g, nb, [prepared]).unwrap();
                    check(r, &out);
                }
                // Two rows at a time, in either order.
                for (r0, r1) in [(0, 1), (2, 0)] {
                    let [a, b] = dot16_q4k::<2>(int, &g, nb, [&acts[r0].1, &acts[r1].1]).unwrap();
                    check(r0, &a);
                    check(r1, &b);
                }
            }
        }
    }

    #[test]
    fn packed_q6_k_groups_give_vec_dot_bit_for_bit() {
        for int in packed_sets() {
            for nb in [1usize, 2, 5] {
                let k = nb * QK_K;
                let row_bytes = GgmlType::Q6_K.row_bytes(k as u64).unwrap();
                let mut w = vec![0u8; ROWS * row_bytes];
                for i in 0..ROWS {
                    let scale = if i == 0 { 1.0 } else { 0.01 * (i as f32 + 1.0) };
                    let row: Vec<f32> = (0..k)
                        .map(|j| value(i * k + j, 5, scale) - if i == 2 { 0.5 } else { 0.0 })
                        .collect();
                    quant::quantize_into(GgmlType::Q6_K, &row, &mut w[i * row_bytes..(i + 1) * row_bytes]).unwrap();
                }
                let mut g = vec![0u8; q6k_group_bytes(nb)];
                pack_q6k(&w, row_bytes, nb, &mut g);
                let mut prepared = Vec::new();
                let mut acts = Vec::new();
                for r in 0..3 {
                    let x: Vec<f32> = (0..k)
                        .map(|j| value(r * k + j, 43, if r == 0 { 100.0 } else { 1.0 }))
                        .collect();
                    let mut act = vec![0u8; GgmlType::Q8_K.row_bytes(k as u64).unwrap()];
                    quant::quantize_into(GgmlType::Q8_K, &x, &mut act).unwrap();
                    let blocks: Vec<quant::q8_k::Block> =
                        act.chunks_exact(292).map(|b| b.try_into().unwrap()).collect();
                    prepared.push(Q6kActivation::new(&blocks));
                    acts.push(act);
                }
                let one: Vec<[f32; ROWS]> = prepared
                    .iter()
                    .map(|p| dot16_q6k::<1>(int, &g, nb, [p]).unwrap()[0])
                    .collect();
                assert_eq!(
                    dot16_q6k::<2>(int, &g, nb, [&prepared[0], &prepared[1]]).unwrap(),
                    [one[0], one[1]]
                );
                for (r, act) in acts.iter().enumerate() {
                    for (i, got) in one[r].iter().enumerate() {
                        let want =
                            quant::vec_dot(GgmlType::Q6_K, &w[i * row_bytes..(i + 1) * row_bytes], act, k).unwrap();
                        assert_eq!(got.to_bits(), want.to_bits(), "nb {nb} row {i} act {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn packed_groups_give_vec_dot_bit_for_bit() {
        for int in packed_sets() {
            for kind in [Q8Weight::Q8_0, Q8Weight::Q4_0, Q8Weight::Q5_0] {
                for nb in [1usize, 3, 28] {
                    let k = nb * BLOCK;
                    let t = ty(kind);
                    let row_bytes = t.row_bytes(k as u64).unwrap();
                    // Sixteen rows, the first at the extremes of the range, then mixed scales.
                    let mut w = vec![0u8; ROWS * row_bytes];
                    for i in 0..ROWS {
                        let scale = if i == 0 { 1.0 } else { 0.01 * (i as f32 + 1.0) };
                        let row: Vec<f32> = (0..k).map(|j| value(i * k + j, 7, scale)).collect();
                        quant::quantize_into(t, &row, &mut w[i * row_bytes..(i + 1) * row_bytes]).unwrap();
                    }
                    let mut g = vec![0u8; group_bytes(kind, nb)];
                    pack(kind, &w, row_bytes, nb, &mut g);
                    const R: usize = 3;
                    let act_bytes = GgmlType::Q8_0.row_bytes(k as u64).unwrap();
                    let mut act = vec![0u8; R * act_bytes];
                    let (mut qs, mut asum, mut da) = (Vec::new(), Vec::new(), Vec::new());
                    for r in 0..R {
                        let x: Vec<f32> = (0..k)
                            .map(|j| value(r * k + j, 99, if r == 0 { 100.0 } else { 1.0 }))
                            .collect();
                        let bytes = &mut act[r * act_bytes..(r + 1) * act_bytes];
                        quant::quantize_into(GgmlType::Q8_0, &x, bytes).unwrap();
                        for blk in bytes.chunks_exact(34) {
                            da.push(quant::q8_0::scale(blk.try_into().unwrap()));
                            qs.extend(blk[2..].iter().map(|&q| q as i8));
                            asum.push(blk[2..].iter().map(|&q| i32::from(q as i8)).sum());
                        }
                    }
                    let out = dot16::<R>(int, kind, &g, nb, &qs, &asum, &da).unwrap();
                    for r in 0..R {
                        for i in 0..ROWS {
                            let want = quant::vec_dot(
                                t,
                                &w[i * row_bytes..(i + 1) * row_bytes],
                                &act[r * act_bytes..(r + 1) * act_bytes],
                                k,
                            )
                            .unwrap();
                            assert_eq!(out[r][i].to_bits(), want.to_bits(), "{kind:?} nb {nb} row {i} act {r}");
                        }
                    }
                }
            }
        }
    }
}
