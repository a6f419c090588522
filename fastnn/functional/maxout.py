"""Maxout: the max over groups of k units (Goodfellow et al., 2013, "Maxout Networks"; the
lecture's "max-pooling over units"). ``y[i, j] = max_p z[i, j k + p]``, with the winning ``p``
kept for the backward, which routes ``grad_y[i, j]`` to that unit alone.

NaN wins the max (like NumPy); ties go to the first unit of the group (like ``np.argmax``).

References
----------
Goodfellow, I. J., Warde-Farley, D., Mirza, M., Courville, A. and Bengio, Y. (2013). Maxout
networks. ICML, PMLR 28(3), 1319-1327.
"""
from __future__ import annotations

import numbers

import numpy as np

from fastnn._kernels import maxout as _k
from fastnn._threads import resolve_n_threads
from fastnn._validation import check_float_array, check_no_overlap, check_out

__all__ = ["maxout", "maxout_backward"]


def _check_pieces(k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"pieces must be a positive int, got {k!r}")
    return int(k)


def maxout(z, pieces, out=None, arg_out=None, n_threads=None):
    """Group max of ``z`` over consecutive groups of ``pieces`` columns.

    Parameters
    ----------
    z : ndarray (n_samples, units * pieces), float32 or float64
    pieces : int
        Units per group (k >= 1).
    out : ndarray (n_samples, units), optional
        C-contiguous output of z's dtype.
    arg_out : ndarray (n_samples, units) of int32, optional
        Receives the index of the winning unit within each group.
    n_threads : int, optional

    Returns
    -------
    (y, arg) : ndarray (n_samples, units) of z's dtype, ndarray (n_samples, units) of int32
    """
    k = _check_pieces(pieces)
    z = check_float_array(z, "z", ndim=2)
    if z.shape[1] % k:
        raise ValueError(f"z has {z.shape[1]} columns, not a multiple of pieces={k}")
    shape = (z.shape[0], z.shape[1] // k)
    if out is None:
        out = np.empty(shape, dtype=z.dtype)
    else:
        check_out(out, "out", shape, z.dtype)
        check_no_overlap(out, "out", z=z)
    if arg_out is None:
        arg_out = np.empty(shape, dtype=np.int32)
    else:
        check_out(arg_out, "arg_out", shape, np.int32)
        check_no_overlap(arg_out, "arg_out", z=z, y=out)
    _k.maxout_forward(z, out, arg_out, k, resolve_n_threads(n_threads))
    return out, arg_out


def maxout_backward(grad_y, arg, pieces, out=None, n_threads=None) -> np.ndarray:
    """``grad_z``: ``grad_y[i, j]`` at column ``j k + arg[i, j]``, 0 elsewhere.

    Parameters
    ----------
    grad_y : ndarray (n_samples, units), float32 or float64
    arg : ndarray (n_samples, units) of integers in [0, pieces)
        The winners from :func:`maxout`.
    pieces : int
    out : ndarray (n_samples, units * pieces), optional
    n_threads : int, optional

    Returns
    -------
    grad_z : ndarray (n_samples, units * pieces), grad_y's dtype
    """
    k = _check_pieces(pieces)
    grad_y = check_float_array(grad_y, "grad_y", ndim=2)
    arg = np.asarray(arg)
    if arg.shape != grad_y.shape:
        raise ValueError(f"arg must have grad_y's shape {grad_y.shape}, got {arg.shape}")
    if arg.dtype.kind not in "iu":
        raise TypeError(f"arg must hold integers, got dtype {arg.dtype}")
    if arg.size and (arg.min() < 0 or arg.max() >= k):
        raise ValueError(f"arg must hold indices in [0, {k}), got values in "
                         f"[{arg.min()}, {arg.max()}]")
    arg = np.ascontiguousarray(arg, dtype=np.int32)
    shape = (grad_y.shape[0], grad_y.shape[1] * k)
    if out is None:
        out = np.empty(shape, dtype=grad_y.dtype)
    else:
        check_out(out, "out", shape, grad_y.dtype)
        check_no_overlap(out, "out", grad_y=grad_y, arg=arg)
    _k.maxout_backward(grad_y, arg, out, k, resolve_n_threads(n_threads))
    return out
