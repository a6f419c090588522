"""fastnn.regularization: penalty values on weights only, and the L1 proximal operator."""
import numpy as np
import pytest

from fastnn.optim import SGD
from fastnn.parameter import Parameter
from fastnn.regularization import l1_penalty, l2_penalty, penalty, soft_threshold


@pytest.fixture
def params(rng, dtype):
    return [Parameter(rng.standard_normal((4, 3)).astype(dtype), regularize=True),
            Parameter(rng.standard_normal(3).astype(dtype), regularize=False),
            Parameter(rng.standard_normal((3, 2)).astype(dtype), regularize=True)]


def test_penalty_values_skip_biases(params):
    w = [params[0].data.astype(np.float64), params[2].data.astype(np.float64)]
    assert l2_penalty(params) == pytest.approx(0.5 * sum((a ** 2).sum() for a in w), rel=1e-12)
    assert l1_penalty(params) == pytest.approx(sum(np.abs(a).sum() for a in w), rel=1e-12)
    assert penalty(params, weight_decay=0.1, l1=0.2) == pytest.approx(
        0.1 * l2_penalty(params) + 0.2 * l1_penalty(params), rel=1e-12)
    assert penalty(params) == 0.0
    assert isinstance(l2_penalty(params), float)


def test_penalty_gradients_match_the_optimizer(rng):
    """Central differences of the penalties equal what SGD adds to the gradient."""
    p = Parameter(rng.standard_normal((3, 4)))
    lam2, lam1, h = 0.3, 0.2, 1e-6
    fd = np.zeros_like(p.data)
    for idx in np.ndindex(p.shape):
        old = p.data[idx]
        p.data[idx] = old + h
        up = penalty([p], lam2, lam1)
        p.data[idx] = old - h
        down = penalty([p], lam2, lam1)
        p.data[idx] = old
        fd[idx] = (up - down) / (2 * h)
    w0 = p.data.copy()
    SGD([p], lr=1.0, weight_decay=lam2, l1=lam1).step()   # zero data gradient
    np.testing.assert_allclose(w0 - p.data, fd, rtol=1e-6, atol=1e-8)


def test_soft_threshold(dtype, rng):
    x = rng.standard_normal(1000).astype(dtype)
    y = soft_threshold(x, 0.5)
    assert y.dtype == dtype
    ref = np.sign(x) * np.maximum(np.abs(x) - 0.5, 0)
    np.testing.assert_allclose(y, ref, rtol=1e-6)
    assert np.all(y[np.abs(x) <= 0.5] == 0)
    thr = np.abs(rng.standard_normal(1000)).astype(dtype)
    np.testing.assert_allclose(soft_threshold(x, thr),
                               np.sign(x) * np.maximum(np.abs(x) - thr, 0), rtol=1e-6)
    out = soft_threshold(x, 0.5, out=x)
    assert out is x
    np.testing.assert_allclose(x, ref, rtol=1e-6)
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        soft_threshold(x, -1.0)
    with pytest.raises(TypeError, match="float array"):
        soft_threshold(np.arange(3), 1.0)
