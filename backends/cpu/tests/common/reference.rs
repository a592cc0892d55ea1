//! Plain f64 reference kernels: the op semantics of `r1_core::Op` written as simple loops,
//! the yardstick every CPU kernel is checked against (forward directly, backward through
//! finite differences of these).

/// `op(a)·op(b)` for `a [items, ., .]` and `b` shared (`b_items = 1`) or batched.
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
    let mut out = vec![0.0; items * m * n];
    for it in 0..items {
        let a0 = it * m * k;
        let b0 = if b_items == 1 { 0 } else { it * k * n };
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    let av = if ta { a[a0 + p * m + i] } else { a[a0 + i * k + p] };
                    let bv = if tb { b[b0 + j * k + p] } else { b[b0 + p * n + j] };
                    s += av * bv;
                }
                out[it * m * n + i * n + j] = s;
            }
        }
    }
    out
}

pub fn rms_norm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let d = w.len();
    let mut out = vec![0.0; x.len()];
    for (xr, or) in x.chunks(d).zip(out.chunks_mut(d)) {
        let ms = xr.iter().map(|v| v * v).sum::<f64>() / d as f64;
        let r = 1.0 / (ms + eps).sqrt();
        for ((o, xv), wv) in or.iter_mut().zip(xr).zip(w) {
            *o = xv * r * wv;
        }
    }
    out
}

/// RoPE on `x [B, T, heads·hd]`, rotate-half layout.
#[allow(clippy::too_many_arguments)]
pub fn rope(x: &[f64], time: usize, heads: usize, hd: usize, theta: f64, pos_offset: usize, inverse: bool) -> Vec<f64> {
    let half = hd / 2;
    let row = heads * hd;
    let mut out = vec![0.0; x.len()];
    for (r, (xr, or)) in x.chunks(row).zip(out.chunks_mut(row)).enumerate() {
        let pos = (pos_offset + r % time) as f64;
        for h in 0..heads {
            for i in 0..half {
                let mut ang = pos * theta.powf(-2.0 * i as f64 / hd as f64);
                if inverse {
                    ang = -ang;
                }
                let (x1, x2) = (xr[h * hd + i], xr[h * hd + half + i]);
                or[h * hd + i] = x1 * ang.cos() - x2 * ang.sin();
                or[h * hd + half + i] = x2 * ang.cos() + x1 * ang.sin();
            }
        }
    }
    out
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

/// Causal grouped-query attention, straight from the definition.
pub fn attention(g: &Attn, q: &[f64], k: &[f64], v: &[f64]) -> Vec<f64> {
    let (qrow, krow) = (g.heads * g.d, g.kv_heads * g.d);
    let group = g.heads / g.kv_heads;
    let scale = 1.0 / (g.d as f64).sqrt();
    let mut out = vec![0.0; q.len()];
    for b in 0..g.batch {
        for t in 0..g.time {
            let pos = g.q_offset + t;
            for h in 0..g.heads {
                let kvh = h / group;
                let qv = &q[(b * g.time + t) * qrow + h * g.d..][..g.d];
                let keys: Vec<usize> = (0..g.kv_len).filter(|&j| j <= pos).collect();
                let scores: Vec<f64> = keys
                    .iter()
                    .map(|&j| {
                        let kv = &k[(b * g.keys + j) * krow + kvh * g.d..][..g.d];
                        qv.iter().zip(kv).map(|(a, c)| a * c).sum::<f64>() * scale
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (&j, ej) in keys.iter().zip(&e) {
                    let vv = &v[(b * g.keys + j) * krow + kvh * g.d..][..g.d];
                    for c in 0..g.d {
                        out[(b * g.time + t) * qrow + h * g.d + c] += ej / z * vv[c];
                    }
                }
            }
        }
    }
    out
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
