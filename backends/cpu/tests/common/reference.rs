//! Plain f64 reference kernels: the op semantics of `r1_core::Op` written as simple loops
//! over `ndarray` views (operands seen in their logical shape, transposes as `.t()`), the
//! yardstick every CPU kernel is checked against (forward directly, backward through
//! finite differences of these).
//!
//! Products are sums of 1-D `dot`s, never `ndarray`'s matrix `dot`: that one calls
//! `matrixmultiply`, the crate whose GEMM the kernels under test are built on.

use ndarray::{Array2, Array3, Array4, ArrayView1, ArrayView2, ArrayView3, ArrayView4, Axis, Zip, s};

/// `op(a)·op(b)` for `a [items, ., .]` and `b` shared (`b_items = 1`) or batched; `op`
/// transposes the stored matrix when `ta` / `tb` (`a` stored `[items, k, m]`, `b` stored
/// `[b_items, n, k]`).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &[f64],
    b: &[f64],
    items: usize,
    b_items: usize,
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
) -> Vec<f64> {
    let a = ArrayView3::from_shape(if ta { (items, k, m) } else { (items, m, k) }, a).expect("a's length");
    let b = ArrayView3::from_shape(if tb { (b_items, n, k) } else { (b_items, k, n) }, b).expect("b's length");
    let mut out = Array3::zeros((items, m, n));
    for (it, mut out_it) in out.outer_iter_mut().enumerate() {
        let (a, b) = (
            a.index_axis(Axis(0), it),
            b.index_axis(Axis(0), if b_items == 1 { 0 } else { it }),
        );
        let op_a = if ta { a.t() } else { a.view() }; // (m, k)
        let op_b = if tb { b.t() } else { b.view() }; // (k, n)
        for ((i, j), o) in out_it.indexed_iter_mut() {
            *o = op_a.row(i).dot(&op_b.column(j));
        }
    }
    out.iter().copied().collect()
}

/// y = x / sqrt(mean(x²) + eps) · w over each row of `x [rows, w.len()]`.
pub fn rms_norm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let d = w.len();
    let x = ArrayView2::from_shape((x.len() / d, d), x).expect("x is whole rows of w's length");
    let w = ArrayView1::from(w);
    let mut out = Array2::zeros(x.raw_dim());
    for (xr, or) in x.rows().into_iter().zip(out.rows_mut()) {
        let r = 1.0 / (xr.dot(&xr) / d as f64 + eps).sqrt();
        Zip::from(or).and(xr).and(w).for_each(|o, &xv, &wv| *o = xv * r * wv);
    }
    out.iter().copied().collect()
}

/// RoPE on `x [B, T, heads·hd]`, rotate-half layout: with x1, x2 the two halves of a head
/// and angle a_i = pos · θ^(−2i/hd) (negated when `inverse`),
/// (x1, x2) ↦ (x1·cos a − x2·sin a, x2·cos a + x1·sin a).
#[allow(clippy::too_many_arguments)]
pub fn rope(x: &[f64], time: usize, heads: usize, hd: usize, theta: f64, pos_offset: usize, inverse: bool) -> Vec<f64> {
    let half = hd / 2;
    let x = ArrayView3::from_shape((x.len() / (heads * hd), heads, hd), x).expect("x is whole rows"); // (B·T, heads, hd)
    let mut out = Array3::zeros(x.raw_dim());
    for (r, (xr, mut or)) in x.outer_iter().zip(out.outer_iter_mut()).enumerate() {
        let pos = (pos_offset + r % time) as f64;
        for (xh, mut oh) in xr.outer_iter().zip(or.outer_iter_mut()) {
            let (x1, x2) = (xh.slice(s![..half]), xh.slice(s![half..]));
            for i in 0..half {
                let mut ang = pos * theta.powf(-2.0 * i as f64 / hd as f64);
                if inverse {
                    ang = -ang;
                }
                oh[i] = x1[i] * ang.cos() - x2[i] * ang.sin();
                oh[half + i] = x2[i] * ang.cos() + x1[i] * ang.sin();
            }
        }
    }
    out.iter().copied().collect()
}

/// Geometry of a reference attention call.
#[derive(Clone, Copy, Debug)]
pub struct Attn {
    pub batch: usize,
    pub time: usize,
    pub keys: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub d: usize,
    pub q_offset: usize,
    pub kv_len: usize,
}

