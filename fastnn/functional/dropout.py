"""Dropout with a counter-based mask (Srivastava et al., 2014).

Element ``i`` of the flattened (C-order) array is kept iff a hash of ``(seed, i)`` clears a
threshold ``floor(p * 2^32)``, so the keep probability is ``1 - p`` (to 2^-32) and the mask is a
pure function of ``(seed, p, shape)``: identical for any ``n_threads``. The backward pass
regenerates the mask from the seed (nothing is stored between forward and backward): call it
with the same ``p`` and ``seed`` as the forward pass. Use a new seed for every training step.

Modes
-----
``"inverted"`` (default): training ``Y = X * mask / (1 - p)``, evaluation ``Y = X``.
``"standard"``: training ``Y = X * mask``, evaluation ``Y = X * (1 - p)``.

Dropped elements are multiplied by 0, so a NaN input stays NaN (as NumPy's ``X * mask``).

References
----------
Srivastava, N., Hinton, G., Krizhevsky, A., Sutskever, I. and Salakhutdinov, R. (2014). Dropout: a
simple way to prevent neural networks from overfitting. JMLR 15, 1929-1958.
"""
from __future__ import annotations

import numbers

import numpy as np

from fastnn._kernels import dropout as _k
from fastnn._threads import resolve_n_threads
from fastnn._validation import check_float_array, check_out

__all__ = ["call_seed", "dropout", "dropout_backward", "dropout_into", "dropout_mask",
           "dropout_scale"]

_MODES = ("inverted", "standard")


def _check_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"Invalid dropout probability: {p!r} (expected a number in [0, 1))")
    p = float(p)
    if not (0.0 <= p < 1.0):
        raise ValueError(f"Invalid dropout probability: {p} (expected 0 <= p < 1)")
    return p


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return int(seed) & 0xFFFFFFFFFFFFFFFF


def _check_mode(mode) -> str:
    if mode not in _MODES:
        raise ValueError(f"Invalid dropout mode {mode!r}; expected 'inverted' or 'standard'")
    return mode


def _threshold(p: float) -> int:
    # keep iff word >= floor(p * 2^32) (the rule shared with the Dropout module's entry)
    return _k.keep_threshold(p)


def _apply(x, p, seed, scale, training, out, n_threads, name):
    x = check_float_array(x, name)
    nt = resolve_n_threads(n_threads)
    if out is None:
        out = np.empty_like(x)
    else:
        check_out(out, "out", x.shape, x.dtype)
    threshold = _threshold(p) if training else 0
    _k.dropout_apply(x.reshape(-1), out.reshape(-1), _k.key_from_seed(seed), threshold,
                     float(scale), nt)
    return out


def dropout(X, p, seed, mode="inverted", training=True, out=None, n_threads=None) -> np.ndarray:
    """Apply dropout to X.

    Parameters
    ----------
    X : ndarray of float32 or float64, any shape
    p : float in [0, 1)
        Probability of dropping an element; 0 is the identity.
    seed : int
        Mask seed (any int; taken modulo 2^64). Same seed, same mask.
    mode : {"inverted", "standard"}
    training : bool
        False gives the evaluation behaviour of the mode (no mask).
    out : ndarray, optional
        C-contiguous output of X's shape and dtype (may be X itself).
    n_threads : int, optional

    Returns
    -------
    Y : ndarray, same shape and dtype as X
    """
    return _dropout_map(X, p, seed, mode, training, out, n_threads, "X")


def dropout_backward(grad_Y, p, seed, mode="inverted", out=None, n_threads=None, *,
                     training=True) -> np.ndarray:
    """Gradient of dropout: ``grad_X = grad_Y * mask * scale`` with the forward pass's mask.

    Parameters
    ----------
    grad_Y : ndarray of float32 or float64
    p, seed, mode : as given to :func:`dropout` for the forward pass.
    out : ndarray, optional (may be grad_Y itself)
    n_threads : int, optional
    training : bool, keyword-only
        False: the gradient of the evaluation map (``grad_Y``, or ``grad_Y * (1 - p)`` in
        standard mode).

    Returns
    -------
    grad_X : ndarray, same shape and dtype as grad_Y
    """
    # Dropout is linear and diagonal: its gradient is the same map (same mask, same scale).
    return _dropout_map(grad_Y, p, seed, mode, training, out, n_threads, "grad_Y")


def _dropout_map(A, p, seed, mode, training, out, n_threads, name):
    """``A * mask * scale`` (training) or ``A * scale`` (evaluation), the scale set by the mode:
    inverted 1/(1-p) while training and 1 at evaluation; standard 1 and (1-p)."""
    p = _check_p(p)
    seed = _check_seed(seed)
    mode = _check_mode(mode)
    return _apply(A, p, seed, dropout_scale(p, mode, training), training and p > 0, out,
                  n_threads, name)


def dropout_scale(p: float, mode: str, training: bool) -> float:
    """The factor of the kept units: inverted mode 1/(1-p) while training and 1 at evaluation;
    standard mode 1 while training and (1-p) at evaluation. (The kernel's module entry,
    ``dropout_layer``, applies the same rule to its ``inverted`` flag.)"""
    if training:
        return 1.0 / (1.0 - p) if mode == "inverted" else 1.0
    return 1.0 if mode == "inverted" else 1.0 - p


def call_seed(seed: int, t: int) -> int:
    """The mask seed of a Dropout module's t-th training forward from its base seed (taken
    mod 2^64): ``splitmix64(splitmix64(seed) ^ t) >> 1``."""
    return _k.call_seed(seed & 0xFFFFFFFFFFFFFFFF, t)


def dropout_into(X, out, p: float, seed: int, mode: str, n_threads: int) -> np.ndarray:
    """Training dropout for a layer: ``out = X * mask * dropout_scale(p, mode, True)``, the mask
    of ``seed`` (its forward and its backward alike: the map is its own gradient).

    Tries the kernel's module entry (arrays checked in C) and falls back to :func:`dropout`,
    which converts or raises. ``n_threads`` is a resolved count; ``out`` may be ``X``.
    """
    if _k.dropout_layer(X, out, seed, p, mode == "inverted", n_threads):
        return out
    return _dropout_map(X, p, seed, mode, True, out, n_threads, "X")


def dropout_mask(shape, p, seed, n_threads=None) -> np.ndarray:
    """The keep mask :func:`dropout` uses for an array of this shape: True where kept."""
    p = _check_p(p)
    seed = _check_seed(seed)
    shape = (int(shape),) if isinstance(shape, numbers.Integral) else tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must be non-negative, got {shape}")
    mask = np.empty(shape, dtype=np.bool_)
    _k.dropout_mask_fill(mask.reshape(-1).view(np.uint8), _k.key_from_seed(seed),
                         _threshold(p), resolve_n_threads(n_threads))
    return mask
