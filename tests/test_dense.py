"""Dense forward/backward against NumPy float64 references, over every thread-model path."""
import numpy as np
import pytest

import fastnn.functional as F
from fastnn._kernels import _blas
from fastnn._kernels import dense as _kd
from fastnn.functional.runtime import override_thresholds

DENSE_THRESHOLDS = ("split_min_work", "split_max_work", "epilogue_min_elements")


def tol(dtype):
    """(rtol, atol) against a float64 reference (as tests/conftest.py's tol)."""
    return (2e-5, 2e-6) if np.dtype(dtype) == np.float32 else (1e-12, 1e-13)

ACTS = ["identity", "linear", "sigmoid", "tanh", "relu", "step", "sign"]
SHAPES = [(1, 1, 1), (1, 37, 19), (7, 1, 5), (5, 3, 1), (2, 30, 80), (2, 70, 3), (40, 21, 70),
          (0, 4, 3)]


def ref_act(z, name):
    if name in ("identity", "linear"):
        return z
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0)
    if name == "step":
        return (z >= 0).astype(z.dtype)
    return np.where(z >= 0, 1.0, -1.0)


def ref_act_grad(y, name):
    if name == "sigmoid":
        return y * (1 - y)
    if name == "tanh":
        return 1 - y * y
    if name == "relu":
        return (y > 0).astype(y.dtype)
    if name in ("step", "sign"):
        return np.zeros_like(y)
    return np.ones_like(y)


@pytest.fixture(params=["small", "split", "large"])
def path(request):
    """Force one path of the thread model with tiny thresholds (restored afterwards)."""
    th = {"small": (1e30, 1e30, 1 << 40), "split": (0.0, 1e30, 1 << 40),
          "large": (0.0, 0.0, 0)}[request.param]
    with override_thresholds("dense", **dict(zip(DENSE_THRESHOLDS, th))):
        yield request.param


def make(rng, n, i, o, dtype):
    X = rng.standard_normal((n, i)).astype(dtype)
    W = (rng.standard_normal((i, o)) / np.sqrt(max(i, 1))).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    return X, W, b


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("act", ACTS)
def test_forward_matches_numpy(shape, act, dtype, n_threads, path, rng):
    X, W, b = make(rng, *shape, dtype)
    Y = F.dense_forward(X, W, b, act, n_threads=n_threads)
    assert Y.dtype == dtype and Y.shape == (shape[0], shape[2])
    Z = X.astype(np.float64) @ W.astype(np.float64) + b
    ref = ref_act(Z, act)
    rtol, atol = tol(dtype)
    if act in ("step", "sign"):
        # Thresholds flip only where Z rounds across 0.
        near0 = np.abs(Z) < 1e-4 * (1 if dtype == np.float32 else 1e-8)
        np.testing.assert_array_equal(Y[~near0], ref[~near0])
    else:
        np.testing.assert_allclose(Y, ref, rtol=rtol * 10, atol=atol * 10 * max(1, shape[1]))


def _openmp_enabled():
    from fastnn._kernels import _config
    return _config.openmp_enabled()


def test_forward_no_bias_and_paths_taken(dtype, rng):
    X, W, _ = make(rng, 40, 21, 70, dtype)
    ref = X.astype(np.float64) @ W
    # a BLAS without threads of its own (oneMKL's sequential layer) splits large products too
    large = "split" if _blas.is_sequential() else "large"
    for th, name in [((1e30, 1e30, 1), "small"), ((0.0, 1e30, 1), "split"), ((0.0, 0.0, 0), large)]:
        with override_thresholds("dense", **dict(zip(DENSE_THRESHOLDS, th))):
            Y = F.dense_forward(X, W, None, "relu", n_threads=2)
            # without OpenMP, n_threads=2 resolves to 1: always the serial path
            assert _kd.last_path() == (name if _openmp_enabled() else "small")
        np.testing.assert_allclose(Y, np.maximum(ref, 0), rtol=1e-5, atol=1e-5)


def test_n_threads_1_is_serial_path(rng):
    X, W, b = make(rng, 40, 21, 70, np.float32)
    with override_thresholds("dense", split_min_work=0.0, split_max_work=1e30,
                             epilogue_min_elements=0):
        F.dense_forward(X, W, b, n_threads=1)
        assert _kd.last_path() == "small"


def test_threads_agree(dtype, path, rng):
    X, W, b = make(rng, 64, 33, 96, dtype)
    Y1 = F.dense_forward(X, W, b, "tanh", n_threads=1)
    Y2 = F.dense_forward(X, W, b, "tanh", n_threads=2)
    np.testing.assert_allclose(Y1, Y2, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-6)
    G = rng.standard_normal(Y1.shape).astype(dtype)
    r1 = F.dense_backward(X, W, Y1, G, "tanh", n_threads=1)
    r2 = F.dense_backward(X, W, Y1, G, "tanh", n_threads=2)
    for a1, a2 in zip(r1, r2):
        np.testing.assert_allclose(a1, a2, rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-6)
    np.testing.assert_array_equal(r1[2], r2[2])  # db: same column owner, same order


