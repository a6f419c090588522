"""One-call inference of a graph Model: ``predict`` of the 784-(128 | 128)-256-10 relu graph
(two Dense branches on the input, concatenated, then Dense 256-256 and 256-10), float32, one
thread, through the compiled plan against the module path (``model.forward`` in evaluation
mode node by node, which is what ``predict`` ran before), and the evaluation-mode
``model.forward`` itself (one compiled call that also leaves every node the arrays its
backward reads). Batch-1 latency (median of single calls, microseconds) and batch-1024
throughput (samples/s, median of calls).

    PYTHONPATH=. python benchmarks/bench_inference_graph.py [repeats]
"""
from __future__ import annotations

import sys
import time

import numpy as np


def make(seed=0):
    from fastnn.graph import Concatenate, Input, Model
    from fastnn.layers import Dense

    x = Input(784)
    a = Dense(784, 128, "relu", seed=seed)(x)
    b = Dense(784, 128, "relu", seed=seed + 1)(x)
    h = Dense(256, 256, "relu", seed=seed + 2)(Concatenate()([a, b]))
    model = Model(x, Dense(256, 10, seed=seed + 3)(h))
    model.n_threads = 1
    return model


def median_s(f, repeats, inner):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            f()
        times.append((time.perf_counter() - t) / inner)
    return float(np.median(times))


def main(repeats=200):
    from fastnn.functional import inference as I

    model = make()
    assert I.why_not(model) is None and I.plan_for(model).is_graph
    rng = np.random.default_rng(0)
    rows = []
    for batch, inner in ((1, 20), (1024, 1)):
        X = rng.random((batch, 784), dtype=np.float32)
        one_call = I.eval_forward_many

        def layer_forward():
            I.eval_forward_many = lambda *a: None   # Model.forward: its node-by-node path
            try:
                return model.forward(X)
            finally:
                I.eval_forward_many = one_call

        model.eval()
        ref = np.array(layer_forward(), copy=True)
        np.testing.assert_allclose(model.forward(X), ref, rtol=1e-4, atol=1e-5)
        model.train()
        np.testing.assert_allclose(model.predict(X), ref, rtol=1e-4, atol=1e-5)

        model.eval()   # (predict's own mode; the two forwards are timed in it)

        def plan():
            model.predict(X)

        def modules():
            layer_forward()   # the module path of predict: node by node in evaluation mode

        def forward():
            model.forward(X)  # the evaluation-mode forward, one call

        # alternate the two sides so that a change of the machine's load hits both
        t_plan, t_mod, t_fwd = [], [], []
        n = repeats if batch == 1 else max(5, repeats // 10)
        for _ in range(3):
            t_plan.append(median_s(plan, n, inner))
            t_mod.append(median_s(modules, n, inner))
            t_fwd.append(median_s(forward, n, inner))
        rows.append((batch, t_plan, t_mod, t_fwd))
    for batch, *times in rows:
        names = ("predict (plan)", "module path", "eval forward (one call)")
        if batch == 1:
            print("batch 1 latency (us): " + ", ".join(
                f"{k} {[round(t * 1e6, 1) for t in ts]}" for k, ts in zip(names, times)))
        else:
            print(f"batch {batch} throughput (samples/s): " + ", ".join(
                f"{k} {[round(batch / t) for t in ts]}" for k, ts in zip(names, times)))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
