//! The AVX-512F instruction set: 16 f32 lanes; tails use masked loads and stores.

use std::arch::x86_64::*;

use super::Simd;

/// Proof that this CPU runs AVX-512F, AVX2 and FMA (made only by [`Avx512::detect`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512(());

impl Avx512 {
    pub(crate) fn detect() -> Option<Avx512> {
        let ok =
            is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        ok.then_some(Avx512(()))
    }

    /// The token, without checking.
    ///
    /// # Safety
    /// The caller holds proof that [`Avx512::detect`]'s features are present (a token of
    /// a larger set that checked them, such as `Bf16Dot`).
    #[inline(always)]
    pub(crate) unsafe fn assume_detected() -> Avx512 {
        Avx512(())
    }
}

#[inline(always)]
fn tail_mask(n: usize) -> __mmask16 {
    debug_assert!(n < 16);
    ((1u32 << n) - 1) as __mmask16
}

// SAFETY (every `unsafe` block below): a value of `Avx512` exists only after
// `Avx512::detect` confirmed avx512f, so the intrinsics may execute; loads and stores
// touch only the lanes inside the slice they were given (`s[..16]` is bounds-checked,
// masked forms touch `s.len()` lanes and masked-off lanes never fault).
impl Simd for Avx512 {
    const LANES: usize = 16;
    type V = __m512;

    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> __m512 {
        let s = &s[..16];
        unsafe { _mm512_loadu_ps(s.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, v: __m512, s: &mut [f32]) {
        let s = &mut s[..16];
        unsafe { _mm512_storeu_ps(s.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn load_partial(self, s: &[f32], fill: f32) -> __m512 {
        let m = tail_mask(s.len());
        unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(fill), m, s.as_ptr()) }
    }
    #[inline(always)]
    fn store_partial(self, v: __m512, s: &mut [f32]) {
        let m = tail_mask(s.len());
        unsafe { _mm512_mask_storeu_ps(s.as_mut_ptr(), m, v) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    fn mul_add(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn min(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_min_ps(a, b) }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    fn round(self, a: __m512) -> __m512 {
        unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
    }
    #[inline(always)]
    fn ldexp(self, p: __m512, n: __m512) -> __m512 {
        // scalef computes p · 2^floor(n) with one rounding, like the split form of the
        // other instruction sets.
        unsafe { _mm512_scalef_ps(p, n) }
    }
    #[inline(always)]
    fn sqrt(self, a: __m512) -> __m512 {
        unsafe { _mm512_sqrt_ps(a) }
    }
    #[inline(always)]
    fn reduce_sum(self, v: __m512) -> f32 {
        unsafe { _mm512_reduce_add_ps(v) }
    }
    #[inline(always)]
    fn reduce_max(self, v: __m512) -> f32 {
        unsafe { _mm512_reduce_max_ps(v) }
    }
    /// Four levels of pairwise adds, each halving the vectors: 128-bit quarters
    /// (`q0 + q2`, `q1 + q3`), then quarters again, then pairs of lanes within a quarter,
    /// then lanes. Lane `4q + e` of the result ends up holding the sum of input slot
    /// `4e + q`, so the inputs go in transposed.
    #[inline(always)]
    fn transpose_sum(self, v: &[__m512]) -> __m512 {
        let v = &v[..16];
        let slot = |i: usize| v[(i % 4) * 4 + i / 4];
        let mut t = [self.splat(0.0); 8];
        for (i, t) in t.iter_mut().enumerate() {
            // [a.q0 + a.q2, a.q1 + a.q3, b.q0 + b.q2, b.q1 + b.q3] (128-bit quarters)
            *t = add_quarters::<0b01_00_01_00, 0b11_10_11_10>(slot(2 * i), slot(2 * i + 1));
        }
        let mut u = [self.splat(0.0); 4];
        for (i, u) in u.iter_mut().enumerate() {
            // [a.q0 + a.q1, a.q2 + a.q3, b.q0 + b.q1, b.q2 + b.q3]
            *u = add_quarters::<0b10_00_10_00, 0b11_01_11_01>(t[2 * i], t[2 * i + 1]);
        }
        // Per quarter: [a0 + a2, a1 + a3, b0 + b2, b1 + b3], then [a0 + a1, a2 + a3, b0 + b1, b2 + b3].
        let (w0, w1) = (
            add_lanes::<0b01_00_01_00, 0b11_10_11_10>(u[0], u[1]),
            add_lanes::<0b01_00_01_00, 0b11_10_11_10>(u[2], u[3]),
        );
        add_lanes::<0b10_00_10_00, 0b11_01_11_01>(w0, w1)
    }
}

// The levels of `transpose_sum` (functions, not closures: a closure would not be compiled
// with the caller's target features, and every intrinsic in it would become a call).

/// `shuffle_f32x4::<X>(a, b) + shuffle_f32x4::<Y>(a, b)`: 128-bit quarters of `a` and `b`
/// added in the pairs the two selections make.
#[inline(always)]
fn add_quarters<const X: i32, const Y: i32>(a: __m512, b: __m512) -> __m512 {
    unsafe { _mm512_add_ps(_mm512_shuffle_f32x4::<X>(a, b), _mm512_shuffle_f32x4::<Y>(a, b)) }
}

/// `shuffle_ps::<X>(a, b) + shuffle_ps::<Y>(a, b)`: lanes within each quarter added in
/// the pairs the two selections make.
#[inline(always)]
fn add_lanes<const X: i32, const Y: i32>(a: __m512, b: __m512) -> __m512 {
    unsafe { _mm512_add_ps(_mm512_shuffle_ps::<X>(a, b), _mm512_shuffle_ps::<Y>(a, b)) }
}
