"""The bad-input catalogue: every entry is a call into the public API with a wrong argument.

Each case either raises a clear Python exception - the test checks the exception type AND a
fragment of the message that names the argument or says what was expected - or is handled
correctly: the result equals the result for the plain (C-contiguous, writeable, in-memory)
equivalent input, bit for bit.

A crash (segfault, abort) would kill the whole test run, so the catalogue is first screened in
child processes (``python tests/test_bad_input.py --screen``, resumed after any case that kills
its process); a case that crashed or hung there fails in-process without being run again.
"""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import functional as F
from fastnn import optim
from fastnn.data import BatchIterator, Standardizer, check_random_state, train_test_split
from fastnn.layers import Dense, Dropout
from fastnn.model import Sequential

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

R = np.random.default_rng(12345)
X32 = R.standard_normal((7, 5)).astype(np.float32)
X64 = X32.astype(np.float64)
W32 = R.standard_normal((5, 3)).astype(np.float32)
B32 = R.standard_normal(3).astype(np.float32)
Z64 = R.standard_normal((6, 4))
LAB = np.array([0, 1, 2, 3, 1, 0])
YC = np.array([0, 1, 2, 1, 0, 2, 1])  # labels for X32 (3 classes)


class Raises:
    """Expectation: ``exc`` is raised and its message contains ``fragment``."""

    def __init__(self, exc, fragment):
        self.exc, self.fragment = exc, fragment


class Same:
    """Expectation: the call returns what ``reference()`` returns (NaN == NaN, same dtype)."""

    def __init__(self, reference):
        self.reference = reference


def _model(seed=0, dtype=np.float32, n_in=5, n_out=3, dropout=False):
    layers = [Dense(n_in, 8, activation="tanh", seed=seed, dtype=dtype)]
    if dropout:
        layers.append(Dropout(0.3, seed=seed))
    layers.append(Dense(8, n_out, seed=seed + 1, dtype=dtype))
    return Sequential(*layers)


def _ro(a):
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


def _memmap(tmp, a, mode="r"):
    path = os.path.join(tmp, f"mm_{abs(hash(a.tobytes())) % 10**9}_{a.dtype}.dat")
    m = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
    m[...] = a
    m.flush()
    del m
    return np.memmap(path, dtype=a.dtype, mode=mode, shape=a.shape)


def _fortran(a):
    return np.asfortranarray(a)


def _neg(a):
    """Same values as ``a`` behind a negative-stride view."""
    return np.ascontiguousarray(a[::-1])[::-1]


def _strided(a):
    """Same values as ``a`` behind a non-contiguous view (every other column of a wider one)."""
    wide = np.zeros((a.shape[0], 2 * a.shape[1]), a.dtype)
    wide[:, ::2] = a
    return wide[:, ::2]


def _fit_weights(X, y, **kw):
    m = _model(seed=3)
    m.fit(X, y, epochs=2, batch_size=4, seed=0, verbose=0, **kw)
    return [p.data.copy() for p in m.parameters()]


def _weights_after_fit(tmp, Xform):
    return _fit_weights(Xform(X32), YC)


def _mlp_classifier(**kw):
    from fastnn.sklearn import MLPClassifier
    kw.setdefault("hidden_layer_sizes", (4,))
    kw.setdefault("max_iter", 2)
    kw.setdefault("random_state", 0)
    return MLPClassifier(**kw)


def _mlp_regressor(**kw):
    from fastnn.sklearn import MLPRegressor
    kw.setdefault("hidden_layer_sizes", (4,))
    kw.setdefault("max_iter", 2)
    kw.setdefault("random_state", 0)
    return MLPRegressor(**kw)


def _saved(tmp, name="m.npz"):
    path = os.path.join(tmp, name)
    fastnn.save(_model(), path)
    return path


def _truncated(tmp):
    path = _saved(tmp, "trunc.npz")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    return path


def _text_file(tmp):
    path = os.path.join(tmp, "not_a_model.npz")
    with open(path, "w") as f:
        f.write("hello, I am not a zip archive\n")
    return path


def _plain_npz(tmp):
    path = os.path.join(tmp, "plain.npz")
    np.savez(path, a=np.zeros(3))
    return path


def _tampered(tmp):
    """A model file whose weight bytes changed but whose description did not."""
    import zipfile
    path = _saved(tmp, "tampered.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["param:0.weight"] = arrays["param:0.weight"] + np.float32(1e-3)
    with zipfile.ZipFile(path, "w") as zf:  # rewrite the archive by hand (np.savez layout)
        for k, v in arrays.items():
            with zf.open(k + ".npy", "w") as f:
                np.lib.format.write_array(f, v, allow_pickle=False)
    return path


def _bad_idx(tmp):
    path = os.path.join(tmp, "bad-images-idx3-ubyte.gz")
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big")
                + (28).to_bytes(4, "big") + b"\x00" * 100)  # 100 bytes instead of 7840
    return path


def _build(hidden=4, lr=1e-2):
    return Sequential(Dense(5, hidden, activation="relu", seed=0), Dense(hidden, 3, seed=1))


def _dense_out_is_input():
    x = X32.copy()
    return F.dense_forward(x, np.eye(5, dtype=np.float32), out=x)


def _dense_out_overlaps_weight():
    w = np.ones((5, 5), np.float32)
    return F.dense_forward(w[:5], w, out=w[:5])


def _dense_out_disjoint_slice():
    buf = np.zeros((14, 5), np.float32)
    buf[:7] = X32
    return F.dense_forward(buf[:7], W32, B32, out=np.ascontiguousarray(buf[7:, :3]))


