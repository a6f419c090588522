"""fastnn.functional's layer entries (forward_into, backward_into, dropout_into,
cross_entropy_into): the layers' route to the kernels. Whatever path they take (the kernel's
C-checked entry or the validating fallback), they give the validating functions' numbers, and
bad input is the validating functions' clear error."""
import numpy as np
import pytest

import fastnn.functional as F

ACTS = ["identity", "relu", "tanh", "gelu", "silu"]


def _case(dtype, act, n=5, n_in=6, n_out=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in)).astype(dtype)
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    G = rng.standard_normal((n, n_out)).astype(dtype)
    return X, W, b, G, F.ACTIVATION_TABLE[act]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("layout", ["contiguous", "strided", "list"])
def test_forward_into_matches_dense_forward(dtype, n_threads, act, layout):
    if layout == "list" and dtype != np.float64:
        pytest.skip("a list of Python floats is float64")
    X, W, b, _, info = _case(dtype, act)
    Y_ref = F.dense_forward(X, W, b, activation=act)
    Z_ref = F.dense_forward(X, W, b)
    Xin = {"contiguous": X, "strided": np.repeat(X, 2, axis=1)[:, ::2],
           "list": X.tolist()}[layout]
    Y = np.full_like(Y_ref, np.nan)
    Z = np.full_like(Y_ref, np.nan) if info.needs_z else None
    assert F.forward_into(Xin, W, b, Y, info.code, n_threads, Z) is Y
    np.testing.assert_array_equal(Y, Y_ref)
    if Z is not None:
        np.testing.assert_array_equal(Z, Z_ref)


def test_forward_into_bad_input_is_the_validating_error():
    X, W, b, _, info = _case(np.float32, "relu")
    Y = np.empty((5, 4), np.float32)
    with pytest.raises(TypeError, match="dtype"):
        F.forward_into(X.astype(np.float64), W, b, Y, info.code, 1)
    with pytest.raises(ValueError, match="features"):
        F.forward_into(X[:, :5], W, b, Y, info.code, 1)
    with pytest.raises(ValueError, match="out must have shape"):
        F.forward_into(X, W, b, Y[:3], info.code, 1)
    with pytest.raises(ValueError, match="overlaps"):
        F.forward_into(Y, np.eye(4, dtype=np.float32), None, Y, info.code, 1)
    with pytest.raises(ValueError, match="activation code"):
        F.forward_into(X, W, b, Y, 999, 1)
    with pytest.raises(ValueError, match="activation code"):
        F.backward_into(X, W, Y, Y.copy(), None, None, np.empty_like(W), None, None, 999,
                        False, 1)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_backward_into_matches_dense_backward(dtype, n_threads, act, accumulate, layout):
    X, W, b, G, info = _case(dtype, act, seed=1)
    Y = F.dense_forward(X, W, b, activation=act)
    Z = F.dense_forward(X, W, b)
    V = Z if info.needs_z else Y           # what the derivative is taken from
    gX_ref, gW_ref, gb_ref = F.dense_backward(X, W, Y, G, activation=act, Z=Z)
    gW0 = np.full_like(W, 0.5)
    gb0 = np.full_like(b, -0.25)
    gW, gb, gX = gW0.copy(), gb0.copy(), np.empty_like(X)
    Gin = G.copy() if layout == "contiguous" else np.repeat(G, 2, axis=1)[:, ::2]
    G_before = Gin.copy()
    dZ = np.empty_like(G)
    F.backward_into(X, W, V, Gin, dZ, gX, gW, gb, np.empty(4), info.code, accumulate,
                    n_threads)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(gX, gX_ref, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(gW, gW_ref + (gW0 if accumulate else 0), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(gb, gb_ref + (gb0 if accumulate else 0), rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(Gin, G_before)   # a dZ buffer was given: G is only read


@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_backward_into_without_dz_on_a_strided_gradient(act):
    # dZ None lets the kernel overwrite G; a G it cannot overwrite takes the validating path
    # with a temporary, and G is left as it was
    X, W, b, G, info = _case(np.float64, act, seed=2)
    Y = F.dense_forward(X, W, b, activation=act)
    Z = F.dense_forward(X, W, b)
    gX_ref, gW_ref, gb_ref = F.dense_backward(X, W, Y, G, activation=act, Z=Z)
    Gs = np.repeat(G, 2, axis=1)[:, ::2]
    gW, gb = np.empty_like(W), np.empty_like(b)
    F.backward_into(X, W, Z if info.needs_z else Y, Gs, None, None, gW, gb, np.empty(4),
                    info.code, False, 1)
    np.testing.assert_allclose(gW, gW_ref, rtol=1e-12)
    np.testing.assert_allclose(gb, gb_ref, rtol=1e-12)
    np.testing.assert_array_equal(Gs, G)


@pytest.mark.parametrize("mode", ["inverted", "standard"])
@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (7, 13)])
def test_dropout_into_matches_dropout(dtype, n_threads, mode, shape):
    X = np.random.default_rng(3).standard_normal(shape).astype(dtype)
    ref = F.dropout(X, 0.4, 77, mode=mode)
    out = np.full_like(X, np.nan)
    np.testing.assert_array_equal(F.dropout_into(X, out, 0.4, 77, mode, n_threads), ref)
    strided = np.repeat(X, 2, axis=-1)[..., ::2]      # the validating path
    np.testing.assert_array_equal(F.dropout_into(strided, np.empty_like(X), 0.4, 77, mode,
                                                 n_threads), ref)
    with pytest.raises(ValueError, match="shape"):
        F.dropout_into(X, np.empty((9, 9), dtype), 0.4, 77, mode, n_threads)


def test_cross_entropy_into_matches_cross_entropy(dtype, n_threads):
    rng = np.random.default_rng(4)
    z = rng.standard_normal((9, 4)).astype(dtype)
    y = rng.integers(0, 4, 9)
    value_ref, g_ref = F.cross_entropy(z, y, return_grad=True)
    for labels in (y.astype(np.intp), y.astype(np.int32), y.tolist(), np.eye(4)[y]):
        g = np.full_like(z, np.nan)
        rows = np.empty(9)
        value = F.cross_entropy_into(z, labels, rows, g, n_threads)
        assert value == pytest.approx(value_ref, rel=1e-12)
        np.testing.assert_allclose(g, g_ref, rtol=1e-6 if dtype == np.float32 else 1e-12)
    with pytest.raises(ValueError, match="labels must be in"):
        F.cross_entropy_into(z, y + 4, np.empty(9), np.empty_like(z), 1)
