# Design: the group max of a maxout layer, one row at a time, shared by maxout.pyx and
# inference.pyx: y[j] = max_p z[j k + p] and arg[j] = the winning p. NaN wins (like NumPy's
# max); ties go to the first unit (like NumPy's argmax).
from cython cimport floating
from libc.stdint cimport int32_t


cdef inline void max_row(const floating *z, floating *y, int32_t *arg, Py_ssize_t m,
                  Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t j, p
    cdef floating best, v
    cdef int32_t at
    for j in range(m):
        best = z[j * k]
        at = 0
        if best == best:                   # a NaN first unit wins at once
            for p in range(1, k):
                v = z[j * k + p]
                if v > best or v != v:
                    best = v
                    at = <int32_t> p
                    if v != v:
                        break
        y[j] = best
        arg[j] = at
