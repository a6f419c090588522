"""Time to 98.0% MNIST test accuracy: fastnn vs a clean NumPy MLP vs PyTorch (CPU, eager).

The same 784-256-256-10 relu network, cross-entropy on softmax, Adam (lr 1e-3, betas 0.9/0.999,
eps 1e-8), batch 128, float32, 2 threads, for every implementation, in the same run:

* the same initial weights (He uniform for the relu layers, Glorot uniform for the output
  layer, drawn once with NumPy) and the same batch order (one seeded permutation per epoch),
  so the three runs follow nearly the same trajectory and differ in speed, not luck;
* fastnn trains through its public API (``model.fit(..., epochs=1)`` once per epoch, progress
  and running metrics included) with ``threadpool_limits(2)``;
* "numpy" is a clean hand-written implementation: float32 throughout, BLAS matrix products,
  in-place ufuncs where natural, Adam with preallocated moments (2 BLAS threads);
* "torch" (only when ``torch==2.13.0`` is installed: ``pip install ".[bench-torch]"``) is the
  usual eager loop: ``nn.Sequential`` of ``Linear``/``ReLU``, ``nn.CrossEntropyLoss``,
  ``torch.optim.Adam``, ``torch.set_num_threads(2)``.

After every epoch the test accuracy is measured (not timed); the clock stops at the first epoch
whose test accuracy is >= the target. Reported: training seconds to the target, epochs, mean
seconds per epoch, and the load average before and after (the machine may be shared).

Run::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_time_to_accuracy.py \
        [--mnist DIR] [--target 0.98] [--max-epochs 10] \
        [--only fastnn,numpy,numpy-1t,torch,torch-fused]

(``PYTHONPATH=.`` in front when fastnn is built in place rather than installed.) The same
runners, over several seeds and with the machine state beside them, are the ``tta`` part of
``bench_peers.py``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

N_THREADS = 2
SIZES = (784, 256, 256, 10)
LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8
BATCH = 128


def initial_weights(seed=0):
    """[(W (in, out), b (out,)) ...] float32, He uniform (relu layers), Glorot uniform (output)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, (fan_in, fan_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        last = i == len(SIZES) - 2
        limit = np.sqrt(6.0 / (fan_in + fan_out)) if last else np.sqrt(6.0 / fan_in)
        W = rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)
        out.append((W, np.zeros(fan_out, dtype=np.float32)))
    return out


def accuracy(logits, y):
    return float(np.mean(np.asarray(logits).argmax(axis=1) == y))


# --------------------------------------------------------------------------------------------
# fastnn
# --------------------------------------------------------------------------------------------

def run_fastnn(data, weights, seed, target, max_epochs):
    from threadpoolctl import threadpool_limits

    from fastnn import Dense, Sequential

    Xtr, ytr, Xte, yte = data
    model = Sequential(Dense(784, 256, activation="relu"), Dense(256, 256, activation="relu"),
                       Dense(256, 10), n_threads=N_THREADS)
    sd = {}
    for i, (W, b) in enumerate(weights):
        sd[f"{i}.weight"], sd[f"{i}.bias"] = W, b
    model.load_state_dict(sd)
    rng = np.random.default_rng(seed)  # fit draws one permutation per epoch from it
    path = {}

    def epoch():
        h = model.fit(Xtr, ytr, loss="cross_entropy",
                      optimizer="adam" if model.optimizer is None else None,
                      lr=LR if model.optimizer is None else None, epochs=1,
                      batch_size=BATCH, verbose=0, seed=rng)
        path["engine"] = (getattr(h, "params", None) or {}).get("engine")

    out = _loop(epoch, lambda: accuracy(model.predict(Xte), yte), target, max_epochs,
                limits=lambda: threadpool_limits(limits=N_THREADS))
    out["engine"] = path.get("engine")   # fit's record of its path (None: no record)
    return out


# --------------------------------------------------------------------------------------------
# NumPy
# --------------------------------------------------------------------------------------------

class NumpyMLP:
    """A clean NumPy MLP with relu hidden layers, softmax cross-entropy and Adam."""

    def __init__(self, weights):
        self.W = [W.copy() for W, _ in weights]
        self.b = [b.copy() for _, b in weights]
        self.params = [p for pair in zip(self.W, self.b) for p in pair]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0

    def forward(self, X):
        hs = [X]
        h = X
        for i, (W, b) in enumerate(zip(self.W, self.b)):
            z = h @ W
            z += b
            if i < len(self.W) - 1:
                np.maximum(z, 0.0, out=z)
            hs.append(z)
            h = z
        return hs

    def step(self, X, y):
        hs = self.forward(X)
        z = hs[-1]
        n = X.shape[0]
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = p
        g[np.arange(n), y] -= 1.0
        g *= 1.0 / n
        grads = [None] * len(self.params)
        for i in range(len(self.W) - 1, -1, -1):
            grads[2 * i] = hs[i].T @ g
            grads[2 * i + 1] = g.sum(axis=0)
            if i > 0:
                g = g @ self.W[i].T
                g *= hs[i] > 0
        self.t += 1
        c1 = 1.0 - BETA1 ** self.t
        c2 = 1.0 - BETA2 ** self.t
        step = LR / c1
        for p_, g_, m, v in zip(self.params, grads, self.m, self.v):
            m *= BETA1
            m += (1.0 - BETA1) * g_
            v *= BETA2
            g_ *= g_
            g_ *= 1.0 - BETA2
            v += g_
            denom = np.sqrt(v)
            denom *= 1.0 / np.sqrt(c2)
            denom += EPS
            np.divide(m, denom, out=denom)
            denom *= step
            p_ -= denom

    def predict(self, X):
        return self.forward(X)[-1]


