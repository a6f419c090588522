"""Property-based tests (hypothesis) of the functional API against NumPy float64 references:
random shapes (including 1 row, 1 column, empty), memory layouts (C, Fortran, strided,
negative strides, read-only), both float dtypes, thread counts, and values from tiny to large.

max_examples is modest so the file runs in seconds; the catalogue (test_bad_input.py) and the
per-kernel tests cover the fixed adversarial cases.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import special

from fastnn import functional as F

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

DTYPES = st.sampled_from([np.float32, np.float64])
LAYOUTS = st.sampled_from(["C", "F", "strided", "reversed", "readonly"])


def tol(dtype):
    return (2e-5, 2e-6) if np.dtype(dtype) == np.float32 else (1e-12, 1e-13)


def _layout(a, layout):
    """The same values as ``a`` behind another memory layout."""
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype) if a.ndim else a
        wide[..., ::2] = a
        return wide[..., ::2]
    if layout == "reversed":
        return np.ascontiguousarray(a[::-1])[::-1] if a.ndim else a
    if layout == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    return np.ascontiguousarray(a)


def _close(got, want, rtol, atol):
    """assert_allclose with an elementwise atol array."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    bad = np.abs(got - want) > atol + rtol * np.abs(want)
    assert not bad.any(), f"{bad.sum()} mismatches, e.g. {got[bad][:3]} vs {want[bad][:3]}"


@st.composite
def matrices(draw, min_rows=0, max_rows=9, min_cols=1, max_cols=12, scale=None):
    dtype = draw(DTYPES)
    n = draw(st.integers(min_rows, max_rows))
    c = draw(st.integers(min_cols, max_cols))
    seed = draw(st.integers(0, 2**32 - 1))
    s = draw(st.sampled_from([1e-3, 1.0, 10.0, 80.0])) if scale is None else scale
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal((n, c)) * s).astype(dtype)
    return a, draw(LAYOUTS), draw(st.sampled_from([1, 2]))


# --------------------------------------------------------------------------------------------
# activations
# --------------------------------------------------------------------------------------------

_ACT_REF = {
    "identity": lambda z: z,
    "sigmoid": special.expit,
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "step": lambda z: (z > 0).astype(np.float64),
    "sign": np.sign,
}


@SETTINGS
@given(matrices(), st.sampled_from(sorted(_ACT_REF)))
def test_activations(m, name):
    a, layout, nt = m
    got = F.activation(_layout(a, layout), name, n_threads=nt)
    assert got.dtype == a.dtype and got.shape == a.shape
    want = _ACT_REF[name](a.astype(np.float64))
    if name in ("step", "sign"):
        # the threshold at exactly 0 is a convention; compare away from it
        want = np.where(a == 0, got, want)
    rtol, atol = tol(a.dtype)
    np.testing.assert_allclose(got, want, rtol=rtol * 4, atol=atol)


@SETTINGS
@given(matrices(), st.sampled_from(["identity", "sigmoid", "tanh", "relu"]))
def test_activation_backward(m, name):
    a, layout, nt = m
    rng = np.random.default_rng(0)
    y = F.activation(a, name)
    g = rng.standard_normal(a.shape).astype(a.dtype)
    got = F.activation_backward(_layout(y, layout), _layout(g, layout), name, n_threads=nt)
    y64, g64 = y.astype(np.float64), g.astype(np.float64)
    deriv = {"identity": np.ones_like(y64), "sigmoid": y64 * (1 - y64), "tanh": 1 - y64 ** 2,
             "relu": (y64 > 0).astype(np.float64)}[name]
    rtol, atol = tol(a.dtype)
    np.testing.assert_allclose(got, g64 * deriv, rtol=rtol * 4, atol=atol * 4)


# --------------------------------------------------------------------------------------------
# dense
# --------------------------------------------------------------------------------------------

@SETTINGS
@given(matrices(max_rows=20, max_cols=20, scale=1.0), st.integers(1, 24), LAYOUTS,
       st.sampled_from(["identity", "relu", "tanh", "sigmoid"]), st.booleans())
