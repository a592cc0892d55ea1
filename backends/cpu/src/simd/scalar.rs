//! The portable fallback: a one-lane "vector" of plain f32 arithmetic, so every kernel
//! runs on any CPU with the same algorithm as the SIMD sets.

use super::Simd;

/// The scalar instruction set (always available).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scalar;

/// `2^e` for integral `e` in `[-126, 127]`.
#[inline(always)]
fn pow2(e: i32) -> f32 {
    f32::from_bits(((e + 127) as u32) << 23)
}

impl Simd for Scalar {
    const LANES: usize = 1;
    type V = f32;

    #[inline(always)]
    fn splat(self, x: f32) -> f32 {
        x
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> f32 {
        s[0]
    }
    #[inline(always)]
    fn store(self, v: f32, s: &mut [f32]) {
        s[0] = v;
    }
    #[inline(always)]
    fn load_partial(self, _s: &[f32], fill: f32) -> f32 {
        // With one lane a partial load has no element.
        fill
    }
    #[inline(always)]
    fn store_partial(self, _v: f32, _s: &mut [f32]) {}
    #[inline(always)]
    fn add(self, a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    fn div(self, a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    fn mul_add(self, a: f32, b: f32, c: f32) -> f32 {
        // Unfused: a software fma would make the fallback many times slower.
        a * b + c
    }
    #[inline(always)]
    fn min(self, a: f32, b: f32) -> f32 {
        if a < b { a } else { b }
    }
    #[inline(always)]
    fn max(self, a: f32, b: f32) -> f32 {
        if a > b { a } else { b }
    }
    #[inline(always)]
    fn round(self, a: f32) -> f32 {
        a.round_ties_even()
    }
    #[inline(always)]
    fn ldexp(self, p: f32, n: f32) -> f32 {
        if n.is_nan() {
            return f32::NAN;
        }
        let n = n as i32;
        let h = n >> 1;
        p * pow2(h) * pow2(n - h)
    }
    #[inline(always)]
    fn sqrt(self, a: f32) -> f32 {
        a.sqrt()
    }
    #[inline(always)]
    fn reduce_sum(self, v: f32) -> f32 {
        v
    }
    #[inline(always)]
    fn reduce_max(self, v: f32) -> f32 {
        v
    }
}
