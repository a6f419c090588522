"""fastnn.parallel: a worker's share of the cores, and the limit applied inside search trials."""
import threading

import joblib
import numpy as np
import pytest

import fastnn
from fastnn import Dense, Sequential, search
from fastnn.parallel import (
    available_cores,
    limit_threads,
    thread_info,
    threads_per_worker,
)


def test_threads_per_worker():
    assert threads_per_worker(1, cores=8) == 8
    assert threads_per_worker(3, cores=8) == 2
    assert threads_per_worker(16, cores=8) == 1          # at least one
    assert threads_per_worker(-1, cores=8) == max(1, 8 // joblib.cpu_count())
    with joblib.parallel_config(n_jobs=2):
        assert threads_per_worker(None, cores=8) == 4    # the active joblib configuration
    assert threads_per_worker(None, cores=8) == 8        # joblib's default: 1 job
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ValueError):
            threads_per_worker(bad)
    assert available_cores() >= 1


def test_limit_threads_sets_and_restores():
    before = thread_info()
    with limit_threads(1) as n:
        inside = thread_info()
    assert n == 1 and inside["openmp"] == 1 and inside["blas"] in (1, None)
    assert thread_info()["openmp"] == before["openmp"]
    assert thread_info()["blas"] == before["blas"]
    with limit_threads(None) as n:
        assert n is None and thread_info()["openmp"] == before["openmp"]
    with pytest.raises(ValueError), limit_threads(0):
        pass


def test_library_scan_kept_until_a_library_loads(tmp_path):
    """limit_threads reuses threadpoolctl's scan of the loaded libraries while the loader's
    counters stay the same, and scans again once a shared object is loaded."""
    import ctypes
    import shutil

    from fastnn import parallel
    from fastnn._kernels import _config
    from fastnn.functional import runtime

    if runtime.loaded_objects_generation() is None:
        pytest.skip("the dynamic loader does not count loaded objects here")
    with limit_threads(1):
        pass
    first = parallel._controller("openmp")
    assert parallel._controller("openmp") is first
    before = runtime.loaded_objects_generation()
    copy = tmp_path / "fastnn_loaded_objects_probe.so"   # a new path: a new shared object
    shutil.copyfile(_config.__file__, copy)
    ctypes.CDLL(str(copy))
    after = runtime.loaded_objects_generation()
    assert after[0] > before[0]
    again = parallel._controller("openmp")
    assert again is not first and parallel._controller("openmp") is again
    with limit_threads(1):
        assert thread_info()["openmp"] == 1


def _build(hidden, seed=None):
    model = Sequential(Dense(4, hidden, "tanh", seed=seed), Dense(hidden, 3, seed=seed),
                       dtype=np.float64)
    model.threads_seen = (threading.get_ident(), thread_info())
    return model


def test_search_limits_threads_inside_each_worker_thread():
    """joblib's threading backend: two trials at once in two threads of this process; each
    trial's OpenMP limit (per thread) is cores // 2, whatever the process default is."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = rng.integers(0, 3, 60)
    grid = {"hidden": [4, 6, 8, 10]}
    with joblib.parallel_config(backend="threading", n_jobs=2):
        res = search.grid_search(_build, grid, X[:40], y[:40], X[40:], y[40:],
                                 fit_params={"epochs": 2}, keep_models=True)
    expected = threads_per_worker(2)
    seen = [m.threads_seen for m in res.models]
    assert all(info["openmp"] == expected for _, info in seen), seen
    assert threading.get_ident() not in {tid for tid, _ in seen}
    assert thread_info()["openmp"] == fastnn._threads.resolve_n_threads(None)
    # an explicit n_threads wins
    res = search.grid_search(_build, grid, X[:40], y[:40], X[40:], y[40:],
                             fit_params={"epochs": 1}, keep_models=True, n_threads=1)
    assert all(m.threads_seen[1]["openmp"] == 1 for m in res.models)


def test_concurrent_limits_restore_blas():
    """Two threads limit at once and leave in the 'wrong' order (first in, first out): each saw
    its own OpenMP limit, and the BLAS count afterwards is the original one (threadpoolctl's
    own limiter, nested from two threads, would restore the second thread's saved value)."""
    before = thread_info()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with limit_threads(1):
            a_in.set()
            b_in.wait(5)
            seen["a"] = thread_info()
        a_out.set()

    def b():
        a_in.wait(5)
        with limit_threads(1):
            b_in.set()
            a_out.wait(5)
            seen["b"] = thread_info()        # a has left, b is still inside

    ts = [threading.Thread(target=f) for f in (a, b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert seen["a"]["openmp"] == seen["b"]["openmp"] == 1
    after = thread_info()
    assert after["blas"] == before["blas"] and after["openmp"] == before["openmp"]
