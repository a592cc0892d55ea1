//! Rotary position embedding in the rotate-half layout of HF Llama/Qwen2, with cached
//! cos/sin tables.
//!
//! Angles follow `LlamaRotaryEmbedding` in f32: `inv_freq[i] = 1 / theta^(2i/d)` (the
//! exponent `2i/d` and the power rounded to f32, then the reciprocal in f32; YaRN's blend
//! as `RopeSpec::inv_freq` defines it, and cos/sin times its magnitude),
//! `angle = f32(pos) · inv_freq[i]` (one f32 product), then `cos`/`sin` of that f32 angle
//! (correctly rounded here, through f64). For head pair `(x1, x2) = (x[i], x[i + d/2])`:
//! `x1' = x1·cos − x2·sin`, `x2' = x2·cos + x1·sin`; the inverse (RoPE's backward)
//! negates the angle. With `interleaved` the pair is `(x[2i], x[2i + 1])`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use r1_core::BackendError;
use r1_core::graph::RopeSpec;

use super::{Ctx, Past, size_error};
use crate::simd::{Simd, SimdTask, math};

/// cos/sin of every (position, frequency) pair for one `(theta, head_dim)`.
pub(crate) struct RopeTable {
    half: usize,
    positions: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    fn new(spec: &RopeSpec, positions: usize) -> RopeTable {
        let half = spec.head_dim / 2;
        let inv_freq = spec.inv_freq();
        let magnitude = spec.magnitude();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for &f in &inv_freq {
                let angle = (p as f32 * f) as f64;
                cos.push(angle.cos() as f32 * magnitude);
                sin.push(angle.sin() as f32 * magnitude);
            }
        }
        RopeTable {
            half,
            positions,
            cos,
            sin,
        }
    }
}

/// What a table depends on: theta, head_dim and the YaRN settings, as bits.
type TableKey = (u32, usize, [u32; 4]);

fn table_key(spec: &RopeSpec) -> TableKey {
    let yarn = spec.yarn.map_or([0; 4], |y| {
        [
            y.factor.to_bits(),
            y.low.to_bits(),
            y.high.to_bits(),
            y.attention_factor.to_bits(),
        ]
    });
    (spec.theta.to_bits(), spec.head_dim, yarn)
}

/// Tables by [`TableKey`], grown (doubling) as positions are asked for.
#[derive(Default)]
pub(crate) struct RopeCache {
    tables: Mutex<HashMap<TableKey, Arc<RopeTable>>>,
}

impl RopeCache {
    /// A table covering positions `0..positions` for `spec`'s frequencies.
    pub(crate) fn get(&self, spec: &RopeSpec, positions: usize) -> Arc<RopeTable> {
        let key = table_key(spec);
        // A poisoned lock only means another thread panicked while inserting; the map
        // itself is still a valid cache.
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tables.get(&key)
            && t.positions >= positions
        {
            return t.clone();
        }
        let have = tables.get(&key).map_or(0, |t| t.positions);
        let size = positions.next_power_of_two().max(2 * have).max(256);
        let table = Arc::new(RopeTable::new(spec, size));
        tables.insert(key, table.clone());
        table
    }
}

/// Interleaved RoPE of rows of `heads` heads: pair `(2i, 2i + 1)` rotated in place by
/// frequency `i` (DeepSeek's layout; small rotary widths, so scalar).
fn rotate_interleaved(head_dim: usize, inverse: bool, cos: &[f32], sin: &[f32], x: &[f32], out: &mut [f32]) {
    let half = head_dim / 2;
    let row = x.len() / (cos.len() / half).max(1);
    for (r, (xr, or)) in x.chunks_exact(row).zip(out.chunks_exact_mut(row)).enumerate() {
        let (c_row, s_row) = (&cos[r * half..(r + 1) * half], &sin[r * half..(r + 1) * half]);
        for (xh, oh) in xr.chunks_exact(head_dim).zip(or.chunks_exact_mut(head_dim)) {
            for i in 0..half {
                let (a, b) = (xh[2 * i], xh[2 * i + 1]);
                let (c, sn) = (c_row[i], if inverse { -s_row[i] } else { s_row[i] });
                oh[2 * i] = a * c - b * sn;
                oh[2 * i + 1] = b * c + a * sn;
            }
        }
    }
}

