"""The ``fastnn`` command.

- ``fastnn train``: train an MLP and report its test accuracy (R^2 for regression): on the
  handwritten digits shipped inside fastnn (default, offline, a few seconds), on MNIST
  (``--mnist``) or on your own data (``--data file.csv --target y``, ``--data X.npy --labels
  y.npy``, ``--data Xy.npz``);
- ``fastnn predict``: the predictions of a saved model for a .csv, .npy or .npz file;
- ``fastnn evaluate``: accuracy (R^2) and loss of a saved model on labelled data;
- ``fastnn info``: the build and runtime configuration.

A model saved by ``fastnn train --save`` starts with a :class:`fastnn.Normalization` layer
adapted on the training split, so it takes raw inputs; the file also records the class labels
and the data split (seed and sizes), so ``fastnn predict m.npz`` and ``fastnn evaluate m.npz``
(without data: the held-out split the model was scored on) reproduce the reported accuracy.
Usage errors (bad options, unreadable data, unwritable output paths) are one line on stderr
and exit status 2, found before training starts. Run ``fastnn COMMAND --help`` for options.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import re
import sys
import tempfile
import time
import warnings

import numpy as np

import fastnn
from fastnn import __version__, datasets, io, training
from fastnn import callbacks as cbs
from fastnn.data import train_test_split
from fastnn.functional.activations import ACTIVATIONS, ALIASES
from fastnn.layers import Dense, Dropout, Maxout
from fastnn.losses import LOSS_ALIASES, LOSS_TABLE, loss_info
from fastnn.model import Sequential
from fastnn.optim import OPTIMIZERS
from fastnn.preprocessing import Normalization

__all__ = ["main", "build_parser", "build_mlp"]

# --loss: the classification losses of the loss table (a regression always takes "squared")
_CLASSIFICATION_LOSSES = tuple(n for n, r in LOSS_TABLE.items() if r.task == "classification")
_LOSS_CHOICES = ("auto", *_CLASSIFICATION_LOSSES,
                 *(a for a, n in LOSS_ALIASES.items() if n in _CLASSIFICATION_LOSSES))

class UsageError(Exception):
    """A problem with the command line or its files: one line on stderr, exit status 2."""


def build_mlp(n_features, hidden, n_outputs, *, activation="relu", dropout=0.0, seed=0,
              dtype="float32", normalization=None, maxout=None):
    """A Sequential MLP: ``normalization`` (a fastnn.Normalization, optional) first, then
    Dense(+activation)(+Dropout) per hidden size - or Maxout units of ``maxout`` pieces each
    when it is given - then a linear output layer producing logits (the output map - softmax or
    sparsemax - is the loss's)."""
    rng = np.random.default_rng(seed)
    layers = [] if normalization is None else [normalization]
    width = n_features
    for h in hidden:
        if maxout is not None:
            layers.append(Maxout(width, h, pieces=maxout, seed=int(rng.integers(2 ** 31)),
                                 dtype=dtype))
        else:
            layers.append(Dense(width, h, activation=activation,
                                seed=int(rng.integers(2 ** 31)), dtype=dtype))
        if dropout > 0:
            layers.append(Dropout(dropout, seed=int(rng.integers(2 ** 31))))
        width = h
    layers.append(Dense(width, n_outputs, seed=int(rng.integers(2 ** 31)), dtype=dtype))
    return Sequential(*layers, dtype=dtype)


# --- argument parsing ------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (and exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Shows a default once: appended unless the help text already states it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" not in text and action.option_strings and action.nargs != 0
                and action.default is not None and action.default is not False
                and action.default is not argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def _number(kind, accept, what):
    def parse(s):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
        if not accept(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {s}")
        return v
    return parse


_positive_int = _number(int, lambda v: v > 0, "a positive integer")
_nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: math.isfinite(v) and v > 0, "a number > 0")
_nonneg_float = _number(float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")
_fraction = _number(float, lambda v: 0 <= v < 1, "a fraction in [0, 1)")
_open_fraction = _number(float, lambda v: 0 < v < 1, "a fraction in (0, 1)")

_DATA_HELP = ("a .csv file with a header row and numeric columns, a .npy array "
              "(n_samples, n_features), or a .npz file with arrays X and y")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fastnn",
        description="fastnn: fast multi-layer perceptrons on the CPU.",
        epilog="Run 'fastnn train' to train an MLP on the shipped digits data set, "
               "'fastnn COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"fastnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser(
        "train", help="train an MLP and report its test accuracy",
        description="Train a multi-layer perceptron and report its test accuracy (R^2 for a "
                    "regression target). Default data: the UCI handwritten digits shipped with "
                    "fastnn (1797 8x8 images; stratified train/validation/test split), which "
                    "runs offline in seconds. The model starts with a Normalization layer "
                    "adapted on the training split, so a saved model takes raw inputs.",
        formatter_class=_HelpFormatter)
    data = t.add_argument_group("data")
    data.add_argument("--data", metavar="FILE",
                      help=f"train on your own data: {_DATA_HELP} (default: the shipped digits)")
    data.add_argument("--target", metavar="COLUMN",
                      help="with a .csv --data: the column to predict (every other column is a "
                           "feature)")
    data.add_argument("--labels", metavar="FILE",
                      help="with a .npy --data: the targets, a .npy array (n_samples,)")
    data.add_argument("--task", choices=("auto", "classification", "regression"),
                      default="auto",
                      help="auto: classification when the targets are integers or text, "
                           "regression otherwise")
    data.add_argument("--mnist", metavar="PATH", nargs="?", const="",
                      help="train on MNIST from the IDX files in PATH (gzipped or raw); "
                           "without PATH: $FASTNN_MNIST_DIR or the download cache")
    data.add_argument("--download", action="store_true",
                      help="with --mnist: download MNIST into the cache if it is missing")
    data.add_argument("--val-size", type=_fraction, default=None,
                      help="fraction of the training data held out for validation (0: none; "
                           "default: 0 - unless --early-stopping or --halve-lr need one, then "
                           "0.1 - and 1/12, 5000 images, for MNIST)")
    data.add_argument("--test-size", type=_open_fraction, default=0.2,
                      help="fraction of the data held out for testing (MNIST has its own "
                           "test set)")
    data.add_argument("--no-standardize", action="store_true",
                      help="no Normalization layer: feed the inputs as they are (MNIST is "
                           "never standardized, only scaled to [0, 1])")
    model = t.add_argument_group("model")
    model.add_argument("--hidden", type=_positive_int, nargs="*", default=None, metavar="N",
                       help="hidden layer sizes (default: 128, and 256 256 for MNIST; "
                            "none for a linear model)")
    model.add_argument("--activation", choices=ACTIVATIONS + tuple(ALIASES), default="relu",
                       metavar="NAME",
                       help=f"activation of the hidden layers: {', '.join(ACTIVATIONS)}")
    model.add_argument("--maxout", type=_positive_int, default=None, metavar="K",
                       help="hidden layers of maxout units, each the max of K linear units "
                            "(replaces --activation)")
    model.add_argument("--output", choices=("softmax", "sparsemax"), default="softmax",
                       help="output map of a classifier")
    model.add_argument("--loss", choices=_LOSS_CHOICES, default="auto", metavar="NAME",
                       help=f"loss of a classifier: {', '.join(_CLASSIFICATION_LOSSES)} "
                            f"(auto: cross_entropy for softmax, sparsemax for sparsemax; "
                            f"regression always uses the squared loss)")
    model.add_argument("--dropout", type=_fraction, default=0.0,
                       help="dropout probability after each hidden layer")
    model.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                       help="float type of the weights and the computation")
    opt = t.add_argument_group("optimization")
    opt.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="adam",
                     help="the update rule")
    opt.add_argument("--lr", type=_positive_float, default=None,
                     help="learning rate (default: 1e-3 for adam, 0.1 for sgd, 1e-2 otherwise)")
    opt.add_argument("--momentum", type=_nonneg_float, default=0.9, help="sgd momentum")
    opt.add_argument("--epochs", type=_positive_int, default=None,
                     help="passes over the training set (default: 30, and 3 for MNIST)")
    opt.add_argument("--batch-size", type=_positive_int, default=None,
                     help="mini-batch size (default: 32, and 128 for MNIST)")
    opt.add_argument("--l1", type=_nonneg_float, default=0.0, help="L1 penalty on weights")
    opt.add_argument("--l2", type=_nonneg_float, default=0.0,
                     help="L2 penalty (weight decay) on weights")
    opt.add_argument("--early-stopping", type=_nonneg_int, default=None, metavar="PATIENCE",
                     help="stop when the validation loss has not improved for PATIENCE "
                          "epochs and restore the best weights")
    opt.add_argument("--halve-lr", action="store_true",
                     help="halve the learning rate after each epoch where the validation "
                          "loss increased, rolling back to the previous epoch")
    run = t.add_argument_group("run")
    run.add_argument("--seed", type=_nonneg_int, default=0,
                     help="seed of the data split, the initial weights, dropout and the batch "
                          "order")
    run.add_argument("--threads", type=_positive_int, default=None,
                     help="threads for the kernels and BLAS (default: all allowed)")
    run.add_argument("--save", metavar="PATH",
                     help="save the trained model (.npz), with its Normalization layer, class "
                          "labels and data split")
    run.add_argument("--plot", metavar="PNG", help="save the learning curves (needs matplotlib)")
    run.add_argument("-q", "--quiet", action="store_true", help="only print the final result")

    p = sub.add_parser(
        "predict", help="print a saved model's predictions",
        description="Predict with a model saved by 'fastnn train --save' (or fastnn.save): "
                    "one line per sample, the class label for a classifier, the value for a "
                    "regressor. Without DATA: the held-out test split the model was scored on.",
        formatter_class=_HelpFormatter)
    p.add_argument("model", metavar="MODEL", help="the saved model (.npz)")
    p.add_argument("data", metavar="DATA", nargs="?",
                   help=f"the inputs: {_DATA_HELP}; a .csv may hold extra columns (the "
                        "training target, ...): the model's feature columns are taken by name")
    p.add_argument("--target", metavar="COLUMN",
                   help="a .csv column to leave out of the features")
    p.add_argument("--proba", action="store_true",
                   help="print class probabilities (a CSV with one column per class)")
    p.add_argument("--out", metavar="FILE", help="write the predictions to FILE (default: stdout)")

    e = sub.add_parser(
        "evaluate", help="score a saved model on labelled data",
        description="Accuracy (R^2 for a regressor) and loss of a saved model. Without DATA: "
                    "the held-out test split the model was scored on by 'fastnn train'.",
        formatter_class=_HelpFormatter)
    e.add_argument("model", metavar="MODEL", help="the saved model (.npz)")
    e.add_argument("data", metavar="DATA", nargs="?", help=f"the labelled data: {_DATA_HELP}")
    e.add_argument("--target", metavar="COLUMN", help="with a .csv DATA: the column of targets")
    e.add_argument("--labels", metavar="FILE",
                   help="with a .npy DATA: the targets, a .npy array (n_samples,)")

    sub.add_parser("info", help="show fastnn's build and runtime configuration")
    return parser


