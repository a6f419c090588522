"""Dense's internal fast path (kernels called without the functional wrappers' validation).

The fast path must give bit-identical results to the validating path (fastnn.functional's
dense_forward/dense_backward), be taken for the network's own C-contiguous buffers, and leave
every other input (strided views, lists, other dtypes, replaced parameter arrays, overlapping
gradient buffers) to the validating path, which converts or raises as before.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastnn.functional as F
import fastnn.layers as L
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
        real_f, real_b = F.dense_forward, F.dense_backward

        def f(*a, **k):
            self.fwd += 1
            return real_f(*a, **k)

        def b(*a, **k):
            self.bwd += 1
            return real_b(*a, **k)
        monkeypatch.setattr(L.F, "dense_forward", f)
        monkeypatch.setattr(L.F, "dense_backward", b)


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
    np.testing.assert_allclose(layer.weight.grad, gW_ref + 1.0, rtol=1e-6 if dtype == np.float32
                               else 1e-13, atol=0)
    if bias:
        np.testing.assert_allclose(layer.bias.grad, gb_ref.astype(np.float64) + 2.0,
                                   rtol=1e-6 if dtype == np.float32 else 1e-13)


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
            monkeypatch.setattr(L, "_fast_dense_inputs", lambda *a: False)
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
    monkeypatch.setattr(L.F, "dropout", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(L.F, "dropout_backward", lambda *a, **k: calls.append(1))
    y = layer.forward(x)
    np.testing.assert_array_equal(y, y_ref)
    g_in = g.copy()
    gx = layer.backward(g_in, inplace=inplace)
    np.testing.assert_array_equal(gx, gx_ref)
    assert (gx is g_in) == inplace
    if not inplace:
        np.testing.assert_array_equal(g_in, g)
    assert calls == []


def test_dropout_strided_input_takes_the_validating_path(monkeypatch):
    from fastnn import Dropout
    x = np.random.default_rng(6).standard_normal((8, 10)).astype(np.float32)
    layer = Dropout(0.5, seed=3)
    y_ref = F.dropout(np.ascontiguousarray(x[:, ::2]), 0.5, layer._seed_for(0))
    real, calls = F.dropout, []

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(L.F, "dropout", counting)
    np.testing.assert_array_equal(layer.forward(x[:, ::2]), y_ref)
    assert calls == [1]
