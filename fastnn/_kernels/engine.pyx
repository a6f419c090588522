# Design: the training engine. A chain of Dense layers (each with its fused activation) and
# Maxout layers (linear units, then the maximum of each group of k adjacent ones), each with
# any elementwise modules after it (Activation, Dropout), a loss on the last output and an
# optimizer are compiled into a Plan of C structs; one run() call executes many training steps
# inside ONE OpenMP region: batch gather, forward (single-threaded GEMM per column block, fused
# bias + activation epilogue), loss and its gradient, backward, optimizer update, running loss
# and metric.
#
# Work split. The output columns of every layer are cut into blocks of BLOCK columns (a fixed
# number, never a function of the thread count; a maxout layer's blocks hold whole groups: k
# times a multiple of 16 units, about BLOCK, so a block's outputs are its own too). The
# weights, gradients and optimizer states of block p are one contiguous, 64-byte-aligned panel
# (in_features x width), so a thread's memory-bound passes never share cache lines or pages
# with another thread's. Thread t owns the contiguous block range [nb t / T, nb (t + 1) / T) of
# every layer and computes everything of its blocks: the forward GEMM and epilogue, the
# backward of the elementwise modules and of the activation (or of the group maxima), dW and
# db, the optimizer update, and the input-gradient columns of the layer below that match its
# blocks there (so the activation derivative below needs no extra barrier).
# Reductions have a fixed order: the input gradient of a block sums the products of the blocks
# above in block order (GEMM with beta = 1), bias gradients sum rows in row order (double),
# loss and metric sum rows in row order. Every result is therefore computed by the same calls
# on the same addresses whatever the thread count: the weights after any number of steps are
# bitwise equal for 1, 2, 3, ... threads and for a build without OpenMP.
#
# A chain's step (L >= 2 layers, last layer of one block: 2 L - 2 barriers, 4 for L = 3):
#   forward layer 0 | [update layer 1 of the previous step, gather the next batch] forward
#   layer 1 | ... | forward layer L-1, loss rows, backward of its block | check: every thread
#   sums the step's row losses and stops before any update when the sum is not finite | input
#   gradient of layer L-2 + its backward | update layer L-1 + ... | input gradient of layer 0 +
#   its backward, update layer 0.
# A last layer of several blocks adds a barrier before and after its row-split loss. The weights
# of layer l are updated after the barrier that ends the input-gradient pass reading them: for
# layer 1 that is the first barrier of the next step (or an extra one after the run's last
# step). The next batch is gathered (rows split between threads, double buffered) after the
# first barrier, when no thread reads the buffer any more.
#
# Graphs. The plan is a list of nodes in topological order: layers (one parent) and merges
# (concatenation, sum, product of several parents, in blocks of BLOCK output columns), each
# with its elementwise modules; an input is a column range of the gathered batch. A chain is
# the graph whose node l reads node l - 1, and runs exactly the step above. In general the
# backward visits the nodes in reverse order; the input gradient of a block of node v sums,
# over v's readers in order, what each sends back (a layer: dZ W^T over its blocks in block
# order; a concatenation: its gradient's columns of v; a sum: its gradient; a product: its
# gradient times the other factors); a barrier follows, and after it the layers that read v
# update (their weights were read). Only for node 0 (which reads inputs alone) does that
# update wait for the next step's first barrier. See _thread.
#
# Barriers are a sense-reversing spin barrier on C atomics (independent of GOMP_SPINCOUNT),
# spinning with `pause` for a bounded time and then yielding the CPU. Each thread adds its
# waiting time to its own counter; thread 0 watches the counters over windows of steps and,
# when the threads spent at least FALLBACK_THRESHOLD of their time waiting (another process is
# holding a core: a spinning team then waits for a descheduled member), the run continues on
# thread 0 alone. The work split does not change, so neither do the results.
# BLAS is held to one thread for the region (blas_request(1)): each GEMM is one block's.
cimport cython
from cython cimport floating
from cython.parallel cimport parallel
from libc.stdint cimport int64_t, uint64_t, uint32_t, int32_t
from libc.string cimport memcpy
from libc.math cimport log, log1p, pow, sqrt, fabs, isfinite
from cpython.mem cimport PyMem_Malloc, PyMem_Free
cimport numpy as cnp

import numpy as np

from fastnn._kernels._blas cimport gemm, blas_request, blas_release
from fastnn._kernels._activations cimport (act_row, act_row_keep_z, act_grad_row,
                                           ACT_IDENTITY)
from fastnn._kernels._openmp cimport omp_get_thread_num, omp_get_num_threads
from fastnn._kernels.softmax cimport softmax_row, fnn_exp_d, cross_entropy_prob_row
from fastnn._kernels.sparsemax cimport sparsemax_loss_row
from fastnn._kernels._maxout cimport max_row
from fastnn._kernels.optim cimport _sgd_chunk, _adagrad_chunk, _rmsprop_chunk, _adam_chunk

cnp.import_array()

cdef extern from *:
    """
    #include <stdint.h>
    #include <time.h>
    #if defined(__GNUC__) && !defined(_WIN32)
    #include <sched.h>
    #define FNN_SPIN_BARRIER 1
    #else
    #define FNN_SPIN_BARRIER 0
    #endif
    #if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    #define FNN_PAUSE() __builtin_ia32_pause()
    #elif defined(__GNUC__) && defined(__aarch64__)
    #define FNN_PAUSE() __asm__ __volatile__("yield")
    #else
    #define FNN_PAUSE() ((void)0)
    #endif
    #if defined(_OPENMP)
    #include <omp.h>
    #endif

    static inline int64_t fnn_now_ns(void) {
    #if FNN_SPIN_BARRIER
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000000000LL + (int64_t) ts.tv_nsec;
    #elif defined(_OPENMP)
        return (int64_t) (omp_get_wtime() * 1e9);
    #else
        struct timespec ts;
        timespec_get(&ts, TIME_UTC);
        return (int64_t) ts.tv_sec * 1000000000LL + (int64_t) ts.tv_nsec;
    #endif
    }

    /* Counters written by one thread and read by thread 0 while the team runs. */
    static inline void fnn_store_i64(int64_t *p, int64_t v) {
    #if FNN_SPIN_BARRIER
        __atomic_store_n(p, v, __ATOMIC_RELAXED);
    #else
        *(volatile int64_t *) p = v;
    #endif
    }
    static inline int64_t fnn_load_i64(const int64_t *p) {
    #if FNN_SPIN_BARRIER
        return __atomic_load_n(p, __ATOMIC_RELAXED);
    #else
        return *(volatile const int64_t *) p;
    #endif
    }

    /* Sense-reversing barrier for n threads: the last to arrive resets the count and flips
       the sense; the others spin on the sense (pause) for at most spin_ns, then yield the CPU
       between checks. The acquire/release pairs order every write made before the barrier
       before every read made after it. Compilers without GCC atomics use an OpenMP barrier. */
    typedef struct { int count; int sense; char pad[56]; } fnn_barrier_t;

    static inline void fnn_barrier_wait(fnn_barrier_t *b, int *local_sense, int n,
                                        int64_t spin_ns, int64_t *wait_slot) {
        if (n <= 1) return;
        int64_t t0 = fnn_now_ns();
    #if FNN_SPIN_BARRIER
        int s = !*local_sense;
        *local_sense = s;
        if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == n) {
            __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&b->sense, s, __ATOMIC_RELEASE);
        } else {
            unsigned spins = 0;
            int yielding = 0;
            while (__atomic_load_n(&b->sense, __ATOMIC_ACQUIRE) != s) {
                if (yielding) { sched_yield(); continue; }
                FNN_PAUSE();
                if ((++spins & 63u) == 0 && fnn_now_ns() - t0 > spin_ns) yielding = 1;
            }
        }
    #else
        (void) b; (void) local_sense; (void) spin_ns;
        #pragma omp barrier
    #endif
        fnn_store_i64(wait_slot, fnn_load_i64(wait_slot) + (fnn_now_ns() - t0));
    }

    /* The dropout mask of fastnn/_kernels/dropout.pyx, element by element: the t-th training
       forward of a Dropout module with base seed `seed` keeps flat element i of its (rows x
       features) input iff word(i) >= threshold, word(i) the high (even i) or low (odd i) half
       of mix64(key + (i / 2) * GAMMA), key = mix64(call_seed ^ SALT), call_seed =
       splitmix64(splitmix64(seed) ^ t) >> 1. Must stay equal to that file's rule (tests compare
       the masks with the module's). The forward keeps the mask for the backward. */
    #define FNN_GAMMA 0x9E3779B97F4A7C15ULL
    #define FNN_SALT 0x5DEECE66DA3B1F27ULL
    static inline uint64_t fnn_eng_mix64(uint64_t z) {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    static inline uint64_t fnn_dropout_key(uint64_t seed, uint64_t t) {
        uint64_t cs = fnn_eng_mix64((fnn_eng_mix64(seed + FNN_GAMMA) ^ t) + FNN_GAMMA) >> 1;
        return fnn_eng_mix64(cs ^ FNN_SALT);
    }
    /* mask[j] = keep(e0 + j) for j < w: one hash per pair of flat indices. */
    static inline void fnn_dropout_mask(uint64_t key, uint64_t e0, Py_ssize_t w,
                                        uint32_t threshold, unsigned char *mask) {
        Py_ssize_t j = 0;
        uint64_t h;
        if (w <= 0) return;
        if (e0 & 1) {
            h = fnn_eng_mix64(key + (e0 >> 1) * FNN_GAMMA);
            mask[0] = (uint32_t) h >= threshold;
            j = 1;
        }
        for (; j + 1 < w; j += 2) {
            h = fnn_eng_mix64(key + ((e0 + (uint64_t) j) >> 1) * FNN_GAMMA);
            mask[j] = (uint32_t) (h >> 32) >= threshold;
            mask[j + 1] = (uint32_t) h >= threshold;
        }
        if (j < w) {
            h = fnn_eng_mix64(key + ((e0 + (uint64_t) j) >> 1) * FNN_GAMMA);
            mask[j] = (uint32_t) (h >> 32) >= threshold;
        }
    }
    """
    ctypedef struct fnn_barrier_t:
        int count
        int sense
    int64_t fnn_now_ns() noexcept nogil
    void fnn_store_i64(int64_t *p, int64_t v) noexcept nogil
    int64_t fnn_load_i64(const int64_t *p) noexcept nogil
    void fnn_barrier_wait(fnn_barrier_t *b, int *local_sense, int n, int64_t spin_ns,
                          int64_t *wait_slot) noexcept nogil
    uint64_t fnn_dropout_key(uint64_t seed, uint64_t t) noexcept nogil
    void fnn_dropout_mask(uint64_t key, uint64_t e0, Py_ssize_t w, uint32_t threshold,
                          unsigned char *mask) noexcept nogil


