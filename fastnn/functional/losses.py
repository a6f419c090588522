"""Losses with their gradients with respect to the output pre-activation ``z``.

Common keywords
---------------
reduction : {"mean", "sum", "none"}
    "mean" and "sum" return a Python float (the mean over an empty batch is NaN); "none" returns
    the float64 array of per-sample losses, shape (n,).
return_grad : bool
    Also return the gradient of the *reduced* loss with respect to ``z`` ("mean" divides by n;
    for "none" it is the per-sample gradient, row i the gradient of loss i). Same shape and dtype
    as ``z``.
grad_out : ndarray, optional
    Where to write that gradient (shape and dtype of ``z``, C-contiguous, writeable); implies
    return_grad.
loss_out : ndarray of float64, shape (n,), optional
    Scratch for the per-sample losses (returned for reduction="none"), so that a training loop
    that also passes grad_out allocates nothing.
n_threads : int or None
    OpenMP threads over samples (None: the current OpenMP default).

Losses are computed in float64 for float32 data too. NaN in ``z`` gives a NaN loss for that
sample (and NaN gradient row), see fastnn.functional.output for the policy.
"""
from __future__ import annotations

import numpy as np

from fastnn._kernels import losses as _losses
from fastnn._threads import resolve_n_threads
from fastnn._validation import check_float_array, check_labels, check_no_overlap, check_out

__all__ = ["squared_loss", "cross_entropy", "cross_entropy_into", "binary_cross_entropy",
           "sparsemax_loss", "REDUCTIONS"]

REDUCTIONS = ("mean", "sum", "none")


def _prepare(z, n, reduction, return_grad, grad_out, loss_out, y=None):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    need_grad = bool(return_grad) or grad_out is not None
    y = y if isinstance(y, np.ndarray) else None
    if grad_out is not None:
        check_out(grad_out, "grad_out", z.shape, z.dtype)
        check_no_overlap(grad_out, "grad_out", z=z, y=y)  # rows are read while written
    elif need_grad:
        grad_out = np.empty_like(z)
    if loss_out is None:
        loss_out = np.empty(n, np.float64)
    else:
        check_out(loss_out, "loss_out", (n,), np.float64)
        check_no_overlap(loss_out, "loss_out", z=z, y=y, grad_out=grad_out)
    scale = 1.0 / n if (reduction == "mean" and n > 0) else 1.0
    return need_grad, grad_out, loss_out, scale


def _grad_rows(grad_out, z2, need_grad):
    """grad_out viewed with the 2-D shape of the kernel's rows (a dummy when not needed)."""
    if not need_grad:
        return np.empty((0, 0) if z2.ndim == 2 else 0, z2.dtype)
    return grad_out.reshape(z2.shape)


def _finish(loss_rows, reduction, need_grad, grad_out):
    if reduction == "none":
        loss = loss_rows
    elif reduction == "sum":
        loss = float(loss_rows.sum())
    else:
        loss = float(loss_rows.sum() / loss_rows.shape[0]) if loss_rows.shape[0] else float("nan")
    return (loss, grad_out) if need_grad else loss


