"""fastnn against its peers, every training-engine target in one run (ratios within the run).

One command measures, with the thread count fixed for every library (fastnn ``n_threads``,
NumPy/scikit-learn BLAS through threadpoolctl, ``torch.set_num_threads``):

* ``train``: training throughput (samples/s over whole passes of ``--train-samples`` real MNIST
  samples: shuffle, batch gather, forward, loss, backward, update) of 784-256-256-10 relu,
  softmax cross-entropy, Adam lr 1e-3, float32, batch 16 and 128, at every ``--threads`` count.
  fastnn is ``model.fit(epochs=1)`` (the training engine when it covers the network; the table
  says which path ran, from ``history.params["engine"]``; with fit's ``engine`` keyword the
  module loop is timed too, as "fastnn fit (modules)"); peers: PyTorch's eager loop with
  ``Adam(fused=True)``, the clean NumPy MLP of ``bench_time_to_accuracy.py`` and scikit-learn's
  ``MLPClassifier.partial_fit`` (``shuffle=False``, ``alpha=0``). With more than two thread
  counts the report adds a thread-scaling table;
* ``small``: 20-64-64-10 tanh, dropout 0.5 after each hidden layer, batch 16, SGD lr 0.1 with
  Nesterov momentum 0.9 and decay 1e-6, synthetic 20-feature data (scikit-learn has no dropout:
  its row is the same network without it);
* ``contention``: fastnn ``fit`` at 2 threads and at 1 thread while another process busy-loops
  (one Python ``while True`` process, started and stopped by this script);
* ``tta``: time to 98.0% MNIST test accuracy (784-256-256-10, Adam lr 1e-3, batch 128, 2
  threads) for ``--seeds`` seeds, fastnn against ``Adam(fused=True)`` from the same initial
  weights and batch order (``bench_time_to_accuracy.py``'s runners);
* ``bitwise``: the weights after one ``fit`` pass at batch 128 for 1, 2, 3 and 4 threads,
  compared bit for bit;
* ``infer``: batch-1 latency (median of single calls) and batch-1024 throughput, fastnn
  ``predict``/``forward`` against NumPy and PyTorch;
* ``output``: softmax and sparsemax per element at C = 1e3 and 1e4: fastnn against
  ``torch.softmax``, entmax's ``sparsemax`` (the ``entmax`` package when importable, else its
  algorithm - sort, cumsum, threshold - in PyTorch) and NumPy.

Every library runs in its own worker process; implementations are timed in interleaved rounds
(one run of each, repeated ``--rounds`` times, every other round in the reverse order) and
medians are kept, so a change of load hits all of them alike. Before and after every run the
parent probes the vCPU placement (``placement.py``: a cache-line round trip between two CPUs,
in ns) and measures the other processes' CPU use during the run (/proc/stat minus the
worker's own CPU time); each table reports both. Run::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=.:/path/to/torch \\
        python benchmarks/bench_peers.py [--out results.md] [--quick] [--threads 1,2] \\
        [--wait-quiet S] \\
        [--only train,small,contention,tta,bitwise,infer,output] [--mnist DIR]

``--quick`` is a smoke run (2 threads unless ``--threads`` says otherwise, small passes, 2
rounds, one short time-to-accuracy seed): minutes become seconds and the numbers mean little.
``benchmarks/bench_peers_pytest.py`` runs the same timed pieces under pytest-benchmark.
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import inspect
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# The environment before anything is imported: the workers start from it, so that no library's
# import-time settings (fastnn's OpenMP defaults, for one) reach another library's process.
_ORIGINAL_ENV = dict(os.environ)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bench_time_to_accuracy as _tta

SIZES = (784, 256, 256, 10)
SMALL_SIZES = (20, 64, 64, 10)
LR = 1e-3
SMALL_LR, SMALL_MOMENTUM, SMALL_DECAY, SMALL_P = 0.1, 0.9, 1e-6, 0.5
CLASSES = (1000, 10_000)
TARGET_THREADS = 2          # the targets are stated at 2 threads


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
    if "torch" in sys.modules:
        old = sys.modules["torch"].get_num_threads()
        sys.modules["torch"].set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        if old is not None:
            sys.modules["torch"].set_num_threads(old)


# --------------------------------------------------------------------------------------------
# Data (read here with NumPy alone, so that no worker but fastnn's imports fastnn)
# --------------------------------------------------------------------------------------------

def default_mnist_dir():
    """$FASTNN_MNIST_DIR, else the first of shared/data/mnist two or three levels above this
    folder that exists (a checkout beside, or a worktree below, the shared folder)."""
    if os.environ.get("FASTNN_MNIST_DIR"):
        return os.environ["FASTNN_MNIST_DIR"]
    cands = [os.path.join(HERE, *[".."] * k, "shared", "data", "mnist") for k in (2, 3)]
    return next((c for c in cands if os.path.isdir(c)), cands[0])


def _idx(path):
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            opener = gzip.open if p.endswith(".gz") else open
            with opener(p, "rb") as fh:
                raw = fh.read()
            ndim = raw[3]
            shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
            return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)
    raise FileNotFoundError(f"MNIST file {path}[.gz] not found (pass --mnist DIR or set "
                            "FASTNN_MNIST_DIR)")


def load_mnist(path=None):
    """(X_train, y_train, X_test, y_test): float32 rows scaled to [0, 1], int64 labels."""
    d = path or default_mnist_dir()
    out = []
    for kind in ("train", "t10k"):
        X = _idx(os.path.join(d, f"{kind}-images-idx3-ubyte"))
        y = _idx(os.path.join(d, f"{kind}-labels-idx1-ubyte"))
        out += [np.ascontiguousarray(X.reshape(len(X), -1), dtype=np.float32) / np.float32(255),
                y.astype(np.int64)]
    return tuple(out)


def small_data(n=4096, seed=0):
    """Synthetic 20-feature, 10-class data (a random linear rule plus noise), float32."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, SMALL_SIZES[0])).astype(np.float32)
    W = rng.standard_normal((SMALL_SIZES[0], SMALL_SIZES[-1]))
    y = (X @ W + 0.5 * rng.standard_normal((n, SMALL_SIZES[-1]))).argmax(axis=1)
    return X, y.astype(np.int64)


