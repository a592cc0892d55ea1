//! f16 and bf16 ↔ f32, exactly as ggml converts them (`ggml_compute_fp16_to_fp32`,
//! `ggml_compute_fp32_to_fp16`, `ggml_compute_bf16_to_fp32`, `ggml_compute_fp32_to_bf16`
//! in `ggml-impl.h`): round to nearest even, NaN stays NaN. Every block format's f16
//! scales go through these, so they decide bit-exactness everywhere.

/// `|x|` by clearing the sign bit (C's `fabsf`, also for NaN).
pub(crate) fn fabsf(x: f32) -> f32 {
    f32::from_bits(x.to_bits() & 0x7fff_ffff)
}

/// The element of largest magnitude (the first one on ties; 0 for an empty or all-zero
/// slice) and that magnitude: `(max, amax)`, as ggml's quantizers find them.
pub(crate) fn largest_magnitude(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        let ax = fabsf(v);
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    (max, amax)
}

/// An IEEE binary16 (bits) as f32. Exact for every finite value and infinity; a NaN keeps
/// its sign and payload and comes back quiet, as ggml's multiply-based conversion on x86.
pub fn f16_to_f32(h: u16) -> f32 {
    let w = u32::from(h) << 16;
    let sign = w & 0x8000_0000;
    let two_w = w.wrapping_add(w);
    if two_w >= 0xF800_0000 {
        // Exponent all ones: infinity or NaN (ggml's `normalized_value` path, where the
        // multiply by 2^-112 leaves infinity alone and quiets a NaN).
        let mantissa = u32::from(h & 0x03ff) << 13;
        let quiet = if mantissa != 0 { 0x0040_0000 } else { 0 };
        return f32::from_bits(sign | 0x7f80_0000 | mantissa | quiet);
    }
    let exp_offset: u32 = 0xE0 << 23;
    let exp_scale = f32::from_bits(0x0780_0000); // 2^-112
    let normalized = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;
    let magic_mask: u32 = 126 << 23;
    let denormalized = f32::from_bits((two_w >> 17) | magic_mask) - 0.5;
    let bits = if two_w < (1 << 27) {
        denormalized.to_bits()
    } else {
        normalized.to_bits()
    };
    f32::from_bits(sign | bits)
}

/// An f32 as IEEE binary16 (bits), rounded to nearest even; overflow gives infinity and
/// any NaN gives `0x7E00` with the input's sign (ggml's `ggml_compute_fp32_to_fp16`).
pub fn f32_to_f16(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (fabsf(f) * scale_to_inf) * scale_to_zero;
    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let bias = (shl1_w & 0xFF00_0000).max(0x7100_0000);
    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    let magnitude = if shl1_w > 0xFF00_0000 { 0x7E00 } else { nonsign };
    ((sign >> 16) | magnitude) as u16
}

/// A bfloat16 (bits) as f32: the top half of the f32's bits (exact).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// An f32 as bfloat16 (bits), rounded to nearest even; a NaN keeps its top bits and is
/// made quiet (ggml's `ggml_compute_fp32_to_bf16`).
pub fn f32_to_bf16(f: f32) -> u16 {
    let u = f.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_round_trips_every_finite_half() {
        for h in 0..=u16::MAX {
            let f = f16_to_f32(h);
            if !f.is_nan() {
                assert_eq!(f32_to_f16(f), h, "{h:#06x}");
            }
        }
    }

    #[test]
    fn f16_rounds_to_nearest_even() {
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        // 1 + 2^-11 is halfway between 1 and the next half: ties to even (1.0).
        assert_eq!(f32_to_f16(1.0 + f32::EPSILON * 1024.0), 0x3c00);
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        assert_eq!(f32_to_f16(f32::NAN), 0x7e00);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f81_0000)), 0x7fc1);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
    }
}
