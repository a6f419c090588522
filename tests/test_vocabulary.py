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
