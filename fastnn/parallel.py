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

The OpenMP limit is per calling thread (each Python thread has its own OpenMP thread count)
and nests like a stack within the thread. The BLAS thread count is process-wide, a resource
shared by every active request: :func:`limit_threads` blocks in any thread and fastnn's dense
kernels (each caps BLAS at its ``n_threads`` around its products). While requests overlap, the
count in force is the smallest one requested, never above the count found when the first of them
began (the user's setting); when the last one ends, in whatever order they end (exceptions
included), that original count comes back. The smallest wins because ``n_threads`` bounds every
thread a call uses: a BLAS call from the thread that asked for 1 must not run on 2. fastnn's own
BLAS is kept by the one registry of fastnn/_kernels/_blas.pyx (shared with the kernels, reached
through fastnn.functional.runtime); every other BLAS of the process (scipy's OpenBLAS, an MKL...)
follows the same rule here, through threadpoolctl.
A forked child keeps only the requests of the thread that forked.
"""
from __future__ import annotations

import contextlib
import numbers
import os
import threading

from fastnn import _threads
from fastnn.functional import runtime as _runtime

__all__ = ["available_cores", "limit_threads", "thread_info", "threads_per_worker"]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return _threads._cpus()


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


class _BlasRequests:
    """The other BLAS libraries' side of :func:`limit_threads` blocks. The requests themselves
    (per thread, fork-aware) live in the one registry of fastnn/_kernels/_blas.pyx, reached
    through fastnn.functional.runtime; here only the counts the other libraries had before the
    first request, and a lock that keeps their changes in order."""

    def __init__(self):
        self.lock = threading.Lock()
        self.base: dict[str, int] = {}   # other BLAS libraries: their count before the first

    def _others(self):
        # Every BLAS of the process but the one fastnn's registry keeps.
        info = _runtime.blas_current()
        own = info.get("filepath") if info.get("thread_control") else None
        return [c for c in _controller("blas").lib_controllers if c.filepath != own]

    def _apply(self):
        # (lock held) the other libraries: the smallest active request, or their original count.
        caps = _runtime.blas_held()
        for lib in self._others():
            base = self.base.get(lib.filepath)
            if base is None:
                if not caps:
                    continue
                base = self.base[lib.filepath] = lib.num_threads
            target = min([base] + caps)
            if lib.num_threads != target:
                _runtime.set_library_threads(lib, target)
        if not caps:
            self.base.clear()

    def enter(self, n):
        with self.lock:
            _runtime.blas_request(n)
            try:
                self._apply()
            except BaseException:   # no request may outlive a failed entry
                _runtime.blas_release(n)
                raise

    def exit(self, n):
        with self.lock:
            _runtime.blas_release(n)
            self._apply()

    def active(self) -> int:
        """Active requests (all threads), for tests."""
        return len(_runtime.blas_held())

    # fork: the child must not inherit a lock held by a thread that does not exist there. The
    # registry keeps the forking thread's requests by itself (its fork hooks, registered when
    # fastnn._kernels._blas was imported, run inside these).
    def _fork_prepare(self):
        self.lock.acquire()

    def _fork_parent(self):
        self.lock.release()

    def _fork_child(self):
        self.lock = threading.Lock()
        if self.base:  # requests were active: re-derive the counts (else nothing to undo)
            try:
                self._apply()
            except Exception:  # threadpoolctl failing in the child: leave the counts as they are
                pass


_BLAS_REQUESTS = _BlasRequests()
os.register_at_fork(before=_BLAS_REQUESTS._fork_prepare,
                    after_in_parent=_BLAS_REQUESTS._fork_parent,
                    after_in_child=_BLAS_REQUESTS._fork_child)


@contextlib.contextmanager
def _blas_limit(n_threads):
    """A BLAS limit of ``n_threads`` for the block, shared with concurrent requests (module
    notes)."""
    _BLAS_REQUESTS.enter(n_threads)
    try:
        yield
    finally:
        _BLAS_REQUESTS.exit(n_threads)


@contextlib.contextmanager
def limit_threads(n_threads):
    """Limit every OpenMP runtime and BLAS of this process to ``n_threads`` while inside.

    ``None`` leaves the limits as they are. The OpenMP limit is the calling thread's
    (threadpoolctl); the BLAS limit is process-wide, shared with every other active request
    (the smallest is in force) and the original count comes back when the last one ends (see
    the module notes). Blocks nest. Yields ``n_threads``.

    >>> with limit_threads(1):            # doctest: +SKIP
    ...     model.fit(X, y)
    """
    if n_threads is None:
        yield None
        return
    if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral) \
            or n_threads <= 0:
        raise ValueError(f"n_threads must be None or a positive int, got {n_threads!r}")
    n = min(int(n_threads), _threads._CPUS)
    openmp = _controller("openmp").limit(limits=n)
    try:
        with _blas_limit(n):
            yield n
    finally:
        openmp.restore_original_limits()


# threadpoolctl's scan of the loaded libraries takes about a millisecond; its result is kept
# until the dynamic loader reports a library loaded or unloaded (every call where it does not
# count them).
_CONTROLLERS: dict = {}
_CONTROLLERS_LOCK = threading.Lock()


def _controller(user_api):
    # Only the libraries of ``user_api``: threadpoolctl's limiter restores every library it
    # controls on exit, which would undo another thread's BLAS limit.
    generation = _runtime.loaded_objects_generation()
    with _CONTROLLERS_LOCK:
        kept = _CONTROLLERS.get(user_api)
    if generation is not None and kept is not None and kept[0] == generation:
        return kept[1]
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController().select(user_api=user_api)
    if generation is not None:
        with _CONTROLLERS_LOCK:
            _CONTROLLERS[user_api] = (generation, controller)
    return controller


def thread_info() -> dict:
    """The thread counts in force for the calling thread, now.

    Returns
    -------
    dict with ``openmp`` (what fastnn's ``n_threads=None`` resolves to:
    ``omp_get_max_threads()``, capped at the cores), ``blas`` (the thread count of the BLAS
    behind fastnn's matrix products, None if unknown), ``pid``, ``cores``
    (:func:`available_cores`) and ``serial_after_fork`` (True in a forked child where fastnn
    runs every kernel serially, see fastnn/_threads.py).
    """
    return {"openmp": _threads.effective_n_threads(None),
            "blas": _threads.blas_info().get("num_threads"),
            "pid": os.getpid(), "cores": available_cores(),
            "serial_after_fork": _threads._SERIAL and _threads._OPENMP}
