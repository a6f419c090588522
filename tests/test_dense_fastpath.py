"""The layers' fast path: fastnn.functional's layer entries (forward_into, backward_into,
dropout_into) call the kernels' C-checked module entries without the Python validation.

The fast path must give bit-identical results to the validating path (fastnn.functional's
dense_forward/dense_backward), be taken for the network's own C-contiguous buffers, and leave
every other input (strided views, lists, other dtypes, replaced parameter arrays, overlapping
gradient buffers) to the validating path, which converts or raises as before.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest

import fastnn.functional as F

# the modules (fastnn.functional's attributes of these names are the functions)
FD = importlib.import_module("fastnn.functional.dense")
FDrop = importlib.import_module("fastnn.functional.dropout")
from fastnn import Dense, Sequential

ACTS = ["identity", "relu", "tanh", "sigmoid"]


def _reference(layer, x, g):
    """Forward and backward through the validating functional path (fresh gradients)."""
    W = layer.weight.data
    b = None if layer.bias is None else layer.bias.data
    y = F.dense_forward(x, W, b, activation=layer.activation, n_threads=1)
    gx, gW, gb = F.dense_backward(x, W, y, g, activation=layer.activation,
                                  need_grad_b=b is not None, n_threads=1)
    return y, gx, gW, gb


class _Counter:
    def __init__(self, monkeypatch):
        self.fwd = self.bwd = 0
        real_f, real_b = FD._forward_checked, FD._backward_checked

        def f(*a, **k):
            self.fwd += 1
            return real_f(*a, **k)

        def b(*a, **k):
            self.bwd += 1
            return real_b(*a, **k)
        # the validating paths the layer entries fall back to
        monkeypatch.setattr(FD, "_forward_checked", f)
        monkeypatch.setattr(FD, "_backward_checked", b)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("n", [1, 3, 17])
def test_fast_path_matches_validating_path(monkeypatch, dtype, n_threads, act, bias, n):
    rng = np.random.default_rng(n)
    layer = Dense(7, 5, activation=act, bias=bias, seed=1, dtype=dtype)
    layer.n_threads = n_threads
    if bias:
        layer.bias.data[...] = rng.standard_normal(5)
    x = rng.standard_normal((n, 7)).astype(dtype)
    g = rng.standard_normal((n, 5)).astype(dtype)
    y_ref, gx_ref, gW_ref, gb_ref = _reference(layer, x, g)
    c = _Counter(monkeypatch)
    y = layer.forward(x).copy()
    layer.weight.grad[...] = 1.0       # backward accumulates
    if bias:
        layer.bias.grad[...] = 2.0
    g_in = g.copy()
    gx = layer.backward(g_in, need_input_grad=True, inplace=False)
    assert (c.fwd, c.bwd) == (0, 0), "the fast path was not taken"
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(gx, gx_ref)
    np.testing.assert_array_equal(g_in, g)          # inplace=False: the caller's array is kept
    # accumulated into the old gradient: a BLAS may round gW + 1 once (beta = 1) where the
    # reference rounds gW first, so the tolerance scales with the terms, not the sum
    r = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(layer.weight.grad, gW_ref + 1.0, rtol=r,
                               atol=r * (np.abs(gW_ref).max() + 1.0))
    if bias:
        np.testing.assert_allclose(layer.bias.grad, gb_ref.astype(np.float64) + 2.0, rtol=r,
                                   atol=r * (np.abs(gb_ref).max() + 2.0))


@pytest.mark.parametrize("act", ["identity", "relu"])
def test_fast_path_inplace_and_no_input_grad(monkeypatch, dtype, act):
    rng = np.random.default_rng(0)
    layer = Dense(6, 4, activation=act, seed=0, dtype=dtype)
    x = rng.standard_normal((5, 6)).astype(dtype)
    g = rng.standard_normal((5, 4)).astype(dtype)
    _, _, gW_ref, gb_ref = _reference(layer, x, g)
    c = _Counter(monkeypatch)
    layer.forward(x)
    layer.zero_grad()
    assert layer.backward(g.copy(), need_input_grad=False, inplace=True) is None
    assert (c.fwd, c.bwd) == (0, 0)
    np.testing.assert_array_equal(layer.weight.grad, gW_ref)
    np.testing.assert_array_equal(layer.bias.grad, gb_ref)


def test_read_only_gradient_with_inplace_is_not_written(monkeypatch, dtype):
    rng = np.random.default_rng(1)
    layer = Dense(6, 4, activation="relu", seed=0, dtype=dtype)
    x = rng.standard_normal((5, 6)).astype(dtype)
    g = rng.standard_normal((5, 4)).astype(dtype)
    g.flags.writeable = False
    ref = _reference(layer, x, g)
    layer.forward(x)
    layer.zero_grad()
    gx = layer.backward(g, need_input_grad=True, inplace=True)
    np.testing.assert_array_equal(gx, ref[1])
    np.testing.assert_array_equal(layer.weight.grad, ref[2])


@pytest.mark.parametrize("case", ["strided", "read_only_input", "fortran_weight", "wrong_dtype",
                                  "wrong_width"])
def test_other_inputs_take_the_validating_path(monkeypatch, case):
    rng = np.random.default_rng(2)
    layer = Dense(6, 4, activation="tanh", seed=0)
    base = rng.standard_normal((5, 12)).astype(np.float32)
    x = np.ascontiguousarray(base[:, ::2])
    ones = np.ones((5, 4), np.float32)
    ref = _reference(layer, x, ones)
    c = _Counter(monkeypatch)
    if case == "strided":
        y = layer.forward(base[:, ::2]).copy()
        assert c.fwd == 1
        np.testing.assert_array_equal(y, ref[0])
        layer.zero_grad()
        layer.backward(ones)
        assert c.bwd == 1      # self._x is the strided view: validated (and copied) again
        np.testing.assert_array_equal(layer.weight.grad, ref[2])
    elif case == "read_only_input":   # const memoryviews: the fast path takes it, no copy
        x.flags.writeable = False
        y = layer.forward(x).copy()
        layer.zero_grad()
        layer.backward(ones)
        assert (c.fwd, c.bwd) == (0, 0)
        np.testing.assert_array_equal(y, ref[0])
        np.testing.assert_array_equal(layer.weight.grad, ref[2])
    elif case == "fortran_weight":
        layer.weight.data = np.asfortranarray(layer.weight.data)
        y = layer.forward(x).copy()
        assert c.fwd == 1
        np.testing.assert_allclose(
            y, np.tanh(x @ layer.weight.data + layer.bias.data), rtol=1e-5, atol=1e-6)
    elif case == "wrong_dtype":
        with pytest.raises(TypeError):
            layer.forward(x.astype(np.float64))
        assert c.fwd == 1
    elif case == "wrong_width":
        with pytest.raises(ValueError):
            layer.forward(np.ones((5, 7), np.float32))
        assert c.fwd == 1


def test_gradient_buffer_aliasing_takes_the_validating_path(monkeypatch):
    """A gradient that is the layer's own input-gradient buffer must not be overwritten while
    it is read: the fast path declines and the validating path raises or handles it."""
    rng = np.random.default_rng(3)
    layer = Dense(4, 4, activation="relu", seed=0)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    layer.forward(x)
    gx = layer.backward(rng.standard_normal((3, 4)).astype(np.float32))
    c = _Counter(monkeypatch)
    layer.forward(x)
    try:
        layer.backward(gx)
    except ValueError:
        pass
    assert c.bwd == 1


def test_sequential_training_step_uses_fast_path_and_matches(monkeypatch):
    """A whole network: identical parameters after steps with and without the fast path."""
    from fastnn import losses, optim

    def run(force_slow):
        if force_slow:
            monkeypatch.setattr(FD._k, "forward_layer", lambda *a: False)
            monkeypatch.setattr(FD._k, "backward_layer", lambda *a: False)
        model = Sequential(Dense(8, 16, "relu", seed=0), Dense(16, 16, "tanh", seed=1),
                           Dense(16, 3, seed=2), n_threads=1)
        opt = optim.Adam(model.parameters(), lr=1e-2)
        loss = losses.CrossEntropyLoss()
        rng = np.random.default_rng(4)
        for _ in range(5):
            X = rng.standard_normal((10, 8)).astype(np.float32)
            y = rng.integers(0, 3, 10)
            model.zero_grad()
            z = model.forward(X)
            _, g = loss.loss_and_grad(z, y)
            model.backward(g, need_input_grad=False, inplace=True)
            opt.step()
        monkeypatch.undo()
        return [p.data.copy() for p in model.parameters()]

    c = _Counter(monkeypatch)
    fast = run(False)
    assert (c.fwd, c.bwd) == (0, 0)
    slow = run(True)
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", ["inverted", "standard"])
@pytest.mark.parametrize("inplace", [False, True])
def test_dropout_fast_path_matches_functional(monkeypatch, dtype, n_threads, mode, inplace):
    from fastnn import Dropout
    rng = np.random.default_rng(5)
    layer = Dropout(0.3, mode=mode, seed=11)
    layer.n_threads = n_threads
    x = rng.standard_normal((9, 13)).astype(dtype)
    g = rng.standard_normal((9, 13)).astype(dtype)
    seed = layer._seed_for(0)
    y_ref = F.dropout(x, 0.3, seed, mode=mode, training=True, n_threads=1)
    gx_ref = F.dropout_backward(g, 0.3, seed, mode=mode, n_threads=1)
    calls = []
    monkeypatch.setattr(FDrop, "_dropout_map", lambda *a, **k: calls.append(1))
    y = layer.forward(x)
    np.testing.assert_array_equal(y, y_ref)
    g_in = g.copy()
    gx = layer.backward(g_in, inplace=inplace)
    np.testing.assert_array_equal(gx, gx_ref)
    assert (gx is g_in) == inplace
    if not inplace:
        np.testing.assert_array_equal(g_in, g)
    assert calls == []


def _splitmix64(x):
    m = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


@pytest.mark.parametrize("seed", [0, 1, 11, 2**63 - 1, 2**64 + 5, 2**80 + 3])
def test_dropout_call_seeds_follow_the_documented_mix(seed):
    from fastnn import Dropout
    layer = Dropout(0.5, seed=seed)
    for t in (0, 1, 2, 1000, 2**40):
        assert layer._seed_for(t) == _splitmix64(_splitmix64(seed) ^ t) >> 1


@pytest.mark.parametrize("shape", [(1,), (0, 3), (1, 1), (3, 5, 2), (7, 13)])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.999])
def test_dropout_module_entry_matches_dropout_apply(dtype, n_threads, shape, p):
    from fastnn._kernels import dropout as KD
    x = np.random.default_rng(7).standard_normal(shape).astype(dtype)
    for inverted in (True, False):
        scale = 1.0 / (1.0 - p) if inverted else 1.0
        ref = np.empty_like(x)
        KD.dropout_apply(x.reshape(-1), ref.reshape(-1), KD.key_from_seed(12345),
                         min(int(p * 4294967296.0), 4294967295), scale, n_threads)
        out = np.full_like(x, np.nan)
        assert KD.dropout_layer(x, out, 12345, p, inverted, n_threads) is True
        np.testing.assert_array_equal(out, ref)
        inplace = x.copy()
        assert KD.dropout_layer(inplace, inplace, 12345, p, inverted, n_threads) is True
        np.testing.assert_array_equal(inplace, ref)


def test_dropout_module_entry_declines_and_writes_nothing():
    from fastnn._kernels import dropout as KD
    x = np.ones((4, 6), np.float32)
    out = np.full((4, 6), 7.0, np.float32)
    ro = out.copy()
    ro.flags.writeable = False
    buf = np.zeros(30, np.float32)
    for args in [(x.tolist(), out), (x.astype(np.float16), out), (x, out.astype(np.float64)),
                 (x[:, ::2], out[:, :3]), (x, ro), (x, out[:3]), (x.reshape(24), out),
                 (buf[:24].reshape(4, 6), buf[6:].reshape(4, 6))]:
        assert KD.dropout_layer(args[0], args[1], 1, 0.5, True, 1) is False
    for p in (-0.1, 1.0, float("nan")):
        assert KD.dropout_layer(x, out, 1, p, True, 1) is False
    assert (out == 7.0).all()


def test_dropout_strided_input_takes_the_validating_path(monkeypatch):
    from fastnn import Dropout
    x = np.random.default_rng(6).standard_normal((8, 10)).astype(np.float32)
    layer = Dropout(0.5, seed=3)
    y_ref = F.dropout(np.ascontiguousarray(x[:, ::2]), 0.5, layer._seed_for(0))
    real, calls = FDrop._dropout_map, []

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(FDrop, "_dropout_map", counting)
    np.testing.assert_array_equal(layer.forward(x[:, ::2]), y_ref)
    assert calls == [1]


# --- the kernels' module entries (forward_layer / backward_layer): checks done in C -------------

from fastnn._kernels import dense as K  # noqa: E402

CODES = {a: F.ACTIVATION_TABLE[a].code for a in ACTS}


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 7, 5), (3, 7, 5), (17, 3, 1), (0, 4, 3)])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bias", [True, False])
def test_module_entries_match_memoryview_kernels(dtype, n_threads, shape, act, bias):
    n, n_in, n_out = shape
    rng = np.random.default_rng(sum(shape))
    X = rng.standard_normal((n, n_in)).astype(dtype)
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype) if bias else None
    code = CODES[act]
    Y_ref = np.empty((n, n_out), dtype)
    K.dense_forward(X, W, b if bias else np.empty(0, dtype), Y_ref, code, bias, n_threads)
    Y = np.full((n, n_out), np.nan, dtype)
    assert K.forward_layer(X, W, b, Y, code, n_threads) is True
    np.testing.assert_array_equal(Y, Y_ref)

    G = rng.standard_normal((n, n_out)).astype(dtype)
    for accumulate in (False, True):
        for over_G in (False, True):
            start = rng.standard_normal((n_in, n_out)).astype(dtype)
            start_b = rng.standard_normal(n_out).astype(dtype)
            ref = [start.copy(), start_b.copy(), np.empty((n, n_in), dtype)]
            K.dense_backward(X, W, Y_ref, G.copy(), np.empty((n, n_out), dtype), ref[2], ref[0],
                             ref[1] if bias else np.empty(0, dtype), np.empty(n_out),
                             code, True, bias, accumulate, n_threads)
            Gc = G.copy()
            Wg, bg, gX = start.copy(), start_b.copy(), np.full((n, n_in), np.nan, dtype)
            dZ = None if over_G else np.empty((n, n_out), dtype)
            assert K.backward_layer(X, W, Y_ref, Gc, dZ, gX, Wg, bg if bias else None,
                                    np.empty(n_out) if bias else None, code, accumulate,
                                    n_threads) is True
            np.testing.assert_array_equal(Wg, ref[0])
            np.testing.assert_array_equal(gX, ref[2])
            if bias:
                np.testing.assert_array_equal(bg, ref[1])
            if not over_G or act == "identity":
                np.testing.assert_array_equal(Gc, G)   # G is read, not written


def _unaligned(shape, dtype):
    """A C-contiguous array whose data starts one byte past an aligned address."""
    dtype = np.dtype(dtype)
    raw = np.zeros(int(np.prod(shape)) * dtype.itemsize + 1, np.uint8)
    return np.frombuffer(raw.data, dtype=dtype, count=int(np.prod(shape)),
                         offset=1).reshape(shape)


def _readonly(a):
    a.flags.writeable = False
    return a


def _forward_args(dtype=np.float32):
    rng = np.random.default_rng(0)
    return dict(X=rng.standard_normal((3, 4)).astype(dtype),
                W=rng.standard_normal((4, 5)).astype(dtype),
                b=rng.standard_normal(5).astype(dtype),
                Y=np.full((3, 5), 7.0, dtype))


FORWARD_DECLINED = {
    "X-list": lambda a: a.update(X=a["X"].tolist()),
    "X-float64": lambda a: a.update(X=a["X"].astype(np.float64)),
    "X-fortran": lambda a: a.update(X=np.asfortranarray(np.ones((3, 4), np.float32))),
    "X-strided": lambda a: a.update(X=np.ones((3, 8), np.float32)[:, ::2]),
    "X-1d": lambda a: a.update(X=np.ones(4, np.float32)),
    "X-unaligned": lambda a: a.update(X=_unaligned((3, 4), np.float32)),
    "X-width": lambda a: a.update(X=np.ones((3, 3), np.float32)),
    "W-float16": lambda a: a.update(W=a["W"].astype(np.float16)),
    "W-subclass": lambda a: a.update(W=a["W"].view(np.matrix)),
    "b-length": lambda a: a.update(b=a["b"][:4].copy()),
    "b-2d": lambda a: a.update(b=a["b"][None].copy()),
    "Y-readonly": lambda a: a.update(Y=_readonly(a["Y"])),
    "Y-rows": lambda a: a.update(Y=np.full((2, 5), 7.0, np.float32)),
    "Y-overlaps-W": lambda a: a.update(Y=a["W"][:3]),
    "Y-overlaps-b": lambda a: a.update(Y=np.full(20, 7.0, np.float32)[:15].reshape(3, 5),
                                       b=None) or a.update(b=a["Y"].reshape(-1)[10:15]),
}


@pytest.mark.parametrize("case", sorted(FORWARD_DECLINED))
def test_forward_layer_declines_and_writes_nothing(case):
    a = _forward_args()
    FORWARD_DECLINED[case](a)
    before = np.array(a["Y"], copy=True)
    assert K.forward_layer(a["X"], a["W"], a["b"], a["Y"], CODES["relu"], 1) is False
    np.testing.assert_array_equal(np.asarray(a["Y"]), before)


def test_forward_layer_declines_output_over_its_input():
    X = np.ones((4, 4), np.float32)
    W = np.eye(4, dtype=np.float32)
    assert K.forward_layer(X, W, None, X, CODES["identity"], 1) is False
    assert K.forward_layer(X[:2], W, None, X[2:], CODES["identity"], 1) is True  # disjoint


def _backward_args(dtype=np.float32, n=3, n_in=4, n_out=5):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n, n_in)).astype(dtype)
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    return dict(X=X, W=W, Y=np.maximum(X @ W, 0), G=rng.standard_normal((n, n_out)).astype(dtype),
                dZ=np.empty((n, n_out), dtype), gX=np.full((n, n_in), 7.0, dtype),
                Wg=np.full((n_in, n_out), 7.0, dtype), bg=np.full(n_out, 7.0, dtype),
                acc=np.empty(n_out))


BACKWARD_DECLINED = {
    "G-readonly-written": lambda a: a.update(G=_readonly(a["G"]), dZ=None),
    "G-float64": lambda a: a.update(G=a["G"].astype(np.float64)),
    "G-shape": lambda a: a.update(G=a["G"][:2].copy()),
    "Y-fortran": lambda a: a.update(Y=np.asfortranarray(a["Y"])),
    "dZ-readonly": lambda a: a.update(dZ=_readonly(a["dZ"])),
    "dZ-is-X": lambda a: a.update(dZ=np.ones((3, 5), np.float32), X=None) or a.update(
        X=a["dZ"].reshape(-1)[:12].reshape(3, 4)),
    "gX-overlaps-G": lambda a: a.update(gX=a["G"].reshape(-1)[:12].reshape(3, 4)),
    "gX-shape": lambda a: a.update(gX=np.full((3, 5), 7.0, np.float32)),
    "Wg-readonly": lambda a: a.update(Wg=_readonly(a["Wg"])),
    "Wg-is-W": lambda a: a.update(Wg=a["W"]),
    "Wg-unaligned": lambda a: a.update(Wg=_unaligned((4, 5), np.float32)),
    "bg-length": lambda a: a.update(bg=np.full(4, 7.0, np.float32)),
    "bg-overlaps-Wg": lambda a: a.update(bg=a["Wg"].reshape(-1)[:5]),
    "acc-float32": lambda a: a.update(acc=np.empty(5, np.float32)),
    "acc-missing": lambda a: a.update(acc=None),
}


@pytest.mark.parametrize("case", sorted(BACKWARD_DECLINED))
def test_backward_layer_declines_and_writes_nothing(case):
    a = _backward_args()
    BACKWARD_DECLINED[case](a)
    outs = [k for k in ("G", "dZ", "gX", "Wg", "bg") if a[k] is not None]
    before = {k: np.array(a[k], copy=True) for k in outs}
    assert K.backward_layer(a["X"], a["W"], a["Y"], a["G"], a["dZ"], a["gX"], a["Wg"], a["bg"],
                            a["acc"], CODES["relu"], True, 1) is False
    for k in outs:
        np.testing.assert_array_equal(np.asarray(a[k]), before[k], err_msg=k)


def test_backward_layer_identity_reads_a_readonly_gradient():
    """For the identity dZ is G itself and is never written: a read-only G is accepted."""
    a = _backward_args()
    G = _readonly(a["G"].copy())
    assert K.backward_layer(a["X"], a["W"], a["Y"], G, None, None, a["Wg"], None, None,
                            CODES["identity"], False, 1) is True
    np.testing.assert_allclose(a["Wg"], a["X"].T @ a["G"], rtol=1e-5, atol=1e-6)


# --- deferred zero_grad: the backward kernel overwrites marked gradients ---------------------

def test_zero_grad_is_deferred_but_reads_as_zero():
    import copy
    import pickle
    layer = Dense(3, 2, seed=0)
    layer.weight.grad[...] = 5.0
    layer.bias.grad[...] = 5.0
    layer.zero_grad()
    c1, c2 = copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))
    for m in (layer, c1, c2):
        assert (m.weight.grad == 0).all() and (m.bias.grad == 0).all()


def test_backward_overwrites_marked_gradients_and_adds_to_unmarked(dtype):
    rng = np.random.default_rng(8)
    layer = Dense(6, 4, activation="tanh", seed=0, dtype=dtype)
    x = rng.standard_normal((5, 6)).astype(dtype)
    g = rng.standard_normal((5, 4)).astype(dtype)
    _, gx_ref, gW_ref, gb_ref = _reference(layer, x, g)
    layer.forward(x)
    layer.weight.grad[...] = 3.0          # stale values, then marked zero
    layer.bias.grad[...] = 3.0
    layer.zero_grad()
    layer.backward(g)
    np.testing.assert_array_equal(layer.weight.grad, gW_ref)
    np.testing.assert_array_equal(layer.bias.grad, gb_ref)
    layer.backward(g)                     # unmarked now: accumulates
    np.testing.assert_allclose(layer.weight.grad, 2 * gW_ref, rtol=1e-6)
    # only the weight marked: the weight gets the fresh gradient, the bias adds to its value
    layer.bias.grad[...] = 1.0
    layer.weight.zero_grad()
    layer.backward(g)
    np.testing.assert_array_equal(layer.weight.grad, gW_ref)
    np.testing.assert_allclose(layer.bias.grad, 1.0 + gb_ref, rtol=1e-6)


def test_optimizer_sees_zero_for_marked_gradients_no_backward_wrote():
    from fastnn import optim
    rng = np.random.default_rng(9)
    a, b = Dense(4, 3, seed=0), Dense(4, 3, seed=1)
    opt = optim.SGD(list(a.parameters()) + list(b.parameters()), lr=1.0)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    g = np.ones((2, 3), np.float32)
    for m in (a, b):
        m.forward(x)
        m.backward(g)                      # non-zero gradients in both
    opt.step()
    opt.zero_grad()
    a.forward(x)
    a.backward(g)                          # only a's gradients are written
    w_b = b.weight.data.copy()
    opt.step()
    np.testing.assert_array_equal(b.weight.data, w_b)
    assert (b.weight.grad == 0).all()
