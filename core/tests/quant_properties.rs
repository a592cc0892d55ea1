//! Properties of r1's GGML formats that hold for any input (the bit-exact comparison with
//! ggml is `quant_parity.rs`): dequantize(quantize(x)) is within each format's error bound,
//! rows are independent whole blocks, and wrong lengths are errors that name the sizes.

use proptest::prelude::*;
use r1_core::quant::{self, GgmlType, QuantError};

/// Largest |x − dequantize(quantize(x))| allowed in a block whose largest magnitude is
/// `amax` (inputs keep every f16 scale a normal number: `amax` in 0.1 ..= 1e4).
///
/// Q8_0: half a step `amax/127` plus the f16 rounding of the scale over 127 levels.
/// Q4_0: one step `amax/8` (the element opposite the largest clamps to level 15).
/// Q5_0: likewise one step `amax/16` (clamped to level 31).
/// Q8_K: half a step, its scale is f32. F16/BF16: half an ulp of the element.
/// Q4_K, Q6_K: the sub-block fits and 6/8-bit sub-block scales have no tight closed form;
/// 3,000 random blocks (normal, clipped Cauchy, mixed magnitudes, offset uniform) through
/// ggml's C reference gave at most 0.098·amax (Q4_K) and 0.024·amax (Q6_K): the bounds
/// below leave 50 % margin.
fn bound(ty: GgmlType, amax: f32, x: f32) -> f32 {
    let slop = amax * 1e-6;
    match ty {
        GgmlType::F32 => 0.0,
        GgmlType::F16 => x.abs() * 2f32.powi(-11) + slop,
        GgmlType::BF16 => x.abs() * 2f32.powi(-8) + slop,
        GgmlType::Q8_0 => amax / 127.0 * (0.5 + 127.0 * 2f32.powi(-11)) + slop,
        GgmlType::Q4_0 => amax / 8.0 * (1.0 + 8.0 * 2f32.powi(-11)) + slop,
        GgmlType::Q5_0 => amax / 16.0 * (1.0 + 16.0 * 2f32.powi(-11)) + slop,
        GgmlType::Q8_K => amax / 127.0 * 0.5 + slop,
        GgmlType::Q4_K => amax * 0.15,
        GgmlType::Q6_K => amax * 0.036,
    }
}

/// A row of `blocks` blocks of `ty`: values in ±scale, some scaled down by up to 10^4 (so
/// sub-blocks differ in magnitude), element 0 of each block set to ±scale.
fn row(ty: GgmlType, blocks: usize) -> impl Strategy<Value = Vec<f32>> {
    let n = ty.block_size().max(32) * blocks;
    let block = ty.block_size();
    (
        prop::collection::vec((-1.0f32..1.0, 0u32..5), n),
        0.1f32..1e4,
        any::<bool>(),
    )
        .prop_map(move |(v, scale, negative)| {
            let mut x: Vec<f32> = v.iter().map(|&(u, e)| u * scale / 10f32.powi(e as i32)).collect();
            for b in x.chunks_mut(block) {
                b[0] = if negative { -scale } else { scale };
            }
            x
        })
}

fn types() -> impl Strategy<Value = GgmlType> {
    prop::sample::select(GgmlType::ALL.to_vec())
}

