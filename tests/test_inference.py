"""One-call inference (fastnn/functional/inference.py, fastnn/_kernels/inference.pyx): predict
and the evaluation-mode forward of a covered Sequential against the layer-by-layer path and an
independent NumPy reference; thread-count invariance; training mode untouched; the plan's
cache and its invalidation; bad input."""
import itertools
import pickle

import numpy as np
import pytest

from fastnn import Sequential
from fastnn._kernels import inference as _k
from fastnn.functional import inference as I
from fastnn.functional.activations import ACTIVATION_TABLE
from fastnn.layers import (
    GELU,
    Activation,
    Dense,
    Dropout,
    Maxout,
    Module,
    ReLU,
    Softmax,
    Sparsemax,
    Tanh,
)
from fastnn.model import Parallel, Residual

DTYPES = [np.float32, np.float64]
ACTS = sorted(ACTIVATION_TABLE)
SIZES = [0, 1, 2, 3, 31, 33, 100, 257, 1000]


def tol(dtype):
    if dtype == np.float32:
        return {"rtol": 2e-5, "atol": 2e-6}
    return {"rtol": 1e-12, "atol": 1e-13}


def layer_path(model, X):
    """The network's output computed module by module in evaluation mode."""
    modes = [(m, m.training) for m in model.modules()]
    for m, _ in modes:
        m.training = False
    try:
        h = np.ascontiguousarray(X)
        for layer in model:
            h = layer.forward(h)
        return np.array(h, copy=True)
    finally:
        for m, mode in modes:
            m.training = mode


def numpy_act(name, z):
    z = z.astype(np.float64)
    from scipy.special import erf
    s = 1 / (1 + np.exp(-z))
    return {"identity": z, "sigmoid": s, "tanh": np.tanh(z), "relu": np.maximum(z, 0),
            "step": (z >= 0).astype(float), "sign": np.where(z >= 0, 1.0, -1.0),
            "leaky_relu": np.where(z > 0, z, 0.01 * z), "elu": np.where(z > 0, z, np.expm1(z)),
            "softplus": np.logaddexp(0, z), "gelu": 0.5 * z * (1 + erf(z / np.sqrt(2))),
            "gelu_tanh": 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi)
                                                * (z + 0.044715 * z ** 3))),
            "silu": z * s}[name]


def mlp(act, dtype, seed=0, sizes=(13, 40, 24, 7)):
    layers = [Dense(a, b, act) for a, b in itertools.pairwise(sizes[:-1])]
    layers.append(Dense(sizes[-2], sizes[-1]))
    return Sequential(*layers, dtype=dtype, seed=seed)


def data(n, d, dtype, seed=1):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


@pytest.fixture
def parallel_always():
    old = _k.set_parallel_min_work(0)
    yield
    _k.set_parallel_min_work(old)


# --- coverage ----------------------------------------------------------------------------------

def test_covered_and_not_covered():
    assert I.why_not(mlp("relu", np.float32)) is None
    full = Sequential(Dense(6, 8, "tanh"), Dropout(0.3), ReLU(), Maxout(8, 4, 3),
                      Dropout(0.2, mode="standard"), Dense(4, 5), Softmax())
    assert I.why_not(full) is None
    assert I.why_not(Sequential(Dense(4, 4), Sparsemax())) is None

    class Custom(Module):
        def forward(self, x):
            return x

    # containers: a graph plan (tests/test_inference_graph.py)
    for net in (Sequential(Dense(4, 4), Sequential(Dense(4, 4))),
                Sequential(Residual(Dense(4, 4))), Sequential(Parallel(Dense(4, 2), Dense(4, 2)))):
        assert I.why_not(net) is None
    for net, word in [(Sequential(Dense(4, 4), Custom()), "Custom"),
                      (Sequential(Residual(Sequential(Dense(4, 4), Custom()))), "Custom"),
                      (Sequential(Dropout(0.5)), "computes"),
                      (Sequential(ReLU(), Softmax()), "width")]:
        reason = I.why_not(net)
        assert reason is not None and word in reason, reason
        assert I.plan_for(net) is None
    # not covered networks still predict (layer by layer)
    net = Sequential(Dense(4, 4, "relu"), Residual(Sequential(Dense(4, 4), Custom())))
    X = data(9, 4, np.float32)
    np.testing.assert_array_equal(net.predict(X), layer_path(net, X))


