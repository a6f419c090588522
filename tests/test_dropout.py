"""Dropout: counter-based masks, modes, backward, thread independence."""
import numpy as np
import pytest

import fastnn.functional as F
from fastnn.functional.runtime import override_thresholds


@pytest.fixture(params=["serial", "parallel"])
def par(request):
    if request.param == "parallel":
        with override_thresholds("dropout", min_elements=0):
            yield request.param
    else:
        yield request.param


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_frequency_within_binomial_bounds(p, par):
    n = 200_003
    m = F.dropout_mask((n,), p, seed=1234)
    kept = m.sum()
    mean, sd = n * (1 - p), np.sqrt(n * p * (1 - p))
    assert abs(kept - mean) < 5 * sd
    # even and odd positions (high/low hash words) are both fair
    for part in (m[::2], m[1::2]):
        k = part.size
        assert abs(part.sum() - k * (1 - p)) < 5 * np.sqrt(k * p * (1 - p))


def test_masks_look_independent():
    m = F.dropout_mask(100_000, 0.5, seed=7).astype(np.float64)
    # lag-1 correlation and correlation between seeds near 0
    assert abs(np.corrcoef(m[:-1], m[1:])[0, 1]) < 0.02
    m2 = F.dropout_mask(100_000, 0.5, seed=8).astype(np.float64)
    assert abs(np.corrcoef(m, m2)[0, 1]) < 0.02


@pytest.mark.parametrize("shape", [(1,), (1, 1), (7, 1), (1, 9), (13, 17), (2, 3, 5), (0, 4)],
                         ids=str)
@pytest.mark.parametrize("mode", ["inverted", "standard"])
def test_forward_matches_mask(shape, mode, dtype, n_threads, par, rng):
    X = rng.standard_normal(shape).astype(dtype)
    p = 0.3
    Y = F.dropout(X, p, seed=42, mode=mode, n_threads=n_threads)
    m = F.dropout_mask(shape, p, seed=42)
    scale = 1 / (1 - p) if mode == "inverted" else 1.0
    assert Y.dtype == dtype and Y.shape == X.shape
    np.testing.assert_allclose(Y, X.astype(np.float64) * m * scale, rtol=1e-6)
    G = rng.standard_normal(shape).astype(dtype)
    gX = F.dropout_backward(G, p, seed=42, mode=mode, n_threads=n_threads)
    np.testing.assert_allclose(gX, G.astype(np.float64) * m * scale, rtol=1e-6)


def test_same_seed_same_mask_threads_identical(dtype, rng):
    X = rng.standard_normal((301, 129)).astype(dtype)
    with override_thresholds("dropout", min_elements=0):
        Y1 = F.dropout(X, 0.5, seed=3, n_threads=1)
        Y2 = F.dropout(X, 0.5, seed=3, n_threads=2)
        np.testing.assert_array_equal(Y1, Y2)
        np.testing.assert_array_equal(Y1, F.dropout(X, 0.5, seed=3))
        np.testing.assert_array_equal(F.dropout_mask(X.shape, 0.5, 3, n_threads=1),
                                      F.dropout_mask(X.shape, 0.5, 3, n_threads=2))
        Y3 = F.dropout(X, 0.5, seed=4)
        assert ((Y1 == 0) != (Y3 == 0)).mean() > 0.4


def test_eval_modes(dtype, rng):
    X = rng.standard_normal((5, 6)).astype(dtype)
    np.testing.assert_array_equal(F.dropout(X, 0.4, 1, "inverted", training=False), X)
    np.testing.assert_allclose(F.dropout(X, 0.4, 1, "standard", training=False), X * 0.6,
                               rtol=1e-6)
    G = rng.standard_normal((5, 6)).astype(dtype)
    np.testing.assert_array_equal(F.dropout_backward(G, 0.4, 1, "inverted", training=False), G)
    np.testing.assert_allclose(F.dropout_backward(G, 0.4, 1, "standard", training=False),
                               G * 0.6, rtol=1e-6)
    # the expectation of the training map equals the eval map (both modes)
    Xb = np.ones(400_000, dtype)
    for mode in ("inverted", "standard"):
        tr = F.dropout(Xb, 0.4, 9, mode).astype(np.float64).mean()
        ev = F.dropout(Xb, 0.4, 9, mode, training=False).astype(np.float64).mean()
        assert abs(tr - ev) < 5 * 0.0008 * (1 / 0.6 if mode == "inverted" else 1)


def test_p_zero_is_identity(dtype, rng):
    X = rng.standard_normal((4, 7)).astype(dtype)
    np.testing.assert_array_equal(F.dropout(X, 0.0, 5), X)
    np.testing.assert_array_equal(F.dropout(X, 0, 5, "standard"), X)
    assert F.dropout_mask((4, 7), 0.0, 5).all()


def test_readonly_noncontiguous_out_inplace(dtype, rng):
    base = rng.standard_normal((8, 10)).astype(dtype)
    X = base[:, ::2]
    X.flags.writeable = False
    Y = F.dropout(X, 0.5, 11)
    np.testing.assert_array_equal(Y, F.dropout(np.ascontiguousarray(X), 0.5, 11))
    out = np.empty((8, 5), dtype)
    assert F.dropout(X, 0.5, 11, out=out) is out
    Z = np.ascontiguousarray(X)
    F.dropout(Z, 0.5, 11, out=Z)
    np.testing.assert_array_equal(Z, Y)


def test_nan_propagates():
    X = np.full(64, np.nan)
    assert np.isnan(F.dropout(X, 0.5, 0)).all()


def test_validation():
    X = np.zeros(4, np.float32)
    for bad in (1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="Invalid dropout probability"):
            F.dropout(X, bad, 0)
    with pytest.raises(TypeError, match="Invalid dropout probability"):
        F.dropout(X, "0.5", 0)
    with pytest.raises(TypeError, match="seed must be an int"):
        F.dropout(X, 0.5, 1.5)
    with pytest.raises(ValueError, match="Invalid dropout mode 'scaled'"):
        F.dropout(X, 0.5, 0, mode="scaled")
    with pytest.raises(ValueError, match=r"out must have shape \(4,\)"):
        F.dropout(X, 0.5, 0, out=np.zeros(5, np.float32))
    # seeds are taken modulo 2^64: negative and huge seeds work
    np.testing.assert_array_equal(F.dropout_mask(10, 0.5, -1), F.dropout_mask(10, 0.5, 2**64 - 1))
