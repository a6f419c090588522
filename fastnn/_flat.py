"""A list of parameter arrays seen as one flat float64 vector, for ``scipy.optimize``.

L-BFGS (``scipy.optimize.minimize(method="L-BFGS-B", jac=True)``) works on a single vector
``x``; the network keeps its weights as separate arrays that its kernels read in place.
:class:`FlatParameters` copies between the two: ``unpack(x)`` writes ``x`` into the arrays
(cast to their dtype), ``pack`` concatenates arrays (the weights, or their gradients) into a
new float64 vector, in the order given.
"""
from __future__ import annotations

import numpy as np

__all__ = ["FlatParameters"]


class FlatParameters:
    """Flat view of ``arrays`` (a list of ndarrays, updated in place by :meth:`unpack`).

    Parameters
    ----------
    arrays : list of ndarray, float32 or float64, C-contiguous
        The parameters, in the order of the flat vector.
    """

    def __init__(self, arrays):
        self.arrays = list(arrays)
        sizes = [int(a.size) for a in self.arrays]
        self.offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.size = int(self.offsets[-1])

    def pack(self, arrays=None) -> np.ndarray:
        """The concatenation of ``arrays`` (default: the parameters), float64 of shape
        (size,); ``arrays`` must match the parameters' shapes (e.g. their gradients)."""
        arrays = self.arrays if arrays is None else arrays
        out = np.empty(self.size, dtype=np.float64)
        for a, lo, hi in zip(arrays, self.offsets[:-1], self.offsets[1:]):
            out[lo:hi] = a.reshape(-1)
        return out

    def unpack(self, x) -> None:
        """Write the flat vector ``x`` (shape (size,)) into the parameter arrays."""
        x = np.asarray(x)
        if x.shape != (self.size,):
            raise ValueError(f"expected a vector of {self.size} values, got shape {x.shape}")
        for a, lo, hi in zip(self.arrays, self.offsets[:-1], self.offsets[1:]):
            np.copyto(a.reshape(-1), x[lo:hi], casting="same_kind")

    def objective(self, loss_and_grads):
        """``f(x) -> (loss, flat gradient)`` for ``scipy.optimize.minimize(jac=True)``:
        unpacks ``x`` into the parameters, calls ``loss_and_grads()`` (which returns the loss
        and the list of gradients, one per parameter) and packs the gradients."""
        def f(x):
            self.unpack(x)
            loss, grads = loss_and_grads()
            return float(loss), self.pack(grads)
        return f
