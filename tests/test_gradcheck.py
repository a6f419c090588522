"""Whole-network gradients against central finite differences (float64), and gradcheck itself."""
import numpy as np
import pytest

from fastnn.gradcheck import gradcheck
from fastnn.layers import Activation, Dense, Dropout, Sigmoid, Softmax, Sparsemax, Tanh
from fastnn.model import Parallel, Residual, Sequential

ACTS = ["identity", "sigmoid", "tanh", "relu"]
# (output width, loss, targets) for each output map / loss pair.
HEADS = {
    "softmax+cross_entropy": (4, "cross_entropy", lambda rng, n: rng.integers(0, 4, n)),
    "sparsemax+sparsemax_loss": (4, "sparsemax", lambda rng, n: rng.integers(0, 4, n)),
    "identity+squared": (2, "squared", lambda rng, n: rng.standard_normal((n, 2))),
    "sigmoid+binary_cross_entropy": (1, "binary_cross_entropy",
                                     lambda rng, n: rng.integers(0, 2, n).astype(np.float64)),
}


def assert_passes(result, min_checked=1):
    assert result.passed, repr(result) + f"\nworst: {result.worst}"
    assert sum(result.n_checked.values()) - result.n_kinks >= min_checked


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("act", ACTS)
def test_network_gradients_every_activation_and_head(act, head, rng):
    width, loss, targets = HEADS[head]
    model = Sequential(Dense(5, 6, act, seed=1, bias_init=0.1), Dense(6, 4, act, seed=2),
                       Dense(4, width, seed=3), dtype=np.float64)
    X = rng.standard_normal((7, 5))
    y = targets(rng, 7)
    result = gradcheck(model, X, y, loss, check_input=True)
    assert_passes(result, min_checked=60)
    assert set(result.max_rel_error) == {"0.weight", "0.bias", "1.weight", "1.bias",
                                         "2.weight", "2.bias", "input"}


@pytest.mark.parametrize("act", ACTS)
def test_separate_activation_modules_and_output_modules(act, rng):
    # Activation and output-map modules as separate boxes, a squared loss on probabilities.
    for out in (Softmax(), Sparsemax()):
        model = Sequential(Dense(4, 5, seed=1), Activation(act), Dense(5, 3, seed=2),
                           Activation(act), Dense(3, 4, seed=3), out, dtype=np.float64)
        X = 2 * rng.standard_normal((6, 4))
        y = rng.random((6, 4))
        assert_passes(gradcheck(model, X, y, "squared", check_input=True), min_checked=40)


@pytest.mark.parametrize("mode", ["inverted", "standard"])
@pytest.mark.parametrize("training", [True, False])
def test_dropout_network_gradients(mode, training, rng):
    model = Sequential(Dense(5, 8, "tanh", seed=1), Dropout(0.4, mode=mode, seed=3),
                       Dense(8, 3, seed=2), dtype=np.float64)
    model.train(training)
    X = rng.standard_normal((6, 5))
    y = rng.integers(0, 3, 6)
    assert_passes(gradcheck(model, X, y, "cross_entropy", check_input=True), min_checked=60)


def test_non_sequential_networks_pass(rng):
    model = Sequential(
        Dense(4, 6, "tanh", seed=0),
        Residual(Sequential(Dense(6, 6, "sigmoid", seed=1), Dense(6, 6, seed=2))),
        Parallel(Dense(6, 3, "tanh", seed=3),
                 Sequential(Sigmoid(), Dense(6, 2, seed=4)),
                 Residual(Tanh())),
        Parallel(Dense(11, 4, seed=5), Sequential(Dense(11, 4, "tanh", seed=6), Tanh()),
                 merge="sum"),
        Dense(4, 3, seed=7), dtype=np.float64)
    X = rng.standard_normal((5, 4))
    y = rng.integers(0, 3, 5)
    for loss in ("cross_entropy", "sparsemax"):
        assert_passes(gradcheck(model, X, y, loss, check_input=True), min_checked=200)


def test_float32_model_checked_in_float64_and_left_untouched(rng):
    model = Sequential(Dense(3, 4, "tanh", seed=0), Dense(4, 2, seed=1))
    before = [p.data.copy() for p in model.parameters()]
    X = rng.standard_normal((5, 3)).astype(np.float32)
    result = gradcheck(model, X, rng.integers(0, 2, 5), "cross_entropy")
    assert_passes(result)
    assert model.dtype == np.float32
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)
        assert not p.grad.any()