def test_dense_forward_backward(m, n_out, w_layout, act, with_bias):
    X, x_layout, nt = m
    rng = np.random.default_rng(n_out)
    W = (rng.standard_normal((X.shape[1], n_out)) / np.sqrt(X.shape[1])).astype(X.dtype)
    b = rng.standard_normal(n_out).astype(X.dtype) if with_bias else None
    Y = F.dense_forward(_layout(X, x_layout), _layout(W, w_layout), b, act, n_threads=nt)
    X64, W64 = X.astype(np.float64), W.astype(np.float64)
    Z = X64 @ W64 + (0 if b is None else b.astype(np.float64))
    rtol, atol = (1e-4, 1e-5) if X.dtype == np.float32 else (1e-11, 1e-12)
    np.testing.assert_allclose(Y, _ACT_REF[act](Z), rtol=rtol, atol=atol)
    G = rng.standard_normal(Y.shape).astype(X.dtype)
    gX, gW, gb = F.dense_backward(_layout(X, x_layout), _layout(W, w_layout), Y,
                                  _layout(G, x_layout), act, need_grad_b=with_bias,
                                  n_threads=nt)
    Y64 = Y.astype(np.float64)
    d = {"identity": 1.0, "relu": (Y64 > 0), "tanh": 1 - Y64 ** 2,
         "sigmoid": Y64 * (1 - Y64)}[act]
    dZ = G.astype(np.float64) * d
    scale = max(1.0, X.shape[0])
    np.testing.assert_allclose(gX, dZ @ W64.T, rtol=rtol * 10, atol=atol * 10 * scale)
    np.testing.assert_allclose(gW, X64.T @ dZ, rtol=rtol * 10, atol=atol * 10 * scale)
    if with_bias:
        np.testing.assert_allclose(gb, dZ.sum(axis=0), rtol=rtol * 10, atol=atol * 10 * scale)


# --------------------------------------------------------------------------------------------
# softmax, log_softmax, sparsemax
# --------------------------------------------------------------------------------------------

def _sparsemax_ref(z):
    z = z.astype(np.float64)
    out = np.empty_like(z)
    for i, row in enumerate(z.reshape(-1, z.shape[-1])):
        s = np.sort(row)[::-1]
        k = np.arange(1, row.size + 1)
        cs = np.cumsum(s)
        support = 1 + k * s > cs
        kz = k[support][-1]
        tau = (cs[kz - 1] - 1) / kz
        out.reshape(-1, z.shape[-1])[i] = np.maximum(row - tau, 0)
    return out


@SETTINGS
@given(matrices(min_rows=1), st.sampled_from([-1, 0]))
def test_softmax_log_softmax(m, axis):
    a, layout, nt = m
    x = _layout(a, layout)
    a64 = a.astype(np.float64)
    rtol, atol = tol(a.dtype)
    p = F.softmax(x, axis=axis, n_threads=nt)
    np.testing.assert_allclose(p, special.softmax(a64, axis=axis), rtol=rtol * 5, atol=atol)
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=rtol * 5)
    lp = F.log_softmax(x, axis=axis, n_threads=nt)
    want = special.log_softmax(a64, axis=axis)
    _close(lp, want, rtol * 5, atol * 5 * (1 + np.abs(want)))


@SETTINGS
@given(matrices(min_rows=1), st.sampled_from(["auto", "sort", "select"]))
def test_sparsemax(m, method):
    a, layout, nt = m
    p = F.sparsemax(_layout(a, layout), method=method, n_threads=nt)
    want = _sparsemax_ref(a)
    rtol, atol = tol(a.dtype)
    scale = 1 + np.abs(a.astype(np.float64)).max()
    np.testing.assert_allclose(p, want, rtol=rtol * 10, atol=atol * 10 * scale)
    assert (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=rtol * 10 * scale)


@SETTINGS
@given(matrices(min_rows=1, scale=1.0))
def test_softmax_backward_is_the_vjp(m):
    a, layout, nt = m
    rng = np.random.default_rng(1)
    p = F.softmax(a)
    g = rng.standard_normal(a.shape).astype(a.dtype)
    got = F.softmax_backward(_layout(p, layout), _layout(g, layout), n_threads=nt)
    p64, g64 = p.astype(np.float64), g.astype(np.float64)
    want = p64 * (g64 - (p64 * g64).sum(axis=-1, keepdims=True))
    rtol, atol = tol(a.dtype)
    np.testing.assert_allclose(got, want, rtol=rtol * 10, atol=atol * 10)


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------

