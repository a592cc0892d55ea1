//! The AVX2 + FMA instruction set: 8 f32 lanes; tails use masked loads and stores.

use std::arch::x86_64::*;

use super::Simd;

/// Proof that this CPU runs AVX2 and FMA (made only by [`Avx2::detect`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2(());

impl Avx2 {
    pub(crate) fn detect() -> Option<Avx2> {
        let ok = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        ok.then_some(Avx2(()))
    }
}

// SAFETY (every `unsafe` block below): a value of `Avx2` exists only after `Avx2::detect`
// confirmed avx2 and fma; loads and stores touch only lanes inside the given slice
// (`s[..8]` is bounds-checked; masked forms touch `s.len()` lanes and masked-off lanes
// never fault).
impl Avx2 {
    #[inline(always)]
    fn tail_mask(self, n: usize) -> __m256i {
        debug_assert!(n < 8);
        unsafe { _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)) }
    }

    /// `2^e` for integral `e` in `[-126, 127]`, built in the exponent field.
    #[inline(always)]
    fn pow2(self, e: __m256i) -> __m256 {
        unsafe { _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(e, _mm256_set1_epi32(127)))) }
    }
}

impl Simd for Avx2 {
    const LANES: usize = 8;
    type V = __m256;

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> __m256 {
        let s = &s[..8];
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, v: __m256, s: &mut [f32]) {
        let s = &mut s[..8];
        unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn load_partial(self, s: &[f32], fill: f32) -> __m256 {
        let m = self.tail_mask(s.len());
        unsafe {
            let v = _mm256_maskload_ps(s.as_ptr(), m);
            _mm256_blendv_ps(_mm256_set1_ps(fill), v, _mm256_castsi256_ps(m))
        }
    }
    #[inline(always)]
    fn store_partial(self, v: __m256, s: &mut [f32]) {
        let m = self.tail_mask(s.len());
        unsafe { _mm256_maskstore_ps(s.as_mut_ptr(), m, v) }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    fn mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn min(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    fn round(self, a: __m256) -> __m256 {
        unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
    }
    #[inline(always)]
    fn ldexp(self, p: __m256, n: __m256) -> __m256 {
        // 2^n = 2^h · 2^(n−h) with h = n >> 1: both factors stay normal for n in
        // [-152, 130], and `p · 2^h` is exact, so the product rounds once.
        unsafe {
            let ni = _mm256_cvtps_epi32(n);
            let h = _mm256_srai_epi32::<1>(ni);
            let r = _mm256_sub_epi32(ni, h);
            _mm256_mul_ps(_mm256_mul_ps(p, self.pow2(h)), self.pow2(r))
        }
    }
    #[inline(always)]
    fn sqrt(self, a: __m256) -> __m256 {
        unsafe { _mm256_sqrt_ps(a) }
    }
    #[inline(always)]
    fn reduce_sum(self, v: __m256) -> f32 {
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
    /// [`Simd::reduce_sum`]'s tree for eight vectors at once: lane `i` + lane `i + 4`, then
    /// `+ 2`, then `+ 1`, each level adding two or four vectors' lanes per instruction, so
    /// every lane is its vector's `reduce_sum` bit for bit (21 instructions where eight
    /// horizontal sums took about 60 and a round trip through memory).
    #[inline(always)]
    fn transpose_sum(self, v: &[__m256]) -> __m256 {
        let v = &v[..8];
        // [a.lo + a.hi | b.lo + b.hi], pairing vectors i and i + 4 so that the last level
        // leaves the sums in order.
        let w = [
            add_halves(v[0], v[4]),
            add_halves(v[1], v[5]),
            add_halves(v[2], v[6]),
            add_halves(v[3], v[7]),
        ];
        // Per 128-bit half: [a0 + a2, a1 + a3, b0 + b2, b1 + b3].
        let (u0, u1) = (
            add_lanes::<0b01_00_01_00, 0b11_10_11_10>(w[0], w[1]),
            add_lanes::<0b01_00_01_00, 0b11_10_11_10>(w[2], w[3]),
        );
        // [a0 + a1, b0 + b1, c0 + c1, d0 + d1] per half: sums 0–3, then 4–7.
        add_lanes::<0b10_00_10_00, 0b11_01_11_01>(u0, u1)
    }
    #[inline(always)]
    fn reduce_max(self, v: __m256) -> f32 {
        unsafe {
            let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
}

// The levels of `transpose_sum` (functions, not closures: a closure would not be compiled
// with the caller's target features, and every intrinsic in it would become a call).

/// `[a.lo + a.hi | b.lo + b.hi]` (128-bit halves).
#[inline(always)]
fn add_halves(a: __m256, b: __m256) -> __m256 {
    unsafe {
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(a, b),
            _mm256_permute2f128_ps::<0x31>(a, b),
        )
    }
}

/// `shuffle_ps::<X>(a, b) + shuffle_ps::<Y>(a, b)`: lanes within each 128-bit half added
/// in the pairs the two selections make.
#[inline(always)]
fn add_lanes<const X: i32, const Y: i32>(a: __m256, b: __m256) -> __m256 {
    unsafe { _mm256_add_ps(_mm256_shuffle_ps::<X>(a, b), _mm256_shuffle_ps::<Y>(a, b)) }
}
