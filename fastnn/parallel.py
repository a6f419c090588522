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
BLAS is kept by the registry of fastnn/_kernels/_blas.pyx (shared with the kernels); every other
BLAS of the process (scipy's OpenBLAS, an MKL...) by the same rule here, through threadpoolctl.
A forked child keeps only the requests of the thread that forked.
"""
from __future__ import annotations

import contextlib
import ctypes
import numbers
import os
import threading

__all__ = ["available_cores", "limit_threads", "thread_info", "threads_per_worker"]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    from fastnn import _threads

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
    """The BLAS limits requested by active :func:`limit_threads` blocks, per Python thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_thread: dict[int, list[int]] = {}
        self.base: dict[str, int] = {}   # other BLAS libraries: their count before the first

    def _others(self):
        # Every BLAS of the process but the one fastnn's registry keeps.
        from fastnn import _threads

        info = _threads.blas_info() if _threads._BLAS_INFO is None else _threads._BLAS_INFO
        own = info.get("filepath") if info.get("thread_control") else None
        return [c for c in _controller("blas").lib_controllers if c.filepath != own]

    def _apply(self):
        # (lock held) the other libraries: the smallest active request, or their original count.
        caps = [c for stack in self.by_thread.values() for c in stack]
        for lib in self._others():
            base = self.base.get(lib.filepath)
            if base is None:
                if not caps:
                    continue
                base = self.base[lib.filepath] = lib.num_threads
            target = min([base] + caps)
            if lib.num_threads != target:
                _set_blas_threads(lib, target)
        if not caps:
            self.base.clear()

    def enter(self, n):
        from fastnn._kernels import _blas

        with self.lock:
            self.by_thread.setdefault(threading.get_ident(), []).append(n)
            _blas.request(n)
            try:
                self._apply()
            except BaseException:   # no request may outlive a failed entry
                self._pop(n)
                raise

    def _pop(self, n):
        from fastnn._kernels import _blas

        me = threading.get_ident()
        stack = self.by_thread[me]
        stack.pop()
        if not stack:
            del self.by_thread[me]
        _blas.release(n)

    def exit(self, n):
        with self.lock:
            self._pop(n)
            self._apply()

    def active(self) -> int:
        """Active requests (all threads), for tests."""
        return sum(len(s) for s in self.by_thread.values())

    # fork: the child must not inherit a lock held by a thread that does not exist there, nor
    # the requests of such threads (they would never end).
    def _fork_prepare(self):
        from fastnn._kernels import _blas

        self.lock.acquire()
        _blas._fork_prepare()

    def _fork_parent(self):
        from fastnn._kernels import _blas

        _blas._fork_parent()
        self.lock.release()

    def _fork_child(self):
        from fastnn._kernels import _blas

        mine = self.by_thread.get(threading.get_ident(), [])
        self.by_thread = {threading.get_ident(): mine} if mine else {}
        _blas._fork_child(mine)
        self.lock = threading.Lock()
        if self.base:  # requests were active: re-derive the counts (else nothing to undo)
            try:
                self._apply()
            except Exception:  # threadpoolctl failing in the child: leave the counts as they are
                pass


def _set_blas_threads(lib, n):
    """Set a BLAS library's thread count from any thread. threadpoolctl ignores an OpenBLAS
    change from a thread other than the first one that changed it while that thread lives (the
    main thread, typically), which left a limit from a worker thread without effect; fastnn
    calls OpenBLAS's own setter (its registry already serializes the changes)."""
    if lib.internal_api == "openblas":
        from fastnn import _threads

        setter, _ = _threads._openblas_thread_fns(lib)
        if setter:
            ctypes.CFUNCTYPE(None, ctypes.c_int)(setter)(n)
            return
    lib.set_num_threads(n)


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
    from fastnn import _threads

    n = min(int(n_threads), _threads._CPUS)
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
    ``omp_get_max_threads()``, capped at the cores), ``blas`` (the thread count of the BLAS
    behind fastnn's matrix products, None if unknown), ``pid``, ``cores``
    (:func:`available_cores`) and ``serial_after_fork`` (True in a forked child where fastnn
    runs every kernel serially, see fastnn/_threads.py).
    """
    from fastnn import _threads

    return {"openmp": _threads.effective_n_threads(None),
            "blas": _threads.blas_info().get("num_threads"),
            "pid": os.getpid(), "cores": available_cores(),
            "serial_after_fork": _threads._SERIAL and _threads._OPENMP}
