# Stub for the compiled fastnn._kernels.activations (elementwise activations and derivatives).
from typing import Any, TypeVar

import numpy as np

_F = TypeVar("_F", np.float32, np.float64)
_Array = np.ndarray[Any, np.dtype[_F]]

CODES: dict[str, int]

def needs_z(code: int) -> bool: ...

def parallel_thresholds() -> dict[str, int]: ...
def set_parallel_threshold(name: str, value: int) -> int: ...
def activation_forward(z: _Array[_F], y_out: _Array[_F], code: int, n_threads: int) -> None: ...
def activation_backward(y: _Array[_F], grad_y: _Array[_F], grad_z_out: _Array[_F], code: int,
                        n_threads: int) -> None: ...
