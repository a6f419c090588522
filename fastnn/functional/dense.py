"""Dense (fully connected) layers: ``Y = act(X W + b)`` and its backward pass.

The weight is stored as ``(in_features, out_features)`` in C order (PyTorch stores
``(out, in)``), so the forward pass is one row-major GEMM; the activation and the bias are fused
into the GEMM epilogue, and the activation derivative into the backward pass. Threading follows
fastnn's thread model (see ``fastnn._threads``): small products run serially, large ones use
BLAS's own threads; splitting mid-size ones into one block per OpenMP thread (BLAS pinned to one
thread) is off by default (``fastnn.functional.runtime``, dense thresholds). ``n_threads`` bounds every thread fastnn uses, BLAS included; results do not depend on
it beyond GEMM rounding (the bias gradient is bitwise identical for any ``n_threads``).

NaN and infinity are not rejected: they propagate as in NumPy.
"""
from __future__ import annotations

import numpy as np

from fastnn._kernels import dense as _k
from fastnn._threads import resolve_n_threads
from fastnn._validation import (
    check_blas_dims,
    check_float_array,
    check_no_overlap,
    check_out,
    check_same_dtype,
)
from fastnn.functional.activations import _BY_CODE as _CODES
from fastnn.functional.activations import activation_by_code, activation_code, activation_info

__all__ = ["backward_into", "dense_backward", "dense_forward", "forward_into"]

_IDENTITY = activation_code("identity")


def _check_X_W(X, W, b):
    check_blas_dims(X=X, W=W)
    X = check_float_array(X, "X", ndim=2)
    W = check_float_array(W, "W", ndim=2)
    pairs = [("X", X), ("W", W)]
    if b is not None:
        b = check_float_array(b, "b", ndim=1)
        pairs.append(("b", b))
    check_same_dtype(*pairs)
    if X.shape[1] != W.shape[0]:
        raise ValueError(f"X has {X.shape[1]} features (shape {X.shape}) but W expects "
                         f"{W.shape[0]} (W shape {W.shape}: (in_features, out_features))")
    if b is not None and b.shape[0] != W.shape[1]:
        raise ValueError(f"b must have shape ({W.shape[1]},) to match W {W.shape}, "
                         f"got {b.shape}")
    return X, W, b


def dense_forward(X, W, b=None, activation="identity", out=None, n_threads=None, *,
                  z_out=None) -> np.ndarray:
    """Forward pass of a dense layer: ``Y = act(X W + b)``.

    Parameters
    ----------
    X : ndarray (n_samples, in_features), float32 or float64
        Inputs; non-contiguous and read-only arrays are accepted (copied to C order if needed).
    W : ndarray (in_features, out_features), same dtype as X
        Weight, (in, out) layout.
    b : ndarray (out_features,), same dtype, optional
        Bias; None for no bias.
    activation : str
        A name of :data:`fastnn.functional.activations.ACTIVATION_TABLE` ("identity", "sigmoid", "tanh",
        "relu", "gelu", ...); fused into the GEMM epilogue.
    out : ndarray (n_samples, out_features), optional
        C-contiguous output of the same dtype.
    n_threads : int, optional
        Bound on the threads used (OpenMP and BLAS); None means ``omp_get_max_threads()``.
    z_out : ndarray (n_samples, out_features), optional
        C-contiguous array of the same dtype that receives the pre-activation ``X W + b``, in
        the same pass (the backward of GELU and SiLU needs it).

    Returns
    -------
    Y : ndarray (n_samples, out_features), same dtype as X
    """
    return _forward_checked(X, W, b, activation_code(activation), out, n_threads, z_out)


def _forward_checked(X, W, b, code, out, n_threads, z_out):
    """dense_forward with the activation given by its kernel code."""
    X, W, b = _check_X_W(X, W, b)
    nt = resolve_n_threads(n_threads)
    shape = (X.shape[0], W.shape[1])
    if out is None:
        out = np.empty(shape, dtype=X.dtype)
    else:
        check_out(out, "out", shape, X.dtype)
        check_no_overlap(out, "out", X=X, W=W, b=b)
    if z_out is not None:
        check_out(z_out, "z_out", shape, X.dtype)
        check_no_overlap(z_out, "z_out", X=X, W=W, b=b, Y=out)
    _k.dense_forward(X, W, b if b is not None else np.empty(0, X.dtype), out, code,
                     b is not None, nt, z_out)
    return out


