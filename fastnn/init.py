"""Weight initializers, each named after its paper and stating its formula.

A dense weight has shape ``(in_features, out_features)`` (fastnn stores it so, in C order), so
``fan_in, fan_out = shape``. Every random initializer takes ``seed``: None (fresh entropy), an int,
or a ``numpy.random.Generator`` (used as is, so a model can draw all its layers from one
stream); and ``dtype`` (float32 or float64; draws are made directly in that dtype).

Lecture conventions: weights are drawn at random around 0 to break the symmetry between units,
with a variance small enough that the units do not saturate; Glorot's uniform recipe suits tanh
and sigmoid units, He's suits relu units (whose biases may start at a small positive constant so
that they are active at first); biases start at zero by default.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from fastnn.functional.activations import activation_info

__all__ = ["glorot_uniform", "glorot_normal", "xavier_uniform", "xavier_normal", "he_uniform",
           "he_normal", "kaiming_uniform", "kaiming_normal", "zeros", "constant",
           "default_init", "get_initializer", "calculate_fans", "spawn_seeds"]


def _rng(seed) -> np.random.Generator:
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        if seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed}")
        return np.random.default_rng(int(seed))
    raise TypeError(f"seed must be None, an int or a numpy.random.Generator, got "
                    f"{type(seed).__name__}")


def spawn_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent 64-bit seeds derived from one ``seed`` (a non-negative int).

    Seed ``i`` is drawn from the ``i``-th child of ``numpy.random.SeedSequence(seed)``, so it
    depends only on ``(seed, i)``: streams seeded with them do not overlap, and adding a layer at
    the end leaves the seeds of the layers before it unchanged.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    children = np.random.SeedSequence(int(seed)).spawn(int(n))
    return [int(c.generate_state(1, np.uint64)[0]) for c in children]


def _dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _shape(shape) -> tuple:
    if isinstance(shape, numbers.Integral):
        shape = (int(shape),)
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must not have negative sizes, got {shape}")
    return shape


def calculate_fans(shape) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of shape ``(in_features, out_features)``."""
    shape = _shape(shape)
    if len(shape) != 2:
        raise ValueError(f"a weight initializer needs a 2-D shape (in_features, out_features), "
                         f"got {shape}")
    return shape[0], shape[1]


def _uniform(shape, bound: float, seed, dtype) -> np.ndarray:
    """U[-bound, bound) drawn directly in ``dtype``, scaled in place."""
    rng = _rng(seed)
    w = rng.random(shape, dtype=dtype)       # [0, 1)
    w *= 2.0 * bound
    w -= bound
    return w


def _normal(shape, std: float, seed, dtype) -> np.ndarray:
    rng = _rng(seed)
    w = rng.standard_normal(shape, dtype=dtype)
    w *= std
    return w


def glorot_uniform(shape, seed=None, dtype=np.float64, gain: float = 1.0) -> np.ndarray:
    """Glorot/Xavier uniform: ``W ~ U[-t, t]``, ``t = gain * sqrt(6 / (fan_in + fan_out))``.

    Glorot and Bengio (2010), "Understanding the difficulty of training deep feedforward neural
    networks". Keeps the variance of activations and gradients, ``2 / (fan_in + fan_out)``,
    about constant across layers; the default for tanh and sigmoid units.

    Parameters
    ----------
    shape : (fan_in, fan_out)
    seed : None, int or numpy.random.Generator
    dtype : float32 or float64
    gain : float
        Scale for the activation (1 for tanh/sigmoid/identity).

    References
    ----------
    Glorot, X. and Bengio, Y. (2010). Understanding the difficulty of training deep feedforward
    neural networks. AISTATS, PMLR 9, 249-256.
    """
    fan_in, fan_out = calculate_fans(shape)
    t = gain * math.sqrt(6.0 / max(fan_in + fan_out, 1))
    return _uniform(_shape(shape), t, seed, _dtype(dtype))


def glorot_normal(shape, seed=None, dtype=np.float64, gain: float = 1.0) -> np.ndarray:
    """Glorot/Xavier normal: ``W ~ N(0, std^2)``, ``std = gain * sqrt(2 / (fan_in + fan_out))``.

    Glorot and Bengio (2010); the same variance as :func:`glorot_uniform`.

    References
    ----------
    Glorot, X. and Bengio, Y. (2010). Understanding the difficulty of training deep feedforward
    neural networks. AISTATS, PMLR 9, 249-256.
    """
    fan_in, fan_out = calculate_fans(shape)
    std = gain * math.sqrt(2.0 / max(fan_in + fan_out, 1))
    return _normal(_shape(shape), std, seed, _dtype(dtype))


