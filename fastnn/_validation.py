"""Checks at the Python boundary: validate once, with the expected and the actual value."""
from __future__ import annotations

import numbers
import os

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: The largest ``n_threads`` accepted. An absurd count is an error, not an attempt: libgomp
#: asked for a team of 100,000 threads (above RLIMIT_NPROC) crashed the process with a segfault.
MAX_THREADS = max(1024, 4 * (os.cpu_count() or 1))


def check_n_threads(n_threads, *, type_error=TypeError):
    """``n_threads`` if it is None or an int in [1, MAX_THREADS]; else TypeError (not an int;
    ``type_error`` for callers whose convention is ValueError, as scikit-learn's) or
    ValueError (out of range)."""
    if n_threads is None or (type(n_threads) is int and 0 < n_threads <= MAX_THREADS):
        return n_threads
    if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral):
        raise type_error(f"n_threads must be None or a positive int, got {n_threads!r}")
    if n_threads <= 0:
        raise ValueError(f"n_threads must be None or a positive int, got {n_threads}")
    if n_threads > MAX_THREADS:
        raise ValueError(f"n_threads={n_threads} is more than fastnn allows ({MAX_THREADS}, "
                         f"fastnn._threads.MAX_THREADS); this machine has {os.cpu_count()} CPUs")
    return int(n_threads)


def check_float_dtype(dtype) -> np.dtype:
    """``dtype`` as a numpy dtype, float32 or float64; TypeError otherwise."""
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


#: The largest dimension fastnn's matrix products take: BLAS sizes are 32-bit ints.
BLAS_MAX_DIM = 2 ** 31 - 1


def check_blas_dims(**arrays) -> None:
    """ValueError when a dimension of one of the arrays (``name=array``; non-arrays are
    skipped) exceeds BLAS_MAX_DIM: the products would silently wrap their sizes. Call it
    before any copy (a broadcast view of that size costs no memory until copied)."""
    for name, a in arrays.items():
        shape = getattr(a, "shape", None)
        if shape is not None and any(int(d) > BLAS_MAX_DIM for d in shape):
            raise ValueError(f"{name} has shape {tuple(shape)}: fastnn's matrix products take "
                             f"dimensions up to 2**31 - 1 ({BLAS_MAX_DIM}); split the batch "
                             f"into smaller ones")


def check_float_array(a, name: str, *, ndim=None, dtype=None, allow_empty: bool = True,
                      finite: bool = False, contiguous: bool = True) -> np.ndarray:
    """Return ``a`` as a C-contiguous float32/float64 ndarray, or raise a clear error.

    Non-contiguous, Fortran-order, negative-stride, read-only and memory-mapped inputs are
    accepted: a C-contiguous copy is made only when needed (kernels read through ``const``
    memoryviews, so read-only inputs are never copied). Integer, bool, object and complex arrays
    are rejected rather than silently cast.

    Parameters
    ----------
    ndim : int or tuple of int, optional
        Allowed numbers of dimensions.
    dtype : numpy dtype, optional
        Required float dtype (e.g. a model's dtype); the other float dtype is an error.
    finite : bool
        Reject NaN and +-inf.
    """
    if not isinstance(a, np.ndarray):
        if isinstance(a, (list, tuple, numbers.Number)) or hasattr(a, "__array__"):
            a = np.asarray(a)
            if a.dtype.kind in "iub" and dtype is not None:
                a = a.astype(dtype)
            elif a.dtype.kind in "iub":
                a = a.astype(np.float64)
        else:
            raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}"
                        + ("; convert it with .astype(np.float32) or .astype(np.float64)"
                           if a.dtype.kind in "iub" else ""))
    if dtype is not None and a.dtype != np.dtype(dtype):
        raise TypeError(f"{name} has dtype {a.dtype} but {np.dtype(dtype)} is expected; "
                        f"convert it with {name}.astype(np.{np.dtype(dtype).name})")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if a.ndim not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise ValueError(f"{name} must be {want}-dimensional, got shape {a.shape}")
    if not allow_empty and a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    if finite and a.size and not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinity")
    if contiguous and not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    return a


def check_out(out, name: str, shape, dtype) -> np.ndarray:
    """Check a caller-provided output array: exact shape, dtype, C-contiguous, writeable."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {out.shape}")
    if out.dtype != np.dtype(dtype):
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {out.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return out


def overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` and ``b`` share memory. Cheap on the hot path: only arrays with the same
    owner (``base``) are examined further, with ``np.may_share_memory``."""
    ba = a if a.base is None else a.base
    bb = b if b.base is None else b.base
    return ba is bb and a.size > 0 and b.size > 0 and np.may_share_memory(a, b)


def check_no_overlap(out: np.ndarray, name: str, **inputs) -> None:
    """An output written while the inputs are still read must not share memory with them
    (a GEMM or a row kernel writing over its own input gives silently wrong numbers)."""
    for in_name, a in inputs.items():
        if a is not None and overlaps(out, a):
            raise ValueError(f"{name} overlaps {in_name}; pass an output array that does not "
                             f"share memory with the inputs")


def check_same_dtype(*pairs) -> np.dtype:
    """All (name, array) pairs must share one float dtype; return it."""
    (name0, a0), *rest = pairs
    for name, a in rest:
        if a.dtype != a0.dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but {name0} has {a0.dtype}; "
                            f"use one float dtype for both")
    return a0.dtype


def check_labels(y, n_samples: int, n_classes: int, name: str = "y") -> np.ndarray:
    """Integer class labels of shape (n_samples,) in [0, n_classes), as an intp array."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional integer labels, got shape {y.shape}")
    if y.shape[0] != n_samples:
        raise ValueError(f"{name} has {y.shape[0]} labels but there are {n_samples} samples")
    if y.dtype.kind == "f":
        if y.size and (not np.isfinite(y).all() or (y != np.round(y)).any()):
            raise ValueError(f"{name} must hold integer class labels, got non-integer floats")
    elif y.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.size:
        lo, hi = y.min(), y.max()
        if lo < 0 or hi >= n_classes:
            raise ValueError(f"{name} labels must be in [0, {n_classes}), got values in "
                             f"[{lo}, {hi}]")
    return np.ascontiguousarray(y, dtype=np.intp)


def check_positive_float(value, name: str, *, allow_zero: bool = False) -> float:
    """A finite float > 0 (or >= 0 with allow_zero), returned as a Python float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {name}: {value!r} (expected a number)")
    v = float(value)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"Invalid {name}: {value} (expected a finite number {bound})")
    return v
