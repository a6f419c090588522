"""Standalone activations and their derivatives against NumPy float64 references."""
import numpy as np
import pytest

import fastnn.functional as F
from fastnn.functional.runtime import override_thresholds

ACTS = ["identity", "linear", "sigmoid", "tanh", "relu", "step", "sign"]
SHAPES = [(1,), (1, 1), (1, 7), (7, 1), (13, 17), (3, 4, 5), (0,), (0, 3), (5000,)]


def ref_act(z, name):
    z = z.astype(np.float64)
    if name in ("identity", "linear"):
        return z
    if name == "sigmoid":
        return np.exp(-np.logaddexp(0.0, -z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0)
    if name == "step":
        return np.where(z >= 0, 1.0, 0.0)
    return np.where(z >= 0, 1.0, -1.0)


def ref_grad(y, g, name):
    y = y.astype(np.float64)
    g = g.astype(np.float64)
    return g * {"sigmoid": lambda: y * (1 - y), "tanh": lambda: 1 - y * y,
                "relu": lambda: (y > 0) * 1.0, "step": lambda: 0 * y, "sign": lambda: 0 * y
                }.get(name, lambda: 1.0 + 0 * y)()


@pytest.fixture(params=["serial", "parallel"])
def par(request):
    """Force the parallel path with zero thresholds, or keep the defaults."""
    if request.param == "parallel":
        with override_thresholds("activations", cheap_min_elements=0,
                                 transcendental_min_elements=0):
            yield request.param
    else:
        yield request.param


def rtol_atol(dtype):
    return (1e-6, 1e-7) if dtype == np.float32 else (1e-14, 1e-15)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("act", ACTS)
def test_forward(shape, act, dtype, n_threads, par, rng):
    z = (rng.standard_normal(shape) * 4).astype(dtype)
    y = F.activation(z, act, n_threads=n_threads)
    assert y.dtype == dtype and y.shape == z.shape
    rtol, atol = rtol_atol(dtype)
    np.testing.assert_allclose(y, ref_act(z, act), rtol=rtol, atol=atol)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("act", ACTS)
def test_backward(shape, act, dtype, n_threads, par, rng):
    z = (rng.standard_normal(shape) * 2).astype(dtype)
    y = F.activation(z, act)
    g = rng.standard_normal(shape).astype(dtype)
    gz = F.activation_backward(y, g, act, n_threads=n_threads)
    rtol, atol = rtol_atol(dtype)
    np.testing.assert_allclose(gz, ref_grad(y, g, act), rtol=rtol, atol=atol)
    if act in ("step", "sign"):
        assert not gz.any()


def test_extreme_values(dtype):
    z = np.array([-1e30, -1000, -100, -88, -80, -20, -1e-30, 0.0, -0.0, 1e-30, 20, 80, 100,
                  1000, 1e30, np.inf, -np.inf], dtype=dtype)
    with np.errstate(over="ignore"):
        s = F.sigmoid(z)
        t = F.tanh(z)
    assert np.isfinite(s).all() and np.isfinite(t).all()
    np.testing.assert_allclose(s, ref_act(z, "sigmoid"), rtol=1e-6, atol=1e-37)
    np.testing.assert_allclose(t, np.tanh(z.astype(np.float64)), rtol=1e-6, atol=0)
    assert s[z > 40].min() == 1 and s[z < -40].max() < 1e-17
    # tiny arguments keep full relative precision
    small = np.array([1e-3, 1e-5, 0.2, -0.2, 0.3], dtype=dtype)
    np.testing.assert_allclose(F.tanh(small), np.tanh(small.astype(np.float64)), rtol=2e-7)


def test_float32_accuracy_dense_grid():
    z = np.linspace(-30, 30, 200001, dtype=np.float32)
    for name, ref in (("sigmoid", ref_act(z, "sigmoid")), ("tanh", np.tanh(z.astype(np.float64)))):
        y = F.activation(z, name).astype(np.float64)
        ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
        assert (np.abs(y - ref) <= 4 * ulp + 1e-45).all(), name


def test_nan_propagates(dtype):
    z = np.array([np.nan, 1.0], dtype=dtype)
    for act in ACTS:
        y = F.activation(z, act)
        assert np.isnan(y[0]), act


def test_threads_identical(dtype, rng):
    z = rng.standard_normal(100003).astype(dtype)
    with override_thresholds("activations", cheap_min_elements=0, transcendental_min_elements=0):
        for act in ACTS:
            np.testing.assert_array_equal(F.activation(z, act, n_threads=1),
                                          F.activation(z, act, n_threads=2))


def test_readonly_noncontiguous_and_out(dtype, n_threads, rng):
    base = rng.standard_normal((9, 14)).astype(dtype)
    z = base[:, ::2]
    z.flags.writeable = False
    y = F.activation(z, "tanh", n_threads=n_threads)
    np.testing.assert_allclose(y, np.tanh(z.astype(np.float64)), rtol=1e-6)
    zf = np.asfortranarray(base)
    np.testing.assert_allclose(F.relu(zf), np.maximum(base, 0))
    out = np.empty_like(base)
    assert F.activation(base, "relu", out=out) is out
    inplace = base.copy()
    F.activation(inplace, "sigmoid", out=inplace)
    np.testing.assert_allclose(inplace, ref_act(base, "sigmoid"), rtol=1e-6)
    g = rng.standard_normal(z.shape).astype(dtype)[::-1]
    np.testing.assert_allclose(F.activation_backward(y, g, "tanh"),
                               ref_grad(y, g, "tanh"), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("act", ["identity", "sigmoid", "tanh", "relu"])
def test_backward_finite_differences(act, rng):
    z = rng.standard_normal(50) * 2
    z[np.abs(z) < 1e-3] = 0.5   # away from the relu kink
    c = rng.standard_normal(50)
    y = F.activation(z, act)
    gz = F.activation_backward(y, c, act)
    h = 1e-6
    num = ((F.activation(z + h, act) - F.activation(z - h, act)) / (2 * h)) * c
    np.testing.assert_allclose(gz, num, rtol=1e-6, atol=1e-8)


def test_validation():
    z = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="Unknown activation 'mish'"):
        F.activation(z, "mish")
    with pytest.raises(TypeError, match="int64"):
        F.activation(np.zeros(3, np.int64), "relu")
    with pytest.raises(ValueError, match=r"out must have shape \(4,\), got \(3,\)"):
        F.activation(z, "relu", out=np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="grad_y has dtype float64 but y has float32|"
                                        "y has dtype float32"):
        F.activation_backward(z, np.zeros(4), "relu")
    with pytest.raises(ValueError, match=r"grad_y must have the shape of y \(4,\), got \(5,\)"):
        F.activation_backward(z, np.zeros(5, np.float32), "relu")
    with pytest.raises(ValueError, match="n_threads"):
        F.activation(z, "relu", n_threads=0)
    assert F.activation(z, "LINEAR").dtype == np.float32
