"""Memory follows the work, not the request.

* ``predict`` (Sequential, ``fastnn.training.predict``/``evaluate``, the scikit-learn estimators)
  converts its input batch by batch: a broadcast (zero-stride) view of 10^7 x 784, a Fortran
  array or a float64 array for a float32 model is never copied whole. Measured in a child process
  under an address-space limit (RLIMIT_AS) and with tracemalloc (numpy reports its allocations).
* A module keeps one work array per buffer, grown to the largest batch: serving many request
  sizes holds the largest request's buffers, not their sum.
* The loss keeps per-sample scratch only for training-sized batches, one per live thread.
"""
import gc
import os
import subprocess
import sys
import threading
import tracemalloc
import warnings
import weakref

import numpy as np
import pytest

import fastnn
from fastnn import (Activation, Dense, Dropout, Parallel, Residual, Sequential, Softmax,
                    Sparsemax)
from fastnn import losses, training
from fastnn.layers import Identity, ReLU, Tanh

linux_only = pytest.mark.skipif(not os.path.exists("/proc/self/status"),
                                reason="reads VmSize from /proc/self/status (Linux)")
no_asan = pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                             reason="AddressSanitizer reserves terabytes of address space")


def _child_env():
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "2"
    return env


# The child warms up (OpenMP team, work buffers), then limits its address space to what it has
# plus HEADROOM and predicts on a broadcast view: a whole copy of the view (n_rows x 784 float32,
# >= 1.2 GB) cannot be allocated, a batch can.
_CHILD = r"""
import re, resource, sys, warnings
import numpy as np
import fastnn

n_rows, entry, headroom = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
row = np.linspace(-1, 1, 784)[None, :]
row = row if entry == "MLPClassifier-float64" else row.astype(np.float32)
rng = np.random.default_rng(0)
if entry.startswith("MLPClassifier"):
    warnings.simplefilter("ignore")
    est = fastnn.MLPClassifier(hidden_layer_sizes=(8,), max_iter=1, random_state=0,
                               dtype=np.float32)
    est.fit(rng.standard_normal((50, 784)).astype(np.float32), np.arange(50) % 2)
    f = est.predict_proba
else:
    model = fastnn.Sequential(fastnn.Dense(784, 2, seed=0))
    f = model.predict if entry == "Sequential" else (lambda X: fastnn.training.predict(model, X))
X = np.broadcast_to(row, (n_rows, 784))
expected = f(np.repeat(row, 3000, axis=0))[0]          # warm-up
vm = int(re.search(r"VmSize:\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + headroom, vm + headroom))
out = f(X)
# every row as in the warm-up batch (to rounding: some BLAS kernels round a row by its place
# in the product)
assert out.shape[0] == n_rows and np.allclose(out, expected, rtol=1e-5, atol=1e-6), "rows differ"
print("ok")
"""


def _predict_under_limit(n_rows, entry, headroom):
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(n_rows), entry, str(headroom)],
                          capture_output=True, text=True, env=_child_env(), timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__))))
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@linux_only
@no_asan
@pytest.mark.parametrize("entry", ["Sequential", "training.predict", "MLPClassifier-float64"])
def test_predict_on_a_broadcast_view_under_an_address_space_limit(entry):
    # 300,000 x 784 float32 is 0.94 GB; the child may allocate 512 MiB
    _predict_under_limit(300_000, entry, 512 * 2**20)


@pytest.mark.slow
@linux_only
@no_asan
@pytest.mark.parametrize("entry", ["Sequential", "MLPClassifier-float64"])
def test_predict_on_a_10_million_row_broadcast_view_under_an_address_space_limit(entry):
    # 10^7 x 784 float32 is 29 GiB; the child may allocate 1 GiB (the output is 80-400 MB)
    _predict_under_limit(10_000_000, entry, 2**30)


# ---- tracemalloc: the peak of what numpy allocates during one call ---------------------------

def _peak_bytes(f):
    gc.collect()
    tracemalloc.start()
    try:
        result = f()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, result


def _net(dtype=np.float32):
    return Sequential(Dense(200, 16, "relu", seed=0), Dropout(0.2, seed=1),
                      Dense(16, 3, seed=2), dtype=dtype)


