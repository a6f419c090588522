"""Elementwise activations and their derivatives.

Names: ``"identity"`` (alias ``"linear"``), ``"sigmoid"``, ``"tanh"``, ``"relu"``, ``"step"``
(McCulloch-Pitts threshold unit: 1 if z >= 0 else 0) and ``"sign"`` (+1 if z >= 0 else -1).
Derivatives are computed from the OUTPUT y = act(z): sigmoid y (1 - y), tanh 1 - y^2,
relu 1[y > 0]. Step and sign have derivative 0 almost everywhere: threshold units are not trained
by backpropagation, and their backward returns zeros.

NaN propagates like NumPy in the forward functions (relu, step and sign of NaN are NaN).
float32 sigmoid and tanh use a vectorized polynomial exponential accurate to a few ulp;
float64 uses the C library's exp and tanh. Sigmoid is stable for any ``|z|`` (no overflow).
"""
from __future__ import annotations

import numpy as np

from fastnn._kernels import activations as _k
from fastnn._threads import resolve_n_threads
from fastnn._validation import check_float_array, check_out, check_same_dtype

__all__ = [
    "ACTIVATIONS",
    "activation",
    "activation_backward",
    "activation_code",
    "relu",
    "sigmoid",
    "sign",
    "step",
    "tanh",
]

#: Accepted activation names (``"linear"`` is an alias of ``"identity"``).
ACTIVATIONS = ("identity", "linear", "sigmoid", "tanh", "relu", "step", "sign")


def activation_code(name) -> int:
    """Kernel code of an activation name (None means identity); ValueError for unknown names."""
    if name is None:
        return _k.CODES["identity"]
    if isinstance(name, str):
        code = _k.CODES.get(name.lower())
        if code is not None:
            return code
    raise ValueError(f"Unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1)


def activation(z, name="identity", out=None, n_threads=None) -> np.ndarray:
    """Apply an activation elementwise: ``y = act(z)``.

    Parameters
    ----------
    z : ndarray of float32 or float64, any shape
        Pre-activations. Non-contiguous or read-only arrays are accepted (copied if needed).
    name : str
        One of ``ACTIVATIONS``.
    out : ndarray, optional
        C-contiguous array of z's shape and dtype to write into (may be ``z`` itself).
    n_threads : int, optional
        Threads to use; None means ``omp_get_max_threads()`` now.

    Returns
    -------
    y : ndarray, same shape and dtype as z
    """
    code = activation_code(name)
    z = check_float_array(z, "z")
    nt = resolve_n_threads(n_threads)
    if out is None:
        out = np.empty_like(z)
    else:
        check_out(out, "out", z.shape, z.dtype)
    _k.activation_forward(_flat(z), _flat(out), code, nt)
    return out


def activation_backward(y, grad_y, name="identity", out=None, n_threads=None) -> np.ndarray:
    """Gradient through an activation, from its output: ``grad_z = grad_y * act'(z)``.

    Parameters
    ----------
    y : ndarray of float32 or float64
        The forward output ``act(z)``.
    grad_y : ndarray, same shape and dtype as y
        Gradient of the loss with respect to y.
    name : str
        One of ``ACTIVATIONS``; step and sign give zeros.
    out : ndarray, optional
        C-contiguous output of y's shape and dtype (may be ``grad_y`` itself).
    n_threads : int, optional

    Returns
    -------
    grad_z : ndarray, same shape and dtype as y
    """
    code = activation_code(name)
    y = check_float_array(y, "y")
    grad_y = check_float_array(grad_y, "grad_y")
    check_same_dtype(("y", y), ("grad_y", grad_y))
    if grad_y.shape != y.shape:
        raise ValueError(f"grad_y must have the shape of y {y.shape}, got {grad_y.shape}")
    nt = resolve_n_threads(n_threads)
    if out is None:
        out = np.empty_like(y)
    else:
        check_out(out, "out", y.shape, y.dtype)
    _k.activation_backward(_flat(y), _flat(grad_y), _flat(out), code, nt)
    return out


def sigmoid(z, out=None, n_threads=None) -> np.ndarray:
    """``1 / (1 + exp(-z))``, stable for large ``|z|``."""
    return activation(z, "sigmoid", out=out, n_threads=n_threads)


def tanh(z, out=None, n_threads=None) -> np.ndarray:
    """Hyperbolic tangent."""
    return activation(z, "tanh", out=out, n_threads=n_threads)


def relu(z, out=None, n_threads=None) -> np.ndarray:
    """``max(z, 0)`` (NaN stays NaN)."""
    return activation(z, "relu", out=out, n_threads=n_threads)


def step(z, out=None, n_threads=None) -> np.ndarray:
    """McCulloch-Pitts threshold unit: 1 if z >= 0 else 0."""
    return activation(z, "step", out=out, n_threads=n_threads)


def sign(z, out=None, n_threads=None) -> np.ndarray:
    """+1 if z >= 0 else -1."""
    return activation(z, "sign", out=out, n_threads=n_threads)
