"""Modules one at a time: Dense (fused activation), activation modules, output maps, Dropout."""
import numpy as np
import pytest

import fastnn
from fastnn.layers import (
    Activation,
    Dense,
    Dropout,
    Identity,
    ReLU,
    Sigmoid,
    Sign,
    Softmax,
    Sparsemax,
    Step,
    Tanh,
)
from fastnn.model import Parallel, Residual

ACTS = ["identity", "sigmoid", "tanh", "relu"]
REF = {
    "identity": lambda z: z,
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0),
    "step": lambda z: (z >= 0).astype(float),
    "sign": lambda z: np.where(z >= 0, 1.0, -1.0),
}
DREF = {  # derivative as a function of z
    "identity": lambda z: np.ones_like(z),
    "sigmoid": lambda z: REF["sigmoid"](z) * (1 - REF["sigmoid"](z)),
    "tanh": lambda z: 1 - np.tanh(z) ** 2,
    "relu": lambda z: (z > 0).astype(float),
}


def rtol(dtype):
    return 2e-5 if dtype == np.float32 else 1e-12


@pytest.mark.parametrize("act", ACTS + ["step", "sign"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 5, 3), (7, 1, 4), (9, 6, 1), (33, 17, 11)])
def test_dense_forward_backward_match_numpy(act, shape, dtype, n_threads, rng):
    n, fin, fout = shape
    layer = Dense(fin, fout, act, seed=0, bias_init=0.1, dtype=dtype)
    layer.n_threads = n_threads
    assert layer.weight.data.shape == (fin, fout) and layer.weight.data.flags.c_contiguous
    assert layer.weight.data.dtype == dtype and layer.bias.data.dtype == dtype
    X = rng.standard_normal((n, fin)).astype(dtype)
    y = layer.forward(X)
    z = X.astype(np.float64) @ layer.weight.data.astype(np.float64) + 0.1
    ref = REF[act](z)
    if act in ("step", "sign"):  # compare away from the threshold only
        ok = np.abs(z) > 1e-3
        np.testing.assert_array_equal(y[ok], ref[ok])
        return
    np.testing.assert_allclose(y, ref, rtol=rtol(dtype), atol=rtol(dtype))
    g = rng.standard_normal((n, fout)).astype(dtype)
    gx = layer.backward(g)
    gz = g.astype(np.float64) * DREF[act](z)
    tol = dict(rtol=10 * rtol(dtype), atol=10 * rtol(dtype) * max(1, n))
    np.testing.assert_allclose(layer.weight.grad, X.astype(np.float64).T @ gz, **tol)
    np.testing.assert_allclose(layer.bias.grad, gz.sum(0), **tol)
    np.testing.assert_allclose(gx, gz @ layer.weight.data.astype(np.float64).T, **tol)


def test_dense_accumulates_parameter_gradients(rng):
    layer = Dense(4, 3, "tanh", seed=0, dtype=np.float64)
    X = rng.standard_normal((5, 4))
    g = rng.standard_normal((5, 3))
    layer.forward(X)
    layer.backward(g.copy())
    once = layer.weight.grad.copy(), layer.bias.grad.copy()
    layer.forward(X)
    layer.backward(g.copy())
    np.testing.assert_allclose(layer.weight.grad, 2 * once[0], rtol=1e-14)
    np.testing.assert_allclose(layer.bias.grad, 2 * once[1], rtol=1e-14)
    layer.zero_grad()
    assert not layer.weight.grad.any() and not layer.bias.grad.any()


def test_dense_without_bias_and_need_input_grad(rng):
    layer = Dense(4, 3, "relu", bias=False, seed=0, dtype=np.float64)
    assert layer.bias is None and [n for n, _ in layer.named_parameters()] == ["weight"]
    X = rng.standard_normal((5, 4))
    layer.forward(X)
    g = rng.standard_normal((5, 3))
    assert layer.backward(g, need_input_grad=False) is None
    z = X @ layer.weight.data
    np.testing.assert_allclose(layer.weight.grad, X.T @ (g * (z > 0)), rtol=1e-12)


@pytest.mark.parametrize("act", ACTS)
def test_fused_activation_equals_separate_module(act, dtype, rng):
    fused = Dense(6, 5, act, seed=3, dtype=dtype)
    plain = Dense(6, 5, None, seed=3, dtype=dtype)
    plain.weight.data[...] = fused.weight.data
    sep = Activation(act)
    X = rng.standard_normal((7, 6)).astype(dtype)
    y1 = fused.forward(X)
    y2 = sep.forward(plain.forward(X))
    np.testing.assert_array_equal(y1, y2)
    g = rng.standard_normal((7, 5)).astype(dtype)
    gx1 = fused.backward(g.copy())
    gx2 = plain.backward(sep.backward(g.copy()))
    np.testing.assert_array_equal(gx1, gx2)
    np.testing.assert_array_equal(fused.weight.grad, plain.weight.grad)
    np.testing.assert_array_equal(fused.bias.grad, plain.bias.grad)