impl Attn {
    pub fn spec(&self) -> r1_core::graph::AttentionSpec {
        r1_core::graph::AttentionSpec {
            n_heads: self.heads,
            n_kv_heads: self.kv_heads,
            head_dim: self.d,
            q_offset: self.q_offset,
            kv_len: self.kv_len,
        }
    }
    pub fn q_dims(&self) -> [usize; 3] {
        [self.batch, self.time, self.heads * self.d]
    }
    pub fn kv_dims(&self) -> [usize; 3] {
        [self.batch, self.keys, self.kv_heads * self.d]
    }
    pub fn q_len(&self) -> usize {
        self.batch * self.time * self.heads * self.d
    }
    pub fn kv_len_values(&self) -> usize {
        self.batch * self.keys * self.kv_heads * self.d
    }
}

/// Causal grouped-query attention, straight from the definition: query head h attends
/// with KV head h / (heads / kv_heads) to keys j ≤ q_offset + t (j < kv_len),
/// out = softmax(q·kᵀ / √d) · v.
pub fn attention(g: &Attn, q: &[f64], k: &[f64], v: &[f64]) -> Vec<f64> {
    let q = ArrayView4::from_shape((g.batch, g.time, g.heads, g.d), q).expect("q's length");
    let kv_shape = (g.batch, g.keys, g.kv_heads, g.d);
    let k = ArrayView4::from_shape(kv_shape, k).expect("k's length");
    let v = ArrayView4::from_shape(kv_shape, v).expect("v's length");
    let group = g.heads / g.kv_heads;
    let scale = 1.0 / (g.d as f64).sqrt();
    let mut out = Array4::zeros(q.raw_dim());
    // One lane of `out` per (batch, query, head).
    Zip::indexed(out.lanes_mut(Axis(3))).for_each(|(b, t, h), mut o| {
        let pos = g.q_offset + t;
        let kvh = h / group;
        let qv = q.slice(s![b, t, h, ..]);
        let keys: Vec<usize> = (0..g.kv_len).filter(|&j| j <= pos).collect();
        let scores: Vec<f64> = keys
            .iter()
            .map(|&j| qv.dot(&k.slice(s![b, j, kvh, ..])) * scale)
            .collect();
        let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
        let z: f64 = e.iter().sum();
        for (&j, ej) in keys.iter().zip(&e) {
            o.scaled_add(ej / z, &v.slice(s![b, j, kvh, ..]));
        }
    });
    out.iter().copied().collect()
}

pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

pub fn log_softmax_row(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    x.iter().map(|v| v - lse).collect()
}

pub fn softmax_row(x: &[f64]) -> Vec<f64> {
    log_softmax_row(x).into_iter().map(f64::exp).collect()
}

pub fn rows(x: &[f64], cols: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    x.chunks(cols).flat_map(f).collect()
}

pub fn entropy_row(x: &[f64]) -> f64 {
    log_softmax_row(x).iter().map(|l| -l.exp() * l).sum()
}

pub fn token_log_probs(x: &[f64], vocab: usize, targets: &[i32]) -> Vec<f64> {
    x.chunks(vocab)
        .zip(targets)
        .map(|(r, &t)| log_softmax_row(r)[t as usize])
        .collect()
}

pub fn cross_entropy(x: &[f64], vocab: usize, targets: &[i32], weights: &[f64]) -> f64 {
    x.chunks(vocab)
        .zip(targets)
        .zip(weights)
        .filter(|((_, t), _)| **t >= 0)
        .map(|((r, &t), w)| -w * log_softmax_row(r)[t as usize])
        .sum()
}

