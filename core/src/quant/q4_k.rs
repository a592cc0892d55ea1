//! Q4_K (`GGML_TYPE_Q4_K` = 12): super-blocks of 256 elements in 144 bytes, eight
//! sub-blocks of 32 with their own 6-bit scale and min.
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..2 | `d` | f16 super-block scale of the sub-block scales |
//! | 2..4 | `dmin` | f16 super-block scale of the sub-block mins |
//! | 4..16 | `scales[12]` | eight 6-bit scales `sc` and eight 6-bit mins `m`, packed as [`scale_min`] reads them |
//! | 16..144 | `qs[128]` | 4-bit quants: for each 64 elements, 32 bytes; byte `l` holds element `l` (low nibble) and `l + 32` (high nibble) |
//!
//! Element `i` of sub-block `j`: `d·sc[j] · q[i] − dmin·m[j]`. Dot products pair it with a
//! [`super::q8_k`] activation.

use super::QK_K;
use super::float::{f16_to_f32, f32_to_f16, fabsf};
use super::kquants::{Qkx2, make_qkx2_quants, nearest_int, scale_min_k4};
use super::q8_k;

/// Elements per block (`QK_K`).
pub const BLOCK: usize = QK_K;
/// Bytes per block (`sizeof(block_q4_K)`).
pub const BLOCK_BYTES: usize = 144;
/// One block's bytes.
pub type Block = [u8; BLOCK_BYTES];

const SCALES: usize = 4;
const QS: usize = 16;

/// The block's `(d, dmin)`.
pub fn super_scales(b: &Block) -> (f32, f32) {
    (
        f16_to_f32(u16::from_le_bytes([b[0], b[1]])),
        f16_to_f32(u16::from_le_bytes([b[2], b[3]])),
    )
}

fn packed_scales(b: &Block) -> [u8; 12] {
    let mut q = [0u8; 12];
    q.copy_from_slice(&b[SCALES..QS]);
    q
}

/// Sub-block `j`'s 6-bit `(scale, min)` (`j < 8`; ggml's `get_scale_min_k4`).
pub fn scale_min(b: &Block, j: usize) -> (u8, u8) {
    scale_min_k4(j, &packed_scales(b))
}

/// The 4-bit level of element `i` (`i < 256`).
pub fn level(b: &Block, i: usize) -> u8 {
    let q = b[QS + (i / 64) * 32 + i % 32];
    if i % 64 < 32 { q & 0xF } else { q >> 4 }
}

/// ggml's `dequantize_row_q4_K` for one block.
pub fn dequantize_block(b: &Block, y: &mut [f32; BLOCK]) {
    let (d, min) = super_scales(b);
    for (j, y) in y.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min(b, j);
        let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
        for (l, y) in y.iter_mut().enumerate() {
            *y = d1 * f32::from(level(b, 32 * j + l)) - m1;
        }
    }
}

/// ggml's `quantize_row_q4_K_ref` for one block (no importance matrix): each sub-block's
/// scale and min from `make_qkx2_quants(32, 15, x, av_x + |x|, …, −1, 0.1, 20)`, both
/// quantized to 6 bits against the largest, then every level recomputed from the stored
/// scales as `nearest_int((x + dm) / d)`.
pub fn quantize_block(x: &[f32; BLOCK], b: &mut Block) {
    let mut levels = [0u8; BLOCK];
    let (scales, mins) = sub_block_fits(x, &mut levels);
    let max_scale = scales.iter().fold(0.0f32, |m, &s| if s > m { s } else { m });
    let max_min = mins.iter().fold(0.0f32, |m, &s| if s > m { s } else { m });
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; 12];
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        pack_scale_min(&mut packed, j, ls, lm);
    }
    b[0..2].copy_from_slice(&f32_to_f16(max_scale / 63.0).to_le_bytes());
    b[2..4].copy_from_slice(&f32_to_f16(max_min / 63.0).to_le_bytes());
    b[SCALES..QS].copy_from_slice(&packed);
    requantize(x, b, &mut levels);
    pack_levels(&levels, b);
}

