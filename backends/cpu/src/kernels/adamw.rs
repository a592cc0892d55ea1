//! One AdamW step in place (decoupled weight decay, bias-corrected moments), with the
//! element-wise operations in the order `torch.optim.AdamW` (single-tensor path) does
//! them, so f32 results match it closely:
//! `g ← s·g; p ← p·(1 − lr·wd); m ← m + (1−β1)·(g − m); v ← v·β2 + (1−β2)·g·g;`
//! `p ← p + (−lr/(1−β1^t))·m / (sqrt(v)/sqrt(1−β2^t) + eps)`.

use r1_core::optim8::{self, AdamWCoefs, Code};
use r1_core::{AdamWStep, BackendError};

use super::{Ctx, size_error};
use crate::simd::{Simd, SimdTask, math};

/// One AdamW update over f32 slices. With `ROOT` (the 8-bit state's block) `v` holds the
/// square root of the second moment and the task returns both absmaxes for requantizing;
/// without it (f32 moments) none of that extra work is compiled in.
struct Update<'a, const ROOT: bool> {
    c: AdamWCoefs,
    p: &'a mut [f32],
    g: &'a [f32],
    m: &'a mut [f32],
    /// `v`, or with `ROOT` its square root: read as `r²`, written as `sqrt(v)`.
    v: &'a mut [f32],
}

impl<const ROOT: bool> SimdTask for Update<'_, ROOT> {
    /// With `ROOT`, `max |m|` and `max r` after the update; `(0, 0)` otherwise.
    type Output = (f32, f32);
    #[inline(always)]
    fn run<S: Simd>(self, s: S) -> (f32, f32) {
        let Update { c, p, g, m, v } = self;
        let k = |x: f32| s.splat(x);
        let (gs, decay, omb1, b2, omb2, nss, b2s, eps) = (
            k(c.grad_scale),
            k(c.decay),
            k(c.one_minus_beta1),
            k(c.beta2),
            k(c.one_minus_beta2),
            k(c.neg_step_size),
            k(c.bias2_sqrt),
            k(c.eps),
        );
        let (zero, mut max_m, mut max_v) = (k(0.0), k(0.0), k(0.0));
        let n = p.len();
        let mut i = 0;
        while i < n {
            let len = (n - i).min(S::LANES);
            let gv = s.mul(gs, math::load_n(s, g, i, len));
            let pv = s.mul(math::load_n(s, p, i, len), decay);
            let mv = math::load_n(s, m, i, len);
            let mv = s.add(mv, s.mul(omb1, s.sub(gv, mv)));
            let v_old = math::load_n(s, v, i, len);
            let v_old = if ROOT { s.mul(v_old, v_old) } else { v_old };
            let vv = s.add(s.mul(v_old, b2), s.mul(s.mul(omb2, gv), gv));
            let rv = s.sqrt(vv);
            let denom = s.add(s.div(rv, b2s), eps);
            let pv = s.add(pv, s.div(s.mul(nss, mv), denom));
            let vv = if ROOT { rv } else { vv };
            math::store_n(s, pv, p, i, len);
            math::store_n(s, mv, m, i, len);
            math::store_n(s, vv, v, i, len);
            if ROOT {
                // Lanes past `len` hold zeros (loaded as 0, updated to 0).
                max_m = s.max(max_m, s.max(mv, s.sub(zero, mv)));
                max_v = s.max(max_v, vv);
            }
            i += len;
        }
        (s.reduce_max(max_m), s.reduce_max(max_v))
    }
}

