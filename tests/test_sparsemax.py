"""sparsemax: exact references, properties, adversarial rows, methods, threads, backward."""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastnn.functional as F
from fastnn._kernels import sparsemax as _kernel

METHODS = ["auto", "sort", "select"]


def sparsemax_exact(row):
    """The lecture's algorithm in exact rational arithmetic (float inputs converted exactly)."""
    finite = [Fraction(float(v)) for v in row if v != -np.inf]  # -inf entries get 0
    zs = sorted(finite, reverse=True)
    cum, k_best, cum_best = Fraction(0), 1, zs[0]
    for k, v in enumerate(zs, start=1):
        cum += v
        if 1 + k * v > cum:
            k_best, cum_best = k, cum
    tau = (cum_best - 1) / k_best
    return np.array([0.0 if v == -np.inf else float(max(Fraction(float(v)) - tau, 0))
                     for v in row])


def sparsemax_longdouble(z):
    """Vectorized sort-based sparsemax in np.longdouble (rows of a 2-D array)."""
    z = np.asarray(z, np.longdouble)
    u = z - z.max(axis=1, keepdims=True)
    s = -np.sort(-u, axis=1)
    cs = np.cumsum(s, axis=1)
    k = np.arange(1, z.shape[1] + 1, dtype=np.longdouble)
    kk = (1 + k * s > cs).sum(axis=1)
    tau = (cs[np.arange(z.shape[0]), kk - 1] - 1) / kk
    return np.maximum(u - tau[:, None], 0).astype(np.float64)


def _atol(dtype):
    return 3e-7 if np.dtype(dtype) == np.float32 else 2e-15


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (3, 2), (9, 13), (4, 257)])
def test_matches_exact_reference(method, shape, dtype, n_threads, rng):
    z = (rng.standard_normal(shape) * rng.choice([0.1, 1.0, 5.0], size=(shape[0], 1))).astype(dtype)
    p = F.sparsemax(z, method=method, n_threads=n_threads)
    assert p.dtype == dtype and p.shape == shape
    ref = np.array([sparsemax_exact(r) for r in z])
    np.testing.assert_allclose(p, ref, rtol=0, atol=_atol(dtype))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("C", [1000, 20000])
def test_matches_longdouble_reference_large(method, C, dtype, rng):
    z = (rng.standard_normal((3, C)) * np.array([[0.05], [1.0], [30.0]])).astype(dtype)
    p = F.sparsemax(z, method=method)
    ref = sparsemax_longdouble(z)
    np.testing.assert_allclose(p, ref, rtol=0, atol=_atol(dtype) * (10 if C > 1000 else 1))
    assert abs(p.astype(np.float64).sum(axis=1) - 1).max() < (1e-5 if dtype == np.float32
                                                              else 1e-12)


def test_float32_sums_at_1e5(rng):
    z = rng.standard_normal((2, 100_000)).astype(np.float32) * np.float32(0.001)
    for method in METHODS:
        p = F.sparsemax(z, method=method)
        assert np.abs(p.astype(np.float64).sum(axis=1) - 1).max() < 1e-5
        np.testing.assert_allclose(p, sparsemax_longdouble(z), atol=1e-7)


@pytest.mark.parametrize("method", METHODS)
def test_properties(method, rng):
    z = rng.standard_normal((20, 11)) * 2
    p = F.sparsemax(z, method=method)
    assert (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-14)
    # invariance to z + c (exact c so that z + c is exact)
    np.testing.assert_allclose(F.sparsemax(z + 8.0, method=method), p, atol=1e-14)
    # permutation equivariance
    perm = rng.permutation(11)
    np.testing.assert_allclose(F.sparsemax(z[:, perm], method=method), p[:, perm], atol=1e-15)
    # idempotent on the simplex
    np.testing.assert_allclose(F.sparsemax(p, method=method), p, atol=1e-15)
    # a sparse output is sparse: some rows have exact zeros
    assert (p == 0).any()


