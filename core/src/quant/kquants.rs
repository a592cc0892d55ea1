//! The scalar helpers ggml's reference quantizers share (`ggml-quants.c`), written in the
//! same order of f32 operations so the results agree bit for bit: `nearest_int`,
//! `make_qx_quants` (Q6_K) and `make_qkx2_quants` (Q4_K), and Q4_K's 6-bit scale unpacking.
//! Rust never fuses `a * b + c` into one FMA; the C reference must be built the same way
//! (`-ffp-contract=off`, or a target without FMA) to give these exact bits.

use super::float::largest_magnitude;

/// Below this a group's largest magnitude counts as zero (`GROUP_MAX_EPS`).
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// Round to nearest, ties to even, by ggml's trick: add 1.5·2^23 and read the low mantissa
/// bits. Exact for `|x| <= 4194303` (ggml asserts that); outside, the same wrapped bits
/// as ggml without asserts, never a panic.
pub(crate) fn nearest_int(x: f32) -> i32 {
    let val = x + 12_582_912.0;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// ggml's `make_qx_quants(n, nmax, x, L, rmse_type = 1, qw = NULL)`: a symmetric scale for
/// `x` and levels `L[i] ∈ [0, 2·nmax)` (stored offset by `nmax`), searching 18 scales
/// around `nmax / max` for the best `x²`-weighted fit. Returns the scale.
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], levels: &mut [u8]) -> f32 {
    let (max, amax) = largest_magnitude(x);
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = weighted_fit(nmax, iscale, x);
    set_levels(nmax, iscale, x, levels);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        (sumlx, suml2) = weighted_fit(nmax, iscale, x);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            set_levels(nmax, iscale, x, levels);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// The level of `x` at inverse scale `iscale`, clamped to `[-nmax, nmax - 1]`.
fn symmetric_level(nmax: i32, iscale: f32, x: f32) -> i32 {
    nearest_int(iscale * x).clamp(-nmax, nmax - 1)
}

/// `(Σ w·x·l, Σ w·l·l)` with `w = x²`, summed in index order as ggml does.
fn weighted_fit(nmax: i32, iscale: f32, x: &[f32]) -> (f32, f32) {
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for &v in x {
        let l = symmetric_level(nmax, iscale, v) as f32;
        let w = v * v;
        sumlx += w * v * l;
        suml2 += w * l * l;
    }
    (sumlx, suml2)
}

fn set_levels(nmax: i32, iscale: f32, x: &[f32], levels: &mut [u8]) {
    for (l, &v) in levels.iter_mut().zip(x) {
        *l = (nmax + symmetric_level(nmax, iscale, v)) as u8;
    }
}

/// The search parameters of `make_qkx2_quants`: levels `0..=nmax`, `nstep + 1` candidate
/// inverse scales `(rmin + rdelta·is + nmax) / (max − min)`.
pub(crate) struct Qkx2 {
    /// Largest level.
    pub nmax: i32,
    /// Offset of the first candidate.
    pub rmin: f32,
    /// Step between candidates.
    pub rdelta: f32,
    /// Number of steps.
    pub nstep: i32,
}

/// ggml's `make_qkx2_quants(n, nmax, x, weights, L, &the_min, Laux, rmin, rdelta, nstep,
/// use_mad = false)`: an affine fit `x ≈ scale·L − the_min` with `L ∈ [0, nmax]` minimising
/// the weighted squared error over the candidate scales. Returns `(scale, the_min)`.
pub(crate) fn make_qkx2_quants(p: &Qkx2, x: &[f32], weights: &[f32], levels: &mut [u8]) -> (f32, f32) {
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&v, &w) in x.iter().zip(weights).skip(1) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        sum_w += w;
        sum_x += w * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        return (0.0, -min);
    }
    let iscale = p.nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    affine_levels(p.nmax, iscale, min, x, levels);
    let mut best_error = affine_error(scale, min, x, weights, levels);
    if p.nstep < 1 {
        return (scale, -min);
    }
    let mut aux = [0u8; 32];
    let aux = &mut aux[..x.len()];
    for is in 0..=p.nstep {
        let iscale = (p.rmin + p.rdelta * is as f32 + p.nmax as f32) / (max - min);
        affine_levels(p.nmax, iscale, min, x, aux);
        let Some((this_scale, this_min)) = affine_fit(aux, x, weights, sum_w, sum_x) else {
            continue;
        };
        let cur_error = affine_error(this_scale, this_min, x, weights, aux);
        if cur_error < best_error {
            levels.copy_from_slice(aux);
            best_error = cur_error;
            scale = this_scale;
            min = this_min;
        }
    }
    (scale, -min)
}

/// `L[i] = clamp(nearest_int(iscale·(x[i] − min)), 0, nmax)`.
fn affine_levels(nmax: i32, iscale: f32, min: f32, x: &[f32], levels: &mut [u8]) {
    for (l, &v) in levels.iter_mut().zip(x) {
        *l = nearest_int(iscale * (v - min)).clamp(0, nmax) as u8;
    }
}

/// `Σ w·(scale·L + min − x)²` in index order.
fn affine_error(scale: f32, min: f32, x: &[f32], weights: &[f32], levels: &[u8]) -> f32 {
    let mut err = 0.0f32;
    for ((&l, &v), &w) in levels.iter().zip(x).zip(weights) {
        let diff = scale * f32::from(l) + min - v;
        err += w * (diff * diff);
    }
    err
}

/// The weighted least-squares `(scale, min)` for fixed levels, with the min clamped to
/// `<= 0` as ggml does; `None` when the levels are degenerate (`D <= 0`).
fn affine_fit(levels: &[u8], x: &[f32], weights: &[f32], sum_w: f32, sum_x: f32) -> Option<(f32, f32)> {
    let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
    for ((&l, &v), &w) in levels.iter().zip(x).zip(weights) {
        let l = f32::from(l);
        sum_l += w * l;
        sum_l2 += w * l * l;
        sum_xl += w * l * v;
    }
    let d = sum_w * sum_l2 - sum_l * sum_l;
    if d <= 0.0 || d.is_nan() {
        return None;
    }
    let this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
    let this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
    if this_min > 0.0 {
        return Some((sum_xl / sum_l2, 0.0));
    }
    Some((this_scale, this_min))
}

/// Sub-block `j`'s 6-bit scale and min from Q4_K's 12 packed bytes (`get_scale_min_k4`):
/// sub-blocks 0..4 keep theirs in the low 6 bits of bytes `j` and `j + 4`; sub-blocks 4..8
/// split theirs into the nibbles of byte `j + 4` and the top 2 bits of bytes `j − 4`, `j`.
pub(crate) fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}
