# Design: build-time facts about the compiled core, for fastnn.show_config and fastnn._threads,
# and the loader's count of loaded shared objects (fastnn.parallel caches its threadpoolctl
# scan of the process's libraries until a library is loaded or unloaded).
from fastnn._kernels._openmp cimport FASTNN_OPENMP, omp_get_max_threads

cdef extern from *:
    """
    /* glibc's dl_iterate_phdr passes two counters, dlpi_adds and dlpi_subs, that grow whenever
       a shared object is loaded or unloaded (made for caches of the loaded objects); -1 where
       the loader does not provide them. */
    #if defined(__linux__) && defined(__GLIBC__)
    #include <link.h>
    typedef struct { long long adds, subs; } fnn_dl_counts;
    static int fnn_dl_first(struct dl_phdr_info *info, size_t size, void *data) {
        fnn_dl_counts *c = (fnn_dl_counts *) data;
        if (size < offsetof(struct dl_phdr_info, dlpi_subs) + sizeof(info->dlpi_subs))
            return 1;
        c->adds = (long long) info->dlpi_adds;
        c->subs = (long long) info->dlpi_subs;
        return 1;   /* the counters are the same in every entry: the first is enough */
    }
    static void fnn_loaded_objects(long long *adds, long long *subs) {
        fnn_dl_counts c = {-1, -1};
        dl_iterate_phdr(fnn_dl_first, &c);
        *adds = c.adds;
        *subs = c.subs;
    }
    #else
    static void fnn_loaded_objects(long long *adds, long long *subs) { *adds = -1; *subs = -1; }
    #endif
    """
    void fnn_loaded_objects(long long *adds, long long *subs) nogil


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


def loaded_objects_generation():
    """(loads, unloads) of shared objects in this process so far, as the dynamic loader counts
    them: the pair changes whenever a library is loaded or unloaded. None where the loader does
    not count (not glibc)."""
    cdef long long adds, subs
    fnn_loaded_objects(&adds, &subs)
    return None if adds < 0 else (adds, subs)
