"""Batch sources for data that does not fit in memory: what ``fit``, ``evaluate`` and
``predict`` accept besides in-memory arrays.

* an iterable of ``(X_batch, y_batch)`` pairs: a zero-argument callable that returns a new one
  per epoch (``lambda: batches(path)``), a re-iterable object (a new ``iter()`` per epoch), or a
  one-shot iterator such as a generator (one epoch only, unless ``steps_per_epoch`` is given:
  then the epochs keep drawing from it, as in Keras);
* a Keras-style ``Sequence``: ``len(seq)`` batches, ``seq[i]`` -> ``(X_batch, y_batch)``, an
  optional ``seq.on_epoch_end()``; ``shuffle`` shuffles the order of the batches;
* a NumPy memmap X (with y in memory or memmapped too);
* a Dask array X (with y a Dask or NumPy array), or a Dask DataFrame.

Memmaps and Dask arrays are read in chunks of rows. A chunk is read (or computed) whole, in
file order, converted to the model's dtype, shuffled within itself, and cut into batches; the
chunks of an epoch come in a random order, and the next chunk is read in a background thread
while the current one trains. So an epoch reads every row once, sequentially within each chunk,
and memory holds about three chunks (the one in use, its shuffled copy, the next one), never
the whole array in the model's dtype. The price: a batch mixes rows from one chunk (two at a
chunk boundary) rather than from the whole set - the usual trade-off of streamed training; data
stored sorted by class should be shuffled once on disk. A memmap chunk is ``CHUNK_BYTES`` of
model-dtype rows; a Dask chunk is a group of the array's row blocks of about that size (a block
larger than that is one chunk: rechunk such arrays). The mapped pages of a memmap chunk are
released (``madvise(MADV_DONTNEED)``; the data stays in the page cache) once the chunk is
converted, so the process's resident memory does not grow with the file. (Pass a memmap
directly: ``dask.array.from_array`` over a memmap touches all its pages when it builds the
array.)

Every batch is checked when it arrives (shape, a numeric dtype converted to the model's,
finite values, labels); data streamed from disk is only seen once per epoch, so a bad value
late in the data stops ``fit`` with a clear error after the earlier batches have trained.
"""
from __future__ import annotations

import itertools
import mmap
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from fastnn._evaluation import RunningMetrics, model_dtype, n_outputs, predict_raw

__all__ = ["CHUNK_BYTES", "is_stream", "make_stream", "Stream"]

_END = object()

CHUNK_BYTES = 16 << 20
"""Bytes of model-dtype rows in one memmap or Dask chunk (the unit of reading and shuffling)."""


# --------------------------------------------------------------------------------------------
# What is a stream
# --------------------------------------------------------------------------------------------

def is_dask_collection(X) -> bool:
    """A Dask array or DataFrame/Series (without importing Dask when it is not loaded)."""
    if "dask" not in sys.modules:
        return False
    from dask import is_dask_collection as _is
    return bool(_is(X))


def is_stream(X) -> bool:
    """True for the inputs this module streams; False for in-memory array-likes."""
    if isinstance(X, np.memmap) or is_dask_collection(X):
        return True
    if isinstance(X, (np.ndarray, list, tuple, str, bytes, dict)) or hasattr(X, "__array__"):
        return False
    if hasattr(X, "tocsr") or hasattr(X, "__array_interface__"):
        return False
    return (callable(X) or hasattr(X, "__iter__")
            or (hasattr(X, "__len__") and hasattr(X, "__getitem__")))


def _as_dask_array(X, name):
    import dask.array as da

    if isinstance(X, da.Array):
        return X
    if hasattr(X, "to_dask_array"):  # a Dask DataFrame or Series: one pass to know its lengths
        return X.to_dask_array(lengths=True)
    raise TypeError(f"{name} is a Dask collection of type {type(X).__name__}; expected a Dask "
                    f"array or DataFrame")


# --------------------------------------------------------------------------------------------
# Sources: each gives an epoch's raw batches, or raw chunks of rows
# --------------------------------------------------------------------------------------------