@pytest.mark.parametrize("method", METHODS)
def test_two_dimensions_is_hard_sigmoid(method):
    t = np.linspace(-2, 2, 81)
    # z = (t, 0): the lecture's parametrization, p_1 = clip((1 + t) / 2, 0, 1)
    p = F.sparsemax(np.stack([t, np.zeros_like(t)], axis=1), method=method)
    np.testing.assert_allclose(p[:, 0], np.clip((1 + t) / 2, 0, 1), atol=1e-15)
    # z = (t, -t): p_1 - p_2 = 2t and p_1 + p_2 = 1 inside, so p_1 = clip((1 + 2t) / 2, 0, 1)
    p = F.sparsemax(np.stack([t, -t], axis=1), method=method)
    np.testing.assert_allclose(p[:, 0], np.clip((1 + 2 * t) / 2, 0, 1), atol=1e-15)
    np.testing.assert_allclose(p[:, 1], 1 - p[:, 0], atol=1e-15)


def _adversarial_rows():
    C = 9
    a = np.arange(C, dtype=np.float64)
    rows = {
        "ties": np.array([1, 1, 1, 0.5, 0.5, 0, 0, -3, 1.0]),
        "all_equal": np.full(C, 3.0),
        "one_huge": np.r_[1e30, np.zeros(C - 1)],
        "ascending": a,
        "descending": a[::-1].copy(),
        "ascending_fine": a * 0.01,
        "scale_1e30": np.linspace(-1, 1, C) * 1e30,
        "scale_1e-30": np.linspace(-1, 1, C) * 1e-30,
        "neg_inf": np.array([-np.inf, 0.2, -np.inf, 0.1, 0.0, -np.inf, -5, 0.3, -np.inf]),
        "offset_1e6": 1e6 + np.linspace(-1, 1, C),
        "offset_2p53": 2.0**53 + 2 * np.array([0, 1, 1, 0, -3, 0, 1, -1, 0.0]),
        "offset_neg_2p60": -(2.0**60) + 256 * np.array([0, 1, 1, 0, -3, 0, 1, -1, 0.0]),
        "near_one_gap": np.array([1.0, 0.0, 0.0, -1e-300, 0, 0, 0, 0, 0]),
        "gap_exactly_one": np.r_[1.0, np.zeros(C - 1)],
    }
    return rows


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", sorted(_adversarial_rows()))
def test_adversarial_rows(name, method, dtype):
    row = _adversarial_rows()[name].astype(dtype)
    z = np.stack([row, row[::-1]])
    p = F.sparsemax(z, method=method)
    assert np.isfinite(p).all()
    assert (p >= 0).all()
    np.testing.assert_allclose(p.astype(np.float64).sum(axis=1), 1, atol=1e-6 if dtype == np.float32
                               else 1e-14)
    ref = np.array([sparsemax_exact(r) for r in z])
    np.testing.assert_allclose(p, ref, atol=_atol(dtype))
    # -inf gives exactly 0
    assert (p[np.isneginf(z)] == 0).all()


def test_special_values_exact():
    assert F.sparsemax(np.array([5.0])).tolist() == [1.0]
    assert F.sparsemax(np.array([[7.0]], np.float32)).tolist() == [[1.0]]
    np.testing.assert_array_equal(F.sparsemax(np.full((2, 4), -2.5)), np.full((2, 4), 0.25))
    np.testing.assert_array_equal(F.sparsemax(np.array([1e30, 0, -1e30])), [1, 0, 0])
    # offsets beyond 2^53: without the shift 1 + z == z and the support would come out empty
    np.testing.assert_array_equal(F.sparsemax(np.array([2.0**60, 2.0**60])), [0.5, 0.5])


@pytest.mark.parametrize("method", METHODS)
def test_nonfinite_policy(method, dtype):
    z = np.array([[1, np.nan, 2], [0, np.inf, 1], [-np.inf, -np.inf, -np.inf],
                  [-np.inf, 0, 1], [np.nan, np.nan, np.nan], [-np.inf, np.inf, 0]], dtype)
    p = F.sparsemax(z, method=method)
    assert np.isnan(p[[0, 1, 2, 4, 5]]).all()
    np.testing.assert_array_equal(p[3], [0, 0, 1])


def test_empty():
    assert F.sparsemax(np.zeros((0, 5))).shape == (0, 5)
    assert F.sparsemax(np.zeros((3, 0))).shape == (3, 0)
    assert F.sparsemax_backward(np.zeros((0, 5)), np.zeros((0, 5))).shape == (0, 5)


