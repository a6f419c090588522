# Design: one optimizer step is ONE nogil call per parameter group. An UpdatePlan is built once
# (when the group first steps, or when a parameter's arrays are rebound): it keeps references to
# every parameter's data and gradient arrays and to the group's flat state buffers, and a table of
# chunks (raw addresses, state offset, length, regularize flag) of at most CHUNK elements. A step
# walks the chunks - serially, or with one prange over all chunks of the group when the group is
# large enough (PARALLEL_MIN_WORK) - and applies the fused elementwise update in one pass:
# gradient + L2 + L1 subgradient, state update, parameter update, proximal L1 soft-threshold. No
# temporaries, no Python objects in the loop, float32 math for float32 parameters.
# The float32 Adam loop, bound by its sqrt and division, also exists as a C twin built for SSE2
# and AVX2 and picked at load time (GCC target_clones; same operations, same bits).
#
# Subnormal flush: state values with |s| < FLT_MIN (float32) or DBL_MIN (float64) are stored as
# exact zeros. Moments of rarely active inputs otherwise decay (x0.9 per step for Adam's first
# moment) into subnormals, which x86 CPUs process far more slowly than normal numbers (numbers:
# benchmarks/README.md, "Parallel thresholds"). The flush is a compare-and-select in the
# vectorized loop; the process's floating-point mode
# (MXCSR FTZ/DAZ) is never touched. Effect on the update: a flushed first moment changes a step by
# less than lr * FLT_MIN / eps (~1e-33 for Adam's defaults), below the rounding of any weight
# larger than 1e-26.
cimport cython
from cython.parallel cimport prange
from libc.float cimport DBL_MIN, FLT_MIN
from libc.math cimport fabs, fabsf, sqrt, sqrtf
from libc.stdint cimport uint32_t, uint64_t
from cython cimport floating

import numpy as np
from fastnn._kernels._config import check_threshold

cdef extern from *:
    """
    #include <math.h>
    #include <float.h>
    /* The float32 Adam loop is bound by its square root and division: build it twice, for the
       SSE2 baseline and for AVX2 (8 floats a vector), and let the loader pick one at run time
       (GCC target_clones, an ifunc: Linux x86-64 only; elsewhere the baseline loop). Same
       operations in the same order as the Cython loops of this file and no FMA ("avx2" does not
       include -mfma), so both clones give the same bits. */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define FASTNN_OPTIM_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), optimize("no-trapping-math", "fp-contract=off")))
    #else
    #define FASTNN_OPTIM_CLONES
    #endif
    #define FASTNN_ADAM_F32_LOOP(L1_MODE)                                                   \
        for (i = 0; i < n; i++) {                                                          \
            float wi = w[i], gi = g[i] + wd * wi, mi, vi, d;                               \
            if (L1_MODE == 1)                                                              \
                gi = gi + l1 * ((wi > 0.0f ? 1.0f : 0.0f) - (wi < 0.0f ? 1.0f : 0.0f));    \
            mi = beta1 * m[i] + one_m_b1 * gi;                                             \
            mi = fabsf(mi) < FLT_MIN ? 0.0f : mi;                                          \
            vi = beta2 * v[i] + one_m_b2 * gi * gi;                                        \
            vi = fabsf(vi) < FLT_MIN ? 0.0f : vi;                                          \
            m[i] = mi;                                                                     \
            v[i] = vi;                                                                     \
            d = sqrtf(vi) * inv_sqrt_bc2 + eps;                                            \
            wi = wi - step_size * mi / d;                                                  \
            if (L1_MODE == 2) {                                                            \
                float thr = lr_l1p / d, c = wi < thr ? wi : thr;                           \
                c = c > -thr ? c : -thr;                                                   \
                wi = wi - c;                                                               \
            }                                                                              \
            w[i] = wi;                                                                     \
        }
    FASTNN_OPTIM_CLONES static void fastnn_adam_f32(
            float *w, const float *g, float *m, float *v, Py_ssize_t n, float step_size,
            float beta1, float beta2, float one_m_b1, float one_m_b2, float inv_sqrt_bc2,
            float eps, float wd, float l1, float lr_l1p, int l1_mode) {
        Py_ssize_t i;
        if (l1_mode == 2) { FASTNN_ADAM_F32_LOOP(2) }
        else if (l1_mode == 1) { FASTNN_ADAM_F32_LOOP(1) }
        else { FASTNN_ADAM_F32_LOOP(0) }
    }
    """
    void fastnn_adam_f32(float *w, const float *g, float *m, float *v, Py_ssize_t n,
                         float step_size, float beta1, float beta2, float one_m_b1,
                         float one_m_b2, float inv_sqrt_bc2, float eps, float wd, float l1,
                         float lr_l1p, int l1_mode) noexcept nogil


