"""The thread model of fastnn: who owns the cores, and how ``n_threads`` is resolved.

One runtime owns the cores at any moment; OpenMP workers and BLAS workers are never left to
fight over them (a spinning OpenMP team next to a multi-threaded BLAS on the same cores runs
far slower than either alone):

* Elementwise and row-wise kernels (activations, dropout, softmax, sparsemax, losses, optimizer
  updates) run OpenMP ``prange`` loops, and only above a measured work size, their parallel
  threshold (``fastnn.functional.runtime.parallel_thresholds()``); below it they run serially,
  because waking a team costs more than the work and one slow thread stalls the region.
* Matrix products go to BLAS (NumPy's bundled OpenBLAS through its CBLAS when present, else
  scipy.linalg.cython_blas: fastnn/_kernels/_blas.pyx, found by fastnn/_kernels/_blas_loader.py,
  chosen with ``use_blas``); fastnn/_kernels/dense.pyx picks one of three paths by the work
  ``batch * in * out`` (its thresholds ``split_min_work`` / ``split_max_work``, set by the rule
  its comment states):

  - small work (below ``split_min_work``), or ``n_threads == 1``: one BLAS call pinned to 1
    thread, from the calling thread, then a serial epilogue (bias + activation): the whole call
    is serial;
  - mid-size work, a path off by default (both thresholds are equal): the output is split into
    one block per OpenMP thread (rows or columns, whichever dimension is longer; column blocks
    on 16-float boundaries); BLAS is pinned to 1 thread for the region and each thread runs a
    single-threaded GEMM on its block, then the fused epilogue while the block is still in its
    cache. When fastnn cannot control the BLAS thread count this path is never taken;
  - large work: one BLAS call with BLAS's own threads (BLAS owns the cores), then the epilogue,
    in a ``prange`` only above ``epilogue_min_elements``.

  On a quiet machine one BLAS call with BLAS's own threads beats the split, so from
  ``split_min_work`` BLAS owns the cores. The split path is for machines where other processes
  compete for the cores: there OpenBLAS's own threads (pthreads build, workers that spin-yield
  after each call) collapsed while the OpenMP split kept its median near its minimum;
  ``runtime.set_parallel_threshold("dense", "split_min_work", 2e6)`` and
  ``("dense", "split_max_work", 4e9)`` turn it on (benchmarks/README.md, "Parallel thresholds").

* ``n_threads`` bounds every thread fastnn uses, BLAS included: around a BLAS call the BLAS
  thread count is capped at ``n_threads`` (and restored), so ``n_threads=1`` pins BLAS to one
  thread and the whole call is exactly serial. A larger ``n_threads`` never raises BLAS above
  the count the user set (threadpoolctl / OPENBLAS_NUM_THREADS). The pinning is process-wide
  while it lasts: another Python thread calling that BLAS at that moment sees it too. Caps of
  concurrent calls (and ``fastnn.parallel.limit_threads`` blocks) are requests to one registry
  (fastnn/_kernels/_blas.pyx): the smallest is in force, and the count from before the first
  comes back when the last ends, in any order (fastnn/parallel.py).

* Waiting: how idle OpenMP workers wait between regions is a setting of the OpenMP runtime,
  shared by every library of the process that uses it (PyTorch included), and fastnn leaves it
  to the user: importing fastnn sets no environment variable and changes no runtime setting.
  libgomp's default lets an idle worker spin a while before it sleeps; a spinning worker steals
  the core another thread or process needs on a shared machine, a sleeping one costs a wake-up
  per region. The parallel thresholds keep short regions serial under either policy; on a
  machine shared with other busy processes, set ``OMP_WAIT_POLICY=passive`` (or
  ``GOMP_SPINCOUNT=0``) before starting Python. The measured effect on training, both ways, is
  in benchmarks/README.md, "Parallel thresholds".

``n_threads=None`` means "what OMP_NUM_THREADS / threadpoolctl allow now" (``omp_get_max_threads``
at call time); ``n_threads=1`` is exactly sequential; 0 or a negative count is an error.

* Ceiling: a kernel never gets more threads than the CPUs the process may run on
  (``os.sched_getaffinity``, else ``os.cpu_count``; re-read in a forked child). More OpenMP
  threads than CPUs never speed up a compute loop, and each costs a stack: ``n_threads=1024``
  under an address-space limit made libgomp abort the process ("Thread creation failed"). A
  count above MAX_THREADS is a ValueError (a typo, not a request). Tests that need more threads
  than this machine has CPUs (odd block splits) may raise ``fastnn._threads._CPUS``.

* Fork: GNU libgomp is not fork-safe. Its worker threads do not exist in a child created by
  ``fork()`` (multiprocessing's "fork" start method, joblib's multiprocessing backend, gunicorn,
  Dask's forked workers), but the child's libgomp still counts on them: its first parallel region
  with 2+ threads waits for them for ever. libgomp cannot re-create its team, so fastnn makes
  such a child serial: when the process (or an ancestor before its fork) has handed a kernel a
  count of 2+ threads, every kernel call in the forked child gets n_threads=1 (explicit counts
  included; ``fastnn.parallel.thread_info()["serial_after_fork"]`` says so). A child of a
  process that never ran fastnn with 2+ threads (a server that loads a model, then forks its
  workers) keeps its threads. BLAS stays parallel in the child: OpenBLAS (pthreads) re-creates
  its own workers after a fork (tests/test_fork.py checks a large product there); but a fork
  while another thread is inside a multi-threaded OpenBLAS call hangs in OpenBLAS's own fork
  handler (NumPy alone, RELIABILITY.md), which fastnn cannot intercept. If another
  library drives the same libgomp with 2+ threads before a fork, fastnn cannot see it: set
  ``FASTNN_FORK_SERIAL=1`` in that process (or call ``fastnn._threads.serial_after_fork()``).
  ``spawn`` and ``forkserver`` children start fresh and are not affected.
"""
from __future__ import annotations

