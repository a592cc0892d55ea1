//! f16 and bf16 rows widened to f32 for the half-precision-weight matmul: F16C
//! `vcvtph2ps` (eight values per instruction) where the CPU has it and the backend runs an
//! x86 SIMD level, else core's scalar conversion. Both are exact for every finite f16 and
//! infinity, and both return a NaN quiet with its payload, so the result does not depend
//! on the path. bf16 is the top half of an f32, so widening is a zero-extend and a shift
//! (AVX2, eight values at a time), exact for every value.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use r1_core::quant::float::{bf16_to_f32, f16_to_f32};

use super::Isa;

/// Widens the little-endian f16 values in `src` (`2·dst.len()` bytes) into `dst`.
pub(crate) fn f16_to_f32_row(isa: Isa, src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), 2 * dst.len(), "f16 row length");
    #[cfg(target_arch = "x86_64")]
    if !matches!(isa, Isa::Scalar(_)) && is_x86_feature_detected!("f16c") {
        // SAFETY: an AVX2 or AVX-512 token exists (so AVX does) and f16c was detected;
        // lengths asserted above.
        unsafe { f16c_row(src, dst) };
        return;
    }
    let _ = isa;
    for (y, h) in dst.iter_mut().zip(src.as_chunks::<2>().0) {
        *y = f16_to_f32(u16::from_le_bytes(*h));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
fn f16c_row(src: &[u8], dst: &mut [f32]) {
    let (body, tail) = dst.as_chunks_mut::<8>();
    for (i, y) in body.iter_mut().enumerate() {
        // SAFETY: `src[16i..16i + 16]` is in bounds (`src` is twice `dst`'s length); the
        // load and store are unaligned forms on whole in-bounds chunks.
        unsafe {
            let h = _mm_loadu_si128(src[16 * i..16 * i + 16].as_ptr() as *const __m128i);
            _mm256_storeu_ps(y.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
    let done = 8 * body.len();
    for (y, h) in tail.iter_mut().zip(src[2 * done..].as_chunks::<2>().0) {
        *y = f16_to_f32(u16::from_le_bytes(*h));
    }
}

/// Widens the little-endian bf16 values in `src` (`2·dst.len()` bytes) into `dst`.
pub(crate) fn bf16_to_f32_row(isa: Isa, src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), 2 * dst.len(), "bf16 row length");
    #[cfg(target_arch = "x86_64")]
    if !matches!(isa, Isa::Scalar(_)) {
        // SAFETY: an AVX2 or AVX-512 token exists; lengths asserted above.
        unsafe { avx2_bf16_row(src, dst) };
        return;
    }
    let _ = isa;
    for (y, h) in dst.iter_mut().zip(src.as_chunks::<2>().0) {
        *y = bf16_to_f32(u16::from_le_bytes(*h));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn avx2_bf16_row(src: &[u8], dst: &mut [f32]) {
    let (body, tail) = dst.as_chunks_mut::<8>();
    for (i, y) in body.iter_mut().enumerate() {
        // SAFETY: `src[16i..16i + 16]` is in bounds (`src` is twice `dst`'s length); the
        // load and store are unaligned forms on whole in-bounds chunks.
        unsafe {
            let h = _mm_loadu_si128(src[16 * i..16 * i + 16].as_ptr() as *const __m128i);
            let w = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
            _mm256_storeu_ps(y.as_mut_ptr(), _mm256_castsi256_ps(w));
        }
    }
    let done = 8 * body.len();
    for (y, h) in tail.iter_mut().zip(src[2 * done..].as_chunks::<2>().0) {
        *y = bf16_to_f32(u16::from_le_bytes(*h));
    }
}

/// Whether [`bf16_dot`] runs on `isa` (the AVX2 level).
pub(crate) fn has_bf16_dot(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    if let Isa::Avx2(_) = isa {
        return true;
    }
    let _ = isa;
    false
}

/// `Σ a[i] · w[i]` for a bf16 row `w` (`2·a.len()` bytes) on the AVX2 level: the bits of
/// [`bf16_to_f32_row`] then `math::dot` there (the same four accumulators, steps and
/// reduction), each weight widened in registers as it is loaded instead of through a
/// row of f32 stored and read back (decode of a BF16 model on an AVX2 CPU is bound by
/// that traffic). `None` on other levels ([`has_bf16_dot`] says which).
pub(crate) fn bf16_dot(isa: Isa, a: &[f32], w: &[u8]) -> Option<f32> {
    assert_eq!(w.len(), 2 * a.len(), "bf16 row length");
    match isa {
        // SAFETY: the token proves avx2 and fma; lengths asserted above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2(t) => Some(unsafe { bf16_dot_avx2(t, a, w) }),
        _ => None,
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn bf16_dot_avx2(t: super::Avx2, a: &[f32], w: &[u8]) -> f32 {
    use super::Simd;
    let n = a.len();
    // Eight bf16 values (16 bytes) as f32: the bits shifted into the high halves.
    let widen = |h: &[u8]| {
        let h = &h[..16];
        // SAFETY: `h` is 16 bytes long (sliced above); unaligned load.
        let h = unsafe { _mm_loadu_si128(h.as_ptr() as *const __m128i) };
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    };
    let l = 8;
    let zero = t.splat(0.0);
    let (mut s0, mut s1, mut s2, mut s3) = (zero, zero, zero, zero);
    // Whole chunks of 32 values as fixed-size arrays: no bounds check per load (the
    // loop is bound by reading `w`, and checks took most of its instructions).
    let (a32, _) = a.as_chunks::<32>();
    let (w64, _) = w.as_chunks::<64>();
    for (a, w) in a32.iter().zip(w64) {
        s0 = t.mul_add(t.load(&a[..]), widen(&w[..]), s0);
        s1 = t.mul_add(t.load(&a[l..]), widen(&w[16..]), s1);
        s2 = t.mul_add(t.load(&a[2 * l..]), widen(&w[32..]), s2);
        s3 = t.mul_add(t.load(&a[3 * l..]), widen(&w[48..]), s3);
    }
    let mut i = a32.len() * 32;
    while i + l <= n {
        s0 = t.mul_add(t.load(&a[i..]), widen(&w[2 * i..]), s0);
        i += l;
    }
    if i < n {
        let mut tail = [0.0f32; 8];
        for (y, h) in tail.iter_mut().zip(w[2 * i..].as_chunks::<2>().0) {
            *y = bf16_to_f32(u16::from_le_bytes(*h));
        }
        s1 = t.mul_add(t.load_partial(&a[i..], 0.0), t.load_partial(&tail[..n - i], 0.0), s1);
    }
    t.reduce_sum(t.add(t.add(s0, s1), t.add(s2, s3)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::SimdLevel;

    #[test]
    fn every_f16_widens_to_the_same_bits_on_every_level() {
        // All 65536 values, NaNs and subnormals included, plus a 3-value tail.
        let src: Vec<u8> = (0..=u16::MAX)
            .chain([1, 0x7c00, 0xfc01])
            .flat_map(u16::to_le_bytes)
            .collect();
        let want: Vec<u32> = src
            .as_chunks::<2>()
            .0
            .iter()
            .map(|h| f16_to_f32(u16::from_le_bytes(*h)).to_bits())
            .collect();
        for level in SimdLevel::available() {
            let mut got = vec![0.0f32; want.len()];
            f16_to_f32_row(Isa::new(level).unwrap(), &src, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), *w, "{level}: value {i}");
            }
        }
    }

    #[test]
    fn the_fused_bf16_dot_is_the_widened_rows_dot_bit_for_bit() {
        for level in SimdLevel::available() {
            let isa = Isa::new(level).unwrap();
            for n in [1usize, 7, 8, 31, 32, 33, 896, 903] {
                let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect();
                let w: Vec<u8> = (0..n)
                    .flat_map(|i| {
                        let x = ((i * 53 % 97) as f32 - 48.0) * 0.021;
                        ((x.to_bits() >> 16) as u16).to_le_bytes()
                    })
                    .collect();
                let Some(got) = bf16_dot(isa, &a, &w) else {
                    continue;
                };
                let mut wf = vec![0.0f32; n];
                bf16_to_f32_row(isa, &w, &mut wf);
                let want = isa.run(DotTask { a: &a, b: &wf });
                assert_eq!(got.to_bits(), want.to_bits(), "{level:?} n {n}");
            }
        }
    }

    struct DotTask<'a> {
        a: &'a [f32],
        b: &'a [f32],
    }

    impl crate::simd::SimdTask for DotTask<'_> {
        type Output = f32;
        fn run<S: crate::simd::Simd>(self, s: S) -> f32 {
            crate::simd::math::dot(s, self.a, self.b)
        }
    }

    #[test]
    fn every_bf16_widens_to_the_same_bits_on_every_level() {
        let src: Vec<u8> = (0..=u16::MAX)
            .chain([1, 0x7f80, 0xffc1])
            .flat_map(u16::to_le_bytes)
            .collect();
        let want: Vec<u32> = src
            .as_chunks::<2>()
            .0
            .iter()
            .map(|h| bf16_to_f32(u16::from_le_bytes(*h)).to_bits())
            .collect();
        for level in SimdLevel::available() {
            let mut got = vec![0.0f32; want.len()];
            bf16_to_f32_row(Isa::new(level).unwrap(), &src, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), *w, "{level}: value {i}");
            }
        }
    }
}
