"""The thread model of fastnn: who owns the cores, and how ``n_threads`` is resolved.

One runtime owns the cores at any moment; OpenMP workers and BLAS workers are never left to
fight over them (on a 2-core machine a spinning OpenMP team next to a multi-threaded OpenBLAS
made a dense layer 20-300x slower than NumPy):

* Elementwise and row-wise kernels (activations, dropout, softmax, sparsemax, losses, optimizer
  updates) run OpenMP ``prange`` loops, and only above a measured work size; below it they run
  serially, because waking a team costs more than the work and one slow thread stalls the region.
* Matrix products go to BLAS (scipy.linalg.cython_blas); fastnn/_kernels/dense.pyx picks one
  of three paths by the work ``batch * in * out`` (thresholds SPLIT_MIN_WORK / SPLIT_MAX_WORK
  there, chosen by measurement as its comment says):

  - small work, or ``n_threads == 1``: one BLAS call pinned to 1 thread, from the calling
    thread, then a serial epilogue (bias + activation): the whole call is serial;
  - mid-size work: the output is split into one block per OpenMP thread (rows or columns,
    whichever dimension is longer; column blocks on 16-float boundaries); BLAS is pinned to 1
    thread for the region with ``blas_set_num_threads`` (the previous count is restored after
    it) and each thread runs a single-threaded GEMM on its block, then the fused epilogue while
    the block is still in its cache. When fastnn cannot control the BLAS thread count
    (``blas_set_num_threads`` returns -1) this path is never taken;
  - large work: one BLAS call with BLAS's own threads (BLAS owns the cores), then the epilogue,
    in a ``prange`` only above EPILOGUE_PAR_MIN elements.

  The split path covers most sizes on purpose: OpenBLAS's own threads (pthreads build, workers
  that spin-yield after each call) collapsed on this shared 2-core machine when other processes
  were busy (median 80-100 ms for a 16x784x256 product whose minimum is 0.3 ms, NumPy alike),
  while the passive OpenMP split kept its median within 2x of its minimum.

* ``n_threads`` bounds every thread fastnn uses, BLAS included: around a BLAS call the BLAS
  thread count is capped at ``n_threads`` (and restored), so ``n_threads=1`` pins BLAS to one
  thread and the whole call is exactly serial. A larger ``n_threads`` never raises BLAS above
  the count the user set (threadpoolctl / OPENBLAS_NUM_THREADS). The pinning is process-wide
  while it lasts: another Python thread calling scipy's BLAS at that moment sees it too.

* Waiting: libgomp's default makes idle OpenMP workers spin (GOMP_SPINCOUNT=300000) between
  regions, and OpenBLAS's pthreads workers spin-yield after each call. On this 2-core machine a
  spinning worker steals the core that the other thread (or another process) needs: a 2-thread
  relu on 1e6 floats went from 0.2 ms to 13-21 ms median with two other busy processes, and
  0.23 ms with ``OMP_WAIT_POLICY=passive`` or ``GOMP_SPINCOUNT=0`` under the same load. So
  fastnn/_kernels/__init__.py sets ``GOMP_SPINCOUNT=0`` and ``KMP_BLOCKTIME=0`` before the
  OpenMP runtime loads, unless the user set OMP_WAIT_POLICY, GOMP_SPINCOUNT or KMP_BLOCKTIME
  (or FASTNN_OMP_SPIN=1). The price is a futex wake-up (microseconds) per parallel region, which
  the parallel thresholds cover. If another library loaded the same libgomp first, its settings
  stay in force.

``n_threads=None`` means "what OMP_NUM_THREADS / threadpoolctl allow now" (``omp_get_max_threads``
at call time); ``n_threads=1`` is exactly sequential; 0 or a negative count is an error.
"""
from __future__ import annotations

import ctypes
import numbers
import os

from fastnn._kernels import _blas, _config

__all__ = ["resolve_n_threads", "blas_info"]

_BLAS_INFO: dict | None = None
_OPENMP = _config.openmp_enabled()
#: The largest n_threads accepted. An absurd count is an error, not an attempt: libgomp asked
#: for a team of 100,000 threads (above RLIMIT_NPROC) crashed the process with a segfault.
MAX_THREADS = max(1024, 4 * (os.cpu_count() or 1))


