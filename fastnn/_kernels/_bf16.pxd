# Design: products with bfloat16 weights, an opt-in that changes results (half the bytes of
# float32 weights, and on CPUs with AVX512-BF16 twice the multiply-adds per instruction).
# bfloat16 is the upper half of a float32: 8 exponent bits, 8 significand bits (7 stored).
#
# Numbers: a float32 is rounded to bfloat16 to nearest, ties to even, by integer arithmetic on
# its bits (fnn_bf16_from_f): subnormals are rounded like any other value (not flushed), a value
# above the largest bfloat16 rounds to inf, a NaN stays a NaN (quiet, its sign kept). Products
# round BOTH operands, the weights once when packed and an input row when it is used, so every
# product of two bfloat16 numbers is exact in float32 (8 x 8 significand bits), and only the
# float32 accumulation rounds: |y - y_exact| <= about k 2^-24 sum |x_i w_i| for y = sum over k
# terms of x_i w_i (x, w the rounded values), plus, on the AVX512-BF16 path, products with a
# subnormal operand or result counted as zero (the instruction flushes them).
#
# Layout (fnn_bf16_pack): the (k, n) weight matrix in panels of 16 columns, zero padded to a
# multiple of 16 columns and an even k; panel p holds, for each pair of rows kp = 0 ..
# ceil(k/2)-1, the 32 numbers (W[2kp, j], W[2kp+1, j]) for its columns j = 16p .. 16p+15 in that
# order: one 64-byte vector, each 32-bit lane one column's pair. That is what the AVX512-BF16
# instruction vdpbf16ps multiplies with a broadcast pair of inputs (x[2kp], x[2kp+1]), and the
# other paths turn the lane into its two float32 numbers with one shift and one mask. An input
# row is rounded into the same pairs (fnn_bf16_round_row: ceil(k/2) 32-bit words, zero padded).
#
# Levels (fnn_bf16_level, chosen once when the module loads): 3 AVX512-BF16 (vdpbf16ps),
# 2 AVX-512F, 1 AVX2+FMA, 0 the SSE2 baseline. Below level 3 the code is written once with the
# native vectors of each width (GCC/clang vector extensions) and compiled for the three; the
# three copies give the same bits (the same summation orders, and every product is exact, so
# fused or not changes nothing); level 3 may differ from them in the last bits. FASTNN_SIMD caps
# the level as in _math.pxd ("avx512" caps it at 2: AVX-512F without the BF16 instructions).
#
# One row (fnn_bf16_xw): up to 8 panels (128 columns; 3 with AVX2, 1 with SSE2) at a time, their
# accumulators in vector registers while the weight panels stream past. Below level 3 each
# column sums its even rows and its odd rows in two float32 partial sums (in row order), added
# at the end; at level 3 (vdpbf16ps: each lane adds a pair's two products) the even and the odd
# row pairs. Those two dependent chains per column are all the definition allows, so only more
# panels at a time give the FMA units independent work: with 4 panels (8 chains, just the FMA
# latency times the FMA units of a Zen 4/5 or Skylake-X core) the AVX-512F and AVX512-BF16 loops
# would wait on their chains. The weight vectors are read with unaligned loads; P 64-byte aligned
# (fnn_bf16_packed_len + 32 entries let a caller align it) keeps each of them in one cache line,
# which the loads below level 3 (each vector read by the shift and by the mask) feel most.
#
# Many rows (fnn_bf16_gemm): MR = 12 rows at a time are rounded into a scratch buffer given by
# the caller, then a microkernel runs over every pair of panels (or every panel), the packed
# weights read from the L2 cache, one float32 sum per column and row through all k (so a row's
# GEMM result may differ from its one-row product in the last bits): at level 3 12 rows x 32
# columns (24 vdpbf16ps accumulators); below, tiles of 6 rows x 32 columns (AVX-512F), 4 x 16
# (AVX2) or 2 x 16 (SSE2) that turn each weight vector into its even and odd rows' float32
# numbers once per tile and multiply-add them.
# Kernels never allocate and never validate.
from libc.stdint cimport uint16_t, uint32_t

# (the CPU's vector level, fnn_cpu_level / fnn_capped_level, comes from _math.pxd)
from fastnn._kernels._math cimport fnn_cpu_level, fnn_capped_level

