"""fastnn: fast multi-layer perceptrons on the CPU.

Typed Cython + OpenMP kernels (dense layers with fused activations, softmax and sparsemax,
losses, dropout, optimizer updates) under a small Python API.
"""
from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

__version__ = "0.1.0"

from fastnn import _threads, functional
from fastnn.functional import runtime as _runtime

__all__ = ["__version__", "show_config", "functional"]

# --- layers and networks, gradient checking, save/load ---
from fastnn.layers import (  # noqa: E402
    ELU, GELU, Activation, Dense, Dropout, Identity, LeakyReLU, Maxout, Module, ReLU, SiLU,
    Sigmoid, Sign, Softmax, Softplus, Sparsemax, Step, Tanh)
from fastnn.model import Parallel, Residual, Sequential  # noqa: E402
from fastnn.graph import Add, Concatenate, Input, Model, Multiply  # noqa: E402
from fastnn.gradcheck import GradcheckResult, gradcheck  # noqa: E402
from fastnn.io import ModelFileError, load, save  # noqa: E402
from fastnn.preprocessing import Normalization  # noqa: E402

__all__ += ["Module", "Dense", "Maxout", "Activation", "Identity", "Sigmoid", "Tanh", "ReLU",
            "Step", "Sign", "LeakyReLU", "ELU", "Softplus", "GELU", "SiLU",
            "Softmax", "Sparsemax", "Dropout", "Sequential", "Residual", "Parallel",
            "Input", "Model", "Concatenate", "Add", "Multiply", "gradcheck",
            "GradcheckResult", "save", "load", "ModelFileError"]
__all__ += ["Normalization"]

# --- initialization, optimizers, regularization ---
from fastnn import init, optim, regularization  # noqa: E402

__all__ += ["init", "optim", "regularization"]

# --- training, data, datasets, search, debugging ---
from fastnn import callbacks, data, datasets, search  # noqa: E402
from fastnn.training import History, evaluate, fit  # noqa: E402
from fastnn.data import Standardizer, train_test_split, train_val_test_split  # noqa: E402
from fastnn.callbacks import (  # noqa: E402
    EarlyStopping, HalveLROnIncrease, ModelCheckpoint, ReduceLROnPlateau)
from fastnn.search import grid_search, random_search  # noqa: E402
from fastnn.debug import check_overfit  # noqa: E402

__all__ += ["callbacks", "data", "datasets", "search", "fit", "evaluate", "History",
            "Standardizer", "train_test_split", "train_val_test_split", "EarlyStopping",
            "HalveLROnIncrease", "ModelCheckpoint", "ReduceLROnPlateau", "grid_search",
            "random_search", "check_overfit"]

# --- threads inside parallel searches; scikit-learn estimators (loaded on first use) ---
from fastnn import parallel  # noqa: E402

__all__ += ["parallel"]
_SKLEARN_NAMES = ("MLPClassifier", "MLPRegressor")  # not in __all__: scikit-learn is optional

if TYPE_CHECKING:
    # Type checkers see the estimators' classes, and no module __getattr__ (with one, every
    # misspelled name such as ``from fastnn import MLPClasifier`` would pass as Any).
    from fastnn.sklearn import MLPClassifier, MLPRegressor
else:
    def __getattr__(name: str) -> Any:
        if name in _SKLEARN_NAMES:
            try:
                from fastnn import sklearn as _sklearn_estimators
            except ImportError as e:
                raise ImportError(f"fastnn.{name} needs scikit-learn: pip install scikit-learn "
                                  f"(or pip install \"fastnn[sklearn]\"); {e}") from e
            return getattr(_sklearn_estimators, name)
        raise AttributeError(f"module 'fastnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SKLEARN_NAMES))


def show_config(file: IO[str] | None = None) -> dict[str, Any]:
    """Print and return the build and runtime configuration.

    Reports fastnn's version, whether the kernels were built with OpenMP, the default thread
    count (what ``n_threads=None`` resolves to now), the vector code chosen for this CPU
    (``simd``: the elementwise, softmax and one-row kernels; ``simd_bfloat16``: the opt-in
    bfloat16 products), and the BLAS behind the matrix products with its thread count
    (through threadpoolctl).
    """
    import sys

    import numpy as np

    blas = _threads.blas_info()
    simd = _runtime.simd_levels()
    cfg = {
        "fastnn": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "openmp": _runtime.openmp_enabled(),
        "default_n_threads": _threads.effective_n_threads(None),
        "simd": simd["elementwise"],
        "simd_bfloat16": simd["bfloat16"],
        "blas": blas.get("internal_api"),
        "blas_backend": blas.get("backend"),
        "blas_version": blas.get("version"),
        "blas_architecture": blas.get("architecture"),
        "blas_threading_layer": blas.get("threading_layer"),
        "blas_num_threads": blas.get("num_threads"),
        "blas_filepath": blas.get("filepath"),
        "blas_thread_pinning": blas.get("thread_control"),
    }
    out = file if file is not None else sys.stdout
    width = max(len(k) for k in cfg)
    for k, v in cfg.items():
        print(f"{k:<{width}} : {v}", file=out)
    return cfg
