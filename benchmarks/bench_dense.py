"""Dense layer forward (+ fused relu) and backward: fastnn vs NumPy, float32, 1 and 2 threads.

Shapes (batch, in, out): (1, 784, 256), (16, 784, 256), (128, 784, 256), (1024, 4096, 4096).
The NumPy baseline is the idiomatic in-place version: ``Z = X @ W; Z += b; np.maximum(Z, 0,
out=Z)`` forward; ``dZ = G * (Y > 0); dW = X.T @ dZ; db = dZ.sum(0); dX = dZ @ W.T`` backward.
Both sides allocate their outputs. Targets: >= 1.0x NumPy at every size, >= 1.3x at batch 128.

    python -m pytest benchmarks/bench_dense.py --benchmark-only
    PYTHONPATH=. python benchmarks/bench_dense.py   # a table (source tree) of medians and ratios
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import machine_facts, median_time, numpy_threads, run

SHAPES = [(1, 784, 256), (16, 784, 256), (128, 784, 256), (1024, 4096, 4096)]


def rounds_for(shape):
    n, i, o = shape
    work = n * i * o
    return 5 if work > 1e9 else None   # the large case takes ~0.1-0.5 s a call


def make(shape, seed=0):
    n, i, o = shape
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, i), dtype=np.float32)
    W = (rng.standard_normal((i, o), dtype=np.float32) / np.float32(np.sqrt(i)))
    b = rng.standard_normal(o, dtype=np.float32)
    G = rng.standard_normal((n, o), dtype=np.float32)
    return X, W, b, G


def numpy_forward(X, W, b):
    Z = X @ W
    Z += b
    np.maximum(Z, 0, out=Z)
    return Z


def numpy_backward(X, W, Y, G):
    dZ = G * (Y > 0)
    dW = X.T @ dZ
    db = dZ.sum(axis=0)
    dX = dZ @ W.T
    return dX, dW, db


def fastnn_forward(X, W, b, n_threads):
    from fastnn.functional import dense_forward
    return dense_forward(X, W, b, "relu", n_threads=n_threads)


def fastnn_backward(X, W, Y, G, n_threads):
    from fastnn.functional import dense_backward
    return dense_backward(X, W, Y, G, "relu", n_threads=n_threads)


def _id(shape):
    return "x".join(map(str, shape))


@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("impl", ["numpy", "fastnn"])
def test_dense_forward(benchmark, impl, shape, n_threads):
    X, W, b, _ = make(shape)
    benchmark.group = f"dense forward+relu {_id(shape)} t{n_threads}"
    with numpy_threads(n_threads):
        if impl == "numpy":
            run(benchmark, lambda: numpy_forward(X, W, b), rounds_for(shape))
        else:
            run(benchmark, lambda: fastnn_forward(X, W, b, n_threads), rounds_for(shape))


@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("impl", ["numpy", "fastnn"])
def test_dense_backward(benchmark, impl, shape, n_threads):
    X, W, b, G = make(shape)
    Y = numpy_forward(X, W, b)
    benchmark.group = f"dense backward relu {_id(shape)} t{n_threads}"
    with numpy_threads(n_threads):
        if impl == "numpy":
            run(benchmark, lambda: numpy_backward(X, W, Y, G), rounds_for(shape))
        else:
            run(benchmark, lambda: fastnn_backward(X, W, Y, G, n_threads), rounds_for(shape))



def _median(fn, budget=1.0, max_rounds=200, min_rounds=5):
    return median_time(fn, budget, max_rounds, min_rounds)


def main(argv=None):
    """Print a table: median time of NumPy and fastnn and their ratio, per case."""
    from threadpoolctl import threadpool_limits

    import fastnn  # noqa: F401  (load scipy's BLAS and the OpenMP runtime before the report)
    print("\n".join(machine_facts()))
    print(f"{'case':<34}{'thr':>4}{'numpy ms':>11}{'fastnn ms':>11}{'speedup':>9}")
    for shape in SHAPES:
        X, W, b, G = make(shape)
        Y = numpy_forward(X, W, b)
        budget = 3.0 if shape[0] * shape[1] * shape[2] > 1e9 else 1.0
        for nt in (1, 2):
            with threadpool_limits(limits=nt):
                for name, f_np, f_fn in (
                        ("forward+relu", lambda: numpy_forward(X, W, b),
                         lambda: fastnn_forward(X, W, b, nt)),
                        ("backward relu", lambda: numpy_backward(X, W, Y, G),
                         lambda: fastnn_backward(X, W, Y, G, nt))):
                    # interleave to share any load drift between the two sides
                    t_np = _median(f_np, budget / 2)
                    t_fn = _median(f_fn, budget / 2)
                    t_np = min(t_np, _median(f_np, budget / 2))
                    t_fn = min(t_fn, _median(f_fn, budget / 2))
                    print(f"{name + ' ' + _id(shape):<34}{nt:>4}{t_np * 1e3:>11.3f}"
                          f"{t_fn * 1e3:>11.3f}{t_np / t_fn:>8.2f}x", flush=True)
    if hasattr(os, "getloadavg"):
        print("load average at end: %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main(sys.argv[1:])