def test_default_init_glorot_or_he_and_reset_parameters():
    from fastnn import init
    relu = Dense(30, 20, "relu", seed=5, dtype=np.float64)
    tanh = Dense(30, 20, "tanh", seed=5, dtype=np.float64)
    np.testing.assert_array_equal(relu.weight.data, init.he_uniform((30, 20), seed=5,
                                                                    dtype=np.float64))
    np.testing.assert_array_equal(tanh.weight.data, init.glorot_uniform((30, 20), seed=5,
                                                                        dtype=np.float64))
    assert not relu.bias.data.any()
    w = relu.weight.data.copy()
    relu.weight.data[...] = 0
    relu.reset_parameters()
    np.testing.assert_array_equal(relu.weight.data, w)
    relu.reset_parameters(seed=6)
    assert not np.array_equal(relu.weight.data, w)
    assert Dense(3, 2, "relu", bias_init=0.01).bias.data.tolist() == pytest.approx([0.01] * 2)
    custom = Dense(3, 2, init=lambda shape, seed=None, dtype=None: np.ones(shape, dtype))
    assert (custom.weight.data == 1).all()


def test_dense_validation_messages():
    with pytest.raises(ValueError, match="Unknown activation 'mish'"):
        Dense(3, 2, "mish")
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        Dense(0, 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        Dense(3, 2, dtype=np.int32)
    with pytest.raises(ValueError, match="unknown initializer"):
        Dense(3, 2, init="nope")
    assert Dense(3, 2, "linear").activation == "identity"


@pytest.mark.parametrize("cls,name", [(Sigmoid, "sigmoid"), (Tanh, "tanh"), (ReLU, "relu"),
                                      (Step, "step"), (Sign, "sign")])
def test_activation_modules(cls, name, dtype, n_threads, rng):
    m = cls()
    m.n_threads = n_threads
    X = rng.standard_normal((9, 4)).astype(dtype)
    y = m.forward(X)
    np.testing.assert_allclose(y, REF[name](X.astype(np.float64)), rtol=rtol(dtype),
                               atol=rtol(dtype))
    g = rng.standard_normal((9, 4)).astype(dtype)
    gx = m.backward(g)
    if name in DREF:
        np.testing.assert_allclose(gx, g * DREF[name](X.astype(np.float64)),
                                   rtol=10 * rtol(dtype), atol=10 * rtol(dtype))
    else:  # threshold units: derivative 0
        assert not gx.any()
    assert m.backward(g, need_input_grad=False) is None


def test_activation_backward_respects_inplace(rng):
    m = Tanh()
    X = rng.standard_normal((3, 4))
    m.forward(X)
    g = rng.standard_normal((3, 4))
    keep = g.copy()
    out = m.backward(g)
    np.testing.assert_array_equal(g, keep)  # inplace=False: the caller's gradient is untouched
    out2 = m.backward(g, inplace=True)
    assert out2 is g
    np.testing.assert_array_equal(out, out2)


@pytest.mark.parametrize("cls", [Softmax, Sparsemax])
def test_output_maps_are_distributions(cls, dtype, rng):
    m = cls()
    X = (3 * rng.standard_normal((8, 6))).astype(dtype)
    p = m.forward(X)
    assert p.dtype == dtype
    assert (p >= 0).all()
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
    if cls is Softmax:
        e = np.exp(X - X.max(1, keepdims=True))
        np.testing.assert_allclose(p, e / e.sum(1, keepdims=True), rtol=rtol(dtype) * 10,
                                   atol=1e-7)
    else:
        assert (p == 0).any()  # sparse


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (20, 13)])
def test_edge_sizes(shape, dtype, rng):
    n, w = shape
    for m in (Dense(w, w, "relu", seed=0, dtype=dtype), Tanh(), Dropout(0.5, seed=1), Softmax(),
              Sparsemax()):
        X = rng.standard_normal((n, w)).astype(dtype)
        y = m.forward(X)
        assert y.shape == (n, w)
        assert m.backward(np.ones_like(y)).shape == (n, w)