def test_methods_agree_with_ties_and_many_candidates(rng):
    # small integer grids: many ties; dense candidates: all entries within 1 of the max
    z1 = rng.integers(-3, 3, size=(50, 40)).astype(np.float64) * 0.25
    z2 = -np.sort(rng.random((6, 5000)), axis=1)  # all candidates, sorted: many Michelot passes
    z3 = -np.linspace(0, 0.999, 3000)[None, :] ** 3  # convex ascending gaps
    for z in (z1, z2, z3):
        ps = [F.sparsemax(z, method=m) for m in METHODS]
        np.testing.assert_allclose(ps[1], ps[0], atol=1e-14)
        np.testing.assert_allclose(ps[2], ps[0], atol=1e-14)
        np.testing.assert_allclose(ps[0], sparsemax_longdouble(z), atol=1e-14)


@pytest.mark.parametrize("method", METHODS)
def test_threads_identical(method, dtype, rng):
    z = rng.standard_normal((300, 900)).astype(dtype)  # above PARALLEL_MIN_ELEMENTS
    assert z.size >= _kernel.PARALLEL_MIN_ELEMENTS
    p1 = F.sparsemax(z, method=method, n_threads=1)
    p2 = F.sparsemax(z, method=method, n_threads=2)
    np.testing.assert_array_equal(p1, p2)
    g = rng.standard_normal(z.shape).astype(dtype)
    np.testing.assert_array_equal(F.sparsemax_backward(p1, g, n_threads=1),
                                  F.sparsemax_backward(p1, g, n_threads=2))


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_any_axis(axis, rng):
    z = rng.standard_normal((3, 4, 5))
    p = F.sparsemax(z, axis=axis)
    ref = np.moveaxis(sparsemax_longdouble(np.moveaxis(z, axis, -1).reshape(-1, z.shape[axis]))
                      .reshape(np.moveaxis(z, axis, -1).shape), -1, axis)
    np.testing.assert_allclose(p, ref, atol=1e-15)
    out = np.empty_like(z)
    assert F.sparsemax(z, axis=axis, out=out) is out
    np.testing.assert_array_equal(out, p)
    g = rng.standard_normal(z.shape)
    gz = F.sparsemax_backward(p, g, axis=axis)
    gz_ref = np.moveaxis(F.sparsemax_backward(np.moveaxis(p, axis, -1), np.moveaxis(g, axis, -1)),
                         -1, axis)
    np.testing.assert_allclose(gz, gz_ref, atol=1e-15)


def test_readonly_noncontiguous_inputs_untouched(dtype, rng):
    base = rng.standard_normal((8, 30)).astype(dtype)
    z = base[:, ::3]  # non-contiguous
    z_copy = z.copy()
    ro = np.ascontiguousarray(z)
    ro.flags.writeable = False
    for method in METHODS:
        p = F.sparsemax(z, method=method)
        np.testing.assert_array_equal(z, z_copy)
        np.testing.assert_array_equal(F.sparsemax(ro, method=method), p)
        np.testing.assert_array_equal(F.sparsemax(np.asfortranarray(z), method=method), p)


