//! r1-backend-cpu: every graph op of `r1-core`, forward and backward, on the CPU.
//!
//! - [`CpuBackend`] implements [`r1_core::Backend`] with [`CpuBuffer`]: 64-byte aligned,
//!   zero-filled host memory, shareable between threads behind a run-time borrow flag
//!   (many readers or one writer; a conflict is an error, never a data race or a wait).
//!   `CpuBackend::new()` picks the best SIMD level and runs on rayon's global pool;
//!   `with_threads(n)` / `with_config(n, level)` use a dedicated pool: the calling thread
//!   and `n - 1` threads that spin between ops before they sleep. Host code moves
//!   f32 data without byte conversions through `upload_f32` / `download_f32` /
//!   `CpuBuffer::with_f32`.
//! - GEMM runs on matrixmultiply's packed micro-kernels (its own `threading` feature is
//!   off): a product is cut into one block of rows or columns per thread, whichever
//!   duplicates less operand packing; batched products run items in parallel; products
//!   under ~1M multiply-adds stay on the calling thread; products with at most a few rows
//!   (decode) skip packing and use SIMD dot products or row updates.
//! - Element-wise, softmax-like, norm, RoPE, loss and optimizer kernels use explicit SIMD
//!   (AVX-512 or AVX2+FMA, detected at run time, with a scalar fallback running the same
//!   algorithm) and spread rows, heads and blocks over threads when the work pays for it.
//!   Reductions add fixed-size chunks, so results do not depend on the thread count.
//! - Attention is fused (flash-attention style: the backward recomputes probabilities)
//!   and serves training, chunked prefill and KV-cache decode.
//!
//! `unsafe` lives in five places, each behind a safe function over slices: the buffer
//! allocation ([`buffer`]), the checked tensor views of one op (`views`), the SIMD
//! dispatch and intrinsics (`simd`), the strided GEMM call (`kernels::gemm`), and the
//! disjoint-output handles of parallel tasks and the pool's shared job (`parallel`).

mod backend;
pub mod buffer;
mod kernels;
mod parallel;
mod simd;
mod views;

pub use backend::CpuBackend;
pub use buffer::{CpuBuffer, MappedBytes};
pub use simd::SimdLevel;
