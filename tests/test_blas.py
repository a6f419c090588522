"""The BLAS wrapper against NumPy: transpose flags x dtype x shapes, alpha/beta, GEMV."""
import itertools

import numpy as np
import pytest

from fastnn import _threads
from fastnn._kernels import _blas


def _choice():
    """The name the BLAS in force was chosen with (FASTNN_BLAS's, or a use_blas call's)."""
    from fastnn._kernels import _blas_loader
    return _blas_loader.choice()


def _available_backends():
    names, before = ["scipy"], _choice()
    for name in ("numpy", "mkl"):   # (mkl: when the mkl package is installed)
        try:
            _threads.use_blas(name)
            names.append(name)
        except RuntimeError:
            pass
        finally:
            _threads.use_blas(before)
    return names


@pytest.fixture(params=_available_backends(), autouse=True)
def backend(request):
    """Run every test of this module with each BLAS backend fastnn can use here; afterwards
    the BLAS in force before (the tests after these, and other processes, use that one)."""
    before = _choice()
    _threads.use_blas(request.param)
    yield request.param
    _threads.use_blas(before)

SHAPES = [(1, 1, 1), (1, 7, 1), (7, 1, 1), (1, 1, 9), (3, 5, 4), (17, 13, 11), (64, 33, 129),
          (5, 4, 0), (0, 4, 3), (4, 0, 3)]


@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)))
def test_gemm_matches_numpy(m, n, k, trans_a, trans_b, dtype, rng):
    A = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    B = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    C = rng.standard_normal((m, n)).astype(dtype)
    alpha, beta = 1.5, -0.5
    ref = alpha * ((A.T if trans_a else A).astype(np.float64)
                   @ (B.T if trans_b else B).astype(np.float64)) + beta * C.astype(np.float64)
    _blas.py_gemm(trans_a, trans_b, dtype.type(alpha), A, B, dtype.type(beta), C)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(C, ref, rtol=rtol, atol=rtol * max(1, k))


def test_gemm_beta_zero_ignores_nan_garbage(dtype, rng):
    A = rng.standard_normal((3, 4)).astype(dtype)
    B = rng.standard_normal((4, 5)).astype(dtype)
    C = np.full((3, 5), np.nan, dtype=dtype)
    _blas.py_gemm(False, False, dtype.type(1), A, B, dtype.type(0), C)
    np.testing.assert_allclose(C, A.astype(np.float64) @ B, rtol=1e-5)