import functools
import os
import threading

from fastnn._validation import MAX_THREADS, check_n_threads
# The kernels' runtime state, read where it is defined: fastnn.functional resolves its thread
# counts with this module, so reading it through fastnn.functional would be an import circle.
from fastnn._kernels import _runtime

#: The BLAS behind fastnn's matrix products (fastnn/_kernels/_blas_loader.py).
use_blas = _runtime.use_blas
blas_info = _runtime.blas_info
blas_library = _runtime.blas_library
blas_match = _runtime.blas_match

__all__ = ["resolve_n_threads", "effective_n_threads", "check_n_threads", "blas_info", "use_blas",
           "exclusive_use", "check_not_fitting"]

_OPENMP = _runtime.openmp_enabled()
_omp_max_threads = _runtime.omp_max_threads


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


#: The most threads a kernel call gets: the CPUs this process may run on.
_CPUS = _cpus()
#: True: every kernel call runs serially (a build without OpenMP, or a forked child of a process
#: that used OpenMP teams; see the module notes).
_SERIAL = not _OPENMP
#: True once a kernel was handed 2+ threads in this process (or in an ancestor before its fork):
#: libgomp may then hold a team of workers that a forked child would not have.
_TEAM_USED = os.environ.get("FASTNN_FORK_SERIAL", "") not in ("", "0")


def effective_n_threads(n_threads: int | None) -> int:
    """The number of threads a kernel call with ``n_threads`` would use now (>= 1).

    Parameters
    ----------
    n_threads : int or None
        None: ``omp_get_max_threads()`` at call time. A positive int: that many threads.
        Either is capped at the CPUs the process may run on, and is 1 in a build without OpenMP
        and in a forked child of a process that used OpenMP teams (see the module notes).
    """
    if n_threads is None:
        n = _omp_max_threads()
    elif type(n_threads) is int and 0 < n_threads <= MAX_THREADS:  # fast path: every kernel call
        n = n_threads
    else:
        check_n_threads(n_threads)
        n = int(n_threads)
    if n <= 1 or _SERIAL:
        return 1
    return n if n <= _CPUS else _CPUS


def resolve_n_threads(n_threads: int | None) -> int:
    """:func:`effective_n_threads` for a kernel call about to run: call it for each call, not
    once ahead (validation alone: :func:`check_n_threads`). Records a count of 2+ (a forked
    child then runs serially)."""
    global _TEAM_USED
    n = effective_n_threads(n_threads)
    if n > 1:
        _TEAM_USED = True
    return n


