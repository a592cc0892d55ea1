//! 8-bit optimizer state: AdamW's moments stored blockwise in one byte per value, with the
//! dynamic (decade-spaced) code of Dettmers et al., "8-bit Optimizers via Block-wise
//! Quantization" (ICLR 2022) — bitsandbytes' `AdamW8bit` — so the two moments of a
//! parameter take 2 bytes instead of 8.
//!
//! A state tensor of `n` values is `ceil(n / 256)` blocks of [`BLOCK_BYTES`] bytes:
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..4 | `absmax` | f32, little-endian: the block's largest magnitude |
//! | 4..260 | `q[256]` | codes; value `j` is `code(q[j]) · absmax` (unused tail codes are 0) |
//!
//! One update ([`adamw_block`]) dequantizes a block of `m` and `v`, applies the f32 AdamW
//! step to it (the parameter reads the fresh f32 moments, as bitsandbytes does), then
//! requantizes each moment with its new absmax to the nearest code.
//!
//! The second moment is stored as its square root `r = sqrt(v)`, which halves its dynamic
//! range in log space: within a block of 256 neighbouring weights, gradient magnitudes that
//! differ 1000× make `v` differ 10⁶× — at the end of the code's 7 decades, where small `v`
//! round to zero and AdamW's step `m / (sqrt(v) + eps)` blows up (bitsandbytes stores `v`
//! itself and has this failure) — but `r` only 10³×. The update needs `sqrt(v)` anyway.
//!
//! The codes: `r` (never negative) uses bitsandbytes' unsigned dynamic map
//! (`create_dynamic_map(signed=False)`): 0, 1 and, for each decade `10^(k-6)`,
//! `k = 0..7`, the midpoints of `2^(k+1)` equal steps of `[0.1, 1]` scaled by it. `m` uses a
//! sign-magnitude code (bit 7 the sign) over 128 magnitudes: 0, 1 and the decades
//! `10^(k-6)`, `k = 1..7`, with `2^k` midpoints each. bitsandbytes' signed map lacks −1
//! (it spends that code on a `1e-6` decade); having both ±1 makes a block's extreme value
//! exact whatever its sign, so requantizing dequantized moments gives back the same bytes
//! ([`quantize_moments`] of [`dequantize_moments`] is the identity, `v = r²` included).
//! That is what lets a checkpoint hold the moments as plain f32 (readable by the f32
//! optimizer too) and a resumed run continue bit for bit. A block whose absmax is below
//! [`Code::flush_below`] (2⁻¹⁰⁰ for `m`, 2⁻⁴⁰ ≈ 9·10⁻¹³ for `r`) is stored as zeros,
//! which keeps every dequantized value (and `r²`) a normal float, as the identity needs;
//! such moments move no weight (`eps` dominates a root that small).

use crate::backend::AdamWStep;
use crate::tensor::{BlockFormat, DType, TensorDesc};

/// Values per block.
pub const BLOCK: usize = 256;
/// Bytes per block: the f32 absmax and one code per value.
pub const BLOCK_BYTES: usize = 4 + BLOCK;
/// Tensors with fewer values keep f32 moments (bitsandbytes' `min_8bit_size`): biases and
/// norm weights, whose state is small and whose updates are the most sensitive.
pub const MIN_ELEMENTS: usize = 4096;

/// The first moment's storage format (signed code).
pub const SIGNED_FORMAT: BlockFormat = BlockFormat {
    id: 0x7e01,
    block: BLOCK as u16,
    block_bytes: BLOCK_BYTES as u16,
    name: "adam8_signed",
};
/// The second moment's storage format (unsigned code of its square root).
pub const UNSIGNED_FORMAT: BlockFormat = BlockFormat {
    id: 0x7e02,
    block: BLOCK as u16,
    block_bytes: BLOCK_BYTES as u16,
    name: "adam8_unsigned",
};

/// Which code a state tensor uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Sign-magnitude over [`SIGNED_MAGNITUDES`] (the first moment).
    Signed,
    /// [`UNSIGNED_VALUES`] (the square root of the second moment).
    Unsigned,
}

impl Code {
    /// The block format a tensor in this code has.
    pub const fn format(self) -> BlockFormat {
        match self {
            Code::Signed => SIGNED_FORMAT,
            Code::Unsigned => UNSIGNED_FORMAT,
        }
    }

