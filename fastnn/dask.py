"""Batch inference on Dask arrays and DataFrames: a lazy Dask array of predictions.

>>> import fastnn.dask
>>> out = fastnn.dask.predict(model, X)          # X: dask array (n_samples, n_features)
>>> proba = fastnn.dask.predict_proba(clf, X)    # a fitted classifier
>>> out.compute()                                # or store it: out.to_zarr(...)

Each block of rows is predicted where it lives (``map_blocks``). The model enters the graph once,
as a single task (``dask.delayed``) that every block depends on: on a distributed cluster it is
shipped to each worker once and reused for all the blocks there, instead of being pickled into
every block's task. Inside one worker process, threads share the model; a fastnn network
predicts one batch at a time (its work buffers are shared), so use worker processes
(``threads_per_worker=1``) for parallel inference. Workers use the BLAS library of the process
that built the graph (:func:`fastnn.functional.runtime.use_blas`) where they have it.

``model`` is a :class:`fastnn.Sequential` (or any object with the method), or a fitted
``fastnn.MLPClassifier``/``MLPRegressor``. Blocks of another numeric dtype are converted to the
network's float dtype block by block. For ``fit`` on a Dask array see :func:`fastnn.fit`, which
streams it chunk by chunk.
"""
from __future__ import annotations

import dask
import dask.array as da
import numpy as np

from fastnn._threads import blas_library, blas_match

__all__ = ["predict", "predict_proba"]


def predict(model, X, *, batch_size: int | None = None) -> da.Array:
    """Lazy ``model.predict`` of every row block of ``X``.

    Parameters
    ----------
    model : Sequential or a fitted fastnn estimator
    X : dask array (n_samples, n_features), or a Dask DataFrame (its row partitions)
    batch_size : int, optional
        Rows per forward pass inside a block (a Sequential's ``predict(batch_size=...)``).

    Returns
    -------
    dask array: (n_samples, n_outputs) network outputs for a Sequential, (n_samples,) labels
    for a classifier estimator; row chunks follow X's (unknown sizes for a DataFrame).
    """
    return _map(model, X, "predict", batch_size)


def predict_proba(model, X, *, batch_size: int | None = None) -> da.Array:
    """Lazy ``model.predict_proba`` of every row block of ``X``: (n_samples, n_classes)."""
    return _map(model, X, "predict_proba", batch_size)


def _map(model, X, method, batch_size):
    if not callable(getattr(model, method, None)):
        raise TypeError(f"{type(model).__name__} has no {method}() method")
    X = _as_array(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-dimensional (n_samples, n_features), got shape "
                         f"{X.shape}")
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})   # a block holds whole rows
    # the output's width and dtype: one row through the model, here, before building the graph
    probe = _apply(np.zeros((1, X.shape[1]), dtype=_input_dtype(model, X.dtype)), model,
                   method, batch_size)
    model_task = dask.delayed(model, traverse=False)   # one task, one key: see the module notes
    blas = blas_library()
    if probe.ndim == 1:
        return da.map_blocks(_apply, X, model_task, method, batch_size, blas, drop_axis=1,
                             chunks=(X.chunks[0],), dtype=probe.dtype,
                             meta=np.empty((0,), dtype=probe.dtype))
    return da.map_blocks(_apply, X, model_task, method, batch_size, blas,
                         chunks=(X.chunks[0], probe.shape[1:]), dtype=probe.dtype,
                         meta=np.empty((0,) + probe.shape[1:], dtype=probe.dtype))


def _as_array(X) -> da.Array:
    if isinstance(X, da.Array):
        return X
    if hasattr(X, "to_dask_array"):   # a Dask DataFrame or Series
        return X.to_dask_array()
    raise TypeError(f"X must be a Dask array or DataFrame, got {type(X).__name__}; for NumPy "
                    "arrays call the model's method directly")


def _input_dtype(model, block_dtype):
    dt = getattr(getattr(model, "model_", model), "dtype", None)   # an estimator's network
    if isinstance(dt, np.dtype):
        return dt
    return block_dtype if np.dtype(block_dtype).kind == "f" else np.float64


def _apply(block, model, method, batch_size, blas=None):
    """One block through ``model.<method>`` (runs on the worker, with the BLAS library of the
    process that built the graph where the worker has it: a local predict's bits, with a BLAS
    whose rounding of a row does not depend on the rows around it, such as OpenBLAS's SkylakeX
    kernels; else equal to rounding)."""
    if blas is not None:
        blas_match(blas)
    block = np.asarray(block)
    block = np.ascontiguousarray(block, dtype=_input_dtype(model, block.dtype))
    fn = getattr(model, method)
    if batch_size is not None:
        return fn(block, batch_size=batch_size)
    return fn(block)
