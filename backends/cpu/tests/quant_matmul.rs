//! `MatMul` with a stored weight that is not f32 (`a · wᵀ`, `w [N, K]` Q8_0, Q4_0, Q5_0,
//! Q4_K, Q6_K, f16 or bf16): at every SIMD level, every output element equals core's scalar
//! `quant::vec_dot` of the weight row with the activation row quantized by core, bit for
//! bit; the result is close to the f32 product with the dequantized weight (the
//! activations' rounding to 8 bits is the only difference, bounded per element); the
//! thread count changes nothing; and planning accepts exactly these products.

mod common;

use common::{Rng, T, assert_close, backends, f, run};
use r1_backend_cpu::{CpuBackend, SimdLevel};
use r1_core::quant::{self, GgmlType, float};
use r1_core::{Backend, DType, Graph, Op, Plan, TensorDesc};

const OP: Op = Op::MatMul {
    trans_a: false,
    trans_b: true,
};

/// A weight `[n, k]` of `ty` quantized from uniform values in `[-1, 1)`.
fn weight(rng: &mut Rng, ty: GgmlType, n: usize, k: usize) -> Vec<u8> {
    quant::quantize(ty, &rng.vec(n * k, 1.0)).unwrap()
}

fn raw(ty: GgmlType, bytes: Vec<u8>, n: usize, k: usize) -> T {
    T::Raw(bytes, ty.dtype(), vec![n, k])
}

/// Core's reference for every output element: `quant::vec_dot` of weight row `j` with
/// activation row `r` quantized to the weight's `vec_dot_type`.
fn reference(ty: GgmlType, w: &[u8], a: &[f32], rows: usize, n: usize, k: usize) -> Vec<f32> {
    let act = ty.vec_dot_type().unwrap();
    let wrow = ty.row_bytes(k as u64).unwrap();
    let qa: Vec<Vec<u8>> = a.chunks_exact(k).map(|r| quant::quantize(act, r).unwrap()).collect();
    let mut out = vec![0.0; rows * n];
    for r in 0..rows {
        for j in 0..n {
            out[r * n + j] = quant::vec_dot(ty, &w[j * wrow..(j + 1) * wrow], &qa[r], k).unwrap();
        }
    }
    out
}

/// Asserts bit equality, naming the first differing element.
fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{what}: element {i} is {g}, core's vec_dot gives {w}"
        );
    }
}

/// Checks `a [lead.., m, k] · w [n, k]ᵀ` at every level against `quant::vec_dot`, bit for
/// bit, for a weight given as bytes.
fn check_bits(ty: GgmlType, w: &[u8], lead: &[usize], m: usize, n: usize, k: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let rows = lead.iter().product::<usize>() * m;
    let a = rng.vec(rows * k, 2.0);
    let want = reference(ty, w, &a, rows, n, k);
    let mut a_dims = lead.to_vec();
    a_dims.extend([m, k]);
    let mut o_dims = lead.to_vec();
    o_dims.extend([m, n]);
    for be in backends()
        .into_iter()
        .chain([CpuBackend::with_config(1, SimdLevel::Scalar).unwrap()])
    {
        let got = run(&be, &OP, &[f(a.clone(), &a_dims), raw(ty, w.to_vec(), n, k)], &o_dims).unwrap();
        let what = format!("{} {a_dims:?} x [{n}, {k}]ᵀ on {}", ty.name(), be.name());
        assert_bits(&what, &got, &want);
    }
}

#[test]
fn q8_0_q4_0_and_q5_0_equal_core_vec_dot_bit_for_bit_at_every_level() {
    // One block, a few, exactly the eight-block step of the SIMD sums, and past it with
    // tails; N not a multiple of any vector width, then multiples of 16 (with AVX-512
    // VNNI, weights packed sixteen rows at a time); M = 1, 3, 17 (17: four rows at a time
    // in the prefill paths, then one).
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q5_0] {
        for (i, &blocks) in [1usize, 3, 8, 9, 17, 28].iter().enumerate() {
            let k = 32 * blocks;
            for (mi, &m) in [1usize, 3, 17].iter().enumerate() {
                for (ni, n) in [[1, 7, 37][mi], [16, 48, 32][mi]].into_iter().enumerate() {
                    let seed = (100 * i + 10 * mi + 5 * ni) as u64;
                    let mut rng = Rng::new(seed + 1);
                    let w = weight(&mut rng, ty, n, k);
                    check_bits(ty, &w, &[], m, n, k, seed);
                }
            }
        }
        // Leading dims are rows too.
        let mut rng = Rng::new(7);
        let w = weight(&mut rng, ty, 19, 96);
        check_bits(ty, &w, &[2, 3], 5, 19, 96, 8);
    }
}

