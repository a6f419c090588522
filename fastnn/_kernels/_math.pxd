# Design: the elementary functions and row reductions every kernel shares (exp, expm1, log1p on
# [0, 1], the row max, the fixed-order sums), and the run-time choice of vector width. One
# definition each; the softmax, sparsemax, activation and loss kernels cimport them.
#
# exp is a branch-free polynomial because libm's exp cannot be vectorized without -ffast-math:
# Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2; e^r by a degree-6 minimax polynomial in
# Horner's scheme (float32) or the degree-13 Taylor polynomial in Estrin's scheme (float64);
# 2^n from the exponent bits in two steps, so that gradual underflow is rounded once. Each
# a * b + c of the reduction and the polynomial is one FNN_MADD: a fused multiply-add (one
# rounding) or a multiply and an add, as a compile-time constant fu says (below). Accuracy over
# a dense sweep of the whole range against NumPy (tests/test_math.py), both forms: float32
# < 1.5 ulp (subnormal results within one step), float64 < 3 ulp; exp(-inf) == 0, results below
# half the smallest subnormal are 0, overflow gives +inf, exp(NaN) is NaN.
# expm1: the same reduction, e^x - 1 = 2^n (e^r - 1) + (2^n - 1), no cancellation near 0
# (float32 < 2 ulp, float64 < 4 ulp). log1p (float32, x in [0, 1], for
# softplus): 2 atanh(x / (2 + x)) by its series.
#
# Vector width at run time (x86-64 with GCC or clang): a hot row function is written once as an
# always-inline body and compiled three times by FNN_MV / FNN_MV_VOID - for the SSE2 baseline,
# for AVX2+FMA and for AVX-512F - and a dispatcher calls the widest one the CPU (and the OS)
# support (AVX2 only with FMA). The level is read once when the extension module loads; the
# environment variable FASTNN_SIMD (baseline | avx2 | avx512) caps it, for tests and
# comparisons. Every function here is compiled with FP contraction off: the compiler fuses
# nothing by itself. Fused multiply-adds are explicit and at fixed places: the exp and expm1 of
# the functions built by FNN_MV_F / FNN_MV_F_VOID (the softmax and log-softmax rows, and the
# exp test arrays) - their bodies take the constant fu first, 1 in the AVX2 and AVX-512F copies
# (the float32 exp of the softmax row: 15 vector operations per vector instead of 23) and
# FNN_FUSED_BASE in the baseline copy.
# FNN_FUSED_BASE is 0 on x86-64 (SSE2 has no FMA; a libm fma() call per element would be slow)
# and 1 where the compile-time target has a hardware FMA (aarch64, where FNN_MV is a plain
# function; x86-64 built with -mfma). So the copies with the same fu give the same bits - the
# AVX2 and AVX-512F copies always - and the x86-64 baseline copy may differ from them in the
# last bit, within the accuracy bounds above. The fnn_exp_d/_f and fnn_expm1_d/_f of scalar
# code and of the activation row loops use FNN_FUSED_BASE at every width (the activation rows
# give the same bits as the scalar element functions and at every width). No -march flag is
# involved: the baseline copy runs on any x86-64 CPU. Elsewhere FNN_MV is a plain function.

