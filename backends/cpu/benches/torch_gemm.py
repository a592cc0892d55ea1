"""PyTorch's GEMM GFLOP/s for the products of benches/gemm.rs, as the reference figure.

Run: /tmp/refenv/bin/python backends/cpu/benches/torch_gemm.py [threads]   (default 2)
Same list and same operand layouts (a transposed operand is a transposed view, as
`x @ w.t()` is in a model), best of five timed batches after a warm-up; the last column
is GFLOP per CPU-second (process time), the per-core efficiency (OpenMP spin-waits count).
"""
import os
import sys
import time

import torch

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)

SHAPES = [
    ("square 512", 512, 512, 512, False, False),
    ("square 1024", 1024, 1024, 1024, False, False),
    ("square 2048", 2048, 2048, 2048, False, False),
    ("h256 gate/up x·Wᵀ", 1024, 256, 688, False, True),
    ("h256 down x·Wᵀ", 1024, 688, 256, False, True),
    ("h256 gate/up dX=dY·W", 1024, 688, 256, False, False),
    ("h256 down dX=dY·W", 1024, 256, 688, False, False),
    ("h256 gate/up dW=dYᵀ·X", 688, 1024, 256, True, False),
    ("h256 down dW=dYᵀ·X", 256, 1024, 688, True, False),
    ("h512 gate/up x·Wᵀ", 1024, 512, 1376, False, True),
    ("h512 lm_head x·Wᵀ", 1024, 512, 4096, False, True),
    ("h512 gate/up dX=dY·W", 1024, 1376, 512, False, False),
    ("h512 lm_head dX=dY·W", 1024, 4096, 512, False, False),
    ("h512 gate/up dW=dYᵀ·X", 1376, 1024, 512, True, False),
    ("h512 lm_head dW=dYᵀ·X", 4096, 1024, 512, True, False),
]


def gflops(m, k, n, ta, tb, secs=0.5):
    a = torch.rand(k, m).t() if ta else torch.rand(m, k)
    b = torch.rand(n, k).t() if tb else torch.rand(k, n)
    out = torch.empty(m, n)
    torch.matmul(a, b, out=out)
    f = 2.0 * m * k * n
    per_batch = max(1, int((secs / 5) * 100e9 / f))
    best = float("inf")
    cpu0 = time.process_time()
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(per_batch):
            torch.matmul(a, b, out=out)
        best = min(best, (time.perf_counter() - t) / per_batch)
    per_cpu = 5 * per_batch * f / max(time.process_time() - cpu0, 1e-9) / 1e9
    return f / best / 1e9, per_cpu


print(f"PyTorch {torch.__version__} GEMM GFLOP/s ({threads} threads; load average "
      f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})")
print(f"{'product':<26} {'M':>6} {'K':>6} {'N':>6}  {'GFLOP/s':>9}  {'GFLOP/CPU-s':>12}")
for name, m, k, n, ta, tb in SHAPES:
    g, per_cpu = gflops(m, k, n, ta, tb)
    print(f"{name:<26} {m:>6} {k:>6} {n:>6}  {g:>9.1f}  {per_cpu:>12.1f}")
