"""Activations and dropout on 1e6 and 1e7 float32 elements: fastnn vs NumPy, 1 and 2 threads.

NumPy baselines are what a NumPy user writes: ``np.maximum(z, 0)``, ``1 / (1 + np.exp(-z))``,
``np.tanh(z)``; backward ``g * (y > 0)``, ``g * y * (1 - y)``, ``g * (1 - y * y)``; dropout
``X * (rng.random(X.shape, dtype=np.float32) >= p) * np.float32(1 / (1 - p))``.
Both sides allocate their outputs. Target: >= 2x NumPy.

    python -m pytest benchmarks/bench_elementwise.py --benchmark-only
    PYTHONPATH=. python benchmarks/bench_elementwise.py   # a table (source tree) of medians and ratios
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import machine_facts, median_time, run

SIZES = [1_000_000, 10_000_000]
P = 0.5


def make(n, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n, dtype=np.float32) * np.float32(3)
    g = rng.standard_normal(n, dtype=np.float32)
    return z, g


NUMPY_FWD = {
    "relu": lambda z: np.maximum(z, 0),
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": lambda z: np.tanh(z),
}
NUMPY_BWD = {
    "relu": lambda y, g: g * (y > 0),
    "sigmoid": lambda y, g: g * y * (1 - y),
    "tanh": lambda y, g: g * (1 - y * y),
}


def numpy_dropout(X, rng, p=P):
    return X * (rng.random(X.shape, dtype=np.float32) >= p) * np.float32(1 / (1 - p))


def cases(n, nt):
    """(name, numpy callable, fastnn callable) for one size and thread count."""
    import fastnn.functional as F
    z, g = make(n)
    rng = np.random.default_rng(1)
    out = []
    for act in ("relu", "sigmoid", "tanh"):
        y = NUMPY_FWD[act](z)
        out.append((f"{act} forward", lambda a=act: NUMPY_FWD[a](z),
                    lambda a=act: F.activation(z, a, n_threads=nt)))
        out.append((f"{act} backward", lambda a=act, y=y: NUMPY_BWD[a](y, g),
                    lambda a=act, y=y: F.activation_backward(y, g, a, n_threads=nt)))
    out.append(("dropout forward", lambda: numpy_dropout(z, rng),
                lambda: F.dropout(z, P, seed=123, n_threads=nt)))
    return out


CASE_NAMES = [name for name, _, _ in cases(16, 1)]


@pytest.mark.parametrize("n", SIZES, ids=["1e6", "1e7"])
@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("impl", ["numpy", "fastnn"])
def test_elementwise(benchmark, impl, case, n, n_threads):
    name, f_np, f_fn = next(c for c in cases(n, n_threads) if c[0] == case)
    benchmark.group = f"{case} n={n:.0e} t{n_threads}"
    run(benchmark, f_np if impl == "numpy" else f_fn, rounds=10 if n >= 10**7 else 30)



def _median(fn, budget=0.5, max_rounds=200, min_rounds=5):
    return median_time(fn, budget, max_rounds, min_rounds)


def main():
    import fastnn  # noqa: F401  (load scipy's BLAS and the OpenMP runtime before the report)
    print("\n".join(machine_facts()))
    print(f"{'case':<30}{'thr':>4}{'numpy ms':>11}{'fastnn ms':>11}{'speedup':>9}")
    for n in SIZES:
        for nt in (1, 2):
            for name, f_np, f_fn in cases(n, nt):
                t_np = min(_median(f_np), _median(f_np))
                t_fn = min(_median(f_fn), _median(f_fn))
                print(f"{name + f' n={n:.0e}':<30}{nt:>4}{t_np * 1e3:>11.3f}{t_fn * 1e3:>11.3f}"
                      f"{t_np / t_fn:>8.2f}x", flush=True)
    if hasattr(os, "getloadavg"):
        print("load average at end: %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
