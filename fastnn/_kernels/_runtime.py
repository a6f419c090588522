"""The runtime state behind the kernels: the build, the BLAS, the BLAS thread registry, and the
parallel thresholds (public as :mod:`fastnn.functional.runtime`).

The thread model (``fastnn._threads``), which ``fastnn.functional`` itself resolves thread counts
with, reads the compiled core's state here: a module of the kernel package that imports nothing of
fastnn but ``fastnn._kernels``, so no import circle runs through ``fastnn.functional``.

Parallel thresholds: every kernel module with an OpenMP path runs serially below a work size
measured for it (the rule and the benchmark that sets it are in the module's source; the
numbers are in benchmarks/README.md, "Parallel thresholds"). One convention for all of them:

>>> from fastnn.functional import runtime
>>> old = runtime.set_parallel_threshold("dropout", "min_elements", 0)   # always parallel
>>> runtime.parallel_thresholds()["dropout"]["min_elements"]
0
>>> _ = runtime.set_parallel_threshold("dropout", "min_elements", old)

The kernel modules listed here have ``set_parallel_threshold(name, value) -> old`` and
``parallel_thresholds() -> dict`` themselves (softmax, sparsemax and maxout, which still have
their own setters, are left out of the table until they do). Thresholds only choose between the serial and the
parallel loop; results are the same either way (bitwise, except dense products, where BLAS
decides the summation order).
"""
from __future__ import annotations

import contextlib
import importlib

from fastnn._kernels import _blas, _blas_loader, _config, bf16, softmax

__all__ = ["openmp_enabled", "omp_max_threads", "use_blas", "blas_info", "parallel_thresholds",
           "set_parallel_threshold", "override_thresholds", "THRESHOLD_KERNELS"]

# --- the build -----------------------------------------------------------------------------
#: True when the kernels were compiled with OpenMP.
openmp_enabled = _config.openmp_enabled
#: ``omp_get_max_threads()`` now (OMP_NUM_THREADS, threadpoolctl limits; 1 without OpenMP).
omp_max_threads = _config.omp_max_threads
#: (loads, unloads) of shared objects in the process, changing whenever a library comes or goes;
#: None where the loader does not count them.
loaded_objects_generation = _config.loaded_objects_generation



def simd_levels() -> dict:
    """The vector code the kernels chose for this CPU at import (capped by FASTNN_SIMD):
    ``{"elementwise": softmax, sparsemax, the exp rows and the one-row product's level,
    "bfloat16": the bfloat16 products' level}``."""
    return {"elementwise": softmax.simd_level(), "bfloat16": bf16.simd_level()}


# --- the BLAS behind the matrix products (fastnn/_kernels/_blas_loader.py) ----------------------
use_blas = _blas_loader.use_blas
blas_info = _blas_loader.blas_info
#: The facts recorded by the last use_blas (no threadpoolctl call).
blas_current = _blas_loader.current
#: The library in force as a use_blas name; use the one another process uses.
blas_library = _blas_loader.library
blas_match = _blas_loader.match
#: Set a threadpoolctl-controlled library's thread count from any thread.
set_library_threads = _blas_loader.set_library_threads
#: True when the kernels can set the BLAS thread count without a Python call.
blas_has_thread_control = _blas.has_thread_control

# --- the BLAS thread count: one registry (fastnn/_kernels/_blas.pyx) ---------------------------
#: Add a request, owned by the calling thread, that BLAS use at most ``cap`` threads.
blas_request = _blas.request
#: End the calling thread's latest request of ``cap``.
blas_release = _blas.release
#: The caps of every active request made through blas_request (all threads).
blas_held = _blas.held
#: (active requests, kernels' included; the count before the first of them).
blas_requests = _blas.requests

# --- parallel thresholds ----------------------------------------------------------------------
#: The kernel modules (fastnn._kernels.<name>) whose OpenMP paths have thresholds.
THRESHOLD_KERNELS = ("dense", "activations", "dropout", "losses", "optim", "softmax",
                     "sparsemax", "maxout")


def _kernel(kernel: str):
    if kernel not in THRESHOLD_KERNELS:
        raise ValueError(f"unknown kernel module {kernel!r}; expected one of {THRESHOLD_KERNELS}")
    return importlib.import_module(f"fastnn._kernels.{kernel}")


def parallel_thresholds() -> dict:
    """``{kernel: {name: value}}``: every parallel threshold in force now (work units as each
    kernel module defines them: elements, or multiply-adds for dense)."""
    return {kernel: _kernel(kernel).parallel_thresholds() for kernel in THRESHOLD_KERNELS}


def set_parallel_threshold(kernel: str, name: str, value):
    """Set threshold ``name`` of kernel module ``kernel`` (see :func:`parallel_thresholds`);
    returns the previous value. Unknown names and negative values are ValueErrors."""
    return _kernel(kernel).set_parallel_threshold(name, value)


@contextlib.contextmanager
def override_thresholds(kernel: str, **values):
    """Set thresholds of kernel module ``kernel`` for a block (``name=value`` each, see
    :func:`parallel_thresholds`); the previous values come back on exit, exceptions included.
    Process-wide, like the thresholds themselves: for tests and measurements, not for code that
    runs next to other threads.

    >>> with override_thresholds("dropout", min_elements=0):   # doctest: +SKIP
    ...     F.dropout(x, 0.5, n_threads=2)                       # the parallel loop
    """
    old = {}
    try:
        for name, value in values.items():
            old[name] = set_parallel_threshold(kernel, name, value)
        yield
    finally:
        for name, value in old.items():
            set_parallel_threshold(kernel, name, value)