def _dense_twice(copy: bool):
    """A layer applied to its own output (the buffer of its last forward)."""
    d = Dense(5, 5, seed=4, dtype=np.float64)
    y = d.forward(X64)
    return d.forward(y.copy() if copy else y).copy()


def _in_place(fn, a):
    a = a.copy()
    return fn(a, out=a)


def _grad_into(fn, z, y, which):
    return fn(z, y, grad_out=z if which == "z" else y)


def _same_module_twice():
    d = Dense(3, 3)
    return Sequential(d, d)


# --------------------------------------------------------------------------------------------
# the catalogue: (id, call(tmp), expectation)
# --------------------------------------------------------------------------------------------

CASES = [
    # ---- functional: dense ------------------------------------------------------------------
    ("dense/X-1d", lambda t: F.dense_forward(X32[0], W32, B32),
     Raises(ValueError, "X must be 2-dimensional")),
    ("dense/X-3d", lambda t: F.dense_forward(X32[None], W32, B32),
     Raises(ValueError, "X must be 2-dimensional")),
    ("dense/feature-mismatch", lambda t: F.dense_forward(X32[:, :4], W32, B32),
     Raises(ValueError, "X has 4 features")),
    ("dense/other-float-dtype", lambda t: F.dense_forward(X64, W32, B32),
     Raises(TypeError, "W has dtype float32 but X has float64")),
    ("dense/int-array", lambda t: F.dense_forward(np.ones((7, 5), np.int64), W32),
     Raises(TypeError, "X must have dtype float32 or float64, got int64")),
    ("dense/bool-array", lambda t: F.dense_forward(np.ones((7, 5), bool), W32),
     Raises(TypeError, "X must have dtype float32 or float64, got bool")),
    ("dense/object-array", lambda t: F.dense_forward(X32.astype(object), W32),
     Raises(TypeError, "X must have dtype float32 or float64, got object")),
    ("dense/complex-array", lambda t: F.dense_forward(X32.astype(np.complex64), W32),
     Raises(TypeError, "X must have dtype float32 or float64, got complex64")),
    ("dense/wrong-type", lambda t: F.dense_forward("abc", W32),
     Raises(TypeError, "X must")),
    ("dense/bias-shape", lambda t: F.dense_forward(X32, W32, B32[:2]),
     Raises(ValueError, "b must have shape (3,)")),
    ("dense/bias-2d", lambda t: F.dense_forward(X32, W32, B32[None]),
     Raises(ValueError, "b must be 1-dimensional")),
    ("dense/out-shape", lambda t: F.dense_forward(X32, W32, B32, out=np.empty((7, 4), np.float32)),
     Raises(ValueError, "out must have shape (7, 3)")),
    ("dense/out-dtype", lambda t: F.dense_forward(X32, W32, B32, out=np.empty((7, 3))),
     Raises(TypeError, "out must have dtype float32")),
    ("dense/out-readonly", lambda t: F.dense_forward(X32, W32, B32,
                                                     out=_ro(np.empty((7, 3), np.float32))),
     Raises(ValueError, "out is read-only")),
    ("dense/out-noncontiguous", lambda t: F.dense_forward(
        X32, W32, B32, out=np.empty((7, 6), np.float32)[:, ::2]),
     Raises(ValueError, "out must be C-contiguous")),
    ("dense/unknown-activation", lambda t: F.dense_forward(X32, W32, B32, activation="mish"),
     Raises(ValueError, "Unknown activation 'mish'")),
    ("dense/n_threads-0", lambda t: F.dense_forward(X32, W32, B32, n_threads=0),
     Raises(ValueError, "n_threads must be None or a positive int, got 0")),
    ("dense/n_threads-negative", lambda t: F.dense_forward(X32, W32, B32, n_threads=-2),
     Raises(ValueError, "n_threads must be None or a positive int, got -2")),
    ("dense/n_threads-float", lambda t: F.dense_forward(X32, W32, B32, n_threads=1.5),
     Raises(TypeError, "n_threads must be None or a positive int")),
    ("dense/n_threads-bool", lambda t: F.dense_forward(X32, W32, B32, n_threads=True),
     Raises(TypeError, "n_threads must be None or a positive int")),
    ("dense/fortran-X", lambda t: F.dense_forward(_fortran(X32), _fortran(W32), B32, "relu"),
     Same(lambda: F.dense_forward(X32, W32, B32, "relu"))),
    ("dense/negative-stride-X", lambda t: F.dense_forward(_neg(X32), _neg(W32), _neg(B32)),
     Same(lambda: F.dense_forward(X32, W32, B32))),
    ("dense/strided-X", lambda t: F.dense_forward(_strided(X32), W32, B32, "tanh"),
     Same(lambda: F.dense_forward(X32, W32, B32, "tanh"))),
    ("dense/readonly-inputs", lambda t: F.dense_forward(_ro(X32), _ro(W32), _ro(B32), "sigmoid"),
     Same(lambda: F.dense_forward(X32, W32, B32, "sigmoid"))),
    ("dense/memmap-inputs", lambda t: F.dense_forward(_memmap(t, X32), _memmap(t, W32), B32),
     Same(lambda: F.dense_forward(X32, W32, B32))),
    ("dense/zero-rows", lambda t: F.dense_forward(X32[:0], W32, B32),
     Same(lambda: np.empty((0, 3), np.float32))),
    ("dense/zero-features", lambda t: F.dense_forward(X32[:, :0], W32[:0], B32, "relu"),
     Same(lambda: np.broadcast_to(np.maximum(B32, 0), (7, 3)).copy())),
    ("dense/zero-features-no-bias", lambda t: F.dense_forward(X32[:, :0], W32[:0]),
     Same(lambda: np.zeros((7, 3), np.float32))),
    ("dense/nan-input-propagates", lambda t: F.dense_forward(
        np.where(np.arange(35).reshape(7, 5) == 3, np.nan, X64), W32.astype(np.float64)),
     Same(lambda: np.where(np.arange(35).reshape(7, 5) == 3, np.nan, X64)
          @ W32.astype(np.float64) + 0.0)),
    ("dense/out-is-X", lambda t: _dense_out_is_input(),
     Raises(ValueError, "out overlaps X")),
    ("dense/out-overlaps-W", lambda t: _dense_out_overlaps_weight(),
     Raises(ValueError, "out overlaps X")),
    ("dense/out-disjoint-slice-of-X-ok", lambda t: _dense_out_disjoint_slice(),
     Same(lambda: F.dense_forward(X32, W32, B32))),
    ("dense/n_threads-absurd", lambda t: F.dense_forward(X32, W32, B32, n_threads=100_000),
     Raises(ValueError, "n_threads=100000 is more than fastnn allows")),
    ("Dense/fed-its-own-output", lambda t: _dense_twice(copy=False),
     Same(lambda: _dense_twice(copy=True))),
    ("dense-backward/grad-shape", lambda t: F.dense_backward(
        X32, W32, np.zeros((7, 3), np.float32), np.zeros((7, 4), np.float32)),
     Raises(ValueError, "grad_Y")),

    # ---- functional: activations ----------------------------------------------------------
    ("activation/unknown-name", lambda t: F.activation(X32, "mish"),
     Raises(ValueError, "Unknown activation 'mish'")),
    ("activation/name-not-str", lambda t: F.activation(X32, 3),
     Raises(ValueError, "Unknown activation 3")),
    ("sigmoid/int-array", lambda t: F.sigmoid(np.arange(4)),
     Raises(TypeError, "z must have dtype float32 or float64, got int64")),
    ("sigmoid/list-of-ints-ok", lambda t: F.sigmoid([0, 1, 2]),
     Same(lambda: F.sigmoid(np.array([0.0, 1.0, 2.0])))),
    ("relu/strided", lambda t: F.relu(_strided(X32)), Same(lambda: F.relu(X32))),
    ("tanh/negative-stride", lambda t: F.tanh(_neg(X64)), Same(lambda: F.tanh(X64))),
    ("tanh/memmap", lambda t: F.tanh(_memmap(t, X64)), Same(lambda: F.tanh(X64))),
    ("sigmoid/nan-inf", lambda t: F.sigmoid(np.array([np.nan, np.inf, -np.inf, 0.0])),
     Same(lambda: np.array([np.nan, 1.0, 0.0, 0.5]))),
    ("relu/in-place-out-is-z", lambda t: _in_place(F.relu, X32),
     Same(lambda: F.relu(X32))),
    ("softmax/in-place-out-is-z", lambda t: _in_place(F.softmax, Z64),
     Same(lambda: F.softmax(Z64))),
    ("relu/zero-size", lambda t: F.relu(np.empty((0, 3), np.float32)),
     Same(lambda: np.empty((0, 3), np.float32))),
    ("sigmoid/out-shape", lambda t: F.sigmoid(X32, out=np.empty((7, 4), np.float32)),
     Raises(ValueError, "out must have shape (7, 5)")),
    ("activation-backward/shape", lambda t: F.activation_backward(X32, X32[:3], "tanh"),
     Raises(ValueError, "grad_y")),

    # ---- functional: softmax, log_softmax, sparsemax --------------------------------------
    ("softmax/scalar", lambda t: F.softmax(np.float64(1.0)),
     Raises(ValueError, "z must have at least 1 dimension")),
    ("softmax/axis-out-of-range", lambda t: F.softmax(Z64, axis=2),
     Raises(np.exceptions.AxisError, "axis 2 is out of bounds")),
    ("softmax/int-array", lambda t: F.softmax(LAB),
     Raises(TypeError, "z must have dtype float32 or float64, got int64")),
    ("softmax/zero-rows", lambda t: F.softmax(Z64[:0]), Same(lambda: np.empty((0, 4)))),
    ("softmax/zero-classes", lambda t: F.softmax(Z64[:, :0]), Same(lambda: np.empty((6, 0)))),
    ("softmax/fortran-axis0", lambda t: F.softmax(_fortran(Z64), axis=0),
     Same(lambda: F.softmax(np.ascontiguousarray(Z64.T)).T)),
    ("log_softmax/memmap-readonly", lambda t: F.log_softmax(_memmap(t, Z64)),
     Same(lambda: F.log_softmax(Z64))),
    ("log_softmax/negative-stride", lambda t: F.log_softmax(_neg(Z64)),
     Same(lambda: F.log_softmax(Z64))),
    ("softmax/out-aliases-input", lambda t: F.softmax(Z64.copy(), out=None),
     Same(lambda: F.softmax(Z64))),
    ("softmax-backward/shape", lambda t: F.softmax_backward(F.softmax(Z64), Z64[:, :3]),
     Raises(ValueError, "grad_p must have the shape of p (6, 4)")),
    ("softmax-backward/dtype", lambda t: F.softmax_backward(F.softmax(Z64),
                                                           Z64.astype(np.float32)),
     Raises(TypeError, "grad_p has dtype float32 but p has float64")),
    ("sparsemax/unknown-method", lambda t: F.sparsemax(Z64, method="bisect"),
     Raises(ValueError, "method")),
    ("sparsemax/strided", lambda t: F.sparsemax(_strided(Z64)), Same(lambda: F.sparsemax(Z64))),
    ("sparsemax/all-nan-row", lambda t: F.sparsemax(np.array([[np.nan, 1.0], [0.0, 1.0]])),
     Same(lambda: np.array([[np.nan, np.nan], [0.0, 1.0]]))),

    # ---- functional: dropout --------------------------------------------------------------
    ("dropout/p-one", lambda t: F.dropout(X32, 1.0, seed=0),
     Raises(ValueError, "Invalid dropout probability: 1.0")),
    ("dropout/p-negative", lambda t: F.dropout(X32, -0.1, seed=0),
     Raises(ValueError, "Invalid dropout probability: -0.1")),
    ("dropout/p-nan", lambda t: F.dropout(X32, float("nan"), seed=0),
     Raises(ValueError, "Invalid dropout probability: nan")),
    ("dropout/p-string", lambda t: F.dropout(X32, "0.5", seed=0),
     Raises(TypeError, "Invalid dropout probability: '0.5'")),
    ("dropout/seed-float", lambda t: F.dropout(X32, 0.5, seed=1.5),
     Raises(TypeError, "seed must be an int")),
    ("dropout/mode", lambda t: F.dropout(X32, 0.5, seed=0, mode="alpha"),
     Raises(ValueError, "Invalid dropout mode 'alpha'")),
    ("dropout/fortran", lambda t: F.dropout(_fortran(X32), 0.5, seed=7),
     Same(lambda: F.dropout(X32, 0.5, seed=7))),

    # ---- functional: losses ---------------------------------------------------------------
    ("cross_entropy/label-too-large", lambda t: F.cross_entropy(Z64, np.array([0, 1, 2, 4, 1, 0])),
     Raises(ValueError, "y labels must be in [0, 4), got values in [0, 4]")),
    ("cross_entropy/label-negative", lambda t: F.cross_entropy(Z64, -LAB),
     Raises(ValueError, "y labels must be in [0, 4)")),
    ("cross_entropy/label-non-integer", lambda t: F.cross_entropy(Z64, LAB + 0.5),
     Raises(ValueError, "y must hold integer class labels, got non-integer floats")),
    ("cross_entropy/label-nan", lambda t: F.cross_entropy(Z64, np.where(LAB == 3, np.nan, LAB)),
     Raises(ValueError, "y must hold integer class labels")),
    ("cross_entropy/label-count", lambda t: F.cross_entropy(Z64, LAB[:5]),
     Raises(ValueError, "y has 5 labels but there are 6 samples")),
    ("cross_entropy/label-strings", lambda t: F.cross_entropy(Z64, LAB.astype(str)),
     Raises(TypeError, "y must hold integer class labels, got dtype <U")),
    ("cross_entropy/label-float-ints-ok", lambda t: F.cross_entropy(Z64, LAB.astype(float)),
     Same(lambda: F.cross_entropy(Z64, LAB))),
    ("cross_entropy/labels-bool", lambda t: F.cross_entropy(Z64, LAB > 1),
     Raises(TypeError, "y must hold integer class labels, got dtype bool")),
    ("cross_entropy/grad_out-is-z", lambda t: _grad_into(F.cross_entropy, Z64.copy(), LAB,
                                                         "z"),
     Raises(ValueError, "grad_out overlaps z")),
    ("squared_loss/grad_out-is-y", lambda t: _grad_into(F.squared_loss, Z64, Z64 * 2, "y"),
     Raises(ValueError, "grad_out overlaps y")),
    ("cross_entropy/reduction", lambda t: F.cross_entropy(Z64, LAB, reduction="avg"),
     Raises(ValueError, "reduction must be one of")),
    ("cross_entropy/grad_out-dtype", lambda t: F.cross_entropy(
        Z64, LAB, grad_out=np.empty((6, 4), np.float32)),
     Raises(TypeError, "grad_out must have dtype float64")),
    ("cross_entropy/target-negative", lambda t: F.cross_entropy(Z64, -np.eye(4)[LAB]),
     Raises(ValueError, "y must be non-negative")),
    ("cross_entropy/target-shape", lambda t: F.cross_entropy(Z64, np.eye(3)[LAB % 3]),
     Raises(ValueError, "y as a target matrix must have shape (6, 4)")),
    ("cross_entropy/zero-classes", lambda t: F.cross_entropy(Z64[:, :0], LAB),
     Raises(ValueError, "z must have at least one class")),
    ("cross_entropy/zero-rows-sum", lambda t: F.cross_entropy(Z64[:0], LAB[:0], reduction="sum"),
     Same(lambda: 0.0)),
    ("cross_entropy/zero-rows-mean-nan", lambda t: F.cross_entropy(Z64[:0], LAB[:0]),
     Same(lambda: float("nan"))),
    ("cross_entropy/fortran-logits", lambda t: F.cross_entropy(_fortran(Z64), LAB),
     Same(lambda: F.cross_entropy(Z64, LAB))),
    ("binary_cross_entropy/y-out-of-range", lambda t: F.binary_cross_entropy(
        Z64[:, 0], np.array([0, 1, 2, 0, 1, 0])),
     Raises(ValueError, "y must lie in [0, 1]")),
    ("binary_cross_entropy/y-nan", lambda t: F.binary_cross_entropy(
        Z64[:, 0], np.array([0, 1, np.nan, 0, 1, 0])),
     Raises(ValueError, "y must lie in [0, 1]")),
    ("binary_cross_entropy/two-columns", lambda t: F.binary_cross_entropy(Z64[:, :2], LAB % 2),
     Raises(ValueError, "z must have shape (n,) or (n, 1)")),
    ("binary_cross_entropy/strided", lambda t: F.binary_cross_entropy(Z64[:, 1], LAB % 2),
     Same(lambda: F.binary_cross_entropy(Z64[:, 1].copy(), LAB % 2))),
    ("squared_loss/shape", lambda t: F.squared_loss(Z64, Z64[:, :3]),
     Raises(ValueError, "y must have the shape of f (6, 4)")),
    ("squared_loss/string-targets", lambda t: F.squared_loss(Z64[:, 0], LAB.astype(str)),
     Raises(TypeError, "y must hold numeric targets")),
    ("sparsemax_loss/empty-label-set", lambda t: F.sparsemax_loss(
        Z64, np.where(np.arange(4) == 9, 1, 0)[None].repeat(6, 0)),
     Raises(ValueError, "has no positive entry")),
    ("sparsemax_loss/label-too-large", lambda t: F.sparsemax_loss(Z64, LAB + 1),
     Raises(ValueError, "y labels must be in [0, 4)")),

    # ---- layers and networks --------------------------------------------------------------
    ("Dense/in_features-0", lambda t: Dense(0, 3),
     Raises(ValueError, "in_features must be a positive int, got 0")),
    ("Dense/out_features-float", lambda t: Dense(3, 2.5),
     Raises(ValueError, "out_features must be a positive int, got 2.5")),
    ("Dense/activation", lambda t: Dense(3, 3, activation="softmax"),
     Raises(ValueError, "Unknown activation 'softmax'")),
    ("Dense/int-dtype", lambda t: Dense(3, 3, dtype=np.int32),
     Raises(TypeError, "dtype must be float32 or float64, got int32")),
    ("Dense/unknown-init", lambda t: Dense(3, 3, init="lecun"),
     Raises(ValueError, "unknown initializer 'lecun'")),
    ("Dropout/p-one", lambda t: Dropout(1.0), Raises(ValueError, "expected 0 <= p < 1")),
    ("Dropout/p-negative", lambda t: Dropout(-0.5), Raises(ValueError, "expected 0 <= p < 1")),
    ("Sequential/not-a-module", lambda t: Sequential(Dense(3, 3), "relu"),
     Raises(TypeError, "expected fastnn Modules, got str")),
    ("Sequential/module-twice", lambda t: _same_module_twice(),
     Raises(ValueError, "appears twice in the network")),
    ("Sequential/width-mismatch", lambda t: Sequential(Dense(3, 4), Dense(5, 2)),
     Raises(ValueError, "expects 5 input features, got 4")),
    ("Sequential/n_threads-0", lambda t: Sequential(Dense(3, 4), n_threads=0),
     Raises(ValueError, "n_threads must be None or a positive int, got 0")),
    ("model/forward-other-dtype", lambda t: _model().forward(X64),
     Raises(TypeError, "X has dtype float64 but float32 is expected; convert it with "
                       "X.astype(np.float32)")),
    ("model/predict-feature-count", lambda t: _model().predict(X32[:, :4]),
     Raises(ValueError, "X has 4 features but the network expects 5")),
    ("model/predict-1d", lambda t: _model().predict(X32[0]),
     Raises(ValueError, "X must be 2-dimensional")),
    ("model/predict-batch_size-0", lambda t: _model().predict(X32, batch_size=0),
     Raises(ValueError, "batch_size must be a positive int, got 0")),
    ("model/predict-nan-propagates", lambda t: np.isnan(_model().predict(
        np.where(np.arange(35).reshape(7, 5) == 0, np.nan, X32).astype(np.float32))).any(1),
     Same(lambda: np.array([True] + [False] * 6))),
    ("model/predict-zero-rows", lambda t: _model().predict(X32[:0]),
     Same(lambda: np.empty((0, 3), np.float32))),
    ("model/predict-fortran", lambda t: _model().predict(_fortran(X32)),
     Same(lambda: _model().predict(X32))),
    ("model/predict-negative-stride", lambda t: _model().predict(_neg(X32)),
     Same(lambda: _model().predict(X32))),
    ("model/predict-memmap", lambda t: _model().predict(_memmap(t, X32)),
     Same(lambda: _model().predict(X32))),
    ("model/predict-readonly-batches", lambda t: _model(dropout=True).predict(_ro(X32),
                                                                               batch_size=3),
     # rows per forward change GEMM blocking (rounding), so the reference uses the same
     Same(lambda: _model(dropout=True).predict(X32, batch_size=3))),
    ("model/n_threads-setter-0", lambda t: setattr(_model(), "n_threads", 0),
     Raises(ValueError, "n_threads must be None or a positive int, got 0")),

    # ---- fit / evaluate / predict ---------------------------------------------------------
    ("fit/epochs-negative", lambda t: _model().fit(X32, YC, epochs=-1, verbose=0),
     Raises(ValueError, "Invalid epochs: -1")),
    ("fit/epochs-float", lambda t: _model().fit(X32, YC, epochs=2.5, verbose=0),
     Raises(ValueError, "Invalid epochs: 2.5")),
    ("fit/batch_size-0", lambda t: _model().fit(X32, YC, batch_size=0, verbose=0),
     Raises(ValueError, "Invalid batch_size: 0")),
    ("fit/X-nan", lambda t: _model().fit(np.where(X32 > 1, np.nan, X32), YC, verbose=0),
     Raises(ValueError, "X contains NaN or infinity")),
    ("fit/X-inf", lambda t: _model().fit(np.where(X32 > 1, np.inf, X32), YC, verbose=0),
     Raises(ValueError, "X contains NaN or infinity")),
    ("fit/batch-size-mismatch", lambda t: _model().fit(X32, YC[:6], verbose=0),
     Raises(ValueError, "X has 7 samples but y has 6")),
    ("fit/label-out-of-range", lambda t: _model().fit(X32, YC + 1, verbose=0, epochs=1),
     Raises(ValueError, "labels must be in [0, 3)")),
    ("fit/label-non-integer", lambda t: _model().fit(X32, YC + 0.25, verbose=0),
     Raises(ValueError, "y must hold integer class labels")),
    ("fit/label-nan", lambda t: _model().fit(X32, np.where(YC == 2, np.nan, YC), verbose=0),
     Raises(ValueError, "y must hold integer class labels")),
    ("fit/label-strings", lambda t: _model().fit(X32, YC.astype(str), verbose=0),
     Raises(TypeError, "y must hold integer class labels")),
    ("fit/zero-rows", lambda t: _model().fit(X32[:0], YC[:0], verbose=0),
     Raises(ValueError, "no training samples")),
    ("fit/other-dtype", lambda t: _model().fit(X64, YC, verbose=0),
     Raises(TypeError, "X has dtype float64 but float32 is expected")),
    ("fit/negative-lr", lambda t: _model().fit(X32, YC, lr=-0.1, verbose=0),
     Raises(ValueError, "Invalid learning rate: -0.1")),
    ("fit/unknown-optimizer", lambda t: _model().fit(X32, YC, optimizer="lbfgs", verbose=0),
     Raises(ValueError, "unknown optimizer 'lbfgs'")),
    ("fit/unknown-loss", lambda t: _model().fit(X32, YC, loss="hinge", verbose=0),
     Raises(ValueError, "Unknown loss 'hinge'")),
    ("fit/validation_split", lambda t: _model().fit(X32, YC, validation_split=1.5, verbose=0),
     Raises(ValueError, "validation_split must be in (0, 1)")),
    ("fit/validation_data-not-pair", lambda t: _model().fit(X32, YC, validation_data=X32,
                                                            verbose=0),
     Raises(ValueError, "validation_data must be a pair")),
    ("fit/regression-target-inf", lambda t: _model(n_out=1).fit(
        X32, np.where(YC == 2, np.inf, YC).astype(np.float32)[:, None], loss="squared",
        verbose=0),
     Raises(ValueError, "y contains NaN or infinity")),
    ("fit/verbose", lambda t: _model().fit(X32, YC, verbose=5),
     Raises(ValueError, "verbose must be 0, 1 or 2")),
    ("fit/memmap-X-same-weights", lambda t: _fit_weights(_memmap(t, X32), YC),
     Same(lambda: _fit_weights(X32, YC))),
    ("fit/fortran-X-same-weights", lambda t: _fit_weights(_fortran(X32), _neg(YC)),
     Same(lambda: _fit_weights(X32, YC))),
    ("fit/readonly-X-same-weights", lambda t: _fit_weights(_ro(X32), _ro(YC)),
     Same(lambda: _fit_weights(X32, YC))),
    ("evaluate/label-count", lambda t: _model().evaluate(X32, YC[:3]),
     Raises(ValueError, "X has 7 samples but y has 3")),
    ("evaluate/label-out-of-range", lambda t: _model().evaluate(X32, YC + 5),
     Raises(ValueError, "labels must be in [0, 3)")),

    # ---- optimizers -----------------------------------------------------------------------
    ("SGD/negative-lr", lambda t: optim.SGD(_model().parameters(), lr=-0.1),
     Raises(ValueError, "Invalid learning rate: -0.1")),
    ("SGD/nan-lr", lambda t: optim.SGD(_model().parameters(), lr=float("nan")),
     Raises(ValueError, "Invalid learning rate: nan")),
    ("SGD/string-lr", lambda t: optim.SGD(_model().parameters(), lr="0.1"),
     Raises(TypeError, "Invalid learning rate: '0.1'")),
    ("SGD/negative-momentum", lambda t: optim.SGD(_model().parameters(), momentum=-0.5),
     Raises(ValueError, "Invalid momentum value: -0.5")),
    ("SGD/nesterov-without-momentum", lambda t: optim.SGD(_model().parameters(), nesterov=True),
     Raises(ValueError, "Nesterov momentum requires a momentum > 0")),
    ("SGD/empty-params", lambda t: optim.SGD([], lr=0.1),
     Raises(ValueError, "optimizer got an empty parameter list")),
    ("SGD/arrays-not-parameters", lambda t: optim.SGD([np.zeros(3)], lr=0.1),
     Raises(TypeError, "optimizer can only optimize fastnn.Parameter objects")),
    ("Adam/beta-one", lambda t: optim.Adam(_model().parameters(), betas=(1.0, 0.999)),
     Raises(ValueError, "Invalid beta")),
    ("Adam/n_threads-0", lambda t: optim.Adam(_model().parameters(), n_threads=0),
     Raises(ValueError, "n_threads must be None or a positive int, got 0")),
    ("Adagrad/negative-eps", lambda t: optim.Adagrad(_model().parameters(), eps=-1e-8),
     Raises(ValueError, "Invalid epsilon value: -1e-08")),

    # ---- data and splits ------------------------------------------------------------------
    ("split/test_size-too-big", lambda t: train_test_split(X32, YC, test_size=1.5),
     Raises(ValueError, "test_size=1.5 must be a fraction in [0, 1)")),
    ("split/test_size-count", lambda t: train_test_split(X32, YC, test_size=10),
     Raises(ValueError, "test_size=10 is outside [0, 7]")),
    ("split/test_size-string", lambda t: train_test_split(X32, YC, test_size="half"),
     Raises(TypeError, "test_size must be a float in (0, 1) or an int count")),
    ("split/length-mismatch", lambda t: train_test_split(X32, YC[:5]),
     Raises(ValueError, "X has 7 samples but y has 5")),
    ("split/seed-string", lambda t: train_test_split(X32, YC, seed="abc"),
     Raises(TypeError, "seed must be None, an int or a numpy Generator")),
    ("BatchIterator/batch_size-0", lambda t: BatchIterator(X32, YC, batch_size=0),
     Raises(ValueError, "Invalid batch_size: 0")),
    ("BatchIterator/length-mismatch", lambda t: BatchIterator(X32, YC[:3]),
     Raises(ValueError, "X has 7 samples but y has 3")),
    ("Standardizer/nan", lambda t: Standardizer().fit(np.where(X32 > 1, np.nan, X32)),
     Raises(ValueError, "X contains NaN or infinity")),
    ("Standardizer/zero-rows", lambda t: Standardizer().fit(X32[:0]),
     Raises(ValueError, "cannot fit a Standardizer on 0 samples")),
    ("Standardizer/not-fitted", lambda t: Standardizer().transform(X32),
     Raises(RuntimeError, "not fitted yet")),
    ("Standardizer/feature-mismatch", lambda t: Standardizer().fit(X32).transform(X32[:, :2]),
     Raises(ValueError, "X has 2 features but the Standardizer was fitted on 5")),
    ("Standardizer/memmap", lambda t: Standardizer().fit(_memmap(t, X32)).transform(
        _memmap(t, X32)),
     Same(lambda: Standardizer().fit(X32).transform(X32))),
    ("check_random_state/float", lambda t: check_random_state(1.5),
     Raises(TypeError, "seed must be None, an int or a numpy Generator")),

    # ---- datasets -------------------------------------------------------------------------
    ("make_spirals/negative-n", lambda t: fastnn.datasets.make_spirals(n_samples=-4),
     Raises(ValueError, "n_samples must be a non-negative int, got -4")),
    ("make_xor/negative-noise", lambda t: fastnn.datasets.make_xor(10, noise=-1.0),
     Raises(ValueError, "noise must be a finite float >= 0, got -1.0")),
    ("load_digits/int-dtype", lambda t: fastnn.datasets.load_digits(dtype=np.int32),
     Raises(TypeError, "dtype must be float32 or float64, got int32")),
    ("load_mnist/missing-dir", lambda t: fastnn.datasets.load_mnist(os.path.join(t, "nowhere")),
     Raises(FileNotFoundError, "MNIST")),
    ("read_idx/truncated", lambda t: fastnn.datasets.idx.read_idx(_bad_idx(t)),
     Raises(ValueError, "bytes")),

    # ---- search ---------------------------------------------------------------------------
    ("grid_search/empty-list", lambda t: fastnn.grid_search(
        _build, {"hidden": []}, X32, YC, X32, YC),
     Raises(ValueError, "grid list for 'hidden' is empty")),
    ("grid_search/not-callable", lambda t: fastnn.grid_search(
        "model", {"hidden": [4]}, X32, YC, X32, YC),
     Raises(TypeError, "build_fn must be a callable")),
    ("grid_search/scalar-values", lambda t: fastnn.grid_search(
        _build, {"hidden": 4}, X32, YC, X32, YC),
     Raises(TypeError, "grid values must be lists")),
    ("grid_search/scoring", lambda t: fastnn.grid_search(
        _build, {"hidden": [4]}, X32, YC, X32, YC, scoring="f1"),
     Raises(ValueError, "scoring must be")),
    ("grid_search/n_threads-0", lambda t: fastnn.grid_search(
        _build, {"hidden": [4]}, X32, YC, X32, YC, n_threads=0),
     Raises(ValueError, "n_threads must be None or a positive int")),
    ("random_search/not-dict", lambda t: fastnn.random_search(
        _build, [("hidden", [4])], X32, YC, X32, YC, n_iter=1),
     Raises(TypeError, "param_distributions must be a dict")),

    # ---- io -------------------------------------------------------------------------------
    ("load/missing-file", lambda t: fastnn.load(os.path.join(t, "missing.npz")),
     Raises(FileNotFoundError, "missing.npz")),
    ("load/truncated", lambda t: fastnn.load(_truncated(t)),
     Raises(fastnn.ModelFileError, "corrupt or truncated")),
    ("load/not-a-zip", lambda t: fastnn.load(_text_file(t)),
     Raises(fastnn.ModelFileError, "not a readable fastnn model file")),
    ("load/plain-npz", lambda t: fastnn.load(_plain_npz(t)),
     Raises(fastnn.ModelFileError, "not a file written by fastnn.save")),
    ("load/tampered-weights", lambda t: fastnn.load(_tampered(t)),
     Raises(fastnn.ModelFileError, "checksum mismatch for 'param:0.weight'")),
    ("save/missing-directory", lambda t: fastnn.save(_model(), os.path.join(t, "no", "m.npz")),
     Raises(FileNotFoundError, "")),

    # ---- scikit-learn estimators ----------------------------------------------------------
    ("MLPClassifier/hidden-0", lambda t: _mlp_classifier(hidden_layer_sizes=(0,)).fit(X32, YC),
     Raises(ValueError, "hidden_layer_sizes must be > 0, got [0].")),
    ("MLPClassifier/negative-lr", lambda t: _mlp_classifier(learning_rate_init=-1.0).fit(
        X32, YC),
     Raises(ValueError, "The 'learning_rate_init' parameter of MLPClassifier must be a float "
                        "in the range (0.0, inf). Got -1.0 instead.")),
    ("MLPClassifier/batch_size-0", lambda t: _mlp_classifier(batch_size=0).fit(X32, YC),
     Raises(ValueError, "The 'batch_size' parameter of MLPClassifier must be a str among "
                        "{'auto'} or an int in the range [1, inf). Got 0 instead.")),
    ("MLPClassifier/max_iter-negative", lambda t: _mlp_classifier(max_iter=-1).fit(X32, YC),
     Raises(ValueError, "The 'max_iter' parameter of MLPClassifier must be an int in the "
                        "range [1, inf). Got -1 instead.")),
    ("MLPClassifier/dropout-one", lambda t: _mlp_classifier(dropout=1.0).fit(X32, YC),
     Raises(ValueError, "The 'dropout' parameter of MLPClassifier must be a float in the "
                        "range [0.0, 1.0)")),
    ("MLPClassifier/n_threads-0", lambda t: _mlp_classifier(n_threads=0).fit(X32, YC),
     Raises(ValueError, "n_threads must be None or a positive int, got 0")),
    ("MLPClassifier/X-nan", lambda t: _mlp_classifier().fit(np.where(X32 > 1, np.nan, X32), YC),
     Raises(ValueError, "NaN")),
    ("MLPClassifier/y-length", lambda t: _mlp_classifier().fit(X32, YC[:3]),
     Raises(ValueError, "inconsistent numbers of samples")),
    ("MLPClassifier/not-fitted", lambda t: _mlp_classifier().predict(X32),
     Raises(Exception, "not fitted")),
    ("MLPClassifier/zero-rows", lambda t: _mlp_classifier().fit(X32[:0], YC[:0]),
     Raises(ValueError, "0 sample")),
    ("MLPRegressor/feature-count", lambda t: _mlp_regressor().fit(X32, X32[:, 0]).predict(
        X32[:, :3]),
     Raises(ValueError, "features")),
    ("MLPRegressor/y-inf", lambda t: _mlp_regressor().fit(X32, np.where(YC > 1, np.inf, YC)),
     Raises(ValueError, "infinity")),
]


