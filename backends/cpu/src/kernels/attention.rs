//! Fused causal grouped-query attention, forward and backward, flash-attention style:
//! probabilities are recomputed in the backward pass, never stored between passes.
//!
//! Query row `t` sits at position `p = q_offset + t` and sees keys `j ≤ p, j < kv_len`;
//! query head `h` reads kv head `h / (Hq/Hkv)`. Per block of query rows of one head:
//! `S = Q·Kᵀ/sqrt(d)` (GEMM), `P = softmax(S)` under the mask, `O = P·V` (GEMM).
//! Backward per block: recompute `P`, `dP = dO·Vᵀ`, `dS = P ∘ (dP − rowsum(P ∘ dP))`,
//! `dQ = dS·K/sqrt(d)`, `dK += dSᵀ·Q/sqrt(d)`, `dV += Pᵀ·dO`.
//!
//! The forward runs one task per (sequence, head, query block); the backward one task
//! per (sequence, kv head), which owns that kv head's `dK`/`dV` columns and the `dQ`
//! columns of its query heads, so no two tasks write the same element. A single decode
//! row (T = 1) takes GEMM's packing-free path: dot products against the cached keys and
//! row updates with the cached values, reading the cache once.

use r1_core::BackendError;
use r1_core::graph::AttentionSpec;

use super::gemm::{Mat, MatMut, gemm};
use super::{Ctx, Past, size_error};
use crate::parallel::SharedOut;
use crate::simd::{Isa, MAX_LANES, Simd, SimdTask, math, prefetch_floats};

/// Query rows per block (one GEMM's M).
const Q_BLOCK: usize = 64;

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug)]
struct Geometry<'a> {
    batch: usize,
    time: usize,
    keys: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    /// Without per-sequence positions: every sequence's first query position and keys in
    /// use. With them, `past` gives each sequence's first position and `past + T` keys.
    q_offset: usize,
    kv_len: usize,
    past: Option<&'a [usize]>,
    scale: f32,
}

impl<'a> Geometry<'a> {
    fn new(
        op: &'static str,
        spec: &AttentionSpec,
        time: usize,
        (q, k, v): (usize, usize, usize),
        past: Past<'a>,
    ) -> Result<Geometry<'a>, BackendError> {
        let (hq, hkv, d) = (spec.n_heads, spec.n_kv_heads, spec.head_dim);
        let qrow = hq * d;
        let krow = hkv * d;
        let batch = q.checked_div(qrow * time).unwrap_or(0);
        let keys = k.checked_div(krow * batch).unwrap_or(0);
        let ok = batch > 0
            && d > 0
            && hkv > 0
            && hq % hkv == 0
            && q == batch * time * qrow
            && k == batch * keys * krow
            && v == k
            && spec.kv_len <= keys
            && spec.q_offset + time <= spec.kv_len;
        if !ok {
            return Err(size_error(
                op,
                format!(
                    "q of {q}, k of {k}, v of {v} values for {time} query rows with {spec:?} \
                     (need q [B,T,Hq·d], k = v [B,S,Hkv·d], q_offset + T <= kv_len <= S)"
                ),
            ));
        }
        Ok(Geometry {
            batch,
            time,
            keys,
            heads: hq,
            kv_heads: hkv,
            d,
            q_offset: spec.q_offset,
            kv_len: spec.kv_len,
            past: match past {
                Past::Fixed(_) => None,
                Past::PerSeq(p) => Some(p),
            },
            scale: 1.0 / (d as f32).sqrt(),
        })
    }

    /// Position of sequence `b`'s first query row.
    fn q_start(&self, b: usize) -> usize {
        match self.past {
            Some(p) => p.get(b).copied().unwrap_or(0),
            None => self.q_offset,
        }
    }

    /// Keys sequence `b` has (its cached rows plus this call's).
    fn keys_of(&self, b: usize) -> usize {
        match self.past {
            Some(p) => p.get(b).map_or(0, |&p| p + self.time),
            None => self.kv_len,
        }
    }

    /// The most keys any sequence has (for work estimates and scratch sizes).
    fn max_keys(&self) -> usize {
        (0..self.batch).map(|b| self.keys_of(b)).max().unwrap_or(0)
    }

    fn blocks(&self) -> usize {
        self.time.div_ceil(Q_BLOCK)
    }

    /// First row and row count of query block `blk` of sequence `b`, and the keys its
    /// rows can see.
    fn block(&self, b: usize, blk: usize) -> (usize, usize, usize) {
        let t0 = blk * Q_BLOCK;
        let nq = Q_BLOCK.min(self.time - t0);
        let nk = (self.q_start(b) + t0 + nq).min(self.keys_of(b));
        (t0, nq, nk)
    }

    fn q_offset_of(&self, b: usize, t: usize, h: usize) -> usize {
        (b * self.time + t) * self.heads * self.d + h * self.d
    }

    fn kv_offset_of(&self, b: usize, j: usize, kvh: usize) -> usize {
        (b * self.keys + j) * self.kv_heads * self.d + kvh * self.d
    }
}

