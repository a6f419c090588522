# Design: the row routines of softmax/log-softmax and their vector-Jacobian products, shared
# (cimported) by the softmax and losses kernels so that each idea lives in one place. A row is C
# contiguous entries. exp, the row reductions and the run-time choice of vector width come from
# _math.pxd: each row function below is compiled for SSE2, AVX2+FMA and AVX-512F and picked when
# the module loads; the exp of the softmax rows uses fused multiply-adds in the AVX2 and
# AVX-512F copies (FNN_MV_F: the same bits in both; the SSE2 copy may differ in the last bit of
# an exp, within its accuracy bounds).
#
# One softmax row is two passes over the input and one over the output: the row's max and min
# together; exp(z - m) straight into the output (into a stack buffer of 256 for the loss-only
# and log-softmax paths; a partial last vector is recomputed as an overlapping full one), summed
# block by block in double with 16 accumulators (a fixed order, the same on every path, so the
# loss-only and loss-and-gradient values agree); the scaling. When the row's range max - min is
# within the normal range of exp, exp runs without the steps for clamping and gradual underflow
# (fnn_exp_mid_*: the same bits there, fewer operations). Short rows can instead go through
# fnn_softmax_rows_*, which runs exp over groups of rows, with the same bits.

from fastnn._kernels._math cimport fnn_exp_d, fnn_exp_f, row_max

