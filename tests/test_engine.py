"""The training engine (fastnn/_kernels/engine.pyx, fastnn.functional.engine).

* against an independent float64 NumPy implementation of the same steps (same batches);
* against fastnn's own module path (model.forward / loss / model.backward / optimizer.step)
  for every activation, Dropout, Maxout, every loss and optimizer with its options;
* bitwise equal weights for 1-4 threads, with blocks that do not divide the widths;
* edge cases: batches of one row, a short last batch, one output, empty ranges, non-finite
  losses, chunked runs, the fallback to one thread.
"""
import numpy as np
import pytest

from fastnn import losses, optim
from fastnn._kernels import _config
from fastnn._kernels import engine as _k
from fastnn.functional.engine import compile_training, why_not
from fastnn.layers import Activation, Dense, Dropout, Maxout, Softmax
from fastnn.model import Sequential

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-4, np.float64: 1e-10}
OPENMP = _config.openmp_enabled()   # a build without OpenMP runs every team on one thread


@pytest.fixture
def no_fallback():
    old = _k._set_fallback(threshold=-1.0)
    yield
    _k._set_fallback(*old)


@pytest.fixture(autouse=True)
def _fresh_retry():
    # a fallback in one test must not leave the next tests' fits on one thread
    from fastnn.functional import engine as E
    E._retry.update(at=0.0, wait=E.RETRY_AFTER_S)
    yield
    E._retry.update(at=0.0, wait=E.RETRY_AFTER_S)


def net(widths, acts, dtype, seed=0, bias=True):
    layers = [Dense(widths[i], widths[i + 1], acts[i], seed=seed + i, dtype=dtype, bias=bias,
                    bias_init=0.05) for i in range(len(widths) - 1)]
    return Sequential(*layers, dtype=dtype)


def data(n, d, c, dtype, seed=0, kind="labels"):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    if kind == "labels":
        y = rng.integers(0, c, n)
    elif kind == "binary":
        y = rng.integers(0, 2, n).astype(dtype)
    else:
        y = rng.standard_normal((n, c)).astype(dtype)
    return X, y, rng.permutation(n)


def module_steps(model, opt, loss, X, y, order, bs, n_steps, start=0, split=None):
    """The reference: fastnn's per-module training step over the same batches (``split``: a
    two-input graph Model reads columns [:split] and [split:])."""
    for s in range(n_steps):
        idx = order[start + s * bs:start + (s + 1) * bs]
        if len(idx) == 0:
            break
        xb = np.ascontiguousarray(X[idx])
        model.zero_grad()
        z = model.forward(xb if split is None else [np.ascontiguousarray(xb[:, :split]),
                                                   np.ascontiguousarray(xb[:, split:])])
        _, g = loss.loss_and_grad(z, y[idx], grad_out=np.empty_like(z))
        model.backward(g, need_input_grad=False, inplace=True)
        opt.step()


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def assert_close(m_eng, m_ref, tol):
    for (name, p), q in zip(m_eng.named_parameters(), m_ref.parameters()):
        assert rel(p.data, q.data) <= tol, (name, rel(p.data, q.data))


# --------------------------------------------------------------------- NumPy reference ---

