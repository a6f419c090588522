"""Datasets: the shipped digits set, MNIST (IDX files, optional download), the lecture's toys.

* :func:`load_digits` - 1797 8x8 handwritten digits shipped inside fastnn (UCI optical digits,
  CC BY 4.0; see ``fastnn/datasets/data/README.md``): fastnn's examples and main command run
  offline on it.
* :func:`load_mnist` - MNIST from IDX files (gzipped or raw) in a directory, ``$FASTNN_MNIST_DIR``
  or the download cache, each file checked by sha256; :func:`fetch_mnist` downloads it.
* :func:`read_idx` - the IDX reader on its own.
* toys: :func:`threshold_logic`, :func:`make_xor`, :func:`make_spirals`, :func:`make_circles`,
  :func:`make_regression_1d`.
"""
from __future__ import annotations

import gzip
import os

import numpy as np

from fastnn.datasets.idx import ChecksumError, IDXError, parse_idx, read_idx, sha256_file
from fastnn.datasets.mnist import (MNIST_SHA256, default_cache_dir, download, fetch_mnist,
                                   find_mnist_dir, load_mnist)
from fastnn.datasets.toy import (THRESHOLD_LOGIC_WEIGHTS, make_circles, make_regression_1d,
                                 make_spirals, make_xor, threshold_logic)

__all__ = [
    "load_digits", "DIGITS_SHA256",
    "load_mnist", "fetch_mnist", "find_mnist_dir", "download", "default_cache_dir",
    "read_idx", "parse_idx", "sha256_file", "IDXError", "ChecksumError", "MNIST_SHA256",
    "threshold_logic", "THRESHOLD_LOGIC_WEIGHTS", "make_xor", "make_spirals", "make_circles",
    "make_regression_1d",
]

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
DIGITS_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"


def load_digits(*, dtype=np.float32, images: bool = False):
    """The UCI optical digits shipped with fastnn: 1797 images, 8x8 pixels in 0..16, 10 classes.

    Parameters
    ----------
    dtype : float32 or float64
    images : bool
        X as (1797, 8, 8) instead of (1797, 64).

    Returns
    -------
    X (1797, 64) with values 0..16 (standardize or divide by 16 before training),
    y (1797,) int64 labels 0..9.
    """
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
    path = os.path.join(DATA_DIR, "digits.csv.gz")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    X = table[:, :-1].astype(dtype)
    y = table[:, -1].astype(np.int64)
    return (X.reshape(-1, 8, 8) if images else X), y
