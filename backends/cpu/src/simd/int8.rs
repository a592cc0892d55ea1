//! Integer block sums of 8-bit dot products: the inner loop of the quantized matmul
//! (`kernels::quant_matmul`). For each 32-element block `b` of a Q8_0, Q4_0 or Q5_0 weight
//! row ([`Q8Weight`]) and a Q8_0 activation row (its quants unpacked to `a`, its per-block
//! quant sums to `asum`), `out[b]` is the exact i32 sum `Σ_j w_j·a_j` of the signed weight
//! levels times the activation quants — what ggml's `ggml_vec_dot_q{8,4,5}_0_q8_0`
//! computes per block before scaling. Q4_0 and Q5_0 levels are unsigned (`nibble`, and
//! `nibble | high bit << 4`) minus a bias (8, 16): the SIMD code sums `u8 level · a` and
//! takes `bias · Σa` off. Integer sums are exact, so every instruction set returns the same
//! numbers; the f32 scaling stays with the caller (one order for all sets).
//!
//! [`IntIsa::dot8_q8`] goes further for eight weight rows at once: one reduction per
//! block turns the eight rows' lane vectors into one vector of their sums, and each lane
//! then takes `quant::vec_dot`'s f32 steps (rows in lanes, so the f32 order per output is
//! the scalar one). [`IntIsa::dot8_rows`] (VNNI) needs no reduction: the eight rows'
//! levels are first interleaved four elements per 32-bit lane ([`IntIsa::interleave8`]),
//! so `dpbusd` against broadcast activations sums each row in its own lane. Q4_K/Q6_K
//! blocks give the eight i32 lanes of ggml's scalar K-quant dot products (elements kept
//! apart by index mod 8).
//!
//! This is not the f32 [`super::Simd`] trait: those vectors have no integer lanes. The
//! instruction set follows the backend's [`Isa`] level: AVX2 uses `maddubs` with the sign
//! trick as ggml-cpu's x86 `quants.c` does; the AVX-512 level uses VNNI `dpbusd` (256-bit
//! per block in `dot8_q8`, two blocks per 512-bit register in the per-row sums) when the
//! CPU has avx512vnni, avx512bw and avx512vl (checked at run time), else the AVX2 code;
//! the K-quants use the AVX2 code on both levels. Quants are expected in ggml's ranges (activation quants in
//! −127..=127, as core's quantizers write them; weights any i8), where no step saturates.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::Isa;

/// Bytes of a Q8_0 block (f16 scale + 32 quants), a Q4_0 block (f16 scale + 16 bytes of
/// nibbles) and a Q5_0 block (f16 scale + 4 bytes of high bits + 16 bytes of nibbles);
/// each holds 32 elements.
pub(crate) const Q8_0_BYTES: usize = 34;
pub(crate) const Q4_0_BYTES: usize = 18;
pub(crate) const Q5_0_BYTES: usize = 22;
const BLOCK: usize = 32;

/// The weight formats dotted with Q8_0 activations (32-element blocks, an f16 scale first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Q8Weight {
    Q8_0,
    Q4_0,
    Q5_0,
}

impl Q8Weight {
    /// Bytes per block.
    pub(crate) const fn block_bytes(self) -> usize {
        match self {
            Q8Weight::Q8_0 => Q8_0_BYTES,
            Q8Weight::Q4_0 => Q4_0_BYTES,
            Q8Weight::Q5_0 => Q5_0_BYTES,
        }
    }

    /// Whether ggml's f32 step is `acc + s·(d_w·d_a)` (Q8_0; Q5_0's `(d_w·d_a)·s` is the
    /// same product) rather than Q4_0's `acc + (s·d_w)·d_a`.
    pub(crate) const fn scales_first(self) -> bool {
        !matches!(self, Q8Weight::Q4_0)
    }
}

/// The integer instructions the block sums run with.
#[derive(Clone, Copy, Debug)]
pub(crate) enum IntIsa {
    Scalar,
    /// AVX2 (the token proves the CPU has it).
    #[cfg(target_arch = "x86_64")]
    Avx2(super::Avx2),
    /// AVX-512 F/BW/VL with VNNI (and AVX2).
    #[cfg(target_arch = "x86_64")]
    Vnni(Vnni),
}

/// Proof that this CPU runs avx512f, avx512bw, avx512vnni, avx512vl and avx2.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vnni(());

#[cfg(target_arch = "x86_64")]
impl Vnni {
    fn detect() -> Option<Vnni> {
        let ok = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx2");
        ok.then_some(Vnni(()))
    }
}

impl IntIsa {
    /// The integer set for a backend's level: scalar for scalar, AVX2 for AVX2, VNNI for
    /// AVX-512 where the CPU has it (else AVX2, which every AVX-512 CPU has).
    pub(crate) fn for_isa(isa: Isa) -> IntIsa {
        match isa {
            Isa::Scalar(_) => IntIsa::Scalar,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(t) => IntIsa::Avx2(t),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(_) => Vnni::detect()
                .map(IntIsa::Vnni)
                .or_else(|| super::Avx2::detect().map(IntIsa::Avx2))
                .unwrap_or(IntIsa::Scalar),
        }
    }

    /// Per-block sums of a `kind` weight row `w` (`nb` blocks) with activation quants `a`
    /// (`32·nb`) whose block sums are `asum` (`nb`), into `out` (`nb`).
    pub(crate) fn block_sums(self, kind: Q8Weight, w: &[u8], a: &[i8], asum: &[i32], out: &mut [i32]) {
        let nb = out.len();
        assert!(w.len() >= nb * kind.block_bytes() && a.len() >= nb * BLOCK && asum.len() >= nb);
        // SAFETY (each arm): the token proves the features the function enables (avx2;
        // avx512f/bw/vl/vnni and avx2 for VNNI); lengths checked above.
        match (self, kind) {
            (IntIsa::Scalar, Q8Weight::Q8_0) => q8_0_scalar(w, a, out),
            (IntIsa::Scalar, Q8Weight::Q4_0) => q4_0_scalar(w, a, out),
            (IntIsa::Scalar, Q8Weight::Q5_0) => q5_0_scalar(w, a, out),
            #[cfg(target_arch = "x86_64")]
            (IntIsa::Avx2(_), Q8Weight::Q8_0) => unsafe { q8_0_avx2(w, a, out) },
            #[cfg(target_arch = "x86_64")]
            (IntIsa::Avx2(_), Q8Weight::Q4_0) => unsafe { q4_0_avx2(w, a, out) },
            #[cfg(target_arch = "x86_64")]
            (IntIsa::Avx2(_), Q8Weight::Q5_0) => unsafe { q5_0_avx2(w, a, out) },
            #[cfg(target_arch = "x86_64")]
            (IntIsa::Vnni(_), Q8Weight::Q8_0) => unsafe { q8_0_vnni(w, a, asum, out) },
            #[cfg(target_arch = "x86_64")]
            (IntIsa::Vnni(_), Q8Weight::Q4_0) => unsafe { q4_0_vnni(w, a, out) },
            #[cfg(target_arch = "x86_64")]
            (IntIsa::Vnni(_), Q8Weight::Q5_0) => unsafe { q5_0_vnni(w, a, out) },
        }
        // The Q4_0/Q5_0 paths sum `u8 level · a`; the signed level is `level − bias`.
        let bias = match kind {
            Q8Weight::Q8_0 => return,
            Q8Weight::Q4_0 => 8,
            Q8Weight::Q5_0 => 16,
        };
        for (o, s) in out.iter_mut().zip(asum) {
            *o -= bias * s;
        }
    }
}

fn q8_0_scalar(w: &[u8], a: &[i8], out: &mut [i32]) {
    for (b, o) in out.iter_mut().enumerate() {
        let qs = &w[b * Q8_0_BYTES + 2..(b + 1) * Q8_0_BYTES];
        let ys = &a[b * BLOCK..(b + 1) * BLOCK];
        *o = qs
            .iter()
            .zip(ys)
            .map(|(&x, &y)| i32::from(x as i8) * i32::from(y))
            .sum();
    }
}

/// `Σ nibble·a` (the caller subtracts `8·Σa`).
fn q4_0_scalar(w: &[u8], a: &[i8], out: &mut [i32]) {
    for (b, o) in out.iter_mut().enumerate() {
        let qs = &w[b * Q4_0_BYTES + 2..(b + 1) * Q4_0_BYTES];
        let ys = &a[b * BLOCK..(b + 1) * BLOCK];
        let mut s = 0i32;
        for (j, &q) in qs.iter().enumerate() {
            s += i32::from(q & 0x0F) * i32::from(ys[j]) + i32::from(q >> 4) * i32::from(ys[j + 16]);
        }
        *o = s;
    }
}