cdef extern from *:
    """
    #ifndef FASTNN_MATH_H
    #define FASTNN_MATH_H
    #include <math.h>
    #include <stdint.h>
    #include <stdlib.h>
    #include <string.h>

    /* The clamps below are comparisons; with GCC's default -ftrapping-math it will not if-convert
       (vectorize) them. Everything in this header is compiled without trapping math (results
       unchanged; only FP exception flags may be raised speculatively) and without FP
       contraction (an FMA only where FNN_MADD_* asks for one). */
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC push_options
    #pragma GCC optimize("no-trapping-math", "fp-contract=off")
    #elif defined(__clang__)
    #pragma STDC FP_CONTRACT OFF
    #endif

    #if defined(__GNUC__) || defined(__clang__)
    #define FNN_INLINE static inline __attribute__((always_inline))
    #else
    #define FNN_INLINE static inline
    #endif

    /* FNN_MADD_D/F(fu, a, b, c) = a * b + c, with one rounding (a fused multiply-add) when the
       compile-time constant fu is 1 and two (a multiply, then an add) when it is 0. exp and expm1
       below take fu and use it at fixed places, so that every copy with fu = 1 gives the same
       bits, and every copy with fu = 0 the same bits as each other. FNN_FUSED_BASE is fu for
       code built for the compile-time target (the baseline copy, scalar callers): 1 where that
       target has a hardware FMA (__FP_FAST_FMA: aarch64, or x86-64 built with -mfma), else 0
       (x86-64's SSE2 baseline: fma() would be a slow library call). */
    #if defined(__FP_FAST_FMA) && defined(__FP_FAST_FMAF)
    #define FNN_FUSED_BASE 1
    #else
    #define FNN_FUSED_BASE 0
    #endif
    #if defined(__GNUC__) || defined(__clang__)
    #define FNN_FMA_D(a, b, c) __builtin_fma((a), (b), (c))
    #define FNN_FMA_F(a, b, c) __builtin_fmaf((a), (b), (c))
    #else
    #define FNN_FMA_D(a, b, c) fma((a), (b), (c))
    #define FNN_FMA_F(a, b, c) fmaf((a), (b), (c))
    #endif
    #define FNN_MADD_D(fu, a, b, c) ((fu) ? FNN_FMA_D(a, b, c) : (a) * (b) + (c))
    #define FNN_MADD_F(fu, a, b, c) ((fu) ? FNN_FMA_F(a, b, c) : (a) * (b) + (c))
    #define FNN_UNPAREN(...) __VA_ARGS__

    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(_MSC_VER)
    #define FNN_MULTIVERSION 1
    /* The vector levels of fastnn's kernels: 0 baseline (SSE2), 1 AVX2 (with FMA), 2 AVX-512F,
       3 AVX-512F with AVX512-BF16 (the bfloat16 products, _bf16.pxd). fnn_cpu_level: the widest
       this CPU and OS support, up to `top`; fnn_capped_level: a level capped by FASTNN_SIMD
       (baseline | avx2 | avx512), read when a module loads. */
    static inline int fnn_cpu_level(int top) {
        __builtin_cpu_init();
        if (top < 1 || !__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
            return 0;
        if (top < 2 || !__builtin_cpu_supports("avx512f")) return 1;
    #if defined(__clang__) || __GNUC__ >= 10
        if (top >= 3 && __builtin_cpu_supports("avx512bf16")) return 3;
    #endif
        return 2;
    }
    static inline int fnn_capped_level(int hw) {
        int want = hw;
        const char *e = getenv("FASTNN_SIMD");
        if (e && (!strcmp(e, "baseline") || !strcmp(e, "default") || !strcmp(e, "sse2"))) want = 0;
        else if (e && !strcmp(e, "avx2")) want = 1;
        else if (e && !strcmp(e, "avx512")) want = 2;
        return want < hw ? want : hw;
    }
    /* 0 baseline (SSE2), 1 AVX2 (with FMA), 2 AVX-512F; set once when the module loads */
    static int fnn_simd_level = 0;
    static int fnn_simd_supported(void) { return fnn_cpu_level(2); }
    __attribute__((constructor)) static void fnn_simd_init(void) {
        fnn_simd_level = fnn_capped_level(fnn_simd_supported());
    }
    #define FNN_MV(RET, NAME, PARAMS, ARGS)                                                 \\
        __attribute__((target("avx512f,fma"), noinline)) static RET NAME##_avx512 PARAMS {  \\
            return NAME##_body ARGS; }                                                       \\
        __attribute__((target("avx2,fma"), noinline)) static RET NAME##_avx2 PARAMS {       \\
            return NAME##_body ARGS; }                                                       \\
        __attribute__((noinline)) static RET NAME##_base PARAMS { return NAME##_body ARGS; } \\
        static inline RET NAME PARAMS {                                                      \\
            if (fnn_simd_level >= 2) return NAME##_avx512 ARGS;                              \\
            if (fnn_simd_level == 1) return NAME##_avx2 ARGS;                                \\
            return NAME##_base ARGS; }
    #define FNN_MV_VOID(NAME, PARAMS, ARGS)                                                 \\
        __attribute__((target("avx512f,fma"), noinline)) static void NAME##_avx512 PARAMS { \\
            NAME##_body ARGS; }                                                              \\
        __attribute__((target("avx2,fma"), noinline)) static void NAME##_avx2 PARAMS {      \\
            NAME##_body ARGS; }                                                              \\
        __attribute__((noinline)) static void NAME##_base PARAMS { NAME##_body ARGS; }       \\
        static inline void NAME PARAMS {                                                     \\
            if (fnn_simd_level >= 2) NAME##_avx512 ARGS;                                     \\
            else if (fnn_simd_level == 1) NAME##_avx2 ARGS;                                  \\
            else NAME##_base ARGS; }
    /* The same, for bodies whose first parameter is the constant fu (see FNN_MADD_*): 1 in the
       AVX2+FMA and AVX-512F copies, FNN_FUSED_BASE in the baseline copy. */
    #define FNN_MV_F(RET, NAME, PARAMS, ARGS)                                               \\
        __attribute__((target("avx512f,fma"), noinline)) static RET NAME##_avx512 PARAMS {  \\
            return NAME##_body(1, FNN_UNPAREN ARGS); }                                       \\
        __attribute__((target("avx2,fma"), noinline)) static RET NAME##_avx2 PARAMS {       \\
            return NAME##_body(1, FNN_UNPAREN ARGS); }                                       \\
        __attribute__((noinline)) static RET NAME##_base PARAMS {                            \\
            return NAME##_body(FNN_FUSED_BASE, FNN_UNPAREN ARGS); }                          \\
        static inline RET NAME PARAMS {                                                      \\
            if (fnn_simd_level >= 2) return NAME##_avx512 ARGS;                              \\
            if (fnn_simd_level == 1) return NAME##_avx2 ARGS;                                \\
            return NAME##_base ARGS; }
    #define FNN_MV_F_VOID(NAME, PARAMS, ARGS)                                               \\
        __attribute__((target("avx512f,fma"), noinline)) static void NAME##_avx512 PARAMS { \\
            NAME##_body(1, FNN_UNPAREN ARGS); }                                              \\
        __attribute__((target("avx2,fma"), noinline)) static void NAME##_avx2 PARAMS {      \\
            NAME##_body(1, FNN_UNPAREN ARGS); }                                              \\
        __attribute__((noinline)) static void NAME##_base PARAMS {                           \\
            NAME##_body(FNN_FUSED_BASE, FNN_UNPAREN ARGS); }                                 \\
        static inline void NAME PARAMS {                                                     \\
            if (fnn_simd_level >= 2) NAME##_avx512 ARGS;                                     \\
            else if (fnn_simd_level == 1) NAME##_avx2 ARGS;                                  \\
            else NAME##_base ARGS; }
    /* whether the copy at level 0, 1, 2 evaluates FNN_MADD_* fused */
    #define FNN_FUSED_AT(level) ((level) >= 1 ? 1 : FNN_FUSED_BASE)
    #else
    #define FNN_MULTIVERSION 0
    static inline int fnn_cpu_level(int top) { (void) top; return 0; }
    static inline int fnn_capped_level(int hw) { (void) hw; return 0; }
    static int fnn_simd_level = 0;
    #define FNN_MV(RET, NAME, PARAMS, ARGS) static RET NAME PARAMS { return NAME##_body ARGS; }
    #define FNN_MV_VOID(NAME, PARAMS, ARGS) static void NAME PARAMS { NAME##_body ARGS; }
    #define FNN_MV_F(RET, NAME, PARAMS, ARGS)                                               \\
        static RET NAME PARAMS { return NAME##_body(FNN_FUSED_BASE, FNN_UNPAREN ARGS); }
    #define FNN_MV_F_VOID(NAME, PARAMS, ARGS)                                               \\
        static void NAME PARAMS { NAME##_body(FNN_FUSED_BASE, FNN_UNPAREN ARGS); }
    #define FNN_FUSED_AT(level) FNN_FUSED_BASE
    #endif

    /* 2^n for integer-valued n in [lo, hi] given as t = n + shifter: exponent bits */
    FNN_INLINE double fnn_pow2_d(double t, double shifter) {
        int64_t b, bs;
        double s;
        memcpy(&b, &t, 8); memcpy(&bs, &shifter, 8);
        b = (b - bs + 1023) << 52;
        memcpy(&s, &b, 8);
        return s;
    }
    FNN_INLINE float fnn_pow2_f(float t, float shifter) {
        int32_t b, bs;
        float s;
        memcpy(&b, &t, 4); memcpy(&bs, &shifter, 4);
        b = (int32_t)((uint32_t)(b - bs + 127) << 23);
        memcpy(&s, &b, 4);
        return s;
    }

    /* e^r - 1 for |r| <= ln2/2 (float64: Taylor degree 13, truncation < 5e-18 - small against
       e^r - 1 itself, as expm1 needs), Estrin; each a * b + c is one FNN_MADD_D (fu: see
       above) */
    FNN_INLINE double fnn_expm1_poly_d(int fu, double r) {
        double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
        double a0 = FNN_MADD_D(fu, FNN_MADD_D(fu, r, 1.0 / 6.0, 0.5), r2, r);
        double a1 = FNN_MADD_D(fu, FNN_MADD_D(fu, r, 1.0 / 5040.0, 1.0 / 720.0), r2,
                               FNN_MADD_D(fu, r, 1.0 / 120.0, 1.0 / 24.0));
        double a2 = FNN_MADD_D(fu, FNN_MADD_D(fu, r, 1.0 / 6227020800.0, 1.0 / 479001600.0), r4,
                               FNN_MADD_D(fu, FNN_MADD_D(fu, r, 1.0 / 39916800.0,
                                                         1.0 / 3628800.0), r2,
                                          FNN_MADD_D(fu, r, 1.0 / 362880.0, 1.0 / 40320.0)));
        return FNN_MADD_D(fu, a2, r8, FNN_MADD_D(fu, a1, r4, a0));
    }
    /* float32: e^r - 1 = r + r^2 q(r), q of degree 4 fitted for the least maximum relative
       error of e^r on |r| <= ln2/2 (3.9e-9 = 0.03 ulp with these float32 coefficients), Horner:
       the fewest operations; iterations of a loop are independent, so the chain costs no time */
    FNN_INLINE float fnn_expm1_poly_f(int fu, float r) {
        float q = 1.381461392e-03f;
        q = FNN_MADD_F(fu, q, r, 8.368710056e-03f);
        q = FNN_MADD_F(fu, q, r, 4.166838899e-02f);
        q = FNN_MADD_F(fu, q, r, 1.666652113e-01f);
        q = FNN_MADD_F(fu, q, r, 4.999999404e-01f);
        return FNN_MADD_F(fu, r * r, q, r);
    }

    #define FNN_SHIFTER_D 6755399441055744.0      /* 1.5 * 2^52: adding it rounds to integer */
    #define FNN_LOG2E_D 1.4426950408889634
    #define FNN_LN2HI_D 6.93147180369123816490e-01
    #define FNN_LN2LO_D 1.90821492927058770002e-10
    #define FNN_SHIFTER_F 12582912.0f             /* 1.5 * 2^23 */
    #define FNN_LOG2E_F 1.44269504088896341f
    #define FNN_LN2HI_F 0.693145751953125f
    #define FNN_LN2LO_F 1.428606765330187045e-06f

    /* The reduction shared by exp, exp_mid and expm1: t = x log2(e) + shifter (n = t - shifter
       = round(x / ln 2), exact), r = (x - n ln2hi) - n ln2lo, each step one FNN_MADD (n ln2hi
       is exact either way: ln2hi has trailing zero bits). */
    #define FNN_REDUCE(S, fu, x, t, n, r)                                                      \\
        t = FNN_MADD_##S(fu, x, FNN_LOG2E_##S, FNN_SHIFTER_##S);                               \\
        n = t - FNN_SHIFTER_##S;                                                               \\
        r = FNN_MADD_##S(fu, -n, FNN_LN2LO_##S, FNN_MADD_##S(fu, -n, FNN_LN2HI_##S, x))

    /* exp(x), any x. The clamps keep n in [-1076, 1024] (NaN passes through both). fu: fused
       multiply-adds or not (FNN_MADD_D); fnn_exp_d(x) is fnn_exp_fu_d(FNN_FUSED_BASE, x). */
    FNN_INLINE double fnn_exp_fu_d(int fu, double x) {
        double t, n, n1, t1, t2, r, p;
        x = x < -746.0 ? -746.0 : x;
        x = x > 710.0 ? 710.0 : x;
        FNN_REDUCE(D, fu, x, t, n, r);
        p = 1.0 + fnn_expm1_poly_d(fu, r);  /* the 1 last: the small terms' rounding stays small */
        /* 2^n = 2^n1 * 2^n2, both halves in the normal range */
        t1 = n * 0.5 + FNN_SHIFTER_D;
        n1 = t1 - FNN_SHIFTER_D;
        t2 = (n - n1) + FNN_SHIFTER_D;
        return (p * fnn_pow2_d(t1, FNN_SHIFTER_D)) * fnn_pow2_d(t2, FNN_SHIFTER_D);
    }
    FNN_INLINE float fnn_exp_fu_f(int fu, float x) {
        float t, n, n1, t1, t2, r, p;
        x = x < -104.0f ? -104.0f : x;
        x = x > 89.0f ? 89.0f : x;
        FNN_REDUCE(F, fu, x, t, n, r);
        p = 1.0f + fnn_expm1_poly_f(fu, r);
        t1 = n * 0.5f + FNN_SHIFTER_F;
        n1 = t1 - FNN_SHIFTER_F;
        t2 = (n - n1) + FNN_SHIFTER_F;
        return (p * fnn_pow2_f(t1, FNN_SHIFTER_F)) * fnn_pow2_f(t2, FNN_SHIFTER_F);
    }
    FNN_INLINE double fnn_exp_d(double x) { return fnn_exp_fu_d(FNN_FUSED_BASE, x); }
    FNN_INLINE float fnn_exp_f(float x) { return fnn_exp_fu_f(FNN_FUSED_BASE, x); }
    /* exp(x) for x in [FNN_EXP_MID_LO, 0]: the same n, r and p as fnn_exp_fu_* (with the same
       fu), and 2^n in one step (n >= -1022 / -126, so 2^n is normal and p * 2^n is the same
       single rounding as (p * 2^n1) * 2^n2): bit for bit equal to fnn_exp_fu_* there, with
       fewer operations. */
    #define FNN_EXP_MID_LO_D -707.0
    #define FNN_EXP_MID_LO_F -87.0f
    FNN_INLINE double fnn_exp_mid_fu_d(int fu, double x) {
        double t, n, r;
        FNN_REDUCE(D, fu, x, t, n, r);
        return (1.0 + fnn_expm1_poly_d(fu, r)) * fnn_pow2_d(t, FNN_SHIFTER_D);
    }
    FNN_INLINE float fnn_exp_mid_fu_f(int fu, float x) {
        float t, n, r;
        FNN_REDUCE(F, fu, x, t, n, r);
        return (1.0f + fnn_expm1_poly_f(fu, r)) * fnn_pow2_f(t, FNN_SHIFTER_F);
    }
    /* e^x - 1 (float32) for x <= 88.3 (its callers pass x <= 18): x is clamped to
       [-88, 88.3] (e^-88 - 1 rounds to -1; 2^n stays finite). NaN stays NaN. */
    FNN_INLINE float fnn_expm1_fu_f(int fu, float x) {
        float xc = x > 88.3f ? 88.3f : (x < -88.0f ? -88.0f : x);
        float t, n, r;
        FNN_REDUCE(F, fu, xc, t, n, r);
        float s = fnn_pow2_f(t, FNN_SHIFTER_F);
        return FNN_MADD_F(fu, s, fnn_expm1_poly_f(fu, r), s - 1.0f);  /* 2^n - 1 exact, |n| <= 24 */
    }

    /* e^x - 1 (float64) for x <= 709 (its callers pass x <= 40): x is clamped to [-40, 709]
       (e^-40 - 1 rounds to -1; 2^n stays normal). NaN stays NaN. */
    FNN_INLINE double fnn_expm1_fu_d(int fu, double x) {
        double xc = x > 709.0 ? 709.0 : (x < -40.0 ? -40.0 : x);
        double t, n, r;
        FNN_REDUCE(D, fu, xc, t, n, r);
        double s = fnn_pow2_d(t, FNN_SHIFTER_D);
        return FNN_MADD_D(fu, s, fnn_expm1_poly_d(fu, r), s - 1.0);  /* 2^n - 1 exact, |n| <= 53 */
    }
    FNN_INLINE float fnn_expm1_f(float x) { return fnn_expm1_fu_f(FNN_FUSED_BASE, x); }
    FNN_INLINE double fnn_expm1_d(double x) { return fnn_expm1_fu_d(FNN_FUSED_BASE, x); }

    /* log(1 + x) (float32) for x in [0, 1] (softplus: x = e^-|z|), vectorizable and without
       forming 1 + x: log(1 + x) = 2 atanh(s), s = x / (2 + x) in [0, 1/3], by the odd series
       of atanh to s^17 (truncation < 2e-9 relative). NaN stays NaN. */
    FNN_INLINE float fnn_log1p_unit_f(float x) {
        float s = x / (2.0f + x), s2 = s * s;
        float p = 1.0f / 17.0f;
        p = p * s2 + 1.0f / 15.0f;
        p = p * s2 + 1.0f / 13.0f;
        p = p * s2 + 1.0f / 11.0f;
        p = p * s2 + 1.0f / 9.0f;
        p = p * s2 + 1.0f / 7.0f;
        p = p * s2 + 1.0f / 5.0f;
        p = p * s2 + 1.0f / 3.0f;
        float t = 2.0f * s;
        return t + t * (s2 * p);
    }

    /* Row reductions, one definition per dtype (T the element type, S the suffix). Sums use 16
       independent double accumulators, entry i going to accumulator i % 16, combined in a fixed
       tree: vectorizable without reassociation flags, the same result for any thread count and
       vector width. */
    #define FNN_TREE16(c) ((((c[0] + c[1]) + (c[2] + c[3])) + ((c[4] + c[5]) + (c[6] + c[7])))  \\
                         + (((c[8] + c[9]) + (c[10] + c[11])) + ((c[12] + c[13]) + (c[14] + c[15]))))
    #define FNN_REDUCTIONS(T, S)                                                             \\
    /* max and min of z[0..n) (n >= 1), z[0] first: m = z[i] > m ? z[i] : m. From 64         \\
       entries on, in 64 lanes that each start from z[0] (independent chains; one chain      \\
       would wait out the compare's latency on every vector), the last partial block as      \\
       an overlapping full one, the lanes halved in a tree: the result of one serial pass    \\
       (a NaN in z[0] stays, any other NaN never wins), the sign of a zero max or min        \\
       aside. */                                                                             \\
    FNN_INLINE void fnn_minmax_##S(const T *z, Py_ssize_t n, T *m_out, T *mn_out) {          \\
        T m = z[0], mn = z[0];                                                               \\
        if (n >= 64) {                                                                       \\
            T mv[64], nv[64];                                                                \\
            Py_ssize_t i;                                                                    \\
            for (int j = 0; j < 64; j++) { mv[j] = z[0]; nv[j] = z[0]; }                     \\
            for (i = 0; i < n; i += 64) {                                                    \\
                const T *b = i + 64 <= n ? z + i : z + n - 64;                               \\
                for (int j = 0; j < 64; j++) {                                               \\
                    mv[j] = b[j] > mv[j] ? b[j] : mv[j];                                     \\
                    nv[j] = b[j] < nv[j] ? b[j] : nv[j];                                     \\
                }                                                                            \\
            }                                                                                \\
            for (int w = 32; w > 0; w >>= 1)                                                 \\
                for (int j = 0; j < w; j++) {                                                \\
                    mv[j] = mv[j + w] > mv[j] ? mv[j + w] : mv[j];                           \\
                    nv[j] = nv[j + w] < nv[j] ? nv[j + w] : nv[j];                           \\
                }                                                                            \\
            m = mv[0];                                                                       \\
            mn = nv[0];                                                                      \\
        } else {                                                                             \\
            for (Py_ssize_t i = 1; i < n; i++) {                                             \\
                m = z[i] > m ? z[i] : m;                                                     \\
                mn = z[i] < mn ? z[i] : mn;                                                  \\
            }                                                                                \\
        }                                                                                    \\
        *m_out = m;                                                                          \\
        if (mn_out) *mn_out = mn;                                                            \\
    }                                                                                        \\
    /* max of z[0..n) (n >= 1), as fnn_minmax_* */                                           \\
    FNN_INLINE T fnn_max_in_##S(const T *z, Py_ssize_t n) {                                  \\
        T m = z[0];                                                                          \\
        if (n >= 64) {                                                                       \\
            T mv[64];                                                                        \\
            for (int j = 0; j < 64; j++) mv[j] = z[0];                                       \\
            for (Py_ssize_t i = 0; i < n; i += 64) {                                         \\
                const T *b = i + 64 <= n ? z + i : z + n - 64;                               \\
                for (int j = 0; j < 64; j++) mv[j] = b[j] > mv[j] ? b[j] : mv[j];            \\
            }                                                                                \\
            for (int w = 32; w > 0; w >>= 1)                                                 \\
                for (int j = 0; j < w; j++) mv[j] = mv[j + w] > mv[j] ? mv[j + w] : mv[j];   \\
            m = mv[0];                                                                       \\
        } else {                                                                             \\
            for (Py_ssize_t i = 1; i < n; i++) m = z[i] > m ? z[i] : m;                      \\
        }                                                                                    \\
        return m;                                                                            \\
    }                                                                                        \\
    FNN_INLINE void fnn_acc16_##S(double *c, const T *a, Py_ssize_t n) {                    \\
        Py_ssize_t i = 0;                                                                    \\
        for (; i + 16 <= n; i += 16)                                                         \\
            for (int j = 0; j < 16; j++) c[j] += (double)a[i + j];                           \\
        for (int j = 0; i + j < n; j++) c[j] += (double)a[i + j];                            \\
    }                                                                                        \\
    FNN_INLINE double fnn_sum_in_##S(const T *a, Py_ssize_t n) {                             \\
        double c[16] = {0};                                                                  \\
        fnn_acc16_##S(c, a, n);                                                              \\
        return FNN_TREE16(c);                                                                \\
    }                                                                                        \\
    FNN_INLINE double fnn_dot_in_##S(const T *a, const T *b, Py_ssize_t n) {                 \\
        double c[16] = {0};                                                                  \\
        Py_ssize_t i = 0;                                                                    \\
        for (; i + 16 <= n; i += 16)                                                         \\
            for (int j = 0; j < 16; j++) c[j] += (double)a[i + j] * (double)b[i + j];        \\
        for (int j = 0; i + j < n; j++) c[j] += (double)a[i + j] * (double)b[i + j];         \\
        return FNN_TREE16(c);                                                                \\
    }                                                                                        \\
    FNN_INLINE T fnn_rowmax_##S##_body(const T *z, Py_ssize_t n) { return fnn_max_in_##S(z, n); } \\
    FNN_MV(T, fnn_rowmax_##S, (const T *z, Py_ssize_t n), (z, n))

    FNN_REDUCTIONS(double, d)
    FNN_REDUCTIONS(float, f)

    /* a[i] = exp(a[i]) (or expm1) for a whole array (tests; the kernels inline fnn_exp_* into
       their rows), built like the softmax rows: fused multiply-adds in the AVX2 and AVX-512F
       copies */
    FNN_INLINE void fnn_exp_array_d_body(int fu, double *a, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) a[i] = fnn_exp_fu_d(fu, a[i]);
    }
    FNN_INLINE void fnn_exp_array_f_body(int fu, float *a, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) a[i] = fnn_exp_fu_f(fu, a[i]);
    }
    FNN_INLINE void fnn_expm1_array_f_body(int fu, float *a, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) a[i] = fnn_expm1_fu_f(fu, a[i]);
    }
    FNN_INLINE void fnn_expm1_array_d_body(int fu, double *a, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) a[i] = fnn_expm1_fu_d(fu, a[i]);
    }
    FNN_MV_F_VOID(fnn_exp_array_d, (double *a, Py_ssize_t n), (a, n))
    FNN_MV_F_VOID(fnn_exp_array_f, (float *a, Py_ssize_t n), (a, n))
    FNN_MV_F_VOID(fnn_expm1_array_f, (float *a, Py_ssize_t n), (a, n))
    FNN_MV_F_VOID(fnn_expm1_array_d, (double *a, Py_ssize_t n), (a, n))

    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC pop_options
    #endif
    #endif  /* FASTNN_MATH_H */
    """
    int fnn_simd_level
    int fnn_cpu_level(int top) noexcept nogil
    int fnn_capped_level(int hw) noexcept nogil
    bint FNN_MULTIVERSION
    bint FNN_FUSED_AT(int level)
    double fnn_exp_d(double x) noexcept nogil
    float fnn_exp_f(float x) noexcept nogil
    float fnn_expm1_f(float x) noexcept nogil
    double fnn_expm1_d(double x) noexcept nogil
    void fnn_expm1_array_d(double *a, Py_ssize_t n) noexcept nogil
    double fnn_rowmax_d(const double *z, Py_ssize_t n) noexcept nogil
    float fnn_rowmax_f(const float *z, Py_ssize_t n) noexcept nogil
    void fnn_exp_array_d(double *a, Py_ssize_t n) noexcept nogil
    void fnn_exp_array_f(float *a, Py_ssize_t n) noexcept nogil
    void fnn_expm1_array_f(float *a, Py_ssize_t n) noexcept nogil

from cython cimport floating


cdef inline floating row_max(const floating *z, Py_ssize_t n) noexcept nogil:
    """max(z[:n]), n >= 1 (NaN propagates unless max is reached after it; callers check)."""
    if floating is double:
        return fnn_rowmax_d(z, n)
    else:
        return fnn_rowmax_f(z, n)
