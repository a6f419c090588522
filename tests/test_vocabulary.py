"""One vocabulary: every place that takes an activation name accepts exactly the activation
table (fastnn.functional.ACTIVATION_TABLE) and its aliases."""
import numpy as np
import pytest

import fastnn
from fastnn import init
from fastnn.__main__ import build_mlp, build_parser
from fastnn.functional.activations import ACTIVATION_TABLE, ALIASES, ACTIVATIONS

NAMES = list(ACTIVATIONS) + list(ALIASES)


def _cli_choices():
    parser = build_parser()
    train = next(a for a in parser._subparsers._group_actions[0].choices.values()
                 if any("--activation" in act.option_strings for act in a._actions))
    act = next(a for a in train._actions if "--activation" in a.option_strings)
    return tuple(act.choices)


def test_cli_accepts_exactly_the_table():
    assert set(_cli_choices()) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_name_everywhere(name):
    canonical = ALIASES.get(name, name)
    assert fastnn.Dense(3, 2, activation=name).activation == canonical
    assert fastnn.Activation(name).name == canonical
    assert init.default_init(name) is getattr(init, ACTIVATION_TABLE[canonical].init)
    model = build_mlp(3, [4], 2, activation=name, dtype="float64")
    assert model[0].activation == canonical
    x = np.linspace(-1, 1, 6).reshape(2, 3)
    assert np.all(np.isfinite(model.predict(x)))


def test_cli_maxout_builds_maxout_layers():
    model = build_mlp(3, [4, 5], 2, maxout=3, dtype="float64")
    assert [type(m).__name__ for m in model] == ["Maxout", "Maxout", "Dense"]
    assert model[0].pieces == 3 and model[1].out_features == 5


@pytest.mark.parametrize("name", NAMES)
def test_the_estimators_accept_every_name(name):
    import warnings

    from fastnn import MLPClassifier
    X = np.random.default_rng(0).standard_normal((20, 3))
    y = np.arange(20) % 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # ConvergenceWarning after 2 iterations
        clf = MLPClassifier(hidden_layer_sizes=(4,), activation=name, max_iter=2,
                            random_state=0).fit(X, y)
    assert clf.predict(X).shape == (20,)


def test_the_estimators_refuse_names_outside_the_table():
    from fastnn import MLPClassifier
    with pytest.raises(ValueError, match="activation"):
        MLPClassifier(activation="mish").fit(np.zeros((4, 2)), [0, 1, 0, 1])


def _cli_option(option):
    parser = build_parser()
    train = next(a for a in parser._subparsers._group_actions[0].choices.values()
                 if any(option in act.option_strings for act in a._actions))
    return next(a for a in train._actions if option in a.option_strings)


def test_optimizers_one_table():
    from fastnn.optim import OPTIMIZERS, Optimizer
    from fastnn.training import make_optimizer
    assert set(_cli_option("--optimizer").choices) == set(OPTIMIZERS)
    p = fastnn.Dense(2, 2).parameters()
    for name, cls in OPTIMIZERS.items():
        assert issubclass(cls, Optimizer)
        assert type(make_optimizer(name, p)) is cls
        assert type(make_optimizer(name.upper(), p)) is cls
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("lion", p)


def test_sparsemax_methods_one_table():
    from fastnn.functional import SPARSEMAX_METHODS
    from fastnn.layers import Sparsemax
    from fastnn.losses import SparsemaxLoss
    z = np.array([[0.3, 1.2, -0.5]])
    for method in SPARSEMAX_METHODS:
        p = Sparsemax(method).forward(z)
        np.testing.assert_allclose(p, fastnn.functional.sparsemax(z, method=method))
        SparsemaxLoss(method=method)
    for bad in ("bisect", "", None):
        with pytest.raises(ValueError, match="method must be one of"):
            Sparsemax(bad)
        with pytest.raises(ValueError, match="method must be one of"):
            SparsemaxLoss(method=bad)


# --- losses: fastnn.losses.LOSS_TABLE -----------------------------------------------------------

def _loss_names(task=None):
    from fastnn.losses import LOSS_ALIASES, LOSS_TABLE
    names = {n for n, r in LOSS_TABLE.items() if task is None or r.task == task}
    return names | {a for a, n in LOSS_ALIASES.items() if n in names}


def test_get_loss_accepts_exactly_the_loss_table():
    from fastnn.losses import LOSS_ALIASES, LOSS_TABLE, LOSSES, Loss, get_loss
    for name in _loss_names():
        row = LOSS_TABLE[LOSS_ALIASES.get(name, name)]
        for spelling in (name, name.upper()):
            obj = get_loss(spelling)
            assert type(obj) is row.cls and isinstance(obj, Loss)
            assert obj.task == row.task
    # LOSSES (name -> class) is derived from the table's rows without options
    assert set(LOSSES) == _loss_names() - {"sparsemax_multilabel"}
    for bad in ("hinge", "l1", "", "cross-entropy"):
        with pytest.raises(ValueError, match="Unknown loss"):
            get_loss(bad)


def test_cli_loss_choices_are_the_classification_rows():
    assert set(_cli_option("--loss").choices) == {"auto"} | _loss_names("classification")