/// `Σ level·a` for Q5_0, `level = nibble | high bit << 4` in 0..32 (the caller subtracts
/// `16·Σa`).
fn q5_0_scalar(w: &[u8], a: &[i8], out: &mut [i32]) {
    for (b, o) in out.iter_mut().enumerate() {
        let block = &w[b * Q5_0_BYTES..(b + 1) * Q5_0_BYTES];
        let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
        let ys = &a[b * BLOCK..(b + 1) * BLOCK];
        let mut s = 0i32;
        for (j, &q) in block[6..].iter().enumerate() {
            let l0 = i32::from(q & 0x0F) | (((qh >> j) & 1) << 4) as i32;
            let l1 = i32::from(q >> 4) | (((qh >> (j + 16)) & 1) << 4) as i32;
            s += l0 * i32::from(ys[j]) + l1 * i32::from(ys[j + 16]);
        }
        *o = s;
    }
}

// SAFETY (every `unsafe` block below): these helpers are only inlined into the
// `#[target_feature]` functions further down, which run only once a token proved the
// features; pointers come from slices whose lengths the callers asserted to cover
// `nb` blocks, and every load is unaligned.

/// Eight i32 lanes whose sum is `Σ x·y` over one Q8_0 block at `w` (its quants) and 32
/// activation quants at `a`: `|x|` times `y` with `x`'s sign (`maddubs` takes u8 × i8).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn q8_block_avx2(w: *const u8, a: *const i8) -> __m256i {
    unsafe {
        let x = _mm256_loadu_si256(w as *const __m256i);
        let y = _mm256_loadu_si256(a as *const __m256i);
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
        _mm256_madd_epi16(p, _mm256_set1_epi16(1))
    }
}

/// The 32 nibbles of a Q4_0 block's 16 bytes at `w`, in element order (low nibbles are
/// elements 0..16, high nibbles 16..32), as u8.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn nibbles_avx2(w: *const u8) -> __m256i {
    unsafe {
        let t = _mm_loadu_si128(w as *const __m128i);
        _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(t), t), _mm256_set1_epi8(0x0F))
    }
}

/// The 32 five-bit levels of a Q5_0 block whose bytes after the scale start at `w` (`qh`,
/// then the nibbles), in element order, as u8: the nibbles with bit 4 from `qh` (byte `j`
/// takes bit `j`: `qh` broadcast, byte `j` of the shuffle holding `qh`'s byte `j / 8`,
/// every bit but `j mod 8` set by the mask, all ones exactly where bit `j` is set — ggml's
/// `bytes_from_bits_32`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn q5_levels_avx2(w: *const u8) -> __m256i {
    unsafe {
        let qh = std::ptr::read_unaligned(w as *const i32);
        _mm256_or_si256(nibbles_avx2(w.wrapping_add(4)), fifth_bits_avx2(qh))
    }
}

/// `0x10` in byte `j` of the result where bit `j` of `qh` is set, else 0 (ggml's
/// `bytes_from_bits_32`: `qh` broadcast, byte `j` of the shuffle holding `qh`'s byte
/// `j / 8`, every bit but `j mod 8` set by the mask, all ones exactly where bit `j` is set).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn fifth_bits_avx2(qh: i32) -> __m256i {
    // SAFETY: only inlined into functions that enable avx2 (see above).
    unsafe {
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(qh),
            _mm256_set_epi64x(0x0303_0303_0303_0303, 0x0202_0202_0202_0202, 0x0101_0101_0101_0101, 0),
        );
        let bits = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
        let set = _mm256_cmpeq_epi8(bits, _mm256_set1_epi64x(-1));
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }
}

/// As [`q5_levels_avx2`] with AVX-512 BW/VL: `qh` is the byte mask of the high bits.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn q5_levels_vnni(w: *const u8) -> __m256i {
    unsafe {
        let qh = std::ptr::read_unaligned(w as *const u32);
        _mm256_or_si256(nibbles_avx2(w.wrapping_add(4)), _mm256_maskz_set1_epi8(qh, 0x10))
    }
}

/// Eight i32 lanes summing to `Σ level·y` over one block's 32 u8 levels (< 128, so the
/// pair sums of `maddubs` cannot saturate) and the 32 activation quants at `a`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn unsigned_block_avx2(levels: __m256i, a: *const i8) -> __m256i {
    unsafe {
        let y = _mm256_loadu_si256(a as *const __m256i);
        _mm256_madd_epi16(_mm256_maddubs_epi16(levels, y), _mm256_set1_epi16(1))
    }
}

/// The lane sums of eight vectors, as one vector (lane `i` = Σ lanes of `v[i]`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn reduce8(v: [__m256i; 8]) -> __m256i {
    unsafe {
        let h01 = _mm256_hadd_epi32(v[0], v[1]);
        let h23 = _mm256_hadd_epi32(v[2], v[3]);
        let h45 = _mm256_hadd_epi32(v[4], v[5]);
        let h67 = _mm256_hadd_epi32(v[6], v[7]);
        // Per 128-bit half: the partial sums of v0..v3 (v4..v7) over that half.
        let h0 = _mm256_hadd_epi32(h01, h23);
        let h1 = _mm256_hadd_epi32(h45, h67);
        _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(h0, h1),
            _mm256_permute2x128_si256::<0x31>(h0, h1),
        )
    }
}

/// The sum of a vector's eight lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn hsum(v: __m256i) -> i32 {
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_hadd_epi32(s, s);
        let s = _mm_hadd_epi32(s, s);
        _mm_cvtsi128_si32(s)
    }
}

