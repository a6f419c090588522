# Design: sparsemax and its Jacobian-vector product over the rows of a C-contiguous
# (n_rows, n_cols) array; the row routines (and the choice of method) are in sparsemax.pxd.
# Each thread mallocs its own scratch row (n_cols doubles) inside the parallel region, checks it
# for NULL and frees it in `finally`; a failed allocation sets a flag and the wrapper raises
# MemoryError after the region. Serial below PARALLEL_MIN_ELEMENTS.
from libc.stdlib cimport malloc, free
from cython cimport floating
from fastnn._kernels._openmp cimport row_threads
from fastnn._kernels._config import check_threshold
from cython.parallel cimport parallel, prange

from fastnn._kernels.sparsemax cimport (sparsemax_row, SPARSEMAX_SORT, SPARSEMAX_SELECT,
                                        SPARSEMAX_AUTO, SPARSEMAX_AUTO_HANDOVER_NOW)
from fastnn._kernels._math cimport fnn_simd_level
from fastnn._kernels.softmax import SIMD_LEVELS, _supported_level


def simd_level():
    """The vector width this module's row loops use: "baseline" (SSE2), "avx2" or "avx512"."""
    return SIMD_LEVELS[fnn_simd_level]


def _set_simd_level(str name):
    """Tests and benchmarks: use the row loops built for ``name`` (one of SIMD_LEVELS, at most
    what the CPU supports) in this module only; returns the previous name."""
    global fnn_simd_level
    old = SIMD_LEVELS[fnn_simd_level]
    if name not in SIMD_LEVELS:
        raise ValueError(f"simd level must be one of {SIMD_LEVELS}, got {name!r}")
    if SIMD_LEVELS.index(name) > _supported_level():
        raise ValueError(f"this CPU or build does not support {name!r}")
    fnn_simd_level = SIMD_LEVELS.index(name)
    return old

# Below this many elements (n_rows * n_cols) the rows run on the calling thread. Measured on the
# idle 2-core machine (benchmarks/README.md, "Output maps: the parallel threshold"): in a loop of
# calls (the second core still awake) two threads win from about 16 x 1000 elements; a call after
# 10 ms of idling pays the team's wake-up and wins only from about 1.3e5 elements. 2^17: a
# 256 x 1000 batch runs on both cores, a training-size batch (128 x 10) stays serial.
PARALLEL_MIN_ELEMENTS = 131072
cdef Py_ssize_t _PAR_MIN = PARALLEL_MIN_ELEMENTS


def parallel_thresholds():
    """This module's parallel threshold: ``min_elements`` (rows x columns)."""
    return {"min_elements": _PAR_MIN}


def set_parallel_threshold(name, value):
    """Set parallel threshold ``name`` (see parallel_thresholds); returns the previous value."""
    global _PAR_MIN
    current = parallel_thresholds()
    _PAR_MIN = check_threshold("sparsemax", current, name, value)
    return current[name]

METHODS = {"sort": SPARSEMAX_SORT, "select": SPARSEMAX_SELECT, "auto": SPARSEMAX_AUTO}
_AUTO_HANDOVER_NOW = SPARSEMAX_AUTO_HANDOVER_NOW  # tests: exercise auto's hand-over to select


def sparsemax_forward(const floating[:, ::1] Z, floating[:, ::1] P_out, int method,
                      int n_threads):
    """P_out[i] = sparsemax(Z[i]); returns the number of NaN rows (NaN, +inf or all -inf)."""
    cdef Py_ssize_t n = Z.shape[0], c = Z.shape[1], i
    cdef int nt = row_threads(n, c, n_threads, _PAR_MIN)
    cdef int n_nan = 0
    cdef int failed = 0
    cdef int *failed_p = &failed
    cdef double *scratch = NULL
    if n == 0 or c == 0:
        return 0
    if nt == 1:
        scratch = <double *>malloc(c * sizeof(double))
        if scratch == NULL:
            raise MemoryError(f"sparsemax: cannot allocate {c} doubles of scratch")
        try:
            with nogil:
                for i in range(n):
                    n_nan += sparsemax_row(&Z[i, 0], &P_out[i, 0], c, method, scratch)
        finally:
            free(scratch)
    else:
        with nogil, parallel(num_threads=nt):
            scratch = <double *>malloc(c * sizeof(double))
            try:
                for i in prange(n, schedule='static'):
                    if scratch == NULL:
                        failed_p[0] = 1
                    else:
                        n_nan += sparsemax_row(&Z[i, 0], &P_out[i, 0], c, method, scratch)
            finally:
                free(scratch)
        if failed:
            raise MemoryError(f"sparsemax: cannot allocate {c} doubles of scratch per thread")
    return n_nan


cdef inline void _jvp_row(const floating *p, const floating *v, floating *out,
                          Py_ssize_t c) noexcept nogil:
    """out = s * (v - mean of v over the support), s = 1[p > 0]; out may alias v."""
    cdef Py_ssize_t j, k = 0
    cdef double acc = 0.0
    cdef floating mean
    for j in range(c):
        if p[j] > 0:
            acc += v[j]
            k += 1
    mean = <floating>(acc / k) if k > 0 else 0
    for j in range(c):
        out[j] = (v[j] - mean) if p[j] > 0 else 0


def sparsemax_backward(const floating[:, ::1] P, const floating[:, ::1] G,
                       floating[:, ::1] grad_out, int n_threads):
    """Jacobian-vector product of sparsemax at output P (the Jacobian is symmetric, so this is
    also the vector-Jacobian product): grad_out = s * (G - mean_S G), s = 1[P > 0]."""
    cdef Py_ssize_t n = P.shape[0], c = P.shape[1], i
    cdef int nt = row_threads(n, c, n_threads, _PAR_MIN)
    if n == 0 or c == 0:
        return
    if nt == 1:
        with nogil:
            for i in range(n):
                _jvp_row(&P[i, 0], &G[i, 0], &grad_out[i, 0], c)
    else:
        for i in prange(n, nogil=True, schedule='static', num_threads=nt):
            _jvp_row(&P[i, 0], &G[i, 0], &grad_out[i, 0], c)