/// DeepSeek-V3's router for one row, as `DeepseekV3TopkRouter.forward` reads: sigmoid
/// scores, choice scores `s + bias`, groups scored by their two best choice scores, the
/// best `topk_group` groups kept, the `top_k` best choice scores among their experts, the
/// chosen weights `s` (over their sum + 1e-20 when `norm`) times `scaling`. Dense `[E]`.
#[allow(clippy::too_many_arguments)]
pub fn moe_route_row(
    logits: &[f64],
    bias: &[f64],
    n_group: usize,
    topk_group: usize,
    top_k: usize,
    norm: bool,
    scaling: f64,
) -> Vec<f64> {
    let e = logits.len();
    let per = e / n_group;
    let s: Vec<f64> = logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect();
    let choice: Vec<f64> = s.iter().zip(bias).map(|(a, b)| a + b).collect();
    let mut groups: Vec<(f64, usize)> = (0..n_group)
        .map(|g| {
            let mut c: Vec<f64> = choice[g * per..(g + 1) * per].to_vec();
            c.sort_by(|a, b| b.total_cmp(a));
            (c.iter().take(2).sum(), g)
        })
        .collect();
    groups.sort_by(|a, b| b.0.total_cmp(&a.0));
    let kept: Vec<usize> = groups.iter().take(topk_group).map(|g| g.1).collect();
    let mut cand: Vec<(f64, usize)> = (0..e)
        .filter(|i| kept.contains(&(i / per)))
        .map(|i| (choice[i], i))
        .collect();
    cand.sort_by(|a, b| b.0.total_cmp(&a.0));
    let chosen: Vec<usize> = cand.iter().take(top_k).map(|c| c.1).collect();
    let denom = if norm {
        chosen.iter().map(|&i| s[i]).sum::<f64>() + 1e-20
    } else {
        1.0
    };
    let mut out = vec![0.0; e];
    for &i in &chosen {
        out[i] = s[i] / denom * scaling;
    }
    out
}

/// `Σ_e gates[r, e] · down_e(silu(gate_e·x_r) ⊙ up_e·x_r)` over the nonzero gates, row by
/// row: `x [rows, H]`, `gates [rows, E]`, experts `(gate [F, H], up [F, H], down [H, F])`.
pub fn moe_experts(h: usize, x: &[f64], gates: &[f64], experts: &[(Vec<f64>, Vec<f64>, Vec<f64>)]) -> Vec<f64> {
    let rows = x.len() / h;
    let e = experts.len();
    let x = ArrayView2::from_shape((rows, h), x).expect("x");
    let gates = ArrayView2::from_shape((rows, e), gates).expect("gates");
    let mut out = Array2::<f64>::zeros((rows, h));
    for r in 0..rows {
        for (ex, (wg, wu, wd)) in experts.iter().enumerate() {
            let g = gates[[r, ex]];
            if g == 0.0 {
                continue;
            }
            let f = wg.len() / h;
            let (wg, wu) = (
                ArrayView2::from_shape((f, h), wg).expect("gate"),
                ArrayView2::from_shape((f, h), wu).expect("up"),
            );
            let wd = ArrayView2::from_shape((h, f), wd).expect("down");
            let xr = x.row(r);
            let act: Vec<f64> = (0..f).map(|j| silu(dot(wg.row(j), xr)) * dot(wu.row(j), xr)).collect();
            let act = ArrayView1::from(&act);
            for i in 0..h {
                out[[r, i]] += g * dot(wd.row(i), act);
            }
        }
    }
    out.iter().copied().collect()
}

fn dot(a: ArrayView1<'_, f64>, b: ArrayView1<'_, f64>) -> f64 {
    a.iter().zip(b.iter()).map(|(p, q)| p * q).sum()
}

/// RoPE with explicit inverse frequencies and cos/sin magnitude, pairs `(2i, 2i + 1)`
/// when `interleaved`, else `(i, i + hd/2)`; `x [rows, heads·hd]`, row `r` at position
/// `pos_offset + r % time`.
#[allow(clippy::too_many_arguments)]
pub fn rope_with(
    x: &[f64],
    time: usize,
    heads: usize,
    hd: usize,
    inv_freq: &[f64],
    magnitude: f64,
    interleaved: bool,
    pos_offset: usize,
) -> Vec<f64> {
    let half = hd / 2;
    let mut out = vec![0.0; x.len()];
    for (r, (xr, or)) in x.chunks(heads * hd).zip(out.chunks_mut(heads * hd)).enumerate() {
        let pos = (pos_offset + r % time) as f64;
        for (xh, oh) in xr.chunks(hd).zip(or.chunks_mut(hd)) {
            for (i, &freq) in inv_freq.iter().enumerate().take(half) {
                let (c, s) = ((pos * freq).cos() * magnitude, (pos * freq).sin() * magnitude);
                let (a, b) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
                oh[a] = xh[a] * c - xh[b] * s;
                oh[b] = xh[b] * c + xh[a] * s;
            }
        }
    }
    out
}