# --- files ---------------------------------------------------------------------------------------

def _check_writable(path, option):
    """Fail now, not after training: ``path``'s directory must exist and accept a new file."""
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"{option} {path}: directory {directory} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".fastnn-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write in {directory} "
                         f"({exc.strerror or exc})") from None


def _check_readable(path, what):
    if not os.path.exists(path):
        raise UsageError(f"{what} {path} not found")
    if os.path.isdir(path):
        raise UsageError(f"{what} {path} is a directory, not a file")


def _read_csv(path, target=None, feature_names=None):
    """(X float64 (n, d), y str (n,) or None, feature names) from a CSV with a header row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    if not header or not any(h.strip() for h in header):
        raise UsageError(f"{path} is empty (expected a header row of column names, then rows "
                         f"of numbers)")
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise UsageError(f"{path}: duplicate column names {dupes}")
    if target is not None and target not in header:
        raise UsageError(f"{path} has no column {target!r} (columns: {', '.join(header)})")
    if feature_names is not None:
        missing = [n for n in feature_names if n not in header]
        if missing:
            raise UsageError(f"{path} lacks the model's feature columns {missing}")
        cols = [header.index(n) for n in feature_names]
    else:
        cols = [i for i, h in enumerate(header) if h != target]
        if not cols:
            raise UsageError(f"{path} has no feature columns besides the target {target!r}")

    def load(usecols, dtype):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)   # "input contained no data"
                return np.loadtxt(path, delimiter=",", skiprows=1, usecols=usecols, ndmin=2,
                                  dtype=dtype, quotechar='"', encoding="utf-8-sig")
        except ValueError as exc:
            raise UsageError(_csv_error(path, header, exc)) from None

    X = load(cols, np.float64)
    if X.shape[0] == 0:
        raise UsageError(f"{path} has a header but no data rows")
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise UsageError(f"{path}: column {header[cols[col]]!r} holds {X[row, col]} on line "
                         f"{row + 2}; fastnn needs finite numbers (fill or drop missing values)")
    y = None
    if target is not None:
        y = np.char.strip(load([header.index(target)], str)[:, 0])
        if (y == "").any():
            raise UsageError(f"{path}: the target column {target!r} has a missing value on "
                             f"line {int(np.argmax(y == '')) + 2}")
    return X, y, [header[i] for i in cols]


def _csv_error(path, header, exc) -> str:
    msg = str(exc)
    m = re.search(r"could not convert string '(.*)' to \w+ at row (\d+), column (\d+)", msg)
    if m:
        value, row, col = m.group(1), int(m.group(2)), int(m.group(3))
        name = header[col - 1] if 0 < col <= len(header) else f"#{col}"
        if value.strip() == "":
            return (f"{path}: a missing value in column {name!r} on line {row + 2}; fastnn "
                    f"needs a number in every feature cell")
        return (f"{path}: column {name!r} is not numeric ({value!r} on line {row + 2}); fastnn "
                f"trains on numeric columns only (encode text columns as numbers first)")
    return f"{path}: not a readable CSV table: {msg}"


def _read_array(path, what):
    _check_readable(path, what)
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"cannot read {path} as a .npy array: {exc}") from None
    if not isinstance(a, np.ndarray):
        a.close()
        raise UsageError(f"{path}: expected a .npy array")
    return a


def _read_data(path, *, target=None, labels=None, feature_names=None, need_y=False):
    """(X float64 (n, d), y (n,) or None, feature names or None) from a .csv, .npy or .npz."""
    _check_readable(path, "data file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        if labels is not None:
            raise UsageError("--labels goes with .npy data; for a .csv give --target COLUMN")
        if need_y and target is None:
            raise UsageError(f"{path}: give --target COLUMN, the column to predict")
        X, y, names = _read_csv(path, target, feature_names)
    elif ext in (".npy", ".npz"):
        if target is not None:
            raise UsageError("--target names a .csv column; with .npy data give --labels "
                             "FILE, with .npz data arrays X and y")
        if ext == ".npy":
            X = _read_array(path, "data file")
            y = None if labels is None else _read_array(labels, "labels file")
        else:
            if labels is not None:
                raise UsageError("--labels goes with .npy data; a .npz holds arrays X and y")
            try:
                with np.load(path, allow_pickle=False) as z:
                    if "X" not in z.files:
                        raise UsageError(f"{path} has no array 'X' (arrays: "
                                         f"{', '.join(z.files) or 'none'})")
                    X = z["X"]
                    y = z["y"] if "y" in z.files else None
            except UsageError:
                raise
            except (OSError, ValueError, EOFError) as exc:
                raise UsageError(f"cannot read {path} as a .npz archive: {exc}") from None
        names = None
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise UsageError(f"{path}: X must be a non-empty 2-D array (n_samples, n_features), "
                             f"got shape {X.shape}")
        if X.dtype.kind not in "iufb":
            raise UsageError(f"{path}: X must hold numbers, got dtype {X.dtype}")
        X = X.astype(np.float64)
        if not np.isfinite(X).all():
            raise UsageError(f"{path}: X holds NaN or infinite values")
        if need_y and y is None:
            raise UsageError(f"{path}: no targets; give --labels y.npy (or a .npz with X and y)"
                             if ext == ".npy" else f"{path} has no array 'y'")
        if y is not None:
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            if y.ndim != 1 or y.shape[0] != X.shape[0]:
                raise UsageError(f"the targets must be a 1-D array of {X.shape[0]} values, one "
                                 f"per row of X, got shape {y.shape}")
    else:
        raise UsageError(f"{path}: unknown data format {ext or '(no extension)'!r}; use .csv, "
                         f".npy or .npz")
    return X, y, names


def _as_numbers(y):
    """y as float64, or None when it holds text."""
    if y.dtype.kind in "iufb":
        return y.astype(np.float64)
    try:
        return y.astype(np.float64)
    except (ValueError, TypeError):
        return None


def _encode_targets(y, task, where):
    """(task, y for training, classes, class kind) from raw targets."""
    num = _as_numbers(y)
    if num is not None and not np.isfinite(num).all():
        raise UsageError(f"{where}: the targets hold NaN or infinite values")
    integral = num is not None and bool((num == np.round(num)).all())
    if task == "auto":
        task = "classification" if (num is None or integral) else "regression"
    if task == "regression":
        if num is None:
            raise UsageError(f"{where}: the target is not numeric; use --task classification")
        return task, num, None, None
    if num is not None and not integral:
        raise UsageError(f"{where}: classification needs integer or text labels, the targets "
                         f"have fractions (use --task regression)")
    labels = num.astype(np.int64) if num is not None else y.astype(str)
    classes, index = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise UsageError(f"{where}: the targets hold a single class ({classes[0]}); a classifier "
                         f"needs two or more")
    kind = "int" if num is not None else "str"
    return task, index.astype(np.intp), [c.item() for c in classes], kind


def _class_index(y, classes, kind, where):
    """Map raw labels to the model's class indices (unknown labels are an error)."""
    if kind == "int":
        num = _as_numbers(y)
        if num is None or not np.isfinite(num).all() or (num != np.round(num)).any():
            raise UsageError(f"{where}: the model predicts integer classes; the targets are not "
                             f"integers")
        labels, table = num.astype(np.int64), np.asarray(classes, dtype=np.int64)
    else:
        labels, table = y.astype(str), np.asarray(classes, dtype=str)
    idx = np.searchsorted(table, labels)
    idx[idx >= len(table)] = 0
    unknown = table[idx] != labels
    if unknown.any():
        raise UsageError(f"{where}: label {labels[unknown][0]!r} is not one of the model's "
                         f"classes {classes}")
    return idx.astype(np.intp)