#[test]
fn k_quants_equal_core_vec_dot_bit_for_bit_at_every_level() {
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
        // N = 16, 32: whole groups of sixteen rows (packed with AVX-512 VNNI for Q4_K, and
        // for Q6_K from 8 activation rows: M = 17, two at a time and one).
        for (i, (k, m, n)) in [
            (256, 1, 1),
            (512, 3, 7),
            (768, 17, 5),
            (256, 1, 16),
            (768, 5, 32),
            (512, 17, 16),
        ]
        .into_iter()
        .enumerate()
        {
            let mut rng = Rng::new(50 + i as u64);
            let w = weight(&mut rng, ty, n, k);
            check_bits(ty, &w, &[], m, n, k, 60 + i as u64);
        }
    }
}

#[test]
fn weights_with_any_quant_byte_equal_core_vec_dot() {
    // Raw blocks: every quant byte may occur, Q8_0's −128 included (the AVX2 sign trick
    // and the VNNI offset must stay exact there); scales are modest f16 values.
    let (n, k) = (13, 32 * 11);
    let mut rng = Rng::new(9);
    let mut w = Vec::new();
    for _ in 0..n * k / 32 {
        w.extend(float::f32_to_f16(rng.uniform() * 0.01).to_le_bytes());
        w.extend((0..32).map(|_| rng.below(256) as u8));
    }
    for (i, q) in w.iter_mut().enumerate() {
        if i % 34 == 5 {
            *q = 0x80;
        }
    }
    for m in [3, 6] {
        check_bits(GgmlType::Q8_0, &w, &[], m, n, k, 10);
    }
    let mut w4 = Vec::new();
    for _ in 0..n * k / 32 {
        w4.extend(float::f32_to_f16(rng.uniform() * 0.01).to_le_bytes());
        w4.extend((0..16).map(|_| rng.below(256) as u8));
    }
    for m in [3, 6] {
        check_bits(GgmlType::Q4_0, &w4, &[], m, n, k, 11);
    }
    // Q5_0: any high bits and nibbles, every fourth block at level 31 throughout.
    let mut w5 = Vec::new();
    for b in 0..n * k / 32 {
        w5.extend(float::f32_to_f16(rng.uniform() * 0.01).to_le_bytes());
        w5.extend((0..20).map(|_| {
            if b.is_multiple_of(4) {
                0xFF
            } else {
                rng.below(256) as u8
            }
        }));
    }
    for m in [3, 6] {
        check_bits(GgmlType::Q5_0, &w5, &[], m, n, k, 14);
    }
    // K-quants from raw bytes: every packed scale, min and level pattern.
    let (n, k) = (5, 512);
    let mut q4k = Vec::new();
    let mut q6k = Vec::new();
    for _ in 0..n * k / 256 {
        for _ in 0..2 {
            q4k.extend(float::f32_to_f16(rng.uniform() * 0.01).to_le_bytes());
        }
        q4k.extend((0..140).map(|_| rng.below(256) as u8));
        q6k.extend((0..208).map(|_| rng.below(256) as u8));
        q6k.extend(float::f32_to_f16(rng.uniform() * 0.01).to_le_bytes());
    }
    check_bits(GgmlType::Q4_K, &q4k, &[], 3, n, k, 12);
    check_bits(GgmlType::Q6_K, &q6k, &[], 3, n, k, 13);
}

