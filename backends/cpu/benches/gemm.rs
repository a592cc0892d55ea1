//! GEMM throughput of the CPU backend's `MatMul`, in GFLOP/s (criterion's `Gelem/s` here
//! counts floating-point operations, `2·M·K·N` per product): the 512/1024/2048 squares and
//! the products of a training step of the two Qwen2 shapes (batch 8×128 = 1024
//! rows): forward `x·Wᵀ`, input gradient `dY·W` and weight gradient `dYᵀ·X`.
//!
//! `benches/torch_gemm.py` prints PyTorch's figures for the same list; run both back to
//! back and note the load (`uptime`), since other processes on the machine skew both.
//! The summary's last column, GFLOP per CPU-second of the threaded run, is the per-core
//! efficiency and holds up on a busy machine where wall-clock figures do not.
//!
//! Run: `cargo bench -p r1-backend-cpu --bench gemm -- --warm-up-time 1 --measurement-time 3`

use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use r1_backend_cpu::{CpuBackend, CpuBuffer};
use r1_core::backend::{Backend, TensorRef};
use r1_core::{Op, TensorDesc};

/// `op(A)·op(B)` with `op(A)` M×K and `op(B)` K×N.
struct Shape {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
}

const fn s(name: &'static str, m: usize, k: usize, n: usize, ta: bool, tb: bool) -> Shape {
    Shape { name, m, k, n, ta, tb }
}

const SHAPES: &[Shape] = &[
    s("square 512", 512, 512, 512, false, false),
    s("square 1024", 1024, 1024, 1024, false, false),
    s("square 2048", 2048, 2048, 2048, false, false),
    s("h256 gate/up x·Wᵀ", 1024, 256, 688, false, true),
    s("h256 down x·Wᵀ", 1024, 688, 256, false, true),
    s("h256 gate/up dX=dY·W", 1024, 688, 256, false, false),
    s("h256 down dX=dY·W", 1024, 256, 688, false, false),
    s("h256 gate/up dW=dYᵀ·X", 688, 1024, 256, true, false),
    s("h256 down dW=dYᵀ·X", 256, 1024, 688, true, false),
    s("h512 gate/up x·Wᵀ", 1024, 512, 1376, false, true),
    s("h512 lm_head x·Wᵀ", 1024, 512, 4096, false, true),
    s("h512 gate/up dX=dY·W", 1024, 1376, 512, false, false),
    s("h512 lm_head dX=dY·W", 1024, 4096, 512, false, false),
    s("h512 gate/up dW=dYᵀ·X", 1376, 1024, 512, true, false),
    s("h512 lm_head dW=dYᵀ·X", 4096, 1024, 512, true, false),
];

/// One product ready to run: operands in one buffer, the op and its tensor refs.
struct Product {
    buf: CpuBuffer,
    op: Op,
    a: TensorDesc,
    b: TensorDesc,
    c: TensorDesc,
}

impl Product {
    fn new(be: &CpuBackend, sh: &Shape) -> Product {
        let a = TensorDesc::f32(&if sh.ta { [sh.k, sh.m] } else { [sh.m, sh.k] });
        let b = TensorDesc::f32(&if sh.tb { [sh.n, sh.k] } else { [sh.k, sh.n] });
        let c = TensorDesc::f32(&[sh.m, sh.n]);
        let n = a.numel() + b.numel() + c.numel();
        let buf = be.alloc_f32(n).unwrap();
        let init: Vec<f32> = (0..a.numel() + b.numel())
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        be.upload_f32(&buf, 0, &init).unwrap();
        Product {
            buf,
            op: Op::MatMul {
                trans_a: sh.ta,
                trans_b: sh.tb,
            },
            a,
            b,
            c,
        }
    }

    fn run(&self, be: &CpuBackend) {
        let a = TensorRef {
            buffer: &self.buf,
            offset: 0,
            desc: self.a,
        };
        let b = TensorRef {
            buffer: &self.buf,
            offset: self.a.bytes(),
            desc: self.b,
        };
        let c = TensorRef {
            buffer: &self.buf,
            offset: self.a.bytes() + self.b.bytes(),
            desc: self.c,
        };
        be.run_op(&self.op, &[a, b], c).unwrap();
    }
}

fn flops(sh: &Shape) -> u64 {
    2 * (sh.m * sh.k * sh.n) as u64
}

/// CPU time of this process (all threads) in seconds, from `/proc/self/stat` (Linux;
/// `None` elsewhere). Unlike wall time it barely moves when other processes share the
/// cores, so `flops / cpu time` is the per-core efficiency even on a busy machine.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// (best GFLOP/s over a few timed batches of about `secs` seconds in total, GFLOP per
/// CPU-second over all of them).
fn quick_gflops(be: &CpuBackend, sh: &Shape, secs: f64) -> (f64, f64) {
    let p = Product::new(be, sh);
    p.run(be);
    let f = flops(sh) as f64;
    let per_batch = ((secs / 5.0) * 100e9 / f).ceil().max(1.0) as usize;
    let mut best = f64::MAX;
    let cpu0 = cpu_seconds();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..per_batch {
            p.run(be);
        }
        best = best.min(t.elapsed().as_secs_f64() / per_batch as f64);
    }
    let per_cpu = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) if b > a => 5.0 * per_batch as f64 * f / (b - a) / 1e9,
        _ => f64::NAN,
    };
    (f / best / 1e9, per_cpu)
}

fn gemm(c: &mut Criterion) {
    let be = CpuBackend::new();
    let mut group = c.benchmark_group(format!("gemm {}", r1_core::Backend::name(&be)));
    for sh in SHAPES {
        let p = Product::new(&be, sh);
        group.throughput(Throughput::Elements(flops(sh)));
        group.bench_function(sh.name, |bch| bch.iter(|| p.run(&be)));
    }
    group.finish();

    // The summary the closing note quotes: one and all threads side by side.
    let one = CpuBackend::with_threads(1).unwrap();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nGEMM GFLOP/s ({}; load average {})",
        r1_core::Backend::name(&be),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let head = [
        "product",
        "M",
        "K",
        "N",
        "1 thread",
        &format!("{} threads", be.threads()),
        "GFLOP/CPU-s",
    ];
    println!(
        "{:<26} {:>6} {:>6} {:>6}  {:>9} {:>10}  {:>12}",
        head[0], head[1], head[2], head[3], head[4], head[5], head[6]
    );
    for sh in SHAPES {
        let ((g1, _), (gn, per_cpu)) = (quick_gflops(&one, sh, 0.5), quick_gflops(&be, sh, 0.5));
        println!(
            "{:<26} {:>6} {:>6} {:>6}  {:>9.1} {:>10.1}  {:>12.1}",
            sh.name, sh.m, sh.k, sh.n, g1, gn, per_cpu
        );
    }
}

criterion_group!(benches, gemm);
criterion_main!(benches);