# --- data sets the CLI knows -----------------------------------------------------------------

def _split(X, y, test_size, seed, stratify):
    if stratify:
        try:
            return train_test_split(X, y, test_size=test_size, stratify=True, seed=seed)
        except ValueError:  # a class too small to stratify
            pass
    return train_test_split(X, y, test_size=test_size, seed=seed)


def _digits_split(dtype, test_size, seed):
    """The shipped digits, split as ``fastnn train`` splits them: X_train, X_test, y_train,
    y_test."""
    X, y = datasets.load_digits(dtype=dtype)
    return _split(X, y, test_size, seed, True)


def _load_training_data(args):
    """A dict: name, X/y train, val (or None), test, task, classes, kind, feature names,
    metadata to save."""
    dtype = np.dtype(args.dtype)
    info = {"task": "classification", "feature_names": None}
    if args.mnist is not None:
        try:
            X_train, y_train, X_test, y_test = datasets.load_mnist(
                args.mnist or None, dtype=dtype, download=args.download)
        except (OSError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        info.update(name="MNIST", classes=list(range(10)), kind="int",
                    metadata={"data": "mnist",
                              "path": os.path.abspath(args.mnist) if args.mnist else None})
        val_seed = args.seed
    elif args.data is not None:
        X, y, names = _read_data(args.data, target=args.target, labels=args.labels,
                                 need_y=True)
        where = args.data
        task, y, classes, kind = _encode_targets(y, args.task, where)
        if task == "regression":
            y = y.astype(dtype)[:, None]
        X = X.astype(dtype)
        if X.shape[0] < 4:
            raise UsageError(f"{where}: {X.shape[0]} rows are too few to split into training "
                             f"and test sets")
        X_train, X_test, y_train, y_test = _split(X, y, args.test_size, args.seed,
                                                  task == "classification")
        info.update(name=os.path.basename(args.data), task=task, classes=classes, kind=kind,
                    feature_names=names)
        info["metadata"] = {"data": "file", "source": os.path.basename(args.data),
                            "target": args.target, "feature_names": names, "task": task,
                            "classes": classes, "class_kind": kind,
                            "seed": args.seed, "test_size": args.test_size}
        val_seed = args.seed + 1
    else:
        if args.task == "regression":
            raise UsageError("the digits are a classification task; --task regression needs "
                             "--data")
        X_train, X_test, y_train, y_test = _digits_split(dtype, args.test_size, args.seed)
        info.update(name="digits (UCI, shipped)", classes=list(range(10)), kind="int",
                    metadata={"data": "digits", "seed": args.seed,
                              "test_size": args.test_size})
        val_seed = args.seed + 1
    X_val = y_val = None
    if args.val_size > 0:
        X_train, X_val, y_train, y_val = _split(X_train, y_train, args.val_size, val_seed,
                                                info["task"] == "classification")
    info.update(X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val, X_test=X_test,
                y_test=y_test)
    info["metadata"].update(task=info["task"], classes=info["classes"],
                            class_kind=info["kind"], dtype=args.dtype)
    return info


def _check_metadata_fits(metadata) -> None:
    """The notes --save records (feature names, class labels) must fit in a model file's
    description; checked before training, so no work is lost to a refused save."""
    room = io._JSON_BYTES[0] // 2   # the other half: architecture, names, checksums
    size = len(json.dumps(metadata).encode("utf-8"))
    if size > room:
        raise UsageError(f"--save: the data's column names and class labels take {size} bytes; "
                         f"a model file records at most {room} (shorten or drop the names, "
                         f"e.g. save the data as .npy)")


# --- train -------------------------------------------------------------------------------------

def _train(args) -> int:
    # everything that can be wrong with the command line, before any data is read
    if args.mnist is None and args.download:
        raise UsageError("--download only applies with --mnist")
    if args.data is not None and args.mnist is not None:
        raise UsageError("give --data or --mnist, not both")
    if args.data is None and (args.target or args.labels):
        raise UsageError("--target and --labels go with --data")
    mnist = args.mnist is not None
    if args.val_size is None:
        needs_val = args.early_stopping is not None or args.halve_lr
        args.val_size = 1.0 / 12.0 if mnist else (0.1 if needs_val else 0.0)
    loss = loss_info(args.loss).name if args.loss != "auto" else (
        "cross_entropy" if args.output == "softmax" else "sparsemax")
    if (args.output, loss) == ("sparsemax", "cross_entropy"):
        raise UsageError("--output sparsemax goes with the sparsemax loss (cross-entropy needs "
                         "softmax probabilities)")
    if (args.early_stopping is not None or args.halve_lr) and args.val_size == 0:
        raise UsageError("--early-stopping and --halve-lr need a validation set "
                         "(--val-size > 0)")
    if args.save:
        _check_writable(args.save, "--save")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib, which is not installed; install it with "
                             "'pip install matplotlib' (or 'pip install \"fastnn[plot]\"')"
                             ) from None
        _check_writable(args.plot, "--plot")
    hidden = args.hidden if args.hidden is not None else ([256, 256] if mnist else [128])
    epochs = args.epochs or (3 if mnist else 30)
    batch_size = args.batch_size or (128 if mnist else 32)
    lr = args.lr if args.lr is not None else {"adam": 1e-3, "sgd": 0.1}.get(args.optimizer,
                                                                          1e-2)

    limits = contextlib.nullcontext()
    if args.threads is not None:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(limits=args.threads)

    t_start = time.perf_counter()
    d = _load_training_data(args)
    if args.save:
        _check_metadata_fits(d["metadata"])
    X_train, y_train, X_val, y_val = d["X_train"], d["y_train"], d["X_val"], d["y_val"]
    X_test, y_test = d["X_test"], d["y_test"]
    regression = d["task"] == "regression"
    if regression:
        loss = "squared"
    n_outputs = 1 if regression else len(d["classes"])
    # MNIST is only scaled to [0, 1] (by the loader), the usual preprocessing
    norm = None if (args.no_standardize or mnist) else Normalization().adapt(X_train)
    model = build_mlp(X_train.shape[1], hidden, n_outputs, activation=args.activation,
                      dropout=args.dropout, seed=args.seed, dtype=args.dtype,
                      normalization=norm, maxout=args.maxout)
    if args.threads is not None:
        model.n_threads = args.threads
    opt_kwargs = {"weight_decay": args.l2, "l1": args.l1}
    if args.optimizer == "sgd":
        opt_kwargs["momentum"] = args.momentum
    optimizer = training.make_optimizer(args.optimizer, model.parameters(), lr=lr,
                                        **opt_kwargs)
    callbacks = []
    if args.halve_lr:
        callbacks.append(cbs.HalveLROnIncrease(monitor="val_loss", rollback=True))
    if args.early_stopping is not None:
        callbacks.append(cbs.EarlyStopping(monitor="val_loss", patience=args.early_stopping,
                                           restore_best_weights=True))
    out = sys.stdout
    if not args.quiet:
        arch = "-".join(str(w) for w in [X_train.shape[1], *hidden, n_outputs])
        head = "normalized, " if norm is not None else ""
        kind = (f"{args.output} output, {loss} loss" if not regression
                else "regression, squared loss")
        print(f"data: {d['name']}: {len(X_train)} train, "
              f"{0 if X_val is None else len(X_val)} validation, {len(X_test)} test samples",
              file=out)
        units = args.activation if args.maxout is None else f"maxout k={args.maxout}"
        print(f"model: MLP {arch}, {head}{units}, {kind}, "
              f"{args.dtype}, dropout {args.dropout}; {args.optimizer} lr {lr:g}, "
              f"batch {batch_size}, {epochs} epochs, L1 {args.l1:g}, L2 {args.l2:g}",
              file=out, flush=True)
    t_fit = time.perf_counter()
    with limits:
        try:
            history = training.fit(
                model, X_train, y_train, loss=loss, optimizer=optimizer, epochs=epochs,
                batch_size=batch_size, validation_data=None if X_val is None else (X_val, y_val),
                callbacks=callbacks, verbose=0 if args.quiet else 1, seed=args.seed)
        except FloatingPointError as e:
            print(f"fastnn: {e}", file=sys.stderr)
            return 1
        fit_time = time.perf_counter() - t_fit
        score, test_loss = _score(model, X_test, y_test)
    print(f"test {score}  (test loss {test_loss}; {len(history)} epochs in {fit_time:.1f}s, "
          f"total {time.perf_counter() - t_start:.1f}s)", file=out, flush=True)
    if args.save:
        io.save(model, args.save, optimizer=model.optimizer, metadata=d["metadata"])
        if not args.quiet:
            print(f"saved model to {args.save}", file=out)
    if args.plot:
        history.plot(args.plot, title=f"fastnn on {d['name']}: test {score}")
        if not args.quiet:
            print(f"saved learning curves to {args.plot}", file=out)
    return 0


