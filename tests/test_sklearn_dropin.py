"""fastnn.MLPClassifier / MLPRegressor as drop-ins for scikit-learn's: the same parameters,
defaults, validation messages, fitted attributes, printed lines and warnings, and - from the
same random_state, which gives the same initial weights and batch order - the same fitted
weights to rounding, for every solver (the computations run in fastnn's kernels, the order of
floating-point operations differs, so equality is up to a relative 1e-9 or so in float64)."""
import inspect
import re
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", minversion="1.7")  # sample_weight, loss="poisson"

from sklearn.datasets import make_multilabel_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402

from fastnn.datasets import load_digits  # noqa: E402
from fastnn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

PAIRS = [(MLPClassifier, SkClassifier), (MLPRegressor, SkRegressor)]


@pytest.fixture(scope="module", autouse=True)
def scikit_learns_blas():
    """fastnn's products on the BLAS scikit-learn's NumPy uses (its OpenBLAS), where there is
    one: oneMKL rounds products differently in the last bits, which 60 L-BFGS iterations with
    line searches amplify past the tolerances here. The arithmetic compared is fastnn's own."""
    from fastnn._kernels import _blas_loader
    before = _blas_loader.current()
    choice = _blas_loader.choice()
    if before["blas"] == "mkl":
        try:
            _blas_loader.use_blas("numpy")
        except RuntimeError:
            pass
    yield
    _blas_loader.use_blas(choice)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(dtype=np.float64)
    return X[:300] / 16.0, y[:300]


def _fit_both(fn_cls, sk_cls, X, y, sample_weight=None, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = fn_cls(**params).fit(X, y, sample_weight=sample_weight)
        b = sk_cls(**params).fit(X, y, sample_weight=sample_weight)
    return a, b


def _assert_same_fit(a, b, rtol=1e-7, atol=1e-9):
    assert len(a.coefs_) == len(b.coefs_)
    for wa, wb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert wa.shape == wb.shape
        np.testing.assert_allclose(wa, wb, rtol=rtol, atol=atol)
    assert a.n_iter_ == b.n_iter_ and a.t_ == b.t_
    assert a.loss_ == pytest.approx(b.loss_, rel=rtol, abs=atol)
    for name in ("loss_curve_", "validation_scores_"):
        va, vb = getattr(a, name, None), getattr(b, name, None)
        assert (va is None) == (vb is None), name
        if va is not None:
            np.testing.assert_allclose(va, vb, rtol=rtol, atol=atol, err_msg=name)
    assert a.out_activation_ == b.out_activation_ and a.n_outputs_ == b.n_outputs_
    assert a.n_layers_ == b.n_layers_


# --------------------------------------------------------------------------------------------
# the same signature, defaults and messages
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn_cls, sk_cls", PAIRS)
def test_every_parameter_with_the_same_default(fn_cls, sk_cls):
    ours = inspect.signature(fn_cls).parameters
    theirs = inspect.signature(sk_cls).parameters
    for name, p in theirs.items():
        assert name in ours, name
        assert ours[name].default == p.default, name
        assert ours[name].kind == p.kind, name
    # scikit-learn's parameters come first, in scikit-learn's order
    assert list(ours)[:len(theirs)] == list(theirs)


BAD = [("hidden_layer_sizes", "a"), ("activation", "mish"), ("solver", "newton"),
       ("alpha", -1.0), ("batch_size", 0), ("learning_rate", "optimal"),
       ("learning_rate_init", 0.0), ("power_t", -1.0), ("max_iter", 0), ("shuffle", "yes"),
       ("random_state", "x"), ("tol", -1.0), ("verbose", "loud"), ("warm_start", 1.5),
       ("momentum", 1.5), ("nesterovs_momentum", "no"), ("early_stopping", "no"),
       ("validation_fraction", 1.0), ("beta_1", 1.0), ("beta_2", -0.1), ("epsilon", 0.0),
       ("n_iter_no_change", 0), ("max_fun", 0)]


@pytest.mark.parametrize("fn_cls, sk_cls", PAIRS)
@pytest.mark.parametrize("name, value", BAD)
def test_the_same_validation_messages(fn_cls, sk_cls, name, value, digits):
    X, y = digits
    messages = []
    for cls in (fn_cls, sk_cls):
        with pytest.raises(ValueError) as info:
            cls(**{name: value}).fit(X[:50], y[:50])
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_hidden_layer_sizes_message(digits):
    X, y = digits
    msgs = []
    for cls in (MLPClassifier, SkClassifier):
        with pytest.raises(ValueError) as info:
            cls(hidden_layer_sizes=(4, 0)).fit(X[:50], y[:50])
        msgs.append(str(info.value))
    assert msgs[0] == msgs[1] == "hidden_layer_sizes must be > 0, got [4, 0]."


def test_partial_fit_unavailable_for_lbfgs_and_early_stopping(digits):
    X, y = digits
    for cls in (MLPClassifier, SkClassifier):
        assert not hasattr(cls(solver="lbfgs"), "partial_fit")
        with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
            cls(early_stopping=True).partial_fit(X, y, classes=np.arange(10))
        with pytest.raises(ValueError, match="classes must be passed on the first call"):
            cls().partial_fit(X, y)


# --------------------------------------------------------------------------------------------
# the same fits
# --------------------------------------------------------------------------------------------

SOLVERS = [
    dict(solver="lbfgs", max_iter=40),
    dict(solver="lbfgs", max_iter=200, max_fun=30, activation="tanh"),
    dict(solver="sgd", max_iter=8, batch_size=300, momentum=0.0),          # full batch
    dict(solver="sgd", max_iter=8, learning_rate="invscaling", learning_rate_init=0.3,
         power_t=0.3),
    dict(solver="sgd", max_iter=30, learning_rate="adaptive", learning_rate_init=0.2,
         n_iter_no_change=2, tol=0.05, nesterovs_momentum=False, activation="logistic"),
    dict(solver="adam", max_iter=8, alpha=1.0, beta_1=0.8, beta_2=0.99, epsilon=1e-6,
         activation="identity"),
    dict(solver="adam", max_iter=30, early_stopping=True, validation_fraction=0.2,
         n_iter_no_change=3, learning_rate_init=0.01),
    dict(solver="adam", max_iter=8, shuffle=False, batch_size=64, hidden_layer_sizes=(8, 6)),
]


@pytest.mark.parametrize("params", SOLVERS, ids=lambda p: "-".join(
    f"{k}={v}" for k, v in p.items() if k in ("solver", "learning_rate", "early_stopping",
                                                "batch_size", "max_fun", "shuffle")))
def test_classifier_matches_sklearn(digits, params):
    X, y = digits
    params = {"hidden_layer_sizes": (12,), "random_state": 0, **params}
    a, b = _fit_both(MLPClassifier, SkClassifier, X, y, **params)
    # L-BFGS's line searches amplify the last-bit differences of the loss over its iterations
    tol = dict(rtol=1e-4, atol=1e-6) if params["solver"] == "lbfgs" else {}
    _assert_same_fit(a, b, **tol)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), **(tol or dict(
        rtol=1e-7, atol=1e-9)))
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    np.testing.assert_array_equal(a.classes_, b.classes_)
    for name in ("best_loss_", "best_validation_score_"):
        va, vb = getattr(a, name, None), getattr(b, name, None)
        assert va == vb if vb is None else va == pytest.approx(vb, rel=1e-7)