# Elements per chunk: 8192 float32 = 32 KiB per array, so a chunk's 3-4 arrays stay in L2 while
# it is updated, and a 784x256 weight splits into 25 chunks for the static schedule.
cdef enum:
    CHUNK = 8192

# A group runs serially unless n_elements * cost >= PARALLEL_MIN_WORK, where cost is the kernel's
# relative work per element (SGD 1; float32 Adam 2, through its AVX2 clone; Adagrad, RMSprop and
# float64 Adam 3: a sqrt and a division each in SSE2). Rule: the smallest work from which the
# 2-thread update is clearly faster than the serial one on a shared machine
# (benchmarks/bench_parallel_thresholds.py "adam", benchmarks/bench_optim.py; numbers in
# benchmarks/README.md, "Parallel thresholds"); a whole 784-256-256-10 network stays below it.
# Elementwise updates are exact, so serial and parallel runs give identical bits whatever the
# threshold. The serial and parallel chunk loops below are twins on purpose (see
# benchmarks/omp_region_cost.c: a prange with use_threads_if=False still opens a region).
cdef Py_ssize_t PARALLEL_MIN_WORK = 600000


def parallel_thresholds():
    """This module's parallel threshold: ``min_work`` (elements x the kernel's cost)."""
    return {"min_work": PARALLEL_MIN_WORK}


def set_parallel_threshold(name, value):
    """Set parallel threshold ``name`` (see parallel_thresholds); returns the previous value."""
    global PARALLEL_MIN_WORK
    current = parallel_thresholds()
    PARALLEL_MIN_WORK = check_threshold("optim", current, name, value)
    return current[name]


cdef inline floating _abs(floating x) noexcept nogil:
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef inline floating _flush(floating x) noexcept nogil:
    """x, or +0 when x is subnormal. Branch-free (vectorizes); NaN passes through."""
    cdef floating tiny
    if floating is float:
        tiny = FLT_MIN
    else:
        tiny = DBL_MIN
    return 0 if _abs(x) < tiny else x


cdef inline floating _sign(floating x) noexcept nogil:
    # selects of floating values, not (x > 0) - (x < 0): the int->double conversion keeps GCC
    # from vectorizing the float64 loops
    cdef floating one = 1, zero = 0
    return (one if x > 0 else zero) - (one if x < 0 else zero)


cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating _soft_threshold(floating w, floating thr) noexcept nogil:
    """prox of thr*|.| at w: sign(w) max(|w| - thr, 0) = w - clip(w, -thr, thr).

    Exact +0 for |w| <= thr (w - w), exact w -+ thr outside; min/max selects vectorize.
    """
    cdef floating c = w if w < thr else thr
    c = c if c > -thr else -thr
    return w - c


# ---------------------------------------------------------------------------------------------
# Elementwise updates of one chunk. wd, l1 are 0 for parameters that are not regularized; l1 is
# the subgradient coefficient (0 in proximal mode), l1p the proximal one (0 otherwise). Each
# update is an inline loop taking its variant (L1 mode: none / subgradient / proximal; momentum
# kind) as constant arguments, called once per variant, so the C compiler emits one branch-free
# vectorized loop per variant instead of branches per element (checked with -fopt-info-vec).
# ---------------------------------------------------------------------------------------------

cdef inline void _sgd_loop(floating* w, const floating* g, floating* buf, Py_ssize_t n,
                           floating lr, floating mu, floating wd, floating l1, floating thr,
                           const int kind, const int l1_mode) noexcept nogil:
    # kind: 0 plain, 1 momentum, 2 Nesterov; l1_mode: 0 none, 1 subgradient, 2 proximal
    cdef Py_ssize_t i
    cdef floating wi, gi, bi
    for i in range(n):
        wi = w[i]
        gi = g[i] + wd * wi
        if l1_mode == 1:
            gi = gi + l1 * _sign(wi)
        if kind == 0:
            wi = wi - lr * gi
        else:
            bi = _flush(mu * buf[i] + gi)
            buf[i] = bi
            if kind == 2:
                wi = wi - lr * (gi + mu * bi)
            else:
                wi = wi - lr * bi
        if l1_mode == 2:
            wi = _soft_threshold(wi, thr)
        w[i] = wi


