"""A/B of one training step between two fastnn checkouts (each built in place).

    python benchmarks/ab_train_step.py PATH_A PATH_B [--rounds 5] [--blocks 15]

Each measurement runs in its own process (``PYTHONPATH=PATH``), alternating A, B, A, B, ...,
so a change of machine load hits both sides. A process times ``--blocks`` blocks of steps on
one thread (float32, batch 16) and reports the median and the best per-step time of each
network, wall clock and CPU time (``cpu``: the process's CPU time, which on a loaded machine
excludes the time spent waiting for a core); the table gives the median of the medians and the
best of the bests over the processes of each side:

* small: 20-64-64-10 tanh, inverted dropout 0.5, cross-entropy, SGD with Nesterov momentum
  (the step where Python overhead dominates);
* mnist: 784-256-256-10 relu, cross-entropy, Adam (``bench_train_step.py``'s network).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

_CHILD = r"""
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
from fastnn import losses, optim
from fastnn.layers import Dense, Dropout
from fastnn.model import Sequential

def small():
    m = Sequential(Dense(20, 64, "tanh", seed=0), Dropout(0.5, seed=1),
                   Dense(64, 64, "tanh", seed=2), Dropout(0.5, seed=3),
                   Dense(64, 10, seed=4), n_threads=1)
    o = optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True, decay=1e-6, n_threads=1)
    return m, o, 20

def mnist():
    m = Sequential(Dense(784, 256, "relu", seed=0), Dense(256, 256, "relu", seed=1),
                   Dense(256, 10, seed=2), n_threads=1)
    return m, optim.Adam(m.parameters(), lr=1e-3, n_threads=1), 784

out = {}
blocks = int(sys.argv[1])
with threadpool_limits(limits=1, user_api="blas"):
    for name, make in (("small", small), ("mnist", mnist)):
        model, opt, n_in = make()
        loss = losses.CrossEntropyLoss(n_threads=1)
        rng = np.random.default_rng(0)
        X = rng.random((16, n_in), dtype=np.float32)
        y = rng.integers(0, 10, 16)
        g = np.empty((16, 10), np.float32)

        def step():
            model.zero_grad()
            z = model.forward(X)
            loss.loss_and_grad(z, y, grad_out=g)
            model.backward(g, need_input_grad=False, inplace=True)
            opt.step()

        for _ in range(50):
            step()
        t0 = time.perf_counter()
        k = 0
        while time.perf_counter() - t0 < 0.05:
            step()
            k += 1
        iters = max(1, int(0.05 / ((time.perf_counter() - t0) / k)))
        times, cpu = [], []
        for _ in range(blocks):
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(iters):
                step()
            times.append((time.perf_counter() - t0) / iters)
            cpu.append((time.process_time() - c0) / iters)
        for clock, values in (("wall", times), ("cpu", cpu)):
            values.sort()
            out[f"{name} {clock}"] = [values[len(values) // 2], values[0]]
print(json.dumps(out))
"""


def _run(path, blocks):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(path), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", _CHILD, str(blocks)], env=env, cwd=path,
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--blocks", type=int, default=15)
    args = ap.parse_args(argv)
    print(f"load average before: {os.getloadavg()}")
    runs = {"a": [], "b": []}
    for _ in range(args.rounds):
        for side in ("a", "b"):
            runs[side].append(_run(getattr(args, side), args.blocks))
    print("| step | clock | A median (us) | B median (us) | B / A | A best (us) | B best (us) "
          "| B / A best |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for key in runs["a"][0]:
        # per process: the median and the best of its blocks; over processes: the median of
        # the medians and the best of the bests
        a_med = statistics.median(r[key][0] for r in runs["a"]) * 1e6
        b_med = statistics.median(r[key][0] for r in runs["b"]) * 1e6
        a_min = min(r[key][1] for r in runs["a"]) * 1e6
        b_min = min(r[key][1] for r in runs["b"]) * 1e6
        name, clock = key.split()
        print(f"| {name} | {clock} | {a_med:.1f} | {b_med:.1f} | {b_med / a_med:.3f} | "
              f"{a_min:.1f} | {b_min:.1f} | {b_min / a_min:.3f} |")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main(sys.argv[1:])
