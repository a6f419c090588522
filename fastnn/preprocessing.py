"""Preprocessing layers: preprocessing that belongs to the model, saved with its weights.

:class:`Normalization` (Keras's name and semantics) standardizes each input feature with a mean
and variance learned by ``adapt(X_train)``. Put first in a :class:`fastnn.Sequential`, it makes
the saved model predict raw inputs: ``fastnn.save`` stores the statistics as state buffers next
to the weights, and ``fastnn.load`` restores them.
"""
from __future__ import annotations

import numbers

import numpy as np

from fastnn._validation import FLOAT_DTYPES, check_float_array
from fastnn.data import Standardizer
from fastnn.module import Module
from fastnn.module import no_forward_error as _no_forward

__all__ = ["Normalization"]


class Normalization(Module):
    """Per-feature standardization ``y = (x - mean) / sqrt(variance)``.

    The statistics are learned from data by :meth:`adapt` (or given as ``mean`` and
    ``variance``), are not trained by ``fit``, and are state buffers: ``state_dict``,
    ``fastnn.save``/``load`` and pickles carry them (in float64).

    Parameters
    ----------
    n_features : int or None
        Input width; None takes it from the first :meth:`adapt` (or from ``mean``).
    mean, variance : array-like (n_features,), optional
        Fixed statistics instead of :meth:`adapt` (Keras's ``mean``/``variance``). The variance
        is the population variance (``ddof=0``), as ``adapt`` computes it.
    epsilon : float, default 1e-7
        Features whose standard deviation is at most ``epsilon`` (constant on the adapted data)
        are only centered, divided by 1 - scikit-learn's ``StandardScaler`` rule. Keras divides
        by ``max(std, 1e-7)`` instead, which multiplies any unseen deviation of a constant
        feature by 1e7.

    Notes
    -----
    Input (n_samples, n_features) float32 or float64; the output has the input's dtype (the
    statistics are cast once per dtype). ``backward`` returns ``grad_output / scale``.
    A Normalization that was never adapted raises a RuntimeError when called.

    Examples
    --------
    >>> norm = Normalization()                                         # doctest: +SKIP
    >>> norm.adapt(X_train)                                            # doctest: +SKIP
    >>> model = Sequential(norm, Dense(64, 32, "relu"), Dense(32, 10)) # doctest: +SKIP
    """

    _forward_cache = ("_ran",)

    @classmethod
    def _parameter_shapes(cls, kwargs):
        return {}   # mean and variance are state buffers, checked against the file when loaded

    def __init__(self, n_features=None, *, mean=None, variance=None, epsilon: float = 1e-7):
        super().__init__()
        self._ran = False
        if n_features is not None and (isinstance(n_features, bool)
                                       or not isinstance(n_features, numbers.Integral)
                                       or n_features <= 0):
            raise ValueError(f"n_features must be a positive int or None, got {n_features!r}")
        if (isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real)
                or not 0.0 <= float(epsilon) < np.inf):
            raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.n_features = None if n_features is None else int(n_features)
        self.mean = self.variance = None
        if (mean is None) != (variance is None):
            raise ValueError("give both mean and variance, or neither (then call adapt)")
        if mean is not None:
            self._set_statistics(mean, variance)
        elif self.n_features is not None:   # sized but not adapted: NaN marks "no statistics"
            self.mean = np.full(self.n_features, np.nan)
            self.variance = np.full(self.n_features, np.nan)

    # --- statistics ------------------------------------------------------------------------------
    def adapt(self, X) -> Normalization:
        """Learn the per-feature mean and (population) variance of ``X`` (n_samples, n_features),
        accumulated in float64; returns self."""
        X = check_float_array(X, "X", ndim=2, finite=True)
        if X.shape[0] == 0:
            raise ValueError("cannot adapt a Normalization on 0 samples")
        stats = Standardizer(eps=self.epsilon).fit(X)
        self._set_statistics(stats.mean_, stats.var_)
        return self

    @property
    def adapted(self) -> bool:
        """True once the layer has statistics (from adapt, the constructor or a state_dict)."""
        return self.mean is not None and not np.isnan(self.mean).any()

    @property
    def scale(self) -> np.ndarray:
        """The divisor per feature (float64), ``sqrt(variance)``, or 1 where that is at most
        ``epsilon``."""
        self._check_adapted()
        std = np.sqrt(self.variance)
        return np.where(std > self.epsilon, std, 1.0)

    def _set_statistics(self, mean, variance) -> None:
        mean = self._check_statistic(mean, "mean")
        variance = self._check_statistic(variance, "variance")
        if mean.shape != variance.shape:
            raise ValueError(f"mean has shape {mean.shape} but variance has {variance.shape}")
        self.n_features = mean.shape[0]
        self.mean, self.variance = mean, variance
        self._buffers.clear()

    def _check_statistic(self, value, name) -> np.ndarray:
        a = np.array(value, dtype=np.float64, copy=True)
        if a.ndim != 1 or a.shape[0] == 0:
            raise ValueError(f"{name} must be a 1-D array (n_features,), got shape {a.shape}")
        if self.n_features is not None and a.shape[0] != self.n_features:
            raise ValueError(f"{name} has {a.shape[0]} features but this Normalization has "
                             f"{self.n_features}")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} must be finite")
        if name == "variance" and (a < 0).any():
            raise ValueError("variance must be >= 0")
        return a

    def _check_adapted(self) -> None:
        if not self.adapted:
            raise RuntimeError("this Normalization has no statistics yet: call adapt(X_train) "
                               "first (or pass mean and variance)")

    def _stats(self, dtype):
        """(mean, scale) cast to ``dtype``, cached in the work buffers."""
        key = ("stats", np.dtype(dtype))
        cached = self._buffers.get(key)
        if cached is None:
            self._check_adapted()
            cached = self._buffers[key] = (self.mean.astype(dtype), self.scale.astype(dtype))
        return cached

    # --- the graph interface -----------------------------------------------------------------
    def forward(self, x):
        if type(x) is not np.ndarray or x.dtype not in FLOAT_DTYPES:
            x = check_float_array(x, "x")
        mean, scale = self._stats(x.dtype)
        if x.ndim != 2 or x.shape[1] != mean.shape[0]:
            raise ValueError(f"x must have shape (n_samples, {mean.shape[0]}), got {x.shape}")
        y = self._buffer("y", x.shape, x.dtype)
        np.subtract(x, mean, out=y)
        self._ran = True
        return np.divide(y, scale, out=y)

    def backward(self, grad_output, need_input_grad=True, inplace=False):
        if not self._ran:
            raise _no_forward(self)
        if not need_input_grad:
            return None
        _, scale = self._stats(grad_output.dtype)
        out = grad_output if inplace else self._buffer("gx", grad_output.shape,
                                                       grad_output.dtype)
        return np.divide(grad_output, scale, out=out)

    # --- state, shapes, config ---------------------------------------------------------------
    def _state_buffers(self):
        if self.mean is None:
            return {}
        return {"mean": self.mean, "variance": self.variance}

    def _load_state_buffer(self, name, value):
        if name not in ("mean", "variance") or self.mean is None:
            raise KeyError(name)
        value = np.asarray(value)
        if value.dtype.kind != "f" or value.shape != (self.n_features,):
            raise ValueError(f"Normalization {name} must be a float array of shape "
                             f"({self.n_features},), got {value.dtype} {value.shape}")
        other = self.variance if name == "mean" else self.mean
        if np.isnan(value).all() and np.isnan(other).all():
            setattr(self, name, value.astype(np.float64))   # a layer saved before adapt
        else:
            setattr(self, name, self._check_statistic(value, name))
        self._buffers.clear()

    def input_features(self):
        return self.n_features

    def output_features(self, in_features):
        if in_features is not None and self.n_features is not None \
                and in_features != self.n_features:
            raise ValueError(f"Normalization has {self.n_features} features, got an input of "
                             f"{in_features}")
        return self.n_features if in_features is None else in_features

    def get_config(self):
        return {"type": "Normalization", "n_features": self.n_features,
                "epsilon": self.epsilon}

    def extra_repr(self):
        s = f"n_features={self.n_features}"
        if not self.adapted:
            s += ", not adapted"
        return s