    /// Blocks whose absmax is below this are stored as zeros.
    pub const fn flush_below(self) -> f32 {
        match self {
            Code::Signed => f32::from_bits((127 - 100) << 23),
            Code::Unsigned => f32::from_bits((127 - 40) << 23),
        }
    }

    /// The code value of byte `q`.
    #[inline]
    pub fn value(self, q: u8) -> f32 {
        match self {
            Code::Signed => {
                let mag = SIGNED_MAGNITUDES[(q & 0x7f) as usize];
                if q & 0x80 != 0 { -mag } else { mag }
            }
            Code::Unsigned => UNSIGNED_VALUES[q as usize],
        }
    }

    /// The byte whose value is nearest to `y` (`|y| ≤ 1`; ties go to the smaller
    /// magnitude). Zero is always byte 0 (never a negative zero).
    #[inline]
    pub fn quantize(self, y: f32) -> u8 {
        match self {
            Code::Signed => {
                let mag = SIGNED_NEAREST.index(if y < 0.0 { -y } else { y });
                if y < 0.0 && mag != 0 { mag | 0x80 } else { mag }
            }
            Code::Unsigned => UNSIGNED_NEAREST.index(y),
        }
    }
}

/// Finds the nearest code by the float's bits: a table indexed by the exponent and the
/// top 5 mantissa bits of `y ∈ [0, 1]` (buckets 3% wide) holds the number of midpoints
/// below the bucket; at most [`SCAN`] more lie inside it (checked by a test), counted
/// with independent comparisons — no dependent chain of loads as a binary search has.
struct Nearest {
    /// Midpoints between consecutive code values, padded with +∞.
    mids: [f32; MIDS],
    /// Per bucket: the number of midpoints below its lower end.
    start: [u8; KEYS],
    /// The index of the code 1.
    last: u8,
}

const KEY_SHIFT: u32 = 18;
/// Buckets up to and including the one of 1.0.
const KEYS: usize = (0x3f80_0000 >> KEY_SHIFT) + 1;
/// Midpoints a bucket may hold.
const SCAN: usize = 4;
const MIDS: usize = 256 + SCAN;

impl Nearest {
    const fn new(values: &[f32]) -> Nearest {
        let n = values.len();
        let mut mids = [f32::INFINITY; MIDS];
        let mut i = 0;
        while i + 1 < n {
            mids[i] = ((values[i] as f64 + values[i + 1] as f64) / 2.0) as f32;
            i += 1;
        }
        let mut start = [0u8; KEYS];
        let mut key = 0;
        while key < KEYS {
            let lo = f32::from_bits((key as u32) << KEY_SHIFT);
            // Binary search: the number of midpoints below `lo`.
            let (mut a, mut b) = (0usize, n - 1);
            while a < b {
                let mid = (a + b) / 2;
                if mids[mid] < lo {
                    a = mid + 1;
                } else {
                    b = mid;
                }
            }
            start[key] = a as u8;
            key += 1;
        }
        Nearest {
            mids,
            start,
            last: (n - 1) as u8,
        }
    }

    /// The number of midpoints below `y`: the index of the code nearest to `y` (ties to
    /// the smaller; NaN and values ≤ 0 give 0, values > 1 the code 1).
    #[inline]
    fn index(&self, y: f32) -> u8 {
        if !(y > 0.0 && y <= 1.0) {
            return if y > 1.0 { self.last } else { 0 };
        }
        let key = (y.to_bits() >> KEY_SHIFT) as usize;
        let s = self.start[key.min(KEYS - 1)] as usize;
        let mut i = s;
        for j in 0..SCAN {
            i += usize::from(self.mids[(s + j).min(MIDS - 1)] < y);
        }
        i as u8
    }
}

/// The 128 magnitudes of the signed code, ascending (0 first, 1 last).
pub static SIGNED_MAGNITUDES: [f32; 128] = dynamic_code::<128>(1);
/// The 256 values of the unsigned code, ascending (0 first, 1 last).
pub static UNSIGNED_VALUES: [f32; 256] = dynamic_code::<256>(0);
static SIGNED_NEAREST: Nearest = Nearest::new(&SIGNED_MAGNITUDES);
static UNSIGNED_NEAREST: Nearest = Nearest::new(&UNSIGNED_VALUES);

