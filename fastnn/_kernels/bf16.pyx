# Design: the Python entry points of the bfloat16 kernels of _bf16.pxd (tests, benchmarks):
# rounding, packing, the one-row product and the GEMM, each on new arrays; and the vector
# width the kernels use, which tests can lower. The kernels themselves live in _bf16.pxd.
import time

import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint16_t, uint32_t

from fastnn._kernels._bf16 cimport (fnn_bf16_level, fnn_bf16_supported, fnn_bf16_from_f,
                                    fnn_bf16_packed_len, fnn_bf16_pack, fnn_bf16_round_row,
                                    fnn_bf16_xw, fnn_bf16_gemm_scratch_len, fnn_bf16_gemm,
                                    FNN_BF16_MR)
cnp.import_array()

#: Names of the kernel levels, by number (see _bf16.pxd).
SIMD_LEVELS = ("baseline", "avx2", "avx512", "avx512bf16")
#: Rows the GEMM rounds and multiplies at a time.
MR = FNN_BF16_MR


def simd_level():
    """The level the bfloat16 kernels use here: one of SIMD_LEVELS."""
    return SIMD_LEVELS[fnn_bf16_level]


def _supported_level():
    """The highest level (an index into SIMD_LEVELS) this CPU and build support."""
    return fnn_bf16_supported()


def _set_simd_level(str name):
    """Tests and benchmarks: use the kernels built for ``name`` (one of SIMD_LEVELS, at most what
    the CPU supports), here and in the inference plans; returns the previous name."""
    global fnn_bf16_level
    from fastnn._kernels import inference
    if name not in SIMD_LEVELS:
        raise ValueError(f"simd level must be one of {SIMD_LEVELS}, got {name!r}")
    if SIMD_LEVELS.index(name) > fnn_bf16_supported():
        raise ValueError(f"this CPU or build does not support {name!r}")
    old = SIMD_LEVELS[fnn_bf16_level]
    fnn_bf16_level = SIMD_LEVELS.index(name)
    inference._set_bf16_level(fnn_bf16_level)
    return old


def round_bits(const float[::1] a):
    """The bfloat16 bits (uint16, same length) of the float32 1-D array ``a``, rounded to
    nearest, ties to even, one element at a time (the scalar rounding of pack)."""
    out = np.empty(a.shape[0], dtype=np.uint16)
    cdef uint16_t[::1] o = out
    cdef Py_ssize_t i
    for i in range(a.shape[0]):
        o[i] = fnn_bf16_from_f(a[i])
    return out


def round_row(const float[::1] x):
    """The bfloat16 bits of an input row as the products round it (the level's vector code):
    uint16 of length 2 ceil(k/2), an odd k padded with 0."""
    cdef Py_ssize_t k = x.shape[0], kp2 = (k + 1) // 2
    out = np.zeros(2 * kp2, dtype=np.uint16)
    cdef uint16_t[::1] o = out
    if kp2:
        fnn_bf16_round_row(&x[0], k, <uint32_t *> &o[0])
    return out


def packed_len(Py_ssize_t k, Py_ssize_t n):
    """uint16 entries of the packed form of a (k, n) weight matrix."""
    return fnn_bf16_packed_len(k, n)


def pack(const float[:, :] W):
    """The packed bfloat16 form (uint16 1-D, packed_len(k, n) entries) of the float32 (k, n)
    matrix W (rows contiguous), 64-byte aligned: a view of a buffer 32 entries longer (the
    kernels' unaligned loads of 64-byte vectors would otherwise each span two cache lines)."""
    cdef Py_ssize_t k = W.shape[0], n = W.shape[1], m = fnn_bf16_packed_len(k, n)
    if k and n and W.strides[1] != sizeof(float):
        raise ValueError("W's rows must be contiguous")
    buf = np.empty(m + 32, dtype=np.uint16)
    off = (-buf.ctypes.data % 64) // 2
    out = buf[off:off + m]
    cdef uint16_t[::1] o = out
    if out.shape[0]:
        fnn_bf16_pack(&W[0, 0], W.strides[0] // sizeof(float), k, n, &o[0])
    return out


def _check(const uint16_t[::1] P, Py_ssize_t k, Py_ssize_t n):
    if k < 0 or n < 0 or P.shape[0] != fnn_bf16_packed_len(k, n):
        raise ValueError("P is not the packed form of a (k, n) matrix")


def xw(const float[::1] x, const uint16_t[::1] P, Py_ssize_t n, Py_ssize_t reps=1):
    """y = x W as a new float32 array of n, W (k, n) given packed (P, from pack), k = len(x).
    ``reps`` > 1 repeats the product (benchmarks): returns (y, seconds per product)."""
    cdef Py_ssize_t k = x.shape[0], r
    _check(P, k, n)
    y = np.zeros(n, dtype=np.float32)
    cdef float[::1] yv = y
    scratch = np.zeros(max(1, (k + 1) // 2), dtype=np.uint32)
    cdef uint32_t[::1] s = scratch
    cdef const float *xp = &x[0] if k else NULL
    cdef const uint16_t *pp = &P[0] if P.shape[0] else NULL
    t0 = time.perf_counter()
    if n:
        with nogil:
            for r in range(max(1, reps)):
                fnn_bf16_xw(xp, pp, k, n, &yv[0], &s[0])
    dt = (time.perf_counter() - t0) / max(1, reps)
    return (y, dt) if reps > 1 else y


def gemm(const float[:, :] X, const uint16_t[::1] P, Py_ssize_t n, Py_ssize_t reps=1):
    """C = X W as a new float32 (m, n) array: X float32 (m, k) with contiguous rows, W (k, n)
    given packed (P). ``reps`` > 1: returns (C, seconds per product)."""
    cdef Py_ssize_t m = X.shape[0], k = X.shape[1], r
    _check(P, k, n)
    if m and k and X.strides[1] != sizeof(float):
        raise ValueError("X's rows must be contiguous")
    C = np.zeros((m, n), dtype=np.float32)
    cdef float[:, ::1] cv = C
    scratch = np.zeros(max(1, fnn_bf16_gemm_scratch_len(k)), dtype=np.uint32)
    cdef uint32_t[::1] s = scratch
    cdef const float *xp = &X[0, 0] if m and k else NULL
    cdef Py_ssize_t ldx = X.strides[0] // sizeof(float) if m else 0
    cdef const uint16_t *pp = &P[0] if P.shape[0] else NULL
    t0 = time.perf_counter()
    if m and n:
        with nogil:
            for r in range(max(1, reps)):
                fnn_bf16_gemm(xp, ldx, m, k, pp, n, &cv[0, 0], n, &s[0])
    dt = (time.perf_counter() - t0) / max(1, reps)
    return (C, dt) if reps > 1 else C