def test_readonly_and_noncontiguous(dtype, n_threads, rng):
    X, W, b = make(rng, 9, 6, 11, dtype)
    Xf = np.asfortranarray(X)
    Wnc = np.repeat(W, 2, axis=1)[:, ::2]
    bnc = np.repeat(b, 2)[::2]
    for a in (Xf, Wnc, bnc):
        a.flags.writeable = False
    Y = F.dense_forward(Xf, Wnc, bnc, "sigmoid", n_threads=n_threads)
    np.testing.assert_allclose(Y, F.dense_forward(X, W, b, "sigmoid"), rtol=1e-6)
    G = rng.standard_normal(Y.shape).astype(dtype)[::-1]
    Yr = Y.copy(); Yr.flags.writeable = False
    gX, gW, gb = F.dense_backward(Xf, Wnc, Yr, G, "sigmoid", n_threads=n_threads)
    rX, rW, rb = F.dense_backward(X, W, Y, np.ascontiguousarray(G), "sigmoid")
    np.testing.assert_allclose(gX, rX, rtol=1e-5)
    np.testing.assert_allclose(gW, rW, rtol=1e-5)
    np.testing.assert_allclose(gb, rb, rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("act", ACTS)
def test_backward_matches_numpy(shape, act, dtype, n_threads, path, rng):
    X, W, b = make(rng, *shape, dtype)
    Y = F.dense_forward(X, W, b, act)
    G = rng.standard_normal(Y.shape).astype(dtype)
    gX, gW, gb = F.dense_backward(X, W, Y, G, act, n_threads=n_threads)
    dZ = G.astype(np.float64) * ref_act_grad(Y.astype(np.float64), act)
    rtol, atol = tol(dtype)
    k = max(1, shape[0], shape[2])
    np.testing.assert_allclose(gX, dZ @ W.astype(np.float64).T, rtol=rtol * 10, atol=atol * 10 * k)
    np.testing.assert_allclose(gW, X.astype(np.float64).T @ dZ, rtol=rtol * 10, atol=atol * 10 * k)
    np.testing.assert_allclose(gb, dZ.sum(axis=0), rtol=rtol * 10, atol=atol * 10 * k)
    if act in ("step", "sign"):
        assert not gX.any() and not gW.any() and not gb.any()


@pytest.mark.parametrize("act", ["identity", "sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("path_name", ["small", "split", "large"])
def test_backward_finite_differences(act, path_name, rng):
    th = {"small": (1e30, 1e30, 1 << 40), "split": (0.0, 1e30, 1 << 40),
          "large": (0.0, 0.0, 0)}[path_name]
    with override_thresholds("dense", **dict(zip(DENSE_THRESHOLDS, th))):
        X, W, b = make(rng, 6, 5, 36, np.float64)
        if act == "relu":  # keep pre-activations away from the kink
            Z = X @ W + b
            b = b + np.where(np.abs(Z).min(axis=0) < 1e-3, 0.1, 0.0)
        C = rng.standard_normal((6, 36))

        def loss(X, W, b):
            return float((F.dense_forward(X, W, b, act, n_threads=1) * C).sum())

        Y = F.dense_forward(X, W, b, act, n_threads=2)
        gX, gW, gb = F.dense_backward(X, W, Y, C.copy(), act, n_threads=2)
        h = 1e-6
        for arr, grad in ((X, gX), (W, gW), (b, gb)):
            num = np.zeros_like(arr)
            for idx in np.ndindex(arr.shape):
                orig = arr[idx]
                arr[idx] = orig + h
                fp = loss(X, W, b)
                arr[idx] = orig - h
                fm = loss(X, W, b)
                arr[idx] = orig
                num[idx] = (fp - fm) / (2 * h)
            np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7)


def test_backward_options(dtype, n_threads, path, rng):
    X, W, b = make(rng, 12, 7, 40, dtype)
    Y = F.dense_forward(X, W, b, "relu")
    G = rng.standard_normal(Y.shape).astype(dtype)
    gX, gW, gb = F.dense_backward(X, W, Y, G, "relu", n_threads=n_threads)
    # need_grad_X=False skips grad_X; accumulate adds into the given buffers.
    gW2 = np.ones_like(gW)
    gb2 = np.ones_like(gb)
    r = F.dense_backward(X, W, Y, G, "relu", grad_W_out=gW2, grad_b_out=gb2, need_grad_X=False,
                         accumulate=True, n_threads=n_threads)
    assert r[0] is None and r[1] is gW2 and r[2] is gb2
    np.testing.assert_allclose(gW2, gW + 1, rtol=1e-6)
    np.testing.assert_allclose(gb2, gb + 1, rtol=1e-6)
    # overwrite_grad_Y stores dZ in grad_Y; results unchanged.
    G2 = G.copy()
    gX3, gW3, gb3 = F.dense_backward(X, W, Y, G2, "relu", overwrite_grad_Y=True,
                                     n_threads=n_threads)
    np.testing.assert_allclose(G2, G * (Y > 0), rtol=1e-6)
    np.testing.assert_allclose(gX3, gX, rtol=1e-6)
    np.testing.assert_array_equal(gb3, gb)
    # need_grad_b=False (no-bias layer)
    r = F.dense_backward(X, W, Y, G, "relu", need_grad_b=False)
    assert r[2] is None
    # out= for forward
    out = np.empty((12, 40), dtype=dtype)
    assert F.dense_forward(X, W, b, "relu", out=out) is out
    np.testing.assert_array_equal(out, Y)


def test_empty_batch(dtype):
    X = np.zeros((0, 4), dtype=dtype)
    W = np.ones((4, 3), dtype=dtype)
    Y = F.dense_forward(X, W, np.ones(3, dtype), "sigmoid")
    assert Y.shape == (0, 3)
    gX, gW, gb = F.dense_backward(X, W, Y, np.zeros((0, 3), dtype), "sigmoid")
    assert gX.shape == (0, 4) and not gW.any() and not gb.any()
    gW1 = np.ones((4, 3), dtype)
    F.dense_backward(X, W, Y, np.zeros((0, 3), dtype), grad_W_out=gW1,
                     grad_b_out=np.ones(3, dtype), accumulate=True)
    assert (gW1 == 1).all()


def test_nan_propagates():
    X = np.array([[np.nan, 1.0]])
    W = np.ones((2, 2))
    for act in ("identity", "sigmoid", "tanh", "relu", "step", "sign"):
        assert np.isnan(F.dense_forward(X, W, None, act)).all(), act


def test_validation_messages():
    X = np.zeros((3, 4), np.float32)
    W = np.zeros((4, 5), np.float32)
    b = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match=r"X has 4 features.*W expects 3"):
        F.dense_forward(X, np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"b must have shape \(5,\).*got \(4,\)"):
        F.dense_forward(X, W, np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="W has dtype float64 but X has float32"):
        F.dense_forward(X, W.astype(np.float64), b)
    with pytest.raises(TypeError, match="b has dtype float64"):
        F.dense_forward(X, W, b.astype(np.float64))
    with pytest.raises(TypeError, match="int64"):
        F.dense_forward(X, W.astype(np.int64))
    with pytest.raises(ValueError, match="2-dimensional"):
        F.dense_forward(X[0], W)
    with pytest.raises(ValueError, match="Unknown activation 'mish'"):
        F.dense_forward(X, W, b, "mish")
    with pytest.raises(ValueError, match=r"out must have shape \(3, 5\), got \(3, 4\)"):
        F.dense_forward(X, W, b, out=np.zeros((3, 4), np.float32))
    with pytest.raises(TypeError, match="out must have dtype float32"):
        F.dense_forward(X, W, b, out=np.zeros((3, 5), np.float64))
    with pytest.raises(ValueError, match="n_threads"):
        F.dense_forward(X, W, b, n_threads=0)
    Y = np.zeros((3, 5), np.float32)
    with pytest.raises(ValueError, match=r"grad_Y must have shape \(3, 5\)"):
        F.dense_backward(X, W, Y, np.zeros((3, 6), np.float32))
    with pytest.raises(ValueError, match="accumulate=True needs grad_W_out"):
        F.dense_backward(X, W, Y, Y, accumulate=True)
    with pytest.raises(ValueError, match=r"grad_W_out must have shape \(4, 5\)"):
        F.dense_backward(X, W, Y, Y, grad_W_out=np.zeros((5, 4), np.float32))
    ro = np.zeros((3, 5), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        F.dense_backward(X, W, Y, ro, "relu", overwrite_grad_Y=True)


def test_import_leaves_the_environment_alone():
    """Importing fastnn (and running a 2-thread kernel) changes no environment variable: how
    OpenMP workers wait is the user's choice, shared with every other OpenMP user in the process."""
    import os
    import subprocess
    import sys

    import fastnn
    code = ("import os, json\n"
            "before = dict(os.environ)\n"
            "import numpy as np, fastnn\n"
            "fastnn.functional.relu(np.ones(1 << 20, np.float32), n_threads=2)\n"
            "print(json.dumps(dict(os.environ) == before))\n")
    home = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))  # not the source tree
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=home,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "true"


def test_blas_thread_count_restored_under_concurrency(rng):
    """Concurrent dense calls from Python threads leave the BLAS thread count as it was."""
    import threading

    import fastnn
    from fastnn._kernels import _blas
    if not _blas.has_thread_control():
        pytest.skip("no BLAS thread control")
    before = fastnn._threads.blas_info()["num_threads"]
    X, W, b = make(rng, 40, 21, 70, np.float32)
    ref = F.dense_forward(X, W, b, "relu", n_threads=1)
    errors = []
    split = override_thresholds("dense", split_min_work=0.0, split_max_work=1e30,
                                epilogue_min_elements=1 << 40)    # split path: pins BLAS to 1

    def work(nt):
        try:
            for _ in range(200):
                np.testing.assert_allclose(F.dense_forward(X, W, b, "relu", n_threads=nt), ref,
                                           rtol=1e-5, atol=1e-6)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with split:
        threads = [threading.Thread(target=work, args=(nt,)) for nt in (1, 2, 2, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert fastnn._threads.blas_info()["num_threads"] == before