cdef void _sgd_chunk(floating* w, const floating* g, floating* buf, Py_ssize_t n,
                     floating lr, floating mu, bint nesterov, floating wd, floating l1,
                     floating l1p) noexcept nogil:
    cdef floating thr = lr * l1p
    cdef int kind = 0 if buf == NULL else (2 if nesterov else 1)
    if kind == 0:
        if l1p != 0:
            _sgd_loop(w, g, buf, n, lr, mu, wd, l1, thr, 0, 2)
        elif l1 != 0:
            _sgd_loop(w, g, buf, n, lr, mu, wd, l1, thr, 0, 1)
        else:
            _sgd_loop(w, g, buf, n, lr, mu, wd, l1, thr, 0, 0)
    elif kind == 1:
        if l1p != 0:
            _sgd_loop(w, g, buf, n, lr, mu, wd, l1, thr, 1, 2)
        elif l1 != 0:
            _sgd_loop(w, g, buf, n, lr, mu, wd, l1, thr, 1, 1)
        else:
            _sgd_loop(w, g, buf, n, lr, mu, wd, l1, thr, 1, 0)
    else:
        if l1p != 0:
            _sgd_loop(w, g, buf, n, lr, mu, wd, l1, thr, 2, 2)
        elif l1 != 0:
            _sgd_loop(w, g, buf, n, lr, mu, wd, l1, thr, 2, 1)
        else:
            _sgd_loop(w, g, buf, n, lr, mu, wd, l1, thr, 2, 0)


cdef inline void _adagrad_loop(floating* w, const floating* g, floating* s, Py_ssize_t n,
                               floating lr, floating eps, floating wd, floating l1,
                               floating lr_l1p, const int l1_mode) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating wi, gi, si, d
    for i in range(n):
        wi = w[i]
        gi = g[i] + wd * wi
        if l1_mode == 1:
            gi = gi + l1 * _sign(wi)
        si = _flush(s[i] + gi * gi)
        s[i] = si
        d = _sqrt(si) + eps
        wi = wi - lr * gi / d
        if l1_mode == 2:
            wi = _soft_threshold(wi, lr_l1p / d)
        w[i] = wi


cdef void _adagrad_chunk(floating* w, const floating* g, floating* s, Py_ssize_t n,
                         floating lr, floating eps, floating wd, floating l1,
                         floating l1p) noexcept nogil:
    if l1p != 0:
        _adagrad_loop(w, g, s, n, lr, eps, wd, l1, lr * l1p, 2)
    elif l1 != 0:
        _adagrad_loop(w, g, s, n, lr, eps, wd, l1, lr * l1p, 1)
    else:
        _adagrad_loop(w, g, s, n, lr, eps, wd, l1, lr * l1p, 0)


cdef inline void _rmsprop_loop(floating* w, const floating* g, floating* v, floating* buf,
                               Py_ssize_t n, floating lr, floating alpha, floating one_m_alpha,
                               floating eps, floating mu, floating wd, floating l1,
                               floating lr_l1p, const int l1_mode) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating wi, gi, vi, bi, d
    for i in range(n):
        wi = w[i]
        gi = g[i] + wd * wi
        if l1_mode == 1:
            gi = gi + l1 * _sign(wi)
        vi = _flush(alpha * v[i] + one_m_alpha * gi * gi)
        v[i] = vi
        d = _sqrt(vi) + eps
        if buf == NULL:
            wi = wi - lr * gi / d
        else:
            bi = _flush(mu * buf[i] + gi / d)
            buf[i] = bi
            wi = wi - lr * bi
        if l1_mode == 2:
            wi = _soft_threshold(wi, lr_l1p / d)
        w[i] = wi