/// The masked softmax of a block of score rows (row `r` at position
/// `first_pos + r·pos_step` sees `min(position + 1, kv_len)` keys; the rest of the row
/// becomes 0). `pos_step` is 1 for rows of consecutive query times, 0 for rows of the
/// heads of one group at one time.
struct MaskedSoftmax<'a> {
    scores: &'a mut [f32],
    cols: usize,
    first_pos: usize,
    pos_step: usize,
    kv_len: usize,
}

impl SimdTask for MaskedSoftmax<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        for (r, row) in self.scores.chunks_exact_mut(self.cols).enumerate() {
            let valid = (self.first_pos + r * self.pos_step + 1).min(self.kv_len).min(self.cols);
            let (live, masked) = row.split_at_mut(valid);
            let m = math::max(s, live);
            let total = math::exp_in_place_sum(s, live, m);
            math::scale_in_place(s, live, 1.0 / total);
            masked.fill(0.0);
        }
    }
}

/// Decode attention of one sequence's kv group: the `group` query rows of the heads that
/// share a kv head (`q`, `group × d`, contiguous) against its first `nk` cached keys and
/// values (row `j` at `j · stride` of `k` and `v`), into `out` (`group × d`). `p` holds
/// the `group × nk` probabilities.
///
/// Scores come `LANES` keys at a time, one accumulator per key, and the accumulators'
/// lanes are summed together ([`Simd::transpose_sum`]) rather than one horizontal sum per
/// key. `P·V` keeps up to four query rows' outputs in registers, so each value row is
/// loaded once per four rows and eight or more sums run side by side.
struct DecodeGroup<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    stride: usize,
    d: usize,
    nk: usize,
    scale: f32,
    first_pos: usize,
    kv_len: usize,
    p: &'a mut [f32],
    out: &'a mut [f32],
}

/// Value rows ahead of the one `P·V` multiplies that it asks for, where the cache is
/// prefetched ([`crate::simd::prefetch_cached`]).
const PV_AHEAD: usize = 8;

/// Value vectors of one `P·V` block (64 values with AVX-512: one head of the usual size).
const PV_VECTORS: usize = 4;