/// Block sums eight blocks at a time (one reduction for eight), then one at a time.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn sums_avx2(out: &mut [i32], block: impl Fn(usize) -> __m256i) {
    let nb = out.len();
    let mut b = 0;
    while b + 8 <= nb {
        let r = reduce8(std::array::from_fn(|i| block(b + i)));
        unsafe { _mm256_storeu_si256(out[b..b + 8].as_mut_ptr() as *mut __m256i, r) };
        b += 8;
    }
    for (i, o) in out.iter_mut().enumerate().skip(b) {
        *o = hsum(block(i));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn q8_0_avx2(w: &[u8], a: &[i8], out: &mut [i32]) {
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    sums_avx2(out, |b| {
        q8_block_avx2(wp.wrapping_add(b * Q8_0_BYTES + 2), ap.wrapping_add(b * BLOCK))
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn q4_0_avx2(w: &[u8], a: &[i8], out: &mut [i32]) {
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    sums_avx2(out, |b| {
        unsigned_block_avx2(
            nibbles_avx2(wp.wrapping_add(b * Q4_0_BYTES + 2)),
            ap.wrapping_add(b * BLOCK),
        )
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn q5_0_avx2(w: &[u8], a: &[i8], out: &mut [i32]) {
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    sums_avx2(out, |b| {
        unsigned_block_avx2(
            q5_levels_avx2(wp.wrapping_add(b * Q5_0_BYTES + 2)),
            ap.wrapping_add(b * BLOCK),
        )
    });
}

/// Two blocks' sums per 512-bit register: lanes 0..8 hold block `b`'s, 8..16 block
/// `b + 1`'s (`dpbusd`: u8 × i8, four products per i32 lane, no saturation).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn dpbusd_pair(x0: __m256i, x1: __m256i, a: *const i8) -> (__m256i, __m256i) {
    unsafe {
        let x = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(x0), x1);
        let y = _mm512_loadu_si512(a as *const __m512i);
        let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), x, y);
        (_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s))
    }
}

/// Q8_0 with VNNI: `x + 128` is a u8, so `Σ x·y = Σ (x + 128)·y − 128·Σ y`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
fn q8_0_vnni(w: &[u8], a: &[i8], asum: &[i32], out: &mut [i32]) {
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let nb = out.len();
    let flip = _mm256_set1_epi8(0x80u8 as i8);
    let quants = |b: usize| unsafe {
        _mm256_xor_si256(
            _mm256_loadu_si256(wp.wrapping_add(b * Q8_0_BYTES + 2) as *const __m256i),
            flip,
        )
    };
    let mut b = 0;
    while b + 8 <= nb {
        let mut v = [_mm256_setzero_si256(); 8];
        for p in 0..4 {
            let i = b + 2 * p;
            (v[2 * p], v[2 * p + 1]) = dpbusd_pair(quants(i), quants(i + 1), ap.wrapping_add(i * BLOCK));
        }
        let r = reduce8(v);
        unsafe {
            let s = _mm256_loadu_si256(asum[b..b + 8].as_ptr() as *const __m256i);
            let r = _mm256_sub_epi32(r, _mm256_slli_epi32::<7>(s));
            _mm256_storeu_si256(out[b..b + 8].as_mut_ptr() as *mut __m256i, r);
        }
        b += 8;
    }
    for (i, o) in out.iter_mut().enumerate().skip(b) {
        *o = hsum(q8_block_avx2(
            wp.wrapping_add(i * Q8_0_BYTES + 2),
            ap.wrapping_add(i * BLOCK),
        ));
    }
}

/// `Σ level·y` with VNNI over blocks of `bytes` whose u8 levels `levels(p)` gives from
/// the bytes after the scale (the caller subtracts the bias).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn unsigned_sums_vnni(w: &[u8], a: &[i8], out: &mut [i32], bytes: usize, levels: impl Fn(*const u8) -> __m256i) {
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let nb = out.len();
    let lv = |b: usize| levels(wp.wrapping_add(b * bytes + 2));
    let mut b = 0;
    while b + 8 <= nb {
        let mut v = [unsafe { _mm256_setzero_si256() }; 8];
        for p in 0..4 {
            let i = b + 2 * p;
            (v[2 * p], v[2 * p + 1]) = dpbusd_pair(lv(i), lv(i + 1), ap.wrapping_add(i * BLOCK));
        }
        let r = reduce8(v);
        unsafe { _mm256_storeu_si256(out[b..b + 8].as_mut_ptr() as *mut __m256i, r) };
        b += 8;
    }
    for (i, o) in out.iter_mut().enumerate().skip(b) {
        *o = hsum(unsigned_block_avx2(lv(i), ap.wrapping_add(i * BLOCK)));
    }
}

/// `Σ nibble·y` with VNNI (the caller subtracts `8·Σ y`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
fn q4_0_vnni(w: &[u8], a: &[i8], out: &mut [i32]) {
    unsigned_sums_vnni(w, a, out, Q4_0_BYTES, nibbles_avx2);
}

/// `Σ level·y` for Q5_0 with VNNI (the caller subtracts `16·Σ y`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
fn q5_0_vnni(w: &[u8], a: &[i8], out: &mut [i32]) {
    unsigned_sums_vnni(w, a, out, Q5_0_BYTES, q5_levels_vnni);
}

/// Bytes of a Q4_K, Q6_K and Q8_K block (256 elements each).
pub(crate) const Q4_K_BYTES: usize = 144;
pub(crate) const Q6_K_BYTES: usize = 210;
pub(crate) const Q8_K_BYTES: usize = 292;

/// The order [`pair_classes`] puts each 16 activation quants in: positions `p` and
/// `p + 8` (one class mod 8) side by side, so `maddubs`, which adds neighbours, adds
/// within a class.
const PAIRS: [usize; 16] = [0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15];

/// A Q8_K block's 256 quants reordered for the K-quant lanes: every 16 in [`PAIRS`]
/// order (`out[16g + i] = a[16g + PAIRS[i]]`). Made once per activation row.
pub(crate) fn pair_classes(a: &[u8; Q8_K_BYTES]) -> [i8; 256] {
    std::array::from_fn(|i| a[4 + (i & !15) + PAIRS[i & 15]] as i8)
}

impl IntIsa {
    /// The eight i32 lanes of ggml's `ggml_vec_dot_q4_K_q8_K` for one block pair: lane `l`
    /// is `Σ sc[i / 32] · level_i · a_i` over elements `i ≡ l (mod 8)`, `sc` the block's
    /// eight 6-bit scales; `pairs` is `a`'s quants by [`pair_classes`]. Exact on every set
    /// (the AVX-512 level uses the AVX2 code).
    pub(crate) fn q4_k_lanes(
        self,
        w: &[u8; Q4_K_BYTES],
        a: &[u8; Q8_K_BYTES],
        pairs: &[i8; 256],
        sc: &[u8; 8],
    ) -> [i32; 8] {
        match self {
            IntIsa::Scalar => {
                let mut lanes = [0i32; 8];
                for (i, &q) in a[4..260].iter().enumerate() {
                    let level = r1_core::quant::q4_k::level(w, i);
                    lanes[i % 8] += i32::from(sc[i / 32]) * i32::from(level) * i32::from(q as i8);
                }
                lanes
            }
            // SAFETY: an AVX2 or VNNI token proves avx2; the blocks are whole arrays.
            #[cfg(target_arch = "x86_64")]
            IntIsa::Avx2(_) | IntIsa::Vnni(_) => unsafe { q4_k_avx2(w, pairs, sc) },
        }
    }

    /// The eight i32 lanes of ggml's `ggml_vec_dot_q6_K_q8_K` for one block pair: lane `l`
    /// is `Σ scales[i / 16] · (level_i − 32) · a_i` over elements `i ≡ l (mod 8)`; `pairs`
    /// is `a`'s quants by [`pair_classes`].
    pub(crate) fn q6_k_lanes(self, w: &[u8; Q6_K_BYTES], a: &[u8; Q8_K_BYTES], pairs: &[i8; 256]) -> [i32; 8] {
        match self {
            IntIsa::Scalar => {
                use r1_core::quant::q6_k;
                let mut lanes = [0i32; 8];
                for (i, &q) in a[4..260].iter().enumerate() {
                    let p = i32::from(q6_k::level(w, i)) * i32::from(q as i8);
                    lanes[i % 8] += i32::from(q6_k::sub_scale(w, i / 16)) * p;
                }
                lanes
            }
            // SAFETY: as in `q4_k_lanes`.
            #[cfg(target_arch = "x86_64")]
            IntIsa::Avx2(_) | IntIsa::Vnni(_) => unsafe { q6_k_avx2(w, pairs) },
        }
    }
}

/// A Q4_K block's unpacked scales: the eight 6-bit scales and mins, `d` and `dmin`.
pub(crate) struct Q4kMeta {
    pub(crate) sc: [u8; 8],
    pub(crate) m: [u8; 8],
    pub(crate) d: f32,
    pub(crate) dmin: f32,
}

impl Q4kMeta {
    pub(crate) fn of(x: &[u8; Q4_K_BYTES]) -> Q4kMeta {
        use r1_core::quant::q4_k;
        let sm: [(u8, u8); 8] = std::array::from_fn(|j| q4_k::scale_min(x, j));
        let (d, dmin) = q4_k::super_scales(x);
        Q4kMeta {
            sc: sm.map(|s| s.0),
            m: sm.map(|s| s.1),
            d,
            dmin,
        }
    }
}

impl IntIsa {
    /// `q4_k::vec_dot` of a Q4_K weight row `w` (its blocks' scales `meta`) with a Q8_K
    /// activation row `a` (`pairs`: its quants by [`pair_classes`]): per block the integer
    /// lanes, then the scalar code's f32 steps in its order (`sums[l] += d·lane`, the mins
    /// term off `sumf`, the eight sums added last), the lanes' steps side by side in one
    /// vector (multiply, then add: never fused).
    pub(crate) fn q4_k_row(
        self,
        w: &[[u8; Q4_K_BYTES]],
        meta: &[Q4kMeta],
        a: &[[u8; Q8_K_BYTES]],
        pairs: &[[i8; 256]],
    ) -> f32 {
        match self {
            // SAFETY: an AVX2 or VNNI token proves avx2.
            #[cfg(target_arch = "x86_64")]
            IntIsa::Avx2(_) | IntIsa::Vnni(_) => unsafe { q4_k_row_avx2(w, meta, a, pairs) },
            _ => {
                let mut sums = [0.0f32; 8];
                let mut sumf = 0.0f32;
                for (((x, mt), y), p) in w.iter().zip(meta).zip(a).zip(pairs) {
                    let lanes = self.q4_k_lanes(x, y, p, &mt.sc);
                    let (d, mins) = q4_k_block_terms(mt, y);
                    for (s, &lane) in sums.iter_mut().zip(&lanes) {
                        *s += d * lane as f32;
                    }
                    sumf -= mins;
                }
                sums.iter().fold(sumf, |acc, s| acc + s)
            }
        }
    }

    /// Whether [`IntIsa::q6_k_row_wide`] runs here.
    pub(crate) fn has_q6_k_row_wide(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if let IntIsa::Vnni(_) = self {
            return true;
        }
        false
    }

    /// [`IntIsa::q6_k_row`] from the activation row's blocks made by [`Q6kWideBlock::new`]
    /// (the same bits); `None` where this set has no such kernel (only VNNI has).
    pub(crate) fn q6_k_row_wide(self, w: &[[u8; Q6_K_BYTES]], a: &[Q6kWideBlock]) -> Option<f32> {
        assert!(a.len() >= w.len());
        match self {
            // SAFETY: the token proves avx512f/bw/vl/vnni and avx2; `a` covers `w`.
            #[cfg(target_arch = "x86_64")]
            IntIsa::Vnni(_) => Some(unsafe { q6_k_row_vnni(w, a) }),
            _ => None,
        }
    }

    /// `q6_k::vec_dot` of a Q6_K weight row with a Q8_K activation row, as
    /// [`IntIsa::q4_k_row`] does it.
    pub(crate) fn q6_k_row(self, w: &[[u8; Q6_K_BYTES]], a: &[[u8; Q8_K_BYTES]], pairs: &[[i8; 256]]) -> f32 {
        match self {
            // SAFETY: an AVX2 or VNNI token proves avx2.
            #[cfg(target_arch = "x86_64")]
            IntIsa::Avx2(_) | IntIsa::Vnni(_) => unsafe { q6_k_row_avx2(w, a, pairs) },
            _ => {
                let mut sums = [0.0f32; 8];
                for ((x, y), p) in w.iter().zip(a).zip(pairs) {
                    let lanes = self.q6_k_lanes(x, y, p);
                    let d = r1_core::quant::q6_k::super_scale(x) * r1_core::quant::q8_k::scale(y);
                    for (s, &lane) in sums.iter_mut().zip(&lanes) {
                        *s += d * lane as f32;
                    }
                }
                sums.iter().fold(0.0f32, |acc, s| acc + s)
            }
        }
    }
}

/// One Q8_K activation block as [`IntIsa::q6_k_row_wide`] takes it, made once per
/// activation row: the quants in [`PAIRS`] order laid out as the kernel's four level
/// vectors hold their elements (vector `q`, 128-bit lane `j`: sub-block
/// `8·(j / 2) + 2q + j mod 2`), the levels' offset `32·(a_p + a_(p+8))` per sub-block and
/// class in the layout `maddubs` gives, and the block's scale.
#[derive(Clone)]
#[repr(C, align(64))]
pub(crate) struct Q6kWideBlock {
    ac: [i8; 256],
    off: [i16; 128],
    d: f32,
}

impl Q6kWideBlock {
    /// From a Q8_K block `a` and its quants in [`pair_classes`] order (made once per row
    /// for every K-quant path).
    pub(crate) fn new(a: &[u8; Q8_K_BYTES], pairs: &[i8; 256]) -> Q6kWideBlock {
        let sub_block = |q: usize, j: usize| 8 * (j / 2) + 2 * q + j % 2;
        Q6kWideBlock {
            ac: std::array::from_fn(|i| pairs[16 * sub_block(i / 64, i / 16 % 4) + i % 16]),
            off: std::array::from_fn(|i| {
                let at = 16 * sub_block(i / 32, i / 8 % 4) + 2 * (i % 8);
                32 * (i16::from(pairs[at]) + i16::from(pairs[at + 1]))
            }),
            d: r1_core::quant::q8_k::scale(a),
        }
    }
}

/// A Q4_K block pair's f32 factors in `q4_k::vec_dot`'s order: `d·da` for the lanes and
/// `dmin·da·Σ bsum·m` for the mins.
#[inline(always)]
fn q4_k_block_terms(mt: &Q4kMeta, y: &[u8; Q8_K_BYTES]) -> (f32, f32) {
    use r1_core::quant::q8_k;
    let summs: i32 = (0..16)
        .map(|g| i32::from(q8_k::bsum(y, g)) * i32::from(mt.m[g / 2]))
        .sum();
    let da = q8_k::scale(y);
    (mt.d * da, mt.dmin * da * summs as f32)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn q4_k_row_avx2(w: &[[u8; Q4_K_BYTES]], meta: &[Q4kMeta], a: &[[u8; Q8_K_BYTES]], pairs: &[[i8; 256]]) -> f32 {
    let mut sums = _mm256_setzero_ps();
    let mut sumf = 0.0f32;
    for (((x, mt), y), p) in w.iter().zip(meta).zip(a).zip(pairs) {
        let lanes = _mm256_cvtepi32_ps(q4_k_vec(x, p, &mt.sc));
        let (d, mins) = q4_k_block_terms(mt, y);
        sums = _mm256_add_ps(sums, _mm256_mul_ps(_mm256_set1_ps(d), lanes));
        sumf -= mins;
    }
    let mut out = [0.0f32; 8];
    // SAFETY: eight f32 fit `out`.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sums) };
    out.iter().fold(sumf, |acc, s| acc + s)
}

/// [`IntIsa::q6_k_row_wide`] with AVX-512 BW and VNNI: a whole block per step, both
/// 128-element halves side by side in each of four level vectors; the sub-block scales
/// applied by `vpdpwssd` on the class pairs of two vectors interleaved (as
/// [`scaled_classes`] does), so each class lane stays exact in i32 before the block's f32
/// step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vl,avx2")]
fn q6_k_row_vnni(w: &[[u8; Q6_K_BYTES]], a: &[Q6kWideBlock]) -> f32 {
    let m4 = _mm512_set1_epi8(0x0F);
    let m30 = _mm512_set1_epi8(0x30);
    let order = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15));
    // The i16 scale of each word of the interleaved pairs (vectors 0 and 1; 2 and 3 are
    // four sub-blocks on): lane j, word u takes sub-block 8·(j / 2) + j mod 2 + 2·(u mod 2).
    let pick: [i16; 32] = std::array::from_fn(|t| {
        let (j, u) = (t / 8, t % 8);
        (8 * (j / 2) + j % 2 + 2 * (u % 2)) as i16
    });
    // SAFETY: 32 i16 fit `pick`.
    let pick01 = unsafe { _mm512_loadu_si512(pick.as_ptr() as *const __m512i) };
    let pick23 = _mm512_add_epi16(pick01, _mm512_set1_epi16(4));
    let mut sums = _mm256_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        // SAFETY: 64 bytes at 0, 64 and 128 and 16 at 192 of the block's 210; the wide
        // block's arrays hold what each load takes.
        let (qla, qlb, qh, sc, ac, off) = unsafe {
            let p = x.as_ptr();
            (
                _mm512_loadu_si512(p as *const __m512i),
                _mm512_loadu_si512(p.add(64) as *const __m512i),
                _mm512_loadu_si512(p.add(128) as *const __m512i),
                _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(192) as *const __m128i)),
                std::array::from_fn::<_, 4, _>(|q| _mm512_load_si512(y.ac[64 * q..].as_ptr() as *const __m512i)),
                std::array::from_fn::<_, 4, _>(|q| _mm512_load_si512(y.off[32 * q..].as_ptr() as *const __m512i)),
            )
        };
        // Low nibbles of elements 0..32 and 64..96 of each half (lanes: half 0, half 1),
        // then of 32..64 and 96..128.
        let low_a = _mm512_shuffle_i64x2::<0x44>(qla, qlb);
        let low_b = _mm512_shuffle_i64x2::<0xEE>(qla, qlb);
        let levels = [
            _mm512_or_si512(
                _mm512_and_si512(low_a, m4),
                _mm512_and_si512(_mm512_slli_epi16::<4>(qh), m30),
            ),
            _mm512_or_si512(
                _mm512_and_si512(low_b, m4),
                _mm512_and_si512(_mm512_slli_epi16::<2>(qh), m30),
            ),
            _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(low_a), m4),
                _mm512_and_si512(qh, m30),
            ),
            _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(low_b), m4),
                _mm512_and_si512(_mm512_srli_epi16::<2>(qh), m30),
            ),
        ];
        let m: [__m512i; 4] = std::array::from_fn(|q| {
            let pairs = _mm512_maddubs_epi16(_mm512_shuffle_epi8(levels[q], order), ac[q]);
            _mm512_sub_epi16(pairs, off[q])
        });
        let sc = _mm512_castsi256_si512(sc);
        let (s01, s23) = (
            _mm512_permutexvar_epi16(pick01, sc),
            _mm512_permutexvar_epi16(pick23, sc),
        );
        let zero = _mm512_setzero_si512();
        let lo = _mm512_dpwssd_epi32(zero, _mm512_unpacklo_epi16(m[0], m[1]), s01);
        let hi = _mm512_dpwssd_epi32(zero, _mm512_unpackhi_epi16(m[0], m[1]), s01);
        let lo = _mm512_dpwssd_epi32(lo, _mm512_unpacklo_epi16(m[2], m[3]), s23);
        let hi = _mm512_dpwssd_epi32(hi, _mm512_unpackhi_epi16(m[2], m[3]), s23);
        // The four lanes of each added: classes 0..4 from `lo`, 4..8 from `hi`.
        let z = _mm512_add_epi32(
            _mm512_shuffle_i64x2::<0x44>(lo, hi),
            _mm512_shuffle_i64x2::<0xEE>(lo, hi),
        );
        let t = _mm512_add_epi32(z, _mm512_shuffle_i64x2::<0b10_11_00_01>(z, z));
        let lanes = _mm512_castsi512_si256(_mm512_shuffle_i64x2::<0b00_00_10_00>(t, t));
        let d = r1_core::quant::q6_k::super_scale(x) * y.d;
        sums = _mm256_add_ps(sums, _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes)));
    }
    let mut out = [0.0f32; 8];
    // SAFETY: eight f32 fit `out`.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sums) };
    out.iter().fold(0.0f32, |acc, s| acc + s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn q6_k_row_avx2(w: &[[u8; Q6_K_BYTES]], a: &[[u8; Q8_K_BYTES]], pairs: &[[i8; 256]]) -> f32 {
    let mut sums = _mm256_setzero_ps();
    for ((x, y), p) in w.iter().zip(a).zip(pairs) {
        let lanes = _mm256_cvtepi32_ps(q6_k_vec(x, p));
        let d = r1_core::quant::q6_k::super_scale(x) * r1_core::quant::q8_k::scale(y);
        sums = _mm256_add_ps(sums, _mm256_mul_ps(_mm256_set1_ps(d), lanes));
    }
    let mut out = [0.0f32; 8];
    // SAFETY: eight f32 fit `out`.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sums) };
    out.iter().fold(0.0f32, |acc, s| acc + s)
}

/// Per class `p` of two 16-element groups of 32 u8 levels `lv` (< 128) and their
/// activations in [`PAIRS`] order `ac`: `level_p·a_p + level_(p+8)·a_(p+8)` as i16 (lane
/// `p` of each 128-bit half; no saturation: `2·127·127 < 2^15`). The levels take the
/// activations' order by one byte shuffle.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn class_pairs(lv: __m256i, ac: __m256i) -> __m256i {
    unsafe {
        let order = _mm256_setr_epi8(
            0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15, 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15,
        );
        _mm256_maddubs_epi16(_mm256_shuffle_epi8(lv, order), ac)
    }
}

