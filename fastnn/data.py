"""Data preparation: standardization, train/validation/test splits, seeded mini-batches.

The lecture's tricks of the trade, plainly: subtract the *training* mean and divide by the
*training* standard deviation of each input dimension; split the data into training, validation
and test sets (stratified for classification); visit the training set in seeded, shuffled
mini-batches.
"""
from __future__ import annotations

import numbers

import numpy as np

from fastnn._validation import FLOAT_DTYPES

__all__ = [
    "Standardizer",
    "train_test_split",
    "train_val_test_split",
    "BatchIterator",
    "iterate_minibatches",
    "check_random_state",
]


def check_random_state(seed) -> np.random.Generator:
    """Turn ``seed`` (None, an int, a SeedSequence or a Generator) into a ``np.random.Generator``.

    A Generator is returned as is (shared state, so consecutive calls continue its stream).
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (numbers.Integral, np.random.SeedSequence)):
        if isinstance(seed, bool):
            raise TypeError(f"seed must be None, an int or a numpy Generator, got {seed!r}")
        return np.random.default_rng(seed)
    raise TypeError(f"seed must be None, an int or a numpy Generator, got {type(seed).__name__}")


# --------------------------------------------------------------------------------------------
# Standardization
# --------------------------------------------------------------------------------------------

class Standardizer:
    """Zero mean and unit variance per feature, with statistics from the training data only.

    ``fit`` computes, for each input dimension, the mean and the standard deviation of the
    training set (accumulated in float64); ``transform`` maps any set (training, validation,
    test) with those same statistics: ``(X - mean_) / scale_``. Fitting on the validation or
    test data would leak information about them into training.

    Features with zero variance on the training set (e.g. MNIST's always-black corner pixels)
    get ``scale_ = 1``: they are only centered, never divided by zero. A constant feature
    becomes exactly 0 in either dtype (the mean is accumulated relative to the first sample, so
    it equals the constant). "Zero variance" is relative to the feature's magnitude: a standard
    deviation at most ``4 * finfo(X.dtype).eps * |mean|`` (a few units in the last place of the
    mean, the size of the rounding of the mean itself) or at most ``eps`` counts as zero.
    Dividing by a deviation that small would standardize rounding noise: the mean rounded to
    X's dtype alone moves such a feature by up to +-1.

    Standardizing destroys sparsity: a zero entry becomes ``-mean / std``, so a sparse input
    turns dense (the lecture: "doesn't work for sparse inputs"). For sparse data scale each
    feature without centering (``with_mean=False``), or not at all.

    Parameters
    ----------
    with_mean : bool, default True
        Subtract the training mean.
    with_std : bool, default True
        Divide by the training standard deviation.
    eps : float, default 1e-12
        Standard deviations at or below ``eps`` count as zero variance (``scale_ = 1``), as do
        those at or below ``4 * finfo(X.dtype).eps * |mean|`` (see above).

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,), float64
    var_ : ndarray of shape (n_features,), float64
    scale_ : ndarray of shape (n_features,), float64
        The divisor: the standard deviation, or 1 for zero-variance features.
    n_features_in_ : int
    n_samples_seen_ : int
    """

    def __init__(self, with_mean: bool = True, with_std: bool = True, eps: float = 1e-12):
        self.with_mean = bool(with_mean)
        self.with_std = bool(with_std)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) \
                or not 0.0 <= float(eps) < np.inf:
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
        self.eps = float(eps)

    def _check_X(self, X, name="X"):
        if not isinstance(X, np.ndarray):
            X = np.asarray(X)
        if X.dtype.kind in "iub":
            X = X.astype(np.float64)
        if X.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be a float32 or float64 array, got dtype {X.dtype}")
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-dimensional (n_samples, n_features), "
                             f"got shape {X.shape}")
        return X

    def fit(self, X, y=None) -> "Standardizer":
        """Compute per-feature mean and standard deviation of the training data ``X``.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
            The training set only.
        """
        X = self._check_X(X)
        if X.shape[0] == 0:
            raise ValueError("cannot fit a Standardizer on 0 samples")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or infinity; clean it before standardizing")
        # Two passes in float64, in chunks: the mean, accumulated relative to the first sample
        # (shifted data: a constant column sums exact zeros, so its mean is the constant and
        # its variance exactly 0), then the variance around it.
        n = X.shape[0]
        chunk = max(1, (1 << 22) // max(1, X.shape[1]))
        buf = np.empty((min(chunk, n), X.shape[1]), dtype=np.float64)  # 32 MiB at most
        shift = X[0].astype(np.float64)
        acc = np.zeros(X.shape[1], dtype=np.float64)
        for start in range(0, n, chunk):
            d = np.subtract(X[start:start + chunk], shift, out=buf[:min(chunk, n - start)])
            acc += d.sum(axis=0)
        mean = shift + acc / n
        acc[:] = 0.0
        for start in range(0, n, chunk):
            d = np.subtract(X[start:start + chunk], mean, out=buf[:min(chunk, n - start)])
            acc += np.einsum("ij,ij->j", d, d)
        var = acc / n
        if not np.isfinite(var).all():
            j = int(np.flatnonzero(~np.isfinite(var))[0])
            raise ValueError(f"the variance of feature {j} overflows float64 (values near "
                             f"{float(np.abs(X[:, j]).max()):.3g}); rescale X before "
                             f"standardizing")
        std = np.sqrt(var)
        # zero variance relative to the magnitude: a deviation within a few units in the last
        # place of the mean is rounding, not signal (module docstring)
        noise = np.maximum(self.eps, 4.0 * float(np.finfo(X.dtype).eps) * np.abs(mean))
        scale = np.where(std > noise, std, 1.0)
        self.mean_ = mean if self.with_mean else np.zeros_like(mean)
        self.var_ = var
        self.scale_ = scale if self.with_std else np.ones_like(scale)
        self.n_features_in_ = X.shape[1]
        self.n_samples_seen_ = X.shape[0]
        return self

    def _check_fitted(self, X):
        if not hasattr(self, "mean_"):
            raise RuntimeError("this Standardizer is not fitted yet; call fit(X_train) first")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features but the Standardizer was fitted "
                             f"on {self.n_features_in_}")

    def transform(self, X, out=None) -> np.ndarray:
        """Return ``(X - mean_) / scale_`` in X's float dtype (a new array unless ``out``)."""
        X = self._check_X(X)
        self._check_fitted(X)
        dt = X.dtype
        if out is None:
            out = np.empty(X.shape, dtype=dt)
        elif out.shape != X.shape or out.dtype != dt:
            raise ValueError(f"out must have shape {X.shape} and dtype {dt}, "
                             f"got {out.shape} {out.dtype}")
        # cast the statistics once so float32 data stays float32 (no float64 promotion)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            np.subtract(X, self.mean_.astype(dt), out=out)
            np.divide(out, self.scale_.astype(dt), out=out)
        # one pass over the result catches NaN/inf in X and overflow of X's dtype alike
        if not np.isfinite(out).all():
            if not np.isfinite(X).all():
                raise ValueError("X contains NaN or infinity; clean it before standardizing")
            raise ValueError(f"standardizing X overflows {dt}: X is far outside the range of "
                             f"the training data; use float64 data")
        return out

    def fit_transform(self, X, y=None) -> np.ndarray:
        """``fit(X).transform(X)``."""
        return self.fit(X).transform(X)

    def inverse_transform(self, X) -> np.ndarray:
        """Map standardized data back: ``X * scale_ + mean_``."""
        X = self._check_X(X)
        self._check_fitted(X)
        dt = X.dtype
        return X * self.scale_.astype(dt) + self.mean_.astype(dt)

    def state_dict(self) -> dict:
        """The fitted statistics as plain arrays (savable with the model)."""
        self._check_fitted(np.empty((0, getattr(self, "n_features_in_", 0))))
        return {"mean": self.mean_.copy(), "var": self.var_.copy(),
                "scale": self.scale_.copy(), "n_samples_seen": self.n_samples_seen_}

    def load_state_dict(self, state: dict) -> "Standardizer":
        self.mean_ = np.asarray(state["mean"], dtype=np.float64).copy()
        self.var_ = np.asarray(state["var"], dtype=np.float64).copy()
        self.scale_ = np.asarray(state["scale"], dtype=np.float64).copy()
        self.n_features_in_ = self.mean_.shape[0]
        self.n_samples_seen_ = int(state.get("n_samples_seen", 0))
        return self

    def __repr__(self) -> str:
        fitted = f", n_features_in_={self.n_features_in_}" if hasattr(self, "mean_") else ""
        return f"Standardizer(with_mean={self.with_mean}, with_std={self.with_std}{fitted})"


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------