impl SimdTask for DecodeGroup<'_> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let DecodeGroup {
            q,
            k,
            v,
            stride,
            d,
            nk,
            scale,
            first_pos,
            kv_len,
            p,
            out,
        } = self;
        if nk == 0 || d == 0 {
            out.fill(0.0);
            return;
        }
        let group = q.len() / d;
        let l = S::LANES;
        let key = |j: usize| &k[j * stride..j * stride + d];
        let prefetch = crate::simd::prefetch_cached();
        for j0 in (0..nk).step_by(l) {
            let keys = l.min(nk - j0);
            if prefetch {
                // The next block's keys, while this one's are multiplied: each is a row of
                // its own, and sixteen rows at once are more streams than the hardware
                // prefetcher follows.
                for j in (j0 + l)..(j0 + 2 * l).min(nk) {
                    prefetch_floats(key(j), 0..d);
                }
            }
            // Missing keys of a last partial block repeat the last key; their lanes are
            // not stored.
            let rows: [&[f32]; MAX_LANES] = std::array::from_fn(|jj| key(j0 + jj.min(keys - 1)));
            for (qg, pg) in q.chunks_exact(d).zip(p.chunks_exact_mut(nk)) {
                let mut acc = [s.splat(0.0); MAX_LANES];
                let mut i = 0;
                while i + l <= d {
                    let qv = s.load(&qg[i..]);
                    for (a, row) in acc.iter_mut().zip(&rows).take(l) {
                        *a = s.mul_add(qv, s.load(&row[i..]), *a);
                    }
                    i += l;
                }
                if i < d {
                    let qv = s.load_partial(&qg[i..], 0.0);
                    for (a, row) in acc.iter_mut().zip(&rows).take(l) {
                        *a = s.mul_add(qv, s.load_partial(&row[i..], 0.0), *a);
                    }
                }
                let scores = s.mul(s.transpose_sum(&acc[..l]), s.splat(scale));
                math::store_n(s, scores, pg, j0, keys);
            }
        }
        MaskedSoftmax {
            scores: &mut p[..group * nk],
            cols: nk,
            first_pos,
            pos_step: 0,
            kv_len,
        }
        .run(s);
        let value = |j: usize| &v[j * stride..j * stride + d];
        let mut c0 = 0;
        while c0 < d {
            let width = (d - c0).min(PV_VECTORS * l);
            let mut g = 0;
            while g < group {
                let rows = (group - g).min(4);
                let pr = &p[g * nk..(g + rows) * nk];
                let o = &mut out[g * d..(g + rows) * d];
                match rows {
                    4 => pv_block::<S, 4>(s, pr, nk, value, c0, width, o, d),
                    3 => pv_block::<S, 3>(s, pr, nk, value, c0, width, o, d),
                    2 => pv_block::<S, 2>(s, pr, nk, value, c0, width, o, d),
                    _ => pv_block::<S, 1>(s, pr, nk, value, c0, width, o, d),
                }
                g += rows;
            }
            c0 += width;
        }
    }
}

/// `P·V` for columns `c0 .. c0 + width` of `R` output rows, with the vector count of
/// `width` as a constant: [`pv_rows`], or [`pv_row`] for one row.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn pv_block<'v, S: Simd, const R: usize>(
    s: S,
    p: &[f32],
    nk: usize,
    value: impl Fn(usize) -> &'v [f32],
    c0: usize,
    width: usize,
    out: &mut [f32],
    d: usize,
) {
    match (R, width.div_ceil(S::LANES)) {
        (1, 4) => pv_row::<S, 4>(s, p, value, c0, width, out),
        (1, 3) => pv_row::<S, 3>(s, p, value, c0, width, out),
        (1, 2) => pv_row::<S, 2>(s, p, value, c0, width, out),
        (1, _) => pv_row::<S, 1>(s, p, value, c0, width, out),
        (_, 4) => pv_rows::<S, R, 4>(s, p, nk, value, c0, width, out, d),
        (_, 3) => pv_rows::<S, R, 3>(s, p, nk, value, c0, width, out, d),
        (_, 2) => pv_rows::<S, R, 2>(s, p, nk, value, c0, width, out, d),
        (_, _) => pv_rows::<S, R, 1>(s, p, nk, value, c0, width, out, d),
    }
}