@pytest.mark.parametrize("cls_pair, target, loss", [
    (PAIRS[0], "multiclass", None), (PAIRS[0], "binary", None), (PAIRS[0], "multilabel", None),
    (PAIRS[1], "2-targets", "squared_error"), (PAIRS[1], "1-target", "poisson")])
@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
def test_loss_and_gradient_equal_sklearns(digits, cls_pair, target, loss, activation):
    """The objective L-BFGS minimizes: fastnn's value and gradient on the same weights are
    scikit-learn's to rounding, with and without sample weights."""
    X, y = digits
    y = {"multiclass": y, "binary": y % 2, "multilabel": np.stack([y % 2, y > 4], axis=1),
         "2-targets": X[:, 20:22], "1-target": X[:, 30]}[target]
    kw = {} if loss is None else {"loss": loss}
    a, b = _fit_both(*cls_pair, X, y, hidden_layer_sizes=(7, 5), activation=activation,
                     solver="lbfgs", max_iter=1, alpha=0.3, random_state=0, **kw)
    theta = np.concatenate([w.ravel() for w in b.coefs_ + b.intercepts_])
    theta = theta + np.random.default_rng(0).normal(0, 0.3, theta.shape)
    Y = b._label_binarizer.transform(y) if hasattr(b, "_label_binarizer") else \
        y.reshape(len(y), -1)
    sw = np.random.default_rng(1).uniform(0.5, 2.0, len(X))
    for weights in (None, sw):
        ours = a._loss_grad_lbfgs(theta, X, Y, weights)
        buffers = [[X] + [None] * 3, [None] * 3, [None] * 3, [None] * 3]
        theirs = b._loss_grad_lbfgs(theta.copy(), X, Y.astype(float), weights, *buffers)
        assert ours[0] == pytest.approx(theirs[0], rel=1e-12)
        np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("params", [dict(solver="lbfgs", max_iter=60),
                                    dict(solver="sgd", max_iter=10, learning_rate_init=0.01),
                                    dict(solver="adam", max_iter=10, early_stopping=True),
                                    dict(solver="lbfgs", max_iter=60, loss="poisson"),
                                    dict(solver="adam", max_iter=10, loss="poisson")])
