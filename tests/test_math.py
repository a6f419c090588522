"""The shared elementary functions of the kernels (fastnn/_kernels/_math.pxd) and the run-time
choice of vector width.

* exp (float32 and float64) and expm1 against NumPy over a dense sweep of the float range,
  underflow (gradual and total) and overflow edges included, in ulps of the result, for the
  unfused (SSE2 baseline) and the fused (AVX2+FMA, AVX-512F) form;
* the copies of the row loops with the same FMA status give the same bits: the AVX2 and
  AVX-512F copies always, the SSE2 copy too for the kernels without the fused exp (sparsemax,
  activations, dense, binary cross-entropy, optimizers); the softmax rows and the cross-entropy
  of the baseline copy stay within the ulp bounds of the fused ones (in process for the softmax
  and sparsemax modules; through FASTNN_SIMD in child processes for the others);
* FMA instructions only in the AVX2 and AVX-512F copies of the functions that use the fused
  exp;
* softmax rows at the edges (C = 1, 2, odd, 1e5, -inf and huge entries, all-equal rows) against
  an independent NumPy reference at every vector width.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from fastnn._kernels import softmax as K
from fastnn._kernels import sparsemax as KS

LEVELS = [lv for i, lv in enumerate(K.SIMD_LEVELS) if i <= K._supported_level()]
# one level per FMA status (exp fused or not): the levels with equal status give the same bits
# (tested below), so the accuracy sweeps at these cover every level
SWEEP_LEVELS = list({K._fused(lv): lv for lv in LEVELS}.values())
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__import__("fastnn").__file__)))


def _exp(x, expm1=False, level=None):
    y = np.array(x, copy=True)
    if level is None:
        K._exp(y, expm1)
    else:
        _at_level(K, level, lambda: K._exp(y, expm1))
    return y


def _ulps(y, ref, dtype):
    """|y - ref| in units of the spacing of dtype at the correctly rounded result."""
    with np.errstate(over="ignore"):
        r = ref.astype(dtype)
    sp = np.spacing(np.abs(r)).astype(ref.dtype)
    return np.abs(y.astype(ref.dtype) - ref) / sp


def _sweep_bits(lo, hi, n, udtype, fdtype):
    """n float values evenly spaced in bit pattern between the floats lo and hi (same sign)."""
    a, b = np.array([lo, hi], dtype=fdtype).view(udtype)
    bits = np.linspace(float(a), float(b), n).astype(udtype)
    return bits.view(fdtype)


@pytest.mark.parametrize("level", SWEEP_LEVELS)
def test_exp_float32_dense_sweep(level):
    # every 64th float32 from -104 to 89 (~1.6e7 values): both signs, subnormal results,
    # overflow to inf
    parts = [_sweep_bits(-0.0, -104.0, 8_000_000, np.uint32, np.float32),
             _sweep_bits(0.0, 89.0, 8_000_000, np.uint32, np.float32)]
    x = np.concatenate(parts)
    y = _exp(x, level=level)
    ref = np.exp(x.astype(np.float64))
    with np.errstate(over="ignore"):
        r32 = ref.astype(np.float32)
    finite = np.isfinite(r32)
    assert np.all(np.isinf(y[~finite]))                       # overflow gives +inf
    u = _ulps(y[finite], ref[finite], np.float32)
    assert u.max() < 1.5, (u.max(), x[finite][np.argmax(u)])
    sub = finite & (r32 < np.finfo(np.float32).tiny)
    assert sub.sum() > 1000 and np.all(_ulps(y[sub], ref[sub], np.float32) <= 1.0)
    assert np.all(y[x < -103.98] == 0)                        # below half the smallest subnormal


@pytest.mark.parametrize("level", SWEEP_LEVELS)
def test_exp_float64_dense_sweep(level):
    if np.finfo(np.longdouble).nmant < 60:
        pytest.skip("needs an extended-precision long double for the reference")
    parts = [_sweep_bits(-0.0, -746.0, 3_000_000, np.uint64, np.float64),
             _sweep_bits(0.0, 710.0, 3_000_000, np.uint64, np.float64),
             np.random.default_rng(0).uniform(-746, 710, 1_000_000)]
    x = np.concatenate(parts)
    y = _exp(x, level=level)
    ref = np.exp(x.astype(np.longdouble))
    with np.errstate(over="ignore"):
        r64 = ref.astype(np.float64)
    finite = np.isfinite(r64)
    assert np.all(np.isinf(y[~finite]))
    u = _ulps(y[finite], ref[finite], np.float64)
    assert u.max() < 3.0, (u.max(), x[finite][np.argmax(u)])
    assert (finite & (r64 < np.finfo(np.float64).tiny)).sum() > 1000   # subnormal results swept
    assert np.all(y[x < -745.2] == 0)


@pytest.mark.parametrize("level", SWEEP_LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_special_values(dtype, level):
    x = np.array([-np.inf, np.inf, np.nan, 0.0, -0.0, 1.0, -1.0], dtype=dtype)
    y = _exp(x, level=level)
    assert y[0] == 0 and y[1] == np.inf and np.isnan(y[2])
    assert y[3] == 1 and y[4] == 1
    np.testing.assert_allclose(y[5:], np.exp(x[5:].astype(np.float64)), rtol=3e-7)


@pytest.mark.parametrize("level", SWEEP_LEVELS)
def test_expm1_float32_sweep(level):
    x = np.concatenate([_sweep_bits(-0.0, -100.0, 4_000_000, np.uint32, np.float32),
                        _sweep_bits(0.0, 88.3, 4_000_000, np.uint32, np.float32)])
    y = _exp(x, expm1=True, level=level)
    ref = np.expm1(x.astype(np.float64))
    u = _ulps(y, ref, np.float32)
    assert u.max() < 2.0, (u.max(), x[np.argmax(u)])
    assert np.isnan(_exp(np.array([np.nan], np.float32), expm1=True, level=level)[0])
    tiny = np.array([1e-30, -1e-30, 1e-40], np.float32)       # no cancellation near 0
    np.testing.assert_array_equal(_exp(tiny, expm1=True, level=level), tiny)


@pytest.mark.parametrize("level", SWEEP_LEVELS)
def test_expm1_float64_sweep(level):
    if np.finfo(np.longdouble).nmant < 60:
        pytest.skip("needs an extended-precision long double for the reference")
    x = np.concatenate([_sweep_bits(-0.0, -50.0, 2_000_000, np.uint64, np.float64),
                        _sweep_bits(0.0, 709.0, 2_000_000, np.uint64, np.float64)])
    y = _exp(x, expm1=True, level=level)
    ref = np.expm1(x.astype(np.longdouble))
    u = _ulps(y, ref, np.float64)
    assert u.max() < 4.0, (u.max(), x[np.argmax(u)])
    tiny = np.array([1e-300, -1e-300, 5e-324])
    np.testing.assert_array_equal(_exp(tiny, expm1=True, level=level), tiny)
    assert np.isnan(_exp(np.array([np.nan]), expm1=True, level=level)[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_sweep(dtype):
    """tanh = sign(z) m / (m + 2), m = expm1(2|z|), against NumPy's tanh."""
    import fastnn.functional as F
    udt = np.uint32 if dtype == np.float32 else np.uint64
    z = np.concatenate([_sweep_bits(-0.0, -30.0, 1_000_000, udt, dtype),
                        _sweep_bits(0.0, 30.0, 1_000_000, udt, dtype),
                        np.array([np.inf, -np.inf, np.nan], dtype)])
    y = F.activation(z, "tanh", n_threads=1)
    ref = np.tanh(z[:-3].astype(np.longdouble))
    u = _ulps(y[:-3], ref, dtype)
    assert u.max() < 4.0, (u.max(), z[np.argmax(u)])
    assert y[-3] == 1 and y[-2] == -1 and np.isnan(y[-1])


