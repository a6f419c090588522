# Design: the element functions of every activation and of its derivative, shared by the
# activation, dense and any other kernel that cimports them. A derivative is computed from the
# OUTPUT y = act(z) where that is possible (sigmoid, tanh, relu, leaky relu, ELU, softplus), and
# from the PRE-ACTIVATION z for the activations whose derivative y does not determine (GELU in
# both forms, SiLU): act_needs_z(code) tells which, and the callers keep z for those only.
# One row loop per activation is produced by inlining act_row / act_grad_row with a constant
# code, so each loop is a branch-free, auto-vectorizable pass (SSE2 baseline: no -march). The
# loops whose element function is exp-based (sigmoid, tanh, SiLU, GELU-tanh, ELU, the softplus
# derivative; softplus in float32) are C functions built for SSE2, AVX2 and AVX-512F and picked
# when the module loads (_math.pxd), with the same results on each: they use the exp without
# fused multiply-adds at every width (fnn_exp_f/_d, FNN_FUSED_BASE: 0 on x86-64), so that they
# also give the bits of the scalar element functions (act_elem) that other kernels call.
# exp, expm1 and float32 log1p on [0, 1] are the vectorizable polynomials of _math.pxd (exp:
# float32 < 1.5 ulp, float64 < 3 ulp); tanh is sign(z) m / (m + 2), m = expm1(2|z|); the erf
# of exact GELU and float64 softplus's log1p are libm's. NaN propagates like NumPy in every
# forward function.
from cython cimport floating
from fastnn._kernels._math cimport fnn_exp_f, fnn_exp_d, fnn_expm1_f, fnn_expm1_d