fn quantized_types() -> impl Strategy<Value = GgmlType> {
    prop::sample::select(
        GgmlType::ALL
            .into_iter()
            .filter(|t| t.is_quantized())
            .collect::<Vec<_>>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip_error_is_within_the_format_bound((ty, x) in types().prop_flat_map(|t| (Just(t), row(t, 2)))) {
        let q = quant::quantize(ty, &x).unwrap();
        prop_assert_eq!(q.len(), ty.row_bytes(x.len() as u64).unwrap());
        let y = quant::dequantize(ty, &q, x.len()).unwrap();
        for (xb, yb) in x.chunks(ty.block_size()).zip(y.chunks(ty.block_size())) {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (i, (&a, &b)) in xb.iter().zip(yb).enumerate() {
                prop_assert!((a - b).abs() <= bound(ty, amax, a), "{ty}: element {i}: {a} came back {b} (amax {amax})");
            }
        }
    }

    #[test]
    fn blocks_of_a_row_are_quantized_independently((ty, x) in types().prop_flat_map(|t| (Just(t), row(t, 3)))) {
        let whole = quant::quantize(ty, &x).unwrap();
        let mut parts = Vec::new();
        for b in x.chunks(ty.block_size().max(32)) {
            parts.extend(quant::quantize(ty, b).unwrap());
        }
        prop_assert_eq!(whole, parts);
    }

    #[test]
    fn a_row_that_is_not_whole_blocks_is_refused(ty in quantized_types(), blocks in 0usize..3, extra in 1usize..32) {
        let n = blocks * ty.block_size() + extra;
        let err = quant::quantize(ty, &vec![1.0; n]).unwrap_err();
        prop_assert_eq!(err, QuantError::NotWholeBlocks { ty, elements: n as u64, block: ty.block_size() });
        prop_assert!(quant::dequantize(ty, &[], n).is_err());
    }

    #[test]
    fn wrong_byte_lengths_name_expected_and_actual(ty in types(), blocks in 1usize..4, delta in 1usize..40, longer: bool) {
        let n = blocks * ty.block_size();
        let expected = ty.row_bytes(n as u64).unwrap();
        let actual = if longer { expected + delta } else { expected.saturating_sub(delta) };
        let err = quant::dequantize(ty, &vec![0; actual], n).unwrap_err();
        prop_assert_eq!(err, QuantError::ByteLength { ty, operand: "input", elements: n, expected, actual });
        let mut out = vec![0; actual];
        let err = quant::quantize_into(ty, &vec![0.5; n], &mut out).unwrap_err();
        prop_assert_eq!(err, QuantError::ByteLength { ty, operand: "output", elements: n, expected, actual });
    }

    #[test]
    fn vec_dot_is_the_dot_product_of_the_dequantized_rows(
        (ty, w, a) in prop::sample::select(vec![GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K])
            .prop_flat_map(|t| (Just(t), row(t, 2), row(t, 2)))
    ) {
        let act = ty.vec_dot_type().unwrap();
        let (wq, aq) = (quant::quantize(ty, &w).unwrap(), quant::quantize(act, &a).unwrap());
        let got = quant::vec_dot(ty, &wq, &aq, w.len()).unwrap();
        let (wd, ad) = (quant::dequantize(ty, &wq, w.len()).unwrap(), quant::dequantize(act, &aq, a.len()).unwrap());
        let exact: f64 = wd.iter().zip(&ad).map(|(&p, &q)| f64::from(p) * f64::from(q)).sum();
        let mag: f64 = wd.iter().zip(&ad).map(|(&p, &q)| (f64::from(p) * f64::from(q)).abs()).sum();
        prop_assert!((f64::from(got) - exact).abs() <= 1e-5 * mag + 1e-30, "{ty}: {got} vs {exact} (Σ|w·a| {mag})");
    }
}

#[test]
fn zeros_quantize_to_zero_blocks_and_back() {
    for ty in GgmlType::ALL {
        let n = ty.block_size().max(32) * 2;
        let q = quant::quantize(ty, &vec![0.0; n]).unwrap();
        if ty == GgmlType::Q4_0 {
            // d = 0 / −8 = −0 (f16 0x8000), and level 8 is zero: as ggml writes it.
            assert!(
                q.chunks(18)
                    .all(|b| b[..2] == [0x00, 0x80] && b[2..].iter().all(|&n| n == 0x88))
            );
        } else if ty == GgmlType::Q5_0 {
            // d = −0 again; level 16 (zero) is nibble 0 with the high bit set.
            assert!(
                q.chunks(22)
                    .all(|b| b[..2] == [0x00, 0x80] && b[2..6] == [0xFF; 4] && b[6..].iter().all(|&n| n == 0))
            );
        } else {
            assert!(q.iter().all(|&b| b == 0), "{ty}");
        }
        assert!(quant::dequantize(ty, &q, n).unwrap().iter().all(|&y| y == 0.0), "{ty}");
    }
}

#[test]
fn vec_dot_needs_a_quantized_weight_and_rows_of_the_right_size() {
    assert_eq!(
        quant::vec_dot(GgmlType::F16, &[0; 64], &[0; 64], 32),
        Err(QuantError::NoVecDot { ty: GgmlType::F16 })
    );
    let w = vec![0; 144];
    assert_eq!(
        quant::vec_dot(GgmlType::Q4_K, &w, &[0; 34], 256),
        Err(QuantError::ByteLength {
            ty: GgmlType::Q8_K,
            operand: "activation",
            elements: 256,
            expected: 292,
            actual: 34
        })
    );
    assert_eq!(
        quant::vec_dot(GgmlType::Q4_K, &w, &[0; 292], 255),
        Err(QuantError::NotWholeBlocks {
            ty: GgmlType::Q4_K,
            elements: 255,
            block: 256
        })
    );
    let msg = quant::dequantize(GgmlType::Q6_K, &[0; 200], 256)
        .unwrap_err()
        .to_string();
    assert_eq!(msg, "q6_K: input of 256 elements takes 210 bytes, got 200");
}