def test_regressor_matches_sklearn(digits, params):
    X, _ = digits
    Y = np.stack([X[:, 20:30].sum(axis=1), X[:, 40] * 3.0], axis=1)
    for y in (Y, Y[:, 0]):
        a, b = _fit_both(MLPRegressor, SkRegressor, X, y, hidden_layer_sizes=(10,),
                         random_state=1, **params)
        tol = dict(rtol=1e-4, atol=1e-6) if params["solver"] == "lbfgs" else \
            dict(rtol=1e-7, atol=1e-9)
        _assert_same_fit(a, b, **tol)
        np.testing.assert_allclose(a.predict(X), b.predict(X), **tol)
        assert a.score(X, y) == pytest.approx(b.score(X, y), rel=tol["rtol"])


@pytest.mark.parametrize("solver", ["lbfgs", "sgd", "adam"])
def test_binary_and_multilabel_match_sklearn(solver):
    X, Y = make_multilabel_classification(200, 10, n_classes=4, random_state=0)
    for y in (Y, Y[:, 0], np.where(Y[:, 1] == 1, "yes", "no")):
        a, b = _fit_both(MLPClassifier, SkClassifier, X, y, hidden_layer_sizes=(8,),
                         solver=solver, max_iter=20, random_state=0)
        _assert_same_fit(a, b)
        np.testing.assert_array_equal(a.predict(X), b.predict(X))
        np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=1e-7,
                                   atol=1e-9)


@pytest.mark.parametrize("solver", ["lbfgs", "sgd", "adam"])
def test_sample_weight_matches_sklearn(digits, solver):
    X, y = digits
    sw = np.random.default_rng(0).uniform(0.0, 3.0, len(y))
    sw[:20] = 0.0
    a, b = _fit_both(MLPClassifier, SkClassifier, X, y, sample_weight=sw,
                     hidden_layer_sizes=(12,), solver=solver, max_iter=15, random_state=0,
                     early_stopping=solver == "adam")
    _assert_same_fit(a, b)
    # integer weights act as repeated samples (full batch, no shuffling: the same sums)
    rep = np.array([1, 2, 0, 3] * 75)
    kw = dict(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=30, random_state=0, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        w = MLPClassifier(**kw).fit(X, y, sample_weight=rep)
        r = MLPClassifier(**kw).fit(np.repeat(X, rep, axis=0), np.repeat(y, rep))
    np.testing.assert_allclose(w.coefs_[0], r.coefs_[0], rtol=1e-6, atol=1e-8)


def test_partial_fit_and_warm_start_match_sklearn(digits):
    X, y = digits
    a = MLPClassifier((10,), solver="sgd", random_state=0, learning_rate="invscaling")
    b = SkClassifier((10,), solver="sgd", random_state=0, learning_rate="invscaling")
    for i in range(4):
        part = slice(75 * i, 75 * (i + 1))
        kw = {"classes": np.arange(10)} if i == 0 else {}
        a.partial_fit(X[part], y[part], **kw)
        b.partial_fit(X[part], y[part], **kw)
    _assert_same_fit(a, b)
    assert a._optimizer.learning_rate == pytest.approx(b._optimizer.learning_rate)
    a = MLPRegressor(hidden_layer_sizes=(5,), warm_start=True, max_iter=5, random_state=0)
    b = SkRegressor(hidden_layer_sizes=(5,), warm_start=True, max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(2):
            a.fit(X, X[:, 30])
            b.fit(X, X[:, 30])
    _assert_same_fit(a, b)


def test_float32_training_and_outputs(digits):
    X, y = digits
    X32 = X.astype(np.float32)
    a, b = _fit_both(MLPClassifier, SkClassifier, X32, y, hidden_layer_sizes=(12,),
                     solver="adam", max_iter=5, random_state=0)
    assert all(w.dtype == np.float32 for w in a.coefs_ + a.intercepts_)
    assert a.predict_proba(X32).dtype == np.float32 == b.predict_proba(X32).dtype
    _assert_same_fit(a, b, rtol=2e-4, atol=2e-5)


# --------------------------------------------------------------------------------------------
# what the user sees: attributes, printed lines, warnings
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params", [dict(solver="adam"), dict(solver="adam", early_stopping=True),
                                    dict(solver="lbfgs")])
def test_the_same_public_attributes(digits, params):
    X, y = digits
    a, b = _fit_both(MLPClassifier, SkClassifier, X, y, hidden_layer_sizes=(4,), max_iter=3,
                     random_state=0, **params)
    public = lambda est: {k for k in vars(est) if k.endswith("_") and not k.startswith("_")}
    assert public(b) <= public(a) | {n for n in dir(a) if n.endswith("_")}


