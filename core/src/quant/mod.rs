//! GGML's tensor formats (llama.cpp's GGUF files): the block layouts, scalar reference
//! dequantizers and quantizers, and the scalar dot products of a quantized weight row with
//! a quantized activation row, written to agree bit for bit with ggml's C reference
//! (`ggml-quants.c`, and the `_generic` dot products of `ggml-cpu/quants.c`).
//!
//! One module per block format documents its byte layout: [`q4_0`], [`q5_0`], [`q8_0`],
//! [`q4_k`], [`q6_k`] and [`q8_k`] (the activation format of the K-quant dot products); [`float`]
//! converts f16 and bf16. [`GgmlType`] names them by their GGML type number and gives
//! block and byte sizes ([`GgmlType::row_bytes`], [`GgmlType::tensor_bytes`]) and the
//! core [`BlockFormat`](crate::tensor::BlockFormat) ([`BLOCK_Q4_K`] …).
//!
//! The row functions here check lengths and dispatch on the type: [`dequantize_into`],
//! [`quantize_into`] and [`vec_dot`] (what SIMD kernels are checked against). Rows are
//! whole blocks, as in ggml. Inputs are expected finite: ggml's reference is undefined
//! for NaN and infinities, and so are the bits these produce for them (never a panic).

pub mod float;
pub mod q4_0;
pub mod q4_k;
pub mod q5_0;
pub mod q6_k;
pub mod q8_0;
pub mod q8_k;

mod error;
mod kquants;
mod types;

pub use error::QuantError;
pub use types::{BLOCK_Q4_0, BLOCK_Q4_K, BLOCK_Q5_0, BLOCK_Q6_K, BLOCK_Q8_0, BLOCK_Q8_K, GgmlType, QK_K};

use alloc::vec;
use alloc::vec::Vec;

/// Dequantizes one row of `ty` into `dst` (its length is the row's element count, which
/// must be whole blocks); `src` must be exactly that row's bytes.
pub fn dequantize_into(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check_bytes(ty, "input", dst.len(), src.len())?;
    match ty {
        GgmlType::F32 => elementwise(src, dst, |b: [u8; 4]| f32::from_le_bytes(b)),
        GgmlType::F16 => elementwise(src, dst, |b| float::f16_to_f32(u16::from_le_bytes(b))),
        GgmlType::BF16 => elementwise(src, dst, |b| float::bf16_to_f32(u16::from_le_bytes(b))),
        GgmlType::Q4_0 => per_block(src, dst, q4_0::dequantize_block),
        GgmlType::Q5_0 => per_block(src, dst, q5_0::dequantize_block),
        GgmlType::Q8_0 => per_block(src, dst, q8_0::dequantize_block),
        GgmlType::Q4_K => per_block(src, dst, q4_k::dequantize_block),
        GgmlType::Q6_K => per_block(src, dst, q6_k::dequantize_block),
        GgmlType::Q8_K => per_block(src, dst, q8_k::dequantize_block),
    }
    Ok(())
}

/// Dequantizes one row of `elements` elements of `ty` from `src` (exactly its bytes).
pub fn dequantize(ty: GgmlType, src: &[u8], elements: usize) -> Result<Vec<f32>, QuantError> {
    check_bytes(ty, "input", elements, src.len())?;
    let mut dst = vec![0.0; elements];
    dequantize_into(ty, src, &mut dst)?;
    Ok(dst)
}