N, D = 60_000, 200   # a float32 copy of X would be 48 MB


def _inputs():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D), dtype=np.float32)
    return {
        "fortran": np.asfortranarray(X),
        "negative-stride": X[::-1],
        "column-slice": np.hstack([X, X])[:, ::2],
        "broadcast": np.broadcast_to(X[:1], (N, D)),
    }


@pytest.fixture(scope="module")
def inputs():
    return _inputs()


# the largest batch (1024 rows) of a conversion, of each float64 cast, and the layers' buffers
BATCH_ALLOWANCE = 4 * 1024 * D * 8 + (2 << 20)


@pytest.mark.parametrize("layout", ["fortran", "negative-stride", "column-slice", "broadcast"])
@pytest.mark.parametrize("entry", ["Sequential.predict", "predict_proba", "training.predict",
                                   "predict_classes", "evaluate"])
def test_predict_memory_follows_the_batch_not_X(inputs, layout, entry):
    X = inputs[layout]
    model = _net()
    y = np.arange(N) % 3
    model.loss = losses.CrossEntropyLoss()
    calls = {
        "Sequential.predict": lambda: model.predict(X),
        "predict_proba": lambda: model.predict_proba(X),
        "training.predict": lambda: training.predict(model, X),
        "predict_classes": lambda: training.predict_classes(model, X),
        "evaluate": lambda: model.evaluate(X, y),
    }
    calls[entry]()   # warm-up: the work buffers
    peak, _ = _peak_bytes(calls[entry])
    output = 2 * N * 3 * 8 + N * 8   # logits, probabilities, per-sample losses (float64)
    print(f"{entry} on {layout} X ({X.nbytes / 1e6:.0f} MB as an array): peak "
          f"{peak / 1e6:.1f} MB")
    assert peak < output + BATCH_ALLOWANCE, (peak, X.shape)


@pytest.mark.parametrize("estimator", ["classifier", "regressor"])
@pytest.mark.parametrize("layout", ["float64", "fortran", "int", "broadcast"])
def test_estimator_predict_memory_follows_the_batch(estimator, layout):
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N // 2, D)).astype(np.float32)   # a float32 copy is 24 MB
    Xin = {"float64": X.astype(np.float64), "fortran": np.asfortranarray(X),
           "int": (X * 10).astype(np.int64), "broadcast": np.broadcast_to(X[:1], X.shape)}[layout]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if estimator == "classifier":
            est = fastnn.MLPClassifier(hidden_layer_sizes=(8,), max_iter=1, random_state=0,
                                       dtype=np.float32).fit(X[:300], np.arange(300) % 3)
            f = est.predict_proba
        else:
            est = fastnn.MLPRegressor(hidden_layer_sizes=(8,), max_iter=1, random_state=0,
                                      dtype=np.float32).fit(X[:300], X[:300, 0])
            f = est.predict
    f(Xin[:2000])
    peak, out = _peak_bytes(lambda: f(Xin))
    reference = f(np.ascontiguousarray(Xin, dtype=np.float32))
    np.testing.assert_array_equal(out, reference)
    print(f"{estimator} on {layout}: peak {peak / 1e6:.1f} MB")
    assert peak < 3 * X.shape[0] * 3 * 8 + BATCH_ALLOWANCE, peak


# ---- the same numbers as converting X whole ------------------------------------------------

def _predict_whole_then_batches(model, X, batch_size):
    """The conversion predict made before it went batch by batch: X whole, then slices."""
    Xc = np.ascontiguousarray(X)
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        return np.concatenate([model.forward(Xc[s:s + batch_size]).copy()
                               for s in range(0, Xc.shape[0], batch_size)])
    finally:
        for m, mode in zip(model.modules(), modes):
            m.training = mode


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_size", [None, 7, 1024, 5000])
@pytest.mark.parametrize("layout", ["C", "fortran", "negative-stride", "column-slice",
                                    "broadcast"])
