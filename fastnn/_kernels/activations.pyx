# Design: standalone activations and their derivatives over a flat (contiguous) array. The
# element functions live in _activations.pxd (shared with the dense epilogue); here the array is
# cut into one contiguous block per thread (block edges on 16-element = 64-byte boundaries, so no
# two threads write one cache line) and each block is one vectorized row loop. Below a measured
# size the loop runs serially on the calling thread. The result never depends on n_threads.
from cython cimport floating
from cython.parallel cimport prange

from fastnn._kernels._activations cimport (
    act_row, act_grad_row, act_needs_z, ACT_IDENTITY, ACT_SIGMOID, ACT_TANH, ACT_RELU,
    ACT_STEP, ACT_SIGN, ACT_LEAKY_RELU, ACT_ELU, ACT_SOFTPLUS, ACT_GELU, ACT_GELU_TANH,
    ACT_SILU)
from fastnn._kernels._config import check_threshold

#: Kernel code of each activation (canonical names; aliases live in fastnn.functional).
CODES = {"identity": ACT_IDENTITY, "sigmoid": ACT_SIGMOID, "tanh": ACT_TANH,
         "relu": ACT_RELU, "step": ACT_STEP, "sign": ACT_SIGN, "leaky_relu": ACT_LEAKY_RELU,
         "elu": ACT_ELU, "softplus": ACT_SOFTPLUS, "gelu": ACT_GELU, "gelu_tanh": ACT_GELU_TANH,
         "silu": ACT_SILU}


def needs_z(int code):
    """True when the derivative of activation ``code`` is computed from the pre-activation."""
    return act_needs_z(code)

# Smallest number of elements worth an OpenMP team, by cost class. Rule: two threads pay once
# the serial loop takes about twice a wake-up of the team; each threshold is the smallest size
# from which benchmarks/bench_parallel_thresholds.py measures the 2-thread loop faster (numbers:
# benchmarks/README.md, "Parallel thresholds"). Cheap passes (a compare or a multiply) need 8x
# the elements of transcendental ones.
# Serial and parallel loops are written twice on purpose: prange(..., use_threads_if=False) still
# opens a one-thread OpenMP region, a fixed cost per call that small calls (the usual case in
# training) would pay (benchmarks/omp_region_cost.c; numbers in benchmarks/README.md, "Parallel
# thresholds").
cdef Py_ssize_t PAR_MIN_CHEAP = 262144
cdef Py_ssize_t PAR_MIN_TRANSCENDENTAL = 32768


def parallel_thresholds():
    """This module's parallel thresholds (elements): ``cheap_min_elements`` (identity, relu,
    step, sign, leaky relu, and every derivative read from the output) and
    ``transcendental_min_elements`` (the others)."""
    return {"cheap_min_elements": PAR_MIN_CHEAP,
            "transcendental_min_elements": PAR_MIN_TRANSCENDENTAL}


def set_parallel_threshold(name, value):
    """Set parallel threshold ``name`` (see parallel_thresholds); returns the previous value."""
    global PAR_MIN_CHEAP, PAR_MIN_TRANSCENDENTAL
    current = parallel_thresholds()
    value = check_threshold("activations", current, name, value)
    if name == "cheap_min_elements":
        PAR_MIN_CHEAP = value
    else:
        PAR_MIN_TRANSCENDENTAL = value
    return current[name]


cdef inline int _n_blocks(int code, Py_ssize_t n, int n_threads) noexcept nogil:
    cdef Py_ssize_t threshold = PAR_MIN_TRANSCENDENTAL
    if code == ACT_IDENTITY or code == ACT_RELU or code == ACT_STEP or code == ACT_SIGN \
            or code == ACT_LEAKY_RELU:
        threshold = PAR_MIN_CHEAP
    if n_threads <= 1 or n < threshold or n < 32:
        return 1
    return n_threads


cdef inline Py_ssize_t _block_start(Py_ssize_t n, int n_blocks, Py_ssize_t t) noexcept nogil:
    cdef Py_ssize_t chunk = (n + n_blocks - 1) // n_blocks
    chunk = (chunk + 15) // 16 * 16
    return min(n, t * chunk)


def activation_forward(const floating[::1] z, floating[::1] y_out, int code, int n_threads):
    """y_out = act(z) elementwise (y_out may be z's buffer)."""
    cdef Py_ssize_t n = z.shape[0], t, s, e
    cdef int nb = _n_blocks(code, n, n_threads)
    if n == 0:
        return
    cdef const floating *zp = &z[0]
    cdef floating *yp = &y_out[0]
    if nb == 1:
        with nogil:
            act_row(code, yp, zp, <const floating *> NULL, n)
        return
    for t in prange(nb, nogil=True, schedule='static', num_threads=nb):
        s = _block_start(n, nb, t)
        e = _block_start(n, nb, t + 1)
        if e > s:
            act_row(code, yp + s, zp + s, <const floating *> NULL, e - s)


def activation_backward(const floating[::1] y, const floating[::1] grad_y,
                        floating[::1] grad_z_out, int code, int n_threads):
    """grad_z_out = grad_y * act'(z), the derivative computed from y = act(z), or from z itself
    (passed as y) when needs_z(code)."""
    cdef Py_ssize_t n = y.shape[0], t, s, e
    # The derivatives read from y are cheap passes; those read from z are transcendental.
    cdef int nb = _n_blocks(code if act_needs_z(code) else ACT_RELU, n, n_threads)
    if n == 0:
        return
    cdef const floating *yp = &y[0]
    cdef const floating *gp = &grad_y[0]
    cdef floating *op = &grad_z_out[0]
    if nb == 1:
        with nogil:
            act_grad_row(code, op, yp, gp, n)
        return
    for t in prange(nb, nogil=True, schedule='static', num_threads=nb):
        s = _block_start(n, nb, t)
        e = _block_start(n, nb, t + 1)
        if e > s:
            act_grad_row(code, op + s, yp + s, gp + s, e - s)
