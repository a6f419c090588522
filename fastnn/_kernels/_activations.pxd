# Design: the element functions of every activation and of its derivative (computed from the
# OUTPUT y = act(z)), shared by the activation, dense and any other kernel that cimports them.
# One row loop per activation is produced by inlining act_row / act_grad_row with a constant
# code, so each loop is a branch-free, auto-vectorizable pass (SSE2 baseline: no -march).
# float32 sigmoid/tanh use a vectorizable polynomial exp/expm1 (Cephes expf, a few ulp);
# float64 uses libm's exp/tanh. NaN propagates like NumPy in every forward function.
from cython cimport floating
from libc.math cimport tanh as _tanh

cdef extern from *:
    """
    #include <math.h>
    #include <string.h>
    #include <stdint.h>
    /* exp(x) for float32, vectorizable with SSE2: x = n ln2 + r, |r| <= ln2/2, e^r by a
       degree-6 polynomial (Cephes expf), 2^n built in the exponent bits. Results below
       FLT_MIN are flushed to 0 (x < -87.33); x is clamped to 88.37 (e^88.37 < FLT_MAX). */
    static inline float fastnn_expf(float x) {
        float xc = x > 88.37f ? 88.37f : x;
        float lo = xc < -87.33f ? -87.33f : xc;
        float n = (lo * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
        float r = lo - n * 0.693359375f - n * (-2.12194440e-4f);
        float p = 1.9875691500e-4f;
        p = p * r + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        p = p * r * r + r + 1.0f;
        int32_t bits = ((int32_t) n + 127) << 23;
        float scale;
        memcpy(&scale, &bits, sizeof(scale));
        float res = p * scale;
        return xc < -87.33f ? 0.0f : res;
    }
    /* sigmoid(z) = 1 / (1 + e^-z) for z >= 0, e^z / (1 + e^z) for z < 0: e^-|z| never
       overflows, so both tails are exact to rounding. */
    static inline float fastnn_sigmoidf(float z) {
        float e = fastnn_expf(-fabsf(z));
        float s = 1.0f / (1.0f + e);
        return z >= 0.0f ? s : e * s;
    }
    static inline double fastnn_sigmoid(double z) {
        double e = exp(-fabs(z));
        double s = 1.0 / (1.0 + e);
        return z >= 0.0 ? s : e * s;
    }
    /* e^x - 1 for float32 in [-87, 88.37], without cancellation near 0: with x = n ln2 + r,
       e^x - 1 = 2^n (r + r^2 P(r)) + (2^n - 1), and 2^n - 1 is exact (n = 0 for |x| < 0.34). */
    static inline float fastnn_expm1f(float x) {
        float xc = x > 88.37f ? 88.37f : (x < -87.0f ? -87.0f : x);
        float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
        float r = xc - n * 0.693359375f - n * (-2.12194440e-4f);
        float p = 1.9875691500e-4f;
        p = p * r + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        p = p * r * r + r;
        int32_t bits = ((int32_t) n + 127) << 23;
        float scale;
        memcpy(&scale, &bits, sizeof(scale));
        return scale * p + (scale - 1.0f);
    }
    /* tanh(z) = sign(z) m / (m + 2), m = e^{2|z|} - 1 (expm1: accurate for tiny |z| too);
       |z| is clamped to 9 (tanh(9) rounds to 1 in float32), so m never overflows. */
    static inline float fastnn_tanhf(float z) {
        float a = fabsf(z);
        float ac = a > 9.0f ? 9.0f : a;
        float m = fastnn_expm1f(2.0f * ac);
        float t = m / (m + 2.0f);
        return z < 0.0f ? -t : t;
    }
    /* The float32 sigmoid/tanh row loops are compute bound: build them twice, for the SSE2
       baseline and for AVX2 (8 floats a vector), and let the loader pick one at run time
       (GCC target_clones, an ifunc: Linux x86-64 only). Same formulas, no FMA contraction
       change (-mfma is not part of "avx2"); wheels still run on any x86-64 CPU. */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define FASTNN_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define FASTNN_CLONES
    #endif
    FASTNN_CLONES static void fastnn_sigmoid_rowf(float *y, const float *z, const float *b,
                                                  Py_ssize_t n) {
        Py_ssize_t j;
        if (b) { for (j = 0; j < n; j++) y[j] = fastnn_sigmoidf(z[j] + b[j]); }
        else { for (j = 0; j < n; j++) y[j] = fastnn_sigmoidf(z[j]); }
    }
    FASTNN_CLONES static void fastnn_tanh_rowf(float *y, const float *z, const float *b,
                                               Py_ssize_t n) {
        Py_ssize_t j;
        if (b) { for (j = 0; j < n; j++) y[j] = fastnn_tanhf(z[j] + b[j]); }
        else { for (j = 0; j < n; j++) y[j] = fastnn_tanhf(z[j]); }
    }
    """
    float fastnn_expf(float x) noexcept nogil
    float fastnn_sigmoidf(float z) noexcept nogil
    double fastnn_sigmoid(double z) noexcept nogil
    float fastnn_tanhf(float z) noexcept nogil
    void fastnn_sigmoid_rowf(float *y, const float *z, const float *b, Py_ssize_t n) noexcept nogil
    void fastnn_tanh_rowf(float *y, const float *z, const float *b, Py_ssize_t n) noexcept nogil


