# Design: the one BLAS wrapper of fastnn. Row-major GEMM/GEMV over scipy.linalg.cython_blas
# (Fortran, column-major): a row-major C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T,
# so the operands are swapped instead of copied. Never a hand-written GEMM; one hand-written
# one-row product (xw) for cache-sized layers: about GEMV's speed, and it splits over cores bitwise.
from cython cimport floating


cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k,
               floating alpha, const floating *A, int lda,
               const floating *B, int ldb,
               floating beta, floating *C, int ldc) noexcept nogil
    # C := alpha * op(A) . op(B) + beta * C, all row-major.
    # op(A) is (m, k): A is (m, k) with row stride lda, or (k, m) when trans_a.
    # op(B) is (k, n): B is (k, n) with row stride ldb, or (n, k) when trans_b.
    # C is (m, n) with row stride ldc. m, n or k may be 0.

cdef void gemv(bint trans_a, int m, int n, floating alpha, const floating *A, int lda,
               const floating *x, int incx, floating beta, floating *y, int incy) noexcept nogil
    # y := alpha * op(A) . x + beta * y, A row-major (m, n) with row stride lda;
    # op(A) = A (y has m entries) or A^T when trans_a (y has n entries).

cdef void xw(const floating *x, const floating *W, Py_ssize_t ldw, floating *y, Py_ssize_t k,
             Py_ssize_t n) noexcept nogil
    # y[0:n] = x[0:k] W[0:k, 0:n], W row-major with row stride ldw (one input row through a
    # layer, or through the columns [j0, j0 + n) of one when W points at column j0). Weights of
    # up to XW_OWN_MAX_BYTES (k ldw entries: the layer, not the slice) go through fastnn's own
    # kernel, whose every y[j] is the same bits whatever slice, vector width or thread computes
    # it; larger ones through BLAS GEMV. k == 0 gives zeros.

cdef bint xw_own(Py_ssize_t k, Py_ssize_t ldw, Py_ssize_t itemsize) noexcept nogil
    # True when xw takes its own kernel for a layer of k x ldw entries of itemsize bytes.

cdef int blas_set_num_threads(int n) noexcept nogil
    # Set the thread count of the BLAS behind scipy.linalg.cython_blas; returns the previous
    # count, or -1 when fastnn could not find that BLAS's thread control (then nothing changes).

cdef int blas_get_num_threads() noexcept nogil
    # Current thread count of that BLAS, or -1 when unknown.

cdef bint blas_sequential() noexcept nogil
    # True when the BLAS never starts threads of its own (oneMKL's sequential layer): a kernel
    # then splits a large product over its own threads instead of handing BLAS the threads.

cdef void blas_request(int cap) noexcept nogil
    # Add a request that BLAS use at most cap threads: the count in force is the smallest active
    # request, never above the count found when the first active request began, which comes
    # back when the last one ends (blas_release), in whatever order they end. No-op without
    # thread control.

cdef void blas_release(int cap) noexcept nogil
    # End one request made with blas_request(cap).