def test_batchwise_conversion_is_bitwise_identical(dtype, batch_size, layout):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2500, 30)).astype(dtype)
    X = {"C": X, "fortran": np.asfortranarray(X), "negative-stride": X[::-1],
         "column-slice": np.hstack([X, X])[:, ::2],
         "broadcast": np.broadcast_to(X[3:4], X.shape)}[layout]
    model = Sequential(Dense(30, 64, "tanh", seed=0), Dropout(0.3, seed=1),
                       Dense(64, 5, "relu", seed=2), Dense(5, 4, seed=3), dtype=dtype)
    expected = _predict_whole_then_batches(model, X, batch_size or 1024)
    np.testing.assert_array_equal(model.predict(X, batch_size=batch_size), expected)
    model.loss = losses.CrossEntropyLoss()
    y = np.arange(X.shape[0]) % 4
    assert model.evaluate(X, y, batch_size=batch_size or 1024)["loss"] == \
        training._metrics_from_output(
            model.loss, expected, y)["loss"]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_estimator_batchwise_errors_match_the_one_shot_check():
    """NaN, infinity and float32 overflow in a late batch raise scikit-learn's own messages."""
    sk_validation = pytest.importorskip("sklearn.utils.validation")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5000, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = fastnn.MLPClassifier(hidden_layer_sizes=(4,), max_iter=1, random_state=0,
                                   dtype=np.float32).fit(X[:100].astype(np.float32),
                                                         np.arange(100) % 2)
    for value in (np.nan, np.inf, -np.inf, 1e300):
        bad = X.copy()
        bad[4321, 2] = value
        with pytest.raises(ValueError) as expected:
            sk_validation.check_array(bad, dtype=np.float32, order="C", estimator=est,
                                      input_name="X")
        with pytest.raises(ValueError) as got:
            est.predict(bad)
        assert str(got.value) == str(expected.value)
    with pytest.raises(ValueError, match="X has 5 features, but MLPClassifier is expecting 6"):
        est.predict(X[:, :5])
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        est.predict(X[0])
    with pytest.raises(ValueError, match="Found array with 0 sample"):
        est.predict(X[:0])


def test_estimator_fitted_on_a_dataframe_still_checks_feature_names():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3)).astype(np.float32)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = fastnn.MLPRegressor(hidden_layer_sizes=(4,), max_iter=1, random_state=0,
                                  dtype=np.float32).fit(df, X[:, 0])
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        est.predict(X)
    with pytest.raises(ValueError, match="feature names"):
        est.predict(df[["c", "b", "a"]])


def test_predict_lets_go_of_a_large_X():
    """After predict, the layers' cached input is not a view that keeps the caller's X alive."""
    model = _net()
    X = np.random.default_rng(0).standard_normal((5000, D)).astype(np.float32)
    model.predict(X)
    ref = weakref.ref(X)
    del X
    gc.collect()
    assert ref() is None


# ---- work buffers: one per tag, grown to the largest batch ---------------------------------

def _held(model):
    return sum(m._buffer_nbytes() for m in model.modules())


def test_serving_many_request_sizes_holds_the_largest_request_only():
    rng = np.random.default_rng(0)
    model = Sequential(Dense(16, 4096, seed=0))
    X = rng.standard_normal((1024, 16)).astype(np.float32)
    sizes = [1024 - 33 * i for i in range(31)]      # 31 request sizes, 1024 to 34 rows
    for n in sizes:
        model.predict(X[:n])
    largest = 1024 * 4096 * 4
    print(f"31 request sizes: work buffers hold {_held(model) / 1e6:.1f} MB")
    assert _held(model) <= largest + 4096
    # and serving them again allocates only the outputs (one at a time here)
    def serve():
        for n in sizes[::-1]:
            model.predict(X[:n])

    peak, _ = _peak_bytes(serve)
    assert peak < largest + (1 << 20)


def test_training_with_changing_batch_sizes_holds_the_largest_batch():
    rng = np.random.default_rng(0)
    model = Sequential(Dense(20, 256, "relu", seed=0), Dropout(0.1, seed=1),
                       Dense(256, 256, "tanh", seed=2), Dense(256, 4, seed=3))
    X = rng.standard_normal((3000, 20)).astype(np.float32)
    y = rng.integers(0, 4, 3000)
    for bs in (512, 7, 100, 333, 64, 500, 511, 1):
        model.fit(X[:1500], y[:1500], batch_size=bs, epochs=1, verbose=0, seed=0,
                  validation_data=(X[1500:], y[1500:]))
    held = _held(model)
    one_batch = 1024 * (256 + 256 + 4) * 4 * 3 + 512 * (20 + 256 + 256 + 4) * 4 * 2
    print(f"work buffers after 8 batch sizes: {held / 1e6:.2f} MB")
    assert held < one_batch