/// Writes the 4-bit `levels` into `qs`: per 64 elements, 32 bytes of (low: `l`, high: `l + 32`).
fn pack_levels(levels: &[u8; BLOCK], b: &mut Block) {
    for (j, q) in b[QS..].chunks_exact_mut(32).enumerate() {
        for (l, q) in q.iter_mut().enumerate() {
            *q = levels[64 * j + l] | (levels[64 * j + l + 32] << 4);
        }
    }
}

/// Per sub-block `(scales, mins)` from `make_qkx2_quants`, which also sets `levels`.
fn sub_block_fits(x: &[f32; BLOCK], levels: &mut [u8; BLOCK]) -> ([f32; 8], [f32; 8]) {
    const FIT: Qkx2 = Qkx2 {
        nmax: 15,
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
    };
    let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
    let mut weights = [0.0f32; 32];
    for (j, (xs, ls)) in x.chunks_exact(32).zip(levels.chunks_exact_mut(32)).enumerate() {
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = libm::sqrtf(sum_x2 / 32.0);
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + fabsf(v);
        }
        (scales[j], mins[j]) = make_qkx2_quants(&FIT, xs, &weights, ls);
    }
    (scales, mins)
}

/// Stores sub-block `j`'s 6-bit scale and min as `get_scale_min_k4` reads them (sub-blocks
/// 0..4 before 4..8, as ggml's loop writes them: the later ones OR their top bits in).
fn pack_scale_min(q: &mut [u8; 12], j: usize, ls: u8, lm: u8) {
    if j < 4 {
        q[j] = ls;
        q[j + 4] = lm;
    } else {
        q[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
        q[j - 4] |= (ls >> 4) << 6;
        q[j] |= (lm >> 4) << 6;
    }
}

/// The levels for the stored (6-bit, f16) scales: `clamp(nearest_int((x + dm) / d), 0, 15)`;
/// a sub-block whose `d` is 0 keeps the levels of its fit, as in ggml.
fn requantize(x: &[f32; BLOCK], b: &Block, levels: &mut [u8; BLOCK]) {
    let (d, dmin) = super_scales(b);
    for (j, (xs, ls)) in x.chunks_exact(32).zip(levels.chunks_exact_mut(32)).enumerate() {
        let (sc, m) = scale_min(b, j);
        let d = d * f32::from(sc);
        if d == 0.0 {
            continue;
        }
        let dm = dmin * f32::from(m);
        for (l, &v) in ls.iter_mut().zip(xs) {
            *l = nearest_int((v + dm) / d).clamp(0, 15) as u8;
        }
    }
}

/// ggml's scalar `ggml_vec_dot_q4_K_q8_K` over blocks paired in order: per block the i32
/// sums `Σ sc·q·a` kept in eight lanes (element index mod 8) and `Σ bsum·m`; then
/// `sums[l] += (d·d_a)·lane[l]` and `sumf −= (dmin·d_a)·Σ bsum·m`; at the end the eight
/// lanes are added to `sumf` in order.
pub fn vec_dot(w: &[Block], a: &[q8_k::Block]) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let sm: [(u8, u8); 8] = core::array::from_fn(|j| scale_min(x, j));
        let mut lanes = [0i32; 8];
        for i in 0..BLOCK {
            let prod = i32::from(q8_k::quant(y, i)) * i32::from(level(x, i));
            lanes[i % 8] += i32::from(sm[i / 32].0) * prod;
        }
        let summs: i32 = (0..16)
            .map(|g| i32::from(q8_k::bsum(y, g)) * i32::from(sm[g / 2].1))
            .sum();
        let (d, dmin) = super_scales(x);
        let da = q8_k::scale(y);
        let d = d * da;
        for (s, &lane) in sums.iter_mut().zip(&lanes) {
            *s += d * lane as f32;
        }
        sumf -= dmin * da * summs as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}
