"""Shared benchmark helpers: a header with the machine and BLAS facts, thread-count fixtures.

Benchmarks compare fastnn with NumPy in the same pytest-benchmark group. NumPy's own BLAS is
limited to the same thread count through threadpoolctl, so "2 threads" means 2 for both.
Time NumPy with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, e.g.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/bench_dense.py \
        --benchmark-only
"""
from __future__ import annotations

import contextlib
import os
import platform
import time

import numpy as np
import pytest


def machine_facts() -> list[str]:
    """Lines describing the machine, its load and the BLAS libraries (via threadpoolctl)."""
    lines = [f"machine: {platform.machine()} {platform.processor() or ''} "
             f"cpus={os.cpu_count()} python={platform.python_version()} numpy={np.__version__}"]
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")),
                         None)
        if model:
            lines.append(f"cpu: {model}")
    except OSError:
        pass
    if hasattr(os, "getloadavg"):
        lines.append("load average at start: %.2f %.2f %.2f" % os.getloadavg())
    try:
        from threadpoolctl import threadpool_info
        for e in threadpool_info():
            lines.append(f"{e.get('user_api')}: {e.get('internal_api')} {e.get('version') or ''} "
                         f"kernel={e.get('architecture')} threads={e.get('num_threads')} "
                         f"({os.path.basename(e.get('filepath') or '')})")
    except Exception as exc:  # threadpoolctl missing: still run the benchmarks
        lines.append(f"threadpoolctl unavailable: {exc}")
    for var in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_NUM_THREADS",
                "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            lines.append(f"{var}={os.environ[var]}")
    return lines


def pytest_report_header(config):
    import fastnn  # noqa: F401  (loads fastnn's OpenMP runtime and scipy's BLAS for the report)
    return machine_facts()


@pytest.fixture(params=[1, 2], ids=["t1", "t2"])
def n_threads(request):
    """Thread count for both fastnn (n_threads=) and NumPy (its BLAS, via threadpoolctl)."""
    return request.param


@contextlib.contextmanager
def numpy_threads(n):
    """Limit every BLAS/OpenMP pool in the process (NumPy's BLAS included) to n threads."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=n):
        yield


def run(benchmark, fn, rounds=None, warmup=1):
    """Run fn under pytest-benchmark: pedantic with fixed rounds when given, else adaptive."""
    if rounds is None:
        return benchmark(fn)
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup)


def median_time(fn, budget=1.0, max_rounds=200, min_rounds=5):
    """Median seconds of ``fn()`` over repeated calls (one warm-up call first), for the
    stand-alone table scripts: at least ``min_rounds``, then until ``budget`` seconds pass or
    ``max_rounds`` calls."""
    fn()
    times = []
    end = time.perf_counter() + budget
    while len(times) < max_rounds and (len(times) < min_rounds or time.perf_counter() < end):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
