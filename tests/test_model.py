"""Networks: Sequential of any depth, the non-sequential containers, modes, dtype, buffers."""
import tracemalloc

import numpy as np
import pytest

from fastnn.layers import Dense, Dropout, Identity, Softmax, Tanh
from fastnn.model import Parallel, Residual, Sequential

# An independent float64 reference: the lecture's forward and backward equations.
ACT = {
    "identity": (lambda z: z, lambda z: np.ones_like(z)),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2),
    "tanh": (np.tanh, lambda z: 1 / np.cosh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float)),
}


def ref_forward(X, layers):
    h, cache = np.asarray(X, np.float64), []
    for W, b, act in layers:
        z = h @ W.astype(np.float64) + b.astype(np.float64)
        cache.append((h, z))
        h = ACT[act][0](z)
    return h, cache


def ref_backward(g, layers, cache):
    g, grads = np.asarray(g, np.float64), []
    for (W, b, act), (h, z) in zip(reversed(layers), reversed(cache)):
        gz = g * ACT[act][1](z)
        grads.append((h.T @ gz, gz.sum(0)))
        g = gz @ W.astype(np.float64).T
    return g, grads[::-1]


def mlp(widths, acts, dtype=np.float64, seed=0):
    return Sequential(*[Dense(a, b, act, seed=seed + i, bias_init=0.05, dtype=dtype)
                        for i, (a, b, act) in enumerate(zip(widths, widths[1:], acts))])


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_sequential_matches_reference(depth, dtype, n_threads, rng):
    widths = [7] + [int(w) for w in rng.integers(1, 9, depth - 1)] + [3]
    acts = [["tanh", "relu", "sigmoid", "identity"][i % 4] for i in range(depth)]
    model = mlp(widths, acts, dtype)
    model.n_threads = n_threads
    X = rng.standard_normal((11, 7)).astype(dtype)
    out = model.forward(X)
    layers = [(m.weight.data, m.bias.data, m.activation) for m in model]
    ref, cache = ref_forward(X, layers)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)
    g = rng.standard_normal(out.shape).astype(dtype)
    model.zero_grad()
    gx = model.backward(g)
    gx_ref, grads = ref_backward(g, layers, cache)
    np.testing.assert_allclose(gx, gx_ref, rtol=20 * tol, atol=20 * tol)
    for m, (gw, gb) in zip(model, grads):
        np.testing.assert_allclose(m.weight.grad, gw, rtol=20 * tol, atol=20 * tol)
        np.testing.assert_allclose(m.bias.grad, gb, rtol=20 * tol, atol=20 * tol)


def test_backward_without_input_grad_gives_same_parameter_grads(rng):
    model = Sequential(Dropout(0.2, seed=1), Dense(6, 5, "relu", seed=0), Tanh(),
                       Dense(5, 2, seed=1), dtype=np.float64)
    X = rng.standard_normal((4, 6))
    g = rng.standard_normal((4, 2))
    model.eval()
    model.forward(X)
    model.zero_grad()
    model.backward(g)
    a = [p.grad.copy() for p in model.parameters()]
    model.forward(X)
    model.zero_grad()
    keep = g.copy()
    assert model.backward(g, need_input_grad=False) is None
    np.testing.assert_array_equal(g, keep)  # inplace=False leaves the caller's gradient alone
    for p, ga in zip(model.parameters(), a):
        np.testing.assert_allclose(p.grad, ga, rtol=1e-14)
    model.forward(X)
    model.zero_grad()
    model.backward(g, need_input_grad=False, inplace=True)
    for p, ga in zip(model.parameters(), a):
        np.testing.assert_allclose(p.grad, ga, rtol=1e-14)


def test_parameters_names_modes_zero_grad():
    model = Sequential(Dense(4, 3, "relu"), Dropout(0.5), Residual(Dense(3, 3, "tanh")),
                       Dense(3, 2))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.module.weight", "2.module.bias", "3.weight",
                     "3.bias"]
    assert [p.regularize for p in model.parameters()] == [True, False] * 3
    assert model.n_parameters() == 15 + 12 + 8
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    for p in model.parameters():
        p.grad[...] = 1
    model.zero_grad()
    assert not any(p.grad.any() for p in model.parameters())
    assert len(model) == 4 and isinstance(model[1], Dropout)


