//! Q4_0 (`GGML_TYPE_Q4_0` = 2): blocks of 32 elements in 18 bytes.
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..2 | `d` | f16 scale, little-endian |
//! | 2..18 | `qs[16]` | 4-bit quants: byte `j` holds element `j` in its low nibble and element `j + 16` in its high nibble |
//!
//! Element value: `(nibble − 8) · d`. Dot products pair it with a [`super::q8_0`] activation.

use super::float::{f16_to_f32, f32_to_f16, largest_magnitude};
use super::q8_0;

/// Elements per block (`QK4_0`).
pub const BLOCK: usize = 32;
/// Bytes per block (`sizeof(block_q4_0)`).
pub const BLOCK_BYTES: usize = 18;
/// One block's bytes.
pub type Block = [u8; BLOCK_BYTES];

/// The block's scale `d`.
pub fn scale(b: &Block) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[0], b[1]]))
}

/// The signed levels `(nibble − 8)` of elements `j` and `j + 16` (`j < 16`).
fn levels(b: &Block, j: usize) -> (i32, i32) {
    let q = b[2 + j];
    (i32::from(q & 0x0F) - 8, i32::from(q >> 4) - 8)
}

/// ggml's `dequantize_row_q4_0` for one block.
pub fn dequantize_block(b: &Block, y: &mut [f32; BLOCK]) {
    let d = scale(b);
    for j in 0..BLOCK / 2 {
        let (x0, x1) = levels(b, j);
        y[j] = x0 as f32 * d;
        y[j + BLOCK / 2] = x1 as f32 * d;
    }
}

/// ggml's `quantize_row_q4_0_ref` for one block: `d = max / −8` where `max` is the element
/// of largest magnitude (the first one on ties), and level `min(15, (i8)(x·(1/d) + 8.5))`.
pub fn quantize_block(x: &[f32; BLOCK], b: &mut Block) {
    let (max, _) = largest_magnitude(x);
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    b[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    let level = |v: f32| i32::from((v * id + 8.5) as i8).min(15) as u8;
    for j in 0..BLOCK / 2 {
        b[2 + j] = level(x[j]) | (level(x[j + BLOCK / 2]) << 4);
    }
}

/// ggml's scalar `ggml_vec_dot_q4_0_q8_0` over blocks paired in order: per block the i32
/// sums of levels times quants, then `sumf += sumi · d_w · d_a` in f32 (left to right).
pub fn vec_dot(w: &[Block], a: &[q8_0::Block]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let (mut sumi0, mut sumi1) = (0i32, 0i32);
        for j in 0..BLOCK / 2 {
            let (v0, v1) = levels(x, j);
            sumi0 += v0 * i32::from(y[2 + j] as i8);
            sumi1 += v1 * i32::from(y[2 + j + BLOCK / 2] as i8);
        }
        sumf += (sumi0 + sumi1) as f32 * scale(x) * q8_0::scale(y);
    }
    sumf
}
