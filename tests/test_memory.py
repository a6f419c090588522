"""No memory growth in steady state: 10,000 training steps, 100,000 predict calls, and the
allocating functional calls, measured as resident memory (/proc/self/statm) after a warm-up.

A leak of even one small array per step would show here: 10,000 steps x (8 x 16 floats) is
5 MB, above the budget. The network is tiny so that the whole file runs in seconds.
"""
import gc
import os

import numpy as np
import pytest

from fastnn import Dense, Dropout, Sequential
from fastnn import functional as F

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                       reason="resident memory is read from /proc/self/statm (Linux)"),
    pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                       reason="AddressSanitizer's quarantine keeps freed memory resident"),
]

BUDGET = 2 * 1024 * 1024  # bytes of resident-memory growth tolerated after the warm-up


def rss() -> int:
    gc.collect()
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _growth(step, n, warmup):
    for _ in range(warmup):
        step()
    before = rss()
    for _ in range(n):
        step()
    growth = rss() - before
    print(f"resident memory growth: {growth / 1024:.0f} KiB over {n} calls")
    return growth


def _net():
    return Sequential(Dense(8, 16, activation="relu", seed=0), Dropout(0.2, seed=1),
                      Dense(16, 16, activation="tanh", seed=2), Dense(16, 3, seed=3))


def test_10000_training_steps_in_one_fit():
    rng = np.random.default_rng(0)
    n_steps = 10_000
    X = rng.standard_normal((4 * n_steps, 8)).astype(np.float32)
    y = rng.integers(0, 3, 4 * n_steps)
    model = _net()
    model.fit(X[:400], y[:400], batch_size=4, epochs=2, seed=0, verbose=0)  # warm-up
    before = rss()
    hist = model.fit(X, y, batch_size=4, epochs=1, seed=0, verbose=0)
    growth = rss() - before
    print(f"resident memory growth: {growth / 1024:.0f} KiB over {n_steps} steps")
    assert np.isfinite(hist["loss"][0])
    # one epoch of 10,000 steps; the shuffled batches are gathered into two reused buffers
    assert growth < BUDGET, f"resident memory grew by {growth / 2**20:.2f} MiB over 10,000 steps"


def test_many_short_fits_and_evaluations():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 8)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    model = _net()

    def step():
        model.fit(X, y, batch_size=8, epochs=1, seed=0, verbose=0,
                  validation_data=(X[:8], y[:8]))
        model.evaluate(X, y)

    # 300 fit calls x 5 steps: per-call objects (History, iterator, callbacks) are freed
    growth = _growth(step, 300, warmup=30)
    assert growth < BUDGET, f"grew by {growth / 2**20:.2f} MiB over 300 fit calls"


def test_100000_predict_calls():
    rng = np.random.default_rng(2)
    model = _net()
    Xs = [rng.standard_normal((k, 8)).astype(np.float32) for k in (1, 3, 4)]
    calls = iter(range(10**9))

    def step():
        model.predict(Xs[next(calls) % 3])

    growth = _growth(step, 100_000, warmup=1000)
    assert growth < BUDGET, f"grew by {growth / 2**20:.2f} MiB over 100,000 predict calls"


def test_allocating_functional_calls_and_scratch_kernels():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((16, 8)).astype(np.float32)
    W = rng.standard_normal((8, 24)).astype(np.float32)
    b = np.zeros(24, np.float32)
    labels = rng.integers(0, 24, 16)

    def step():
        z = F.dense_forward(X, W, b, "relu")
        F.dense_backward(X, W, z, z, "relu")
        F.softmax(z)
        F.sparsemax(z)                       # malloc'ed scratch rows
        F.sparsemax_loss(z, labels, return_grad=True)   # malloc'ed scratch rows
        F.cross_entropy(z, labels, return_grad=True)
        F.dropout(z, 0.5, seed=1)

    growth = _growth(step, 5000, warmup=200)
    assert growth < BUDGET, f"grew by {growth / 2**20:.2f} MiB over 5,000 rounds"


def test_failed_calls_do_not_leak():
    """Validation errors raised after partial work (and exceptions' tracebacks) are freed."""
    X = np.ones((4, 8), np.float32)
    model = _net()

    def step():
        for bad in (X[:, :3], X.astype(np.float64)):
            try:
                model.predict(bad)
            except (ValueError, TypeError):
                pass
        try:
            F.cross_entropy(np.ones((4, 3)), [0, 1, 2, 5])
        except ValueError:
            pass

    growth = _growth(step, 5000, warmup=200)
    assert growth < BUDGET, f"grew by {growth / 2**20:.2f} MiB over 5,000 rounds of failing calls"