def test_verbose_prints_sklearns_lines(digits, capsys):
    X, y = digits
    outs = []
    for cls in (MLPClassifier, SkClassifier):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            cls((8,), max_iter=4, verbose=True, early_stopping=True, random_state=0,
                solver="sgd", learning_rate="adaptive", n_iter_no_change=1, tol=0.5).fit(X, y)
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]
    assert re.match(r"Iteration 1, loss = \d+\.\d{8}\nValidation score: ", outs[0])


def test_the_same_convergence_warnings(digits):
    X, y = digits
    for params in (dict(solver="adam", max_iter=2), dict(solver="lbfgs", max_iter=2)):
        msgs = []
        for cls in (MLPClassifier, SkClassifier):
            with pytest.warns(ConvergenceWarning) as rec:
                cls((8,), random_state=0, **params).fit(X, y)
            msgs.append([str(w.message) for w in rec if w.category is ConvergenceWarning])
        assert msgs[0] == msgs[1]


# --------------------------------------------------------------------------------------------
# alpha is scikit-learn's alpha; l2 is not
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_alpha_on_digits_agrees_with_sklearn():
    """alpha=1 on the digits: fastnn's accuracy is scikit-learn's (l2=1 is another, batch-size
    times stronger penalty and does not learn)."""
    X, y = load_digits(dtype=np.float64)
    X /= 16.0
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    kw = dict(hidden_layer_sizes=(32,), max_iter=40, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(alpha=1.0, **kw).fit(Xtr, ytr)
        theirs = SkClassifier(alpha=1.0, **kw).fit(Xtr, ytr)
        l2 = MLPClassifier(alpha=0.0, l2=1.0, **kw).fit(Xtr, ytr)
    acc = [est.score(Xte, yte) for est in (ours, theirs, l2)]
    assert acc[1] > 0.9
    assert abs(acc[0] - acc[1]) <= 0.01, acc     # same weights to rounding: same accuracy
    assert acc[2] < 0.5, acc


def test_callbacks_see_the_network_and_can_stop(digits):
    from fastnn.callbacks import Callback

    class StopAfterTwo(Callback):
        def __init__(self):
            super().__init__()
            self.logs = []

        def on_epoch_end(self, epoch, logs=None):
            self.logs.append(dict(logs))
            assert self.trainer.model is est.model_
            if epoch == 1:
                self.trainer.stop_training = True

    X, y = digits
    cb = StopAfterTwo()
    est = MLPClassifier((8,), max_iter=50, random_state=0)
    est.fit(X, y, validation_data=(X[:50], y[:50]), callbacks=[cb])
    assert est.n_iter_ == 2 and len(cb.logs) == 2
    assert cb.logs[-1]["loss"] == est.loss_curve_[-1]
    assert cb.logs[-1]["val_score"] == est.validation_scores_[-1]


def test_warm_start_after_set_params_uses_the_new_activation(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(6,), max_iter=3, warm_start=True, random_state=0)
    a, b = _fit_both(MLPClassifier, SkClassifier, X, y, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for est in (a, b):
            est.set_params(activation="tanh").fit(X, y)
    assert [m.activation for m in a.model_ if hasattr(m, "activation")][0] == "tanh"
    _assert_same_fit(a, b)


@pytest.mark.parametrize("extra", [dict(output="sparsemax"), dict(l2=0.3), dict(l1=0.05),
                                   dict(output="softmax", l2=0.1)])
def test_extras_gradient_against_finite_differences(digits, extra):
    """fastnn's additions to the objective (sparsemax loss, l1, l2) in float64: the gradient
    the solvers use against central differences of the loss, with sample weights."""
    X, y = digits
    X, y = X[:40], y[:40] % 3
    solver = "sgd" if "l1" in extra else "lbfgs"
    est = MLPClassifier((5,), activation="tanh", solver=solver, max_iter=1, alpha=0.2,
                        random_state=0, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    Y = est._encode_columns(est._label_binarizer.transform(y).astype(bool))
    sw = np.random.default_rng(2).uniform(0.5, 2.0, len(X))
    theta = np.concatenate([w.ravel() for w in est.coefs_ + est.intercepts_])
    theta += np.random.default_rng(3).normal(0, 0.2, theta.shape)
    f = lambda t: est._loss_grad_lbfgs(t, X, Y, sw)
    loss, grad = f(theta)
    eps = 1e-6
    numeric = np.array([(f(theta + eps * e)[0] - f(theta - eps * e)[0]) / (2 * eps)
                        for e in np.eye(theta.size)])
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)