/// The class sums of two [`class_pairs`] vectors `x`, `y` scaled by `sx`, `sy` (i16 lanes
/// alternating the two scales, per 128-bit half), exactly in i32: `lo` gets classes 0..4,
/// `hi` classes 4..8, in each half (halves are summed at the end).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn scaled_classes(x: __m256i, y: __m256i, s: __m256i, lo: &mut __m256i, hi: &mut __m256i) {
    unsafe {
        *lo = _mm256_add_epi32(*lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(x, y), s));
        *hi = _mm256_add_epi32(*hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(x, y), s));
    }
}

/// The eight class lanes from [`scaled_classes`]' accumulators: each half's classes added.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn class_lanes(lo: __m256i, hi: __m256i) -> __m256i {
    unsafe {
        let l = _mm_add_epi32(_mm256_castsi256_si128(lo), _mm256_extracti128_si256::<1>(lo));
        let h = _mm_add_epi32(_mm256_castsi256_si128(hi), _mm256_extracti128_si256::<1>(hi));
        _mm256_set_m128i(h, l)
    }
}

/// A vector's eight i32 lanes as an array.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn lanes_of(v: __m256i) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    // SAFETY: eight i32 fit `lanes`.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, v) };
    lanes
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn q4_k_avx2(w: &[u8; Q4_K_BYTES], pairs: &[i8; 256], sc: &[u8; 8]) -> [i32; 8] {
    lanes_of(q4_k_vec(w, pairs, sc))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn q6_k_avx2(w: &[u8; Q6_K_BYTES], pairs: &[i8; 256]) -> [i32; 8] {
    lanes_of(q6_k_vec(w, pairs))
}

/// [`IntIsa::q4_k_lanes`] as a vector.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn q4_k_vec(w: &[u8; Q4_K_BYTES], pairs: &[i8; 256], sc: &[u8; 8]) -> __m256i {
    let mask = _mm256_set1_epi8(0x0F);
    let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    for c in 0..4 {
        // SAFETY: 32 bytes at 16 + 32c ≤ 112 of 144, and at 64c (+32) ≤ 224 of 256.
        let (q, a_lo, a_hi) = unsafe {
            (
                _mm256_loadu_si256(w[16 + 32 * c..].as_ptr() as *const __m256i),
                _mm256_loadu_si256(pairs[64 * c..].as_ptr() as *const __m256i),
                _mm256_loadu_si256(pairs[64 * c + 32..].as_ptr() as *const __m256i),
            )
        };
        // Elements 64c..64c+32 (low nibbles, scale 2c) and 64c+32.. (high, scale 2c + 1).
        let x = class_pairs(_mm256_and_si256(q, mask), a_lo);
        let y = class_pairs(_mm256_and_si256(_mm256_srli_epi16::<4>(q), mask), a_hi);
        let s = i32::from(sc[2 * c]) | (i32::from(sc[2 * c + 1]) << 16);
        scaled_classes(x, y, _mm256_set1_epi32(s), &mut lo, &mut hi);
    }
    class_lanes(lo, hi)
}

