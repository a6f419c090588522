"""Threads inside a parallel search: one worker's share of the cores.

A search runs several trainings at once (joblib processes, Dask workers, Ray actors). Each
training would otherwise start as many OpenMP and BLAS threads as the machine has cores, so
``n_jobs`` trainings would run ``n_jobs x cores`` threads on ``cores`` cores: they preempt each
other, spin in barriers, and the whole search runs slower than one trial after the other. The
rule fastnn applies is the one joblib's own process backend uses:

    threads per worker = max(1, cores // n_workers)

and the limit is set *inside* the worker, around the training, with
:func:`threadpoolctl.threadpool_limits` (every OpenMP runtime and BLAS loaded in the worker:
fastnn's kernels, scipy's OpenBLAS, NumPy's). Setting it in the worker matters: a Dask worker
(or a thread of the joblib threading backend) does not inherit the limits of the process that
submitted the work.

* :func:`fastnn.search.grid_search` / :func:`~fastnn.search.random_search` do it for every
  trial (``n_threads=None``: ``cores // n_jobs`` with ``n_jobs`` the backend's effective worker
  count; an int fixes it).
* :class:`fastnn.MLPClassifier` / :class:`fastnn.MLPRegressor` do it around ``fit`` and
  ``predict`` when ``n_threads`` is an int. In a scikit-learn search (``GridSearchCV(...,
  n_jobs=k)``) the estimator cannot know ``k``; pass
  ``n_threads=fastnn.parallel.threads_per_worker(k)``. joblib's default process backend (loky)
  and Dask's worker processes (its nanny sets ``OMP_NUM_THREADS=1``) already limit workers
  started as processes; threads (Dask ``processes=False``, joblib ``backend="threading"``) are
  limited only by ``n_threads``.

The OpenMP limit is per calling thread (each Python thread has its own OpenMP thread count);
the BLAS limit is process-wide: with thread-based workers the trials share it, and the original
count comes back when the last of them ends.
"""
from __future__ import annotations

import contextlib
import numbers
import os
import threading

__all__ = ["available_cores", "limit_threads", "thread_info", "threads_per_worker"]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads_per_worker(n_workers=None, *, cores=None) -> int:
    """OpenMP/BLAS threads each of ``n_workers`` concurrent trainings should use.

    Parameters
    ----------
    n_workers : int or None
        Trainings running at the same time on this machine. None (or a joblib ``n_jobs`` such
        as -1) is resolved with :func:`joblib.effective_n_jobs` under the active
        ``joblib.parallel_config`` (a Dask backend answers with its total worker threads).
    cores : int or None
        Cores to share (default: :func:`available_cores`).

    Returns
    -------
    int : ``max(1, cores // n_workers)``.
    """
    if n_workers is None or (isinstance(n_workers, numbers.Integral) and n_workers < 0):
        import joblib

        n_workers = joblib.effective_n_jobs(n_workers)
    if isinstance(n_workers, bool) or not isinstance(n_workers, numbers.Integral) \
            or n_workers == 0:
        raise ValueError(f"n_workers must be a positive int, -1 or None, got {n_workers!r}")
    cores = available_cores() if cores is None else int(cores)
    return max(1, cores // int(n_workers))


_BLAS_LOCK = threading.Lock()
_BLAS_DEPTH = 0
_BLAS_OUTER = None


@contextlib.contextmanager
def _blas_limit(n_threads):
    """Process-wide BLAS limit shared by concurrent users (threads): the first to enter saves
    the original count, the last to leave restores it. (Nesting threadpoolctl's limits from
    several threads would restore in the wrong order and could leave BLAS limited.)"""
    global _BLAS_DEPTH, _BLAS_OUTER
    with _BLAS_LOCK:
        limiter = _controller("blas").limit(limits=n_threads)
        if _BLAS_DEPTH == 0:
            _BLAS_OUTER = limiter
        _BLAS_DEPTH += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_DEPTH -= 1
            if _BLAS_DEPTH == 0:
                _BLAS_OUTER.restore_original_limits()
                _BLAS_OUTER = None


@contextlib.contextmanager
def limit_threads(n_threads):
    """Limit every OpenMP runtime and BLAS of this process to ``n_threads`` while inside.

    ``None`` leaves the limits as they are. Uses threadpoolctl; the OpenMP limit is the calling thread's, the BLAS limit is process-wide and restored when the
    last concurrent user leaves. Yields ``n_threads``.

    >>> with limit_threads(1):            # doctest: +SKIP
    ...     model.fit(X, y)
    """
    if n_threads is None:
        yield None
        return
    if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral) \
            or n_threads <= 0:
        raise ValueError(f"n_threads must be None or a positive int, got {n_threads!r}")
    n = int(n_threads)
    openmp = _controller("openmp").limit(limits=n)
    try:
        with _blas_limit(n):
            yield n
    finally:
        openmp.restore_original_limits()


def _controller(user_api):
    # Only the libraries of ``user_api``: threadpoolctl's limiter restores every library it
    # controls on exit, which would undo another thread's BLAS limit.
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api=user_api)


def thread_info() -> dict:
    """The thread counts in force for the calling thread, now.

    Returns
    -------
    dict with ``openmp`` (what fastnn's ``n_threads=None`` resolves to:
    ``omp_get_max_threads()``), ``blas`` (the thread count of the BLAS behind fastnn's matrix
    products, None if unknown), ``pid`` and ``cores`` (:func:`available_cores`).
    """
    from fastnn import _threads

    return {"openmp": _threads.resolve_n_threads(None),
            "blas": _threads.blas_info().get("num_threads"),
            "pid": os.getpid(), "cores": available_cores()}
