"""Pickles and copies hold weights, configuration and optimizer state, never scratch.

Work buffers, the input and output a layer caches for backward, and the loss's per-thread
scratch are rebuilt by the next call; a pickle (joblib and Dask send fitted models between
processes), a ``copy.deepcopy`` and ``model.copy()`` leave them out, so their size does not depend
on what was run before, and the copy predicts and trains on exactly like the original.
"""
import copy
import io
import pickle
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import (Activation, Dense, Dropout, Parallel, Residual, Sequential, Softmax,
                    Sparsemax)
from fastnn.layers import Identity

SLACK = 300  # bytes: counters and seeds pickle to a few bytes more once they are set


def _size(obj) -> int:
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _networks():
    f32 = np.float32
    return {
        "mlp": lambda: Sequential(Dense(20, 64, "relu", seed=0), Dropout(0.2, seed=1),
                                  Dense(64, 32, "tanh", seed=2), Dense(32, 3, seed=3)),
        "activations": lambda: Sequential(Dense(20, 32, seed=0), Activation("sigmoid"),
                                          Dense(32, 3, seed=1), Softmax(), dtype=f32),
        "sparsemax": lambda: Sequential(Dense(20, 16, "relu", seed=0), Dense(16, 3, seed=1),
                                        Sparsemax()),
        "graph": lambda: Sequential(
            Dense(20, 16, "relu", seed=0),
            Residual(Sequential(Dense(16, 16, "tanh", seed=1), Dropout(0.1, seed=2))),
            Parallel(Dense(16, 8, seed=3), Identity(), Sequential(Dense(16, 4, seed=4))),
            Dense(28, 3, seed=5)),
    }


def _data(n=3000):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 20)).astype(np.float32)
    return X, rng.integers(0, 3, n)


def _loss_for(name):
    return "squared" if name in ("activations", "sparsemax") else "cross_entropy"


def _targets(name, y):
    return np.eye(3, dtype=np.float32)[y] if _loss_for(name) == "squared" else y


def _no_scratch(model):
    for m in model.modules():
        assert m._buffers == {}, m
        for name in m._forward_cache:
            assert getattr(m, name) is None, (m, name)


@pytest.mark.parametrize("name", list(_networks()))
def test_predict_forward_and_backward_add_nothing_to_a_pickle(name):
    X, _ = _data()
    model = _networks()[name]()
    fresh = _size(model)
    model.predict(X)
    assert abs(_size(model) - fresh) <= SLACK
    model.predict(X[:5])
    assert abs(_size(model) - fresh) <= SLACK
    out = model.forward(X)                 # training mode, a full batch cached for backward
    model.backward(np.ones_like(out))
    assert abs(_size(model) - fresh) <= SLACK, (_size(model), fresh)
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model), model.copy()):
        _no_scratch(clone)


@pytest.mark.parametrize("name", list(_networks()))
def test_fit_adds_only_the_optimizer_state(name):
    X, y = _data()
    t = _targets(name, y)
    model = _networks()[name]()
    fresh = _size(model)
    model.fit(X, t, loss=_loss_for(name), epochs=1, batch_size=64, verbose=0, seed=0,
              validation_data=(X[:500], t[:500]))
    after_fit = _size(model)
    state = sum(a.nbytes for s in model.optimizer.state_dict()["state"].values()
                for a in s.values() if isinstance(a, np.ndarray))
    assert state > 0
    assert after_fit <= fresh + state + 4096, (after_fit, fresh, state)
    model.predict(X)
    model.evaluate(X, t)
    model.predict_proba(X[:7])
    assert abs(_size(model) - after_fit) <= SLACK
    model.fit(X, t, epochs=1, batch_size=100, verbose=0, seed=1)   # continued training
    assert abs(_size(model) - after_fit) <= SLACK


@pytest.mark.parametrize("name", list(_networks()))
def test_an_unpickled_model_predicts_and_trains_on_identically(name):
    X, y = _data()
    t = _targets(name, y)
    model = _networks()[name]()
    model.fit(X, t, loss=_loss_for(name), epochs=1, batch_size=64, verbose=0, seed=0)
    model.predict(X)
    clones = [pickle.loads(pickle.dumps(model)), copy.deepcopy(model)]
    expected = model.predict(X)
    model.fit(X, t, epochs=2, batch_size=64, verbose=0, seed=5)
    for clone in clones:
        np.testing.assert_array_equal(clone.predict(X), expected)
        clone.fit(X, t, epochs=2, batch_size=64, verbose=0, seed=5)
        for (n, p), (_, q) in zip(model.named_parameters(), clone.named_parameters()):
            np.testing.assert_array_equal(p.data, q.data, err_msg=n)
        np.testing.assert_array_equal(clone.predict(X), model.predict(X))


def test_a_pickle_taken_between_forward_and_backward_holds_no_batch():
    X, _ = _data()
    model = _networks()["mlp"]()
    fresh = _size(model)
    model.forward(X)                   # 3000 rows of inputs and outputs cached
    assert abs(_size(model) - fresh) <= SLACK


def test_loss_scratch_is_not_pickled():
    loss = fastnn.losses.CrossEntropyLoss()
    z = np.zeros((4000, 3))
    y = np.zeros(4000, np.intp)
    fresh = _size(loss)
    loss.loss(z, y)
    assert _size(loss) == fresh
    clone = copy.deepcopy(loss)
    assert clone.loss(z, y) == loss.loss(z, y)


@pytest.mark.parametrize("estimator", ["MLPClassifier", "MLPRegressor"])
def test_estimator_pickles_and_joblib_dumps_do_not_grow_after_predict(estimator):
    joblib = pytest.importorskip("joblib")
    pytest.importorskip("sklearn")
    X, y = _data(5000)
    cls = getattr(fastnn, estimator)
    target = y if estimator == "MLPClassifier" else X[:, 0].astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = cls(hidden_layer_sizes=(64,), max_iter=2, random_state=0, dtype=np.float32)
        est.fit(X, target)

    def dumped():
        buf = io.BytesIO()
        joblib.dump(est, buf)
        return len(buf.getvalue())

    after_fit, joblib_after_fit = _size(est), dumped()
    predictions = est.predict(X)
    if estimator == "MLPClassifier":
        est.predict_proba(X)
    est.score(X, target)
    assert abs(_size(est) - after_fit) <= SLACK
    assert abs(dumped() - joblib_after_fit) <= SLACK
    clone = pickle.loads(pickle.dumps(est))
    _no_scratch(clone.model_)
    np.testing.assert_array_equal(clone.predict(X), predictions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.partial_fit(X, target)
        clone.partial_fit(X, target)
    np.testing.assert_array_equal(clone.predict(X), est.predict(X))
