# Design: a dense layer Y = act(X W + b) and its backward, with the activation fused into the
# GEMM epilogue, under the thread model of fastnn/_threads.py (one runtime owns the cores):
#   * small work (< SPLIT_MIN_WORK multiply-adds) or n_threads == 1: one BLAS call pinned to
#     1 thread from the calling thread, then a serial epilogue (exactly serial);
#   * mid-size work (a path off by default, see the thresholds below): the output is cut into one
#     block per OpenMP thread (columns or rows, whichever dimension is longer), BLAS is pinned to
#     1 thread for the region, and each thread runs a single-threaded GEMM on its block followed
#     by the fused epilogue while the block is still in its cache;
#   * large work (>= SPLIT_MAX_WORK): one BLAS call with BLAS's own threads (capped at n_threads),
#     then the epilogue, parallel only above EPILOGUE_PAR_MIN elements.
# The BLAS thread count is always capped at n_threads (n_threads == 1 pins BLAS to 1 thread: the
# call is exactly serial) through _blas's request registry (blas_request/blas_release): with
# concurrent calls the smallest cap is in force, and the count from before the first comes
# back when the last ends. Without BLAS thread control the mid path is
# never taken. Inputs are C-contiguous; W is (in_features, out_features) so forward is one
# row-major GEMM. Column sums (db) accumulate in double, each column owned by one thread, so
# every result is identical for any n_threads.
# Two entries run the same _forward/_backward on raw pointers: dense_forward/dense_backward
# (typed memoryviews; the functional API validates in Python first) and forward_layer/
# backward_layer (the Dense module's per-batch entries: arguments checked in C through
# _arrays.pxd, False when they do not qualify, and the module falls back to the functional API).
from cython cimport floating
from cython.parallel cimport prange
cimport numpy as cnp
from libc.limits cimport INT_MAX

cimport fastnn._kernels._arrays as A   # this form: cythonize rebuilds on a change of _arrays.pxd

from fastnn._kernels._blas cimport (gemm, gemv, xw, blas_get_num_threads, blas_request,
                                   blas_release, blas_sequential)
from fastnn._kernels._activations cimport act_row, act_row_keep_z, act_grad_row, ACT_IDENTITY
from fastnn._kernels._config import check_threshold

cnp.import_array()

# Work thresholds, in multiply-adds (batch * in_features * out_features; backward counts both
# GEMMs). Rule: each path is used where benchmarks/bench_train_step.py (784-256-256-10 relu + Adam
# steps at 2 threads, the thresholds A/B interleaved) ran fastest on a quiet machine:
#   * below SPLIT_MIN_WORK the call is serial (BLAS pinned to 1 thread): every product of a
#     batch-16 step is below it;
#   * from SPLIT_MIN_WORK on, one BLAS call with BLAS's own threads (batch 128's first layer).
# The split path (SPLIT_MIN_WORK <= work < SPLIT_MAX_WORK) is therefore off by default: on a
# quiet machine its blocks (one single-threaded GEMM per thread on part of the output) ran
# slower than either. It is kept for machines where other processes compete for the cores,
# where BLAS's spin-yielding workers collapsed and the passive split did not. Turn it on with
# set_parallel_threshold("split_min_work", 2e6) and ("split_max_work", 4e9). Numbers:
# benchmarks/README.md, "Parallel thresholds".
cdef double SPLIT_MIN_WORK = 1.0e7
cdef double SPLIT_MAX_WORK = 1.0e7
# Epilogue elements (batch * out_features) above which the large path's epilogue uses prange
# (the relu threshold of activations.pyx; the epilogue is the same row loop). Its serial and
# parallel loops, and those of the backward's dZ pass, are twins on purpose (see activations.pyx).
cdef Py_ssize_t EPILOGUE_PAR_MIN = 262144


