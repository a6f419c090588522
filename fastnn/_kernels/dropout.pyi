# Stub for the compiled fastnn._kernels.dropout (counter-based dropout masks).
from typing import Any, TypeVar

import numpy as np

_F = TypeVar("_F", np.float32, np.float64)
_Array = np.ndarray[Any, np.dtype[_F]]

def set_parallel_threshold(n: int = -1) -> int: ...
def key_from_seed(seed: int) -> int: ...
def dropout_apply(x: _Array[_F], y_out: _Array[_F], key: int, threshold: int, scale: float,
                  n_threads: int) -> None: ...
def dropout_mask_fill(mask_out: np.ndarray[Any, np.dtype[np.uint8]], key: int, threshold: int,
                      n_threads: int) -> None: ...
