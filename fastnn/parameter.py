"""A trainable array and its gradient."""
from __future__ import annotations

import numpy as np


class Parameter:
    """A trainable array with its gradient buffer.

    Parameters
    ----------
    data : ndarray, float32 or float64
        The values; stored C-contiguous and updated in place by optimizers (never rebound to a
        new array of another dtype).
    name : str
        Name within its module ("weight", "bias", ...).
    regularize : bool
        Whether L1/L2 penalties apply. Weights: True; biases: False (the lecture's convention).

    Attributes
    ----------
    grad : ndarray, same shape and dtype as ``data``
        Accumulated gradient; modules add into it in ``backward``, ``zero_grad`` clears it.
    """

    __slots__ = ("data", "grad", "name", "regularize")

    def __init__(self, data: np.ndarray, name: str = "", regularize: bool = True):
        data = np.ascontiguousarray(data)
        if data.dtype not in (np.float32, np.float64):
            raise TypeError(f"Parameter data must be float32 or float64, got {data.dtype}")
        self.data = data
        self.grad = np.zeros_like(data)
        self.name = name
        self.regularize = bool(regularize)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def zero_grad(self) -> None:
        self.grad.fill(0)

    def __repr__(self) -> str:
        return f"Parameter(name={self.name!r}, shape={self.data.shape}, dtype={self.data.dtype})"
