"""Shared fixtures. The suite tests the *installed* fastnn (pytest runs with
--import-mode=importlib, so the source folder is not put on sys.path)."""
import contextlib
import os
import time

import numpy as np
import pytest

MNIST_DIR = os.environ.get(
    "FASTNN_MNIST_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist"),
)


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture(params=[1, 2], ids=["t1", "t2"])
def n_threads(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def wait_for_write():
    """``wait(directory, proc, old=())``: return the name of the first ``.tmp`` file in
    ``directory`` not in ``old`` (a write in progress) as soon as one appears, whatever the
    speed of the disk; fail if ``proc`` exits first or after 30 s."""
    def wait(directory, proc, old=(), timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fresh = [f for f in os.listdir(directory) if f.endswith(".tmp") and f not in old]
            if fresh:
                return fresh[0]
            assert proc.poll() is None, "the writer exited before writing"
            time.sleep(0.0002)
        raise AssertionError(f"no write started within {timeout} s")
    return wait


@pytest.fixture
def other_blas():
    """Switch fastnn to a BLAS library other than the one in force (worker processes, which
    chose theirs at import, then differ from this process) and yield its name; afterwards the
    choice in force before. Skips where no other library loads."""
    from fastnn._kernels import _blas_loader
    choice = _blas_loader.choice()
    other = "scipy" if _blas_loader.library() != "scipy" else "numpy"
    try:
        _blas_loader.use_blas(other)
    except RuntimeError:
        pytest.skip(f"no {other} BLAS here")
    try:
        yield other
    finally:
        _blas_loader.use_blas(choice)


_ROWS_EXACT: dict = {}


def blas_rows_exact(dtype=np.float32) -> bool:
    """True when the BLAS in force computes a row of a product with the same bits whatever rows
    surround it (probed once per library and dtype: fastnn's dense forward of a 300-row batch
    against the same rows in groups of 2 to 200 rows, as tiles and chunks cut them; a one-row
    request takes another kernel). OpenBLAS's SkylakeX kernels do; its Haswell kernels
    (OPENBLAS_CORETYPE=Haswell, or an AVX2 CPU) and oneMKL round some rows by their place in
    the product."""
    from fastnn._kernels import _blas_loader
    from fastnn.functional.dense import dense_forward
    key = (_blas_loader.current().get("filepath"), np.dtype(dtype).name)
    if key not in _ROWS_EXACT:
        rng = np.random.default_rng(0)
        X = rng.standard_normal((300, 64)).astype(dtype)
        W = rng.standard_normal((64, 48)).astype(dtype)
        whole = dense_forward(X, W, n_threads=1)
        groups = [(298, 300), (0, 17), (5, 38), (30, 62), (100, 200), (33, 300)]
        _ROWS_EXACT[key] = all(
            np.array_equal(dense_forward(np.ascontiguousarray(X[a:b]), W, n_threads=1),
                           whole[a:b]) for a, b in groups)
    return _ROWS_EXACT[key]


@pytest.fixture
def split_always():
    """One-call inference splits every one-row request that qualifies over the threads,
    however long ago the previous call ended."""
    from fastnn._kernels import inference
    old = inference.set_split(0.0, float("inf"))
    yield
    inference.set_split(*old)


@pytest.fixture
def spy():
    """``with spy(obj, name) as results:`` replaces ``obj.name`` by a wrapper that records
    whether each call returned something (not None) and restores it after the block."""
    @contextlib.contextmanager
    def record(obj, name):
        results = []
        orig = getattr(obj, name)

        def wrapper(*args, **kwargs):
            out = orig(*args, **kwargs)
            results.append(out is not None)
            return out

        setattr(obj, name, wrapper)
        try:
            yield results
        finally:
            setattr(obj, name, orig)
    return record


@pytest.fixture
def same_rows():
    """``same_rows(actual, expected)``: outputs computed in other row groups (chunks, tiles,
    streamed batches) against the whole batch's: the same bits where the BLAS rounds a row the
    same in any group (:func:`blas_rows_exact`), else equal to float32 rounding."""
    def check(actual, expected):
        actual, expected = np.asarray(actual), np.asarray(expected)
        if blas_rows_exact(expected.dtype if expected.dtype.kind == "f" else np.float32):
            np.testing.assert_array_equal(actual, expected)
        else:
            np.testing.assert_allclose(actual, expected, rtol=2e-6, atol=1e-6)
    return check


def tol(dtype):
    """(rtol, atol) for comparing a kernel's output with a float64 reference."""
    return (2e-5, 2e-6) if np.dtype(dtype) == np.float32 else (1e-12, 1e-13)


def _make_tests_importable_by_workers():
    """Let other processes import the test modules by name.

    With --import-mode=importlib pytest imports a test module as "tests.test_search" without
    putting the repository on sys.path. Processes that unpickle a function defined in a test
    module (joblib's loky workers, Dask workers) then fail with "No module named 'tests'" when
    the suite runs against an installed fastnn from outside the source tree (CI, wheels).
    Adding the repository root would shadow the installed fastnn with the source folder, so a
    directory holding only ``tests`` (a link, or a copy where links are not allowed) goes at the
    end of sys.path instead; spawned workers receive the parent's sys.path.
    """
    import atexit
    import shutil
    import sys
    import tempfile

    here = os.path.realpath(os.path.dirname(os.path.abspath(__file__)))
    # (pytest's own sys.modules entry for "tests" does not count: other processes lack it.)
    if any(os.path.realpath(os.path.join(p or os.getcwd(), "tests")) == here for p in sys.path):
        return  # already importable (e.g. python -m pytest from the repository root)
    shadow = tempfile.mkdtemp(prefix="fastnn-tests-path-")
    try:
        os.symlink(here, os.path.join(shadow, "tests"), target_is_directory=True)
    except (OSError, NotImplementedError):
        shutil.copytree(here, os.path.join(shadow, "tests"),
                        ignore=shutil.ignore_patterns("__pycache__"))
    atexit.register(shutil.rmtree, shadow, True)   # the link (or copy) only, not the tests
    sys.path.append(shadow)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [p for p in [os.environ.get("PYTHONPATH"), shadow] if p])


_make_tests_importable_by_workers()
