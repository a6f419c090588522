# Stub for the compiled fastnn._kernels.softmax (row softmax / log-softmax and their VJPs).
from typing import Any, TypeVar

import numpy as np

_F = TypeVar("_F", np.float32, np.float64)
_Array = np.ndarray[Any, np.dtype[_F]]

PARALLEL_MIN_ELEMENTS: int

def _set_parallel_min_elements(n: int) -> int: ...
def softmax_forward(Z: _Array[_F], P_out: _Array[_F], log_out: bool, n_threads: int) -> None: ...
def softmax_backward(Y: _Array[_F], G: _Array[_F], grad_out: _Array[_F], log_out: bool,
                     n_threads: int) -> None: ...
