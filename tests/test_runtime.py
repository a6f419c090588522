"""fastnn.functional.runtime: one convention for the kernels' parallel thresholds, and the one
door from fastnn's thread model to the compiled core."""
import ast
import os

import numpy as np
import pytest

import fastnn
from fastnn._kernels import activations, dense, dropout, losses, maxout, optim, softmax, sparsemax
from fastnn.functional import runtime

KERNELS = {"dense": dense, "activations": activations, "dropout": dropout, "losses": losses,
           "optim": optim, "softmax": softmax, "sparsemax": sparsemax, "maxout": maxout}


def test_every_kernel_with_a_threshold_is_listed():
    assert set(runtime.THRESHOLD_KERNELS) == set(KERNELS)
    assert set(runtime.parallel_thresholds()) == set(KERNELS)


def test_every_threshold_is_listed_set_and_restored():
    table = runtime.parallel_thresholds()
    for kernel, module in KERNELS.items():
        assert table[kernel] == module.parallel_thresholds() and table[kernel]
        for name, value in table[kernel].items():
            assert value >= 0
            assert runtime.set_parallel_threshold(kernel, name, 12345) == value
            assert module.parallel_thresholds()[name] == 12345
            assert module.set_parallel_threshold(name, value) == 12345
        assert module.parallel_thresholds() == table[kernel]


def test_override_restores_on_error():
    before = runtime.parallel_thresholds()["dropout"]["min_elements"]
    with pytest.raises(RuntimeError, match="inside"):
        with runtime.override_thresholds("dropout", min_elements=0):
            assert runtime.parallel_thresholds()["dropout"]["min_elements"] == 0
            raise RuntimeError("inside")
    assert runtime.parallel_thresholds()["dropout"]["min_elements"] == before


@pytest.mark.parametrize("kernel,name,value,error,match", [
    ("dense", "split_min", 1.0, ValueError, "no parallel threshold 'split_min'"),
    ("losses", "min_elements", -1, ValueError, ">= 0"),
    ("optim", "min_work", 2.5, TypeError, "must be an int"),
    ("dropout", "min_elements", True, TypeError, "must be an int"),
    ("dense", "split_min_work", "1e7", TypeError, "must be a number"),
    ("dense", "split_min_work", float("nan"), ValueError, ">= 0"),
    ("convolution", "min_elements", 1, ValueError, "unknown kernel module"),
])
def test_bad_thresholds_are_clear_errors(kernel, name, value, error, match):
    before = runtime.parallel_thresholds()
    with pytest.raises(error, match=match):
        runtime.set_parallel_threshold(kernel, name, value)
    assert runtime.parallel_thresholds() == before


def test_a_huge_threshold_means_serial(rng):
    x = rng.standard_normal(1 << 16).astype(np.float32)
    with runtime.override_thresholds("dropout", min_elements=10 ** 30):   # capped, not overflowed
        assert runtime.parallel_thresholds()["dropout"]["min_elements"] == 1 << 62
        a = fastnn.functional.dropout(x, 0.5, seed=1, n_threads=2)
    np.testing.assert_array_equal(a, fastnn.functional.dropout(x, 0.5, seed=1, n_threads=1))


def _imports_kernels(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.startswith("fastnn._kernels")
                                                for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastnn._kernels"):
            return True
    return False


@pytest.mark.parametrize("name", ["parallel.py", "__init__.py"])
def test_thread_model_reaches_the_kernels_through_runtime(name):
    path = os.path.join(os.path.dirname(fastnn.__file__), name)
    assert not _imports_kernels(path)


def test_the_public_runtime_module_is_the_kernels_one():
    from fastnn._kernels import _runtime
    for name in _runtime.__all__:
        assert getattr(runtime, name) is getattr(_runtime, name)


def test_blas_registry_is_the_kernels_one():
    from fastnn._kernels import _blas
    from fastnn.parallel import limit_threads

    assert runtime.blas_held() == [] and runtime.blas_requests() == _blas.requests()
    with limit_threads(1):
        assert runtime.blas_held() == [1] and _blas.requests()[0] == 1
    assert runtime.blas_held() == [] and _blas.requests()[0] == 0
