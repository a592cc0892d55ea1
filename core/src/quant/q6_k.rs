//! Q6_K (`GGML_TYPE_Q6_K` = 14): super-blocks of 256 elements in 210 bytes, sixteen
//! sub-blocks of 16 with their own signed 8-bit scale.
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..128 | `ql[128]` | low 4 bits of the 6-bit levels |
//! | 128..192 | `qh[64]` | high 2 bits of the levels, four per byte |
//! | 192..208 | `scales[16]` | i8 sub-block scales |
//! | 208..210 | `d` | f16 super-block scale, little-endian |
//!
//! Each half of 128 elements `h` uses `ql[64h ..][..64]` and `qh[32h ..][..32]`: for
//! `l < 32`, elements `l`, `l + 32`, `l + 64`, `l + 96` take the low nibble of `ql[l]`,
//! the low nibble of `ql[l + 32]`, the high nibble of `ql[l]`, the high nibble of
//! `ql[l + 32]`, and bits 0–1, 2–3, 4–5, 6–7 of `qh[l]` on top. Element value:
//! `d · scales[i / 16] · (level − 32)`. Dot products pair it with a [`super::q8_k`] activation.

use super::QK_K;
use super::float::{f16_to_f32, f32_to_f16};
use super::kquants::{GROUP_MAX_EPS, make_qx_quants, nearest_int};
use super::q8_k;

/// Elements per block (`QK_K`).
pub const BLOCK: usize = QK_K;
/// Bytes per block (`sizeof(block_q6_K)`).
pub const BLOCK_BYTES: usize = 210;
/// One block's bytes.
pub type Block = [u8; BLOCK_BYTES];

const QH: usize = 128;
const SCALES: usize = 192;
const D: usize = 208;

/// The block's scale `d`.
pub fn super_scale(b: &Block) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[D], b[D + 1]]))
}

/// Sub-block `j`'s scale (`j < 16`).
pub fn sub_scale(b: &Block, j: usize) -> i8 {
    b[SCALES + j] as i8
}

/// The signed level (6-bit level − 32, in `[−32, 31]`) of element `i` (`i < 256`).
pub fn level(b: &Block, i: usize) -> i8 {
    let (half, k) = (i / 128, i % 128);
    let (quarter, l) = (k / 32, k % 32);
    let ql = b[64 * half + l + 32 * (quarter % 2)];
    let low = if quarter < 2 { ql & 0xF } else { ql >> 4 };
    let high = (b[QH + 32 * half + l] >> (2 * quarter)) & 3;
    (low | (high << 4)) as i8 - 32
}

/// ggml's `dequantize_row_q6_K` for one block: `y[i] = (d · scales[i/16]) · level`.
pub fn dequantize_block(b: &Block, y: &mut [f32; BLOCK]) {
    let d = super_scale(b);
    for (i, y) in y.iter_mut().enumerate() {
        *y = d * f32::from(sub_scale(b, i / 16)) * f32::from(level(b, i));
    }
}

/// ggml's `quantize_row_q6_K_ref` for one block (no importance matrix): each sub-block's
/// scale from `make_qx_quants(16, 32, x, rmse_type = 1)`, the scales quantized to i8 with
/// `iscale = −128 / max_scale`, then every level recomputed as `nearest_int(x / d)` from
/// the stored scales. A block whose largest scale is below 1e-15 is all zeros.
pub fn quantize_block(x: &[f32; BLOCK], b: &mut Block) {
    let mut levels = [0u8; BLOCK];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for (ib, (xs, ls)) in x.chunks_exact(16).zip(levels.chunks_exact_mut(16)).enumerate() {
        let scale = make_qx_quants(32, xs, ls);
        scales[ib] = scale;
        let abs_scale = super::float::fabsf(scale);
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    b.fill(0);
    if max_abs_scale < GROUP_MAX_EPS {
        return;
    }
    let iscale = -128.0 / max_scale;
    b[D..].copy_from_slice(&f32_to_f16(1.0 / iscale).to_le_bytes());
    for (ib, &s) in scales.iter().enumerate() {
        b[SCALES + ib] = nearest_int(iscale * s).min(127) as i8 as u8;
    }
    requantize(x, b, &mut levels);
    pack_levels(&levels, b);
}

/// The levels for the stored (i8, f16) scales: `clamp(nearest_int(x / d), −32, 31) + 32`;
/// a sub-block whose `d` is 0 keeps the levels of its fit, as in ggml.
fn requantize(x: &[f32; BLOCK], b: &Block, levels: &mut [u8; BLOCK]) {
    let d = super_scale(b);
    for (j, (xs, ls)) in x.chunks_exact(16).zip(levels.chunks_exact_mut(16)).enumerate() {
        let d = d * f32::from(sub_scale(b, j));
        if d == 0.0 {
            continue;
        }
        for (l, &v) in ls.iter_mut().zip(xs) {
            *l = (nearest_int(v / d).clamp(-32, 31) + 32) as u8;
        }
    }
}

/// Writes the 6-bit `levels` into `ql` and `qh` (the layout in the module docs).
fn pack_levels(levels: &[u8; BLOCK], b: &mut Block) {
    for half in 0..2 {
        let lv = &levels[128 * half..128 * half + 128];
        for l in 0..32 {
            let (q1, q2, q3, q4) = (lv[l], lv[l + 32], lv[l + 64], lv[l + 96]);
            b[64 * half + l] = (q1 & 0xF) | ((q3 & 0xF) << 4);
            b[64 * half + l + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
            b[QH + 32 * half + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
}

/// ggml's scalar `ggml_vec_dot_q6_K_q8_K` over blocks paired in order: per block the i32
/// sums `Σ scale·level·a` kept in eight lanes (element index mod 8), then
/// `sums[l] += (d·d_a)·lane[l]`; at the end the eight lanes are added in order.
pub fn vec_dot(w: &[Block], a: &[q8_k::Block]) -> f32 {
    let mut sums = [0.0f32; 8];
    for (x, y) in w.iter().zip(a) {
        let mut lanes = [0i32; 8];
        for i in 0..BLOCK {
            let prod = i32::from(q8_k::quant(y, i)) * i32::from(level(x, i));
            lanes[i % 8] += i32::from(sub_scale(x, i / 16)) * prod;
        }
        let d = super_scale(x) * q8_k::scale(y);
        for (s, &lane) in sums.iter_mut().zip(&lanes) {
            *s += d * lane as f32;
        }
    }
    let mut sumf = 0.0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}
