# Design: the one BLAS wrapper module (see _blas.pxd). The thread control of the BLAS that scipy
# links (OpenBLAS as shipped in scipy wheels) is found once by fastnn._threads through threadpoolctl
# and handed here as raw function pointers, so a kernel can pin BLAS to one thread around an OpenMP
# region without a Python call.
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv

ctypedef void (*set_threads_fn)(int) noexcept nogil
ctypedef int (*get_threads_fn)() noexcept nogil

cdef set_threads_fn _set_threads = NULL
cdef get_threads_fn _get_threads = NULL


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
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *> B, &ldb, <float *> A, &lda,
              &beta, C, &ldc)
    else:
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
        sgemv(&t, &n, &m, &alpha, <float *> A, &lda, <float *> x, &incx, &beta, y, &incy)
    else:
        dgemv(&t, &n, &m, &alpha, <double *> A, &lda, <double *> x, &incx, &beta, y, &incy)


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


def _install_thread_control(size_t set_fn, size_t get_fn):
    """Install the BLAS thread-control function pointers (addresses from ctypes); 0 clears."""
    global _set_threads, _get_threads
    if set_fn == 0 or get_fn == 0:
        _set_threads = NULL
        _get_threads = NULL
    else:
        _set_threads = <set_threads_fn> set_fn
        _get_threads = <get_threads_fn> get_fn


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