def test_gradcheck_detects_a_wrong_backward(rng):
    class Broken(Dense):
        def backward(self, grad_output, need_input_grad=True, inplace=False):
            gx = super().backward(grad_output, need_input_grad, inplace)
            self.weight.grad[0, 0] *= 1.01  # a 1% error on one coordinate
            return gx

    model = Sequential(Broken(3, 4, "tanh", seed=0), Dense(4, 2, seed=1), dtype=np.float64)
    result = gradcheck(model, rng.standard_normal((5, 3)), rng.integers(0, 2, 5),
                       "cross_entropy")
    assert not result.passed
    assert result.max_rel_error["0.weight"] > 1e-3
    assert result.max_rel_error["1.weight"] < 1e-5
    assert result.worst["0.weight"][1] == (0, 0)


def test_relu_kinks_are_reported_apart(rng):
    model = Sequential(Dense(2, 3, "relu", seed=0), Dense(3, 2, seed=1), dtype=np.float64)
    X = rng.standard_normal((4, 2))
    # Put unit 0 of sample 0 exactly at the kink: z = x W[:, 0] + b[0] = 0.
    W = model[0].weight.data
    model[0].bias.data[0] = -(X[0] @ W[:, 0])
    result = gradcheck(model, X, rng.integers(0, 2, 4), "cross_entropy")
    assert result.passed
    kinked = {idx for idx, _, _ in result.kinks["0.bias"]}
    assert (0,) in kinked
    assert result.n_kinks >= 1


def test_sparsemax_support_changes_are_reported_apart(rng):
    model = Sequential(Dense(2, 3, seed=0), dtype=np.float64)
    X = np.array([[1.0, 0.5]])
    # Choose biases so that sparsemax(z) has a coordinate exactly at the support boundary:
    # z = (1, 0, -1) + shift has support {0, 1} with p = (1, 0)? p_i = z_i - tau with tau = 0:
    # z0 = 1, z1 = 0 gives p = (1, 0, 0) and unit 1 on the boundary.
    z_target = np.array([1.0, 0.0, -1.0])
    model[0].bias.data[...] = z_target - X[0] @ model[0].weight.data
    result = gradcheck(model, X, np.array([0]), "sparsemax")
    assert result.passed
    assert any(idx == (1,) for idx, _, _ in result.kinks["0.bias"])


def test_subset_and_result_display(rng):
    model = Sequential(Dense(20, 30, "tanh", seed=0), Dense(30, 3, seed=1), dtype=np.float64)
    X = rng.standard_normal((4, 20))
    result = gradcheck(model, X, rng.integers(0, 3, 4), "cross_entropy", max_coords=25, seed=1)
    assert result.n_checked["0.weight"] == 25 and result.n_checked["0.bias"] == 25
    assert result.n_checked["1.bias"] == 3
    assert_passes(result)
    text = repr(result)
    assert "0.weight" in text and "passed=True" in text
    with pytest.raises(ValueError, match="eps"):
        gradcheck(model, X, np.zeros(4, int), "cross_entropy", eps=0)


def test_gradcheck_agrees_with_naive_finite_differences(rng):
    # Cross-check the checker: the numeric gradient it uses must match a direct computation.
    model = Sequential(Dense(3, 2, "sigmoid", seed=0), dtype=np.float64)
    X = rng.standard_normal((4, 3))
    y = rng.standard_normal((4, 2))
    W, b = model[0].weight.data.copy(), model[0].bias.data.copy()

    def loss(W):
        p = 1 / (1 + np.exp(-(X @ W + b)))
        return 0.5 * np.sum((p - y) ** 2) / 4

    eps = 1e-6
    num = np.zeros_like(W)
    for i in np.ndindex(W.shape):
        d = np.zeros_like(W)
        d[i] = eps
        num[i] = (loss(W + d) - loss(W - d)) / (2 * eps)
    p = 1 / (1 + np.exp(-(X @ W + b)))
    analytic = X.T @ ((p - y) / 4 * p * (1 - p))
    np.testing.assert_allclose(num, analytic, rtol=1e-6, atol=1e-10)
    result = gradcheck(model, X, y, "squared")
    assert_passes(result)
    assert result.loss == pytest.approx(loss(W), rel=1e-12)


@pytest.mark.parametrize("loss,width", [("cross_entropy", 3), ("binary_cross_entropy", 1),
                                        ("squared", 1)])
def test_edge_sizes_batch_one_width_one(loss, width, rng):
    model = Sequential(Dense(1, 1, "tanh", seed=0), Dense(1, 1, "sigmoid", seed=1),
                       Dense(1, width, seed=2), dtype=np.float64)
    X = rng.standard_normal((1, 1))
    y = {"cross_entropy": np.array([2]), "binary_cross_entropy": np.array([1.0]),
         "squared": np.array([[0.3]])}[loss]
    assert_passes(gradcheck(model, X, y, loss, check_input=True), min_checked=5)