def _fan(shape, mode: str) -> int:
    fan_in, fan_out = calculate_fans(shape)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")


def he_uniform(shape, seed=None, dtype=np.float64, gain: float = math.sqrt(2.0),
               mode: str = "fan_in") -> np.ndarray:
    """He/Kaiming uniform: ``W ~ U[-t, t]``, ``t = gain * sqrt(3 / fan)`` (= sqrt(6 / fan_in)).

    He, Zhang, Ren and Sun (2015), "Delving deep into rectifiers". Variance ``2 / fan_in``:
    a relu halves the second moment, the gain sqrt(2) restores it. The default for relu units.
    ``mode="fan_out"`` preserves the gradients' variance instead.

    References
    ----------
    He, K., Zhang, X., Ren, S. and Sun, J. (2015). Delving deep into rectifiers: surpassing
    human-level performance on ImageNet classification. ICCV, 1026-1034.
    """
    fan = _fan(shape, mode)
    t = gain * math.sqrt(3.0 / max(fan, 1))
    return _uniform(_shape(shape), t, seed, _dtype(dtype))


def he_normal(shape, seed=None, dtype=np.float64, gain: float = math.sqrt(2.0),
              mode: str = "fan_in") -> np.ndarray:
    """He/Kaiming normal: ``W ~ N(0, std^2)``, ``std = gain / sqrt(fan)`` (= sqrt(2 / fan_in)).

    He, Zhang, Ren and Sun (2015).

    References
    ----------
    He, K., Zhang, X., Ren, S. and Sun, J. (2015). Delving deep into rectifiers: surpassing
    human-level performance on ImageNet classification. ICCV, 1026-1034.
    """
    fan = _fan(shape, mode)
    std = gain / math.sqrt(max(fan, 1))
    return _normal(_shape(shape), std, seed, _dtype(dtype))


xavier_uniform = glorot_uniform
xavier_normal = glorot_normal
kaiming_uniform = he_uniform
kaiming_normal = he_normal


def zeros(shape, seed=None, dtype=np.float64) -> np.ndarray:
    """All zeros (the default for biases). ``seed`` is accepted and ignored."""
    return np.zeros(_shape(shape), dtype=_dtype(dtype))


def constant(shape, value: float = 0.0, dtype=np.float64, seed=None) -> np.ndarray:
    """Every entry ``value``; e.g. a small positive bias such as 0.01 for relu units, so they
    start active (the lecture's "mean should be a small positive number"). ``seed`` is ignored.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"constant value must be a finite number, got {value!r}")
    return np.full(_shape(shape), float(value), dtype=_dtype(dtype))


def default_init(activation=None):
    """The weight initializer for units with ``activation``: the activation table's ``init``
    (:data:`fastnn.functional.activations.ACTIVATION_TABLE`): :func:`he_uniform` for the relu family
    (relu, leaky relu, ELU, softplus, GELU, SiLU), :func:`glorot_uniform` for identity/linear,
    tanh, sigmoid, the threshold units and the output maps ("softmax", "sparsemax").
    """
    if isinstance(activation, str) and activation.lower() in ("softmax", "sparsemax"):
        return glorot_uniform
    return _BY_NAME[activation_info(activation).init]


_BY_NAME = {
    "glorot_uniform": glorot_uniform, "xavier_uniform": glorot_uniform,
    "glorot_normal": glorot_normal, "xavier_normal": glorot_normal,
    "he_uniform": he_uniform, "kaiming_uniform": he_uniform,
    "he_normal": he_normal, "kaiming_normal": he_normal,
    "zeros": zeros,
}


def get_initializer(init):
    """Map a name (``"glorot_uniform"``, ``"he_normal"``, ``"zeros"``, ...) or a callable
    ``f(shape, seed=..., dtype=...)`` to the callable."""
    if callable(init):
        return init
    if isinstance(init, str) and init.lower() in _BY_NAME:
        return _BY_NAME[init.lower()]
    raise ValueError(f"unknown initializer {init!r}; expected a callable or one of "
                     f"{sorted(_BY_NAME)}")
