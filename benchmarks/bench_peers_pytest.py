"""pytest-benchmark groups for the timed pieces of ``bench_peers.py`` (the same callables).

Every implementation is built by ``bench_peers.build`` from the same spec as in the script, so
the two cannot drift apart; here all libraries share one process (the script keeps one worker
process per library, which matters for 2-thread numbers). PyTorch groups only when it is
importable.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python -m pytest benchmarks/bench_peers_pytest.py --benchmark-only

MNIST is read from ``$FASTNN_MNIST_DIR`` or shared/data/mnist; the MNIST groups are skipped
when it is absent. The time to accuracy, the contention run, the bitwise check and the
placement probe are parts of ``bench_peers.py`` only (minutes, not micro-benchmarks).
"""
from __future__ import annotations

import os
import sys
import warnings

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_peers as bp

HAVE_TORCH = bp.torch_available()
TRAIN_SAMPLES = 4096
SMALL_SAMPLES = 4096


def _impls(names):
    return [i for i in names if HAVE_TORCH or bp.family(i) != "torch"]


@pytest.fixture(scope="module")
def mnist_state():
    try:
        return {"mnist": bp.load_mnist()}
    except (FileNotFoundError, OSError) as exc:
        pytest.skip(f"MNIST not available: {exc}")


def _bench(benchmark, spec, state, nt, rounds=None):
    with bp.fixed_threads(nt), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn, samples, fixed = bp.build(spec, state)
        fn()
        benchmark.extra_info["samples_per_call"] = samples
        if fixed:   # a whole pass over a block of samples per call
            benchmark.pedantic(fn, rounds=rounds or 3, iterations=1, warmup_rounds=0)
        else:
            benchmark(fn)


@pytest.mark.parametrize("batch", [16, 128], ids=lambda b: f"b{b}")
@pytest.mark.parametrize("impl", _impls([i for i in bp.TRAIN_IMPLS if "(modules)" not in i]))
def test_train(benchmark, mnist_state, impl, batch, n_threads):
    benchmark.group = f"peers train 784-256-256-10 adam f32 b{batch} t{n_threads}"
    spec = {"part": "train", "impl": impl, "batch": batch, "nt": n_threads,
            "samples": TRAIN_SAMPLES}
    _bench(benchmark, spec, dict(mnist_state), n_threads)


@pytest.mark.parametrize("impl", _impls(bp.SMALL_IMPLS))
def test_small(benchmark, impl, n_threads):
    benchmark.group = f"peers small 20-64-64-10 tanh dropout sgd-nesterov b16 t{n_threads}"
    spec = {"part": "small", "impl": impl, "nt": n_threads, "samples": SMALL_SAMPLES}
    _bench(benchmark, spec, {}, n_threads)


@pytest.mark.parametrize("batch", [1, 1024], ids=lambda b: f"b{b}")
@pytest.mark.parametrize("impl", _impls(bp.INFER_IMPLS))
def test_infer(benchmark, mnist_state, impl, batch, n_threads):
    benchmark.group = f"peers inference 784-256-256-10 b{batch} t{n_threads}"
    spec = {"part": "infer", "impl": impl, "batch": batch, "nt": n_threads}
    _bench(benchmark, spec, dict(mnist_state), n_threads)


@pytest.mark.parametrize("c", bp.CLASSES, ids=[f"C{c:g}" for c in bp.CLASSES])
@pytest.mark.parametrize("impl", _impls(bp.OUTPUT_IMPLS))
def test_output(benchmark, impl, c, n_threads):
    benchmark.group = f"peers output rows x {c} f32 t{n_threads}"
    spec = {"part": "output", "impl": impl, "c": c, "nt": n_threads}
    benchmark.extra_info["rows"] = bp._rows_for(c)
    _bench(benchmark, spec, {}, n_threads)
