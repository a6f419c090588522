"""softmax / log_softmax and their backward: references, stability, exp accuracy, threads."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastnn.functional as F
from fastnn._kernels import softmax as _kernel


def tol(dtype):
    return (2e-5, 2e-6) if np.dtype(dtype) == np.float32 else (1e-12, 1e-13)


def softmax_ref(z, axis=-1):
    z = np.asarray(z, np.longdouble)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float64)


def log_softmax_ref(z, axis=-1):
    z = np.asarray(z, np.longdouble)
    u = z - z.max(axis=axis, keepdims=True)
    return (u - np.log(np.exp(u).sum(axis=axis, keepdims=True))).astype(np.float64)


SHAPES = [(1, 1), (1, 9), (6, 1), (7, 13), (33, 100), (3, 1025)]


@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_reference(shape, dtype, n_threads, rng):
    z = (rng.standard_normal(shape) * 4).astype(dtype)
    p = F.softmax(z, n_threads=n_threads)
    assert p.dtype == dtype and p.shape == shape
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(p, softmax_ref(z), rtol=rtol, atol=atol)


@pytest.mark.parametrize("shape", SHAPES)
def test_log_softmax_reference(shape, dtype, n_threads, rng):
    z = (rng.standard_normal(shape) * 4).astype(dtype)
    lp = F.log_softmax(z, n_threads=n_threads)
    assert lp.dtype == dtype
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(lp, log_softmax_ref(z), rtol=rtol, atol=atol * 10)


def _exp_via_kernel(x):
    """exp(x) through log_softmax_backward: g - exp(lp) * sum(g) with lp = (x, 0), g = (0, 1)."""
    lp = np.stack([x, np.zeros_like(x)], axis=1)
    g = np.zeros_like(lp)
    g[:, 1] = 1
    return -F.log_softmax_backward(lp, g)[:, 0]


def test_exp_accuracy_float64():
    x = np.concatenate([np.linspace(-745.2, 709.7, 200_001), np.linspace(-1, 1, 10_001),
                        [0.0, -0.0, 1e-300, -1e-300, 709.78, -708.4, -744.4]])
    got = _exp_via_kernel(x)
    ref_ld = np.exp(x.astype(np.longdouble))  # ~ correctly rounded once rounded to float64
    ref = ref_ld.astype(np.float64)
    normal = ref >= np.finfo(np.float64).tiny
    ulp = np.spacing(ref[normal]).astype(np.longdouble)
    assert (np.abs(got[normal].astype(np.longdouble) - ref_ld[normal]) / ulp).max() < 3.0
    # gradual underflow: absolute error within a couple of the smallest subnormals
    assert np.abs(got[~normal] - ref[~normal]).max() <= 2 * 5e-324
    np.testing.assert_array_equal(_exp_via_kernel(np.array([-np.inf, -1e300, -800.0])), 0)
    assert np.isnan(_exp_via_kernel(np.array([np.nan]))).all()
    assert np.isinf(_exp_via_kernel(np.array([710.0, 1e300]))).all()


def test_exp_accuracy_float32():
    x = np.linspace(-103.0, 88.7, 200_001).astype(np.float32)
    got = _exp_via_kernel(x).astype(np.float64)
    ref = np.exp(x.astype(np.float64))
    normal = ref >= np.finfo(np.float32).tiny
    ulp = np.spacing(ref[normal].astype(np.float32)).astype(np.float64)
    assert (np.abs(got[normal] - ref[normal]) / ulp).max() < 1.5
    assert np.abs(got[~normal] - ref[~normal]).max() <= 2 * 1.5e-45
    np.testing.assert_array_equal(_exp_via_kernel(np.array([-np.inf, -1e30], np.float32)), 0)


def test_stability_and_special_values(dtype):
    z = np.array([[1e30, 0, -1e30], [1000, 1000, 1000], [-1000, -1001, -1e4],
                  [-np.inf, 0, 1], [3, -np.inf, -np.inf]], dtype)
    p = F.softmax(z)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.astype(np.float64).sum(axis=1), 1, atol=1e-6)
    np.testing.assert_array_equal(p[0], [1, 0, 0])
    np.testing.assert_allclose(p[1], 1 / 3, rtol=1e-6)
    assert p[3, 0] == 0 and p[4].tolist() == [1, 0, 0]
    lp = F.log_softmax(z)
    assert lp[3, 0] == -np.inf and lp[4, 0] == 0
    assert np.isfinite(lp[:3]).all()
    assert F.softmax(np.array([2.5], dtype)).tolist() == [1.0]


@pytest.mark.parametrize("n", [63, 64, 65, 127, 128, 129, 200, 1000, 1007])
def test_row_max_and_min_anywhere(n, dtype, rng):
    """The row's max and min are read in 64 lanes with an overlapping last block: the max
    at the first entry, the last, inside the overlap and elsewhere; a -inf anywhere; a NaN
    anywhere (the row all NaN)."""
    base = (rng.standard_normal(n) * 3).astype(dtype)
    rows = []
    for pos in sorted({0, n - 1, n - 65 if n > 65 else 1, n // 2, n - (n % 64) - 1}):
        r = base.copy()
        r[pos] = 1000     # a max the lanes miss overflows exp (past 88 or 709)
        r[(pos + 7) % n] = -200    # the min far below: exp's full path (range past -87)
        rows.append(r)
        r = base.copy()
        r[pos] = -np.inf
        rows.append(r)
    z = np.stack(rows)
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(F.softmax(z), softmax_ref(z), rtol=rtol, atol=atol)
    np.testing.assert_allclose(F.log_softmax(z), log_softmax_ref(z), rtol=rtol, atol=atol * 10)
    for pos in (0, n // 2, n - 1):
        r = base.copy()
        r[pos] = np.nan
        assert np.isnan(F.softmax(r[None])).all() and np.isnan(F.log_softmax(r[None])).all()


def test_nonfinite_policy(dtype):
    z = np.array([[1, np.nan, 2], [0, np.inf, 1], [-np.inf, -np.inf, -np.inf]], dtype)
    assert np.isnan(F.softmax(z)).all()
    assert np.isnan(F.log_softmax(z)).all()


def test_properties(rng):
    z = rng.standard_normal((10, 17)) * 3
    p = F.softmax(z)
    assert (p > 0).all()
    np.testing.assert_allclose(F.softmax(z + 1e3), p, rtol=1e-12)
    perm = rng.permutation(17)
    np.testing.assert_allclose(F.softmax(z[:, perm]), p[:, perm], rtol=1e-14)
    np.testing.assert_allclose(np.exp(F.log_softmax(z)), p, rtol=1e-14)
    # 2-D softmax is the logistic sigmoid of the difference
    t = np.linspace(-30, 30, 101)
    p2 = F.softmax(np.stack([t, np.zeros_like(t)], axis=1))
    np.testing.assert_allclose(p2[:, 0], 1 / (1 + np.exp(-t)), rtol=1e-14)


def test_empty():
    assert F.softmax(np.zeros((0, 3))).shape == (0, 3)
    assert F.log_softmax(np.zeros((4, 0), np.float32)).shape == (4, 0)
    assert F.softmax_backward(np.zeros((0, 3)), np.zeros((0, 3))).shape == (0, 3)


def test_threads_identical(dtype, rng):
    z = rng.standard_normal((300, 900)).astype(dtype)
    assert z.size >= _kernel.PARALLEL_MIN_ELEMENTS
    for fn in (F.softmax, F.log_softmax):
        np.testing.assert_array_equal(fn(z, n_threads=1), fn(z, n_threads=2))
    p = F.softmax(z)
    g = rng.standard_normal(z.shape).astype(dtype)
    np.testing.assert_array_equal(F.softmax_backward(p, g, n_threads=1),
                                  F.softmax_backward(p, g, n_threads=2))


@pytest.mark.parametrize("axis", [0, 1, -1, 2])
def test_any_axis_and_out(axis, rng):
    z = rng.standard_normal((4, 5, 6))
    p = F.softmax(z, axis=axis)
    np.testing.assert_allclose(p, softmax_ref(z, axis=axis), rtol=1e-13)
    np.testing.assert_allclose(F.log_softmax(z, axis=axis), log_softmax_ref(z, axis=axis),
                               rtol=1e-13, atol=1e-14)
    out = np.empty_like(z)
    assert F.softmax(z, axis=axis, out=out) is out
    np.testing.assert_array_equal(out, p)


def test_readonly_noncontiguous(dtype, rng):
    z = rng.standard_normal((9, 40)).astype(dtype)[::2, ::3]
    z0 = z.copy()
    ro = np.ascontiguousarray(z)
    ro.flags.writeable = False
    p = F.softmax(z)
    np.testing.assert_array_equal(z, z0)
    np.testing.assert_array_equal(F.softmax(ro), p)
    np.testing.assert_array_equal(F.softmax(np.asfortranarray(z)), p)


def _fd_vjp(fn, z, v, w, eps=1e-6):
    """Directional derivative <w, J v> by central differences."""
    return ((w * fn(z + eps * v)).sum() - (w * fn(z - eps * v)).sum()) / (2 * eps)


@pytest.mark.parametrize("axis", [-1, 0])
def test_backward_finite_differences(axis, rng):
    z = rng.standard_normal((5, 7)) * 2
    p = F.softmax(z, axis=axis)
    lp = F.log_softmax(z, axis=axis)
    for _ in range(3):
        v = rng.standard_normal(z.shape)
        w = rng.standard_normal(z.shape)
        # VJP: <J^T w, v> == <w, J v>
        got = (F.softmax_backward(p, w, axis=axis) * v).sum()
        np.testing.assert_allclose(got, _fd_vjp(lambda a: F.softmax(a, axis=axis), z, v, w),
                                   rtol=1e-7, atol=1e-9)
        got = (F.log_softmax_backward(lp, w, axis=axis) * v).sum()
        np.testing.assert_allclose(got, _fd_vjp(lambda a: F.log_softmax(a, axis=axis), z, v, w),
                                   rtol=1e-7, atol=1e-9)
        # softmax's Jacobian is symmetric: the VJP is also the JVP
        fd_jvp = (F.softmax(z + 1e-6 * v, axis=axis) - F.softmax(z - 1e-6 * v, axis=axis)) / 2e-6
        np.testing.assert_allclose(F.softmax_backward(p, v, axis=axis), fd_jvp, atol=1e-9)


def test_backward_reference(dtype, n_threads, rng):
    z = rng.standard_normal((11, 23)).astype(dtype)
    g = rng.standard_normal(z.shape).astype(dtype)
    p = F.softmax(z)
    lp = F.log_softmax(z)
    p64, g64, lp64 = p.astype(np.float64), g.astype(np.float64), lp.astype(np.float64)
    rtol, atol = tol(dtype)
    ref = p64 * (g64 - (p64 * g64).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(F.softmax_backward(p, g, n_threads=n_threads), ref,
                               rtol=rtol, atol=atol * 5)
    ref = g64 - np.exp(lp64) * g64.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(F.log_softmax_backward(lp, g, n_threads=n_threads), ref,
                               rtol=rtol, atol=atol * 20)


def test_errors():
    with pytest.raises(ValueError, match="scalar"):
        F.softmax(np.float64(1.0))
    with pytest.raises(TypeError):
        F.softmax(np.array(["a"]))
    with pytest.raises(ValueError, match="read-only"):
        out = np.empty((2, 3))
        out.flags.writeable = False
        F.softmax(np.zeros((2, 3)), out=out)
    with pytest.raises(ValueError, match="shape"):
        F.softmax_backward(np.zeros((2, 3)), np.zeros((3, 2)))


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 30)),
                  elements=st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False)))
def test_hypothesis_simplex(z):
    p = F.softmax(z)
    assert np.isfinite(p).all() and (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-13)
    lp = F.log_softmax(z)
    assert (lp <= 0).all()