cdef extern from *:
    """
    #include <math.h>
    #include <string.h>
    #include <stdint.h>
    /* compiled as _math.pxd's functions are: no trapping math, no FP contraction (so the
       SSE2, AVX2 and AVX-512F copies of the row loops give the same bits) */
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC push_options
    #pragma GCC optimize("no-trapping-math", "fp-contract=off")
    #endif
    /* sigmoid(z) = 1 / (1 + e^-z) for z >= 0, e^z / (1 + e^z) for z < 0: e^-|z| never
       overflows, so both tails are exact to rounding. */
    static inline float fastnn_sigmoidf(float z) {
        float e = fnn_exp_f(-fabsf(z));
        float s = 1.0f / (1.0f + e);
        return z >= 0.0f ? s : e * s;
    }
    static inline double fastnn_sigmoid(double z) {
        double e = fnn_exp_d(-fabs(z));
        double s = 1.0 / (1.0 + e);
        return z >= 0.0 ? s : e * s;
    }
    /* tanh(z) = sign(z) m / (m + 2), m = e^{2|z|} - 1 (expm1: accurate for tiny |z| too);
       |z| is clamped to 9 (tanh(9) rounds to 1 in float32), so m never overflows. */
    static inline double fastnn_tanh_d(double z) {   /* |z| clamped to 20: tanh rounds to 1 */
        double a = fabs(z);
        double ac = a > 20.0 ? 20.0 : a;
        double m = fnn_expm1_d(2.0 * ac);
        double t = m / (m + 2.0);
        return z < 0.0 ? -t : t;
    }
    static inline float fastnn_tanhf(float z) {
        float a = fabsf(z);
        float ac = a > 9.0f ? 9.0f : a;
        float m = fnn_expm1_f(2.0f * ac);
        float t = m / (m + 2.0f);
        return z < 0.0f ? -t : t;
    }
    /* Activations of the pre-activation family (constants as in torch.nn.functional's
       defaults). GELU (Hendrycks & Gimpel 2016): z Phi(z), exactly with erf or with the tanh
       approximation; SiLU (Elfwing et al. 2018; "swish"): z sigmoid(z); softplus:
       log(1 + e^z), as max(z, 0) + log1p(e^-|z|) (no overflow); ELU (Clevert et al. 2016,
       alpha = 1): z if z > 0 else e^z - 1; leaky ReLU (Maas et al. 2013, slope 0.01). */
    #define FASTNN_GELU_K 0.7978845608028654    /* sqrt(2 / pi) */
    #define FASTNN_GELU_C 0.044715
    #define FASTNN_INV_SQRT_2PI 0.3989422804014327
    #define FASTNN_LEAKY_SLOPE 0.01
    /* Phi(z) = erfc(-z / sqrt 2) / 2: no cancellation in the lower tail (1 + erf would lose
       every digit of Phi(-5) ~ 2.9e-7 in float32). */
    static inline float fastnn_phif(float z) {
        return 0.5f * erfcf(-z * (float) M_SQRT1_2);
    }
    static inline double fastnn_phi(double z) {
        return 0.5 * erfc(-z * M_SQRT1_2);
    }
    static inline float fastnn_gelu_erff(float z) { return z * fastnn_phif(z); }
    static inline double fastnn_gelu_erf(double z) { return z * fastnn_phi(z); }
    /* Phi(z) + z phi(z) */
    static inline float fastnn_gelu_erf_gradf(float z) {
        return fastnn_phif(z) + z * (float) FASTNN_INV_SQRT_2PI * fnn_exp_f(-0.5f * z * z);
    }
    static inline double fastnn_gelu_erf_grad(double z) {
        return fastnn_phi(z) + z * FASTNN_INV_SQRT_2PI * fnn_exp_d(-0.5 * z * z);
    }
    /* The tanh form as z sigmoid(2u), u = sqrt(2/pi) (z + 0.044715 z^3): the same function as
       0.5 z (1 + tanh u), without its cancellation for z < 0. Its derivative is
       s + 2 z s (1 - s) u'(z) with s = sigmoid(2u); z is clamped to +-20 there (s is then 0 or 1
       to rounding), so z^3 never overflows into inf * 0. */
    static inline float fastnn_gelu_tanhf(float z) {
        float u = (float) FASTNN_GELU_K * (z + (float) FASTNN_GELU_C * z * z * z);
        return z * fastnn_sigmoidf(2.0f * u);
    }
    static inline double fastnn_gelu_tanh(double z) {
        double u = FASTNN_GELU_K * (z + FASTNN_GELU_C * z * z * z);
        return z * fastnn_sigmoid(2.0 * u);
    }
    static inline float fastnn_gelu_tanh_gradf(float z) {
        float zc = z > 20.0f ? 20.0f : (z < -20.0f ? -20.0f : z);
        float u = (float) FASTNN_GELU_K * (zc + (float) FASTNN_GELU_C * zc * zc * zc);
        float s = fastnn_sigmoidf(2.0f * u);
        return s + 2.0f * zc * s * (1.0f - s) * (float) FASTNN_GELU_K
               * (1.0f + 3.0f * (float) FASTNN_GELU_C * zc * zc);
    }
    static inline double fastnn_gelu_tanh_grad(double z) {
        double zc = z > 40.0 ? 40.0 : (z < -40.0 ? -40.0 : z);
        double u = FASTNN_GELU_K * (zc + FASTNN_GELU_C * zc * zc * zc);
        double s = fastnn_sigmoid(2.0 * u);
        return s + 2.0 * zc * s * (1.0 - s) * FASTNN_GELU_K * (1.0 + 3.0 * FASTNN_GELU_C * zc * zc);
    }
    static inline float fastnn_softplusf(float z) {
        return (z > 0.0f ? z : 0.0f) + fnn_log1p_unit_f(fnn_exp_f(-fabsf(z)));
    }
    static inline double fastnn_softplus(double z) {
        return (z > 0.0 ? z : 0.0) + log1p(fnn_exp_d(-fabs(z)));
    }
    static inline float fastnn_eluf(float z) {
        return z > 0.0f ? z : fnn_expm1_f(z);
    }
    static inline double fastnn_elu(double z) {
        return z > 0.0 ? z : fnn_expm1_d(z);
    }
    /* The float32 sigmoid/tanh row loops are compute bound: built for SSE2, AVX2 and AVX-512F
       and picked when the module loads (FNN_MV_VOID, _math.pxd): the same bits on each. */
    FNN_INLINE void fastnn_sigmoid_rowf_body(float *y, const float *z, const float *b,
                                             Py_ssize_t n) {
        Py_ssize_t j;
        if (b) { for (j = 0; j < n; j++) y[j] = fastnn_sigmoidf(z[j] + b[j]); }
        else { for (j = 0; j < n; j++) y[j] = fastnn_sigmoidf(z[j]); }
    }
    FNN_INLINE void fastnn_tanh_rowf_body(float *y, const float *z, const float *b,
                                          Py_ssize_t n) {
        Py_ssize_t j;
        if (b) { for (j = 0; j < n; j++) y[j] = fastnn_tanhf(z[j] + b[j]); }
        else { for (j = 0; j < n; j++) y[j] = fastnn_tanhf(z[j]); }
    }
    FNN_MV_VOID(fastnn_sigmoid_rowf, (float *y, const float *z, const float *b, Py_ssize_t n),
                (y, z, b, n))
    FNN_MV_VOID(fastnn_tanh_rowf, (float *y, const float *z, const float *b, Py_ssize_t n),
                (y, z, b, n))
    /* The other row loops whose element function is vectorizable (exp-based; not those that
       call libm's erfc, log1p, tanh or expm1), forward and derivative, built the same way. */
    #define FASTNN_ACT_ROW(NAME, T, F)                                                       \\
        FNN_INLINE void NAME##_body(T *y, const T *z, const T *b, Py_ssize_t n) {            \\
            Py_ssize_t j;                                                                    \\
            if (b) { for (j = 0; j < n; j++) y[j] = F(z[j] + b[j]); }                        \\
            else { for (j = 0; j < n; j++) y[j] = F(z[j]); }                                 \\
        }                                                                                    \\
        FNN_MV_VOID(NAME, (T *y, const T *z, const T *b, Py_ssize_t n), (y, z, b, n))
    #define FASTNN_GRAD_ROW(NAME, T, F)  /* gz = g * F(v) */                                 \\
        FNN_INLINE void NAME##_body(T *gz, const T *v, const T *g, Py_ssize_t n) {           \\
            for (Py_ssize_t j = 0; j < n; j++) gz[j] = g[j] * F(v[j]);                       \\
        }                                                                                    \\
        FNN_MV_VOID(NAME, (T *gz, const T *v, const T *g, Py_ssize_t n), (gz, v, g, n))
    static inline float fastnn_siluf(float z) { return z * fastnn_sigmoidf(z); }
    static inline double fastnn_silu(double z) { return z * fastnn_sigmoid(z); }
    /* silu' = s (1 + z (1 - s)), s = sigmoid(z) */
    static inline float fastnn_silu_gradf(float z) {
        float s = fastnn_sigmoidf(z);
        return s * (1.0f + z * (1.0f - s));
    }
    static inline double fastnn_silu_grad(double z) {
        double s = fastnn_sigmoid(z);
        return s * (1.0 + z * (1.0 - s));
    }
    /* softplus' from y = softplus(z): sigmoid(z) = 1 - e^-y */
    static inline float fastnn_softplus_grad_yf(float y) { return -fnn_expm1_f(-y); }
    static inline double fastnn_softplus_grad_y(double y) { return -fnn_expm1_d(-y); }
    FASTNN_ACT_ROW(fastnn_sigmoid_rowd, double, fastnn_sigmoid)
    FASTNN_ACT_ROW(fastnn_silu_rowf, float, fastnn_siluf)
    FASTNN_ACT_ROW(fastnn_silu_rowd, double, fastnn_silu)
    FASTNN_ACT_ROW(fastnn_gelu_tanh_rowf, float, fastnn_gelu_tanhf)
    FASTNN_ACT_ROW(fastnn_gelu_tanh_rowd, double, fastnn_gelu_tanh)
    FASTNN_ACT_ROW(fastnn_elu_rowf, float, fastnn_eluf)
    FASTNN_ACT_ROW(fastnn_elu_rowd, double, fastnn_elu)
    FASTNN_ACT_ROW(fastnn_tanh_rowd, double, fastnn_tanh_d)
    FASTNN_ACT_ROW(fastnn_softplus_rowf, float, fastnn_softplusf)
    FASTNN_GRAD_ROW(fastnn_silu_grad_rowf, float, fastnn_silu_gradf)
    FASTNN_GRAD_ROW(fastnn_silu_grad_rowd, double, fastnn_silu_grad)
    FASTNN_GRAD_ROW(fastnn_gelu_tanh_grad_rowf, float, fastnn_gelu_tanh_gradf)
    FASTNN_GRAD_ROW(fastnn_gelu_tanh_grad_rowd, double, fastnn_gelu_tanh_grad)
    FASTNN_GRAD_ROW(fastnn_softplus_grad_rowf, float, fastnn_softplus_grad_yf)
    FASTNN_GRAD_ROW(fastnn_softplus_grad_rowd, double, fastnn_softplus_grad_y)
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC pop_options
    #endif
    """
    float fastnn_gelu_erff(float z) noexcept nogil
    double fastnn_gelu_erf(double z) noexcept nogil
    float fastnn_gelu_erf_gradf(float z) noexcept nogil
    double fastnn_gelu_erf_grad(double z) noexcept nogil
    float fastnn_gelu_tanhf(float z) noexcept nogil
    double fastnn_gelu_tanh(double z) noexcept nogil
    float fastnn_gelu_tanh_gradf(float z) noexcept nogil
    double fastnn_gelu_tanh_grad(double z) noexcept nogil
    float fastnn_softplusf(float z) noexcept nogil
    double fastnn_softplus(double z) noexcept nogil
    float fastnn_eluf(float z) noexcept nogil
    double fastnn_elu(double z) noexcept nogil
    double FASTNN_LEAKY_SLOPE
    float fastnn_sigmoidf(float z) noexcept nogil
    double fastnn_sigmoid(double z) noexcept nogil
    float fastnn_tanhf(float z) noexcept nogil
    void fastnn_sigmoid_rowf(float *y, const float *z, const float *b, Py_ssize_t n) noexcept nogil
    void fastnn_tanh_rowf(float *y, const float *z, const float *b, Py_ssize_t n) noexcept nogil
    void fastnn_sigmoid_rowd(double *y, const double *z, const double *b, Py_ssize_t n) noexcept nogil
    void fastnn_silu_rowf(float *y, const float *z, const float *b, Py_ssize_t n) noexcept nogil
    void fastnn_silu_rowd(double *y, const double *z, const double *b, Py_ssize_t n) noexcept nogil
    void fastnn_gelu_tanh_rowf(float *y, const float *z, const float *b, Py_ssize_t n) noexcept nogil
    void fastnn_gelu_tanh_rowd(double *y, const double *z, const double *b,
                               Py_ssize_t n) noexcept nogil
    void fastnn_elu_rowf(float *y, const float *z, const float *b, Py_ssize_t n) noexcept nogil
    void fastnn_elu_rowd(double *y, const double *z, const double *b, Py_ssize_t n) noexcept nogil
    void fastnn_tanh_rowd(double *y, const double *z, const double *b, Py_ssize_t n) noexcept nogil
    double fastnn_tanh_d(double z) noexcept nogil
    void fastnn_softplus_rowf(float *y, const float *z, const float *b, Py_ssize_t n) noexcept nogil
    void fastnn_silu_grad_rowf(float *gz, const float *v, const float *g, Py_ssize_t n) noexcept nogil
    void fastnn_silu_grad_rowd(double *gz, const double *v, const double *g,
                               Py_ssize_t n) noexcept nogil
    void fastnn_gelu_tanh_grad_rowf(float *gz, const float *v, const float *g,
                                    Py_ssize_t n) noexcept nogil
    void fastnn_gelu_tanh_grad_rowd(double *gz, const double *v, const double *g,
                                    Py_ssize_t n) noexcept nogil
    void fastnn_softplus_grad_rowf(float *gz, const float *v, const float *g,
                                   Py_ssize_t n) noexcept nogil
    void fastnn_softplus_grad_rowd(double *gz, const double *v, const double *g,
                                   Py_ssize_t n) noexcept nogil


