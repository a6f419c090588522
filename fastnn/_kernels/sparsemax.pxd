# Design: the row routines of sparsemax (Martins & Astudillo 2016), shared by the sparsemax and
# losses kernels. sparsemax(z) = max(z - tau, 0) with tau such that the output sums to 1.
#
# Everything works in shifted coordinates u = z - max(z) (so tau is in [-1, 0) and 1 + u never
# loses u, even when |z| >= 2^53) and in double, whatever the data type. Only the candidates
# u > -1 can be in the support (tau >= max(z) - 1), so every method first collects them into a
# double scratch of n_cols entries (also checking for NaN), then finds tau among them. The
# screen is tightened on the way: for any set A of entries, (sum_A u - 1) / |A| <= tau, so an
# entry at or below that bound (computed from the candidates kept so far) is skipped too.
#
# SORT    the lecture's algorithm on the whole row: sort u descending, k = max{k: 1 + k u_(k) >
#         sum_{j<=k} u_(j)}, tau = (sum_{j<=k} u_(j) - 1) / k. O(C log C); the reference path.
# SELECT  linear-time selection on the candidates: partition around a pivot v (three ways),
#         decide from the partial sums whether v is in the support, and keep the half that still
#         holds tau. Pivots are medians of three; after two steps that kept more than 3/4 of the
#         range, the pivot is the median of medians (groups of 5) - a worst-case linear bound.
#         Deterministic: no random pivots.
# AUTO    Michelot's variable fixing from tau_0 = (sum of candidates - 1) / #candidates <= tau:
#         drop the candidates <= tau, recompute tau, repeat until nothing is dropped. tau grows
#         monotonically and each pass is a tight sequential scan, so it is fastest in practice;
#         after MICHELOT_MAX_PASSES passes the remaining candidates go to SELECT, which keeps
#         the worst case linear.
#
# NaN anywhere, +inf anywhere, or every entry -inf: the row is NaN (status 1). -inf entries of
# a row with a finite maximum get exactly 0.

from libc.math cimport INFINITY, NAN
from libc.stdlib cimport qsort
from cython cimport floating

from fastnn._kernels._math cimport row_max

# The two row scans (candidates and output) are compiled for SSE2, AVX2 and AVX-512F and picked
# when the module loads (_math.pxd); the same results on each.
cdef extern from *:
    """
    #ifndef FASTNN_SPARSEMAX_H
    #define FASTNN_SPARSEMAX_H
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC push_options
    #pragma GCC optimize("no-trapping-math", "fp-contract=off")
    #endif
    #define FNN_SPARSEMAX_HELPERS(T, S)                                                      \\
    /* sparsemax output: p = max((z - m) - tau, 0), in double */                           \\
    FNN_INLINE void fnn_threshold_##S##_body(const T *z, double m, double tau, T *p,        \\
                                             Py_ssize_t n) {                                 \\
        for (Py_ssize_t i = 0; i < n; i++) {                                                 \\
            double v = ((double)z[i] - m) - tau;                                             \\
            p[i] = (T)(v > 0.0 ? v : 0.0);                                                   \\
        }                                                                                    \\
    }                                                                                        \\
    FNN_MV_VOID(fnn_threshold_##S, (const T *z, double m, double tau, T *p, Py_ssize_t n),  \\
                (z, m, tau, p, n))                                                           \\
    /* sparsemax candidates: out[0:k] = the u = z - m (double) that may be in the support,  \\
       in order; returns k. u is kept when u > lb, lb a lower bound of tau that starts at -1 \\
       (tau >= max(z) - 1) and rises to (sum of the kept u - 1) / k after each block (for any \\
       set A, (sum_A u - 1) / |A| <= tau). Blocks of 32 are first screened with a vectorized \\
       any(u > lb): most of a long row costs one vector compare per entry. *bad: NaN seen. */ \\
    FNN_INLINE Py_ssize_t fnn_candidates_##S##_body(const T *z, double m, double *out,      \\
                                                    Py_ssize_t n, int *bad) {                \\
        Py_ssize_t k = 0;                                                                    \\
        int nan = 0;                                                                         \\
        double lb = -1.0, sum = 0.0;                                                         \\
        for (Py_ssize_t i0 = 0; i0 < n; i0 += 32) {                                          \\
            Py_ssize_t i1 = n - i0 < 32 ? n : i0 + 32;                                       \\
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
    FNN_MV(Py_ssize_t, fnn_candidates_##S, (const T *z, double m, double *out, Py_ssize_t n, \\
                                            int *bad), (z, m, out, n, bad))

    FNN_SPARSEMAX_HELPERS(double, d)
    FNN_SPARSEMAX_HELPERS(float, f)

    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC pop_options
    #endif
    #endif  /* FASTNN_SPARSEMAX_H */
    """
    Py_ssize_t fnn_candidates_d(const double *z, double m, double *out, Py_ssize_t n,
                                int *bad) noexcept nogil
    Py_ssize_t fnn_candidates_f(const float *z, double m, double *out, Py_ssize_t n,
                                int *bad) noexcept nogil
    void fnn_threshold_d(const double *z, double m, double tau, double *p,
                         Py_ssize_t n) noexcept nogil
    void fnn_threshold_f(const float *z, double m, double tau, float *p,
                         Py_ssize_t n) noexcept nogil