# --------------------------------------------------------------------------------------------
# running a case
# --------------------------------------------------------------------------------------------

def _run_case(case_id, call, expect, tmp):
    """Run one case; raise AssertionError with a description when it misbehaves."""
    if isinstance(expect, Raises):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = call(tmp)
        except expect.exc as e:
            msg = str(e)
            assert expect.fragment in msg, (
                f"{case_id}: {type(e).__name__} raised, but its message {msg!r} lacks "
                f"{expect.fragment!r}")
            return
        except Exception as e:  # report the wrong exception type
            raise AssertionError(f"{case_id}: expected {expect.exc.__name__} "
                                 f"({expect.fragment!r}), got {type(e).__name__}: {e}") from e
        raise AssertionError(f"{case_id}: expected {expect.exc.__name__} ({expect.fragment!r}), "
                             f"but the call returned {type(result).__name__}")
    got = call(tmp)
    want = expect.reference()
    _assert_same(case_id, got, want)


def _assert_same(case_id, got, want):
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), case_id
        for g, w in zip(got, want):
            _assert_same(case_id, g, w)
        return
    if isinstance(want, float):
        assert isinstance(got, float), f"{case_id}: expected a float, got {type(got)}"
        assert got == want or (np.isnan(got) and np.isnan(want)), f"{case_id}: {got} != {want}"
        return
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.dtype == want.dtype, f"{case_id}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{case_id}: shape {got.shape} != {want.shape}"
    np.testing.assert_array_equal(got, want, err_msg=case_id)