/// 0, then for each decade `10^(k-6)`, `k = first..7`, the midpoints of `N/128 · 2^k`
/// equal steps of `[0.1, 1]` times it, then 1: bitsandbytes' `create_dynamic_map`.
const fn dynamic_code<const N: usize>(first: usize) -> [f32; N] {
    const DECADES: [f64; 7] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
    let mut out = [0.0f32; N];
    let mut at = 1;
    let mut k = first;
    while k < 7 {
        let steps = (N / 128) << k;
        let mut j = 0;
        while j < steps {
            let lo = 0.1 + 0.9 * j as f64 / steps as f64;
            let hi = 0.1 + 0.9 * (j + 1) as f64 / steps as f64;
            out[at] = (DECADES[k] * (lo + hi) / 2.0) as f32;
            at += 1;
            j += 1;
        }
        k += 1;
    }
    out[at] = 1.0;
    out
}

/// Bytes a state tensor of `n` values takes.
pub const fn state_bytes(n: usize) -> usize {
    n.div_ceil(BLOCK) * BLOCK_BYTES
}

/// The tensor holding the state of `n` values in `code`: one row of whole blocks
/// (`n` rounded up to a multiple of [`BLOCK`]; the padding codes stay 0).
pub fn state_desc(code: Code, n: usize) -> TensorDesc {
    TensorDesc::new(DType::Block(code.format()), &[n.div_ceil(BLOCK) * BLOCK])
}

/// The block's absmax.
#[inline]
pub fn absmax(block: &[u8; BLOCK_BYTES]) -> f32 {
    f32::from_le_bytes([block[0], block[1], block[2], block[3]])
}

/// Quantizes `x` (at most [`BLOCK`] values) into `block`: absmax is `max |x|` (zero when
/// below [`Code::flush_below`]); code `j` is the nearest to `x[j] · (1 / absmax)`; codes
/// past `x` are 0. NaN values (never produced by a finite step) quantize to 0.
pub fn quantize_block(code: Code, x: &[f32], block: &mut [u8; BLOCK_BYTES]) {
    let mut amax = 0.0f32;
    for &v in x {
        let a = if v < 0.0 { -v } else { v };
        amax = if a > amax { a } else { amax };
    }
    quantize_block_with(code, x, amax, block);
}

/// [`quantize_block`] with `max |x|` computed by the caller (a SIMD kernel that has it
/// from the update).
pub fn quantize_block_with(code: Code, x: &[f32], max_abs: f32, block: &mut [u8; BLOCK_BYTES]) {
    let amax = if max_abs < code.flush_below() { 0.0 } else { max_abs };
    block[..4].copy_from_slice(&amax.to_le_bytes());
    let (head, tail) = block[4..].split_at_mut(x.len().min(BLOCK));
    if amax == 0.0 {
        head.fill(0);
    } else {
        // A reciprocal, not a division per value: `x / absmax` moves by an ulp or two, far
        // less than the gap between codes, so the round trip stays exact.
        let inv = 1.0 / amax;
        for (q, &v) in head.iter_mut().zip(x) {
            *q = code.quantize(v * inv);
        }
    }
    tail.fill(0);
}

/// Dequantizes the first `out.len()` (≤ [`BLOCK`]) values of `block`.
pub fn dequantize_block(code: Code, block: &[u8; BLOCK_BYTES], out: &mut [f32]) {
    let amax = absmax(block);
    for (o, &q) in out.iter_mut().zip(&block[4..]) {
        *o = code.value(q) * amax;
    }
}

/// AdamW's per-step constants, computed in f64 from the step's f32 hyper-parameters (as
/// `torch.optim.AdamW` computes its bias corrections in Python floats).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWCoefs {
    /// Multiplies the gradient first.
    pub grad_scale: f32,
    /// `1 − lr·wd`.
    pub decay: f32,
    /// `1 − β1`.
    pub one_minus_beta1: f32,
    /// `β2`.
    pub beta2: f32,
    /// `1 − β2`.
    pub one_minus_beta2: f32,
    /// `−lr / (1 − β1^t)`.
    pub neg_step_size: f32,
    /// `sqrt(1 − β2^t)`.
    pub bias2_sqrt: f32,
    /// Added to the denominator.
    pub eps: f32,
}