/// `Σ_j |w_j| · amax_j / 254 · 1.01`: how far rounding the activations to 8 bits can move a
/// dot product (each activation moves by at most half its block's step `amax / 127`, the
/// step's f16/f32 rounding covered by the 1%), plus the f32 summation's `1e-5 · Σ|w_j a_j|`.
fn rounding_bound(w: &[f32], a: &[f32], block: usize) -> f64 {
    let mut bound = 0.0f64;
    let mut mass = 0.0f64;
    for (wb, ab) in w.chunks(block).zip(a.chunks(block)) {
        let amax = ab.iter().fold(0.0f32, |m, x| m.max(x.abs())) as f64;
        for (x, y) in wb.iter().zip(ab) {
            bound += (*x as f64).abs() * amax / 254.0 * 1.01;
            mass += (*x as f64 * *y as f64).abs();
        }
    }
    bound + 1e-5 * mass + 1e-6
}

#[test]
fn results_are_the_f32_product_with_the_dequantized_weight_up_to_activation_rounding() {
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        let (m, n, k) = (3, 21, 512);
        let mut rng = Rng::new(70);
        let w = weight(&mut rng, ty, n, k);
        let wf = quant::dequantize(ty, &w, n * k).unwrap();
        let a = rng.vec(m * k, 3.0);
        let act_block = ty.vec_dot_type().unwrap().block_size();
        for be in backends() {
            let got = run(&be, &OP, &[f(a.clone(), &[m, k]), raw(ty, w.clone(), n, k)], &[m, n]).unwrap();
            for r in 0..m {
                for j in 0..n {
                    let (ar, wr) = (&a[r * k..(r + 1) * k], &wf[j * k..(j + 1) * k]);
                    let want: f64 = ar.iter().zip(wr).map(|(x, y)| *x as f64 * *y as f64).sum();
                    let tol = rounding_bound(wr, ar, act_block);
                    let g = got[r * n + j] as f64;
                    assert!(
                        (g - want).abs() <= tol,
                        "{} on {}: [{r}, {j}] is {g}, the dequantized product {want} (bound {tol})",
                        ty.name(),
                        be.name()
                    );
                }
            }
        }
    }
}

#[test]
fn f16_and_bf16_weights_match_the_f32_product() {
    for ty in [GgmlType::F16, GgmlType::BF16] {
        for (m, n, k) in [(1, 1, 1), (3, 17, 37), (17, 9, 300)] {
            let mut rng = Rng::new(80 + k as u64);
            let w = quant::quantize(ty, &rng.vec(n * k, 1.0)).unwrap();
            let wf = quant::dequantize(ty, &w, n * k).unwrap();
            let mut a = rng.vec(m * k, 1.0);
            if ty == GgmlType::BF16 {
                // A bf16 weight takes bf16 activations (llama.cpp's `vec_dot_type`): the
                // products are exact, only the order of the f32 sums differs.
                a = a.iter().map(|&x| float::bf16_to_f32(float::f32_to_bf16(x))).collect();
            }
            let want: Vec<f64> = (0..m * n)
                .map(|i| {
                    let (r, j) = (i / n, i % n);
                    (0..k).map(|l| a[r * k + l] as f64 * wf[j * k + l] as f64).sum()
                })
                .collect();
            for be in backends() {
                let got = run(&be, &OP, &[f(a.clone(), &[m, k]), raw(ty, w.clone(), n, k)], &[m, n]).unwrap();
                let what = format!("{} [{m}, {k}] x [{n}, {k}]ᵀ on {}", ty.name(), be.name());
                assert_close(&what, &got, &want, 1e-5 * (k as f64).sqrt(), 1e-5);
            }
        }
    }
}

#[test]
fn the_thread_count_and_tiling_change_no_bit() {
    // Wide enough to be cut into tiles over threads (decode: one row uses every core);
    // 1024 rows are whole packed groups of sixteen where the CPU has AVX-512 VNNI.
    for (n, k, ty) in [1000, 1024].into_iter().flat_map(|n| {
        [
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
            GgmlType::BF16,
        ]
        .map(|ty| (n, 896, ty))
    }) {
        let k = if matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K) {
            1024
        } else {
            k
        };
        let mut rng = Rng::new(90);
        let w = quant::quantize(ty, &rng.vec(n * k, 1.0)).unwrap();
        // m = 17: the prefill paths (four rows at a time; f16/bf16 through the GEMM).
        for m in [1, 4, 17] {
            let a = rng.vec(m * k, 1.0);
            let inputs = [f(a, &[m, k]), raw(ty, w.clone(), n, k)];
            let level = SimdLevel::detect();
            let one = run(&CpuBackend::with_config(1, level).unwrap(), &OP, &inputs, &[m, n]).unwrap();
            for threads in [2, 3, 5] {
                let many = run(&CpuBackend::with_config(threads, level).unwrap(), &OP, &inputs, &[m, n]).unwrap();
                assert_bits(&format!("{} m={m} on {threads} threads", ty.name()), &many, &one);
            }
        }
    }
}