def test_softplus_float32_sweep():
    """softplus(z) = max(z, 0) + log1p(e^-|z|) with the vectorized exp and log1p on [0, 1]."""
    import fastnn.functional as F
    z = np.concatenate([_sweep_bits(-0.0, -120.0, 2_000_000, np.uint32, np.float32),
                        _sweep_bits(0.0, 120.0, 2_000_000, np.uint32, np.float32),
                        np.array([np.inf, -np.inf, np.nan], np.float32)])
    y = F.activation(z, "softplus", n_threads=1)
    ref = np.logaddexp(0.0, z[:-3].astype(np.float64))
    u = _ulps(y[:-3], ref, np.float32)
    assert u.max() < 3.0, (u.max(), z[np.argmax(u)])
    assert y[-3] == np.inf and y[-2] == 0 and np.isnan(y[-1])


def _at_level(mod, level, fn):
    old = mod._set_simd_level(level)
    try:
        return fn()
    finally:
        mod._set_simd_level(old)


def _same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _peer(level):
    """The first level with the same FMA status as level (the one whose bits it must give)."""
    return [lv for lv in LEVELS if K._fused(lv) == K._fused(level)][0]


def _close_ulps(a, b, max_ulps):
    """a and b (same dtype) agree to max_ulps units in the last place of the larger, where
    finite; the same non-finite values (NaN, +-inf) elsewhere."""
    fa, fb = np.isfinite(a), np.isfinite(b)
    if not np.array_equal(fa, fb) or not np.array_equal(a[~fa], b[~fb], equal_nan=True):
        return False
    x, y = a[fa].astype(np.float64), b[fb].astype(np.float64)
    sp = np.spacing(np.maximum(np.abs(a[fa]), np.abs(b[fb]))).astype(np.float64)
    return bool(np.all(np.abs(x - y) <= max_ulps * sp))


