# Design: dropout with a counter-based mask. Element i of the flat (C-order) array is kept iff
# a 32-bit word drawn from hash(seed, i) is >= threshold = floor(p * 2^32): the mask is a pure
# function of (seed, p, i), so it is identical for any n_threads and any block split, and the
# backward pass regenerates it from the seed instead of storing it (no mask memory, one fused
# pass). The hash is SplitMix64's output function applied to key + (i // 2) * golden_gamma with
# key = mix64(seed ^ salt); the high word serves even i, the low word odd i (one 64-bit hash per
# two elements). Pre-mixing the seed keeps two seeds from giving shifted copies of one stream.
# y = x * (keep ? scale : 0): a dropped NaN stays NaN, like NumPy's X * mask.
# The Dropout module calls dropout_layer (arguments checked in C, see _arrays.pxd; the call seed
# of its t-th forward from call_seed), the functional API dropout_apply; both run _run.
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport uint64_t, uint32_t, uint8_t
cimport numpy as cnp

cimport fastnn._kernels._arrays as A   # this form: cythonize rebuilds on a change of _arrays.pxd
from fastnn._kernels._config import check_threshold

cnp.import_array()

cdef extern from *:
    """
    #include <stdint.h>
    static inline uint64_t fastnn_mix64(uint64_t z) {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    """
    uint64_t fastnn_mix64(uint64_t z) noexcept nogil

cdef uint64_t GAMMA = 0x9E3779B97F4A7C15ULL
cdef uint64_t SALT = 0x5DEECE66DA3B1F27ULL

# Elements per call below which the pass runs serially: the rule and benchmark of activations.pyx
# (benchmarks/bench_parallel_thresholds.py); the hash pass costs about as much per element as a
# transcendental activation, and shares its threshold.
# Serial and parallel loops are written twice on purpose: prange(..., use_threads_if=False) still
# opens a one-thread OpenMP region, a fixed cost per call that small calls (the usual case in
# training) would pay (benchmarks/omp_region_cost.c; numbers in benchmarks/README.md, "Parallel
# thresholds").
cdef Py_ssize_t PAR_MIN = 32768


def parallel_thresholds():
    """This module's parallel threshold: ``min_elements``."""
    return {"min_elements": PAR_MIN}


def set_parallel_threshold(name, value):
    """Set parallel threshold ``name`` (see parallel_thresholds); returns the previous value."""
    global PAR_MIN
    current = parallel_thresholds()
    PAR_MIN = check_threshold("dropout", current, name, value)
    return current[name]


def key_from_seed(uint64_t seed):
    """The per-call hash key derived from a seed."""
    return fastnn_mix64(seed ^ SALT)


cdef inline uint32_t _keep_threshold(double p) noexcept nogil:
    # keep iff word >= floor(p * 2^32); p < 1 keeps this below 2^32.
    return <uint32_t> min(<uint64_t> (p * 4294967296.0), <uint64_t> 4294967295)


def keep_threshold(double p):
    """The threshold of drop probability p in [0, 1): floor(p * 2^32)."""
    return _keep_threshold(p)


cdef inline uint64_t _splitmix64(uint64_t x) noexcept nogil:
    return fastnn_mix64(x + GAMMA)


def call_seed(uint64_t seed, uint64_t t):
    """The seed of a Dropout module's t-th training forward from its base seed (mod 2^64):
    splitmix64(splitmix64(seed) ^ t) >> 1; two rounds decorrelate consecutive calls."""
    return _splitmix64(_splitmix64(seed) ^ t) >> 1


cdef inline Py_ssize_t _block_start(Py_ssize_t n, int n_blocks, Py_ssize_t t) noexcept nogil:
    cdef Py_ssize_t chunk = (n + n_blocks - 1) // n_blocks
    chunk = (chunk + 15) // 16 * 16
    return min(n, t * chunk)