/// Quantizes `src` (whole blocks of `ty`) into `dst`, which must be exactly the row's
/// bytes, with ggml's reference quantizer for `ty` (`quantize_row_*_ref`; for f16/bf16 the
/// round-to-nearest-even conversions).
pub fn quantize_into(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    check_bytes(ty, "output", src.len(), dst.len())?;
    match ty {
        GgmlType::F32 => to_bytes(src, dst, |x| x.to_le_bytes()),
        GgmlType::F16 => to_bytes(src, dst, |x| float::f32_to_f16(x).to_le_bytes()),
        GgmlType::BF16 => to_bytes(src, dst, |x| float::f32_to_bf16(x).to_le_bytes()),
        GgmlType::Q4_0 => per_block_mut(src, dst, q4_0::quantize_block),
        GgmlType::Q5_0 => per_block_mut(src, dst, q5_0::quantize_block),
        GgmlType::Q8_0 => per_block_mut(src, dst, q8_0::quantize_block),
        GgmlType::Q4_K => per_block_mut(src, dst, q4_k::quantize_block),
        GgmlType::Q6_K => per_block_mut(src, dst, q6_k::quantize_block),
        GgmlType::Q8_K => per_block_mut(src, dst, q8_k::quantize_block),
    }
    Ok(())
}

/// Quantizes `src` (whole blocks of `ty`) into a new row of bytes; see [`quantize_into`].
pub fn quantize(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    let mut dst = vec![0; ty.row_bytes(src.len() as u64)?];
    quantize_into(ty, src, &mut dst)?;
    Ok(dst)
}

/// The dot product of a `weight`-typed row `w` with an activation row `a` quantized to
/// `weight.vec_dot_type()` (Q8_0 for Q4_0, Q5_0 and Q8_0, Q8_K for Q4_K and Q6_K), both of
/// `elements` elements, as ggml's scalar `ggml_vec_dot_<w>_<a>` computes it: integer sums
/// per block, scaled and accumulated in f32 in ggml's order.
pub fn vec_dot(weight: GgmlType, w: &[u8], a: &[u8], elements: usize) -> Result<f32, QuantError> {
    let act = weight.vec_dot_type().ok_or(QuantError::NoVecDot { ty: weight })?;
    check_bytes(weight, "weight", elements, w.len())?;
    check_bytes(act, "activation", elements, a.len())?;
    Ok(match weight {
        GgmlType::Q4_0 => q4_0::vec_dot(w.as_chunks().0, a.as_chunks().0),
        GgmlType::Q5_0 => q5_0::vec_dot(w.as_chunks().0, a.as_chunks().0),
        GgmlType::Q8_0 => q8_0::vec_dot(w.as_chunks().0, a.as_chunks().0),
        GgmlType::Q4_K => q4_k::vec_dot(w.as_chunks().0, a.as_chunks().0),
        GgmlType::Q6_K => q6_k::vec_dot(w.as_chunks().0, a.as_chunks().0),
        _ => return Err(QuantError::NoVecDot { ty: weight }),
    })
}

/// Checks that `actual` bytes are exactly `elements` elements of `ty` (whole blocks).
fn check_bytes(ty: GgmlType, operand: &'static str, elements: usize, actual: usize) -> Result<(), QuantError> {
    let expected = ty.row_bytes(elements as u64)?;
    if expected != actual {
        return Err(QuantError::ByteLength {
            ty,
            operand,
            elements,
            expected,
            actual,
        });
    }
    Ok(())
}

fn elementwise<const B: usize>(src: &[u8], dst: &mut [f32], f: impl Fn([u8; B]) -> f32) {
    for (y, b) in dst.iter_mut().zip(src.as_chunks::<B>().0) {
        *y = f(*b);
    }
}

fn to_bytes<const B: usize>(src: &[f32], dst: &mut [u8], f: impl Fn(f32) -> [u8; B]) {
    for (b, &x) in dst.as_chunks_mut::<B>().0.iter_mut().zip(src) {
        *b = f(x);
    }
}

fn per_block<const B: usize, const N: usize>(src: &[u8], dst: &mut [f32], f: fn(&[u8; B], &mut [f32; N])) {
    for (b, y) in src.as_chunks::<B>().0.iter().zip(dst.as_chunks_mut::<N>().0) {
        f(b, y);
    }
}

fn per_block_mut<const B: usize, const N: usize>(src: &[f32], dst: &mut [u8], f: fn(&[f32; N], &mut [u8; B])) {
    for (x, b) in src.as_chunks::<N>().0.iter().zip(dst.as_chunks_mut::<B>().0) {
        f(x, b);
    }
}
