"""Standardizer: constant and near-constant columns of any magnitude, both dtypes, NaN/inf and
overflow; ordinary columns unchanged."""
import math

import numpy as np
import pytest

from fastnn.data import Standardizer

MAGNITUDES32 = [0.0, 1e-38, -3e-30, 0.1, 1.0, -2.5, 12345.678, 1e10, -7.77e20, 1e30, 3.3e38]
MAGNITUDES64 = [0.0, 1e-307, -3e-200, 0.1, 1.0, -2.5, 12345.678, 1e10, -7.77e20, 1e150, 1e300,
                -1.7e308]


def _cases():
    for dtype, mags in ((np.float32, MAGNITUDES32), (np.float64, MAGNITUDES64)):
        for v in mags:
            yield dtype, v


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 50_001])
@pytest.mark.parametrize("dtype,value", list(_cases()))
def test_constant_column_becomes_exactly_zero(dtype, value, n):
    rng = np.random.default_rng(n)
    X = np.empty((n, 3), dtype=dtype)
    X[:, 0] = value
    X[:, 1] = rng.standard_normal(n)
    X[:, 2] = dtype(value)  # the same constant in a second position
    s = Standardizer().fit(X)
    Z = s.transform(X)
    assert Z.dtype == dtype
    np.testing.assert_array_equal(Z[:, [0, 2]], 0.0)
    assert s.scale_[0] == 1.0 and s.var_[0] == 0.0
    assert s.mean_[0] == float(dtype(value))
    np.testing.assert_array_equal(s.inverse_transform(Z)[:, 0], X[:, 0])


def test_the_reported_case():
    X = np.full((1000, 1), 12345.678)
    Z = Standardizer().fit_transform(X)
    np.testing.assert_array_equal(Z, 0.0)  # was +-1: a 1.8e-12 std from the mean's rounding


def _ulp_steps(value, dtype, k, n, rng):
    """n values within k units in the last place of ``value`` (in ``dtype``)."""
    base = dtype(value)
    steps = rng.integers(-k, k + 1, n)
    out = np.empty(n, dtype=dtype)
    for i, s in enumerate(steps):
        x = base
        for _ in range(abs(int(s))):
            x = np.nextafter(x, dtype(np.inf) if s > 0 else dtype(-np.inf))
        out[i] = x
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [0.3, 12345.678, -4.2e7, 1e30])
def test_near_constant_column_is_rounding_not_signal(dtype, value):
    """A column spread over a few units in the last place is treated as constant: centered,
    not divided by its (rounding-sized) deviation, so it stays within a few ulps of 0."""
    rng = np.random.default_rng(0)
    col = _ulp_steps(value, dtype, 2, 200, rng)
    assert np.unique(col).size > 1
    X = np.stack([col, rng.standard_normal(200).astype(dtype)], axis=1)
    s = Standardizer().fit(X)
    assert s.scale_[0] == 1.0
    Z = s.transform(X)
    ulp = float(np.spacing(dtype(abs(value))))
    assert np.abs(Z[:, 0]).max() <= 4 * ulp
    assert np.abs(Z[:, 0]).max() < 1e-3 * max(1.0, abs(value))  # nowhere near +-1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [1.0, 1000.0, -3e12])
def test_small_but_real_variation_is_standardized(dtype, value):
    """A deviation well above the rounding of the mean (here 100 ulps) is signal: unit
    variance, mean 0."""
    eps = float(np.finfo(dtype).eps)
    d = 100 * eps * abs(value)
    col = np.array([value - d, value + d] * 50).astype(dtype)
    X = col[:, None]
    s = Standardizer(eps=0.0).fit(X)  # the absolute eps (1e-12) would call 2e-14 constant
    assert s.scale_[0] != 1.0
    np.testing.assert_allclose(s.scale_[0], X.astype(np.float64).std(), rtol=1e-6)
    Z = s.transform(X).astype(np.float64)
    np.testing.assert_allclose(np.abs(Z), 1.0, rtol=0.05)
    assert abs(Z.mean()) < 0.05