/// Updates `p`, `m`, `v` in place from `g`.
pub(crate) fn adamw(
    ctx: Ctx<'_>,
    step: &AdamWStep,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) -> Result<(), BackendError> {
    let n = p.len();
    if g.len() != n || m.len() != n || v.len() != n {
        return Err(size_error(
            "adamw",
            format!("param {n}, grad {}, m {}, v {} elements", g.len(), m.len(), v.len()),
        ));
    }
    let c = AdamWCoefs::new(step);
    let chunk = n.div_ceil(4 * ctx.threads.count()).max(8192);
    let jobs: Vec<_> = p
        .chunks_mut(chunk)
        .zip(m.chunks_mut(chunk))
        .zip(v.chunks_mut(chunk))
        .enumerate()
        .collect();
    type Job<'a> = (usize, ((&'a mut [f32], &'a mut [f32]), &'a mut [f32]));
    let run = |(i, ((p, m), v)): Job<'_>| {
        let at = i * chunk;
        let len = p.len();
        ctx.isa.run(Update::<false> {
            c,
            p,
            g: &g[at..at + len],
            m,
            v,
        });
    };
    if ctx.threads.worth_splitting(12 * n) {
        ctx.threads.for_each_owned(jobs, run);
    } else {
        jobs.into_iter().for_each(run);
    }
    Ok(())
}

/// One AdamW step with 8-bit moments ([`r1_core::optim8`]): `m` and `v` are the blockwise
/// states of `p` and `sqrt(v)` (`state_bytes(p.len())` bytes each); blocks are split over
/// the threads. Per block, as core's reference [`optim8::adamw_block`] and bit for bit with
/// it: the scalar dequantize, the SIMD update (the same IEEE operations in the same order,
/// which also gives both absmaxes), the scalar nearest-code search.
pub(crate) fn adamw_8bit(
    ctx: Ctx<'_>,
    step: &AdamWStep,
    p: &mut [f32],
    g: &[f32],
    m: &mut [u8],
    v: &mut [u8],
) -> Result<(), BackendError> {
    let n = p.len();
    let state = optim8::state_bytes(n);
    if g.len() != n || m.len() != state || v.len() != state {
        return Err(size_error(
            "adamw_8bit",
            format!(
                "param {n}, grad {} elements, m {} and v {} bytes (expected {state})",
                g.len(),
                m.len(),
                v.len()
            ),
        ));
    }
    let c = AdamWCoefs::new(step);
    let blocks_per_job = n.div_ceil(optim8::BLOCK * 4 * ctx.threads.count()).max(16);
    let (elems, bytes) = (blocks_per_job * optim8::BLOCK, blocks_per_job * optim8::BLOCK_BYTES);
    let jobs: Vec<_> = p
        .chunks_mut(elems)
        .zip(g.chunks(elems))
        .zip(m.chunks_mut(bytes))
        .zip(v.chunks_mut(bytes))
        .collect();
    type Job<'a> = (((&'a mut [f32], &'a [f32]), &'a mut [u8]), &'a mut [u8]);
    let run = |(((p, g), m), v): Job<'_>| {
        let blocks = p
            .chunks_mut(optim8::BLOCK)
            .zip(g.chunks(optim8::BLOCK))
            .zip(m.as_chunks_mut::<{ optim8::BLOCK_BYTES }>().0)
            .zip(v.as_chunks_mut::<{ optim8::BLOCK_BYTES }>().0);
        let (mut mf, mut rf) = ([0.0f32; optim8::BLOCK], [0.0f32; optim8::BLOCK]);
        for (((p, g), m), r) in blocks {
            let n = p.len();
            let (mf, rf) = (&mut mf[..n], &mut rf[..n]);
            optim8::dequantize_block(Code::Signed, m, mf);
            optim8::dequantize_block(Code::Unsigned, r, rf);
            let (max_m, max_r) = ctx.isa.run(Update::<true> { c, p, g, m: mf, v: rf });
            optim8::quantize_block_with(Code::Signed, mf, max_m, m);
            optim8::quantize_block_with(Code::Unsigned, rf, max_r, r);
        }
    };
    if ctx.threads.worth_splitting(40 * n) {
        ctx.threads.for_each_owned(jobs, run);
    } else {
        jobs.into_iter().for_each(run);
    }
    Ok(())
}
