//! Q5_0 (`GGML_TYPE_Q5_0` = 6): blocks of 32 elements in 22 bytes. llama.cpp's Q4_K_M
//! files store the tensors whose rows are not whole 256-element super-blocks (Qwen2.5-0.5B's,
//! 896 wide) in this format instead of Q4_K.
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..2 | `d` | f16 scale, little-endian |
//! | 2..6 | `qh` | u32, little-endian: bit `j` is the fifth (high) bit of element `j` |
//! | 6..22 | `qs[16]` | low 4 bits: byte `j` holds element `j` in its low nibble and element `j + 16` in its high nibble |
//!
//! Element value: `(level − 16) · d` with the 5-bit `level = nibble | (qh bit) << 4`. Dot
//! products pair it with a [`super::q8_0`] activation.

use super::float::{f16_to_f32, f32_to_f16, largest_magnitude};
use super::q8_0;

/// Elements per block (`QK5_0`).
pub const BLOCK: usize = 32;
/// Bytes per block (`sizeof(block_q5_0)`).
pub const BLOCK_BYTES: usize = 22;
/// One block's bytes.
pub type Block = [u8; BLOCK_BYTES];

/// The block's scale `d`.
pub fn scale(b: &Block) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[0], b[1]]))
}

/// The block's high bits `qh` (bit `j`: element `j`).
pub fn high_bits(b: &Block) -> u32 {
    u32::from_le_bytes([b[2], b[3], b[4], b[5]])
}

/// The signed levels `(level − 16)` of elements `j` and `j + 16` (`j < 16`).
fn levels(b: &Block, j: usize) -> (i32, i32) {
    let (q, qh) = (b[6 + j], high_bits(b));
    let h0 = ((qh >> j) & 1) << 4;
    let h1 = ((qh >> (j + 16)) & 1) << 4;
    (i32::from(q & 0x0F) + h0 as i32 - 16, i32::from(q >> 4) + h1 as i32 - 16)
}

/// ggml's `dequantize_row_q5_0` for one block.
pub fn dequantize_block(b: &Block, y: &mut [f32; BLOCK]) {
    let d = scale(b);
    for j in 0..BLOCK / 2 {
        let (x0, x1) = levels(b, j);
        y[j] = x0 as f32 * d;
        y[j + BLOCK / 2] = x1 as f32 * d;
    }
}

/// ggml's `quantize_row_q5_0_ref` for one block: `d = max / −16` where `max` is the
/// element of largest magnitude (the first one on ties), and level
/// `min(31, (i8)(x·(1/d) + 16.5))`.
pub fn quantize_block(x: &[f32; BLOCK], b: &mut Block) {
    let (max, _) = largest_magnitude(x);
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    b[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    let level = |v: f32| i32::from((v * id + 16.5) as i8).min(31) as u8;
    let mut qh = 0u32;
    for j in 0..BLOCK / 2 {
        let (l0, l1) = (level(x[j]), level(x[j + BLOCK / 2]));
        b[6 + j] = (l0 & 0x0F) | ((l1 & 0x0F) << 4);
        qh |= u32::from(l0 >> 4) << j;
        qh |= u32::from(l1 >> 4) << (j + BLOCK / 2);
    }
    b[2..6].copy_from_slice(&qh.to_le_bytes());
}

/// ggml's scalar `ggml_vec_dot_q5_0_q8_0` over blocks paired in order: per block the i32
/// sums of levels times quants, then `sumf += (d_w · d_a) · sumi` in f32.
pub fn vec_dot(w: &[Block], a: &[q8_0::Block]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let (mut sumi0, mut sumi1) = (0i32, 0i32);
        for j in 0..BLOCK / 2 {
            let (v0, v1) = levels(x, j);
            sumi0 += v0 * i32::from(y[2 + j] as i8);
            sumi1 += v1 * i32::from(y[2 + j + BLOCK / 2] as i8);
        }
        sumf += (scale(x) * q8_0::scale(y)) * (sumi0 + sumi1) as f32;
    }
    sumf
}