cdef enum:
    NODE_DENSE = 0           # a Dense or Maxout layer: GEMM, epilogue, group maxima
    NODE_CONCAT = 1          # the parents' outputs side by side
    NODE_ADD = 2             # their sum
    NODE_MUL = 3             # their elementwise product
    MUL_CHUNK = 64           # columns of a product node's input gradient per step (_grad_h)
    POST_ACT = 1
    POST_DROPOUT = 2
    LOSS_CE = 0
    LOSS_SQUARED = 1
    LOSS_BCE = 2
    LOSS_SPARSEMAX = 3      # single-label (integer labels)
    LOSS_SPARSEMAX_ROWS = 4  # target rows q (label sets or distributions; normalized per row)
    LOSS_CE_ROWS = 5        # cross-entropy against non-negative target rows q
    OPT_FROZEN = 0
    OPT_SGD = 1
    OPT_ADAGRAD = 2
    OPT_RMSPROP = 3
    OPT_ADAM = 4
    MAX_THREADS_STATS = 1024
    SLOT = 8                 # int64 per thread counter: one cache line each

LOSS_KINDS = {"cross_entropy": LOSS_CE, "squared": LOSS_SQUARED, "binary_cross_entropy": LOSS_BCE,
              "sparsemax": LOSS_SPARSEMAX, "sparsemax_rows": LOSS_SPARSEMAX_ROWS,
              "cross_entropy_rows": LOSS_CE_ROWS}
OPT_KINDS = {"frozen": OPT_FROZEN, "sgd": OPT_SGD, "adagrad": OPT_ADAGRAD,
             "rmsprop": OPT_RMSPROP, "adam": OPT_ADAM}

# Columns per block (a multiple of 16, so block edges fall on 64-byte boundaries of every
# row). 128 float32 columns of a 784-input layer are a 392 KiB panel, which fits one core's L2.
BLOCK = 128

# Fallback: thread 0 compares the team's barrier waits with its wall time over windows of at
# least FALLBACK_MIN_STEPS steps and FALLBACK_WINDOW_S seconds; a wait fraction of at least
# FALLBACK_THRESHOLD finishes the run on one thread (a negative threshold never falls back).
# Measured on the 2-core machine (784-256-256-10, 2 threads; benchmarks/README.md, "Training
# engine"): quiet, the team waited 6-15% of its time; beside one busy process 30-35%, and in
# the VM's slow vCPU placement ~54% (2 threads then ran at the 1-thread speed). Windows of
# 10 ms caught passing hiccups on a quiet machine; 50 ms windows still find a busy process
# within a third of a 0.15 s call.
cdef double FALLBACK_THRESHOLD = 0.25
cdef double FALLBACK_WINDOW_S = 0.05
cdef Py_ssize_t FALLBACK_MIN_STEPS = 8
# How long a waiting thread spins before it yields its CPU between checks.
cdef int64_t SPIN_NS = 50000


def _set_fallback(threshold=None, window_s=None, min_steps=None):
    """Testing and tuning hook: set the fallback rule; returns the previous (threshold,
    window_s, min_steps)."""
    global FALLBACK_THRESHOLD, FALLBACK_WINDOW_S, FALLBACK_MIN_STEPS
    old = (FALLBACK_THRESHOLD, FALLBACK_WINDOW_S, FALLBACK_MIN_STEPS)
    if threshold is not None:
        FALLBACK_THRESHOLD = threshold
    if window_s is not None:
        FALLBACK_WINDOW_S = window_s
    if min_steps is not None:
        FALLBACK_MIN_STEPS = max(1, min_steps)
    return old


cdef struct OptSpec:
    int kind
    double lr, decay, momentum, eps, alpha, beta1, beta2, wd, l1, l1p
    bint nesterov
    int64_t t0              # the group's step count when the run starts


cdef struct PostOp:
    int kind                # POST_ACT or POST_DROPOUT
    int code                # activation code
    bint from_input         # the derivative is taken from the op's input (GELU, SiLU)
    double scale            # dropout: kept units are multiplied by it
    uint32_t threshold      # dropout: keep iff word >= threshold
    uint64_t seed           # dropout: base seed
    uint64_t calls0         # dropout: training forwards done before the run
    char *out               # output (rows x ld)
    unsigned char *mask     # dropout: the step's keep mask (rows x ld), for the backward


cdef struct LayerC:
    int kind                # NODE_*; a merge node has no parameters: n_out = n_h, pieces 1
    int n_par               # parents (a layer: 1); parent j is node par[j], or input -1 - par[j]
    int *par
    Py_ssize_t *par_off     # concatenation: the first output column of each parent
    int n_cons              # readers: node cons[i] reads this node as its parent cons_slot[i]
    int *cons
    int *cons_slot
    bint need_gh            # a parameter lies behind (or in) the node: its backward runs
    int n_upd               # layers updated after the barrier that ends this node's backward
    int *upd                # (their weights were read for its input gradient)
    bint upd_at_end         # a layer on an input: updated at the end of its step
    int wave                # the node's wave (nodes of equal depth: one phase of the step)
    Py_ssize_t woff         # the index of its first block among its wave's blocks
    Py_ssize_t n_in, n_out, ld, nb
    Py_ssize_t bw           # linear columns per block (a multiple of pieces)
    Py_ssize_t pieces       # maxout: units per output (the block's outputs: bw / pieces); 1: Dense
    Py_ssize_t n_h, ld_h    # the layer's output width (n_out / pieces) and its row stride
    int code
    bint keep_z, has_bias
    char *Z                 # GEMM output, then pre-activation (keep_z) or dense output
    char *Y                 # dense output (Z unless keep_z), or the group maxima (maxout)
    char *H                 # the layer's output (Y or the last post op's)
    char *GH                # dL/dH (rows x ld_h); the post ops' backward runs in place on it
    char *G                 # dL/dZ (rows x ld): GH itself for a Dense layer (turned into dL/dZ
                            # in place), the maxout winners' scatter of GH otherwise
    int32_t *arg            # maxout: the winning unit of each output (rows x ld_h)
    char *W
    char *dW
    char *Ws1
    char *Ws2
    char *b
    char *db
    char *bs1
    char *bs2
    double *acc             # column sums of the bias gradient
    OptSpec ow, ob
    int n_post
    PostOp *post


cdef struct Plan:
    int n_layers            # nodes, in topological order; the last is the output
    LayerC *layers
    int n_inputs            # input i is columns [in_off[i], in_off[i + 1]) of the gathered rows
    Py_ssize_t *in_off
    int n_waves             # wave w: nodes wave_nodes[wave_off[w]:wave_off[w + 1]], whose
    int *wave_off           # blocks (wave_blocks[w] in all) are split between the threads as
    int *wave_nodes         # one list; the output node is the last wave, alone
    Py_ssize_t *wave_blocks
    bint defer              # wave 0's backward runs: its readers' updates then wait for the
                            # next step's first barrier
    Py_ssize_t block, n_in, ld_in, n_classes
    int loss
    const char *in_mean     # input standardization (NULL: none): x' = (x - mean) / scale
    const char *in_scale
    char *Xb[2]             # gathered batches (rows x ld_in)
    char *Tb[2]             # gathered float targets (rows x n_classes)
    Py_ssize_t *Lb[2]       # gathered labels
    double *row_loss
    double *row_hit
    double *row_scratch     # sparsemax loss: n_classes doubles per row


