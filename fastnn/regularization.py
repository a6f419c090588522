"""L2 and L1 penalties on weights, and the L1 proximal (soft-threshold) operator.

The optimizers apply the penalties inside their fused update (``weight_decay``, ``l1``,
``l1_proximal`` in :mod:`fastnn.optim`); this module gives their values, for reporting the
regularized objective ``lambda * Omega(theta) + mean loss`` of the lecture, and the proximal
operator as a standalone function. As in the lecture, only weights are regularized: parameters
whose ``regularize`` flag is False (biases) are skipped.

Conventions, matching the optimizers' gradients:

* L2: ``Omega = 1/2 * sum ||W||_F^2``, gradient ``W``; ``weight_decay`` is its lambda.
* L1: ``Omega = sum ||W||_1``, subgradient ``sign(W)``; ``l1`` is its lambda.
"""
from __future__ import annotations

import numpy as np

__all__ = ["l2_penalty", "l1_penalty", "penalty", "soft_threshold"]


def _weights(params):
    for p in params:
        if getattr(p, "regularize", True):
            yield np.asarray(getattr(p, "data", p))


def l2_penalty(params) -> float:
    """``1/2 * sum ||W||^2`` over the parameters with ``regularize`` True (float64 sum)."""
    total = 0.0
    for w in _weights(params):
        w = w.ravel().astype(np.float64, copy=False)
        total += float(np.dot(w, w))
    return 0.5 * total


def l1_penalty(params) -> float:
    """``sum ||W||_1`` over the parameters with ``regularize`` True (float64 sum)."""
    return float(sum(np.abs(w).sum(dtype=np.float64) for w in _weights(params)))


def penalty(params, weight_decay: float = 0.0, l1: float = 0.0) -> float:
    """``weight_decay * l2_penalty + l1 * l1_penalty``: the term an optimizer with these
    coefficients adds to the objective."""
    value = 0.0
    if weight_decay:
        value += weight_decay * l2_penalty(params)
    if l1:
        value += l1 * l1_penalty(params)
    return value


def soft_threshold(x, threshold, out=None) -> np.ndarray:
    """The proximal operator of ``threshold * ||.||_1``: ``sign(x) * max(|x| - threshold, 0)``.

    Entries with ``|x| <= threshold`` become exact zeros. ``threshold`` is a scalar or an array
    broadcastable to ``x``; the result has ``x``'s dtype (``out`` may be ``x`` itself).
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"x must be a float array, got {x.dtype}")
    thr = np.asarray(threshold, dtype=x.dtype)
    if np.any(thr < 0):
        raise ValueError("threshold must be >= 0")
    if out is None:
        out = np.empty_like(x)
    clipped = np.clip(x, -thr, thr)
    np.subtract(x, clipped, out=out)
    return out
