"""The runtime state behind the kernels: the build, the BLAS, the BLAS thread registry, and the
parallel thresholds.

Parallel thresholds: every kernel module with an OpenMP path runs serially below a work size
measured for it (the rule and the benchmark that sets it are in the module's source; the numbers
are in benchmarks/README.md, "Parallel thresholds"). ``parallel_thresholds()`` lists them,
``set_parallel_threshold(kernel, name, value)`` changes one (returning the old value), and
``override_thresholds(kernel, **values)`` changes some for a ``with`` block.
"""
from fastnn._kernels._runtime import (  # noqa: F401  (the public names, defined once there)
    __all__, blas_current, blas_has_thread_control, blas_held, blas_info, blas_release,
    blas_request, blas_requests, loaded_objects_generation, omp_max_threads, openmp_enabled,
    override_thresholds, parallel_thresholds, set_library_threads, set_parallel_threshold,
    simd_levels, THRESHOLD_KERNELS, use_blas)