def serial_after_fork() -> None:
    """Declare that this process's OpenMP runtime has (or may have) a team of workers, so that a
    forked child runs fastnn serially (see the module notes). fastnn calls it for itself."""
    global _TEAM_USED
    _TEAM_USED = True


def _after_fork_in_child():
    global _SERIAL, _CPUS
    _CPUS = _cpus()
    if _TEAM_USED:
        _SERIAL = True


os.register_at_fork(after_in_child=_after_fork_in_child)


# --- one network, several Python threads -------------------------------------------------------
# A network computes into work buffers it owns and switches its modules between training and
# evaluation mode, so two threads must not run ``fit`` on it at once, nor ``fit`` next to a
# ``predict``: the other thread's batch silently replaced the buffers (a shape error at best).
# The rule: one ``fit`` at a time per network, and no ``predict``/``evaluate`` from another
# thread while it runs; the second call raises a RuntimeError at once, whichever it is (waiting
# could last a whole training, or deadlock a callback that waits for a thread using the model).
# Concurrent ``predict`` calls stay allowed (Sequential.predict serializes them on its lock), and
# a thread may nest calls (``fit`` evaluates its validation set, a callback predicts).
# Mechanism: ``fit`` registers the network in _FITTING and holds its predict lock (taken without
# waiting: held means a predict is running); ``predict`` only reads _FITTING (a dict lookup: a
# one-row predict costs microseconds) and then waits for its lock as before. A predict that
# checks just before a fit registers waits for that fit to end: serialized, never mixed.
_USE_LOCK = threading.Lock()
_FITTING: dict[int, list] = {}   # id(network) -> [thread running its fit, nesting depth]


def _in_use(what: str, other: str) -> RuntimeError:
    return RuntimeError(
        f"{what}: this network is in use by another thread (a {other} is running). One thread at "
        f"a time may train a network, and no other thread may predict with it meanwhile: train "
        f"or predict with a copy (model.copy()), or wait for the other call to end")


def check_not_fitting(model, what: str) -> None:
    """Raise RuntimeError if another thread is running ``fit`` on ``model`` (see above)."""
    rec = _FITTING.get(id(model))
    if rec is not None and rec[0] != threading.get_ident():
        raise _in_use(what, "fit")


def drop_weight_copies(model) -> None:
    """A fit changed the weights of ``model`` in place (its engine does not count the updates
    in the parameters): its inference plans that copy them (bfloat16,
    fastnn/functional/inference.py) copy them again on their next use."""
    state = getattr(model, "__dict__", {}).get("_inference_plan_")
    if state is not None:
        state.drop_copies()


def exclusive_use(what: str):
    """Decorator of a function whose first argument is a network it trains (see above)."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(model, *args, **kwargs):
            me, key = threading.get_ident(), id(model)
            lock_of = getattr(model, "_predict_lock", None)
            lock = lock_of() if callable(lock_of) else None
            with _USE_LOCK:
                rec = _FITTING.get(key)
                if rec is not None and rec[0] != me:
                    raise _in_use(what, "fit")
                if lock is not None and not lock.acquire(blocking=False):
                    raise _in_use(what, "predict")
                if rec is None:
                    _FITTING[key] = [me, 1]
                else:
                    rec[1] += 1
            try:
                return fn(model, *args, **kwargs)
            finally:
                drop_weight_copies(model)
                with _USE_LOCK:
                    rec = _FITTING.get(key)
                    if rec is not None:
                        rec[1] -= 1
                        if rec[1] <= 0:
                            del _FITTING[key]
                if lock is not None:
                    lock.release()
        return wrapper
    return decorate


def _use_fork_prepare():
    _USE_LOCK.acquire()


def _use_fork_parent():
    _USE_LOCK.release()


def _use_fork_child():
    # Only the forking thread exists in the child: the other threads' fits ended with them
    # (fastnn.model re-creates the predict locks they held).
    global _USE_LOCK
    me = threading.get_ident()
    for key, rec in list(_FITTING.items()):
        if rec[0] != me:
            del _FITTING[key]
    _USE_LOCK = threading.Lock()


os.register_at_fork(before=_use_fork_prepare, after_in_parent=_use_fork_parent,
                    after_in_child=_use_fork_child)