/// `dy [lead.., m, n] · w [n, k]` against the f64 product with the dequantized weight.
fn check_input_gradient(ty: GgmlType, lead: &[usize], m: usize, n: usize, k: usize, threads: &[usize]) {
    let mut rng = Rng::new(500 + n as u64 + k as u64);
    let w = quant::quantize(ty, &rng.vec(n * k, 1.0)).unwrap();
    let wf = quant::dequantize(ty, &w, n * k).unwrap();
    let rows = lead.iter().product::<usize>() * m;
    let dy = rng.vec(rows * n, 1.0);
    let want: Vec<f64> = (0..rows * k)
        .map(|i| {
            let (r, c) = (i / k, i % k);
            (0..n).map(|j| dy[r * n + j] as f64 * wf[j * k + c] as f64).sum()
        })
        .collect();
    let mut a_dims = lead.to_vec();
    a_dims.extend([m, n]);
    let mut out_dims = lead.to_vec();
    out_dims.extend([m, k]);
    let op = Op::MatMul {
        trans_a: false,
        trans_b: false,
    };
    let inputs = [f(dy, &a_dims), raw(ty, w, n, k)];
    let mut first: Option<Vec<f32>> = None;
    for &t in threads {
        let be = CpuBackend::with_config(t, SimdLevel::detect()).unwrap();
        let got = run(&be, &op, &inputs, &out_dims).unwrap();
        let what = format!("{} {a_dims:?} x [{n}, {k}] on {t} threads", ty.name());
        assert_close(&what, &got, &want, 1e-5 * (n as f64).sqrt(), 1e-5);
        match &first {
            None => first = Some(got),
            Some(one) => assert_bits(&format!("{what} vs 1 thread"), &got, one),
        }
    }
}

#[test]
fn input_gradients_through_stored_weights_are_the_product_with_the_dequantized_weight() {
    // Tails: n not a multiple of the 256-row chunk, one row, batched leading dims.
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        check_input_gradient(ty, &[], 1, 1, 32, &[1]);
        check_input_gradient(ty, &[2], 3, 300, 64, &[1, 2, 3]);
        check_input_gradient(ty, &[], 17, 513, 96, &[1, 2]);
    }
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
        check_input_gradient(ty, &[2], 5, 260, 256, &[1, 2]);
    }
}

#[test]
fn planning_accepts_exactly_the_2d_weight_products() {
    let be = CpuBackend::new();
    let plan_with = |dtype: DType, trans_b: bool| {
        let mut g = Graph::new();
        let x = g.input("x", TensorDesc::f32(&[2, 3, 64])).unwrap();
        let dims = if trans_b { [8, 64] } else { [64, 8] };
        let w = g.param_typed("w", TensorDesc::new(dtype, &dims), false).unwrap();
        let y = g.matmul(x, w, false, trans_b).unwrap();
        Plan::for_backend(&g, &[y], &be).map(|_| ())
    };
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        assert!(plan_with(ty.dtype(), true).is_ok(), "{}", ty.name());
    }
    // K-quants need K a multiple of 256: a [.., 256] input.
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
        let mut g = Graph::new();
        let x = g.input("x", TensorDesc::f32(&[1, 256])).unwrap();
        let w = g
            .param_typed("w", TensorDesc::new(ty.dtype(), &[4, 256]), false)
            .unwrap();
        let y = g.matmul(x, w, false, true).unwrap();
        assert!(Plan::for_backend(&g, &[y], &be).is_ok(), "{}", ty.name());
    }
    // `x · w` (the input gradient through a frozen weight) plans too.
    assert!(plan_with(DType::F16, false).is_ok() && plan_with(DType::BF16, false).is_ok());
    // Q8_K is an activation format, never a weight; a K that is not whole blocks and a
    // 3-D weight are refused too.
    let x = TensorDesc::f32(&[2, 256]);
    let out = TensorDesc::f32(&[2, 8]);
    let q = |ty: GgmlType, dims: &[usize]| TensorDesc::new(ty.dtype(), dims);
    assert!(be.supports(&OP, &[x, q(GgmlType::Q4_K, &[8, 256])], &out));
    assert!(!be.supports(&OP, &[x, q(GgmlType::Q8_K, &[8, 256])], &out));
    assert!(!be.supports(&OP, &[TensorDesc::f32(&[2, 48]), q(GgmlType::Q8_0, &[8, 48])], &out));
    assert!(!be.supports(&OP, &[x, q(GgmlType::Q8_0, &[1, 8, 256])], &out));
}

