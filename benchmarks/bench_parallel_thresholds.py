"""Where each kernel's OpenMP loop starts to pay: serial against 2 threads, by size.

Every kernel module with an OpenMP path runs serially below a parallel threshold
(``fastnn.functional.runtime.parallel_thresholds()``). The rule that sets each one: the smallest
size from which the 2-thread loop is faster than the serial loop, in medians of interleaved runs,
with some margin because one slow thread stalls a region. This script prints, for each kernel
and size, the serial time, the 2-thread time (the threshold forced to 0) and their ratio, next to
the threshold in force. Numbers and the machine: benchmarks/README.md, "Parallel thresholds".

    PYTHONPATH=. python benchmarks/bench_parallel_thresholds.py            # every kernel
    PYTHONPATH=. python benchmarks/bench_parallel_thresholds.py dropout    # one of them
"""
from __future__ import annotations

import os
import statistics
import sys
import timeit

import numpy as np

import fastnn.functional as F
from fastnn import optim
from fastnn.functional import runtime
from fastnn.parameter import Parameter

SIZES = [1 << k for k in range(12, 22, 2)]   # 4k .. 1M elements


def _elementwise(name):
    def make(n, rng):
        z = rng.standard_normal(n).astype(np.float32)
        y = np.empty_like(z)
        if name == "dropout":
            return lambda nt: F.dropout(z, 0.5, seed=1, out=y, n_threads=nt)
        return lambda nt: F.activation(z, name, out=y, n_threads=nt)
    return make


def _cross_entropy(n, rng):
    c = 100
    z = rng.standard_normal((max(n // c, 2), c)).astype(np.float32)
    y = rng.integers(0, c, z.shape[0])
    return lambda nt: F.cross_entropy(z, y, n_threads=nt)


def _adam(n, rng):
    p = Parameter(rng.standard_normal(n).astype(np.float32))
    p.grad[...] = 1e-3
    opt = optim.Adam([p], lr=1e-3, n_threads=2)

    def step(nt):
        opt.n_threads = nt
        opt.step()
    return step


#: (label, kernel module, its threshold names, a maker of a call taking n_threads).
CASES = [
    ("relu", "activations", ("cheap_min_elements",), _elementwise("relu")),
    ("tanh", "activations", ("transcendental_min_elements",), _elementwise("tanh")),
    ("dropout", "dropout", ("min_elements",), _elementwise("dropout")),
    ("cross_entropy (100 classes)", "losses", ("min_elements",), _cross_entropy),
    ("adam (float32)", "optim", ("min_work",), _adam),
]


def measure(call, parallel, repeats=9):
    """Median seconds per call of ``call(2)`` with the loop forced serial or parallel."""
    return statistics.median(_times(call, parallel, repeats))


def _times(call, parallel, repeats):
    out = []
    number = max(1, int(0.005 / max(timeit.timeit(lambda: call(2), number=3) / 3, 1e-7)))
    for _ in range(repeats):
        with parallel():
            out.append(timeit.timeit(lambda: call(2), number=number) / number)
    return out


def run(only=None):
    rng = np.random.default_rng(0)
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    print(f"{'kernel':30s} {'elements':>9s} {'serial us':>10s} {'2 threads us':>13s} "
          f"{'2t/serial':>9s}  threshold")
    for label, kernel, names, make in CASES:
        if only and kernel not in only:
            continue
        threshold = runtime.parallel_thresholds()[kernel][names[0]]
        for n in SIZES:
            call = make(n, rng)
            serial, two = [], []
            for _ in range(7):   # interleaved: serial, then parallel, each a short median
                serial.append(measure(call, lambda: runtime.override_thresholds(
                    kernel, **{k: 1 << 62 for k in names}), 3))
                two.append(measure(call, lambda: runtime.override_thresholds(
                    kernel, **{k: 0 for k in names}), 3))
            s, t = statistics.median(serial), statistics.median(two)
            print(f"{label:30s} {n:9d} {s * 1e6:10.1f} {t * 1e6:13.1f} {t / s:9.2f}  "
                  f"{threshold}", flush=True)


if __name__ == "__main__":
    run(set(sys.argv[1:]) or None)