def _score(model, X, y):
    """("accuracy: A" or "R^2: R", "L" the loss): the one formatting of a score, shared by
    train and evaluate."""
    result = training.evaluate(model, X, y)
    name, value = ("R^2", result["r2"]) if "r2" in result else ("accuracy", result["accuracy"])
    return f"{name}: {value:.4f}", f"{result['loss']:.4f}"


# --- predict and evaluate ----------------------------------------------------------------------

def _load_model(path):
    _check_readable(path, "model file")
    try:
        return io.load(path, with_optimizer=False)
    except (io.ModelFileError, OSError) as exc:
        raise UsageError(str(exc)) from None


def _model_info(model):
    """The CLI's record in a model file, completed for models saved without one."""
    meta = dict(getattr(model, "metadata", None) or {})
    if "task" not in meta:
        loss = getattr(model, "loss", None)
        meta["task"] = "regression" if loss == "squared" else "classification"
    if meta["task"] == "classification" and "classes" not in meta:
        n = model.output_features(model.input_features())
        meta["classes"] = list(range(n or 0))
        meta["class_kind"] = "int"
    return meta


def _model_inputs(model, meta, args, need_y):
    """(X in the model's dtype, y or None, description) for predict/evaluate."""
    if args.data is None:
        source = meta.get("data")
        if source == "digits":
            _, X, _, y = _digits_split(np.dtype(model.dtype), meta["test_size"], meta["seed"])
            where = (f"the digits test split (seed {meta['seed']}, test size "
                     f"{meta['test_size']:g})")
        elif source == "mnist":
            try:
                _, _, X, y = datasets.load_mnist(meta.get("path"), dtype=model.dtype)
            except (OSError, ValueError) as exc:
                raise UsageError(str(exc)) from None
            where = "the MNIST test set"
        elif source == "file":
            raise UsageError(f"{args.model} was trained on {meta.get('source')}; give the DATA "
                             f"file to use")
        else:
            raise UsageError(f"{args.model} does not record its data; give a DATA file")
        if not need_y:
            y = None
        return X, y, where
    target = args.target
    if target is None and need_y and meta.get("target"):
        target = meta["target"]
    X, y, _ = _read_data(args.data, target=target, labels=getattr(args, "labels", None),
                         feature_names=meta.get("feature_names")
                         if args.data.lower().endswith(".csv") else None,
                         need_y=need_y)
    n_in = model.input_features()
    if n_in is not None and X.shape[1] != n_in:
        raise UsageError(f"{args.data} has {X.shape[1]} feature columns but the model takes "
                         f"{n_in}")
    X = X.astype(model.dtype)
    if need_y:
        if meta["task"] == "regression":
            num = _as_numbers(y)
            if num is None or not np.isfinite(num).all():
                raise UsageError(f"{args.data}: the targets must be finite numbers")
            y = num.astype(model.dtype)[:, None]
        else:
            y = _class_index(y, meta["classes"], meta.get("class_kind", "int"), args.data)
    return X, y, args.data


