//! r1-backend-cpu: every graph op of `r1-core`, forward and backward, on the CPU.
//!
//! - [`CpuBackend`] implements [`r1_core::Backend`] with [`CpuBuffer`] (64-byte aligned,
//!   zero-filled host memory, shareable between threads behind a run-time borrow flag).
//! - GEMM runs on matrixmultiply's packed micro-kernels, split over threads by blocks of
//!   rows or columns; batched products run over the batch.
//! - Element-wise, softmax-like, norm, RoPE and attention kernels use explicit SIMD
//!   (AVX-512 or AVX2+FMA, detected at run time, with a scalar fallback) and spread rows,
//!   heads and blocks over threads when the work is large enough to pay for it.
//! - Attention is fused (flash-attention style: the backward recomputes probabilities)
//!   and serves KV-cache decode as well as training.
//!
//! `unsafe` lives in four places, each behind a safe function over slices: the buffer
//! allocation ([`buffer`]), the checked tensor views of one op ([`views`]), the SIMD
//! dispatch and intrinsics (`simd`), and the strided GEMM/disjoint-output plumbing
//! (`kernels::gemm`, `parallel`).

mod backend;
pub mod buffer;
mod kernels;
mod parallel;
mod simd;
mod views;

pub use backend::CpuBackend;
pub use buffer::CpuBuffer;
pub use simd::SimdLevel;