def dense_backward(X, W, Y, grad_Y, activation="identity", *, grad_W_out=None, grad_b_out=None,
                   grad_X_out=None, need_grad_X=True, accumulate=False, overwrite_grad_Y=False,
                   need_grad_b=True, n_threads=None, Z=None):
    """Backward pass of ``Y = act(X W + b)``.

    With ``dZ = grad_Y * act'(Z)`` (the derivative taken from the output Y, or from the
    pre-activation Z for GELU and SiLU):
    ``grad_W = X^T dZ``, ``grad_b = dZ.sum(axis=0)`` (accumulated in float64),
    ``grad_X = dZ W^T``.

    Parameters
    ----------
    X : ndarray (n_samples, in_features)
        The forward input.
    W : ndarray (in_features, out_features)
    Y : ndarray (n_samples, out_features) or None
        The forward output ``act(X W + b)`` (unused for the identity and for the activations
        whose derivative needs Z; may then be None).
    grad_Y : ndarray (n_samples, out_features)
        Gradient of the loss with respect to Y.
    activation : str
        The forward activation. Step and sign have derivative 0: every gradient is zero.
    grad_W_out, grad_b_out, grad_X_out : ndarray, optional
        C-contiguous outputs of shapes (in, out), (out,), (n, in). Required when
        ``accumulate`` is True (for grad_W_out; grad_b_out unless ``need_grad_b`` is False).
    need_grad_X : bool
        False skips ``grad_X`` (first layer) and returns None in its place.
    accumulate : bool
        Add into grad_W_out / grad_b_out (``beta = 1``) instead of overwriting them.
    overwrite_grad_Y : bool
        Let the kernel store dZ in grad_Y (no temporary); grad_Y must then be a C-contiguous
        writeable array of the right dtype, and its contents are lost.
    need_grad_b : bool
        False for a layer without bias: returns None in its place.
    n_threads : int, optional
        Bound on the threads used (OpenMP and BLAS).
    Z : ndarray (n_samples, out_features), optional
        The pre-activation ``X W + b`` (``dense_forward(..., z_out=Z)``); required for the
        activations with ``needs_z`` (GELU, SiLU).

    Returns
    -------
    (grad_X or None, grad_W, grad_b or None)

    References
    ----------
    Rumelhart, D. E., Hinton, G. E. and Williams, R. J. (1986). Learning representations by
    back-propagating errors. Nature 323, 533-536.
    """
    return _backward_checked(X, W, Y, grad_Y, activation_info(activation), grad_W_out,
                             grad_b_out, grad_X_out, need_grad_X, accumulate, overwrite_grad_Y,
                             need_grad_b, n_threads, Z)


def _backward_checked(X, W, Y, grad_Y, info, grad_W_out, grad_b_out, grad_X_out, need_grad_X,
                      accumulate, overwrite_grad_Y, need_grad_b, n_threads, Z):
    """dense_backward with the activation given by its table row."""
    code = info.code
    if info.needs_z:
        if Z is None:
            raise ValueError(f"the backward of {info.name!r} needs the pre-activation: pass Z= "
                             f"(dense_forward(..., z_out=Z))")
        Y = Z
    elif Y is None:
        if code != _IDENTITY:
            raise ValueError(f"the backward of {info.name!r} needs the forward output Y")
        Y = grad_Y
    X, W, _ = _check_X_W(X, W, None)
    n, n_in, n_out = X.shape[0], W.shape[0], W.shape[1]
    if overwrite_grad_Y:
        grad_Y = check_out(grad_Y, "grad_Y (overwrite_grad_Y=True)", (n, n_out), X.dtype)
    else:
        grad_Y = check_float_array(grad_Y, "grad_Y", ndim=2)
    yname = "Z" if info.needs_z else "Y"
    Y = check_float_array(Y, yname, ndim=2)
    check_same_dtype(("X", X), ("grad_Y", grad_Y), (yname, Y))
    for name, a in ((yname, Y), ("grad_Y", grad_Y)):
        if a.shape != (n, n_out):
            raise ValueError(f"{name} must have shape {(n, n_out)} (n_samples, out_features), "
                             f"got {a.shape}")
    dtype = X.dtype
    nt = resolve_n_threads(n_threads)
    if accumulate and grad_W_out is None:
        raise ValueError("accumulate=True needs grad_W_out (the array to add into)")
    if accumulate and need_grad_b and grad_b_out is None:
        raise ValueError("accumulate=True needs grad_b_out (or need_grad_b=False)")
    if grad_W_out is None:
        grad_W_out = np.empty((n_in, n_out), dtype=dtype)
    else:
        check_out(grad_W_out, "grad_W_out", (n_in, n_out), dtype)
    if need_grad_b:
        if grad_b_out is None:
            grad_b_out = np.empty(n_out, dtype=dtype)
        else:
            check_out(grad_b_out, "grad_b_out", (n_out,), dtype)
    if need_grad_X:
        if grad_X_out is None:
            grad_X_out = np.empty((n, n_in), dtype=dtype)
        else:
            check_out(grad_X_out, "grad_X_out", (n, n_in), dtype)
    for name, o in (("grad_W_out", grad_W_out), ("grad_b_out", grad_b_out if need_grad_b
                                                  else None),
                    ("grad_X_out", grad_X_out if need_grad_X else None)):
        if o is not None:
            check_no_overlap(o, name, X=X, W=W, Y=Y, grad_Y=grad_Y)
    empty2 = np.empty((0, 0), dtype=dtype)
    if code == _IDENTITY:
        dZ = empty2          # the kernel reads dZ straight from grad_Y
    elif overwrite_grad_Y:
        dZ = grad_Y
    else:
        dZ = np.empty((n, n_out), dtype=dtype)
    _k.dense_backward(X, W, Y, grad_Y, dZ,
                      grad_X_out if need_grad_X else empty2, grad_W_out,
                      grad_b_out if need_grad_b else np.empty(0, dtype=dtype),
                      np.empty(n_out if need_grad_b else 0, dtype=np.float64),
                      code, bool(need_grad_X), bool(need_grad_b), bool(accumulate), nt)
    return (grad_X_out if need_grad_X else None, grad_W_out,
            grad_b_out if need_grad_b else None)


