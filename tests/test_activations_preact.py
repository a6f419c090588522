"""The activation table and the activations added by it: leaky ReLU, ELU, softplus, GELU (erf
and tanh forms) and SiLU - standalone, fused into Dense, as modules - against float64
references (scipy.special), finite differences in float64, and torch.nn.functional when torch
is installed."""
import pickle

import numpy as np
import pytest
from scipy import special

import fastnn
import fastnn.functional as F
from fastnn import Dense, Sequential, gradcheck, init
from fastnn._kernels import activations as _ka
from fastnn.functional.activations import ACTIVATION_TABLE, ALIASES, activation_info
from fastnn.functional.runtime import override_thresholds

DENSE_THRESHOLDS = ("split_min_work", "split_max_work", "epilogue_min_elements")
NEW = ["leaky_relu", "elu", "softplus", "gelu", "gelu_tanh", "silu"]
K = np.sqrt(2 / np.pi)


def ref_act(z, name):
    """float64 references, written independently of the kernels' formulas."""
    z = np.asarray(z, dtype=np.float64)
    if name == "leaky_relu":
        return np.where(z > 0, z, 0.01 * z)
    if name == "elu":
        return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))
    if name == "softplus":
        return np.logaddexp(0.0, z)
    if name == "gelu":
        return z * special.ndtr(z)
    if name == "gelu_tanh":   # 0.5 z (1 + tanh u) = z sigmoid(2u), without the cancellation
        with np.errstate(over="ignore"):
            return z * special.expit(2 * K * (z + 0.044715 * z ** 3))
    if name == "silu":
        return z * special.expit(z)
    raise AssertionError(name)


def ref_grad(z, name):
    """d act / dz in float64 (analytic, from z)."""
    z = np.asarray(z, dtype=np.float64)
    if name == "leaky_relu":
        return np.where(z > 0, 1.0, 0.01)
    if name == "elu":
        return np.where(z > 0, 1.0, np.exp(np.minimum(z, 0)))
    if name == "softplus":
        return special.expit(z)
    if name == "gelu":
        return special.ndtr(z) + z * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    if name == "gelu_tanh":
        with np.errstate(over="ignore"):
            t = np.tanh(K * (z + 0.044715 * z ** 3))
        return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * K * (1 + 3 * 0.044715 * z * z)
    if name == "silu":
        s = special.expit(z)
        return s * (1 + z * (1 - s))
    raise AssertionError(name)


def grid(dtype):
    z = np.concatenate([np.linspace(-30, 30, 2001), np.linspace(-1e-3, 1e-3, 41),
                        [-100.0, -87.5, -20.0, 20.0, 88.0, 100.0, 0.0, -0.0]])
    return z.astype(dtype)


@pytest.fixture(params=["serial", "parallel"])
def par(request):
    """Force the parallel path with zero thresholds, or keep the defaults."""
    if request.param == "parallel":
        with override_thresholds("activations", cheap_min_elements=0,
                                 transcendental_min_elements=0):
            yield 2
    else:
        yield 1


# ---------------------------------------------------------------------------------- the table

def test_table_matches_kernel_codes_and_is_the_vocabulary():
    assert set(ACTIVATION_TABLE) == set(_ka.CODES)
    assert fastnn.layers.ACTIVATIONS == F.ACTIVATIONS == tuple(ACTIVATION_TABLE)
    for name, info in ACTIVATION_TABLE.items():
        assert info.code == _ka.CODES[name]
        assert info.needs_z == (name in ("gelu", "gelu_tanh", "silu"))
        assert info.kinked == (name in ("relu", "step", "sign", "leaky_relu"))
        assert init.default_init(name) is getattr(init, info.init)
        # every layer accepts every name of the table, and only those (plus the aliases)
        assert Dense(2, 3, activation=name).activation == name
        assert fastnn.layers.Activation(name).name == name
    for alias, name in ALIASES.items():
        assert activation_info(alias).name == name
        assert Dense(2, 3, activation=alias).activation == name
    for bad in ("mish", "", "relu6", 3, "softmax"):
        with pytest.raises(ValueError, match="Unknown activation"):
            Dense(2, 3, activation=bad)
        with pytest.raises(ValueError, match="Unknown activation"):
            F.activation(np.zeros(3), bad)


def test_module_classes_are_the_table_entries():
    from fastnn.layers import ELU, GELU, LeakyReLU, SiLU, Softplus
    assert [m().name for m in (LeakyReLU, ELU, Softplus, SiLU)] == [
        "leaky_relu", "elu", "softplus", "silu"]
    assert GELU().name == "gelu" and GELU("tanh").name == "gelu_tanh"
    with pytest.raises(ValueError, match="approximate"):
        GELU("erf")


# ------------------------------------------------------------------ standalone forward/backward