/// Columns `c0 .. c0 + width` of `R` output rows (`out`, rows `d` apart):
/// `out[r][c] = Σ_j p[r][j] · value(j)[c]`, the `R × V` partial vectors in registers.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn pv_rows<'v, S: Simd, const R: usize, const V: usize>(
    s: S,
    p: &[f32],
    nk: usize,
    value: impl Fn(usize) -> &'v [f32],
    c0: usize,
    width: usize,
    out: &mut [f32],
    d: usize,
) {
    let l = S::LANES;
    let last = width - (V - 1) * l;
    let n_of = |c: usize| if c + 1 == V { last } else { l };
    let mut acc = [[s.splat(0.0); V]; R];
    let prefetch = crate::simd::prefetch_cached();
    for j in 0..nk {
        if prefetch && j + PV_AHEAD < nk {
            prefetch_floats(value(j + PV_AHEAD), c0..c0 + width);
        }
        let row = &value(j)[c0..c0 + width];
        let mut x = [s.splat(0.0); V];
        for (c, xc) in x.iter_mut().enumerate() {
            *xc = math::load_n(s, row, c * l, n_of(c));
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let w = s.splat(p[r * nk + j]);
            for (a, &xc) in acc_r.iter_mut().zip(&x) {
                *a = s.mul_add(w, xc, *a);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        let o = &mut out[r * d + c0..r * d + c0 + width];
        for (c, &a) in acc_r.iter().enumerate() {
            math::store_n(s, a, o, c * l, n_of(c));
        }
    }
}

/// [`pv_rows`] for a single row: even and odd keys go to separate sums (added at the
/// end), so twice as many sums run side by side.
#[inline(always)]
fn pv_row<'v, S: Simd, const V: usize>(
    s: S,
    p: &[f32],
    value: impl Fn(usize) -> &'v [f32],
    c0: usize,
    width: usize,
    out: &mut [f32],
) {
    let l = S::LANES;
    let last = width - (V - 1) * l;
    let n_of = |c: usize| if c + 1 == V { last } else { l };
    let (mut even, mut odd) = ([s.splat(0.0); V], [s.splat(0.0); V]);
    let mut pairs = p.chunks_exact(2);
    let prefetch = crate::simd::prefetch_cached();
    for (i, pair) in (&mut pairs).enumerate() {
        if prefetch && 2 * i + PV_AHEAD + 1 < p.len() {
            prefetch_floats(value(2 * i + PV_AHEAD), c0..c0 + width);
            prefetch_floats(value(2 * i + PV_AHEAD + 1), c0..c0 + width);
        }
        let (r0, r1) = (&value(2 * i)[c0..c0 + width], &value(2 * i + 1)[c0..c0 + width]);
        let (w0, w1) = (s.splat(pair[0]), s.splat(pair[1]));
        for c in 0..V {
            even[c] = s.mul_add(w0, math::load_n(s, r0, c * l, n_of(c)), even[c]);
            odd[c] = s.mul_add(w1, math::load_n(s, r1, c * l, n_of(c)), odd[c]);
        }
    }
    if let [pj] = pairs.remainder() {
        let row = &value(p.len() - 1)[c0..c0 + width];
        let w = s.splat(*pj);
        for (c, a) in even.iter_mut().enumerate() {
            *a = s.mul_add(w, math::load_n(s, row, c * l, n_of(c)), *a);
        }
    }
    let o = &mut out[c0..c0 + width];
    for c in 0..V {
        math::store_n(s, s.add(even[c], odd[c]), o, c * l, n_of(c));
    }
}

/// `dS = P ∘ (dP − rowsum(P ∘ dP))`, in place of `dP`.
struct SoftmaxGrad<'a> {
    p: &'a [f32],
    dp: &'a mut [f32],
    cols: usize,
}

impl SimdTask for SoftmaxGrad<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        for (p, dp) in self.p.chunks_exact(self.cols).zip(self.dp.chunks_exact_mut(self.cols)) {
            let dv = s.splat(math::dot(s, p, dp));
            math::lanes!(s, dp <- |g, pv = p| s.mul(pv, s.sub(g, dv)));
        }
    }
}

