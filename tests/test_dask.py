"""Searches on a real Dask cluster (joblib's dask backend) give the single-process results, and
each worker's OpenMP/BLAS threads are limited inside the trial.

The cluster is a LocalCluster of two worker processes bound to 127.0.0.1 (no dashboard). Worker
processes are started without Dask's own OMP_NUM_THREADS=1, so that a worker's default thread
count is the machine's and the limit seen inside a trial is fastnn's doing.
"""
import functools
import json
import os
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
joblib = pytest.importorskip("joblib")
pytest.importorskip("sklearn")

import cloudpickle
import dask
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import StandardScaler

import fastnn
from fastnn import search
from fastnn.callbacks import Callback
from fastnn.parallel import thread_info, threads_per_worker
from fastnn.sklearn import MLPClassifier, build_mlp

# The workers cannot import this test module: ship its functions and classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def client():
    environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items()
               if not k.endswith("_NUM_THREADS")}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address=None,
                                           protocol="tcp://", silence_logs=50)
        c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture(scope="module")
def data():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(X))
    tr, va = idx[:110], idx[110:]
    return X[tr], y[tr], X[va], y[va]


def test_cluster_is_local_only(client):
    addrs = [client.scheduler.address, *client.scheduler_info()["workers"]]
    assert len(addrs) == 3
    for a in addrs:
        assert a.startswith("tcp://127.0.0.1:"), a
    pids = set(client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids          # two real worker processes


def build_recording(n_features, n_outputs, *, seed=None, **params):
    """build_fn of a trial: the network, plus the thread counts in force inside the trial."""
    model = build_mlp(n_features, n_outputs, seed=seed, dtype=np.float64, **params)
    model.threads_seen = thread_info()
    return model


def _rows(result):
    return sorted((str(sorted(r["params"].items())), r["score"], r["val_loss"], r["train_loss"])
                  for r in result.rows)


def test_fastnn_grid_and_random_search_on_dask(client, data):
    build = functools.partial(build_recording, 4, 3)
    grid = {"hidden_layer_sizes": [(8,), (16,)], "activation": ["relu", "tanh"]}
    fit = {"epochs": 8, "batch_size": 16, "lr": 0.01}
    local = search.grid_search(build, grid, *data, fit_params=fit, seed=5, n_threads=1)
    with joblib.parallel_config(backend="dask"):
        remote = search.grid_search(build, grid, *data, fit_params=fit, seed=5,
                                    keep_models=True)
    assert _rows(remote) == _rows(local)                       # same seeds, same scores
    assert remote.best_params == local.best_params

    # every trial ran in a worker process, with the threads limited to cores // workers there
    expected = threads_per_worker(2)
    seen = [m.threads_seen for m in remote.models]
    assert {s["pid"] for s in seen} <= set(client.run(os.getpid).values())
    assert all(s["openmp"] == expected and s["blas"] in (expected, None) for s in seen), seen
    # ... while a worker outside a trial runs the machine's default
    outside = list(client.run(thread_info).values())
    from fastnn._kernels import _config
    if min(s["cores"] for s in outside) >= 2 and _config.openmp_enabled():
        assert all(s["openmp"] > expected for s in outside), outside

    dists = {"hidden_layer_sizes": [(8,), (16,), (8, 8)], "lr": [0.003, 0.01, 0.03]}
    local = search.random_search(build, dists, *data, n_iter=4, seed=2, n_threads=1,
                                 fit_params={"epochs": 6})
    with joblib.parallel_config(backend="dask"):
        remote = search.random_search(build, dists, *data, n_iter=4, seed=2,
                                      fit_params={"epochs": 6})
    assert _rows(remote) == _rows(local)


class FileRecorder(Callback):
    """Appends the thread counts in force at the start of a fit to a file (any process)."""

    def __init__(self, path):
        self.path = path

    def on_train_begin(self, logs=None):
        with open(self.path, "a") as f:
            f.write(json.dumps(thread_info()) + "\n")


def test_sklearn_grid_search_over_fastnn_on_dask(client, data, tmp_path):
    X, y = data[0], data[1]
    n_threads = threads_per_worker(2)
    est = MLPClassifier((8,), max_iter=10, lr=0.02, batch_size=16, random_state=0,
                        n_threads=n_threads)
    grid = {"activation": ["relu", "tanh"], "dropout": [0.0, 0.2]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        local = GridSearchCV(est, grid, cv=3).fit(X, y)
        log = tmp_path / "threads.jsonl"
        with joblib.parallel_config(backend="dask"):
            remote = GridSearchCV(est, grid, cv=3).fit(X, y, callbacks=[FileRecorder(str(log))])
    np.testing.assert_array_equal(remote.cv_results_["mean_test_score"],
                                  local.cv_results_["mean_test_score"])
    np.testing.assert_array_equal(remote.cv_results_["split0_test_score"],
                                  local.cv_results_["split0_test_score"])
    assert remote.best_params_ == local.best_params_
    np.testing.assert_array_equal(remote.predict_proba(X), local.predict_proba(X))

    seen = [json.loads(line) for line in log.read_text().splitlines()]
    worker_pids = set(client.run(os.getpid).values())
    remote_fits = [s for s in seen if s["pid"] in worker_pids]
    assert len(remote_fits) == 4 * 3                           # every CV fit ran on a worker
    assert all(s["openmp"] == n_threads and s["blas"] in (n_threads, None)
               for s in remote_fits), remote_fits
    assert isinstance(fastnn.MLPClassifier(), MLPClassifier)


def test_predict_on_worker_processes_uses_the_callers_blas(client, other_blas, same_rows):
    """Worker processes chose their BLAS at import; fastnn.dask's blocks switch to the
    caller's library, so the predictions are the local ones (bit for bit where that library
    rounds a row the same in any group of rows: the workers' blocks are the local ones, but
    their tiles may differ)."""
    import fastnn.dask as fdask
    from fastnn import _threads
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 40)).astype(np.float32)
    model = fastnn.Sequential(fastnn.Dense(40, 64, activation="relu", seed=0),
                              fastnn.Dense(64, 5, seed=1))
    lazy = fdask.predict(model, da.from_array(X, chunks=(100, 40)))
    with dask.config.set(scheduler="threads"):     # the same blocks in this process
        local = lazy.compute()
    same_rows(client.compute(lazy).result(timeout=120), local)
    assert set(client.run(_threads.blas_library).values()) == {other_blas}