struct RotateRows<'a> {
    heads: usize,
    head_dim: usize,
    inverse: bool,
    /// cos/sin rows for the chunk's positions, `half` values each.
    cos: &'a [f32],
    sin: &'a [f32],
    x: &'a [f32],
    out: &'a mut [f32],
}

impl SimdTask for RotateRows<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let RotateRows {
            heads,
            head_dim,
            inverse,
            cos,
            sin,
            x,
            out,
        } = self;
        let half = head_dim / 2;
        let row = heads * head_dim;
        for (r, (xr, or)) in x.chunks_exact(row).zip(out.chunks_exact_mut(row)).enumerate() {
            let (c_row, s_row) = (&cos[r * half..(r + 1) * half], &sin[r * half..(r + 1) * half]);
            for (xh, oh) in xr.chunks_exact(head_dim).zip(or.chunks_exact_mut(head_dim)) {
                let (x1, x2) = xh.split_at(half);
                let (o1, o2) = oh.split_at_mut(half);
                let mut i = 0;
                while i < half {
                    let n = (half - i).min(S::LANES);
                    let (a, b, c) = (
                        math::load_n(s, x1, i, n),
                        math::load_n(s, x2, i, n),
                        math::load_n(s, c_row, i, n),
                    );
                    let sn = math::load_n(s, s_row, i, n);
                    let sn = if inverse { s.sub(s.splat(0.0), sn) } else { sn };
                    // HF: q·cos + rotate_half(q)·sin with rotate_half = (−x2, x1).
                    let y1 = s.sub(s.mul(a, c), s.mul(b, sn));
                    let y2 = s.add(s.mul(b, c), s.mul(a, sn));
                    math::store_n(s, y1, o1, i, n);
                    math::store_n(s, y2, o2, i, n);
                    i += n;
                }
            }
        }
    }
}

/// Applies RoPE to `x [B, T, heads·head_dim]` (sequence `b`'s rows at positions `past.of(b) + t`).
pub(crate) fn rope(
    ctx: Ctx<'_>,
    cache: &RopeCache,
    spec: &RopeSpec,
    time: usize,
    past: Past<'_>,
    x: &[f32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    let row = spec.n_heads * spec.head_dim;
    if !spec.head_dim.is_multiple_of(2)
        || row == 0
        || time == 0
        || !x.len().is_multiple_of(row * time)
        || out.len() != x.len()
    {
        return Err(size_error(
            "rope",
            format!(
                "{} elements as [B, {time}, {} heads × {}] into {}",
                x.len(),
                spec.n_heads,
                spec.head_dim,
                out.len()
            ),
        ));
    }
    let table = cache.get(spec, past.max() + time);
    let half = table.half;
    ctx.threads.for_rows(out, row, 4 * row, |r0, o| {
        // Rows of a chunk may wrap from one sequence to the next: split at sequence ends.
        let rows = o.len() / row;
        let mut done = 0;
        while done < rows {
            let r = r0 + done;
            let t = r % time;
            let n = (time - t).min(rows - done);
            let p0 = past.of(r / time) + t;
            if spec.interleaved {
                rotate_interleaved(
                    spec.head_dim,
                    spec.inverse,
                    &table.cos[p0 * half..(p0 + n) * half],
                    &table.sin[p0 * half..(p0 + n) * half],
                    &x[r * row..(r + n) * row],
                    &mut o[done * row..(done + n) * row],
                );
                done += n;
                continue;
            }
            ctx.isa.run(RotateRows {
                heads: spec.n_heads,
                head_dim: spec.head_dim,
                inverse: spec.inverse,
                cos: &table.cos[p0 * half..(p0 + n) * half],
                sin: &table.sin[p0 * half..(p0 + n) * half],
                x: &x[r * row..(r + n) * row],
                out: &mut o[done * row..(done + n) * row],
            });
            done += n;
        }
    });
    Ok(())
}
