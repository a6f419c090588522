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
        The clearing is deferred: ``zero_grad`` only marks the gradient as zero, and the array
        is filled with zeros when it is next read through ``grad``, unless a kernel overwrites
        it first (a layer's backward writes ``X^T dZ`` instead of adding it: a training step
        never pays for the fill). The array object itself never changes.
    """

    __slots__ = ("data", "_grad", "_grad_is_zero", "_version", "name", "regularize")

    def __init__(self, data: np.ndarray, name: str = "", regularize: bool = True):
        data = np.ascontiguousarray(data)
        if data.dtype not in (np.float32, np.float64):
            raise TypeError(f"Parameter data must be float32 or float64, got {data.dtype}")
        self.data = data
        self._grad = np.zeros_like(data)
        self._grad_is_zero = False   # True: _grad holds stale values that stand for zeros
        # counts fastnn's in-place updates of ``data`` (optimizer steps, load_state_dict,
        # reset_parameters): a copy of the values (an inference plan's bfloat16 weights)
        # compares it to know it is stale
        self._version = 0
        self.name = name
        self.regularize = bool(regularize)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def grad(self):
        if self._grad_is_zero:
            self._grad_is_zero = False
            if self._grad is not None:
                self._grad.fill(0)
        return self._grad

    @grad.setter
    def grad(self, value):
        self._grad = value
        self._grad_is_zero = False

    def zero_grad(self) -> None:
        """Mark the gradient as zero (filled on the next read of ``grad``)."""
        self._grad_is_zero = True

    def _grad_for_kernel(self):
        """(gradient array, accumulate) for a kernel about to write the gradient: accumulate
        is False when the gradient is marked zero (the kernel overwrites the stale values).
        Call _grad_written() once the kernel has run."""
        return self._grad, not self._grad_is_zero

    def _grad_written(self) -> None:
        self._grad_is_zero = False

    def __repr__(self) -> str:
        return f"Parameter(name={self.name!r}, shape={self.data.shape}, dtype={self.data.dtype})"