def test_estimators_accept_exactly_their_rows_of_the_loss_table():
    import warnings

    from fastnn import MLPClassifier, MLPRegressor
    X = np.random.default_rng(0).standard_normal((20, 3))
    y = np.arange(20) % 3
    accepted = {"auto"} | _loss_names("classification")
    for name in accepted:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = MLPClassifier((4,), loss=name, max_iter=2, random_state=0).fit(X, y)
        assert clf.predict(X).shape == (20,)
    for name in _loss_names() - accepted:
        with pytest.raises(ValueError, match="loss"):
            MLPClassifier((4,), loss=name, max_iter=2).fit(X, y)
    accepted = {"poisson"} | _loss_names("regression")   # poisson: scikit-learn's own
    for name in accepted:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reg = MLPRegressor(loss=name, hidden_layer_sizes=(4,), max_iter=2,
                               random_state=0).fit(X, np.abs(X[:, 0]))
        assert reg.predict(X).shape == (20,)
    for name in _loss_names() - accepted:
        with pytest.raises(ValueError, match="loss"):
            MLPRegressor(loss=name, hidden_layer_sizes=(4,), max_iter=2).fit(X, X[:, 0])


def test_squared_aliases_train_the_same_regressor():
    import warnings

    from fastnn import MLPRegressor
    X = np.random.default_rng(1).standard_normal((30, 3))
    t = X @ [1.0, -2.0, 0.5]
    fits = []
    for name in ("squared_error", "squared", "mse"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits.append(MLPRegressor(loss=name, hidden_layer_sizes=(5,), max_iter=5,
                                     random_state=0).fit(X, t))
    for other in fits[1:]:
        np.testing.assert_array_equal(other.predict(X), fits[0].predict(X))


# --- activations of the estimators: the table and "maxout" ---------------------------------------

def test_the_estimators_accept_maxout():
    import warnings

    from fastnn import MLPClassifier
    X = np.random.default_rng(0).standard_normal((20, 3))
    y = np.arange(20) % 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(4,), activation="maxout", maxout_pieces=3,
                            max_iter=2, random_state=0).fit(X, y)
    assert [c.shape for c in clf.coefs_] == [(3, 12), (4, 1)]
    assert type(clf.model_[0]).__name__ == "Maxout"


# --- one n_threads check, one dropout scale rule -------------------------------------------------

@pytest.mark.parametrize("bad,error", [(0, ValueError), (-1, ValueError), (2.0, TypeError),
                                       ("2", TypeError), (True, TypeError), (10 ** 9, ValueError)])
def test_one_n_threads_check(bad, error):
    from fastnn import _threads, _validation, optim
    from fastnn.model import Sequential
    assert _threads.check_n_threads is _validation.check_n_threads
    with pytest.raises(error, match="n_threads"):
        _validation.check_n_threads(bad)
    with pytest.raises(error, match="n_threads"):
        fastnn.Dense(2, 2).n_threads = bad
    with pytest.raises(error, match="n_threads"):
        Sequential(fastnn.Dense(2, 2), n_threads=bad)
    with pytest.raises(error, match="n_threads"):
        optim.SGD(fastnn.Dense(2, 2).parameters(), lr=0.1, n_threads=bad)
    from fastnn import MLPClassifier
    with pytest.raises(ValueError, match="n_threads"):   # scikit-learn's convention
        MLPClassifier(n_threads=bad).fit(np.zeros((4, 2)), [0, 1, 0, 1])


@pytest.mark.parametrize("mode", ["inverted", "standard"])
def test_one_dropout_scale_rule(mode):
    from fastnn.functional import dropout, dropout_mask, dropout_scale
    p = 0.25
    x = np.linspace(-1, 1, 24).reshape(4, 6)
    layer = fastnn.Dropout(p, mode=mode, seed=3)
    seed = layer._seed_for(0)
    y = layer.forward(x).copy()
    mask = dropout_mask(x.shape, p, seed)
    np.testing.assert_array_equal(y, x * mask * dropout_scale(p, mode, True))
    np.testing.assert_array_equal(dropout(x, p, seed, mode=mode), y)
    layer.eval()
    np.testing.assert_array_equal(layer.forward(x), x * dropout_scale(p, mode, False))
    np.testing.assert_array_equal(dropout(x, p, seed, mode=mode, training=False),
                                  x * dropout_scale(p, mode, False))
    assert dropout_scale(p, mode, True) == (1 / (1 - p) if mode == "inverted" else 1.0)
    assert dropout_scale(p, mode, False) == (1.0 if mode == "inverted" else 1 - p)


# --- one route to the kernels --------------------------------------------------------------------

def test_only_functional_and_the_optimizer_import_the_kernels():
    """fastnn.functional is the Python route to fastnn._kernels; besides it, only the optimizer's
    update plan and the thread model (_threads reads the kernels' runtime module: fastnn.functional
    resolves its thread counts with _threads, so the route through it would be a circle)."""
    import ast
    import pathlib
    root = pathlib.Path(fastnn.__file__).parent
    allowed = {"optim.py", "_threads.py"}
    offenders = []
    for path in root.glob("*.py"):
        if path.name in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n == "fastnn._kernels" or n.startswith("fastnn._kernels.") for n in names):
                offenders.append(path.name)
    assert not offenders, offenders
