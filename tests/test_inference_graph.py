"""One-call inference of graphs (fastnn/functional/inference.py, fastnn/_kernels/inference.pyx):
graph Models (several inputs and outputs, merges, shared layers) and Sequentials holding
Residual / Parallel / nested Sequential containers, against the module path and an independent
NumPy reference; thread-count and column-split invariance; the plan's invalidation; bad input."""
import importlib.util
import pathlib

import numpy as np
import pytest

from fastnn import Sequential
from fastnn._kernels import inference as _k
from fastnn.functional import inference as I
from fastnn.graph import Add, Concatenate, Input, Merge, Model, Multiply
from fastnn.layers import Dense, Dropout, Maxout, Module, ReLU, Softmax, Sparsemax, Tanh
from fastnn.model import Parallel, Residual

DTYPES = [np.float32, np.float64]
SIZES = [0, 1, 2, 31, 33, 300]


def tol(dtype):
    if dtype == np.float32:
        return {"rtol": 2e-5, "atol": 2e-6}
    return {"rtol": 1e-12, "atol": 1e-13}


def data(n, d, dtype, seed=1):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


def module_path(model, xs):
    """The outputs computed module by module in evaluation mode (a list)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    keep = I.eval_forward_many
    I.eval_forward_many = lambda *a: None   # a graph Model's forward: its layer path
    try:
        if isinstance(model, Model):
            out = model.forward(xs)
            out = [out] if model._single_out else out
        else:
            h = xs
            for layer in model:
                h = layer.forward(h)
            out = [h]
        return [np.array(o, copy=True) for o in out]
    finally:
        I.eval_forward_many = keep
        for m, mode in modes:
            m.training = mode


def as_list(out):
    return out if isinstance(out, list) else [out]


def two_input_graph(dtype, width=12):
    """Two inputs, three outputs (one read by later nodes too): every merge, three parents."""
    a, b = Input(7, name="a"), Input(5, name="b")
    h1 = Dense(7, width, "relu", seed=1, dtype=dtype)(a)
    h2 = Dense(5, width, "tanh", seed=2, dtype=dtype)(b)
    c = Concatenate()([h1, h2, a])
    s = Add()([h1, h2, Tanh()(h1)])
    m = Multiply()([s, h2, h2])
    o1 = Dense(2 * width + 7, 3, seed=3, dtype=dtype)(Dropout(0.3, mode="standard")(c))
    o2 = Softmax()(Maxout(width, 4, 2, seed=4, dtype=dtype)(m))
    return Model([a, b], [o1, o2, h1], dtype=dtype)


def numpy_two_input(model, xa, xb):
    """An independent float64 reference of two_input_graph."""
    dense = [m for m in model._layers if type(m) is Dense]
    mx = next(m for m in model._layers if type(m) is Maxout)

    def lin(m, x):
        return x @ m.weight.data.astype(np.float64) + m.bias.data.astype(np.float64)
    xa, xb = xa.astype(np.float64), xb.astype(np.float64)
    h1 = np.maximum(lin(dense[0], xa), 0)
    h2 = np.tanh(lin(dense[1], xb))
    c = np.concatenate([h1, h2, xa], axis=1)
    s = h1 + h2 + np.tanh(h1)
    m = s * h2 * h2
    o1 = lin(dense[2], c * 0.7)
    z = lin(mx.linear, m).reshape(len(m), 4, 2).max(axis=2)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return [o1, e / e.sum(axis=1, keepdims=True), h1]


def container_net(dtype, seed=3):
    return Sequential(
        Dense(6, 8, "relu"),
        Residual(Sequential(Dense(8, 8, "tanh"), Dropout(0.2, mode="standard"))),
        Parallel(Dense(8, 4), Sequential(Dense(8, 3), ReLU()), merge="concat"),
        Parallel(Dense(7, 7, "gelu"), Dense(7, 7), Tanh(), merge="sum"),
        Residual(ReLU()), Softmax(), dtype=dtype, seed=seed)


def numpy_container(net, X):
    def lin(m, x):
        return x @ m.weight.data.astype(np.float64) + m.bias.data.astype(np.float64)
    from scipy.special import erf
    x = np.maximum(lin(net[0], X.astype(np.float64)), 0)
    inner = net[1].module
    x = x + np.tanh(lin(inner[0], x)) * 0.8
    p = net[2].branches
    x = np.concatenate([lin(p[0], x), np.maximum(lin(p[1][0], x), 0)], axis=1)
    q = net[3].branches
    g = lin(q[0], x)
    x = 0.5 * g * (1 + erf(g / np.sqrt(2))) + lin(q[1], x) + np.tanh(x)
    x = x + np.maximum(x, 0)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def parallel_always():
    old = _k.set_parallel_min_work(0)
    yield
    _k.set_parallel_min_work(old)


def _threads_available(n):
    from fastnn._threads import effective_n_threads
    return effective_n_threads(n)


# --- coverage ------------------------------------------------------------------------------------

def test_covered_graphs_get_a_graph_plan():
    model = two_input_graph(np.float32)
    assert I.why_not(model) is None
    plan = I.plan_for(model)
    assert plan.is_graph and plan.n_inputs == 2 and plan.n_outputs == 3
    assert plan.in_widths == (7, 5) and plan.out_widths == (3, 4, 12)
    assert I.plan_for(container_net(np.float32)).is_graph
    # a one-input, one-output graph without merges is a chain
    a = Input(4)
    chain = Model(a, Dense(6, 2)(Dense(4, 6, "relu")(a)))
    assert not I.plan_for(chain).is_graph
    # nested Sequentials flatten to a chain, which keeps the layer path for forward
    nested = Sequential(Dense(4, 6, "relu"), Sequential(Dense(6, 6), Tanh()), Dense(6, 2))
    assert not I.plan_for(nested).is_graph


def test_not_covered_graphs_keep_the_module_path():
    class Custom(Module):
        def forward(self, x):
            return x * 2

    class Mean(Merge):
        def merged_features(self, widths):
            return widths[0]

        def forward(self, xs):
            return (xs[0] + xs[1]) / 2

    a = Input(4)
    h = Dense(4, 4, seed=0)(a)
    for model, word in [(Model(a, Custom()(h)), "Custom"), (Model(a, Mean()([h, a])), "Mean")]:
        reason = I.why_not(model)
        assert reason is not None and word in reason, reason
        X = data(5, 4, np.float32)
        np.testing.assert_array_equal(model.predict(X), module_path(model, X)[0])
    net = Sequential(Dense(4, 4), Parallel(Dense(4, 2), Sequential(Dense(4, 2), Custom())))
    assert "Custom" in I.why_not(net)
    X = data(5, 4, np.float32)
    np.testing.assert_array_equal(net.predict(X), module_path(net, X)[0])


# --- against the module path and NumPy -----------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_graph_model_against_module_path_and_numpy(dtype, n):
    model = two_input_graph(dtype)
    xa, xb = data(n, 7, dtype, 1), data(n, 5, dtype, 2)
    out = model.predict([xa, xb])
    assert isinstance(out, list) and len(out) == 3
    ref = module_path(model, [xa, xb])
    for o, r, e in zip(out, ref, numpy_two_input(model, xa, xb)):
        assert o.dtype == dtype and o.shape == r.shape and o.flags.c_contiguous
        if n <= 1:
            assert o.tobytes() == r.tobytes()   # the same calls (one row: xw)
        np.testing.assert_allclose(o, r, **tol(dtype))
        np.testing.assert_allclose(o, e, rtol=1e-4 if dtype == np.float32 else 1e-10,
                                   atol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_containers_against_module_path_and_numpy(dtype, n):
    net = container_net(dtype)
    assert I.why_not(net) is None
    X = data(n, 6, dtype)
    out = net.predict(X)
    ref = module_path(net, X)[0]
    if n <= 1:
        assert out.tobytes() == ref.tobytes()
    np.testing.assert_allclose(out, ref, **tol(dtype))
    np.testing.assert_allclose(out, numpy_container(net, X),
                               rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-6)
    # batches, predict_proba (the loss's map as one more step), the evaluation-mode forward
    np.testing.assert_allclose(net.predict(X, batch_size=7), out, **tol(dtype))
    p = net.predict_proba(X, loss="cross_entropy")
    assert p.shape == out.shape
    if n:
        e = np.exp(out - out.max(axis=1, keepdims=True))
        np.testing.assert_allclose(p, e / e.sum(axis=1, keepdims=True), **tol(dtype))
    net.eval()   # the evaluation-mode forward: one call too
    np.testing.assert_allclose(net.forward(X), ref, **tol(dtype))
    net.train()


@pytest.mark.parametrize("dtype", DTYPES)
def test_multi_input_by_list_tuple_dict_and_large_batches(dtype):
    model = two_input_graph(dtype)
    xa, xb = data(2100, 7, dtype, 1), data(2100, 5, dtype, 2)
    by_list = model.predict([xa, xb])
    for X in ((xa, xb), {"b": xb, "a": xa}):
        for o, r in zip(model.predict(X), by_list):
            assert o.tobytes() == r.tobytes()
    # over 1024 rows: batches of 1024 through the plan; batch_size as asked
    ref = model.predict([xa[:1024], xb[:1024]])
    for o, r in zip(by_list, ref):
        assert o[:1024].tobytes() == r.tobytes()
    for o, r in zip(model.predict([xa, xb], batch_size=300), module_path(model, [xa, xb])):
        np.testing.assert_allclose(o, r, **tol(dtype))
    # read-only and non-contiguous inputs
    ra, rb = xa[:40].copy(), xb[:40].copy()
    ra.setflags(write=False)
    rb.setflags(write=False)
    for o, r in zip(model.predict([ra, rb]), model.predict([xa[:40].copy(), xb[:40].copy()])):
        assert o.tobytes() == r.tobytes()
    wide = np.repeat(xa[:40], 2, axis=1)[:, ::2]
    for o, r in zip(model.predict([wide, xb[:40]]), model.predict([xa[:40], xb[:40]])):
        assert o.tobytes() == r.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_shared_layers_outputs_that_are_inputs_or_repeated(dtype):
    a, b = Input(6, name="a"), Input(6, name="b")
    shared = Dense(6, 6, "tanh", seed=1, dtype=dtype)
    h = Add()([shared(a), shared(b)])
    h2 = shared(h)
    model = Model([a, b], [h2, a, h2, Multiply()([h, h, h])], dtype=dtype)
    assert I.why_not(model) is None
    xa, xb = data(33, 6, dtype, 1), data(33, 6, dtype, 2)
    out = model.predict([xa, xb])
    ref = module_path(model, [xa, xb])
    for o, r in zip(out, ref):
        np.testing.assert_allclose(o, r, **tol(dtype))
    assert out[1].tobytes() == xa.tobytes() and out[1] is not xa
    assert out[0].tobytes() == out[2].tobytes() and out[0] is not out[2]
    # the shared layer's parameters are read where they live
    shared.weight.data[:] *= 0.5
    for o, r in zip(model.predict([xa, xb]), module_path(model, [xa, xb])):
        np.testing.assert_allclose(o, r, **tol(dtype))


# --- threads and the column split ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_for_any_thread_count(dtype, parallel_always):
    for model, xs in [(two_input_graph(dtype), [data(300, 7, dtype), data(300, 5, dtype, 2)]),
                      (container_net(dtype), data(300, 6, dtype))]:
        model.n_threads = 1
        ref = as_list(model.predict(xs))
        for t in (2, 3, 4):
            model.n_threads = t
            for o, r in zip(as_list(model.predict(xs)), ref):
                assert o.tobytes() == r.tobytes(), t
            assert I.plan_for(model).last_threads == min(t, _threads_available(t))


def split_graph(dtype):
    """Layers of 128+ outputs (several column blocks) around every merge."""
    x = Input(30)
    h1 = Dense(30, 130, "relu", seed=1, dtype=dtype)(x)
    h2 = Dense(30, 130, "tanh", seed=2, dtype=dtype)(x)
    c = Concatenate()([h1, h2])
    s = Add()([h1, h2])
    m = Multiply()([Tanh()(s), h2])
    d = Dense(260, 130, "gelu", seed=3, dtype=dtype)(c)
    mo = Maxout(130, 70, 3, seed=4, dtype=dtype)(Add()([d, m]))
    return Model(x, [Softmax()(Dense(70, 9, seed=5, dtype=dtype)(mo)),
                     Sparsemax()(Dense(130, 12, seed=6, dtype=dtype)(m)), mo], dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_columns_bitwise(dtype, split_always):
    if _threads_available(2) < 2:
        pytest.skip("needs 2 threads (OpenMP)")
    wide = Sequential(Dense(30, 130, "relu"), Residual(Dense(130, 130, "tanh")),
                      Parallel(Dense(130, 70), Dense(130, 70, "relu"), merge="sum"),
                      Parallel(Dense(70, 65), Tanh()), Dense(135, 5), dtype=dtype, seed=1)
    net = container_net(dtype)
    for model in (split_graph(dtype), wide, net):
        width = model.input_widths[0] if isinstance(model, Model) else model[0].in_features
        X = data(1, width, dtype, seed=9) * 2
        plan = I.plan_for(model)
        model.n_threads = 1
        ref = as_list(model.predict(X))
        assert not plan.last_split
        for o, r in zip(ref, module_path(model, X)):
            assert o.tobytes() == r.tobytes()
        for t in (2, 3, 4):
            model.n_threads = t
            out = as_list(model.predict(X))
            if model is not net:   # (the container net's layers are too narrow to split)
                assert plan.last_split and plan.last_threads >= 2, t
            for o, r in zip(out, ref):
                assert o.tobytes() == r.tobytes(), t


def _random_graph(*args):
    """tests/test_engine.py's random graph builder (pytest imports test files by path)."""
    path = pathlib.Path(__file__).with_name("test_engine.py")
    spec = importlib.util.spec_from_file_location("_fastnn_test_engine", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod._random_graph(*args)


def test_random_graphs():
    """Random graph Models (two inputs, every merge, maxout, activations, dropout): the module
    path to rounding, bitwise for 1-4 threads, and a one-row request split or not."""
    rng = np.random.default_rng(11)
    for trial in range(12):
        dtype = DTYPES[trial % 2]
        model = _random_graph(rng, dtype, [int(rng.integers(2, 9)), int(rng.integers(2, 9))],
                              int(rng.integers(1, 6)))()
        assert I.why_not(model) is None
        for n in (1, 37, 300):
            xs = [data(n, w, dtype, seed=trial + n) for w in model.input_widths]
            model.n_threads = 1
            old = _k.set_parallel_min_work(0)
            try:
                ref = model.predict(xs)
                np.testing.assert_allclose(ref, module_path(model, xs)[0], **tol(dtype))
                for t in (2, 4):
                    model.n_threads = t
                    assert model.predict(xs).tobytes() == ref.tobytes(), (trial, n, t)
            finally:
                _k.set_parallel_min_work(old)


# --- the plan's validity -----------------------------------------------------------------------

def test_plan_follows_every_change():
    dtype = np.float64
    net = container_net(dtype)
    X = data(20, 6, dtype)
    inner = net[1].module
    par, psum = net[2], net[3]
    changes = [
        lambda: setattr(inner[0], "activation", "relu"),
        lambda: setattr(inner[1], "p", 0.5),
        lambda: setattr(inner[1], "mode", "inverted"),
        lambda: setattr(inner[0].weight, "data", inner[0].weight.data * 2),
        lambda: setattr(net[1], "module", Sequential(Dense(8, 8, "sigmoid", dtype=dtype))),
        lambda: net[1].module._layers.__setitem__(0, Dense(8, 8, "elu", dtype=dtype)),
        lambda: par.branches.__setitem__(0, Dense(8, 4, "relu", dtype=dtype)),
        lambda: setattr(psum, "merge", "concat"),
        lambda: setattr(net[3].branches[2], "name", "sigmoid"),
    ]
    for change in changes:
        plan = I.plan_for(net)
        assert plan.valid()
        change()
        assert not plan.valid()
        assert I.why_not(net) is None
        assert I.plan_for(net) is not plan
        np.testing.assert_allclose(net.predict(X), module_path(net, X)[0], **tol(dtype))


def test_graph_plan_follows_changes():
    dtype = np.float32
    model = two_input_graph(dtype)
    xs = [data(9, 7, dtype), data(9, 5, dtype, 2)]
    dense = [m for m in model._layers if type(m) is Dense]
    drop = next(m for m in model._layers if type(m) is Dropout)
    mx = next(m for m in model._layers if type(m) is Maxout)
    for change in [lambda: setattr(dense[0], "activation", "sigmoid"),
                   lambda: setattr(drop, "p", 0.1),
                   lambda: setattr(drop, "mode", "inverted"),
                   lambda: setattr(mx.linear, "bias", None),
                   lambda: setattr(dense[1], "bias", None),
                   lambda: setattr(dense[2].weight, "data", dense[2].weight.data + 1),
                   lambda: setattr(model._runners[-1], "forward", lambda x: x)]:
        plan = I.plan_for(model)
        change()
        assert not plan.valid()
        for o, r in zip(model.predict(xs), module_path(model, xs)):
            np.testing.assert_allclose(o, r, **tol(dtype))
    assert "replaced" in I.why_not(model)


# --- bad input -----------------------------------------------------------------------------------

def _error(f):
    try:
        f()
    except Exception as e:   # noqa: BLE001 - the type and message are compared
        return type(e), str(e)
    return None


def test_bad_input_same_errors():
    model = two_input_graph(np.float32)
    xa, xb = data(4, 7, np.float32), data(4, 5, np.float32)
    bad = [[xa.astype(np.float64), xb], [xa, xb[:, :4]], [xa], [xa, xb[:3]], {"a": xa},
           {"a": xa, "c": xb}, [xa[0], xb], xa, [None, xb], [xa, xb, xb]]
    for X in bad:
        got = _error(lambda: model.predict(X))
        want = _error(lambda: model._input_list(X))
        assert got is not None and got == want, (got, want)
    # nothing compiled changes by it, and the good input still predicts
    for o, r in zip(model.predict([xa, xb]), module_path(model, [xa, xb])):
        np.testing.assert_allclose(o, r, **tol(np.float32))
    net = container_net(np.float32)
    for X in (data(3, 5, np.float32), data(3, 6, np.float64), np.zeros((3,), np.float32)):
        with pytest.raises((TypeError, ValueError)):
            net.predict(X)


def test_plan_rejects_bad_graphs():
    W = np.zeros((3, 4), np.float32)
    dense = (0, 0, 3, 4, 1, 1.0, W, None)
    add = (_k.KINDS["add"], 0, 4, 4, 1, 1.0, None, None)
    cat = (_k.KINDS["concat"], 0, 8, 8, 1, 1.0, None, None)
    with pytest.raises(ValueError, match="parents"):
        _k.InferencePlan([dense, add], np.float32)                 # a merge in a chain
    for parents, inputs, outputs in [([[-1], [0, 5]], [3], [1]),  # a later step
                                     ([[-2], [0, 0]], [3], [1]),   # no such input
                                     ([[-1], []], [3], [1]),       # no parent
                                     ([[-1], [0, -1]], [3], [1]),  # widths differ
                                     ([[-1], [0, 0]], [3], [1, 1]),   # an output twice
                                     ([[-1], [0, 0]], [3], [2]),
                                     ([[-1], [0, 0]], [0], [1]),
                                     ([[-1, -1], [0, 0]], [3], [1])]:
        with pytest.raises(ValueError):
            _k.InferencePlan([dense, add], np.float32, (), (), parents, inputs, outputs)
    with pytest.raises(ValueError, match="reads"):
        _k.InferencePlan([dense, cat], np.float32, (), (), [[-1], [0]], [3], [1])
    plan = _k.InferencePlan([dense, cat], np.float32, (), (), [[-1], [0, 0]], [3], [0, 1])
    X = np.ones((2, 3), np.float32)
    assert plan.predict(X, 1) is None                      # two outputs
    assert not plan.run(X, np.empty((2, 4), np.float32), 1)
    assert plan.predict_many(X, 1) is None                 # not a list
    assert plan.predict_many([X[:, :2]], 1) is None
    assert plan.predict_many([X.astype(np.float64)], 1) is None
    o1, o2 = np.empty((2, 4), np.float32), np.empty((2, 8), np.float32)
    assert not plan.run_many([X], [o1], 1)
    assert not plan.run_many([X], [o1, o2[:, :4]], 1)
    buf = np.empty(40, np.float32)
    assert not plan.run_many([X], [buf[:8].reshape(2, 4), buf[4:20].reshape(2, 8)], 1)
    assert not plan.run_keep(X, [], 1)
    assert plan.run_many([X], [o1, o2], 1)
    np.testing.assert_array_equal(o1, 0)
    np.testing.assert_array_equal(o2, 0)


def _layer_forward(model, xs):
    """model's evaluation-mode forward module by module, leaving each module its own arrays
    (for the backward that follows)."""
    model.eval()
    if isinstance(model, Model):
        keep = I.eval_forward_many
        I.eval_forward_many = lambda *a: None
        try:
            return as_list(model.forward(xs))
        finally:
            I.eval_forward_many = keep
    h = xs
    for layer in model:
        h = layer.forward(h)
    return [h]


def _one_call_forward(spy, model, xs):
    """model's evaluation-mode forward, asserting that it ran as one compiled call."""
    with spy(I, "_eval_forward_graph") as taken:
        model.eval()
        out = as_list(model.forward(xs))
    assert taken == [True]
    return out


def shared_graph(dtype):
    """Two inputs, a layer used twice, every merge, an output read by later nodes."""
    a, b = Input(6, name="a"), Input(6, name="b")
    shared = Dense(6, 8, "tanh", seed=1, dtype=dtype)
    ha, hb = shared(a), shared(b)
    m = Multiply()([ha, hb, Dense(6, 8, "gelu", seed=2, dtype=dtype)(a)])
    s = Add()([ha, m])
    c = Concatenate()([s, Dropout(0.4, mode="standard")(hb), a])
    o = Dense(22, 4, seed=3, dtype=dtype)(ReLU()(c))
    return Model([a, b], [Softmax()(o), s], dtype=dtype)


def _random_graph_without_maxout(dtype):
    """A random graph Model (tests/test_engine.py's builder) holding no Maxout."""
    for seed in range(100):
        model = _random_graph(np.random.default_rng(seed), dtype, [4, 6], 4)()
        if not any(type(m) is Maxout for m in model.modules()):
            return model
    raise AssertionError("no random graph without a Maxout")


def _backward_grads(model, gs):
    model.zero_grad()
    gx = model.backward(gs[0] if len(gs) == 1 else gs)
    return [np.array(g, copy=True) for g in as_list(gx)], \
        [np.array(p.grad, copy=True) for p in model.parameters()]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("build", ["containers", "nested", "graph", "maxout", "random"])
def test_eval_forward_in_one_call_keeps_what_backward_needs(dtype, build, spy):
    """The evaluation-mode forward of a Sequential with containers and of a graph Model runs
    as one call; the modules keep the arrays of their own forward (a Maxout's linear units and
    winners too), so a backward after it gives the layer path's gradients (inputs and
    parameters)."""
    def make():
        if build == "containers":
            return container_net(dtype)
        if build == "nested":
            return Sequential(Dense(5, 6, "tanh"), Sequential(Dense(6, 6, "relu"), Tanh()),
                              Dropout(0.5), Dense(6, 3), dtype=dtype, seed=2)
        if build == "graph":
            return shared_graph(dtype)
        if build == "maxout":   # a Maxout in a graph and in a Parallel branch
            return (two_input_graph(dtype) if dtype == np.float64 else
                    Sequential(Dense(5, 8, "relu"), Parallel(Maxout(8, 4, 3), Dense(8, 2)),
                               Maxout(6, 3, 2), dtype=dtype, seed=6))
        return _random_graph_without_maxout(dtype)
    a, b = make(), make()
    for p, q in zip(a.parameters(), b.parameters()):
        q.data[...] = p.data
    widths = a.input_widths if isinstance(a, Model) else [a[0].in_features]
    for n in (0, 1, 33):
        xs = [data(n, w, dtype, seed=n + i) for i, w in enumerate(widths)]
        arg = xs if isinstance(a, Model) else xs[0]
        ya = [np.array(y, copy=True) for y in _one_call_forward(spy, a, arg)]
        yb = _layer_forward(b, arg)
        assert len(ya) == len(yb)
        for u, v in zip(ya, yb):
            np.testing.assert_allclose(u, v, **tol(dtype))
        gs = [data(n, y.shape[1], dtype, seed=50 + i) for i, y in enumerate(ya)]
        (ga, pa), (gb, pb) = _backward_grads(a, gs), _backward_grads(b, gs)
        for u, v in zip(ga + pa, gb + pb):
            np.testing.assert_allclose(u, v, **tol(dtype))
    # the arrays are the network's, reused while the rows repeat
    xs = [data(9, w, dtype) for w in widths]
    arg = xs if isinstance(a, Model) else xs[0]
    first = _one_call_forward(spy, a, arg)
    again = _one_call_forward(spy, a, arg)
    assert all(u is v for u, v in zip(first, again))


def test_eval_forward_threads_and_fallbacks(parallel_always, split_always, spy):
    """Bitwise for 1-4 threads (a one-row request split over the threads too); a module in
    training mode and inputs that do not qualify take the layer path."""
    model = shared_graph(np.float32)
    xs = [data(300, 6, np.float32, seed=s) for s in (1, 2)]
    model.n_threads = 1
    ref = [np.array(y, copy=True) for y in _one_call_forward(spy, model, xs)]
    for t in (2, 3, 4):
        model.n_threads = t
        out = _one_call_forward(spy, model, xs)
        assert all(u.tobytes() == v.tobytes() for u, v in zip(out, ref))
    mx = two_input_graph(np.float32, width=100)     # a Maxout: its units split too
    for n in (1, 300):
        xs2 = [data(n, 7, np.float32), data(n, 5, np.float32)]
        mx.n_threads = 1
        ref = [np.array(y, copy=True) for y in _one_call_forward(spy, mx, xs2)]
        for t in (2, 4):
            mx.n_threads = t
            out = _one_call_forward(spy, mx, xs2)
            assert all(u.tobytes() == v.tobytes() for u, v in zip(out, ref)), (n, t)
    with spy(I, "_eval_forward_graph") as taken:
        net = container_net(np.float32)
        net.eval()
        net[1].module[1].train()                    # one module in training mode: its masks
        X = data(8, 6, np.float32)
        net.forward(X)
        assert net[1].module[1]._active             # its layer path drew a mask
        net.eval()
        Xf = np.asfortranarray(data(8, 6, np.float32))
        yf = np.array(net.forward(Xf), copy=True)
    assert taken == [False, False]
    np.testing.assert_allclose(yf, module_path(net, Xf)[0], **tol(np.float32))


def test_eval_forward_fed_its_own_output(spy):
    """A forward fed an array the one-call forward returned (its own, overwritten by the
    call) takes the layer path and gives the layer path's result."""
    net = Sequential(Dense(6, 6, "tanh"), Residual(Dense(6, 6, "tanh")), dtype=np.float64,
                     seed=4)
    net.eval()
    y = net.forward(data(5, 6, np.float64))
    y_copy = y.copy()
    with spy(I, "_eval_forward_graph") as taken:
        z = np.array(net.forward(y), copy=True)
    assert taken == [False]
    np.testing.assert_allclose(z, module_path(net, y_copy)[0], **tol(np.float64))
    model = shared_graph(np.float64)
    model.eval()
    outs = model.forward([data(4, 6, np.float64), data(4, 6, np.float64, seed=2)])
    a_in = np.ascontiguousarray(outs[1][:, :6])   # a copy: one call
    b_in = outs[1].reshape(-1)[:24].reshape(4, 6)  # C-contiguous, in the model's array
    b_copy = b_in.copy()
    with spy(I, "_eval_forward_graph") as taken:
        got = [np.array(o, copy=True) for o in model.forward([a_in, b_in])]
    assert taken == [False]
    for u, v in zip(got, module_path(model, [a_in, b_copy])):
        np.testing.assert_allclose(u, v, **tol(np.float64))


def test_run_many_rejects_bad_maxout_arrays():
    """run_many's kept maxout arrays: anything but writeable C-contiguous arrays of the step's
    shapes, apart from the rest, for a maxout step of a graph plan, computes nothing."""
    model = two_input_graph(np.float64)
    steps, checks, modules, graph = I._compile(model)[0][:4]
    plan = _k.InferencePlan(steps, np.float64, checks, modules, *graph)
    k = next(i for i, st in enumerate(steps) if st[0] == _k.KINDS["maxout"])
    n_lin, n_out = steps[k][3] * steps[k][4], steps[k][3]
    xs = [data(5, 7, np.float64), data(5, 5, np.float64)]
    outs = [np.full((5, w), -7.0) for w in plan.out_widths]
    z, arg = np.zeros((5, n_lin)), np.zeros((5, n_out), np.int32)
    other = next(i for i, st in enumerate(steps) if st[0] != _k.KINDS["maxout"])
    for bad in ({k: (z[:, :-1], arg)}, {k: (z, arg.astype(np.int64))},
                {k: (z.astype(np.float32), arg)}, {k: (np.asfortranarray(z), arg)},
                {other: (z, arg)}, {len(steps): (z, arg)}, {-1: (z, arg)}, {"0": (z, arg)},
                {k: (z, z.reshape(-1).view(np.int32)[:5 * n_out].reshape(5, n_out))},
                {k: (z[:4], arg[:4])}, [(z, arg)]):
        assert not plan.run_many(xs, outs, 1, bad)
    big = np.zeros(5 * max(7, n_lin))                  # z over an input's memory
    xs_in = [big[:35].reshape(5, 7), xs[1]]
    xs_in[0][...] = xs[0]
    assert not plan.run_many(xs_in, outs, 1, {k: (big[:5 * n_lin].reshape(5, n_lin), arg)})
    assert all(np.all(o == -7.0) for o in outs)
    z.setflags(write=False)
    assert not plan.run_many(xs, outs, 1, {k: (z, arg)})
    z = np.zeros((5, n_lin))
    assert plan.run_many(xs, outs, 1, {k: (z, arg)})
    ref = module_path(model, xs)
    for u, v in zip(outs, ref):
        np.testing.assert_allclose(u, v, **tol(np.float64))
    groups = z.reshape(5, n_out, -1)                 # the units of one output adjacent
    assert groups.shape[2] == next(m for m in model._layers if type(m) is Maxout).pieces
    np.testing.assert_array_equal(np.take_along_axis(groups, arg[..., None], 2)[..., 0],
                                  groups.max(axis=2))
    assert np.any(z != 0)