def test_errors():
    with pytest.raises(ValueError, match="method"):
        F.sparsemax(np.zeros((2, 3)), method="bisect")
    with pytest.raises(TypeError):
        F.sparsemax(np.zeros((2, 3), np.int64).astype(object))
    with pytest.raises(ValueError, match="scalar"):
        F.sparsemax(np.float64(1.0))
    with pytest.raises(ValueError, match="shape"):
        F.sparsemax(np.zeros((2, 3)), out=np.empty((3, 2)))
    with pytest.raises(TypeError, match="dtype"):
        F.sparsemax(np.zeros((2, 3)), out=np.empty((2, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        F.sparsemax_backward(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(TypeError, match="dtype"):
        F.sparsemax_backward(np.zeros((2, 3)), np.zeros((2, 3), np.float32))


def test_backward_finite_differences(rng):
    """The JVP (= VJP: the Jacobian is symmetric) against central differences in float64."""
    for C in (2, 5, 40):
        z = rng.standard_normal((6, C)) * 2
        p = F.sparsemax(z)
        tau = (z - p)[np.arange(6), p.argmax(axis=1)]
        assert np.abs(z - tau[:, None]).min() > 1e-4  # away from kinks
        v = rng.standard_normal(z.shape)
        eps = 1e-6
        fd = (F.sparsemax(z + eps * v) - F.sparsemax(z - eps * v)) / (2 * eps)
        np.testing.assert_allclose(F.sparsemax_backward(p, v), fd, atol=1e-8)
        # symmetric Jacobian: <w, J v> == <J w, v>
        w = rng.standard_normal(z.shape)
        np.testing.assert_allclose((w * F.sparsemax_backward(p, v)).sum(),
                                   (F.sparsemax_backward(p, w) * v).sum(), rtol=1e-12)


def test_backward_float32_matches_float64(rng):
    z = rng.standard_normal((7, 19))
    p = F.sparsemax(z)
    g = rng.standard_normal(z.shape)
    g32 = F.sparsemax_backward(p.astype(np.float32), g.astype(np.float32))
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32, F.sparsemax_backward(p, g), atol=2e-6)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=12),
                  elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)))
def test_hypothesis_simplex_and_methods_agree(z):
    if z.shape[1] == 0:
        return
    ps = [F.sparsemax(z, method=m) for m in METHODS]
    for p in ps:
        assert (p >= 0).all()
        np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-9)
        np.testing.assert_allclose(p, ps[0], atol=1e-9)
    np.testing.assert_allclose(ps[0], np.array([sparsemax_exact(r) for r in z]), atol=1e-9)


@pytest.fixture
def parallel_everywhere():
    """Force the OpenMP path even for tiny inputs (the threshold is restored afterwards)."""
    from fastnn._kernels import losses as kl
    from fastnn._kernels import softmax as ks
    mods = (ks, _kernel, kl)
    old = [m.set_parallel_threshold("min_elements", 0) for m in mods]
    yield
    for m, v in zip(mods, old):
        m.set_parallel_threshold("min_elements", v)


@pytest.mark.parametrize("shape", [(2, 1), (3, 5), (7, 33)])
def test_parallel_path_small_shapes(parallel_everywhere, shape, dtype, rng):
    z = rng.standard_normal(shape).astype(dtype)
    y = rng.integers(0, shape[1], shape[0])
    Y = rng.random(shape) < 0.5
    Y[:, 0] = True
    for nt in (2, 3):
        for method in METHODS:
            np.testing.assert_array_equal(F.sparsemax(z, method=method, n_threads=nt),
                                          F.sparsemax(z, method=method, n_threads=1))
        for fn in (F.softmax, F.log_softmax):
            np.testing.assert_array_equal(fn(z, n_threads=nt), fn(z, n_threads=1))
        for loss, target in ((F.cross_entropy, y), (F.sparsemax_loss, y), (F.sparsemax_loss, Y)):
            l1, g1 = loss(z, target, return_grad=True, n_threads=1)
            l2, g2 = loss(z, target, return_grad=True, n_threads=nt)
            assert l1 == l2
            np.testing.assert_array_equal(g1, g2)
        l1 = F.binary_cross_entropy(z[:, 0], y > 0, reduction="none", n_threads=1)
        np.testing.assert_array_equal(
            F.binary_cross_entropy(z[:, 0], y > 0, reduction="none", n_threads=nt), l1)


def test_auto_handover_to_select(rng):
    """"auto" hands its remaining candidates to "select" after a bounded number of Michelot
    passes; force the hand-over after one pass and check it stays exact."""
    rows = [rng.standard_normal((20, 50)), -np.sort(rng.random((5, 3000)), axis=1),
            -np.linspace(0, 0.999, 500)[None, :] ** 0.2, np.full((2, 7), 1.5),
            rng.integers(-2, 2, size=(30, 12)).astype(np.float64) * 0.5]
    for z in rows:
        for dtype in (np.float64, np.float32):
            zz = np.ascontiguousarray(z, dtype=dtype)
            p = np.empty_like(zz)
            _kernel.sparsemax_forward(zz, p, _kernel._AUTO_HANDOVER_NOW, 1)
            np.testing.assert_allclose(p, F.sparsemax(zz, method="sort"), atol=_atol(dtype) * 10)
