"""fastnn.MLPClassifier / MLPRegressor: scikit-learn's estimator checks, meta-estimators, and what
they add over scikit-learn's MLP (dropout, per-layer activations, sparsemax, multi-label, L1,
optimizers, validation data, dtype, threads)."""
import contextlib
import re
import json
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone
from sklearn.datasets import load_iris, make_multilabel_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastnn
from fastnn import optim
from fastnn.callbacks import Callback
from fastnn.layers import Dense, Dropout
from fastnn.sklearn import MLPClassifier, MLPRegressor

# Small networks and few epochs keep the ~110 checks per estimator at a few seconds.
FAST = {"hidden_layer_sizes": (16,), "max_iter": 30, "learning_rate_init": 0.02,
        "batch_size": 32, "n_iter_no_change": 5}
CHECKED = [
    MLPClassifier(**FAST),
    # the additions over scikit-learn's MLP go through the same checks
    MLPClassifier((16, 8), activation=["relu", "tanh"], dropout=[0.1, 0.0], output="sparsemax",
                  solver="sgd", momentum=0.9, nesterovs_momentum=True, learning_rate_init=0.05,
                  l1=1e-4, l2=1e-4, max_iter=30, batch_size=32, n_iter_no_change=5,
                  n_threads=1),
    MLPClassifier(solver="lbfgs", hidden_layer_sizes=(8,), max_iter=50),
    MLPRegressor(**FAST),
]


def _expected_failed_checks(estimator):
    if isinstance(estimator, MLPClassifier) and estimator.output == "sparsemax":
        dropout = ("dropout draws other masks when samples are repeated or removed, so "
                   "weighting a sample is not the same as repeating it (scikit-learn's own "
                   "MLP runs this check with solver='lbfgs' only)")
        return {"check_classifiers_multilabel_output_format_predict_proba":
                "multi-label probabilities are a sparsemax: exactly 0 outside the predicted "
                "label set (and 1 for a single label), while the check requires 0 < p < 1 "
                "strictly",
                "check_sample_weight_equivalence_on_dense_data": dropout,
                "check_sample_weight_equivalence_on_sparse_data": dropout}
    return {}


