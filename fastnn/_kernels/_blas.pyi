# Stub for the compiled fastnn._kernels._blas (row-major GEMM/GEMV over scipy's BLAS).
from typing import Any, TypeVar

import numpy as np

_F = TypeVar("_F", np.float32, np.float64)
_Array = np.ndarray[Any, np.dtype[_F]]

def _install_thread_control(set_fn: int, get_fn: int) -> None: ...
def has_thread_control() -> bool: ...
def py_gemm(trans_a: bool, trans_b: bool, alpha: float, A: _Array[_F], B: _Array[_F],
            beta: float, C_out: _Array[_F]) -> None: ...
def py_gemv(trans_a: bool, alpha: float, A: _Array[_F], x: _Array[_F], beta: float,
            y_out: _Array[_F]) -> None: ...