def _targets_matrix(y, shape, dtype, name, *, normalize_rows: bool):
    """A non-negative finite (n, C) target matrix in z's dtype, C-contiguous."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric (n, C) target matrix, got dtype {y.dtype}")
    if y.shape != shape:
        raise ValueError(f"{name} as a target matrix must have shape {shape}, got {y.shape}")
    y = np.ascontiguousarray(y, dtype=dtype)
    if y.size:
        if not np.isfinite(y).all():
            raise ValueError(f"{name} contains NaN or infinity")
        if (y < 0).any():
            raise ValueError(f"{name} must be non-negative, got min {y.min()}")
        if normalize_rows and (y.sum(axis=1) <= 0).any():
            bad = int(np.flatnonzero(y.sum(axis=1) <= 0)[0])
            raise ValueError(f"{name} row {bad} has no positive entry (an empty label set)")
    return y


def _logits(z, name="z"):
    z = check_float_array(z, name, ndim=2)
    if z.shape[1] == 0:
        raise ValueError(f"{name} must have at least one class (column), got shape {z.shape}")
    return z


def cross_entropy(z, y, reduction="mean", return_grad=False, grad_out=None, n_threads=None, *,
                  loss_out=None):
    """Cross-entropy (negative log-likelihood of softmax) from logits, fused log-softmax.

    loss_i = logsumexp(z_i) - z_{i, y_i};  gradient softmax(z_i) - e_{y_i}.

    Parameters
    ----------
    z : ndarray (n, C) of float32/float64
        Logits (output pre-activations).
    y : int labels (n,) in [0, C), or an (n, C) non-negative target matrix q (probabilities):
        loss_i = -sum_j q_ij log softmax(z_i)_j, gradient softmax(z_i) * sum_j q_ij - q_i.
    See the module docstring for the common keywords.
    """
    z = _logits(z)
    n, c = z.shape
    need_grad, grad_out, loss_rows, scale = _prepare(z, n, reduction, return_grad, grad_out,
                                                     loss_out, y)
    nt = resolve_n_threads(n_threads)
    g = _grad_rows(grad_out, z, need_grad)
    if np.ndim(y) == 2:
        q = _targets_matrix(y, z.shape, z.dtype, "y", normalize_rows=False)
        _losses.cross_entropy_probs(z, q, loss_rows, g, need_grad, scale, nt)
    else:
        labels = check_labels(y, n, c)
        _losses.cross_entropy_labels(z, labels, loss_rows, g, need_grad, scale, nt)
    return _finish(loss_rows, reduction, need_grad, grad_out)


def cross_entropy_into(z, y, loss_out, grad_out, n_threads: int) -> float:
    """Mean cross-entropy of logits ``z`` (n, C) against labels ``y`` (or a target matrix, as
    :func:`cross_entropy` takes), its gradient written
    into ``grad_out`` (z's shape and dtype) and the per-sample losses into ``loss_out``
    (float64, (n,)); for a loss object on every batch.

    Tries the kernel's module entry (C-contiguous logits, intp labels in range, checked in C)
    and falls back to :func:`cross_entropy`, which converts or raises. ``n_threads`` is a
    resolved count.
    """
    if (type(z) is np.ndarray and z.ndim == 2 and z.shape[0]
            and _losses.cross_entropy_labels_layer(z, y, loss_out, grad_out, n_threads)):
        return float(loss_out.sum() / z.shape[0])
    return cross_entropy(z, y, return_grad=True, grad_out=grad_out, n_threads=n_threads,
                         loss_out=loss_out)[0]


def sparsemax_loss(z, y, reduction="mean", return_grad=False, grad_out=None, n_threads=None, *,
                   loss_out=None):
    """Sparsemax loss (Martins & Astudillo, 2016) from logits; gradient sparsemax(z) - q.

    Single label (y int labels (n,)): loss = -z_y + 1/2 sum_{j in S}(z_j^2 - tau^2) + 1/2,
    computed as 1/2 ||p - e_y||^2 + max(tau - z_y, 0) (shift-invariant, never negative, never
    squares z). It is 0 exactly when z_y >= 1 + max_{j != y} z_j.
    Multi-label (y an (n, C) non-negative matrix, e.g. 0/1 label sets): each row is normalized
    to q (a label set Y gives q = 1_Y / ``|Y|``) and loss = 1/2 ||p - q||^2 + sum_j q_j max(tau -
    z_j, 0), which equals the paper's -<q, z> + 1/2 sum_{j in S}(z_j^2 - tau^2) + 1/2 ||q||^2.
    A row of y without a positive entry is an error.

    z : ndarray (n, C) of float32/float64. See the module docstring for the common keywords.

    References
    ----------
    Martins, A. F. T. and Astudillo, R. F. (2016). From softmax to sparsemax: a sparse model of
    attention and multi-label classification. ICML, PMLR 48, 1614-1623.
    """
    z = _logits(z)
    n, c = z.shape
    need_grad, grad_out, loss_rows, scale = _prepare(z, n, reduction, return_grad, grad_out,
                                                     loss_out, y)
    nt = resolve_n_threads(n_threads)
    g = _grad_rows(grad_out, z, need_grad)
    if np.ndim(y) == 2:
        q = _targets_matrix(y, z.shape, z.dtype, "y", normalize_rows=True)
        _losses.sparsemax_loss(z, np.empty(0, np.intp), q, True, loss_rows, g, need_grad,
                               scale, nt)
    else:
        labels = check_labels(y, n, c)
        _losses.sparsemax_loss(z, labels, np.empty((0, 0), z.dtype), False, loss_rows, g,
                               need_grad, scale, nt)
    return _finish(loss_rows, reduction, need_grad, grad_out)


def squared_loss(f, y, reduction="mean", return_grad=False, grad_out=None, n_threads=None, *,
                 loss_out=None):
    """Squared loss 1/2 ||f_i - y_i||^2 per sample (regression, multi-output); gradient f - y.

    f : ndarray (n,) or (n, d) of float32/float64 (network outputs).
    y : array of the same shape (or (n,) when f is (n, 1)); cast to f's dtype.
    See the module docstring for the common keywords; grad has f's shape.
    """
    f = check_float_array(f, "f", ndim=(1, 2))
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"y must hold numeric targets, got dtype {y.dtype}")
    f2 = f.reshape(f.shape[0], -1) if f.ndim == 2 else f.reshape(-1, 1)
    column = {(f.shape[0],), (f.shape[0], 1)}
    if y.shape != f.shape and not (y.shape in column and f.shape in column):
        raise ValueError(f"y must have the shape of f {f.shape}, got {y.shape}")
    y2 = np.ascontiguousarray(y, dtype=f.dtype).reshape(f2.shape)
    n = f2.shape[0]
    need_grad, grad_out, loss_rows, scale = _prepare(f, n, reduction, return_grad, grad_out,
                                                     loss_out, y)
    nt = resolve_n_threads(n_threads)
    g = _grad_rows(grad_out, f2, need_grad)
    _losses.squared_loss(f2, y2, loss_rows, g, need_grad, scale, nt)
    return _finish(loss_rows, reduction, need_grad, grad_out)


def binary_cross_entropy(z, y, reduction="mean", return_grad=False, grad_out=None,
                         n_threads=None, *, loss_out=None):
    """Binary logistic loss from one logit per sample (sigmoid output), computed stably:
    log(1 + exp(z)) - y z = max(z, 0) - y z + log1p(exp(-``|z|``)); gradient sigmoid(z) - y.

    z : ndarray (n,) or (n, 1) of float32/float64.
    y : (n,) or (n, 1) targets in [0, 1] (0/1 labels, bools, or probabilities).
    See the module docstring for the common keywords; grad has z's shape.
    """
    z = check_float_array(z, "z", ndim=(1, 2))
    if z.ndim == 2 and z.shape[1] != 1:
        raise ValueError(f"z must have shape (n,) or (n, 1) (one logit per sample), got {z.shape}")
    n = z.shape[0]
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"y must hold 0/1 labels or probabilities, got dtype {y.dtype}")
    if y.shape not in ((n,), (n, 1)):
        raise ValueError(f"y must have shape ({n},) or ({n}, 1), got {y.shape}")
    y1 = np.ascontiguousarray(y, dtype=z.dtype).reshape(n)
    if n and not ((y1 >= 0) & (y1 <= 1)).all():
        raise ValueError("y must lie in [0, 1] (0/1 labels or probabilities)")
    need_grad, grad_out, loss_rows, scale = _prepare(z, n, reduction, return_grad, grad_out,
                                                     loss_out, y)
    nt = resolve_n_threads(n_threads)
    z1 = z.reshape(n)
    g = grad_out.reshape(n) if need_grad else np.empty(0, z.dtype)
    _losses.binary_cross_entropy(z1, y1, loss_rows, g, need_grad, scale, nt)
    return _finish(loss_rows, reduction, need_grad, grad_out)
