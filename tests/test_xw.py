"""The one-row product of _blas (xw: y = x W for one input row), behind the batch-1 paths of the
Dense kernel and of one-call inference: its own kernel against a float64 NumPy reference at edge
sizes, the same bits for any slice of the columns (what lets inference split a request's
columns over threads), and BLAS GEMV above the size limit."""
import numpy as np
import pytest

from fastnn._kernels import _blas

DTYPES = [np.float32, np.float64]
SHAPES = [(0, 5), (1, 1), (1, 64), (3, 31), (5, 130), (37, 65), (64, 63), (257, 33), (784, 256)]


@pytest.fixture(params=["own", "blas"])
def side(request):
    old = _blas.set_xw_own_max_bytes(0 if request.param == "blas" else 1 << 40)
    yield request.param
    _blas.set_xw_own_max_bytes(old)


def _case(k, n, dtype, seed=0):
    rng = np.random.default_rng(seed + 7 * k + n)
    return rng.standard_normal(k).astype(dtype), rng.standard_normal((k, n)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,n", SHAPES)
def test_against_numpy(k, n, dtype, side):
    x, W = _case(k, n, dtype)
    y = _blas.py_xw(x, W, 0, n)
    assert y.dtype == dtype and y.shape == (n,)
    ref = x.astype(np.float64) @ W.astype(np.float64)
    # a sum of k products: the error grows with k (sequential sums in the own kernel)
    eps = np.finfo(dtype).eps
    bound = 2 * max(k, 1) * eps * (np.abs(x.astype(np.float64)) @ np.abs(W.astype(np.float64)))
    assert np.all(np.abs(y - ref) <= bound + np.finfo(dtype).tiny)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,n", SHAPES)
def test_own_kernel_is_the_sum_in_row_order(k, n, dtype):
    """The own kernel's exact definition: y = (((0 + x0 W0) + x1 W1) + ...) in the dtype, one
    rounding per product and per sum: NumPy's elementwise operations give the same bits."""
    x, W = _case(k, n, dtype, seed=2)
    acc = np.zeros(n, dtype)
    for i in range(k):
        acc = acc + x[i] * W[i]
    old = _blas.set_xw_own_max_bytes(1 << 40)
    try:
        assert _blas.py_xw(x, W, 0, n).tobytes() == acc.tobytes()
    finally:
        _blas.set_xw_own_max_bytes(old)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,n", [(37, 65), (784, 256), (5, 130), (64, 200)])
def test_any_column_slice_same_bits(k, n, dtype):
    """Each column is the same bits whichever slice (or thread) computes it."""
    x, W = _case(k, n, dtype, seed=1)
    whole = _blas.py_xw(x, W, 0, n)
    rng = np.random.default_rng(n)
    for _ in range(5):
        cuts = np.unique(np.concatenate([[0, n], rng.integers(0, n + 1, 4)]))
        parts = np.concatenate([_blas.py_xw(x, W, a, b) for a, b in zip(cuts[:-1], cuts[1:])])
        assert parts.tobytes() == whole.tobytes()


def test_nan_and_inf_propagate():
    x, W = _case(20, 70, np.float32)
    W[3, 5] = np.inf
    x[7] = np.nan
    y = _blas.py_xw(x, W, 0, 70)
    assert np.isnan(y).all()    # x[7] is NaN: every column sums a NaN product
    x[7] = 0.0
    y = _blas.py_xw(x, W, 0, 70)
    assert np.isinf(y[5]) and np.isfinite(np.delete(y, 5)).all()


def test_size_limit_chooses_the_kernel():
    x, W = _case(300, 100, np.float32)
    old = _blas.set_xw_own_max_bytes(300 * 100 * 4)
    try:
        own = _blas.py_xw(x, W, 0, 100)
        assert _blas.set_xw_own_max_bytes(300 * 100 * 4 - 1) == 300 * 100 * 4
        blas = _blas.py_xw(x, W, 0, 100)
    finally:
        _blas.set_xw_own_max_bytes(old)
    ref = x.astype(np.float64) @ W.astype(np.float64)
    np.testing.assert_allclose(own, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(blas, ref, rtol=1e-4, atol=1e-4)
    assert _blas.simd_level() in ("baseline", "avx2", "avx512")


def test_bad_slices_raise():
    x, W = _case(4, 6, np.float64)
    for j0, j1 in ((-1, 3), (4, 3), (0, 7)):
        with pytest.raises(ValueError):
            _blas.py_xw(x, W, j0, j1)
    with pytest.raises(ValueError):
        _blas.py_xw(x[:3], W, 0, 6)
