"""The lecture's toy problems: threshold logic, XOR, the playground's spirals and circles, a
1-D function for regression."""
from __future__ import annotations

import numpy as np

from fastnn.data import check_random_state

__all__ = ["threshold_logic", "THRESHOLD_LOGIC_WEIGHTS", "make_xor", "make_spirals",
           "make_circles", "make_regression_1d"]

#: the lecture's threshold unit for y = x2 (x1 + not x3): v = -2 + 2 x1 + 4 x2 - x3, y = sgn(v)
#: as (weights for x1, x2, x3; bias)
THRESHOLD_LOGIC_WEIGHTS = (np.array([2.0, 4.0, -1.0]), -2.0)


def _check(n_samples=None, noise=0.0, dtype=np.float32):
    """Validate the common arguments (clear messages instead of NumPy's)."""
    import numbers
    if n_samples is not None and (isinstance(n_samples, bool)
                                  or not isinstance(n_samples, numbers.Integral)
                                  or n_samples < 0):
        raise ValueError(f"n_samples must be a non-negative int, got {n_samples!r}")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) \
            or not (0.0 <= float(noise) < float("inf")):
        raise ValueError(f"noise must be a finite float >= 0, got {noise!r}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")


def threshold_logic(*, binary: bool = False, dtype=np.float32):
    """The truth table of y = x2 AND (x1 OR NOT x3) (the lecture's Example 3.2, Table 3.6).

    Inputs and outputs in the lecture's bipolar encoding (-1 false, +1 true), rows in the
    table's order (x1, x2, x3) = (-1,-1,-1), (-1,-1,1), ..., (1,1,1). The McCulloch-Pitts unit
    ``sgn(-2 + 2 x1 + 4 x2 - x3)`` (:data:`THRESHOLD_LOGIC_WEIGHTS`) reproduces it.

    Parameters
    ----------
    binary : bool
        0/1 encoding instead of -1/+1 (y as int labels 0/1).

    Returns
    -------
    X : (8, 3) array, y : (8,) array (float -1/+1, or int64 0/1 when binary)
    """
    bits = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=bool)
    x1, x2, x3 = bits[:, 0], bits[:, 1], bits[:, 2]
    truth = x2 & (x1 | ~x3)
    if binary:
        return bits.astype(dtype), truth.astype(np.int64)
    return np.where(bits, 1.0, -1.0).astype(dtype), np.where(truth, 1.0, -1.0).astype(dtype)


def make_xor(n_samples: int | None = None, *, noise: float = 0.0, seed=None,
             dtype=np.float32):
    """XOR: y = x1 XOR x2, the problem a single threshold unit cannot solve.

    ``n_samples=None`` gives the 4-row truth table on {0, 1}^2. Otherwise points drawn
    uniformly in [-1, 1]^2, labelled 1 where exactly one coordinate is positive (the
    playground's XOR quadrants), with Gaussian input noise of std ``noise`` added after labeling.

    Returns X (n, 2), y (n,) int64 in {0, 1}.
    """
    _check(n_samples, noise, dtype)
    if n_samples is None:
        X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype)
        return X, np.array([0, 1, 1, 0], dtype=np.int64)
    rng = check_random_state(seed)
    X = rng.uniform(-1.0, 1.0, size=(n_samples, 2))
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(np.int64)
    if noise:
        X = X + rng.normal(0.0, noise, size=X.shape)
    return X.astype(dtype), y


def make_spirals(n_samples: int = 200, *, noise: float = 0.0, turns: float = 1.75, seed=None,
                 dtype=np.float32):
    """Two interleaved spirals, as in the TensorFlow playground (radius 1).

    Point i of a spiral has radius r = i / n_per_class and angle 2 pi turns r (+ pi for the
    second spiral); Gaussian noise of std ``noise`` (in units of the radius) is added.

    Returns X (n_samples, 2), y (n_samples,) int64 in {0, 1}, classes alternating.
    """
    _check(n_samples, noise, dtype)
    rng = check_random_state(seed)
    n0 = (n_samples + 1) // 2
    n1 = n_samples // 2
    parts_X, parts_y = [], []
    for label, n, delta in ((0, n0, 0.0), (1, n1, np.pi)):
        r = np.arange(n) / max(n, 1)
        t = 2.0 * np.pi * turns * r + delta
        pts = np.stack([r * np.sin(t), r * np.cos(t)], axis=1)
        parts_X.append(pts)
        parts_y.append(np.full(n, label, dtype=np.int64))
    X = np.concatenate(parts_X)
    y = np.concatenate(parts_y)
    if noise:
        X = X + rng.normal(0.0, noise, size=X.shape)
    order = rng.permutation(n_samples)
    return X[order].astype(dtype), y[order]


def make_circles(n_samples: int = 200, *, noise: float = 0.0, seed=None, dtype=np.float32):
    """A disc inside a ring, as in the TensorFlow playground (radius 1).

    Class 1: radius uniform in [0, 0.5]; class 0: radius uniform in [0.7, 1]; angles uniform.
    Gaussian noise of std ``noise`` is added to the coordinates.

    Returns X (n_samples, 2), y (n_samples,) int64 in {0, 1}.
    """
    _check(n_samples, noise, dtype)
    rng = check_random_state(seed)
    n_in = n_samples // 2
    n_out = n_samples - n_in
    r = np.concatenate([rng.uniform(0.0, 0.5, n_in), rng.uniform(0.7, 1.0, n_out)])
    t = rng.uniform(0.0, 2.0 * np.pi, n_samples)
    X = np.stack([r * np.sin(t), r * np.cos(t)], axis=1)
    y = np.concatenate([np.ones(n_in, dtype=np.int64), np.zeros(n_out, dtype=np.int64)])
    if noise:
        X = X + rng.normal(0.0, noise, size=X.shape)
    order = rng.permutation(n_samples)
    return X[order].astype(dtype), y[order]


_FUNCTIONS = {
    "sin": lambda x: np.sin(np.pi * x),
    "wave": lambda x: np.sin(2.0 * np.pi * x) + 0.5 * np.sin(5.0 * np.pi * x),
    "abs": np.abs,
    "step": lambda x: (x >= 0).astype(np.float64),
    "cubic": lambda x: x ** 3 - 0.5 * x,
}


def make_regression_1d(n_samples: int = 200, *, function="sin", noise: float = 0.0,
                       low: float = -1.0, high: float = 1.0, seed=None, sort: bool = True,
                       dtype=np.float32):
    """A 1-D function to fit by regression (the universal approximation picture).

    Parameters
    ----------
    function : {"sin", "wave", "abs", "step", "cubic"} or callable
        ``sin`` is sin(pi x); ``wave`` sin(2 pi x) + 0.5 sin(5 pi x); a callable maps an array
        of x to y.
    noise : float
        Std of Gaussian noise added to y.
    sort : bool
        Return the points sorted by x (handy for plotting).

    Returns
    -------
    X (n_samples, 1), y (n_samples, 1)
    """
    f = _FUNCTIONS.get(function) if isinstance(function, str) else function
    if f is None:
        raise ValueError(f"unknown function {function!r}; choose from {sorted(_FUNCTIONS)} "
                         f"or pass a callable")
    _check(n_samples, noise, dtype)
    rng = check_random_state(seed)
    x = rng.uniform(low, high, n_samples)
    if sort:
        x = np.sort(x)
    y = np.asarray(f(x), dtype=np.float64)
    if noise:
        y = y + rng.normal(0.0, noise, size=y.shape)
    return x.reshape(-1, 1).astype(dtype), y.reshape(-1, 1).astype(dtype)