/// [`IntIsa::q6_k_lanes`] as a vector.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn q6_k_vec(w: &[u8; Q6_K_BYTES], pairs: &[i8; 256]) -> __m256i {
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(0x03);
    let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    // The sixteen i8 scales as i16, and per 16-element group `32·Σ a` of each class pair
    // (the levels' offset: `(level − 32)·a = level·a − 32·a`).
    // SAFETY: 16 bytes at 192 of 210.
    let scales = unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(w[192..].as_ptr() as *const __m128i)) };
    let thirty_two = _mm256_set1_epi8(32);
    for h in 0..2 {
        // SAFETY: 32 bytes at 64h (+32) ≤ 96 and 128 + 32h ≤ 160 of 210.
        let (ql0, ql1, qh) = unsafe {
            (
                _mm256_loadu_si256(w[64 * h..].as_ptr() as *const __m256i),
                _mm256_loadu_si256(w[64 * h + 32..].as_ptr() as *const __m256i),
                _mm256_loadu_si256(w[128 + 32 * h..].as_ptr() as *const __m256i),
            )
        };
        let high = |shift: i32| {
            let s = match shift {
                0 => qh,
                2 => _mm256_srli_epi16::<2>(qh),
                4 => _mm256_srli_epi16::<4>(qh),
                _ => _mm256_srli_epi16::<6>(qh),
            };
            _mm256_slli_epi16::<4>(_mm256_and_si256(s, m2))
        };
        let levels = [
            _mm256_or_si256(_mm256_and_si256(ql0, m4), high(0)),
            _mm256_or_si256(_mm256_and_si256(ql1, m4), high(2)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4), high(4)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4), high(6)),
        ];
        // Scales 8h..8h+8 in both halves: vector q (elements 128h + 32q..) has groups
        // 8h + 2q (low half) and 8h + 2q + 1 (high half).
        let sh = if h == 0 {
            _mm256_permute4x64_epi64::<0b0100_0100>(scales)
        } else {
            _mm256_permute4x64_epi64::<0b1110_1110>(scales)
        };
        let m: [__m256i; 4] = std::array::from_fn(|q| {
            // SAFETY: 32 bytes at 128h + 32q ≤ 224 of 256.
            let ac = unsafe { _mm256_loadu_si256(pairs[128 * h + 32 * q..].as_ptr() as *const __m256i) };
            _mm256_sub_epi16(class_pairs(levels[q], ac), _mm256_maddubs_epi16(thirty_two, ac))
        });
        // Vectors (0, 1) and (2, 3) together: i16 lanes alternate the two vectors' scales,
        // groups 2q and 2(q + 1) in the low half, 2q + 1 and 2q + 3 in the high half.
        for q in [0, 2] {
            let pick = _mm256_setr_epi8(
                (4 * q) as i8,
                (4 * q + 1) as i8,
                (4 * q + 4) as i8,
                (4 * q + 5) as i8,
                (4 * q) as i8,
                (4 * q + 1) as i8,
                (4 * q + 4) as i8,
                (4 * q + 5) as i8,
                (4 * q) as i8,
                (4 * q + 1) as i8,
                (4 * q + 4) as i8,
                (4 * q + 5) as i8,
                (4 * q) as i8,
                (4 * q + 1) as i8,
                (4 * q + 4) as i8,
                (4 * q + 5) as i8,
                (4 * q + 2) as i8,
                (4 * q + 3) as i8,
                (4 * q + 6) as i8,
                (4 * q + 7) as i8,
                (4 * q + 2) as i8,
                (4 * q + 3) as i8,
                (4 * q + 6) as i8,
                (4 * q + 7) as i8,
                (4 * q + 2) as i8,
                (4 * q + 3) as i8,
                (4 * q + 6) as i8,
                (4 * q + 7) as i8,
                (4 * q + 2) as i8,
                (4 * q + 3) as i8,
                (4 * q + 6) as i8,
                (4 * q + 7) as i8,
            );
            scaled_classes(m[q], m[q + 1], _mm256_shuffle_epi8(sh, pick), &mut lo, &mut hi);
        }
    }
    class_lanes(lo, hi)
}

