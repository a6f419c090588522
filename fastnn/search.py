"""Hyperparameter search: grid search and random search, chosen on a validation set.

The lecture's recipe: a grid tries every combination of a few values per hyperparameter; a
random search samples each hyperparameter independently from a distribution. Every
configuration (a *trial*) builds a fresh model, trains it on the training set, and is scored on
the validation set; the test set is not touched here.

Trials run through :class:`joblib.Parallel`, so any joblib backend can take them: local
processes by default (``n_jobs``), or a Dask cluster with
``with joblib.parallel_config(backend="dask"): grid_search(...)`` (or Ray's backend). Inside a
worker, the OpenMP and BLAS thread pools are limited with threadpoolctl so that
``n_jobs x threads per trial <= cores``: two trials each running two threads on a two-core
machine would oversubscribe it and run slower than one after the other (see
:mod:`fastnn.parallel`; scikit-learn's searches over :class:`fastnn.MLPClassifier` get the same
limit from the estimator's ``n_threads``).

Reproducibility: the same ``seed`` gives the same configurations, the same per-trial seeds and
- thread counts aside - the same scores, whatever ``n_jobs`` or backend.
"""
from __future__ import annotations

import inspect
import itertools
import math
import time
from collections.abc import Mapping, Sequence

import numpy as np

from fastnn import training
from fastnn._threads import blas_library, blas_match
from fastnn._validation import check_n_threads
from fastnn.data import check_random_state
from fastnn.parallel import limit_threads, threads_per_worker

__all__ = ["grid_search", "random_search", "ParameterGrid", "sample_parameters", "SearchResult"]

#: trial parameters with these names go to ``fit``; every other name goes to ``build_fn``
FIT_PARAMS = frozenset({"epochs", "batch_size", "optimizer", "lr", "loss", "shuffle",
                        "callbacks"})


def _plain(v):
    """numpy scalars to Python scalars (a np.float64 learning rate would promote float32)."""
    if isinstance(v, np.generic):
        return v.item()
    return v


class ParameterGrid:
    """Every combination of a dict of lists (or of each dict in a list of such dicts).

    >>> list(ParameterGrid({"lr": [0.1, 0.01], "hidden": [32]}))
    [{'lr': 0.1, 'hidden': 32}, {'lr': 0.01, 'hidden': 32}]
    """

    def __init__(self, param_grid):
        if isinstance(param_grid, Mapping):
            param_grid = [param_grid]
        grids = []
        for g in param_grid:
            if not isinstance(g, Mapping):
                raise TypeError(f"a parameter grid is a dict of lists, got {type(g).__name__}")
            checked = {}
            for k, v in g.items():
                if isinstance(v, (str, bytes)) or not isinstance(v, (Sequence, np.ndarray)):
                    raise TypeError(f"grid values must be lists; for {k!r} got {v!r} "
                                    f"(write [{v!r}] for a single value)")
                if len(v) == 0:
                    raise ValueError(f"grid list for {k!r} is empty")
                checked[k] = list(v)
            grids.append(checked)
        self.grids = grids

    def __iter__(self):
        for g in self.grids:
            keys = list(g)
            for combo in itertools.product(*(g[k] for k in keys)):
                yield {k: _plain(v) for k, v in zip(keys, combo)}

    def __len__(self) -> int:
        return sum(math.prod(len(v) for v in g.values()) for g in self.grids)


def _sample_one(spec, rng):
    if hasattr(spec, "rvs"):
        return _plain(spec.rvs(random_state=rng))
    if callable(spec):
        return _plain(spec(rng))
    if isinstance(spec, (str, bytes)) or not isinstance(spec, (Sequence, np.ndarray)):
        return spec  # a constant
    if len(spec) == 0:
        raise ValueError("cannot sample from an empty list")
    return _plain(spec[int(rng.integers(len(spec)))])


