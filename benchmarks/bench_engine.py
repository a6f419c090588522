"""Training throughput of fit on the training engine against fit's module loop.

784-256-256-10 relu, softmax cross-entropy, Adam, float32, synthetic MNIST-shaped data; and
the small network 20-64-64-10 tanh with dropout 0.5, SGD with Nesterov momentum, batch 16.
Each cell is one fit epoch over N samples in
a fresh process-local model, after a warm-up fit; rounds interleave the configurations so
that a change of machine load hits all of them; the table shows medians of samples/s.

    python benchmarks/bench_engine.py [--samples 20000] [--rounds 3] [--mnist DIR]

--mnist DIR trains on the first --samples images of MNIST's training set instead.
"""
import argparse
import os
import statistics
import time

import numpy as np

from fastnn import Dense, Dropout, Sequential, optim


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    return X, y


def one(X, y, batch, threads, engine):
    m = Sequential(Dense(784, 256, "relu", seed=0), Dense(256, 256, "relu", seed=1),
                   Dense(256, 10, seed=2), n_threads=threads)
    m.fit(X[:2048], y[:2048], epochs=1, batch_size=batch, verbose=0, seed=0, engine=engine)
    t = time.perf_counter()
    h = m.fit(X, y, epochs=1, batch_size=batch, verbose=0, seed=1, engine=engine)
    dt = time.perf_counter() - t
    assert h.params["engine"] is engine
    return X.shape[0] / dt


def small(n, threads, engine):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 20)).astype(np.float32)
    y = rng.integers(0, 10, n)
    m = Sequential(Dense(20, 64, "tanh", seed=0), Dropout(0.5, seed=1),
                   Dense(64, 64, "tanh", seed=2), Dropout(0.5, seed=3), Dense(64, 10, seed=4),
                   n_threads=threads)
    opt = optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    m.fit(X[:2048], y[:2048], optimizer=opt, epochs=1, batch_size=16, verbose=0, seed=0,
          engine=engine)
    t = time.perf_counter()
    h = m.fit(X, y, epochs=1, batch_size=16, verbose=0, seed=1, engine=engine)
    dt = time.perf_counter() - t
    assert h.params["engine"] is engine
    return n / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mnist", default=None)
    args = ap.parse_args()
    if args.mnist:
        from fastnn import datasets
        X, y, _, _ = datasets.load_mnist(datasets.find_mnist_dir(args.mnist))
        X, y = np.ascontiguousarray(X[:args.samples]), y[:args.samples]
    else:
        X, y = data(args.samples)
    cells = [(b, t, e) for b in (16, 128) for t in (1, 2) for e in (True, False)]
    res = {c: [] for c in cells}
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for c in cells:
            res[c].append(one(X, y, *c))
            load.append(os.getloadavg()[0])
    print(f"load average (1 min) during the run: {min(load):.1f}-{max(load):.1f}")
    print("| batch | threads | fit, engine | fit, module loop | engine / loop |")
    print("|---:|---:|---:|---:|---:|")
    for b in (16, 128):
        for t in (1, 2):
            e = statistics.median(res[(b, t, True)])
            m = statistics.median(res[(b, t, False)])
            print(f"| {b} | {t} | {e / 1e3:.1f}k | {m / 1e3:.1f}k | {e / m:.2f}x |")
    for c in cells:
        print(c, [f"{v / 1e3:.1f}k" for v in res[c]])
    sm = {e: [small(args.samples, 1, e) for _ in range(args.rounds)] for e in (True, False)}
    e, m = statistics.median(sm[True]), statistics.median(sm[False])
    print(f"small network, batch 16, 1 thread: engine {e / 1e3:.1f}k, module loop "
          f"{m / 1e3:.1f}k, {e / m:.2f}x")


if __name__ == "__main__":
    main()