# Up to this many rows (and at least 64 output columns) a product is one row product per row
# (_blas.xw: the own kernel for cache-sized weights, else GEMV). Rule, measured when that was
# BLAS GEMV (xw's own kernel is about that GEMV's speed on cache-sized layers, _blas.pyx): the
# largest row count at which GEMV per row beats one GEMM for a 784->256 layer on 1 thread
# (dense_forward timed at 1-16 rows with set_gemv_max_rows(1) against set_gemv_max_rows(16)),
# with the default backend of _blas (NumPy's OpenBLAS). A BLAS that
# packs the whole weight per GEMM call (scipy's, FASTNN_BLAS=scipy) moves it up:
# set_gemv_max_rows(8) suits that backend. Numbers: benchmarks/README.md, "Parallel thresholds".
cdef Py_ssize_t GEMV_MAX_ROWS = 2


def set_gemv_max_rows(Py_ssize_t rows):
    """Override GEMV_MAX_ROWS (measurements, tests); returns the previous value."""
    global GEMV_MAX_ROWS
    old = GEMV_MAX_ROWS
    GEMV_MAX_ROWS = max(1, rows)
    return old


def parallel_thresholds():
    """This module's parallel thresholds: ``split_min_work`` and ``split_max_work``
    (multiply-adds; the split path runs in between), ``epilogue_min_elements`` (the large
    path's epilogue runs in a prange from there)."""
    return {"split_min_work": SPLIT_MIN_WORK, "split_max_work": SPLIT_MAX_WORK,
            "epilogue_min_elements": EPILOGUE_PAR_MIN}


def set_parallel_threshold(name, value):
    """Set parallel threshold ``name`` (see parallel_thresholds); returns the previous value."""
    global SPLIT_MIN_WORK, SPLIT_MAX_WORK, EPILOGUE_PAR_MIN
    current = parallel_thresholds()
    value = check_threshold("dense", current, name, value, name == "epilogue_min_elements")
    if name == "split_min_work":
        SPLIT_MIN_WORK = value
    elif name == "split_max_work":
        SPLIT_MAX_WORK = value
    else:
        EPILOGUE_PAR_MIN = value
    return current[name]


# Which path the last call took (0 serial/small, 1 split, 2 large): for tests only.
cdef int _last_path = -1


def last_path():
    """'small', 'split' or 'large': the path taken by the last dense call (for tests)."""
    return {0: "small", 1: "split", 2: "large"}.get(_last_path, None)


cdef inline Py_ssize_t _split(Py_ssize_t n, int n_blocks, Py_ssize_t t,
                              Py_ssize_t align) noexcept nogil:
    """Start of block t of n_blocks over range(n); edges on multiples of align."""
    cdef Py_ssize_t chunk = (n + n_blocks - 1) // n_blocks
    chunk = (chunk + align - 1) // align * align
    return min(n, t * chunk)


cdef inline int _choose_path(double work, int n_threads) noexcept nogil:
    if n_threads <= 1 or work < SPLIT_MIN_WORK:
        return 0
    if blas_sequential():     # a BLAS without threads of its own (oneMKL's sequential layer)
        return 1
    if work >= SPLIT_MAX_WORK or blas_get_num_threads() < 0:
        return 2
    return 1