def _predict(args) -> int:
    if args.out:
        _check_writable(args.out, "--out")
    model = _load_model(args.model)
    meta = _model_info(model)
    if args.proba and meta["task"] == "regression":
        raise UsageError("--proba needs a classifier; this model is a regressor")
    X, _, _ = _model_inputs(model, meta, args, need_y=False)
    fmt = "%.9g" if model.dtype == np.float32 else "%.17g"
    header = ""
    if meta["task"] == "regression":
        values = model.predict(X)
    elif args.proba:
        values = model.predict_proba(X, loss=getattr(model, "loss", None) or "cross_entropy")
        header = ",".join(str(c) for c in meta["classes"])
    else:
        index = training.predict_classes(model, X)
        values = np.asarray([str(c) for c in meta["classes"]], dtype=str)[index]
        fmt = "%s"
    with (open(args.out, "w") if args.out else contextlib.nullcontext(sys.stdout)) as f:
        np.savetxt(f, values, fmt=fmt, delimiter=",", header=header, comments="")
    return 0


def _evaluate(args) -> int:
    model = _load_model(args.model)
    meta = _model_info(model)
    X, y, where = _model_inputs(model, meta, args, need_y=True)
    if getattr(model, "loss", None) is None:
        model.loss = "squared" if meta["task"] == "regression" else "cross_entropy"
    score, loss = _score(model, X, y)
    print(f"{score}  (loss {loss}; {X.shape[0]} samples of {where})")
    return 0


def main(argv=None) -> int:
    """Entry point of the ``fastnn`` console script and ``python -m fastnn``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {"train": _train, "predict": _predict, "evaluate": _evaluate}
    try:
        if args.command in commands:
            return commands[args.command](args)
    except UsageError as exc:
        print(f"fastnn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (fastnn predict m.npz | head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    if args.command == "info":
        fastnn.show_config()
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
