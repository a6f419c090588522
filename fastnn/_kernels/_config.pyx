# Design: build-time facts about the compiled core, for fastnn.show_config and fastnn._threads.
from fastnn._kernels._openmp cimport FASTNN_OPENMP, omp_get_max_threads


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(FASTNN_OPENMP)


def omp_max_threads():
    """omp_get_max_threads() now: honours OMP_NUM_THREADS and threadpoolctl limits (1 without OpenMP)."""
    return omp_get_max_threads()


def check_threshold(str module, dict current, name, value, bint integral=True):
    """The value to store for parallel threshold ``name`` of kernel module ``module`` (whose
    thresholds now are ``current``): ValueError for an unknown name or a negative value, TypeError
    for a non-number (a bool included); integral thresholds must be ints, capped at 2**62."""
    import numbers
    if name not in current:
        raise ValueError(f"fastnn._kernels.{module} has no parallel threshold {name!r}; "
                         f"expected one of {sorted(current)}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
            integral and not isinstance(value, numbers.Integral)):
        kind = "an int" if integral else "a number"
        raise TypeError(f"parallel threshold {module}.{name} must be {kind}, got {value!r}")
    if not value >= 0:
        raise ValueError(f"parallel threshold {module}.{name} must be >= 0, got {value!r}")
    return min(int(value), 1 << 62) if integral else float(value)