cdef struct RunState:
    const char *X
    const char *targets
    const Py_ssize_t *labels
    const Py_ssize_t *order
    Py_ssize_t start, n_order, bs, n_steps
    int64_t deadline_ns     # 0: none
    # results
    Py_ssize_t steps_done, nonfinite_step, fallback_step
    double loss_sum, hit_sum
    double last_loss        # mean loss of the last step done, or of the non-finite step
    double *s1
    double *s2
    double *sse
    # shared flags: written by thread 0 before the check barrier, read after it
    int flag_last, flag_fallback
    # fallback statistics (thread 0)
    int64_t win_t0, win_wait0, t_start
    Py_ssize_t win_steps
    double threshold, window_s
    Py_ssize_t min_steps
    int64_t spin_ns
    int n_threads
    fnn_barrier_t bar
    int64_t *waits          # SLOT int64 per thread


cdef inline Py_ssize_t _lo(Py_ssize_t n, int T, int t) noexcept nogil:
    return n * t // T


cdef inline Py_ssize_t _rows(RunState *R, Py_ssize_t s) noexcept nogil:
    cdef Py_ssize_t a = R.start + s * R.bs
    return min(R.bs, R.n_order - a)


cdef inline void _barrier(RunState *R, int *sense, int T, int tid) noexcept nogil:
    fnn_barrier_wait(&R.bar, sense, T, R.spin_ns, &R.waits[tid * SLOT])


# ------------------------------------------------------------------------------------ gather ---

cdef void _gather(Plan *P, RunState *R, Py_ssize_t s, int tid, int T,
                  floating dummy) noexcept nogil:
    """Rows [m t / T, m (t + 1) / T) of batch s into the batch buffer s % 2 (standardized
    when the plan has an input standardization)."""
    cdef Py_ssize_t m = _rows(R, s), base = R.start + s * R.bs, i, k
    cdef Py_ssize_t r0 = _lo(m, T, tid), r1 = _lo(m, T, tid + 1), C = P.n_classes
    cdef floating *xb = <floating *> P.Xb[s & 1]
    cdef const floating *X = <const floating *> R.X
    cdef floating *tb = <floating *> P.Tb[s & 1]
    cdef const floating *tg = <const floating *> R.targets
    cdef Py_ssize_t *lb = P.Lb[s & 1]
    cdef const floating *mean = <const floating *> P.in_mean
    cdef const floating *scale = <const floating *> P.in_scale
    cdef Py_ssize_t j
    for i in range(r0, r1):
        k = R.order[base + i]
        if mean == NULL:
            memcpy(xb + i * P.ld_in, X + k * P.n_in, P.n_in * sizeof(floating))
        else:
            for j in range(P.n_in):
                xb[i * P.ld_in + j] = (X[k * P.n_in + j] - mean[j]) / scale[j]
        if P.loss == LOSS_CE or P.loss == LOSS_SPARSEMAX:
            lb[i] = R.labels[k]
        else:
            memcpy(tb + i * C, tg + k * C, C * sizeof(floating))


# ----------------------------------------------------------------------------------- forward ---

cdef inline const floating *_node_out(Plan *P, int v, Py_ssize_t s, Py_ssize_t *ld,
                                      floating dummy) noexcept nogil:
    """The output of node v at step s (v < 0: input -1 - v, in the gathered batch); its row
    stride into ld."""
    if v < 0:
        ld[0] = P.ld_in
        return <const floating *> P.Xb[s & 1] + P.in_off[-1 - v]
    ld[0] = P.layers[v].ld_h
    return <const floating *> P.layers[v].H


cdef void _forward_block(Plan *P, LayerC *L, Py_ssize_t m, Py_ssize_t p,
                         Py_ssize_t s, floating dummy) noexcept nogil:
    """Columns of block p of node L for the step's m rows: for a layer the GEMM, the bias +
    activation epilogue and the group maxima (maxout), for a merge the concatenation, sum or
    product of its parents; then the elementwise modules after it (on the block's output
    columns [c0 / pieces, (c0 + w) / pieces))."""
    cdef Py_ssize_t c0 = p * L.bw, w = min(L.bw, L.n_out - c0), ld = L.ld, i, j
    cdef Py_ssize_t k0 = c0 // L.pieces, wk = w // L.pieces, ldh = L.ld_h, ldx, a, e
    cdef floating *Z = <floating *> L.Z + c0
    cdef floating *Y = <floating *> L.Y + k0
    cdef const floating *b = (<floating *> L.b + c0) if L.has_bias else NULL
    cdef const floating *X
    cdef const floating *src
    cdef floating *out
    cdef floating scale, zero = 0
    cdef PostOp *op
    cdef uint64_t key
    cdef unsigned char *mask
    cdef int k
    if L.kind == NODE_DENSE:
        X = _node_out(P, L.par[0], s, &ldx, dummy)
        gemm(False, False, <int> m, <int> w, <int> L.n_in, <floating> 1, X, <int> ldx,
             <floating *> L.W + L.n_in * c0, <int> w, <floating> 0, Z, <int> ld)
        for i in range(m):
            if L.keep_z:
                act_row_keep_z(L.code, Y + i * ld, Z + i * ld, b, w)
            elif L.code != ACT_IDENTITY or b != NULL:
                act_row(L.code, Z + i * ld, Z + i * ld, b, w)
        if L.pieces > 1:
            for i in range(m):
                max_row(Z + i * ld, Y + i * ldh, L.arg + i * ldh + k0, wk, L.pieces)
    elif L.kind == NODE_CONCAT:
        for k in range(L.n_par):
            # the part of parent k's columns [par_off[k], par_off[k + 1]) in this block
            a = max(c0, L.par_off[k])
            e = min(c0 + w, L.par_off[k + 1])
            if a >= e:
                continue
            X = _node_out(P, L.par[k], s, &ldx, dummy) + (a - L.par_off[k])
            for i in range(m):
                memcpy(Y + i * ldh + (a - c0), X + i * ldx, (e - a) * sizeof(floating))
    else:
        X = _node_out(P, L.par[0], s, &ldx, dummy) + c0
        for i in range(m):
            memcpy(Y + i * ldh, X + i * ldx, w * sizeof(floating))
        for k in range(1, L.n_par):
            X = _node_out(P, L.par[k], s, &ldx, dummy) + c0
            for i in range(m):
                if L.kind == NODE_ADD:
                    for j in range(w):
                        Y[i * ldh + j] = Y[i * ldh + j] + X[i * ldx + j]
                else:
                    for j in range(w):
                        Y[i * ldh + j] = Y[i * ldh + j] * X[i * ldx + j]
    src = Y
    for k in range(L.n_post):
        op = &L.post[k]
        out = <floating *> op.out + k0
        if op.kind == POST_ACT:
            for i in range(m):
                act_row(op.code, out + i * ldh, src + i * ldh, <const floating *> NULL, wk)
        else:
            key = fnn_dropout_key(op.seed, op.calls0 + <uint64_t> s)
            scale = <floating> op.scale
            for i in range(m):
                mask = op.mask + i * ldh + k0
                fnn_dropout_mask(key, <uint64_t> (i * L.n_h + k0), wk, op.threshold, mask)
                for j in range(wk):
                    out[i * ldh + j] = src[i * ldh + j] * (scale if mask[j] else zero)
        src = out


# -------------------------------------------------------------------------------------- loss ---

cdef inline Py_ssize_t _first_max(const floating *v, Py_ssize_t n) noexcept nogil:
    """Index of the first largest of v[0..n) (NumPy's argmax)."""
    cdef Py_ssize_t best = 0, j
    for j in range(1, n):
        if v[j] > v[best]:
            best = j
    return best


