# Design: losses and their gradients with respect to the output pre-activation z, one row
# (sample) at a time, fused: the per-sample loss goes to a float64 array (the wrapper reduces it
# in a fixed order, so the value does not depend on the thread count) and, when need_grad, the
# gradient of `scale * loss` goes to grad_out in the same pass (scale = 1/n for a mean).
# The softmax and sparsemax row routines are cimported from softmax.pxd / sparsemax.pxd, not
# repeated here. Everything accumulates in double. Sparsemax losses use the shift-stable forms
#   single label y:  1/2 ||p - e_y||^2 + max(tau - z_y, 0)
#   distribution q:  1/2 ||p - q||^2 + sum_j q_j max(tau - z_j, 0)
# (equal to the paper's -<q, z> + 1/2 sum_{j in S}(z_j^2 - tau^2) + 1/2 ||q||^2, but never
# negative and never squaring z; tau and z in coordinates shifted by max(z)).
# cross_entropy_labels_layer is CrossEntropyLoss's per-batch entry (arguments and the label
# range checked in C, see _arrays.pxd); it runs the same rows as cross_entropy_labels.
from libc.math cimport fabs, log, log1p
from libc.stdlib cimport malloc, free
from cython cimport floating
from fastnn._kernels._openmp cimport row_threads
from cython.parallel cimport parallel, prange
cimport numpy as cnp

cimport fastnn._kernels._arrays as A   # this form: cythonize rebuilds on a change of _arrays.pxd

from fastnn._kernels.softmax cimport softmax_row, fnn_exp_d, cross_entropy_prob_row
from fastnn._kernels.sparsemax cimport sparsemax_loss_row
from fastnn._kernels._config import check_threshold

cnp.import_array()

# Below this many elements (n_rows * n_cols) the rows run on the calling thread: the threshold of
# softmax.pyx/sparsemax.pyx, whose row routines these rows run (benchmarks/
# bench_parallel_thresholds.py, "cross_entropy").
# Serial and parallel loops are written twice on purpose: prange(..., use_threads_if=False) still
# opens a one-thread OpenMP region, a fixed cost per call that small calls (the usual case in
# training) would pay (benchmarks/omp_region_cost.c; numbers in benchmarks/README.md, "Parallel
# thresholds").
PARALLEL_MIN_ELEMENTS = 262144
cdef Py_ssize_t _PAR_MIN = PARALLEL_MIN_ELEMENTS


def parallel_thresholds():
    """This module's parallel threshold: ``min_elements`` (rows x columns)."""
    return {"min_elements": _PAR_MIN}


def set_parallel_threshold(name, value):
    """Set parallel threshold ``name`` (see parallel_thresholds); returns the previous value."""
    global _PAR_MIN
    current = parallel_thresholds()
    _PAR_MIN = check_threshold("losses", current, name, value)
    return current[name]


# ---------------------------------------------------------------- cross-entropy (softmax) ---

cdef inline double _ce_label_row(const floating *z, Py_ssize_t y, floating *g, Py_ssize_t c,
                                 bint need_grad, double scale) noexcept nogil:
    cdef double m
    cdef double lse = log(softmax_row(z, g if need_grad else NULL, c, False, scale, &m))
    if need_grad:
        g[y] = <floating>(g[y] - scale)
    return lse - (<double>z[y] - m)


cdef void _ce_labels(const floating *Z, const Py_ssize_t *y, double *loss_out, floating *grad_out,
                     Py_ssize_t n, Py_ssize_t c, bint need_grad, double scale,
                     int n_threads) noexcept nogil:
    cdef Py_ssize_t i
    cdef int nt = row_threads(n, c, n_threads, _PAR_MIN)
    if nt == 1:
        for i in range(n):
            loss_out[i] = _ce_label_row(Z + i * c, y[i], grad_out + i * c if need_grad else NULL,
                                        c, need_grad, scale)
    else:
        for i in prange(n, schedule='static', num_threads=nt):
            loss_out[i] = _ce_label_row(Z + i * c, y[i], grad_out + i * c if need_grad else NULL,
                                        c, need_grad, scale)