cdef enum:
    ACT_IDENTITY = 0
    ACT_SIGMOID = 1
    ACT_TANH = 2
    ACT_RELU = 3
    ACT_STEP = 4
    ACT_SIGN = 5
    ACT_LEAKY_RELU = 6
    ACT_ELU = 7
    ACT_SOFTPLUS = 8
    ACT_GELU = 9
    ACT_GELU_TANH = 10
    ACT_SILU = 11
    N_ACTIVATIONS = 12


cdef inline bint act_needs_z(int code) noexcept nogil:
    """True when the derivative is computed from the pre-activation z (GELU, SiLU)."""
    return code == ACT_GELU or code == ACT_GELU_TANH or code == ACT_SILU


cdef inline floating act_elem(int code, floating z) noexcept nogil:
    """act(z) for one element. NaN in, NaN out (also for relu, step and sign)."""
    if code == ACT_SIGMOID:
        if floating is float:
            return fastnn_sigmoidf(z)
        else:
            return fastnn_sigmoid(z)
    elif code == ACT_TANH:
        if floating is float:
            return fastnn_tanhf(z)
        else:
            return fastnn_tanh_d(z)
    elif code == ACT_RELU:
        return 0 if z < 0 else z
    elif code == ACT_STEP:
        return 1 if z >= 0 else (0 if z < 0 else z)
    elif code == ACT_SIGN:
        return 1 if z >= 0 else (-1 if z < 0 else z)
    elif code == ACT_LEAKY_RELU:
        return z if z > 0 else <floating> FASTNN_LEAKY_SLOPE * z
    elif code == ACT_ELU:
        if floating is float:
            return fastnn_eluf(z)
        else:
            return fastnn_elu(z)
    elif code == ACT_SOFTPLUS:
        if floating is float:
            return fastnn_softplusf(z)
        else:
            return fastnn_softplus(z)
    elif code == ACT_GELU:
        if floating is float:
            return fastnn_gelu_erff(z)
        else:
            return fastnn_gelu_erf(z)
    elif code == ACT_GELU_TANH:
        if floating is float:
            return fastnn_gelu_tanhf(z)
        else:
            return fastnn_gelu_tanh(z)
    elif code == ACT_SILU:
        if floating is float:
            return z * fastnn_sigmoidf(z)
        else:
            return z * fastnn_sigmoid(z)
    return z


