//! Throughput of the main non-GEMM kernels on training-step shapes (batch 8×128 = 1024
//! rows, hidden 512, ffn 1376, vocab 4096, 8 heads of 64 with 2 kv heads): GB/s of the
//! bytes each kernel must read and write, and for attention GFLOP/s (its `Gelem/s`).
//!
//! Run: `cargo bench -p r1-backend-cpu --bench kernels -- --warm-up-time 1 --measurement-time 3`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use r1_backend_cpu::{CpuBackend, CpuBuffer};
use r1_core::backend::{AdamWStep, Backend, TensorRef};
use r1_core::graph::{AttentionSpec, RopeSpec};
use r1_core::{DType, Op, TensorDesc};

/// Operands of one op laid out in one buffer, with deterministic values.
struct Case {
    buf: CpuBuffer,
    descs: Vec<TensorDesc>,
    offsets: Vec<usize>,
}

impl Case {
    /// `descs`: inputs then the output. i32 operands get ids below `vocab`.
    fn new(be: &CpuBackend, descs: Vec<TensorDesc>, vocab: usize) -> Case {
        let mut offsets = Vec::new();
        let mut at = 0;
        for d in &descs {
            offsets.push(at);
            at += d.bytes().div_ceil(64) * 64;
        }
        let buf = be.alloc(at).unwrap();
        for (d, &o) in descs.iter().zip(&offsets) {
            let bytes: Vec<u8> = match d.dtype {
                DType::I32 => (0..d.numel())
                    .flat_map(|i| ((i * 7919 % vocab) as i32).to_le_bytes())
                    .collect(),
                _ => (0..d.numel())
                    .flat_map(|i| (((i * 7919) % 1000) as f32 / 250.0 - 2.0).to_le_bytes())
                    .collect(),
            };
            be.upload(&buf, o, &bytes).unwrap();
        }
        Case { buf, descs, offsets }
    }

    fn tensor(&self, i: usize) -> TensorRef<'_, CpuBuffer> {
        TensorRef {
            buffer: &self.buf,
            offset: self.offsets[i],
            desc: self.descs[i],
        }
    }

    fn run(&self, be: &CpuBackend, op: &Op) {
        let n = self.descs.len();
        let inputs: Vec<_> = (0..n - 1).map(|i| self.tensor(i)).collect();
        be.run_op(op, &inputs, self.tensor(n - 1)).unwrap();
    }

    fn bytes(&self) -> u64 {
        self.descs.iter().map(|d| d.bytes() as u64).sum()
    }
}

fn f(dims: &[usize]) -> TensorDesc {
    TensorDesc::f32(dims)
}

fn i(dims: &[usize]) -> TensorDesc {
    TensorDesc::new(DType::I32, dims)
}

