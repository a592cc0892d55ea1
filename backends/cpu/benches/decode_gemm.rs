//! Decode-shaped products: `M` rows of activations (one token per sequence of a
//! continuous batch) times a shared transposed weight, `x·Wᵀ`, for the `small` and
//! `medium` presets of `r1host bench` — and, at 8192 rows, a training step's (past
//! 2^20 values of A the backend reads A in place instead of packing it). Prints GFLOP/s of the backend's `MatMul` on one
//! and on all threads, beside matrixmultiply's packed `sgemm` on one thread for the same
//! product (the reference: what the backend would get by packing the weight instead of
//! running its packing-free path, which keeps a row's result independent of its batch).
//!
//! The `q05` and `d15` weights are Qwen2.5-0.5B's and R1-Distill-Qwen-1.5B's, at prefill
//! rows too (128–512: a prompt's chunk).
//!
//! Run: `cargo bench -p r1-backend-cpu --bench decode_gemm [-- NAME]` (only the weights
//! whose name contains NAME, e.g. `small`). Env: `R1_GEMM_ROWS=128,256` only those rows;
//! `R1_GEMM_COLD_MIB=400` the cold runs rotate through that many MiB of copies (past L3:
//! weights from DRAM, as a model's are) and the all-threads column runs cold too.

use std::hint::black_box;
use std::time::Instant;

use r1_backend_cpu::{CpuBackend, CpuBuffer};
use r1_core::backend::{Backend, TensorRef};
use r1_core::{Op, TensorDesc};

/// (name, K, N) of `x·Wᵀ` with `W` stored N×K.
const WEIGHTS: &[(&str, usize, usize)] = &[
    ("small q/o", 256, 256),
    ("small k/v", 256, 128),
    ("small gate/up", 256, 688),
    ("small down", 688, 256),
    ("small lm_head", 256, 512),
    ("medium q/o", 512, 512),
    ("medium gate/up", 512, 1376),
    ("medium down", 1376, 512),
    ("medium lm_head", 512, 4096),
    ("q05 q", 896, 896),
    ("q05 gate", 896, 4864),
    ("q05 down", 4864, 896),
    ("d15 gate", 1536, 8960),
    ("d15 down", 8960, 1536),
];
const ROWS: &[usize] = &[1, 8, 16, 32, 64, 128, 256, 512, 8192];

fn init(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i + salt) * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// Best seconds per call of `f` over 5 batches sized to about `secs` in total.
fn best_secs(flops: f64, secs: f64, mut f: impl FnMut()) -> f64 {
    f();
    let per_batch = ((secs / 5.0) * 50e9 / flops).ceil().max(1.0) as usize;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..per_batch {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / per_batch as f64);
    }
    best
}

/// MiB of copies the cold runs rotate through: `R1_GEMM_COLD_MIB`, else about 12 MiB (the
/// `small` model's weights), more than L2 holds, as in a decode step where each weight is
/// read once per step.
fn cold_mib() -> Option<usize> {
    std::env::var("R1_GEMM_COLD_MIB").ok().and_then(|v| v.parse().ok())
}

/// Copies of each weight the cold runs rotate through ([`cold_mib`]).
fn copies(k: usize, n: usize) -> usize {
    ((cold_mib().unwrap_or(12) << 20) / (4 * k * n)).max(1)
}

fn backend_gflops(be: &CpuBackend, m: usize, k: usize, n: usize, cold: bool) -> f64 {
    let copies = if cold { copies(k, n) } else { 1 };
    let (a, b, c) = (
        TensorDesc::f32(&[m, k]),
        TensorDesc::f32(&[n, k]),
        TensorDesc::f32(&[m, n]),
    );
    let bufs: Vec<CpuBuffer> = (0..copies)
        .map(|i| {
            let buf: CpuBuffer = be.alloc_f32(a.numel() + b.numel() + c.numel()).expect("alloc");
            be.upload_f32(&buf, 0, &init(a.numel() + b.numel(), 1 + i))
                .expect("upload");
            buf
        })
        .collect();
    let mut turn = 0;
    let op = Op::MatMul {
        trans_a: false,
        trans_b: true,
    };
    let refs = |buf| {
        [
            TensorRef {
                buffer: buf,
                offset: 0,
                desc: a,
            },
            TensorRef {
                buffer: buf,
                offset: a.bytes(),
                desc: b,
            },
            TensorRef {
                buffer: buf,
                offset: a.bytes() + b.bytes(),
                desc: c,
            },
        ]
    };
    let flops = 2.0 * (m * k * n) as f64;
    let t = best_secs(flops, 0.3, || {
        let [ra, rb, rc] = refs(&bufs[turn % copies]);
        turn += 1;
        be.run_op(&op, &[ra, rb], rc).expect("matmul");
    });
    flops / t / 1e9
}

fn sgemm_gflops(m: usize, k: usize, n: usize) -> f64 {
    let (a, w) = (init(m * k, 1), init(n * k, 2));
    let mut c = vec![0.0f32; m * n];
    let flops = 2.0 * (m * k * n) as f64;
    let t = best_secs(flops, 0.3, || {
        // SAFETY: a is m×k row-major, w is n×k row-major read as k×n with strides (1, k),
        // c is m×n row-major; all in bounds and c overlaps neither.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                k as isize,
                1,
                w.as_ptr(),
                1,
                k as isize,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
        black_box(&mut c);
    });
    flops / t / 1e9
}

fn main() {
    let all = CpuBackend::new();
    let one = CpuBackend::with_threads(1).expect("one thread");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "decode x·Wᵀ GFLOP/s ({}; load average {})",
        r1_core::Backend::name(&all),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!(
        "{:<16} {:>5} {:>5} {:>4}  {:>9} {:>10} {:>14}  {:>14}",
        "weight",
        "K",
        "N",
        "M",
        "1 thread",
        format!("{} threads", all.threads()),
        "1 thread, cold",
        "sgemm 1 thread"
    );
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let rows: Vec<usize> = match std::env::var("R1_GEMM_ROWS") {
        Ok(list) => list.split(',').filter_map(|r| r.trim().parse().ok()).collect(),
        Err(_) => ROWS.to_vec(),
    };
    for &(name, k, n) in WEIGHTS {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        for &m in &rows {
            println!(
                "{:<16} {:>5} {:>5} {:>4}  {:>9.1} {:>10.1} {:>14.1}  {:>14.1}",
                name,
                k,
                n,
                m,
                backend_gflops(&one, m, k, n, false),
                backend_gflops(&all, m, k, n, cold_mib().is_some()),
                backend_gflops(&one, m, k, n, true),
                sgemm_gflops(m, k, n)
            );
        }
    }
}
