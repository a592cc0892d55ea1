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