# --- predict against the layer path and NumPy ------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_predict_every_activation(act, dtype):
    model = mlp(act, dtype)
    assert I.plan_for(model) is not None
    for n in SIZES:
        X = data(n, 13, dtype, seed=n)
        out = model.predict(X)
        assert out.shape == (n, 7) and out.dtype == dtype
        np.testing.assert_allclose(out, layer_path(model, X), **tol(dtype))
        if n <= 32:   # one tile: the same BLAS calls as the layers
            np.testing.assert_array_equal(out, layer_path(model, X))
    # an independent float64 NumPy reference
    X = data(50, 13, dtype)
    h = X.astype(np.float64)
    for i, layer in enumerate(model):
        h = h @ layer.weight.data.astype(np.float64) + layer.bias.data
        if i < len(model) - 1:
            h = numpy_act(act, h)
    loose = ({"rtol": 2e-3, "atol": 2e-4} if dtype == np.float32
             else {"rtol": 1e-9, "atol": 1e-10})
    if act in ("step", "sign"):   # thresholds: rounding may flip a unit at 0; compare the sets
        return
    np.testing.assert_allclose(model.predict(X), h, **loose)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu", "elu", "softplus", "gelu",
                                 "gelu_tanh", "silu", "leaky_relu", "step", "sign"])
