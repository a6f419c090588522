"""fastnn against its peers in one run: PyTorch (CPU, eager), scikit-learn, clean NumPy.

One command measures, with the thread count fixed for every library (fastnn ``n_threads``,
NumPy/scikit-learn BLAS through threadpoolctl, ``torch.set_num_threads``):

* ``train``: training throughput (samples/s at steady state) of 784-256-256-10 relu, softmax
  cross-entropy, Adam lr 1e-3, float32, on real MNIST batches, batch 16 and 128, 1 and 2
  threads. Peers: PyTorch's eager loop with ``torch.optim.Adam()`` (its default, for-loop
  implementation on CPU) and with ``Adam(fused=True)`` (the fair peer: one fused kernel, like
  fastnn's), scikit-learn's ``MLPClassifier`` (``partial_fit`` on a fixed block of samples, one
  epoch per call, ``shuffle=False``, ``alpha=0``: timed per call, so its per-call input
  validation is included) and the clean NumPy MLP of ``bench_time_to_accuracy.py``;
* ``small``: the lecture's Keras example, 20-64-64-10 tanh with dropout 0.5, batch 16, SGD
  lr 0.1 with Nesterov momentum 0.9 (decay 1e-6), synthetic 20-feature data: the per-step
  overhead of each library (scikit-learn has no dropout: its row is without it);
* ``tta``: time to 98.0% MNIST test accuracy (784-256-256-10, Adam lr 1e-3, batch 128,
  2 threads), through ``bench_time_to_accuracy.py``'s runners (same weights, same batches);
* ``infer``: inference latency at batch 1 (median of single calls) and throughput at batch 1024;
* ``output``: softmax and sparsemax cost per element (ns) for C = 10 ... 1e5, against NumPy's
  softmax and an entmax-style sort-based sparsemax (``bench_output.numpy_sparsemax``; the
  ``entmax`` package is not a dependency; with torch installed, entmax's own algorithm -
  ``torch.sort`` + ``cumsum`` - is timed too);
* ``gemm``: the machine's sgemm peak measured in the same run (NumPy's OpenBLAS, square
  products, 1 and 2 threads) and the GFLOP/s fastnn's dense layers reach (forward alone, and
  the whole training step's GEMM flops over its time).

Implementations are timed interleaved (a round of each, repeated), and the median over rounds is
kept, so a change of machine load hits all of them alike. The load average is printed with every
table. Run::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=. python benchmarks/bench_peers.py \\
        [--mnist DIR] [--only train,small,tta,infer,output,gemm] [--threads 1,2] [--quick]

``benchmarks/bench_peers_pytest.py`` runs the same pieces under pytest-benchmark.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# The environment before fastnn is imported: fastnn sets GOMP_SPINCOUNT=0 for its OpenMP runtime
# at import (fastnn/_kernels/__init__.py), which must not reach torch's worker (torch's own
# libgomp would then wake its threads passively too, slowing every torch region).
_ORIGINAL_ENV = dict(os.environ)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bench_output as _bo
import bench_time_to_accuracy as _tta
from conftest import machine_facts

SIZES = (784, 256, 256, 10)
SMALL_SIZES = (20, 64, 64, 10)
LR = 1e-3
SMALL_LR, SMALL_MOMENTUM, SMALL_DECAY, SMALL_P = 0.1, 0.9, 1e-6, 0.5
N_BATCHES = 64          # distinct batches cycled through by every training loop


def load_avg() -> str:
    return "%.2f %.2f %.2f" % os.getloadavg() if hasattr(os, "getloadavg") else "n/a"


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def fixed_threads(n):
    """Every BLAS/OpenMP pool of the process (NumPy's, scipy's, torch's) and torch's intra-op
    pool limited to n threads."""
    from threadpoolctl import threadpool_limits
    old = None
    if torch_available():
        import torch
        old = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        if old is not None:
            import torch
            torch.set_num_threads(old)


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------

def calibrate(fn, min_time):
    """Calls of fn per round so that a round lasts about min_time (at least 1)."""
    fn()
    t0 = time.perf_counter()
    k = 0
    while True:
        fn()
        k += 1
        dt = time.perf_counter() - t0
        if dt > min_time / 4 or k >= 1000:
            break
    return max(1, int(round(min_time / (dt / k))))


def interleaved(fns: dict, rounds=5, min_time=0.2, warmup=3, counts=None):
    """Median seconds per call of each fn, timed in interleaved rounds of ~min_time.

    ``counts`` (name -> calls per round) bypasses calibration for slow calls.
    """
    counts = dict(counts or {})
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        if name not in counts:
            counts[name] = calibrate(fn, min_time)
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            k = counts[name]
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            times[name].append((time.perf_counter() - t0) / k)
    return {name: float(np.median(v)) for name, v in times.items()}


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def default_mnist_dir():
    return os.environ.get("FASTNN_MNIST_DIR",
                          os.path.join(HERE, "..", "..", "shared", "data", "mnist"))


def load_mnist(path=None):
    from fastnn import datasets
    return datasets.load_mnist(path or default_mnist_dir())


def mnist_batches(Xtr, ytr, batch, n_batches=N_BATCHES, seed=0):
    """n_batches C-contiguous (X, y) batches of real MNIST rows (a seeded draw)."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(Xtr.shape[0])[:batch * n_batches]
    return [(np.ascontiguousarray(Xtr[idx[i * batch:(i + 1) * batch]]),
             np.ascontiguousarray(ytr[idx[i * batch:(i + 1) * batch]]))
            for i in range(n_batches)]


def small_data(n=4096, seed=0):
    """Synthetic 20-feature, 10-class data (a random linear rule plus noise), float32."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, SMALL_SIZES[0])).astype(np.float32)
    W = rng.standard_normal((SMALL_SIZES[0], SMALL_SIZES[-1]))
    y = (X @ W + 0.5 * rng.standard_normal((n, SMALL_SIZES[-1]))).argmax(axis=1)
    return X, y.astype(np.int64)


class _Cycle:
    """Calls step(X, y) on the next batch of a fixed list, round robin."""

    def __init__(self, step, batches):
        self.step, self.batches, self.i = step, batches, 0

    def __call__(self):
        xb, yb = self.batches[self.i]
        self.i = (self.i + 1) % len(self.batches)
        return self.step(xb, yb)


# --------------------------------------------------------------------------------------------
# Training steps (784-256-256-10 relu, Adam)
# --------------------------------------------------------------------------------------------

def fastnn_mlp(weights, n_threads, sizes=SIZES, activation="relu", dropout=0.0, seed=0):
    from fastnn import Dense, Dropout, Sequential
    layers = []
    for i, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        layers.append(Dense(fi, fo, activation=None if last else activation, seed=seed + i))
        if dropout and not last:
            layers.append(Dropout(dropout, seed=seed + 100 + i))
    model = Sequential(*layers, n_threads=n_threads)
    if weights is not None:
        dense = [m for m in model if type(m).__name__ == "Dense"]
        for m, (W, b) in zip(dense, weights):
            m.weight.data[...] = W
            m.bias.data[...] = b
    return model


class FastnnTrain:
    """fastnn's training step through its public module API (what ``fit`` runs per batch)."""

    def __init__(self, weights, n_threads, optimizer="adam", sizes=SIZES, activation="relu",
                 dropout=0.0):
        from fastnn import losses, optim
        self.model = fastnn_mlp(weights, n_threads, sizes, activation, dropout)
        params = self.model.parameters()
        if optimizer == "adam":
            self.opt = optim.Adam(params, lr=LR, n_threads=n_threads)
        else:
            self.opt = optim.SGD(params, lr=SMALL_LR, momentum=SMALL_MOMENTUM, nesterov=True,
                                 decay=SMALL_DECAY, n_threads=n_threads)
        self.loss = losses.CrossEntropyLoss(n_threads=n_threads)
        self._g = {}

    def __call__(self, xb, yb):
        model = self.model
        model.zero_grad()
        z = model.forward(xb)
        g = self._g.get(z.shape)
        if g is None:
            g = self._g[z.shape] = np.empty(z.shape, z.dtype)
        value, _ = self.loss.loss_and_grad(z, yb, grad_out=g)
        model.backward(g, need_input_grad=False, inplace=True)
        self.opt.step()
        return value


class FastnnFit:
    """fastnn's ``model.fit`` over a fixed block of samples, one epoch per call (shuffling,
    batch gathering, running loss/accuracy included)."""

    def __init__(self, weights, n_threads, X, y, batch):
        self.model = fastnn_mlp(weights, n_threads)
        self.X, self.y, self.batch = X, y, batch
        self.model.fit(X[:batch], y[:batch], loss="cross_entropy", optimizer="adam", lr=LR,
                       epochs=1, batch_size=batch, verbose=0, seed=0)

    def __call__(self):
        self.model.fit(self.X, self.y, epochs=1, batch_size=self.batch, verbose=0, seed=0)


def numpy_train(weights):
    return _tta.NumpyMLP(weights).step


class TorchTrain:
    """The usual PyTorch eager loop: nn.Sequential, nn.CrossEntropyLoss, optimizer."""

    def __init__(self, weights, fused=False, sizes=SIZES, activation="relu", dropout=0.0,
                 optimizer="adam"):
        import torch
        from torch import nn
        act = nn.ReLU if activation == "relu" else nn.Tanh
        layers = []
        n = len(sizes) - 1
        for i, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])):
            lin = nn.Linear(fi, fo)
            if weights is not None:
                W, b = weights[i]
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
                    lin.bias.copy_(torch.from_numpy(b))
            layers.append(lin)
            if i < n - 1:
                layers.append(act())
                if dropout:
                    layers.append(nn.Dropout(dropout))
        self.model = nn.Sequential(*layers).train()
        kw = {"fused": True} if fused else {}
        if optimizer == "adam":
            self.opt = torch.optim.Adam(self.model.parameters(), lr=LR, **kw)
        else:
            # Keras' decay=1e-6 is lr / (1 + decay * t): 1e-5 of change over the benchmark.
            self.opt = torch.optim.SGD(self.model.parameters(), lr=SMALL_LR,
                                       momentum=SMALL_MOMENTUM, nesterov=True, **kw)
        self.loss_fn = nn.CrossEntropyLoss()
        self._cache = {}

    def tensors(self, xb, yb):
        import torch
        key = id(xb)
        t = self._cache.get(key)
        if t is None:
            t = self._cache[key] = (torch.from_numpy(xb), torch.from_numpy(yb))
        return t

    def __call__(self, xb, yb):
        x, y = self.tensors(xb, yb)
        out = self.model(x)
        loss = self.loss_fn(out, y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss


class SklearnTrain:
    """scikit-learn's MLPClassifier: ``partial_fit`` over a fixed block of samples (one epoch of
    mini-batches per call, no shuffling, no L2)."""

    def __init__(self, X, y, batch, sizes=SIZES, activation="relu", solver="adam"):
        from sklearn.neural_network import MLPClassifier
        kw = dict(learning_rate_init=LR) if solver == "adam" else dict(
            learning_rate_init=SMALL_LR, momentum=SMALL_MOMENTUM, nesterovs_momentum=True)
        self.clf = MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), activation=activation,
                                 solver=solver, batch_size=batch, shuffle=False, alpha=0.0,
                                 random_state=0, **kw)
        self.X, self.y = X, y
        self.classes = np.arange(sizes[-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.clf.partial_fit(X[:batch], y[:batch], classes=self.classes)
        assert self.clf.coefs_[0].dtype == X.dtype

    def __call__(self):
        self.clf.partial_fit(self.X, self.y)


def _sklearn_block(batch):
    return 32 * batch if batch >= 64 else 128 * batch


# --------------------------------------------------------------------------------------------
# Small network (the lecture's Keras MLP)
# --------------------------------------------------------------------------------------------

class NumpySmall:
    """20-64-64-10 tanh, inverted dropout, softmax cross-entropy, SGD with Nesterov momentum
    (PyTorch's formulation), clean NumPy, float32."""

    def __init__(self, weights, seed=0):
        self.W = [W.copy() for W, _ in weights]
        self.b = [b.copy() for _, b in weights]
        self.params = [p for pair in zip(self.W, self.b) for p in pair]
        self.buf = [np.zeros_like(p) for p in self.params]
        self.rng = np.random.default_rng(seed)
        self.t = 0

    def step(self, X, y):
        n = X.shape[0]
        keep = 1.0 - SMALL_P
        hs, masks = [X], []
        h = X
        L = len(self.W)
        for i in range(L):
            z = h @ self.W[i]
            z += self.b[i]
            if i < L - 1:
                np.tanh(z, out=z)
                mask = self.rng.random(z.shape, dtype=np.float32) < keep
                mask = mask.astype(np.float32)
                mask *= 1.0 / keep
                masks.append((mask, z))
                h = z * mask
                hs.append(h)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = p
        g[np.arange(n), y] -= 1.0
        g *= 1.0 / n
        grads = [None] * len(self.params)
        for i in range(L - 1, -1, -1):
            grads[2 * i] = hs[i].T @ g
            grads[2 * i + 1] = g.sum(axis=0)
            if i > 0:
                g = g @ self.W[i].T
                mask, a = masks[i - 1]
                g *= mask
                g *= 1.0 - a * a
        self.t += 1
        lr = SMALL_LR / (1.0 + SMALL_DECAY * self.t)
        for p_, g_, buf in zip(self.params, grads, self.buf):
            buf *= SMALL_MOMENTUM
            buf += g_
            g_ += SMALL_MOMENTUM * buf
            g_ *= lr
            p_ -= g_


def small_weights(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for fi, fo in zip(SMALL_SIZES[:-1], SMALL_SIZES[1:]):
        lim = math.sqrt(6.0 / (fi + fo))
        out.append((rng.uniform(-lim, lim, (fi, fo)).astype(np.float32),
                    np.zeros(fo, np.float32)))
    return out


# --------------------------------------------------------------------------------------------
# Time to accuracy
# --------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------

def _single_call_median(fns, n_calls=2000, rounds=5):
    """Median over all single calls (interleaved in rounds) - a latency, not an average."""
    samples = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(50):
            fn()
    per_round = max(1, n_calls // rounds)
    pc = time.perf_counter
    for _ in range(rounds):
        for name, fn in fns.items():
            s = samples[name]
            for _ in range(per_round):
                t0 = pc()
                fn()
                s.append(pc() - t0)
    return {k: float(np.median(v)) for k, v in samples.items()}


# --------------------------------------------------------------------------------------------
# Output maps
# --------------------------------------------------------------------------------------------

CLASSES = (10, 100, 1000, 10_000, 100_000)


def torch_sparsemax_sort(z):
    """entmax's sparsemax algorithm (``entmax.sparsemax``: sort, cumulative sum, support size,
    threshold) in PyTorch."""
    import torch
    srt, _ = torch.sort(z, dim=-1, descending=True)
    cs = srt.cumsum(-1) - 1
    rho = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    support = rho * srt > cs
    k = support.sum(dim=-1, keepdim=True)
    tau = cs.gather(-1, k - 1) / k.to(z.dtype)
    return torch.clamp(z - tau, min=0)


def _rows_for(c):
    return int(max(8, min(256, 2_560_000 // c)))


# --------------------------------------------------------------------------------------------
# GEMM efficiency
# --------------------------------------------------------------------------------------------

def step_gemm_flops(batch, sizes=SIZES):
    """Floating-point operations of the GEMMs of one training step (forward, weight gradient,
    input gradient of every layer but the first)."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    fwd = sum(2 * batch * a * b for a, b in pairs)
    dx = sum(2 * batch * a * b for a, b in pairs[1:])
    return 2 * fwd + dx


# --------------------------------------------------------------------------------------------
# What is timed: one spec (a JSON-able dict) -> a callable, built where it runs
# --------------------------------------------------------------------------------------------

TRAIN_IMPLS = ("fastnn", "fastnn fit()", "torch Adam", "torch Adam(fused)", "numpy", "sklearn")
SMALL_IMPLS = ("fastnn", "torch SGD", "torch SGD(fused)", "numpy", "sklearn (no dropout)")
INFER_IMPLS = ("fastnn forward", "fastnn predict", "numpy", "torch")
OUTPUT_IMPLS = ("fastnn softmax", "numpy softmax", "torch softmax", "fastnn sparsemax",
                "numpy sort sparsemax", "torch sort sparsemax")


def build(spec, state):
    """(fn, samples per call, calls per round or None) for a spec; state caches MNIST."""
    part, impl, nt = spec["part"], spec["impl"], spec["nt"]
    if part in ("train", "infer"):
        if "mnist" not in state:
            state["mnist"] = load_mnist(spec.get("mnist"))
        data = state["mnist"]
    if part == "train":
        batch = spec["batch"]
        weights = _tta.initial_weights(0)
        if impl in ("fastnn fit()", "sklearn"):
            n = _sklearn_block(batch)
            Xb, yb = np.ascontiguousarray(data[0][:n]), data[1][:n]
            fn = FastnnFit(weights, nt, Xb, yb, batch) if impl == "fastnn fit()" else \
                SklearnTrain(Xb, yb, batch)
            return fn, n, 1
        bl = mnist_batches(data[0], data[1], batch)
        step = {"fastnn": lambda: FastnnTrain(weights, nt),
                "torch Adam": lambda: TorchTrain(weights),
                "torch Adam(fused)": lambda: TorchTrain(weights, fused=True),
                "numpy": lambda: numpy_train(weights)}[impl]()
        return _Cycle(step, bl), batch, None
    if part == "small":
        batch = 16
        X, y = small_data()
        weights = small_weights()
        if impl.startswith("sklearn"):
            n = 64 * batch
            return SklearnTrain(X[:n], y[:n], batch, sizes=SMALL_SIZES, activation="tanh",
                                solver="sgd"), n, 1
        bl = [(np.ascontiguousarray(X[i:i + batch]), y[i:i + batch])
              for i in range(0, 64 * batch, batch)]
        if impl == "fastnn":
            step = FastnnTrain(weights, nt, optimizer="sgd", sizes=SMALL_SIZES,
                               activation="tanh", dropout=SMALL_P)
        elif impl == "numpy":
            step = NumpySmall(weights).step
        else:
            step = TorchTrain(weights, fused="fused" in impl, sizes=SMALL_SIZES,
                              activation="tanh", dropout=SMALL_P, optimizer="sgd")
        return _Cycle(step, bl), batch, None
    if part == "infer":
        batch = spec["batch"]
        weights = _tta.initial_weights(0)
        x = np.ascontiguousarray(data[2][:batch])
        if impl.startswith("fastnn"):
            model = fastnn_mlp(weights, nt).eval()
            fn = model.forward if impl == "fastnn forward" else model.predict
            return (lambda: fn(x)), batch, None
        if impl == "numpy":
            net = _tta.NumpyMLP(weights)
            return (lambda: net.predict(x)), batch, None
        import torch
        tm = TorchTrain(weights).model.eval()
        xt = torch.from_numpy(x)

        def torch_infer():
            with torch.inference_mode():
                return tm(xt)
        return torch_infer, batch, None
    if part == "output":
        c = spec["c"]
        z = np.random.default_rng(0).standard_normal((_rows_for(c), c)).astype(np.float32)
        if impl.startswith("fastnn"):
            import fastnn.functional as F
            f = F.softmax if impl == "fastnn softmax" else F.sparsemax
            return (lambda: f(z, n_threads=nt)), z.size, None
        if impl.startswith("numpy"):
            f = _bo.numpy_softmax if impl == "numpy softmax" else _bo.numpy_sparsemax
            return (lambda: f(z)), z.size, None
        import torch
        zt = torch.from_numpy(z)
        if impl == "torch softmax":
            return (lambda: torch.softmax(zt, dim=-1)), z.size, None
        return (lambda: torch_sparsemax_sort(zt)), z.size, None
    if part == "gemm":
        rng = np.random.default_rng(0)
        if impl == "numpy sgemm":
            n = spec["n"]
            a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
            o = np.empty((n, n), np.float32)
            return (lambda: np.matmul(a, b, out=o)), 2 * n ** 3, None
        batch = spec["batch"]
        X = rng.random((batch, 784), dtype=np.float32)
        W = (rng.standard_normal((784, 256)) * 0.05).astype(np.float32)
        bias = np.zeros(256, np.float32)
        Y = np.empty((batch, 256), np.float32)
        if impl == "fastnn dense":
            import fastnn.functional as F
            return (lambda: F.dense_forward(X, W, bias, "relu", out=Y, n_threads=nt)), \
                2 * batch * 784 * 256, None
        return (lambda: np.matmul(X, W, out=Y)), 2 * batch * 784 * 256, None
    raise ValueError(f"unknown spec {spec!r}")


def _set_threads(nt, state):
    if state.get("nt") == nt:
        return
    from threadpoolctl import threadpool_limits
    state["limits"] = threadpool_limits(limits=nt)   # applied now, kept until changed
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(nt)
    state["nt"] = nt


def _torch_threads(nt):
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(nt)


def handle(msg, state):
    """One request: build (once) and time a spec, or run a time-to-accuracy runner."""
    cmd = msg["cmd"]
    if cmd == "tta":
        _set_threads(_tta.N_THREADS, state)
        data = state.get("mnist") or load_mnist(msg.get("mnist"))
        state["mnist"] = data
        name = msg["name"]
        runner = {"fastnn": _tta.run_fastnn, "numpy": _tta.run_numpy,
                  "torch Adam": _tta.run_torch,
                  "torch Adam(fused)": lambda *a: _tta.run_torch(*a, fused=True)}[name]
        return runner(data, _tta.initial_weights(0), 0, msg["target"], msg["max_epochs"])
    spec = msg["spec"]
    _set_threads(spec["nt"], state)
    key = json.dumps(spec, sort_keys=True)
    cache = state.setdefault("built", {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if key not in cache:
            fn, samples, fixed = build(spec, state)
            state["nt"] = None                 # libraries loaded by build get the limit too
            _set_threads(spec["nt"], state)
            for _ in range(2):
                fn()
            calls = fixed or calibrate(fn, msg["min_time"])
            cache[key] = (fn, samples, calls)
        fn, samples, calls = cache[key]
        pc = time.perf_counter
        if cmd == "latency":
            ts = []
            for _ in range(msg["n_calls"]):
                t0 = pc()
                fn()
                ts.append(pc() - t0)
            return {"seconds": float(np.median(ts)), "samples": samples}
        t0 = pc()
        for _ in range(calls):
            fn()
        return {"seconds": (pc() - t0) / calls, "samples": samples}


def _worker_main():
    """A worker process: JSON requests on stdin, one JSON reply per line on stdout (anything
    the timed code prints goes to stderr)."""
    proto = sys.stdout
    sys.stdout = sys.stderr
    state = {}
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        try:
            reply = {"ok": True, "result": handle(msg, state)}
        except Exception as exc:  # report to the parent, keep serving
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        proto.write(json.dumps(reply) + "\n")
        proto.flush()


def family(impl):
    """Which library an implementation belongs to (one worker process per library)."""
    return impl.split()[0]


class Workers:
    """One process per library (fastnn, torch, numpy, sklearn), or everything in this process.

    Separate processes keep each library's thread pools (fastnn's OpenMP team, torch's OpenMP
    and MKL threads, NumPy's OpenBLAS threads) from spinning while another library is timed: in
    one process, interleaving made every 2-thread number 3-10x worse on this 2-core machine.
    Between two requests the parent sleeps ``cooldown`` seconds so that spinning workers of the
    last library park (OpenBLAS's spin for up to ~0.1 s).
    """

    def __init__(self, isolate=True, cooldown=0.15):
        self.isolate, self.cooldown = isolate, cooldown
        self.procs, self.state = {}, {}
        self.last = None

    def ask(self, impl, msg):
        fam = family(impl)
        if self.last is not None and self.last != fam:
            time.sleep(self.cooldown)
        self.last = fam
        if not self.isolate:
            return handle(msg, self.state)
        p = self.procs.get(fam)
        if p is None:
            env = dict(_ORIGINAL_ENV)
            if fam != "fastnn":
                env["FASTNN_OMP_SPIN"] = "1"   # fastnn (imported for MNIST) leaves OpenMP alone
            env["PYTHONPATH"] = os.pathsep.join(
                [os.path.dirname(HERE), HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                                 else []))
            p = self.procs[fam] = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--worker", fam],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True, env=env, cwd=os.path.dirname(HERE))
        p.stdin.write(json.dumps(msg) + "\n")
        p.stdin.flush()
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"the {fam} worker exited (see its stderr above)")
        reply = json.loads(line)
        if not reply["ok"]:
            raise RuntimeError(f"{impl}: {reply['error']}")
        return reply["result"]

    def close(self):
        for p in self.procs.values():
            try:
                p.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                p.stdin.flush()
                p.wait(timeout=30)
            except Exception:
                p.kill()
        self.procs = {}


def measure(workers, specs, rounds=5, min_time=0.3, cmd="round", n_calls=1000):
    """Interleaved rounds over {name: spec}: median seconds per call and samples per call."""
    times = {name: [] for name in specs}
    samples = {}
    for _ in range(rounds):
        for name, spec in specs.items():
            r = workers.ask(spec["impl"], {"cmd": cmd, "spec": spec, "min_time": min_time,
                                           "n_calls": n_calls})
            times[name].append(r["seconds"])
            samples[name] = r["samples"]
    return {name: (float(np.median(v)), samples[name]) for name, v in times.items()}


def _impls(all_impls, have_torch):
    return [i for i in all_impls if have_torch or family(i) != "torch"]


def _line(what, r):
    return f"  {what}: " + ", ".join(f"{k} {v:,.1f}" for k, v in r.items()
                                     if not k.startswith("_")) + f"  (load {load_avg()})"


def bench_train(workers, mnist=None, batches=(16, 128), threads=(1, 2), rounds=5, min_time=0.3,
                have_torch=True):
    """Samples/s: {(batch, threads): {impl: samples/s}}."""
    results = {}
    for batch in batches:
        for nt in threads:
            specs = {i: {"part": "train", "impl": i, "batch": batch, "nt": nt, "mnist": mnist}
                     for i in _impls(TRAIN_IMPLS, have_torch)}
            m = measure(workers, specs, rounds, min_time)
            r = results[(batch, nt)] = {k: s / t for k, (t, s) in m.items()}
            r["_load"] = load_avg()
            print(_line(f"train batch {batch} threads {nt} (samples/s)", r), flush=True)
    return results


def bench_small(workers, threads=(1, 2), rounds=5, min_time=0.2, have_torch=True):
    results = {}
    for nt in threads:
        specs = {i: {"part": "small", "impl": i, "nt": nt}
                 for i in _impls(SMALL_IMPLS, have_torch)}
        m = measure(workers, specs, rounds, min_time)
        r = results[nt] = {k: s / t for k, (t, s) in m.items()}
        r["_load"] = load_avg()
        print(_line(f"small threads {nt} (samples/s)", r), flush=True)
    return results


def bench_tta(workers, mnist=None, target=0.98, max_epochs=10, have_torch=True):
    """Seconds to the target through bench_time_to_accuracy's runners (2 threads), each in
    its library's worker process."""
    out = {}
    for name in ("fastnn", "torch Adam", "torch Adam(fused)", "numpy"):
        if family(name) == "torch" and not have_torch:
            continue
        print(f"  time to accuracy, {name}:", flush=True)
        out[name] = workers.ask(name, {"cmd": "tta", "name": name, "mnist": mnist,
                                       "target": target, "max_epochs": max_epochs})
    out["_load"] = load_avg()
    return out


def bench_infer(workers, mnist=None, threads=(1, 2), rounds=5, have_torch=True):
    results = {}
    for nt in threads:
        impls = _impls(INFER_IMPLS, have_torch)
        lat = measure(workers, {i: {"part": "infer", "impl": i, "batch": 1, "nt": nt,
                                    "mnist": mnist} for i in impls},
                      rounds, cmd="latency", n_calls=400)
        thr = measure(workers, {i: {"part": "infer", "impl": i, "batch": 1024, "nt": nt,
                                    "mnist": mnist} for i in impls}, rounds, 0.2)
        results[nt] = {"latency_us": {k: t * 1e6 for k, (t, _) in lat.items()},
                       "throughput": {k: s / t for k, (t, s) in thr.items()},
                       "_load": load_avg()}
        print(_line(f"infer threads {nt}, batch-1 latency (us)", results[nt]["latency_us"]))
        print(_line(f"infer threads {nt}, batch-1024 (samples/s)", results[nt]["throughput"]),
              flush=True)
    return results


def bench_output(workers, threads=(1, 2), classes=CLASSES, rounds=5, min_time=0.1,
                 have_torch=True):
    """ns per element: {(C, threads): {impl: ns}}."""
    results = {}
    for c in classes:
        for nt in threads:
            specs = {i: {"part": "output", "impl": i, "c": c, "nt": nt}
                     for i in _impls(OUTPUT_IMPLS, have_torch)}
            m = measure(workers, specs, rounds, min_time)
            r = results[(c, nt)] = {k: t * 1e9 / s for k, (t, s) in m.items()}
            r["_load"] = load_avg()
            print(_line(f"output C={c} threads {nt} (ns/element)", r), flush=True)
    return results


def bench_gemm(workers, threads=(1, 2), rounds=5, train=None):
    results = {}
    for nt in threads:
        peak = measure(workers, {n: {"part": "gemm", "impl": "numpy sgemm", "n": n, "nt": nt}
                                 for n in (512, 1024, 2048)}, rounds, 0.2)
        layer = {}
        for batch in (16, 128, 1024):
            m = measure(workers, {i: {"part": "gemm", "impl": i, "batch": batch, "nt": nt}
                                  for i in ("fastnn dense", "numpy matmul")}, rounds, 0.1)
            layer[batch] = {("fastnn" if k.startswith("fastnn") else "numpy"): s / t / 1e9
                            for k, (t, s) in m.items()}
        results[nt] = {"peak": {n: s / t / 1e9 for n, (t, s) in peak.items()}, "layer": layer,
                       "_load": load_avg()}
        if train:
            results[nt]["step"] = {b: step_gemm_flops(b) * train[(b, nt)]["fastnn"] / b / 1e9
                                   for b in (16, 128) if (b, nt) in train}
        print(f"  gemm threads {nt}: sgemm peak GFLOP/s " + ", ".join(
            f"{n}^3 {v:.1f}" for n, v in results[nt]["peak"].items())
            + "; dense 784x256 relu forward GFLOP/s " + ", ".join(
            f"b{b} fastnn {v['fastnn']:.1f} / numpy matmul {v['numpy']:.1f}"
            for b, v in layer.items()) + f"  (load {load_avg()})", flush=True)
    return results


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def _ratio(a, b):
    return a / b if a and b else float("nan")


def report(res, threads):
    lines = []
    add = lines.append
    if "train" in res:
        tr = res["train"]
        names = [k for k in next(iter(tr.values())) if not k.startswith("_")]
        add("\n### Training throughput (samples/s, 784-256-256-10 relu, Adam, float32, MNIST)\n")
        add("| batch | threads | " + " | ".join(names) + " | load |")
        add("|---:|---:|" + "---:|" * len(names) + "---|")
        for (b, nt), r in tr.items():
            add(f"| {b} | {nt} | " + " | ".join(f"{r[k]:,.0f}" for k in names)
                + f" | {r['_load']} |")
    if "small" in res:
        sm = res["small"]
        names = [k for k in next(iter(sm.values())) if not k.startswith("_")]
        add("\n### Small network (samples/s, 20-64-64-10 tanh, dropout 0.5, batch 16, SGD "
            "Nesterov)\n")
        add("| threads | " + " | ".join(names) + " | load |")
        add("|---:|" + "---:|" * len(names) + "---|")
        for nt, r in sm.items():
            add(f"| {nt} | " + " | ".join(f"{r[k]:,.0f}" for k in names) + f" | {r['_load']} |")
    if "tta" in res:
        tt = res["tta"]
        add("\n### Time to 98.0% MNIST test accuracy (Adam lr 1e-3, batch 128, 2 threads)\n")
        add("| implementation | time to 98% | epochs | mean s/epoch | fastnn speed-up |")
        add("|---|---:|---:|---:|---:|")
        base = tt["fastnn"]["time_to_target"]
        for name, r in tt.items():
            if name.startswith("_"):
                continue
            ttt = r["time_to_target"]
            add(f"| {name} | {'%.1f s' % ttt if ttt else 'not reached'} | {r['epochs']} | "
                f"{np.mean(r['epoch_times']):.2f} | "
                f"{'-' if name == 'fastnn' else '%.2fx' % _ratio(ttt, base)} |")
        add(f"\nload average after: {tt['_load']}")
    if "infer" in res:
        inf = res["infer"]
        names = list(next(iter(inf.values()))["latency_us"])
        add("\n### Inference (784-256-256-10 relu, float32)\n")
        add("| threads | metric | " + " | ".join(names) + " | load |")
        add("|---:|---|" + "---:|" * len(names) + "---|")
        for nt, r in inf.items():
            add(f"| {nt} | batch-1 latency (us, median) | "
                + " | ".join(f"{r['latency_us'][k]:.1f}" for k in names) + f" | {r['_load']} |")
            add(f"| {nt} | batch-1024 throughput (samples/s) | "
                + " | ".join(f"{r['throughput'][k]:,.0f}" for k in names) + " | |")
    if "output" in res:
        out = res["output"]
        names = [k for k in next(iter(out.values())) if not k.startswith("_")]
        add("\n### Output maps (ns per element, float32, rows x C with rows = "
            "clip(2.56e6 / C, 8, 256))\n")
        add("| C | threads | " + " | ".join(names) + " | sparsemax vs numpy sort | load |")
        add("|---:|---:|" + "---:|" * len(names) + "---:|---|")
        for (c, nt), r in out.items():
            add(f"| {c:g} | {nt} | " + " | ".join(f"{r[k]:.2f}" for k in names)
                + f" | {_ratio(r['numpy sort sparsemax'], r['fastnn sparsemax']):.1f}x"
                + f" | {r['_load']} |")
    if "gemm" in res:
        g = res["gemm"]
        add("\n### GEMM efficiency (GFLOP/s, float32)\n")
        add("| threads | sgemm peak (NumPy OpenBLAS, best of 512/1024/2048) | "
            "dense 784->256 relu fwd b16 / b128 / b1024 (fastnn) | NumPy matmul same | "
            "training step GEMM flops / step time b16 / b128 | load |")
        add("|---:|---:|---|---|---|---|")
        for nt, r in g.items():
            pk = max(r["peak"].values())
            lay = r["layer"]
            fl = " / ".join(f"{lay[b]['fastnn']:.1f} ({lay[b]['fastnn'] / pk:.0%})"
                            for b in sorted(lay))
            nl = " / ".join(f"{lay[b]['numpy']:.1f}" for b in sorted(lay))
            st = " / ".join(f"{v:.1f} ({v / pk:.0%})" for v in r.get("step", {}).values()) or "-"
            add(f"| {nt} | {pk:.1f} | {fl} | {nl} | {st} | {r['_load']} |")
    add("\n### Targets (2 threads unless noted)\n")
    add("| target | measured | met |")
    add("|---|---:|:---:|")
    nt = max(threads)

    def row(what, value, goal, higher=True):
        ok = value >= goal if higher else value <= goal
        add(f"| {what} | {value:.2f}x | {'yes' if ok else 'NO'} |")
    if "train" in res:
        tr = res["train"]
        for b, tp, ts in ((128, 1.5, 3.0), (16, 4.0, None)):
            r = tr.get((b, nt))
            if not r:
                continue
            if "torch Adam(fused)" in r:
                row(f"training b{b} vs torch Adam(fused) >= {tp}x",
                    _ratio(r["fastnn"], r["torch Adam(fused)"]), tp)
                row(f"training b{b} vs torch Adam (default) >= {tp}x",
                    _ratio(r["fastnn"], r["torch Adam"]), tp)
            if ts:
                row(f"training b{b} vs scikit-learn >= {ts}x", _ratio(r["fastnn"], r["sklearn"]),
                    ts)
    if "small" in res and nt in res["small"]:
        r = res["small"][nt]
        for k in ("torch SGD(fused)", "torch SGD"):
            if k in r:
                row(f"small network vs {k} >= 5x", _ratio(r["fastnn"], r[k]), 5.0)
    if "tta" in res:
        tt = res["tta"]
        for k in ("torch Adam(fused)", "torch Adam"):
            if k in tt and tt[k]["time_to_target"] and tt["fastnn"]["time_to_target"]:
                row(f"time to 98% vs {k} >= 1.5x faster",
                    _ratio(tt[k]["time_to_target"], tt["fastnn"]["time_to_target"]), 1.5)
    if "infer" in res:
        for t_, r in res["infer"].items():
            lat = r["latency_us"]
            for k in ("fastnn forward", "fastnn predict"):
                add(f"| batch-1 latency, {k}, {t_} thread(s), at most 0.5 of NumPy's | "
                    f"{lat[k] / lat['numpy']:.2f} | {'yes' if lat[k] <= 0.5 * lat['numpy'] else 'NO'} |")
    if "output" in res:
        worst = min(_ratio(r["numpy sort sparsemax"], r["fastnn sparsemax"])
                    for (c, t_), r in res["output"].items() if c >= 1000)
        row("sparsemax vs entmax-style sort (NumPy), C >= 1000, worst case >= 20x", worst, 20.0)
    return "\n".join(lines)


def header():
    import fastnn._threads as th
    lines = machine_facts()
    info = th.blas_info()
    lines.append(f"fastnn BLAS: {info.get('backend')} {info.get('version')} "
                 f"kernel={info.get('architecture')} ({os.path.basename(info.get('filepath', ''))})")
    if torch_available():
        import torch
        lines.append(f"torch {torch.__version__}")
    import sklearn
    lines.append(f"scikit-learn {sklearn.__version__}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", default=None, help="MNIST directory (default: $FASTNN_MNIST_DIR "
                    "or ../shared/data/mnist)")
    ap.add_argument("--only", default="train,small,tta,infer,output,gemm")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true",
                    help="few rounds, short rounds, no time-to-accuracy (a smoke run)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--in-process", action="store_true",
                    help="time every library in this process (default: one worker process per "
                    "library, see Workers)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        if args.worker == "torch":
            import torch  # noqa: F401  (torch's OpenMP runtime loads with its own defaults)
        return _worker_main()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    threads = tuple(int(t) for t in args.threads.split(","))
    have_torch = torch_available() and not args.no_torch
    rounds = 2 if args.quick else args.rounds
    mt = 0.05 if args.quick else 0.3
    mnist = os.path.abspath(args.mnist) if args.mnist else None
    print(header(), flush=True)
    print(f"timing: {'one process' if args.in_process else 'one worker process per library'}, "
          f"{rounds} interleaved rounds of ~{mt:g} s, medians", flush=True)
    if {"train", "tta", "infer"} & set(parts):
        load_mnist(mnist)   # fail early with a clear message when MNIST is missing
    workers = Workers(isolate=not args.in_process)
    res = {}
    t0 = time.time()
    try:
        if "train" in parts:
            res["train"] = bench_train(workers, mnist, threads=threads, rounds=rounds,
                                       min_time=mt, have_torch=have_torch)
        if "small" in parts:
            res["small"] = bench_small(workers, threads=threads, rounds=rounds, min_time=mt,
                                       have_torch=have_torch)
        if "tta" in parts and not args.quick:
            res["tta"] = bench_tta(workers, mnist, have_torch=have_torch)
        if "infer" in parts:
            res["infer"] = bench_infer(workers, mnist, threads=threads, rounds=rounds,
                                       have_torch=have_torch)
        if "output" in parts:
            res["output"] = bench_output(workers, threads=threads, rounds=rounds,
                                         min_time=mt / 3,
                                         classes=CLASSES[:3] if args.quick else CLASSES,
                                         have_torch=have_torch)
        if "gemm" in parts:
            res["gemm"] = bench_gemm(workers, threads=threads, rounds=rounds,
                                     train=res.get("train"))
    finally:
        workers.close()
    print(f"\n(total {time.time() - t0:.0f} s; load average at end {load_avg()})")
    print(report(res, threads))
    return res


if __name__ == "__main__":
    main()
