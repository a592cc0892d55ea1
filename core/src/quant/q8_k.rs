//! Q8_K (`GGML_TYPE_Q8_K` = 15): blocks of 256 elements in 292 bytes. An intermediate
//! format: ggml quantizes activations to it for the K-quant dot products, never weights.
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..4 | `d` | f32 scale, little-endian |
//! | 4..260 | `qs[256]` | i8 quants; element `j` is `qs[j] · d` |
//! | 260..292 | `bsums[16]` | i16, little-endian: `bsums[g]` = Σ `qs[16g .. 16g + 16]` |
//!
//! The block sums let a dot product subtract a weight's per-sub-block minimum without
//! touching each quant (see [`super::q4_k::vec_dot`]).

use super::QK_K;
use super::float::largest_magnitude;
use super::kquants::nearest_int;

/// Elements per block (`QK_K`).
pub const BLOCK: usize = QK_K;
/// Bytes per block (`sizeof(block_q8_K)`).
pub const BLOCK_BYTES: usize = 292;
/// One block's bytes.
pub type Block = [u8; BLOCK_BYTES];

const QS: usize = 4;
const BSUMS: usize = QS + QK_K;

/// The block's scale `d`.
pub fn scale(b: &Block) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Quant `j` (`j < 256`).
pub fn quant(b: &Block, j: usize) -> i8 {
    b[QS + j] as i8
}

/// Block sum `g` (`g < 16`): the sum of quants `16g .. 16g + 16`.
pub fn bsum(b: &Block, g: usize) -> i16 {
    i16::from_le_bytes([b[BSUMS + 2 * g], b[BSUMS + 2 * g + 1]])
}

/// ggml's `dequantize_row_q8_K` for one block: `y[j] = d · qs[j]`.
pub fn dequantize_block(b: &Block, y: &mut [f32; BLOCK]) {
    let d = scale(b);
    for (j, y) in y.iter_mut().enumerate() {
        *y = d * f32::from(quant(b, j));
    }
}

/// ggml's `quantize_row_q8_K_ref` for one block: with `max` the element of largest
/// magnitude (first on ties), `iscale = −127 / max`, `qs[j] = min(127, nearest_int(iscale ·
/// x[j]))`, `d = 1 / iscale`, and the block sums. A block whose `amax` is exactly 0 is all
/// zeros (ggml leaves its `bsums` unwritten; they are written as the zeros they sum to).
pub fn quantize_block(x: &[f32; BLOCK], b: &mut Block) {
    let (max, amax) = largest_magnitude(x);
    if amax == 0.0 {
        b.fill(0);
        return;
    }
    let iscale = -127.0 / max;
    for (q, &v) in b[QS..BSUMS].iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8 as u8;
    }
    for g in 0..QK_K / 16 {
        let sum: i32 = (16 * g..16 * g + 16).map(|j| i32::from(quant(b, j))).sum();
        b[BSUMS + 2 * g..BSUMS + 2 * g + 2].copy_from_slice(&(sum as i16).to_le_bytes());
    }
    b[..QS].copy_from_slice(&(1.0 / iscale).to_le_bytes());
}
