"""One optimizer step over the parameters of a 784-256-256-10 MLP (float32).

fastnn (one fused compiled call per parameter group, 1 and 2 threads) against a clean NumPy
implementation (in-place ufuncs with ``out=`` into preallocated scratch: the best NumPy can do)
and a naive NumPy one (the textbook expressions, with their temporaries), in the same group.
A second pair of groups times tiny parameters, where only the per-step overhead is left.

Run:  python -m pytest benchmarks/bench_optim.py --benchmark-only
"""
import math

import numpy as np
import pytest

from fastnn.optim import SGD, Adam
from fastnn.parameter import Parameter

LAYERS = [(784, 256), (256, 256), (256, 10)]
TINY = [(4, 4), (4, 4), (4, 4)]


def make_arrays(layers, seed=0):
    rng = np.random.default_rng(seed)
    shapes = []
    for fan_in, fan_out in layers:
        shapes += [(fan_in, fan_out), (fan_out,)]
    ws = [(rng.standard_normal(s) * 0.05).astype(np.float32) for s in shapes]
    gs = [(rng.standard_normal(s) * 1e-2).astype(np.float32) for s in shapes]
    return ws, gs


class NumpyAdam:
    """Adam with NumPy ufuncs. clean=True: in place, one scratch array per parameter."""

    def __init__(self, ws, gs, clean, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.ws, self.gs, self.clean = ws, gs, clean
        self.lr, (self.b1, self.b2), self.eps, self.t = lr, betas, eps, 0
        self.ms = [np.zeros_like(w) for w in ws]
        self.vs = [np.zeros_like(w) for w in ws]
        self.tmps = [np.empty_like(w) for w in ws]

    def step(self):
        self.t += 1
        b1, b2, eps = self.b1, self.b2, self.eps
        bc1, bc2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
        if self.clean:
            step_size, inv_sqrt_bc2 = self.lr / bc1, 1.0 / math.sqrt(bc2)
            for w, g, m, v, tmp in zip(self.ws, self.gs, self.ms, self.vs, self.tmps):
                np.multiply(m, b1, out=m)
                np.multiply(g, 1.0 - b1, out=tmp)
                np.add(m, tmp, out=m)
                np.multiply(v, b2, out=v)
                np.multiply(g, g, out=tmp)
                np.multiply(tmp, 1.0 - b2, out=tmp)
                np.add(v, tmp, out=v)
                np.sqrt(v, out=tmp)
                np.multiply(tmp, inv_sqrt_bc2, out=tmp)
                np.add(tmp, eps, out=tmp)
                np.divide(m, tmp, out=tmp)
                np.multiply(tmp, -step_size, out=tmp)
                np.add(w, tmp, out=w)
        else:
            for w, g, m, v in zip(self.ws, self.gs, self.ms, self.vs):
                m[...] = b1 * m + (1 - b1) * g
                v[...] = b2 * v + (1 - b2) * g * g
                m_hat = m / bc1
                v_hat = v / bc2
                w -= self.lr * m_hat / (np.sqrt(v_hat) + eps)


class NumpySGD:
    """SGD with momentum (PyTorch's formula) with NumPy ufuncs."""

    def __init__(self, ws, gs, clean, lr=0.01, momentum=0.9):
        self.ws, self.gs, self.clean, self.lr, self.mu = ws, gs, clean, lr, momentum
        self.bufs = [np.zeros_like(w) for w in ws]
        self.tmps = [np.empty_like(w) for w in ws]

    def step(self):
        if self.clean:
            for w, g, b, tmp in zip(self.ws, self.gs, self.bufs, self.tmps):
                np.multiply(b, self.mu, out=b)
                np.add(b, g, out=b)
                np.multiply(b, -self.lr, out=tmp)
                np.add(w, tmp, out=w)
        else:
            for w, g, b in zip(self.ws, self.gs, self.bufs):
                b[...] = self.mu * b + g
                w -= self.lr * b


def fastnn_optimizer(kind, layers, n_threads):
    ws, gs = make_arrays(layers)
    params = []
    for w, g in zip(ws, gs):
        p = Parameter(w, regularize=w.ndim == 2)
        p.grad[...] = g
        params.append(p)
    if kind == "adam":
        return Adam(params, lr=1e-3, n_threads=n_threads)
    return SGD(params, lr=0.01, momentum=0.9, n_threads=n_threads)


def numpy_optimizer(kind, layers, clean):
    ws, gs = make_arrays(layers)
    cls = NumpyAdam if kind == "adam" else NumpySGD
    return cls(ws, gs, clean=clean)


IMPLS = ["fastnn-t1", "fastnn-t2", "numpy-clean", "numpy-naive"]


def _make(impl, kind, layers):
    if impl.startswith("fastnn"):
        return fastnn_optimizer(kind, layers, n_threads=int(impl[-1]))
    return numpy_optimizer(kind, layers, clean=impl == "numpy-clean")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", ["adam", "sgd-momentum"])
def test_step_784_256_256_10(benchmark, kind, impl):
    benchmark.group = f"optim {kind} step, 784-256-256-10 float32"
    opt = _make(impl, kind, LAYERS)
    opt.step()
    benchmark(opt.step)
    if impl.startswith("fastnn"):
        assert all(p.data.dtype == np.float32 for g in opt.param_groups for p in g["params"])


@pytest.mark.parametrize("impl", ["fastnn-t1", "numpy-clean", "numpy-naive"])
@pytest.mark.parametrize("kind", ["adam", "sgd-momentum"])
def test_step_overhead_tiny(benchmark, kind, impl):
    benchmark.group = f"optim {kind} step, 6 tiny parameters (per-step overhead)"
    opt = _make(impl, kind, TINY)
    opt.step()
    benchmark(opt.step)
