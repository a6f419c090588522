# Design: one-call inference of a chain of layers (fastnn/functional/inference.py compiles a
# Sequential into a plan of C structs; this file runs it). One call walks every layer without
# Python in between:
#   * the rows are cut into tiles whose size depends on the batch size alone (tile_rows); each
#     tile runs all layers before the next tile starts, its activations in two per-thread
#     ping-pong buffers that stay in the core's cache; the last layer writes into the caller's
#     output (predict) or every layer into its own array (the evaluation-mode forward, whose
#     arrays the modules keep for a backward);
#   * a tile is always computed the same way (the same BLAS calls on the same rows), so the
#     output is bitwise the same for any thread count: threads only decide who runs which tiles
#     (handed out one at a time inside ONE OpenMP parallel region);
#   * BLAS is capped at 1 thread for the call (_blas request registry); a request of 1 row
#     goes through _blas.xw (the own one-row kernel for cache-sized layers), as the Dense kernel
#     does (dense.pyx), else one GEMM per tile and layer, followed by the fused bias +
#     activation pass over the tile;
#   * a 1-row request can instead split each layer's columns over threads that are already
#     awake (_run_cols, see AWAKE_GAP), with the bits of one thread;
#   * the work buffers belong to the plan, allocated (64-byte aligned) on the first call and
#     grown when a larger tile or more threads need it, never per call.
# Layers: dense (every activation of the table; no pre-activation kept: the evaluation-mode
# backward recomputes it), elementwise activation, scaling (Dropout "standard" in evaluation),
# maxout, softmax, sparsemax. Identity layers (Dropout "inverted" in evaluation, the identity
# Activation) are dropped by the compiler.
# Graphs (graph Models, Residual/Parallel blocks): a graph plan's steps name their parents (an
# earlier step r >= 0 or input -1 - r, the training engine's references) and add the merges
# concat, add and mul (left to right, the module path's order). A tile runs the steps in
# order (_tile_graph); a step's output lives in one of the thread's buffers from its step to
# its last reader (buffers are assigned once, at plan build: a dead value's buffer is taken
# again, an activation or scaling whose input dies there writes over it) or, for an output
# step, in the caller's array, where later steps read it too. The one-row column split covers
# graphs as well (_run_cols_graph; merges split by columns). A chain keeps its own path
# (_tile, _run_cols: two ping-pong buffers, no parent lookups).
import os

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdint cimport int32_t, uint16_t, uint32_t, uint64_t
from libc.limits cimport INT_MAX
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy
cimport numpy as cnp
from cpython.object cimport PyObject, PyObject_GetAttr
from cpython.dict cimport PyDict_GetItem
from cpython.pythread cimport (PyThread_type_lock, PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_acquire_lock, PyThread_release_lock, WAIT_LOCK,
                               NOWAIT_LOCK)

cimport fastnn._kernels._arrays as A   # this form: cythonize rebuilds on a change of _arrays.pxd
from fastnn._kernels._openmp cimport omp_get_thread_num, omp_get_num_threads
from fastnn._kernels._blas cimport gemm, xw, xw_own, blas_request, blas_release
from fastnn._kernels._activations cimport act_row, ACT_IDENTITY, N_ACTIVATIONS
from fastnn._kernels._maxout cimport max_row
from fastnn._kernels.softmax cimport softmax_row
from fastnn._kernels.sparsemax cimport sparsemax_row
from fastnn._kernels._bf16 cimport (fnn_bf16_packed_len, fnn_bf16_pack, fnn_bf16_xw,
                                    fnn_bf16_gemm, fnn_bf16_gemm_scratch_len, fnn_bf16_level)
cnp.import_array()

cdef extern from "stdlib.h" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)

cdef extern from *:
    """
    #include <time.h>
    #if defined(_OPENMP)
    #include <omp.h>
    #endif
    /* seconds on a monotonic clock */
    static double fnn_inference_now(void) {
    #if defined(_OPENMP)
        return omp_get_wtime();
    #elif defined(CLOCK_MONOTONIC)
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
    #else
        struct timespec ts;
        timespec_get(&ts, TIME_UTC);
        return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
    #endif
    }
    /* a barrier of the enclosing parallel region (Cython's prange inside parallel() ends
       with nowait) */
    static void fnn_team_barrier(void) {
    #if defined(_OPENMP)
        _Pragma("omp barrier")
    #endif
    }
    """
    double fnn_inference_now() noexcept nogil
    void fnn_team_barrier() noexcept nogil

# Layer kinds (the compiler in fastnn/functional/inference.py uses the same numbers: KINDS).
cdef enum:
    K_DENSE = 0
    K_ACTIVATION = 1
    K_SCALE = 2
    K_MAXOUT = 3
    K_SOFTMAX = 4
    K_SPARSEMAX = 5
    # merges (graph plans): their parents side by side, summed, multiplied (left to right)
    K_CONCAT = 6
    K_ADD = 7
    K_MUL = 8

KINDS = {"dense": K_DENSE, "activation": K_ACTIVATION, "scale": K_SCALE, "maxout": K_MAXOUT,
         "softmax": K_SOFTMAX, "sparsemax": K_SPARSEMAX, "concat": K_CONCAT, "add": K_ADD,
         "mul": K_MUL}

# Tile rows: batches up to TILE_MIN rows are one tile; larger ones are cut into about 8 tiles
# (multiples of 16 rows) of TILE_MIN to TILE_MAX rows. A function of the batch size only.
cdef Py_ssize_t TILE_MIN = 32
cdef Py_ssize_t TILE_MAX = 256
# Multiply-adds of a call below which it stays on the calling thread (waking a second thread
# costs tens of microseconds here): about 50 us of single-core GEMM.
cdef double PAR_MIN_WORK = 2.5e6
# Requests of up to this many rows go through the one-row product _blas.xw, one call per row
# (1 row, or up to GEMV_ROWS rows into layers of at least 64 outputs); 0: always GEMM. A single
# row only: measured with BLAS GEMV in that place, the whole 784-256-256-10 network at 2 rows
# took 21.5 us with one GEMM per layer against 33-74 us with two GEMVs (paired runs, 1 thread,
# load 7); at 1 row GEMV won 19.0 against 20.1 us, and xw's own kernel is about that GEMV's
# speed on cache-sized layers (_blas.pyx; benchmarks/README.md, "Batch-1 requests over two
# cores").
cdef Py_ssize_t GEMV_ROWS = 1

# Checks of a plan's validity (InferencePlan.valid): getattr(obj, name) is value; name not in
# the dict obj (an instance's __dict__); the list obj holds the items of the tuple value.
cdef enum:
    CHECK_IS = 0
    CHECK_ABSENT = 1
    CHECK_ITEMS = 2

ctypedef struct Check:
    int kind
    PyObject *obj
    PyObject *name
    PyObject *value


ctypedef struct Step:
    int kind
    int code              # activation code (dense, activation) or sparsemax method
    Py_ssize_t n_in       # input width
    Py_ssize_t n_out      # output width
    Py_ssize_t n_lin      # maxout: width of the linear units (n_out * pieces)
    Py_ssize_t pieces
    double scale
    const void *W         # dense/maxout weight (n_in, n_lin or n_out), C order
    const uint16_t *Wb    # bfloat16 plans: W packed (_bf16.pxd), the weight the products use
    const void *b         # bias or NULL
    void *keep_y          # keep mode: this step's output array (n, n_out)
    void *keep_z          # keep mode, maxout: the linear units (n, n_lin)
    int32_t *keep_arg     # keep mode, maxout: the winning unit (n, n_out)
    # graph plans only:
    int n_par             # parents: the references par[par_at:par_at + n_par] (r >= 0: step
    int par_at            # r's output, r < 0: input -1 - r)
    int slot              # the per-thread buffer holding its output rows, -1: ...
    int out_idx           # ... the caller's output array out_idx


