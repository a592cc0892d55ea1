//! Bad input gives typed errors, never a panic or a wrong answer: token ids outside the
//! vocabulary (each id-reading op), ranges outside a buffer, misaligned or overlapping
//! operands, sizes that do not fit the op, unsupported dtypes, and a buffer used while it
//! is borrowed.

mod common;

use common::{backends, f, ids, run};
use r1_backend_cpu::CpuBackend;
use r1_core::backend::{Backend, BackendError, TensorRef};
use r1_core::{DType, Op, TensorDesc};

fn invalid(r: Result<Vec<f32>, BackendError>, id: &str, vocab: &str) {
    match r {
        Err(BackendError::InvalidInput { detail, .. }) => {
            assert!(
                detail.contains(id) && detail.contains(vocab),
                "message names the id and vocabulary: {detail}"
            );
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[test]
fn ids_outside_the_vocabulary_are_invalid_input_naming_the_id_and_size() {
    let be = CpuBackend::new();
    let (v, h) = (5, 3);
    let table = || f(vec![0.5; v * h], &[v, h]);
    let logits = || f(vec![0.1; 2 * v], &[2, v]);
    invalid(
        run(&be, &Op::Embedding, &[table(), ids(vec![1, 5], &[2])], &[2, h]),
        "id 5",
        "size 5",
    );
    invalid(
        run(&be, &Op::Embedding, &[table(), ids(vec![-3, 0], &[2])], &[2, h]),
        "id -3",
        "size 5",
    );
    invalid(
        run(
            &be,
            &Op::EmbeddingBackward,
            &[ids(vec![0, 70000], &[2]), f(vec![1.0; 2 * h], &[2, h])],
            &[v, h],
        ),
        "id 70000",
        "size 5",
    );
    invalid(
        run(&be, &Op::GatherLastDim, &[logits(), ids(vec![0, 9], &[2])], &[2]),
        "id 9",
        "size 5",
    );
    invalid(
        run(
            &be,
            &Op::ScatterLastDim,
            &[ids(vec![-1, 0], &[2]), f(vec![1.0; 2], &[2])],
            &[2, v],
        ),
        "id -1",
        "size 5",
    );
    invalid(
        run(&be, &Op::TokenLogProbs, &[logits(), ids(vec![5, 0], &[2])], &[2]),
        "id 5",
        "size 5",
    );
    invalid(
        run(&be, &Op::TokenLogProbs, &[logits(), ids(vec![0, -1], &[2])], &[2]),
        "id -1",
        "size 5",
    );
    invalid(
        run(
            &be,
            &Op::TokenLogProbsBackward,
            &[logits(), ids(vec![i32::MAX, 0], &[2]), f(vec![1.0; 2], &[2])],
            &[2, v],
        ),
        "2147483647",
        "size 5",
    );
    let w = || f(vec![1.0; 2], &[2]);
    invalid(
        run(&be, &Op::CrossEntropy, &[logits(), ids(vec![0, 5], &[2]), w()], &[]),
        "id 5",
        "size 5",
    );
    invalid(
        run(
            &be,
            &Op::CrossEntropyBackward,
            &[logits(), ids(vec![6, 0], &[2]), w(), f(vec![1.0], &[])],
            &[2, v],
        ),
        "id 6",
        "size 5",
    );
    // Negative targets are cross-entropy's ignore mask, not an error.
    assert!(run(&be, &Op::CrossEntropy, &[logits(), ids(vec![-100, 0], &[2]), w()], &[]).is_ok());
}

fn refs<'a>(
    buf: &'a r1_backend_cpu::CpuBuffer,
    offset: usize,
    dims: &[usize],
) -> TensorRef<'a, r1_backend_cpu::CpuBuffer> {
    TensorRef {
        buffer: buf,
        offset,
        desc: TensorDesc::f32(dims),
    }
}

#[test]
fn ranges_outside_a_buffer_are_out_of_bounds() {
    let be = CpuBackend::new();
    let buf = be.alloc(64).unwrap();
    let r = be.run_op(&Op::Scale { factor: 2.0 }, &[refs(&buf, 0, &[4])], refs(&buf, 56, &[4]));
    assert!(matches!(r, Err(BackendError::OutOfBounds { .. })), "{r:?}");
    let r = be.run_op(
        &Op::Scale { factor: 2.0 },
        &[refs(&buf, usize::MAX - 3, &[4])],
        refs(&buf, 16, &[4]),
    );
    assert!(matches!(r, Err(BackendError::OutOfBounds { .. })), "{r:?}");
    assert!(matches!(
        be.upload(&buf, 60, &[0u8; 8]),
        Err(BackendError::OutOfBounds { .. })
    ));
    assert!(matches!(
        be.download(&buf, usize::MAX, &mut [0u8; 1]),
        Err(BackendError::OutOfBounds { .. })
    ));
}

#[test]
fn misaligned_or_overlapping_operands_are_refused() {
    let be = CpuBackend::new();
    let buf = be.alloc(256).unwrap();
    let r = be.run_op(&Op::Scale { factor: 2.0 }, &[refs(&buf, 2, &[4])], refs(&buf, 64, &[4]));
    assert!(matches!(r, Err(BackendError::OutOfBounds { .. })), "misaligned: {r:?}");
    let r = be.run_op(&Op::Scale { factor: 2.0 }, &[refs(&buf, 0, &[8])], refs(&buf, 16, &[8]));
    assert!(matches!(r, Err(BackendError::OutOfBounds { .. })), "overlap: {r:?}");
    // Same buffer, disjoint ranges: fine.
    assert!(
        be.run_op(&Op::Scale { factor: 2.0 }, &[refs(&buf, 0, &[8])], refs(&buf, 32, &[8]))
            .is_ok()
    );
}

#[test]
fn sizes_that_do_not_fit_the_op_are_errors_not_panics() {
    for be in backends() {
        let mm = Op::MatMul {
            trans_a: false,
            trans_b: false,
        };
        assert!(run(&be, &mm, &[f(vec![1.0; 6], &[2, 3]), f(vec![1.0; 8], &[4, 2])], &[2, 2]).is_err());
        assert!(run(&be, &mm, &[f(vec![1.0; 6], &[2, 3]), f(vec![1.0; 6], &[3, 2])], &[3, 2]).is_err());
        assert!(
            run(
                &be,
                &Op::Add,
                &[f(vec![1.0; 6], &[2, 3]), f(vec![1.0; 2], &[2])],
                &[2, 3]
            )
            .is_err()
        );
        assert!(
            run(
                &be,
                &Op::RmsNorm { eps: 1e-6 },
                &[f(vec![1.0; 6], &[2, 3]), f(vec![1.0; 2], &[2])],
                &[2, 3]
            )
            .is_err()
        );
        let spec = r1_core::graph::AttentionSpec {
            n_heads: 3,
            n_kv_heads: 2,
            head_dim: 2,
            q_offset: 0,
            kv_len: 2,
        };
        let q = f(vec![0.0; 12], &[1, 2, 6]);
        let kv = f(vec![0.0; 8], &[1, 2, 4]);
        assert!(
            run(
                &be,
                &Op::Attention(spec),
                &[q.clone(), kv.clone(), kv.clone()],
                &[1, 2, 6]
            )
            .is_err()
        );
        let spec = r1_core::graph::AttentionSpec {
            n_heads: 3,
            n_kv_heads: 1,
            head_dim: 2,
            q_offset: 1,
            kv_len: 2,
        };
        let kv = f(vec![0.0; 4], &[1, 2, 2]);
        assert!(
            run(&be, &Op::Attention(spec), &[q, kv.clone(), kv], &[1, 2, 6]).is_err(),
            "q_offset + T > kv_len"
        );
        assert!(
            run(
                &be,
                &Op::KvWrite { pos: 2 },
                &[f(vec![0.0; 6], &[1, 3, 2]), f(vec![0.0; 4], &[1, 2, 2])],
                &[1, 3, 2]
            )
            .is_err()
        );
        assert!(run(&be, &Op::Softmax, &[f(vec![0.0; 6], &[2, 3])], &[3, 3]).is_err());
        assert!(run(&be, &Op::Silu, &[], &[3]).is_err(), "missing operand");
    }
}

#[test]
fn half_precision_operands_are_unsupported_for_compute() {
    let be = CpuBackend::new();
    let buf = be.alloc(64).unwrap();
    let x = TensorRef {
        buffer: &buf,
        offset: 0,
        desc: TensorDesc::new(DType::BF16, &[4]),
    };
    let r = be.run_op(&Op::Silu, &[x], refs(&buf, 32, &[4]));
    assert!(matches!(r, Err(BackendError::Unsupported { .. })), "{r:?}");
}

#[test]
fn a_buffer_borrowed_for_writing_cannot_be_used_by_an_op_meanwhile() {
    let be = CpuBackend::new();
    let buf = be.alloc(64).unwrap();
    let inner = buf
        .with_f32_mut(|_| be.run_op(&Op::Scale { factor: 2.0 }, &[refs(&buf, 0, &[4])], refs(&buf, 32, &[4])))
        .unwrap();
    assert!(matches!(inner, Err(BackendError::Device(_))), "{inner:?}");
    // Reading while another reader holds it is fine.
    let ok = buf.with_f32(|_| be.download_f32(&buf, 0, &mut [0.0; 4])).unwrap();
    assert!(ok.is_ok());
}

#[test]
fn buffers_can_be_shared_between_threads() {
    let be = std::sync::Arc::new(CpuBackend::new());
    let weights = std::sync::Arc::new(be.buffer_from_f32(&[1.0, 2.0, 3.0, 4.0]).unwrap());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (be, w) = (be.clone(), weights.clone());
            std::thread::spawn(move || {
                let out = be.alloc(16).unwrap();
                for _ in 0..200 {
                    // Concurrent readers of the shared weights never conflict.
                    be.run_op(
                        &Op::Scale { factor: t as f32 },
                        &[refs(&w, 0, &[4])],
                        refs(&out, 0, &[4]),
                    )
                    .unwrap();
                }
                let mut got = [0.0; 4];
                be.download_f32(&out, 0, &mut got).unwrap();
                got
            })
        })
        .collect();
    for (t, h) in handles.into_iter().enumerate() {
        let t = t as f32;
        assert_eq!(h.join().unwrap(), [t, 2.0 * t, 3.0 * t, 4.0 * t]);
    }
}
