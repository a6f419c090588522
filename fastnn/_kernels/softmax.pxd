# Design: the row routines of softmax/log-softmax, shared (cimported) by the softmax, sparsemax
# and losses kernels so that each idea lives in one place. A row is C contiguous entries.
#
# The hot loops are small C functions (below, verbatim) written so that the compiler vectorizes
# them at the baseline ISA: sums with 8 explicit double accumulators (a fixed order, so no
# reassociation flag is needed and the result is the same for any thread count), the max with
# `#pragma omp simd reduction(max:...)`, and exp, which is written as a branch-free polynomial
# (Cody-Waite reduction, Taylor polynomial to degree 12 / 7, 2^k built from bits in two steps so
# that gradual underflow is exact) because libm's exp cannot be vectorized without -ffast-math.
# Accuracy: < 3 ulp (float32: < 1.5 ulp) against the correctly rounded exp; exp(-inf) == 0
# exactly, exp(NaN) is NaN.
# Without OpenMP the pragmas are ignored and the loops run scalar with the same results.
# Sums accumulate in double for float32 data.

cdef extern from *:
    """
    #include <math.h>
    #include <stdint.h>
    #include <string.h>

    /* The clamps in exp are comparisons; with GCC's default -ftrapping-math it will not
       if-convert (vectorize) them. Only these helpers are compiled without trapping math:
       results are unchanged, only the FP exception flags may be raised speculatively. */
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC push_options
    #pragma GCC optimize("no-trapping-math")
    /* not inlined into callers compiled with trapping math (where they would not vectorize).
       On x86-64 Linux each helper also gets an AVX2 clone picked at load time (ifunc): twice
       the vector width, the same IEEE operations in the same order (no FMA), so the same
       results bit for bit on every CPU; the baseline build still runs anywhere. */
    #if defined(__x86_64__) && defined(__linux__)
    #define FNN_ROW static __attribute__((noinline, target_clones("avx2", "default")))
    #else
    #define FNN_ROW static __attribute__((noinline))
    #endif
    #else
    #define FNN_ROW static inline
    #endif

    static inline double fnn_exp_d(double x) {
        const double shifter = 6755399441055744.0;   /* 1.5 * 2^52: adding it rounds to integer */
        const double log2e = 1.4426950408889634;
        const double ln2hi = 6.93147180369123816490e-01;
        const double ln2lo = 1.90821492927058770002e-10;
        double t, n, n1, n2, t1, t2, r, r2, r4, r8, p, s1, s2;
        int64_t b1, b2, bs;
        x = x < -746.0 ? -746.0 : x;   /* NaN passes through both clamps */
        x = x > 710.0 ? 710.0 : x;
        t = x * log2e + shifter;
        n = t - shifter;                /* round(x / ln 2), exact integer in double */
        r = (x - n * ln2hi) - n * ln2lo;
        /* Taylor polynomial of degree 12 (truncation error < 2e-16 on |r| <= ln2/2) in
           Estrin's scheme: a short dependency chain, so the vectorized loop is not latency bound */
        r2 = r * r; r4 = r2 * r2; r8 = r4 * r4;
        p = (r + (0.5 + r * (1.0 / 6.0)) * r2)
            + ((1.0 / 24.0 + r * (1.0 / 120.0)) + (1.0 / 720.0 + r * (1.0 / 5040.0)) * r2) * r4
            + (((1.0 / 40320.0 + r * (1.0 / 362880.0))
                + (1.0 / 3628800.0 + r * (1.0 / 39916800.0)) * r2)
               + (1.0 / 479001600.0) * r4) * r8;
        p = 1.0 + p;                    /* the 1 last: the small terms' rounding stays small */
        /* 2^n = 2^n1 * 2^n2 with both halves in the normal range (n in [-1076, 1024]) */
        t1 = n * 0.5 + shifter;
        n1 = t1 - shifter;
        n2 = n - n1;
        t2 = n2 + shifter;
        memcpy(&b1, &t1, 8); memcpy(&b2, &t2, 8); memcpy(&bs, &shifter, 8);
        b1 = (b1 - bs + 1023) << 52;
        b2 = (b2 - bs + 1023) << 52;
        memcpy(&s1, &b1, 8); memcpy(&s2, &b2, 8);
        return (p * s1) * s2;
    }

    static inline float fnn_exp_f(float x) {
        const float shifter = 12582912.0f;           /* 1.5 * 2^23 */
        const float log2e = 1.44269504088896341f;
        const float ln2hi = 0.693145751953125f;
        const float ln2lo = 1.428606765330187045e-06f;
        float t, n, n1, n2, t1, t2, r, r2, r4, p, s1, s2;
        int32_t b1, b2, bs;
        x = x < -104.0f ? -104.0f : x;
        x = x > 89.0f ? 89.0f : x;
        t = x * log2e + shifter;
        n = t - shifter;
        r = (x - n * ln2hi) - n * ln2lo;
        r2 = r * r; r4 = r2 * r2;       /* Taylor degree 7 (error < 6e-9), Estrin */
        p = (r + (0.5f + r * (1.0f / 6.0f)) * r2)
            + ((1.0f / 24.0f + r * (1.0f / 120.0f)) + (1.0f / 720.0f + r * (1.0f / 5040.0f)) * r2) * r4
            + (1.0f / 40320.0f) * (r4 * r4);
        p = 1.0f + p;
        t1 = n * 0.5f + shifter;
        n1 = t1 - shifter;
        n2 = n - n1;
        t2 = n2 + shifter;
        memcpy(&b1, &t1, 4); memcpy(&b2, &t2, 4); memcpy(&bs, &shifter, 4);
        b1 = (int32_t)((uint32_t)(b1 - bs + 127) << 23);
        b2 = (int32_t)((uint32_t)(b2 - bs + 127) << 23);
        memcpy(&s1, &b1, 4); memcpy(&s2, &b2, 4);
        return (p * s1) * s2;
    }

    /* One definition per dtype: T the element type, S the suffix, EXP the exp above.
       fnn_*_in_ are inlined into the row-level FNN_ROW functions (one call per row).
       Sums use 8 independent double accumulators, combined in a fixed order: vectorizable
       without reassociation flags, and the same result for any thread count. */
    /* OpenMP 4.0 simd max-reduction where the compiler has it (not MSVC's OpenMP 2.0). */
    #if defined(_OPENMP) && _OPENMP >= 201307 && !defined(_MSC_VER)
    #define FNN_SIMD_MAX_M _Pragma("omp simd reduction(max:m)")
    #else
    #define FNN_SIMD_MAX_M
    #endif
    #define FNN_ROW_HELPERS(T, S, EXP)                                                       \\
    static inline T fnn_max_in_##S(const T *z, Py_ssize_t n) {                             \\
        T m = z[0];                                                                          \\
        FNN_SIMD_MAX_M                                                                       \\
        for (Py_ssize_t i = 1; i < n; i++) m = z[i] > m ? z[i] : m;                           \\
        return m;                                                                            \\
    }                                                                                        \\
    static inline double fnn_sum_in_##S(const T *a, Py_ssize_t n) {                        \\
        double c[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};                              \\
        Py_ssize_t i = 0;                                                                    \\
        for (; i + 8 <= n; i += 8)                                                           \\
            for (int j = 0; j < 8; j++) c[j] += (double)a[i + j];                            \\
        double s = ((c[0] + c[1]) + (c[2] + c[3])) + ((c[4] + c[5]) + (c[6] + c[7]));        \\
        for (; i < n; i++) s += (double)a[i];                                                \\
        return s;                                                                            \\
    }                                                                                        \\
    static inline double fnn_dot_in_##S(const T *a, const T *b, Py_ssize_t n) {            \\
        double c[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};                              \\
        Py_ssize_t i = 0;                                                                    \\
        for (; i + 8 <= n; i += 8)                                                           \\
            for (int j = 0; j < 8; j++) c[j] += (double)a[i + j] * (double)b[i + j];         \\
        double s = ((c[0] + c[1]) + (c[2] + c[3])) + ((c[4] + c[5]) + (c[6] + c[7]));        \\
        for (; i < n; i++) s += (double)a[i] * (double)b[i];                                 \\
        return s;                                                                            \\
    }                                                                                        \\
    /* a[j] = exp(a[j]) for j < n, n a multiple of 8 (callers pad): no scalar remainder */ \\
    static inline void fnn_exp_inplace_##S(T *a, Py_ssize_t n) {                           \\
        for (Py_ssize_t j = 0; j < n; j++) a[j] = EXP(a[j]);                                 \\
    }                                                                                        \\
    FNN_ROW T fnn_rowmax_##S(const T *z, Py_ssize_t n) { return fnn_max_in_##S(z, n); }    \\
    /* One row of softmax (log_out = 0: out = scale * exp(z - m) / sum) or log-softmax      \\
       (out = (z - m) - log(sum)); out may be NULL (sum only). exp runs in blocks of 256     \\
       through a stack buffer padded to a multiple of 8 (short rows: one pass, no scalar    \\
       remainder, the output scaled straight from the buffer) and is summed block by block  \\
       in the same order on every path, so the loss-only and loss-and-gradient values agree. \\
       Returns sum exp(z - m) (double) and m in *m_out. */                                   \\
    FNN_ROW double fnn_softmax_row_##S(const T *z, T *out, Py_ssize_t n, int log_out,       \\
                                       double scale, double *m_out) {                        \\
        T m = fnn_max_in_##S(z, n);                                                          \\
        T buf[256];                                                                          \\
        int probs = out && !log_out, direct = probs && n <= 256;                             \\
        double s = 0.0;                                                                      \\
        for (Py_ssize_t i = 0; i < n; i += 256) {                                            \\
            Py_ssize_t k = n - i < 256 ? n - i : 256, k8 = (k + 7) & ~(Py_ssize_t)7;         \\
            for (Py_ssize_t j = 0; j < k; j++) buf[j] = z[i + j] - m;                        \\
            for (Py_ssize_t j = k; j < k8; j++) buf[j] = 0;                                  \\
            fnn_exp_inplace_##S(buf, k8);                                                    \\
            s += fnn_sum_in_##S(buf, k);                                                     \\
            if (probs && !direct)                                                            \\
                for (Py_ssize_t j = 0; j < k; j++) out[i + j] = buf[j];                      \\
        }                                                                                    \\
        if (probs) {                                                                         \\
            T c = (T)(scale / s);                                                            \\
            if (direct) for (Py_ssize_t i = 0; i < n; i++) out[i] = buf[i] * c;              \\
            else for (Py_ssize_t i = 0; i < n; i++) out[i] *= c;                             \\
        } else if (out) {                                                                    \\
            T c = (T)log(s);                                                                 \\
            for (Py_ssize_t i = 0; i < n; i++) out[i] = (z[i] - m) - c;                      \\
        }                                                                                    \\
        if (m_out) *m_out = (double)m;                                                       \\
        return s;                                                                            \\
    }                                                                                        \\
    /* softmax VJP: out = p * (g - <p, g>); out may alias g */                               \\
    FNN_ROW void fnn_softmax_vjp_##S(const T *p, const T *g, T *out, Py_ssize_t n) { \\
        T d = (T)fnn_dot_in_##S(p, g, n);                                                       \\
        for (Py_ssize_t i = 0; i < n; i++) out[i] = p[i] * (g[i] - d);                       \\
    }                                                                                        \\
    /* sparsemax output: p = max((z - m) - tau, 0), in double */                           \\
    FNN_ROW void fnn_threshold_##S(const T *z, double m, double tau, T *p, Py_ssize_t n) { \\
        for (Py_ssize_t i = 0; i < n; i++) {                                                 \\
            double v = ((double)z[i] - m) - tau;                                             \\
            p[i] = (T)(v > 0.0 ? v : 0.0);                                                   \\
        }                                                                                    \\
    }                                                                                        \\
    /* sparsemax candidates: out[0:k] = the u = z - m (double) that may be in the support,  \\
       in order; returns k. u is kept when u > lb, lb a lower bound of tau that starts at -1 \\
       (tau >= max(z) - 1) and rises to (sum of the kept u - 1) / k after each block (for any \\
       set A, (sum_A u - 1) / |A| <= tau). Blocks of 16 are first screened with a vectorized \\
       any(u > lb): most of a long row costs one vector compare per entry. *bad: NaN seen. */ \\
    FNN_ROW Py_ssize_t fnn_candidates_##S(const T *z, double m, double *out, Py_ssize_t n,  \\
                                          int *bad) {                                        \\
        Py_ssize_t k = 0;                                                                    \\
        int nan = 0;                                                                         \\
        double lb = -1.0, sum = 0.0;                                                         \\
        for (Py_ssize_t i0 = 0; i0 < n; i0 += 16) {                                          \\
            Py_ssize_t i1 = n - i0 < 16 ? n : i0 + 16;                                       \\
            int any = 0, nb = 0;                                                             \\
            for (Py_ssize_t i = i0; i < i1; i++) {                                           \\
                double u = (double)z[i] - m;                                                 \\
                any |= u > lb;                                                               \\
                nb |= u != u;                                                                \\
            }                                                                                \\
            nan |= nb;                                                                       \\
            if (!any) continue;                                                              \\
            for (Py_ssize_t i = i0; i < i1; i++) {  /* few entries pass: a branch is cheap */ \\
                double u = (double)z[i] - m;                                                 \\
                if (u > lb) {                                                                \\
                    out[k++] = u;                                                            \\
                    sum += u;                                                                \\
                }                                                                            \\
            }                                                                                \\
            if (k > 0 && (sum - 1.0) / k > lb) lb = (sum - 1.0) / k;                         \\
        }                                                                                    \\
        *bad = nan;                                                                          \\
        return k;                                                                            \\
    }                                                                                        \\
    /* log-softmax VJP: out = g - exp(logp) * sum(g); out may alias g */                     \\
    FNN_ROW void fnn_log_softmax_vjp_##S(const T *lp, const T *g, T *out,            \\
                                               Py_ssize_t n) {                               \\
        T sg = (T)fnn_sum_in_##S(g, n);                                                         \\
        for (Py_ssize_t i = 0; i < n; i++) out[i] = g[i] - EXP(lp[i]) * sg;                  \\
    }

    FNN_ROW_HELPERS(double, d, fnn_exp_d)
    FNN_ROW_HELPERS(float, f, fnn_exp_f)

    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC pop_options
    #endif
    """
    double fnn_exp_d(double x) noexcept nogil
    float fnn_exp_f(float x) noexcept nogil
    double fnn_rowmax_d(const double *z, Py_ssize_t n) noexcept nogil
    float fnn_rowmax_f(const float *z, Py_ssize_t n) noexcept nogil
    double fnn_softmax_row_d(const double *z, double *out, Py_ssize_t n, int log_out,
                             double scale, double *m_out) noexcept nogil
    double fnn_softmax_row_f(const float *z, float *out, Py_ssize_t n, int log_out,
                             double scale, double *m_out) noexcept nogil
    void fnn_softmax_vjp_d(const double *p, const double *g, double *out, Py_ssize_t n) noexcept nogil
    void fnn_softmax_vjp_f(const float *p, const float *g, float *out, Py_ssize_t n) noexcept nogil
    Py_ssize_t fnn_candidates_d(const double *z, double m, double *out, Py_ssize_t n,
                                int *bad) noexcept nogil
    Py_ssize_t fnn_candidates_f(const float *z, double m, double *out, Py_ssize_t n,
                                int *bad) noexcept nogil
    void fnn_threshold_d(const double *z, double m, double tau, double *p,
                         Py_ssize_t n) noexcept nogil
    void fnn_threshold_f(const float *z, double m, double tau, float *p,
                         Py_ssize_t n) noexcept nogil
    void fnn_log_softmax_vjp_d(const double *lp, const double *g, double *out,
                               Py_ssize_t n) noexcept nogil
    void fnn_log_softmax_vjp_f(const float *lp, const float *g, float *out,
                               Py_ssize_t n) noexcept nogil

from cython cimport floating


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


cdef inline floating row_max(const floating *z, Py_ssize_t n) noexcept nogil:
    if floating is double:
        return fnn_rowmax_d(z, n)
    else:
        return fnn_rowmax_f(z, n)
