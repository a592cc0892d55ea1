//! `MatMul` against the f64 reference: every transpose combination, shared and batched
//! right operands, the packing-free few-rows path, and products large enough to be split
//! over threads by rows or by columns; then gradients through core's autodiff (which
//! builds them from matmuls) against finite differences.

mod common;

use common::reference as refk;
use common::{MatmulCase, Rng, assert_close, backends, dot64, f, loss_and_grads, numeric_grad, run, to64};
use r1_core::{Graph, Op, TensorDesc};

/// Checks `op(a)·op(b)` with `a` of `lead ++ [m, k]` (or `[k, m]`) and `b` shared or
/// batched.
#[allow(clippy::too_many_arguments)]
fn check(lead: &[usize], m: usize, k: usize, n: usize, ta: bool, tb: bool, batched: bool, seed: u64) {
    let case = MatmulCase::new(lead, m, k, n, ta, tb, batched, seed);
    let want = case.reference(&case.a, &case.b);
    for be in backends() {
        let out = run(&be, &case.op(), &case.inputs(), &case.o_dims).unwrap();
        let what = format!("{} on {}", case.name(), be.simd_level());
        assert_close(&what, &out, &want, 1e-5 * (k as f64).sqrt(), 1e-5);
    }
}

#[test]
fn every_transpose_combination_matches_the_reference() {
    for (i, (ta, tb)) in [(false, false), (false, true), (true, false), (true, true)]
        .into_iter()
        .enumerate()
    {
        let s = 10 * i as u64;
        check(&[], 5, 7, 3, ta, tb, false, s);
        check(&[], 33, 17, 19, ta, tb, false, s + 1);
        check(&[2], 6, 5, 4, ta, tb, false, s + 2);
        check(&[2, 3], 5, 9, 7, ta, tb, true, s + 3);
        check(&[3], 4, 1, 6, ta, tb, true, s + 4);
    }
}

#[test]
fn products_with_few_rows_take_the_packing_free_path_correctly() {
    // Transposed b: blocked dot products up to 64 rows for a shared 2-D weight (and past
    // that while A is small: m = 65 here), 8 for
    // batched operands; plain b: row updates up to 4 rows. Odd k and n, and m = 9 and
    // m = 65 just past the paths.
    for m in (1..=9).chain([13, 32, 63, 64, 65]) {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            check(&[], m, 37, 53, ta, tb, false, 100 + m as u64);
            check(&[3], m, 20, 17, ta, tb, true, 200 + m as u64);
        }
    }
    // Wide products cut into column tiles (k = 300 → 108-column tiles) and over threads.
    check(&[], 33, 300, 1000, false, true, false, 400);
    // A weight of 2^18 values or more is prefetched tiles ahead (k = 1031: a partial
    // tail; n = 257: the last tiles have no columns ahead and the very last is partial).
    for m in [1, 5, 64] {
        check(&[], m, 1031, 257, false, true, false, 410 + m as u64);
    }
    // Past 64 rows, a shared weight's product still skips packing while A has at most
    // 2^18 values, with B outer (m = 65 and 254 at k = 1031, B prefetched; m = 255 packed);
    // a batched one is packed.
    for m in [65, 254, 255] {
        check(&[], m, 1031, 257, false, true, false, 420 + m as u64);
    }
    check(&[2], 65, 20, 17, false, true, true, 430);
    // A read in place only from 513 rows (k = 2049: a million values of A either way).
    for m in [512, 513] {
        check(&[], m, 2049, 40, false, true, false, 440 + m as u64);
    }
}

#[test]
fn products_with_a_large_a_skip_packing_it_correctly() {
    // Past 2^20 values of A (with contiguous rows) B is packed into panels and A read in
    // place: 4100 rows (a partial row block), n = 37 and 100 (partial panels), every
    // transpose (a transposed A goes to the packing GEMM), split over threads by rows
    // and by columns — the same bits on one thread as on two.
    for (i, (ta, tb)) in [(false, false), (false, true), (true, false), (true, true)]
        .into_iter()
        .enumerate()
    {
        check(&[], 4100, 260, 37, ta, tb, false, 500 + i as u64);
    }
    check(&[], 2050, 520, 100, false, true, false, 510);
    let case = MatmulCase::new(&[], 4100, 260, 100, false, true, false, 520);
    for level in r1_backend_cpu::SimdLevel::available() {
        let on = |threads| {
            let be = r1_backend_cpu::CpuBackend::with_config(threads, level).unwrap();
            run(&be, &case.op(), &case.inputs(), &case.o_dims).unwrap()
        };
        assert!(on(1) == on(2), "thread counts differ on {level}");
    }
}