def _n_from_size(size, n: int, name: str) -> int:
    if isinstance(size, bool) or not isinstance(size, numbers.Real):
        raise TypeError(f"{name} must be a float in (0, 1) or an int count, got {size!r}")
    if isinstance(size, numbers.Integral):
        k = int(size)
        if not 0 <= k <= n:
            raise ValueError(f"{name}={k} is outside [0, {n}] for {n} samples")
        return k
    s = float(size)
    if not 0.0 <= s < 1.0:
        raise ValueError(f"{name}={s} must be a fraction in [0, 1)")
    return int(np.ceil(s * n)) if s > 0 else 0


def _stratified_take(labels: np.ndarray, n_take: int, rng: np.random.Generator):
    """Indices of ``n_take`` samples drawn so that every class keeps its proportion.

    Per class, ``n_c * n_take / n`` rounded down, the remainder handed to the classes with the
    largest fractional parts (ties broken at random) - so the total is exactly ``n_take``.
    Returns (taken, rest) index arrays, each sorted by a random permutation.
    """
    classes, y_idx, counts = np.unique(labels, return_inverse=True, return_counts=True)
    n = labels.shape[0]
    exact = counts * (n_take / n)
    alloc = np.floor(exact).astype(np.int64)
    short = n_take - int(alloc.sum())
    if short > 0:
        frac = exact - alloc
        # random tie-breaking: sort by (-frac, random key)
        order = np.lexsort((rng.random(classes.shape[0]), -frac))
        # never give a class more than it has
        for c in order:
            if short == 0:
                break
            if alloc[c] < counts[c]:
                alloc[c] += 1
                short -= 1
    taken, rest = [], []
    # class membership lists, each shuffled with the same generator (reproducible)
    sort_idx = np.argsort(y_idx, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(counts)))
    for c in range(classes.shape[0]):
        members = sort_idx[bounds[c]:bounds[c + 1]]
        members = members[rng.permutation(members.shape[0])]
        taken.append(members[:alloc[c]])
        rest.append(members[alloc[c]:])
    taken = np.concatenate(taken) if taken else np.empty(0, dtype=np.intp)
    rest = np.concatenate(rest) if rest else np.empty(0, dtype=np.intp)
    return taken[rng.permutation(taken.shape[0])], rest[rng.permutation(rest.shape[0])]


