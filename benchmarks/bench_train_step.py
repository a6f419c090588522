"""One training step of 784-256-256-10 relu (cross-entropy, Adam, float32): fastnn vs NumPy.

A step is forward, loss gradient, backward and the Adam update, at batch 16 and 128, with 1 and
2 threads (NumPy's BLAS is limited to the same count through threadpoolctl). The NumPy baseline
is a clean vectorized implementation: one matrix product per layer and direction, in-place
moment updates, no input gradient for the first layer.

    python -m pytest benchmarks/bench_train_step.py --benchmark-only   # pytest-benchmark groups
    python benchmarks/bench_train_step.py                              # a table of ratios
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

SIZES = (784, 256, 256, 10)
BATCHES = (16, 128)
THREADS = (1, 2)


def make_data(batch, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((batch, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, SIZES[-1], batch)
    return X, y


class FastnnStep:
    def __init__(self, batch, n_threads, seed=0):
        from fastnn import losses, optim
        from fastnn.layers import Dense
        from fastnn.model import Sequential

        self.model = Sequential(Dense(784, 256, "relu", seed=seed),
                                Dense(256, 256, "relu", seed=seed + 1),
                                Dense(256, 10, seed=seed + 2), n_threads=n_threads)
        self.opt = optim.Adam(self.model.parameters(), lr=1e-3, n_threads=n_threads)
        self.loss = losses.CrossEntropyLoss()
        self.X, self.y = make_data(batch)
        self.g = np.empty((batch, 10), np.float32)

    def __call__(self):
        model = self.model
        model.zero_grad()
        z = model.forward(self.X)
        value, _ = self.loss.loss_and_grad(z, self.y, grad_out=self.g)
        model.backward(self.g, need_input_grad=False, inplace=True)
        self.opt.step()
        return value


class NumpyStep:
    """The same step in plain vectorized NumPy (float32 throughout)."""

    def __init__(self, batch, seed=0, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        rng = np.random.default_rng(seed)
        self.params = []
        for fan_in, fan_out in zip(SIZES, SIZES[1:]):
            bound = np.sqrt(6.0 / fan_in)
            self.params += [rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32),
                            np.zeros(fan_out, np.float32)]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0
        self.lr, self.betas, self.eps = lr, betas, eps
        self.X, self.y = make_data(batch)

    def __call__(self):
        W1, b1, W2, b2, W3, b3 = self.params
        X, y = self.X, self.y
        n = X.shape[0]
        z1 = X @ W1 + b1
        h1 = np.maximum(z1, 0)
        z2 = h1 @ W2 + b2
        h2 = np.maximum(z2, 0)
        z3 = h2 @ W3 + b3
        z3 -= z3.max(axis=1, keepdims=True)
        e = np.exp(z3)
        s = e.sum(axis=1, keepdims=True)
        value = float(np.mean(np.log(s[:, 0]) - z3[np.arange(n), y]))
        d3 = e / s
        d3[np.arange(n), y] -= 1
        d3 /= n
        d2 = (d3 @ W3.T) * (z2 > 0)
        d1 = (d2 @ W2.T) * (z1 > 0)
        grads = [X.T @ d1, d1.sum(0), h1.T @ d2, d2.sum(0), h2.T @ d3, d3.sum(0)]
        self.t += 1
        b1_, b2_ = self.betas
        # a Python float: a np.float64 scalar would promote the float32 update to float64
        step = self.lr * math.sqrt(1 - b2_ ** self.t) / (1 - b1_ ** self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1_
            m += (1 - b1_) * g
            v *= b2_
            v += (1 - b2_) * (g * g)
            p -= step * m / (np.sqrt(v) + self.eps)
        return value


def _make(impl, batch, n_threads):
    return FastnnStep(batch, n_threads) if impl == "fastnn" else NumpyStep(batch)


@pytest.mark.parametrize("n_threads", THREADS, ids=lambda t: f"t{t}")
@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("impl", ["fastnn", "numpy"])
def test_train_step(benchmark, impl, batch, n_threads):
    benchmark.group = f"train_step 784-256-256-10 relu adam f32 batch={batch} threads={n_threads}"
    step = _make(impl, batch, n_threads)
    with threadpool_limits(limits=n_threads, user_api="blas"):
        for _ in range(5):
            step()
        benchmark.pedantic(step, rounds=30, iterations=10, warmup_rounds=1)


def _time(step, n_threads, repeats=5, min_time=0.2, clock=time.perf_counter):
    """Best per-step time over ``repeats`` runs of at least ``min_time`` seconds each."""
    with threadpool_limits(limits=n_threads, user_api="blas"):
        for _ in range(5):
            step()
        t0 = time.perf_counter()
        k = 0
        while time.perf_counter() - t0 < 0.05:
            step()
            k += 1
        per = (time.perf_counter() - t0) / k
        iters = max(1, int(min_time / per))
        best = float("inf")
        for _ in range(repeats):
            t0 = clock()
            for _ in range(iters):
                step()
            best = min(best, (clock() - t0) / iters)
    return best


def main(argv=None):
    """Print a markdown table. Steps are timed interleaved (fastnn, NumPy, fastnn, ...) and
    the best of each kept, so a change of machine load hits both. With 1 thread the CPU time
    of the process is reported too: on a shared machine it excludes the time spent waiting for
    a core, which wall-clock time does not."""
    import os
    print(f"load average before: {os.getloadavg()}")
    print("| batch | threads | fastnn (us/step) | NumPy (us/step) | speed-up | "
          "CPU-time speed-up | target |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for batch in BATCHES:
        for t in THREADS:
            f, n = FastnnStep(batch, t), NumpyStep(batch)
            tf, tn, cf, cn = [], [], [], []
            for _ in range(3):
                tf.append(_time(f, t, repeats=3))
                tn.append(_time(n, t, repeats=3))
                if t == 1:
                    cf.append(_time(f, t, repeats=3, clock=time.process_time))
                    cn.append(_time(n, t, repeats=3, clock=time.process_time))
            tf, tn = min(tf), min(tn)
            cpu = f"{min(cn) / min(cf):.2f}x" if t == 1 else "-"
            target = "3x" if batch == 16 else "1.5x"
            print(f"| {batch} | {t} | {tf * 1e6:,.0f} | {tn * 1e6:,.0f} | {tn / tf:.2f}x "
                  f"| {cpu} | {target} |", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main(sys.argv[1:])
