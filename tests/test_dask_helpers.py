"""fastnn.dask: lazy batch inference on Dask arrays and DataFrames, locally and on a
LocalCluster bound to 127.0.0.1."""
import pickle
import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
import dask  # noqa: E402

import fastnn.dask as fdask  # noqa: E402
from fastnn import Dense, Sequential  # noqa: E402

N, D, C = 900, 10, 3




@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    model = Sequential(Dense(D, 16, activation="relu", seed=0), Dense(16, C, seed=1))
    model.fit(X, y, epochs=3, verbose=0, seed=0)
    return model, X, y


def test_module_imports_the_dask_package():
    assert fdask.__name__ == "fastnn.dask" and fdask.da.__name__ == "dask.array"


def test_predict_and_predict_proba_match_the_model(fitted, same_rows):
    model, X, _ = fitted
    dx = da.from_array(X, chunks=(100, 4))        # column chunks are joined per block
    out = fdask.predict(model, dx)
    assert isinstance(out, da.Array) and out.shape == (N, C) and out.dtype == np.float32
    assert out.chunks[0] == dx.chunks[0]
    with dask.config.set(scheduler="threads"):
        same_rows(out.compute(), model.predict(X))
        p = fdask.predict_proba(model, dx.astype(np.float64)).compute()   # converted per block
    same_rows(p, model.predict_proba(X))


def test_the_model_is_one_task_of_the_graph(fitted):
    model, X, _ = fitted
    out = fdask.predict(model, da.from_array(X, chunks=(50, D)))   # 18 blocks
    size = len(pickle.dumps(model))
    graph = dict(out.__dask_graph__())
    big = [k for k, v in graph.items() if len(pickle.dumps(v)) >= size]
    assert len(big) == 1, big            # not one copy per block


def test_dataframe_and_estimators(fitted, same_rows):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    from fastnn import MLPClassifier

    model, X, y = fitted
    df = dd.from_pandas(pd.DataFrame(X.astype(np.float64)), npartitions=4)
    same_rows(fdask.predict(model, df).compute(), model.predict(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, y)
    dx = da.from_array(X, chunks=(200, D))
    labels = fdask.predict(clf, dx)
    assert labels.ndim == 1
    np.testing.assert_array_equal(labels.compute(), clf.predict(X))
    same_rows(fdask.predict_proba(clf, df).compute(), clf.predict_proba(X))


def test_bad_inputs(fitted):
    model, X, _ = fitted
    with pytest.raises(TypeError, match="Dask array or DataFrame"):
        fdask.predict(model, X)
    with pytest.raises(ValueError, match="2-dimensional"):
        fdask.predict(model, da.zeros(5, chunks=2))
    with pytest.raises(TypeError, match="no predict_proba"):
        fdask.predict_proba(object(), da.zeros((5, D), chunks=2))
    with pytest.raises(ValueError, match="features"):
        fdask.predict(model, da.zeros((5, D + 1), chunks=2))


def test_local_cluster(fitted, same_rows):
    distributed = pytest.importorskip("distributed")
    model, X, _ = fitted
    # in-process workers talking TCP on 127.0.0.1: starts in well under a second, where worker
    # processes take seconds on a loaded machine (tests/test_dask.py covers those)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  host="127.0.0.1", dashboard_address=None, protocol="tcp://",
                                  silence_logs=50) as cluster, \
            distributed.Client(cluster) as client:
        addrs = [client.scheduler.address, *client.scheduler_info()["workers"]]
        assert all(a.startswith("tcp://127.0.0.1:") for a in addrs), addrs
        dx = da.from_array(X, chunks=(100, D))
        out = fdask.predict_proba(model, dx)
        got = client.compute(out).result(timeout=60)
        same_rows(got, model.predict_proba(X))
        # streamed training and evaluation run on the cluster too (one chunk group per compute)
        m2 = model.copy()
        m2.fit(dx, np.asarray(fitted[2]), epochs=1, verbose=0, seed=0)
        assert np.isfinite(m2.evaluate(dx, fitted[2])["loss"])