def _stratify_labels(stratify, y, n):
    if stratify is None or stratify is False:
        return None
    if stratify is True:
        if y is None:
            raise ValueError("stratify=True needs y")
        labels = np.asarray(y)
    else:
        labels = np.asarray(stratify)
    if labels.ndim != 1:
        if labels.ndim == 2 and labels.shape[1] > 1:
            raise ValueError("stratify needs one class label per sample (1-D); for one-hot "
                             "targets pass stratify=y.argmax(axis=1)")
        labels = labels.reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"stratify has {labels.shape[0]} labels but there are {n} samples")
    return labels


def _split_indices(n, sizes, stratify_labels, seed, shuffle=True):
    """Split range(n) into len(sizes)+1 index arrays: the first gets the rest."""
    rng = check_random_state(seed)
    if not shuffle:
        if stratify_labels is not None:
            raise ValueError("stratify needs shuffle=True")
        parts, start = [], n - sum(sizes)
        if start < 0:
            raise ValueError("the requested split sizes exceed the number of samples")
        parts.append(np.arange(start))
        for k in sizes:
            parts.append(np.arange(start, start + k))
            start += k
        return parts
    if sum(sizes) > n:
        raise ValueError(f"the requested split sizes {sizes} exceed the {n} samples")
    if stratify_labels is None:
        perm = rng.permutation(n)
        parts, stop = [], n
        for k in sizes:
            parts.append(perm[stop - k:stop])
            stop -= k
        return [perm[:stop]] + parts
    remaining = np.arange(n)
    labels = stratify_labels
    out = []
    n_left = n
    for k in sizes:
        take, rest = _stratified_take(labels[remaining], k, rng)
        out.append(remaining[take])
        remaining = remaining[rest]
        n_left -= k
    return [remaining] + out


def _take(a, idx):
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        return a[idx]
    return np.asarray(a)[idx]


def train_test_split(X, y=None, *, test_size=0.2, stratify=None, seed=None, shuffle=True):
    """Split (X, y) into a training and a test set.

    Parameters
    ----------
    X : array of shape (n_samples, ...)
    y : array of shape (n_samples, ...), optional
    test_size : float in (0, 1) or int
        Fraction (rounded up) or number of test samples.
    stratify : None, True, or array of shape (n_samples,)
        True: keep the class proportions of ``y`` in both parts (up to rounding: the
        per-class counts differ from the exact proportion by less than one). An array: stratify
        on those labels instead.
    seed : None, int or np.random.Generator
        Same seed, same split.
    shuffle : bool
        False: the last ``test_size`` samples form the test set, in order.

    Returns
    -------
    X_train, X_test, y_train, y_test  (when y is given)
    X_train, X_test                   (when y is None)
    """
    n = len(X)
    if y is not None and len(y) != n:
        raise ValueError(f"X has {n} samples but y has {len(y)}")
    n_test = _n_from_size(test_size, n, "test_size")
    labels = _stratify_labels(stratify, y, n)
    tr, te = _split_indices(n, [n_test], labels, seed, shuffle)
    if y is None:
        return _take(X, tr), _take(X, te)
    return _take(X, tr), _take(X, te), _take(y, tr), _take(y, te)