def _act(name, z):
    if name == "relu":
        return np.maximum(z, 0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    return z


def _dact(name, y):
    if name == "relu":
        return (y > 0).astype(y.dtype)
    if name == "tanh":
        return 1 - y * y
    if name == "sigmoid":
        return y * (1 - y)
    return np.ones_like(y)


def numpy_reference(Ws, bs, acts, X, y, order, batch, n_steps, opt, lr, **kw):
    """Independent float64 implementation: softmax cross-entropy, Adam or SGD (momentum)."""
    Ws = [w.astype(np.float64) for w in Ws]
    bs = [b.astype(np.float64) for b in bs]
    m1 = [np.zeros_like(w) for w in Ws + bs]
    m2 = [np.zeros_like(w) for w in Ws + bs]
    for s in range(n_steps):
        idx = order[s * batch:(s + 1) * batch]
        h = [X[idx].astype(np.float64)]
        for W, b, a in zip(Ws, bs, acts):
            h.append(_act(a, h[-1] @ W + b))
        z = h[-1]
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        g = p.copy()
        g[np.arange(len(idx)), y[idx]] -= 1
        g /= len(idx)
        grads_W, grads_b = [None] * len(Ws), [None] * len(Ws)
        for li in range(len(Ws) - 1, -1, -1):
            g = g * _dact(acts[li], h[li + 1])
            grads_W[li] = h[li].T @ g
            grads_b[li] = g.sum(axis=0)
            g = g @ Ws[li].T
        params, grads = Ws + bs, grads_W + grads_b
        for i, (w, gr) in enumerate(zip(params, grads)):
            if opt == "adam":
                b1, b2, eps = 0.9, 0.999, 1e-8
                m1[i] = b1 * m1[i] + (1 - b1) * gr
                m2[i] = b2 * m2[i] + (1 - b2) * gr * gr
                t = s + 1
                w -= lr / (1 - b1 ** t) * m1[i] / (np.sqrt(m2[i]) / np.sqrt(1 - b2 ** t) + eps)
            else:
                mu = kw.get("momentum", 0.0)
                m1[i] = mu * m1[i] + gr
                w -= lr * (m1[i] if mu else gr)
    return Ws, bs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt_name", ["adam", "sgd"])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_against_numpy_float64(dtype, opt_name, n_threads):
    acts = ["relu", "tanh", "sigmoid", None]
    model = net([20, 70, 33, 17, 10], acts, dtype)
    X, y, order = data(150, 20, 10, dtype)
    Ws = [m.weight.data.copy() for m in model]
    bs = [m.bias.data.copy() for m in model]
    if opt_name == "adam":
        opt = optim.Adam(model.parameters(), lr=1e-2)
    else:
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    eng = compile_training(model, losses.CrossEntropyLoss(), opt, n_threads, block=16)
    res = eng.run(X, y, order, 0, 32, 6)   # 4 full batches, a short one (22 rows), then none
    assert res.steps == 5 and res.samples == 150 and res.nonfinite_step == -1
    ref_W, ref_b = numpy_reference(Ws, bs, [a or "identity" for a in acts], X, y, order, 32, 5,
                                   opt_name, opt.lr, momentum=0.9)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    for m, W, b in zip(model, ref_W, ref_b):
        assert rel(m.weight.data, W) <= tol
        assert rel(m.bias.data, b) <= tol
    assert opt._group_states[0].step == 5


# ------------------------------------------------------------------ thread invariance ---

def _train(widths, acts, dtype, n_threads, steps, batch, block=None, opt="adam"):
    model = net(widths, acts, dtype, seed=3)
    X, y, order = data(steps * batch, widths[0], widths[-1], dtype, seed=1)
    o = optim.Adam(model.parameters(), lr=1e-3) if opt == "adam" else optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    eng = compile_training(model, losses.CrossEntropyLoss(), o, n_threads, block=block)
    eng._exact_threads = True   # 3 and 4 threads on a machine with fewer cores too
    res = eng.run(X, y, order, 0, batch, steps)
    assert res.steps == steps
    return [p.data.copy() for p in model.parameters()], res


@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_equal_for_1_to_4_threads_small(dtype, no_fallback):
    ref, _ = _train([20, 70, 33, 10], ["relu", "tanh", None], dtype, 1, 50, 16, block=16)
    for nt in (2, 3, 4):
        got, res = _train([20, 70, 33, 10], ["relu", "tanh", None], dtype, nt, 50, 16,
                          block=16)
        assert res.n_threads == (nt if OPENMP else 1) and not res.fell_back
        for a, b in zip(got, ref):
            assert np.array_equal(a, b), nt


def test_bitwise_equal_for_1_to_4_threads_mnist_shape(no_fallback):
    # 20 steps: 3 and 4 spinning threads on a busy 2-core machine are slow
    ref, _ = _train([784, 256, 256, 10], ["relu", "relu", None], np.float32, 1, 20, 16)
    for nt in (2, 3, 4):
        got, res = _train([784, 256, 256, 10], ["relu", "relu", None], np.float32, nt, 20,
                          16)
        assert not res.fell_back
        for a, b in zip(got, ref):
            assert np.array_equal(a, b), nt


def test_bitwise_equal_multi_block_output_and_sgd(no_fallback):
    # a last layer of several blocks takes the row-split loss path
    args = ([30, 50, 40], ["gelu", None], np.float64)
    ref, _ = _train(*args, 1, 20, 8, block=16, opt="sgd")
    for nt in (2, 3):
        got, _ = _train(*args, nt, 20, 8, block=16, opt="sgd")
        for a, b in zip(got, ref):
            assert np.array_equal(a, b)


def test_forced_fallback_is_bitwise_the_same():
    ref, _ = _train([20, 70, 33, 10], ["relu", "tanh", None], np.float32, 1, 40, 16, block=16)
    old = _k._set_fallback(threshold=0.0, window_s=0.0, min_steps=3)
    try:
        got, res = _train([20, 70, 33, 10], ["relu", "tanh", None], np.float32, 2, 40, 16,
                          block=16)
    finally:
        _k._set_fallback(*old)
    assert res.steps == 40
    for a, b in zip(got, ref):
        assert np.array_equal(a, b)
    if not OPENMP:
        return   # one thread: nothing to fall back from
    assert res.fell_back
    # the next runs wait before a team is tried again, longer after each fallback
    from fastnn.functional import engine as E
    assert E._retry["at"] > 0 and E._retry["wait"] == 2 * E.RETRY_AFTER_S


def test_chunked_runs_equal_one_run(no_fallback):
    X, y, order = data(200, 20, 10, np.float32)
    out = []
    for chunks in ([7], [2, 1, 4]):
        model = net([20, 40, 10], ["relu", None], np.float32)
        opt = optim.Adam(model.parameters(), lr=1e-2)
        eng = compile_training(model, losses.CrossEntropyLoss(), opt, 2, block=16)
        start = 0
        for c in chunks:
            r = eng.run(X, y, order, start, 30, c)
            start += r.samples
        assert start == 200 and opt._group_states[0].step == 7
        out.append([p.data.copy() for p in model.parameters()])
    for a, b in zip(*out):
        assert np.array_equal(a, b)


# ------------------------------------------------------------------------- module path ---

ALL_ACTS = ["identity", "sigmoid", "tanh", "relu", "step", "sign", "leaky_relu", "elu",
            "softplus", "gelu", "gelu_tanh", "silu"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ALL_ACTS)
def test_every_activation_against_module_path(dtype, act):
    X, y, order = data(90, 12, 5, dtype)
    models = [net([12, 37, 21, 5], [act, act, None], dtype) for _ in range(2)]
    opts = [optim.Adam(m.parameters(), lr=1e-2) for m in models]
    module_steps(models[0], opts[0], losses.CrossEntropyLoss(), X, y, order, 16, 4)
    eng = compile_training(models[1], losses.CrossEntropyLoss(), opts[1], 2, block=16)
    assert eng.run(X, y, order, 0, 16, 4).steps == 4
    assert_close(models[1], models[0], TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_and_dropout_modules_against_module_path(dtype):
    X, y, order = data(100, 12, 4, dtype)
    models = []
    for _ in range(2):
        models.append(Sequential(
            Dense(12, 40, "relu", seed=1, dtype=dtype), Dropout(0.3, seed=5),
            Dense(40, 24, seed=2, dtype=dtype), Activation("silu"), Activation("tanh"),
            Dropout(0.2, mode="standard", seed=9), Activation("identity"), Dropout(0.0),
            Dense(24, 4, seed=3, dtype=dtype), dtype=dtype))
    opts = [optim.RMSprop(m.parameters(), lr=1e-2, momentum=0.5) for m in models]
    module_steps(models[0], opts[0], losses.CrossEntropyLoss(), X, y, order, 20, 5)
    eng = compile_training(models[1], losses.CrossEntropyLoss(), opts[1], 2, block=16)
    assert eng.run(X, y, order, 0, 20, 5).steps == 5
    assert_close(models[1], models[0], TOL[dtype])
    assert models[1][1]._calls == models[0][1]._calls == 5


def _maxout_net(dtype, k, n_out=4):
    return Sequential(Maxout(12, 40, k, seed=1, dtype=dtype), Dropout(0.3, seed=5),
                      Dense(40, 24, "relu", seed=2, dtype=dtype),
                      Maxout(24, 7, k, seed=4, dtype=dtype), Activation("tanh"),
                      Maxout(7, n_out, k, seed=3, dtype=dtype), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("block", [16, None])
def test_maxout_against_module_path(dtype, k, block):
    """Maxout layers first, in the middle (with modules after them) and last; with 16-column
    blocks a layer of k pieces has blocks of 16 k units, several per layer."""
    X, y, order = data(100, 12, 4, dtype)
    models = [_maxout_net(dtype, k) for _ in range(2)]
    start = [p.data.copy() for p in models[0].parameters()]
    opts = [optim.Adam(m.parameters(), lr=1e-2) for m in models]
    module_steps(models[0], opts[0], losses.CrossEntropyLoss(), X, y, order, 20, 5)
    eng = compile_training(models[1], losses.CrossEntropyLoss(), opts[1], 2, block=block)
    assert eng is not None and eng.n_outputs == 4
    assert eng.run(X, y, order, 0, 20, 5).steps == 5
    assert_close(models[1], models[0], TOL[dtype])
    for p, p0 in zip(models[1].parameters(), start):
        assert not np.array_equal(p.data, p0)   # every layer trained
    assert models[1][1]._calls == models[0][1]._calls == 5


def _maxout_numpy(Ws, bs, X, y, order, batch, n_steps, pieces, lr):
    """Plain SGD on a chain of maxout layers (pieces[l] units per output), float64,
    cross-entropy: the reference."""
    Ws, bs = [w.astype(np.float64) for w in Ws], [b.astype(np.float64) for b in bs]
    for s in range(n_steps):
        idx = order[s * batch:(s + 1) * batch]
        h, cache = X[idx].astype(np.float64), []
        for W, b, k in zip(Ws, bs, pieces):
            g = (h @ W + b).reshape(len(idx), -1, k)
            arg = g.argmax(axis=2)
            cache.append((h, arg))
            h = g.max(axis=2)
        p = np.exp(h - h.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(idx)), y[idx]] -= 1
        d = p / len(idx)
        for l in range(len(Ws) - 1, -1, -1):
            hin, arg = cache[l]
            dz = np.zeros((len(idx), Ws[l].shape[1] // pieces[l], pieces[l]))
            np.put_along_axis(dz, arg[:, :, None], d[:, :, None], axis=2)
            dz = dz.reshape(len(idx), -1)
            d = dz @ Ws[l].T
            Ws[l] -= lr * (hin.T @ dz)
            bs[l] -= lr * dz.sum(0)
    return Ws, bs


@pytest.mark.parametrize("n_threads", [1, 2])
def test_maxout_against_numpy_float64(n_threads):
    X, y, order = data(60, 10, 3, np.float64)
    m = Sequential(Maxout(10, 9, 3, seed=1, dtype=np.float64, bias_init=0.05),
                   Maxout(9, 3, 2, seed=2, dtype=np.float64, bias_init=0.05), dtype=np.float64)
    Ws = [m[l].linear.weight.data.copy() for l in range(2)]
    bs = [m[l].linear.bias.data.copy() for l in range(2)]
    eng = compile_training(m, losses.CrossEntropyLoss(), optim.SGD(m.parameters(), lr=0.1),
                           n_threads, block=16)
    assert eng.run(X, y, order, 0, 12, 5).steps == 5
    ref_W, ref_b = _maxout_numpy(Ws, bs, X, y, order, 12, 5, (3, 2), 0.1)
    for l in range(2):
        assert rel(m[l].linear.weight.data, ref_W[l]) <= 1e-12
        assert rel(m[l].linear.bias.data, ref_b[l]) <= 1e-12
        assert not np.array_equal(m[l].linear.weight.data, Ws[l])


def assert_bitwise_for_1_to_4_threads(make, X, y, order, bs, steps):
    """Networks from ``make()`` trained with Adam on 1, 2, 3 and 4 threads (16-column blocks)
    end with the same bits."""
    out = []
    for nt in (1, 2, 3, 4):
        m = make()
        eng = compile_training(m, losses.CrossEntropyLoss(), optim.Adam(m.parameters()), nt,
                               block=16)
        eng._exact_threads = True
        res = eng.run(X, y, order, 0, bs, steps)
        assert res.steps == steps and res.n_threads == (nt if OPENMP else 1)
        out.append([p.data.copy() for p in m.parameters()])
    for got in out[1:]:
        for a, b in zip(got, out[0]):
            assert np.array_equal(a, b)


def test_maxout_bitwise_for_1_to_4_threads(no_fallback):
    X, y, order = data(200, 12, 4, np.float32, seed=2)
    assert_bitwise_for_1_to_4_threads(lambda: _maxout_net(np.float32, 3), X, y, order, 16, 12)


def test_fit_maxout_on_the_engine():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((120, 12)).astype(np.float32)
    y = rng.integers(0, 4, 120)
    runs = []
    for engine in (True, False):
        m = _maxout_net(np.float32, 2)
        h = m.fit(X, y, epochs=2, batch_size=16, verbose=0, seed=1, engine=engine)
        assert h.params["engine"] is engine
        runs.append((m, h))
    assert_close(runs[0][0], runs[1][0], 1e-5)
    np.testing.assert_allclose(runs[0][1]["loss"], runs[1][1]["loss"], rtol=1e-5)
    # the trained network predicts alike on both paths
    np.testing.assert_array_equal(runs[0][0].predict(X), runs[1][0].predict(X))


OPTIMIZERS = [
    (optim.SGD, dict(lr=0.05)),
    (optim.SGD, dict(lr=0.05, momentum=0.9, decay=0.1, weight_decay=1e-2)),
    (optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, l1=1e-3)),
    (optim.SGD, dict(lr=0.05, l1=1e-2, l1_proximal=True)),
    (optim.Adagrad, dict(lr=0.05, initial_accumulator_value=0.1, weight_decay=1e-3)),
    (optim.Adagrad, dict(lr=0.05, l1=1e-2, l1_proximal=True, decay=0.5)),
    (optim.RMSprop, dict(lr=1e-2)),
    (optim.RMSprop, dict(lr=1e-2, momentum=0.9, l1=1e-3, weight_decay=1e-3)),
    (optim.Adam, dict(lr=1e-2, decay=0.2, weight_decay=1e-2)),
    (optim.Adam, dict(lr=1e-2, l1=1e-2, l1_proximal=True, betas=(0.8, 0.99))),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls,kw", OPTIMIZERS)
def test_every_optimizer_against_module_path(dtype, cls, kw):
    X, y, order = data(80, 10, 3, dtype)
    models = [net([10, 33, 3], ["tanh", None], dtype) for _ in range(2)]
    opts = [cls(m.parameters(), **kw) for m in models]
    module_steps(models[0], opts[0], losses.CrossEntropyLoss(), X, y, order, 16, 5)
    eng = compile_training(models[1], losses.CrossEntropyLoss(), opts[1], 2, block=16)
    assert eng.run(X, y, order, 0, 16, 5).steps == 5
    assert_close(models[1], models[0], TOL[dtype])
    for a, b in zip(opts[1].state_dict()["state"].values(),
                    opts[0].state_dict()["state"].values()):
        assert a["step"] == b["step"] == 5
        for k in a:
            if k != "step":
                assert rel(a[k], b[k]) <= max(TOL[dtype], 1e-30) * 10


def test_param_groups_and_frozen_parameters():
    X, y, order = data(64, 10, 3, np.float64)
    models = [net([10, 20, 3], ["relu", None], np.float64) for _ in range(2)]
    opts = [optim.Adam([{"params": [m[0].weight, m[0].bias], "lr": 1e-2},
                        {"params": [m[1].weight], "lr": 1e-3, "weight_decay": 0.1}])
            for m in models]   # m[1].bias is frozen
    frozen = models[1][1].bias.data.copy()
    module_steps(models[0], opts[0], losses.CrossEntropyLoss(), X, y, order, 16, 4)
    eng = compile_training(models[1], losses.CrossEntropyLoss(), opts[1], 2, block=16)
    assert eng.run(X, y, order, 0, 16, 4).steps == 4
    assert_close(models[1], models[0], 1e-10)
    assert np.array_equal(models[1][1].bias.data, frozen)


@pytest.mark.parametrize("dtype", DTYPES)
def test_squared_loss_against_module_path(dtype):
    X, y, order = data(70, 8, 3, dtype, kind="regression")
    models = [net([8, 19, 3], ["elu", None], dtype) for _ in range(2)]
    opts = [optim.SGD(m.parameters(), lr=0.02, momentum=0.5) for m in models]
    module_steps(models[0], opts[0], losses.SquaredLoss(), X, y, order, 16, 5)
    eng = compile_training(models[1], losses.SquaredLoss(), opts[1], 2, block=16)
    res = eng.run(X, y, order, 0, 16, 5)
    assert res.steps == 5 and res.sums.shape == (3, 3)
    assert_close(models[1], models[0], TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_one_output_against_module_path(dtype):
    X, y, order = data(50, 6, 1, dtype, kind="binary")
    models = [net([6, 18, 1], ["softplus", None], dtype) for _ in range(2)]
    opts = [optim.Adam(m.parameters(), lr=1e-2) for m in models]
    module_steps(models[0], opts[0], losses.BinaryCrossEntropyLoss(), X, y, order, 16, 4)
    eng = compile_training(models[1], losses.BinaryCrossEntropyLoss(), opts[1], 2, block=16)
    res = eng.run(X, y, order, 0, 16, 4)
    assert res.steps == 4 and 0 <= res.metric_sum <= 50
    assert_close(models[1], models[0], TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparsemax_loss_against_module_path(dtype):
    """The sparsemax loss (single label) in the engine: the module loop's weights, and the
    same bits for 1-3 threads and a last layer of several blocks."""
    X, y, order = data(70, 9, 37, dtype)
    models = [net([9, 21, 37], ["relu", None], dtype) for _ in range(4)]
    opts = [optim.Adam(m.parameters(), lr=1e-2) for m in models]
    module_steps(models[0], opts[0], losses.SparsemaxLoss(), X, y, order, 16, 5)
    for k, nt in ((1, 1), (2, 2), (3, 3)):
        eng = compile_training(models[k], losses.SparsemaxLoss(), opts[k], nt, block=16)
        eng._exact_threads = True
        res = eng.run(X, y, order, 0, 16, 5)
        assert res.steps == 5 and 0 <= res.metric_sum <= 70 and np.isfinite(res.loss_sum)
    assert_close(models[1], models[0], TOL[dtype])
    for k in (2, 3):
        for p, q in zip(models[k].parameters(), models[1].parameters()):
            np.testing.assert_array_equal(p.data, q.data)


@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_with_target_rows_against_module_path(dtype):
    """Target rows (label sets, weights, probabilities) for the sparsemax loss and
    cross-entropy: the module loop's weights; 1-3 threads bitwise."""
    X, _, order = data(60, 7, 33, dtype)
    rng = np.random.default_rng(3)
    Q = (rng.random((60, 33)) < 0.2).astype(dtype)
    Q[np.arange(60), rng.integers(0, 33, 60)] = 1          # no empty label set
    Q[::5] *= rng.random((12, 33)).astype(dtype)            # some rows weights, not sets
    Q[::5, 0] += 0.5
    for loss in (losses.SparsemaxLoss(multilabel=True), losses.SparsemaxLoss(),
                 losses.CrossEntropyLoss()):
        models = [net([7, 15, 33], ["tanh", None], dtype) for _ in range(3)]
        opts = [optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in models]
        module_steps(models[0], opts[0], loss, X, Q, order, 16, 4)
        for k, nt in ((1, 1), (2, 3)):
            eng = compile_training(models[k], loss, opts[k], nt, y=Q, block=16)
            assert eng.loss_kind.endswith("_rows")
            eng._exact_threads = True
            res = eng.run(X, Q, order, 0, 16, 4)
            assert res.steps == 4 and np.isfinite(res.loss_sum)
        assert_close(models[1], models[0], TOL[dtype])
        for p, q in zip(models[2].parameters(), models[1].parameters()):
            np.testing.assert_array_equal(p.data, q.data)


@pytest.mark.parametrize("loss", ["sparsemax_multilabel", "cross_entropy"])
def test_fit_with_target_rows_on_the_engine(loss):
    """Label sets for the multilabel sparsemax loss, soft labels for cross-entropy: fit on the
    engine gives the module loop's weights and losses."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 10)).astype(np.float32)
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 0] + X[:, 1] > 0.5, np.ones(200, bool)], 1)
    if loss == "cross_entropy":
        Y = 0.9 * np.eye(4, dtype=np.float32)[Y.sum(axis=1) - 1] + 0.025   # smoothed labels
    runs = []
    for engine in (True, False):
        m = Sequential(Dense(10, 16, "relu", seed=1), Dense(16, 4, seed=2))
        h = m.fit(X, Y, loss=loss, epochs=4, batch_size=32, verbose=0,
                  seed=0, engine=engine)
        assert h.params["engine"] is engine
        runs.append((m, h))
    assert_close(runs[0][0], runs[1][0], 1e-5)
    np.testing.assert_allclose(runs[0][1]["loss"], runs[1][1]["loss"], rtol=1e-5)


@pytest.mark.parametrize("loss_cls", [losses.CrossEntropyLoss, losses.SparsemaxLoss])
def test_loss_and_metric_sums_match_the_module_loss(loss_cls):
    X, y, order = data(40, 10, 6, np.float64)
    model = net([10, 6], [None], np.float64)
    z = model.forward(X[order])
    want_loss = loss_cls().per_sample(z, y[order]).sum()
    want_hits = np.count_nonzero(z.argmax(axis=1) == y[order])
    opt = optim.SGD(model.parameters(), lr=0.0)
    res = compile_training(model, loss_cls(), opt, 1).run(X, y, order, 0, 40, 1)
    assert res.loss_sum == pytest.approx(want_loss, rel=1e-12)
    assert res.metric_sum == want_hits


# ----------------------------------------------------------------------------- edge cases ---

def test_batch_of_one_row_and_short_last_batch():
    X, y, order = data(5, 9, 3, np.float64)
    models = [net([9, 20, 3], ["relu", None], np.float64) for _ in range(2)]
    opts = [optim.Adam(m.parameters(), lr=1e-2) for m in models]
    module_steps(models[0], opts[0], losses.CrossEntropyLoss(), X, y, order, 1, 5)
    eng = compile_training(models[1], losses.CrossEntropyLoss(), opts[1], 2, block=16)
    assert eng.run(X, y, order, 0, 1, None).steps == 5
    assert_close(models[1], models[0], 1e-12)
    # batch larger than the data: one short batch
    r = eng.run(X, y, order, 0, 64, None)
    assert (r.steps, r.samples) == (1, 5)
    # a negative start is 0
    r = eng.run(X, y, order, -3, 2, None)
    assert (r.steps, r.samples) == (3, 5)


def test_empty_range_changes_nothing():
    X, y, order = data(20, 9, 3, np.float32)
    model = net([9, 20, 3], ["relu", None], np.float32)
    before = [p.data.copy() for p in model.parameters()]
    opt = optim.Adam(model.parameters())
    eng = compile_training(model, losses.CrossEntropyLoss(), opt, 2)
    for start, steps in ((20, None), (25, None), (0, 0)):
        r = eng.run(X, y, order, start, 8, steps)
        assert (r.steps, r.samples, r.loss_sum) == (0, 0, 0.0)
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))
    assert opt._group_states[0].step == 0


def test_nonfinite_loss_stops_before_the_update():
    X, y, order = data(64, 9, 3, np.float32)
    X[order[40]] = np.nan      # in the third batch of 16
    model = net([9, 20, 3], ["relu", None], np.float32)
    opt = optim.SGD(model.parameters(), lr=0.1)
    eng = compile_training(model, losses.CrossEntropyLoss(), opt, 2)
    r = eng.run(X, y, order, 0, 16, None)
    assert r.nonfinite_step == 2 and r.steps == 2 and not np.isfinite(r.last_loss)
    assert opt._group_states[0].step == 2
    # the weights after the two good steps, all their updates applied
    ref = net([9, 20, 3], ["relu", None], np.float32)
    module_steps(ref, optim.SGD(ref.parameters(), lr=0.1), losses.CrossEntropyLoss(), X, y,
                 order, 16, 2)
    assert_close(model, ref, 1e-6)


def test_time_budget_stops_early():
    X, y, order = data(4000, 50, 3, np.float32)
    model = net([50, 64, 3], ["relu", None], np.float32)
    eng = compile_training(model, losses.CrossEntropyLoss(), optim.Adam(model.parameters()), 1)
    r = eng.run(X, y, order, 0, 1, None, time_budget_s=1e-9)
    assert r.steps == 1


def test_bad_arguments_raise():
    X, y, order = data(20, 9, 3, np.float32)
    model = net([9, 20, 3], ["relu", None], np.float32)
    eng = compile_training(model, losses.CrossEntropyLoss(), optim.Adam(model.parameters()), 1)
    with pytest.raises(ValueError, match="order"):
        eng.run(X, y, np.array([0, 25]), 0, 4)
    with pytest.raises(ValueError, match="labels"):
        eng.run(X, np.full(20, 7), order, 0, 4)
    with pytest.raises(ValueError, match="batch_size"):
        eng.run(X, y, order, 0, 0)
    with pytest.raises(ValueError):
        _k.Core([{"n_in": 3, "n_out": 2, "code": 0, "keep_z": False, "has_bias": True}],
                "squared", np.float32, block=20)
    relu = _k_code("relu")
    for spec, match in (({"n_out": 6, "pieces": 4}, "groups of 4"),
                        ({"n_out": 6, "pieces": 0}, "groups of 0"),
                        ({"n_out": 6, "pieces": 2, "code": relu}, "linear"),
                        ({"n_out": 6, "pieces": 2, "keep_z": True}, "linear")):
        d = {"n_in": 3, "code": 0, "keep_z": False, "has_bias": True, **spec}
        with pytest.raises(ValueError, match=match):
            _k.Core([d], "squared", np.float32)
    with pytest.raises(ValueError, match="layer 1 takes 6 inputs, layer 0 gives 3"):
        _k.Core([{"n_in": 3, "n_out": 6, "pieces": 2, "code": 0, "keep_z": False,
                  "has_bias": True},
                 {"n_in": 6, "n_out": 2, "code": 0, "keep_z": False, "has_bias": True}],
                "squared", np.float32)


def _k_code(name):
    from fastnn.functional.activations import ACTIVATION_TABLE
    return ACTIVATION_TABLE[name].code


_CORE_MISUSE = """
import numpy as np
from fastnn._kernels import engine as _k
core = _k.Core([{"n_in": 1, "n_out": 2 ** 20, "code": 0, "keep_z": False, "has_bias": True,
                 "post": [("act", 1, False)]}], "cross_entropy", np.float32)
core.reserve(8)
try:   # the first batch buffer (1 GiB, never touched) fits; 64 TiB of targets, twice, do not
    core.reserve(2 ** 24)
except MemoryError:
    pass
assert core.rows == 8
r = core.run(np.ones((4, 1), np.float32), np.zeros(4, np.intp), np.arange(4), 0, 4, 1, 0.0, 1)
assert r["steps"] == 1
for call in (lambda: core.set_optimizer(1, False, "sgd", 0.1, 0, 0, False, 0, 0, 0, 0, 0, 0,
                                        0, 0),
             lambda: core.set_optimizer(-1, True, "sgd", 0.1, 0, 0, False, 0, 0, 0, 0, 0, 0,
                                        0, 0),
             lambda: core.set_dropout_calls(0, 5, 3),
             lambda: core.set_dropout_calls(0, 0, 3),      # an activation, not a Dropout
             lambda: core.set_dropout_calls(3, 0, 3),
             lambda: core.load(-1, np.ones((1, 2 ** 20), np.float32), None, (), ()),
             lambda: core.store(1, np.ones((1, 2 ** 20), np.float32), None, (), (), None, None),
             lambda: core._panels(2, "W")):
    try:
        call()
    except IndexError:
        continue
    raise AssertionError("no IndexError")
print("ok")
"""


def test_core_misuse_raises_and_a_failed_reserve_keeps_the_buffers():
    # in a child: before the checks these wrote out of bounds or ran on freed buffers
    _child(_CORE_MISUSE)


_INTERRUPTED = """
import os, signal, threading
import numpy as np
from fastnn import losses, optim
from fastnn.functional.engine import compile_training
from fastnn.layers import Dense, Dropout
from fastnn.model import Sequential

def make():
    m = Sequential(Dense(20, 30, "relu", seed=0), Dropout(0.2, seed=1), Dense(30, 3, seed=2))
    opt = optim.Adam(m.parameters(), lr=1e-3)
    return m, opt, compile_training(m, losses.CrossEntropyLoss(), opt, 1)

rng = np.random.default_rng(0)
X = rng.standard_normal((20000, 20)).astype(np.float32)
y = rng.integers(0, 3, 20000)
order = np.tile(np.arange(20000), 50)   # longer than the budget
m, opt, eng = make()
threading.Timer(0.1, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    eng.run(X, y, order, 0, 4, None, time_budget_s=0.5)
except KeyboardInterrupt:
    pass
else:
    raise AssertionError("no KeyboardInterrupt")
steps = opt._group_states[0].step
assert steps > 0 and m[1]._calls == steps, (steps, m[1]._calls)
ref, _, eng2 = make()
assert eng2.run(X, y, order, 0, 4, steps).steps == steps
for p, q in zip(m.parameters(), ref.parameters()):
    assert np.array_equal(p.data, q.data)
print("ok")
"""


def _child(code):
    import os
    import subprocess
    import sys

    import fastnn

    root = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode,
                                                                 proc.stderr[-2000:])


def test_an_interrupt_as_a_run_returns_keeps_its_steps():
    # Ctrl-C during a run is raised as it returns: the steps done still reach the modules
    # (weights, optimizer state and step count, Dropout counters), as after a whole run
    _child(_INTERRUPTED)


def test_an_infinite_time_budget_is_no_limit():
    X, y, order = data(60, 5, 3, np.float32)
    model = net([5, 8, 3], ["relu", None], np.float32)
    eng = compile_training(model, losses.CrossEntropyLoss(), optim.SGD(model.parameters()), 1)
    for budget in (float("inf"), 1e12):
        assert eng.run(X, y, order, 0, 4, 5, time_budget_s=budget).steps == 5


def test_why_not_names_what_is_not_covered():
    m = net([4, 6, 2], ["relu", None], np.float32)
    adam = optim.Adam(m.parameters())
    assert why_not(m, losses.CrossEntropyLoss(), adam) is None
    assert "Softmax" in why_not(Sequential(Dense(4, 3), Softmax(), Dense(3, 2)),
                                losses.CrossEntropyLoss(), adam)
    mx = Sequential(Maxout(4, 3), Dense(3, 2))
    assert why_not(mx, losses.CrossEntropyLoss(), optim.Adam(mx.parameters())) is None
    mx[0].linear.activation = "relu"
    assert "linear part" in why_not(mx, losses.CrossEntropyLoss(), optim.Adam(mx.parameters()))
    assert why_not(m, losses.SparsemaxLoss(), adam) is None
    assert why_not(m, losses.SparsemaxLoss(multilabel=True), adam) is None
    assert why_not(m, losses.SparsemaxLoss(), adam, y=np.eye(2, dtype=np.float32)[[0, 1]]) \
        is None

    class MyLoss(losses.SquaredLoss):
        pass
    assert "MyLoss" in why_not(m, MyLoss(), adam)
    assert "one output" in why_not(m, losses.BinaryCrossEntropyLoss(), adam)
    indrop = Sequential(Dropout(0.5), Dense(4, 2))   # input dropout: a copy node carries it
    assert why_not(indrop, losses.CrossEntropyLoss(), optim.Adam(indrop.parameters())) is None
    assert why_not(m, losses.CrossEntropyLoss(), adam,
                   y=np.eye(2, dtype=np.float32)[[0, 1]]) is None
    assert "neither integer labels nor rows" in why_not(m, losses.CrossEntropyLoss(), adam,
                                                        y=np.array([0.0, 1.0]))

    class MyAdam(optim.Adam):
        pass
    assert "MyAdam" in why_not(m, losses.CrossEntropyLoss(), MyAdam(m.parameters()))
    with pytest.raises(ValueError, match="row 1 has no positive entry"):
        compile_training(m, losses.SparsemaxLoss(multilabel=True), adam,
                         y=np.array([[1, 0], [0, 0]], np.float32))
    with pytest.raises(ValueError, match="non-negative"):
        compile_training(m, losses.CrossEntropyLoss(), adam,
                         y=np.array([[1, 0], [-0.5, 1.5]], np.float32))


def test_tied_weights_take_the_module_loop():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 6))
    y = rng.integers(0, 3, 64)
    out = {}
    for engine in ("auto", False):
        d1 = Dense(6, 6, "tanh", seed=0, dtype=np.float64)
        d2 = Dense(6, 6, "tanh", seed=1, dtype=np.float64)
        d2.weight = d1.weight
        m = Sequential(d1, d2, Dense(6, 3, seed=2, dtype=np.float64), dtype=np.float64)
        assert "tied" in why_not(m, losses.CrossEntropyLoss(), optim.SGD(m.parameters()))
        h = m.fit(X, y, optimizer="sgd", lr=0.1, epochs=2, batch_size=16, verbose=0, seed=0,
                  engine=engine)
        assert h.params["engine"] is False
        out[engine] = [p.data.copy() for p in m.parameters()]
    for a, b in zip(*out.values()):
        assert np.array_equal(a, b)
    m = net([4, 4, 2], ["relu", None], np.float64)
    m[1].bias.data = m[0].bias.data[:2]   # a view of another layer's array
    assert "tied" in why_not(m, losses.CrossEntropyLoss(), optim.SGD(m.parameters()))


def test_dropout_mask_matches_the_module():
    # the engine's mask rule equals dropout.pyx's: one step through an identity-like chain
    X, y, order = data(16, 8, 8, np.float64, kind="regression")
    for mode in ("inverted", "standard"):
        m = Sequential(Dense(8, 40, seed=1, dtype=np.float64), Dropout(0.5, mode=mode, seed=4),
                       Dense(40, 8, seed=2, dtype=np.float64), dtype=np.float64)
        ref = m.copy()
        eng = compile_training(m, losses.SquaredLoss(), optim.SGD(m.parameters(), lr=0.1), 1)
        eng.run(X, y, order, 0, 16, 1)
        module_steps(ref, optim.SGD(ref.parameters(), lr=0.1), losses.SquaredLoss(), X, y,
                     order, 16, 1)
        assert_close(m, ref, 1e-12)


# ------------------------------------------------------------------------------------- fit ---

def _fit_pair(dtype, loss="cross_entropy", optimizer="adam", epochs=3, **kw):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((150, 12)).astype(dtype)
    if loss in ("cross_entropy", "sparsemax"):
        y, out = rng.integers(0, 4, 150), 4
    elif loss == "binary_cross_entropy":
        y, out = rng.integers(0, 2, 150), 1
    else:
        y, out = rng.standard_normal((150, 2)).astype(dtype), 2
    runs = []
    for engine in (True, False):
        m = Sequential(Dense(12, 40, "relu", seed=1, dtype=dtype), Dropout(0.1, seed=3),
                       Dense(40, 19, "tanh", seed=2, dtype=dtype),
                       Dense(19, out, seed=4, dtype=dtype), dtype=dtype)
        h = m.fit(X, y, loss=loss, optimizer=optimizer, epochs=epochs, batch_size=16,
                  verbose=0, seed=5, engine=engine, validation_data=(X[:30], y[:30]), **kw)
        runs.append((m, h))
    return runs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["cross_entropy", "squared", "binary_cross_entropy", "sparsemax"])
def test_fit_with_and_without_engine(dtype, loss):
    (m1, h1), (m2, h2) = _fit_pair(dtype, loss)
    assert h1.params["engine"] is True and h2.params["engine"] is False
    assert set(h1.history) == set(h2.history)
    assert {k: v for k, v in h1.params.items() if not k.startswith("engine")} == \
        {k: v for k, v in h2.params.items() if not k.startswith("engine")}
    tol = 1e-5 if dtype == np.float32 else 1e-10
    assert_close(m1, m2, tol)
    for k in h1.history:
        if k not in ("time", "samples_per_s"):
            np.testing.assert_allclose(h1[k], h2[k], rtol=tol * 10, atol=tol)
    assert m1.optimizer.state_dict()["state"][0]["step"] == 30
    assert m1[1]._calls == m2[1]._calls == 30
    # and a second fit continues alike
    X = np.random.default_rng(1).standard_normal((40, 12)).astype(dtype)
    y = np.arange(40) % (4 if loss in ("cross_entropy", "sparsemax") else 2)
    if loss == "squared":
        y = np.ones((40, 2), dtype)
    for m, e in ((m1, True), (m2, False)):
        m.fit(X, y, epochs=1, batch_size=16, verbose=0, seed=1, engine=e)
    assert_close(m1, m2, tol * 10)


@pytest.mark.parametrize("opt", ["sgd", "rmsprop", "adagrad"])
def test_fit_optimizers_by_name(opt):
    (m1, h1), (m2, h2) = _fit_pair(np.float64, optimizer=opt, epochs=2)
    assert h1.params["engine"]
    assert_close(m1, m2, 1e-10)


def test_fit_batch_callbacks_get_one_call_per_step():
    from fastnn.callbacks import LambdaCallback

    calls = {True: [], False: []}
    for engine in (True, False):
        cb = LambdaCallback(on_batch_end=lambda b, logs, e=engine: calls[e].append(
            (b, logs["size"], logs["loss"])))
        _fit_pair_single(engine, [cb])
    assert [c[:2] for c in calls[True]] == [c[:2] for c in calls[False]]
    assert len(calls[True]) == 2 * 10 and calls[True][9][:2] == (9, 6)
    np.testing.assert_allclose([c[2] for c in calls[True]], [c[2] for c in calls[False]],
                               rtol=1e-5)


def test_fit_auto_keeps_the_module_loop_for_batch_callbacks():
    from fastnn.callbacks import LambdaCallback

    cb = LambdaCallback(on_batch_end=lambda b, logs: None)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6)).astype(np.float32)
    m = net([6, 8, 3], ["relu", None], np.float32)
    assert m.fit(X, rng.integers(0, 3, 40), epochs=1, verbose=0,
                 callbacks=[cb]).params["engine"] is False


def _fit_pair_single(engine, callbacks):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 6)).astype(np.float32)
    y = rng.integers(0, 3, 150)
    m = net([6, 20, 3], ["relu", None], np.float32)
    h = m.fit(X, y, epochs=2, batch_size=16, verbose=0, seed=0, engine=engine,
              callbacks=callbacks)
    assert h.params["engine"] is engine
    return m


def test_fit_engine_choice():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 5)).astype(np.float32)
    y = rng.integers(0, 2, 30)
    m = Sequential(Dense(5, 4), Softmax(), Dense(4, 2))
    assert m.fit(X, y, epochs=1, verbose=0).params["engine"] is False
    with pytest.raises(ValueError, match="engine=True.*Softmax"):
        m.fit(X, y, epochs=1, verbose=0, engine=True)
    with pytest.raises(ValueError, match="engine must be"):
        m.fit(X, y, epochs=1, verbose=0, engine="yes")
    m = net([5, 8, 2], ["relu", None], np.float32)
    q = np.eye(2, dtype=np.float32)[y]   # probability targets: the engine too
    h = m.fit(X, q, epochs=1, verbose=0)
    assert h.params["engine"] is True
    assert h.params["engine_threads"] == [1]   # one 8-column block: one thread owns it
    assert h.params["engine_fallbacks"] == 0
    assert m.fit(X, q, epochs=1, verbose=0, engine=False).params["engine"] is False
    assert m.fit(X, y, epochs=1, verbose=0).params["engine"] is True


def test_fit_on_the_engine_leaves_no_stale_forward_for_backward():
    """The engine keeps no module's forward arrays: after its fit a backward needs a new
    forward (a clear error, not gradients of a batch seen before the weights changed)."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    m = Sequential(Dense(5, 8, "relu", seed=1), Maxout(8, 4, 2, seed=2), Dense(4, 3, seed=3))
    m.forward(X[:4])   # arrays cached before the fit
    assert m.fit(X, y, epochs=1, verbose=0, engine=True).params["engine"] is True
    g = np.ones((4, 3), np.float32)
    with pytest.raises(RuntimeError, match="backward was called before forward"):
        m.backward(g)
    m.forward(X[:4])
    assert m.backward(g).shape == (4, 5)


@pytest.mark.parametrize("mode", ["raise", "restore"])
def test_fit_divergence_on_the_engine_matches_the_module_loop(mode):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 4)) * 100
    y = rng.standard_normal((64, 1)) * 1e4
    out = {}
    for engine in (True, False):
        m = Sequential(Dense(4, 16, activation="relu", seed=0, dtype=np.float64),
                       Dense(16, 1, seed=1, dtype=np.float64), dtype=np.float64)
        kw = dict(loss="squared", optimizer="sgd", lr=1e3, epochs=50, batch_size=16,
                  verbose=0, seed=0, engine=engine, on_divergence=mode)
        if mode == "raise":
            with pytest.raises(FloatingPointError) as err:
                m.fit(X, y, **kw)
            out[engine] = str(err.value)
        else:
            with pytest.warns(RuntimeWarning, match="restored"):
                h = m.fit(X, y, **kw)
            out[engine] = (h.diverged, len(h), [p.data.copy() for p in m.parameters()])
    if mode == "raise":
        assert out[True] == out[False] and "diverged" in out[True]
    else:
        assert out[True][:2] == out[False][:2]
        for a, b in zip(out[True][2], out[False][2]):
            np.testing.assert_allclose(a, b, rtol=1e-10)


def test_fit_empty_group_steps_and_gradients_after_divergence_as_the_module_loop():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5))
    y = rng.integers(0, 3, 64)
    out = {}
    for engine in (True, False):
        m = net([5, 8, 3], ["relu", None], np.float64)
        opt = optim.SGD([{"params": m.parameters()}, {"params": [], "lr": 0.5}], lr=0.1,
                        decay=0.1)
        m.fit(X, y, optimizer=opt, epochs=1, batch_size=16, verbose=0, seed=0, engine=engine)
        steps, lrs = [gs.step for gs in opt._group_states], opt.get_lr()
        X2 = X * 1e5
        X2[40] = 1e300
        with pytest.raises(FloatingPointError, match="batch 3 of 4"):
            m.fit(X2, y, optimizer="sgd", lr=1e10, epochs=1, batch_size=16, verbose=0,
                  seed=0, engine=engine)
        out[engine] = (steps, lrs, [p.grad.copy() for p in m.parameters()])
    assert out[True][:2] == out[False][:2] == ([4, 4], out[False][1])
    for a, b in zip(out[True][2], out[False][2]):
        assert np.array_equal(a, b)   # zeros: the last step stopped after zero_grad


def test_fit_without_shuffle_and_fit_thread_counts():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((100, 30)).astype(np.float32)
    y = rng.integers(0, 5, 100)
    out = {}
    for engine, nt, shuffle in ((True, 1, False), (False, 1, False), (True, 1, True),
                                (True, 2, True)):
        m = Sequential(Dense(30, 150, "relu", seed=1), Dropout(0.2, seed=2),
                       Dense(150, 5, seed=3), n_threads=nt)
        h = m.fit(X, y, epochs=2, batch_size=8, verbose=0, seed=0, shuffle=shuffle,
                  engine=engine)
        assert h.params["engine"] is engine
        out[(engine, nt, shuffle)] = m
    assert_close(out[(True, 1, False)], out[(False, 1, False)], 1e-5)
    # 150 columns are two blocks: two threads (when the machine gives them) change no bit
    for a, b in zip(out[(True, 1, True)].parameters(), out[(True, 2, True)].parameters()):
        assert np.array_equal(a.data, b.data)


@pytest.mark.parametrize("dtype", DTYPES)
def test_leading_normalization_against_module_path(dtype):
    from fastnn.preprocessing import Normalization

    X, y, order = data(90, 7, 3, dtype)
    X = X * 5 + 3
    X[:, 2] = 1.0   # a constant feature: scale 1
    models = [Sequential(Normalization().adapt(X), Dense(7, 20, "relu", seed=1, dtype=dtype),
                         Dense(20, 3, seed=2, dtype=dtype), dtype=dtype) for _ in range(2)]
    opts = [optim.Adam(m.parameters(), lr=1e-2) for m in models]
    module_steps(models[0], opts[0], losses.CrossEntropyLoss(), X, y, order, 16, 5)
    eng = compile_training(models[1], losses.CrossEntropyLoss(), opts[1], 2, block=16)
    assert eng.run(X, y, order, 0, 16, 5).steps == 5
    assert_close(models[1], models[0], TOL[dtype])
    assert "adapt" in why_not(Sequential(Normalization(7), Dense(7, 2)),
                              losses.CrossEntropyLoss(), opts[0])
    assert "Normalization" in why_not(Sequential(Dense(7, 7), Normalization().adapt(X),
                                                 Dense(7, 2)), losses.CrossEntropyLoss(),
                                      opts[0])


def test_random_chains_bitwise_for_thread_counts_and_chunks(no_fallback):
    """Random chains (Dense and Maxout layers), losses, optimizers, blocks and batch sizes:
    2-4 threads in calls of 1-3 steps give the bits of one 1-thread call."""
    rng = np.random.default_rng(123)
    acts = ["relu", "tanh", "gelu", None, "silu", "elu"]
    for case in range(28):
        dtype = [np.float32, np.float64][(case // 4) % 2]
        n_layers = int(rng.integers(1, 5))
        widths = [int(rng.integers(1, 90)) for _ in range(n_layers + 1)]
        kind = ["ce", "sq", "bce", "spm"][case % 4]
        widths[-1] = 1 if kind == "bce" else max(widths[-1], 2)
        block, bs = int(rng.choice([16, 32, 64])), int(rng.integers(1, 40))
        n = int(rng.integers(1, 120))
        X = rng.standard_normal((n, widths[0])).astype(dtype)
        y = {"ce": lambda: rng.integers(0, widths[-1], n),
             "spm": lambda: rng.integers(0, widths[-1], n),
             "sq": lambda: rng.standard_normal((n, widths[-1])).astype(dtype),
             "bce": lambda: rng.integers(0, 2, n).astype(dtype)}[kind]()
        order = rng.permutation(n)
        out = []
        for nt in (1, int(rng.integers(2, 5))):
            layers = []
            for i in range(n_layers):
                last = i == n_layers - 1
                if (case + i) % 5 == 2:   # maxout layers of 2-4 pieces, last ones too
                    layers.append(Maxout(widths[i], widths[i + 1], 2 + (case + i) % 3,
                                         seed=i, dtype=dtype))
                else:
                    layers.append(Dense(widths[i], widths[i + 1],
                                        None if last else acts[(i + case) % 6], seed=i,
                                        dtype=dtype))
                if not last and (case + i) % 3 == 0:
                    layers.append(Dropout(0.3, seed=i + 10))
                if not last and (case + i) % 4 == 0:
                    layers.append(Activation("sigmoid"))
            m = Sequential(*layers, dtype=dtype)
            lf = {"ce": losses.CrossEntropyLoss, "sq": losses.SquaredLoss,
                  "bce": losses.BinaryCrossEntropyLoss, "spm": losses.SparsemaxLoss}[kind]()
            opt = (optim.Adam(m.parameters(), lr=1e-2) if case % 2 else
                   optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True))
            eng = compile_training(m, lf, opt, nt, block=block)
            eng._exact_threads = True
            start = 0
            while start < n:
                r = eng.run(X, y, order, start, bs, None if nt == 1 else int(rng.integers(1, 4)))
                start += r.samples
                if r.steps == 0 or r.nonfinite_step >= 0:
                    break
            out.append([p.data.copy() for p in m.parameters()])
        for a, b in zip(*out):
            assert np.array_equal(a, b, equal_nan=True), case


# --------------------------------------------------------------------------- graphs ---

def _graph_model(dtype, seed=0):
    """Two inputs, a concatenation, a residual sum, an activation on an input (a copy node),
    dropout after a sum, a product of two layers, a maxout layer."""
    from fastnn.graph import Add, Concatenate, Input, Model, Multiply
    a, b = Input(6, name="a"), Input(5, name="b")
    ta = Activation("tanh")(a)
    h = Concatenate()([Dense(6, 16, "relu", seed=seed + 1, dtype=dtype)(ta),
                       Dense(5, 8, "tanh", seed=seed + 2, dtype=dtype)(b), a])
    h = Add()([h, Dense(30, 30, "gelu", seed=seed + 3, dtype=dtype)(h)])
    h = Dropout(0.2, seed=seed + 4)(Activation("relu")(h))
    g = Multiply()([Dense(30, 12, "sigmoid", seed=seed + 5, dtype=dtype)(h),
                    Maxout(30, 12, 2, seed=seed + 6, dtype=dtype)(h)])
    out = Dense(12, 4, seed=seed + 7, dtype=dtype)(g)
    return Model([a, b], out, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block", [16, None])
def test_graph_model_against_module_path(dtype, block):
    X, y, order = data(90, 11, 4, dtype)
    models = [_graph_model(dtype) for _ in range(2)]
    start = [p.data.copy() for p in models[0].parameters()]
    opts = [optim.Adam(m.parameters(), lr=1e-2) for m in models]
    module_steps(models[0], opts[0], losses.CrossEntropyLoss(), X, y, order, 16, 5, split=6)
    eng = compile_training(models[1], losses.CrossEntropyLoss(), opts[1], 2, block=block)
    assert eng is not None
    assert eng.run(X, y, order, 0, 16, 5).steps == 5
    assert_close(models[1], models[0], TOL[dtype])
    for p, p0 in zip(models[1].parameters(), start):
        assert not np.array_equal(p.data, p0)
    drops = [m for m in models[1].modules() if type(m) is Dropout]
    assert [d._calls for d in drops] == [5]


def test_graph_model_bitwise_for_1_to_4_threads(no_fallback):
    X, y, order = data(160, 11, 4, np.float32, seed=3)
    assert_bitwise_for_1_to_4_threads(lambda: _graph_model(np.float32), X, y, order, 16, 10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_residual_and_parallel_containers_against_module_path(dtype):
    from fastnn.model import Parallel, Residual
    X, y, order = data(80, 10, 3, dtype)
    models = []
    for _ in range(2):
        models.append(Sequential(
            Dropout(0.1, seed=2),                        # input dropout
            Dense(10, 20, "relu", seed=1, dtype=dtype),
            Residual(Sequential(Dense(20, 20, "tanh", seed=2, dtype=dtype),
                                Dropout(0.3, seed=3), Dense(20, 20, seed=4, dtype=dtype))),
            Activation("relu"),
            Parallel(Dense(20, 7, "silu", seed=5, dtype=dtype), Maxout(20, 5, 3, seed=6,
                                                                       dtype=dtype)),
            Dense(12, 6, "elu", seed=7, dtype=dtype),
            Parallel(Dense(6, 3, seed=8, dtype=dtype), Dense(6, 3, seed=9, dtype=dtype),
                     merge="sum"), dtype=dtype))
    opts = [optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in models]
    module_steps(models[0], opts[0], losses.CrossEntropyLoss(), X, y, order, 16, 5)
    eng = compile_training(models[1], losses.CrossEntropyLoss(), opts[1], 2, block=16)
    assert eng is not None
    assert eng.run(X, y, order, 0, 16, 5).steps == 5
    assert_close(models[1], models[0], TOL[dtype])


def test_fit_graph_model_on_the_engine():
    rng = np.random.default_rng(4)
    Xa = rng.standard_normal((120, 6)).astype(np.float32)
    Xb = rng.standard_normal((120, 5)).astype(np.float32)
    y = rng.integers(0, 4, 120)
    runs = []
    for engine in (True, False):
        m = _graph_model(np.float32)
        h = m.fit([Xa, Xb], y, loss="cross_entropy", epochs=2, batch_size=16, verbose=0,
                  seed=1, engine=engine, validation_data=([Xa[:20], Xb[:20]], y[:20]))
        assert h.params["engine"] is engine
        runs.append((m, h))
    assert_close(runs[0][0], runs[1][0], 1e-5)
    for k in ("loss", "val_loss"):
        np.testing.assert_allclose(runs[0][1][k], runs[1][1][k], rtol=1e-5)
    # squared loss on one output, targets (n,) and (n, 1)
    from fastnn.graph import Input, Model
    for t in (rng.standard_normal(120), rng.standard_normal((120, 1))):
        res = []
        for engine in (True, False):
            a = Input(6)
            m = Model(a, Dense(8, 1, seed=2)(Dense(6, 8, "relu", seed=1)(a)))
            h = m.fit(Xa, t, loss="squared", epochs=2, batch_size=16, verbose=0, seed=1,
                      engine=engine)
            assert h.params["engine"] is engine
            res.append(m)
        assert_close(res[0], res[1], 1e-5)


def test_graph_models_the_engine_does_not_cover():
    from fastnn.graph import Add, Input, Model
    a = Input(4)
    d = Dense(4, 4, seed=0)
    shared = Model(a, Dense(4, 2)(Add()([d(a), d(a)])))
    assert "several nodes" in why_not(shared, losses.CrossEntropyLoss(),
                                      optim.SGD(shared.parameters()))
    a = Input(4)
    h = Dense(4, 4)(a)
    two = Model(a, [Dense(4, 2)(h), Dense(4, 1)(h)])
    with pytest.raises(ValueError, match="engine=True.*2 outputs"):
        two.fit(np.ones((8, 4), np.float32), [np.zeros(8, int), np.zeros(8)],
                loss=["cross_entropy", "squared"], epochs=1, verbose=0, engine=True)
    a = Input(4)
    one = Model(a, Dense(4, 2)(Dense(4, 4)(a)))
    with pytest.raises(ValueError, match="engine=True.*weight other than 1"):
        one.fit(np.ones((8, 4), np.float32), np.zeros(8, int), loss="cross_entropy",
                loss_weights=[0.5], epochs=1, verbose=0, engine=True)
    h = one.fit(np.ones((8, 4), np.float32), np.zeros(8, int), loss="cross_entropy",
                loss_weights=[0.5], epochs=1, verbose=0)
    assert h.params["engine"] is False


def test_core_graph_checks():
    def core(nodes, inputs=None):
        full = [{"code": 0, "keep_z": False, "has_bias": False, **d} for d in nodes]
        return _k.Core(full, "squared", np.float32, 16, inputs)
    for nodes, inputs, match in (
            ([{"n_in": 3, "n_out": 2, "parents": [0]}], None, "earlier nodes or inputs"),
            ([{"n_in": 3, "n_out": 2, "parents": [-2]}], None, "earlier nodes or inputs"),
            ([{"n_in": 3, "n_out": 2, "parents": [-1, -2]}], [3, 3], "takes one"),
            ([{"n_in": 4, "n_out": 2}], [3], "takes 4 inputs, input 0 gives 3"),
            ([{"kind": "concat", "n_in": 0, "n_out": 5, "parents": [-1, -2]}], [3, 3],
             "does not give 5"),
            ([{"kind": "add", "n_in": 0, "n_out": 3, "parents": [-1, -2]}], [3, 4],
             "does not give 3"),
            ([{"kind": "mul", "n_in": 0, "n_out": 3, "parents": [-1], "has_bias": True}], [3],
             "no units of its own"),
            ([{"kind": "max", "n_in": 0, "n_out": 3, "parents": [-1]}], [3], "unknown kind"),
            ([{"n_in": 3, "n_out": 2}, {"n_in": 3, "n_out": 1, "parents": [-1]}], [3],
             "node 0: nothing reads"),
            ([{"n_in": 3, "n_out": 2}], [0], "positive widths"),
            ([{"n_in": 3, "n_out": 0}], [3], "0 outputs")):
        with pytest.raises(ValueError, match=match):
            core(nodes, inputs)


def _random_graph(rng, dtype, n_in, n_out):
    """A random graph Model: layers, activations, dropout and merges over earlier values,
    every value ending in the output (the sinks are concatenated before the last layer).
    Returns a builder: calling it gives a fresh model of the same structure and weights."""
    from fastnn.graph import Add, Concatenate, Input, Model, Multiply
    plan, widths = [], list(n_in)
    for k in range(int(rng.integers(3, 9))):
        op = ["dense", "dense", "maxout", "act", "drop", "concat", "add", "mul"][
            int(rng.integers(0, 8))]
        src = int(rng.integers(0, len(widths)))
        if op in ("add", "mul"):
            same = [i for i, w in enumerate(widths) if w == widths[src]]
            if len(same) < 2:
                op = "dense"
        if op in ("add", "mul"):
            plan.append((op, [int(i) for i in rng.choice(same, 2, replace=False)]))
            widths.append(widths[src])
        elif op == "concat":
            srcs = sorted({src, int(rng.integers(0, len(widths)))})
            plan.append((op, srcs))
            widths.append(sum(widths[i] for i in srcs))
        elif op in ("dense", "maxout"):
            w = int(rng.integers(1, 40))
            plan.append((op, [src], w, int(rng.integers(2, 4)),
                         ["relu", "tanh", None, "gelu", "sigmoid"][int(rng.integers(0, 5))]))
            widths.append(w)
        else:
            plan.append((op, [src], ["tanh", "relu", "silu"][int(rng.integers(0, 3))]))
            widths.append(widths[src])

    def build():
        vals = [Input(w) for w in n_in]
        ins = list(vals)
        for i, step in enumerate(plan):
            op, srcs = step[0], [vals[j] for j in step[1]]
            if op == "add":
                v = Add()(srcs)
            elif op == "mul":
                v = Multiply()(srcs)
            elif op == "concat":
                v = Concatenate()(srcs) if len(srcs) > 1 else srcs[0]
            elif op == "dense":
                v = Dense(srcs[0].features, step[2], step[4], seed=i, dtype=dtype)(srcs[0])
            elif op == "maxout":
                v = Maxout(srcs[0].features, step[2], step[3], seed=i, dtype=dtype)(srcs[0])
            elif op == "drop":
                v = Dropout(0.25, seed=i)(srcs[0])
            else:
                v = Activation(step[2])(srcs[0])
            vals.append(v)
        read = {id(p) for v in vals for p in v.parents}
        sinks = [v for v in vals if id(v) not in read]
        h = Concatenate()(sinks) if len(sinks) > 1 else sinks[0]
        return Model(ins, Dense(h.features, n_out, seed=99, dtype=dtype)(h), dtype=dtype)
    return build


def test_random_graphs_against_module_path_and_bitwise_for_thread_counts(no_fallback):
    """Random graph Models (two inputs): the engine on 1 thread matches the module path
    (float64), and 2-4 threads give its bits."""
    rng = np.random.default_rng(7)
    for case in range(16):
        dtype = np.float64
        build = _random_graph(rng, dtype, [5, 3], 3)
        n, bs, steps = 60, int(rng.integers(1, 20)), 4
        X = rng.standard_normal((n, 8))
        y = rng.integers(0, 3, n)
        order = rng.permutation(n)
        ref = build()
        opt = optim.Adam(ref.parameters(), lr=1e-2)
        module_steps(ref, opt, losses.CrossEntropyLoss(), X, y, order, bs, steps, split=5)
        out, block = [], int(rng.choice([16, 32]))
        for nt in (1, int(rng.integers(2, 5))):
            m = build()
            eng = compile_training(m, losses.CrossEntropyLoss(),
                                   optim.Adam(m.parameters(), lr=1e-2), nt, block=block)
            assert eng is not None, why_not(m, losses.CrossEntropyLoss(),
                                            optim.Adam(m.parameters()))
            eng._exact_threads = True
            assert eng.run(X, y, order, 0, bs, steps).steps == steps
            out.append([p.data.copy() for p in m.parameters()])
        for a, b, r in zip(out[0], out[1], ref.parameters()):
            assert np.array_equal(a, b), case
            assert rel(a, r.data) <= 1e-9, (case, rel(a, r.data))