cdef void _apply_block(const floating *x, floating *y, uint8_t *mask, uint64_t key,
                       uint32_t threshold, floating scale, Py_ssize_t s,
                       Py_ssize_t e) noexcept nogil:
    """y[i] = x[i] * (keep(i) ? scale : 0) and/or mask[i] = keep(i), i in [s, e), s even."""
    cdef Py_ssize_t k, i
    cdef uint64_t h
    cdef uint32_t hi, lo
    cdef floating zero = 0
    if threshold == 0 and mask == NULL:
        for i in range(s, e):
            y[i] = x[i] * scale
        return
    for k in range(s >> 1, e >> 1):
        h = fastnn_mix64(key + <uint64_t> k * GAMMA)
        hi = <uint32_t> (h >> 32)
        lo = <uint32_t> h
        i = 2 * k
        if y != NULL:
            y[i] = x[i] * (scale if hi >= threshold else zero)
            y[i + 1] = x[i + 1] * (scale if lo >= threshold else zero)
        if mask != NULL:
            mask[i] = hi >= threshold
            mask[i + 1] = lo >= threshold
    if e & 1:
        i = e - 1
        h = fastnn_mix64(key + <uint64_t> (i >> 1) * GAMMA)
        hi = <uint32_t> (h >> 32)
        if y != NULL:
            y[i] = x[i] * (scale if hi >= threshold else zero)
        if mask != NULL:
            mask[i] = hi >= threshold


cdef void _run(const floating *x, floating *y, uint8_t *mask, uint64_t key, uint32_t threshold,
               floating scale, Py_ssize_t n, int n_threads) noexcept nogil:
    cdef Py_ssize_t t, s, e
    cdef int nb = n_threads if (n_threads > 1 and n >= PAR_MIN and n >= 32) else 1
    if nb == 1:
        _apply_block(x, y, mask, key, threshold, scale, 0, n)
        return
    for t in prange(nb, schedule='static', num_threads=nb):
        s = _block_start(n, nb, t)
        e = _block_start(n, nb, t + 1)
        if e > s:
            _apply_block(x, y, mask, key, threshold, scale, s, e)


def dropout_apply(const floating[::1] x, floating[::1] y_out, uint64_t key, uint32_t threshold,
                  double scale, int n_threads):
    """y_out[i] = x[i] * scale where element i is kept, 0 * x[i] where dropped.

    threshold = floor(p * 2^32); threshold 0 keeps everything (then this is y = scale * x).
    Serves forward (x = X) and backward (x = grad_Y) alike: same key, same mask.
    """
    cdef Py_ssize_t n = x.shape[0]
    if n == 0:
        return
    with nogil:
        _run(&x[0], &y_out[0], NULL, key, threshold, <floating> scale, n, n_threads)


def dropout_mask_fill(uint8_t[::1] mask_out, uint64_t key, uint32_t threshold, int n_threads):
    """mask_out[i] = 1 if element i is kept else 0."""
    cdef Py_ssize_t n = mask_out.shape[0]
    if n == 0:
        return
    with nogil:
        _run(<const float *> NULL, <float *> NULL, &mask_out[0], key, threshold, 1.0, n,
             n_threads)


def dropout_layer(x, out, uint64_t seed, double p, bint inverted, int n_threads):
    """The Dropout module's entry: out = x * mask (kept units scaled by 1/(1-p) when inverted)
    for the call seed ``seed``, returning True; False, computing nothing, unless x and out are
    aligned C-contiguous ndarrays of one float dtype and shape, out writeable and either x
    itself or disjoint from it. The same mask as dropout_apply(x, out, key_from_seed(seed),
    floor(p * 2^32), scale)."""
    cdef int t = A.float_type(x)
    cdef Py_ssize_t n
    if t < 0 or not (0.0 <= p < 1.0):
        return False
    cdef double scale = 1.0 / (1.0 - p) if inverted else 1.0
    cdef uint64_t key = fastnn_mix64(seed ^ SALT)
    cdef uint32_t threshold = _keep_threshold(p)
    if not (A.c_array(x, t, cnp.PyArray_NDIM(<cnp.ndarray> x), False)
            and A.c_array(out, t, cnp.PyArray_NDIM(<cnp.ndarray> x), True)
            and A.same_shape(x, out)):
        return False
    cdef void *xp = A.data(x)
    cdef void *yp = A.data(out)
    if xp != yp and A.overlap(x, out):
        return False
    n = cnp.PyArray_SIZE(<cnp.ndarray> x)
    if n == 0:
        return True
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _run(<const float *> xp, <float *> yp, NULL, key, threshold, <float> scale, n,
                 n_threads)
        else:
            _run(<const double *> xp, <double *> yp, NULL, key, threshold, scale, n, n_threads)
    return True
