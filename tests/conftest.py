"""Shared fixtures. The suite tests the *installed* fastnn (pytest runs with
--import-mode=importlib, so the source folder is not put on sys.path)."""
import os

import numpy as np
import pytest

MNIST_DIR = os.environ.get(
    "FASTNN_MNIST_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist"),
)


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture(params=[1, 2], ids=["t1", "t2"])
def n_threads(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def tol(dtype):
    """(rtol, atol) for comparing a kernel's output with a float64 reference."""
    return (2e-5, 2e-6) if np.dtype(dtype) == np.float32 else (1e-12, 1e-13)