/// Scores and probabilities of query block `blk` of head `h` in sequence `b`, into
/// `p` (`nq × nk`, row-major).
fn probabilities(isa: Isa, g: &Geometry, q: &[f32], k: &[f32], (b, h, blk): (usize, usize, usize), p: &mut [f32]) {
    let (t0, nq, nk) = g.block(b, blk);
    let kvh = h / (g.heads / g.kv_heads);
    let qm = Mat::new(&q[g.q_offset_of(b, t0, h)..], nq, g.d, g.heads * g.d, 1);
    let km = Mat::new(&k[g.kv_offset_of(b, 0, kvh)..], nk, g.d, g.kv_heads * g.d, 1);
    gemm(isa, g.scale, qm, km.t(), 0.0, MatMut::new(p, nq, nk, nk));
    isa.run(MaskedSoftmax {
        scores: &mut p[..nq * nk],
        cols: nk,
        first_pos: g.q_start(b) + t0,
        pos_step: 1,
        kv_len: g.keys_of(b),
    });
}

/// `out = attention(q, k, v)`, all `[B, ·, heads·d]` row-major.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    ctx: Ctx<'_>,
    spec: &AttentionSpec,
    time: usize,
    past: Past<'_>,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    let g = Geometry::new("attention", spec, time, (q.len(), k.len(), v.len()), past)?;
    if out.len() != q.len() {
        return Err(size_error(
            "attention",
            format!("output of {} for q of {}", out.len(), q.len()),
        ));
    }
    let shared = SharedOut::new(out);
    let group = g.heads / g.kv_heads;
    if g.time == 1 {
        // Decode: the query rows of one kv group's heads are contiguous, so one task per
        // group reads each cached key and value row once for all its heads.
        ctx.threads
            .for_tasks(g.batch * g.kv_heads, 4 * group * g.max_keys() * g.d, |task| {
                let (b, kvh) = (task / g.kv_heads, task % g.kv_heads);
                let nk = (g.q_start(b) + 1).min(g.keys_of(b));
                let h0 = kvh * group;
                let at = g.q_offset_of(b, 0, h0);
                let mut p = vec![0.0f32; group * nk];
                // SAFETY: task (b, kvh) is the only one writing the columns of heads
                // h0..h0+group of sequence b's single row, this span.
                let out = unsafe { shared.slice(at, group * g.d) };
                ctx.isa.run(DecodeGroup {
                    q: &q[at..at + group * g.d],
                    k: &k[g.kv_offset_of(b, 0, kvh)..],
                    v: &v[g.kv_offset_of(b, 0, kvh)..],
                    stride: g.kv_heads * g.d,
                    d: g.d,
                    nk,
                    scale: g.scale,
                    first_pos: g.q_start(b),
                    kv_len: g.keys_of(b),
                    p: &mut p,
                    out,
                });
            });
        return Ok(());
    }
    let blocks = g.blocks();
    let tasks = g.batch * g.heads * blocks;
    let work = 4 * Q_BLOCK.min(g.time) * g.max_keys() * g.d;
    ctx.threads.for_tasks(tasks, work, |task| {
        let (b, h, blk) = (task / (g.heads * blocks), (task / blocks) % g.heads, task % blocks);
        let (t0, nq, nk) = g.block(b, blk);
        let mut p = vec![0.0f32; nq * nk];
        probabilities(ctx.isa, &g, q, k, (b, h, blk), &mut p);
        let kvh = h / (g.heads / g.kv_heads);
        let vm = Mat::new(&v[g.kv_offset_of(b, 0, kvh)..], nk, g.d, g.kv_heads * g.d, 1);
        // SAFETY: task (b, h, blk) is the only one writing rows t0..t0+nq of sequence b in
        // columns h·d..(h+1)·d, the span of this matrix.
        let om = unsafe { MatMut::from_shared(&shared, g.q_offset_of(b, t0, h), nq, g.d, g.heads * g.d) };
        gemm(ctx.isa, 1.0, Mat::row_major(&p, nq, nk), vm, 0.0, om);
    });
    Ok(())
}

