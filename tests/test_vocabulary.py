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