cdef enum:
    SPARSEMAX_SORT = 0
    SPARSEMAX_SELECT = 1
    SPARSEMAX_AUTO = 2
    SPARSEMAX_AUTO_HANDOVER_NOW = 3  # tests only: "auto" handing over to select after 1 pass
    MICHELOT_MAX_PASSES = 16


cdef inline int _cmp_desc(const void *a, const void *b) noexcept nogil:
    cdef double x = (<const double *>a)[0], y = (<const double *>b)[0]
    return (x < y) - (x > y)


cdef inline void _insertion_sort(double *a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef double v
    for i in range(1, n):
        v = a[i]
        j = i - 1
        while j >= 0 and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v


cdef inline void _partition3(double *a, Py_ssize_t n, double v, Py_ssize_t *n_lt,
                             Py_ssize_t *n_eq) noexcept nogil:
    """Dutch flag: a -> [< v | == v | > v]; returns the sizes of the first two parts."""
    cdef Py_ssize_t lt = 0, i = 0, gt = n
    cdef double x
    while i < gt:
        x = a[i]
        if x < v:
            a[i] = a[lt]
            a[lt] = x
            lt += 1
            i += 1
        elif x > v:
            gt -= 1
            a[i] = a[gt]
            a[gt] = x
        else:
            i += 1
    n_lt[0] = lt
    n_eq[0] = gt - lt


cdef inline double _median3(double a, double b, double c) noexcept nogil:
    if a < b:
        if b < c:
            return b
        return c if a < c else a
    if a < c:
        return a
    return c if b < c else b


cdef inline double _mom_pivot(double *a, Py_ssize_t n) noexcept nogil:
    """Median of the medians of groups of 5 (reorders a): >= 3/10 of a on each side."""
    cdef Py_ssize_t g, size, n_groups = 0
    cdef double tmp
    for g in range(0, n, 5):
        size = n - g if n - g < 5 else 5
        _insertion_sort(a + g, size)
        tmp = a[n_groups]
        a[n_groups] = a[g + size // 2]
        a[g + size // 2] = tmp
        n_groups += 1
    return _select_kth(a, n_groups, n_groups // 2)


cdef inline double _select_kth(double *a, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """k-th smallest (0-based) of a[:n], reordering a; worst-case linear (introselect)."""
    cdef Py_ssize_t n_lt, n_eq, new_n
    cdef int bad = 0
    cdef double v
    while n > 8:
        v = _mom_pivot(a, n) if bad >= 2 else _median3(a[0], a[n // 2], a[n - 1])
        _partition3(a, n, v, &n_lt, &n_eq)
        if k < n_lt:
            new_n = n_lt
        elif k < n_lt + n_eq:
            return v
        else:
            a += n_lt + n_eq
            k -= n_lt + n_eq
            new_n = n - n_lt - n_eq
        bad = bad + 1 if 4 * new_n > 3 * n else 0
        n = new_n
    _insertion_sort(a, n)
    return a[k]


cdef inline double _tau_select(double *a, Py_ssize_t n, double s, Py_ssize_t k) noexcept nogil:
    """tau from the candidates a[:n], given the sum s and count k of entries known to be in the
    support and greater than all of a (s = k = 0 at the start). Reorders a."""
    cdef Py_ssize_t n_lt, n_eq, i, n_ge, new_n
    cdef double v, s_ge
    cdef int bad = 0
    while n > 0:
        v = _mom_pivot(a, n) if bad >= 2 else _median3(a[0], a[n // 2], a[n - 1])
        _partition3(a, n, v, &n_lt, &n_eq)
        s_ge = n_eq * v
        for i in range(n_lt + n_eq, n):
            s_ge += a[i]
        n_ge = n - n_lt
        if (s + s_ge) - (k + n_ge) * v < 1.0:
            # v (and everything >= v) is in the support: continue below v
            s += s_ge
            k += n_ge
            new_n = n_lt
        else:
            # v is not in the support, so nothing <= v is: continue above v
            a += n_lt + n_eq
            new_n = n - n_lt - n_eq
        bad = bad + 1 if 4 * new_n > 3 * n else 0
        n = new_n
    return (s - 1.0) / k


cdef inline double _tau_michelot(double *a, Py_ssize_t n, int max_passes) noexcept nogil:
    """tau from the candidates a[:n] (a superset of the support) by variable fixing."""
    cdef Py_ssize_t i, j, passes = 0
    cdef double s = 0.0, s_new, tau, x
    for i in range(n):
        s += a[i]
    tau = (s - 1.0) / n
    while True:
        j = 0
        s_new = 0.0
        for i in range(n):
            x = a[i]
            if x > tau:
                a[j] = x
                j += 1
                s_new += x
        if j == n:
            return tau
        n = j
        s = s_new
        tau = (s - 1.0) / n
        passes += 1
        if passes >= max_passes:
            return _tau_select(a, n, 0.0, 0)


cdef inline double _tau_sort(double *a, Py_ssize_t n) noexcept nogil:
    """The lecture's algorithm on a[:n] (all of the row, shifted)."""
    cdef Py_ssize_t k, k_best = 1
    cdef double cum = 0.0, cum_best = 0.0
    qsort(a, n, sizeof(double), _cmp_desc)
    for k in range(1, n + 1):
        cum += a[k - 1]
        if 1.0 + k * a[k - 1] > cum:
            k_best = k
            cum_best = cum
    return (cum_best - 1.0) / k_best


cdef inline int sparsemax_tau(const floating *z, Py_ssize_t n, int method, double *scratch,
                              double *m_out, double *tau_out) noexcept nogil:
    """Threshold of one row of n >= 1 entries, in shifted coordinates: sparsemax(z)_i =
    max((z_i - m) - tau, 0) with m = max(z). scratch holds n doubles. Returns 0, or 1 for a NaN
    row (NaN, +inf, or all -inf; m_out and tau_out are then NaN)."""
    cdef double m = row_max(z, n), u
    cdef Py_ssize_t i, n_cand = 0
    cdef bint bad = not (-INFINITY < m < INFINITY)
    cdef int nan_found = 0
    if method == SPARSEMAX_SORT:
        for i in range(n):
            u = <double>z[i] - m
            bad |= u != u
            scratch[i] = u
        n_cand = n
    else:
        if floating is double:
            n_cand = fnn_candidates_d(z, m, scratch, n, &nan_found)
        else:
            n_cand = fnn_candidates_f(z, m, scratch, n, &nan_found)
        bad |= nan_found
    if bad:
        m_out[0] = NAN
        tau_out[0] = NAN
        return 1
    m_out[0] = m
    if method == SPARSEMAX_SORT:
        tau_out[0] = _tau_sort(scratch, n_cand)
    elif method == SPARSEMAX_SELECT:
        tau_out[0] = _tau_select(scratch, n_cand, 0.0, 0)
    else:
        tau_out[0] = _tau_michelot(scratch, n_cand, 1 if method == SPARSEMAX_AUTO_HANDOVER_NOW
                                   else MICHELOT_MAX_PASSES)
    return 0


cdef inline void sparsemax_write(const floating *z, Py_ssize_t n, double m, double tau,
                                 floating *p) noexcept nogil:
    """p_i = max((z_i - m) - tau, 0), computed in double (NaN row when m is NaN)."""
    cdef Py_ssize_t i
    if floating is double:
        fnn_threshold_d(z, m, tau, p, n)
    else:
        fnn_threshold_f(z, m, tau, p, n)
    if m != m:
        for i in range(n):
            p[i] = <floating>NAN


cdef inline int sparsemax_row(const floating *z, floating *p, Py_ssize_t n, int method,
                              double *scratch) noexcept nogil:
    cdef double m, tau
    cdef int status = sparsemax_tau(z, n, method, scratch, &m, &tau)
    sparsemax_write(z, n, m, tau, p)
    return status


cdef inline double sparsemax_loss_row(const floating *z, Py_ssize_t y, const floating *q,
                                      floating *g, Py_ssize_t c, bint need_grad, double scale,
                                      double *scratch) noexcept nogil:
    """The sparsemax loss of one row z (c entries) for the single label y (q NULL) or the target
    distribution q (any non-negative row, normalized here); g = scale * (sparsemax(z) - q)
    when need_grad. scratch: c doubles. NaN (and a NaN gradient) for a non-finite row."""
    cdef double m, tau, p, d, t, acc = 0.0, hinge = 0.0, q_sum = 0.0, qj
    cdef Py_ssize_t j
    if sparsemax_tau(z, c, SPARSEMAX_AUTO, scratch, &m, &tau):
        if need_grad:
            for j in range(c):
                g[j] = <floating>NAN
        return NAN
    if q == NULL:
        for j in range(c):
            p = (<double>z[j] - m) - tau
            p = p if p > 0.0 else 0.0
            d = p - 1.0 if j == y else p
            acc += d * d
            if need_grad:
                g[j] = <floating>(scale * d)
        t = tau - (<double>z[y] - m)
        return 0.5 * acc + (t if t > 0.0 else 0.0)
    for j in range(c):
        q_sum += q[j]
    for j in range(c):
        p = (<double>z[j] - m) - tau
        p = p if p > 0.0 else 0.0
        qj = q[j] / q_sum
        d = p - qj
        acc += d * d
        if need_grad:
            g[j] = <floating>(scale * d)
        if qj != 0.0:
            t = tau - (<double>z[j] - m)
            hinge += qj * (t if t > 0.0 else 0.0)
    return 0.5 * acc + hinge