def test_dtype_fixed_at_construction_and_mismatch_message(rng):
    model = Sequential(Dense(3, 4, "relu"), Dense(4, 2))
    assert model.dtype == np.float32
    with pytest.raises(TypeError, match=r"X has dtype float64 but float32 is expected.*"
                                        r"X\.astype\(np\.float32\)"):
        model.forward(rng.standard_normal((2, 3)))
    m64 = Sequential(Dense(3, 4, "relu"), Dense(4, 2), dtype=np.float64)
    assert all(p.data.dtype == np.float64 and p.grad.dtype == np.float64
               for p in m64.parameters())
    with pytest.raises(TypeError, match=r"astype\(np\.float64\)"):
        m64.forward(rng.standard_normal((2, 3)).astype(np.float32))
    with pytest.raises(TypeError, match="both float32 and float64"):
        Sequential(Dense(3, 4, dtype=np.float32), Dense(4, 2, dtype=np.float64))
    with pytest.raises(ValueError, match="X has 5 features but the network expects 3"):
        model.forward(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="2-dimensional"):
        model.forward(np.zeros(3, np.float32))


def test_construction_errors():
    with pytest.raises(ValueError, match="expects 4 input features, got 5"):
        Sequential(Dense(3, 5), Dense(4, 2))
    d = Dense(3, 3)
    with pytest.raises(ValueError, match="appears twice"):
        Sequential(d, d)
    with pytest.raises(TypeError, match="Modules"):
        Sequential(Dense(3, 3), "relu")
    with pytest.raises(ValueError, match="n_threads"):
        Sequential(Dense(3, 3), n_threads=0)
    with pytest.raises(ValueError, match="keep the width"):
        Residual(Dense(3, 4))
    with pytest.raises(ValueError, match="equal width"):
        Parallel(Dense(3, 4), Dense(3, 2), merge="sum")


def test_n_threads_propagates():
    model = Sequential(Dense(3, 4), Residual(Sequential(Dense(4, 4), Tanh())), n_threads=1)
    assert {m.n_threads for m in model.modules()} == {1}
    model.n_threads = 2
    assert {m.n_threads for m in model.modules()} == {2}


def test_repr_is_a_layer_table():
    model = Sequential(Dense(784, 256, "relu"), Dropout(0.5), Dense(256, 10))
    text = repr(model)
    assert "Sequential(dtype=float32" in text
    assert "Dense(784, 256, activation='relu')" in text and "200,960" in text
    assert "parameters: 203,530" in text
    assert "input features: 784" in text


def test_state_dict_roundtrip_and_errors(rng):
    a = Sequential(Dense(3, 4, "tanh", seed=0), Dropout(0.5, seed=2), Dense(4, 2, seed=1),
                   dtype=np.float64)
    b = Sequential(Dense(3, 4, "tanh", seed=5), Dropout(0.5, seed=2), Dense(4, 2, seed=6),
                   dtype=np.float64)
    sd = a.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias", "1.calls"]
    sd["0.weight"][0, 0] = 99.0  # a copy: the model is not affected
    assert a[0].weight.data[0, 0] != 99.0
    b.load_state_dict(a.state_dict())
    X = rng.standard_normal((5, 3))
    np.testing.assert_array_equal(a.forward(X), b.forward(X))
    bad = a.state_dict()
    bad["0.weight"] = np.zeros((4, 3))
    with pytest.raises(ValueError, match="shape mismatch for '0.weight'"):
        b.load_state_dict(bad)
    bad = a.state_dict()
    del bad["2.bias"]
    with pytest.raises(KeyError, match="missing"):
        b.load_state_dict(bad)


def test_residual_and_parallel_forward(rng):
    f = Sequential(Dense(4, 4, "tanh", seed=0), Dense(4, 4, seed=1), dtype=np.float64)
    res = Residual(f)
    X = rng.standard_normal((6, 4))
    fx = f.forward(X).copy()
    np.testing.assert_allclose(res.forward(X), X + fx, rtol=1e-14)
    b1, b2 = Dense(4, 3, seed=2, dtype=np.float64), Dense(4, 2, "relu", seed=3, dtype=np.float64)
    par = Parallel(b1, b2)
    np.testing.assert_allclose(par.forward(X), np.hstack([b1.forward(X), b2.forward(X)]),
                               rtol=1e-14)
    s1, s2 = Dense(4, 3, seed=2, dtype=np.float64), Identity()
    with pytest.raises(ValueError):
        Parallel(s1, s2, merge="sum").forward(X)  # widths 3 and 4 cannot be summed