cdef void _rmsprop_chunk(floating* w, const floating* g, floating* v, floating* buf,
                         Py_ssize_t n, floating lr, floating alpha, floating one_m_alpha,
                         floating eps, floating mu,
                         floating wd, floating l1, floating l1p) noexcept nogil:
    cdef floating lr_l1p = lr * l1p
    if buf == NULL:
        if l1p != 0:
            _rmsprop_loop(w, g, v, <floating*>NULL, n, lr, alpha, one_m_alpha, eps, mu, wd, l1, lr_l1p, 2)
        elif l1 != 0:
            _rmsprop_loop(w, g, v, <floating*>NULL, n, lr, alpha, one_m_alpha, eps, mu, wd, l1, lr_l1p, 1)
        else:
            _rmsprop_loop(w, g, v, <floating*>NULL, n, lr, alpha, one_m_alpha, eps, mu, wd, l1, lr_l1p, 0)
    else:
        if l1p != 0:
            _rmsprop_loop(w, g, v, buf, n, lr, alpha, one_m_alpha, eps, mu, wd, l1, lr_l1p, 2)
        elif l1 != 0:
            _rmsprop_loop(w, g, v, buf, n, lr, alpha, one_m_alpha, eps, mu, wd, l1, lr_l1p, 1)
        else:
            _rmsprop_loop(w, g, v, buf, n, lr, alpha, one_m_alpha, eps, mu, wd, l1, lr_l1p, 0)


cdef inline void _adam_loop(floating* w, const floating* g, floating* m, floating* v,
                            Py_ssize_t n, floating step_size, floating beta1, floating beta2,
                            floating one_m_b1, floating one_m_b2, floating inv_sqrt_bc2,
                            floating eps, floating wd, floating l1, floating lr_l1p,
                            const int l1_mode) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating wi, gi, mi, vi, d
    for i in range(n):
        wi = w[i]
        gi = g[i] + wd * wi
        if l1_mode == 1:
            gi = gi + l1 * _sign(wi)
        mi = _flush(beta1 * m[i] + one_m_b1 * gi)
        vi = _flush(beta2 * v[i] + one_m_b2 * gi * gi)
        m[i] = mi
        v[i] = vi
        d = _sqrt(vi) * inv_sqrt_bc2 + eps
        wi = wi - step_size * mi / d
        if l1_mode == 2:
            wi = _soft_threshold(wi, lr_l1p / d)
        w[i] = wi


cdef void _adam_chunk(floating* w, const floating* g, floating* m, floating* v, Py_ssize_t n,
                      floating step_size, floating lr, floating beta1, floating beta2,
                      floating one_m_b1, floating one_m_b2, floating inv_sqrt_bc2, floating eps, floating wd, floating l1,
                      floating l1p) noexcept nogil:
    cdef int l1_mode = 2 if l1p != 0 else (1 if l1 != 0 else 0)
    if floating is float:
        # the runtime-dispatched (SSE2 / AVX2) C twin of _adam_loop
        fastnn_adam_f32(w, g, m, v, n, step_size, beta1, beta2, one_m_b1, one_m_b2,
                        inv_sqrt_bc2, eps, wd, l1, lr * l1p, l1_mode)
    elif l1_mode == 2:
        _adam_loop(w, g, m, v, n, step_size, beta1, beta2, one_m_b1, one_m_b2, inv_sqrt_bc2,
                   eps, wd, l1, lr * l1p, 2)
    elif l1_mode == 1:
        _adam_loop(w, g, m, v, n, step_size, beta1, beta2, one_m_b1, one_m_b2, inv_sqrt_bc2,
                   eps, wd, l1, lr * l1p, 1)
    else:
        _adam_loop(w, g, m, v, n, step_size, beta1, beta2, one_m_b1, one_m_b2, inv_sqrt_bc2,
                   eps, wd, l1, lr * l1p, 0)


# ---------------------------------------------------------------------------------------------
# Loops over the chunks of a group (serial below the threshold, one prange region above it).
# ---------------------------------------------------------------------------------------------

cdef struct Chunks:
    Py_ssize_t n
    Py_ssize_t* w        # address of the chunk's first parameter element
    Py_ssize_t* g        # address of the chunk's first gradient element
    Py_ssize_t* off      # offset of the chunk in the group's flat state buffers (elements)
    Py_ssize_t* length
    unsigned char* reg   # the parameter takes L1/L2 penalties


cdef inline floating* _state_ptr(char* base, Py_ssize_t off, floating x) noexcept nogil:
    if base == NULL:
        return NULL
    return (<floating*>base) + off