# --- the layers' entries ----------------------------------------------------------------------
# Dense calls these on every batch with the activation's kernel code and a resolved thread
# count. They try the kernel's module entry first (forward_layer/backward_layer: the arrays are
# checked in C, a fraction of a microsecond, which matters for a batch-1 layer or a small
# network's step; see "Single route to the kernels" in benchmarks/README.md) and fall back to
# the validating path above, which converts what it can or raises a clear error.

def forward_into(X, W, b, Y_out, act: int, n_threads: int, Z=None) -> np.ndarray:
    """``Y_out = act(X W + b)`` for a layer (``Z``, when given, receives ``X W + b``).

    Parameters
    ----------
    X : ndarray (n, in_features) or array-like
    W : ndarray (in_features, out_features), float32 or float64
    b : ndarray (out_features,) of W's dtype, or None
    Y_out : ndarray (n, out_features), C-contiguous, W's dtype
    act : int
        Kernel code of the activation (``ACTIVATION_TABLE[name].code``).
    n_threads : int
        Resolved thread count (``fastnn._threads.resolve_n_threads``).
    Z : ndarray (n, out_features), optional
        Receives the pre-activation (activations with ``needs_z``).

    Returns
    -------
    Y_out
    """
    if act not in _CODES:  # the kernel entry checks the arrays, not the code
        activation_by_code(act)
    if not _k.forward_layer(X, W, b, Y_out, act, n_threads, Z):
        _forward_checked(X, W, b, act, Y_out, n_threads, Z)
    return Y_out


def backward_into(X, W, Y, G, dZ, gX, Wg, bg, acc, act: int, accumulate: bool,
                  n_threads: int) -> None:
    """The backward of ``Y = act(X W + b)`` for a layer, into the given arrays.

    Parameters
    ----------
    X, W : the forward input and weight
    Y : ndarray (n, out_features)
        The forward output, or the pre-activation ``X W + b`` for the activations with
        ``needs_z`` (their derivative is taken from it).
    G : ndarray (n, out_features)
        Gradient of the loss with respect to the output.
    dZ : ndarray (n, out_features) or None
        Scratch for ``G * act'``; None lets G be overwritten with it (ignored for the identity).
    gX : ndarray (n, in_features) or None
        Receives ``dZ W^T``; None skips it.
    Wg : ndarray (in_features, out_features)
        Receives (or, with ``accumulate``, is added) ``X^T dZ``.
    bg : ndarray (out_features,) or None
        Receives (or is added) the column sums of dZ; None for a layer without bias.
    acc : float64 ndarray (out_features,)
        Scratch for the bias sums (unused when ``bg`` is None).
    act : int
        Kernel code of the activation.
    accumulate : bool
        Add into Wg and bg instead of overwriting them.
    n_threads : int
        Resolved thread count.
    """
    info = _CODES.get(act) or activation_by_code(act)   # the kernel does not check the code
    if _k.backward_layer(X, W, Y, G, dZ, gX, Wg, bg, acc, act, accumulate, n_threads):
        return
    overwrite = (dZ is None and act != _IDENTITY and type(G) is np.ndarray
                 and G.flags.c_contiguous and G.flags.writeable and G.dtype == W.dtype)
    _backward_checked(X, W, None if info.needs_z else Y, G, info, Wg, bg, gX, gX is not None,
                      accumulate, overwrite, bg is not None, n_threads,
                      Y if info.needs_z else None)