def cross_entropy_labels(const floating[:, ::1] Z, const Py_ssize_t[::1] y,
                         double[::1] loss_out, floating[:, ::1] grad_out, bint need_grad,
                         double scale, int n_threads):
    """loss_out[i] = logsumexp(Z[i]) - Z[i, y[i]]; grad_out[i] = scale * (softmax(Z[i]) - e_y)."""
    cdef Py_ssize_t n = Z.shape[0], c = Z.shape[1]
    if n == 0:
        return
    with nogil:
        _ce_labels(&Z[0, 0], &y[0], &loss_out[0], &grad_out[0, 0] if need_grad else NULL,
                   n, c, need_grad, scale, n_threads)


def cross_entropy_labels_layer(Z, y, loss_out, grad_out, int n_threads):
    """The loss modules' entry: loss_out[i] = logsumexp(Z[i]) - Z[i, y[i]] and grad_out =
    (softmax(Z) - e_y) / n, returning True; False, computing nothing, unless Z (n >= 1, C) and
    grad_out are aligned C-contiguous ndarrays of one float dtype (grad_out writeable and not
    overlapping Z), y an intp (n,) array of labels in [0, C) and loss_out a float64 (n,) array
    overlapping neither."""
    cdef int t = A.float_type(Z)
    cdef Py_ssize_t n, c, i
    cdef const Py_ssize_t *yp
    if t < 0 or not (A.c_array(Z, t, 2, False) and A.c_array(grad_out, t, 2, True)
                     and A.c_array(y, cnp.NPY_INTP, 1, False)
                     and A.c_array(loss_out, cnp.NPY_FLOAT64, 1, True)):
        return False
    n, c = A.dim(Z, 0), A.dim(Z, 1)
    if (n == 0 or A.dim(grad_out, 0) != n or A.dim(grad_out, 1) != c or A.dim(y, 0) != n
            or A.dim(loss_out, 0) != n):
        return False
    if (A.overlap(grad_out, Z) or A.overlap(grad_out, y) or A.overlap(loss_out, Z)
            or A.overlap(loss_out, y) or A.overlap(loss_out, grad_out)):
        return False
    yp = <const Py_ssize_t *> A.data(y)
    for i in range(n):
        if yp[i] < 0 or yp[i] >= c:
            return False
    cdef void *Zp = A.data(Z)
    cdef void *gp = A.data(grad_out)
    cdef double *lp = <double *> A.data(loss_out)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _ce_labels(<const float *> Zp, yp, lp, <float *> gp, n, c, True, 1.0 / n, n_threads)
        else:
            _ce_labels(<const double *> Zp, yp, lp, <double *> gp, n, c, True, 1.0 / n,
                       n_threads)
    return True


def cross_entropy_probs(const floating[:, ::1] Z, const floating[:, ::1] Q,
                        double[::1] loss_out, floating[:, ::1] grad_out, bint need_grad,
                        double scale, int n_threads):
    """loss_out[i] = -sum_j Q_ij log softmax(Z[i])_j; grad = scale * (softmax * sum(Q_i) - Q_i)."""
    cdef Py_ssize_t n = Z.shape[0], c = Z.shape[1], i
    cdef int nt = row_threads(n, c, n_threads, _PAR_MIN)
    cdef floating *g = NULL
    if n == 0:
        return
    if nt == 1:
        with nogil:
            for i in range(n):
                g = &grad_out[i, 0] if need_grad else NULL
                loss_out[i] = cross_entropy_prob_row(&Z[i, 0], &Q[i, 0], g, c, need_grad, scale)
    else:
        for i in prange(n, nogil=True, schedule='static', num_threads=nt):
            g = &grad_out[i, 0] if need_grad else NULL
            loss_out[i] = cross_entropy_prob_row(&Z[i, 0], &Q[i, 0], g, c, need_grad, scale)


# ----------------------------------------------------------------------- binary logistic ---

cdef inline double _bce_elem(floating z, floating y, floating *g, bint need_grad,
                             double scale) noexcept nogil:
    cdef double zd = z, e = fnn_exp_d(-fabs(zd)), d
    if need_grad:
        # sigmoid(z) - y without cancellation: sigmoid(z) = 1 - e/(1+e) for z >= 0
        d = ((1.0 - <double>y) - e / (1.0 + e)) if zd >= 0 else (e / (1.0 + e) - <double>y)
        g[0] = <floating>(scale * d)
    # softplus(z) - y z, stable: max(z, 0) - y z + log(1 + exp(-|z|))
    return (zd if zd > 0 else 0.0) - <double>y * zd + log1p(e)


