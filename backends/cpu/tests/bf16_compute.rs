//! `CpuBackend::with_bf16_compute`: f32 `MatMul`s past the decode sizes take both operands
//! rounded to bf16 (nearest even) and sum the exact products in f32 — checked against the
//! f64 product of the rounded operands for every transpose, shared and batched operands,
//! odd depths, edge tiles and more than one depth block; the thread count changes no bit;
//! products of a decode step's rows stay the f32 backend's, bit for bit. Skipped, saying
//! so, on a CPU without AVX-512 BF16.

mod common;

use common::{MatmulCase, Rng, assert_close, f, run};
use r1_backend_cpu::{CpuBackend, SimdLevel};
use r1_core::quant::float::{bf16_to_f32, f32_to_bf16};
use r1_core::{Backend, Op};

fn bf16_backend(threads: usize) -> Option<CpuBackend> {
    let Ok(be) = CpuBackend::with_config(threads, SimdLevel::Avx512) else {
        eprintln!("skipped: this CPU has no AVX-512");
        return None;
    };
    match be.with_bf16_compute() {
        Ok(be) => Some(be),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

fn rounded(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| bf16_to_f32(f32_to_bf16(v))).collect()
}

#[allow(clippy::too_many_arguments)]
fn check(lead: &[usize], m: usize, k: usize, n: usize, ta: bool, tb: bool, batched: bool, seed: u64) {
    let Some(one) = bf16_backend(1) else { return };
    let case = MatmulCase::new(lead, m, k, n, ta, tb, batched, seed);
    let want = case.reference(&rounded(&case.a), &rounded(&case.b));
    let (op, inputs, o_dims, what) = (case.op(), case.inputs(), &case.o_dims, case.name());
    let got = run(&one, &op, &inputs, o_dims).unwrap();
    assert_close(&what, &got, &want, 1e-5 * (k as f64).sqrt(), 1e-5);
    for threads in [2, 3] {
        let be = bf16_backend(threads).unwrap();
        let many = run(&be, &op, &inputs, o_dims).unwrap();
        for (i, (x, y)) in many.iter().zip(&got).enumerate() {
            assert_eq!(x.to_bits(), y.to_bits(), "{what} on {threads} threads: element {i}");
        }
    }
}

#[test]
fn training_sized_products_are_the_rounded_operands_exact_product() {
    for (i, &(m, k, n)) in [(65, 1, 33), (100, 37, 45), (130, 513, 70), (77, 1100, 40)]
        .iter()
        .enumerate()
    {
        for ta in [false, true] {
            for tb in [false, true] {
                check(&[], m, k, n, ta, tb, false, 10 + i as u64);
            }
        }
    }
    // Shared weight over a batch ([2, 40, K] is 80 rows), and batched operands.
    check(&[2], 40, 96, 50, false, true, false, 20);
    check(&[3], 70, 64, 20, false, false, true, 21);
    check(&[2], 80, 33, 17, true, true, true, 22);
}

#[test]
fn decode_sized_products_stay_f32() {
    let Some(bf16) = bf16_backend(2) else { return };
    let f32_be = CpuBackend::with_config(2, SimdLevel::Avx512).unwrap();
    let mut rng = Rng::new(30);
    let (k, n) = (200, 300);
    let w = rng.vec(n * k, 1.0);
    let op = Op::MatMul {
        trans_a: false,
        trans_b: true,
    };
    for m in [1, 8, 64] {
        let inputs = [f(rng.vec(m * k, 1.0), &[m, k]), f(w.clone(), &[n, k])];
        let x = run(&bf16, &op, &inputs, &[m, n]).unwrap();
        let y = run(&f32_be, &op, &inputs, &[m, n]).unwrap();
        assert!(x.iter().zip(&y).all(|(x, y)| x.to_bits() == y.to_bits()), "{m} rows");
    }
    assert!(bf16.name().contains("bf16 compute"), "{}", bf16.name());
}