@parametrize_with_checks(CHECKED, expected_failed_checks=_expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X, y


@pytest.fixture(scope="module")
def iris_scaled(iris):
    X, y = iris
    return StandardScaler().fit_transform(X), y


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


# --------------------------------------------------------------------------------------------
# meta-estimators
# --------------------------------------------------------------------------------------------

def test_pipeline_grid_random_search_cross_val(iris):
    X, y = iris
    pipe = make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=40,
                                                         learning_rate_init=0.02,
                                                         random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(pipe, X, y, cv=3)
        assert scores.shape == (3,) and scores.mean() > 0.85
        gs = GridSearchCV(pipe, {"mlpclassifier__activation": ["relu", "tanh"],
                                 "mlpclassifier__dropout": [0.0, 0.2]}, cv=3)
        gs.fit(X, y)
        assert len(gs.cv_results_["params"]) == 4
        assert gs.best_score_ > 0.85
        assert gs.score(X, y) > 0.85
        rs = RandomizedSearchCV(pipe, {"mlpclassifier__learning_rate_init": [0.003, 0.01, 0.03],
                                       "mlpclassifier__hidden_layer_sizes": [(8,), (16, 8)]},
                                n_iter=3, cv=3, random_state=0)
        rs.fit(X, y)
        assert len(rs.cv_results_["params"]) == 3
        assert rs.best_estimator_.predict(X).shape == (150,)


def test_regressor_in_pipeline_and_search():
    X, y = make_regression(120, 4, noise=1.0, random_state=0)
    y = (y - y.mean()) / y.std()
    pipe = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(16,), max_iter=60,
                                                        learning_rate_init=0.02,
                                                        random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gs = GridSearchCV(pipe, {"mlpregressor__solver": ["adam", "rmsprop", "lbfgs"]},
                          cv=2).fit(X, y)
    assert gs.best_score_ > 0.8


# --------------------------------------------------------------------------------------------
# labels, outputs, losses
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("labels", [np.array(["setosa", "versicolor", "virginica"]),
                                    np.array([-7, 5, 40])])
def test_arbitrary_labels(iris_scaled, labels):
    X, y = iris_scaled
    yl = labels[y]
    with _quiet():
        clf = MLPClassifier((16,), max_iter=50, learning_rate_init=0.02, random_state=0).fit(X, yl)
    np.testing.assert_array_equal(clf.classes_, np.sort(labels))
    pred = clf.predict(X)
    assert pred.dtype == yl.dtype and set(pred) <= set(labels)
    assert clf.score(X, yl) > 0.9
    unknown = np.array([99 if labels.dtype.kind == "i" else "unknown"], dtype=yl.dtype)
    with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
        clf.partial_fit(X[:5], np.concatenate([yl[:4], unknown]))


def test_binary_has_two_probability_columns(iris_scaled):
    X, y = iris_scaled
    keep = y < 2
    with _quiet():
        clf = MLPClassifier((8,), max_iter=20, learning_rate_init=0.02, random_state=0).fit(
            X[keep], y[keep])
    p = clf.predict_proba(X[keep])
    assert p.shape == (int(keep.sum()), 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    # as scikit-learn: one logistic output unit; output="softmax" gives one unit per class
    assert clf.out_activation_ == "logistic" and clf.coefs_[-1].shape == (8, 1)
    with _quiet():
        soft = MLPClassifier((8,), max_iter=20, output="softmax", random_state=0).fit(
            X[keep], y[keep])
    assert soft.out_activation_ == "softmax" and soft.coefs_[-1].shape == (8, 2)
    assert soft.predict_proba(X[keep]).shape == (int(keep.sum()), 2)


def test_softmax_vs_sparsemax_output(iris_scaled):
    X, y = iris_scaled
    with _quiet():
        soft = MLPClassifier((16,), max_iter=60, learning_rate_init=0.02, random_state=0).fit(X, y)
        sparse = MLPClassifier((16,), max_iter=60, learning_rate_init=0.02, random_state=0,
                               output="sparsemax").fit(X, y)
    ps, pp = soft.predict_proba(X), sparse.predict_proba(X)
    assert ps.dtype == pp.dtype == np.float64
    assert (ps > 0).all()
    assert sparse.out_activation_ == "sparsemax" and soft.out_activation_ == "softmax"
    assert (pp == 0).mean() > 0.3          # sparse: many exact zeros
    np.testing.assert_allclose(pp.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(sparse.predict(X), np.argmax(pp, axis=1))
    assert sparse.score(X, y) > 0.9
    # predict_proba is the output map of the network's logits
    z = sparse.model_.predict(X)
    np.testing.assert_allclose(pp, fastnn.functional.sparsemax(z.astype(np.float64)))
    # training loss and output map are independent choices
    with _quiet():
        mixed = MLPClassifier((8,), max_iter=5, loss="cross_entropy", output="sparsemax",
                              random_state=0).fit(X, y)
    assert mixed.out_activation_ == "softmax" and (mixed.predict_proba(X) == 0).any()
    with _quiet():
        via_loss = MLPClassifier((8,), max_iter=5, loss="sparsemax", random_state=0).fit(X, y)
    assert (via_loss.predict_proba(X) == 0).any()


def test_multilabel_sparsemax_support():
    X, Y = make_multilabel_classification(300, 10, n_classes=5, n_labels=2,
                                          allow_unlabeled=True, random_state=0)
    X = StandardScaler().fit_transform(X)
    empty = ~Y.any(axis=1)
    assert empty.any()   # rows without labels are skipped, not an error
    with _quiet():
        clf = MLPClassifier((32,), max_iter=80, learning_rate_init=0.01, output="sparsemax",
                            random_state=0).fit(X, Y)
    np.testing.assert_array_equal(clf.classes_, np.arange(5))
    P = clf.predict(X)
    proba = clf.predict_proba(X)
    assert P.shape == Y.shape and P.dtype == Y.dtype
    np.testing.assert_array_equal(P, (proba > 0).astype(Y.dtype))   # the sparsemax support
    assert P.any(axis=1).all()                                        # never empty
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert clf.out_activation_ == "sparsemax"
    labelled = ~empty
    hamming = np.mean(P[labelled] != Y[labelled])
    majority = np.mean((Y[labelled].mean(axis=0) > 0.5)[None] != Y[labelled])   # 0.44
    assert hamming < 0.3 < majority, (hamming, majority)
    assert (P.sum(axis=1) < 5).mean() > 0.5     # label sets, not "everything"
    # lists of lists work too, and give the same model
    with _quiet():
        clf2 = MLPClassifier((32,), max_iter=80, learning_rate_init=0.01, output="sparsemax",
                             random_state=0).fit(X, Y.tolist())
    np.testing.assert_array_equal(clf2.predict(X), P)
    with pytest.raises(ValueError, match="sparsemax"):
        MLPClassifier(output="softmax", max_iter=2).fit(X, Y)
    with pytest.raises(ValueError, match="sparsemax output"):
        MLPClassifier(loss="sparsemax", output="softmax", max_iter=2).fit(X, Y)
    # the default is scikit-learn's: logistic outputs, labels where p > 0.5
    with _quiet():
        logistic = MLPClassifier((32,), max_iter=80, random_state=0).fit(X, Y)
    assert logistic.out_activation_ == "logistic"
    np.testing.assert_array_equal(logistic.predict(X),
                                  (logistic.predict_proba(X) > 0.5).astype(int))


# --------------------------------------------------------------------------------------------
# architecture, optimizers, regularization
# --------------------------------------------------------------------------------------------

def test_per_layer_activations_and_dropout(iris_scaled):
    X, y = iris_scaled
    with _quiet():
        clf = MLPClassifier((12, 10, 8), activation=["tanh", "logistic", "relu"],
                            dropout=[0.5, 0.0, 0.2], max_iter=3, random_state=0).fit(X, y)
    dense = [m for m in clf.model_ if isinstance(m, Dense)]
    drops = [m for m in clf.model_ if isinstance(m, Dropout)]
    assert [d.activation for d in dense] == ["tanh", "sigmoid", "relu", "identity"]
    assert [d.out_features for d in dense] == [12, 10, 8, 3]
    assert [d.p for d in drops] == [0.5, 0.2]
    assert [w.shape for w in clf.coefs_] == [(4, 12), (12, 10), (10, 8), (8, 3)]
    assert [b.shape for b in clf.intercepts_] == [(12,), (10,), (8,), (3,)]
    assert clf.n_layers_ == 5
    # dropout is off at prediction: deterministic
    np.testing.assert_array_equal(clf.predict_proba(X), clf.predict_proba(X))
    with pytest.raises(ValueError, match="hidden layers"):
        MLPClassifier((4, 4), activation=["relu"]).fit(X, y)
    with pytest.raises(ValueError, match="dropout"):
        MLPClassifier((4,), dropout=1.0).fit(X, y)
    with _quiet():
        linear = MLPClassifier((), max_iter=3, random_state=0).fit(X, y)   # softmax regression
    assert len(linear.coefs_) == 1


@pytest.mark.parametrize("solver, extra", [
    ("sgd", {"momentum": 0.9, "nesterovs_momentum": True, "learning_rate": "invscaling",
             "power_t": 0.1}),
    ("adagrad", {"decay": 1e-4}),
    ("rmsprop", {"optimizer_params": {"momentum": 0.5, "alpha": 0.9}}),
    ("adam", {"beta_1": 0.8, "beta_2": 0.99}),
    ("lbfgs", {}),
])
def test_solvers(iris_scaled, solver, extra):
    X, y = iris_scaled
    with _quiet():
        clf = MLPClassifier((16,), solver=solver, learning_rate_init=0.02, l2=1e-4,
                            max_iter=60, batch_size=16, random_state=0, **extra).fit(X, y)
    if solver in ("adagrad", "rmsprop"):   # fastnn's optimizers behind the solver
        g = clf._optimizer.opt.param_groups[0]
        assert g["lr"] == 0.02 and g["weight_decay"] == 0.0   # l2 enters the gradient
        assert type(clf._optimizer.opt) is (optim.Adagrad if solver == "adagrad"
                                            else optim.RMSprop)
        if solver == "rmsprop":
            assert g["momentum"] == 0.5 and g["alpha"] == 0.9
        else:
            assert g["decay"] == 1e-4
    assert clf.score(X, y) > 0.85
    assert hasattr(clf, "partial_fit") == (solver != "lbfgs")


def test_deprecated_names_warn_and_apply(iris_scaled):
    X, y = iris_scaled
    new = MLPClassifier((8,), solver="sgd", learning_rate_init=0.05, nesterovs_momentum=False,
                        max_iter=5, random_state=0)
    old = MLPClassifier((8,), optimizer="sgd", lr=0.05, nesterov=False, max_iter=5,
                        random_state=0)
    with _quiet():
        new.fit(X, y)
        with pytest.warns(FutureWarning, match="`lr` is deprecated.*learning_rate_init"):
            old.fit(X, y)
    np.testing.assert_array_equal(old.coefs_[0], new.coefs_[0])
    with _quiet(), pytest.warns(FutureWarning, match="betas"):
        b = MLPClassifier((8,), betas=(0.5, 0.9), max_iter=3, random_state=0).fit(X, y)
    assert (b._optimizer.beta_1, b._optimizer.beta_2) == (0.5, 0.9)
    with pytest.raises(ValueError, match="hidden_layer_sizes=\\(8,\\)"):
        MLPRegressor((8,)).fit(X, X[:, 0])   # scikit-learn's MLPRegressor takes loss first


def test_l1_sparsifies_weights(iris_scaled):
    X, y = iris_scaled
    with _quiet():
        plain = MLPClassifier((32,), solver="adagrad", learning_rate_init=0.05, max_iter=40,
                              random_state=0).fit(X, y)
        sparse = MLPClassifier((32,), solver="adagrad", learning_rate_init=0.05, max_iter=40,
                               batch_size=16, optimizer_params={"l1": 0.01,
                                                                "l1_proximal": True},
                               random_state=0).fit(X, y)
    zeros = lambda est: np.mean(np.concatenate([w.ravel() for w in est.coefs_]) == 0)
    assert zeros(plain) == 0.0 and zeros(sparse) > 0.5
    assert sparse.score(X, y) > 0.9
    # l1 (any solver but lbfgs) shrinks the weights
    with _quiet():
        shrunk = MLPClassifier((32,), solver="sgd", learning_rate_init=0.05, max_iter=40,
                               l1=0.01, random_state=0).fit(X, y)
        base = MLPClassifier((32,), solver="sgd", learning_rate_init=0.05, max_iter=40,
                             random_state=0).fit(X, y)
    assert np.abs(shrunk.coefs_[0]).sum() < 0.8 * np.abs(base.coefs_[0]).sum()
    with pytest.raises(ValueError, match="l1"):
        MLPClassifier(solver="lbfgs", l1=0.1).fit(X, y)


def test_invalid_parameters_raise_at_fit_not_init(iris_scaled):
    X, y = iris_scaled
    for kw in [{"solver": "newton"}, {"activation": "mish"}, {"lr": -1.0},
               {"learning_rate_init": 0.0}, {"batch_size": 0}, {"max_iter": 0},
               {"dtype": "float16"}, {"n_threads": 0}, {"output": "sigmoid"},
               {"loss": "hinge"}, {"hidden_layer_sizes": (0,)}, {"validation_fraction": 1.5},
               {"l1": -1.0}, {"alpha": -1.0}, {"momentum": 1.5}, {"beta_1": 1.0},
               {"learning_rate": "optimal"}, {"optimizer_params": {"eps": 1e-6}}]:
        est = MLPClassifier(**kw)               # no validation in __init__
        assert est.get_params()[next(iter(kw))] == next(iter(kw.values()))
        with pytest.raises(ValueError), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            est.fit(X, y)
    # scikit-learn's messages
    with pytest.raises(ValueError, match=re.escape(
            "The 'solver' parameter of MLPClassifier must be a str among")):
        MLPClassifier(solver="newton").fit(X, y)
    with pytest.raises(ValueError, match=re.escape("hidden_layer_sizes must be > 0, got [0]")):
        MLPClassifier(hidden_layer_sizes=(0,)).fit(X, y)


# --------------------------------------------------------------------------------------------
# validation data, early stopping, curves
# --------------------------------------------------------------------------------------------

def test_validation_data_and_curves(iris_scaled):
    X, y = iris_scaled
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(X))
    tr, va = idx[:100], idx[100:]
    with _quiet():
        clf = MLPClassifier((16,), max_iter=25, learning_rate_init=0.02, n_iter_no_change=100,
                            random_state=0).fit(X[tr], y[tr], validation_data=(X[va], y[va]))
    assert clf.n_iter_ == 25 == len(clf.loss_curve_) == len(clf.validation_scores_)
    # the best epoch's weights are kept: the score on the validation data is the best score
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.score(X[va], y[va]) == pytest.approx(clf.best_validation_score_)
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert clf.t_ == 25 * 100
    # string labels in the validation data are compared with the training labels
    names = np.array(["a", "b", "c"])
    with _quiet():
        clf = MLPClassifier((8,), max_iter=5, random_state=0).fit(
            X[tr], names[y[tr]], validation_data=(X[va], names[y[va]]))
    assert len(clf.validation_scores_) == 5
    with pytest.raises(ValueError, match="not seen"):
        MLPClassifier((8,), max_iter=2).fit(X[tr], names[y[tr]],
                                            validation_data=(X[va], np.array(["z"] * len(va))))
    # without validation data there is no validation curve
    with _quiet():
        clf = MLPClassifier((8,), max_iter=3, random_state=0).fit(X, y)
    assert clf.validation_scores_ is None and clf.best_loss_ == min(clf.loss_curve_)


def test_regressor_validation_scores_are_r2():
    X, y = make_regression(200, 5, noise=5.0, random_state=1)
    y = (y - y.mean()) / y.std()
    with _quiet():
        reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=30, learning_rate_init=0.01,
                           random_state=0).fit(
            X[:150], y[:150], validation_data=(X[150:], y[150:]))
    assert reg.validation_scores_[-1] == pytest.approx(reg.score(X[150:], y[150:]), rel=1e-6)
    assert reg.score(X, y) > 0.9


def test_early_stopping_on_score_and_convergence_warning(iris_scaled):
    X, y = iris_scaled
    clf = MLPClassifier((32,), learning_rate_init=0.05, max_iter=300, early_stopping=True,
                        validation_fraction=0.2, n_iter_no_change=5, tol=0.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf.fit(X, y)
    assert clf.n_iter_ < 300 and clf.best_loss_ is None
    assert len(clf.validation_scores_) == clf.n_iter_
    # stopped n_iter_no_change + 1 epochs after the best validation accuracy
    best = int(np.argmax(clf.validation_scores_))
    assert clf.best_validation_score_ == clf.validation_scores_[best]
    assert clf.n_iter_ - 1 - best >= clf.n_iter_no_change
    # reaching max_iter before converging warns, as scikit-learn does
    with pytest.warns(ConvergenceWarning, match=re.escape("Maximum iterations (3) reached")):
        MLPClassifier((8,), max_iter=3, random_state=0).fit(X, y)


# --------------------------------------------------------------------------------------------
# dtype, seeds, incremental training, pickling, threads
# --------------------------------------------------------------------------------------------

def test_dtype(iris_scaled):
    X, y = iris_scaled
    with _quiet():
        assert MLPClassifier((4,), max_iter=2).fit(X, y).model_.dtype == np.float64
        assert MLPClassifier((4,), max_iter=2).fit(X.astype(np.float32), y).model_.dtype \
            == np.float32
        assert MLPClassifier((4,), max_iter=2).fit((X * 10).astype(int), y).model_.dtype \
            == np.float64
        clf = MLPClassifier((4,), max_iter=2, dtype="float32").fit(X, y)
        reg = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, dtype=np.float32).fit(
            X, X[:, 0])
    assert clf.model_.dtype == np.float32 and reg.model_.dtype == np.float32
    assert all(w.dtype == np.float32 for w in clf.coefs_ + clf.intercepts_)
    # any input dtype is accepted; the outputs are in the network's dtype (as scikit-learn)
    assert clf.predict_proba(X).dtype == np.float32
    assert clf.predict_proba(X.astype(np.float32)).dtype == np.float32
    assert reg.predict(X).dtype == np.float32


def _bf16(a):
    """a rounded to bfloat16 (to nearest, ties to even), as float64."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def _bf16_forward(est, X):
    """NumPy reference of a relu network's output with bfloat16 products: every layer's input
    and weights rounded to bfloat16, sums and biases in float64."""
    h = np.asarray(X, dtype=np.float32)
    for i, (W, b) in enumerate(zip(est.coefs_, est.intercepts_)):
        h = _bf16(h) @ _bf16(W) + b.astype(np.float64)
        if i < len(est.coefs_) - 1:
            h = np.maximum(h, 0.0)
        h = h.astype(np.float32)
    return h.astype(np.float64)


def test_inference_precision_bfloat16(iris_scaled):
    X, y = iris_scaled
    X = np.ascontiguousarray(np.tile(X, (8, 1)) * 3.7, dtype=np.float32)  # 1,200 rows
    y = np.tile(y, 8)
    kw = {"hidden_layer_sizes": (64, 32), "max_iter": 20, "random_state": 0,
          "dtype": "float32", "early_stopping": True}
    with _quiet():
        exact = MLPClassifier(**kw).fit(X, y)
        fast = MLPClassifier(inference_precision="bfloat16", **kw).fit(X, y)
    # fit is unchanged: the same weights and validation scores (in float32)
    assert fast.validation_scores_ == exact.validation_scores_
    for a, b in zip(fast.coefs_, exact.coefs_):
        np.testing.assert_array_equal(a, b)
    z = fast.model_.predict(X, precision="bfloat16")
    ref = _bf16_forward(fast, X)
    scale = np.abs(ref).max(axis=1, keepdims=True)
    assert np.all(np.abs(z - ref) <= 1e-2 * scale)
    p_fast, p_exact = fast.predict_proba(X), exact.predict_proba(X)
    e = np.exp(ref - ref.max(axis=1, keepdims=True))
    np.testing.assert_allclose(p_fast, e / e.sum(axis=1, keepdims=True), atol=2e-2)
    assert p_fast.dtype == np.float32 and not np.array_equal(p_fast, p_exact)
    assert np.abs(p_fast - p_exact).max() < 5e-2
    assert np.mean(fast.predict(X) == exact.predict(X)) > 0.95
    # set_params switches it on a fitted estimator; clone keeps it
    fast.set_params(inference_precision=None)
    np.testing.assert_array_equal(fast.predict_proba(X), p_exact)
    assert clone(MLPClassifier(inference_precision="bfloat16")).inference_precision == "bfloat16"
    # the same for a regressor, and through a list input (the validated path)
    with _quiet():
        reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=20, random_state=0,
                           dtype="float32", inference_precision="bfloat16").fit(X, X[:, 0])
    out = reg.predict(X)
    ref = _bf16_forward(reg, X)[:, 0]
    assert np.all(np.abs(out - ref) <= 1e-2 * np.abs(ref).max())
    np.testing.assert_array_equal(reg.predict(X[:5].tolist()), out[:5])


def test_inference_precision_errors(iris_scaled):
    X, y = iris_scaled
    with _quiet():
        clf = MLPClassifier((4,), max_iter=2, inference_precision="bfloat16").fit(X, y)
    assert clf.model_.dtype == np.float64
    with pytest.raises(ValueError, match="inference_precision='bfloat16' does not apply.*"
                                         "float32"):
        clf.predict(X)
    with pytest.raises(ValueError, match="inference_precision"):
        MLPClassifier((4,), max_iter=2, inference_precision="float16").fit(X, y)
    clf.set_params(inference_precision="float32")   # not this network's dtype
    with pytest.raises(ValueError, match="inference_precision='float32' does not apply: a "
                                         "float64 network computes in float64"):
        clf.predict(X)
    # the network's own dtype is the exact path
    clf.set_params(inference_precision="float64")
    np.testing.assert_array_equal(clf.predict_proba(X),
                                  clf.set_params(inference_precision=None).predict_proba(X))


def test_random_state(iris_scaled):
    X, y = iris_scaled
    kw = {"hidden_layer_sizes": (8,), "max_iter": 5, "dropout": 0.2}
    with _quiet():
        a = MLPClassifier(random_state=3, **kw).fit(X, y).predict_proba(X)
        b = MLPClassifier(random_state=3, **kw).fit(X, y).predict_proba(X)
        c = MLPClassifier(random_state=4, **kw).fit(X, y).predict_proba(X)
        d = MLPClassifier(random_state=np.random.RandomState(3), **kw).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert d.shape == a.shape


def test_partial_fit_and_warm_start(iris_scaled):
    X, y = iris_scaled
    clf = MLPClassifier((16,), learning_rate_init=0.02, random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X, y)
    losses = []
    for _ in range(15):
        clf.partial_fit(X, y, classes=[0, 1, 2])
        losses.append(clf.loss_curve_[-1])
    # scikit-learn's counters: n_iter_ is the last call's epochs, t_ all samples seen
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 15 and clf.t_ == 15 * 150
    assert losses[-1] < losses[0]
    # only a subset of the classes in one call is fine
    clf.partial_fit(X[y == 0], y[y == 0])
    assert len(clf.loss_curve_) == 16
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(X[:, :3], y)
    # warm_start continues from the weights; without it fit starts over
    with _quiet():
        ws = MLPClassifier((16,), max_iter=4, warm_start=True, random_state=0).fit(X, y)
        w = ws.coefs_[0].copy()
        ws.fit(X, y)
        assert ws.n_iter_ == 4 and len(ws.loss_curve_) == 8 and ws.t_ == 8 * 150
        cold = MLPClassifier((16,), max_iter=4, random_state=0).fit(X, y)
        np.testing.assert_array_equal(cold.coefs_[0], w)
        cold.fit(X, y)
    np.testing.assert_array_equal(cold.coefs_[0], w)
    assert len(cold.loss_curve_) == 4
    # regressor partial_fit
    reg = MLPRegressor(hidden_layer_sizes=(8,), random_state=0)
    for _ in range(3):
        reg.partial_fit(X, X[:, 0])
    assert len(reg.loss_curve_) == 3 and reg.predict(X).shape == (150,)


def test_pickle_continues_identically(iris_scaled):
    X, y = iris_scaled
    with _quiet():
        clf = MLPClassifier((16,), dropout=0.2, max_iter=5, random_state=0).fit(X, y)
    twin = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(twin.predict_proba(X), clf.predict_proba(X))
    clf.partial_fit(X, y)
    twin.partial_fit(X, y)        # optimizer state (Adam moments) and dropout counters survive
    np.testing.assert_array_equal(twin.predict_proba(X), clf.predict_proba(X))


def test_clone_and_params_verbatim():
    acts = ["relu", "tanh"]
    est = MLPClassifier((4, 4), activation=acts, optimizer_params={"eps": 1e-6}, dtype="float32")
    params = est.get_params()
    assert params["activation"] is acts
    c = clone(est)
    assert c.get_params()["activation"] == acts and c.get_params()["dtype"] == "float32"
    est.set_params(lr=0.5, output="sparsemax")
    assert est.lr == 0.5 and est.output == "sparsemax"


def test_regressor_targets_shapes():
    X, y = make_regression(80, 3, n_targets=2, noise=0.1, random_state=0)
    y = y / y.std(axis=0)
    with _quiet():
        multi = MLPRegressor(hidden_layer_sizes=(16,), max_iter=100, learning_rate_init=0.02,
                             random_state=0).fit(X, y)
        col = MLPRegressor(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(X, y[:, :1])
        flat = MLPRegressor(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(X, y[:, 0])
    assert multi.predict(X).shape == (80, 2) and multi.n_outputs_ == 2
    assert multi.score(X, y) > 0.9
    assert col.predict(X).shape == (80,)     # scikit-learn's: one target gives 1-D
    assert flat.predict(X).shape == (80,)


class _RecordThreads(Callback):
    def __init__(self):
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(fastnn.parallel.thread_info())


def test_n_threads_limits_openmp_and_blas_during_fit(iris_scaled):
    X, y = iris_scaled
    rec = _RecordThreads()
    with _quiet():
        clf = MLPClassifier((8,), max_iter=2, n_threads=1, random_state=0).fit(
            X, y, callbacks=[rec])
    assert [(s["openmp"], s["blas"]) for s in rec.seen] == [(1, 1), (1, 1)]
    assert clf.model_.n_threads == 1
    # the limit is lifted afterwards
    after = fastnn.parallel.thread_info()
    assert after["openmp"] == fastnn._threads.resolve_n_threads(None)


def test_feature_names_from_dataframe(iris_scaled):
    pd = pytest.importorskip("pandas")
    X, y = iris_scaled
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    with _quiet():
        clf = MLPClassifier((4,), max_iter=2, random_state=0).fit(df, y)
    np.testing.assert_array_equal(clf.feature_names_in_, ["a", "b", "c", "d"])
    assert clf.n_features_in_ == 4


def test_fastnn_imports_without_sklearn():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "import fastnn, json\n"
            "try:\n    fastnn.MLPClassifier\n    msg = ''\n"
            "except ImportError as e:\n    msg = str(e)\n"
            "print(json.dumps({'msg': msg, 'mods': sorted(m for m in sys.modules "
            "if m.startswith('sklearn') and sys.modules[m] is not None)}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(__import__("pathlib").Path(fastnn.__file__)
                                             .parent.parent))
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert "pip install" in res["msg"] and "scikit-learn" in res["msg"]
    assert res["mods"] == []
    assert fastnn.MLPClassifier is MLPClassifier and fastnn.MLPRegressor is MLPRegressor
    assert "MLPClassifier" in dir(fastnn)