def test_threshold_is_relative_to_the_dtype():
    """The same float64 data: a 1e-10 relative spread is signal in float64 but below float32's
    resolution once cast."""
    col = 1000.0 + 1e-7 * np.array([-1.0, 1.0] * 20)
    s64 = Standardizer().fit(col[:, None])
    assert s64.scale_[0] == pytest.approx(1e-7, rel=1e-3)
    s32 = Standardizer().fit(col[:, None].astype(np.float32))
    assert s32.scale_[0] == 1.0
    np.testing.assert_array_equal(s32.transform(col[:, None].astype(np.float32)), 0.0)


def _reference(X):
    """Mean and population standard deviation per column with math.fsum (exact sums)."""
    Xd = X.astype(np.float64)
    n = Xd.shape[0]
    mean = np.array([math.fsum(c) / n for c in Xd.T])
    std = np.array([math.sqrt(math.fsum((c - m) ** 2) / n) for c, m in zip(Xd.T, mean)])
    return mean, std


@pytest.mark.parametrize("dtype,offset", [(np.float32, 0.0), (np.float32, 100.0),
                                          (np.float32, -30.0), (np.float64, 0.0),
                                          (np.float64, 1e4), (np.float64, -1e8)])
def test_ordinary_columns_are_unchanged(dtype, offset):
    """Columns whose deviation is well above the resolution of their offset (at least ~100
    ulps): mean and deviation equal an exact-sum reference, the output (X - mean) / std."""
    rng = np.random.default_rng(3)
    X = (rng.standard_normal((3000, 6)) * [1, 10, 1e-3, 1e3, 0.5, 2] + offset).astype(dtype)
    s = Standardizer().fit(X)
    mean, std = _reference(X)
    assert (s.scale_ != 1.0).all()
    ulp = float(np.spacing(dtype(abs(offset)))) if offset else 0.0
    np.testing.assert_allclose(s.mean_, mean, rtol=0, atol=1e-12 * std.max() + 2 * ulp)
    np.testing.assert_allclose(s.scale_, std, rtol=1e-9)
    Z = s.transform(X)
    expected = ((X.astype(np.float64) - mean) / std).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    # the mean (rounded to X's dtype) differs from the reference by up to an ulp of the offset
    np.testing.assert_allclose(Z, expected, rtol=tol, atol=tol + 2 * ulp / std.min())


def test_with_mean_false_on_a_constant_column():
    X = np.full((5, 1), 12345.678)
    s = Standardizer(with_mean=False).fit(X)
    assert s.scale_[0] == 1.0
    np.testing.assert_array_equal(s.transform(X), X)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_clear_errors(dtype, bad):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 3)).astype(dtype)
    s = Standardizer().fit(X)
    for where in [(0, 0), (19, 2), (7, 1)]:
        Xb = X.copy()
        Xb[where] = bad
        with pytest.raises(ValueError, match="X contains NaN or infinity"):
            Standardizer().fit(Xb)
        with pytest.raises(ValueError, match="X contains NaN or infinity"):
            s.transform(Xb)
        with pytest.raises(ValueError, match="X contains NaN or infinity"):
            s.transform(Xb, out=np.empty_like(Xb))


def test_transform_overflow_is_a_clear_error():
    X = np.array([[3e38], [3e38], [-3e38]], dtype=np.float32)
    s = Standardizer().fit(X)
    with pytest.raises(ValueError, match="overflows float32"):
        s.transform(X)
    # the same data in float64 standardizes fine
    Z = Standardizer().fit_transform(X.astype(np.float64))
    assert np.isfinite(Z).all()


def test_fit_variance_overflow_is_a_clear_error():
    X = np.array([[1e200], [-1e200]])
    with pytest.raises(ValueError, match="variance of feature 0 overflows float64"):
        Standardizer().fit(X)


@pytest.mark.parametrize("eps", [-1e-12, float("nan"), float("inf"), True, "1e-3"])
def test_eps_is_validated(eps):
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        Standardizer(eps=eps)


def test_eps_zero_keeps_only_the_relative_rule():
    X = np.stack([np.full(10, 5.0), np.array([1e-20, -1e-20] * 5)], axis=1)
    s = Standardizer(eps=0.0).fit(X)
    assert s.scale_[0] == 1.0                 # constant: relative rule
    assert s.scale_[1] == pytest.approx(1e-20)  # tiny but real: standardized
    np.testing.assert_allclose(np.abs(s.transform(X)[:, 1]), 1.0)
