"""fastnn.search: grid and random search, ranked on a validation set, reproducible."""
import math

import numpy as np
import pytest
import scipy.stats

from fastnn import datasets, search
from fastnn.data import Standardizer, train_val_test_split
from fastnn.layers import Dense
from fastnn.model import Sequential


def build(hidden=16, activation="relu", seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(Dense(64, hidden, activation=activation, seed=int(rng.integers(1 << 30))),
                      Dense(hidden, 10, seed=int(rng.integers(1 << 30))))


@pytest.fixture(scope="module")
def data():
    X, y = datasets.load_digits()
    Xtr, Xva, _, ytr, yva, _ = train_val_test_split(X, y, val_size=0.2, test_size=0.2,
                                                    stratify=True, seed=0)
    s = Standardizer().fit(Xtr)
    return s.transform(Xtr)[:600], ytr[:600], s.transform(Xva), yva


FIT = {"epochs": 3, "batch_size": 32}


def test_grid_search_sorted_table(data):
    res = search.grid_search(build, {"hidden": [4, 32], "lr": [1e-4, 3e-3]}, *data,
                             fit_params=FIT, n_threads=1, seed=0)
    assert len(res) == 4
    scores = [r["score"] for r in res]
    assert scores == sorted(scores, reverse=True)
    assert [r["rank"] for r in res] == [1, 2, 3, 4]
    assert {(r["hidden"], r["lr"]) for r in res} == {(4, 1e-4), (4, 3e-3), (32, 1e-4),
                                                      (32, 3e-3)}
    assert res.best_params == {"hidden": 32, "lr": 3e-3}
    assert res.scoring == "accuracy" and res.best_score == scores[0]
    assert all(r["epochs"] == 3 and r["fit_time"] > 0 for r in res)
    text = str(res)
    assert "val_accuracy" in text and "hidden" in text and len(text.splitlines()) == 6
    assert isinstance(res.to_list()[0]["score"], float)


def test_search_is_reproducible_and_independent_of_n_jobs(data):
    grid = {"hidden": [8, 16], "activation": ["relu", "tanh"]}
    a = search.grid_search(build, grid, *data, fit_params=FIT, n_threads=1, seed=3)
    b = search.grid_search(build, grid, *data, fit_params=FIT, n_threads=1, seed=3, n_jobs=2)
    assert [(r["params"], r["score"], r["val_loss"]) for r in a] == \
        [(r["params"], r["score"], r["val_loss"]) for r in b]
    c = search.grid_search(build, grid, *data, fit_params=FIT, n_threads=1, seed=4)
    assert [r["val_loss"] for r in c] != [r["val_loss"] for r in a]


def build_recording_blas(hidden=16, seed=0):
    from fastnn import _threads
    model = build(hidden, seed=seed)
    model.blas_seen = _threads.blas_library()
    return model


def test_worker_processes_use_the_searchs_blas(data, other_blas):
    """Worker processes chose their BLAS when they imported fastnn (FASTNN_BLAS, "auto"):
    each trial switches to the library the search's process uses, so that n_jobs does not
    change the bits."""
    grid = {"hidden": [8, 16]}
    kw = dict(fit_params=FIT, n_threads=1, seed=3, keep_models=True)
    a = search.grid_search(build_recording_blas, grid, *data, **kw)
    b = search.grid_search(build_recording_blas, grid, *data, n_jobs=2, **kw)
    assert {m.blas_seen for m in a.models + b.models} == {other_blas}
    assert [(r["params"], r["val_loss"]) for r in a] == \
        [(r["params"], r["val_loss"]) for r in b]


def test_random_search_distributions(data):
    space = {"lr": scipy.stats.loguniform(1e-4, 1e-2), "hidden": [8, 16, 32],
             "activation": lambda rng: "tanh" if rng.random() < 0.5 else "relu",
             "batch_size": 64}
    a = search.random_search(build, space, *data, n_iter=4, fit_params={"epochs": 2},
                             n_threads=1, seed=11)
    b = search.random_search(build, space, *data, n_iter=4, fit_params={"epochs": 2},
                             n_threads=1, seed=11)
    assert len(a) == 4
    assert [r["params"] for r in a] == [r["params"] for r in b]
    assert [r["score"] for r in a] == [r["score"] for r in b]
    for r in a:
        assert 1e-4 <= r["lr"] <= 1e-2 and type(r["lr"]) is float  # no numpy scalars
        assert r["hidden"] in (8, 16, 32) and r["batch_size"] == 64
    configs = search.sample_parameters(space, 50, seed=0)
    assert len({c["hidden"] for c in configs}) == 3
    assert len({c["activation"] for c in configs}) == 2


def test_failed_trials_rank_last_or_raise(data):
    grid = {"lr": [1e9, 1e-3], "optimizer": ["sgd"]}

    def build_regression(hidden=8, seed=0):
        return Sequential(Dense(64, hidden, activation="tanh", seed=seed), Dense(hidden, 1))

    Xtr, ytr, Xva, yva = data
    ytr_r = (ytr.astype(np.float32) * 1000).reshape(-1, 1)
    yva_r = (yva.astype(np.float32) * 1000).reshape(-1, 1)
    res = search.grid_search(build_regression, grid, Xtr, ytr_r, Xva, yva_r,
                             fit_params={"epochs": 3, "loss": "squared"}, n_threads=1)
    assert res.scoring == "r2"
    assert res[0]["lr"] == 1e-3 and math.isnan(res[1]["score"])
    assert "FloatingPointError" in res[1]["error"] and "error" in str(res)
    with pytest.raises(FloatingPointError):
        search.grid_search(build_regression, grid, Xtr, ytr_r, Xva, yva_r,
                           fit_params={"epochs": 3, "loss": "squared"}, n_threads=1,
                           error_score="raise")


def test_scoring_loss_sorts_ascending_and_validation(data):
    res = search.grid_search(build, {"hidden": [4, 32]}, *data, fit_params=FIT,
                             scoring="loss", n_threads=1)
    assert res.scoring == "loss" and not res.greater_is_better
    assert res[0]["score"] <= res[1]["score"]
    with pytest.raises(TypeError, match="lists"):
        search.grid_search(build, {"hidden": 4}, *data)
    with pytest.raises(ValueError, match="validation_data"):
        search.grid_search(build, {"hidden": [4]}, *data,
                           fit_params={"validation_data": None})
    with pytest.raises(ValueError, match="scoring"):
        search.grid_search(build, {"hidden": [4]}, *data, scoring="f1")
    assert search._threads_per_trial(2, None) >= 1
    assert search._threads_per_trial(1, 3) == 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_n_threads_is_a_value_error_before_any_trial(data, bad):
    calls = []

    def counting_build(**kw):
        calls.append(kw)
        return build(**kw)

    with pytest.raises(ValueError, match="n_threads must be None or a positive int"):
        search.grid_search(counting_build, {"hidden": [4]}, *data, fit_params=FIT,
                           n_threads=bad)
    assert calls == []


def test_n_threads_is_checked_by_the_one_definition(data):
    from fastnn._validation import MAX_THREADS, check_n_threads

    assert search.check_n_threads is check_n_threads
    with pytest.raises(ValueError, match="more than fastnn allows"):
        search.grid_search(build, {"hidden": [4]}, *data, fit_params=FIT,
                           n_threads=MAX_THREADS + 1)
    threads = search._threads_per_trial(1, np.int64(2))
    assert threads == 2 and type(threads) is int
