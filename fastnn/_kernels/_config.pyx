# Design: build-time facts about the compiled core, for fastnn.show_config and fastnn._threads.
from fastnn._kernels._openmp cimport FASTNN_OPENMP, omp_get_max_threads


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(FASTNN_OPENMP)


def omp_max_threads():
    """omp_get_max_threads() now: honours OMP_NUM_THREADS and threadpoolctl limits (1 without OpenMP)."""
    return omp_get_max_threads()
