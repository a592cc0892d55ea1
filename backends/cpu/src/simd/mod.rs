//! Explicit SIMD with run-time dispatch. [`Simd`] is one vector type per instruction set
//! (AVX-512, AVX2+FMA, and a one-lane scalar fallback); kernels are written once, generic
//! over it, and [`Isa::run`] enters a `#[target_feature]` function for the detected set so
//! the generic code is compiled for it.
//!
//! A token type (`Avx512`, `Avx2`) can only be made after the CPU was checked, so owning
//! one proves its intrinsics may run: the trait methods are safe. Everything generic that
//! runs inside a task must be `#[inline(always)]`, or it would be compiled for the
//! baseline target and call each intrinsic out of line. That includes closures, which
//! cannot be marked so: `std::array::from_fn(|c| s.load(…))` is fast only while LLVM
//! chooses to inline its closure (a change elsewhere in the crate once made it stop, and
//! the packing-free GEMM ran 10× slower), so kernels fill vector arrays with loops.

pub(crate) mod bf16_dot;
pub(crate) mod half;
pub(crate) mod int8;
pub(crate) mod math;
pub(crate) mod packed16;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

use std::fmt;

pub(crate) use scalar::Scalar;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86_avx2::Avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86_avx512::Avx512;

/// An instruction set the kernels can be compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// Portable one-lane code (any CPU).
    Scalar,
    /// x86-64 AVX2 with FMA: 8 f32 lanes.
    Avx2,
    /// x86-64 AVX-512F (with AVX2 and FMA): 16 f32 lanes.
    Avx512,
}

impl SimdLevel {
    /// The best level this CPU supports.
    pub fn detect() -> SimdLevel {
        Isa::best().level()
    }

    /// Every level this CPU supports, lowest first (tests run kernels at each).
    pub fn available() -> Vec<SimdLevel> {
        [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512]
            .into_iter()
            .filter(|l| Isa::new(*l).is_some())
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }
}