def resolve_n_threads(n_threads: int | None) -> int:
    """Return the number of threads a kernel call may use (>= 1).

    Parameters
    ----------
    n_threads : int or None
        None: ``omp_get_max_threads()`` at call time. A positive int: that many threads
        (a build without OpenMP runs 1 whatever is asked).
    """
    if n_threads is None:
        return max(1, _config.omp_max_threads())
    if type(n_threads) is int and 0 < n_threads <= MAX_THREADS:  # fast path: every kernel call
        return n_threads if _OPENMP else 1
    if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral):
        raise TypeError(f"n_threads must be None or a positive int, got {n_threads!r}")
    if n_threads <= 0:
        raise ValueError(f"n_threads must be None or a positive int, got {n_threads}")
    if n_threads > MAX_THREADS:
        raise ValueError(f"n_threads={n_threads} is more than fastnn allows ({MAX_THREADS}, "
                         f"fastnn._threads.MAX_THREADS); this machine has {os.cpu_count()} CPUs")
    return int(n_threads) if _config.openmp_enabled() else 1


def _find_scipy_blas():
    """Locate the BLAS that scipy.linalg.cython_blas uses, through threadpoolctl."""
    import scipy.linalg.cython_blas  # noqa: F401  (make sure scipy's BLAS is loaded)
    from threadpoolctl import ThreadpoolController

    import os

    import scipy

    controllers = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    # scipy wheels vendor their OpenBLAS in site-packages/scipy.libs; numpy's lives in numpy.libs
    # (its file name also says "scipy_openblas", so match the folder, not the name).
    scipy_libs = os.path.normcase(os.path.dirname(os.path.dirname(scipy.__file__)))
    for c in controllers:
        path = os.path.normcase(c.filepath or "")
        if (os.sep + "scipy.libs" + os.sep in path or os.sep + ".dylibs" + os.sep in path
                and os.sep + "scipy" + os.sep in path) and path.startswith(scipy_libs):
            return c
    non_numpy = [c for c in controllers if "numpy" not in os.path.normcase(c.filepath or "")]
    if len(non_numpy) == 1:
        return non_numpy[0]
    # A scipy built against a system BLAS: only safe to pick when it is the only BLAS loaded.
    return controllers[0] if len(controllers) == 1 else None


def _install_blas_thread_control():
    global _BLAS_INFO
    info = {"blas": None, "internal_api": None, "filepath": None, "num_threads": None,
            "thread_control": False}
    try:
        c = _find_scipy_blas()
    except Exception:  # threadpoolctl missing or broken: run without per-call pinning
        c = None
    if c is not None:
        info.update(blas=c.internal_api, internal_api=c.internal_api, filepath=c.filepath,
                    num_threads=c.num_threads, version=getattr(c, "version", None),
                    architecture=getattr(c, "architecture", None),
                    threading_layer=getattr(c, "threading_layer", None))
        if c.internal_api == "openblas":
            lib = c.dynlib
            prefix = ""
            for cand in ("scipy_openblas_", "scipy_", ""):
                if hasattr(lib, cand + "openblas_set_num_threads") or hasattr(
                        lib, cand + "openblas_set_num_threads64_"):
                    prefix = cand
                    break
            setter = getter = None
            for suffix in ("", "64_"):
                try:
                    setter = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}")
                    getter = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
                    break
                except AttributeError:
                    continue
            if setter is not None and getter is not None:
                s = ctypes.cast(setter, ctypes.c_void_p).value
                g = ctypes.cast(getter, ctypes.c_void_p).value
                if s and g:
                    _blas._install_thread_control(s, g)
                    info["thread_control"] = True
    _BLAS_INFO = info


def blas_info() -> dict:
    """Facts about the BLAS behind fastnn's matrix products (library, file, threads)."""
    if _BLAS_INFO is None:
        _install_blas_thread_control()
    info = dict(_BLAS_INFO)
    try:
        from threadpoolctl import threadpool_info
        for entry in threadpool_info():
            if entry.get("filepath") == info.get("filepath"):
                info["num_threads"] = entry.get("num_threads")
    except Exception:
        pass
    return info


_install_blas_thread_control()