impl IntIsa {
    /// Whether [`IntIsa::dot8_q8`] has a SIMD path (the scalar set uses per-pair sums; the
    /// SIMD sets widen the rows' f16 scales with F16C, which every AVX2 CPU has).
    pub(crate) fn has_dot8(self) -> bool {
        match self {
            IntIsa::Scalar => false,
            #[cfg(target_arch = "x86_64")]
            IntIsa::Avx2(_) | IntIsa::Vnni(_) => is_x86_feature_detected!("f16c"),
        }
    }

    /// The f16 scales of the first `nb` blocks of eight consecutive `kind` weight rows `w`
    /// (`row_bytes` each), widened to f32 block-major (`dw[8b + i]`): per block one gather
    /// of the eight rows' scales and one F16C conversion. `false` (nothing written) where
    /// [`IntIsa::has_dot8`] is false.
    pub(crate) fn scales8(self, kind: Q8Weight, w: &[u8], row_bytes: usize, dw: &mut [f32]) -> bool {
        let nb = dw.len() / 8;
        assert!(
            row_bytes >= nb * kind.block_bytes() && i32::try_from(8 * row_bytes).is_ok() && w.len() >= 8 * row_bytes
        );
        if !self.has_dot8() {
            return false;
        }
        // SAFETY: an AVX2 or VNNI token proves avx2, f16c was detected (`has_dot8`); every
        // gathered four bytes lie inside a block (lengths checked above).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            scales8_avx2(w, row_bytes, kind.block_bytes(), dw)
        };
        true
    }

    /// Eight outputs at once: eight consecutive `kind` weight rows `w` (`row_bytes` each)
    /// with one Q8_0 activation row (quants `a`, block sums `asum`, scales `da`;
    /// `nb = da.len()` blocks), each finished in f32 exactly as `quant::vec_dot` does it.
    /// The rows sit in the eight lanes: per block, the integer sums of the eight rows come
    /// out of one reduction as one vector, and each lane takes the scalar code's f32 steps
    /// in its order (Q8_0 and Q5_0 `acc + s·(d_w·d_a)`, Q4_0 `acc + (s·d_w)·d_a`;
    /// multiply then add, never fused). `dw` holds the rows' scales block-major
    /// ([`IntIsa::scales8`], which is what needs F16C). `None` on the scalar set.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dot8_q8(
        self,
        kind: Q8Weight,
        w: &[u8],
        row_bytes: usize,
        a: &[i8],
        asum: &[i32],
        dw: &[f32],
        da: &[f32],
    ) -> Option<[f32; 8]> {
        let nb = da.len();
        assert!(
            row_bytes >= nb * kind.block_bytes()
                && w.len() >= 8 * row_bytes
                && a.len() >= nb * BLOCK
                && asum.len() >= nb
                && dw.len() >= 8 * nb
        );
        match self {
            IntIsa::Scalar => None,
            // SAFETY: the token proves avx2; lengths checked above.
            #[cfg(target_arch = "x86_64")]
            IntIsa::Avx2(_) => Some(unsafe { dot8_avx2(kind, w, row_bytes, a, asum, dw, da) }),
            // SAFETY: the token proves avx512f/bw/vl/vnni (and avx2); lengths checked.
            #[cfg(target_arch = "x86_64")]
            IntIsa::Vnni(_) => Some(unsafe { dot8_vnni(kind, w, row_bytes, a, asum, dw, da) }),
        }
    }
}

impl IntIsa {
    /// Whether [`IntIsa::interleave8`] and [`IntIsa::dot8_rows`] have a path here (VNNI:
    /// `dpbusd` takes u8 levels up to 255 without saturating, which Q8_0's offset needs).
    pub(crate) fn has_dot8_rows(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if let IntIsa::Vnni(_) = self {
            return true;
        }
        false
    }

    /// The levels of the first `nb` blocks of eight consecutive `kind` weight rows `w`
    /// (`row_bytes` each) as u8 (Q8_0: `x + 128`; Q4_0, Q5_0: the unsigned level),
    /// interleaved for [`IntIsa::dot8_rows`]: `lv[256b + 32c + 4i + e]` is row `i`'s level
    /// of element `32b + 4c + e` (four elements of each row per 32-bit lane). `false`
    /// (nothing written) where [`IntIsa::has_dot8_rows`] is false.
    pub(crate) fn interleave8(self, kind: Q8Weight, w: &[u8], row_bytes: usize, lv: &mut [u8]) -> bool {
        let nb = lv.len() / 256;
        assert!(row_bytes >= nb * kind.block_bytes() && w.len() >= 8 * row_bytes);
        match self {
            // SAFETY: the token proves avx512f/bw/vl/vnni and avx2; lengths checked above.
            #[cfg(target_arch = "x86_64")]
            IntIsa::Vnni(_) => {
                unsafe { interleave8_vnni(kind, w, row_bytes, lv) };
                true
            }
            _ => false,
        }
    }

    /// Eight weight rows (interleaved levels `lv` of `nb` blocks, [`IntIsa::interleave8`];
    /// scales `dw` block-major, [`IntIsa::scales8`]) times `R` Q8_0 activation rows
    /// (quants `a` rows of `32·nb`, block sums `asum` and scales `da` rows of `nb`), into
    /// `out[8r + i]`: the same numbers as [`IntIsa::dot8_q8`] (the exact integer block
    /// sums, here with no reduction: each lane is one row, its four-element products
    /// accumulated by `dpbusd` against a broadcast of the activations; then the same f32
    /// steps). The weights' levels are decoded once for all `R` rows (prefill). `false`
    /// where [`IntIsa::has_dot8_rows`] is false.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dot8_rows<const R: usize>(
        self,
        kind: Q8Weight,
        lv: &[u8],
        dw: &[f32],
        a: &[i8],
        asum: &[i32],
        da: &[f32],
        out: &mut [[f32; 8]; R],
    ) -> bool {
        let nb = lv.len() / 256;
        assert!(dw.len() >= 8 * nb && a.len() >= R * BLOCK * nb && asum.len() >= R * nb && da.len() >= R * nb);
        match self {
            // SAFETY: the token proves avx512f/bw/vl/vnni and avx2; lengths checked above.
            #[cfg(target_arch = "x86_64")]
            IntIsa::Vnni(_) => {
                *out = unsafe {
                    match kind {
                        Q8Weight::Q8_0 => dot8_rows_vnni::<R, true>(lv, 128, dw, a, asum, da),
                        Q8Weight::Q4_0 => dot8_rows_vnni::<R, false>(lv, 8, dw, a, asum, da),
                        Q8Weight::Q5_0 => dot8_rows_vnni::<R, true>(lv, 16, dw, a, asum, da),
                    }
                };
                true
            }
            _ => false,
        }
    }
}