impl AdamWCoefs {
    /// The constants of step `st`.
    pub fn new(st: &AdamWStep) -> AdamWCoefs {
        let t = st.step.clamp(1, i32::MAX as u64) as i32;
        let bias1 = 1.0 - powi(st.beta1 as f64, t);
        let bias2 = 1.0 - powi(st.beta2 as f64, t);
        AdamWCoefs {
            grad_scale: st.grad_scale,
            decay: (1.0 - st.lr as f64 * st.weight_decay as f64) as f32,
            one_minus_beta1: (1.0 - st.beta1 as f64) as f32,
            beta2: st.beta2,
            one_minus_beta2: (1.0 - st.beta2 as f64) as f32,
            neg_step_size: (-(st.lr as f64) / bias1) as f32,
            bias2_sqrt: libm::sqrt(bias2) as f32,
            eps: st.eps,
        }
    }

    /// One element's update in `torch.optim.AdamW`'s order (the CPU backend's SIMD kernel
    /// does the same operations): `g ← s·g; p ← p·(1 − lr·wd); m ← m + (1−β1)·(g − m);`
    /// `v ← v·β2 + (1−β2)·g·g; p ← p + (−lr/(1−β1^t))·m / (sqrt(v)/sqrt(1−β2^t) + eps)`.
    #[inline]
    pub fn update(&self, p: &mut f32, g: f32, m: &mut f32, v: &mut f32) {
        let g = self.grad_scale * g;
        let pd = *p * self.decay;
        *m += self.one_minus_beta1 * (g - *m);
        *v = *v * self.beta2 + self.one_minus_beta2 * g * g;
        let denom = libm::sqrtf(*v) / self.bias2_sqrt + self.eps;
        *p = pd + self.neg_step_size * *m / denom;
    }
}

/// `x^n` by squaring (exact for the small integer powers of a bias correction, and the
/// same in every build: `powi` is not in `core`).
fn powi(x: f64, mut n: i32) -> f64 {
    let (mut base, mut acc) = (x, 1.0);
    while n > 0 {
        if n & 1 == 1 {
            acc *= base;
        }
        base *= base;
        n >>= 1;
    }
    acc
}

/// One AdamW step of up to [`BLOCK`] parameters `p` from gradients `g` (equal lengths),
/// with the first moment and the root of the second in the 8-bit blocks `m` and `r`.
pub fn adamw_block(c: &AdamWCoefs, p: &mut [f32], g: &[f32], m: &mut [u8; BLOCK_BYTES], r: &mut [u8; BLOCK_BYTES]) {
    let n = p.len().min(g.len()).min(BLOCK);
    let mut mf = [0.0f32; BLOCK];
    let mut vf = [0.0f32; BLOCK];
    dequantize_pair(m, r, &mut mf[..n], &mut vf[..n]);
    for j in 0..n {
        c.update(&mut p[j], g[j], &mut mf[j], &mut vf[j]);
    }
    quantize_pair(&mf[..n], &vf[..n], m, r);
}

/// `m` and `v = r²` of one block pair.
fn dequantize_pair(m: &[u8; BLOCK_BYTES], r: &[u8; BLOCK_BYTES], mf: &mut [f32], vf: &mut [f32]) {
    dequantize_block(Code::Signed, m, mf);
    dequantize_block(Code::Unsigned, r, vf);
    for v in vf.iter_mut() {
        *v *= *v;
    }
}

/// Quantizes `m` and `r = sqrt(v)` of one block pair.
fn quantize_pair(mf: &[f32], vf: &[f32], m: &mut [u8; BLOCK_BYTES], r: &mut [u8; BLOCK_BYTES]) {
    let mut rf = [0.0f32; BLOCK];
    for (r, &v) in rf.iter_mut().zip(vf) {
        *r = libm::sqrtf(v);
    }
    quantize_block(Code::Signed, mf, m);
    quantize_block(Code::Unsigned, &rf[..vf.len().min(BLOCK)], r);
}

/// The f32 moments `(m, v)` of `m_state`, `r_state` (each [`state_bytes`]`(m.len())`
/// bytes; `m` and `v` of equal length are filled).
pub fn dequantize_moments(m_state: &[u8], r_state: &[u8], m: &mut [f32], v: &mut [f32]) {
    let blocks = m_state
        .as_chunks::<BLOCK_BYTES>()
        .0
        .iter()
        .zip(r_state.as_chunks::<BLOCK_BYTES>().0)
        .zip(m.chunks_mut(BLOCK).zip(v.chunks_mut(BLOCK)));
    for ((mb, rb), (m, v)) in blocks {
        dequantize_pair(mb, rb, m, v);
    }
}