class _BatchIterable:
    """An iterable of (X_batch, y_batch): a callable factory, a re-iterable, or an iterator."""

    shuffles = False

    def __init__(self, X):
        self.one_shot = False
        if callable(X) and not hasattr(X, "__iter__"):
            self.factory = X
        elif iter(X) is X:   # a generator or other iterator: it can be consumed once
            self.one_shot = True
            self.factory = lambda: X
        else:
            self.factory = lambda: iter(X)
        self.n_batches = len(X) if (hasattr(X, "__len__") and not self.one_shot) else None
        self.n_samples = None

    def epoch(self, rng) -> Iterator:
        it = self.factory()
        try:
            return iter(it)
        except TypeError:
            raise TypeError(f"the batch source returned {type(it).__name__}, which is not "
                            f"iterable; return a generator of (X_batch, y_batch)") from None


class _Sequence:
    """A Keras-style Sequence: ``len(seq)`` batches, ``seq[i]``, optional ``on_epoch_end``."""

    shuffles = True
    one_shot = False

    def __init__(self, seq, shuffle):
        self.seq = seq
        self.shuffle = shuffle
        self.n_batches = len(seq)
        self.n_samples = None

    def epoch(self, rng) -> Iterator:
        n = len(self.seq)
        order = rng.permutation(n) if self.shuffle else range(n)
        for i in order:
            yield self.seq[int(i)]
        end = getattr(self.seq, "on_epoch_end", None)
        if callable(end):
            end()


def _split_xy(batch, b):
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise ValueError(f"batch {b + 1} of the data source is a {type(batch).__name__}"
                     + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
                     + "; expected a pair (X_batch, y_batch)")


class _MemmapChunks:
    """Row chunks of a memmap X (and y), each read in file order; mapped pages released."""

    def __init__(self, X, y, chunk_rows):
        self.X, self.y = X, y
        self.n_samples = X.shape[0]
        self.bounds = list(range(0, self.n_samples, chunk_rows)) + [self.n_samples]

    @property
    def n_chunks(self):
        return len(self.bounds) - 1

    def load(self, idxs, convert):
        xs, ys = [], []
        for i in idxs:
            s, e = self.bounds[i], self.bounds[i + 1]
            xs.append(convert(self.X[s:e]))
            _drop_pages(self.X[s:e])
            if self.y is not None:
                ys.append(np.array(self.y[s:e]))
                _drop_pages(self.y[s:e])
        return _cat(xs), (_cat(ys) if self.y is not None else None)


class _DaskChunks:
    """Groups of a Dask array's row blocks, each group computed in one ``dask.compute``."""

    def __init__(self, X, y, chunk_rows, name):
        X = _as_dask_array(X, name)
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-dimensional, got shape {X.shape}")
        rows = X.chunks[0]
        if any(np.isnan(r) for r in rows):
            raise ValueError(f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() "
                             f"first (or to_dask_array(lengths=True) for a DataFrame)")
        if len(X.chunks[1]) > 1:
            X = X.rechunk({1: -1})
        self.n_samples = int(sum(rows))
        offsets = np.concatenate(([0], np.cumsum(rows))).astype(np.int64)
        if y is not None:
            if is_dask_collection(y):
                y = _as_dask_array(y, "y")
                if y.shape[0] != self.n_samples:
                    raise ValueError(f"{name} has {self.n_samples} samples but y has "
                                     f"{y.shape[0]}")
                if y.chunks[0] != X.chunks[0]:
                    y = y.rechunk({0: X.chunks[0]})
            else:
                y = np.asarray(y)
                if y.shape[0] != self.n_samples:
                    raise ValueError(f"{name} has {self.n_samples} samples but y has "
                                     f"{y.shape[0]}")
        self.X, self.y, self.offsets = X, y, offsets
        # consecutive blocks grouped to about chunk_rows rows
        groups, cur, cur_rows = [], [], 0
        for i, r in enumerate(rows):
            if cur and cur_rows + r > chunk_rows:
                groups.append(cur)
                cur, cur_rows = [], 0
            cur.append(i)
            cur_rows += r
        if cur:
            groups.append(cur)
        self.groups = groups

    @property
    def n_chunks(self):
        return len(self.groups)

    def load(self, idxs, convert):
        import dask

        blocks = [b for i in idxs for b in self.groups[i]]
        parts = [self.X.blocks[b] for b in blocks]
        y_dask = self.y is not None and not isinstance(self.y, np.ndarray)
        if y_dask:
            parts += [self.y.blocks[b] for b in blocks]
        got = dask.compute(*parts)
        k = len(blocks)
        xs = []
        for a in got[:k]:
            xs.append(convert(np.asarray(a)))
            _drop_pages(a)   # a block of dask.array.from_array over a memmap
        if self.y is None:
            ys = None
        elif y_dask:
            ys = _cat([np.asarray(a) for a in got[k:]])
        else:
            ys = _cat([self.y[self.offsets[b]:self.offsets[b + 1]] for b in blocks])
        return _cat(xs), ys


