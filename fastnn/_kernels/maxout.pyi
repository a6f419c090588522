# Stub for the compiled fastnn._kernels.maxout (the group max of a maxout layer).
from typing import Any, TypeVar

import numpy as np

_F = TypeVar("_F", np.float32, np.float64)
_Array = np.ndarray[Any, np.dtype[_F]]
_Int32 = np.ndarray[Any, np.dtype[np.int32]]

def parallel_thresholds() -> dict[str, float]: ...
def set_parallel_threshold(name: str, value: float) -> float: ...
def maxout_forward(Z: _Array[_F], Y_out: _Array[_F], arg_out: _Int32, k: int,
                   n_threads: int) -> None: ...
def maxout_backward(G: _Array[_F], arg: _Int32, dZ_out: _Array[_F], k: int,
                    n_threads: int) -> None: ...