/// The 8-bit states of f32 moments `m`, `v` (equal lengths) into `m_state`, `r_state`
/// (each [`state_bytes`]`(m.len())` bytes): the inverse of [`dequantize_moments`] on what
/// it returns.
pub fn quantize_moments(m: &[f32], v: &[f32], m_state: &mut [u8], r_state: &mut [u8]) {
    let blocks = m_state
        .as_chunks_mut::<BLOCK_BYTES>()
        .0
        .iter_mut()
        .zip(r_state.as_chunks_mut::<BLOCK_BYTES>().0)
        .zip(m.chunks(BLOCK).zip(v.chunks(BLOCK)));
    for ((mb, rb), (m, v)) in blocks {
        quantize_pair(m, v, mb, rb);
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use super::*;

    #[test]
    fn codes_are_sorted_and_span_zero_to_one() {
        for w in SIGNED_MAGNITUDES.windows(2) {
            assert!(w[0] < w[1], "{w:?}");
        }
        for w in UNSIGNED_VALUES.windows(2) {
            assert!(w[0] < w[1], "{w:?}");
        }
        assert_eq!((SIGNED_MAGNITUDES[0], SIGNED_MAGNITUDES[127]), (0.0, 1.0));
        assert_eq!((UNSIGNED_VALUES[0], UNSIGNED_VALUES[255]), (0.0, 1.0));
        // bitsandbytes' unsigned map: the 1e-6 decade is [0.325e-6, 0.775e-6], the top
        // decade's first step 0.1 + 0.9/128/2.
        assert_eq!(UNSIGNED_VALUES[1], 0.325e-6);
        assert_eq!(UNSIGNED_VALUES[2], 0.775e-6);
        assert_eq!(UNSIGNED_VALUES[127], (0.1 + 0.45 / 128.0) as f32);
        assert_eq!(SIGNED_MAGNITUDES[1], 0.325e-5);
        assert_eq!(SIGNED_MAGNITUDES[63], (0.1 + 0.45 / 64.0) as f32);
    }

    #[test]
    fn every_code_quantizes_to_itself_and_signs_are_symmetric() {
        for q in 0..=255u8 {
            assert_eq!(Code::Unsigned.quantize(Code::Unsigned.value(q)), q);
            let s = Code::Signed.value(q);
            let back = Code::Signed.quantize(s);
            // 0x80 is a negative zero, which quantizes to plain zero.
            assert_eq!(back, if q == 0x80 { 0 } else { q }, "{q:#x}");
            assert_eq!(Code::Signed.value(q ^ 0x80), -s);
        }
        assert_eq!(Code::Signed.quantize(-1.0), 0xff);
        assert_eq!(Code::Signed.quantize(-0.0), 0);
    }

    #[test]
    fn quantize_picks_the_nearest_code() {
        let mut y = -1.0f32;
        while y <= 1.0 {
            for code in [Code::Signed, Code::Unsigned] {
                if code == Code::Unsigned && y < 0.0 {
                    continue;
                }
                let got = (code.value(code.quantize(y)) - y).abs();
                let best = (0..=255u8)
                    .map(|q| (code.value(q) - y).abs())
                    .fold(f32::INFINITY, f32::min);
                assert_eq!(got, best, "{code:?} {y}");
            }
            y += 0.000_37;
        }
    }

    #[test]
    fn requantizing_dequantized_moments_gives_the_same_bytes() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for trial in 0..300 {
            let n = 1 + (next() % (3 * BLOCK as u64)) as usize;
            // Magnitudes over 40 decades: first moments of both signs, second moments ≥ 0.
            let scale = 10f32.powi((next() % 40) as i32 - 30);
            let mut wide = || {
                let r = (next() >> 40) as f32 / (1u64 << 24) as f32;
                let x = r * r * r * r * scale;
                if next() & 1 == 0 { x } else { -x }
            };
            let m: Vec<f32> = (0..n).map(|_| wide()).collect();
            let v: Vec<f32> = (0..n).map(|_| wide().abs()).collect();
            let (mut ms, mut rs) = (vec![0u8; state_bytes(n)], vec![0u8; state_bytes(n)]);
            quantize_moments(&m, &v, &mut ms, &mut rs);
            let (mut m2, mut v2) = (vec![0.0; n], vec![0.0; n]);
            dequantize_moments(&ms, &rs, &mut m2, &mut v2);
            let (mut ms2, mut rs2) = (vec![0u8; state_bytes(n)], vec![0u8; state_bytes(n)]);
            quantize_moments(&m2, &v2, &mut ms2, &mut rs2);
            assert!(ms == ms2, "trial {trial}: m");
            assert!(rs == rs2, "trial {trial}: v");
        }
    }

    #[test]
    fn no_bucket_holds_more_midpoints_than_are_scanned() {
        for t in [&SIGNED_NEAREST, &UNSIGNED_NEAREST] {
            for key in 0..KEYS {
                let lo = f32::from_bits((key as u32) << KEY_SHIFT);
                let hi = f32::from_bits(((key as u32) + 1) << KEY_SHIFT);
                let inside = t.mids.iter().filter(|&&m| m >= lo && m < hi).count();
                assert!(inside <= SCAN, "bucket {key} [{lo}, {hi}) holds {inside}");
            }
        }
    }

    #[test]
    fn the_bucket_search_counts_the_midpoints_below() {
        // Every 997th float in [0, 1] (all exponents, subnormals included), each midpoint and
        // its neighbours, and the edge cases.
        let mut ys: Vec<f32> = (0..=0x3f80_0000u32).step_by(997).map(f32::from_bits).collect();
        for t in [&SIGNED_NEAREST, &UNSIGNED_NEAREST] {
            for &m in t.mids.iter().filter(|m| m.is_finite()) {
                ys.extend([m, f32::from_bits(m.to_bits() - 1), f32::from_bits(m.to_bits() + 1)]);
            }
        }
        ys.extend([0.0, -0.0, 1.0, 1.0000001, 2.0, f32::NAN, -0.5]);
        for (t, n) in [(&SIGNED_NEAREST, 128), (&UNSIGNED_NEAREST, 256)] {
            for &y in &ys {
                let want = t.mids[..n - 1].iter().filter(|&&m| m < y).count();
                assert_eq!(t.index(y) as usize, want, "{y:e} ({:#x})", y.to_bits());
            }
        }
    }

    #[test]
    fn tiny_blocks_flush_to_zero() {
        let mut b = [0xaau8; BLOCK_BYTES];
        quantize_block(Code::Signed, &[1e-31, -2e-31], &mut b);
        assert_eq!(absmax(&b), 0.0);
        assert!(b[4..].iter().all(|&q| q == 0));
        quantize_block(Code::Unsigned, &[1e-13, 5e-13], &mut b);
        assert_eq!(absmax(&b), 0.0);
        quantize_block(Code::Unsigned, &[1e-13, 5e-12], &mut b);
        assert_eq!((absmax(&b), b[5]), (5e-12, 255));
    }

    #[test]
    fn first_step_from_zero_state_moves_the_weights_as_f32_adamw() {
        let st = AdamWStep {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
            step: 1,
            grad_scale: 0.5,
        };
        let c = AdamWCoefs::new(&st);
        let g: [f32; 300] = core::array::from_fn(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0);
        let p0: [f32; 300] = core::array::from_fn(|i| (i as f32 - 150.0) / 100.0);
        let (mut p8, mut p32) = (p0, p0);
        let (mut m32, mut v32) = ([0.0f32; 300], [0.0f32; 300]);
        for i in 0..300 {
            c.update(&mut p32[i], g[i], &mut m32[i], &mut v32[i]);
        }
        for (at, len) in [(0, 256), (256, 44)] {
            let (mut mb, mut vb) = ([0u8; BLOCK_BYTES], [0u8; BLOCK_BYTES]);
            quantize_block(Code::Signed, &[0.0; 1], &mut mb);
            quantize_block(Code::Unsigned, &[0.0; 1], &mut vb);
            adamw_block(&c, &mut p8[at..at + len], &g[at..at + len], &mut mb, &mut vb);
            let mut m = [0.0f32; BLOCK];
            dequantize_block(Code::Signed, &mb, &mut m[..len]);
            for j in 0..len {
                let exact = m32[at + j];
                // Within half the code's widest relative step (the top decade: 0.9/64).
                assert!((m[j] - exact).abs() <= 0.0071 * absmax(&mb) + 1e-12, "m[{}]", at + j);
            }
        }
        assert_eq!(p8, p32);
    }
}