cdef inline floating act_grad_elem(int code, floating v, floating g) noexcept nogil:
    """g * act'(z), the derivative taken from v: the pre-activation z when act_needs_z(code),
    else the output y = act(z). 0 for step and sign."""
    cdef floating s
    if code == ACT_SIGMOID:
        return g * (v * (1 - v))
    elif code == ACT_TANH:
        return g * (1 - v * v)
    elif code == ACT_RELU:
        return g if v > 0 else 0
    elif code == ACT_STEP or code == ACT_SIGN:
        return 0
    elif code == ACT_LEAKY_RELU:
        return g if v > 0 else g * <floating> FASTNN_LEAKY_SLOPE
    elif code == ACT_ELU:          # y = e^z - 1 below 0: act' = e^z = y + 1
        return g if v > 0 else g * (v + 1)
    elif code == ACT_SOFTPLUS:     # act' = sigmoid(z) = 1 - e^-y
        if floating is float:
            return -g * fnn_expm1_f(-v)
        else:
            return -g * fnn_expm1_d(-v)
    elif code == ACT_GELU:
        if floating is float:
            return g * fastnn_gelu_erf_gradf(v)
        else:
            return g * fastnn_gelu_erf_grad(v)
    elif code == ACT_GELU_TANH:
        if floating is float:
            return g * fastnn_gelu_tanh_gradf(v)
        else:
            return g * fastnn_gelu_tanh_grad(v)
    elif code == ACT_SILU:         # act' = s (1 + z (1 - s)), s = sigmoid(z)
        if floating is float:
            s = fastnn_sigmoidf(v)
        else:
            s = fastnn_sigmoid(v)
        return g * (s * (1 + v * (1 - s)))
    return g