cdef extern from *:
    """
    #ifndef FASTNN_BF16_H
    #define FASTNN_BF16_H
    #include <stdint.h>
    #include <stdlib.h>
    #include <string.h>
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC push_options
    #pragma GCC optimize("no-trapping-math", "fp-contract=off")
    #endif
    #if defined(__GNUC__) || defined(__clang__)
    #define FNN_BF16_INLINE static inline __attribute__((always_inline))
    #else
    #define FNN_BF16_INLINE static inline
    #endif

    #define FNN_BF16_MR 12

    /* float32 -> bfloat16, to nearest, ties to even; NaN -> quiet NaN with its sign */
    FNN_BF16_INLINE uint16_t fnn_bf16_from_f(float f) {
        uint32_t u;
        memcpy(&u, &f, 4);
        uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        uint32_t q = (u >> 16) | 0x40u;
        return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? q : r);
    }
    FNN_BF16_INLINE float fnn_bf16_to_f(uint16_t h) {
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    FNN_BF16_INLINE float fnn_bf16_lo(uint32_t v) {   /* the even row of a pair */
        uint32_t u = v << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    FNN_BF16_INLINE float fnn_bf16_hi(uint32_t v) {   /* the odd row of a pair */
        uint32_t u = v & 0xffff0000u;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }

    /* uint16 entries of the packed form of a (k, n) matrix */
    static Py_ssize_t fnn_bf16_packed_len(Py_ssize_t k, Py_ssize_t n) {
        return ((n + 15) / 16) * ((k + 1) / 2) * 32;
    }

    /* P (fnn_bf16_packed_len(k, n) entries) = the packed bfloat16 form of W (k, n), row stride
       ldw */
    static void fnn_bf16_pack(const float *W, Py_ssize_t ldw, Py_ssize_t k, Py_ssize_t n,
                              uint16_t *P) {
        Py_ssize_t np = (n + 15) / 16, kp2 = (k + 1) / 2, p, kp, j, t;
        for (p = 0; p < np; p++)
            for (kp = 0; kp < kp2; kp++) {
                uint16_t *o = P + (p * kp2 + kp) * 32;
                for (j = 0; j < 16; j++)
                    for (t = 0; t < 2; t++) {
                        Py_ssize_t i = 2 * kp + t, c = 16 * p + j;
                        o[2 * j + t] = (i < k && c < n) ? fnn_bf16_from_f(W[i * ldw + c]) : 0;
                    }
            }
    }

    /* level: 0 baseline, 1 AVX2+FMA, 2 AVX-512F, 3 AVX-512F + AVX512-BF16 */
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(_MSC_VER)
    #define FNN_BF16_MV 1
    #if defined(__clang__) || __GNUC__ >= 10
    #define FNN_BF16_DP 1
    #include <immintrin.h>
    #else
    #define FNN_BF16_DP 0
    #endif
    #else
    #define FNN_BF16_MV 0
    #define FNN_BF16_DP 0
    #endif
    static int fnn_bf16_level = 0;
    static int fnn_bf16_supported(void) {   /* (fnn_cpu_level, fnn_capped_level: _math.pxd) */
    #if FNN_BF16_MV
        return fnn_cpu_level(FNN_BF16_DP ? 3 : 2);
    #else
        return 0;
    #endif
    }
    #if FNN_BF16_MV
    __attribute__((constructor)) static void fnn_bf16_init(void) {
        fnn_bf16_level = fnn_capped_level(fnn_bf16_supported());
    }
    #endif

    /* xb (ceil(k/2) words) = x[0:k] rounded, pairs (x[2i], x[2i+1]), an odd k padded with 0 */
    FNN_BF16_INLINE void fnn_bf16_round_row_body(const float *x, Py_ssize_t k, uint32_t *xb) {
        Py_ssize_t i, h = k / 2;
        for (i = 0; i < h; i++)
            xb[i] = (uint32_t)fnn_bf16_from_f(x[2 * i])
                    | ((uint32_t)fnn_bf16_from_f(x[2 * i + 1]) << 16);
        if (k & 1) xb[h] = (uint32_t)fnn_bf16_from_f(x[k - 1]);
    }

    /* a * b + c: fused where fu (FNN_BF16_FUSED_BASE: a compile-time target with FMA); the
       same number either way when a * b is exact, as every product of two bfloat16 numbers is
       unless it underflows */
    #if defined(__GNUC__) || defined(__clang__)
    #define FNN_BF16_MADD(fu, a, b, c) ((fu) ? __builtin_fmaf((a), (b), (c)) : (a) * (b) + (c))
    #else
    #define FNN_BF16_MADD(fu, a, b, c) ((a) * (b) + (c))
    #endif
    #if defined(__FP_FAST_FMAF)
    #define FNN_BF16_FUSED_BASE 1
    #else
    #define FNN_BF16_FUSED_BASE 0
    #endif
    /* G (1..4, a constant after inlining) panels from P (panel stride kp2 * 16 words) into
       y[0:cols]: the scalar form of fnn_bf16_panels##W below, for compilers without GCC/clang
       vector extensions */
    FNN_BF16_INLINE void fnn_bf16_panels_body(const int fu, const uint32_t *xb, const uint32_t *P,
                                              Py_ssize_t kp2, float *y, const int G,
                                              Py_ssize_t cols) {
        float a0[64], a1[64];
        Py_ssize_t kp, j;
        int g;
        for (j = 0; j < 16 * G; j++) { a0[j] = 0.0f; a1[j] = 0.0f; }
        for (kp = 0; kp < kp2; kp++) {
            const float xe = fnn_bf16_lo(xb[kp]), xo = fnn_bf16_hi(xb[kp]);
            for (g = 0; g < G; g++) {
                const uint32_t *w = P + g * kp2 * 16 + kp * 16;
                for (j = 0; j < 16; j++) {
                    a0[16 * g + j] = FNN_BF16_MADD(fu, xe, fnn_bf16_lo(w[j]), a0[16 * g + j]);
                    a1[16 * g + j] = FNN_BF16_MADD(fu, xo, fnn_bf16_hi(w[j]), a1[16 * g + j]);
                }
            }
        }
        for (j = 0; j < cols && j < 16 * G; j++) y[j] = a0[j] + a1[j];
    }
    FNN_BF16_INLINE void fnn_bf16_xw_f_body(const int fu, const uint32_t *xb, const uint16_t *P, Py_ssize_t k,
                                          Py_ssize_t n, float *y) {
        Py_ssize_t np = (n + 15) / 16, kp2 = (k + 1) / 2, p = 0;
        const uint32_t *Pw = (const uint32_t *)P;
        for (; p + 4 <= np; p += 4)
            fnn_bf16_panels_body(fu, xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 4, n - 16 * p);
        switch (np - p) {
        case 3: fnn_bf16_panels_body(fu, xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 3, n - 16 * p); break;
        case 2: fnn_bf16_panels_body(fu, xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 2, n - 16 * p); break;
        case 1: fnn_bf16_panels_body(fu, xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 1, n - 16 * p); break;
        default: break;
        }
    }


    /* GEMM tiles below AVX512-BF16: C[0:R, 0:cols] = A B for R (a constant) rounded input rows
       A (row stride kp2 words) and NP (1 or 2) panels B0, B1 (cols <= 16 NP), with native
       vectors of W floats (GCC/clang vector extensions; 16 AVX-512F, 8 AVX2, 4 SSE2): each
       weight vector is turned into its odd and even rows' float32 numbers once per tile, then
       every row adds the odd row's product and the even row's (one sum per column through all
       k, vdpbf16ps's order). Fused or not, the sums are the same (exact products), so
       contraction is allowed here and every width gives the same bits. */
    #if defined(__GNUC__) || defined(__clang__)
    #define FNN_BF16_VEC 1
    #if defined(__clang__)
    #define FNN_BF16_CONTRACT _Pragma("clang fp contract(fast)")
    #else
    #define FNN_BF16_CONTRACT
    #pragma GCC push_options
    #pragma GCC optimize("fp-contract=fast")
    #endif
    #define FNN_BF16_TILE_DEF(W)                                                               \\
    typedef float fnn_bf16_vf##W __attribute__((vector_size(4 * W), aligned(4)));            \\
    typedef uint32_t fnn_bf16_vu##W __attribute__((vector_size(4 * W), aligned(4)));         \\
    FNN_BF16_INLINE void fnn_bf16_tile##W(const uint32_t *A, Py_ssize_t kp2,                  \\
            const uint32_t *B0, const uint32_t *B1, float *C, Py_ssize_t ldc, Py_ssize_t cols, \\
            const int R, const int NP) {                                                       \\
        FNN_BF16_CONTRACT                                                                      \\
        enum { NV = 16 / W };                                                                  \\
        fnn_bf16_vf##W acc[6][2 * NV], o[2 * NV], e[2 * NV];                                   \\
        Py_ssize_t kp;                                                                         \\
        int r, v;                                                                              \\
        for (r = 0; r < R; r++)                                                                \\
            for (v = 0; v < NP * NV; v++) acc[r][v] = (fnn_bf16_vf##W){0};                     \\
        for (kp = 0; kp < kp2; kp++) {                                                         \\
            for (v = 0; v < NP * NV; v++) {                                                    \\
                fnn_bf16_vu##W w;                                                              \\
                memcpy(&w, (v < NV ? B0 : B1) + kp * 16 + (v % NV) * W, 4 * W);               \\
                o[v] = (fnn_bf16_vf##W)(w & 0xffff0000u);                                      \\
                e[v] = (fnn_bf16_vf##W)(w << 16);                                              \\
            }                                                                                  \\
            for (r = 0; r < R; r++) {                                                          \\
                const fnn_bf16_vu##W a = (fnn_bf16_vu##W){0} + A[r * kp2 + kp];                \\
                const fnn_bf16_vf##W xe = (fnn_bf16_vf##W)(a << 16);                           \\
                const fnn_bf16_vf##W xo = (fnn_bf16_vf##W)(a & 0xffff0000u);                   \\
                for (v = 0; v < NP * NV; v++) {                                                \\
                    acc[r][v] = acc[r][v] + xo * o[v];                                         \\
                    acc[r][v] = acc[r][v] + xe * e[v];                                         \\
                }                                                                              \\
            }                                                                                  \\
        }                                                                                      \\
        for (r = 0; r < R; r++)                                                                \\
            for (v = 0; v < NP * NV; v++) {                                                    \\
                Py_ssize_t c = cols - v * W;                                                   \\
                if (c <= 0) break;                                                             \\
                memcpy(C + r * ldc + v * W, &acc[r][v], (size_t)(c < W ? c : W) * 4);          \\
            }                                                                                  \\
    }                                                                                          \\
    FNN_BF16_INLINE void fnn_bf16_rows##W(const uint32_t *A, Py_ssize_t kp2,                  \\
            const uint16_t *P, Py_ssize_t n, float *C, Py_ssize_t ldc, Py_ssize_t mr,          \\
            const int RT, const int NP) {                                                      \\
        Py_ssize_t np = (n + 15) / 16, p, r0;                                                  \\
        const uint32_t *Pw = (const uint32_t *)P;                                              \\
        for (p = 0; p < np; p += NP) {                                                         \\
            const uint32_t *B0 = Pw + p * kp2 * 16;                                            \\
            const uint32_t *B1 = NP == 2 && p + 1 < np ? B0 + kp2 * 16 : B0;                   \\
            float *Cp = C + 16 * p;                                                            \\
            Py_ssize_t cols = n - 16 * p;                                                      \\
            for (r0 = 0; r0 + RT <= mr; r0 += RT)                                              \\
                fnn_bf16_tile##W(A + r0 * kp2, kp2, B0, B1, Cp + r0 * ldc, ldc, cols, RT, NP); \\
            switch (mr - r0) {                                                                 \\
            case 5: fnn_bf16_tile##W(A + r0 * kp2, kp2, B0, B1, Cp + r0 * ldc, ldc, cols, 5, NP); break; \\
            case 4: fnn_bf16_tile##W(A + r0 * kp2, kp2, B0, B1, Cp + r0 * ldc, ldc, cols, 4, NP); break; \\
            case 3: fnn_bf16_tile##W(A + r0 * kp2, kp2, B0, B1, Cp + r0 * ldc, ldc, cols, 3, NP); break; \\
            case 2: fnn_bf16_tile##W(A + r0 * kp2, kp2, B0, B1, Cp + r0 * ldc, ldc, cols, 2, NP); break; \\
            case 1: fnn_bf16_tile##W(A + r0 * kp2, kp2, B0, B1, Cp + r0 * ldc, ldc, cols, 1, NP); break; \\
            default: break;                                                                    \\
            }                                                                                  \\
        }                                                                                      \\
    }
    /* one row, G (<= 8, a constant) panels, native vectors of W floats: two partial sums per
       column, of the even rows and of the odd rows, added at the end. Each column's two sums
       are dependent chains of multiply-adds, so G sets how many chains hide the FMA latency. */
    #define FNN_BF16_PANELS_DEF(W)                                                             \\
    FNN_BF16_INLINE void fnn_bf16_panels##W(const uint32_t *xb, const uint32_t *P,            \\
            Py_ssize_t kp2, float *y, const int G, Py_ssize_t cols) {                          \\
        FNN_BF16_CONTRACT                                                                      \\
        enum { NV = 16 / W };                                                                  \\
        fnn_bf16_vf##W a0[8 * NV], a1[8 * NV];                                                 \\
        Py_ssize_t kp;                                                                         \\
        int v;                                                                                 \\
        for (v = 0; v < G * NV; v++) { a0[v] = (fnn_bf16_vf##W){0}; a1[v] = a0[v]; }          \\
        for (kp = 0; kp < kp2; kp++) {                                                         \\
            const fnn_bf16_vu##W x = (fnn_bf16_vu##W){0} + xb[kp];                             \\
            const fnn_bf16_vf##W xe = (fnn_bf16_vf##W)(x << 16);                               \\
            const fnn_bf16_vf##W xo = (fnn_bf16_vf##W)(x & 0xffff0000u);                       \\
            for (v = 0; v < G * NV; v++) {                                                     \\
                fnn_bf16_vu##W w;                                                              \\
                memcpy(&w, P + (v / NV) * kp2 * 16 + kp * 16 + (v % NV) * W, 4 * W);          \\
                a0[v] = a0[v] + xe * (fnn_bf16_vf##W)(w << 16);                                \\
                a1[v] = a1[v] + xo * (fnn_bf16_vf##W)(w & 0xffff0000u);                        \\
            }                                                                                  \\
        }                                                                                      \\
        for (v = 0; v < G * NV; v++) {                                                         \\
            Py_ssize_t c = cols - v * W;                                                       \\
            fnn_bf16_vf##W t = a0[v] + a1[v];                                                  \\
            if (c <= 0) break;                                                                 \\
            memcpy(y + v * W, &t, (size_t)(c < W ? c : W) * 4);                                \\
        }                                                                                      \\
    }                                                                                          \\
    FNN_BF16_INLINE void fnn_bf16_xw##W(const uint32_t *xb, const uint16_t *P, Py_ssize_t k,  \\
                                        Py_ssize_t n, float *y, const int GM) {                \\
        Py_ssize_t np = (n + 15) / 16, kp2 = (k + 1) / 2, p = 0;                               \\
        const uint32_t *Pw = (const uint32_t *)P;                                              \\
        for (; p + GM <= np; p += GM)                                                          \\
            fnn_bf16_panels##W(xb, Pw + p * kp2 * 16, kp2, y + 16 * p, GM, n - 16 * p);        \\
        switch (np - p < GM ? np - p : 0) {   /* (true) bound: no code for G >= GM */      \\
        case 7: fnn_bf16_panels##W(xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 7, n - 16 * p); break; \\
        case 6: fnn_bf16_panels##W(xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 6, n - 16 * p); break; \\
        case 5: fnn_bf16_panels##W(xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 5, n - 16 * p); break; \\
        case 4: fnn_bf16_panels##W(xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 4, n - 16 * p); break; \\
        case 3: fnn_bf16_panels##W(xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 3, n - 16 * p); break; \\
        case 2: fnn_bf16_panels##W(xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 2, n - 16 * p); break; \\
        case 1: fnn_bf16_panels##W(xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 1, n - 16 * p); break; \\
        default: break;                                                                        \\
        }                                                                                      \\
    }
    FNN_BF16_TILE_DEF(16)
    FNN_BF16_TILE_DEF(8)
    FNN_BF16_TILE_DEF(4)
    FNN_BF16_PANELS_DEF(16)
    FNN_BF16_PANELS_DEF(8)
    FNN_BF16_PANELS_DEF(4)
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC pop_options
    #endif
    #else
    #define FNN_BF16_VEC 0
    #endif

    #if FNN_BF16_MV
    #define FNN_BF16_COPIES(NAME, PARAMS, ARGS)                                               \\
        __attribute__((target("avx512f,fma"), noinline)) static void NAME##_avx512 PARAMS {   \\
            NAME##_body ARGS; }                                                                \\
        __attribute__((target("avx2,fma"), noinline)) static void NAME##_avx2 PARAMS {        \\
            NAME##_body ARGS; }                                                                \\
        __attribute__((noinline)) static void NAME##_base PARAMS { NAME##_body ARGS; }
    FNN_BF16_COPIES(fnn_bf16_round_row, (const float *x, Py_ssize_t k, uint32_t *xb),
                    (x, k, xb))
    /* tiles: AVX-512F 6 rows x 2 panels (12 accumulators of 32 registers), AVX2 4 rows x 1
       panel (8 of 16), SSE2 2 rows x 1 panel (8 of 16) */
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC push_options
    #pragma GCC optimize("fp-contract=fast")
    #endif
    /* one row: AVX-512F 8 panels at a time (16 accumulators of 32 registers), AVX2 3 (12 of
       16), SSE2 1 (8 of 16) */
    __attribute__((target("avx512f,fma"), noinline)) static void fnn_bf16_xw_f_avx512(
            const uint32_t *xb, const uint16_t *P, Py_ssize_t k, Py_ssize_t n, float *y) {
        fnn_bf16_xw16(xb, P, k, n, y, 8); }
    __attribute__((target("avx2,fma"), noinline)) static void fnn_bf16_xw_f_avx2(
            const uint32_t *xb, const uint16_t *P, Py_ssize_t k, Py_ssize_t n, float *y) {
        fnn_bf16_xw8(xb, P, k, n, y, 3); }
    __attribute__((noinline)) static void fnn_bf16_xw_f_base(
            const uint32_t *xb, const uint16_t *P, Py_ssize_t k, Py_ssize_t n, float *y) {
        fnn_bf16_xw4(xb, P, k, n, y, 1); }
    __attribute__((target("avx512f,fma"), noinline)) static void fnn_bf16_rows_avx512(
            const uint32_t *A, Py_ssize_t kp2, const uint16_t *P, Py_ssize_t n, float *C,
            Py_ssize_t ldc, Py_ssize_t mr) {
        fnn_bf16_rows16(A, kp2, P, n, C, ldc, mr, 6, 2); }
    __attribute__((target("avx2,fma"), noinline)) static void fnn_bf16_rows_avx2(
            const uint32_t *A, Py_ssize_t kp2, const uint16_t *P, Py_ssize_t n, float *C,
            Py_ssize_t ldc, Py_ssize_t mr) {
        fnn_bf16_rows8(A, kp2, P, n, C, ldc, mr, 4, 1); }
    __attribute__((noinline)) static void fnn_bf16_rows_base(
            const uint32_t *A, Py_ssize_t kp2, const uint16_t *P, Py_ssize_t n, float *C,
            Py_ssize_t ldc, Py_ssize_t mr) {
        fnn_bf16_rows4(A, kp2, P, n, C, ldc, mr, 2, 1); }
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC pop_options
    #endif
    #endif

    #if FNN_BF16_DP
    #define FNN_BF16_TDP __attribute__((target("avx512f,avx512bf16,fma"), noinline))
    #define FNN_BF16_TDPI __attribute__((target("avx512f,avx512bf16,fma"), always_inline)) static inline
    FNN_BF16_TDPI void fnn_bf16_dp_panels(const uint32_t *xb, const uint32_t *P, Py_ssize_t kp2,
                                          float *y, const int G, Py_ssize_t cols) {
        __m512 a0[8], a1[8];
        Py_ssize_t kp;
        int g;
        for (g = 0; g < G; g++) { a0[g] = _mm512_setzero_ps(); a1[g] = _mm512_setzero_ps(); }
        for (kp = 0; kp + 1 < kp2; kp += 2) {
            __m512bh x0 = (__m512bh)_mm512_set1_epi32((int)xb[kp]);
            __m512bh x1 = (__m512bh)_mm512_set1_epi32((int)xb[kp + 1]);
            for (g = 0; g < G; g++) {
                const uint32_t *w = P + g * kp2 * 16 + kp * 16;
                a0[g] = _mm512_dpbf16_ps(a0[g], x0, (__m512bh)_mm512_loadu_si512(w));
                a1[g] = _mm512_dpbf16_ps(a1[g], x1, (__m512bh)_mm512_loadu_si512(w + 16));
            }
        }
        if (kp < kp2) {
            __m512bh x0 = (__m512bh)_mm512_set1_epi32((int)xb[kp]);
            for (g = 0; g < G; g++)
                a0[g] = _mm512_dpbf16_ps(a0[g], x0,
                                         (__m512bh)_mm512_loadu_si512(P + g * kp2 * 16 + kp * 16));
        }
        for (g = 0; g < G; g++) {
            Py_ssize_t r = cols - 16 * g;
            __mmask16 m = r >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << r) - 1u);
            if (r <= 0) break;
            _mm512_mask_storeu_ps(y + 16 * g, m, _mm512_add_ps(a0[g], a1[g]));
        }
    }
    FNN_BF16_TDP static void fnn_bf16_xw_dp(const uint32_t *xb, const uint16_t *P, Py_ssize_t k,
                                           Py_ssize_t n, float *y) {
        Py_ssize_t np = (n + 15) / 16, kp2 = (k + 1) / 2, p = 0;
        const uint32_t *Pw = (const uint32_t *)P;
        for (; p + 8 <= np; p += 8)
            fnn_bf16_dp_panels(xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 8, n - 16 * p);
        switch (np - p) {
        case 7: fnn_bf16_dp_panels(xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 7, n - 16 * p); break;
        case 6: fnn_bf16_dp_panels(xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 6, n - 16 * p); break;
        case 5: fnn_bf16_dp_panels(xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 5, n - 16 * p); break;
        case 4: fnn_bf16_dp_panels(xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 4, n - 16 * p); break;
        case 3: fnn_bf16_dp_panels(xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 3, n - 16 * p); break;
        case 2: fnn_bf16_dp_panels(xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 2, n - 16 * p); break;
        case 1: fnn_bf16_dp_panels(xb, Pw + p * kp2 * 16, kp2, y + 16 * p, 1, n - 16 * p); break;
        default: break;
        }
    }
    /* C[0:mr, 0:cols] (cols <= 32) = A B: A mr rows of kp2 words (row stride kp2), B0/B1 two
       panels (B1 == B0 when cols <= 16) */
    FNN_BF16_TDPI void fnn_bf16_dp_tile(const uint32_t *A, Py_ssize_t kp2, const uint32_t *B0,
                                        const uint32_t *B1, float *C, Py_ssize_t ldc,
                                        Py_ssize_t cols, const int mr) {
        __m512 c0[FNN_BF16_MR], c1[FNN_BF16_MR];
        Py_ssize_t kp;
        int r;
        for (r = 0; r < mr; r++) { c0[r] = _mm512_setzero_ps(); c1[r] = _mm512_setzero_ps(); }
        for (kp = 0; kp < kp2; kp++) {
            __m512bh b0 = (__m512bh)_mm512_loadu_si512(B0 + kp * 16);
            __m512bh b1 = (__m512bh)_mm512_loadu_si512(B1 + kp * 16);
            for (r = 0; r < mr; r++) {
                __m512bh a = (__m512bh)_mm512_set1_epi32((int)A[r * kp2 + kp]);
                c0[r] = _mm512_dpbf16_ps(c0[r], a, b0);
                c1[r] = _mm512_dpbf16_ps(c1[r], a, b1);
            }
        }
        __mmask16 m0 = cols >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << cols) - 1u);
        __mmask16 m1 = cols >= 32 ? (__mmask16)0xffff
                     : cols <= 16 ? (__mmask16)0 : (__mmask16)((1u << (cols - 16)) - 1u);
        for (r = 0; r < mr; r++) {
            _mm512_mask_storeu_ps(C + r * ldc, m0, c0[r]);
            _mm512_mask_storeu_ps(C + r * ldc + 16, m1, c1[r]);
        }
    }
    FNN_BF16_TDP static void fnn_bf16_dp_rows(const uint32_t *A, Py_ssize_t kp2,
                                             const uint16_t *P, Py_ssize_t n, float *C,
                                             Py_ssize_t ldc, Py_ssize_t mr) {
        Py_ssize_t np = (n + 15) / 16, p;
        const uint32_t *Pw = (const uint32_t *)P;
        for (p = 0; p < np; p += 2) {
            const uint32_t *B0 = Pw + p * kp2 * 16, *B1 = p + 1 < np ? B0 + kp2 * 16 : B0;
            if (mr == FNN_BF16_MR)
                fnn_bf16_dp_tile(A, kp2, B0, B1, C + 16 * p, ldc, n - 16 * p, FNN_BF16_MR);
            else
                switch (mr) {
                case 11: fnn_bf16_dp_tile(A, kp2, B0, B1, C + 16 * p, ldc, n - 16 * p, 11); break;
                case 10: fnn_bf16_dp_tile(A, kp2, B0, B1, C + 16 * p, ldc, n - 16 * p, 10); break;
                case 9: fnn_bf16_dp_tile(A, kp2, B0, B1, C + 16 * p, ldc, n - 16 * p, 9); break;
                case 8: fnn_bf16_dp_tile(A, kp2, B0, B1, C + 16 * p, ldc, n - 16 * p, 8); break;
                case 7: fnn_bf16_dp_tile(A, kp2, B0, B1, C + 16 * p, ldc, n - 16 * p, 7); break;
                case 6: fnn_bf16_dp_tile(A, kp2, B0, B1, C + 16 * p, ldc, n - 16 * p, 6); break;
                case 5: fnn_bf16_dp_tile(A, kp2, B0, B1, C + 16 * p, ldc, n - 16 * p, 5); break;
                case 4: fnn_bf16_dp_tile(A, kp2, B0, B1, C + 16 * p, ldc, n - 16 * p, 4); break;
                case 3: fnn_bf16_dp_tile(A, kp2, B0, B1, C + 16 * p, ldc, n - 16 * p, 3); break;
                case 2: fnn_bf16_dp_tile(A, kp2, B0, B1, C + 16 * p, ldc, n - 16 * p, 2); break;
                default: fnn_bf16_dp_tile(A, kp2, B0, B1, C + 16 * p, ldc, n - 16 * p, 1); break;
                }
        }
    }
    #endif

    static void fnn_bf16_round_row(const float *x, Py_ssize_t k, uint32_t *xb) {
    #if FNN_BF16_MV
        if (fnn_bf16_level >= 2) fnn_bf16_round_row_avx512(x, k, xb);
        else if (fnn_bf16_level == 1) fnn_bf16_round_row_avx2(x, k, xb);
        else fnn_bf16_round_row_base(x, k, xb);
    #else
        fnn_bf16_round_row_body(x, k, xb);
    #endif
    }

    /* y[0:n] = xb P: xb an input row rounded by fnn_bf16_round_row, P the packed (k, n)
       weights; k == 0 gives zeros */
    static void fnn_bf16_xw_packed(const uint32_t *xb, const uint16_t *P, Py_ssize_t k,
                                   Py_ssize_t n, float *y) {
        if (n <= 0) return;
    #if FNN_BF16_DP
        if (fnn_bf16_level >= 3) { fnn_bf16_xw_dp(xb, P, k, n, y); return; }
    #endif
    #if FNN_BF16_MV
        if (fnn_bf16_level == 2) fnn_bf16_xw_f_avx512(xb, P, k, n, y);
        else if (fnn_bf16_level == 1) fnn_bf16_xw_f_avx2(xb, P, k, n, y);
        else fnn_bf16_xw_f_base(xb, P, k, n, y);
    #elif FNN_BF16_VEC
        fnn_bf16_xw4(xb, P, k, n, y, 1);
    #else
        fnn_bf16_xw_f_body(FNN_BF16_FUSED_BASE, xb, P, k, n, y);
    #endif
    }

    /* y[0:n] = x[0:k] W through the packed weights P; scratch: ceil(k/2) words */
    static void fnn_bf16_xw(const float *x, const uint16_t *P, Py_ssize_t k, Py_ssize_t n,
                            float *y, uint32_t *scratch) {
        if (n <= 0) return;
        fnn_bf16_round_row(x, k, scratch);
        fnn_bf16_xw_packed(scratch, P, k, n, y);
    }

    /* words of scratch fnn_bf16_gemm needs for k inputs */
    static Py_ssize_t fnn_bf16_gemm_scratch_len(Py_ssize_t k) {
        return FNN_BF16_MR * ((k + 1) / 2);
    }

    /* C (m, n), row stride ldc = X W: X (m, k) float32 with row stride ldx, P the packed (k, n)
       weights; scratch: fnn_bf16_gemm_scratch_len(k) words */
    static void fnn_bf16_gemm(const float *X, Py_ssize_t ldx, Py_ssize_t m, Py_ssize_t k,
                              const uint16_t *P, Py_ssize_t n, float *C, Py_ssize_t ldc,
                              uint32_t *scratch) {
        Py_ssize_t kp2 = (k + 1) / 2, r0, r, mr;
        if (n <= 0) return;
        for (r0 = 0; r0 < m; r0 += FNN_BF16_MR) {
            mr = m - r0 < FNN_BF16_MR ? m - r0 : FNN_BF16_MR;
            for (r = 0; r < mr; r++) fnn_bf16_round_row(X + (r0 + r) * ldx, k, scratch + r * kp2);
    #if FNN_BF16_DP
            if (fnn_bf16_level >= 3) {
                if (kp2 == 0) {
                    for (r = 0; r < mr; r++) memset(C + (r0 + r) * ldc, 0, (size_t)n * sizeof(float));
                } else {
                    fnn_bf16_dp_rows(scratch, kp2, P, n, C + r0 * ldc, ldc, mr);
                }
                continue;
            }
    #endif
    #if FNN_BF16_MV
            if (fnn_bf16_level == 2) fnn_bf16_rows_avx512(scratch, kp2, P, n, C + r0 * ldc, ldc, mr);
            else if (fnn_bf16_level == 1) fnn_bf16_rows_avx2(scratch, kp2, P, n, C + r0 * ldc, ldc, mr);
            else fnn_bf16_rows_base(scratch, kp2, P, n, C + r0 * ldc, ldc, mr);
    #elif FNN_BF16_VEC
            fnn_bf16_rows4(scratch, kp2, P, n, C + r0 * ldc, ldc, mr, 2, 1);
    #else
            for (r = 0; r < mr; r++)
                fnn_bf16_xw_packed(scratch + r * kp2, P, k, n, C + (r0 + r) * ldc);
    #endif
        }
    }

    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC pop_options
    #endif
    #endif
    """
    int FNN_BF16_MR
    int fnn_bf16_level
    int fnn_bf16_supported() noexcept nogil
    uint16_t fnn_bf16_from_f(float f) noexcept nogil
    float fnn_bf16_to_f(uint16_t h) noexcept nogil
    Py_ssize_t fnn_bf16_packed_len(Py_ssize_t k, Py_ssize_t n) noexcept nogil
    void fnn_bf16_pack(const float *W, Py_ssize_t ldw, Py_ssize_t k, Py_ssize_t n,
                       uint16_t *P) noexcept nogil
    void fnn_bf16_round_row(const float *x, Py_ssize_t k, uint32_t *xb) noexcept nogil
    void fnn_bf16_xw_packed(const uint32_t *xb, const uint16_t *P, Py_ssize_t k, Py_ssize_t n,
                            float *y) noexcept nogil
    void fnn_bf16_xw(const float *x, const uint16_t *P, Py_ssize_t k, Py_ssize_t n, float *y,
                     uint32_t *scratch) noexcept nogil
    Py_ssize_t fnn_bf16_gemm_scratch_len(Py_ssize_t k) noexcept nogil
    void fnn_bf16_gemm(const float *X, Py_ssize_t ldx, Py_ssize_t m, Py_ssize_t k,
                       const uint16_t *P, Py_ssize_t n, float *C, Py_ssize_t ldc,
                       uint32_t *scratch) noexcept nogil