def sample_parameters(param_distributions, n_iter: int, seed=None) -> list:
    """``n_iter`` configurations drawn independently from ``param_distributions``.

    Each value of the dict is a list (uniform choice), an object with ``.rvs(random_state=)``
    (a frozen ``scipy.stats`` distribution, e.g. ``scipy.stats.loguniform(1e-4, 1e-1)``), a
    callable ``f(rng) -> value``, or a constant.
    """
    if not isinstance(param_distributions, Mapping):
        raise TypeError("param_distributions must be a dict")
    rng = check_random_state(seed)
    return [{k: _sample_one(v, rng) for k, v in param_distributions.items()}
            for _ in range(int(n_iter))]


class SearchResult:
    """The trials of a search, best first, with a readable table as ``str()``.

    Attributes
    ----------
    rows : list of dict
        One per trial, sorted by validation score (best first; failed trials last). Keys: the
        trial's parameters, ``score`` (validation score), ``val_loss``, ``train_loss``,
        ``epochs`` (trained), ``fit_time`` (s), ``rank``, and ``error`` for failed trials.
    scoring : str
        The score's name ("accuracy", "r2", "loss", or a callable's name).
    greater_is_better : bool
    best_params : dict
    best_score : float
    best_model : the best trial's trained model when ``keep_models=True`` (else None)
    models : list, the trained models in ``rows`` order when ``keep_models=True``
    """

    def __init__(self, rows, param_names, scoring, greater_is_better, models=None):
        self.rows = rows
        self.param_names = list(param_names)
        self.scoring = scoring
        self.greater_is_better = greater_is_better
        self.models = models

    @property
    def best_params(self) -> dict:
        return dict(self.rows[0]["params"])

    @property
    def best_score(self) -> float:
        return self.rows[0]["score"]

    @property
    def best_model(self):
        return self.models[0] if self.models else None

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def to_list(self) -> list:
        """The rows as a list of flat dicts (parameters inlined)."""
        out = []
        for r in self.rows:
            flat = {k: v for k, v in r.items() if k != "params"}
            out.append(flat)
        return out

    def to_dataframe(self):
        """The rows as a pandas DataFrame (pandas needed)."""
        import pandas as pd

        return pd.DataFrame(self.to_list())

    def __str__(self) -> str:
        cols = ["rank"] + self.param_names + ["score", "val_loss", "train_loss", "epochs",
                                              "fit_time"]
        if any("error" in r for r in self.rows):
            cols.append("error")
        header = [c if c != "score" else f"val_{self.scoring}" for c in cols]

        def fmt(v):
            if isinstance(v, float):
                if math.isnan(v):
                    return "nan"
                return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
            if callable(v) and hasattr(v, "__name__"):
                return v.__name__
            s = str(v)
            return s if len(s) <= 40 else s[:37] + "..."

        table = [[fmt(r.get(c, "")) for c in cols] for r in self.rows]
        widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h)
                  for i, h in enumerate(header)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths)),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in table]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"SearchResult({len(self.rows)} trials, best val_{self.scoring}="
                f"{self.best_score:.4g}, best_params={self.best_params})")


def _accepts(fn, name) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return name in sig.parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())


def _score_of(scoring, model, X_val, y_val, metrics):
    """(score, name, greater_is_better) of a trained model on the validation set."""
    if callable(scoring):
        return float(scoring(model, X_val, y_val)), getattr(scoring, "__name__", "score"), True
    if scoring == "auto":
        scoring = next((m for m in ("accuracy", "r2") if m in metrics), "loss")
    if scoring not in metrics:
        raise ValueError(f"scoring {scoring!r} is not among the evaluated metrics "
                         f"{sorted(metrics)}")
    return float(metrics[scoring]), scoring, scoring != "loss"


