//! Quantized matmul: `x·Wᵀ` with `W` stored N×K as f32, bf16, f16, Q8_0, Q4_0, Q5_0, Q4_K
//! or Q6_K, for Qwen2.5-0.5B's MLP shapes (gate/up: K = 896, N = 4864; down: K = 4864,
//! N = 896) and M = 1 (a decode step) or 16 rows. Prints GFLOP/s (2·M·N·K per call, the
//! activation quantization included in the time) and GB/s of weight bytes read, on one
//! thread and on all, each at the backend's best SIMD level. Weights are hot (the same
//! buffer every call): an upper bound next to a decode step that streams every weight.
//!
//! Run: `cargo bench -p r1-backend-cpu --bench quant_matmul [-- TYPE]` (only the weight
//! types whose name contains TYPE, e.g. `q4`).

use std::time::Instant;

use r1_backend_cpu::{CpuBackend, CpuBuffer};
use r1_core::backend::{Backend, TensorRef};
use r1_core::quant::{self, GgmlType};
use r1_core::{Op, TensorDesc};

/// (name, K, N) of `x·Wᵀ`.
const SHAPES: &[(&str, usize, usize)] = &[("gate/up", 896, 4864), ("down", 4864, 896)];
const ROWS: &[usize] = &[1, 16];
const TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::BF16,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

fn init(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i + salt) * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// Best seconds per call of `f` over 5 batches of about `secs / 5` each.
fn best_secs(secs: f64, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    f();
    let once = t.elapsed().as_secs_f64().max(1e-7);
    let per_batch = ((secs / 5.0) / once).ceil().max(1.0) as usize;
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

/// (GFLOP/s, weight GB/s) of the backend's `MatMul` for one type and shape.
fn measure(be: &CpuBackend, ty: GgmlType, m: usize, k: usize, n: usize) -> (f64, f64) {
    let w = quant::quantize(ty, &init(n * k, 2)).expect("quantize");
    let (a, b, c) = (
        TensorDesc::f32(&[m, k]),
        TensorDesc::new(ty.dtype(), &[n, k]),
        TensorDesc::f32(&[m, n]),
    );
    assert_eq!(b.bytes(), w.len());
    let (wa, wc) = (a.bytes(), a.bytes() + b.bytes().next_multiple_of(64));
    let buf: CpuBuffer = be.alloc(wc + c.bytes()).expect("alloc");
    be.upload_f32(&buf, 0, &init(m * k, 1)).expect("upload");
    be.upload(&buf, wa, &w).expect("upload");
    let op = Op::MatMul {
        trans_a: false,
        trans_b: true,
    };
    let r = |offset, desc| TensorRef {
        buffer: &buf,
        offset,
        desc,
    };
    let t = best_secs(0.3, || {
        be.run_op(&op, &[r(0, a), r(wa, b)], r(wc, c)).expect("matmul");
    });
    (2.0 * (m * k * n) as f64 / t / 1e9, w.len() as f64 / t / 1e9)
}

fn main() {
    let all = CpuBackend::new();
    let one = CpuBackend::with_threads(1).expect("one thread");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "quantized x·Wᵀ, hot weights ({}; load average {})",
        r1_core::Backend::name(&all),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!(
        "{:<8} {:<6} {:>5} {:>5} {:>3}  {:>17}  {:>17}",
        "weight",
        "type",
        "K",
        "N",
        "M",
        "1 thread GF/s GB/s",
        format!("{} threads GF/s GB/s", all.threads()),
    );
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    for &(name, k, n) in SHAPES {
        for &ty in TYPES {
            // K-quants need K a multiple of 256 (896 is not: llama.cpp stores such
            // tensors in another type).
            if only.as_ref().is_some_and(|o| !ty.name().contains(o.as_str())) || k % ty.block_size() != 0 {
                continue;
            }
            for &m in ROWS {
                let (g1, b1) = measure(&one, ty, m, k, n);
                let (ga, ba) = measure(&all, ty, m, k, n);
                println!(
                    "{:<8} {:<6} {:>5} {:>5} {:>3}  {:>8.1} {:>8.1}  {:>8.1} {:>8.1}",
                    name,
                    ty.name(),
                    k,
                    n,
                    m,
                    g1,
                    b1,
                    ga,
                    ba
                );
            }
        }
    }
}