fn kernels(c: &mut Criterion) {
    let be = CpuBackend::new();
    let (rows, h, ffn, vocab) = (1024, 512, 1376, 4096);
    let mut group = c.benchmark_group(format!("kernels {}", r1_core::Backend::name(&be)));
    let byte_cases: Vec<(&str, Op, Vec<TensorDesc>)> = vec![
        (
            "softmax 1024x4096",
            Op::Softmax,
            vec![f(&[rows, vocab]), f(&[rows, vocab])],
        ),
        (
            "log_softmax 1024x4096",
            Op::LogSoftmax,
            vec![f(&[rows, vocab]), f(&[rows, vocab])],
        ),
        (
            "token_log_probs 1024x4096",
            Op::TokenLogProbs,
            vec![f(&[rows, vocab]), i(&[rows]), f(&[rows])],
        ),
        (
            "cross_entropy 1024x4096",
            Op::CrossEntropy,
            vec![f(&[rows, vocab]), i(&[rows]), f(&[rows]), f(&[])],
        ),
        (
            "cross_entropy_backward 1024x4096",
            Op::CrossEntropyBackward,
            vec![f(&[rows, vocab]), i(&[rows]), f(&[rows]), f(&[]), f(&[rows, vocab])],
        ),
        (
            "rms_norm 1024x512",
            Op::RmsNorm { eps: 1e-6 },
            vec![f(&[rows, h]), f(&[h]), f(&[rows, h])],
        ),
        (
            "rms_norm_backward 1024x512",
            Op::RmsNormBackward { eps: 1e-6 },
            vec![f(&[rows, h]), f(&[h]), f(&[rows, h]), f(&[rows * h + h])],
        ),
        (
            "rope 8x128x(8x64)",
            Op::Rope(RopeSpec {
                n_heads: 8,
                head_dim: 64,
                theta: 1e6,
                pos_offset: 0,
                inverse: false,
                interleaved: false,
                yarn: None,
            }),
            vec![f(&[8, 128, h]), f(&[8, 128, h])],
        ),
        (
            "swiglu 1024x1376",
            Op::SwiGlu,
            vec![f(&[rows, ffn]), f(&[rows, ffn]), f(&[rows, ffn])],
        ),
        (
            "swiglu_backward 1024x1376",
            Op::SwiGluBackward,
            vec![f(&[rows, ffn]), f(&[rows, ffn]), f(&[rows, ffn]), f(&[2 * rows * ffn])],
        ),
        (
            "add residual 1024x512",
            Op::Add,
            vec![f(&[rows, h]), f(&[rows, h]), f(&[rows, h])],
        ),
        (
            "reduce_to_shape 1024x512",
            Op::ReduceToShape,
            vec![f(&[rows, h]), f(&[h])],
        ),
        (
            "embedding 1024 of 4096x512",
            Op::Embedding,
            vec![f(&[vocab, h]), i(&[rows]), f(&[rows, h])],
        ),
    ];
    for (name, op, descs) in byte_cases {
        let case = Case::new(&be, descs, vocab);
        group.throughput(Throughput::Bytes(case.bytes()));
        group.bench_function(name, |b| b.iter(|| case.run(&be, &op)));
    }

    // Attention of the h512 model: 8 sequences × 128, 8 heads of 64, 2 kv heads.
    let spec = AttentionSpec {
        n_heads: 8,
        n_kv_heads: 2,
        head_dim: 64,
        q_offset: 0,
        kv_len: 128,
    };
    let (q, kv) = (f(&[8, 128, 512]), f(&[8, 128, 128]));
    // Causal: about half of the 2·T·T·d multiply-adds of QKᵀ and PV per head.
    let fwd_flops = 8 * 8 * 2 * (2 * 128 * 128 * 64) as u64 / 2;
    let case = Case::new(&be, vec![q, kv, kv, q], vocab);
    group.throughput(Throughput::Elements(fwd_flops));
    group.bench_function("attention 8x128 h8 kv2 d64 (GFLOP/s)", |b| {
        b.iter(|| case.run(&be, &Op::Attention(spec)))
    });
    let case = Case::new(&be, vec![q, kv, kv, q, f(&[8 * 128 * 512 + 2 * 8 * 128 * 128])], vocab);
    group.throughput(Throughput::Elements(fwd_flops * 5 / 2));
    group.bench_function("attention_backward 8x128 h8 kv2 d64 (GFLOP/s)", |b| {
        b.iter(|| case.run(&be, &Op::AttentionBackward(spec)))
    });
    // Decode: one row per sequence against a 1024-row cache.
    let dspec = AttentionSpec {
        n_heads: 8,
        n_kv_heads: 2,
        head_dim: 64,
        q_offset: 1023,
        kv_len: 1024,
    };
    let (dq, dkv) = (f(&[8, 1, 512]), f(&[8, 1024, 128]));
    let case = Case::new(&be, vec![dq, dkv, dkv, dq], vocab);
    group.throughput(Throughput::Bytes(case.bytes()));
    group.bench_function("attention decode 8x1 over 1024 cached", |b| {
        b.iter(|| case.run(&be, &Op::Attention(dspec)))
    });
    // Decode as the server batches it: 32 streams of the small preset (4 heads, 2 kv
    // heads) a couple of hundred tokens in.
    let sspec = AttentionSpec {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 64,
        q_offset: 191,
        kv_len: 192,
    };
    let (sq, skv) = (f(&[32, 1, 256]), f(&[32, 192, 128]));
    let case = Case::new(&be, vec![sq, skv, skv, sq], vocab);
    group.throughput(Throughput::Bytes(case.bytes()));
    group.bench_function("attention decode 32x1 over 192 cached h4 kv2", |b| {
        b.iter(|| case.run(&be, &Op::Attention(sspec)))
    });

    // AdamW over 4M parameters: reads p, g, m, v and writes p, m, v. Gradients of mixed
    // signs and sizes, so the 8-bit codes below are not all zero.
    let n = 4 << 20;
    let buf = be.alloc_f32(4 * n).unwrap();
    let grads: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 1e-3).collect();
    be.upload_f32(&buf, n, &grads).unwrap();
    let t = |k: usize| TensorRef {
        buffer: &buf,
        offset: k * n * 4,
        desc: f(&[n]),
    };
    let step = AdamWStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        step: 10,
        grad_scale: 1.0,
    };
    group.throughput(Throughput::Bytes(7 * 4 * n as u64));
    group.bench_function("adamw 4M", |b| {
        b.iter(|| be.adamw(t(0), t(1), t(2), t(3), &step).unwrap())
    });
    // The same step with 8-bit moments: reads p, g and both states, writes p and them.
    let state = r1_core::optim8::state_bytes(n);
    let states = be.alloc(2 * state).unwrap();
    let q = |code, at| TensorRef {
        buffer: &states,
        offset: at,
        desc: r1_core::optim8::state_desc(code, n),
    };
    let (m8, r8) = (
        q(r1_core::optim8::Code::Signed, 0),
        q(r1_core::optim8::Code::Unsigned, state),
    );
    group.throughput(Throughput::Bytes((5 * 4 * n + 4 * state) as u64));
    group.bench_function("adamw_8bit 4M", |b| {
        b.iter(|| be.adamw_8bit(t(0), t(1), m8, r8, &step).unwrap())
    });
    group.throughput(Throughput::Bytes(3 * 4 * n as u64));
    group.bench_function("axpby 4M", |b| b.iter(|| be.axpby(t(0), 0.5, t(1), 0.9).unwrap()));
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