def _cat(parts):
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _drop_pages(a) -> None:
    """Release the mapped file pages under ``a`` (a view of a shared or read-only memmap) from
    this process's resident memory; the data stays in the page cache. A no-op for anything
    else, and for copy-on-write memmaps (whose written pages would be lost)."""
    base = a
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    mm = getattr(base, "_mmap", None) if base is not None else None
    if mm is None or getattr(base, "mode", "c") == "c" or not hasattr(mm, "madvise") \
            or not hasattr(mmap, "MADV_DONTNEED") or not isinstance(a, np.ndarray) or a.size == 0:
        return
    try:
        start = np.frombuffer(mm, dtype=np.uint8).ctypes.data
        lo, hi = np.lib.array_utils.byte_bounds(a)
        off = lo - start
        off -= off % mmap.PAGESIZE
        if off < 0 or hi - start > len(mm):
            return
        mm.madvise(mmap.MADV_DONTNEED, off, hi - start - off)
    except (OSError, ValueError, TypeError, BufferError):
        pass   # releasing pages is an optimisation; reading still works without it


def _chunk_batches(chunks, *, batch_size, shuffle, rng, convert) -> Iterator:
    """One epoch over a chunked source: chunks in random order (shuffle), rows shuffled within
    each chunk, batches of ``batch_size`` (the last one smaller); the next chunk is loaded in a
    background thread while the current one is trained on."""
    n = chunks.n_chunks
    order = [int(i) for i in (rng.permutation(n) if shuffle else range(n))]
    if not order:
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastnn-stream")
    try:
        pending: Future | None = pool.submit(chunks.load, [order[0]], convert)
        carry_x = carry_y = None
        for k in range(n):
            assert pending is not None
            Xc, yc = pending.result()
            pending = pool.submit(chunks.load, [order[k + 1]], convert) if k + 1 < n else None
            if shuffle:
                p = rng.permutation(Xc.shape[0])
                Xc = Xc[p]
                yc = yc[p] if yc is not None else None
            if carry_x is not None:
                Xc = np.concatenate([carry_x, Xc])
                yc = np.concatenate([carry_y, yc]) if yc is not None else None
            m = Xc.shape[0]
            full = m if pending is None else (m // batch_size) * batch_size
            for s in range(0, full, batch_size):
                e = min(s + batch_size, full)
                yield Xc[s:e], (yc[s:e] if yc is not None else None)
            carry_x = Xc[full:] if full < m else None
            carry_y = yc[full:] if (full < m and yc is not None) else None
            del Xc, yc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------
# The stream fit iterates
# --------------------------------------------------------------------------------------------

class Stream:
    """Checked ``(X_batch, y_batch)`` of the model's dtype, one epoch per ``iter()``.

    Built by :func:`make_stream`. ``n_samples`` and ``n_batches`` are None when the source does
    not say (a generator).
    """

    def __init__(self, source, *, chunked, dtype, check_y, batch_size, shuffle, rng,
                 steps_per_epoch, n_features, name, needs_y):
        self.source = source
        self.chunked = chunked
        self.dtype = np.dtype(dtype)
        self.check_y = check_y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = rng
        self.steps = steps_per_epoch
        self.n_features = n_features
        self.name = name
        self.needs_y = needs_y
        self.one_shot = getattr(source, "one_shot", False)
        self._shared = None   # the one-shot iterator, drawn from across epochs
        self._rows_seen = 0
        n = source.n_samples
        full = -(-n // batch_size) if (chunked and n is not None) else source.n_batches
        self.n_batches, self.n_samples = full, n
        if steps_per_epoch is not None:
            if full is None or self.one_shot:
                self.n_batches = steps_per_epoch
            elif steps_per_epoch < full:
                self.n_batches, self.n_samples = steps_per_epoch, None
        self.exhausted = False

    def check_epochs(self, epochs: int) -> None:
        if self.one_shot and self.steps is None and epochs > 1:
            raise ValueError(
                f"{self.name} is a one-shot iterator (a generator can be consumed only once) "
                f"but epochs={epochs}; pass a zero-argument function that returns a new "
                f"generator (e.g. lambda: batches(...)), a re-iterable object or a Sequence, "
                f"or give steps_per_epoch to draw every epoch from the same generator")

    # --- checks ------------------------------------------------------------------------------
    def convert_X(self, xb, where=""):
        """A batch or chunk of X as a C-contiguous array of the model's dtype, checked."""
        a = xb if isinstance(xb, np.ndarray) else np.asarray(xb)
        if a.dtype.kind not in "iubf":
            raise TypeError(f"{self.name}{where} has dtype {a.dtype}; expected numbers")
        if a.ndim != 2:
            raise ValueError(f"{self.name}{where} must be 2-dimensional (n_samples, "
                             f"n_features), got shape {a.shape}")
        if self.n_features is None:
            self.n_features = a.shape[1]
        elif a.shape[1] != self.n_features:
            raise ValueError(f"{self.name}{where} has {a.shape[1]} features but "
                             f"{self.n_features} are expected")
        a = np.array(a, dtype=self.dtype, order="C", copy=isinstance(a, np.memmap) or None)
        if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
            raise ValueError(f"{self.name}{where} contains NaN or infinity")
        return a

    def _check(self, xb, yb, b):
        where = f" (batch {b + 1})"
        if not self.chunked:
            xb = self.convert_X(xb, where)
        if yb is None:
            if self.needs_y:
                raise ValueError(f"{self.name}{where}: no targets; the batches must be "
                                 f"(X_batch, y_batch) pairs")
            return xb, None
        try:
            return xb, self.check_y(yb, xb.shape[0])
        except (ValueError, TypeError) as err:
            raise type(err)(f"{self.name}{where}: {err}") from None

    # --- iteration ---------------------------------------------------------------------------
    def _raw(self) -> Iterator:
        if self.chunked:
            return _chunk_batches(self.source, batch_size=self.batch_size,
                                  shuffle=self.shuffle, rng=self.rng,
                                  convert=lambda a: self.convert_X(a, " (a chunk)"))
        if self.one_shot:
            if self._shared is None:
                self._shared = self.source.epoch(self.rng)
            return self._shared
        return self.source.epoch(self.rng)

    def batches(self) -> Iterator:
        """Raw X batches only (for predict): pairs are split, a bare array is X."""
        for b, batch in enumerate(self._limited()):
            if self.chunked:
                yield batch[0]
            else:
                xb = batch[0] if isinstance(batch, (tuple, list)) else batch
                yield self.convert_X(xb, f" (batch {b + 1})")

    def _limited(self):
        it = self._raw()
        if self.steps is None:
            return it
        return itertools.islice(it, self.steps)

    def __iter__(self) -> Iterator:
        got = 0
        for b, batch in enumerate(self._limited()):
            got += 1
            xb, yb = batch if self.chunked else _split_xy(batch, b)
            yield self._check(xb, yb, b)
        if self.steps is not None and got < self.steps:
            self.exhausted = True   # a one-shot generator ran dry: fit stops after this epoch
        elif self.steps is not None and self.one_shot and got:
            # look one batch ahead, so a generator that ends with this epoch stops training
            # now rather than failing the next epoch with no batches
            nxt = next(self._shared, _END)
            if nxt is _END:
                self.exhausted = True
            else:
                self._shared = itertools.chain([nxt], self._shared)
        if got == 0:
            raise ValueError(f"{self.name} yielded no batches"
                             + (" (a one-shot generator already consumed?)"
                                if self.one_shot else ""))

    def __len__(self) -> int:
        if self.n_batches is None:
            raise TypeError(f"{self.name} does not know its number of batches")
        return self.n_batches


def make_stream(X, y=None, *, dtype, check_y: Callable | None, batch_size: int = 1024,
                shuffle: bool = False, rng=None, steps_per_epoch: int | None = None,
                n_features: int | None = None, name: str = "X", needs_y: bool = True):
    """A :class:`Stream` over ``X`` (and ``y``), or None when X is an in-memory array-like.

    Parameters
    ----------
    X : memmap, Dask array or DataFrame, Sequence, callable, iterable or iterator
    y : array-like or Dask array, optional
        Targets for a memmap or Dask X; must be None for sources that yield pairs.
    dtype : the model's float dtype; every batch is converted to it.
    check_y : callable (y_batch, n_rows) -> checked y_batch
    rng : np.random.Generator
        Chunk order, row order within chunks, Sequence batch order.
    """
    if not is_stream(X):
        return None
    if steps_per_epoch is not None and (isinstance(steps_per_epoch, bool) or not isinstance(
            steps_per_epoch, (int, np.integer)) or steps_per_epoch <= 0):
        raise ValueError(f"Invalid steps_per_epoch: {steps_per_epoch!r} (expected a positive "
                         f"int or None)")
    rng = rng if rng is not None else np.random.default_rng()
    row_bytes = np.dtype(dtype).itemsize * max(1, int(n_features or 1))
    source: Any
    if isinstance(X, np.memmap) or is_dask_collection(X):
        if isinstance(X, np.memmap) and X.ndim == 2:
            n_features = n_features or X.shape[1]
            row_bytes = np.dtype(dtype).itemsize * max(1, X.shape[1])
        elif hasattr(X, "shape") and len(X.shape) == 2 and not np.isnan(X.shape[1]):
            row_bytes = np.dtype(dtype).itemsize * max(1, int(X.shape[1]))
        chunk_rows = max(batch_size, (CHUNK_BYTES // row_bytes) // batch_size * batch_size)
        if needs_y and y is None:
            raise ValueError(f"{name} is an array: pass its targets y too")
        if isinstance(X, np.memmap):
            if X.ndim != 2:
                raise ValueError(f"{name} must be 2-dimensional, got shape {X.shape}")
            if y is not None:
                if is_dask_collection(y):
                    raise TypeError("a memmap X needs y as a NumPy array or memmap")
                if not isinstance(y, np.ndarray):
                    y = np.asarray(y)
                if y.shape[0] != X.shape[0]:
                    raise ValueError(f"{name} has {X.shape[0]} samples but y has "
                                     f"{y.shape[0]}")
            source = _MemmapChunks(X, y, chunk_rows)
        else:
            source = _DaskChunks(X, y, chunk_rows, name)
        chunked = True
    else:
        if y is not None:
            raise ValueError(f"y must be None when {name} is a batch source (it yields "
                             f"(X_batch, y_batch) pairs); got y of type {type(y).__name__}")
        if hasattr(X, "__len__") and hasattr(X, "__getitem__") and not hasattr(X, "__iter__") \
                or _is_keras_sequence(X):
            source = _Sequence(X, shuffle)
        else:
            source = _BatchIterable(X)
        chunked = False
    return Stream(source, chunked=chunked, dtype=dtype, check_y=check_y,
                  batch_size=int(batch_size), shuffle=shuffle, rng=rng,
                  steps_per_epoch=None if steps_per_epoch is None else int(steps_per_epoch),
                  n_features=n_features, name=name, needs_y=needs_y)


def _is_keras_sequence(X) -> bool:
    """A Sequence that also defines ``__iter__`` (Keras's does) is still indexed by batch."""
    return (hasattr(X, "__len__") and hasattr(X, "__getitem__")
            and callable(getattr(X, "on_epoch_end", None)))


# --------------------------------------------------------------------------------------------
# Evaluation and prediction over a stream
# --------------------------------------------------------------------------------------------

def evaluate_stream(model, stream: Stream, loss) -> dict:
    """``fastnn.training.evaluate``'s dict (loss, accuracy or r2, n_samples), accumulated
    batch by batch in evaluation mode."""
    run = RunningMetrics(loss.task, n_outputs(model))
    for xb, yb in stream:
        z = predict_raw(model, xb, max(1, xb.shape[0]))
        run.update(float(loss.loss(z, yb)), z, yb, xb.shape[0])
    out = {"loss": run.loss, "n_samples": int(run.n)}
    name, value = run.metric()
    if name:
        out[name] = value
    return out


def predict_stream(model, X, batch_size: int) -> np.ndarray:
    """The network's output for streamed X (pairs' targets are ignored), one NumPy array."""
    n_features = model.input_features() if hasattr(model, "input_features") else None
    stream = make_stream(X, None, dtype=model_dtype(model), check_y=None,
                         batch_size=batch_size, shuffle=False, n_features=n_features,
                         needs_y=False)
    outs = [predict_raw(model, xb, batch_size) for xb in stream.batches()]
    if not outs:
        raise ValueError("X yielded no batches")
    return _cat(outs)