def train_val_test_split(X, y=None, *, val_size=0.1, test_size=0.2, stratify=None, seed=None,
                         shuffle=True):
    """Split (X, y) into training, validation and test sets (fractions of the whole set).

    The lecture's three partitions: the training set trains the model, the validation set
    tunes hyperparameters (learning rate, sizes, regularization, best epoch), the test set
    estimates generalization and is looked at once.

    Parameters
    ----------
    val_size, test_size : float in (0, 1) or int
        Fractions of the whole set (rounded up) or sample counts.
    stratify, seed, shuffle :
        As in :func:`train_test_split`.

    Returns
    -------
    X_train, X_val, X_test, y_train, y_val, y_test  (when y is given; else the three X parts)
    """
    n = len(X)
    if y is not None and len(y) != n:
        raise ValueError(f"X has {n} samples but y has {len(y)}")
    n_val = _n_from_size(val_size, n, "val_size")
    n_test = _n_from_size(test_size, n, "test_size")
    labels = _stratify_labels(stratify, y, n)
    # unshuffled order: train | val | test
    tr, va, te = _split_indices(n, [n_val, n_test], labels, seed, shuffle)
    if y is None:
        return _take(X, tr), _take(X, va), _take(X, te)
    return (_take(X, tr), _take(X, va), _take(X, te),
            _take(y, tr), _take(y, va), _take(y, te))


# --------------------------------------------------------------------------------------------
# Mini-batches
# --------------------------------------------------------------------------------------------

class BatchIterator:
    """Seeded mini-batches over (X, y) without copying the dataset each epoch.

    Each pass (``iter(batches)``) draws one permutation of the sample *indices* from the
    generator and gathers each batch's rows into two buffers allocated once and reused, so an
    epoch costs one index permutation plus ``n_samples`` row copies, never a shuffled copy of
    the whole set. Without shuffling, batches are views of X and y (no copy at all).

    The yielded arrays are overwritten by the next batch: copy them if you keep them.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples, ...), optional
    batch_size : int
    shuffle : bool
    seed : None, int or np.random.Generator
        The permutation stream: the same seed gives the same batches, epoch after epoch.
    drop_last : bool
        Skip the final batch when it is smaller than ``batch_size``.

    Examples
    --------
    >>> batches = BatchIterator(X, y, batch_size=128, seed=0)
    >>> for epoch in range(3):
    ...     for xb, yb in batches:
    ...         ...
    """

    def __init__(self, X, y=None, batch_size: int = 32, shuffle: bool = True, seed=None,
                 drop_last: bool = False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
                or batch_size <= 0:
            raise ValueError(f"Invalid batch_size: {batch_size!r} (expected a positive int)")
        X = np.asarray(X)
        if y is not None:
            y = np.asarray(y)
            if y.shape[0] != X.shape[0]:
                raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}")
        self.X = X
        self.y = y
        self.n_samples = X.shape[0]
        self.batch_size = int(min(batch_size, max(1, self.n_samples)))
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.rng = check_random_state(seed)
        self._xbuf = None
        self._ybuf = None

    def __len__(self) -> int:
        if self.drop_last:
            return self.n_samples // self.batch_size
        return -(-self.n_samples // self.batch_size)

    def _buffers(self):
        if self._xbuf is None:
            bs = self.batch_size
            self._xbuf = np.empty((bs,) + self.X.shape[1:], dtype=self.X.dtype)
            if self.y is not None:
                self._ybuf = np.empty((bs,) + self.y.shape[1:], dtype=self.y.dtype)
        return self._xbuf, self._ybuf

    def __iter__(self):
        n, bs = self.n_samples, self.batch_size
        stop_at = (n // bs) * bs if self.drop_last else n
        if not self.shuffle and self.X.flags.c_contiguous and (
                self.y is None or self.y.flags.c_contiguous):
            for start in range(0, stop_at, bs):
                stop = min(start + bs, n)
                xb = self.X[start:stop]
                yield (xb, self.y[start:stop]) if self.y is not None else xb
            return
        perm = self.rng.permutation(n) if self.shuffle else np.arange(n)
        xbuf, ybuf = self._buffers()
        for start in range(0, stop_at, bs):
            idx = perm[start:min(start + bs, n)]
            m = idx.shape[0]
            xb = xbuf[:m]
            # mode="clip": the indices are known valid, and "raise" would buffer `out` again
            np.take(self.X, idx, axis=0, out=xb, mode="clip")
            if self.y is None:
                yield xb
            else:
                yb = ybuf[:m]
                np.take(self.y, idx, axis=0, out=yb, mode="clip")
                yield xb, yb


def iterate_minibatches(X, y=None, batch_size: int = 32, shuffle: bool = True, seed=None,
                        drop_last: bool = False):
    """One pass of :class:`BatchIterator` (a generator of ``(X_batch, y_batch)``)."""
    return iter(BatchIterator(X, y, batch_size=batch_size, shuffle=shuffle, seed=seed,
                              drop_last=drop_last))
