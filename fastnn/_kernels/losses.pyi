# Stub for the compiled fastnn._kernels.losses (per-row losses with fused gradients).
from typing import Any, TypeVar

import numpy as np

_F = TypeVar("_F", np.float32, np.float64)
_Array = np.ndarray[Any, np.dtype[_F]]
_Labels = np.ndarray[Any, np.dtype[np.intp]]
_Rows = np.ndarray[Any, np.dtype[np.float64]]

PARALLEL_MIN_ELEMENTS: int

def parallel_thresholds() -> dict[str, int]: ...
def set_parallel_threshold(name: str, value: int) -> int: ...
def cross_entropy_labels(Z: _Array[_F], y: _Labels, loss_out: _Rows, grad_out: _Array[_F],
                         need_grad: bool, scale: float, n_threads: int) -> None: ...
def cross_entropy_probs(Z: _Array[_F], Q: _Array[_F], loss_out: _Rows, grad_out: _Array[_F],
                        need_grad: bool, scale: float, n_threads: int) -> None: ...
def binary_cross_entropy(z: _Array[_F], y: _Array[_F], loss_out: _Rows, grad_out: _Array[_F],
                         need_grad: bool, scale: float, n_threads: int) -> None: ...
def squared_loss(F: _Array[_F], Y: _Array[_F], loss_out: _Rows, grad_out: _Array[_F],
                 need_grad: bool, scale: float, n_threads: int) -> None: ...
def sparsemax_loss(Z: _Array[_F], y: _Labels, Q: _Array[_F], use_q: bool, loss_out: _Rows,
                   grad_out: _Array[_F], need_grad: bool, scale: float,
                   n_threads: int) -> None: ...
def cross_entropy_labels_layer(Z: object, y: object, loss_out: object, grad_out: object,
                               n_threads: int) -> bool: ...