cdef inline void _act_row_c(int code, floating *y, const floating *z, const floating *b,
                            Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    if b == NULL:
        for j in range(n):
            y[j] = act_elem(code, z[j])
    else:
        for j in range(n):
            y[j] = act_elem(code, z[j] + b[j])


cdef inline void act_row(int code, floating *y, const floating *z, const floating *b,
                         Py_ssize_t n) noexcept nogil:
    """y[j] = act(z[j] + b[j]) for j < n (b may be NULL; y may be z)."""
    # One call per constant code so the C compiler emits one vectorized loop per activation.
    if code == ACT_SIGMOID:
        if floating is float:
            fastnn_sigmoid_rowf(y, z, b, n)
        else:
            fastnn_sigmoid_rowd(y, z, b, n)
    elif code == ACT_TANH:
        if floating is float:
            fastnn_tanh_rowf(y, z, b, n)
        else:
            fastnn_tanh_rowd(y, z, b, n)
    elif code == ACT_RELU:
        _act_row_c(ACT_RELU, y, z, b, n)
    elif code == ACT_STEP:
        _act_row_c(ACT_STEP, y, z, b, n)
    elif code == ACT_SIGN:
        _act_row_c(ACT_SIGN, y, z, b, n)
    elif code == ACT_LEAKY_RELU:
        _act_row_c(ACT_LEAKY_RELU, y, z, b, n)
    elif code == ACT_ELU:
        if floating is float:
            fastnn_elu_rowf(y, z, b, n)
        else:
            fastnn_elu_rowd(y, z, b, n)
    elif code == ACT_SOFTPLUS:
        if floating is float:
            fastnn_softplus_rowf(y, z, b, n)
        else:
            _act_row_c(ACT_SOFTPLUS, y, z, b, n)
    elif code == ACT_GELU:
        _act_row_c(ACT_GELU, y, z, b, n)
    elif code == ACT_GELU_TANH:
        if floating is float:
            fastnn_gelu_tanh_rowf(y, z, b, n)
        else:
            fastnn_gelu_tanh_rowd(y, z, b, n)
    elif code == ACT_SILU:
        if floating is float:
            fastnn_silu_rowf(y, z, b, n)
        else:
            fastnn_silu_rowd(y, z, b, n)
    else:
        _act_row_c(ACT_IDENTITY, y, z, b, n)


cdef inline void act_row_keep_z(int code, floating *y, floating *z, const floating *b,
                                Py_ssize_t n) noexcept nogil:
    """z[j] += b[j], then y[j] = act(z[j]) for j < n (b may be NULL): the epilogue that keeps
    the pre-activation for the activations whose derivative needs it."""
    cdef Py_ssize_t j
    if b != NULL:
        for j in range(n):
            z[j] = z[j] + b[j]
    act_row(code, y, z, <const floating *> NULL, n)


cdef inline void _act_grad_row_c(int code, floating *gz, const floating *y, const floating *g,
                                 Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        gz[j] = act_grad_elem(code, y[j], g[j])


cdef inline void act_grad_row(int code, floating *gz, const floating *y, const floating *g,
                              Py_ssize_t n) noexcept nogil:
    """gz[j] = g[j] * act'(z[j]), from y[j] = act(z[j]), or from z[j] itself (passed in y) when
    act_needs_z(code) (gz may be g)."""
    cdef Py_ssize_t j
    if code == ACT_SIGMOID:
        _act_grad_row_c(ACT_SIGMOID, gz, y, g, n)
    elif code == ACT_TANH:
        _act_grad_row_c(ACT_TANH, gz, y, g, n)
    elif code == ACT_RELU:
        _act_grad_row_c(ACT_RELU, gz, y, g, n)
    elif code == ACT_LEAKY_RELU:
        _act_grad_row_c(ACT_LEAKY_RELU, gz, y, g, n)
    elif code == ACT_ELU:
        _act_grad_row_c(ACT_ELU, gz, y, g, n)
    elif code == ACT_SOFTPLUS:
        if floating is float:
            fastnn_softplus_grad_rowf(gz, y, g, n)
        else:
            fastnn_softplus_grad_rowd(gz, y, g, n)
    elif code == ACT_GELU:
        _act_grad_row_c(ACT_GELU, gz, y, g, n)
    elif code == ACT_GELU_TANH:
        if floating is float:
            fastnn_gelu_tanh_grad_rowf(gz, y, g, n)
        else:
            fastnn_gelu_tanh_grad_rowd(gz, y, g, n)
    elif code == ACT_SILU:
        if floating is float:
            fastnn_silu_grad_rowf(gz, y, g, n)
        else:
            fastnn_silu_grad_rowd(gz, y, g, n)
    elif code == ACT_STEP or code == ACT_SIGN:
        for j in range(n):
            gz[j] = 0
    elif gz != g:
        for j in range(n):
            gz[j] = g[j]
