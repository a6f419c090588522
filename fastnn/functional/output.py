"""Output maps onto the probability simplex: softmax, log-softmax, sparsemax, and their backward.

All functions work along any ``axis`` of an array of any number of dimensions (>= 1). The
kernels run over C-contiguous rows; the axis is moved last (a copy is made only when that view is
not C-contiguous) and the result is moved back. float32 and float64; the output has the input's
dtype. Read-only and non-contiguous inputs are accepted and never modified.

Policy for non-finite input, the same for every map: a row (the 1-D slice along ``axis``) that
contains NaN or +inf, or whose entries are all -inf, comes out as a row of NaN. Entries equal to
-inf in a row with a finite maximum get exactly 0.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.array_utils import normalize_axis_index

from fastnn._kernels import softmax as _softmax
from fastnn._kernels import sparsemax as _sparsemax
from fastnn._threads import resolve_n_threads
from fastnn._validation import FLOAT_DTYPES, check_float_array, check_out, check_same_dtype

__all__ = [
    "SPARSEMAX_METHODS",
    "log_softmax",
    "log_softmax_backward",
    "softmax",
    "softmax_backward",
    "sparsemax",
    "sparsemax_backward",
]

SPARSEMAX_METHODS = ("auto", "sort", "select")


def _rows(a, axis: int, name: str):
    """(2-D C-contiguous rows of ``a`` with ``axis`` last, the moved shape, normalized axis)."""
    a = check_float_array(a, name, contiguous=False)
    if a.ndim == 0:
        raise ValueError(f"{name} must have at least 1 dimension, got a scalar")
    axis = normalize_axis_index(axis, a.ndim)
    moved = np.moveaxis(a, axis, -1)
    rows = np.ascontiguousarray(moved).reshape(_n_rows(moved.shape), moved.shape[-1])
    return rows, moved.shape, axis


def _n_rows(moved_shape) -> int:
    return math.prod(moved_shape[:-1])


def _result(rows_out_fn, shape_like: np.ndarray, moved_shape, axis: int, out, name="out"):
    """Call ``rows_out_fn(dest_rows)`` with a destination and return the array in input layout."""
    ndim = shape_like.ndim
    if out is not None:
        check_out(out, name, shape_like.shape, shape_like.dtype)
        if axis == ndim - 1:
            rows_out_fn(out.reshape(_n_rows(moved_shape), moved_shape[-1]))
            return out
    dest = np.empty(moved_shape, shape_like.dtype)
    rows_out_fn(dest.reshape(_n_rows(moved_shape), moved_shape[-1]))
    res = np.moveaxis(dest, -1, axis)
    if out is not None:
        out[...] = res
        return out
    return res


def _last_axis_rows(z, axis):
    """Fast path: z C-contiguous float and ``axis`` is the last one: its rows, without copies;
    None when the general path is needed."""
    if (type(z) is np.ndarray and z.ndim >= 1 and (axis == -1 or axis == z.ndim - 1)
            and z.flags.c_contiguous and z.dtype in FLOAT_DTYPES):
        return z if z.ndim == 2 else z.reshape(_n_rows(z.shape), z.shape[-1])
    return None


def _forward(z, axis, out, n_threads, kernel, name="z"):
    nt = resolve_n_threads(n_threads)
    rows = _last_axis_rows(z, axis)
    if rows is not None:
        if out is None:
            out = np.empty_like(z)
        else:
            check_out(out, "out", z.shape, z.dtype)
        kernel(rows, out.reshape(rows.shape), nt)
        return out
    z = check_float_array(z, name, contiguous=False)
    rows, moved_shape, axis = _rows(z, axis, name)
    return _result(lambda dest: kernel(rows, dest, nt), z, moved_shape, axis, out)


def _backward(y, g, axis, out, n_threads, kernel, y_name, g_name):
    y_rows = _last_axis_rows(y, axis)
    g_rows = _last_axis_rows(g, axis)
    if (y_rows is not None and g_rows is not None and y.shape == g.shape
            and y.dtype == g.dtype):
        nt = resolve_n_threads(n_threads)
        if out is None:
            out = np.empty_like(y)
        else:
            check_out(out, "out", y.shape, y.dtype)
        kernel(y_rows, g_rows, out.reshape(y_rows.shape), nt)
        return out
    y = check_float_array(y, y_name, contiguous=False)
    g = check_float_array(g, g_name, contiguous=False)
    check_same_dtype((y_name, y), (g_name, g))
    if y.shape != g.shape:
        raise ValueError(f"{g_name} must have the shape of {y_name} {y.shape}, got {g.shape}")
    y_rows, moved_shape, axis = _rows(y, axis, y_name)
    g_rows, _, _ = _rows(g, axis, g_name)
    nt = resolve_n_threads(n_threads)
    return _result(lambda dest: kernel(y_rows, g_rows, dest, nt), y, moved_shape, axis, out)


def softmax(z, axis=-1, out=None, n_threads=None):
    """Softmax along ``axis``: exp(z - max z) / sum exp(z - max z).

    Parameters
    ----------
    z : ndarray of float32 or float64, any shape with at least 1 dimension
    axis : int
        The axis that is normalized (classes).
    out : ndarray, optional
        Same shape and dtype as ``z``, C-contiguous, writeable.
    n_threads : int or None
        OpenMP threads over rows (None: the current OpenMP default).

    Returns
    -------
    p : ndarray, same shape and dtype as ``z``; non-negative, sums to 1 along ``axis``.
    """
    return _forward(z, axis, out, n_threads,
                    lambda r, d, nt: _softmax.softmax_forward(r, d, False, nt))


def log_softmax(z, axis=-1, out=None, n_threads=None):
    """Log-softmax along ``axis``: (z - max z) - log sum exp(z - max z). Shapes as softmax."""
    return _forward(z, axis, out, n_threads,
                    lambda r, d, nt: _softmax.softmax_forward(r, d, True, nt))


def softmax_backward(p, grad_p, axis=-1, out=None, n_threads=None):
    """Vector-Jacobian product of softmax at its output ``p``: p * (grad_p - <p, grad_p>).

    The Jacobian diag(p) - p p^T is symmetric, so this is also the Jacobian-vector product.
    ``p`` and ``grad_p``: same shape and dtype. Returns grad_z of that shape.
    """
    return _backward(p, grad_p, axis, out, n_threads,
                     lambda y, g, d, nt: _softmax.softmax_backward(y, g, d, False, nt),
                     "p", "grad_p")


def log_softmax_backward(logp, grad_logp, axis=-1, out=None, n_threads=None):
    """Vector-Jacobian product of log-softmax at its output ``logp``:
    grad_logp - exp(logp) * sum(grad_logp). Returns grad_z of the shape of ``logp``."""
    return _backward(logp, grad_logp, axis, out, n_threads,
                     lambda y, g, d, nt: _softmax.softmax_backward(y, g, d, True, nt),
                     "logp", "grad_logp")


def _method_code(method) -> int:
    if method not in SPARSEMAX_METHODS:
        raise ValueError(f"method must be one of {SPARSEMAX_METHODS}, got {method!r}")
    return _sparsemax.METHODS[method]


def sparsemax(z, axis=-1, method="auto", out=None, n_threads=None):
    """Sparsemax along ``axis`` (Martins & Astudillo, 2016): the Euclidean projection of z onto
    the probability simplex, p_i = max(z_i - tau, 0) with tau such that sum(p) = 1.

    Parameters
    ----------
    z : ndarray of float32 or float64, any shape with at least 1 dimension
    axis : int
    method : {"auto", "sort", "select"}
        "sort": the lecture's O(C log C) algorithm (sort, cumulative sums, k(z), tau).
        "select": linear-time threshold search by partitioning (median-of-three pivots with a
        median-of-medians fallback: worst-case linear, deterministic).
        "auto": the fastest exact method (Michelot's variable fixing from max(z) - 1, handing
        over to "select" after a bounded number of passes). All agree to rounding.
        tau is computed in float64 in coordinates shifted by max(z), for float32 data too.
    out : ndarray, optional
        Same shape and dtype as ``z``, C-contiguous, writeable.
    n_threads : int or None

    Returns
    -------
    p : ndarray, same shape and dtype as ``z``: non-negative, sums to 1 along ``axis``, often
        with exact zeros. A row with NaN or +inf, or all -inf, is NaN (see the module doc).

    References
    ----------
    Martins, A. F. T. and Astudillo, R. F. (2016). From softmax to sparsemax: a sparse model of
    attention and multi-label classification. ICML, PMLR 48, 1614-1623.

    Michelot, C. (1986). A finite algorithm for finding the projection of a point onto the
    canonical simplex of R^n. Journal of Optimization Theory and Applications 50, 195-200.
    """
    code = _method_code(method)
    return _forward(z, axis, out, n_threads,
                    lambda r, d, nt: _sparsemax.sparsemax_forward(r, d, code, nt))


def sparsemax_backward(p, grad_p, axis=-1, out=None, n_threads=None):
    """Jacobian-vector product of sparsemax at its output ``p``: s * (v - mean of v over the
    support), s = 1[p > 0], v = ``grad_p``. The Jacobian diag(s) - s s^T / ``|S|`` is symmetric, so
    this is also the vector-Jacobian product used by backpropagation."""
    return _backward(p, grad_p, axis, out, n_threads,
                     lambda y, g, d, nt: _sparsemax.sparsemax_backward(y, g, d, nt),
                     "p", "grad_p")