cdef enum:
    ACT_IDENTITY = 0
    ACT_SIGMOID = 1
    ACT_TANH = 2
    ACT_RELU = 3
    ACT_STEP = 4
    ACT_SIGN = 5
    N_ACTIVATIONS = 6


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
            return _tanh(z)
    elif code == ACT_RELU:
        return 0 if z < 0 else z
    elif code == ACT_STEP:
        return 1 if z >= 0 else (0 if z < 0 else z)
    elif code == ACT_SIGN:
        return 1 if z >= 0 else (-1 if z < 0 else z)
    return z


cdef inline floating act_grad_elem(int code, floating y, floating g) noexcept nogil:
    """g * act'(z), the derivative taken from the output y = act(z); 0 for step and sign."""
    if code == ACT_SIGMOID:
        return g * (y * (1 - y))
    elif code == ACT_TANH:
        return g * (1 - y * y)
    elif code == ACT_RELU:
        return g if y > 0 else 0
    elif code == ACT_STEP or code == ACT_SIGN:
        return 0
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
            _act_row_c(ACT_SIGMOID, y, z, b, n)
    elif code == ACT_TANH:
        if floating is float:
            fastnn_tanh_rowf(y, z, b, n)
        else:
            _act_row_c(ACT_TANH, y, z, b, n)
    elif code == ACT_RELU:
        _act_row_c(ACT_RELU, y, z, b, n)
    elif code == ACT_STEP:
        _act_row_c(ACT_STEP, y, z, b, n)
    elif code == ACT_SIGN:
        _act_row_c(ACT_SIGN, y, z, b, n)
    else:
        _act_row_c(ACT_IDENTITY, y, z, b, n)


cdef inline void _act_grad_row_c(int code, floating *gz, const floating *y, const floating *g,
                                 Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        gz[j] = act_grad_elem(code, y[j], g[j])


cdef inline void act_grad_row(int code, floating *gz, const floating *y, const floating *g,
                              Py_ssize_t n) noexcept nogil:
    """gz[j] = g[j] * act'(z[j]) from y[j] = act(z[j]) (gz may be g)."""
    cdef Py_ssize_t j
    if code == ACT_SIGMOID:
        _act_grad_row_c(ACT_SIGMOID, gz, y, g, n)
    elif code == ACT_TANH:
        _act_grad_row_c(ACT_TANH, gz, y, g, n)
    elif code == ACT_RELU:
        _act_grad_row_c(ACT_RELU, gz, y, g, n)
    elif code == ACT_STEP or code == ACT_SIGN:
        for j in range(n):
            gz[j] = 0
    elif gz != g:
        for j in range(n):
            gz[j] = g[j]