cdef void _forward_block(const floating *X, const floating *W, const floating *b, floating *Y,
                         floating *Z, int code, Py_ssize_t n_in, Py_ssize_t n_out,
                         Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """Y[i0:i1, j0:j1] = act(X[i0:i1] W[:, j0:j1] + b[j0:j1]); when Z is not NULL the
    pre-activation X W + b is kept there (the product is written to Z, then Y = act(Z))."""
    cdef Py_ssize_t i
    cdef const floating *bj = NULL if b == NULL else b + j0
    if i1 <= i0 or j1 <= j0:
        return
    if Z != NULL:
        _forward_block(X, W, <const floating *> NULL, Z, <floating *> NULL, ACT_IDENTITY,
                       n_in, n_out, i0, i1, j0, j1)
        for i in range(i0, i1):
            act_row_keep_z(code, Y + i * n_out + j0, Z + i * n_out + j0, bj, j1 - j0)
        return
    if i1 - i0 == 1 or (i1 - i0 <= GEMV_MAX_ROWS and j1 - j0 >= 64):
        for i in range(i0, i1):
            xw(X + i * n_in, W + j0, n_out, Y + i * n_out + j0, n_in, j1 - j0)
    else:
        gemm(False, False, <int> (i1 - i0), <int> (j1 - j0), <int> n_in, <floating> 1,
             X + i0 * n_in, <int> n_in, W + j0, <int> n_out, <floating> 0,
             Y + i0 * n_out + j0, <int> n_out)
    if code != ACT_IDENTITY or bj != NULL:
        for i in range(i0, i1):
            act_row(code, Y + i * n_out + j0, Y + i * n_out + j0, bj, j1 - j0)


cdef inline void _epilogue_row(floating *Y, floating *Z, const floating *b, int code,
                               Py_ssize_t i, Py_ssize_t n_out) noexcept nogil:
    if Z == NULL:
        act_row(code, Y + i * n_out, Y + i * n_out, b, n_out)
    else:
        act_row_keep_z(code, Y + i * n_out, Z + i * n_out, b, n_out)


cdef void _epilogue_rows(floating *Y, floating *Z, const floating *b, int code, Py_ssize_t n,
                         Py_ssize_t n_out, int n_threads) noexcept nogil:
    """Y = act(Y + b) over all rows, or Z += b, Y = act(Z) when Z is not NULL (the product is
    then in Z); parallel over row blocks above EPILOGUE_PAR_MIN."""
    cdef Py_ssize_t i, t, s, e
    cdef int nb
    if code == ACT_IDENTITY and b == NULL and Z == NULL:
        return
    if n_threads > 1 and n * n_out >= EPILOGUE_PAR_MIN and n >= n_threads:
        nb = n_threads
        for t in prange(nb, schedule='static', num_threads=nb):
            s = _split(n, nb, t, 1)
            e = _split(n, nb, t + 1, 1)
            for i in range(s, e):
                _epilogue_row(Y, Z, b, code, i, n_out)
    else:
        for i in range(n):
            _epilogue_row(Y, Z, b, code, i, n_out)


cdef void _forward(const floating *Xp, const floating *Wp, const floating *bp, floating *Yp,
                   floating *Zp, Py_ssize_t n, Py_ssize_t n_in, Py_ssize_t n_out, int code,
                   int n_threads) noexcept nogil:
    """Y = act(X W + b) on raw C-order arrays; bp may be NULL (no bias). X (n, n_in),
    W (n_in, n_out), Y (n, n_out); X and W may be NULL when n_in == 0. Zp, when not NULL,
    receives the pre-activation X W + b (n, n_out)."""
    global _last_path
    cdef Py_ssize_t t
    cdef int path, nb
    cdef bint by_rows
    if n == 0 or n_out == 0:
        return
    path = _choose_path(<double> n * n_in * n_out, n_threads)
    # The split needs a dimension long enough to give every thread a block.
    by_rows = n >= n_out
    if path == 1 and not ((by_rows and n >= 2 * n_threads) or (not by_rows and n_out >= 16 * n_threads)):
        path = 2
    _last_path = path
    if path == 1:
        nb = n_threads
        blas_request(1)
        for t in prange(nb, schedule='static', num_threads=nb):
            if by_rows:
                _forward_block(Xp, Wp, bp, Yp, Zp, code, n_in, n_out,
                               _split(n, nb, t, 1), _split(n, nb, t + 1, 1), 0, n_out)
            else:
                _forward_block(Xp, Wp, bp, Yp, Zp, code, n_in, n_out,
                               0, n, _split(n_out, nb, t, 16), _split(n_out, nb, t + 1, 16))
        blas_release(1)
        return
    blas_request(n_threads if path == 2 else 1)
    _forward_block(Xp, Wp, <const floating *> NULL, Yp if Zp == NULL else Zp, <floating *> NULL,
                   ACT_IDENTITY, n_in, n_out, 0, n, 0, n_out)
    blas_release(n_threads if path == 2 else 1)
    _epilogue_rows(Yp, Zp, bp, code, n, n_out, n_threads if path == 2 else 1)


def dense_forward(const floating[:, ::1] X, const floating[:, ::1] W, const floating[::1] b,
                  floating[:, ::1] Y_out, int code, bint has_bias, int n_threads,
                  floating[:, ::1] Z_out=None):
    """Y_out = act(X W + b). X (n, in), W (in, out), b (out,) read only when has_bias; Z_out
    (n, out), when given, receives the pre-activation X W + b."""
    cdef Py_ssize_t n = X.shape[0], n_in = X.shape[1], n_out = W.shape[1]
    if n == 0 or n_out == 0:
        return
    cdef const floating *Xp = &X[0, 0] if n_in > 0 else NULL
    cdef const floating *Wp = &W[0, 0] if n_in > 0 else NULL
    cdef const floating *bp = &b[0] if has_bias else NULL
    cdef floating *Yp = &Y_out[0, 0]
    cdef floating *Zp = NULL if Z_out is None else &Z_out[0, 0]
    with nogil:
        _forward(Xp, Wp, bp, Yp, Zp, n, n_in, n_out, code, n_threads)


def forward_layer(X, W, b, Y, int code, int n_threads, Z=None):
    """The Dense module's entry: Y = act(X W + b) and True, when X (n, in), W (in, out),
    b (out,) or None and Y (n, out) are aligned C-contiguous ndarrays of one float dtype, Y
    writeable and overlapping none of them; otherwise False, and nothing is computed. Z, when
    not None, receives the pre-activation X W + b (an array like Y, overlapping no other)."""
    cdef int t = A.float_type(W)
    cdef Py_ssize_t n, n_in, n_out
    if t < 0 or not (A.c_array(W, t, 2, False) and A.c_array(X, t, 2, False)
                     and A.c_array(Y, t, 2, True)):
        return False
    n, n_in, n_out = A.dim(X, 0), A.dim(W, 0), A.dim(W, 1)
    if A.dim(X, 1) != n_in or A.dim(Y, 0) != n or A.dim(Y, 1) != n_out:
        return False
    if n > INT_MAX or n_in > INT_MAX or n_out > INT_MAX:
        return False    # (BLAS sizes are ints: the validating path raises)
    if b is not None and not (A.c_array(b, t, 1, False) and A.dim(b, 0) == n_out):
        return False
    if A.overlap(Y, X) or A.overlap(Y, W) or (b is not None and A.overlap(Y, b)):
        return False
    if Z is not None and not (A.c_array(Z, t, 2, True) and A.dim(Z, 0) == n
                              and A.dim(Z, 1) == n_out and not A.overlap(Z, X)
                              and not A.overlap(Z, W) and not A.overlap(Z, Y)
                              and not (b is not None and A.overlap(Z, b))):
        return False
    cdef void *Xp = A.data(X)
    cdef void *Wp = A.data(W)
    cdef void *bp = NULL if b is None else A.data(b)
    cdef void *Yp = A.data(Y)
    cdef void *Zp = NULL if Z is None else A.data(Z)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _forward(<const float *> Xp, <const float *> Wp, <const float *> bp, <float *> Yp,
                     <float *> Zp, n, n_in, n_out, code, n_threads)
        else:
            _forward(<const double *> Xp, <const double *> Wp, <const double *> bp,
                     <double *> Yp, <double *> Zp, n, n_in, n_out, code, n_threads)
    return True


cdef void _grad_z_block(const floating *Y, const floating *G, floating *dZ, double *acc,
                        floating *db, bint accumulate, int code, Py_ssize_t n,
                        Py_ssize_t n_out, Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """dZ[:, j0:j1] = G * act'(Y) and db[j0:j1] (+)= column sums of dZ (double accumulators)."""
    cdef Py_ssize_t i, j
    if j1 <= j0:
        return
    for i in range(n):
        if dZ != G or code != ACT_IDENTITY:
            act_grad_row(code, dZ + i * n_out + j0, Y + i * n_out + j0, G + i * n_out + j0,
                         j1 - j0)
    if db == NULL:
        return
    for j in range(j0, j1):
        acc[j] = 0
    for i in range(n):
        for j in range(j0, j1):
            acc[j] += dZ[i * n_out + j]
    for j in range(j0, j1):
        if accumulate:
            db[j] = <floating> (db[j] + acc[j])
        else:
            db[j] = <floating> acc[j]


cdef void _grad_w_block(const floating *X, const floating *dZ, floating *dW, bint accumulate,
                        Py_ssize_t n, Py_ssize_t n_in, Py_ssize_t n_out,
                        Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """dW[r0:r1, j0:j1] (+)= X[:, r0:r1]^T dZ[:, j0:j1]."""
    if r1 <= r0 or j1 <= j0:
        return
    gemm(True, False, <int> (r1 - r0), <int> (j1 - j0), <int> n, <floating> 1,
         X + r0, <int> n_in, dZ + j0, <int> n_out, <floating> (1 if accumulate else 0),
         dW + r0 * n_out + j0, <int> n_out)


cdef void _grad_x_block(const floating *dZ, const floating *W, floating *dX,
                        Py_ssize_t n_in, Py_ssize_t n_out,
                        Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t k0, Py_ssize_t k1) noexcept nogil:
    """dX[i0:i1, k0:k1] = dZ[i0:i1] W[k0:k1]^T."""
    if i1 <= i0 or k1 <= k0:
        return
    cdef Py_ssize_t i
    if i1 - i0 == 1 or (i1 - i0 <= GEMV_MAX_ROWS and k1 - k0 >= 64):
        for i in range(i0, i1):
            gemv(False, <int> (k1 - k0), <int> n_out, <floating> 1, W + k0 * n_out,
                 <int> n_out, dZ + i * n_out, 1, <floating> 0, dX + i * n_in + k0, 1)
    else:
        gemm(False, True, <int> (i1 - i0), <int> (k1 - k0), <int> n_out, <floating> 1,
             dZ + i0 * n_out, <int> n_out, W + k0 * n_out, <int> n_out, <floating> 0,
             dX + i0 * n_in + k0, <int> n_in)


cdef void _backward(const floating *Xp, const floating *Wp, const floating *Yp,
                    const floating *Gp, floating *dZ, floating *dXp, floating *dWp,
                    floating *dbp, double *accp, Py_ssize_t n, Py_ssize_t n_in, Py_ssize_t n_out,
                    int code, bint accumulate, int n_threads) noexcept nogil:
    """Backward of Y = act(X W + b) on raw C-order arrays: dZ = G * act'(Y) (Yp is the
    pre-activation instead of Y for the activations whose derivative needs it; dZ may be G;
    for the identity dZ is G and is not written), dW (+)= X^T dZ, db (+)= column sums of dZ
    when dbp is not NULL (accp: n_out float64), dX = dZ W^T when dXp is not NULL. Pointers of
    empty arrays may be NULL."""
    global _last_path
    cdef Py_ssize_t t, i, j
    cdef int path, nb
    cdef bint dw_by_cols, dx_by_rows
    cdef bint need_grad_X = dXp != NULL
    if n_in == 0 and n_out == 0:
        return
    if n == 0:
        # Empty batch: the gradients of the parameters are zero sums.
        if not accumulate:
            for i in range(n_in * n_out):
                dWp[i] = 0
            if dbp != NULL:
                for j in range(n_out):
                    dbp[j] = 0
        return

    # Work of the two GEMMs together.
    path = _choose_path(<double> n * n_in * n_out * (2 if need_grad_X else 1), n_threads)
    dw_by_cols = n_out >= 16 * n_threads
    dx_by_rows = n >= 2 * n_threads
    if path == 1 and not (dw_by_cols or n_in >= 2 * n_threads):
        path = 2
    _last_path = path
    if path == 1:
        nb = n_threads
        blas_request(1)
        # Region 1: each thread owns a block of output columns (or of weight rows):
        # its part of dZ and db, then its block of dW while dZ's block is in cache.
        if dw_by_cols:
            for t in prange(nb, schedule='static', num_threads=nb):
                _grad_z_block(Yp, Gp, dZ, accp, dbp, accumulate, code, n, n_out,
                              _split(n_out, nb, t, 16), _split(n_out, nb, t + 1, 16))
                _grad_w_block(Xp, dZ, dWp, accumulate, n, n_in, n_out, 0, n_in,
                              _split(n_out, nb, t, 16), _split(n_out, nb, t + 1, 16))
        else:
            _grad_z_block(Yp, Gp, dZ, accp, dbp, accumulate, code, n, n_out, 0, n_out)
            for t in prange(nb, schedule='static', num_threads=nb):
                _grad_w_block(Xp, dZ, dWp, accumulate, n, n_in, n_out,
                              _split(n_in, nb, t, 1), _split(n_in, nb, t + 1, 1), 0, n_out)
        # Region 2: dX needs all of dZ.
        if need_grad_X:
            for t in prange(nb, schedule='static', num_threads=nb):
                if dx_by_rows:
                    _grad_x_block(dZ, Wp, dXp, n_in, n_out,
                                  _split(n, nb, t, 1), _split(n, nb, t + 1, 1), 0, n_in)
                else:
                    _grad_x_block(dZ, Wp, dXp, n_in, n_out, 0, n,
                                  _split(n_in, nb, t, 16), _split(n_in, nb, t + 1, 16))
        blas_release(1)
        return

    if path == 2 and n * n_out >= EPILOGUE_PAR_MIN and n_out >= 16 * n_threads:
        nb = n_threads
        for t in prange(nb, schedule='static', num_threads=nb):
            _grad_z_block(Yp, Gp, dZ, accp, dbp, accumulate, code, n, n_out,
                          _split(n_out, nb, t, 16), _split(n_out, nb, t + 1, 16))
    else:
        _grad_z_block(Yp, Gp, dZ, accp, dbp, accumulate, code, n, n_out, 0, n_out)
    blas_request(n_threads if path == 2 else 1)
    _grad_w_block(Xp, dZ, dWp, accumulate, n, n_in, n_out, 0, n_in, 0, n_out)
    if need_grad_X:
        _grad_x_block(dZ, Wp, dXp, n_in, n_out, 0, n, 0, n_in)
    blas_release(n_threads if path == 2 else 1)


def dense_backward(const floating[:, ::1] X, const floating[:, ::1] W,
                   const floating[:, ::1] Y, const floating[:, ::1] grad_Y,
                   floating[:, ::1] dZ_buf, floating[:, ::1] grad_X_out,
                   floating[:, ::1] grad_W_out, floating[::1] grad_b_out,
                   double[::1] acc_buf, int code, bint need_grad_X, bint need_grad_b,
                   bint accumulate, int n_threads):
    """Backward of Y = act(X W + b) given grad_Y.

    dZ = grad_Y * act'(from Y) goes to dZ_buf (ignored for the identity: dZ is grad_Y; dZ_buf
    may be grad_Y's own buffer), grad_W_out (+)= X^T dZ, grad_b_out (+)= column sums of dZ
    (acc_buf: float64 scratch of length out), grad_X_out = dZ W^T when need_grad_X.
    """
    cdef Py_ssize_t n = X.shape[0], n_in = X.shape[1], n_out = W.shape[1]
    if n_in == 0 and n_out == 0:
        return
    cdef const floating *Xp = &X[0, 0] if n * n_in > 0 else NULL
    cdef const floating *Wp = &W[0, 0] if n_in * n_out > 0 else NULL
    cdef const floating *Yp = &Y[0, 0] if n * n_out > 0 else NULL
    cdef const floating *Gp = &grad_Y[0, 0] if n * n_out > 0 else NULL
    cdef floating *dZ = <floating *> Gp if code == ACT_IDENTITY else (
        &dZ_buf[0, 0] if n * n_out > 0 else NULL)
    cdef floating *dXp = &grad_X_out[0, 0] if need_grad_X and n * n_in > 0 else NULL
    cdef floating *dWp = &grad_W_out[0, 0] if n_in * n_out > 0 else NULL
    cdef floating *dbp = &grad_b_out[0] if need_grad_b and n_out > 0 else NULL
    cdef double *accp = &acc_buf[0] if need_grad_b and n_out > 0 else NULL
    with nogil:
        _backward(Xp, Wp, Yp, Gp, dZ, dXp, dWp, dbp, accp, n, n_in, n_out, code, accumulate,
                  n_threads)


def backward_layer(X, W, Y, G, dZ, gX, Wg, bg, acc, int code, bint accumulate, int n_threads):
    """The Dense module's entry for the backward of Y = act(X W + b) given G = dL/dY.

    dZ = G * act'(Y) goes to dZ, or over G when dZ is None (for the identity dZ is G and
    nothing is written there); Wg (+)= X^T dZ; bg (+)= column sums of dZ (acc: float64
    scratch of length out); gX = dZ W^T. gX and bg may be None (not computed). Returns True
    when done; False, computing nothing, unless every array is an aligned C-contiguous ndarray
    of W's dtype (acc float64) with the layer's shapes, and every array written is writeable
    and overlaps no other argument.
    """
    cdef int t = A.float_type(W)
    cdef Py_ssize_t n, n_in, n_out
    cdef bint writes_G = dZ is None and code != ACT_IDENTITY
    if t < 0 or not (A.c_array(W, t, 2, False) and A.c_array(X, t, 2, False)
                     and A.c_array(Y, t, 2, False) and A.c_array(G, t, 2, writes_G)
                     and A.c_array(Wg, t, 2, True)):
        return False
    n, n_in, n_out = A.dim(X, 0), A.dim(W, 0), A.dim(W, 1)
    if (A.dim(X, 1) != n_in or A.dim(Y, 0) != n or A.dim(Y, 1) != n_out
            or A.dim(G, 0) != n or A.dim(G, 1) != n_out
            or A.dim(Wg, 0) != n_in or A.dim(Wg, 1) != n_out):
        return False
    if n > INT_MAX or n_in > INT_MAX or n_out > INT_MAX:
        return False    # (BLAS sizes are ints: the validating path raises)
    if dZ is not None and not (A.c_array(dZ, t, 2, True) and A.dim(dZ, 0) == n
                               and A.dim(dZ, 1) == n_out):
        return False
    if gX is not None and not (A.c_array(gX, t, 2, True) and A.dim(gX, 0) == n
                               and A.dim(gX, 1) == n_in):
        return False
    if bg is not None and not (A.c_array(bg, t, 1, True) and A.dim(bg, 0) == n_out
                               and A.c_array(acc, cnp.NPY_FLOAT64, 1, True)
                               and A.dim(acc, 0) == n_out):
        return False
    # Every written array against every other argument (the same object passed twice is an
    # overlap too).
    args = (X, W, Y, G, dZ, gX, Wg, bg, acc if bg is not None else None)
    cdef int i, j
    for i in range(3, 9):
        if args[i] is None or (i == 3 and not writes_G):
            continue
        for j in range(9):
            if j != i and args[j] is not None and A.overlap(args[i], args[j]):
                return False
    cdef void *Xp = A.data(X)
    cdef void *Wp = A.data(W)
    cdef void *Yp = A.data(Y)
    cdef void *Gp = A.data(G)
    cdef void *dZp = Gp if dZ is None or code == ACT_IDENTITY else A.data(dZ)
    cdef void *dXp = NULL if gX is None else A.data(gX)
    cdef void *dWp = A.data(Wg)
    cdef void *dbp = NULL if bg is None else A.data(bg)
    cdef double *accp = NULL if bg is None else <double *> A.data(acc)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _backward(<const float *> Xp, <const float *> Wp, <const float *> Yp,
                      <const float *> Gp, <float *> dZp, <float *> dXp, <float *> dWp,
                      <float *> dbp, accp, n, n_in, n_out, code, accumulate, n_threads)
        else:
            _backward(<const double *> Xp, <const double *> Wp, <const double *> Yp,
                      <const double *> Gp, <double *> dZp, <double *> dXp, <double *> dWp,
                      <double *> dbp, accp, n, n_in, n_out, code, accumulate, n_threads)
    return True