def small_weights(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for fi, fo in zip(SMALL_SIZES[:-1], SMALL_SIZES[1:]):
        lim = math.sqrt(6.0 / (fi + fo))
        out.append((rng.uniform(-lim, lim, (fi, fo)).astype(np.float32),
                    np.zeros(fo, np.float32)))
    return out


# --------------------------------------------------------------------------------------------
# One pass (epoch) over a block of samples, per library
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


def fit_supports_engine() -> bool:
    from fastnn import Sequential
    return "engine" in inspect.signature(Sequential.fit).parameters


class FastnnFit:
    """fastnn's ``model.fit(epochs=1)`` over a block of samples per call (its own shuffling,
    batch gathering and running metrics included). ``engine`` is passed to fit when not None."""

    def __init__(self, weights, n_threads, X, y, batch, optimizer="adam", sizes=SIZES,
                 activation="relu", dropout=0.0, engine=None, seed=0):
        from fastnn import optim
        self.model = fastnn_mlp(weights, n_threads, sizes, activation, dropout)
        params = self.model.parameters()
        if optimizer == "adam":
            self.opt = optim.Adam(params, lr=LR, n_threads=n_threads)
        else:
            self.opt = optim.SGD(params, lr=SMALL_LR, momentum=SMALL_MOMENTUM, nesterov=True,
                                 decay=SMALL_DECAY, n_threads=n_threads)
        self.X, self.y, self.batch = X, y, batch
        self.kw = {} if engine is None else {"engine": engine}
        self.rng = np.random.default_rng(seed)
        self.history = None

    def __call__(self):
        self.history = self.model.fit(self.X, self.y, loss="cross_entropy", optimizer=self.opt,
                                      epochs=1, batch_size=self.batch, verbose=0,
                                      seed=self.rng, **self.kw)

    def info(self):
        """What fit recorded about its path (``engine`` and any other engine facts)."""
        p = getattr(self.history, "params", None) or {}
        return {k: v for k, v in p.items() if "engine" in k or "fell" in k or "fallback" in k}


class TorchEpoch:
    """The usual PyTorch eager loop over a block: a permutation per pass, ``X[idx]`` gather,
    nn.Sequential, nn.CrossEntropyLoss, ``zero_grad(set_to_none=True)``, the optimizer."""

    def __init__(self, weights, X, y, batch, fused=False, sizes=SIZES, activation="relu",
                 dropout=0.0, optimizer="adam", seed=0):
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
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)
        self.batch = batch
        self.rng = np.random.default_rng(seed)

    def __call__(self):
        import torch
        perm = torch.from_numpy(self.rng.permutation(self.X.shape[0]))
        model, opt, loss_fn, X, y = self.model, self.opt, self.loss_fn, self.X, self.y
        for s in range(0, X.shape[0], self.batch):
            idx = perm[s:s + self.batch]
            loss = loss_fn(model(X[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


class NumpyEpoch:
    """A clean NumPy step (``step(X, y)``) over a block: a permutation per pass, ``X[idx]``."""

    def __init__(self, step, X, y, batch, seed=0):
        self.step, self.X, self.y, self.batch = step, X, y, batch
        self.rng = np.random.default_rng(seed)

    def __call__(self):
        perm = self.rng.permutation(self.X.shape[0])
        for s in range(0, self.X.shape[0], self.batch):
            idx = perm[s:s + self.batch]
            self.step(self.X[idx], self.y[idx])


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
                mask = (self.rng.random(z.shape, dtype=np.float32) < keep).astype(np.float32)
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


# --------------------------------------------------------------------------------------------
# Output maps
# --------------------------------------------------------------------------------------------

def torch_sparsemax_sort(z):
    """entmax's sparsemax algorithm (``entmax.sparsemax``: sort, cumulative sum, support size,
    threshold) in PyTorch, for when the ``entmax`` package is not installed."""
    import torch
    srt, _ = torch.sort(z, dim=-1, descending=True)
    cs = srt.cumsum(-1) - 1
    rho = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    support = rho * srt > cs
    k = support.sum(dim=-1, keepdim=True)
    tau = cs.gather(-1, k - 1) / k.to(z.dtype)
    return torch.clamp(z - tau, min=0)


def entmax_sparsemax():
    """(function, description): the entmax package's sparsemax when importable, else its
    algorithm re-implemented in PyTorch."""
    try:
        import entmax
        ver = getattr(entmax, "__version__", "")
        return (lambda z: entmax.sparsemax(z, dim=-1)), f"entmax {ver} package".replace("  ", " ")
    except ImportError:
        return torch_sparsemax_sort, "entmax's algorithm in PyTorch (package not installed)"


def numpy_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _rows_for(c):
    return int(max(8, min(256, 2_560_000 // c)))


# --------------------------------------------------------------------------------------------
# What is timed: one spec (a JSON-able dict) -> a callable, built where it runs
# --------------------------------------------------------------------------------------------

TRAIN_IMPLS = ("fastnn fit", "fastnn fit (modules)", "torch Adam(fused)", "numpy", "sklearn")
SMALL_IMPLS = ("fastnn fit", "torch SGD", "torch SGD(fused)", "numpy", "sklearn (no dropout)")
INFER_IMPLS = ("fastnn predict", "fastnn forward", "numpy", "torch", "fastnn predict bf16",
               "torch bf16")
OUTPUT_IMPLS = ("fastnn softmax", "torch softmax", "numpy softmax", "fastnn sparsemax",
                "torch entmax sparsemax")


def build(spec, state):
    """(fn, samples per call, calls per round or None) for a spec; state caches MNIST."""
    part, impl, nt = spec["part"], spec["impl"], spec["nt"]
    if part in ("train", "infer"):
        if "mnist" not in state:
            state["mnist"] = load_mnist(spec.get("mnist"))
        data = state["mnist"]
    if part == "train":
        batch, n = spec["batch"], spec["samples"]
        weights = _tta.initial_weights(0)
        X, y = np.ascontiguousarray(data[0][:n]), np.ascontiguousarray(data[1][:n])
        if impl.startswith("fastnn fit"):
            fn = FastnnFit(weights, nt, X, y, batch,
                           engine=False if impl == "fastnn fit (modules)" else None)
        elif impl == "sklearn":
            fn = SklearnTrain(X, y, batch)
        elif impl.startswith("torch"):
            fn = TorchEpoch(weights, X, y, batch, fused="fused" in impl)
        else:
            fn = NumpyEpoch(_tta.NumpyMLP(weights).step, X, y, batch)
        return fn, n, 1
    if part == "small":
        batch, n = 16, spec["samples"]
        X, y = small_data(n)
        weights = small_weights()
        if impl.startswith("sklearn"):
            return SklearnTrain(X, y, batch, sizes=SMALL_SIZES, activation="tanh",
                                solver="sgd"), n, 1
        if impl == "fastnn fit":
            fn = FastnnFit(weights, nt, X, y, batch, optimizer="sgd", sizes=SMALL_SIZES,
                           activation="tanh", dropout=SMALL_P)
        elif impl == "numpy":
            fn = NumpyEpoch(NumpySmall(weights).step, X, y, batch)
        else:
            fn = TorchEpoch(weights, X, y, batch, fused="fused" in impl, sizes=SMALL_SIZES,
                            activation="tanh", dropout=SMALL_P, optimizer="sgd")
        return fn, n, 1
    if part == "infer":
        batch = spec["batch"]
        weights = _tta.initial_weights(0)
        x = np.ascontiguousarray(data[2][:batch])
        if impl.startswith("fastnn"):
            model = fastnn_mlp(weights, nt).eval()
            if impl == "fastnn predict bf16":   # the opt-in bfloat16 products
                return (lambda: model.predict(x, precision="bfloat16")), batch, None
            f = model.forward if impl == "fastnn forward" else model.predict
            return (lambda: f(x)), batch, None
        if impl == "numpy":
            net = _tta.NumpyMLP(weights)
            return (lambda: net.predict(x)), batch, None
        import torch
        from torch import nn
        layers = []
        for i, (W, b) in enumerate(weights):
            lin = nn.Linear(*W.shape)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
                lin.bias.copy_(torch.from_numpy(b))
            layers += [lin] + ([nn.ReLU()] if i < len(weights) - 1 else [])
        tm = nn.Sequential(*layers).eval()
        xt = torch.from_numpy(x)
        if impl == "torch bf16":   # bfloat16 weights and activations (oneDNN)
            tm = tm.to(torch.bfloat16)
            xt = xt.to(torch.bfloat16)

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
        if impl == "numpy softmax":
            return (lambda: numpy_softmax(z)), z.size, None
        import torch
        zt = torch.from_numpy(z)
        if impl == "torch softmax":
            return (lambda: torch.softmax(zt, dim=-1)), z.size, None
        f = entmax_sparsemax()[0]
        return (lambda: f(zt)), z.size, None
    raise ValueError(f"unknown spec {spec!r}")


# --------------------------------------------------------------------------------------------
# Worker side
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


def _set_threads(nt, state):
    if state.get("nt") == nt:
        return
    from threadpoolctl import threadpool_limits
    state["limits"] = threadpool_limits(limits=nt)   # applied now, kept until changed
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(nt)
    state["nt"] = nt


def library_info(family_name):
    """Versions and thread pools (threadpoolctl) of this worker's library."""
    out = {"library": family_name}
    if family_name == "fastnn":
        import fastnn
        import fastnn._threads as th
        out["version"] = getattr(fastnn, "__version__", "?")
        bi = th.blas_info()
        out["blas"] = (f"{bi.get('backend')} {bi.get('version')} kernel={bi.get('architecture')}"
                       f" ({os.path.basename(bi.get('filepath') or '')})")
        out["fit engine keyword"] = fit_supports_engine()
        try:
            from fastnn._kernels import _config
            out["openmp"] = _config.openmp_enabled()
        except ImportError:
            pass
    elif family_name == "torch":
        import torch
        out["version"] = torch.__version__
        out["entmax"] = entmax_sparsemax()[1]
        with contextlib.suppress(Exception):
            out["cpu capability"] = torch.backends.cpu.get_cpu_capability()
    elif family_name == "sklearn":
        import sklearn
        out["version"] = sklearn.__version__
    else:
        out["version"] = np.__version__
    from threadpoolctl import threadpool_info
    out["pools"] = [f"{e.get('internal_api')} {e.get('version') or ''} "
                    f"kernel={e.get('architecture')} ({os.path.basename(e.get('filepath') or '')})"
                    for e in threadpool_info()]
    return out


def _weights_digest(model):
    h = hashlib.sha1()
    for p in model.parameters():
        h.update(np.ascontiguousarray(p.data).tobytes())
    return h.hexdigest()[:16]


def handle(msg, state):
    """One request: build (once) and time a spec, run a time-to-accuracy runner, report."""
    cpu0 = time.process_time()
    r = _handle(msg, state)
    if isinstance(r, dict) and "seconds" in r:
        r["cpu_s"] = time.process_time() - cpu0   # this process's CPU, all its threads
    return r


def _handle(msg, state):
    cmd = msg["cmd"]
    if cmd == "info":
        return library_info(msg["family"])
    if cmd == "tta":
        _set_threads(_tta.N_THREADS, state)
        if "mnist" not in state:
            state["mnist"] = load_mnist(msg.get("mnist"))
        data = state["mnist"]
        if msg.get("n_train"):
            n = msg["n_train"]
            data = (data[0][:n], data[1][:n], data[2], data[3])
        seed = msg["seed"]
        runner = {"fastnn": _tta.run_fastnn,
                  "torch Adam(fused)": lambda *a: _tta.run_torch(*a, fused=True)}[msg["name"]]
        return runner(data, _tta.initial_weights(seed), seed, msg["target"], msg["max_epochs"])
    if cmd == "bitwise":
        if "mnist" not in state:
            state["mnist"] = load_mnist(msg.get("mnist"))
        n = msg["samples"]
        X, y = np.ascontiguousarray(state["mnist"][0][:n]), state["mnist"][1][:n]
        out = {}
        for nt in msg["threads"]:
            _set_threads(nt, state)
            fit = FastnnFit(_tta.initial_weights(0), nt, X, y, 128)
            t0 = time.perf_counter()
            fit()
            out[str(nt)] = {"digest": _weights_digest(fit.model), "info": fit.info(),
                            "seconds": time.perf_counter() - t0}
        return out
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
            fn()
            if not fixed:
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
        r = {"seconds": (pc() - t0) / calls, "samples": samples}
        if hasattr(fn, "info"):
            r["info"] = fn.info()
        return r


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
        proto.write(json.dumps(reply, default=str) + "\n")
        proto.flush()


# --------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------

def family(impl):
    """Which library an implementation belongs to (one worker process per library)."""
    return impl.split()[0]


class Workers:
    """One process per library (fastnn, torch, numpy, sklearn), or everything in this process.

    Separate processes keep each library's thread pools (fastnn's OpenMP team, torch's OpenMP
    and MKL threads, NumPy's OpenBLAS threads) from spinning while another library is timed.
    Between two requests to different implementations the parent sleeps ``cooldown`` seconds
    so that spinning workers of the last one park (OpenBLAS spins for up to ~0.1 s): within
    the fastnn worker too, where the module loop's multi-threaded BLAS calls left OpenBLAS's
    threads spinning into the next engine round (measured in one process: the engine's
    2-thread fit straight after a module-loop fit 122k samples/s, falling back to one thread;
    after a 0.3 s pause 228k, as without the module-loop round).
    """

    def __init__(self, isolate=True, cooldown=0.15):
        self.isolate, self.cooldown = isolate, cooldown
        self.procs, self.state = {}, {}
        self.last = None

    def prepare(self, impl):
        """Sleep the cooldown when the next request goes to another implementation than the
        last."""
        if self.last is not None and self.last != impl:
            time.sleep(self.cooldown)
        self.last = impl

    def ask(self, impl, msg):
        fam = family(impl)
        self.prepare(impl)
        if not self.isolate:
            return handle(msg, self.state)
        p = self.procs.get(fam)
        if p is None:
            env = dict(_ORIGINAL_ENV)
            env["PYTHONPATH"] = os.pathsep.join(
                [os.path.dirname(HERE), HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                                 else []))
            p = self.procs[fam] = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--worker", fam],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                cwd=os.path.dirname(HERE))
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


class Placement:
    """The parent's vCPU placement probe (placement.py), or a no-op without a C compiler."""

    def __init__(self, enabled=True):
        self.pl = None
        if enabled:
            try:
                import placement
                if placement.why_unavailable() is None and placement.cpu_pair():
                    self.pl = placement
                self.line = placement.describe()
            except Exception as exc:  # the probe is optional
                self.line = f"placement probe: n/a ({exc})"
        else:
            self.line = "placement probe: off (--no-probe)"

    def probe(self):
        return self.pl.probe() if self.pl else None

    def far(self, ns):
        """True for a 'far' or 'held' reading."""
        return self.pl is not None and ns is not None and self.pl.state(ns) != "near"


def cpu_counters():
    """(busy, steal) CPU seconds of the whole machine since boot from /proc/stat, or None."""
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq = f[:7]
    steal = f[7] if len(f) > 7 else 0
    return (user + nice + system + irq + softirq) / tick, steal / tick


def wait_quiet(max_wait, threshold=0.1, window=0.25):
    """Wait (at most max_wait s) until the machine's busy CPU stays below ``threshold`` cores
    for two consecutive windows; returns the seconds waited."""
    t0 = time.perf_counter()
    quiet = 0
    while max_wait > 0 and time.perf_counter() - t0 < max_wait:
        a = cpu_counters()
        if a is None:
            break
        time.sleep(window)
        b = cpu_counters()
        quiet = quiet + 1 if (b[0] - a[0]) / window < threshold else 0
        if quiet >= 2:
            break
    return time.perf_counter() - t0


class Cell:
    """The runs of one implementation in one table cell: values with the placement probes
    taken just before and just after each run."""

    def __init__(self):
        self.values, self.pp, self.info, self.others = [], [], {}, []

    def add(self, value, before, after, info=None, others=None):
        self.values.append(value)
        self.pp.append((before, after))
        if others is not None:
            self.others.append(others)
        if info:
            self.info = info

    def median(self):
        return float(np.median(self.values)) if self.values else float("nan")

    def near_median(self, placement):
        """Median over the runs whose probes both read 'near' (nan when none did)."""
        v = [x for x, (a, b) in zip(self.values, self.pp)
             if a is not None and b is not None and not placement.far(a)
             and not placement.far(b)]
        return float(np.median(v)) if v else float("nan")

    def pp_text(self, placement):
        return pp_text([self], placement)


def pp_text(cells, placement):
    """The placement probes of some cells' runs: median (min-max) ns of the readings and how
    many runs had a far or held (no round trip within the budget) reading before or after."""
    if placement.pl is None:
        return "n/a"
    pps = [pair for c in cells for pair in c.pp]
    ns = [x for pair in pps for x in pair if x is not None]
    fin = [x for x in ns if not math.isinf(x)]
    if not ns:
        return "n/a"
    far = sum(1 for a, b in pps if placement.far(a) or placement.far(b))
    held = sum(1 for a, b in pps if (a is not None and math.isinf(a))
               or (b is not None and math.isinf(b)))
    txt = (f"{np.median(fin):.0f} ({min(fin):.0f}-{max(fin):.0f})" if fin else "-")
    return txt + f"; far {far}/{len(pps)}" + (f", held {held}" if held else "")


QUIET = {"max_wait": 0.0, "waited": 0.0}   # --wait-quiet


def measure(workers, placement, specs, rounds=5, min_time=0.3, cmd="round", n_calls=1000,
            value=None):
    """Interleaved rounds over {name: spec}; returns {name: Cell}. ``value(seconds, samples)``
    maps a reply to the recorded number (default samples/s). Each run also records the other
    processes' CPU use during it (cores: the machine's busy CPU time from /proc/stat minus the
    worker's and this process's own, over the request's wall time)."""
    value = value or (lambda t, s: s / t)
    cells = {name: Cell() for name in specs}
    for rnd in range(rounds):
        # every other round in the reverse order: the first run of a round comes after the
        # cooldown sleep and the placement probe (idle cores), and the same implementation
        # must not always take that place
        for name in (list(specs) if rnd % 2 == 0 else list(specs)[::-1]):
            spec = specs[name]
            workers.prepare(spec["impl"])
            QUIET["waited"] += wait_quiet(QUIET["max_wait"])
            before = placement.probe()
            c0, w0, p0 = cpu_counters(), time.perf_counter(), time.process_time()
            r = workers.ask(spec["impl"], {"cmd": cmd, "spec": spec, "min_time": min_time,
                                           "n_calls": n_calls})
            c1, w1, p1 = cpu_counters(), time.perf_counter(), time.process_time()
            after = placement.probe()
            others = None
            if c0 is not None and c1 is not None and "cpu_s" in r:
                own = (p1 - p0) if workers.isolate else 0.0   # in-process: cpu_s has it
                busy = c1[0] - c0[0] - r["cpu_s"] - own
                others = max(0.0, busy) / max(w1 - w0, 1e-9)
            cells[name].add(value(r["seconds"], r["samples"]), before, after, r.get("info"),
                            others)
    return cells


def others_text(cells):
    """Other processes' CPU during the runs of some cells: median (max) cores."""
    o = [x for c in cells for x in c.others]
    return f"{np.median(o):.2f} ({max(o):.2f})" if o else "n/a"


def _impls(all_impls, have_torch, have_engine=True):
    return [i for i in all_impls if (have_torch or family(i) != "torch")
            and (have_engine or i != "fastnn fit (modules)")]


def _say(what, cells, unit="", fmt="{:,.0f}"):
    print(f"  {what}: " + ", ".join(f"{k} {fmt.format(c.median())}{unit}"
                                    for k, c in cells.items())
          + f"  (load {load_avg()})", flush=True)


def bench_train(workers, pl, cfg):
    """{(batch, threads): {"cells": {impl: Cell}, "load": str}} of samples/s."""
    out = {}
    for batch in (16, 128):
        for nt in cfg["threads"]:
            specs = {i: {"part": "train", "impl": i, "batch": batch, "nt": nt,
                         "samples": cfg["train_samples"], "mnist": cfg["mnist"]}
                     for i in _impls(TRAIN_IMPLS, cfg["torch"], cfg["engine_kw"])}
            cells = measure(workers, pl, specs, cfg["rounds"])
            out[(batch, nt)] = {"cells": cells, "load": load_avg()}
            _say(f"train batch {batch}, {nt} thread(s), samples/s", cells)
            print(f"    fastnn fit path: {_engine_text(cells['fastnn fit'])}", flush=True)
    return out


def bench_small(workers, pl, cfg):
    out = {}
    for nt in cfg["threads"]:
        specs = {i: {"part": "small", "impl": i, "nt": nt, "samples": cfg["small_samples"]}
                 for i in _impls(SMALL_IMPLS, cfg["torch"])}
        cells = measure(workers, pl, specs, cfg["rounds"])
        out[nt] = {"cells": cells, "load": load_avg()}
        _say(f"small network, {nt} thread(s), samples/s", cells)
    return out


def bench_contention(workers, pl, cfg):
    """fastnn fit at 2 and 1 threads while one other process busy-loops."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"], env=_ORIGINAL_ENV)
    out = {}
    try:
        time.sleep(0.5)
        load0 = load_avg()
        for batch in (16, 128):
            specs = {f"fastnn fit {nt}t": {"part": "train", "impl": "fastnn fit", "batch": batch,
                                           "nt": nt, "samples": cfg["train_samples"],
                                           "mnist": cfg["mnist"]} for nt in (2, 1)}
            cells = measure(workers, pl, specs, cfg["rounds"])
            out[batch] = {"cells": cells, "load": f"{load0} -> {load_avg()}"}
            _say(f"contention batch {batch}, samples/s", cells)
    finally:
        busy.kill()
        busy.wait()
    return out


def bench_tta(workers, pl, cfg):
    """Per seed: {name: result of bench_time_to_accuracy's runner, plus probes}."""
    out = []
    names = ["fastnn"] + (["torch Adam(fused)"] if cfg["torch"] else [])
    for seed in range(cfg["seeds"]):
        row = {}
        for name in names:
            print(f"  time to accuracy, seed {seed}, {name}:", flush=True)
            before = pl.probe()
            r = workers.ask(name, {"cmd": "tta", "name": name, "mnist": cfg["mnist"],
                                   "seed": seed, "target": cfg["tta_target"],
                                   "max_epochs": cfg["tta_max_epochs"],
                                   "n_train": cfg["tta_train"]})
            r["pp"] = (before, pl.probe())
            row[name] = r
        row["_load"] = load_avg()
        out.append(row)
    return out


def bench_bitwise(workers, pl, cfg):
    r = workers.ask("fastnn", {"cmd": "bitwise", "mnist": cfg["mnist"],
                               "samples": cfg["bitwise_samples"], "threads": [1, 2, 3, 4]})
    r["_load"] = load_avg()
    print("  bitwise: " + ", ".join(f"{k} threads {v['digest']}" for k, v in r.items()
                                    if not k.startswith("_")), flush=True)
    return r


def bench_infer(workers, pl, cfg):
    out = {}
    for nt in cfg["threads"]:
        impls = _impls(INFER_IMPLS, cfg["torch"])
        lat = measure(workers, pl, {i: {"part": "infer", "impl": i, "batch": 1, "nt": nt,
                                        "mnist": cfg["mnist"]} for i in impls},
                      cfg["rounds"], cmd="latency", n_calls=cfg["latency_calls"],
                      value=lambda t, s: t * 1e6)
        thr = measure(workers, pl, {i: {"part": "infer", "impl": i, "batch": 1024, "nt": nt,
                                        "mnist": cfg["mnist"]} for i in impls},
                      cfg["rounds"], cfg["min_time"])
        out[nt] = {"latency": lat, "throughput": thr, "load": load_avg()}
        _say(f"infer {nt} thread(s), batch-1 latency", lat, " us", "{:.1f}")
        _say(f"infer {nt} thread(s), batch-1024 samples/s", thr)
    return out


def bench_output(workers, pl, cfg):
    out = {}
    for c in CLASSES:
        for nt in cfg["threads"]:
            specs = {i: {"part": "output", "impl": i, "c": c, "nt": nt}
                     for i in _impls(OUTPUT_IMPLS, cfg["torch"])}
            cells = measure(workers, pl, specs, cfg["rounds"], cfg["min_time"] / 3,
                            value=lambda t, s: t * 1e9 / s)
            out[(c, nt)] = {"cells": cells, "load": load_avg()}
            _say(f"output C={c}, {nt} thread(s), ns/element", cells, "", "{:.2f}")
    return out


# --------------------------------------------------------------------------------------------
# Report (markdown)
# --------------------------------------------------------------------------------------------

def _ratio(a, b):
    return a / b if a and b and not (math.isnan(a) or math.isnan(b)) else float("nan")


def _fx(x):
    return "n/a" if x is None or math.isnan(x) else f"{x:.2f}x"


def _target_nt(res_threads):
    return TARGET_THREADS if TARGET_THREADS in res_threads else max(res_threads)


def _engine_text(cell):
    info = cell.info or {}
    if not info:
        return "module loop (fit has no engine record)"
    return ", ".join(f"{k}={v}" for k, v in info.items())


def report(res, cfg, pl, facts):
    lines = list(facts)
    add = lines.append
    targets = []   # (what, measured text, goal text, ok or None, note)

    def target(what, value, goal, higher=True, note="", text=None):
        ok = None if value is None or math.isnan(value) else (
            value >= goal if higher else value <= goal)
        targets.append((what, text or _fx(value), ("<= " if not higher else ">= ") + f"{goal:g}x",
                        ok, note))

    def cell_table(title, rows, names, fmt, key_cols):
        add(f"\n### {title}\n")
        add("| " + " | ".join(key_cols) + " | " + " | ".join(names)
            + " | placement ns: median (min-max); far runs | other processes, cores: "
            "median (max) | load |")
        add("|" + "---:|" * len(key_cols) + "---:|" * len(names) + "---|---|---|")
        for keys, r in rows:
            cells = r["cells"]
            pp = pp_text(list(cells.values()), pl)
            add("| " + " | ".join(str(k) for k in keys) + " | "
                + " | ".join(fmt.format(cells[n].median()) if n in cells else "-"
                             for n in names)
                + f" | {pp} | {others_text(cells.values())} | {r['load']} |")

    nt_t = None
    if "train" in res:
        tr = res["train"]
        nt_t = _target_nt(sorted({nt for _, nt in tr}))
        names = list(next(iter(tr.values()))["cells"])
        cell_table("Training throughput (samples/s; 784-256-256-10 relu, Adam, float32, MNIST, "
                   f"passes of {cfg['train_samples']:,} samples)", sorted(tr.items()), names,
                   "{:,.0f}", ["batch", "threads"])
        if "torch Adam(fused)" in names:
            add("\n| batch | threads | fastnn fit / torch Adam(fused) | same, runs with both "
                "probes near | fastnn fit / numpy | fastnn fit / sklearn | fastnn fit path |")
            add("|---:|---:|---:|---:|---:|---:|---|")
            for (b, nt), r in sorted(tr.items()):
                c = r["cells"]
                f, t = c["fastnn fit"], c["torch Adam(fused)"]
                add(f"| {b} | {nt} | {_fx(_ratio(f.median(), t.median()))}"
                    f" | {_fx(_ratio(f.near_median(pl), t.near_median(pl)))}"
                    f" | {_fx(_ratio(f.median(), c['numpy'].median()))}"
                    f" | {_fx(_ratio(f.median(), c['sklearn'].median()))}"
                    f" | {_engine_text(f)} |")
        for b, goal in ((128, 2.0), (16, 3.0)):
            if (b, nt_t) in tr:
                c = tr[(b, nt_t)]["cells"]
                tc = c.get("torch Adam(fused)", Cell())
                near = _ratio(c["fastnn fit"].near_median(pl), tc.near_median(pl))
                target(f"training 784-256-256-10 Adam, batch {b}, {nt_t} threads, "
                       "fastnn fit / torch Adam(fused)",
                       _ratio(c["fastnn fit"].median(), tc.median()),
                       goal, note=f"near-state runs only: {_fx(near)}")
        ths = sorted({nt for _, nt in tr})
        if len(ths) > 2 or max(ths) > 2:
            add("\n### Thread scaling (samples/s, speed-up over 1 thread)\n")
            add("| threads | " + " | ".join(f"b{b} {n}" for b in (16, 128)
                                           for n in ("fastnn fit", "torch Adam(fused)")
                                           if n in names) + " |")
            add("|---:|" + "---:|" * sum(1 for b in (16, 128)
                                         for n in ("fastnn fit", "torch Adam(fused)")
                                         if n in names))
            for nt in ths:
                row = []
                for b in (16, 128):
                    for n in ("fastnn fit", "torch Adam(fused)"):
                        if n not in names:
                            continue
                        v = tr[(b, nt)]["cells"][n].median()
                        base = tr[(b, ths[0])]["cells"][n].median() if ths[0] == 1 else float("nan")
                        row.append(f"{v:,.0f} ({_fx(_ratio(v, base))})")
                add(f"| {nt} | " + " | ".join(row) + " |")
    if "small" in res:
        sm = res["small"]
        names = list(next(iter(sm.values()))["cells"])
        cell_table("Small network (samples/s; 20-64-64-10 tanh, dropout 0.5, batch 16, SGD "
                   f"Nesterov, passes of {cfg['small_samples']:,} samples)",
                   [((nt,), r) for nt, r in sorted(sm.items())], names, "{:,.0f}", ["threads"])
        nt_s = _target_nt(sorted(sm))
        c = sm[nt_s]["cells"]
        torch_best = max((c[k].median() for k in ("torch SGD", "torch SGD(fused)") if k in c),
                         default=float("nan"))
        target(f"small network, {nt_s} threads, fastnn fit / PyTorch's faster SGD",
               _ratio(c["fastnn fit"].median(), torch_best), 20.0,
               note=f"fastnn fit path: {_engine_text(c['fastnn fit'])}")
    if "contention" in res:
        ct = res["contention"]
        add("\n### Under contention (samples/s; one other process busy-loops)\n")
        add("| batch | fastnn fit 2 threads | fastnn fit 1 thread | 2t / 1t | placement ns "
            "(2t; 1t) | other processes, cores: median (max) | fit path (2t) | load |")
        add("|---:|---:|---:|---:|---|---|---|---|")
        for b, r in sorted(ct.items()):
            c2, c1 = r["cells"]["fastnn fit 2t"], r["cells"]["fastnn fit 1t"]
            q = _ratio(c2.median(), c1.median())
            add(f"| {b} | {c2.median():,.0f} | {c1.median():,.0f} | {_fx(q)} | "
                f"{c2.pp_text(pl)}; {c1.pp_text(pl)} | {others_text([c2, c1])} | "
                f"{_engine_text(c2)} | {r['load']} |")
            target(f"contention, batch {b}: fastnn fit 2 threads / 1 thread", q, 0.9)
    if "tta" in res:
        tt = res["tta"]
        add(f"\n### Time to {cfg['tta_target']:.1%} MNIST test accuracy (784-256-256-10, Adam "
            f"lr 1e-3, batch 128, 2 threads, same initial weights per seed"
            + (f", first {cfg['tta_train']:,} training samples" if cfg["tta_train"] else "")
            + ")\n")
        add("| seed | fastnn s (epochs) | torch Adam(fused) s (epochs) | ratio | fastnn s/epoch | "
            "torch s/epoch | placement ns (fastnn; torch) | load |")
        add("|---:|---:|---:|---:|---:|---:|---|---|")

        def fmt_t(r):
            t = r["time_to_target"]
            return ("not reached" if t is None else f"{t:.1f}") + f" ({r['epochs']})"

        def pp(r):
            return " / ".join("n/a" if v is None else f"{v:.0f}" for v in r["pp"]).replace(
                "inf", "held")
        tf, tt_, ef, et = [], [], [], []
        for seed, row in enumerate(tt):
            f = row["fastnn"]
            tf.append(f["time_to_target"] or float("inf"))
            ef.append(f["epochs"])
            t = row.get("torch Adam(fused)")
            if t:
                tt_.append(t["time_to_target"] or float("inf"))
                et.append(t["epochs"])
            add(f"| {seed} | {fmt_t(f)} | {fmt_t(t) if t else '-'} | "
                f"{_fx(_ratio(tt_[-1], tf[-1])) if t else '-'} | {np.mean(f['epoch_times']):.2f} | "
                f"{np.mean(t['epoch_times']) if t else float('nan'):.2f} | "
                f"{pp(f)}; {pp(t) if t else '-'} | {row['_load']} |")
        if tt_:
            mf, mt = float(np.median(tf)), float(np.median(tt_))
            add(f"| median | {mf:.1f} ({np.median(ef):g}) | {mt:.1f} ({np.median(et):g}) | "
                f"{_fx(_ratio(mt, mf))} | | | | |")
            target(f"time to {cfg['tta_target']:.0%}, median over {len(tt)} seed(s): torch "
                   "Adam(fused) time / fastnn time", _ratio(mt, mf), 1.5,
                   note=f"median epochs fastnn {np.median(ef):g}, torch {np.median(et):g}; "
                   f"fastnn fit engine={tt[0]['fastnn'].get('engine')}")
            d = abs(float(np.median(ef)) - float(np.median(et)))
            targets.append((f"time to {cfg['tta_target']:.0%}: epochs equal within noise "
                            "(medians differ by at most 1)", f"{d:g} epoch(s) apart", "<= 1",
                            d <= 1, ""))
        else:
            target(f"time to {cfg['tta_target']:.0%}: torch Adam(fused) time / fastnn time",
                   float("nan"), 1.5, note="PyTorch not run")
    if "bitwise" in res:
        bw = res["bitwise"]
        digests = {k: v["digest"] for k, v in bw.items() if not k.startswith("_")}
        same = len(set(digests.values())) == 1
        add(f"\n### Bitwise weights after one fit pass ({cfg['bitwise_samples']:,} samples, "
            "batch 128)\n")
        add("| threads | sha1 of the weights (16 hex) | seconds | fit path |")
        add("|---:|---|---:|---|")
        for k, v in bw.items():
            if not k.startswith("_"):
                add(f"| {k} | {v['digest']} | {v['seconds']:.2f} | "
                    f"{', '.join(f'{a}={b}' for a, b in v['info'].items()) or 'module loop'} |")
        targets.append(("bitwise the same weights for 1, 2, 3, 4 threads",
                        "equal" if same else f"{len(set(digests.values()))} different",
                        "equal", same, f"load {bw['_load']}"))
    if "infer" in res:
        inf = res["infer"]
        names = list(next(iter(inf.values()))["latency"])
        add("\n### Inference (784-256-256-10 relu; float32, and the bfloat16 columns: weights and "
            "inputs rounded to bfloat16)\n")
        add("| threads | metric | " + " | ".join(names) + " | placement ns: median (min-max); "
            "far runs | other processes, cores | load |")
        add("|---:|---|" + "---:|" * len(names) + "---|---|---|")
        for nt, r in sorted(inf.items()):
            add(f"| {nt} | batch-1 latency (us, median of single calls) | "
                + " | ".join(f"{r['latency'][k].median():.1f}" for k in names)
                + f" | {pp_text(list(r['latency'].values()), pl)} | "
                f"{others_text(r['latency'].values())} | {r['load']} |")
            add(f"| {nt} | batch-1024 (samples/s) | "
                + " | ".join(f"{r['throughput'][k].median():,.0f}" for k in names)
                + f" | {pp_text(list(r['throughput'].values()), pl)} | "
                f"{others_text(r['throughput'].values())} | |")
        nt_i = _target_nt(sorted(inf))
        r = inf[nt_i]
        for k in ("fastnn predict", "fastnn forward"):
            target(f"batch-1 latency, {k}, {nt_i} threads / NumPy's",
                   _ratio(r["latency"][k].median(), r["latency"]["numpy"].median()), 0.5,
                   higher=False)
        target(f"batch-1024 inference, fastnn predict, {nt_i} threads / NumPy's (throughput)",
               _ratio(r["throughput"]["fastnn predict"].median(),
                      r["throughput"]["numpy"].median()), 1.5)
        if "fastnn predict bf16" in r["latency"]:   # the opt-in: a change of results
            target(f"batch-1 latency, fastnn predict bfloat16, {nt_i} threads / NumPy's float32",
                   _ratio(r["latency"]["fastnn predict bf16"].median(),
                          r["latency"]["numpy"].median()), 0.5, higher=False)
            target(f"batch-1024 inference, fastnn predict bfloat16, {nt_i} threads / NumPy's "
                   f"float32 (throughput)",
                   _ratio(r["throughput"]["fastnn predict bf16"].median(),
                          r["throughput"]["numpy"].median()), 1.5)
    if "output" in res:
        out = res["output"]
        names = list(next(iter(out.values()))["cells"])
        cell_table("Output maps (ns per element, float32, rows x C, rows = clip(2.56e6 / C, 8, "
                   "256))", [((f"{c:g}", nt), r) for (c, nt), r in sorted(out.items())], names,
                   "{:.2f}", ["C", "threads"])
        if "entmax" in facts_extra.get("torch", {}):
            add(f"\n'torch entmax sparsemax' is {facts_extra['torch']['entmax']}.")
        nt_o = _target_nt(sorted({nt for _, nt in out}))
        for c in CLASSES:
            cl = out[(c, nt_o)]["cells"]
            target(f"softmax, C = {c:g}, {nt_o} threads: torch.softmax time / fastnn's",
                   _ratio(cl.get("torch softmax", Cell()).median(),
                          cl["fastnn softmax"].median()), 1.0)
        cl = out[(1000, nt_o)]["cells"]
        target(f"sparsemax, C = 1000, {nt_o} threads: entmax time / fastnn's",
               _ratio(cl.get("torch entmax sparsemax", Cell()).median(),
                      cl["fastnn sparsemax"].median()), 30.0)
    add("\n### Targets (issue #12; ratios within this run, medians)\n")
    add("| target | measured | goal | result | note |")
    add("|---|---:|---:|:---:|---|")
    for what, meas, goal, ok, note in targets:
        add(f"| {what} | {meas} | {goal} | {'n/a' if ok is None else ('PASS' if ok else 'MISS')}"
            f" | {note} |")
    return "\n".join(lines)


facts_extra: dict = {}


def machine_lines(workers, families, pl, cfg):
    """Markdown lines: machine, kernels per library (threadpoolctl), load, placement."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh
                          if ln.startswith("model name")), model)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    lines = ["## fastnn peers benchmark", "",
             f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
             f"- machine: {model}; {os.cpu_count()} logical CPUs ({usable} usable); "
             f"{platform.system()} {platform.release()}; Python {platform.python_version()}",
             f"- load average at start: {load_avg()}",
             f"- {pl.line}",
             f"- timing: {'one worker process per library' if workers.isolate else 'one process'}"
             f", {cfg['rounds']} interleaved rounds (every other one reversed), "
             f"medians{'; QUICK smoke run: numbers mean little' if cfg['quick'] else ''}"]
    for fam in families:
        try:
            info = workers.ask(fam, {"cmd": "info", "family": fam})
        except RuntimeError as exc:
            lines.append(f"- {fam}: unavailable ({exc})")
            continue
        facts_extra[fam] = info
        extra = "; ".join(f"{k} {v}" for k, v in info.items()
                          if k not in ("library", "version", "pools"))
        lines.append(f"- {fam} {info.get('version')}: " + (extra + "; " if extra else "")
                     + "kernels: " + ("; ".join(info["pools"]) or "none loaded"))
    for var in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_NUM_THREADS",
                "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "MKL_NUM_THREADS"):
        if var in _ORIGINAL_ENV:
            lines.append(f"- {var}={_ORIGINAL_ENV[var]}")
    return lines


PARTS = ("train", "small", "contention", "tta", "bitwise", "infer", "output")


def config(args):
    q = args.quick
    return {
        "quick": q,
        "threads": tuple(int(t) for t in (args.threads or ("2" if q else "1,2")).split(",")),
        "rounds": args.rounds or (2 if q else 5),
        "min_time": 0.03 if q else 0.3,
        "mnist": os.path.abspath(args.mnist) if args.mnist else None,
        "train_samples": args.train_samples or (1024 if q else 60000),
        "small_samples": 1024 if q else 32768,
        "seeds": args.seeds or (1 if q else 5),
        "tta_target": 0.80 if q else args.target,
        "tta_max_epochs": 1 if q else args.max_epochs,
        "tta_train": 2048 if q else None,
        "bitwise_samples": 512 if q else 60000,
        "latency_calls": 100 if q else 1000,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", default=None, help="MNIST directory (IDX files, .gz or not; "
                    "default: $FASTNN_MNIST_DIR or ../shared/data/mnist)")
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated parts")
    ap.add_argument("--threads", default=None,
                    help="thread counts, e.g. 1,2,4,8,16 (default 1,2; with --quick 2)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5)")
    ap.add_argument("--train-samples", type=int, default=None,
                    help="samples per timed training pass (default 60000: one MNIST epoch)")
    ap.add_argument("--seeds", type=int, default=None, help="time-to-accuracy seeds (default 5)")
    ap.add_argument("--target", type=float, default=0.98)
    ap.add_argument("--max-epochs", type=int, default=15)
    ap.add_argument("--out", default=None, help="write the markdown report to this file")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run of every part at 2 threads (under 2 minutes; numbers mean "
                    "little)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-probe", action="store_true", help="skip the placement probe")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="before each run wait up to S seconds for the machine to be quiet "
                    "(below 0.1 busy cores for 0.5 s)")
    ap.add_argument("--in-process", action="store_true",
                    help="time every library in this process (default: one worker process per "
                    "library)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        if args.worker == "torch":
            import torch  # noqa: F401  (torch's OpenMP runtime loads with its own defaults)
        return _worker_main()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    bad = set(parts) - set(PARTS)
    if bad:
        ap.error(f"unknown part(s) {sorted(bad)}; choose from {','.join(PARTS)}")
    cfg = config(args)
    QUIET["max_wait"] = args.wait_quiet
    cfg["torch"] = torch_available() and not args.no_torch
    if {"train", "contention", "tta", "bitwise", "infer"} & set(parts):
        load_mnist(cfg["mnist"])   # fail early with a clear message when MNIST is missing
    pl = Placement(enabled=not args.no_probe)
    workers = Workers(isolate=not args.in_process, cooldown=0.05 if args.quick else 0.15)
    families = ["fastnn", "numpy", "sklearn"] + (["torch"] if cfg["torch"] else [])
    res = {}
    t0 = time.time()
    try:
        facts = machine_lines(workers, families, pl, cfg)
        print("\n".join(facts), flush=True)
        cfg["engine_kw"] = bool(facts_extra.get("fastnn", {}).get("fit engine keyword"))
        spent = {}
        for part in PARTS:
            if part in parts:
                t_part = time.time()
                res[part] = globals()[f"bench_{part}"](workers, pl, cfg)
                spent[part] = time.time() - t_part
    finally:
        workers.close()
    text = report(res, cfg, pl, facts)
    text += (f"\n\n(total {time.time() - t0:.0f} s: "
             + ", ".join(f"{k} {v:.0f} s" for k, v in spent.items())
             + (f"; {QUIET['waited']:.0f} s waiting for quiet" if QUIET["max_wait"] else "")
             + f"; load average at end {load_avg()})\n")
    print("\n" + text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
        print(f"written to {args.out}")
    return res


if __name__ == "__main__":
    main()