cdef extern from *:
    """
    #ifndef FASTNN_SOFTMAX_H
    #define FASTNN_SOFTMAX_H
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC push_options
    #pragma GCC optimize("no-trapping-math", "fp-contract=off")
    #endif
    #define FNN_SOFTMAX_HELPERS(T, S, EXP, EXP_MID, MID_LO)                                  \\
    /* d[j] = exp(z[j] - m) for j < k (k <= 256), accumulated into c (entry j -> c[j % 16]) */ \\
    FNN_INLINE void fnn_exp_block_##S(int fu, const T *z, T m, T *d, Py_ssize_t k, int mid,   \\
                                      double *c) {                                           \\
        Py_ssize_t k16 = k & ~(Py_ssize_t)15, j;                                             \\
        if (mid) { for (j = 0; j < k16; j++) d[j] = EXP_MID(fu, z[j] - m); }                 \\
        else { for (j = 0; j < k16; j++) d[j] = EXP(fu, z[j] - m); }                         \\
        if (k16 < k && k >= 16 && (d + k <= z || z + k <= d)) {                              \\
            /* the tail: exp of the last 16 entries again, one vector (no scalar exp) */      \\
            if (mid) { for (j = k - 16; j < k; j++) d[j] = EXP_MID(fu, z[j] - m); }          \\
            else { for (j = k - 16; j < k; j++) d[j] = EXP(fu, z[j] - m); }                  \\
        } else if (k16 < k) {  /* short or in place: the tail as one padded vector */        \\
            T t[16];                                                                         \\
            for (j = 0; j < 16; j++) t[j] = k16 + j < k ? z[k16 + j] - m : (T)0;             \\
            if (mid) { for (j = 0; j < 16; j++) t[j] = EXP_MID(fu, t[j]); }                  \\
            else { for (j = 0; j < 16; j++) t[j] = EXP(fu, t[j]); }                          \\
            for (j = 0; k16 + j < k; j++) d[k16 + j] = t[j];                                 \\
        }                                                                                    \\
        fnn_acc16_##S(c, d, k);                                                              \\
    }                                                                                        \\
    /* One row of softmax (log_out = 0: out = scale * exp(z - m) / sum) or log-softmax      \\
       (out = (z - m) - log(sum)); out may be NULL (sum only). Returns sum exp(z - m)       \\
       (double) and m in *m_out. */                                                          \\
    FNN_INLINE double fnn_softmax_row_##S##_body(int fu, const T *z, T *out, Py_ssize_t n,  \\
                                                 int log_out, double scale, double *m_out) { \\
        T m, mn;                                                                             \\
        fnn_minmax_##S(z, n, &m, &mn);                                                       \\
        int mid = (mn - m) >= MID_LO;  /* false for NaN, inf and -inf */                     \\
        int probs = out && !log_out;                                                         \\
        double c[16] = {0};                                                                  \\
        T buf[256 + 16];                                                                     \\
        /* blocks of 256; the last one takes up to 15 more (so that it has >= 16) */         \\
        for (Py_ssize_t i = 0, k; i < n; i += k) {                                           \\
            k = n - i < 256 + 16 ? n - i : 256;                                              \\
            fnn_exp_block_##S(fu, z + i, m, probs ? out + i : buf, k, mid, c);               \\
        }                                                                                    \\
        double s = FNN_TREE16(c);                                                            \\
        if (probs) {                                                                         \\
            T f = (T)(scale / s);                                                            \\
            for (Py_ssize_t i = 0; i < n; i++) out[i] *= f;                                  \\
        } else if (out) {                                                                    \\
            T f = (T)log(s);                                                                 \\
            for (Py_ssize_t i = 0; i < n; i++) out[i] = (z[i] - m) - f;                      \\
        }                                                                                    \\
        if (m_out) *m_out = (double)m;                                                       \\
        return s;                                                                            \\
    }                                                                                        \\
    FNN_MV_F(double, fnn_softmax_row_##S, (const T *z, T *out, Py_ssize_t n, int log_out,    \\
                                         double scale, double *m_out),                       \\
           (z, out, n, log_out, scale, m_out))                                               \\
    /* Softmax (probabilities) of n_rows short rows of c entries: the same bits as         \\
       fnn_softmax_row_* (scale 1) row by row, with exp run over groups of rows of about   \\
       1024 entries: one short row at a time leaves the vector units waiting on the exp's   \\
       latency. out holds z - m first, then exp of it, then the probabilities. */           \\
    FNN_INLINE void fnn_softmax_rows_##S##_body(int fu, const T *z, T *out, Py_ssize_t n_rows, \\
                                                Py_ssize_t c) {                              \\
        Py_ssize_t g = c < 1024 ? 1024 / c : 1;                                              \\
        for (Py_ssize_t r0 = 0; r0 < n_rows; r0 += g) {                                      \\
            Py_ssize_t r1 = n_rows - r0 < g ? n_rows : r0 + g, len = (r1 - r0) * c;           \\
            int mid = 1;                                                                     \\
            for (Py_ssize_t r = r0; r < r1; r++) {                                           \\
                const T *zr = z + r * c;                                                     \\
                T *o = out + r * c;                                                          \\
                T m, mn;                                                                     \\
                fnn_minmax_##S(zr, c, &m, &mn);                                              \\
                mid &= (mn - m) >= MID_LO;                                                   \\
                for (Py_ssize_t i = 0; i < c; i++) o[i] = zr[i] - m;                         \\
            }                                                                                \\
            T *o = out + r0 * c;                                                             \\
            if (mid) { for (Py_ssize_t i = 0; i < len; i++) o[i] = EXP_MID(fu, o[i]); }      \\
            else { for (Py_ssize_t i = 0; i < len; i++) o[i] = EXP(fu, o[i]); }              \\
            for (Py_ssize_t r = r0; r < r1; r++) {                                           \\
                T *orow = out + r * c;                                                       \\
                double acc[16] = {0};                                                        \\
                fnn_acc16_##S(acc, orow, c);                                                 \\
                T f = (T)(1.0 / FNN_TREE16(acc));                                            \\
                for (Py_ssize_t i = 0; i < c; i++) orow[i] *= f;                             \\
            }                                                                                \\
        }                                                                                    \\
    }                                                                                        \\
    FNN_MV_F_VOID(fnn_softmax_rows_##S, (const T *z, T *out, Py_ssize_t n_rows, Py_ssize_t c), \\
                (z, out, n_rows, c))                                                         \\
    /* softmax VJP: out = p * (g - <p, g>); out may alias g */                               \\
    FNN_INLINE void fnn_softmax_vjp_##S##_body(const T *p, const T *g, T *out, Py_ssize_t n) { \\
        T d = (T)fnn_dot_in_##S(p, g, n);                                                    \\
        for (Py_ssize_t i = 0; i < n; i++) out[i] = p[i] * (g[i] - d);                       \\
    }                                                                                        \\
    FNN_MV_VOID(fnn_softmax_vjp_##S, (const T *p, const T *g, T *out, Py_ssize_t n),         \\
                (p, g, out, n))                                                              \\
    /* log-softmax VJP: out = g - exp(logp) * sum(g); out may alias g */                     \\
    FNN_INLINE void fnn_log_softmax_vjp_##S##_body(int fu, const T *lp, const T *g, T *out,  \\
                                                   Py_ssize_t n) {                           \\
        T sg = (T)fnn_sum_in_##S(g, n);                                                      \\
        for (Py_ssize_t i = 0; i < n; i++) out[i] = g[i] - EXP(fu, lp[i]) * sg;              \\
    }                                                                                        \\
    FNN_MV_F_VOID(fnn_log_softmax_vjp_##S, (const T *lp, const T *g, T *out, Py_ssize_t n),  \\
                (lp, g, out, n))

    FNN_SOFTMAX_HELPERS(double, d, fnn_exp_fu_d, fnn_exp_mid_fu_d, FNN_EXP_MID_LO_D)
    FNN_SOFTMAX_HELPERS(float, f, fnn_exp_fu_f, fnn_exp_mid_fu_f, FNN_EXP_MID_LO_F)

    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC pop_options
    #endif
    #endif  /* FASTNN_SOFTMAX_H */
    """
    double fnn_softmax_row_d(const double *z, double *out, Py_ssize_t n, int log_out,
                             double scale, double *m_out) noexcept nogil
    double fnn_softmax_row_f(const float *z, float *out, Py_ssize_t n, int log_out,
                             double scale, double *m_out) noexcept nogil
    void fnn_softmax_rows_d(const double *z, double *out, Py_ssize_t n_rows,
                            Py_ssize_t c) noexcept nogil
    void fnn_softmax_rows_f(const float *z, float *out, Py_ssize_t n_rows,
                            Py_ssize_t c) noexcept nogil
    void fnn_softmax_vjp_d(const double *p, const double *g, double *out, Py_ssize_t n) noexcept nogil
    void fnn_softmax_vjp_f(const float *p, const float *g, float *out, Py_ssize_t n) noexcept nogil
    void fnn_log_softmax_vjp_d(const double *lp, const double *g, double *out,
                               Py_ssize_t n) noexcept nogil
    void fnn_log_softmax_vjp_f(const float *lp, const float *g, float *out,
                               Py_ssize_t n) noexcept nogil

