"""Maxout hidden layers in the scikit-learn estimators: activation="maxout" with
maxout_pieces linear units per unit (coefs_ hold the linear units)."""
import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from fastnn import MLPClassifier, MLPRegressor
from fastnn.layers import Dense, Maxout


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # ConvergenceWarning of short fits
        return est.fit(X, y)


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_regressor_gradient_matches_finite_differences(solver):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((13, 4))
    # one target: scikit-learn's squared loss averages over the targets, its gradient does not
    y = (X[:, 0] * X[:, 1] + np.abs(X[:, 2])).reshape(-1, 1)
    reg = _fit(MLPRegressor(hidden_layer_sizes=(5, 3), activation=["maxout", "tanh"],
                            maxout_pieces=3, alpha=0.01, max_iter=3, solver=solver,
                            dtype="float64", random_state=0), X, y)
    assert [c.shape for c in reg.coefs_] == [(4, 15), (5, 3), (3, 1)]
    net = reg._network()
    assert [type(m) for m in net][:2] == [Maxout, Dense]
    _, grads = reg._loss_grad(net, X, y, None)
    grads = [g.copy() for g in grads]
    params = reg.coefs_ + reg.intercepts_
    eps = 1e-6
    for p, g in zip(params, grads):
        fd = np.empty_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            up, _ = reg._loss_grad(net, X, y, None)
            p[i] = old - eps
            down, _ = reg._loss_grad(net, X, y, None)
            p[i] = old
            fd[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-8)


def test_classifier_trains_and_predicts_like_its_network(dtype):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 2))
    y = (np.hypot(X[:, 0], X[:, 1]) > 1.1).astype(int)
    clf = _fit(MLPClassifier((8,), activation="maxout", maxout_pieces=4, max_iter=200,
                             learning_rate_init=0.02, random_state=0,
                             dtype=np.dtype(dtype).name), X, y)
    assert clf.coefs_[0].shape == (2, 32) and clf.coefs_[0].dtype == dtype
    assert clf.score(X, y) > 0.8   # a circle: not linearly separable
    z = clf.model_.predict(X.astype(dtype))
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[(z[:, 0] > 0).astype(int)])
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    twin = clone(clf)
    assert twin.get_params()["maxout_pieces"] == 4 and twin.activation == "maxout"


def test_one_piece_is_a_linear_layer():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((20, 3))
    y = X @ [1.0, 2.0, -1.0]
    a = _fit(MLPRegressor(hidden_layer_sizes=(4,), activation="maxout", maxout_pieces=1,
                          max_iter=4, random_state=0, dtype="float64"), X, y)
    b = _fit(MLPRegressor(hidden_layer_sizes=(4,), activation="identity", max_iter=4,
                          random_state=0, dtype="float64"), X, y)
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-12)


def test_warm_start_keeps_the_shapes_and_a_changed_pieces_count_is_refused():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((20, 3))
    y = np.arange(20) % 2
    clf = _fit(MLPClassifier((4,), activation="maxout", max_iter=2, warm_start=True,
                             random_state=0), X, y)
    _fit(clf, X, y)
    assert clf.coefs_[0].shape == (3, 8)
    clf.set_params(maxout_pieces=3)
    with pytest.raises(ValueError, match="layers"):
        _fit(clf, X, y)


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_bad_pieces_are_refused(bad):
    with pytest.raises(ValueError, match="maxout_pieces"):
        MLPClassifier((4,), activation="maxout", maxout_pieces=bad).fit(
            np.zeros((4, 2)), [0, 1, 0, 1])
