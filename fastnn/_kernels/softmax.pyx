# Design: softmax, log-softmax and their vector-Jacobian products over the rows of a C-contiguous
# (n_rows, n_cols) array. One row routine per map (softmax.pxd, shared with the losses), a prange
# over rows above PARALLEL_MIN_ELEMENTS, serial below. Numerically stable: the row max is
# subtracted before exp; sums in double. Kernels never allocate and never validate: the Python
# wrappers in fastnn.functional.output move the axis, check shapes and allocate outputs.
from cython cimport floating
from fastnn._kernels._openmp cimport row_threads
from fastnn._kernels._config import check_threshold
from cython.parallel cimport prange

from fastnn._kernels.softmax cimport (softmax_row, fnn_softmax_rows_d, fnn_softmax_rows_f,
                                      fnn_softmax_vjp_d, fnn_softmax_vjp_f,
                                      fnn_log_softmax_vjp_d, fnn_log_softmax_vjp_f)
from fastnn._kernels._math cimport (fnn_simd_level, FNN_MULTIVERSION, FNN_FUSED_AT,
                                    fnn_exp_array_d, fnn_exp_array_f, fnn_expm1_array_f,
                                    fnn_expm1_array_d)

#: Names of the vector widths the row loops are built for, by level (see _math.pxd).
SIMD_LEVELS = ("baseline", "avx2", "avx512")


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


cdef extern from *:
    """
    static int fnn_simd_supported_level(void) {
    #if FNN_MULTIVERSION
        return fnn_simd_supported();
    #else
        return 0;
    #endif
    }
    """
    int fnn_simd_supported_level() noexcept nogil


def _supported_level():
    return fnn_simd_supported_level()


def _fused(str name):
    """Whether the exp in the row loops built for ``name`` (one of SIMD_LEVELS) uses fused
    multiply-adds: the AVX2 and AVX-512F copies do; the baseline copy only where the
    compile-time target has a hardware FMA (aarch64; see _math.pxd)."""
    return bool(FNN_FUSED_AT(SIMD_LEVELS.index(name)))


def _exp(floating[::1] a, bint expm1=False):
    """Tests: a[i] = exp(a[i]) (or expm1) in place with the kernels' functions; a 1-D float32 or
    float64 array."""
    if floating is double:
        if expm1:
            fnn_expm1_array_d(&a[0], a.shape[0])
        else:
            fnn_exp_array_d(&a[0], a.shape[0])
    else:
        if expm1:
            fnn_expm1_array_f(&a[0], a.shape[0])
        else:
            fnn_exp_array_f(&a[0], a.shape[0])

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
    _PAR_MIN = check_threshold("softmax", current, name, value)
    return current[name]


# Softmax rows of at most this many entries take the grouped path (exp over groups of rows);
# SHORT_BLOCK rows are one parallel work item there.
cdef Py_ssize_t _SHORT_ROW = 512
cdef enum:
    SHORT_BLOCK = 64


def _set_short_row(Py_ssize_t n):
    """Tests: rows of at most n entries take the grouped path (0: none); returns the old n."""
    global _SHORT_ROW
    old = _SHORT_ROW
    _SHORT_ROW = n
    return old


def softmax_forward(const floating[:, ::1] Z, floating[:, ::1] P_out, bint log_out,
                    int n_threads):
    """P_out[i] = softmax(Z[i]) (log_softmax when log_out). Shapes (n_rows, n_cols), n_cols >= 1."""
    cdef Py_ssize_t n = Z.shape[0], c = Z.shape[1], i, n_blocks
    cdef int nt = row_threads(n, c, n_threads, _PAR_MIN)
    if n == 0 or c == 0:
        return
    if c <= _SHORT_ROW and not log_out:
        # short rows: exp over groups of rows (the same bits as the row routine)
        n_blocks = (n + SHORT_BLOCK - 1) // SHORT_BLOCK
        if nt == 1:
            with nogil:
                _softmax_rows(&Z[0, 0], &P_out[0, 0], n, c)
        else:
            for i in prange(n_blocks, nogil=True, schedule='static', num_threads=nt):
                _softmax_rows(&Z[i * SHORT_BLOCK, 0], &P_out[i * SHORT_BLOCK, 0],
                              min(SHORT_BLOCK, n - i * SHORT_BLOCK), c)
    elif nt == 1:
        with nogil:
            for i in range(n):
                softmax_row(&Z[i, 0], &P_out[i, 0], c, log_out, 1.0, NULL)
    else:
        for i in prange(n, nogil=True, schedule='static', num_threads=nt):
            softmax_row(&Z[i, 0], &P_out[i, 0], c, log_out, 1.0, NULL)


cdef inline void _softmax_rows(const floating *z, floating *out, Py_ssize_t n,
                               Py_ssize_t c) noexcept nogil:
    if floating is double:
        fnn_softmax_rows_d(z, out, n, c)
    else:
        fnn_softmax_rows_f(z, out, n, c)


cdef inline void _vjp_row(const floating *y, const floating *g, floating *out, Py_ssize_t c,
                          bint log_out) noexcept nogil:
    if floating is double:
        if log_out:
            fnn_log_softmax_vjp_d(y, g, out, c)
        else:
            fnn_softmax_vjp_d(y, g, out, c)
    else:
        if log_out:
            fnn_log_softmax_vjp_f(y, g, out, c)
        else:
            fnn_softmax_vjp_f(y, g, out, c)


def softmax_backward(const floating[:, ::1] Y, const floating[:, ::1] G,
                     floating[:, ::1] grad_out, bint log_out, int n_threads):
    """Vector-Jacobian product of softmax (Y = softmax output) or log-softmax (Y = log-probs).

    softmax:     grad_out = Y * (G - <Y, G>)            (row-wise)
    log_softmax: grad_out = G - exp(Y) * sum(G)
    grad_out may alias G (each row reads G fully before writing).
    """
    cdef Py_ssize_t n = Y.shape[0], c = Y.shape[1], i
    cdef int nt = row_threads(n, c, n_threads, _PAR_MIN)
    if n == 0 or c == 0:
        return
    if nt == 1:
        with nogil:
            for i in range(n):
                _vjp_row(&Y[i, 0], &G[i, 0], &grad_out[i, 0], c, log_out)
    else:
        for i in prange(n, nogil=True, schedule='static', num_threads=nt):
            _vjp_row(&Y[i, 0], &G[i, 0], &grad_out[i, 0], c, log_out)