def _run_trial(build_fn, params, X_train, y_train, X_val, y_val, fit_params, scoring, seed,
               n_threads, keep_model, error_score, blas):
    t0 = time.perf_counter()
    # a worker process chose its BLAS by its own environment when it imported fastnn: use the
    # search's (a process where it cannot load keeps its own: the same results to rounding)
    blas_match(blas)
    with limit_threads(n_threads):
        try:
            build_kwargs = {k: v for k, v in params.items() if k not in FIT_PARAMS}
            fit_kwargs = dict(fit_params)
            fit_kwargs.update({k: v for k, v in params.items() if k in FIT_PARAMS})
            if "seed" not in build_kwargs and _accepts(build_fn, "seed"):
                build_kwargs["seed"] = seed
            model = build_fn(**build_kwargs)
            fit_kwargs.setdefault("verbose", 0)
            fit_kwargs.setdefault("seed", seed)
            history = training.fit(model, X_train, y_train, validation_data=(X_val, y_val),
                                   **fit_kwargs)
            metrics = training.evaluate(model, X_val, y_val)
            score, name, greater = _score_of(scoring, model, X_val, y_val, metrics)
            train_loss = history.history["loss"][-1] if history.history.get("loss") else \
                float("nan")
            row = {"params": params, **params, "score": score,
                   "val_loss": float(metrics.get("loss", float("nan"))),
                   "train_loss": float(train_loss), "epochs": len(history.epoch),
                   "fit_time": time.perf_counter() - t0, "_scoring": (name, greater)}
            return row, (model if keep_model else None)
        except Exception as e:  # a diverging configuration must not sink the whole search
            if isinstance(error_score, str) and error_score == "raise":
                raise
            row = {"params": params, **params, "score": float(error_score),
                   "val_loss": float("nan"), "train_loss": float("nan"), "epochs": 0,
                   "fit_time": time.perf_counter() - t0, "error": f"{type(e).__name__}: {e}"}
            return row, None


def _threads_per_trial(n_jobs_effective: int, n_threads) -> int:
    # ValueError for every bad value, as the rest of the search's arguments
    n_threads = check_n_threads(n_threads, type_error=ValueError)
    if n_threads is not None:
        return int(n_threads)
    return threads_per_worker(max(1, n_jobs_effective))


def _search(build_fn, configs, param_names, X_train, y_train, X_val, y_val, *, fit_params,
            scoring, n_jobs, n_threads, seed, verbose, keep_models, error_score):
    import joblib

    if not callable(build_fn):
        raise TypeError("build_fn must be a callable returning a new model from parameters")
    if not configs:
        raise ValueError("the search has no configurations to try")
    fit_params = dict(fit_params or {})
    for bad in ("validation_data", "validation_split"):
        if bad in fit_params:
            raise ValueError(f"fit_params may not set {bad}: trials are scored on "
                             f"(X_val, y_val)")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2 ** 31))
    n_eff = joblib.effective_n_jobs(n_jobs)
    threads = _threads_per_trial(min(n_eff, len(configs)), n_threads)
    if not (callable(scoring) or scoring in ("auto", "accuracy", "r2", "loss")):
        raise ValueError(f"scoring must be 'auto', 'accuracy', 'r2', 'loss' or a callable, "
                         f"got {scoring!r}")
    parallel = joblib.Parallel(n_jobs=n_jobs, verbose=verbose)
    blas = blas_library()
    out = parallel(
        joblib.delayed(_run_trial)(build_fn, cfg, X_train, y_train, X_val, y_val, fit_params,
                                   scoring, seed, threads, keep_models, error_score, blas)
        for cfg in configs)
    rows = [r for r, _ in out]
    models = [m for _, m in out]
    resolved = {r.pop("_scoring") for r in rows if "_scoring" in r}
    if len(resolved) > 1:
        raise ValueError(f"trials were scored differently: {sorted(resolved)}")
    if resolved:
        score_name, greater = resolved.pop()
    else:  # every trial failed
        score_name = getattr(scoring, "__name__", str(scoring))
        greater = scoring != "loss"

    def key(i):
        s = rows[i]["score"]
        bad = s is None or (isinstance(s, float) and math.isnan(s))
        return (bad, -s if (greater and not bad) else (s if not bad else 0.0), i)

    order = sorted(range(len(rows)), key=key)
    rows = [rows[i] for i in order]
    models = [models[i] for i in order] if keep_models else None
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
        r["seed"] = seed
    return SearchResult(rows, param_names, score_name, greater, models)