#[test]
fn bad_quantized_operands_are_typed_errors() {
    let be = CpuBackend::with_config(1, SimdLevel::Scalar).unwrap();
    let mut rng = Rng::new(3);
    let w = weight(&mut rng, GgmlType::Q8_0, 4, 64);
    let a = f(rng.vec(2 * 64, 1.0), &[2, 64]);
    // Untransposed use of a quantized weight.
    let op = Op::MatMul {
        trans_a: false,
        trans_b: false,
    };
    let r = run(&be, &op, &[a.clone(), raw(GgmlType::Q8_0, w.clone(), 4, 64)], &[2, 4]);
    assert!(r.unwrap_err().to_string().contains("q8_0"));
    // K disagreeing with the activations.
    let r = run(
        &be,
        &OP,
        &[f(rng.vec(2 * 32, 1.0), &[2, 32]), raw(GgmlType::Q8_0, w.clone(), 4, 64)],
        &[2, 4],
    );
    assert!(r.is_err());
    // A quantized operand where an f32 one is needed.
    let r = run(&be, &Op::Silu, &[raw(GgmlType::Q8_0, w, 4, 64)], &[4, 64]);
    assert!(r.unwrap_err().to_string().contains("block-quantized"));
}

/// An embedding lookup on a stored table (a quantized model's token embedding, which a
/// tied head also multiplies by): every picked row is core's `quant::dequantize` of that
/// row, bit for bit, at every level and thread count; an id past the table is an error.
#[test]
fn stored_embedding_tables_widen_the_picked_rows_exactly() {
    let mut rng = Rng::new(11);
    let (vocab, hidden) = (37, 256);
    let ids = vec![0, 36, 5, 5, 17, 2, 30];
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        let table = weight(&mut rng, ty, vocab, hidden);
        let rows = quant::dequantize(ty, &table, vocab * hidden).unwrap();
        let want: Vec<f32> = ids
            .iter()
            .flat_map(|&i| rows[i as usize * hidden..(i as usize + 1) * hidden].to_vec())
            .collect();
        let inputs = [
            raw(ty, table.clone(), vocab, hidden),
            T::I(ids.clone(), vec![ids.len()]),
        ];
        for be in backends()
            .into_iter()
            .chain([CpuBackend::with_config(1, SimdLevel::Scalar).unwrap()])
        {
            let got = run(&be, &Op::Embedding, &inputs, &[ids.len(), hidden]).unwrap();
            assert_bits(&format!("{} embedding on {}", ty.name(), be.name()), &got, &want);
            let bad = [raw(ty, table.clone(), vocab, hidden), T::I(vec![1, 37], vec![2])];
            assert!(run(&be, &Op::Embedding, &bad, &[2, hidden]).is_err(), "{}", ty.name());
        }
        let table_desc = TensorDesc::new(ty.dtype(), &[vocab, hidden]);
        let out = TensorDesc::f32(&[ids.len(), hidden]);
        assert!(CpuBackend::new().supports(&Op::Embedding, &[table_desc, TensorDesc::i32(&[ids.len()])], &out));
    }
    // Q8_K is an activation format, never a table.
    let q8k = TensorDesc::new(GgmlType::Q8_K.dtype(), &[vocab, hidden]);
    let out = TensorDesc::f32(&[1, hidden]);
    assert!(!CpuBackend::new().supports(&Op::Embedding, &[q8k, TensorDesc::i32(&[1])], &out));
}
