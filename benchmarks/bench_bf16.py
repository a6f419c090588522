"""bfloat16 products (fastnn/_kernels/_bf16.pxd) against float32: the kernels at every level
this CPU has, and the error of a 784-256-256-10 relu network's outputs.

    PYTHONPATH=. python benchmarks/bench_bf16.py [rounds]

One thread (NumPy's BLAS held to 1). One row: ``bf16.xw`` (rounds the row, then the product) per
level against NumPy's ``x @ W`` and fastnn's float32 one-row product (``_blas.py_xw``; both
allocate their output, bf16.xw too), microseconds. GEMM: ``bf16.gemm`` per level against NumPy's
``X @ W``, GFLOP/s. Medians of ``rounds`` rounds (default 11), each the mean of a loop of calls.
Error: outputs against float64 for a network with the default (Glorot) weights on inputs in
[0, 1): max error relative to the row's largest output, and argmax agreement.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import machine_facts, numpy_threads


def _median(fn, reps, rounds):
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        ts.append((time.perf_counter() - t0) / reps)
    return float(np.median(ts))


def main(argv=None):
    from fastnn import Sequential
    from fastnn._kernels import _blas, bf16
    from fastnn.layers import Dense

    rounds = int(argv[0]) if argv else 11
    print("\n".join(machine_facts()))
    levels = [n for i, n in enumerate(bf16.SIMD_LEVELS) if i <= bf16._supported_level()]
    old = bf16.simd_level()
    rng = np.random.default_rng(0)
    load = lambda: " ".join(f"{v:.2f}" for v in os.getloadavg())  # noqa: E731
    with numpy_threads(1):
        print(f"one row, us: {'k x n':>10}" + "".join(f"{n:>12}" for n in levels)
              + f"{'numpy':>10}{'f32 xw':>10}   load")
        for k, n in ((784, 256), (256, 256), (256, 10)):
            W = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
            x = rng.random(k, dtype=np.float32)
            P = bf16.pack(W)
            row = []
            for name in levels:
                bf16._set_simd_level(name)
                row.append(float(np.median([bf16.xw(x, P, n, reps=2000)[1]
                                            for _ in range(rounds)])))
            t_np = _median(lambda: x @ W, 2000, rounds)
            t_xw = _median(lambda: _blas.py_xw(x, W, 0, n), 2000, rounds)
            print(f"{'':13}{f'{k} x {n}':>10}" + "".join(f"{t * 1e6:>12.2f}" for t in row)
                  + f"{t_np * 1e6:>10.2f}{t_xw * 1e6:>10.2f}   {load()}", flush=True)
        print(f"GEMM, GFLOP/s: {'m x k x n':>14}" + "".join(f"{n:>12}" for n in levels)
              + f"{'numpy':>10}   load")
        for m, k, n in ((256, 784, 256), (256, 256, 256), (1024, 784, 256)):
            W = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
            X = rng.random((m, k), dtype=np.float32)
            P = bf16.pack(W)
            fl = 2.0 * m * k * n
            row = []
            for name in levels:
                bf16._set_simd_level(name)
                row.append(fl / float(np.median([bf16.gemm(X, P, n, reps=5)[1]
                                                 for _ in range(rounds)])) * 1e-9)
            g_np = fl / _median(lambda: X @ W, 5, rounds) * 1e-9
            print(f"{'':15}{f'{m} x {k} x {n}':>14}" + "".join(f"{g:>12.1f}" for g in row)
                  + f"{g_np:>10.1f}   {load()}", flush=True)
    bf16._set_simd_level(old)
    model = Sequential(Dense(784, 256, "relu"), Dense(256, 256, "relu"), Dense(256, 10), seed=0)
    X = rng.random((10000, 784), dtype=np.float32)
    h = X.astype(np.float64)
    for i, m in enumerate(model):
        h = h @ m.weight.data.astype(np.float64) + m.bias.data
        h = np.maximum(h, 0) if i < 2 else h
    scale = np.abs(h).max(1, keepdims=True)
    for precision in ("float32", "bfloat16"):
        out = model.predict(X, precision=precision)
        err = np.abs(out - h) / scale
        print(f"{precision}: max error / row max |output| {err.max():.2e} (median "
              f"{np.median(err):.1e}), argmax as float64 {np.mean(out.argmax(1) == h.argmax(1)):.2%}")


if __name__ == "__main__":
    main(sys.argv[1:])
