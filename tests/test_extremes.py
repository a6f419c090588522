"""Numerical extremes: logits at +-1e4, +-1e30, subnormals and the float32 overflow boundaries
(exp overflows past 88.72, the largest float32 is 3.4e38) in sigmoid, softmax, log_softmax and
the losses give finite results equal to scipy.special's float64 values (expit, softmax,
log_softmax, logsumexp) rounded to the dtype."""
import numpy as np
import pytest
from scipy import special

from fastnn import functional as F

F32_TINY = np.finfo(np.float32).smallest_subnormal   # 1.4e-45
F64_TINY = np.finfo(np.float64).smallest_subnormal   # 4.9e-324
EXTREMES = {
    np.float32: [0.0, -0.0, F32_TINY, -F32_TINY, 1e-38, 88.72, -88.72, 88.73, 89.0, -89.0,
                 103.9, -103.9, 104.0, -104.0, 1e4, -1e4, 1e30, -1e30, 1e38, -1e38,
                 3.4e38, -3.4e38],
    np.float64: [0.0, F64_TINY, -F64_TINY, 1e-308, 709.7, -709.7, 710.0, -745.2, -746.0, 1e4,
                 -1e4, 1e30, -1e30, 1e300, -1e300, 1.7e308, -1.7e308],
}


def _rounded(want, dtype):
    """The float64 reference rounded to dtype (+-inf where it is not representable)."""
    with np.errstate(over="ignore"):
        return np.asarray(want, np.float64).astype(dtype).astype(np.float64)


def _close_or_overflow(got, want, dtype, rtol_ulps=8):
    """Finite and close wherever the exact value is representable in dtype; where it is not
    (a log-probability of -6.8e38 in float32), the correctly rounded -inf."""
    got = np.asarray(got, np.float64)
    want = _rounded(want, dtype)
    fin = np.isfinite(want)
    assert np.isfinite(got[fin]).all(), got[fin][~np.isfinite(got[fin])]
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(got[fin], want[fin], rtol=rtol_ulps * eps,
                               atol=rtol_ulps * eps)
    np.testing.assert_array_equal(got[~fin], want[~fin])


def _close(got, want, dtype):
    """Equal to the float64 reference rounded to dtype, within a few ulps (or tiny absolute)."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert np.isfinite(got).all(), got
    eps = np.finfo(dtype).eps
    tiny = np.finfo(dtype).tiny
    np.testing.assert_allclose(got, want, rtol=8 * eps, atol=tiny)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid(dtype):
    z = np.array(EXTREMES[dtype], dtype=dtype)
    got = F.sigmoid(z)
    _close(got, special.expit(z.astype(np.float64)).astype(dtype), dtype)
    assert ((got >= 0) & (got <= 1)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh(dtype):
    z = np.array(EXTREMES[dtype], dtype=dtype)
    _close(F.tanh(z), np.tanh(z.astype(np.float64)), dtype)


def _log_softmax_exact(z):
    """log_softmax in long double (x87 80-bit on x86-64: range 1e4932), returned as float64
    (+-inf where the exact value is beyond the float64 range)."""
    zl = z.astype(np.longdouble)
    m = zl.max(axis=1, keepdims=True)
    out = zl - m - np.log(np.exp(zl - m).sum(axis=1, keepdims=True))
    with np.errstate(over="ignore"):
        return out.astype(np.float64)


def _rows(dtype):
    """Rows of logits mixing extremes with ordinary values (each row's width varies)."""
    v = EXTREMES[dtype]
    rows = [[a, b, 0.5] for a in v for b in (v[0], v[-1], 1.0, -1.0)]
    return np.array(rows, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_and_log_softmax(dtype):
    z = _rows(dtype)
    z64 = z.astype(np.float64)
    p = F.softmax(z)
    _close(p, special.softmax(z64, axis=1), dtype)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=4 * np.finfo(dtype).eps)
    # log-probabilities of order -1e30 are exact up to the relative rounding of the logits;
    # -3.4e38 - 3.4e38 is not a float32, and -inf is then the correctly rounded result
    _close_or_overflow(F.log_softmax(z), _log_softmax_exact(z), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparsemax_is_a_distribution(dtype):
    z = _rows(dtype)
    p = F.sparsemax(z)
    assert np.isfinite(p).all() and (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=8 * np.finfo(dtype).eps)
    # the largest logit always gets probability mass
    assert (p[np.arange(len(z)), z.argmax(axis=1)] > 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy(dtype):
    z = _rows(dtype)
    z64 = z.astype(np.float64)
    for label in range(3):
        y = np.full(len(z), label)
        per, g = F.cross_entropy(z, y, reduction="none", return_grad=True)
        # the loss is float64 for both dtypes: float32 logits never overflow it
        want = -_log_softmax_exact(z)[:, label]
        assert (per >= 0).all()
        _close_or_overflow(per, want, np.float64, rtol_ulps=8 * np.finfo(dtype).eps
                           / np.finfo(np.float64).eps)
        gw = special.softmax(z64, axis=1)
        gw[:, label] -= 1
        _close(g, gw, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_cross_entropy(dtype):
    z = np.array(EXTREMES[dtype], dtype=dtype)
    z64 = z.astype(np.float64)
    for y in (0.0, 1.0, 0.25):
        yv = np.full(len(z), y)
        per, g = F.binary_cross_entropy(z, yv, reduction="none", return_grad=True)
        want = np.logaddexp(0.0, z64) - y * z64
        assert np.isfinite(per).all()
        np.testing.assert_allclose(per, want, rtol=8 * np.finfo(dtype).eps,
                                   atol=8 * np.finfo(dtype).eps)
        _close(g, special.expit(z64) - y, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparsemax_loss_finite(dtype):
    z = _rows(dtype)
    for label in range(3):
        y = np.full(len(z), label)
        per, g = F.sparsemax_loss(z, y, reduction="none", return_grad=True)
        assert (per >= 0).all()
        # finite unless the exact loss (>= tau - z_y, up to 3.4e308 for +-1.7e308 logits) is
        # beyond the float64 range
        big = np.abs(z.astype(np.float64)).max(axis=1) > 1e307
        assert np.isfinite(per[~big]).all()
        assert np.isfinite(g).all()
        p = F.sparsemax(z)
        gw = p.astype(np.float64)
        gw[:, label] -= 1
        _close(g, gw, dtype)


def test_squared_loss_at_the_float32_boundary():
    # (f - y)^2 of 1e20 overflows float32 but the loss is accumulated in float64
    f = np.array([[1e20, -1e20], [3e38, 0.0]], np.float32)
    y = np.zeros_like(f)
    per = F.squared_loss(f, y, reduction="none")
    want = 0.5 * (f.astype(np.float64) ** 2).sum(axis=1)
    np.testing.assert_allclose(per, want, rtol=1e-7)
    assert np.isfinite(per).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subnormal_logits_are_exact(dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    z = np.array([[tiny, 0.0, -tiny], [tiny * 3, tiny, 0.0]], dtype=dtype)
    np.testing.assert_allclose(F.softmax(z), np.full((2, 3), 1 / 3), rtol=2 * np.finfo(dtype).eps)
    np.testing.assert_allclose(F.sigmoid(z), 0.5, rtol=np.finfo(dtype).eps)
    assert (F.relu(z) == np.maximum(z, 0)).all()