def test_activation_modules(act, dtype):
    model = Sequential(Dense(9, 20), Activation(act), Dense(20, 11), Activation(act),
                       Dense(11, 3), dtype=dtype, seed=3)
    for n in (1, 7, 300):
        X = data(n, 9, dtype, seed=n)
        np.testing.assert_allclose(model.predict(X), layer_path(model, X), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_mixed_layers(dtype):
    model = Sequential(Dense(12, 30, "tanh"), Dropout(0.4), GELU(), Maxout(30, 10, 3),
                       Dropout(0.25, mode="standard"), Dense(10, 6), Softmax(), dtype=dtype,
                       seed=5)
    sparse = Sequential(Dense(12, 30, "relu"), Dense(30, 9), Sparsemax(), dtype=dtype, seed=6)
    sorted_ = Sequential(Dense(12, 9), Sparsemax(method="sort"), dtype=dtype, seed=6)
    for net in (model, sparse, sorted_):
        assert I.why_not(net) is None
        for n in (0, 1, 2, 5, 64, 333):
            X = data(n, 12, dtype, seed=n) * 3
            out = net.predict(X)
            np.testing.assert_allclose(out, layer_path(net, X), **tol(dtype))
            if n and isinstance(net[-1], (Softmax, Sparsemax)):
                np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    # Dropout "standard" in evaluation multiplies by 1 - p, "inverted" is the identity
    net = Sequential(Dense(3, 4), Dropout(0.25, mode="standard"), dtype=dtype, seed=1)
    X = data(5, 3, dtype)
    lin = X @ net[0].weight.data + net[0].bias.data
    np.testing.assert_allclose(net.predict(X), lin * dtype(0.75), **tol(dtype))


def test_predict_batches_and_strides():
    model = mlp("relu", np.float32)
    X = data(1001, 13, np.float32)
    ref = model.predict(X)
    for bs in (1, 7, 64, 1000, 5000):
        np.testing.assert_allclose(model.predict(X, batch_size=bs), ref, rtol=2e-5, atol=2e-6)
    Xf = np.asfortranarray(X)
    np.testing.assert_array_equal(model.predict(Xf), ref)
    big = np.zeros((1001, 26), np.float32)
    big[:, ::2] = X
    np.testing.assert_array_equal(model.predict(big[:, ::2]), ref)
    ro = X.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(model.predict(ro), ref)


def test_nan_rows_propagate_like_the_layers():
    model = Sequential(Dense(5, 8, "relu"), Dense(8, 4), Softmax(), seed=0)
    X = data(40, 5, np.float32)
    X[3, 1] = np.nan
    X[17, 0] = np.inf
    np.testing.assert_array_equal(model.predict(X), layer_path(model, X))


# --- threads -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_equal_for_any_thread_count(dtype, parallel_always):
    model = Sequential(Dense(30, 64, "tanh"), Dense(64, 48, "relu"), Maxout(48, 8, 2),
                       Dense(8, 5), Softmax(), dtype=dtype, seed=2)
    X = data(1234, 30, dtype)
    outs = []
    for t in (1, 2, 3, 4):
        model.n_threads = t
        outs.append(model.predict(X))
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    np.testing.assert_allclose(outs[0], layer_path(model, X), **tol(dtype))


def test_tiles_depend_on_the_batch_only():
    sizes = [_k.tile_size(n) for n in (1, 32, 33, 100, 1000, 10 ** 6)]
    assert sizes[:2] == [1, 32]
    assert all(32 <= s <= 256 and s % 16 == 0 for s in sizes[2:])


# --- the evaluation-mode forward -------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_eval_forward_keeps_what_backward_needs(dtype, spy):
    def build():
        return Sequential(Dense(7, 16, "gelu"), Dropout(0.3), Tanh(), Maxout(16, 6, 2),
                          Dropout(0.5, mode="standard"), Dense(6, 4, "silu"), Dense(4, 3),
                          dtype=dtype, seed=4)
    a, b = build(), build()
    a.eval()
    b.eval()
    X = data(45, 7, dtype)
    G = data(45, 3, dtype, seed=9)
    with spy(I, "eval_forward") as calls:
        za = np.array(a.forward(X), copy=True)
    assert calls == [True]
    zb = layer_path(b, X)
    np.testing.assert_allclose(za, zb, **tol(dtype))
    a.zero_grad()
    b.zero_grad()
    ga = a.backward(G)
    h = X
    for layer in b:                      # b's modules cache their own layer-path forward
        h = layer.forward(h)
    gb = b.backward(G)
    np.testing.assert_allclose(ga, gb, **tol(dtype))
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_allclose(pa.grad, pb.grad, err_msg=name, **tol(dtype))


def test_eval_forward_buffers():
    model = mlp("relu", np.float32)
    model.eval()
    X = data(20, 13, np.float32)
    y1 = model.forward(X)
    y2 = model.forward(X)
    assert y1 is y2                      # a buffer owned by the network, reused
    y3 = model.forward(X[:5])
    np.testing.assert_array_equal(y3, layer_path(model, X[:5]))
    assert model.forward(X[:0]).shape == (0, 7)


def test_eval_forward_fed_its_own_output():
    model = Sequential(Dense(6, 6, "tanh"), Dense(6, 6, "tanh"), seed=1)
    model.eval()
    X = data(10, 6, np.float32)
    y = model.forward(X)
    y_copy = y.copy()
    z = model.forward(y)                 # overlaps the network's arrays: the layers run it
    np.testing.assert_allclose(z, layer_path(model, y_copy), rtol=1e-6)


def test_training_mode_keeps_the_layer_path(same_rows):
    model = Sequential(Dense(8, 32, "relu"), Dropout(0.5), Dense(32, 4), seed=0)
    X = data(64, 8, np.float32)
    calls = []
    orig = I.eval_forward
    I.eval_forward = lambda *a: calls.append(1) or orig(*a)
    try:
        model.train()
        t1 = np.array(model.forward(X), copy=True)
        t2 = np.array(model.forward(X), copy=True)
        assert model[0]._x is X              # the layers cached the forward
        model.backward(np.ones_like(t2), need_input_grad=False)
        assert not calls
        assert not np.array_equal(t1, t2)    # dropout active: new masks per call
        model.eval()
        model[1].train()                     # one module in training mode: the layers run
        t3 = np.array(model.forward(X), copy=True)
        assert not np.array_equal(t3, layer_path(model, X))
        model.eval()
        same_rows(model.forward(X), layer_path(model, X))   # 64 rows: two tiles
    finally:
        I.eval_forward = orig
    assert calls == [1, 1]   # asked in evaluation mode only; the first one declined


def test_predict_restores_nothing_it_did_not_touch():
    model = Sequential(Dense(4, 5), Dropout(0.5), Dense(5, 2), seed=0)
    model.train()
    model.predict(data(3, 4, np.float32))
    assert all(m.training for m in model.modules())
    assert model[1]._calls == 0


# --- errors as before --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["predict", "forward"])
def test_bad_input_same_errors(mode):
    model = mlp("relu", np.float32)
    model.eval()
    call = model.predict if mode == "predict" else model.forward
    cases = [(data(3, 13, np.float64), TypeError, "float64 but float32"),
             (data(3, 12, np.float32), ValueError, "12 features"),
             (np.ones(13, np.float32), ValueError, "2-dimensional"),
             (np.ones((3, 13), np.int8) > 0, TypeError, "dtype"),
             ("x", TypeError, "numpy array"),
             (np.array(1.0, np.float32), ValueError, "2-dimensional"),
             (data(3, 13, np.float32).astype(">f4"), TypeError, "dtype")]   # byte-swapped
    for X, exc, words in cases:
        with pytest.raises(exc, match=words):
            call(X)


def test_predict_proba_bad_input_same_errors():
    model = mlp("relu", np.float32)
    model.loss = "cross_entropy"
    for X, exc, words in [(np.array(1.0, np.float32), ValueError, "2-dimensional"),
                          (data(3, 13, np.float32).astype(">f4"), TypeError, "dtype")]:
        with pytest.raises(exc, match=words):
            model.predict_proba(X)


@pytest.mark.parametrize("layer", [Dense(3, 2, "tanh"), Maxout(3, 2, 2),
                                   Dropout(0.5, mode="standard")], ids=lambda m: type(m).__name__)
def test_layers_reject_byte_swapped_input(layer):
    # the kernels read native floats: a byte-swapped array goes to the validating path
    X = data(4, 3, np.float32)            # the layers' default dtype
    # (Dropout in evaluation is a NumPy multiplication, right for any byte order)
    for training in (True, False) if layer.parameters() else (True,):
        layer.training = training
        with pytest.raises(TypeError, match="dtype"):
            layer.forward(X.astype(">f4"))


# --- the plan's cache --------------------------------------------------------------------------

def test_plan_cached_and_rebuilt():
    model = mlp("tanh", np.float32)
    X = data(17, 13, np.float32)
    plan = I.plan_for(model)
    assert I.plan_for(model) is plan
    model.predict(X)
    assert I.plan_for(model) is plan
    # weights changed in place: the plan reads the live arrays
    model[0].weight.data *= 2
    np.testing.assert_array_equal(model.predict(X), layer_path(model, X))
    # a new activation, a new dtype, new arrays: a new plan
    model[1].activation = "relu"
    np.testing.assert_array_equal(model.predict(X), layer_path(model, X))
    assert I.plan_for(model) is not plan
    old = model
    model = model.astype(np.float64)     # a copy: its own plan, the original keeps its own
    np.testing.assert_array_equal(old.predict(X), layer_path(old, X))
    X64 = X.astype(np.float64)
    np.testing.assert_allclose(model.predict(X64), layer_path(model, X64), rtol=1e-12)
    with pytest.raises(TypeError, match="float32 but float64"):
        model.predict(X)
    state = {k: v.copy() for k, v in model.state_dict().items()}
    for v in state.values():
        v *= 0.5
    model.load_state_dict(state)
    np.testing.assert_allclose(model.predict(X64), layer_path(model, X64), rtol=1e-12)
    drop = Sequential(Dense(3, 4), Dropout(0.2, mode="standard"), seed=0)
    X3 = data(6, 3, np.float32)
    a = drop.predict(X3)
    drop[1].p = 0.6
    np.testing.assert_allclose(drop.predict(X3) / a, 0.4 / 0.8, rtol=1e-6)


def test_pickle_and_copy_leave_the_plan_behind():
    model = mlp("relu", np.float32)
    X = data(30, 13, np.float32)
    ref = model.predict(X)
    model.eval()
    model.forward(X)
    blob = pickle.dumps(model)
    clone = pickle.loads(blob)
    assert clone.__dict__.get(I._KEY) is None
    np.testing.assert_array_equal(clone.predict(X), ref)
    np.testing.assert_array_equal(model.copy().predict(X), ref)
    fresh = mlp("relu", np.float32)
    assert len(blob) < len(pickle.dumps(fresh)) + 400


def test_non_plain_parameters_fall_back(tmp_path):
    model = mlp("relu", np.float32)
    X = data(11, 13, np.float32)
    ref = model.predict(X)
    ro = np.lib.format.open_memmap(tmp_path / "w.npy", mode="w+", dtype=np.float32,
                                   shape=model[0].weight.data.shape)
    ro[...] = model[0].weight.data
    model[0].weight.data = ro
    assert "not plain" in I.why_not(model)
    np.testing.assert_array_equal(model.predict(X), ref)


def test_plan_rejects_bad_steps():
    W = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError):
        _k.InferencePlan([], np.float32)
    with pytest.raises(TypeError):
        _k.InferencePlan([(0, 0, 3, 4, 1, 1.0, W, None)], np.int32)
    with pytest.raises(ValueError, match="parameter"):
        _k.InferencePlan([(0, 0, 3, 4, 1, 1.0, W.astype(np.float64), None)], np.float32)
    with pytest.raises(ValueError, match="reads"):
        _k.InferencePlan([(0, 0, 3, 4, 1, 1.0, W, None), (0, 0, 3, 4, 1, 1.0, W, None)],
                         np.float32)
    for kind in ("activation", "scale", "softmax", "sparsemax"):   # the width is kept
        with pytest.raises(ValueError, match="width"):
            _k.InferencePlan([(_k.KINDS[kind], 0, 3, 5, 1, 1.0, None, None)], np.float32)
    model = mlp("relu", np.float32)
    (steps, checks, modules, *_), _ = I._compile(model)
    plan = _k.InferencePlan(steps, np.float32, iter(checks), modules)   # any iterable
    assert plan.valid()
    model[0].activation = "tanh"
    assert not plan.valid()
    with pytest.raises(TypeError, match="once"):
        plan.__init__([(0, 3, 3, 4, 1, 1.0, W, None)], np.float32)
    plan = _k.InferencePlan([(0, 3, 3, 4, 1, 1.0, W, None)], np.float32)
    X = np.ones((2, 3), np.float32)
    assert not plan.run(X, np.empty((2, 5), np.float32), 1)      # wrong width
    assert not plan.run(X, np.empty((2, 4), np.float64), 1)      # wrong dtype
    assert not plan.run(X[:, ::-1], np.empty((2, 4), np.float32), 1)   # not contiguous
    buf = np.empty(20, np.float32)
    assert not plan.run(buf[:6].reshape(2, 3), buf[4:12].reshape(2, 4), 1)   # overlap
    out = np.empty((2, 4), np.float32)
    assert plan.run(X, out, 1)
    np.testing.assert_array_equal(out, 0)