# --------------------------------------------------------------------------------------------
# crash screen in child processes
# --------------------------------------------------------------------------------------------

_SCREEN_TIMEOUT = 240  # seconds for the whole catalogue in one child (it takes a few)


def _screen_child(start: int) -> None:
    """Child process: run the cases from index ``start`` on, announcing each before running it."""
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(start, len(CASES)):
            case_id, call, expect = CASES[i]
            print(f"START {i}", flush=True)
            try:
                _run_case(case_id, call, expect, tmp)
            except BaseException:  # the in-process test reports Python errors
                pass
            print(f"DONE {i}", flush=True)


def _child_env():
    # the child imports the same fastnn as this process (installed or the source tree)
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def crash_screen():
    """Run the catalogue in child processes; map case index -> why its process died."""
    dead = {}
    start = 0
    while start < len(CASES):
        try:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--screen",
                                   str(start)], check=False, capture_output=True, text=True,
                                  timeout=_SCREEN_TIMEOUT, env=_child_env())
            out, rc = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            rc = "timeout"
        started = [int(line.split()[1]) for line in out.splitlines() if line.startswith("START")]
        done = {int(line.split()[1]) for line in out.splitlines() if line.startswith("DONE")}
        if rc == 0 and (not started or max(started) == len(CASES) - 1):
            break
        if not started:
            raise RuntimeError(f"the screening child failed before the first case (rc={rc}): "
                               f"{proc.stderr[-2000:] if rc != 'timeout' else ''}")
        last = max(started)
        if last in done:  # died between cases: should not happen
            raise RuntimeError(f"the screening child died after case {last} (rc={rc})")
        dead[last] = f"killed its process (exit status {rc})" if rc != "timeout" else \
            f"hung (no result in {_SCREEN_TIMEOUT} s)"
        start = last + 1
    return dead


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c[0] for c in CASES])
def test_bad_input(index, crash_screen, tmp_path):
    case_id, call, expect = CASES[index]
    if index in crash_screen:
        pytest.fail(f"{case_id} {crash_screen[index]} in the screening subprocess")
    _run_case(case_id, call, expect, str(tmp_path))


def test_catalogue_size():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES), "duplicate case ids"


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--screen":
    _screen_child(int(sys.argv[2]))