/// [`IntIsa::interleave8`] with AVX-512 BW/VL: per block, the eight rows' 32 levels (one
/// vector per row, each of eight 4-level lanes), then the 8×8 transpose of those lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vl,avx2")]
fn interleave8_vnni(kind: Q8Weight, w: &[u8], row_bytes: usize, lv: &mut [u8]) {
    let bytes = kind.block_bytes();
    for (b, dst) in lv.as_chunks_mut::<256>().0.iter_mut().enumerate() {
        let v: [__m256i; 8] = std::array::from_fn(|i| {
            // SAFETY: block b of row i lies inside `w` (caller checked); its bytes after
            // the scale are 32 (Q8_0), 16 (Q4_0) or 20 (Q5_0), what each reader takes.
            let p = w[i * row_bytes + b * bytes + 2..].as_ptr();
            unsafe {
                match kind {
                    Q8Weight::Q8_0 => {
                        _mm256_xor_si256(_mm256_loadu_si256(p as *const __m256i), _mm256_set1_epi8(0x80u8 as i8))
                    }
                    Q8Weight::Q4_0 => nibbles_avx2(p),
                    Q8Weight::Q5_0 => q5_levels_vnni(p),
                }
            }
        });
        // t: row pairs' lanes interleaved; u: row quads'; the 128-bit halves then hold
        // lane c (low) and c + 4 (high) of four rows each.
        let t = [
            _mm256_unpacklo_epi32(v[0], v[1]),
            _mm256_unpackhi_epi32(v[0], v[1]),
            _mm256_unpacklo_epi32(v[2], v[3]),
            _mm256_unpackhi_epi32(v[2], v[3]),
            _mm256_unpacklo_epi32(v[4], v[5]),
            _mm256_unpackhi_epi32(v[4], v[5]),
            _mm256_unpacklo_epi32(v[6], v[7]),
            _mm256_unpackhi_epi32(v[6], v[7]),
        ];
        let u = [
            _mm256_unpacklo_epi64(t[0], t[2]),
            _mm256_unpackhi_epi64(t[0], t[2]),
            _mm256_unpacklo_epi64(t[1], t[3]),
            _mm256_unpackhi_epi64(t[1], t[3]),
            _mm256_unpacklo_epi64(t[4], t[6]),
            _mm256_unpackhi_epi64(t[4], t[6]),
            _mm256_unpacklo_epi64(t[5], t[7]),
            _mm256_unpackhi_epi64(t[5], t[7]),
        ];
        for c in 0..4 {
            let lo = _mm256_permute2x128_si256::<0x20>(u[c], u[c + 4]);
            let hi = _mm256_permute2x128_si256::<0x31>(u[c], u[c + 4]);
            // SAFETY: 32 bytes at 32c and 32(c + 4) of the 256-byte chunk.
            unsafe {
                _mm256_storeu_si256(dst[32 * c..].as_mut_ptr() as *mut __m256i, lo);
                _mm256_storeu_si256(dst[32 * (c + 4)..].as_mut_ptr() as *mut __m256i, hi);
            }
        }
    }
}

/// [`IntIsa::dot8_rows`] with VNNI: per block the eight interleaved level vectors are
/// loaded once; each activation row takes eight `dpbusd` against broadcasts of its four
/// quants per lane, on two accumulators (independent chains), then `bias · Σa` off and
/// `finish8`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vl,avx2")]
fn dot8_rows_vnni<const R: usize, const SCALES_FIRST: bool>(
    lv: &[u8],
    bias: i32,
    dw: &[f32],
    a: &[i8],
    asum: &[i32],
    da: &[f32],
) -> [[f32; 8]; R] {
    let nb = lv.len() / 256;
    let mut acc = [_mm256_setzero_ps(); R];
    for (b, l) in lv.as_chunks::<256>().0.iter().enumerate() {
        // SAFETY (loads): 32 bytes at 32c of the 256-byte chunk; four bytes at 4c of row
        // r's block b (`a` holds R rows of 32·nb, caller checked).
        let wv: [__m256i; 8] =
            std::array::from_fn(|c| unsafe { _mm256_loadu_si256(l[32 * c..].as_ptr() as *const __m256i) });
        for (r, acc) in acc.iter_mut().enumerate() {
            let ap = a[(r * nb + b) * BLOCK..].as_ptr();
            let y = |c: usize| unsafe { _mm256_set1_epi32(std::ptr::read_unaligned(ap.add(4 * c) as *const i32)) };
            let mut s0 = _mm256_setzero_si256();
            let mut s1 = _mm256_setzero_si256();
            for c in (0..8).step_by(2) {
                s0 = _mm256_dpbusd_epi32(s0, wv[c], y(c));
                s1 = _mm256_dpbusd_epi32(s1, wv[c + 1], y(c + 1));
            }
            let s = _mm256_sub_epi32(_mm256_add_epi32(s0, s1), _mm256_set1_epi32(bias * asum[r * nb + b]));
            *acc = finish8::<SCALES_FIRST>(*acc, s, &dw[8 * b..], da[r * nb + b]);
        }
    }
    let mut out = [[0.0f32; 8]; R];
    for (o, acc) in out.iter_mut().zip(acc) {
        // SAFETY: eight f32 fit `o`.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), acc) };
    }
    out
}