@SETTINGS
@given(matrices(min_rows=1), st.sampled_from(["mean", "sum", "none"]))
def test_cross_entropy(m, reduction):
    z, layout, nt = m
    rng = np.random.default_rng(z.shape[0])
    y = rng.integers(0, z.shape[1], z.shape[0])
    loss, g = F.cross_entropy(_layout(z, layout), y, reduction=reduction, return_grad=True,
                              n_threads=nt)
    z64 = z.astype(np.float64)
    per = special.logsumexp(z64, axis=1) - z64[np.arange(len(y)), y]
    want = {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction]
    np.testing.assert_allclose(loss, want, rtol=1e-5 if z.dtype == np.float32 else 1e-11,
                               atol=1e-5 if z.dtype == np.float32 else 1e-11)
    gw = special.softmax(z64, axis=1)
    gw[np.arange(len(y)), y] -= 1
    if reduction == "mean":
        gw /= len(y)
    rtol, atol = tol(z.dtype)
    np.testing.assert_allclose(g, gw, rtol=rtol * 5, atol=atol * 5)


@SETTINGS
@given(matrices(min_rows=1, max_cols=1), st.sampled_from(["mean", "sum"]))
def test_binary_cross_entropy(m, reduction):
    z, layout, nt = m
    rng = np.random.default_rng(z.shape[0])
    y = rng.uniform(0, 1, z.shape[0])
    loss = F.binary_cross_entropy(_layout(z, layout), y, reduction=reduction, n_threads=nt)
    z64 = z[:, 0].astype(np.float64)
    y64 = y.astype(z.dtype).astype(np.float64)
    per = np.logaddexp(0.0, z64) - y64 * z64
    want = per.sum() if reduction == "sum" else per.mean()
    np.testing.assert_allclose(loss, want, rtol=1e-5 if z.dtype == np.float32 else 1e-11,
                               atol=1e-6 if z.dtype == np.float32 else 1e-12)


@SETTINGS
@given(matrices(min_rows=1))
def test_squared_loss(m):
    f, layout, nt = m
    rng = np.random.default_rng(f.shape[1])
    y = rng.standard_normal(f.shape).astype(f.dtype)
    loss, g = F.squared_loss(_layout(f, layout), _layout(y, layout), reduction="sum",
                             return_grad=True, n_threads=nt)
    d = f.astype(np.float64) - y.astype(np.float64)
    np.testing.assert_allclose(loss, 0.5 * (d ** 2).sum(), rtol=1e-5 if f.dtype == np.float32
                               else 1e-11)
    rtol, atol = tol(f.dtype)
    _close(g, d, rtol, atol * (1 + np.abs(d)))


@SETTINGS
@given(matrices(min_rows=1))
def test_sparsemax_loss(m):
    z, layout, nt = m
    rng = np.random.default_rng(z.shape[0] + 7)
    y = rng.integers(0, z.shape[1], z.shape[0])
    per, g = F.sparsemax_loss(_layout(z, layout), y, reduction="none", return_grad=True,
                              n_threads=nt)
    p = _sparsemax_ref(z)
    z64 = z.astype(np.float64)
    tau = ((p > 0) * z64).sum(1) - 1
    tau = tau / np.maximum((p > 0).sum(1), 1)
    S = p > 0
    want = -z64[np.arange(len(y)), y] + 0.5 * ((z64 ** 2 - tau[:, None] ** 2) * S).sum(1) + 0.5
    scale = 1 + np.abs(z64).max() ** 2
    rtol, atol = tol(z.dtype)
    np.testing.assert_allclose(per, want, rtol=rtol * 20, atol=atol * 20 * scale)
    assert (per >= 0).all()
    gw = p.copy()
    gw[np.arange(len(y)), y] -= 1
    np.testing.assert_allclose(g, gw, rtol=rtol * 10, atol=atol * 10 * (1 + np.abs(z64).max()))


# --------------------------------------------------------------------------------------------
# dropout
# --------------------------------------------------------------------------------------------

@SETTINGS
@given(matrices(scale=1.0), st.floats(0.0, 0.95), st.integers(0, 2**63 - 1),
       st.sampled_from(["inverted", "standard"]))
def test_dropout(m, p, seed, mode):
    x, layout, nt = m
    y = F.dropout(_layout(x, layout), p, seed, mode=mode, n_threads=nt)
    mask = F.dropout_mask(x.shape, p, seed)
    scale = 1.0 / (1.0 - p) if mode == "inverted" else 1.0
    want = np.where(mask, x.astype(np.float64) * np.float64(x.dtype.type(scale)), 0.0)
    np.testing.assert_allclose(y, want, rtol=tol(x.dtype)[0])
    # same mask for any layout and thread count; the backward applies the same mask
    g = F.dropout_backward(np.ones_like(x), p, seed, mode=mode, n_threads=3 - nt)
    np.testing.assert_array_equal(g != 0, mask)
    assume(x.size > 0)
    assert y.dtype == x.dtype