# A graph plan (steps with parents, several inputs and outputs): what its tiles read.
ctypedef struct Graph:
    const Step *steps
    int n_steps
    const int *par            # every step's parents, step after step
    const Py_ssize_t *in_w    # the inputs' widths
    void **xs                 # this call's inputs (n, in_w[i]), C order
    void **outs               # this call's outputs (n, width of the step writing it)
    Py_ssize_t n_slots        # per-thread buffers of buf_elems each


cdef inline Py_ssize_t _round_up(Py_ssize_t v, Py_ssize_t m) noexcept nogil:
    return (v + m - 1) // m * m


cdef Py_ssize_t tile_rows(Py_ssize_t n) noexcept nogil:
    """Rows per tile for a batch of n rows (independent of the thread count)."""
    cdef Py_ssize_t t
    if n <= TILE_MIN:
        return n if n > 0 else 1
    t = _round_up((n + 7) // 8, 16)
    return TILE_MIN if t < TILE_MIN else (TILE_MAX if t > TILE_MAX else t)


def tile_size(Py_ssize_t n):
    """Rows per tile for a batch of ``n`` rows (tests)."""
    return tile_rows(n)


def set_tile_limits(Py_ssize_t tile_min, Py_ssize_t tile_max):
    """Override TILE_MIN and TILE_MAX (tuning, tests); returns the old pair."""
    global TILE_MIN, TILE_MAX
    if not 1 <= tile_min <= tile_max:
        raise ValueError("need 1 <= tile_min <= tile_max")
    old = (TILE_MIN, TILE_MAX)
    TILE_MIN, TILE_MAX = tile_min, tile_max
    return old


# A request of up to GEMV_ROWS rows can instead split every layer's output columns over the
# threads (_run_cols: blocks of COL_BLOCK columns, contiguous ranges of blocks per thread, so each
# core reads the same part of the weights on every call and keeps it in its cache; one barrier
# per layer). Only when it pays and gives the same bits: every dense and maxout layer takes
# _blas.xw's own kernel (a column's result is the same bits whichever slice or thread computes
# it), the network has at least SPLIT_MIN_WORK multiply-adds per row, and the plan's previous
# call ended less than AWAKE_GAP seconds ago - the second core is then still awake (libgomp's
# workers spin for a few milliseconds after a region; waking one that sleeps costs 100-300 us on
# the machines measured, more than a whole request). A lone request stays on the calling core.
# Numbers: benchmarks/README.md, "Batch-1 requests over two cores".
# With passive waits (OMP_WAIT_POLICY=passive or GOMP_SPINCOUNT=0 when the module loads, as on
# a machine shared with busy processes) the workers sleep at once: no request splits. The gap
# is measured per plan, while a team belongs to the calling thread: a plan used from several
# threads may split a request whose thread's team sleeps (one wake-up, then awake).
cdef enum:
    COL_BLOCK = 64
cdef double SPLIT_MIN_WORK = 1.0e5
cdef double AWAKE_GAP = 0.0 if (
    os.environ.get("OMP_WAIT_POLICY", "").strip().lower() == "passive"
    or os.environ.get("GOMP_SPINCOUNT", "").strip() == "0") else 1.0e-3


def set_split(double min_work, double awake_gap):
    """Override SPLIT_MIN_WORK and AWAKE_GAP (tests force or forbid the column split; an
    awake_gap of inf splits every request that qualifies); returns the old pair."""
    global SPLIT_MIN_WORK, AWAKE_GAP
    old = (SPLIT_MIN_WORK, AWAKE_GAP)
    SPLIT_MIN_WORK, AWAKE_GAP = min_work, awake_gap
    return old


cdef inline double _now() noexcept nogil:
    return fnn_inference_now()


def set_gemv_rows(Py_ssize_t rows):
    """Override GEMV_ROWS (tuning, tests); returns the old value."""
    global GEMV_ROWS
    old = GEMV_ROWS
    GEMV_ROWS = max(0, rows)
    return old


def _set_bf16_level(int level):
    """Tests: the level of this module's bfloat16 kernels (an index into
    fastnn._kernels.bf16.SIMD_LEVELS, which checks it; bf16._set_simd_level calls this);
    returns the old one."""
    global fnn_bf16_level
    old = fnn_bf16_level
    fnn_bf16_level = level
    return old


def set_parallel_min_work(double work):
    """Override PAR_MIN_WORK (multiply-adds; tests force the parallel region); returns the old."""
    global PAR_MIN_WORK
    old = PAR_MIN_WORK
    PAR_MIN_WORK = work
    return old


cdef void _dense_rows(const Step *st, const floating *src, floating *dst, Py_ssize_t m,
                      Py_ssize_t n_cols, bint by_row, uint32_t *bscr) noexcept nogil:
    """dst = act(src W + b) on m rows, n_cols outputs: one row product (_blas.xw) per row when
    by_row (a request of up to GEMV_ROWS rows) and m == 1 or n_cols >= 64, else one GEMM. (A
    short last tile of a larger batch takes GEMM like the batch's other rows.) A bfloat16 plan
    (st.Wb) takes the bfloat16 one-row product or GEMM in the same places, bscr their scratch
    (fnn_bf16_gemm_scratch_len(n_in) words)."""
    cdef Py_ssize_t i, n_in = st.n_in
    cdef const floating *W = <const floating *> st.W
    cdef const floating *b = <const floating *> st.b
    cdef int code = st.code if st.kind == K_DENSE else ACT_IDENTITY
    if floating is float and st.Wb != NULL:
        if by_row and (m == 1 or n_cols >= 64):
            for i in range(m):
                fnn_bf16_xw(src + i * n_in, st.Wb, n_in, n_cols, dst + i * n_cols, bscr)
        else:
            fnn_bf16_gemm(src, n_in, m, n_in, st.Wb, n_cols, dst, n_cols, bscr)
    elif by_row and (m == 1 or n_cols >= 64):
        for i in range(m):
            xw(src + i * n_in, W, n_cols, dst + i * n_cols, n_in, n_cols)
    else:
        gemm(False, False, <int> m, <int> n_cols, <int> n_in, <floating> 1, src, <int> n_in,
             W, <int> n_cols, <floating> 0, dst, <int> n_cols)
    if code != ACT_IDENTITY or b != NULL:
        for i in range(m):
            act_row(code, dst + i * n_cols, dst + i * n_cols, b, n_cols)


cdef inline floating *_step_dst(const Step *st, bint last, bint keep, const floating *src,
                                floating *out, Py_ssize_t r0, floating *buf0, floating *buf1,
                                int *src_buf) noexcept nogil:
    """Where step st writes the rows from r0 on: its own array (keep), the caller's output
    (last step), in place (an elementwise step on a buffer), or the ping-pong buffer that does
    not hold its input (*src_buf: which one holds it, -1 neither; updated)."""
    if keep:
        return <floating *> st.keep_y + r0 * st.n_out
    if last:
        return out + r0 * st.n_out
    if (st.kind == K_ACTIVATION or st.kind == K_SCALE) and src_buf[0] >= 0:
        return <floating *> src
    if src_buf[0] == 0:
        src_buf[0] = 1
        return buf1
    src_buf[0] = 0
    return buf0


cdef inline void _step_rows(const Step *st, const floating *src, floating *dst, floating *z,
                            int32_t *arg, Py_ssize_t m, bint by_row,
                            double *dscr) noexcept nogil:
    """Step st (not a merge) on m rows: src (m, n_in) to dst (m, n_out); maxout writes its
    linear units to z and its winners to arg; dscr: sparsemax's doubles."""
    cdef Py_ssize_t i, w = st.n_out
    if st.kind == K_DENSE:
        _dense_rows(st, src, dst, m, w, by_row, <uint32_t *> dscr)
    elif st.kind == K_MAXOUT:
        _dense_rows(st, src, z, m, st.n_lin, by_row, <uint32_t *> dscr)
        for i in range(m):
            max_row(z + i * st.n_lin, dst + i * w, arg + i * w, w, st.pieces)
    elif st.kind == K_ACTIVATION:
        act_row(st.code, dst, src, <const floating *> NULL, m * w)
    elif st.kind == K_SCALE:
        for i in range(m * w):
            dst[i] = src[i] * <floating> st.scale
    elif st.kind == K_SOFTMAX:
        for i in range(m):
            softmax_row(src + i * w, dst + i * w, w, False, 1.0, NULL)
    else:
        for i in range(m):
            sparsemax_row(src + i * w, dst + i * w, w, st.code, dscr)


cdef void _tile(const Step *steps, int n_steps, bint keep, const floating *X, floating *out,
                Py_ssize_t r0, Py_ssize_t m, bint by_row, char *scratch, Py_ssize_t buf_elems,
                Py_ssize_t lin_elems, Py_ssize_t arg_elems) noexcept nogil:
    """Rows [r0, r0 + m) through every step (by_row: see _dense_rows). scratch: this thread's
    buffers (two ping-pong buffers of buf_elems, the maxout linear units, the maxout winners,
    sparsemax doubles, which the bfloat16 products use as their scratch)."""
    cdef floating *buf0 = <floating *> scratch
    cdef floating *buf1 = buf0 + buf_elems
    cdef floating *zbuf = buf1 + buf_elems
    cdef int32_t *abuf = <int32_t *> (zbuf + lin_elems)
    cdef double *dscr = <double *> (<char *> abuf + _round_up(arg_elems * sizeof(int32_t), 64))
    cdef const floating *src = X + r0 * steps[0].n_in
    cdef floating *dst
    cdef floating *z = zbuf
    cdef int32_t *arg = abuf
    cdef int s, src_buf = -1      # which ping-pong buffer holds src (-1: neither)
    cdef const Step *st
    for s in range(n_steps):
        st = &steps[s]
        dst = _step_dst(st, s == n_steps - 1, keep, src, out, r0, buf0, buf1, &src_buf)
        if keep and st.kind == K_MAXOUT:
            z = <floating *> st.keep_z + r0 * st.n_lin
            arg = st.keep_arg + r0 * st.n_out
        _step_rows(st, src, dst, z, arg, m, by_row, dscr)
        src = dst


cdef inline Py_ssize_t _width(const Graph *g, int ref) noexcept nogil:
    return g.in_w[-1 - ref] if ref < 0 else g.steps[ref].n_out


cdef inline floating *_value(const Graph *g, int ref, Py_ssize_t r0, floating *slots,
                             Py_ssize_t buf_elems) noexcept nogil:
    """Where the value ``ref`` of rows r0... lies: the caller's input or output array (from
    row r0), or the start of its buffer among this thread's ``slots`` (the tile's rows)."""
    cdef const Step *st
    if ref < 0:
        return <floating *> g.xs[-1 - ref] + r0 * g.in_w[-1 - ref]
    st = &g.steps[ref]
    if st.out_idx >= 0:
        return <floating *> g.outs[st.out_idx] + r0 * st.n_out
    return slots + st.slot * buf_elems


cdef void _merge_cols(const Graph *g, const Step *st, Py_ssize_t r0, floating *slots,
                      Py_ssize_t buf_elems, floating *dst, Py_ssize_t m, Py_ssize_t j0,
                      Py_ssize_t j1) noexcept nogil:
    """Output columns [j0, j1) of a merge step on m rows: its parents side by side (concat),
    or ``p_1 op p_2``, then ``op= p_k`` for every further parent (add, mul: the order of
    fastnn.graph's merges and of model.Parallel); one parent is a copy. dst is apart from
    the parents."""
    cdef Py_ssize_t i, j, k, c = 0, pw, a, b, w = st.n_out
    cdef const floating *p
    cdef const floating *q
    cdef int ref
    if st.kind == K_CONCAT:
        for k in range(st.n_par):
            ref = g.par[st.par_at + k]
            pw = _width(g, ref)
            a = j0 if j0 > c else c
            b = j1 if j1 < c + pw else c + pw
            if a < b:
                p = _value(g, ref, r0, slots, buf_elems)
                for i in range(m):
                    memcpy(dst + i * w + a, p + i * pw + (a - c), (b - a) * sizeof(floating))
            c += pw
        return
    p = _value(g, g.par[st.par_at], r0, slots, buf_elems)
    if st.n_par == 1:
        for i in range(m):
            memcpy(dst + i * w + j0, p + i * w + j0, (j1 - j0) * sizeof(floating))
        return
    q = _value(g, g.par[st.par_at + 1], r0, slots, buf_elems)
    for i in range(m):
        if st.kind == K_ADD:
            for j in range(i * w + j0, i * w + j1):
                dst[j] = p[j] + q[j]
        else:
            for j in range(i * w + j0, i * w + j1):
                dst[j] = p[j] * q[j]
    for k in range(2, st.n_par):
        p = _value(g, g.par[st.par_at + k], r0, slots, buf_elems)
        for i in range(m):
            if st.kind == K_ADD:
                for j in range(i * w + j0, i * w + j1):
                    dst[j] = dst[j] + p[j]
            else:
                for j in range(i * w + j0, i * w + j1):
                    dst[j] = dst[j] * p[j]


cdef void _tile_graph(const Graph *g, Py_ssize_t r0, Py_ssize_t m, bint by_row, floating *slots,
                      Py_ssize_t buf_elems, Py_ssize_t lin_elems,
                      Py_ssize_t arg_elems) noexcept nogil:
    """Rows [r0, r0 + m) through every step of a graph plan: each step reads its parents
    where they lie (_value) and writes its buffer or its output array. slots: this thread's
    scratch (g.n_slots buffers of buf_elems, then the maxout and sparsemax buffers as in
    _tile)."""
    cdef floating *zbuf = slots + g.n_slots * buf_elems
    cdef int32_t *abuf = <int32_t *> (zbuf + lin_elems)
    cdef double *dscr = <double *> (<char *> abuf + _round_up(arg_elems * sizeof(int32_t), 64))
    cdef floating *dst
    cdef floating *z
    cdef int32_t *arg
    cdef int s
    cdef const Step *st
    for s in range(g.n_steps):
        st = &g.steps[s]
        dst = _value(g, s, r0, slots, buf_elems)
        if st.kind >= K_CONCAT:
            _merge_cols(g, st, r0, slots, buf_elems, dst, m, 0, st.n_out)
        else:
            z, arg = zbuf, abuf
            if st.keep_z != NULL:   # (run_many with a maxout step's arrays)
                z = <floating *> st.keep_z + r0 * st.n_lin
                arg = st.keep_arg + r0 * st.n_out
            _step_rows(st, _value(g, g.par[st.par_at], r0, slots, buf_elems), dst, z, arg,
                       m, by_row, dscr)


cdef void _step_cols(const Step *st, const floating *src, floating *dst, floating *z,
                     int32_t *arg, Py_ssize_t m, Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """Output columns [j0, j1) of a dense, maxout, activation or scale step on m rows (m at
    most GEMV_ROWS): the bits of the whole-row computation in _tile."""
    cdef Py_ssize_t i, j, w = st.n_out, n_in = st.n_in, lin = st.n_lin, p = st.pieces
    cdef const floating *W = <const floating *> st.W
    cdef const floating *b = <const floating *> st.b
    if st.kind == K_DENSE:
        for i in range(m):
            xw(src + i * n_in, W + j0, w, dst + i * w + j0, n_in, j1 - j0)
            if st.code != ACT_IDENTITY or b != NULL:
                act_row(st.code, dst + i * w + j0, dst + i * w + j0,
                        <const floating *> NULL if b == NULL else b + j0, j1 - j0)
    elif st.kind == K_MAXOUT:
        for i in range(m):
            xw(src + i * n_in, W + j0 * p, lin, z + i * lin + j0 * p, n_in, (j1 - j0) * p)
            if b != NULL:
                act_row(ACT_IDENTITY, z + i * lin + j0 * p, z + i * lin + j0 * p, b + j0 * p,
                        (j1 - j0) * p)
            max_row(z + i * lin + j0 * p, dst + i * w + j0, arg + i * w + j0, j1 - j0, p)
    elif st.kind == K_ACTIVATION:
        for i in range(m):
            act_row(st.code, dst + i * w + j0, src + i * w + j0, <const floating *> NULL,
                    j1 - j0)
    else:
        for i in range(m):
            for j in range(j0, j1):
                dst[i * w + j] = src[i * w + j] * <floating> st.scale


cdef inline Py_ssize_t _first_block(Py_ssize_t nb, int t, int team) noexcept nogil:
    """The first of thread t's contiguous blocks among nb (t = team: nb). Thread 0 takes the
    larger share: a one-block step (a 10-class output layer) runs on the calling thread, the
    one that returns from the region first."""
    return (nb * t + team - 1) // team


cdef void _run_cols(const Step *steps, int n_steps, bint keep, const floating *X,
                    floating *out, Py_ssize_t m, int nt, char *scratch, Py_ssize_t buf_elems,
                    Py_ssize_t lin_elems, Py_ssize_t arg_elems) noexcept nogil:
    """m rows (at most GEMV_ROWS) through every step, each step's output columns split over
    the team in blocks of COL_BLOCK (softmax and sparsemax: thread 0), in ONE parallel
    region. Thread t of T takes the contiguous blocks [ceil(nb t / T), ceil(nb (t + 1) / T))
    of every step (each core reads the same part of the weights on every call), and one
    barrier ends each step but the last (no worksharing loop: Cython's prange inside
    parallel() ends with nowait, and its private variables add a barrier of their own).
    BLAS is held to one thread by the caller (xw may call GEMV). Outputs go where _tile puts
    them (keep: every step's own arrays); the buffers are one thread's share of the
    scratch."""
    cdef floating *buf0 = <floating *> scratch
    cdef floating *buf1 = buf0 + buf_elems
    cdef floating *zbuf = buf1 + buf_elems
    cdef int32_t *abuf = <int32_t *> (zbuf + lin_elems)
    cdef double *dscr = <double *> (<char *> abuf + _round_up(arg_elems * sizeof(int32_t), 64))
    cdef const floating *src = X
    cdef floating *dst = NULL
    cdef floating *z = NULL
    cdef int32_t *arg = NULL
    cdef const Step *st = NULL
    cdef int s = 0, src_buf = -1, tid = 0, team = 1
    cdef Py_ssize_t blk, nb = 0, w = 0, i, c0, c1
    with parallel(num_threads=nt):
        tid = omp_get_thread_num()
        team = omp_get_num_threads()
        src = X
        src_buf = -1
        for s in range(n_steps):
            st = &steps[s]
            w = st.n_out
            z = <floating *> st.keep_z if keep else zbuf
            arg = st.keep_arg if keep else abuf
            dst = _step_dst(st, s == n_steps - 1, keep, src, out, 0, buf0, buf1, &src_buf)
            if st.kind == K_SOFTMAX:
                if tid == 0:
                    for i in range(m):
                        softmax_row(src + i * w, dst + i * w, w, False, 1.0, NULL)
            elif st.kind == K_SPARSEMAX:
                if tid == 0:
                    for i in range(m):
                        sparsemax_row(src + i * w, dst + i * w, w, st.code, dscr)
            else:
                nb = (w + COL_BLOCK - 1) // COL_BLOCK
                for blk in range(_first_block(nb, tid, team), _first_block(nb, tid + 1, team)):
                    c0 = blk * COL_BLOCK
                    c1 = c0 + COL_BLOCK if c0 + COL_BLOCK < w else w
                    _step_cols(st, src, dst, z, arg, m, c0, c1)
            if s + 1 < n_steps:   # (the region's end waits for the last step)
                fnn_team_barrier()   # every column of this step before the next step reads them
            src = dst


cdef void _run_cols_graph(const Graph *g, floating *slots, Py_ssize_t m, int nt,
                          Py_ssize_t buf_elems, Py_ssize_t lin_elems,
                          Py_ssize_t arg_elems) noexcept nogil:
    """_run_cols for a graph plan: every step's columns (merges' too) split over the team as
    there, one barrier per step; the buffers (slots) are one thread's share of the scratch."""
    cdef floating *zbuf = slots + g.n_slots * buf_elems
    cdef int32_t *abuf = <int32_t *> (zbuf + lin_elems)
    cdef double *dscr = <double *> (<char *> abuf + _round_up(arg_elems * sizeof(int32_t), 64))
    cdef floating *src = NULL
    cdef floating *dst = NULL
    cdef const Step *st = NULL
    cdef int s = 0, tid = 0, team = 1
    cdef Py_ssize_t blk = 0, nb = 0, w = 0, c0 = 0, c1 = 0
    with parallel(num_threads=nt):
        tid = omp_get_thread_num()
        team = omp_get_num_threads()
        for s in range(g.n_steps):
            st = &g.steps[s]
            w = st.n_out
            dst = _value(g, s, 0, slots, buf_elems)
            src = dst if st.kind >= K_CONCAT else _value(g, g.par[st.par_at], 0, slots,
                                                          buf_elems)
            if st.kind == K_SOFTMAX or st.kind == K_SPARSEMAX:
                if tid == 0:
                    _step_rows(st, src, dst, zbuf, abuf, m, True, dscr)
            else:
                nb = (w + COL_BLOCK - 1) // COL_BLOCK
                for blk in range(_first_block(nb, tid, team), _first_block(nb, tid + 1, team)):
                    c0 = blk * COL_BLOCK
                    c1 = c0 + COL_BLOCK if c0 + COL_BLOCK < w else w
                    if st.kind >= K_CONCAT:
                        _merge_cols(g, st, 0, slots, buf_elems, dst, m, c0, c1)
                    elif st.keep_z != NULL:   # (run_many with a maxout step's arrays)
                        _step_cols(st, src, dst, <floating *> st.keep_z, st.keep_arg, m, c0, c1)
                    else:
                        _step_cols(st, src, dst, zbuf, abuf, m, c0, c1)
            if s + 1 < g.n_steps:   # (the region's end waits for the last step)
                fnn_team_barrier()   # every column of this step before a later step reads them


cdef void _run(const Graph *g, const Step *steps, int n_steps, bint keep, const floating *X,
               floating *out, Py_ssize_t n, Py_ssize_t tile, int nt, char *scratch,
               Py_ssize_t thread_bytes, Py_ssize_t buf_elems, Py_ssize_t lin_elems,
               Py_ssize_t arg_elems) noexcept nogil:
    """Rows [0, n) in tiles of ``tile`` rows (the tile the scratch was sized for), through
    the chain (g NULL: X to out) or the graph g (X and out unused)."""
    cdef Py_ssize_t n_tiles = (n + tile - 1) // tile
    cdef Py_ssize_t k = 0, r0 = 0
    cdef int t = 0
    cdef bint by_row = n <= GEMV_ROWS
    if n == 0:
        return
    blas_request(1)
    if nt <= 1:
        for k in range(n_tiles):
            r0 = k * tile
            if g == NULL:
                _tile(steps, n_steps, keep, X, out, r0, min(tile, n - r0), by_row, scratch,
                      buf_elems, lin_elems, arg_elems)
            else:
                _tile_graph(g, r0, min(tile, n - r0), by_row, <floating *> scratch, buf_elems,
                            lin_elems, arg_elems)
    else:
        with parallel(num_threads=nt):
            t = omp_get_thread_num()
            # Tiles handed out one at a time: a thread slowed by another process (a shared
            # machine) takes fewer, and each tile is computed the same whoever takes it.
            for k in prange(n_tiles, schedule='dynamic', chunksize=1):
                r0 = k * tile
                if g == NULL:
                    _tile(steps, n_steps, keep, X, out, r0, min(tile, n - r0), by_row,
                          scratch + t * thread_bytes, buf_elems, lin_elems, arg_elems)
                else:
                    _tile_graph(g, r0, min(tile, n - r0), by_row,
                                <floating *> (scratch + t * thread_bytes), buf_elems,
                                lin_elems, arg_elems)
    blas_release(1)


cdef inline void _execute(const Graph *g, const Step *steps, int n_steps, bint keep,
                          bint split, const floating *X, floating *out, Py_ssize_t n,
                          Py_ssize_t tile, int nt, char *scratch, Py_ssize_t thread_bytes,
                          Py_ssize_t buf_elems, Py_ssize_t lin_elems,
                          Py_ssize_t arg_elems) noexcept nogil:
    if split:
        blas_request(1)
        if g == NULL:
            _run_cols(steps, n_steps, keep, X, out, n, nt, scratch, buf_elems, lin_elems,
                      arg_elems)
        else:
            _run_cols_graph(g, <floating *> scratch, n, nt, buf_elems, lin_elems, arg_elems)
        blas_release(1)
    else:
        _run(g, steps, n_steps, keep, X, out, n, tile, nt, scratch, thread_bytes, buf_elems,
             lin_elems, arg_elems)


cdef class InferencePlan:
    """A compiled chain or graph of layers (built by fastnn.functional.inference).

    ``steps``: tuples ``(kind, code, n_in, n_out, pieces, scale, W, b)`` (see KINDS; W and b
    C-contiguous arrays of the plan's dtype, or None; a merge's n_in is its n_out). A chain
    (``parents`` None) runs the steps one after another from its one input to its one output.
    A graph: ``parents`` holds each step's references (an earlier step r >= 0, or input
    -1 - r), ``inputs`` the input widths and ``outputs`` the steps whose values it returns
    (distinct), in order. ``checks``: ``(obj, attribute, value)``
    triples that must all still hold (``getattr(obj, attribute) is value``; value ABSENT:
    ``attribute`` not in ``obj.__dict__``; attribute None: the list ``obj`` holds the items
    of the tuple ``value``) for the plan to
    describe its network; ``modules``: the modules whose ``training`` flag must be False for an
    evaluation-mode forward.
    """
    cdef Step *steps
    cdef readonly int n_steps
    cdef readonly int typenum
    cdef readonly Py_ssize_t n_in, n_out       # the first input's and output's widths
    cdef readonly bint is_graph
    cdef readonly int n_inputs, n_outputs
    cdef readonly tuple in_widths, out_widths
    cdef Graph graph
    cdef int *par
    cdef Py_ssize_t *in_w
    cdef void **ptrs          # a call's input pointers, then its output pointers
    cdef Py_ssize_t n_slots   # per-thread buffers (a chain's two ping-pong buffers)
    #: "float32", "float64" or "bfloat16" (the dense and maxout products with bfloat16 weights
    #: and inputs)
    cdef readonly str precision
    cdef bint bf16
    cdef Py_ssize_t max_w, max_lin, max_arg, max_sparse
    cdef list _refs
    cdef tuple _checks
    cdef Check *checks
    cdef Py_ssize_t n_checks
    cdef tuple _modules
    cdef char *scratch
    cdef Py_ssize_t scratch_tile, scratch_threads, thread_bytes
    cdef Py_ssize_t buf_elems, lin_elems, arg_elems
    cdef double last_end     # when the previous call ended (_now(); see AWAKE_GAP)
    #: how the last call ran: its thread count, and whether it split columns (else rows)
    cdef readonly int last_threads
    cdef readonly bint last_split
    # One call at a time: the work buffers (grown, so freed, by a call) and the keep-mode
    # pointers of the steps belong to the running call. Callers serialize already (a network's
    # predict lock); this keeps a plan reached otherwise memory-safe.
    cdef PyThread_type_lock lock

    def __cinit__(self):
        self.steps = NULL
        self.scratch = NULL
        self.par = NULL
        self.in_w = NULL
        self.ptrs = NULL
        self.checks = NULL
        self.n_checks = 0
        self.n_steps = 0
        self.last_end = -1e300
        self.lock = PyThread_allocate_lock()
        if self.lock == NULL:
            raise MemoryError()

    def __init__(self, steps, dtype, checks=(), modules=(), parents=None, inputs=None,
                 outputs=None, precision=None):
        cdef Py_ssize_t i
        cdef Step *st
        cdef uint16_t *wb
        if self.steps != NULL:
            raise TypeError("an inference plan is initialized once")
        dt = cnp.dtype(dtype)
        self.typenum = dt.num
        if self.typenum != cnp.NPY_FLOAT32 and self.typenum != cnp.NPY_FLOAT64:
            raise TypeError(f"an inference plan needs float32 or float64, got {dt}")
        if precision is None:
            precision = "float32" if self.typenum == cnp.NPY_FLOAT32 else "float64"
        if precision != "bfloat16" and precision != dt.name:
            raise ValueError(f"precision must be {dt.name!r} or 'bfloat16', got {precision!r}")
        if precision == "bfloat16" and self.typenum != cnp.NPY_FLOAT32:
            raise ValueError(f"precision 'bfloat16' needs a float32 plan, got {dt}")
        self.precision = precision
        self.bf16 = precision == "bfloat16"
        steps = list(steps)
        if not steps:
            raise ValueError("an inference plan needs at least one step")
        self._refs = []
        self._set_checks(checks)
        self._modules = tuple(modules)
        self.steps = <Step *> calloc(len(steps), sizeof(Step))
        if self.steps == NULL:
            raise MemoryError()
        self.max_w = self.max_lin = self.max_arg = self.max_sparse = 0
        for i, spec in enumerate(steps):
            kind, code, n_in, n_out, pieces, scale, W, b = spec
            st = &self.steps[i]
            st.kind = kind
            st.code = code
            st.n_in = n_in
            st.n_out = n_out
            st.pieces = pieces
            st.n_lin = n_out * pieces if kind == K_MAXOUT else n_out
            st.scale = scale
            if n_in <= 0 or n_out <= 0 or pieces <= 0 or not 0 <= kind <= K_MUL:
                raise ValueError(f"invalid step {spec!r}")
            if max(n_in, st.n_lin) > INT_MAX:
                raise ValueError(f"step {i} is wider than 2**31 - 1 (the 32-bit sizes of BLAS "
                                 f"calls)")
            if parents is None and kind >= K_CONCAT:
                raise ValueError("a merge step needs parents (a graph plan)")
            if parents is None and i > 0 and n_in != self.steps[i - 1].n_out:
                raise ValueError(f"step {i} reads {n_in} features, step {i - 1} gives "
                                 f"{self.steps[i - 1].n_out}")
            if kind in (K_DENSE, K_ACTIVATION) and not 0 <= code < N_ACTIVATIONS:
                raise ValueError(f"invalid activation code {code}")
            if kind not in (K_DENSE, K_MAXOUT) and n_in != n_out:
                raise ValueError(f"an elementwise step keeps the width, got {spec!r}")
            if kind in (K_DENSE, K_MAXOUT):
                self._check_param(W, (n_in, st.n_lin))
                st.W = A.data(W)
                if b is not None:
                    self._check_param(b, (st.n_lin,))
                    st.b = A.data(b)
                if self.bf16:
                    # 32 entries more: the copy starts on a 64-byte boundary, one cache line
                    # per weight vector the kernels load
                    packed = cnp.PyArray_EMPTY(1, [fnn_bf16_packed_len(n_in, st.n_lin) + 32],
                                               cnp.NPY_UINT16, 0)
                    wb = <uint16_t *> ((<size_t> A.data(packed) + 63) & ~(<size_t> 63))
                    fnn_bf16_pack(<const float *> st.W, st.n_lin, n_in, st.n_lin, wb)
                    self._refs.append(packed)
                    st.Wb = wb
                    # the products' scratch shares the sparsemax doubles (steps run in turn)
                    self.max_sparse = max(self.max_sparse,
                                          (fnn_bf16_gemm_scratch_len(n_in) + 1) // 2)
            if kind == K_SPARSEMAX:
                self.max_sparse = max(self.max_sparse, n_out)
            if kind == K_MAXOUT:
                self.max_lin = max(self.max_lin, st.n_lin)
                self.max_arg = max(self.max_arg, n_out)
            self.max_w = max(self.max_w, n_out)
            self.n_steps = i + 1
        self.n_slots = 2
        if parents is None:
            self.n_inputs = self.n_outputs = 1
            self.in_widths = (self.steps[0].n_in,)
            self.out_widths = (self.steps[self.n_steps - 1].n_out,)
        else:
            self._set_graph(parents, inputs, outputs)
        self.n_in = self.in_widths[0]
        self.n_out = self.out_widths[0]

    cdef _set_graph(self, parents, inputs, outputs):
        """The references, widths and buffers of a graph plan (checked)."""
        cdef Py_ssize_t i, n = self.n_steps
        cdef Step *st
        inputs = [int(w) for w in inputs]
        outputs = [int(o) for o in outputs]
        parents = [[int(r) for r in refs] for refs in parents]
        if not inputs or any(w <= 0 or w > INT_MAX for w in inputs):
            raise ValueError(f"invalid input widths {inputs!r}")
        if len(parents) != n:
            raise ValueError(f"{len(parents)} parent lists for {n} steps")
        if not outputs or len(set(outputs)) != len(outputs) or not all(
                0 <= o < n for o in outputs):
            raise ValueError(f"outputs must be distinct step indices, got {outputs!r}")
        widths = []
        for i in range(n):
            st = &self.steps[i]
            refs = parents[i]
            if not refs or not all(-len(inputs) <= r < i for r in refs):
                raise ValueError(f"step {i} has parents {refs!r}")
            pw = [inputs[-1 - r] if r < 0 else widths[r] for r in refs]
            if st.kind < K_CONCAT and (len(refs) != 1 or pw[0] != st.n_in) or (
                    st.kind == K_CONCAT and sum(pw) != st.n_out) or (
                    st.kind > K_CONCAT and any(w != st.n_out for w in pw)):
                raise ValueError(f"step {i} reads widths {pw}, it takes {st.n_in}")
            widths.append(st.n_out)
        self.par = <int *> calloc(max(1, sum(len(r) for r in parents)), sizeof(int))
        self.in_w = <Py_ssize_t *> calloc(len(inputs), sizeof(Py_ssize_t))
        self.ptrs = <void **> calloc(len(inputs) + len(outputs), sizeof(void *))
        if self.par == NULL or self.in_w == NULL or self.ptrs == NULL:
            raise MemoryError()
        for i in range(len(inputs)):
            self.in_w[i] = inputs[i]
        # Buffers: a step's output lives in a buffer from its step to its last reader; a
        # freed buffer is taken again (an activation or scaling step whose input dies there
        # writes over it, as in a chain). An output step writes the caller's array.
        last = {}
        for i in range(n):
            for r in parents[i]:
                last[r] = i
        out_of = {o: k for k, o in enumerate(outputs)}
        free, slot, n_slots, k = [], [-1] * n, 0, 0
        for i in range(n):
            st = &self.steps[i]
            refs = parents[i]
            st.n_par = len(refs)
            st.par_at = k
            for r in refs:
                self.par[k] = r
                k += 1
            st.out_idx = out_of.get(i, -1)
            if st.out_idx < 0:
                if (st.kind in (K_ACTIVATION, K_SCALE) and refs[0] >= 0 and slot[refs[0]] >= 0
                        and last[refs[0]] == i):
                    slot[i] = slot[refs[0]]
                elif free:
                    slot[i] = free.pop()
                else:
                    slot[i] = n_slots
                    n_slots += 1
            st.slot = slot[i]
            for r in set(refs):
                if r >= 0 and last[r] == i and slot[r] >= 0 and slot[r] != slot[i]:
                    free.append(slot[r])
        self.n_slots = n_slots
        self.graph.steps = self.steps
        self.graph.n_steps = n
        self.graph.par = self.par
        self.graph.in_w = self.in_w
        self.graph.xs = self.ptrs
        self.graph.outs = self.ptrs + len(inputs)
        self.graph.n_slots = n_slots
        self.is_graph = True
        self.n_inputs, self.n_outputs = len(inputs), len(outputs)
        self.in_widths = tuple(inputs)
        self.out_widths = tuple(widths[o] for o in outputs)

    cdef _set_checks(self, checks):
        cdef Py_ssize_t i
        cdef Check *c
        kept = []
        kinds = []
        for obj, name, value in checks:
            if name is None:
                if type(obj) is not list or type(value) is not tuple:
                    raise TypeError("an items check takes a list and a tuple")
                kept.append((obj, None, value))
                kinds.append(CHECK_ITEMS)
            elif value is ABSENT:
                kept.append((obj.__dict__, str(name), None))
                kinds.append(CHECK_ABSENT)
            else:
                kept.append((obj, str(name), value))
                kinds.append(CHECK_IS)
        self._checks = tuple(kept)          # holds the references the C array points to
        self.checks = <Check *> calloc(max(1, len(kept)), sizeof(Check))
        if self.checks == NULL:
            raise MemoryError()
        for i in range(len(kept)):
            c = &self.checks[i]
            c.obj = <PyObject *> kept[i][0]
            c.name = <PyObject *> kept[i][1]
            c.value = <PyObject *> kept[i][2]
            c.kind = kinds[i]
        self.n_checks = len(kept)

    cdef _check_param(self, a, shape):
        if not (isinstance(a, cnp.ndarray) and a.dtype.num == self.typenum
                and a.shape == shape and a.flags.c_contiguous and a.flags.aligned):
            raise ValueError(f"a parameter of an inference plan must be an aligned C-contiguous "
                             f"array of shape {shape} and the plan's dtype")
        self._refs.append(a)

    def __dealloc__(self):
        if self.steps != NULL:
            free(self.steps)
        free(self.checks)
        free(self.scratch)
        free(self.par)
        free(self.in_w)
        free(self.ptrs)
        if self.lock != NULL:
            PyThread_free_lock(self.lock)

    def __reduce__(self):
        # A plan points into its network's arrays: a pickle or copy of the network rebuilds it.
        return (_no_plan, ())

    @property
    def scratch_nbytes(self):
        """Bytes of the work buffers held (all threads)."""
        return self.thread_bytes * self.scratch_threads if self.scratch != NULL else 0

    def valid(self):
        """True while every check holds (the network is still the one compiled)."""
        cdef Py_ssize_t i
        cdef Check *c
        cdef object v
        for i in range(self.n_checks):
            c = &self.checks[i]
            if c.kind == CHECK_ITEMS:
                if not _same_items(<list> c.obj, <tuple> c.value):
                    return False
            elif c.kind == CHECK_ABSENT:
                if PyDict_GetItem(<object> c.obj, <object> c.name) != NULL:
                    return False
            else:
                v = PyObject_GetAttr(<object> c.obj, <object> c.name)
                if <PyObject *> v != c.value:
                    return False
        return True

    def in_eval_mode(self):
        """True when every module of the network is in evaluation mode."""
        for m in self._modules:
            if m.training is not False:
                return False
        return True

    cdef int _scratch_for(self, Py_ssize_t tile, int nt) except -1:
        cdef Py_ssize_t item = 4 if self.typenum == cnp.NPY_FLOAT32 else 8
        cdef Py_ssize_t buf, lin, arg, per
        cdef void *p = NULL
        if self.scratch != NULL and tile <= self.scratch_tile and nt <= self.scratch_threads:
            return 0
        tile = max(tile, self.scratch_tile)
        nt = max(nt, <int> self.scratch_threads)
        buf = _round_up(tile * self.max_w * item, 64) // item
        lin = _round_up(tile * self.max_lin * item, 64) // item
        arg = tile * self.max_arg
        per = ((self.n_slots * buf + lin) * item + _round_up(arg * 4, 64)
               + _round_up(self.max_sparse * 8, 64))
        per = _round_up(max(per, 64), 64)
        if posix_memalign(&p, 64, per * nt) != 0:
            raise MemoryError(f"cannot allocate {per * nt} bytes of inference buffers")
        free(self.scratch)
        self.scratch = <char *> p
        self.scratch_tile = tile
        self.scratch_threads = nt
        self.thread_bytes = per
        self.buf_elems, self.lin_elems, self.arg_elems = buf, lin, arg
        return 0

    cdef int _threads(self, Py_ssize_t n, int n_threads) noexcept:
        cdef Py_ssize_t tile = tile_rows(n)
        cdef Py_ssize_t n_tiles = (n + tile - 1) // tile
        cdef double work = 0
        cdef int i
        for i in range(self.n_steps):
            if self.steps[i].kind == K_DENSE or self.steps[i].kind == K_MAXOUT:
                work += <double> self.steps[i].n_in * self.steps[i].n_lin
            else:
                work += <double> self.steps[i].n_out
        if n_threads <= 1 or n_tiles < 2 or work * n < PAR_MIN_WORK:
            return 1
        return n_threads if n_threads < n_tiles else <int> n_tiles

    cdef int _split_threads(self, Py_ssize_t n, int n_threads) noexcept:
        """Threads for splitting this call's columns (_run_cols), or 0 (see AWAKE_GAP)."""
        cdef Py_ssize_t item = 4 if self.typenum == cnp.NPY_FLOAT32 else 8
        cdef Py_ssize_t blocks = 1, b
        cdef double work = 0
        cdef int i
        cdef Step *st
        if (n_threads <= 1 or n > GEMV_ROWS or _now() - self.last_end >= AWAKE_GAP
                or self.bf16):   # (the bfloat16 products: the whole request on one core)
            return 0
        for i in range(self.n_steps):
            st = &self.steps[i]
            if st.kind == K_DENSE or st.kind == K_MAXOUT:
                # the whole-row path must take xw too (see _dense_rows), with its own kernel
                if not xw_own(st.n_in, st.n_lin, item) or (n > 1 and st.n_lin < 64):
                    return 0
                work += <double> st.n_in * st.n_lin
            b = (st.n_out + COL_BLOCK - 1) // COL_BLOCK
            blocks = b if b > blocks else blocks
        if work < SPLIT_MIN_WORK or blocks < 2:
            return 0
        return n_threads if n_threads < blocks else <int> blocks

    def run(self, X, out, int n_threads):
        """out = network(X) and True, when X (n, n_in) and out (n, n_out) are aligned
        C-contiguous ndarrays of the plan's dtype, out writeable and apart from X; else False
        and nothing is computed."""
        cdef int t = self.typenum
        cdef Py_ssize_t n
        if self.is_graph:
            return self.n_inputs == 1 and self.n_outputs == 1 and self.run_many((X,), (out,),
                                                                                n_threads)
        if not (A.c_array(X, t, 2, False) and A.c_array(out, t, 2, True)):
            return False
        n = A.dim(X, 0)
        if A.dim(X, 1) != self.n_in or A.dim(out, 0) != n or A.dim(out, 1) != self.n_out \
                or A.overlap(X, out):
            return False
        self._acquire()
        try:
            self._go(X, out, n, n_threads, False)
        finally:
            self._release()
        return True

    def predict(self, X, int n_threads):
        """network(X) as a new array, or None (nothing computed) unless X (n, n_in) is an
        aligned C-contiguous ndarray of the plan's dtype."""
        cdef cnp.npy_intp dims[2]
        if self.is_graph:
            if self.n_inputs != 1 or self.n_outputs != 1:
                return None
            outs = self.predict_many((X,), n_threads)
            return None if outs is None else outs[0]
        if not A.c_array(X, self.typenum, 2, False) or A.dim(X, 1) != self.n_in:
            return None
        dims[0] = A.dim(X, 0)
        dims[1] = self.n_out
        out = cnp.PyArray_EMPTY(2, dims, self.typenum, 0)
        self._acquire()
        try:
            self._go(X, out, dims[0], n_threads, False)
        finally:
            self._release()
        return out

    cdef Py_ssize_t _rows(self, xs) except -2:
        """The rows of the inputs ``xs`` (a list or tuple of one aligned C-contiguous ndarray
        of the plan's dtype and width per input, of equal rows), or -1."""
        cdef Py_ssize_t i, n = 0
        if (type(xs) is not list and type(xs) is not tuple) or len(xs) != self.n_inputs:
            return -1
        for i in range(self.n_inputs):
            x = xs[i]
            if not A.c_array(x, self.typenum, 2, False) or A.dim(x, 1) != self.in_widths[i]:
                return -1
            if i == 0:
                n = A.dim(x, 0)
            elif A.dim(x, 0) != n:
                return -1
        return n

    def run_many(self, xs, outs, int n_threads, maxout=None):
        """outs = network(xs) and True, when ``xs`` holds one (n, width) array per input and
        ``outs`` one (n, width) array per output (lists or tuples of aligned C-contiguous
        ndarrays of the plan's dtype; outs writeable, apart from each other and from xs);
        else False and nothing is computed. ``maxout`` (a graph plan): a dict {step: (z,
        arg)} that keeps the linear units (n, n_lin) and the winners (n, n_out) int32 of
        those maxout steps, writeable and apart from everything else."""
        cdef Py_ssize_t n = self._rows(xs), i, j
        cdef Step *st
        if n < 0 or (type(outs) is not list and type(outs) is not tuple) \
                or len(outs) != self.n_outputs:
            return False
        written = list(outs)
        if maxout:
            if not self.is_graph or type(maxout) is not dict:
                return False
            for key, (z, arg) in maxout.items():
                if type(key) is not int or not 0 <= key < self.n_steps:
                    return False
                st = &self.steps[<Py_ssize_t> key]
                if not (st.kind == K_MAXOUT and A.c_array(z, self.typenum, 2, True)
                        and A.dim(z, 0) == n and A.dim(z, 1) == st.n_lin
                        and A.c_array(arg, cnp.NPY_INT32, 2, True) and A.dim(arg, 0) == n
                        and A.dim(arg, 1) == st.n_out):
                    return False
                written += [z, arg]
        for i in range(len(written)):
            o = written[i]
            if i < self.n_outputs and not (A.c_array(o, self.typenum, 2, True)
                                           and A.dim(o, 0) == n
                                           and A.dim(o, 1) == self.out_widths[i]):
                return False
            for j in range(self.n_inputs):
                if A.overlap(o, xs[j]):
                    return False
            for j in range(i):
                if A.overlap(o, written[j]):
                    return False
        if not maxout:
            self._go_many(xs, outs, n, n_threads)
            return True
        self._acquire()
        try:
            for key, (z, arg) in maxout.items():
                st = &self.steps[<Py_ssize_t> key]
                st.keep_z = A.data(z)
                st.keep_arg = <int32_t *> A.data(arg)
            self._go(xs, outs, n, n_threads, False)
        finally:
            for key in maxout:
                st = &self.steps[<Py_ssize_t> key]
                st.keep_z = NULL
                st.keep_arg = NULL
            self._release()
        return True

    def predict_many(self, xs, int n_threads):
        """network(xs) as a list of new arrays, one per output; None (nothing computed) unless
        ``xs`` holds one (n, width) array per input (a list or tuple of aligned C-contiguous
        ndarrays of the plan's dtype)."""
        cdef cnp.npy_intp dims[2]
        cdef Py_ssize_t n = self._rows(xs)
        if n < 0:
            return None
        dims[0] = n
        outs = []
        for w in self.out_widths:
            dims[1] = w
            outs.append(cnp.PyArray_EMPTY(2, dims, self.typenum, 0))
        self._go_many(xs, outs, n, n_threads)
        return outs

    cdef _go_many(self, xs, outs, Py_ssize_t n, int n_threads):
        """run_many/predict_many on checked lists (a chain plan takes their one array)."""
        self._acquire()
        try:
            if self.is_graph:
                self._go(xs, outs, n, n_threads, False)
            else:
                self._go(xs[0], outs[0], n, n_threads, False)
        finally:
            self._release()

    def run_keep(self, X, outputs, int n_threads):
        """Every step's output into its own arrays, for a backward: ``outputs`` holds per step
        ``(y, z, arg)`` (z and arg for maxout: the linear units and the winners, else None),
        aligned C-contiguous, of n rows, apart from X and each other. True when done; False,
        computing nothing, when an array does not qualify."""
        cdef int t = self.typenum
        cdef Py_ssize_t n, i, j
        cdef Step *st
        if self.is_graph or not A.c_array(X, t, 2, False) or A.dim(X, 1) != self.n_in:
            return False
        n = A.dim(X, 0)
        if len(outputs) != self.n_steps:
            return False
        arrays = []
        for i in range(self.n_steps):
            st = &self.steps[i]
            y, z, arg = outputs[i]
            if not (A.c_array(y, t, 2, True) and A.dim(y, 0) == n and A.dim(y, 1) == st.n_out):
                return False
            arrays.append(y)
            if st.kind == K_MAXOUT:
                if not (A.c_array(z, t, 2, True) and A.dim(z, 0) == n
                        and A.dim(z, 1) == st.n_lin
                        and A.c_array(arg, cnp.NPY_INT32, 2, True) and A.dim(arg, 0) == n
                        and A.dim(arg, 1) == st.n_out):
                    return False
                arrays.append(z)
                arrays.append(arg)
        for i in range(len(arrays)):
            if A.overlap(arrays[i], X):
                return False
            for j in range(i):
                if A.overlap(arrays[i], arrays[j]):
                    return False
        self._acquire()
        try:
            for i in range(self.n_steps):
                st = &self.steps[i]
                y, z, arg = outputs[i]
                st.keep_y = A.data(y)
                if st.kind == K_MAXOUT:
                    st.keep_z = A.data(z)
                    st.keep_arg = <int32_t *> A.data(arg)
            self._go(X, None, n, n_threads, True)
        finally:
            for i in range(self.n_steps):
                self.steps[i].keep_y = self.steps[i].keep_z = NULL
                self.steps[i].keep_arg = NULL
            self._release()
        return True

    cdef _go(self, X, out, Py_ssize_t n, int n_threads, bint keep):
        """(the plan's lock held; a graph plan's X and out: the lists of arrays)"""
        cdef int nt, split, i
        cdef void *Xp = NULL
        cdef void *op = NULL
        cdef Graph *g = NULL
        cdef Py_ssize_t tile
        if n == 0:
            return
        tile = tile_rows(n)   # read once: set_tile_limits may run while the GIL is released
        if self.is_graph:
            g = &self.graph
            for i in range(self.n_inputs):
                g.xs[i] = A.data(X[i])
            for i in range(self.n_outputs):
                g.outs[i] = A.data(out[i])
        else:
            Xp = A.data(X)
            op = NULL if out is None else A.data(out)
        # (the split keeps the request in one thread's buffers: one tile)
        split = self._split_threads(n, n_threads) if n <= tile else 0
        nt = split if split else self._threads(n, n_threads)
        self._scratch_for(tile, 1 if split else nt)
        self.last_threads, self.last_split = nt, split > 0
        with nogil:
            if self.typenum == cnp.NPY_FLOAT32:
                _execute(g, self.steps, self.n_steps, keep, split > 0, <const float *> Xp,
                         <float *> op, n, tile, nt, self.scratch, self.thread_bytes,
                         self.buf_elems, self.lin_elems, self.arg_elems)
            else:
                _execute(g, self.steps, self.n_steps, keep, split > 0, <const double *> Xp,
                         <double *> op, n, tile, nt, self.scratch, self.thread_bytes,
                         self.buf_elems, self.lin_elems, self.arg_elems)
        self.last_end = _now()

    cdef void _acquire(self) noexcept:
        if not PyThread_acquire_lock(self.lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self.lock, WAIT_LOCK)

    cdef void _release(self) noexcept:
        PyThread_release_lock(self.lock)


# The finiteness check of an input before a prediction (scikit-learn's estimators check every
# input for NaN and infinity; its own check sums the whole array in float64, 0.25-0.40 ms for
# a 1024 x 784 float32 batch here, a tenth to a sixth of the prediction on two quiet cores;
# this one 0.15 ms). The exponent field of every element is tested with integer operations that
# vectorize (no branch per element): all ones is NaN or infinity, so the answer is exactly
# "no NaN, no infinity". One thread: memory-bound, and a second thread that another process
# holds would cost more than it saves (measured: 2 threads 0.22 ms at best, 1.2 ms median
# under load).
cdef int _all_bad32(const uint32_t *u, Py_ssize_t n) noexcept nogil:
    # |x|'s bits plus the lowest exponent bit carry into the sign bit exactly when the
    # exponent is all ones: an OR of additions (SSE2 vectorizes it, the wheels' baseline)
    cdef uint32_t m = 0
    cdef Py_ssize_t i
    for i in range(n):
        m |= (u[i] & 0x7fffffffu) + 0x00800000u
    return <int> (m >> 31)


cdef int _all_bad64(const uint64_t *u, Py_ssize_t n) noexcept nogil:
    cdef uint64_t m = 0
    cdef Py_ssize_t i
    for i in range(n):
        m |= (u[i] & 0x7fffffffffffffffULL) + 0x0010000000000000ULL
    return <int> (m >> 63)


def all_finite(X):
    """True when the aligned C-contiguous float32/float64 ndarray X (any number of
    dimensions) holds no NaN and no infinity, False when it does; None (nothing checked) for
    any other array."""
    cdef cnp.ndarray a
    cdef int t, bad
    cdef Py_ssize_t n
    cdef const void *p
    if type(X) is not cnp.ndarray:
        return None
    a = <cnp.ndarray> X
    t = cnp.PyArray_TYPE(a)
    if (t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64) or not (
            cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a)
            and cnp.PyArray_ISNOTSWAPPED(a)):
        return None
    n = cnp.PyArray_SIZE(a)
    if n == 0:
        return True
    p = cnp.PyArray_DATA(a)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            bad = _all_bad32(<const uint32_t *> p, n)
        else:
            bad = _all_bad64(<const uint64_t *> p, n)
    return bad == 0


#: the value of a check ``(obj, name, ABSENT)``: ``obj`` has no attribute ``name`` of its own
#: (a module whose ``forward`` was replaced on the instance is not the compiled one).
ABSENT = object()


cdef bint _same_items(list items, tuple expected):
    cdef Py_ssize_t i, k = len(expected)
    if len(items) != k:
        return False
    for i in range(k):
        if items[i] is not expected[i]:
            return False
    return True


def _no_plan():
    return None
