# Design: the one BLAS wrapper module (see _blas.pxd). Two backends behind one gemm/gemv:
# - NumPy's bundled OpenBLAS (ILP64 CBLAS, row-major native), when _blas_loader finds it: NumPy
#   wheels may ship a newer OpenBLAS than SciPy's, whose small-batch sgemm packs the weight
#   matrix faster (benchmarks/README.md, "Parallel thresholds");
# - scipy.linalg.cython_blas (Fortran BLAS, operands swapped for row-major) otherwise, and always
#   available as the fallback (FASTNN_BLAS=scipy forces it).
# The function pointers and the chosen library's thread control are found once by
# fastnn._kernels._blas_loader (through threadpoolctl / ctypes) and installed here, so kernels
# call them without Python. The BLAS thread count is one process-wide resource with one registry,
# below: every cap (the kernels' n_threads, fastnn.parallel.limit_threads) is a request there.
import os
import threading

from libc.stdint cimport int64_t
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv
from fastnn._kernels._math cimport fnn_simd_level

# One input row through a layer, y = x W, for the weights a core's cache holds: fastnn's own
# kernel. Blocks of 256 bytes of columns (64 floats, 32 doubles) stay in vector registers while
# the rows stream past; each y[j] is the sum of x[i] W[i, j] in the order i = 0 .. k-1, one
# rounding per multiply and per add (no FMA: _math.pxd). So a column's result does not depend on
# which block, slice, vector width or thread computes it: inference splits a request's columns
# over cores and gets the bits of one core. About OpenBLAS's GEMV speed there, not faster: one
# core, float32, py_xw against NumPy's x @ W (py_xw also allocates its output), medians of five
# rounds: 784x256 23.2 against 21.1 us, 256x256 7.6 against 7.4, 256x10 3.5 against 2.6,
# 784x100 12.9 against 9.3 (a partial last block keeps its accumulators in memory); an earlier
# C-level timing had 7.5 against 8.5 us at 784x256. Slower once the weights come from memory
# (an earlier timing, 4096x4096: 5.3 against 3.0 ms), hence XW_OWN_MAX_BYTES.
cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC push_options
    #pragma GCC optimize("no-trapping-math", "fp-contract=off")
    #endif
    #define FNN_XW(T, S, B)                                                                   \\
    FNN_INLINE void fnn_xw_##S##_body(const T *x, const T *W, Py_ssize_t ldw, T *y,            \\
                                      Py_ssize_t k, Py_ssize_t n) {                            \\
        Py_ssize_t j0 = 0, i, j;                                                               \\
        for (; j0 + B <= n; j0 += B) {                                                         \\
            T acc[B];                                                                          \\
            const T *w = W + j0;                                                               \\
            for (j = 0; j < B; j++) acc[j] = (T)0;                                             \\
            for (i = 0; i < k; i++, w += ldw) {                                                \\
                const T xi = x[i];                                                             \\
                for (j = 0; j < B; j++) acc[j] += xi * w[j];                                   \\
            }                                                                                  \\
            for (j = 0; j < B; j++) y[j0 + j] = acc[j];                                        \\
        }                                                                                      \\
        if (j0 < n) {                                                                          \\
            Py_ssize_t r = n - j0;                                                             \\
            T acc[B];                                                                          \\
            const T *w = W + j0;                                                               \\
            for (j = 0; j < r; j++) acc[j] = (T)0;                                             \\
            for (i = 0; i < k; i++, w += ldw) {                                                \\
                const T xi = x[i];                                                             \\
                for (j = 0; j < r; j++) acc[j] += xi * w[j];                                   \\
            }                                                                                  \\
            for (j = 0; j < r; j++) y[j0 + j] = acc[j];                                        \\
        }                                                                                      \\
    }                                                                                          \\
    FNN_MV_VOID(fnn_xw_##S, (const T *x, const T *W, Py_ssize_t ldw, T *y, Py_ssize_t k,        \\
                             Py_ssize_t n), (x, W, ldw, y, k, n))
    FNN_XW(float, f, 64)
    FNN_XW(double, d, 32)
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC pop_options
    #endif
    """
    void fnn_xw_f(const float *x, const float *W, Py_ssize_t ldw, float *y, Py_ssize_t k,
                  Py_ssize_t n) noexcept nogil
    void fnn_xw_d(const double *x, const double *W, Py_ssize_t ldw, double *y, Py_ssize_t k,
                  Py_ssize_t n) noexcept nogil

# Weights (k x ldw entries) up to this many bytes take the own kernel: a core's L2 (2 MiB on the
# machines measured). Tests lower it to reach the BLAS side.
cdef Py_ssize_t XW_OWN_MAX_BYTES = 2 * 1024 * 1024

# CBLAS constants (cblas.h): CblasRowMajor, CblasNoTrans, CblasTrans.
cdef enum:
    ROW_MAJOR = 101
    NO_TRANS = 111
    TRANS = 112

ctypedef void (*sgemm64_fn)(int, int, int, int64_t, int64_t, int64_t, float, const float *,
                            int64_t, const float *, int64_t, float, float *, int64_t) noexcept nogil
ctypedef void (*dgemm64_fn)(int, int, int, int64_t, int64_t, int64_t, double, const double *,
                            int64_t, const double *, int64_t, double, double *, int64_t) noexcept nogil
ctypedef void (*sgemv64_fn)(int, int, int64_t, int64_t, float, const float *, int64_t,
                            const float *, int64_t, float, float *, int64_t) noexcept nogil
ctypedef void (*dgemv64_fn)(int, int, int64_t, int64_t, double, const double *, int64_t,
                            const double *, int64_t, double, double *, int64_t) noexcept nogil

cdef sgemm64_fn _sgemm64 = NULL
cdef dgemm64_fn _dgemm64 = NULL
cdef sgemv64_fn _sgemv64 = NULL
cdef dgemv64_fn _dgemv64 = NULL

ctypedef void (*set_threads_fn)(int) noexcept nogil
ctypedef int (*get_threads_fn)() noexcept nogil

cdef set_threads_fn _set_threads = NULL
cdef get_threads_fn _get_threads = NULL
# True when the installed BLAS runs every product on the calling thread (oneMKL's sequential
# layer): the kernels then split large products over their own threads.
cdef bint _SEQUENTIAL = False


cdef inline int _imax(int a, int b) noexcept nogil:
    return a if a > b else b


cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k,
               floating alpha, const floating *A, int lda,
               const floating *B, int ldb,
               floating beta, floating *C, int ldc) noexcept nogil:
    cdef char ta = b't' if trans_a else b'n'
    cdef char tb = b't' if trans_b else b'n'
    if m <= 0 or n <= 0:
        return
    # Fortran requires leading dimensions >= 1 even for empty operands.
    lda = _imax(lda, 1)
    ldb = _imax(ldb, 1)
    ldc = _imax(ldc, 1)
    if floating is float:
        if _sgemm64 != NULL:
            _sgemm64(ROW_MAJOR, TRANS if trans_a else NO_TRANS, TRANS if trans_b else NO_TRANS,
                     m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
            return
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *> B, &ldb, <float *> A, &lda,
              &beta, C, &ldc)
    else:
        if _dgemm64 != NULL:
            _dgemm64(ROW_MAJOR, TRANS if trans_a else NO_TRANS, TRANS if trans_b else NO_TRANS,
                     m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
            return
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *> B, &ldb, <double *> A, &lda,
              &beta, C, &ldc)


cdef void gemv(bint trans_a, int m, int n, floating alpha, const floating *A, int lda,
               const floating *x, int incx, floating beta, floating *y, int incy) noexcept nogil:
    # Row-major A (m, n) is column-major A^T (n, m): flip the transpose flag.
    cdef char t = b'n' if trans_a else b't'
    cdef int i, len_y = n if trans_a else m
    if m <= 0 or n <= 0:
        # Empty product: y := beta * y (BLAS would reject the zero leading dimension).
        for i in range(len_y):
            y[i * incy] = 0 if beta == 0 else beta * y[i * incy]
        return
    lda = _imax(lda, 1)
    if floating is float:
        if _sgemv64 != NULL:
            _sgemv64(ROW_MAJOR, TRANS if trans_a else NO_TRANS, m, n, alpha, A, lda, x, incx,
                     beta, y, incy)
            return
        sgemv(&t, &n, &m, &alpha, <float *> A, &lda, <float *> x, &incx, &beta, y, &incy)
    else:
        if _dgemv64 != NULL:
            _dgemv64(ROW_MAJOR, TRANS if trans_a else NO_TRANS, m, n, alpha, A, lda, x, incx,
                     beta, y, incy)
            return
        dgemv(&t, &n, &m, &alpha, <double *> A, &lda, <double *> x, &incx, &beta, y, &incy)


cdef bint xw_own(Py_ssize_t k, Py_ssize_t ldw, Py_ssize_t itemsize) noexcept nogil:
    return k * ldw * itemsize <= XW_OWN_MAX_BYTES


cdef void xw(const floating *x, const floating *W, Py_ssize_t ldw, floating *y, Py_ssize_t k,
             Py_ssize_t n) noexcept nogil:
    if n <= 0:
        return
    if xw_own(k, ldw, sizeof(floating)):
        if floating is float:
            fnn_xw_f(x, W, ldw, y, k, n)
        else:
            fnn_xw_d(x, W, ldw, y, k, n)
    else:
        gemv(True, <int> k, <int> n, <floating> 1, W, <int> ldw, x, 1, <floating> 0, y, 1)


def set_xw_own_max_bytes(Py_ssize_t nbytes):
    """Weights up to ``nbytes`` go through the own one-row kernel of xw (tests); returns the old
    limit."""
    global XW_OWN_MAX_BYTES
    old = XW_OWN_MAX_BYTES
    XW_OWN_MAX_BYTES = max(0, nbytes)
    return old


def py_xw(const floating[::1] x, const floating[:, ::1] W, Py_ssize_t j0, Py_ssize_t j1):
    """x @ W[:, j0:j1] through xw as a new array (test entry point; x 1-D of W's row count,
    0 <= j0 <= j1 <= W's column count)."""
    import numpy as np
    if x.shape[0] != W.shape[0] or not 0 <= j0 <= j1 <= W.shape[1]:
        raise ValueError("shapes")
    y = np.zeros(j1 - j0, dtype=np.float32 if floating is float else np.float64)
    cdef floating[::1] yv = y
    if j1 > j0:
        with nogil:
            xw(&x[0] if x.shape[0] else NULL, &W[0, 0] + j0 if W.shape[0] else NULL,
               W.shape[1], &yv[0], x.shape[0], j1 - j0)
    return y


def simd_level():
    """The vector width xw's own kernel uses here (see fastnn._kernels.softmax.SIMD_LEVELS)."""
    return ("baseline", "avx2", "avx512")[fnn_simd_level]


cdef extern from *:
    """
    static int fnn_cpu_vendor(void) {
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(_MSC_VER)
        __builtin_cpu_init();
        if (__builtin_cpu_is("intel")) return 1;
        if (__builtin_cpu_is("amd")) return 2;
    #endif
        return 0;
    }
    """
    int fnn_cpu_vendor() noexcept nogil


def cpu_vendor():
    """The CPU's maker as the CPUID instruction reports it: "intel", "amd" or "other" (also
    for a build without GCC's CPU builtins, and off x86-64)."""
    return ("other", "intel", "amd")[fnn_cpu_vendor()]


cdef int blas_set_num_threads(int n) noexcept nogil:
    cdef int previous
    if _set_threads == NULL or _get_threads == NULL:
        return -1
    previous = _get_threads()
    if previous != n:
        _set_threads(n)
    return previous


cdef int blas_get_num_threads() noexcept nogil:
    if _get_threads == NULL:
        return -1
    return _get_threads()


# --- the BLAS thread count as a shared resource -------------------------------------------------
# Several requests may limit the (process-wide) BLAS thread count at once: dense kernels running
# in several Python threads (each caps BLAS at its n_threads around its products) and
# fastnn.parallel.limit_threads blocks. The count in force is derived from the active requests:
# the smallest requested cap, never above the count found when the first request began (the
# user's setting, "base"); when the last request ends, base is restored, whatever the order in
# which requests ended. A tiny spinlock guards the bookkeeping: it is held for a get/set call
# only, never while waiting for anything else (the GIL included), so a fork handler can take it.
cdef extern from *:
    """
    #if defined(_MSC_VER)
    #include <windows.h>
    static volatile long fastnn_req_lock_v = 0;
    static void fastnn_req_lock(void) { while (InterlockedExchange(&fastnn_req_lock_v, 1)) Sleep(0); }
    static void fastnn_req_unlock(void) { InterlockedExchange(&fastnn_req_lock_v, 0); }
    #else
    #include <sched.h>
    static volatile int fastnn_req_lock_v = 0;
    static void fastnn_req_lock(void) {
        while (__sync_lock_test_and_set(&fastnn_req_lock_v, 1)) sched_yield();
    }
    static void fastnn_req_unlock(void) { __sync_lock_release(&fastnn_req_lock_v); }
    #endif
    """
    void fastnn_req_lock() noexcept nogil
    void fastnn_req_unlock() noexcept nogil

cdef enum:
    MAX_CAP = 1024                   # caps are clamped to this (fastnn._threads clamps lower)
cdef int _req_depth = 0              # active requests, all threads
cdef int _req_base = -1              # the count before the first of them (-1: no control)
cdef int _req_count[MAX_CAP + 1]     # active requests per cap


cdef inline int _clamp_cap(int cap) noexcept nogil:
    return 1 if cap < 1 else (MAX_CAP if cap > MAX_CAP else cap)


cdef int _req_target() noexcept nogil:
    # The count the active requests allow (lock held, _req_base > 0).
    cdef int c
    if _req_depth == 0:
        return _req_base
    for c in range(1, min(_req_base, MAX_CAP) + 1):
        if _req_count[c]:
            return c
    return _req_base


cdef inline void _req_apply() noexcept nogil:
    cdef int target
    if _req_base > 0:
        target = _req_target()
        if _get_threads() != target:
            _set_threads(target)


cdef void blas_request(int cap) noexcept nogil:
    global _req_depth, _req_base
    fastnn_req_lock()
    if _req_depth == 0:
        _req_base = blas_get_num_threads()
    _req_depth += 1
    _req_count[_clamp_cap(cap)] += 1
    _req_apply()
    fastnn_req_unlock()


cdef void blas_release(int cap) noexcept nogil:
    global _req_depth
    fastnn_req_lock()
    if _req_depth > 0 and _req_count[_clamp_cap(cap)] > 0:
        _req_depth -= 1
        _req_count[_clamp_cap(cap)] -= 1
        _req_apply()
    fastnn_req_unlock()


# Python-level requests (fastnn.parallel.limit_threads blocks, through fastnn.functional.runtime)
# are the same C requests, recorded per Python thread as well: a forked child keeps only those of
# the thread that forked (the others ended with their threads), and fastnn.parallel reads them to
# limit the other BLAS libraries of the process by the same rule.
_held = {}   # threading.get_ident() -> caps of that thread's active requests, in order


def request(int cap):
    """Add a request, owned by the calling Python thread, that the BLAS behind fastnn use at
    most ``cap`` threads (see above). End it with :func:`release` from the same thread."""
    _held.setdefault(threading.get_ident(), []).append(cap)
    with nogil:
        blas_request(cap)


def release(int cap):
    """End the calling thread's latest request of ``cap``; without one, nothing changes."""
    me = threading.get_ident()
    stack = _held.get(me)
    if not stack or cap not in stack:
        return
    del stack[len(stack) - 1 - stack[::-1].index(cap)]
    if not stack:
        del _held[me]
    with nogil:
        blas_release(cap)


def held():
    """The caps of every active Python-level request (all threads)."""
    return [c for stack in list(_held.values()) for c in stack]


def requests():
    """(active requests, base count): the registry's state, kernels' requests included."""
    return _req_depth, _req_base


def _fork_prepare():
    """Before fork: hold the lock, so that the child never inherits it half-way."""
    with nogil:
        fastnn_req_lock()


def _fork_parent():
    fastnn_req_unlock()


def _fork_child():
    """In the child of a fork: only the forking thread survives, so only its requests stay
    active; the others' ended with their threads."""
    global _req_depth, _held
    cdef int c
    cdef bint active = _req_depth > 0
    me = threading.get_ident()
    mine = _held.get(me, [])
    _held = {me: mine} if mine else {}
    for c in range(MAX_CAP + 1):
        _req_count[c] = 0
    _req_depth = 0
    for c in mine:
        _req_count[_clamp_cap(c)] += 1
        _req_depth += 1
    if active:  # else the count is the user's, whatever it became since the last request
        _req_apply()
    fastnn_req_unlock()


# Registered here, with the registry: fork hooks of modules imported later (fastnn.parallel)
# run their "before" first and their "after" last, so their locks are taken around this one.
os.register_at_fork(before=_fork_prepare, after_in_parent=_fork_parent,
                    after_in_child=_fork_child)


def _install_thread_control(size_t set_fn, size_t get_fn):
    """Install the BLAS thread-control function pointers (addresses from ctypes); 0 clears."""
    global _set_threads, _get_threads
    if _req_depth:
        raise RuntimeError("cannot change the BLAS while a thread limit is in force")
    if set_fn == 0 or get_fn == 0:
        _set_threads = NULL
        _get_threads = NULL
    else:
        _set_threads = <set_threads_fn> set_fn
        _get_threads = <get_threads_fn> get_fn


def _install_cblas64(size_t sgemm_fn, size_t dgemm_fn, size_t sgemv_fn, size_t dgemv_fn):
    """Route gemm/gemv to an ILP64 CBLAS (addresses from ctypes); any 0 restores scipy's BLAS."""
    global _sgemm64, _dgemm64, _sgemv64, _dgemv64
    if sgemm_fn == 0 or dgemm_fn == 0 or sgemv_fn == 0 or dgemv_fn == 0:
        _sgemm64 = NULL
        _dgemm64 = NULL
        _sgemv64 = NULL
        _dgemv64 = NULL
    else:
        _sgemm64 = <sgemm64_fn> sgemm_fn
        _dgemm64 = <dgemm64_fn> dgemm_fn
        _sgemv64 = <sgemv64_fn> sgemv_fn
        _dgemv64 = <dgemv64_fn> dgemv_fn


def backend():
    """'cblas64' when products go to an installed ILP64 CBLAS, else 'scipy.linalg.cython_blas'."""
    return "cblas64" if _sgemm64 != NULL else "scipy.linalg.cython_blas"


cdef bint blas_sequential() noexcept nogil:
    return _SEQUENTIAL


def _set_sequential(bint sequential):
    """Record whether the installed BLAS is single-threaded by construction (the loader)."""
    global _SEQUENTIAL
    _SEQUENTIAL = sequential


def is_sequential():
    """True when the BLAS behind fastnn's products never starts threads of its own."""
    return _SEQUENTIAL


def get_num_threads():
    """The thread count of the BLAS behind fastnn's products now (-1 when unknown)."""
    return blas_get_num_threads()


def has_thread_control():
    """True when fastnn can set the BLAS thread count without a Python call."""
    return _set_threads != NULL


def py_gemm(bint trans_a, bint trans_b, double alpha, const floating[:, ::1] A,
            const floating[:, ::1] B, double beta, floating[:, ::1] C_out):
    """C_out := alpha * op(A) . op(B) + beta * C_out (test entry point; shapes checked by caller)."""
    cdef int m = C_out.shape[0]
    cdef int n = C_out.shape[1]
    cdef int k = A.shape[0] if trans_a else A.shape[1]
    with nogil:
        gemm(trans_a, trans_b, m, n, k, <floating> alpha, &A[0, 0] if A.shape[0] * A.shape[1] > 0 else NULL,
             A.shape[1], &B[0, 0] if B.shape[0] * B.shape[1] > 0 else NULL, B.shape[1],
             <floating> beta, &C_out[0, 0] if m * n > 0 else NULL, n)


def py_gemv(bint trans_a, double alpha, const floating[:, ::1] A, const floating[::1] x,
            double beta, floating[::1] y_out):
    """y_out := alpha * op(A) . x + beta * y_out (test entry point; shapes checked by caller)."""
    with nogil:
        gemv(trans_a, A.shape[0], A.shape[1], <floating> alpha,
             &A[0, 0] if A.shape[0] * A.shape[1] > 0 else NULL, A.shape[1],
             &x[0] if x.shape[0] > 0 else NULL, 1, <floating> beta,
             &y_out[0] if y_out.shape[0] > 0 else NULL, 1)