def test_forward_replaced_on_an_instance_is_honoured():
    model = mlp("relu", np.float32)
    X = data(8, 13, np.float32)
    ref = model.predict(X)
    first = model[0]
    original = first.forward
    first.forward = lambda x: original(x) * 0          # after the plan was built
    assert "replaced" in I.why_not(model)
    np.testing.assert_array_equal(model.predict(X), layer_path(model, X))
    assert not np.array_equal(model.predict(X), ref)
    del first.forward
    assert I.why_not(model) is None
    np.testing.assert_array_equal(model.predict(X), ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_wide_layers_small_batches(dtype):
    # 1 row: GEMV as the Dense kernel (bitwise); 2 rows into >= 64 outputs: one GEMM where the
    # Dense kernel makes one GEMV per row (equal to rounding)
    model = Sequential(Dense(100, 96, "relu"), Dense(96, 80, "tanh"), Dense(80, 3),
                       dtype=dtype, seed=7)
    for n in (1, 2, 3, 17):
        X = data(n, 100, dtype, seed=n)
        out = model.predict(X)
        np.testing.assert_allclose(out, layer_path(model, X), **tol(dtype))
        if n != 2:
            np.testing.assert_array_equal(out, layer_path(model, X))


@pytest.mark.parametrize("dtype", DTYPES)
def test_eval_forward_threads_bitwise(dtype, parallel_always):
    model = Sequential(Dense(10, 40, "relu"), Maxout(40, 12, 2), Dropout(0.5, mode="standard"),
                       Dense(12, 9), Sparsemax(), dtype=dtype, seed=8)
    model.eval()
    X = data(700, 10, dtype)
    outs, args = [], []
    for t in (1, 2, 3):
        model.n_threads = t
        outs.append(np.array(model.forward(X), copy=True))
        args.append(model[1]._arg.copy())
    for o, a in zip(outs[1:], args[1:]):
        np.testing.assert_array_equal(o, outs[0])
        np.testing.assert_array_equal(a, args[0])
    np.testing.assert_allclose(outs[0], layer_path(model, X), **tol(dtype))


def test_predict_from_many_threads():
    import threading
    model = mlp("tanh", np.float32)
    X = data(300, 13, np.float32)
    refs = [model.predict(X[: 100 + i]) for i in range(4)]
    results, errors = [], []

    def work(i):
        try:
            for _ in range(20):
                results.append(np.array_equal(model.predict(X[: 100 + i]), refs[i]))
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 80 and all(results)


def test_predict_returns_a_new_array():
    model = mlp("relu", np.float32)
    X = data(5, 13, np.float32)
    a = model.predict(X)
    b = model.predict(X)
    assert a is not b and not np.shares_memory(a, b)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_predict_proba_in_one_call(dtype):
    from fastnn.losses import SparsemaxLoss, get_loss
    model = mlp("relu", dtype)
    calls = []
    orig = I.predict_proba_array
    I.predict_proba_array = lambda *a: calls.append(1) or orig(*a)
    try:
        for n in (0, 1, 5, 100, 1500):
            X = data(n, 13, dtype, seed=n) * 4
            z = model.predict(X)
            for loss in ("cross_entropy", "binary_cross_entropy", "sparsemax",
                         SparsemaxLoss(method="sort"), "squared"):
                p = model.predict_proba(X, loss=loss)
                np.testing.assert_array_equal(p, get_loss(loss).output(z))
                assert p.dtype == dtype and p.shape == z.shape
    finally:
        I.predict_proba_array = orig
    assert calls
    with pytest.raises(ValueError, match="output map"):
        model.predict_proba(data(3, 13, dtype))
    with pytest.raises(ValueError):
        model.predict_proba(data(3, 13, dtype), loss="nonsense")
    with pytest.raises(TypeError, match="dtype"):
        model.predict_proba(data(3, 13, np.float16), loss="cross_entropy")
    soft = Sequential(Dense(13, 4), Softmax(), dtype=dtype, seed=0)
    X = data(9, 13, dtype)
    np.testing.assert_array_equal(soft.predict_proba(X), soft.predict(X))
    np.testing.assert_array_equal(soft.predict_proba(X, loss="cross_entropy"),
                                  get_loss("cross_entropy").output(soft.predict(X)))


def test_parameters_that_do_not_fit_raise_the_layers_errors():
    X = data(4, 13, np.float32)
    for attr, value, exc, words in [
            ("weight", np.zeros((13, 40), np.float64), TypeError, "float64"),
            ("bias", np.zeros(7, np.float32), ValueError, "b must have shape")]:
        model = mlp("relu", np.float32)
        model.predict(X)                         # a plan is cached
        getattr(model[0], attr).data = value
        with pytest.raises(exc, match=words):
            model.predict(X)
        model.eval()
        with pytest.raises(exc, match=words):
            model.forward(X)
        assert I.why_not(model).startswith("the parameters do not fit")


def test_one_plan_from_several_threads():
    # a plan serializes its own calls: its work buffers grow (are freed) with the batch
    import threading
    model = Sequential(Dense(16, 48, "tanh"), Maxout(48, 16, 3), Dense(16, 4),
                       dtype=np.float64, seed=0)
    Xs = [data(n, 16, np.float64, seed=n) for n in (1, 40, 300, 900, 2000)]
    ref = [layer_path(model, X) for X in Xs]
    plan = I.compile_inference(model)
    bad = []

    def work(k):
        rng = np.random.default_rng(k)
        for _ in range(60):
            i = int(rng.integers(len(Xs)))
            y = plan.predict(Xs[i], 1)
            if not np.allclose(y, ref[i], rtol=1e-12, atol=1e-13):
                bad.append(i)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


def test_shallow_copy_compiles_its_own_plan():
    import copy
    model = mlp("relu", np.float32)
    model.predict(data(3, 13, np.float32))
    twin = copy.copy(model)
    assert I.plan_for(twin) is not I.plan_for(model)


def test_eval_forward_sizes_nothing_for_input_it_refuses():
    model = mlp("relu", np.float32)
    model.eval()
    model.forward(data(4, 13, np.float32))
    state = model.__dict__[I._KEY]
    n, bases = state.n, state.bases
    for X in (np.zeros((5000, 12), np.float32), np.zeros((5000, 13), np.float64)):
        with pytest.raises((ValueError, TypeError)):
            model.forward(X)
        assert state.n == n and state.bases is bases


def test_settings_changed_to_unknown_values_raise_the_layers_errors():
    X = data(2, 6, np.float32)
    for layer, attr, words in [(Sparsemax(), "method", "method must be one of"),
                               (Activation("relu"), "name", "Unknown activation")]:
        model = Sequential(Dense(6, 4), layer, dtype=np.float32, seed=0)
        model.predict(X)
        setattr(layer, attr, "bogus")
        with pytest.raises(ValueError, match=words):
            model.predict(X)
        model.eval()
        with pytest.raises(ValueError, match=words):
            model.forward(X)


@pytest.mark.parametrize("dtype", DTYPES)
def test_eval_forward_of_no_rows_with_maxout(dtype):
    model = Sequential(Dense(4, 6, "tanh"), Maxout(6, 3, 2), Dense(3, 2), dtype=dtype, seed=0)
    model.eval()
    for n in (0, 3, 0):
        X = data(n, 4, dtype)
        np.testing.assert_array_equal(model.forward(X), layer_path(model, X))


# --- a request's columns split over threads ------------------------------------------------------

def _threads_available(n):
    from fastnn._threads import effective_n_threads
    return effective_n_threads(n)


def _split_nets(dtype):
    nets = [Sequential(Dense(30, 200, "tanh"), Dense(200, 130, "relu"), Maxout(130, 70, 3),
                       Dropout(0.3, mode="standard"), GELU(), Dense(70, 5), Softmax(),
                       dtype=dtype, seed=3),
            Sequential(Dense(25, 129, "relu"), Dense(129, 64), Sparsemax(), dtype=dtype, seed=4),
            Sequential(Dense(784, 256, "relu"), Dense(256, 256, "relu"), Dense(256, 10),
                       dtype=dtype, seed=5)]
    nets += [Sequential(Dense(20, 150, act), Dense(150, 9), dtype=dtype, seed=6) for act in ACTS]
    return nets


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_columns_bitwise(dtype, split_always):
    """A one-row request with its columns split over 2-4 threads: the bits of one thread and of
    the layer path, for predict and for the evaluation-mode forward (with maxout's winners)."""
    if _threads_available(2) < 2:
        pytest.skip("needs 2 threads (OpenMP)")
    for net in _split_nets(dtype):
        X = data(1, net[0].weight.data.shape[0], dtype, seed=9) * 2
        plan = I.plan_for(net)
        net.n_threads = 1
        ref = net.predict(X)
        assert not plan.last_split and plan.last_threads == 1
        assert ref.tobytes() == layer_path(net, X).tobytes()
        net.eval()
        ref_fwd = np.array(net.forward(X), copy=True)
        maxouts = [m for m in net if isinstance(m, Maxout)]
        ref_args = [m._arg.copy() for m in maxouts]
        for t in (2, 3, 4):
            net.n_threads = t
            out = net.predict(X)
            assert plan.last_split and plan.last_threads >= 2, (t, net)
            assert out.tobytes() == ref.tobytes(), (t, net)
            fwd = net.forward(X)
            assert plan.last_split
            assert np.asarray(fwd).tobytes() == ref_fwd.tobytes()
            for m, a in zip(maxouts, ref_args):
                np.testing.assert_array_equal(m._arg, a)
        net.train()


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_reads_nothing_stale(dtype, split_always):
    """Split requests over several inputs, in another order than their references: a step that
    read a column before another thread wrote it would show the previous request's values."""
    if _threads_available(2) < 2:
        pytest.skip("needs 2 threads (OpenMP)")
    net = Sequential(Dense(48, 192, "tanh"), Maxout(192, 160, 2), Dense(160, 300, "relu"),
                     Dense(300, 70), dtype=dtype, seed=11)
    xs = [data(1, 48, dtype, seed=100 + i) * (1 + i % 3) for i in range(40)]
    net.n_threads = 1
    refs = [net.predict(x) for x in xs]
    net.n_threads = 2
    plan = I.plan_for(net)
    order = np.random.default_rng(0).permutation(len(xs))
    for i in np.concatenate([order, order[::-1]]):
        out = net.predict(xs[i])
        assert plan.last_split
        assert out.tobytes() == refs[i].tobytes(), i


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_of_several_rows(dtype, split_always):
    """Up to GEMV_ROWS rows (raised to 3 here) into layers of at least 64 outputs split too,
    with the bits of one thread."""
    if _threads_available(2) < 2:
        pytest.skip("needs 2 threads (OpenMP)")
    old = _k.set_gemv_rows(3)
    try:
        net = Sequential(Dense(40, 130, "relu"), Maxout(130, 64, 2), Dense(64, 96), Softmax(),
                         dtype=dtype, seed=12)
        plan = None
        for n in (2, 3):
            X = data(n, 40, dtype, seed=n)
            net.n_threads = 1
            ref = net.predict(X)
            plan = I.plan_for(net)
            assert not plan.last_split
            net.n_threads = 2
            out = net.predict(X)
            assert plan.last_split, n
            assert out.tobytes() == ref.tobytes()
            np.testing.assert_allclose(out, layer_path(net, X), **tol(dtype))
    finally:
        _k.set_gemv_rows(old)


def test_split_only_when_it_gives_the_same_bits(split_always):
    from fastnn._kernels import _blas
    if _threads_available(2) < 2:
        pytest.skip("needs 2 threads (OpenMP)")
    net = Sequential(Dense(40, 300, "relu"), Dense(300, 20), seed=1, n_threads=2)
    plan = None
    X1, X2 = data(1, 40, np.float32), data(2, 40, np.float32)
    net.predict(X1)
    plan = I.plan_for(net)
    assert plan.last_split
    net.predict(X2)          # 2 rows: the tile path (GEMM; the split needs GEMV rows)
    assert not plan.last_split
    old_rows = _k.set_gemv_rows(2)
    try:
        net.predict(X2)      # 2 rows by GEMV, but a 20-wide layer goes through GEMM
        assert not plan.last_split
    finally:
        _k.set_gemv_rows(old_rows)
    old = _blas.set_xw_own_max_bytes(40 * 300 * 4 - 1)   # the first layer takes BLAS GEMV
    try:
        out = net.predict(X1)
        assert not plan.last_split
    finally:
        _blas.set_xw_own_max_bytes(old)
    np.testing.assert_allclose(out, layer_path(net, X1), rtol=2e-5, atol=2e-6)
    one_block = Sequential(Dense(40, 64, "relu"), Dense(64, 20), seed=1, n_threads=2)
    one_block.predict(X1)
    assert not I.plan_for(one_block).last_split     # no layer has 2 blocks of columns


def test_split_waits_for_an_awake_core():
    """A lone request stays on the calling thread; one right after another call splits."""
    import time
    if _threads_available(2) < 2:
        pytest.skip("needs 2 threads (OpenMP)")
    min_work, gap = _k.set_split(0.0, 0.05)
    try:
        net = Sequential(Dense(50, 256, "relu"), Dense(256, 10), seed=2, n_threads=2)
        X = data(1, 50, np.float32)
        first = net.predict(X)
        plan = I.plan_for(net)
        assert not plan.last_split            # no call before it
        second = net.predict(X)
        assert plan.last_split                # right after the first
        time.sleep(0.1)
        third = net.predict(X)
        assert not plan.last_split            # the previous call ended 0.1 s ago
        assert first.tobytes() == second.tobytes() == third.tobytes()
    finally:
        _k.set_split(min_work, gap)


@pytest.mark.parametrize("env", [{"OMP_WAIT_POLICY": "passive"}, {"GOMP_SPINCOUNT": "0"},
                                 {"OMP_WAIT_POLICY": "active"}])
def test_passive_waits_never_split(env):
    """With passive waits the workers sleep after every region: no request splits."""
    import os
    import subprocess
    import sys
    code = "from fastnn._kernels import inference as k; print(k.set_split(0.0, 0.0)[1])"
    import fastnn
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))  # above fastnn/
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, cwd=root,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    gap = float(out.stdout)
    assert gap == (1e-3 if env.get("OMP_WAIT_POLICY") == "active" else 0.0)