/// `out = [dq | dk | dv]` for `dout = ∂L/∂attention(q, k, v)`; rows of dk/dv at or past
/// `kv_len` are zero.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    ctx: Ctx<'_>,
    spec: &AttentionSpec,
    time: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dout: &[f32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    let g = Geometry::new(
        "attention_backward",
        spec,
        time,
        (q.len(), k.len(), v.len()),
        Past::Fixed(spec.q_offset),
    )?;
    if dout.len() != q.len() || out.len() != q.len() + 2 * k.len() {
        return Err(size_error(
            "attention_backward",
            format!(
                "dout of {}, packed output of {} for q {} and k, v {}",
                dout.len(),
                out.len(),
                q.len(),
                k.len()
            ),
        ));
    }
    let (dq, rest) = out.split_at_mut(q.len());
    let (dk, dv) = rest.split_at_mut(k.len());
    let (dq, dk, dv) = (SharedOut::new(dq), SharedOut::new(dk), SharedOut::new(dv));
    let group = g.heads / g.kv_heads;
    let blocks = g.blocks();
    let (qrow, krow) = (g.heads * g.d, g.kv_heads * g.d);
    let work = 10 * group * g.time * g.kv_len * g.d;
    ctx.threads.for_tasks(g.batch * g.kv_heads, work, |task| {
        let (b, kvh) = (task / g.kv_heads, task % g.kv_heads);
        // SAFETY (every `from_shared`/`slice` in this task): task (b, kvh) alone writes
        // the columns kvh·d..(kvh+1)·d of sequence b in dk and dv, and the columns of
        // query heads kvh·group..(kvh+1)·group of sequence b in dq; each matrix below is
        // dropped before the next one over the same elements is made.
        for j in 0..g.keys {
            unsafe { dk.slice(g.kv_offset_of(b, j, kvh), g.d) }.fill(0.0);
            unsafe { dv.slice(g.kv_offset_of(b, j, kvh), g.d) }.fill(0.0);
        }
        let mut p = vec![0.0f32; Q_BLOCK.min(g.time) * g.kv_len];
        let mut ds = vec![0.0f32; Q_BLOCK.min(g.time) * g.kv_len];
        let km = |nk| Mat::new(&k[g.kv_offset_of(b, 0, kvh)..], nk, g.d, krow, 1);
        let vm = |nk| Mat::new(&v[g.kv_offset_of(b, 0, kvh)..], nk, g.d, krow, 1);
        for h in kvh * group..(kvh + 1) * group {
            for blk in 0..blocks {
                let (t0, nq, nk) = g.block(b, blk);
                let (p, ds) = (&mut p[..nq * nk], &mut ds[..nq * nk]);
                probabilities(ctx.isa, &g, q, k, (b, h, blk), p);
                let qm = Mat::new(&q[g.q_offset_of(b, t0, h)..], nq, g.d, qrow, 1);
                let dom = Mat::new(&dout[g.q_offset_of(b, t0, h)..], nq, g.d, qrow, 1);
                gemm(ctx.isa, 1.0, dom, vm(nk).t(), 0.0, MatMut::new(ds, nq, nk, nk));
                ctx.isa.run(SoftmaxGrad { p, dp: ds, cols: nk });
                let (pm, dsm) = (Mat::row_major(p, nq, nk), Mat::row_major(ds, nq, nk));
                let dqm = unsafe { MatMut::from_shared(&dq, g.q_offset_of(b, t0, h), nq, g.d, qrow) };
                gemm(ctx.isa, g.scale, dsm, km(nk), 0.0, dqm);
                let dkm = unsafe { MatMut::from_shared(&dk, g.kv_offset_of(b, 0, kvh), nk, g.d, krow) };
                gemm(ctx.isa, g.scale, dsm.t(), qm, 1.0, dkm);
                let dvm = unsafe { MatMut::from_shared(&dv, g.kv_offset_of(b, 0, kvh), nk, g.d, krow) };
                gemm(ctx.isa, 1.0, pm.t(), dom, 1.0, dvm);
            }
        }
    });
    Ok(())
}
