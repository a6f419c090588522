# Design: the max over groups of k units of a maxout layer (Goodfellow et al. 2013; the
# lecture's "max-pooling over units"): Y[i, j] = max_p Z[i, j k + p], the winning p kept in an
# int32 array for the backward, which routes G[i, j] to that unit and 0 to the others. The
# linear part (Z = X W + b) and its backward are the dense kernels' identity case; this file
# holds only the group max. Rows are independent: a prange over rows above PAR_MIN elements,
# so every result is the same for any n_threads. NaN wins (like NumPy's max); ties go to the
# first unit (like NumPy's argmax).
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t

from fastnn._kernels._openmp cimport row_threads
from fastnn._kernels._config import check_threshold
from fastnn._kernels._maxout cimport max_row as _max_row

# Elements (rows * units) below which the loop stays on the calling thread: a pass as cheap
# as relu's (see activations.pyx's PAR_MIN_CHEAP).
cdef Py_ssize_t _PAR_MIN = 262144


def parallel_thresholds():
    """This module's parallel threshold: ``min_elements`` (rows x units)."""
    return {"min_elements": _PAR_MIN}


def set_parallel_threshold(name, value):
    """Set parallel threshold ``name`` (see parallel_thresholds); returns the previous value."""
    global _PAR_MIN
    current = parallel_thresholds()
    _PAR_MIN = check_threshold("maxout", current, name, value)
    return current[name]


cdef inline void _route_row(const floating *g, const int32_t *arg, floating *dz, Py_ssize_t m,
                            Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t j, p
    for j in range(m):
        for p in range(k):
            dz[j * k + p] = 0
        dz[j * k + arg[j]] = g[j]


def maxout_forward(const floating[:, ::1] Z, floating[:, ::1] Y_out, int32_t[:, ::1] arg_out,
                   Py_ssize_t k, int n_threads):
    """Y_out[i, j] = max(Z[i, j k : (j + 1) k]), arg_out[i, j] its index in the group.
    Z (n, m k), Y_out and arg_out (n, m), k >= 1."""
    cdef Py_ssize_t n = Y_out.shape[0], m = Y_out.shape[1], i
    cdef int nt = row_threads(n, m * k, n_threads, _PAR_MIN)
    if n == 0 or m == 0:
        return
    if nt == 1:
        with nogil:
            for i in range(n):
                _max_row(&Z[i, 0], &Y_out[i, 0], &arg_out[i, 0], m, k)
    else:
        for i in prange(n, nogil=True, schedule='static', num_threads=nt):
            _max_row(&Z[i, 0], &Y_out[i, 0], &arg_out[i, 0], m, k)


def maxout_backward(const floating[:, ::1] G, const int32_t[:, ::1] arg,
                    floating[:, ::1] dZ_out, Py_ssize_t k, int n_threads):
    """dZ_out[i, j k + p] = G[i, j] where p == arg[i, j], else 0. G and arg (n, m), dZ_out
    (n, m k); every arg in [0, k)."""
    cdef Py_ssize_t n = G.shape[0], m = G.shape[1], i
    cdef int nt = row_threads(n, m * k, n_threads, _PAR_MIN)
    if n == 0 or m == 0:
        return
    if nt == 1:
        with nogil:
            for i in range(n):
                _route_row(&G[i, 0], &arg[i, 0], &dZ_out[i, 0], m, k)
    else:
        for i in prange(n, nogil=True, schedule='static', num_threads=nt):
            _route_row(&G[i, 0], &arg[i, 0], &dZ_out[i, 0], m, k)