/// [`IntIsa::scales8`] on x86: per block, the eight rows' scales by one gather of four
/// bytes per row (the scale and the block's next two bytes), the low halves packed, then
/// F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
fn scales8_avx2(w: &[u8], row_bytes: usize, block_bytes: usize, dw: &mut [f32]) {
    // Row offsets (the caller checked 8·row_bytes fits i32).
    let rows = _mm256_mullo_epi32(
        _mm256_set1_epi32(row_bytes as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    // Bytes 0, 1 of each i32 to the low eight bytes of each 128-bit half.
    let pick = _mm256_set_epi64x(-1, 0x0d0c_0908_0504_0100, -1, 0x0d0c_0908_0504_0100);
    for (b, d) in dw.as_chunks_mut::<8>().0.iter_mut().enumerate() {
        // SAFETY: row i's block b starts at i·row_bytes + b·block_bytes, four bytes of it
        // are in bounds (caller); the store writes eight f32 into `d`.
        unsafe {
            let g = _mm256_i32gather_epi32::<1>(w.as_ptr().wrapping_add(b * block_bytes) as *const i32, rows);
            let packed = _mm256_permute4x64_epi64::<0b1000>(_mm256_shuffle_epi8(g, pick));
            _mm256_storeu_ps(d.as_mut_ptr(), _mm256_cvtph_ps(_mm256_castsi256_si128(packed)));
        }
    }
}

/// The f32 step of [`IntIsa::dot8_q8`] for one block: eight exact integer sums `s`, the
/// eight rows' scales `dw[..8]`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn finish8<const SCALES_FIRST: bool>(acc: __m256, s: __m256i, dw: &[f32], da: f32) -> __m256 {
    unsafe {
        let s = _mm256_cvtepi32_ps(s);
        let d = _mm256_loadu_ps(dw[..8].as_ptr());
        let t = if SCALES_FIRST {
            _mm256_mul_ps(s, _mm256_mul_ps(d, _mm256_set1_ps(da)))
        } else {
            _mm256_mul_ps(_mm256_mul_ps(s, d), _mm256_set1_ps(da))
        };
        _mm256_add_ps(acc, t)
    }
}

/// Eight rows' lane vectors for block `b` (`block(p, y)`, `p` the bytes after the block's
/// scale), reduced to one vector of their sums, corrected, then scaled in f32.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dot8_body<const SCALES_FIRST: bool>(
    bytes: usize,
    w: &[u8],
    row_bytes: usize,
    a: &[i8],
    dw: &[f32],
    da: &[f32],
    block: impl Fn(*const u8, __m256i) -> __m256i,
    correct: impl Fn(usize, __m256i) -> __m256i,
) -> [f32; 8] {
    let wp: [*const u8; 8] = std::array::from_fn(|i| w[i * row_bytes..].as_ptr());
    let mut acc = unsafe { _mm256_setzero_ps() };
    for (b, &da) in da.iter().enumerate() {
        let y = unsafe { _mm256_loadu_si256(a[b * BLOCK..(b + 1) * BLOCK].as_ptr() as *const __m256i) };
        let v = std::array::from_fn(|i| block(wp[i].wrapping_add(b * bytes + 2), y));
        acc = finish8::<SCALES_FIRST>(acc, correct(b, reduce8(v)), &dw[8 * b..], da);
    }
    let mut out = [0.0f32; 8];
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot8_avx2(kind: Q8Weight, w: &[u8], row_bytes: usize, a: &[i8], asum: &[i32], dw: &[f32], da: &[f32]) -> [f32; 8] {
    let ones = _mm256_set1_epi16(1);
    let unsigned = |levels: __m256i, y: __m256i| _mm256_madd_epi16(_mm256_maddubs_epi16(levels, y), ones);
    let bytes = kind.block_bytes();
    match kind {
        Q8Weight::Q8_0 => dot8_body::<true>(
            bytes,
            w,
            row_bytes,
            a,
            dw,
            da,
            |p, y| unsafe {
                let x = _mm256_loadu_si256(p as *const __m256i);
                _mm256_madd_epi16(
                    _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x)),
                    ones,
                )
            },
            |_, s| s,
        ),
        Q8Weight::Q4_0 => dot8_body::<false>(
            bytes,
            w,
            row_bytes,
            a,
            dw,
            da,
            |p, y| unsigned(nibbles_avx2(p), y),
            |b, s| _mm256_sub_epi32(s, _mm256_set1_epi32(8 * asum[b])),
        ),
        Q8Weight::Q5_0 => dot8_body::<true>(
            bytes,
            w,
            row_bytes,
            a,
            dw,
            da,
            |p, y| unsigned(q5_levels_avx2(p), y),
            |b, s| _mm256_sub_epi32(s, _mm256_set1_epi32(16 * asum[b])),
        ),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vl,avx2")]
#[allow(clippy::too_many_arguments)]
fn dot8_vnni(kind: Q8Weight, w: &[u8], row_bytes: usize, a: &[i8], asum: &[i32], dw: &[f32], da: &[f32]) -> [f32; 8] {
    let dpbusd = |levels: __m256i, y: __m256i| _mm256_dpbusd_epi32(_mm256_setzero_si256(), levels, y);
    let bytes = kind.block_bytes();
    match kind {
        // Σ x·y = Σ (x + 128)·y − 128·Σ y, with x + 128 a u8.
        Q8Weight::Q8_0 => dot8_body::<true>(
            bytes,
            w,
            row_bytes,
            a,
            dw,
            da,
            |p, y| {
                let x = unsafe { _mm256_loadu_si256(p as *const __m256i) };
                dpbusd(_mm256_xor_si256(x, _mm256_set1_epi8(0x80u8 as i8)), y)
            },
            |b, s| _mm256_sub_epi32(s, _mm256_set1_epi32(128 * asum[b])),
        ),
        Q8Weight::Q4_0 => dot8_body::<false>(
            bytes,
            w,
            row_bytes,
            a,
            dw,
            da,
            |p, y| dpbusd(nibbles_avx2(p), y),
            |b, s| _mm256_sub_epi32(s, _mm256_set1_epi32(8 * asum[b])),
        ),
        Q8Weight::Q5_0 => dot8_body::<true>(
            bytes,
            w,
            row_bytes,
            a,
            dw,
            da,
            |p, y| dpbusd(q5_levels_vnni(p), y),
            |b, s| _mm256_sub_epi32(s, _mm256_set1_epi32(16 * asum[b])),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::SimdLevel;

    /// The integer sets this CPU has, scalar first (VNNI where the AVX-512 level finds it).
    fn sets() -> Vec<IntIsa> {
        SimdLevel::available()
            .into_iter()
            .map(|l| IntIsa::for_isa(Isa::new(l).unwrap()))
            .collect()
    }

    #[test]
    fn the_avx512_level_uses_vnni_where_the_cpu_has_it() {
        #[cfg(target_arch = "x86_64")]
        if let Some(isa) = Isa::new(SimdLevel::Avx512) {
            let vnni = Vnni::detect().is_some();
            assert_eq!(matches!(IntIsa::for_isa(isa), IntIsa::Vnni(_)), vnni);
        }
    }

    #[test]
    fn block_sums_agree_on_every_set_with_extreme_quants() {
        // Weights at −128 and 127, activations at ±127: the sign trick and the VNNI offset
        // at their limits; 11 blocks cover the eight-block step and its tail.
        let nb = 11;
        let mut seed = 1u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 24) as u8
        };
        let w8: Vec<u8> = (0..nb * Q8_0_BYTES)
            .map(|i| if i % 3 == 0 { 0x80 } else { next() })
            .collect();
        let w4: Vec<u8> = (0..nb * Q4_0_BYTES).map(|_| next()).collect();
        // Q5_0: every other block at level 31 throughout (all high bits, nibbles 15).
        let w5: Vec<u8> = (0..nb * Q5_0_BYTES)
            .map(|i| {
                if (i / Q5_0_BYTES).is_multiple_of(2) && i % Q5_0_BYTES >= 2 {
                    0xFF
                } else {
                    next()
                }
            })
            .collect();
        let a: Vec<i8> = (0..nb * BLOCK)
            .map(|i| {
                if i % 5 == 0 {
                    -127
                } else {
                    (next() % 255) as i8 / 2 * 2 + 1
                }
            })
            .collect();
        let asum: Vec<i32> = a.chunks(BLOCK).map(|b| b.iter().map(|&x| i32::from(x)).sum()).collect();
        let weights = [(Q8Weight::Q8_0, &w8), (Q8Weight::Q4_0, &w4), (Q8Weight::Q5_0, &w5)];
        for (kind, w) in weights {
            let mut want = vec![0; nb];
            IntIsa::Scalar.block_sums(kind, w, &a, &asum, &mut want);
            for set in sets() {
                let mut got = vec![0; nb];
                set.block_sums(kind, w, &a, &asum, &mut got);
                assert_eq!(got, want, "{set:?} {kind:?}");
            }
        }
    }

    #[test]
    fn k_quant_lanes_agree_on_every_set_at_the_extremes() {
        // Levels at both ends (Q6_K 0 and 63, Q4_K 15), scales at ±127 / −128 and 63,
        // activations at ±127 and mixed: the i16 class sums at their largest.
        let mut seed = 3u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 24) as u8
        };
        for case in 0..6 {
            let mut a = [0u8; Q8_K_BYTES];
            for (i, q) in a[4..260].iter_mut().enumerate() {
                *q = match case % 3 {
                    0 => 127,
                    1 => (-127i8) as u8,
                    _ => {
                        if i % 3 == 0 {
                            (-127i8) as u8
                        } else {
                            next() % 255
                        }
                    }
                };
            }
            let pairs = pair_classes(&a);
            let mut w6 = [0u8; Q6_K_BYTES];
            for (i, b) in w6.iter_mut().enumerate() {
                *b = match (case, i) {
                    (_, 192..208) => [127u8, 0x80, 0x81, 1][(i + case) % 4],
                    (0 | 3, _) => 0xFF,
                    (1 | 4, _) => 0,
                    _ => next(),
                };
            }
            let mut w4 = [0u8; Q4_K_BYTES];
            for b in w4.iter_mut() {
                *b = if case < 3 { 0xFF } else { next() };
            }
            let sc = [63u8, 0, 63, 1, 62, 63, 63, 17];
            let want6 = IntIsa::Scalar.q6_k_lanes(&w6, &a, &pairs);
            let want4 = IntIsa::Scalar.q4_k_lanes(&w4, &a, &pairs, &sc);
            // The whole-row kernels over three blocks (this one between two others).
            let mut rows6 = [[0u8; Q6_K_BYTES]; 3];
            for (b, row) in rows6.iter_mut().enumerate() {
                *row = if b == 1 { w6 } else { std::array::from_fn(|_| next()) };
                row[208..210].copy_from_slice(&[0x00, 0x3C - b as u8]);
            }
            let acts: [[u8; Q8_K_BYTES]; 3] = std::array::from_fn(|b| {
                let mut x = a;
                x[..4].copy_from_slice(&(0.0123f32 * (b as f32 + 1.0)).to_le_bytes());
                x
            });
            let act_pairs = acts.map(|x| pair_classes(&x));
            let wide: Vec<Q6kWideBlock> = acts
                .iter()
                .zip(&act_pairs)
                .map(|(x, p)| Q6kWideBlock::new(x, p))
                .collect();
            let want_row = IntIsa::Scalar.q6_k_row(&rows6, &acts, &act_pairs);
            for set in sets() {
                assert_eq!(set.q6_k_lanes(&w6, &a, &pairs), want6, "{set:?} q6_k case {case}");
                assert_eq!(set.q4_k_lanes(&w4, &a, &pairs, &sc), want4, "{set:?} q4_k case {case}");
                assert_eq!(
                    set.q6_k_row(&rows6, &acts, &act_pairs).to_bits(),
                    want_row.to_bits(),
                    "{set:?} case {case}"
                );
                if let Some(got) = set.q6_k_row_wide(&rows6, &wide) {
                    assert_eq!(got.to_bits(), want_row.to_bits(), "{set:?} wide q6_k row, case {case}");
                }
            }
        }
    }
}