def binary_cross_entropy(const floating[::1] z, const floating[::1] y, double[::1] loss_out,
                         floating[::1] grad_out, bint need_grad, double scale, int n_threads):
    """loss_out[i] = log(1 + exp(z_i)) - y_i z_i; grad_out[i] = scale * (sigmoid(z_i) - y_i)."""
    cdef Py_ssize_t n = z.shape[0], i
    cdef int nt = row_threads(n, 1, n_threads, _PAR_MIN)
    if n == 0:
        return
    if nt == 1:
        with nogil:
            for i in range(n):
                loss_out[i] = _bce_elem(z[i], y[i], &grad_out[i] if need_grad else NULL,
                                        need_grad, scale)
    else:
        for i in prange(n, nogil=True, schedule='static', num_threads=nt):
            loss_out[i] = _bce_elem(z[i], y[i], &grad_out[i] if need_grad else NULL,
                                    need_grad, scale)


# -------------------------------------------------------------------------------- squared ---

cdef inline double _sq_row(const floating *f, const floating *y, floating *g, Py_ssize_t c,
                           bint need_grad, double scale) noexcept nogil:
    cdef double acc = 0.0, d
    cdef Py_ssize_t j
    for j in range(c):
        d = <double>f[j] - <double>y[j]
        acc += d * d
        if need_grad:
            g[j] = <floating>(scale * d)
    return 0.5 * acc


def squared_loss(const floating[:, ::1] F, const floating[:, ::1] Y, double[::1] loss_out,
                 floating[:, ::1] grad_out, bint need_grad, double scale, int n_threads):
    """loss_out[i] = 1/2 ||F[i] - Y[i]||^2; grad_out[i] = scale * (F[i] - Y[i])."""
    cdef Py_ssize_t n = F.shape[0], c = F.shape[1], i
    cdef int nt = row_threads(n, c, n_threads, _PAR_MIN)
    cdef floating *g = NULL
    if n == 0:
        return
    if c == 0:
        loss_out[:] = 0.0
        return
    if nt == 1:
        with nogil:
            for i in range(n):
                g = &grad_out[i, 0] if need_grad else NULL
                loss_out[i] = _sq_row(&F[i, 0], &Y[i, 0], g, c, need_grad, scale)
    else:
        for i in prange(n, nogil=True, schedule='static', num_threads=nt):
            g = &grad_out[i, 0] if need_grad else NULL
            loss_out[i] = _sq_row(&F[i, 0], &Y[i, 0], g, c, need_grad, scale)


# ------------------------------------------------------------------------- sparsemax loss ---

def sparsemax_loss(const floating[:, ::1] Z, const Py_ssize_t[::1] y, const floating[:, ::1] Q,
                   bint use_q, double[::1] loss_out, floating[:, ::1] grad_out, bint need_grad,
                   double scale, int n_threads):
    """Sparsemax loss per row, single-label (y) or with target distributions (rows of Q, used
    when use_q); grad_out[i] = scale * (sparsemax(Z[i]) - q_i). Scratch: n_cols doubles per
    thread, malloc'ed in the region (MemoryError raised after it if that fails)."""
    cdef Py_ssize_t n = Z.shape[0], c = Z.shape[1], i
    cdef int nt = row_threads(n, c, n_threads, _PAR_MIN)
    cdef int failed = 0
    cdef int *failed_p = &failed
    cdef double *scratch = NULL
    cdef floating *g = NULL
    if n == 0:
        return
    if nt == 1:
        scratch = <double *>malloc(c * sizeof(double))
        if scratch == NULL:
            raise MemoryError(f"sparsemax_loss: cannot allocate {c} doubles of scratch")
        try:
            with nogil:
                for i in range(n):
                    g = &grad_out[i, 0] if need_grad else NULL
                    loss_out[i] = sparsemax_loss_row(&Z[i, 0], 0 if use_q else y[i],
                                           &Q[i, 0] if use_q else NULL, g, c, need_grad, scale,
                                           scratch)
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
                        g = &grad_out[i, 0] if need_grad else NULL
                        loss_out[i] = sparsemax_loss_row(&Z[i, 0], 0 if use_q else y[i],
                                               &Q[i, 0] if use_q else NULL, g, c, need_grad,
                                               scale, scratch)
            finally:
                free(scratch)
        if failed:
            raise MemoryError(f"sparsemax_loss: cannot allocate {c} doubles of scratch per "
                              "thread")
