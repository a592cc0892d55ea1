//! Q8_0 (`GGML_TYPE_Q8_0` = 8): blocks of 32 elements in 34 bytes.
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..2 | `d` | f16 scale, little-endian |
//! | 2..34 | `qs[32]` | i8 quants; element `j` is `qs[j] · d` |
//!
//! Also the activation format of the Q4_0, Q5_0 and Q8_0 dot products.

use super::float::{f16_to_f32, f32_to_f16, fabsf};

/// Elements per block (`QK8_0`).
pub const BLOCK: usize = 32;
/// Bytes per block (`sizeof(block_q8_0)`).
pub const BLOCK_BYTES: usize = 34;
/// One block's bytes.
pub type Block = [u8; BLOCK_BYTES];

/// The block's scale `d`.
pub fn scale(b: &Block) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[0], b[1]]))
}

/// The block's quants.
pub fn quants(b: &Block) -> impl Iterator<Item = i8> + '_ {
    b[2..].iter().map(|&q| q as i8)
}

/// ggml's `dequantize_row_q8_0` for one block: `y[j] = qs[j] · d`.
pub fn dequantize_block(b: &Block, y: &mut [f32; BLOCK]) {
    let d = scale(b);
    for (y, q) in y.iter_mut().zip(quants(b)) {
        *y = f32::from(q) * d;
    }
}

/// ggml's `quantize_row_q8_0_ref` for one block: `d = amax / 127` (as f16),
/// `qs[j] = roundf(x[j] · (1/d))` (halves away from zero), all zeros when `amax` is 0.
pub fn quantize_block(x: &[f32; BLOCK], b: &mut Block) {
    let mut amax = 0.0f32;
    for &v in x {
        let a = fabsf(v);
        amax = if amax > a { amax } else { a };
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    b[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    for (q, &v) in b[2..].iter_mut().zip(x) {
        *q = libm::roundf(v * id) as i8 as u8;
    }
}

/// ggml's scalar `ggml_vec_dot_q8_0_q8_0` over blocks paired in order: per block the i32
/// sum of `qs_w · qs_a`, then `sumf += sumi · (d_w · d_a)` in f32.
pub fn vec_dot(w: &[Block], a: &[Block]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi: i32 = quants(x).zip(quants(y)).map(|(p, q)| i32::from(p) * i32::from(q)).sum();
        sumf += sumi as f32 * (scale(x) * scale(y));
    }
    sumf
}