def run_numpy(data, weights, seed, target, max_epochs, n_threads=N_THREADS):
    from threadpoolctl import threadpool_limits

    Xtr, ytr, Xte, yte = data
    net = NumpyMLP(weights)
    rng = np.random.default_rng(seed)
    n = Xtr.shape[0]

    def epoch():
        perm = rng.permutation(n)
        for start in range(0, n, BATCH):
            idx = perm[start:start + BATCH]
            net.step(Xtr[idx], ytr[idx])

    return _loop(epoch, lambda: accuracy(net.predict(Xte), yte), target, max_epochs,
                 limits=lambda: threadpool_limits(limits=n_threads))


def run_numpy_1thread(data, weights, seed, target, max_epochs):
    """NumPy with a single BLAS thread: on a loaded 2-core machine OpenBLAS's second thread
    can cost more than it brings, so NumPy's best case is reported too."""
    return run_numpy(data, weights, seed, target, max_epochs, n_threads=1)


# --------------------------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------------------------

def run_torch(data, weights, seed, target, max_epochs, fused=False):
    """PyTorch's eager loop; ``fused=True`` uses ``Adam(fused=True)`` (one fused kernel)."""
    import torch
    from torch import nn

    torch.set_num_threads(N_THREADS)
    Xtr, ytr, Xte, yte = data
    layers = []
    for i, (W, b) in enumerate(weights):
        lin = nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=(BETA1, BETA2), eps=EPS,
                           **({"fused": True} if fused else {}))
    loss_fn = nn.CrossEntropyLoss()
    Xt = torch.from_numpy(Xtr)
    yt = torch.from_numpy(ytr)
    Xte_t = torch.from_numpy(Xte)
    rng = np.random.default_rng(seed)
    n = Xtr.shape[0]

    def epoch():
        model.train()
        perm = torch.from_numpy(rng.permutation(n))
        for start in range(0, n, BATCH):
            idx = perm[start:start + BATCH]
            out = model(Xt[idx])
            loss = loss_fn(out, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    def evaluate():
        model.eval()
        with torch.no_grad():
            return accuracy(model(Xte_t).numpy(), yte)

    return _loop(epoch, evaluate, target, max_epochs)


# --------------------------------------------------------------------------------------------

def _loop(run_epoch, evaluate, target, max_epochs, limits=None):
    import contextlib

    ctx = limits() if limits is not None else contextlib.nullcontext()
    train_time = 0.0
    accs, times = [], []
    reached = None
    with ctx:
        for e in range(max_epochs):
            t0 = time.perf_counter()
            run_epoch()
            dt = time.perf_counter() - t0
            train_time += dt
            times.append(dt)
            acc = evaluate()
            accs.append(acc)
            print(f"    epoch {e + 1}: {dt:6.2f}s  test accuracy {acc:.4f}", flush=True)
            if acc >= target:
                reached = train_time
                break
    return {"time_to_target": reached, "epochs": len(accs), "accuracies": accs,
            "epoch_times": times, "train_time": train_time}


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    cands = [os.path.join(here, *[".."] * k, "shared", "data", "mnist") for k in (2, 3)]
    default_mnist = os.environ.get("FASTNN_MNIST_DIR") or next(
        (c for c in cands if os.path.isdir(c)), cands[0])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", default=default_mnist)
    ap.add_argument("--target", type=float, default=0.98)
    ap.add_argument("--max-epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="fastnn,numpy,numpy-1t,torch,torch-fused")
    args = ap.parse_args(argv)

    from fastnn import datasets

    data = datasets.load_mnist(args.mnist)
    weights = initial_weights(args.seed)
    runners = {"fastnn": run_fastnn, "numpy": run_numpy, "numpy-1t": run_numpy_1thread,
               "torch": run_torch,
               "torch-fused": lambda *a: run_torch(*a, fused=True)}
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    results = {}
    load_before = os.getloadavg()
    for name in wanted:
        if name.startswith("torch"):
            try:
                import torch
            except ImportError:
                print("torch: not installed (pip install \".[bench-torch]\"), skipped")
                continue
            if not torch.__version__.startswith("2.13.0"):
                print(f"torch: version {torch.__version__} is not the pinned 2.13.0, skipped")
                continue
        print(f"{name}:", flush=True)
        results[name] = runners[name](data, weights, args.seed, args.target, args.max_epochs)
    load_after = os.getloadavg()

    print(f"\ntime to {args.target:.1%} MNIST test accuracy, 784-256-256-10 relu, Adam lr 1e-3, "
          f"batch {BATCH}, float32, {N_THREADS} threads")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"({os.cpu_count()} CPUs); python {sys.version.split()[0]}, numpy {np.__version__}")
    print(f"{'':11s} {'to target':>10s} {'epochs':>7s} {'s/epoch':>8s} {'final acc':>10s}")
    for name, r in results.items():
        t = f"{r['time_to_target']:.2f}s" if r["time_to_target"] is not None else "not reached"
        print(f"{name:11s} {t:>10s} {r['epochs']:7d} {np.mean(r['epoch_times']):8.2f} "
              f"{r['accuracies'][-1]:10.4f}")
    base = results.get("fastnn", {}).get("time_to_target")
    if base:
        for name, r in results.items():
            if name != "fastnn" and r["time_to_target"]:
                per_epoch = np.mean(r["epoch_times"]) / np.mean(results["fastnn"]["epoch_times"])
                print(f"fastnn vs {name}: {r['time_to_target'] / base:.2f}x "
                      f"(per epoch {per_epoch:.2f}x)")
    return results


if __name__ == "__main__":
    main()