#[test]
fn a_row_of_a_decode_product_does_not_depend_on_the_rows_beside_it() {
    // Continuous batching relies on it: a sequence decodes the same alone or in a batch,
    // at any place in it. k = 96: whole vectors only; 101 and 263: a partial tail too;
    // n = 130, 13, 61: a partial column tile; 1031 × 257: a weight large enough to be
    // prefetched; 1031 × 2057: large enough that each thread's piece streams (one row
    // alone then takes one column at a time, up to 8 rows two columns at a time).
    for (k, n) in [(96, 130), (101, 13), (263, 61), (1031, 257), (1031, 2057)] {
        every_row_alone_equals_that_row_in_a_batch(k, n);
    }
}

fn every_row_alone_equals_that_row_in_a_batch(k: usize, n: usize) {
    let mut rng = Rng::new(7 + k as u64);
    let w = rng.vec(n * k, 1.0);
    let x = rng.vec(64 * k, 1.0);
    for be in backends() {
        let op = Op::MatMul {
            trans_a: false,
            trans_b: true,
        };
        let product = |rows: &[f32]| {
            let m = rows.len() / k;
            run(&be, &op, &[f(rows.to_vec(), &[m, k]), f(w.clone(), &[n, k])], &[m, n]).unwrap()
        };
        let alone: Vec<Vec<f32>> = x.chunks_exact(k).map(product).collect();
        for m in [2, 3, 4, 5, 6, 7, 8, 9, 31, 64] {
            let batch = product(&x[..m * k]);
            for (i, want) in alone.iter().take(m).enumerate() {
                assert!(
                    batch[i * n..(i + 1) * n] == want[..],
                    "row {i} differs at {m} rows (k = {k}, n = {n}) on {}",
                    be.simd_level()
                );
            }
        }
    }
}

#[test]
fn the_row_update_path_sums_each_element_in_order_of_the_inner_index() {
    // `x · V` with few rows and V not transposed (attention's `P·V` in decode) keeps
    // blocks of the output row in registers; every element is still the chain
    // `c ← a[p]·b[p, j] + c` over p in order, so it equals that chain bit for bit (fused
    // where the instruction set has FMA, as the scalar fallback is not).
    let mut rng = Rng::new(11);
    for (m, k, n) in [
        (1, 37, 64),
        (1, 200, 2),
        (2, 9, 15),
        (3, 64, 129),
        (4, 5, 300),
        (1, 3, 128),
    ] {
        let a = rng.vec(m * k, 1.0);
        let b = rng.vec(k * n, 1.0);
        for be in backends() {
            let fused = be.simd_level() != r1_backend_cpu::SimdLevel::Scalar;
            let mut want = vec![0.0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    let c = &mut want[i * n + j];
                    for p in 0..k {
                        let (x, y) = (a[i * k + p], b[p * n + j]);
                        *c = if fused { x.mul_add(y, *c) } else { x * y + *c };
                    }
                }
            }
            let op = Op::MatMul {
                trans_a: false,
                trans_b: false,
            };
            let out = run(&be, &op, &[f(a.clone(), &[m, k]), f(b.clone(), &[k, n])], &[m, n]).unwrap();
            let same = out.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "{m}x{k} · {k}x{n} on {} differs from the in-order chain",
                be.simd_level()
            );
        }
    }
}

#[test]
fn large_products_split_over_threads_by_rows_and_by_columns() {
    check(&[], 300, 200, 130, false, true, false, 300); // row blocks
    check(&[], 20, 300, 1000, false, false, false, 301); // column blocks
    check(&[], 17, 260, 990, true, true, false, 302); // column blocks, both transposed
    check(&[8], 64, 64, 64, false, true, true, 303); // batch items in parallel
    check(&[2], 200, 100, 150, true, false, false, 304); // transposed a, one item at a time
}

#[test]
fn an_empty_inner_dimension_gives_zeros() {
    for be in backends() {
        let out = run(
            &be,
            &Op::MatMul {
                trans_a: false,
                trans_b: false,
            },
            &[f(vec![], &[3, 0]), f(vec![], &[0, 2])],
            &[3, 2],
        )
        .unwrap();
        assert_eq!(out, vec![0.0; 6]);
    }
}