def _edge_rows(c, dtype, rng):
    """Rows of width c: normal, wide-range, -inf-holding, huge, all-equal."""
    big = np.finfo(dtype).max
    rows = [rng.standard_normal(c) * 3, rng.standard_normal(c) * 60,
            np.full(c, 7.0), np.full(c, -big / 2), np.full(c, big / 2)]
    r = rng.standard_normal(c)
    r[::3] = -np.inf
    r[0] = 1.0
    rows.append(r)
    r = rng.standard_normal(c) * 1e30
    rows.append(r)
    r = np.linspace(-200.0, 0.0, c)                          # float32 exp underflows in the row
    rows.append(r)
    return np.array(rows, dtype=dtype)


def _softmax_ref(z):
    z = z.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    return e / e.sum(axis=1, keepdims=True), (z - m) - np.log(e.sum(axis=1, keepdims=True))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [1, 2, 7, 15, 16, 17, 255, 256, 257, 1000, 100_000])
def test_softmax_edges_every_level(dtype, c):
    rng = np.random.default_rng(c)
    z = _edge_rows(c, dtype, rng)
    p_ref, lp_ref = _softmax_ref(z)
    g = rng.standard_normal(z.shape).astype(dtype)
    results = {}
    for level in LEVELS:
        def run():
            p = np.empty_like(z)
            lp = np.empty_like(z)
            K.softmax_forward(z, p, False, 1)
            K.softmax_forward(z, lp, True, 1)
            gp = np.empty_like(z)
            glp = np.empty_like(z)
            K.softmax_backward(p, g, gp, False, 1)
            K.softmax_backward(lp, g, glp, True, 1)
            return p, lp, gp, glp
        results[level] = _at_level(K, level, run)
        p, lp, gp, glp = results[level]
        tol = 2e-6 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(p, p_ref, rtol=tol * 4, atol=tol * 1e-3)
        np.testing.assert_allclose(p.sum(axis=1, dtype=np.float64), 1.0, rtol=1e-5)
        finite = np.isfinite(lp_ref)
        np.testing.assert_allclose(lp[finite], lp_ref[finite], rtol=tol * 4, atol=tol * 50)
        assert np.all(lp[~finite] == -np.inf)
        assert np.all(np.isfinite(gp)) and np.all(np.isfinite(glp[finite]))
        if c > 1:
            assert np.all(p[2] == p[2][0]) and np.all(p[3] == p[3][0])   # all-equal rows
    for level in LEVELS[1:]:
        for a, b in zip(results[_peer(level)], results[level]):
            assert _same_bits(a, b), level
    # the unfused (baseline) exp against the fused one: probabilities within a few ulps
    for level in LEVELS:
        assert _close_ulps(results[level][0], results[LEVELS[-1]][0], 4), level
    # short rows take the grouped path: the same bits as the row routine (at the module's
    # current level, which FASTNN_SIMD may cap)
    cur = K.simd_level()
    old = K._set_short_row(0)
    try:
        p_rows = np.empty_like(z)
        K.softmax_forward(z, p_rows, False, 1)
    finally:
        K._set_short_row(old)
    assert _same_bits(p_rows, results[cur][0])
    # in place (out is z): the same bits, on both paths
    for short in (0, 512):
        old = K._set_short_row(short)
        try:
            for log_out, ref in ((False, results[cur][0]), (True, results[cur][1])):
                zz = z.copy()
                K.softmax_forward(zz, zz, log_out, 1)
                assert _same_bits(zz, ref), (short, log_out)
        finally:
            K._set_short_row(old)