from cython cimport floating
from libc.math cimport log


cdef inline double softmax_row(const floating *z, floating *out, Py_ssize_t n, bint log_out,
                               double scale, double *m_out) noexcept nogil:
    """Softmax (or log-softmax when log_out) of one row of n >= 1 entries into out.

    softmax: out = scale * exp(z - m) / sum exp(z - m), m = max(z) (scale is ignored by
    log-softmax). Returns sum exp(z - m) (double; log of it is the shifted log-sum-exp) and
    stores m in m_out (if not NULL); out may be NULL (nothing written: the loss-only path).
    NaN, +inf or an all -inf row gives NaN.
    """
    if floating is double:
        return fnn_softmax_row_d(z, out, n, log_out, scale, m_out)
    else:
        return fnn_softmax_row_f(z, out, n, log_out, scale, m_out)


cdef inline double cross_entropy_prob_row(const floating *z, const floating *q, floating *g,
                                          Py_ssize_t c, bint need_grad,
                                          double scale) noexcept nogil:
    """Cross-entropy of one row of logits z (c entries) against the non-negative target row q:
    -sum_j q_j log softmax(z)_j; g = scale * (softmax(z) sum(q) - q) when need_grad."""
    cdef double m, loss = 0.0, q_sum = 0.0
    cdef double lse
    cdef Py_ssize_t j
    for j in range(c):
        q_sum += q[j]
    lse = log(softmax_row(z, g if need_grad else NULL, c, False, scale * q_sum, &m))
    for j in range(c):
        if q[j] != 0:  # 0 * log 0 = 0 (also for z_j = -inf)
            loss += q[j] * (lse - (<double>z[j] - m))
    if need_grad:
        for j in range(c):
            g[j] = <floating>(g[j] - scale * q[j])
    return loss
