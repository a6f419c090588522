# Stub for the compiled fastnn._kernels.dense (dense forward/backward with fused epilogues).
from typing import Any, TypeVar

import numpy as np

_F = TypeVar("_F", np.float32, np.float64)
_Array = np.ndarray[Any, np.dtype[_F]]

def set_gemv_max_rows(rows: int) -> int: ...
def set_thresholds(split_min_work: float | None = None, split_max_work: float | None = None,
                   epilogue_par_min: int | None = None) -> tuple[float, float, int]: ...
def last_path() -> str | None: ...
def dense_forward(X: _Array[_F], W: _Array[_F], b: _Array[_F], Y_out: _Array[_F], code: int,
                  has_bias: bool, n_threads: int, Z_out: _Array[_F] | None = None) -> None: ...
def dense_backward(X: _Array[_F], W: _Array[_F], Y: _Array[_F], grad_Y: _Array[_F],
                   dZ_buf: _Array[_F], grad_X_out: _Array[_F], grad_W_out: _Array[_F],
                   grad_b_out: _Array[_F], acc_buf: np.ndarray[Any, np.dtype[np.float64]],
                   code: int, need_grad_X: bool, need_grad_b: bool, accumulate: bool,
                   n_threads: int) -> None: ...
def forward_layer(X: object, W: object, b: object, Y: object, code: int,
                  n_threads: int, Z: object = None) -> bool: ...
def backward_layer(X: object, W: object, Y: object, G: object, dZ: object, gX: object,
                   Wg: object, bg: object, acc: object, code: int, accumulate: bool,
                   n_threads: int) -> bool: ...
