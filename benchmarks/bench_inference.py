"""One-call inference: fastnn ``predict`` (and the evaluation-mode ``forward``) of a
784-256-256-10 relu network against NumPy, float32, 1 and 2 threads.

Cases: batch-1 latency and batch-1024 throughput. Every side ends with the argmax of the
logits. The NumPy baseline is three matmuls with bias and relu: ``h = np.maximum(x @ W1 + b1,
0)``, ``h = np.maximum(h @ W2 + b2, 0)``, ``(h @ W3 + b3).argmax(1)``, its BLAS limited to the
same thread count. Targets (issue 12): batch-1 latency <= 0.5x NumPy's, batch-1024 throughput
>= 1.5x NumPy's. The table also times ``predict(X, precision="bfloat16")`` (bfloat16 products,
an opt-in that changes results: not in the pytest cases, which check the argmax against NumPy's).

    python -m pytest benchmarks/bench_inference.py --benchmark-only
    PYTHONPATH=. python benchmarks/bench_inference.py   # a table of medians and ratios
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import machine_facts, median_time, numpy_threads, run

SIZES = (784, 256, 256, 10)
BATCHES = (1, 1024)


def make(batch, seed=0):
    """The network (fastnn, eval mode), its weights as NumPy arrays, and a batch."""
    from fastnn import Sequential
    from fastnn.layers import Dense

    model = Sequential(Dense(784, 256, "relu"), Dense(256, 256, "relu"), Dense(256, 10),
                       seed=seed)
    model.eval()
    params = [(m.weight.data.copy(), m.bias.data.copy()) for m in model]
    X = np.random.default_rng(seed).random((batch, SIZES[0]), dtype=np.float32)
    return model, params, X


def numpy_predict(params, X):
    (W1, b1), (W2, b2), (W3, b3) = params
    h = np.maximum(X @ W1 + b1, 0)
    h = np.maximum(h @ W2 + b2, 0)
    return (h @ W3 + b3).argmax(1)


def fastnn_predict(model, X):
    return model.predict(X).argmax(1)


def fastnn_forward(model, X):
    return model.forward(X).argmax(1)


def fastnn_predict_bf16(model, X):
    return model.predict(X, precision="bfloat16").argmax(1)


def layers_forward(model, X):
    """The layer-by-layer path (one kernel call per layer), for contrast."""
    for m in model:
        X = m.forward(X)
    return X.argmax(1)


IMPLS = {"numpy": lambda model, params, X: numpy_predict(params, X),
         "fastnn predict": lambda model, params, X: fastnn_predict(model, X),
         "fastnn forward": lambda model, params, X: fastnn_forward(model, X)}
TABLE = dict(IMPLS, layers=lambda model, params, X: layers_forward(model, X),
             bf16=lambda model, params, X: fastnn_predict_bf16(model, X))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl", list(IMPLS))
def test_inference(benchmark, impl, batch, n_threads):
    model, params, X = make(batch)
    model.n_threads = n_threads
    fn = IMPLS[impl]
    np.testing.assert_array_equal(fn(model, params, X), numpy_predict(params, X))
    benchmark.group = f"inference 784-256-256-10 batch {batch} t{n_threads}"
    with numpy_threads(n_threads):
        run(benchmark, lambda: fn(model, params, X))


def main(argv=None):
    """Print a table: medians of NumPy and fastnn, interleaved, with their ratios."""
    import fastnn  # noqa: F401  (load the BLAS and the OpenMP runtime before the report)
    rounds = int(argv[0]) if argv else 3
    print("\n".join(machine_facts()))
    print(f"{'batch':>6}{'thr':>4}{'numpy us':>11}{'predict us':>12}{'forward us':>12}"
          f"{'layers us':>11}{'bf16 us':>10}{'np/predict':>12}{'np/forward':>12}{'np/bf16':>10}"
          f"   load")
    for batch in BATCHES:
        model, params, X = make(batch)
        budget = 0.5 if batch == 1 else 1.0
        for nt in (1, 2):
            model.n_threads = nt
            with numpy_threads(nt):
                best = {k: [] for k in TABLE}
                for _ in range(rounds):          # interleaved: load drift hits every side
                    for k, fn in TABLE.items():
                        best[k].append(median_time(
                            lambda fn=fn, model=model, params=params, X=X: fn(model, params, X),
                            budget))
                t = {k: float(np.median(v)) for k, v in best.items()}
            load = " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(
                os, "getloadavg") else "?"
            print(f"{batch:>6}{nt:>4}{t['numpy'] * 1e6:>11.1f}{t['fastnn predict'] * 1e6:>12.1f}"
                  f"{t['fastnn forward'] * 1e6:>12.1f}{t['layers'] * 1e6:>11.1f}"
                  f"{t['bf16'] * 1e6:>10.1f}"
                  f"{t['numpy'] / t['fastnn predict']:>11.2f}x"
                  f"{t['numpy'] / t['fastnn forward']:>11.2f}x"
                  f"{t['numpy'] / t['bf16']:>9.2f}x   {load}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
