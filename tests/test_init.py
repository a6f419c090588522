"""fastnn.init: bounds, moments within sampling error, seeds and Generators, dtypes."""
import math

import numpy as np
import pytest

from fastnn import init

SHAPE = (300, 200)          # 60,000 draws: the sampling error of a variance is ~0.6%
N = SHAPE[0] * SHAPE[1]


def _check_moments(w, var):
    """Mean and variance within 5 standard errors of their sampling distributions."""
    w = w.astype(np.float64).ravel()
    assert abs(w.mean()) < 5 * math.sqrt(var / N)
    # var of x^2 is E x^4 - var^2; for uniform 4/5 var^2, for normal 2 var^2: use the larger
    assert abs(w.var() - var) < 5 * math.sqrt(2 * var ** 2 / N)


@pytest.mark.parametrize("gain", [1.0, 5 / 3])
def test_glorot_uniform(dtype, gain):
    t = gain * math.sqrt(6 / (SHAPE[0] + SHAPE[1]))
    w = init.glorot_uniform(SHAPE, seed=0, dtype=dtype, gain=gain)
    assert w.shape == SHAPE and w.dtype == dtype and w.flags.c_contiguous
    assert np.abs(w).max() <= t * (1 + 1e-6)
    assert np.abs(w).max() > 0.999 * t            # fills the interval
    _check_moments(w, t * t / 3)


def test_glorot_normal(dtype):
    std = math.sqrt(2 / (SHAPE[0] + SHAPE[1]))
    w = init.glorot_normal(SHAPE, seed=1, dtype=dtype)
    assert w.dtype == dtype
    _check_moments(w, std ** 2)
    assert np.abs(w).max() > 3 * std              # not truncated


@pytest.mark.parametrize("mode,fan", [("fan_in", SHAPE[0]), ("fan_out", SHAPE[1])])
def test_he_uniform_and_normal(dtype, mode, fan):
    t = math.sqrt(6 / fan)
    w = init.he_uniform(SHAPE, seed=2, dtype=dtype, mode=mode)
    assert w.dtype == dtype
    assert np.abs(w).max() <= t * (1 + 1e-6)
    _check_moments(w, t * t / 3)                  # = 2 / fan
    w = init.he_normal(SHAPE, seed=3, dtype=dtype, mode=mode)
    _check_moments(w, 2 / fan)


def test_aliases_and_lookup():
    assert init.xavier_uniform is init.glorot_uniform
    assert init.kaiming_normal is init.he_normal
    assert init.get_initializer("Glorot_Uniform") is init.glorot_uniform
    assert init.get_initializer(init.he_normal) is init.he_normal
    with pytest.raises(ValueError, match="unknown initializer 'orthogonal'"):
        init.get_initializer("orthogonal")


@pytest.mark.parametrize("fn", [init.glorot_uniform, init.glorot_normal, init.he_uniform,
                                init.he_normal])
def test_seeds(fn, dtype):
    a = fn((20, 10), seed=42, dtype=dtype)
    np.testing.assert_array_equal(a, fn((20, 10), seed=42, dtype=dtype))
    assert not np.array_equal(a, fn((20, 10), seed=43, dtype=dtype))
    g = np.random.default_rng(42)
    b = fn((20, 10), seed=g, dtype=dtype)
    np.testing.assert_array_equal(a, b)           # a Generator is used as is
    c = fn((20, 10), seed=g, dtype=dtype)         # ... and advances
    assert not np.array_equal(b, c)
    assert fn((20, 10)).shape == (20, 10)          # seed=None: fresh entropy
    with pytest.raises(TypeError, match="seed must be None, an int"):
        fn((2, 2), seed="0")
    with pytest.raises(TypeError, match="seed must be None, an int"):
        fn((2, 2), seed=np.random.RandomState(0))
    with pytest.raises(ValueError, match="non-negative"):
        fn((2, 2), seed=-1)


def test_shape_and_dtype_errors():
    with pytest.raises(ValueError, match="2-D shape"):
        init.glorot_uniform((5,))
    with pytest.raises(ValueError, match="2-D shape"):
        init.he_normal((2, 3, 4))
    with pytest.raises(TypeError, match="float32 or float64"):
        init.glorot_uniform((2, 2), dtype=np.int32)
    with pytest.raises(ValueError, match="mode must be"):
        init.he_uniform((2, 2), mode="avg")
    assert init.calculate_fans((784, 256)) == (784, 256)
    assert init.glorot_uniform((0, 5)).shape == (0, 5)


def test_zeros_and_constant(dtype):
    z = init.zeros(7, dtype=dtype, seed=3)
    assert z.shape == (7,) and z.dtype == dtype and not z.any()
    c = init.constant((2, 3), 0.01, dtype=dtype)
    assert c.dtype == dtype and np.all(c == dtype.type(0.01))
    with pytest.raises(ValueError, match="finite number"):
        init.constant(3, float("nan"))


@pytest.mark.parametrize("activation,expected", [
    ("tanh", "glorot_uniform"), ("sigmoid", "glorot_uniform"), ("identity", "glorot_uniform"),
    ("linear", "glorot_uniform"), (None, "glorot_uniform"), ("ReLU", "he_uniform"),
    ("relu", "he_uniform"), ("gelu", "he_uniform"), ("silu", "he_uniform"),
    ("swish", "he_uniform"), ("leaky_relu", "he_uniform"), ("elu", "he_uniform"),
    ("softplus", "he_uniform"), ("softmax", "glorot_uniform"),
])
def test_default_init(activation, expected):
    assert init.default_init(activation) is getattr(init, expected)


def test_default_init_unknown():
    with pytest.raises(ValueError, match="Unknown activation 'mish'"):
        init.default_init("mish")
