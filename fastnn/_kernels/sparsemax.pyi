# Stub for the compiled fastnn._kernels.sparsemax (row sparsemax and its VJP).
from typing import Any, TypeVar

import numpy as np

_F = TypeVar("_F", np.float32, np.float64)
_Array = np.ndarray[Any, np.dtype[_F]]

PARALLEL_MIN_ELEMENTS: int
METHODS: dict[str, int]
SIMD_LEVELS: tuple[str, ...]

def simd_level() -> str: ...
def _set_simd_level(name: str) -> str: ...

def parallel_thresholds() -> dict[str, float]: ...
def set_parallel_threshold(name: str, value: float) -> float: ...
def sparsemax_forward(Z: _Array[_F], P_out: _Array[_F], method: int, n_threads: int) -> None: ...
def sparsemax_backward(P: _Array[_F], G: _Array[_F], grad_out: _Array[_F],
                       n_threads: int) -> None: ...