@pytest.mark.parametrize("c", [1, 10, 300, 1000])
def test_softmax_two_threads_same_bits(c):
    """The grouped short-row path splits rows into blocks of 64 per thread: same bits."""
    z = np.random.default_rng(c).standard_normal((203, c)).astype(np.float32) * 5
    p1 = np.empty_like(z)
    p2 = np.empty_like(z)
    K.softmax_forward(z, p1, False, 1)
    old = K.set_parallel_threshold("min_elements", 0)
    try:
        K.softmax_forward(z, p2, False, 2)
    finally:
        K.set_parallel_threshold("min_elements", old)
    assert _same_bits(p1, p2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_nan_rows_every_level(dtype):
    z = np.array([[1.0, np.nan, 2.0], [1.0, np.inf, 2.0], [-np.inf] * 3], dtype=dtype)
    for level in LEVELS:
        p = np.empty_like(z)
        _at_level(K, level, lambda: K.softmax_forward(z, p, False, 1))
        assert np.all(np.isnan(p)), level


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_and_sparsemax_same_bits_every_level(dtype):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-800, 800, 100_003), [np.nan, np.inf, -np.inf]]).astype(dtype)
    outs = {lv: _exp(x, level=lv) for lv in LEVELS}
    z = _edge_rows(1001, dtype, rng)[:3]
    sp = []
    for lv in LEVELS:
        for method in KS.METHODS.values():
            p = np.empty_like(z)
            _at_level(KS, lv, lambda: KS.sparsemax_forward(z, p, method, 1))
            sp.append((lv, method, p))
    for lv, o in outs.items():
        assert _same_bits(outs[_peer(lv)], o), lv
        # fused and unfused exp: within the 1.5 (float32) and 3 (float64) ulp bounds of each,
        # so within 3 and 6 ulps of each other (in fact rarely more than 1)
        assert _close_ulps(outs[LEVELS[-1]], o, 3 if dtype == np.float32 else 6), lv
    for lv, method, p in sp:
        ref = [q for lv0, m0, q in sp if lv0 == LEVELS[0] and m0 == method][0]
        assert _same_bits(ref, p), (lv, method)


def test_simd_level_names():
    assert K.simd_level() in K.SIMD_LEVELS and KS.simd_level() == K.simd_level()
    with pytest.raises(ValueError):
        K._set_simd_level("avx1024")


_CHILD = r"""
import hashlib, sys
import numpy as np
import fastnn.functional as F
from fastnn._kernels import softmax as K, optim as O, _blas
h = hashlib.sha256()    # kernels without the fused exp: the same bits at every level
hs = hashlib.sha256()   # softmax and cross-entropy: the same bits at equal FMA status
rng = np.random.default_rng(0)
for dtype in (np.float32, np.float64):
    z = (rng.standard_normal((37, 129)) * 4).astype(dtype)
    z[0, :5] = [0.0, -90.0, 90.0, 1e-30, -1e-30]
    g = rng.standard_normal(z.shape).astype(dtype)
    for name in ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "gelu", "silu"):
        y = F.activation(z, name, n_threads=1)
        h.update(y.tobytes())
        h.update(F.activation_backward(y, g, name, n_threads=1, z=z).tobytes())
    h.update(F.gelu(z, approximate="tanh", n_threads=1).tobytes())
    W = rng.standard_normal((129, 33)).astype(dtype)
    h.update(F.dense_forward(z, W, None, "sigmoid", n_threads=1).tobytes())
    h.update(F.dense_forward(z[:1], W, None, "relu", n_threads=1).tobytes())  # one row: xw
    h.update(_blas.py_xw(z[0], W, 3, 30).tobytes())
    y = rng.integers(0, 129, 37)
    loss, grad = F.cross_entropy(z, y, reduction="none", return_grad=True, n_threads=1)
    hs.update(loss.tobytes()); hs.update(grad.tobytes())
    loss, grad = F.sparsemax_loss(z, y, reduction="none", return_grad=True, n_threads=1)
    h.update(loss.tobytes()); h.update(grad.tobytes())
    zb = z.reshape(-1)
    t = (rng.random(zb.shape) > 0.5).astype(dtype)
    loss, grad = F.binary_cross_entropy(zb, t, reduction="none", return_grad=True, n_threads=1)
    h.update(loss.tobytes()); h.update(grad.tobytes())
    hs.update(F.softmax(z, n_threads=1).tobytes())
    hs.update(F.log_softmax(z, n_threads=1).tobytes())
assert _blas.simd_level() == K.simd_level()
print(K.simd_level(), h.hexdigest(), hs.hexdigest())
"""


