"""Activations and dropout on 1e6 and 1e7 float32 elements: fastnn vs NumPy, 1 and 2 threads.

NumPy baselines are what a NumPy user writes: ``np.maximum(z, 0)``, ``1 / (1 + np.exp(-z))``,
``np.tanh(z)``; backward ``g * (y > 0)``, ``g * y * (1 - y)``, ``g * (1 - y * y)``; dropout
``X * (rng.random(X.shape, dtype=np.float32) >= p) * np.float32(1 / (1 - p))``.
Both sides allocate their outputs. Target: >= 2x NumPy.

    python -m pytest benchmarks/bench_elementwise.py --benchmark-only
    PYTHONPATH=. python benchmarks/bench_elementwise.py   # a table (source tree) of medians and ratios
    PYTHONPATH=. python benchmarks/bench_elementwise.py simd   # ns/element at each vector width

The ``simd`` table runs one child process per vector width (FASTNN_SIMD=baseline|avx2|avx512
caps it when the kernels load) on 1e6 elements, 1 thread.
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


SIMD_ACTS = ["sigmoid", "tanh", "silu", "gelu_tanh", "elu", "relu"]
_SIMD_CHILD = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
from conftest import median_time
import fastnn.functional as F
from fastnn._kernels import softmax as K
out = [K.simd_level()]
for dtype in (np.float32, np.float64):
    rng = np.random.default_rng(0)
    z = (rng.standard_normal(1_000_000) * 3).astype(dtype)
    g = rng.standard_normal(z.shape).astype(dtype)
    for act in sys.argv[2].split(","):
        y = F.activation(z, act, n_threads=1)
        t_f = median_time(lambda: F.activation(z, act, n_threads=1), 0.3, 200, 5)
        t_b = median_time(lambda: F.activation_backward(y, g, act, n_threads=1, z=z), 0.3, 200, 5)
        out += [f"{t_f * 1e9 / z.size:.3f}", f"{t_b * 1e9 / z.size:.3f}"]
print(" ".join(out))
"""


def simd():
    """ns/element of activation forward/backward at each vector width (1 thread, 1e6)."""
    import subprocess
    from fastnn._kernels import softmax as K
    print("\n".join(machine_facts()))
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    levels = [lv for i, lv in enumerate(K.SIMD_LEVELS) if i <= K._supported_level()]
    rows = {}
    for lv in levels:
        env = dict(os.environ, FASTNN_SIMD=lv)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        res = subprocess.run([sys.executable, "-c", _SIMD_CHILD, here, ",".join(SIMD_ACTS)],
                             env=env, cwd=root, capture_output=True, text=True, check=True)
        got = res.stdout.split()
        rows[got[0]] = [float(v) for v in got[1:]]
    print("1e6 elements, 1 thread, ns/element (medians), forward / backward")
    print(f"{'activation':<22}" + "".join(f"{lv:>20}" for lv in rows))
    k = 0
    for dtype in ("float32", "float64"):
        for act in SIMD_ACTS:
            print(f"{act + ' ' + dtype:<22}" + "".join(
                f"{v[k]:>10.3f} /{v[k + 1]:>7.3f}" for v in rows.values()))
            k += 2
    if hasattr(os, "getloadavg"):
        print("load average at end: %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    if sys.argv[1:] == ["simd"]:
        simd()
    else:
        main()