@pytest.mark.parametrize("m,n", [(1, 1), (1, 9), (9, 1), (13, 7), (0, 3), (3, 0)])
@pytest.mark.parametrize("trans_a", [False, True])
def test_gemv_matches_numpy(m, n, trans_a, dtype, rng):
    A = rng.standard_normal((m, n)).astype(dtype)
    x = rng.standard_normal(m if trans_a else n).astype(dtype)
    y = rng.standard_normal(n if trans_a else m).astype(dtype)
    ref = 2.0 * ((A.T if trans_a else A).astype(np.float64) @ x) + 0.25 * y
    _blas.py_gemv(trans_a, dtype.type(2.0), A, x, dtype.type(0.25), y)
    np.testing.assert_allclose(y, ref, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


def test_blas_thread_control_found():
    # scipy wheels ship OpenBLAS: fastnn must find its thread control to pin it per region.
    import fastnn
    info = fastnn._threads.blas_info()
    if info.get("internal_api") != "openblas":
        pytest.skip(f"BLAS is {info.get('internal_api')}, not OpenBLAS")
    assert info["thread_control"]
    assert _blas.has_thread_control()


def test_backend_reported(backend):
    info = _threads.blas_info()
    expected = "scipy.linalg.cython_blas" if backend == "scipy" else "cblas64"
    assert _blas.backend() == expected
    assert info["backend"].startswith(backend)
    assert _blas.is_sequential() == (backend == "mkl")
    if backend == "mkl":
        assert info["blas"] == "mkl" and info["threading_layer"] == "sequential"


def test_thread_requests_reach_the_backend(backend):
    """The kernels' per-call cap reaches each backend's own thread count, and the count found
    before comes back."""
    from fastnn._kernels import _runtime
    if not _blas.has_thread_control():
        pytest.skip("no thread control for this backend")
    before = _blas.get_num_threads()
    _runtime.blas_request(1)
    try:
        assert _blas.get_num_threads() == 1
    finally:
        _runtime.blas_release(1)
    assert _blas.get_num_threads() == before


def test_use_blas_rejects_unknown_name():
    with pytest.raises(ValueError, match="Invalid BLAS choice"):
        _threads.use_blas("essl")


def test_missing_mkl_is_a_clear_error(monkeypatch):
    from fastnn._kernels import _blas_loader
    monkeypatch.setattr(_blas_loader, "_find_mkl", lambda: None)
    before = _threads.blas_info()["backend"]
    with pytest.raises(RuntimeError, match="pip install mkl"):
        _threads.use_blas("mkl")
    assert _threads.blas_info()["backend"] == before     # nothing changed


def test_unavailable_blas_in_the_environment_warns_and_imports():
    import os
    import subprocess
    import sys
    code = ("import warnings, fastnn._kernels._blas_loader as L\n"
            "L._find_mkl = lambda: None\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    L._use_blas_from_environment()\n"
            "print(L.current()['backend'], [str(x.message) for x in w])\n")
    env = dict(os.environ, FASTNN_BLAS="mkl")
    root = os.path.dirname(os.path.dirname(os.path.abspath(_threads.__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "FASTNN_BLAS=mkl" in out.stdout and "using the default BLAS" in out.stdout


def test_sequential_blas_splits_large_products_over_fastnn_threads(backend, rng):
    """With a BLAS that has no threads of its own (oneMKL's sequential layer), a large product
    at n_threads=2 takes fastnn's split path; otherwise BLAS's own threads (path 2)."""
    from fastnn import functional as F
    from fastnn._kernels import dense
    from fastnn._threads import effective_n_threads
    if effective_n_threads(2) < 2:
        pytest.skip("needs 2 threads (OpenMP)")
    X = rng.standard_normal((512, 300)).astype(np.float32)
    W = rng.standard_normal((300, 200)).astype(np.float32)     # 3.1e7 multiply-adds
    Y = F.dense_forward(X, W, None, "relu", n_threads=2)
    assert dense.last_path() == ("split" if backend == "mkl" else "large")
    np.testing.assert_allclose(Y, np.maximum(X.astype(np.float64) @ W, 0), rtol=1e-4,
                               atol=1e-3)


def test_engine_keeps_its_threads_on_a_sequential_blas(backend, rng):
    """The training engine runs its team when fastnn holds the BLAS to one thread, or when the
    BLAS has no threads of its own (oneMKL's sequential layer)."""
    from fastnn import Dense, Sequential, losses, optim
    from fastnn._threads import effective_n_threads
    from fastnn.functional.engine import compile_training
    if effective_n_threads(2) < 2:
        pytest.skip("needs 2 threads (OpenMP)")
    model = Sequential(Dense(20, 64, "relu"), Dense(64, 5), seed=0)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    eng = compile_training(model, losses.CrossEntropyLoss(), opt, 2, block=16)
    X = rng.standard_normal((96, 20)).astype(np.float32)
    y = rng.integers(0, 5, 96)
    res = eng.run(X, y, np.arange(96), 0, 32, 3)
    expected = 2 if (_blas.has_thread_control() or _blas.is_sequential()) else 1
    assert res.steps == 3 and res.n_threads == expected   # (the threads it started with)


def _cpuinfo_vendor():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(
                        line.split(":", 1)[1].strip(), "other")
    except OSError:
        pass
    return None


def test_cpu_vendor_is_what_the_kernel_reports():
    vendor = _blas.cpu_vendor()
    assert vendor in ("intel", "amd", "other")
    expected = _cpuinfo_vendor()
    if expected is None:
        pytest.skip("no /proc/cpuinfo to compare with")
    import platform
    if platform.machine() in ("x86_64", "AMD64"):
        assert vendor == expected


@pytest.mark.parametrize("vendor, mkl_state, expected", [
    ("intel", "installed", "mkl"),
    ("intel", "absent", "openblas"),
    ("intel", "broken", "openblas"),
    ("amd", "installed", "openblas"),
    ("other", "installed", "openblas"),
])
def test_auto_takes_mkl_on_intel_only_when_it_is_usable(backend, monkeypatch, vendor,
                                                        mkl_state, expected):
    """"auto": oneMKL on an Intel CPU when the mkl package is installed and loads; otherwise
    NumPy's OpenBLAS (scipy's BLAS where NumPy has none), without an error."""
    if backend != "scipy":
        pytest.skip("one run is enough (the choice does not depend on the backend before)")
    from fastnn._kernels import _blas_loader
    if mkl_state == "installed" and _blas_loader._find_mkl() is None:
        pytest.skip("the mkl package is not installed")
    if expected == "openblas" and _blas_loader._find_numpy_blas() is None:
        pytest.skip("NumPy has no bundled OpenBLAS here")
    monkeypatch.setattr(_blas, "cpu_vendor", lambda: vendor)
    if mkl_state == "absent":
        monkeypatch.setattr(_blas_loader, "_find_mkl", lambda: None)
    elif mkl_state == "broken":
        monkeypatch.setattr(_blas_loader, "_find_mkl", lambda: "/nonexistent/libmkl_rt.so.2")
    try:
        info = _threads.use_blas("auto")
        if expected == "mkl":
            assert info["blas"] == "mkl" and _blas.is_sequential()
        else:
            assert info["backend"] == "numpy-openblas64 (cblas)" and not _blas.is_sequential()
        assert _choice() == "auto"
    finally:
        _threads.use_blas("scipy")     # the fixture restores the choice in force before