/// Loss `Σ c ⊙ op(a)·op(b)`: gradients w.r.t. `a` and `b` through autodiff.
fn check_grad(a_dims: &[usize], b_dims: &[usize], ta: bool, tb: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut g = Graph::new();
    let a = g.input("a", TensorDesc::f32(a_dims)).unwrap();
    let b = g.input("b", TensorDesc::f32(b_dims)).unwrap();
    let y = g.matmul(a, b, ta, tb).unwrap();
    let y_dims = g.shape(y).unwrap().dims().to_vec();
    let c = g.input("c", TensorDesc::f32(&y_dims)).unwrap();
    let prod = g.mul(y, c).unwrap();
    let loss = g.sum_all(prod).unwrap();
    let na: usize = a_dims.iter().product();
    let nb: usize = b_dims.iter().product();
    let nc: usize = y_dims.iter().product();
    let (av, bv, cv) = (rng.vec(na, 1.0), rng.vec(nb, 1.0), rng.vec(nc, 1.0));
    let (r, bl) = (a_dims.len(), b_dims.len());
    let (m, k) = if ta {
        (a_dims[r - 1], a_dims[r - 2])
    } else {
        (a_dims[r - 2], a_dims[r - 1])
    };
    let n = if tb { b_dims[bl - 2] } else { b_dims[bl - 1] };
    let items = na / (m * k);
    let b_items = nb / (k * n);
    let c64 = to64(&cv);
    let f_ref = |a: &[f64], b: &[f64]| dot64(&c64, &refk::matmul(a, b, items, b_items, m, k, n, ta, tb));
    let (a64, b64) = (to64(&av), to64(&bv));
    let want_da = numeric_grad(&a64, |x| f_ref(x, &b64));
    let want_db = numeric_grad(&b64, |x| f_ref(&a64, x));
    for be in backends() {
        let leaves = [
            (a, f(av.clone(), a_dims)),
            (b, f(bv.clone(), b_dims)),
            (c, f(cv.clone(), &y_dims)),
        ];
        let (l, grads) = loss_and_grads(&be, g.clone(), loss, &leaves, &[a, b]);
        let what = format!(
            "{a_dims:?}{} x {b_dims:?}{} on {}",
            if ta { "ᵀ" } else { "" },
            if tb { "ᵀ" } else { "" },
            be.simd_level()
        );
        assert_close(&format!("loss {what}"), &[l], &[f_ref(&a64, &b64)], 1e-4, 1e-5);
        assert_close(&format!("da {what}"), &grads[0], &want_da, 1e-4, 1e-4);
        assert_close(&format!("db {what}"), &grads[1], &want_db, 1e-4, 1e-4);
    }
}

#[test]
fn matmul_gradients_match_finite_differences_for_all_transposes_shared_and_batched() {
    let mut seed = 400;
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let a2 = if ta { [7, 5] } else { [5, 7] };
        let b2 = if tb { [3, 7] } else { [7, 3] };
        check_grad(&a2, &b2, ta, tb, seed);
        // Batched b.
        check_grad(&[2, a2[0], a2[1]], &[2, b2[0], b2[1]], ta, tb, seed + 1);
        seed += 10;
    }
    // b shared over a batch of a (the model's `x · Wᵀ`), untransposed a only.
    check_grad(&[2, 3, 4, 6], &[5, 6], false, true, 450);
    check_grad(&[2, 4, 6], &[6, 5], false, false, 451);
}

#[test]
fn broadcast_add_and_mul_gradients_reduce_to_the_operand_shape() {
    let mut rng = Rng::new(500);
    let (xd, yd, zd) = ([3usize, 4, 5], [4usize, 5], [5usize]);
    let mut g = Graph::new();
    let x = g.input("x", TensorDesc::f32(&xd)).unwrap();
    let y = g.input("y", TensorDesc::f32(&yd)).unwrap();
    let z = g.input("z", TensorDesc::f32(&zd)).unwrap();
    let c = g.input("c", TensorDesc::f32(&xd)).unwrap();
    // loss = Σ c ⊙ (x ⊙ y + z)
    let xy = g.mul(x, y).unwrap();
    let s = g.add(xy, z).unwrap();
    let p = g.mul(s, c).unwrap();
    let loss = g.sum_all(p).unwrap();
    let (xv, yv, zv, cv) = (rng.vec(60, 1.0), rng.vec(20, 1.0), rng.vec(5, 1.0), rng.vec(60, 1.0));
    let f_ref = |x: &[f64], y: &[f64], z: &[f64]| -> f64 {
        (0..60).map(|i| cv[i] as f64 * (x[i] * y[i % 20] + z[i % 5])).sum()
    };
    let (x64, y64, z64) = (to64(&xv), to64(&yv), to64(&zv));
    let want = [
        numeric_grad(&x64, |v| f_ref(v, &y64, &z64)),
        numeric_grad(&y64, |v| f_ref(&x64, v, &z64)),
        numeric_grad(&z64, |v| f_ref(&x64, &y64, v)),
    ];
    for be in backends() {
        let leaves = [
            (x, f(xv.clone(), &xd)),
            (y, f(yv.clone(), &yd)),
            (z, f(zv.clone(), &zd)),
            (c, f(cv.clone(), &xd)),
        ];
        let (_, grads) = loss_and_grads(&be, g.clone(), loss, &leaves, &[x, y, z]);
        for (name, (got, want)) in ["dx", "dy", "dz"].iter().zip(grads.iter().zip(&want)) {
            assert_close(&format!("{name} on {}", be.simd_level()), got, want, 1e-5, 1e-5);
        }
    }
}