def grid_search(build_fn, param_grid, X_train, y_train, X_val, y_val, *, fit_params=None,
                scoring="auto", n_jobs=None, n_threads=None, seed=0, verbose=0,
                keep_models=False, error_score=float("nan")) -> SearchResult:
    """Try every configuration of a grid; rank them by validation score.

    Parameters
    ----------
    build_fn : callable
        ``build_fn(**model_params) -> model``: a new, untrained fastnn model for one
        configuration. It receives the trial's parameters except those named in
        :data:`FIT_PARAMS` (``epochs``, ``batch_size``, ``optimizer``, ``lr``, ``loss``, ...),
        which go to :func:`fastnn.training.fit`; it also receives ``seed`` when it accepts it.
    param_grid : dict of lists, or list of such dicts
        E.g. ``{"hidden": [64, 128], "lr": [1e-3, 3e-3], "dropout": [0.0, 0.2]}``.
    X_train, y_train : training data
    X_val, y_val : validation data the configurations are compared on
    fit_params : dict, optional
        Fixed keywords for :func:`fastnn.training.fit` (``epochs``, ``batch_size``,
        ``callbacks``...).
    scoring : "auto", "accuracy", "r2", "loss" or callable
        "auto": validation accuracy for classification, R^2 for regression. "loss" ranks by
        the lowest validation loss. A callable ``f(model, X_val, y_val) -> float``, higher
        is better.
    n_jobs : int or None
        Trials run in parallel through joblib (None: 1, or the active
        ``joblib.parallel_config``; -1: all cores).
    n_threads : int or None
        OpenMP/BLAS threads per trial; None: ``cores // n_jobs`` (at least 1).
    seed : int or None
        Passed to every trial's ``build_fn`` (when it takes ``seed``) and ``fit``: all
        configurations see the same initialization stream and batch order, so they differ
        only in their hyperparameters.
    keep_models : bool
        Keep the trained models (``result.models``, ``result.best_model``).
    error_score : float or "raise"
        Score recorded for a trial that fails (e.g. diverges); "raise" propagates the error.

    Returns
    -------
    SearchResult : rows sorted best first; ``print(result)`` shows the table.
    """
    grid = ParameterGrid(param_grid)
    configs = list(grid)
    names = list(dict.fromkeys(k for g in grid.grids for k in g))
    return _search(build_fn, configs, names, X_train, y_train, X_val, y_val,
                   fit_params=fit_params, scoring=scoring, n_jobs=n_jobs, n_threads=n_threads,
                   seed=seed, verbose=verbose, keep_models=keep_models,
                   error_score=error_score)


def random_search(build_fn, param_distributions, X_train, y_train, X_val, y_val, *,
                  n_iter=10, fit_params=None, scoring="auto", n_jobs=None, n_threads=None,
                  seed=0, verbose=0, keep_models=False,
                  error_score=float("nan")) -> SearchResult:
    """Try ``n_iter`` configurations sampled independently; rank them by validation score.

    ``param_distributions`` maps each hyperparameter to a list (uniform choice), a frozen
    ``scipy.stats`` distribution (anything with ``.rvs(random_state=)``, e.g.
    ``scipy.stats.loguniform(1e-4, 1e-1)`` for a learning rate), a callable ``f(rng)``, or a
    constant. ``seed`` fixes both the sampled configurations and the trials' seeds. The other
    parameters are those of :func:`grid_search`.

    References
    ----------
    Bergstra, J. and Bengio, Y. (2012). Random search for hyper-parameter optimization. JMLR 13,
    281-305.
    """
    configs = sample_parameters(param_distributions, n_iter, seed)
    return _search(build_fn, configs, list(param_distributions), X_train, y_train, X_val, y_val,
                   fit_params=fit_params, scoring=scoring, n_jobs=n_jobs, n_threads=n_threads,
                   seed=seed, verbose=verbose, keep_models=keep_models,
                   error_score=error_score)