def test_a_steady_training_step_reuses_its_buffers():
    rng = np.random.default_rng(0)
    layer = Dense(5, 4, "relu", seed=0, dtype=np.float64)
    y1 = layer.forward(rng.standard_normal((8, 5)))
    layer.forward(rng.standard_normal((100, 5)))     # a larger batch grows the array
    y2 = layer.forward(rng.standard_normal((8, 5)))
    y3 = layer.forward(rng.standard_normal((8, 5)))
    assert y2 is y3 and y2.flags.c_contiguous and y2.shape == (8, 4)
    assert not np.shares_memory(y1, y2)   # y1 lives in the first, smaller array
    g = rng.standard_normal((8, 4))
    gx1 = layer.backward(g)
    gx2 = layer.backward(g)
    assert gx1 is gx2


def _modules_to_feed_their_own_output():
    f64 = np.float64
    return {
        "Dense": lambda: Dense(6, 6, "tanh", seed=0, dtype=f64),
        "ReLU": ReLU, "Tanh": Tanh, "Activation": lambda: Activation("sigmoid"),
        "Softmax": Softmax, "Sparsemax": Sparsemax,
        "Dropout-train": lambda: Dropout(0.4, seed=3),
        "Dropout-standard-eval": lambda: Dropout(0.4, mode="standard", seed=3).eval(),
        "Residual": lambda: Residual(Dense(6, 6, "tanh", seed=0, dtype=f64)),
        "Parallel-sum": lambda: Parallel(Identity(), Dense(6, 6, seed=0, dtype=f64), merge="sum"),
        "Parallel-concat": lambda: Sequential(Parallel(Identity(), Dense(6, 6, seed=0, dtype=f64)),
                                              Dense(12, 6, seed=1, dtype=f64)),
    }


@pytest.mark.parametrize("name", list(_modules_to_feed_their_own_output()))
def test_a_module_fed_a_slice_of_its_own_output(name):
    """Batches share one array per buffer, so a module's input can lie in the array it is about
    to write (its own earlier output, shifted): it must get a separate array, never overwrite
    what it reads."""
    make = _modules_to_feed_their_own_output()[name]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6))
    a, b = make(), make()   # the same calls in the same order (dropout counts its calls)
    for rows in (slice(5, 25), slice(0, 40), slice(20, 40), slice(1, 3)):
        y = a.forward(X)
        np.testing.assert_array_equal(y, b.forward(X))
        expected = b.forward(np.array(y[rows]))   # an input outside b's arrays
        np.testing.assert_array_equal(a.forward(y[rows]), expected)


# ---- the loss's per-sample scratch ---------------------------------------------------------

def test_loss_keeps_no_large_scratch_after_an_evaluation():
    rng = np.random.default_rng(0)
    model = Sequential(Dense(4, 3, seed=0))
    X = rng.standard_normal((300_000, 4)).astype(np.float32)
    y = rng.integers(0, 3, 300_000)
    model.fit(X[:64], y[:64], epochs=1, batch_size=32, verbose=0)
    model.evaluate(X, y)
    rows = getattr(model.loss._scratch, "rows", None)
    assert rows is None or rows.nbytes <= 8 * 65536
    # a training batch's buffer is kept (a step allocates nothing)
    z = np.zeros((32, 3), np.float32)
    g = np.empty_like(z)
    model.loss.loss_and_grad(z, y[:32], grad_out=g)
    kept = model.loss._scratch.rows
    model.loss.loss_and_grad(z, y[:32], grad_out=g)
    assert model.loss._scratch.rows is kept


def test_loss_scratch_goes_with_its_thread():
    loss = losses.CrossEntropyLoss()
    z = np.zeros((1000, 3))
    y = np.zeros(1000, np.intp)
    held = []

    def work():
        loss.loss(z, y)
        held.append(weakref.ref(loss._scratch.rows))

    threads = [threading.Thread(target=work) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.collect()
    assert len(held) == 20 and all(r() is None for r in held)