@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_against_reference(name, dtype, par):
    z = grid(dtype)
    y = F.activation(z, name, n_threads=par)
    assert y.dtype == dtype and y.shape == z.shape
    ref = ref_act(z, name)
    if dtype == np.float64:
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-300)
    else:
        # float32: within 1e-6 absolute and a few ulp relative of the exact value at the
        # float32 input (torch.nn.functional's float32 results are held to the same below).
        np.testing.assert_allclose(y, ref, rtol=3e-6, atol=1e-6)


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_against_reference(name, dtype, par):
    z = grid(dtype)
    g = np.random.default_rng(0).standard_normal(z.shape).astype(dtype)
    y = F.activation(z, name)
    gz = F.activation_backward(y, g, name, z=z, n_threads=par)
    ref = g.astype(np.float64) * ref_grad(z, name)
    if dtype == np.float64:
        np.testing.assert_allclose(gz, ref, rtol=1e-9, atol=1e-12)
    else:
        np.testing.assert_allclose(gz, ref, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("name", NEW)
def test_backward_finite_differences_float64(name):
    rng = np.random.default_rng(1)
    z = rng.uniform(-4, 4, 200)
    z = z[np.abs(z) > 1e-3]              # away from leaky relu's kink
    g = rng.standard_normal(z.shape)
    gz = F.activation_backward(F.activation(z, name), g, name, z=z)
    h = 1e-6
    fd = g * (ref_act(z + h, name) - ref_act(z - h, name)) / (2 * h)
    np.testing.assert_allclose(gz, fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("shape", [(0,), (1,), (1, 1), (7, 1), (3, 4, 5), (5000,)])
def test_edge_shapes_and_out(name, shape):
    z = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    out = np.empty_like(z)
    y = F.activation(z, name, out=out)
    assert y is out and y.shape == shape
    np.testing.assert_allclose(y, ref_act(z, name), rtol=3e-6, atol=1e-6)


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_propagates(name, dtype):
    z = np.array([np.nan, 1.0, -1.0], dtype=dtype)
    y = F.activation(z, name)
    assert np.isnan(y[0]) and np.all(np.isfinite(y[1:]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_overflow_at_extremes(dtype):
    big = np.finfo(dtype).max
    z = np.array([-big, -1e30 if dtype == np.float64 else -1e30, 1e30, big], dtype=dtype)
    for name in NEW:
        y = F.activation(z, name)
        assert not np.isnan(y).any(), name
        g = F.activation_backward(y, np.ones_like(z), name, z=z)
        assert np.all(np.isfinite(g)), (name, g)


def test_backward_needs_z_or_y():
    z = np.ones(3)
    with pytest.raises(ValueError, match="pre-activation"):
        F.activation_backward(F.gelu(z), z, "gelu")
    with pytest.raises(ValueError, match="output"):
        F.activation_backward(None, z, "elu", z=z)


def test_gelu_function_forms():
    z = np.linspace(-3, 3, 7)
    np.testing.assert_array_equal(F.gelu(z), F.activation(z, "gelu"))
    np.testing.assert_array_equal(F.gelu(z, approximate="tanh"), F.activation(z, "gelu_tanh"))
    np.testing.assert_array_equal(F.silu(z), F.activation(z, "swish"))
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(z, approximate="erf")


# ---------------------------------------------------------------------- fused into the dense

def _xwb(n, n_in, n_out, dtype, seed=3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, n_in)).astype(dtype),
            (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(dtype),
            rng.standard_normal(n_out).astype(dtype))


@pytest.fixture(params=["small", "split", "large"])
def path(request):
    """Run the dense kernels on each of their three paths."""
    th = {"small": (1e300, 1e300, 1 << 40), "split": (0, 1e300, 0),
          "large": (0, 0, 0)}[request.param]
    with override_thresholds("dense", **dict(zip(DENSE_THRESHOLDS, th))):
        yield request.param


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 5, 3), (2, 4, 70), (33, 17, 40), (0, 3, 4), (4, 0, 5)])
def test_dense_fused_matches_separate(name, dtype, shape, path):
    X, W, b = _xwb(*shape, dtype)
    Z = np.empty((shape[0], shape[2]), dtype)
    Y = F.dense_forward(X, W, b, activation=name, z_out=Z, n_threads=2)
    z_ref = X.astype(np.float64) @ W.astype(np.float64) + b
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Z, z_ref, **tol)
    np.testing.assert_array_equal(Y, F.activation(Z, name))   # same epilogue as standalone
    # without z_out: the same output
    np.testing.assert_array_equal(F.dense_forward(X, W, b, activation=name, n_threads=2), Y)


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_dense_backward_against_reference(name, n_threads, path):
    X, W, b = _xwb(9, 6, 40, np.float64)
    Z = np.empty((9, 40))
    Y = F.dense_forward(X, W, b, activation=name, z_out=Z)
    G = np.random.default_rng(4).standard_normal(Y.shape)
    gX, gW, gb = F.dense_backward(X, W, Y, G, activation=name, Z=Z, n_threads=n_threads)
    dZ = G * ref_grad(Z, name)
    np.testing.assert_allclose(gW, X.T @ dZ, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gb, dZ.sum(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gX, dZ @ W.T, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="pre-activation|output"):
        F.dense_backward(X, W, Y, G, activation=name, Z=None if ACTIVATION_TABLE[name].needs_z
                         else Z) if ACTIVATION_TABLE[name].needs_z else \
            F.dense_backward(X, W, None, G, activation=name)


def test_dense_z_out_checked():
    X, W, b = _xwb(3, 4, 5, np.float64)
    with pytest.raises(ValueError):
        F.dense_forward(X, W, b, activation="gelu", z_out=np.empty((3, 4)))
    with pytest.raises((ValueError, TypeError)):
        F.dense_forward(X, W, b, activation="gelu", z_out=np.empty((3, 5), np.float32))
    out = np.empty((3, 5))
    with pytest.raises(ValueError):
        F.dense_forward(X, W, b, activation="gelu", out=out, z_out=out)


# ------------------------------------------------------------------------------ as layers

@pytest.mark.parametrize("name", NEW)
def test_dense_layer_gradcheck(name):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((12, 5))
    y = rng.integers(0, 3, 12)
    model = Sequential(Dense(5, 8, activation=name, seed=0, dtype=np.float64),
                       Dense(8, 8, activation=name, seed=1, dtype=np.float64),
                       Dense(8, 3, seed=2, dtype=np.float64))
    res = gradcheck(model, X, y, "cross_entropy", check_input=True)
    assert res.passed, res


@pytest.mark.parametrize("name", NEW)
def test_activation_module_gradcheck_and_same_as_fused(name):
    from fastnn.layers import Activation
    rng = np.random.default_rng(6)
    X = rng.standard_normal((10, 4))
    y = rng.integers(0, 2, 10)
    separate = Sequential(Dense(4, 6, init="he_uniform", seed=0, dtype=np.float64),
                          Activation(name), Dense(6, 2, seed=1, dtype=np.float64))
    fused = Sequential(Dense(4, 6, activation=name, seed=0, dtype=np.float64),
                       Dense(6, 2, seed=1, dtype=np.float64))
    assert gradcheck(separate, X, y, "cross_entropy", check_input=True).passed
    np.testing.assert_array_equal(separate.forward(X), fused.forward(X))


@pytest.mark.parametrize("name", ["gelu", "silu", "elu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_step_and_save_roundtrip(name, dtype, tmp_path):
    X, y = fastnn.datasets.make_spirals(n_samples=200, seed=0) if hasattr(
        fastnn.datasets, "make_spirals") else (None, None)
    X = X.astype(dtype)
    model = Sequential(Dense(2, 16, activation=name, seed=0, dtype=dtype),
                       Dense(16, 2, seed=1, dtype=dtype))
    hist = model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=3,
                     batch_size=32, seed=0, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    path = tmp_path / "m.npz"
    fastnn.save(model, path)
    again = fastnn.load(path)
    assert again[0].activation == name
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict(X), model.predict(X))


def test_eval_mode_keeps_no_preactivation_and_backward_recomputes_it():
    layer = Dense(3, 4, activation="gelu", seed=0, dtype=np.float64)
    x = np.random.default_rng(3).standard_normal((2, 3))
    g = np.random.default_rng(4).standard_normal((2, 4))
    layer.eval()
    layer.forward(x)
    assert layer._z is None                       # nothing kept for inference
    layer.zero_grad()
    gx_eval = layer.backward(g).copy()
    w_eval = layer.weight.grad.copy()
    layer.train()
    layer.forward(x)
    assert layer._z is not None and layer._z.shape == (2, 4)
    layer.zero_grad()
    np.testing.assert_array_equal(layer.backward(g), gx_eval)
    np.testing.assert_array_equal(layer.weight.grad, w_eval)
    fresh = Dense(3, 4, activation="gelu", dtype=np.float64)
    with pytest.raises(RuntimeError, match="before forward"):
        fresh.backward(g)
    relu = Dense(3, 4, activation="relu")
    relu.forward(x.astype(np.float32))
    assert relu._z is None          # kept only for the activations that need it


# ------------------------------------------------------------------------------- vs torch

@pytest.mark.parametrize("name", NEW)
def test_against_torch(name):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    fns = {"leaky_relu": tf.leaky_relu, "elu": tf.elu, "softplus": tf.softplus,
           "gelu": tf.gelu, "gelu_tanh": lambda t: tf.gelu(t, approximate="tanh"),
           "silu": tf.silu}
    z = grid(np.float32)
    zt = torch.from_numpy(z.copy()).requires_grad_(True)
    yt = fns[name](zt)
    g = np.random.default_rng(7).standard_normal(z.shape).astype(np.float32)
    yt.backward(torch.from_numpy(g))
    y = F.activation(z, name)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=3e-6, atol=1e-6)
    gz = F.activation_backward(y, g, name, z=z)
    np.testing.assert_allclose(gz, zt.grad.numpy(), rtol=1e-5, atol=2e-6)