# --- Dropout -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["inverted", "standard"])
def test_dropout_train_and_eval(mode, dtype, rng):
    p = 0.3
    d = Dropout(p, mode=mode, seed=123)
    X = (rng.random((200, 50)) + 0.5).astype(dtype)
    y = d.forward(X).copy()
    kept = y != 0
    assert abs(1 - kept.mean() - p) < 0.02
    scale = 1 / (1 - p) if mode == "inverted" else 1.0
    np.testing.assert_allclose(y[kept], X[kept] * scale, rtol=1e-6)
    g = rng.standard_normal(X.shape).astype(dtype)
    gx = d.backward(g)
    np.testing.assert_array_equal(gx != 0, kept)  # backward uses the forward's mask
    np.testing.assert_allclose(gx[kept], g[kept] * scale, rtol=1e-6)
    # evaluation: deterministic, identity (inverted) or times 1-p (standard)
    d.eval()
    e1 = d.forward(X).copy()
    e2 = d.forward(X).copy()
    np.testing.assert_array_equal(e1, e2)
    np.testing.assert_allclose(e1, X if mode == "inverted" else X * (1 - p), rtol=1e-6)
    ge = d.backward(g)
    np.testing.assert_allclose(ge, g if mode == "inverted" else g * (1 - p), rtol=1e-6)
    # expectation matches between training and evaluation
    d.train()
    mean_train = np.mean([d.forward(X).mean() for _ in range(20)])
    assert abs(mean_train - e1.mean()) < 0.01 * e1.mean()


def test_dropout_masks_change_per_call_and_are_reproducible(rng):
    X = np.ones((16, 32), dtype=np.float32)
    a, b = Dropout(0.5, seed=7), Dropout(0.5, seed=7)
    m1 = a.forward(X).copy()
    m2 = a.forward(X).copy()
    assert not np.array_equal(m1, m2)
    np.testing.assert_array_equal(b.forward(X), m1)
    np.testing.assert_array_equal(b.forward(X), m2)
    c = Dropout(0.5, seed=8)
    assert not np.array_equal(c.forward(X), m1)


def test_dropout_mask_independent_of_threads():
    X = np.ones((300, 400), dtype=np.float32)
    outs = []
    for t in (1, 2):
        d = Dropout(0.4, seed=11)
        d.n_threads = t
        outs.append([d.forward(X).copy() for _ in range(2)])
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


def test_dropout_counter_is_state():
    X = np.ones((4, 8))
    a = Dropout(0.5, seed=3)
    a.forward(X)
    sd = a.state_dict()
    assert int(sd["calls"]) == 1
    nxt = a.forward(X).copy()
    b = Dropout(0.5, seed=3)
    b.load_state_dict(sd)
    np.testing.assert_array_equal(b.forward(X), nxt)


def test_dropout_validation():
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(-0.1)
    with pytest.raises(ValueError, match="mode"):
        Dropout(0.5, mode="alpha")
    d = Dropout(0.0, seed=1)
    X = np.ones((2, 3))
    assert d.forward(X) is X
    assert isinstance(Dropout(0.5).seed, int)  # drawn once when None


def test_forward_buffers_are_reused(rng):
    layer = Dense(5, 4, "relu", seed=0, dtype=np.float64)
    y1 = layer.forward(rng.standard_normal((8, 5)))
    y2 = layer.forward(rng.standard_normal((8, 5)))
    assert y1 is y2
    assert layer.forward(rng.standard_normal((3, 5))) is not y1


def test_repr_and_config():
    d = Dense(4, 3, "relu", bias=False)
    assert repr(d) == "Dense(4, 3, activation='relu', bias=False)"
    assert d.get_config()["activation"] == "relu"
    assert repr(Dropout(0.2, mode="standard", seed=0)) == "Dropout(p=0.2, mode='standard')"
    assert repr(Activation("tanh")) == "Activation('tanh')"
    assert repr(fastnn.layers.ReLU()) == "ReLU()"


def test_dense_fed_its_own_output(rng):
    layer = Dense(4, 4, "tanh", seed=0, dtype=np.float64)
    X = rng.standard_normal((3, 4))
    y1 = layer.forward(X)
    ref = np.tanh(np.tanh(X @ layer.weight.data) @ layer.weight.data)
    np.testing.assert_allclose(layer.forward(y1), ref, rtol=1e-12)


@pytest.mark.parametrize("make", [
    lambda: Dense(3, 2, seed=0, dtype=np.float64), lambda: ReLU(), lambda: Tanh(),
    lambda: Softmax(), lambda: Sparsemax(), lambda: Dropout(0.5, seed=0), lambda: Identity(),
    lambda: Residual(Dense(3, 3, seed=0, dtype=np.float64)),
    lambda: Parallel(Dense(3, 2, seed=0, dtype=np.float64), Identity()),
], ids=["Dense", "ReLU", "Tanh", "Softmax", "Sparsemax", "Dropout", "Identity", "Residual",
        "Parallel"])
def test_modules_called_on_a_list_convert_it(make):
    rows = [[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]]
    a, b = make(), make()
    np.testing.assert_array_equal(a.forward(rows), b.forward(np.array(rows)))


def test_module_inputs_that_cannot_convert_raise_clear_errors():
    with pytest.raises(TypeError, match="numpy array"):
        ReLU().forward("abc")
    with pytest.raises(TypeError, match="float32"):       # a float64 list into a float32 layer
        Dense(3, 2, seed=0).forward([[1.0, 2.0, 3.0]])
    with pytest.raises(TypeError, match="dtype"):
        Tanh().forward(np.array([["a", "b"]]))