cdef void _loss_rows(Plan *P, RunState *R, Py_ssize_t s, Py_ssize_t m, Py_ssize_t r0,
                     Py_ssize_t r1, floating dummy) noexcept nogil:
    """Loss of rows [r0, r1) of the step's m rows (row_loss, row_hit) and the gradient of the
    batch-mean loss with respect to the last layer's output (into its G)."""
    cdef LayerC *L = &P.layers[P.n_layers - 1]
    cdef Py_ssize_t C = P.n_classes, ld = L.ld_h, i, j, y
    cdef double scale = 1.0 / m, mx, lse, acc, d, zd, yd, e
    cdef const floating *z
    cdef floating *g
    cdef const floating *t
    for i in range(r0, r1):
        z = <const floating *> L.H + i * ld
        g = <floating *> L.GH + i * ld
        if P.loss == LOSS_CE:
            y = P.Lb[s & 1][i]
            lse = log(softmax_row(z, g, C, False, scale, &mx))
            g[y] = <floating> (g[y] - scale)
            P.row_loss[i] = lse - (<double> z[y] - mx)
            P.row_hit[i] = 1.0 if _first_max(z, C) == y else 0.0
        elif P.loss == LOSS_SPARSEMAX:
            y = P.Lb[s & 1][i]
            P.row_loss[i] = sparsemax_loss_row(z, y, <const floating *> NULL, g, C, True, scale,
                                               P.row_scratch + i * C)
            P.row_hit[i] = 1.0 if _first_max(z, C) == y else 0.0
        elif P.loss == LOSS_SPARSEMAX_ROWS or P.loss == LOSS_CE_ROWS:
            t = <const floating *> P.Tb[s & 1] + i * C
            if P.loss == LOSS_CE_ROWS:
                P.row_loss[i] = cross_entropy_prob_row(z, t, g, C, True, scale)
            else:
                P.row_loss[i] = sparsemax_loss_row(z, 0, t, g, C, True, scale,
                                                   P.row_scratch + i * C)
            # (the metric of 2-D class targets: argmax of the row against argmax of the target)
            P.row_hit[i] = 1.0 if _first_max(z, C) == _first_max(t, C) else 0.0
        elif P.loss == LOSS_SQUARED:
            t = <const floating *> P.Tb[s & 1] + i * C
            acc = 0.0
            for j in range(C):
                d = <double> z[j] - <double> t[j]
                acc += d * d
                g[j] = <floating> (scale * d)
            P.row_loss[i] = 0.5 * acc
            P.row_hit[i] = 0.0
        else:
            t = <const floating *> P.Tb[s & 1] + i
            zd = z[0]
            yd = t[0]
            e = fnn_exp_d(-fabs(zd))
            # sigmoid(z) - y without cancellation
            d = ((1.0 - yd) - e / (1.0 + e)) if zd >= 0 else (e / (1.0 + e) - yd)
            g[0] = <floating> (scale * d)
            P.row_loss[i] = (zd if zd > 0 else 0.0) - yd * zd + log1p(e)
            P.row_hit[i] = 1.0 if (zd > 0) == (yd > 0.5) else 0.0


# ---------------------------------------------------------------------------------- backward ---

cdef void _backward_block(Plan *P, LayerC *L, Py_ssize_t m, Py_ssize_t p, Py_ssize_t s,
                          floating dummy) noexcept nogil:
    """Block p of node L, given dL/dH in its GH columns: back through the elementwise modules
    (in place on GH); for a layer then through the group maxima (the winners take GH, the
    other units 0) or the activation (GH is G: it becomes dL/dZ in place), and dW (panel p) =
    X^T dZ and db. (A merge's parents read its GH.)"""
    cdef Py_ssize_t c0 = p * L.bw, w = min(L.bw, L.n_out - c0), ld = L.ld, i, j
    cdef Py_ssize_t k0 = c0 // L.pieces, wk = w // L.pieces, ldh = L.ld_h, u, kp = L.pieces
    cdef floating *G = <floating *> L.G + c0
    cdef floating *GH = <floating *> L.GH + k0
    cdef const int32_t *arg
    cdef const floating *src
    cdef floating scale, zero = 0
    cdef PostOp *op
    cdef unsigned char *mask
    cdef int k
    cdef double *acc
    cdef floating *db
    cdef const floating *X
    cdef Py_ssize_t ldx
    for k in range(L.n_post - 1, -1, -1):
        op = &L.post[k]
        if op.kind == POST_ACT:
            if op.from_input:
                src = (<const floating *> L.Y if k == 0 else
                       <const floating *> L.post[k - 1].out) + k0
            else:
                src = <const floating *> op.out + k0
            for i in range(m):
                act_grad_row(op.code, GH + i * ldh, src + i * ldh, GH + i * ldh, wk)
        else:
            scale = <floating> op.scale
            for i in range(m):
                mask = op.mask + i * ldh + k0
                for j in range(wk):
                    GH[i * ldh + j] = GH[i * ldh + j] * (scale if mask[j] else zero)
    if L.kind != NODE_DENSE:
        return
    if kp > 1:
        for i in range(m):
            arg = L.arg + i * ldh + k0
            for j in range(wk):
                for u in range(kp):
                    G[i * ld + j * kp + u] = GH[i * ldh + j] if u == arg[j] else zero
    if L.code != ACT_IDENTITY:
        src = <const floating *> (L.Z if L.keep_z else L.Y) + c0
        for i in range(m):
            act_grad_row(L.code, G + i * ld, src + i * ld, G + i * ld, w)
    X = _node_out(P, L.par[0], s, &ldx, dummy)
    gemm(True, False, <int> L.n_in, <int> w, <int> m, <floating> 1, X, <int> ldx, G, <int> ld,
         <floating> 0, <floating *> L.dW + L.n_in * c0, <int> w)
    if L.has_bias:
        acc = L.acc + c0
        db = <floating *> L.db + c0
        for j in range(w):
            acc[j] = 0
        for i in range(m):
            for j in range(w):
                acc[j] += G[i * ld + j]
        for j in range(w):
            db[j] = <floating> acc[j]


