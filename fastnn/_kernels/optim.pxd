# Design: the per-chunk update functions of optim.pyx, declared so that other kernels (the
# training engine) apply exactly the optimizer's formulas to their own arrays instead of copying
# them. Each updates n contiguous elements in place: parameter w, gradient g and the state
# arrays the optimizer keeps (NULL where a variant has none). wd, l1 (subgradient) and l1p
# (proximal) are the penalty coefficients, 0 for parameters that are not regularized.
from cython cimport floating

cdef void _sgd_chunk(floating* w, const floating* g, floating* buf, Py_ssize_t n,
                     floating lr, floating mu, bint nesterov, floating wd, floating l1,
                     floating l1p) noexcept nogil
    # buf: the momentum buffer, NULL for plain SGD (momentum 0)

cdef void _adagrad_chunk(floating* w, const floating* g, floating* s, Py_ssize_t n,
                         floating lr, floating eps, floating wd, floating l1,
                         floating l1p) noexcept nogil

cdef void _rmsprop_chunk(floating* w, const floating* g, floating* v, floating* buf,
                         Py_ssize_t n, floating lr, floating alpha, floating one_m_alpha,
                         floating eps, floating mu,
                         floating wd, floating l1, floating l1p) noexcept nogil
    # v: the square average; buf: the momentum buffer, NULL without momentum

cdef void _adam_chunk(floating* w, const floating* g, floating* m, floating* v, Py_ssize_t n,
                      floating step_size, floating lr, floating beta1, floating beta2,
                      floating one_m_b1, floating one_m_b2, floating inv_sqrt_bc2, floating eps,
                      floating wd, floating l1, floating l1p) noexcept nogil
    # step_size = lr_t / (1 - beta1^t), inv_sqrt_bc2 = 1 / sqrt(1 - beta2^t)