cdef void _sgd_all(Chunks c, char* s1, floating lr, floating mu, bint nesterov, floating wd,
                   floating l1, floating l1p, bint parallel, int n_threads) noexcept nogil:
    cdef Py_ssize_t k
    cdef floating z = 0
    if parallel:
        for k in prange(c.n, schedule='static', num_threads=n_threads):
            _sgd_chunk(<floating*>c.w[k], <const floating*>c.g[k], _state_ptr(s1, c.off[k], z),
                       c.length[k], lr, mu, nesterov, wd if c.reg[k] else z,
                       l1 if c.reg[k] else z, l1p if c.reg[k] else z)
    else:
        for k in range(c.n):
            _sgd_chunk(<floating*>c.w[k], <const floating*>c.g[k], _state_ptr(s1, c.off[k], z),
                       c.length[k], lr, mu, nesterov, wd if c.reg[k] else z,
                       l1 if c.reg[k] else z, l1p if c.reg[k] else z)


cdef void _adagrad_all(Chunks c, char* s1, floating lr, floating eps, floating wd, floating l1,
                       floating l1p, bint parallel, int n_threads) noexcept nogil:
    cdef Py_ssize_t k
    cdef floating z = 0
    if parallel:
        for k in prange(c.n, schedule='static', num_threads=n_threads):
            _adagrad_chunk(<floating*>c.w[k], <const floating*>c.g[k],
                           _state_ptr(s1, c.off[k], z), c.length[k], lr, eps,
                           wd if c.reg[k] else z, l1 if c.reg[k] else z, l1p if c.reg[k] else z)
    else:
        for k in range(c.n):
            _adagrad_chunk(<floating*>c.w[k], <const floating*>c.g[k],
                           _state_ptr(s1, c.off[k], z), c.length[k], lr, eps,
                           wd if c.reg[k] else z, l1 if c.reg[k] else z, l1p if c.reg[k] else z)


cdef void _rmsprop_all(Chunks c, char* s1, char* s2, floating lr, floating alpha,
                       floating one_m_alpha, floating eps,
                       floating mu, floating wd, floating l1, floating l1p, bint parallel,
                       int n_threads) noexcept nogil:
    cdef Py_ssize_t k
    cdef floating z = 0
    if parallel:
        for k in prange(c.n, schedule='static', num_threads=n_threads):
            _rmsprop_chunk(<floating*>c.w[k], <const floating*>c.g[k],
                           _state_ptr(s1, c.off[k], z), _state_ptr(s2, c.off[k], z),
                           c.length[k], lr, alpha, one_m_alpha, eps, mu, wd if c.reg[k] else z,
                           l1 if c.reg[k] else z, l1p if c.reg[k] else z)
    else:
        for k in range(c.n):
            _rmsprop_chunk(<floating*>c.w[k], <const floating*>c.g[k],
                           _state_ptr(s1, c.off[k], z), _state_ptr(s2, c.off[k], z),
                           c.length[k], lr, alpha, one_m_alpha, eps, mu, wd if c.reg[k] else z,
                           l1 if c.reg[k] else z, l1p if c.reg[k] else z)


cdef void _adam_all(Chunks c, char* s1, char* s2, floating step_size, floating lr,
                    floating beta1, floating beta2, floating one_m_b1, floating one_m_b2,
                    floating inv_sqrt_bc2, floating eps,
                    floating wd, floating l1, floating l1p, bint parallel,
                    int n_threads) noexcept nogil:
    cdef Py_ssize_t k
    cdef floating z = 0
    if parallel:
        for k in prange(c.n, schedule='static', num_threads=n_threads):
            _adam_chunk(<floating*>c.w[k], <const floating*>c.g[k],
                        _state_ptr(s1, c.off[k], z), _state_ptr(s2, c.off[k], z), c.length[k],
                        step_size, lr, beta1, beta2, one_m_b1, one_m_b2, inv_sqrt_bc2, eps,
                        wd if c.reg[k] else z, l1 if c.reg[k] else z, l1p if c.reg[k] else z)
    else:
        for k in range(c.n):
            _adam_chunk(<floating*>c.w[k], <const floating*>c.g[k],
                        _state_ptr(s1, c.off[k], z), _state_ptr(s2, c.off[k], z), c.length[k],
                        step_size, lr, beta1, beta2, one_m_b1, one_m_b2, inv_sqrt_bc2, eps,
                        wd if c.reg[k] else z, l1 if c.reg[k] else z, l1p if c.reg[k] else z)


# ---------------------------------------------------------------------------------------------
# Finite check of a group's parameters (fit runs it once per epoch): the exponent bits of every
# element, OR-reduced, so the loop vectorizes (integer compares) and needs no early exit.
# ---------------------------------------------------------------------------------------------

