"""Where two features meet: streamed data and divergence handling, graphs and the in-use guard,
shared layers and their state, the pre-activation after an evaluation-mode forward, a maxout fed
its own output, the estimators and the in-use guard, the CLI's saved notes, memmaps and
validation_split."""
import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import (Concatenate, Dense, Dropout, Input, Maxout, Model, Sequential, gradcheck,
                    training)
from fastnn.preprocessing import Normalization


def test_restore_after_divergence_on_a_generator_stream():
    X = np.ones((8, 3)) * 1e10
    y = np.zeros((8, 2))
    model = Sequential(Dense(3, 2, dtype=np.float64, seed=0))
    before = [p.data.copy() for p in model.parameters()]
    with pytest.warns(RuntimeWarning, match="restored") as rec:
        hist = training.fit(model, lambda: iter([(X, y)]), epochs=1, optimizer="sgd",
                            lr=1e300, verbose=0, on_divergence="restore", loss="squared")
    assert hist.diverged is not None
    assert rec[0].filename == __file__          # the warning points at the caller
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)


def _blocking_fit(model, fit, started, release):
    """Run ``fit`` in a thread whose first epoch waits until ``release`` is set."""
    class Wait(fastnn.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            started.set()
            release.wait(30)

    errors = []

    def run():
        try:
            fit(Wait())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    t = threading.Thread(target=run)
    t.start()
    assert started.wait(30)
    return t, errors


def test_graph_model_fit_is_exclusive_and_predict_waits_for_no_one():
    x = Input(3)
    model = Model(x, Dense(3, 2, seed=0)(x))
    X = np.zeros((16, 3), np.float32)
    y = np.zeros(16, int)
    started, release = threading.Event(), threading.Event()
    t, errors = _blocking_fit(model, lambda cb: model.fit(X, y, loss="cross_entropy", epochs=1,
                                                          verbose=0, callbacks=[cb]),
                              started, release)
    try:
        with pytest.raises(RuntimeError, match="in use by another thread"):
            model.predict(X)
        with pytest.raises(RuntimeError, match="in use by another thread"):
            model.fit(X, y, loss="cross_entropy", epochs=1, verbose=0)
    finally:
        release.set()
        t.join(30)
    assert not errors
    assert model.predict(X).shape == (16, 2)


def test_estimator_predict_while_it_fits_is_refused():
    from fastnn import MLPClassifier
    X = np.random.default_rng(0).standard_normal((64, 4))
    y = np.arange(64) % 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                # ConvergenceWarning after 3 iterations
        clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(X, y)
    started, release = threading.Event(), threading.Event()

    def fit(cb):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.set_params(warm_start=True)
            clf.fit(X, y, callbacks=[cb])
    t, errors = _blocking_fit(clf, fit, started, release)
    try:
        with pytest.raises(RuntimeError, match="in use by another thread"):
            clf.predict(X)
    finally:
        release.set()
        t.join(30)
    assert not errors
    assert clf.predict(X).shape == (64,)


@pytest.mark.parametrize("make", [lambda: Dropout(0.5, seed=1),
                                  lambda: Normalization().adapt(np.eye(3, dtype=np.float32))])
def test_a_layer_with_state_cannot_be_shared(make):
    a, b = Input(3), Input(3)
    layer = make()
    with pytest.raises(ValueError, match="holds state besides its parameters"):
        Model([a, b], Concatenate()([layer(a), layer(b)]))
    # one use is fine
    Model(a, layer(a))


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "silu"])
def test_gradcheck_in_eval_mode_with_preactivation_activations(act):
    rng = np.random.default_rng(0)
    model = Sequential(Dense(3, 5, activation=act, seed=0, dtype=np.float64),
                       Dense(5, 2, seed=1, dtype=np.float64))
    X, y = rng.standard_normal((6, 3)), rng.integers(0, 2, 6)
    assert gradcheck(model, X, y, "cross_entropy", mode="eval").passed
    model.eval()
    assert gradcheck(model, X, y, "cross_entropy").passed
    layer = model[0]
    layer.forward(X)                      # eval mode: no pre-activation kept
    assert layer._z is None
    g = np.ones((6, 5))
    layer.zero_grad()
    layer.backward(g)                     # recomputed from the cached input
    z = X @ layer.weight.data + layer.bias.data
    np.testing.assert_allclose(layer._z, z, rtol=1e-12)


def test_maxout_fed_its_own_output():
    m = Maxout(4, 4, pieces=3, seed=0, dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((5, 4))
    y1 = m.forward(x)
    y1_copy = y1.copy()
    y2 = m.forward(y1)
    assert not np.shares_memory(y1, y2)
    np.testing.assert_array_equal(m.linear._x, y1_copy)     # the input the backward uses
    ref = Maxout(4, 4, pieces=3, seed=0, dtype=np.float64)
    np.testing.assert_array_equal(y2, ref.forward(y1_copy))


def test_cli_refuses_names_too_long_to_save_before_training(tmp_path):
    n = 6000
    header = ",".join(f"feature_number_{i}" for i in range(n)) + ",target"
    rows = [",".join(f"{(i * 7 + j) % 5 / 4}" for j in range(n)) + f",{i % 2}"
            for i in range(10)]
    (tmp_path / "wide.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    env = dict(os.environ, PYTHONPATH=pkg)
    res = subprocess.run([sys.executable, "-m", "fastnn", "train", "--data", "wide.csv",
                          "--target", "target", "--save", "m.npz", "--epochs", "1"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert "--save" in res.stderr and "Traceback" not in res.stderr
    assert "epoch" not in res.stdout + res.stderr      # nothing was trained
    assert not (tmp_path / "m.npz").exists()


def test_memmap_with_validation_split(tmp_path):
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32,
                                  shape=(100, 4))
    X[:] = np.random.default_rng(0).standard_normal((100, 4))
    y = (X[:, 0] > 0).astype(int)
    model = Sequential(Dense(4, 2, seed=0))
    hist = model.fit(X, y, loss="cross_entropy", epochs=2, validation_split=0.2, verbose=0,
                     seed=0)
    assert "val_loss" in hist.history