def _child(level):
    env = dict(os.environ, FASTNN_SIMD=level)
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_every_level_same_bits_in_other_kernels():
    """FASTNN_SIMD caps the vector width of every kernel module at load time; the activation,
    dense epilogue, binary cross-entropy and sparsemax results are the same bits at each width,
    the softmax and cross-entropy results at each width with the same FMA status."""
    runs = {lv: _child(lv) for lv in LEVELS}
    for lv, (got, digest, digest_softmax) in runs.items():
        assert got == lv
        assert digest == runs[LEVELS[0]][1], lv
        assert digest_softmax == runs[_peer(lv)][2], lv


# the functions built with FNN_MV_F / FNN_MV_F_VOID (_math.pxd, softmax.pxd): their AVX2 and
# AVX-512F copies evaluate exp with fused multiply-adds
_FUSED_FUNCTIONS = ("fnn_softmax_row_", "fnn_softmax_rows_", "fnn_log_softmax_vjp_",
                    "fnn_exp_array_", "fnn_expm1_array_",
                    # the bfloat16 products (_bf16.pxd): exact products, fused or not the same
                    "fnn_bf16_xw_f_", "fnn_bf16_rows_")


def _fma_by_function(path):
    """{function symbol: number of FMA instructions} from objdump -d of the shared object."""
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], capture_output=True,
                         text=True, check=True).stdout
    counts, fn = {}, None
    for ln in asm.splitlines():
        if ln.endswith(">:") and " <" in ln:
            fn = ln.split(" <", 1)[1][:-2]
        elif fn and ("\tvfmadd" in ln or "\tvfmsub" in ln or "\tvfnmadd" in ln
                     or "\tvfnmsub" in ln):
            counts[fn] = counts.get(fn, 0) + 1
    return counts, asm.count(" <__pyx_")     # Cython's local functions: 0 when stripped


def test_fused_multiply_add_only_in_fma_copies():
    """FMA instructions only where they are meant: in the AVX2 and AVX-512F copies of the
    functions that use the fused exp (softmax, log-softmax and its VJP, the exp test arrays)
    or multiply bfloat16 numbers, and there for certain; none in any baseline (SSE2) function, in the other multi-versioned
    loops (activations, dense epilogue, sparsemax: contraction off) or in the optimizer's
    target_clones ("avx2" there does not include FMA)."""
    import glob
    import platform
    import shutil
    if platform.machine() not in ("x86_64", "AMD64") or shutil.which("objdump") is None:
        pytest.skip("x86-64 with objdump only")
    if K._fused("baseline"):
        pytest.skip("built for a target with FMA (-mfma): the baseline copy is fused too")
    kdir = os.path.dirname(K.__file__)
    mods = sorted(glob.glob(os.path.join(kdir, "*.so")))
    if not mods:
        pytest.skip("no shared objects to inspect")
    seen = {}
    for mod in mods:
        counts, n_named = _fma_by_function(mod)
        if n_named == 0:
            pytest.skip(f"{os.path.basename(mod)} has no function symbols (stripped)")
        for fn, n in counts.items():
            base = fn.split(".")[0]                          # .constprop.0, .isra.0, ...
            ok = (base.endswith("_avx2") or base.endswith("_avx512")) and \
                base.startswith(_FUSED_FUNCTIONS)
            assert ok, (os.path.basename(mod), fn, n)
            seen[base] = seen.get(base, 0) + n
    for name in ("fnn_softmax_row_f", "fnn_softmax_row_d", "fnn_softmax_rows_f"):
        for sfx in ("_avx2", "_avx512"):
            assert seen.get(name + sfx, 0) > 0, name + sfx