cdef bint _chunks_finite_f32(Chunks c) noexcept nogil:
    cdef Py_ssize_t k, i
    cdef const uint32_t* u
    cdef uint32_t bad = 0
    for k in range(c.n):
        u = <const uint32_t*>c.w[k]
        for i in range(c.length[k]):
            bad |= (u[i] & 0x7f800000u) == 0x7f800000u
        if bad:
            return False
    return True


cdef bint _chunks_finite_f64(Chunks c) noexcept nogil:
    cdef Py_ssize_t k, i
    cdef const uint64_t* u
    cdef uint64_t bad = 0
    for k in range(c.n):
        u = <const uint64_t*>c.w[k]
        for i in range(c.length[k]):
            bad |= (u[i] & 0x7ff0000000000000u) == 0x7ff0000000000000u
        if bad:
            return False
    return True


cdef Py_ssize_t _address(a):
    return <Py_ssize_t>a.__array_interface__["data"][0]


@cython.final
cdef class UpdatePlan:
    """The arrays of one parameter group, prepared for single-call fused updates.

    Parameters
    ----------
    params : list of fastnn.Parameter
        All of one dtype; ``data`` and ``grad`` C-contiguous, same shape, not overlapping,
        ``data`` writeable. Checked by the caller (fastnn.optim); this class trusts it.
    buffers : list of 1-D ndarray
        The group's flat state buffers (0, 1 or 2 of them), each of ``sum(p.data.size)``
        elements, of the parameters' dtype; parameter ``i`` owns ``[offsets[i], offsets[i+1])``.

    The plan keeps references to every array it points to, so a parameter whose arrays are
    rebound never leaves a dangling pointer: ``matches`` notices, and the caller rebuilds.
    """
    cdef readonly tuple params
    cdef readonly tuple datas
    cdef readonly tuple grads
    cdef readonly tuple buffers
    cdef readonly Py_ssize_t n_params
    cdef readonly Py_ssize_t n_elements
    cdef readonly bint is_double
    cdef object _table          # (5, n_chunks) intp array owning the chunk table
    cdef Chunks _chunks
    cdef char* _s1
    cdef char* _s2

    def __init__(self, params, buffers):
        cdef Py_ssize_t i, k, start, n_chunks = 0, off = 0
        self.params = tuple(params)
        self.datas = tuple(p.data for p in self.params)
        self.grads = tuple(p.grad for p in self.params)
        self.buffers = tuple(buffers)
        self.n_params = len(self.params)
        self.is_double = bool(self.n_params) and self.datas[0].dtype == np.float64
        itemsize = 8 if self.is_double else 4
        sizes = [d.size for d in self.datas]
        self.n_elements = sum(sizes)
        for n in sizes:
            n_chunks += (n + CHUNK - 1) // CHUNK
        table = np.zeros((5, max(n_chunks, 1)), dtype=np.intp)
        k = 0
        for i in range(self.n_params):
            w0 = _address(self.datas[i])
            g0 = _address(self.grads[i])
            reg = 1 if self.params[i].regularize else 0
            start = 0
            while start < sizes[i]:
                table[0, k] = w0 + start * itemsize
                table[1, k] = g0 + start * itemsize
                table[2, k] = off + start
                table[3, k] = min(CHUNK, sizes[i] - start)
                table[4, k] = reg
                start += CHUNK
                k += 1
            off += sizes[i]
        self._table = table
        cdef Py_ssize_t[:, ::1] t = table
        self._chunks.n = n_chunks
        self._chunks.w = &t[0, 0]
        self._chunks.g = &t[1, 0]
        self._chunks.off = &t[2, 0]
        self._chunks.length = &t[3, 0]
        # regularize flags as bytes, owned by a second array
        flags = np.ascontiguousarray(table[4].astype(np.uint8))
        self._table = (table, flags)
        cdef unsigned char[::1] fv = flags
        self._chunks.reg = &fv[0]
        self._s1 = NULL
        self._s2 = NULL
        for j, b in enumerate(self.buffers):
            if b.size != self.n_elements:
                raise ValueError(f"state buffer {j} has {b.size} elements, "
                                 f"expected {self.n_elements}")
        if len(self.buffers) >= 1 and self.n_elements:
            self._s1 = <char*><Py_ssize_t>_address(self.buffers[0])
        if len(self.buffers) >= 2 and self.n_elements:
            self._s2 = <char*><Py_ssize_t>_address(self.buffers[1])

    cpdef bint matches(self, list params):
        """True when ``params`` are this plan's parameters with the same arrays bound."""
        cdef Py_ssize_t i
        if len(params) != self.n_params:
            return False
        for i in range(self.n_params):
            p = params[i]
            if (p is not self.params[i] or p.data is not self.datas[i]
                    or p.grad is not self.grads[i]):
                return False
        return True

    def all_finite(self):
        """True when no parameter element of the group is NaN or +-inf (one serial pass)."""
        cdef bint ok
        with nogil:
            if self.is_double:
                ok = _chunks_finite_f64(self._chunks)
            else:
                ok = _chunks_finite_f32(self._chunks)
        return ok

    cdef inline bint _parallel(self, int n_threads, Py_ssize_t cost):
        return n_threads > 1 and self.n_elements * cost >= PARALLEL_MIN_WORK

    def sgd(self, double lr, double momentum, bint nesterov, double weight_decay, double l1,
            double l1_prox, int n_threads):
        """w -= lr * d, d = g (+ momentum buffer b = momentum * b + g; Nesterov: g + momentum*b)."""
        cdef bint par = self._parallel(n_threads, 1)
        cdef char* s1 = self._s1 if momentum != 0 else NULL
        with nogil:
            if self.is_double:
                _sgd_all[double](self._chunks, s1, lr, momentum, nesterov, weight_decay, l1,
                                 l1_prox, par, n_threads)
            else:
                _sgd_all[float](self._chunks, s1, <float>lr, <float>momentum, nesterov,
                                <float>weight_decay, <float>l1, <float>l1_prox, par, n_threads)

    def adagrad(self, double lr, double eps, double weight_decay, double l1, double l1_prox,
                int n_threads):
        """s += g^2; w -= lr * g / (sqrt(s) + eps)."""
        cdef bint par = self._parallel(n_threads, 3)
        with nogil:
            if self.is_double:
                _adagrad_all[double](self._chunks, self._s1, lr, eps, weight_decay, l1, l1_prox,
                                     par, n_threads)
            else:
                _adagrad_all[float](self._chunks, self._s1, <float>lr, <float>eps,
                                    <float>weight_decay, <float>l1, <float>l1_prox, par,
                                    n_threads)

    def rmsprop(self, double lr, double alpha, double eps, double momentum, double weight_decay,
                double l1, double l1_prox, int n_threads):
        """v = alpha v + (1 - alpha) g^2; w -= lr g / (sqrt(v) + eps) (or through a momentum buffer)."""
        cdef bint par = self._parallel(n_threads, 3)
        cdef char* s2 = self._s2 if momentum != 0 else NULL
        with nogil:
            if self.is_double:
                _rmsprop_all[double](self._chunks, self._s1, s2, lr, alpha, 1.0 - alpha, eps, momentum,
                                     weight_decay, l1, l1_prox, par, n_threads)
            else:
                _rmsprop_all[float](self._chunks, self._s1, s2, <float>lr, <float>alpha,
                                    <float>(1.0 - alpha), <float>eps, <float>momentum, <float>weight_decay, <float>l1,
                                    <float>l1_prox, par, n_threads)

    def adam(self, double lr, double beta1, double beta2, double eps, double bias_correction1,
             double bias_correction2, double weight_decay, double l1, double l1_prox,
             int n_threads):
        """m, v moments; w -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).

        1 - beta is computed in double and rounded once (as PyTorch does): 1 - (float)0.999 in
        float32 would be off by 1.3e-5 relative.
        """
        cdef bint par = self._parallel(n_threads, 3 if self.is_double else 2)
        cdef double step_size = lr / bias_correction1
        cdef double inv_sqrt_bc2 = 1.0 / sqrt(bias_correction2)
        with nogil:
            if self.is_double:
                _adam_all[double](self._chunks, self._s1, self._s2, step_size, lr, beta1, beta2,
                                  1.0 - beta1, 1.0 - beta2, inv_sqrt_bc2, eps, weight_decay, l1,
                                  l1_prox, par, n_threads)
            else:
                _adam_all[float](self._chunks, self._s1, self._s2, <float>step_size, <float>lr,
                                 <float>beta1, <float>beta2, <float>(1.0 - beta1),
                                 <float>(1.0 - beta2), <float>inv_sqrt_bc2, <float>eps,
                                 <float>weight_decay, <float>l1, <float>l1_prox, par, n_threads)
