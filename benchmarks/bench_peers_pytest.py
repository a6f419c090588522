"""pytest-benchmark groups for the peer comparison of ``bench_peers.py`` (same pieces).

One group per measurement, fastnn and each peer in it (PyTorch only when installed):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/bench_peers_pytest.py \
        --benchmark-only

MNIST is read from ``$FASTNN_MNIST_DIR`` or ../shared/data/mnist; the MNIST groups are skipped
when it is absent. The time-to-accuracy run is ``bench_peers.py --only tta`` (minutes, not a
micro-benchmark).
"""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_output as bo
import bench_peers as bp
import bench_time_to_accuracy as tta

HAVE_TORCH = bp.torch_available()
TRAIN_IMPLS = ["fastnn", "numpy", "sklearn"] + (["torch", "torch-fused"] if HAVE_TORCH else [])


@pytest.fixture(scope="module")
def mnist():
    try:
        return bp.load_mnist()
    except (FileNotFoundError, OSError) as exc:
        pytest.skip(f"MNIST not available: {exc}")


def _train_fn(impl, data, batch, nt):
    weights = tta.initial_weights(0)
    if impl == "sklearn":
        n = bp._sklearn_block(batch)
        return bp.SklearnTrain(np.ascontiguousarray(data[0][:n]), data[1][:n], batch), n
    bl = bp.mnist_batches(data[0], data[1], batch)
    step = {"fastnn": lambda: bp.FastnnTrain(weights, nt),
            "numpy": lambda: bp.numpy_train(weights),
            "torch": lambda: bp.TorchTrain(weights),
            "torch-fused": lambda: bp.TorchTrain(weights, fused=True)}[impl]()
    return bp._Cycle(step, bl), batch


@pytest.mark.parametrize("batch", [16, 128], ids=lambda b: f"b{b}")
@pytest.mark.parametrize("impl", TRAIN_IMPLS)
def test_train(benchmark, mnist, impl, batch, n_threads):
    benchmark.group = f"peers train 784-256-256-10 adam f32 b{batch} t{n_threads}"
    with bp.fixed_threads(n_threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn, samples = _train_fn(impl, mnist, batch, n_threads)
        fn()
        benchmark.extra_info["samples_per_call"] = samples
        benchmark.pedantic(fn, rounds=3 if impl == "sklearn" else 20,
                           iterations=1 if impl == "sklearn" else 10, warmup_rounds=1)


SMALL_IMPLS = ["fastnn", "numpy", "sklearn-nodropout"] + (
    ["torch", "torch-fused"] if HAVE_TORCH else [])


@pytest.mark.parametrize("impl", SMALL_IMPLS)
def test_small(benchmark, impl, n_threads):
    benchmark.group = f"peers small 20-64-64-10 tanh dropout sgd-nesterov b16 t{n_threads}"
    X, y = bp.small_data()
    w = bp.small_weights()
    bl = [(np.ascontiguousarray(X[i:i + 16]), y[i:i + 16]) for i in range(0, 1024, 16)]
    with bp.fixed_threads(n_threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if impl == "sklearn-nodropout":
            fn = bp.SklearnTrain(X[:1024], y[:1024], 16, sizes=bp.SMALL_SIZES,
                                 activation="tanh", solver="sgd")
            benchmark.extra_info["samples_per_call"] = 1024
            benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
            return
        if impl == "fastnn":
            step = bp.FastnnTrain(w, n_threads, optimizer="sgd", sizes=bp.SMALL_SIZES,
                                  activation="tanh", dropout=bp.SMALL_P)
        elif impl == "numpy":
            step = bp.NumpySmall(w).step
        else:
            step = bp.TorchTrain(w, fused=impl == "torch-fused", sizes=bp.SMALL_SIZES,
                                 activation="tanh", dropout=bp.SMALL_P, optimizer="sgd")
        fn = bp._Cycle(step, bl)
        benchmark.extra_info["samples_per_call"] = 16
        benchmark(fn)


INFER_IMPLS = ["fastnn-forward", "fastnn-predict", "numpy"] + (["torch"] if HAVE_TORCH else [])


@pytest.mark.parametrize("batch", [1, 1024], ids=lambda b: f"b{b}")
@pytest.mark.parametrize("impl", INFER_IMPLS)
def test_infer(benchmark, mnist, impl, batch, n_threads):
    benchmark.group = f"peers inference 784-256-256-10 b{batch} t{n_threads}"
    w = tta.initial_weights(0)
    x = np.ascontiguousarray(mnist[2][:batch])
    with bp.fixed_threads(n_threads):
        if impl.startswith("fastnn"):
            model = bp.fastnn_mlp(w, n_threads).eval()
            fn = (lambda: model.forward(x)) if impl == "fastnn-forward" else (
                lambda: model.predict(x))
        elif impl == "numpy":
            net = tta.NumpyMLP(w)
            fn = lambda: net.predict(x)
        else:
            import torch
            tm = bp.TorchTrain(w).model.eval()
            xt = torch.from_numpy(x)

            def fn():
                with torch.inference_mode():
                    return tm(xt)
        benchmark(fn)


OUTPUT_IMPLS = ["fastnn softmax", "numpy softmax", "fastnn sparsemax", "numpy sort sparsemax"] + (
    ["torch sort sparsemax"] if HAVE_TORCH else [])


@pytest.mark.parametrize("c", bp.CLASSES, ids=[f"C{c:g}" for c in bp.CLASSES])
@pytest.mark.parametrize("impl", OUTPUT_IMPLS)
def test_output(benchmark, impl, c, n_threads):
    import fastnn.functional as F
    benchmark.group = f"peers output rows x {c} f32 t{n_threads}"
    z = np.random.default_rng(0).standard_normal((bp._rows_for(c), c)).astype(np.float32)
    fns = {"fastnn softmax": lambda: F.softmax(z, n_threads=n_threads),
           "numpy softmax": lambda: bo.numpy_softmax(z),
           "fastnn sparsemax": lambda: F.sparsemax(z, n_threads=n_threads),
           "numpy sort sparsemax": lambda: bo.numpy_sparsemax(z)}
    if impl == "torch sort sparsemax":
        import torch
        zt = torch.from_numpy(z)
        fns[impl] = lambda: bp.torch_sparsemax_sort(zt)
    benchmark.extra_info["elements"] = z.size
    with bp.fixed_threads(n_threads):
        benchmark(fns[impl])
