"""fastnn.debug.check_overfit: the lecture's "overfit a small subset" recipe and its diagnoses."""
import numpy as np

from fastnn import datasets
from fastnn.data import Standardizer
from fastnn.debug import check_overfit, saturation_at_init
from fastnn.layers import Dense
from fastnn.model import Sequential


def _digits():
    X, y = datasets.load_digits()
    return X, y


def test_a_healthy_model_overfits_50_examples():
    X, y = _digits()
    X = Standardizer().fit_transform(X)
    model = Sequential(Dense(64, 32, activation="relu", seed=0), Dense(32, 10, seed=1))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    report = check_overfit(model, X, y, n=50, steps=200, lr=1e-2)
    assert report.ok and bool(report) and report.diagnoses == []
    assert report.final_accuracy == 1.0 and report.final_loss < report.initial_loss
    assert "OK" in str(report)
    for k, v in model.state_dict().items():  # the user's model is left untouched
        np.testing.assert_array_equal(v, before[k])


def test_saturated_units_at_initialization_are_diagnosed():
    X, y = _digits()  # raw pixels 0..16, not standardized

    def big_init(shape, seed=None, dtype=np.float64):
        return np.random.default_rng(seed).normal(0, 5.0, size=shape).astype(dtype)

    def factory():
        return Sequential(Dense(64, 32, activation="sigmoid", init=big_init, seed=0),
                          Dense(32, 10, seed=1))

    sat = saturation_at_init(factory(), X[:50])
    assert list(sat.values())[0][0] == "sigmoid" and list(sat.values())[0][1] > 0.5
    report = check_overfit(factory, X, y, n=50, steps=30, optimizer="sgd", lr=1e-3)
    assert not report.ok
    text = " ".join(report.diagnoses)
    assert "saturated" in text and "initialization variance" in text
    assert "standardize" in text.lower() or "Standardizer" in text
    assert "saturated at init" in str(report)


def test_a_bouncing_loss_asks_for_a_smaller_learning_rate():
    # Where plain SGD starts to bounce depends on rounding in the products (BLAS version), so
    # scan upward to the first learning rate at which the check fails without diverging.
    X, y = _digits()
    X = Standardizer().fit_transform(X)
    bounced = None
    for lr in (3.0, 3.5, 4.0, 4.5):
        model = Sequential(Dense(64, 32, activation="relu", seed=0), Dense(32, 10, seed=1))
        report = check_overfit(model, X, y, n=50, steps=60, optimizer="sgd", lr=lr)
        if not report.ok and "diverged" not in report.diagnoses[0]:
            bounced = (lr, report)
            break
    assert bounced is not None, "no learning rate in 3..4.5 made plain SGD bounce"
    lr, report = bounced
    text = " ".join(report.diagnoses)
    assert "bouncing" in text and "decrease the learning rate" in text
    assert f"try {lr / 10:g}" in text
    assert "standardized" not in text
    model = Sequential(Dense(64, 32, activation="relu", seed=0), Dense(32, 10, seed=1))
    report = check_overfit(model, X, y, n=50, steps=60, optimizer="sgd", lr=20.0)
    assert not report.ok and "diverged" in report.diagnoses[0]


def test_regression_subset():
    X, y = datasets.make_regression_1d(200, function="sin", seed=0)
    model = Sequential(Dense(1, 64, activation="tanh", seed=0), Dense(64, 1, seed=1))
    report = check_overfit(model, X, y, n=20, loss="squared", lr=1e-2, steps=400)
    assert report.final_r2 is not None and report.final_accuracy is None
    assert report.ok, str(report)
