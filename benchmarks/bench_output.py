"""Softmax and sparsemax over 256 rows of C classes: fastnn vs NumPy, 1 and 2 threads.

C in {10, 100, 1000, 1e4, 1e5}; rows are standard normal (float32 by default). Baselines:

* NumPy stable softmax: ``e = np.exp(z - z.max(1, keepdims=True)); e / e.sum(1, keepdims=True)``;
* NumPy sparsemax: the vectorized sort-based algorithm (sort each row, cumulative sums, k(z),
  tau, ``np.maximum(z - tau, 0)``).

NumPy runs single-threaded whatever the thread count (no BLAS involved). Targets: sparsemax
"auto" >= 5x NumPy's sparsemax and "select" >= 3x fastnn's "sort" for C >= 1000; softmax >= 1.5x
NumPy's softmax; sparsemax "auto" at most 1.5x fastnn's softmax.

PyTorch and the entmax package, when importable, join as peers (1 thread): ``torch.softmax``
and ``entmax.sparsemax`` (sort and cumulative sum on the tensor). Targets: softmax at C >= 1000
no slower than PyTorch's; sparsemax >= 30x entmax's at C = 1000.

    python -m pytest benchmarks/bench_output.py --benchmark-only
    python benchmarks/bench_output.py [float32|float64]    # a table of medians and ratios
    python benchmarks/bench_output.py peers [float32]      # ns/element: each vector width, peers
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import machine_facts, median_time, run

N_ROWS = 256
CLASSES = [10, 100, 1000, 10_000, 100_000]
IMPLS = ["numpy softmax", "fastnn softmax", "numpy sparsemax", "fastnn sparsemax sort",
         "fastnn sparsemax select", "fastnn sparsemax auto"]


def make(c, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal((N_ROWS, c)).astype(dtype)


def numpy_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def numpy_sparsemax(z):
    u = z - z.max(axis=1, keepdims=True)
    s = -np.sort(-u, axis=1)
    cs = np.cumsum(s, axis=1)
    k = np.arange(1, z.shape[1] + 1, dtype=z.dtype)
    kz = (1 + k * s > cs).sum(axis=1)
    tau = (cs[np.arange(z.shape[0]), kz - 1] - 1) / kz
    return np.maximum(u - tau[:, None], 0)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _entmax():
    try:
        import entmax
    except ImportError:
        return None
    return entmax


PEERS = (["torch softmax"] if _torch() else []) + (["entmax sparsemax"] if _entmax() else [])


def implementation(name, z, nt):
    import fastnn.functional as F
    if name == "torch softmax":
        torch = _torch()
        torch.set_num_threads(nt)
        zt = torch.from_numpy(z)
        return lambda: torch.softmax(zt, 1)
    if name == "entmax sparsemax":
        torch = _torch()
        torch.set_num_threads(nt)
        zt = torch.from_numpy(z)
        return lambda: _entmax().sparsemax(zt, dim=1)
    if name == "numpy softmax":
        return lambda: numpy_softmax(z)
    if name == "numpy sparsemax":
        return lambda: numpy_sparsemax(z)
    if name == "fastnn softmax":
        return lambda: F.softmax(z, n_threads=nt)
    method = name.rsplit(" ", 1)[1]
    return lambda: F.sparsemax(z, method=method, n_threads=nt)


def _rounds(name, c):
    if c < 10_000:
        return None
    slow = name in ("numpy sparsemax", "fastnn sparsemax sort")
    return 3 if slow and c >= 100_000 else (5 if slow or c >= 100_000 else 15)


@pytest.mark.parametrize("c", CLASSES, ids=[f"C{c:g}" for c in CLASSES])
@pytest.mark.parametrize("impl", IMPLS + PEERS)
def test_output(benchmark, impl, c, n_threads):
    if impl == "entmax sparsemax" and c > 10_000:
        pytest.skip("entmax's sort at C > 1e4: minutes")
    z = make(c)
    benchmark.group = f"output 256 x {c} float32 t{n_threads}"
    run(benchmark, implementation(impl, z, n_threads), rounds=_rounds(impl, c))



def _median(fn, budget=0.4, max_rounds=200, min_rounds=3):
    return median_time(fn, budget, max_rounds, min_rounds)


def main(dtype=np.float32):
    print("\n".join(machine_facts()))
    print(f"dtype {np.dtype(dtype).name}, {N_ROWS} rows; medians in ms")
    short = ["np sm", "sm", "np spm", "sort", "select", "auto"]
    print(f"{'C':>7}{'thr':>4}" + "".join(f"{s:>9}" for s in short)
          + "  sm/np  auto/np-spm  sort/select  auto/sm")
    for c in CLASSES:
        z = make(c, dtype)
        for nt in (1, 2):
            t = {name: _median(implementation(name, z, nt)) for name in IMPLS}
            print(f"{c:>7}{nt:>4}" + "".join(f"{t[n] * 1e3:>9.3f}" for n in IMPLS)
                  + f"  {t['numpy softmax'] / t['fastnn softmax']:>5.2f}x"
                  + f"  {t['numpy sparsemax'] / t['fastnn sparsemax auto']:>10.1f}x"
                  + f"  {t['fastnn sparsemax sort'] / t['fastnn sparsemax select']:>10.1f}x"
                  + f"  {t['fastnn sparsemax auto'] / t['fastnn softmax']:>6.2f}", flush=True)
    if hasattr(os, "getloadavg"):
        print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


def peers(dtype=np.float32):
    """ns/element, 1 thread, 256 rows: fastnn softmax at each vector width it can use, PyTorch,
    NumPy; then sparsemax against entmax at C = 1000. Medians; ratios from the same run."""
    from fastnn._kernels import softmax as K
    import fastnn.functional as F
    print("\n".join(machine_facts()))
    levels = [lv for i, lv in enumerate(K.SIMD_LEVELS) if i <= K._supported_level()]
    print(f"dtype {np.dtype(dtype).name}, {N_ROWS} rows, 1 thread; ns/element (medians); "
          f"default vector width: {K.simd_level()}")
    names = [f"fastnn {lv}" for lv in levels] + (["torch"] if _torch() else []) + ["numpy"]
    print(f"{'C':>7}" + "".join(f"{n:>16}" for n in names) + "  torch/fastnn")
    default = K.simd_level()
    for c in CLASSES[:4]:
        z = make(c, dtype)
        t = {}
        for lv in levels:
            K._set_simd_level(lv)
            t[f"fastnn {lv}"] = _median(lambda: F.softmax(z, n_threads=1), budget=1.0)
        K._set_simd_level(default)
        if _torch():
            t["torch"] = _median(implementation("torch softmax", z, 1), budget=1.0)
        t["numpy"] = _median(lambda: numpy_softmax(z), budget=1.0)
        ratio = (f"  {t['torch'] / t[f'fastnn {default}']:>10.2f}x" if "torch" in t else "")
        print(f"{c:>7}" + "".join(f"{t[n] * 1e9 / z.size:>16.3f}" for n in names) + ratio,
              flush=True)
    z = make(1000, dtype)
    t_fn = _median(lambda: F.sparsemax(z, n_threads=1), budget=1.0)
    line = f"sparsemax C=1000: fastnn {t_fn * 1e3:.3f} ms"
    if _entmax():
        t_em = _median(implementation("entmax sparsemax", z, 1), budget=2.0)
        line += f", entmax {t_em * 1e3:.3f} ms, entmax/fastnn {t_em / t_fn:.1f}x"
    t_np = _median(lambda: numpy_sparsemax(z), budget=1.0)
    line += f", numpy {t_np * 1e3:.3f} ms"
    print(line)
    if hasattr(os, "getloadavg"):
        print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "peers":
        peers(np.dtype(args[1]) if len(args) > 1 else np.float32)
    else:
        main(np.dtype(args[0]) if args else np.float32)
