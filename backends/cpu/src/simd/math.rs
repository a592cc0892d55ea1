//! Vector math shared by the kernels, generic over [`Simd`]: a fast `exp` accurate to a
//! couple of ulp, `sigmoid`, and the row loops (max, sums, dot products, Σ exp, lane-wise
//! maps) that softmax-like and element-wise kernels are made of. Everything here is
//! `#[inline(always)]` so it compiles for the instruction set of the task that calls it.

use super::Simd;

/// Lane-wise loops with the body written in place: `lanes!(s, out, |a = x, b = y| expr)`
/// sets `out[i] = expr` with `a`, `b` the vectors of `x[i..]`, `y[i..]`;
/// `lanes!(s, y <- |acc, b = x| expr)` updates `y` in place with `acc` its own vector.
/// Tails use partial loads filled with 0. A macro, not a function taking a closure: a
/// closure is compiled outside the task's `#[target_feature]` context, and one too big to
/// be inlined (anything calling `exp`) would call every intrinsic out of line.
macro_rules! lanes {
    ($s:ident, $out:ident, |$($v:ident = $src:ident),+| $body:expr) => {{
        let n__ = $out.len();
        let l__ = $s.lanes();
        let mut i__ = 0;
        while i__ + l__ <= n__ {
            $(let $v = $s.load(&$src[i__..]);)+
            $s.store($body, &mut $out[i__..]);
            i__ += l__;
        }
        if i__ < n__ {
            $(let $v = $s.load_partial(&$src[i__..n__], 0.0);)+
            $s.store_partial($body, &mut $out[i__..n__]);
        }
    }};
    ($s:ident, $out:ident <- |$acc:ident $(, $v:ident = $src:ident)*| $body:expr) => {{
        let n__ = $out.len();
        let l__ = $s.lanes();
        let mut i__ = 0;
        while i__ + l__ <= n__ {
            let $acc = $s.load(&$out[i__..]);
            $(let $v = $s.load(&$src[i__..]);)*
            $s.store($body, &mut $out[i__..]);
            i__ += l__;
        }
        if i__ < n__ {
            let $acc = $s.load_partial(&$out[i__..n__], 0.0);
            $(let $v = $s.load_partial(&$src[i__..n__], 0.0);)*
            $s.store_partial($body, &mut $out[i__..n__]);
        }
    }};
}
pub(crate) use lanes;

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n · LN2_HI` is exact for |n| < 2^15 (Cody–Waite).
const LN2_HI: f32 = 355.0 / 512.0;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Minimax coefficients of `(e^r − 1 − r) / r²` on `[−ln2/2, ln2/2]` (Cephes `expf`).
const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5e-1,
];

/// `e^x` per lane. `x = n·ln2 + r` with `n = round(x·log2 e)` and `|r| ≤ ln2/2`;
/// `e^r = 1 + r + r²·P(r)`; `e^x = e^r · 2^n`. Within 2 ulp of the correctly rounded
/// result wherever that is a normal number; gradual underflow below, `+inf` above
/// ~88.72, `0` at `−inf`, NaN stays NaN.
#[inline(always)]
pub(crate) fn exp<S: Simd>(s: S, x: S::V) -> S::V {
    // Operand order keeps a NaN `x` (x86 min/max return the second operand on NaN).
    let x = s.min(s.splat(89.0), x);
    let x = s.max(s.splat(-104.0), x);
    let n = s.round(s.mul(x, s.splat(LOG2E)));
    let r = s.mul_add(n, s.splat(-LN2_HI), x);
    let r = s.mul_add(n, s.splat(-LN2_LO), r);
    let mut p = s.splat(EXP_P[0]);
    for c in &EXP_P[1..] {
        p = s.mul_add(p, r, s.splat(*c));
    }
    let y = s.add(s.mul_add(p, s.mul(r, r), r), s.splat(1.0));
    s.ldexp(y, n)
}

/// `1 / (1 + e^{−x})` per lane.
#[inline(always)]
pub(crate) fn sigmoid<S: Simd>(s: S, x: S::V) -> S::V {
    let one = s.splat(1.0);
    s.div(one, s.add(one, exp(s, s.sub(s.splat(0.0), x))))
}

/// `max_i x[i]` (`−inf` for an empty row).
#[inline(always)]
pub(crate) fn max<S: Simd>(s: S, x: &[f32]) -> f32 {
    let mut acc = s.splat(f32::NEG_INFINITY);
    let mut chunks = x.chunks_exact(S::LANES);
    for c in &mut chunks {
        acc = s.max(acc, s.load(c));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        acc = s.max(acc, s.load_partial(rest, f32::NEG_INFINITY));
    }
    s.reduce_max(acc)
}

/// `Σ_i f(a[i], b[i])` with four independent accumulators (latency hiding on long rows);
/// `b` may be longer than `a`. Missing tail lanes are loaded as 0 and must map to 0.
#[inline(always)]
fn sum_map2<S: Simd>(s: S, a: &[f32], b: &[f32], f: impl Fn(S::V, S::V, S::V) -> S::V) -> f32 {
    let l = S::LANES;
    let n = a.len();
    let b = &b[..n];
    let zero = s.splat(0.0);
    let (mut s0, mut s1, mut s2, mut s3) = (zero, zero, zero, zero);
    let mut i = 0;
    while i + 4 * l <= n {
        s0 = f(s0, s.load(&a[i..]), s.load(&b[i..]));
        s1 = f(s1, s.load(&a[i + l..]), s.load(&b[i + l..]));
        s2 = f(s2, s.load(&a[i + 2 * l..]), s.load(&b[i + 2 * l..]));
        s3 = f(s3, s.load(&a[i + 3 * l..]), s.load(&b[i + 3 * l..]));
        i += 4 * l;
    }
    while i + l <= n {
        s0 = f(s0, s.load(&a[i..]), s.load(&b[i..]));
        i += l;
    }
    if i < n {
        s1 = f(s1, s.load_partial(&a[i..], 0.0), s.load_partial(&b[i..n], 0.0));
    }
    s.reduce_sum(s.add(s.add(s0, s1), s.add(s2, s3)))
}

/// `Σ_i a[i]·b[i]` over `a.len()` elements.
#[inline(always)]
pub(crate) fn dot<S: Simd>(s: S, a: &[f32], b: &[f32]) -> f32 {
    sum_map2(s, a, b, |acc, x, y| s.mul_add(x, y, acc))
}

/// `Σ_i x[i]²`.
#[inline(always)]
pub(crate) fn sum_sq<S: Simd>(s: S, x: &[f32]) -> f32 {
    sum_map2(s, x, x, |acc, a, _| s.mul_add(a, a, acc))
}

/// `Σ_i x[i]`.
#[inline(always)]
pub(crate) fn sum<S: Simd>(s: S, x: &[f32]) -> f32 {
    sum_map2(s, x, x, |acc, a, _| s.add(acc, a))
}

/// `Σ_i a[i]·b[i]·c[i]`.
#[inline(always)]
pub(crate) fn dot3<S: Simd>(s: S, a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let n = a.len();
    let (b, c) = (&b[..n], &c[..n]);
    let mut acc = s.splat(0.0);
    let mut i = 0;
    while i + S::LANES <= n {
        acc = s.mul_add(s.mul(s.load(&a[i..]), s.load(&b[i..])), s.load(&c[i..]), acc);
        i += S::LANES;
    }
    if i < n {
        let v = s.mul(s.load_partial(&a[i..], 0.0), s.load_partial(&b[i..], 0.0));
        acc = s.mul_add(v, s.load_partial(&c[i..], 0.0), acc);
    }
    s.reduce_sum(acc)
}

/// `Σ_i e^{x[i] − shift}`.
#[inline(always)]
pub(crate) fn sum_exp<S: Simd>(s: S, x: &[f32], shift: f32) -> f32 {
    let sh = s.splat(shift);
    let zero = s.splat(0.0);
    let (mut a0, mut a1) = (zero, zero);
    let mut chunks = x.chunks_exact(2 * S::LANES);
    for c in &mut chunks {
        a0 = s.add(a0, exp(s, s.sub(s.load(c), sh)));
        a1 = s.add(a1, exp(s, s.sub(s.load(&c[S::LANES..]), sh)));
    }
    let mut rest = chunks.remainder();
    if rest.len() >= S::LANES {
        a0 = s.add(a0, exp(s, s.sub(s.load(rest), sh)));
        rest = &rest[S::LANES..];
    }
    if !rest.is_empty() {
        a1 = s.add(a1, exp(s, s.sub(s.load_partial(rest, f32::NEG_INFINITY), sh)));
    }
    s.reduce_sum(s.add(a0, a1))
}

/// `y[i] = e^{x[i] − shift}`; returns `Σ_i y[i]`.
#[inline(always)]
pub(crate) fn exp_store_sum<S: Simd>(s: S, x: &[f32], shift: f32, y: &mut [f32]) -> f32 {
    let n = y.len();
    let x = &x[..n];
    let sh = s.splat(shift);
    let mut acc = s.splat(0.0);
    let mut xc = x.chunks_exact(S::LANES);
    let mut yc = y.chunks_exact_mut(S::LANES);
    for (a, o) in (&mut xc).zip(&mut yc) {
        let e = exp(s, s.sub(s.load(a), sh));
        acc = s.add(acc, e);
        s.store(e, o);
    }
    let (xr, yr) = (xc.remainder(), yc.into_remainder());
    if !yr.is_empty() {
        let e = exp(s, s.sub(s.load_partial(xr, f32::NEG_INFINITY), sh));
        acc = s.add(acc, e);
        s.store_partial(e, yr);
    }
    s.reduce_sum(acc)
}

/// `y[i] = e^{y[i] − shift}` in place; returns `Σ_i y[i]`.
#[inline(always)]
pub(crate) fn exp_in_place_sum<S: Simd>(s: S, y: &mut [f32], shift: f32) -> f32 {
    let sh = s.splat(shift);
    let mut acc = s.splat(0.0);
    let mut yc = y.chunks_exact_mut(S::LANES);
    for o in &mut yc {
        let e = exp(s, s.sub(s.load(o), sh));
        acc = s.add(acc, e);
        s.store(e, o);
    }
    let yr = yc.into_remainder();
    if !yr.is_empty() {
        let e = exp(s, s.sub(s.load_partial(yr, f32::NEG_INFINITY), sh));
        acc = s.add(acc, e);
        s.store_partial(e, yr);
    }
    s.reduce_sum(acc)
}

/// `y[i] *= c` in place.
#[inline(always)]
pub(crate) fn scale_in_place<S: Simd>(s: S, y: &mut [f32], c: f32) {
    let cv = s.splat(c);
    let mut yc = y.chunks_exact_mut(S::LANES);
    for o in &mut yc {
        let v = s.mul(s.load(o), cv);
        s.store(v, o);
    }
    let yr = yc.into_remainder();
    if !yr.is_empty() {
        let v = s.mul(s.load_partial(yr, 0.0), cv);
        s.store_partial(v, yr);
    }
}

/// `n` values of `x` from `i` (a whole vector when `n = LANES`,
/// else a partial load filled with 0).
#[inline(always)]
pub(crate) fn load_n<S: Simd>(s: S, x: &[f32], i: usize, n: usize) -> S::V {
    if n == S::LANES {
        s.load(&x[i..])
    } else {
        s.load_partial(&x[i..i + n], 0.0)
    }
}

/// Stores the first `n` lanes of `v` at `y[i..]` (see [`load_n`]).
#[inline(always)]
pub(crate) fn store_n<S: Simd>(s: S, v: S::V, y: &mut [f32], i: usize, n: usize) {
    if n == S::LANES {
        s.store(v, &mut y[i..])
    } else {
        s.store_partial(v, &mut y[i..i + n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{Isa, SimdLevel, SimdTask};

    struct ExpAll<'a>(&'a [f32], &'a mut [f32]);
    impl SimdTask for ExpAll<'_> {
        type Output = ();
        #[inline(always)]
        fn run<S: Simd>(self, s: S) {
            let (x, y) = (self.0, self.1);
            lanes!(s, y, |v = x| exp(s, v));
        }
    }

    /// Vector i holds i·1000 + 1 … i·1000 + LANES (exact in f32 and distinct per vector, so
    /// a lane that summed the wrong vector or a wrong subset of lanes shows); returns the
    /// lanes of `transpose_sum` and the sums they should be.
    struct TransposeSum;
    impl SimdTask for TransposeSum {
        type Output = (Vec<f32>, Vec<f32>);
        #[inline(always)]
        fn run<S: Simd>(self, s: S) -> (Vec<f32>, Vec<f32>) {
            let l = S::LANES;
            let x: Vec<f32> = (0..l * l).map(|e| ((e / l) * 1000 + e % l + 1) as f32).collect();
            let v: Vec<S::V> = x.chunks_exact(l).map(|c| s.load(c)).collect();
            let mut got = vec![0.0f32; l];
            s.store(s.transpose_sum(&v), &mut got);
            let want = (0..l).map(|i| (i * 1000 * l + l * (l + 1) / 2) as f32).collect();
            (got, want)
        }
    }

    #[test]
    fn transpose_sum_puts_each_vectors_sum_in_its_own_lane_at_every_level() {
        for level in SimdLevel::available() {
            let (got, want) = Isa::new(level).unwrap().run(TransposeSum);
            assert_eq!(got, want, "{level}");
        }
    }

    /// Lanes of `transpose_sum` and `reduce_sum` of each vector on values whose sums round
    /// (magnitudes from 2^-20 to 2^20, both signs), as bit patterns.
    struct TransposeSumBits;
    impl SimdTask for TransposeSumBits {
        type Output = (Vec<u32>, Vec<u32>);
        #[inline(always)]
        fn run<S: Simd>(self, s: S) -> (Vec<u32>, Vec<u32>) {
            let l = S::LANES;
            let mut seed = 0x9e37_79b9u32;
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let mantissa = 1.0 + (seed >> 9) as f32 / (1 << 23) as f32;
                let sign = if seed & 1 == 0 { 1.0 } else { -1.0 };
                sign * mantissa * 2f32.powi((seed % 41) as i32 - 20)
            };
            let (mut got, mut want) = (Vec::new(), Vec::new());
            for _ in 0..64 {
                let x: Vec<f32> = (0..l * l).map(|_| next()).collect();
                let v: Vec<S::V> = x.chunks_exact(l).map(|c| s.load(c)).collect();
                let mut lanes = vec![0.0f32; l];
                s.store(s.transpose_sum(&v), &mut lanes);
                got.extend(lanes.iter().map(|x| x.to_bits()));
                want.extend(v.iter().map(|&x| s.reduce_sum(x).to_bits()));
            }
            (got, want)
        }
    }

    #[test]
    fn transpose_sum_takes_reduce_sums_order_bit_for_bit_at_every_level() {
        for level in SimdLevel::available() {
            let (got, want) = Isa::new(level).unwrap().run(TransposeSumBits);
            assert_eq!(got, want, "{level}");
        }
    }

    fn ulp_distance(a: f32, b: f32) -> u32 {
        let key = |x: f32| {
            let i = x.to_bits() as i32;
            if i < 0 { i32::MIN - i } else { i }
        };
        key(a).abs_diff(key(b))
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_correctly_rounded_value_at_every_level() {
        // A dense sweep over the whole normal range plus odd-length tails.
        let xs: Vec<f32> = (0..200_001).map(|i| -87.0 + 175.5 * (i as f32) / 200_000.0).collect();
        for level in SimdLevel::available() {
            let mut ys = vec![0.0f32; xs.len()];
            Isa::new(level).unwrap().run(ExpAll(&xs, &mut ys));
            let worst = xs
                .iter()
                .zip(&ys)
                .map(|(&x, &y)| ulp_distance(y, (x as f64).exp() as f32))
                .max()
                .unwrap();
            assert!(worst <= 2, "{level}: worst error {worst} ulp");
        }
    }

    #[test]
    fn exp_handles_the_edges_of_its_range() {
        let xs = [
            f32::NEG_INFINITY,
            -200.0,
            -100.0,
            -88.5,
            0.0,
            88.7,
            89.5,
            f32::INFINITY,
            f32::NAN,
        ];
        for level in SimdLevel::available() {
            let mut ys = [0.0f32; 9];
            Isa::new(level).unwrap().run(ExpAll(&xs, &mut ys));
            assert_eq!(ys[0], 0.0, "{level}");
            assert_eq!(ys[1], 0.0, "{level}");
            // Gradual underflow: subnormal results keep their magnitude.
            let want = (-100.0f64).exp() as f32;
            assert!(
                (ys[2] - want).abs() <= 2.0 * f32::from_bits(1),
                "{level}: {} vs {want}",
                ys[2]
            );
            assert!((ys[3] - (-88.5f64).exp() as f32).abs() <= 1e-39, "{level}");
            assert_eq!(ys[4], 1.0, "{level}");
            assert!(
                ulp_distance(ys[5], (88.7f32 as f64).exp() as f32) <= 2,
                "{level}: {}",
                ys[5]
            );
            assert_eq!(ys[6], f32::INFINITY, "{level}");
            assert_eq!(ys[7], f32::INFINITY, "{level}");
            assert!(ys[8].is_nan(), "{level}");
        }
    }
}