#[test]
fn products_of_one_input_run_as_a_group_in_a_plan_and_give_what_they_give_alone() {
    // q/k/v-like siblings (a bias add between two of them ends the first group), at decode
    // and prefill sizes (packing-free, split by columns) and training sizes (packed, split
    // by rows: past 512 rows and 2^18 values of A).
    use r1_core::backend::{Backend, f32_bytes};
    use r1_core::exec::{Bindings, Executor};
    use r1_core::{Graph, Plan};
    let (k, widths) = (40, [48usize, 16, 16, 72]);
    for (m, seed) in [(1, 1u64), (5, 2), (32, 3), (130, 4), (6600, 5)] {
        let mut rng = Rng::new(seed);
        let x = rng.vec(m * k, 1.0);
        let ws: Vec<Vec<f32>> = widths.iter().map(|&n| rng.vec(n * k, 1.0)).collect();
        let bias = rng.vec(widths[3], 1.0);
        for be in backends() {
            let mut g = Graph::new();
            let xn = g.input("x", TensorDesc::f32(&[m, k])).unwrap();
            let wn: Vec<_> = widths
                .iter()
                .enumerate()
                .map(|(i, &n)| g.input(&format!("w{i}"), TensorDesc::f32(&[n, k])).unwrap())
                .collect();
            let bn = g.input("b", TensorDesc::f32(&[widths[3]])).unwrap();
            let y: Vec<_> = wn[..3].iter().map(|&w| g.matmul(xn, w, false, true).unwrap()).collect();
            let first = g.add(y[0], y[0]).unwrap();
            let last = g.matmul(xn, wn[3], false, true).unwrap();
            let last = g.add(last, bn).unwrap();
            let outputs = [first, y[1], y[2], last];
            let plan = Plan::for_backend(&g, &outputs, &be).unwrap();
            let upload = |v: &[f32]| {
                let buf = be.alloc(4 * v.len()).unwrap();
                be.upload(&buf, 0, &f32_bytes(v)).unwrap();
                buf
            };
            let xb = upload(&x);
            let wb: Vec<_> = ws.iter().map(|w| upload(w)).collect();
            let bb = upload(&bias);
            let mut bind = Bindings::new(&g);
            bind.bind(xn, &xb, 0).unwrap();
            for (&n, b) in wn.iter().zip(&wb) {
                bind.bind(n, b, 0).unwrap();
            }
            bind.bind(bn, &bb, 0).unwrap();
            let mut exec = Executor::new();
            exec.run(&be, &g, &plan, &bind).unwrap();
            let got: Vec<Vec<f32>> = outputs
                .iter()
                .map(|&o| exec.read_f32(&be, &g, &plan, &bind, o).unwrap())
                .collect();
            let op = Op::MatMul {
                trans_a: false,
                trans_b: true,
            };
            let alone: Vec<Vec<f32>> = widths
                .iter()
                .zip(&ws)
                .map(|(&n, w)| run(&be, &op, &[f(x.clone(), &[m, k]), f(w.clone(), &[n, k])], &[m, n]).unwrap())
                .collect();
            let what = format!("m = {m} on {}", be.simd_level());
            assert!(got[0].iter().zip(&alone[0]).all(|(g, a)| *g == a + a), "{what}: first");
            assert!(got[1] == alone[1] && got[2] == alone[2], "{what}: grouped");
            let want_last: Vec<f32> = alone[3]
                .chunks_exact(widths[3])
                .flat_map(|r| r.iter().zip(&bias).map(|(a, b)| a + b))
                .collect();
            assert!(got[3] == want_last, "{what}: last");
        }
    }
}