cdef void _input_grad_block(Plan *P, LayerC *Lq, Py_ssize_t m, Py_ssize_t q, Py_ssize_t s,
                            floating dummy) noexcept nogil:
    """The output columns of block q of node Lq in dL/dH (its GH): the sum, over the nodes that
    read Lq in order (a node that reads it twice: once per use), of what each sends back: a
    layer L the sum over its blocks p, in block order, of dZ[:, block p] W[rows of those
    columns, block p]^T; a concatenation its GH columns of Lq's part; a sum its GH; a product
    its GH times the other factors."""
    cdef Py_ssize_t j0 = q * Lq.bw // Lq.pieces, p, c0, w, i, j, ldx
    cdef Py_ssize_t wj = min(Lq.bw // Lq.pieces, Lq.n_h - j0), ldq = Lq.ld_h, ldc
    cdef floating *Gq = <floating *> Lq.GH + j0
    cdef const floating *src
    cdef const floating *X
    cdef LayerC *L
    cdef int r, slot, k
    cdef bint first
    cdef Py_ssize_t jc, jn
    cdef floating tmp[MUL_CHUNK]
    for r in range(Lq.n_cons):
        L = &P.layers[Lq.cons[r]]
        slot = Lq.cons_slot[r]
        first = r == 0
        if L.kind == NODE_DENSE:
            for p in range(L.nb):
                c0 = p * L.bw
                w = min(L.bw, L.n_out - c0)
                gemm(False, True, <int> m, <int> wj, <int> w, <floating> 1,
                     <const floating *> L.G + c0, <int> L.ld,
                     <const floating *> L.W + L.n_in * c0 + j0 * w, <int> w,
                     <floating> (0 if first and p == 0 else 1), Gq, <int> ldq)
            continue
        ldc = L.ld_h
        src = <const floating *> L.GH + j0 + (L.par_off[slot] if L.kind == NODE_CONCAT else 0)
        if L.kind != NODE_MUL:
            for i in range(m):
                for j in range(wj):
                    Gq[i * ldq + j] = (src[i * ldc + j] if first
                                       else Gq[i * ldq + j] + src[i * ldc + j])
            continue
        # a product: its GH times the other factors in factor order, a row's columns MUL_CHUNK
        # at a time (the factors are looked up once per row and chunk)
        for i in range(m):
            jc = 0
            while jc < wj:
                jn = min(<Py_ssize_t> MUL_CHUNK, wj - jc)
                for j in range(jn):
                    tmp[j] = src[i * ldc + jc + j]
                for k in range(L.n_par):
                    if k != slot:
                        X = _node_out(P, L.par[k], s, &ldx, dummy) + i * ldx + j0 + jc
                        for j in range(jn):
                            tmp[j] = tmp[j] * X[j]
                for j in range(jn):
                    Gq[i * ldq + jc + j] = tmp[j] if first else Gq[i * ldq + jc + j] + tmp[j]
                jc += jn


# ---------------------------------------------------------------------------------- optimizer ---

cdef void _update(OptSpec *o, floating *w, const floating *g, floating *s1, floating *s2,
                  Py_ssize_t n, Py_ssize_t s) noexcept nogil:
    """One optimizer step on n elements, as fastnn.optim's step number t0 + s of the group."""
    cdef int64_t t = o.t0 + s
    cdef double lr, bc1, bc2
    if o.kind == OPT_FROZEN or n == 0:
        return
    lr = o.lr / (1.0 + o.decay * t) if o.decay != 0 else o.lr
    if o.kind == OPT_SGD:
        _sgd_chunk(w, g, s1 if o.momentum != 0 else NULL, n, <floating> lr,
                   <floating> o.momentum, o.nesterov, <floating> o.wd, <floating> o.l1,
                   <floating> o.l1p)
    elif o.kind == OPT_ADAGRAD:
        _adagrad_chunk(w, g, s1, n, <floating> lr, <floating> o.eps, <floating> o.wd,
                       <floating> o.l1, <floating> o.l1p)
    elif o.kind == OPT_RMSPROP:
        _rmsprop_chunk(w, g, s1, s2 if o.momentum != 0 else NULL, n, <floating> lr,
                       <floating> o.alpha, <floating> (1.0 - o.alpha), <floating> o.eps,
                       <floating> o.momentum, <floating> o.wd, <floating> o.l1,
                       <floating> o.l1p)
    else:
        bc1 = 1.0 - pow(o.beta1, <double> (t + 1))
        bc2 = 1.0 - pow(o.beta2, <double> (t + 1))
        _adam_chunk(w, g, s1, s2, n, <floating> (lr / bc1), <floating> lr, <floating> o.beta1,
                    <floating> o.beta2, <floating> (1.0 - o.beta1), <floating> (1.0 - o.beta2),
                    <floating> (1.0 / sqrt(bc2)), <floating> o.eps, <floating> o.wd,
                    <floating> o.l1, <floating> o.l1p)


cdef void _update_block(Plan *P, LayerC *L, Py_ssize_t p, Py_ssize_t s,
                        floating dummy) noexcept nogil:
    cdef Py_ssize_t c0 = p * L.bw, w = min(L.bw, L.n_out - c0), off = L.n_in * c0
    _update(&L.ow, <floating *> L.W + off, <const floating *> L.dW + off,
            (<floating *> L.Ws1 + off) if L.Ws1 != NULL else NULL,
            (<floating *> L.Ws2 + off) if L.Ws2 != NULL else NULL, L.n_in * w, s)
    if L.has_bias:
        _update(&L.ob, <floating *> L.b + c0, <const floating *> L.db + c0,
                (<floating *> L.bs1 + c0) if L.bs1 != NULL else NULL,
                (<floating *> L.bs2 + c0) if L.bs2 != NULL else NULL, w, s)


# ------------------------------------------------------------------------------------ the run ---

cdef void _decide(RunState *R, Py_ssize_t s, int T) noexcept nogil:
    """Thread 0, before the check barrier of step s: is s the run's last step, and should the
    run continue on one thread after it?"""
    cdef int64_t now = fnn_now_ns(), total = 0, span
    cdef int t
    cdef bint last = s + 1 >= R.n_steps or (R.deadline_ns != 0 and now >= R.deadline_ns)
    cdef bint fall = False
    if T > 1 and R.threshold >= 0:
        R.win_steps += 1
        span = now - R.win_t0
        if R.win_steps >= R.min_steps and span >= <int64_t> (R.window_s * 1e9):
            for t in range(T):
                total += fnn_load_i64(&R.waits[t * SLOT])
            fall = (total - R.win_wait0) >= R.threshold * T * <double> span
            R.win_t0 = now
            R.win_wait0 = total
            R.win_steps = 0
    R.flag_last = last
    R.flag_fallback = fall and not last


cdef inline Py_ssize_t _own(Plan *P, LayerC *L, int tid, int T, Py_ssize_t *hi) noexcept nogil:
    """The blocks [lo, hi) of node L that thread tid owns (lo returned, hi stored; call it
    before the loop: range() reads its stop before its start): its part of the contiguous
    range [B t / T, B (t + 1) / T) of its wave's B blocks. The same for the forward, the
    backward and the update, so a thread reads only what it wrote."""
    cdef Py_ssize_t B = P.wave_blocks[L.wave]
    hi[0] = min(_lo(B, T, tid + 1) - L.woff, L.nb)
    return max(_lo(B, T, tid) - L.woff, 0)


cdef inline void _update_own(Plan *P, LayerC *L, Py_ssize_t s, int tid, int T,
                             floating dummy) noexcept nogil:
    cdef Py_ssize_t p, lo, hi
    if L.kind != NODE_DENSE:
        return
    lo = _own(P, L, tid, T, &hi)
    for p in range(lo, hi):
        _update_block(P, L, p, s, dummy)


cdef inline void _update_readers(Plan *P, int w, Py_ssize_t s, int tid, int T,
                                 floating dummy) noexcept nogil:
    """Update the layers whose weights the input gradients of wave w's nodes read."""
    cdef int r, i
    cdef LayerC *L
    for i in range(P.wave_off[w], P.wave_off[w + 1]):
        L = &P.layers[P.wave_nodes[i]]
        for r in range(L.n_upd):
            _update_own(P, &P.layers[L.upd[r]], s, tid, T, dummy)


cdef void _thread(Plan *P, RunState *R, int tid, int T, floating dummy) noexcept nogil:
    """Every step of the run, as thread tid of a team of T.

    The nodes run in waves (nodes of equal depth, which do not read each other; a chain's
    waves are its layers): forward in wave order, with a barrier after each wave but the
    output's, and backward in reverse order, with a barrier after each wave in which an
    input gradient (GH) was computed; after that barrier the layers that read the wave's
    nodes update their weights (their weights were read for those gradients). For wave 0
    (for a chain: layer 0) that update waits for the first barrier of the next step instead
    of a barrier of its own, and the next batch is gathered after that barrier: wave 0 reads
    only inputs, whose batch buffers alternate, so the next step's forward of wave 0
    overwrites nothing its backward still reads (a later wave's backward reads the outputs
    of wave 0: it always ends with a barrier). The last step of a run, and a step before the
    fallback, update at once after a barrier. Layers whose input needs no gradient update at
    the end of the step: no other thread reads their weights in the backward."""
    cdef int sense = 0, nL = P.n_layers, pend = -1, w, nW = P.n_waves, i0
    cdef bint busy
    cdef Py_ssize_t lo, hi
    cdef LayerC *top = &P.layers[nL - 1]
    cdef LayerC *L
    cdef Py_ssize_t s = 0, m, p, q, l, i, j, C = P.n_classes
    cdef double step_loss, step_hit, f, yv, dd
    cdef bint last = False, fall = False
    cdef const floating *H
    cdef const floating *tg
    _gather(P, R, 0, tid, T, dummy)
    _barrier(R, &sense, T, tid)
    while True:
        m = _rows(R, s)
        # forward
        for w in range(nW):
            for i0 in range(P.wave_off[w], P.wave_off[w + 1]):
                L = &P.layers[P.wave_nodes[i0]]
                lo = _own(P, L, tid, T, &hi)
                for p in range(lo, hi):
                    _forward_block(P, L, m, p, s, dummy)
            if w < nW - 1:
                _barrier(R, &sense, T, tid)
            if w == 0 and nW >= 2:
                if pend >= 0:
                    _update_readers(P, pend, s - 1, tid, T, dummy)
                    pend = -1
                if s + 1 < R.n_steps:
                    _gather(P, R, s + 1, tid, T, dummy)
        # loss, and the backward of the output node's blocks
        if top.nb == 1:
            if _lo(1, T, tid) < _lo(1, T, tid + 1):
                _loss_rows(P, R, s, m, 0, m, dummy)
                _backward_block(P, top, m, 0, s, dummy)
        else:
            _barrier(R, &sense, T, tid)
            _loss_rows(P, R, s, m, _lo(m, T, tid), _lo(m, T, tid + 1), dummy)
            _barrier(R, &sense, T, tid)
            for p in range(_lo(top.nb, T, tid), _lo(top.nb, T, tid + 1)):
                _backward_block(P, top, m, p, s, dummy)
        if tid == 0:
            _decide(R, s, T)
        _barrier(R, &sense, T, tid)
        # check: no update when the step's loss is not finite (every thread decides alike)
        step_loss = 0.0
        for i in range(m):
            step_loss += P.row_loss[i]
        if not isfinite(step_loss):
            if tid == 0:
                R.nonfinite_step = s
                R.last_loss = step_loss / m
            break
        last = R.flag_last
        fall = R.flag_fallback
        if tid == 0:
            R.loss_sum += step_loss
            R.last_loss = step_loss / m
            step_hit = 0.0
            for i in range(m):
                step_hit += P.row_hit[i]
            R.hit_sum += step_hit
            if P.loss == LOSS_SQUARED:
                H = <const floating *> top.H
                tg = <const floating *> P.Tb[s & 1]
                for i in range(m):
                    for j in range(C):
                        f = H[i * top.ld_h + j]
                        yv = tg[i * C + j]
                        dd = f - yv
                        R.s1[j] += yv
                        R.s2[j] += yv * yv
                        R.sse[j] += dd * dd
        if nW == 1 and not last:
            _gather(P, R, s + 1, tid, T, dummy)
        # backward through the waves below, each followed by the updates of its readers
        for w in range(nW - 2, -1, -1):
            busy = False
            for i0 in range(P.wave_off[w], P.wave_off[w + 1]):
                L = &P.layers[P.wave_nodes[i0]]
                if not L.need_gh:
                    continue
                busy = True
                lo = _own(P, L, tid, T, &hi)
                for q in range(lo, hi):
                    _input_grad_block(P, L, m, q, s, dummy)
                    _backward_block(P, L, m, q, s, dummy)
            if not busy:
                continue
            if w != 0 or not P.defer or last or fall:
                _barrier(R, &sense, T, tid)
                _update_readers(P, w, s, tid, T, dummy)
            else:
                pend = w
        for l in range(nL):
            if P.layers[l].upd_at_end:
                _update_own(P, &P.layers[l], s, tid, T, dummy)
        if nW == 1:
            _barrier(R, &sense, T, tid)
        s += 1
        if tid == 0:
            R.steps_done = s
        if last:
            break
        if fall:
            # every update of the team is done after this barrier; thread 0 goes on alone
            _barrier(R, &sense, T, tid)
            if tid != 0:
                break
            T = 1
            R.fallback_step = s


# ------------------------------------------------------------------------------- Python class ---

cdef Py_ssize_t _addr(a):
    return <Py_ssize_t> a.__array_interface__["data"][0]


def _aligned(Py_ssize_t n, dtype):
    """A 1-D array of n elements whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    cdef Py_ssize_t item = dtype.itemsize
    buf = np.zeros(n + 64 // item + 1, dtype=dtype)
    cdef Py_ssize_t off = ((64 - _addr(buf) % 64) % 64) // item
    return buf[off:off + n]


_NODE_KINDS = {"dense": NODE_DENSE, "concat": NODE_CONCAT, "add": NODE_ADD, "mul": NODE_MUL}


def _graph(list layers, list inputs):
    """Check the nodes of a plan and derive what the run needs: per node its parents (default:
    the node before, or input 0 for the first), the concatenation offsets, the readers (node,
    slot) in order, whether its backward runs (need_gh: a parameter lies in or behind it), the
    layers updated after its backward (upd) or at the end of a step (upd_at_end); the output
    widths, the input column offsets and the waves (lists of nodes of equal depth; the
    output alone in the last, as every other node is read). A ValueError names what is
    wrong."""
    n = len(layers)
    if not inputs or any(w <= 0 for w in inputs):
        raise ValueError(f"inputs must be positive widths, got {inputs}")
    # (no negative indices: this module is compiled with wraparound off)
    in_off = [0]
    for w in inputs:
        in_off.append(in_off[len(in_off) - 1] + w)
    widths, nodes = [], []
    for l, d in enumerate(layers):
        kind = d.get("kind", "dense")
        if kind not in _NODE_KINDS:
            raise ValueError(f"node {l}: unknown kind {kind!r}")
        par = [int(q) for q in d.get("parents", [l - 1] if l else [-1])]
        if not par or any(not -len(inputs) <= q < l for q in par):
            raise ValueError(f"node {l}: parents {par} must be earlier nodes or inputs "
                             f"(-1 to -{len(inputs)})")
        pw = [inputs[-1 - q] if q < 0 else widths[q] for q in par]
        k = d.get("pieces", 1)
        if d["n_out"] < 1:
            raise ValueError(f"node {l}: {d['n_out']} outputs")
        par_off = [0]
        if kind == "dense":
            if k < 1 or d["n_out"] % k:
                raise ValueError(f"layer {l}: {d['n_out']} units are not groups of {k}")
            if k > 1 and (d["code"] != ACT_IDENTITY or d["keep_z"]):
                raise ValueError(f"layer {l}: the units of a maxout layer are linear")
            if len(par) != 1:
                raise ValueError(f"layer {l} has {len(par)} parents, a layer takes one")
            if d["n_in"] != pw[0]:
                who = f"input {-1 - par[0]}" if par[0] < 0 else f"layer {par[0]}"
                raise ValueError(f"layer {l} takes {d['n_in']} inputs, {who} gives {pw[0]}")
        else:
            if k != 1 or d.get("code", ACT_IDENTITY) != ACT_IDENTITY or d.get("keep_z") \
                    or d.get("has_bias"):
                raise ValueError(f"node {l}: a {kind} node has no units of its own")
            for w in pw:
                par_off.append(par_off[len(par_off) - 1] + w)
            want = par_off[len(par_off) - 1] if kind == "concat" else pw[0]
            if d["n_out"] != want or (kind != "concat" and any(w != want for w in pw)):
                raise ValueError(f"node {l}: a {kind} of widths {pw} does not give "
                                 f"{d['n_out']}")
        widths.append(d["n_out"] // k)
        nodes.append({"par": par, "par_off": par_off, "cons": [], "cons_slot": [], "upd": [],
                      "upd_at_end": False, "dense": kind == "dense"})
    for l, node in enumerate(nodes):
        for j, q in enumerate(node["par"]):
            if q >= 0:
                nodes[q]["cons"].append(l)
                nodes[q]["cons_slot"].append(j)
        node["need_gh"] = node["dense"] or any(q >= 0 and nodes[q]["need_gh"]
                                               for q in node["par"])
    for l in range(n - 1):
        if not nodes[l]["cons"]:
            raise ValueError(f"node {l}: nothing reads its output (only the last node is the "
                             f"output)")
    for l, node in enumerate(nodes):
        q = node["par"][0]
        if node["dense"]:
            if q >= 0 and nodes[q]["need_gh"]:
                nodes[q]["upd"].append(l)
            else:
                node["upd_at_end"] = True
    # waves: nodes of equal depth (the longest path from an input), in node order
    depth = []
    for node in nodes:
        depth.append(1 + max([depth[q] for q in node["par"] if q >= 0], default=-1))
    waves = [[l for l in range(n) if depth[l] == d] for d in range(depth[n - 1] + 1)]
    return {"nodes": nodes, "widths": widths, "in_off": in_off, "waves": waves}


cdef Py_ssize_t _block_width(Py_ssize_t block, Py_ssize_t pieces):
    """Linear columns per block of a layer: ``block`` for a Dense layer; for a maxout layer of
    k pieces whole groups, k times a multiple of 16 outputs (at least 16, at most block / k
    rounded down), so that the edges of the blocks' outputs also fall on 64-byte boundaries."""
    if pieces <= 1:
        return block
    return max(16, block // pieces // 16 * 16) * pieces


@cython.final
cdef class Core:
    """The compiled plan of one network and its buffers (see the module notes).

    Parameters
    ----------
    layers : list of dict
        The nodes in topological order, the output last. Per node: ``kind`` ("dense", the
        default, or the merges "concat", "add", "mul"), ``parents`` (earlier node indices, or
        -1 - i for input i; default: the node before, or input 0 for the first), ``n_out``
        (a merge: its output width) and ``post``: a list of ``("act", code, from_input)`` or
        ``("dropout", p_scale, threshold, seed)`` on the node's outputs. A dense node also has
        ``n_in``, ``code`` (activation code), ``keep_z``, ``has_bias``,
        ``n_state_w``/``n_state_b`` (optimizer state arrays, 0-2) and ``pieces`` (optional;
        k > 1: a maxout layer, whose outputs are the maxima of groups of k adjacent units of
        its ``n_out`` linear ones; the code must then be the identity's).
    loss : str
        A key of LOSS_KINDS.
    dtype : float32 or float64
    block : int
        Columns per block, a positive multiple of 16.
    inputs : list of int or None
        The inputs' widths: input i is the next columns of X (None: one input, the first
        node's n_in).
    """
    cdef Plan P
    cdef object _keep          # the arrays the plan points to
    cdef object _input_keep
    cdef object _rows_keep
    cdef readonly Py_ssize_t rows
    cdef readonly object dtype
    cdef readonly Py_ssize_t block
    cdef readonly int n_layers
    cdef list _specs
    cdef public object last_run     # the dict of the last run() that trained, or None

    def __cinit__(self):
        self.P.layers = NULL
        self.P.n_layers = 0
        self.P.in_mean = NULL
        self.P.in_scale = NULL

    def __init__(self, list layers, str loss, dtype, Py_ssize_t block=BLOCK, inputs=None):
        cdef Py_ssize_t l, k, n_post
        cdef LayerC *L
        cdef int *ip
        cdef Py_ssize_t *sp
        if block <= 0 or block % 16:
            raise ValueError(f"block must be a positive multiple of 16, got {block}")
        if not layers:
            raise ValueError("a plan needs at least one layer")
        if loss not in LOSS_KINDS:
            raise ValueError(f"unknown loss {loss!r}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self.block = block
        self._specs = [dict(d) for d in layers]
        if inputs is None:
            inputs = [layers[0]["n_in"]]
        g = _graph(layers, [int(w) for w in inputs])
        widths = g["widths"]
        self.P.layers = <LayerC *> PyMem_Malloc(len(layers) * sizeof(LayerC))
        if self.P.layers == NULL:
            raise MemoryError()
        self.n_layers = len(layers)
        self.P.n_layers = self.n_layers
        self.P.block = block
        self.P.loss = LOSS_KINDS[loss]
        self.P.n_in = g["in_off"][len(inputs)]
        self.P.ld_in = self._ld(self.P.n_in)
        self.P.n_inputs = len(inputs)
        waves = g["waves"]
        wo = np.asarray([0] + list(np.cumsum([len(wv) for wv in waves])), dtype=np.intc)
        wn = np.asarray([l for wv in waves for l in wv], dtype=np.intc)
        self.P.n_waves = len(waves)
        self.P.wave_off = <int *> _addr(wo)
        self.P.wave_nodes = <int *> _addr(wn)
        self.P.defer = any(g["nodes"][l]["need_gh"] for l in waves[0]) and len(waves) > 1
        self.P.n_classes = widths[len(layers) - 1]
        if self.P.loss == LOSS_BCE and self.P.n_classes != 1:
            raise ValueError("binary cross-entropy needs one output")
        keep = []
        posts = [wo, wn]
        ints = np.asarray(g["in_off"], dtype=np.intp)
        posts.append(ints)
        self.P.in_off = <Py_ssize_t *> _addr(ints)
        for l, d in enumerate(layers):
            L = &self.P.layers[l]
            L.kind = _NODE_KINDS[d.get("kind", "dense")]
            node = g["nodes"][l]
            for name in ("par", "cons", "cons_slot", "upd"):
                a = np.asarray(node[name] or [0], dtype=np.intc)
                posts.append(a)
                ip = <int *> _addr(a)
                if name == "par":
                    L.par = ip
                elif name == "cons":
                    L.cons = ip
                elif name == "cons_slot":
                    L.cons_slot = ip
                else:
                    L.upd = ip
            a = np.asarray(node["par_off"], dtype=np.intp)
            posts.append(a)
            L.par_off = <Py_ssize_t *> _addr(a)
            L.n_par = len(node["par"])
            L.n_cons = len(node["cons"])
            L.n_upd = len(node["upd"])
            L.need_gh = node["need_gh"]
            L.upd_at_end = node["upd_at_end"]
            L.n_in = d["n_in"] if L.kind == NODE_DENSE else 0
            L.n_out = d["n_out"]
            L.ld = self._ld(L.n_out)
            L.pieces = d.get("pieces", 1)
            L.n_h = L.n_out // L.pieces
            L.ld_h = self._ld(L.n_h)
            L.bw = _block_width(block, L.pieces)
            L.nb = (L.n_out + L.bw - 1) // L.bw
            L.code = d["code"]
            L.keep_z = d["keep_z"]
            L.has_bias = d["has_bias"]
            arrs = {}
            for name, size in (("W", L.n_in * L.n_out), ("dW", L.n_in * L.n_out),
                               ("b", L.n_out), ("db", L.n_out)):
                arrs[name] = _aligned(size, self.dtype)
            for i in range(d.get("n_state_w", 0)):
                arrs["Ws%d" % (i + 1)] = _aligned(L.n_in * L.n_out, self.dtype)
            for i in range(d.get("n_state_b", 0)):
                arrs["bs%d" % (i + 1)] = _aligned(L.n_out, self.dtype)
            arrs["acc"] = _aligned(L.n_out, np.float64)
            L.W = <char *> _addr(arrs["W"])
            L.dW = <char *> _addr(arrs["dW"])
            L.b = <char *> _addr(arrs["b"])
            L.db = <char *> _addr(arrs["db"])
            L.Ws1 = <char *> _addr(arrs["Ws1"]) if "Ws1" in arrs else NULL
            L.Ws2 = <char *> _addr(arrs["Ws2"]) if "Ws2" in arrs else NULL
            L.bs1 = <char *> _addr(arrs["bs1"]) if "bs1" in arrs else NULL
            L.bs2 = <char *> _addr(arrs["bs2"]) if "bs2" in arrs else NULL
            L.acc = <double *> _addr(arrs["acc"])
            L.ow.kind = OPT_FROZEN
            L.ob.kind = OPT_FROZEN
            n_post = len(d.get("post", ()))
            L.n_post = n_post
            L.post = NULL
            if n_post:
                buf = np.zeros(n_post * sizeof(PostOp), dtype=np.uint8)
                posts.append(buf)
                L.post = <PostOp *> _addr(buf)
                for k, op in enumerate(d["post"]):
                    if op[0] == "act":
                        L.post[k].kind = POST_ACT
                        L.post[k].code = op[1]
                        L.post[k].from_input = op[2]
                    elif op[0] == "dropout":
                        L.post[k].kind = POST_DROPOUT
                        L.post[k].scale = op[1]
                        L.post[k].threshold = op[2]
                        L.post[k].seed = op[3]
                        L.post[k].calls0 = 0
                    else:
                        raise ValueError(f"unknown elementwise op {op[0]!r}")
                    L.post[k].out = NULL
                    L.post[k].mask = NULL
            keep.append(arrs)
        wb = np.zeros(len(waves), dtype=np.intp)
        for w, wv in enumerate(waves):
            for l in wv:
                L = &self.P.layers[l]
                L.wave = w
                L.woff = wb[w]
                wb[w] += L.nb
        posts.append(wb)
        self.P.wave_blocks = <Py_ssize_t *> _addr(wb)
        self._keep = (keep, posts)
        self.rows = 0
        self._rows_keep = None

    def __dealloc__(self):
        if self.P.layers != NULL:
            PyMem_Free(self.P.layers)
            self.P.layers = NULL

    cdef LayerC *_layer(self, int l) except NULL:
        """Layer l of the plan; IndexError outside [0, n_layers)."""
        if not 0 <= l < self.n_layers:
            raise IndexError(f"layer {l} out of range for a plan of {self.n_layers} layers")
        return &self.P.layers[l]

    def n_blocks(self, int l):
        """The number of column blocks of node l (its threads' work items)."""
        return self._layer(l).nb

    def widest_wave(self):
        """The most blocks of one wave: a thread beyond it would own no work anywhere."""
        return max(self.P.wave_blocks[w] for w in range(self.P.n_waves))

    cdef Py_ssize_t _ld(self, Py_ssize_t n):
        cdef Py_ssize_t per = 64 // self.dtype.itemsize
        return (n + per - 1) // per * per

    def reserve(self, Py_ssize_t rows):
        """Allocate the activation buffers for batches of up to ``rows`` rows."""
        cdef Py_ssize_t l, k
        cdef LayerC *L
        if rows <= self.rows:
            return
        # Every array first (sizes in Python ints), the pointers after: a MemoryError part-way
        # leaves the plan on its previous buffers.
        r, dt = int(rows), self.dtype
        a = {}
        for k in range(2):
            a["X", k] = _aligned(r * self.P.ld_in, dt)
            a["T", k] = _aligned(r * self.P.n_classes, dt)
            a["L", k] = _aligned(r, np.intp)
        a["loss"] = _aligned(r, np.float64)
        a["hit"] = _aligned(r, np.float64)
        if self.P.loss == LOSS_SPARSEMAX or self.P.loss == LOSS_SPARSEMAX_ROWS:
            a["scratch"] = _aligned(r * self.P.n_classes, np.float64)
        for l in range(self.n_layers):
            L = &self.P.layers[l]
            size = r * L.ld
            size_h = r * L.ld_h
            a["Z", l] = _aligned(size, dt)
            if L.keep_z or L.pieces > 1:
                a["Y", l] = _aligned(size_h, dt)
            if L.pieces > 1:
                a["arg", l] = _aligned(size_h, np.int32)
                a["GH", l] = _aligned(size_h, dt)
            for k in range(L.n_post):
                a["out", l, k] = _aligned(size_h, dt)
                if L.post[k].kind == POST_DROPOUT:
                    a["mask", l, k] = _aligned(size_h, np.uint8)
            a["G", l] = _aligned(size, dt)
        for k in range(2):
            self.P.Xb[k] = <char *> _addr(a["X", k])
            self.P.Tb[k] = <char *> _addr(a["T", k])
            self.P.Lb[k] = <Py_ssize_t *> _addr(a["L", k])
        self.P.row_loss = <double *> _addr(a["loss"])
        self.P.row_hit = <double *> _addr(a["hit"])
        self.P.row_scratch = <double *> _addr(a["scratch"]) if "scratch" in a else NULL
        for l in range(self.n_layers):
            L = &self.P.layers[l]
            L.Z = <char *> _addr(a["Z", l])
            L.Y = <char *> _addr(a["Y", l]) if ("Y", l) in a else L.Z
            L.H = L.Y
            for k in range(L.n_post):
                L.post[k].out = <char *> _addr(a["out", l, k])
                L.H = L.post[k].out
                L.post[k].mask = (<unsigned char *> _addr(a["mask", l, k])
                                  if L.post[k].kind == POST_DROPOUT else NULL)
            L.G = <char *> _addr(a["G", l])
            L.GH = <char *> _addr(a["GH", l]) if L.pieces > 1 else L.G
            L.arg = <int32_t *> _addr(a["arg", l]) if L.pieces > 1 else NULL
        self._rows_keep = a
        self.rows = rows

    def _panels(self, int l, str name):
        """The panel array ``name`` (W, dW, b, db, Ws1, Ws2, bs1, bs2) of layer l (tests)."""
        self._layer(l)
        return self._keep[0][l][name]

    def load(self, int l, W, b, Wstates, bstates):
        """Copy layer l's weight (n_in, n_out), bias and optimizer state arrays (lists of 0-2
        arrays shaped like the weight / the bias) into the panels."""
        cdef LayerC *L = self._layer(l)
        arrs = self._keep[0][l]
        B = L.bw
        n_in, n_out = L.n_in, L.n_out
        for src, name in [(W, "W")] + [(a, "Ws%d" % (i + 1)) for i, a in enumerate(Wstates)]:
            dst = arrs[name]
            src = src.reshape(n_in, n_out)
            for p in range(L.nb):
                c0 = p * B
                w = min(B, n_out - c0)
                dst[n_in * c0:n_in * (c0 + w)].reshape(n_in, w)[...] = src[:, c0:c0 + w]
        if L.has_bias:
            arrs["b"][...] = b
            for i, a in enumerate(bstates):
                arrs["bs%d" % (i + 1)][...] = a

    def store(self, int l, W, b, Wstates, bstates, Wgrad, bgrad):
        """The inverse of load, plus the last step's gradients (None: not written)."""
        cdef LayerC *L = self._layer(l)
        arrs = self._keep[0][l]
        B = L.bw
        n_in, n_out = L.n_in, L.n_out
        pairs = [(W, "W")] + [(a, "Ws%d" % (i + 1)) for i, a in enumerate(Wstates)]
        if Wgrad is not None:
            pairs.append((Wgrad, "dW"))
        for dst, name in pairs:
            src = arrs[name]
            dst = dst.reshape(n_in, n_out)
            for p in range(L.nb):
                c0 = p * B
                w = min(B, n_out - c0)
                dst[:, c0:c0 + w] = src[n_in * c0:n_in * (c0 + w)].reshape(n_in, w)
        if L.has_bias:
            b[...] = arrs["b"]
            for i, a in enumerate(bstates):
                a[...] = arrs["bs%d" % (i + 1)]
            if bgrad is not None:
                bgrad[...] = arrs["db"]

    def set_optimizer(self, int l, bint bias, str kind, double lr, double decay,
                      double momentum, bint nesterov, double eps, double alpha, double beta1,
                      double beta2, double wd, double l1, double l1p, long long t0):
        """The update rule of layer l's weight (bias=False) or bias, as fastnn.optim applies
        it at the group's step t0 + s (penalties already 0 for unregularized parameters)."""
        cdef LayerC *L = self._layer(l)
        cdef OptSpec *o = &L.ob if bias else &L.ow
        o.kind = OPT_KINDS[kind]
        o.lr = lr
        o.decay = decay
        o.momentum = momentum
        o.nesterov = nesterov
        o.eps = eps
        o.alpha = alpha
        o.beta1 = beta1
        o.beta2 = beta2
        o.wd = wd
        o.l1 = l1
        o.l1p = l1p
        o.t0 = t0

    def set_input_standardization(self, mean, scale):
        """x' = (x - mean) / scale per input feature before the first layer (a leading
        Normalization module): C-contiguous arrays (n_in,) of the plan's dtype, or None, None
        for none."""
        if mean is None:
            self.P.in_mean = NULL
            self.P.in_scale = NULL
            self._input_keep = None
            return
        mean = np.ascontiguousarray(mean, dtype=self.dtype)
        scale = np.ascontiguousarray(scale, dtype=self.dtype)
        if mean.shape != (self.P.n_in,) or scale.shape != (self.P.n_in,):
            raise ValueError(f"mean and scale must have shape ({self.P.n_in},)")
        self._input_keep = (mean, scale)
        self.P.in_mean = <const char *> _addr(mean)
        self.P.in_scale = <const char *> _addr(scale)

    def set_dropout_calls(self, int l, int k, unsigned long long calls):
        """The training forwards the Dropout module (post op k of layer l) has done."""
        cdef LayerC *L = self._layer(l)
        if not 0 <= k < L.n_post or L.post[k].kind != POST_DROPOUT:
            raise IndexError(f"elementwise op {k} of layer {l} is not a Dropout")
        L.post[k].calls0 = calls

    def run(self, X, y, order, Py_ssize_t start, Py_ssize_t batch_size, Py_ssize_t max_steps,
            double time_budget_s, int n_threads):
        """Train: steps over the rows order[start:], batch_size rows a step, at most max_steps
        steps, stopping after the step that passes time_budget_s seconds (<= 0 or inf: no
        limit).

        X: (N, n_in) C-contiguous, the plan's dtype. y: intp labels (N,) for cross-entropy and
        sparsemax, a C-contiguous (N, n_out) array of the plan's dtype otherwise. order: intp
        (K,) row indices into X. Returns a dict: steps, loss_sum, hit_sum, last_loss (the mean
        loss of the last step run, the non-finite one included), nonfinite_step (-1: none),
        fallback_step (-1: none), s1/s2/sse (squared loss: per-output sums of y, y^2 and of
        the squared errors, float64) and wait_s (total barrier wait of the team).
        """
        cdef RunState R
        cdef Py_ssize_t n_avail
        cdef int T = max(1, n_threads), tid = 0, nt = 1
        cdef bint is_double = self.dtype == np.float64
        cdef float fdummy = 0
        cdef double ddummy = 0
        cdef Plan *P = &self.P
        self.last_run = None
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if X.dtype != self.dtype or X.ndim != 2 or X.shape[1] != self.P.n_in \
                or not X.flags.c_contiguous:
            raise ValueError(f"X must be a C-contiguous (n, {self.P.n_in}) {self.dtype} array")
        order = np.ascontiguousarray(order, dtype=np.intp)
        n = X.shape[0]
        if order.ndim != 1 or (order.size and (order.min() < 0 or order.max() >= n)):
            raise ValueError(f"order must be a 1-D array of row indices in [0, {n})")
        if self.P.loss == LOSS_CE or self.P.loss == LOSS_SPARSEMAX:
            if y.dtype != np.intp or y.shape != (n,) or not y.flags.c_contiguous:
                raise ValueError(f"y must be a C-contiguous intp array of shape ({n},)")
            if n and (y.min() < 0 or y.max() >= self.P.n_classes):
                raise ValueError(f"labels must be in [0, {self.P.n_classes})")
            R.labels = <const Py_ssize_t *> _addr(y)
            R.targets = NULL
        else:
            if y.dtype != self.dtype or y.size != n * self.P.n_classes \
                    or not y.flags.c_contiguous:
                raise ValueError(f"y must be a C-contiguous {self.dtype} array of "
                                 f"{n} x {self.P.n_classes} targets")
            R.targets = <const char *> _addr(y)
            R.labels = NULL
        sums = np.zeros((3, self.P.n_classes), dtype=np.float64)
        out = {"steps": 0, "loss_sum": 0.0, "hit_sum": 0.0, "last_loss": float("nan"),
               "nonfinite_step": -1,
               "fallback_step": -1, "s1": sums[0], "s2": sums[1], "sse": sums[2],
               "wait_s": 0.0}
        n_order = order.shape[0]
        start = max(start, 0)
        n_avail = 0 if start >= n_order else (n_order - start + batch_size - 1) // batch_size
        if max_steps >= 0:
            n_avail = min(n_avail, max_steps)
        if n_avail <= 0:
            return out
        self.reserve(min(batch_size, n_order - start))
        waits = np.zeros(max(T, 1) * SLOT, dtype=np.int64)
        R.X = <const char *> _addr(X)
        R.order = <const Py_ssize_t *> _addr(order)
        R.start = start
        R.n_order = n_order
        R.bs = batch_size   # _rows clips the last batch
        R.n_steps = n_avail
        R.steps_done = 0
        R.nonfinite_step = -1
        R.fallback_step = -1
        R.loss_sum = 0.0
        R.last_loss = float("nan")
        R.hit_sum = 0.0
        R.s1 = <double *> _addr(sums[0])
        R.s2 = <double *> _addr(sums[1])
        R.sse = <double *> _addr(sums[2])
        R.flag_last = 0
        R.flag_fallback = 0
        R.win_steps = 0
        R.win_wait0 = 0
        R.threshold = FALLBACK_THRESHOLD
        R.window_s = FALLBACK_WINDOW_S
        R.min_steps = FALLBACK_MIN_STEPS
        R.spin_ns = SPIN_NS
        R.bar.count = 0
        R.bar.sense = 0
        R.waits = <int64_t *> _addr(waits)
        R.t_start = fnn_now_ns()
        R.win_t0 = R.t_start
        # a budget beyond a year (inf included) is no limit (and no int64 overflow)
        R.deadline_ns = (R.t_start + <int64_t> (time_budget_s * 1e9)
                         if 0 < time_budget_s < 3.2e7 else 0)
        R.n_threads = T
        with nogil:
            blas_request(1)
            if T == 1:
                if is_double:
                    _thread(P, &R, 0, 1, ddummy)
                else:
                    _thread(P, &R, 0, 1, fdummy)
            else:
                with parallel(num_threads=T):
                    tid = omp_get_thread_num()
                    nt = omp_get_num_threads()
                    if is_double:
                        _thread(P, &R, tid, nt, ddummy)
                    else:
                        _thread(P, &R, tid, nt, fdummy)
            blas_release(1)
        out["steps"] = R.steps_done
        out["loss_sum"] = R.loss_sum
        out["hit_sum"] = R.hit_sum
        out["last_loss"] = R.last_loss
        out["nonfinite_step"] = R.nonfinite_step
        out["fallback_step"] = R.fallback_step
        out["elapsed_s"] = (fnn_now_ns() - R.t_start) * 1e-9
        # kept for the caller before any Python code runs: an exception raised from here on
        # (KeyboardInterrupt) loses the return value, not what the steps did
        self.last_run = out
        out["wait_s"] = float(waits.sum()) * 1e-9
        return out