impl fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One SIMD vector of f32 lanes. Loads take slices (at least `LANES` long, or shorter for
/// the `_partial` forms, which fill the missing lanes), so no kernel touches a pointer.
pub(crate) trait Simd: Copy + Send + Sync {
    const LANES: usize;
    type V: Copy;

    fn splat(self, x: f32) -> Self::V;
    /// `LANES`, from a value (for macros that only hold the token).
    #[inline(always)]
    fn lanes(self) -> usize {
        Self::LANES
    }
    /// The first `LANES` values of `s`.
    fn load(self, s: &[f32]) -> Self::V;
    /// Writes all lanes to the first `LANES` values of `s`.
    fn store(self, v: Self::V, s: &mut [f32]);
    /// `s.len() < LANES` values, the other lanes set to `fill`.
    fn load_partial(self, s: &[f32], fill: f32) -> Self::V;
    /// Writes the first `s.len() < LANES` lanes.
    fn store_partial(self, v: Self::V, s: &mut [f32]);

    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a·b + c` (fused where the instruction set has FMA).
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `if a < b { a } else { b }` per lane (x86 `minps`: a NaN in `a` yields `b`).
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    /// `if a > b { a } else { b }` per lane.
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// Round to the nearest integer, ties to even.
    fn round(self, a: Self::V) -> Self::V;
    /// `p · 2^n` for integral `n` in `[-152, 130]`, rounded once (gradual underflow,
    /// overflow to infinity).
    fn ldexp(self, p: Self::V, n: Self::V) -> Self::V;
    fn sqrt(self, a: Self::V) -> Self::V;
    fn reduce_sum(self, v: Self::V) -> f32;
    fn reduce_max(self, v: Self::V) -> f32;
    /// The horizontal sums of `LANES` vectors as one vector: lane `i` is the sum of the
    /// lanes of `v[i]` (`v.len() == LANES`). Cheaper than `LANES` calls of [`reduce_sum`]
    /// where the instruction set can add several vectors' lanes at once; every lane's sum
    /// is taken in the same order, whichever slot its vector came in.
    ///
    /// [`reduce_sum`]: Simd::reduce_sum
    #[inline(always)]
    fn transpose_sum(self, v: &[Self::V]) -> Self::V {
        debug_assert_eq!(v.len(), Self::LANES);
        let mut sums = [0.0f32; MAX_LANES];
        for (t, &x) in sums.iter_mut().zip(v) {
            *t = self.reduce_sum(x);
        }
        self.load(&sums)
    }
}

/// The widest vector any [`Simd`] has, in f32 lanes (AVX-512's).
pub(crate) const MAX_LANES: usize = 16;

/// A kernel body generic over the instruction set (see the module docs on inlining).
pub(crate) trait SimdTask {
    type Output;
    fn run<S: Simd>(self, s: S) -> Self::Output;
}

/// The instruction set a backend runs its kernels with.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Isa {
    Scalar(Scalar),
    #[cfg(target_arch = "x86_64")]
    Avx2(Avx2),
    #[cfg(target_arch = "x86_64")]
    Avx512(Avx512),
}

impl Isa {
    /// `level` if this CPU supports it.
    pub(crate) fn new(level: SimdLevel) -> Option<Isa> {
        match level {
            SimdLevel::Scalar => Some(Isa::Scalar(Scalar)),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => Avx2::detect().map(Isa::Avx2),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => Avx512::detect().map(Isa::Avx512),
            #[cfg(not(target_arch = "x86_64"))]
            _ => None,
        }
    }

    pub(crate) fn best() -> Isa {
        [SimdLevel::Avx512, SimdLevel::Avx2]
            .into_iter()
            .find_map(Isa::new)
            .unwrap_or(Isa::Scalar(Scalar))
    }

    pub(crate) fn level(self) -> SimdLevel {
        match self {
            Isa::Scalar(_) => SimdLevel::Scalar,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(_) => SimdLevel::Avx2,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(_) => SimdLevel::Avx512,
        }
    }

    /// Runs `task` compiled for this instruction set.
    #[inline]
    pub(crate) fn run<T: SimdTask>(self, task: T) -> T::Output {
        match self {
            Isa::Scalar(s) => task.run(s),
            // SAFETY: the token exists only if `Avx2::detect` found avx2 and fma.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(s) => unsafe { run_avx2(s, task) },
            // SAFETY: the token exists only if `Avx512::detect` found avx512f, avx2, fma.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(s) => unsafe { run_avx512(s, task) },
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_avx2<T: SimdTask>(s: Avx2, task: T) -> T::Output {
    task.run(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn run_avx512<T: SimdTask>(s: Avx512, task: T) -> T::Output {
    task.run(s)
}

/// Whether kernels prefetch data that may already sit in the caches (a small model's
/// weights in a decode step, the KV cache in decode attention), not only what streams from
/// memory. True on AMD CPUs, whose L2 (512 KiB on Zen 3, 1 MiB on Zen 4) takes neither a
/// small model's weights nor a batch's KV cache, and whose last-level cache holds what L2
/// evicted: there, without prefetches, decode steps waited on loads from it (measured on
/// Zen 3 with AVX2 and Zen 4 with AVX-512: `kernels/gemm.rs`' `PREFETCH_MIN_B`,
/// `kernels/attention.rs`' `DecodeGroup`). Elsewhere false: on Intel (AVX-512) prefetching
/// weights the caches held measured 3–8% slower.
pub(crate) fn prefetch_cached() -> bool {
    static AMD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AMD.get_or_init(cpu_is_amd)
}

/// The CPU's vendor string (CPUID leaf 0: EBX, EDX, ECX) is AMD's.
fn cpu_is_amd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let id = std::arch::x86_64::__cpuid(0);
        let mut vendor = [0u8; 12];
        for (chunk, word) in vendor.chunks_exact_mut(4).zip([id.ebx, id.edx, id.ecx]) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        &vendor == b"AuthenticAMD"
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// [`prefetch_at`] of every line of `data[range]` (one per 64 bytes).
#[inline(always)]
pub(crate) fn prefetch_floats(data: &[f32], range: std::ops::Range<usize>) {
    for i in range.step_by(64 / size_of::<f32>()) {
        prefetch_at(data, i);
    }
}

/// [`prefetch`] of the one line holding `data[i]` (nothing past the end).
#[inline(always)]
pub(crate) fn prefetch_at(data: &[f32], i: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(v) = data.get(i) {
        // SAFETY: `prefetcht1` is a hint that never faults (SSE, part of x86_64's
        // baseline); the address is that of `data[i]`.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>((v as *const f32).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, i);
}

/// Asks the CPU to bring `bytes` into its L2 cache ahead of use (a hint: one `prefetcht1`
/// per 64-byte line, nothing on other architectures; measured on quantized decode, L2
/// beat L1 (`t0`), whose fill buffers the kernel's own loads need). For weights read in an order the
/// hardware prefetcher does not follow well, such as eight rows side by side. Keep the loop
/// as it is: the same lines asked for by a loop LLVM unrolled eight-fold (`step_by` over
/// byte offsets) measured quantized decode at half its speed.
#[inline]
pub(crate) fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: `prefetcht0` is a hint that never faults (SSE, part of x86_64's
        // baseline); the address is inside `bytes`.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(line.as_ptr() as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}
