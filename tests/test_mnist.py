"""MNIST (read from ../shared/data/mnist or FASTNN_MNIST_DIR; skipped when absent)."""
import os

import numpy as np
import pytest

from fastnn import datasets
from fastnn.layers import Dense
from fastnn.model import Sequential

MNIST_DIR = os.environ.get(
    "FASTNN_MNIST_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist"))

pytestmark = pytest.mark.skipif(datasets.find_mnist_dir(MNIST_DIR) is None,
                                reason=f"MNIST not found in {MNIST_DIR}")


@pytest.fixture(scope="module")
def mnist():
    return datasets.load_mnist(datasets.find_mnist_dir(MNIST_DIR))  # sha256-verified


def test_mnist_files_verify(mnist):
    Xtr, ytr, Xte, yte = mnist
    assert Xtr.shape == (60000, 784) and Xte.shape == (10000, 784)
    assert Xtr.dtype == np.float32 and 0.0 <= Xtr.min() and Xtr.max() == 1.0
    np.testing.assert_array_equal(np.bincount(yte), [980, 1135, 1032, 1010, 982, 892, 958,
                                                     1028, 974, 1009])


@pytest.mark.slow
def test_mnist_mlp_reaches_97_5_percent_in_3_epochs(mnist):
    Xtr, ytr, Xte, yte = mnist
    model = Sequential(Dense(784, 256, activation="relu", seed=0),
                       Dense(256, 256, activation="relu", seed=1),
                       Dense(256, 10, seed=2))
    hist = model.fit(Xtr, ytr, loss="cross_entropy", optimizer="adam", lr=1e-3, epochs=3,
                     batch_size=128, verbose=0, seed=0)
    result = model.evaluate(Xte, yte)
    assert len(hist) == 3
    assert result["accuracy"] >= 0.975, result