def test_residual_backward_sums_paths(rng):
    # y = x + W x (identity activation, no bias): dL/dx = g + g W^T
    lin = Dense(3, 3, bias=False, seed=0, dtype=np.float64)
    res = Residual(lin)
    X = rng.standard_normal((5, 3))
    res.forward(X)
    g = rng.standard_normal((5, 3))
    gx = res.backward(g)
    np.testing.assert_allclose(gx, g + g @ lin.weight.data.T, rtol=1e-13)
    np.testing.assert_allclose(lin.weight.grad, X.T @ g, rtol=1e-13)


def test_predict_is_batched_eval_and_copies(rng):
    model = Sequential(Dense(5, 8, "relu", seed=0), Dropout(0.5, seed=1), Dense(8, 3, seed=2),
                       dtype=np.float64)
    X = rng.standard_normal((37, 5))
    p1 = model.predict(X, batch_size=10)
    assert model.training  # mode restored
    model.eval()
    ref = model.forward(X).copy()
    model.train()
    np.testing.assert_allclose(p1, ref, rtol=1e-14)
    p2 = model.predict(X)
    assert p2 is not p1 and np.array_equal(p1, p2)
    assert model.predict(X[:0]).shape == (0, 3)
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(X, batch_size=0)


def test_predict_proba(rng):
    model = Sequential(Dense(5, 3, seed=0), dtype=np.float64)
    X = rng.standard_normal((4, 5))
    with pytest.raises(ValueError, match="fit the model first"):
        model.predict_proba(X)
    p = model.predict_proba(X, loss="cross_entropy")
    z = model.predict(X)
    e = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(1, keepdims=True), rtol=1e-12)
    with_softmax = Sequential(Dense(5, 3, seed=0), Softmax(), dtype=np.float64)
    np.testing.assert_allclose(with_softmax.predict_proba(X), p, rtol=1e-12)


def test_fit_evaluate_delegate_to_training(rng):
    training = pytest.importorskip("fastnn.training")
    pytest.importorskip("fastnn.optim")
    X = rng.standard_normal((64, 4)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    model = Sequential(Dense(4, 16, "relu", seed=0), Dense(16, 2, seed=1))
    hist = model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=30, batch_size=16,
                     verbose=0, seed=0)
    assert len(hist.epoch) == 30
    assert model.loss is not None and model.optimizer is not None
    res = model.evaluate(X, y)
    assert res["accuracy"] > 0.9
    assert model.predict_proba(X).shape == (64, 2)
    assert training is not None


def test_steady_state_training_step_allocates_nothing(rng):
    from fastnn import losses, optim

    model = Sequential(Dense(64, 128, "relu", seed=0), Dropout(0.3, seed=1),
                       Dense(128, 128, "tanh", seed=2), Residual(Dense(128, 128, "relu", seed=3)),
                       Dense(128, 10, seed=4))
    opt = optim.Adam(model.parameters(), lr=1e-3)
    loss = losses.CrossEntropyLoss()
    X = rng.standard_normal((96, 64)).astype(np.float32)
    y = rng.integers(0, 10, 96)
    g = np.empty((96, 10), np.float32)

    def step():
        model.zero_grad()
        z = model.forward(X)
        loss.loss_and_grad(z, y, grad_out=g)
        model.backward(g, need_input_grad=False, inplace=True)
        opt.step()

    for _ in range(3):
        step()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(5):
            step()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One (96, 128) float32 buffer is 48 KiB: a step that allocated any array would show it.
    assert current - base < 4096, current - base
    assert peak - base < 16384, peak - base


def test_modules_walk_is_depth_first_preorder():
    from fastnn import Dropout, Residual

    inner = Sequential(Dense(4, 4, seed=0), Dropout(0.1, seed=0), Dense(4, 4, seed=1))
    res = Residual(inner)
    m = Sequential(Dense(4, 4, seed=2), res, Dense(4, 2, seed=3))
    expect = [m, m[0], res, inner, inner[0], inner[1], inner[2], m[2]]
    assert [id(x) for x in m.modules()] == [id(x) for x in expect]


def test_predict_restores_training_mode_and_matches_forward():
    from fastnn import Dropout

    m = Sequential(Dense(5, 8, "relu", seed=0), Dropout(0.5, seed=1), Dense(8, 3, seed=2))
    X = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)
    assert m[1].training
    p = m.predict(X)
    p3 = m.predict(X, batch_size=3)   # a 1-row last batch runs GEMV: equal to the last bits
    assert m[1].training and m.training
    m.eval()
    np.testing.assert_array_equal(p, m.forward(X))
    np.testing.assert_allclose(p3, p, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="features"):
        m.predict(X[:, :4])
