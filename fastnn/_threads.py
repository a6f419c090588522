"""The thread model of fastnn: who owns the cores, and how ``n_threads`` is resolved.

One runtime owns the cores at any moment; OpenMP workers and BLAS workers are never left to
fight over them (on a 2-core machine a spinning OpenMP team next to a multi-threaded OpenBLAS
made a dense layer 20-300x slower than NumPy):

* Elementwise and row-wise kernels (activations, dropout, softmax, sparsemax, losses, optimizer
  updates) run OpenMP ``prange`` loops, and only above a measured work size; below it they run
  serially, because waking a team costs more than the work and one slow thread stalls the region.
* Matrix products go to BLAS (NumPy's bundled OpenBLAS through its CBLAS when present, else
  scipy.linalg.cython_blas: see fastnn/_kernels/_blas.pyx and ``use_blas``); fastnn/_kernels/dense.pyx picks one
  of three paths by the work ``batch * in * out`` (thresholds SPLIT_MIN_WORK / SPLIT_MAX_WORK
  there, chosen by measurement as its comment says):

  - small work (below 1e7 multiply-adds), or ``n_threads == 1``: one BLAS call pinned to 1
    thread, from the calling thread, then a serial epilogue (bias + activation): the whole call
    is serial;
  - mid-size work, a path off by default: the output is split into one block per OpenMP thread (rows or columns,
    whichever dimension is longer; column blocks on 16-float boundaries); BLAS is pinned to 1
    thread for the region with ``blas_set_num_threads`` (the previous count is restored after
    it) and each thread runs a single-threaded GEMM on its block, then the fused epilogue while
    the block is still in its cache. When fastnn cannot control the BLAS thread count
    (``blas_set_num_threads`` returns -1) this path is never taken;
  - large work: one BLAS call with BLAS's own threads (BLAS owns the cores), then the epilogue,
    in a ``prange`` only above EPILOGUE_PAR_MIN elements.

  On a quiet machine one BLAS call with OpenBLAS's own threads beats the split (2 cores,
  784-256-256-10 training at batch 128: 55-61k samples/s against 38k), so from 1e7
  multiply-adds BLAS owns the cores. The split path is for machines where other processes
  compete for the cores: there OpenBLAS's own threads (pthreads build, workers that spin-yield
  after each call) collapsed (median 80-100 ms for a 16x784x256 product whose minimum is
  0.3 ms, NumPy alike), while the passive OpenMP split kept its median within 2x of its
  minimum; ``fastnn._kernels.dense.set_thresholds(split_min_work=2e6, split_max_work=4e9)``
  turns it on.

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
  (or FASTNN_OMP_SPIN=1). The price is a wake-up of the sleeping worker per parallel region:
  microseconds on bare metal, but 100-300 us on the 2-vCPU KVM build machine, where an idle
  vCPU halts (a split 1x784x256 layer: 120 us against 15 us serial); the parallel thresholds
  keep regions that short serial. A bounded spin (GOMP_SPINCOUNT 3,000-20,000) kept the worker
  awake within a training step but did not make 784-256-256-10 steps faster there
  (benchmarks/README.md, Peers). If another library loaded the same libgomp first, its settings
  stay in force.

``n_threads=None`` means "what OMP_NUM_THREADS / threadpoolctl allow now" (``omp_get_max_threads``
at call time); ``n_threads=1`` is exactly sequential; 0 or a negative count is an error.
"""
from __future__ import annotations

import ctypes
import numbers
import os

from fastnn._kernels import _blas, _config

__all__ = ["resolve_n_threads", "blas_info", "use_blas"]

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


def _find_numpy_blas():
    """Locate NumPy's bundled OpenBLAS (ILP64, numpy.libs or numpy/.dylibs), if any."""
    import numpy
    from threadpoolctl import ThreadpoolController

    root = os.path.normcase(os.path.dirname(os.path.dirname(numpy.__file__)))
    for c in ThreadpoolController().lib_controllers:
        path = os.path.normcase(c.filepath or "")
        if (c.user_api == "blas" and c.internal_api == "openblas" and path.startswith(root)
                and (os.sep + "numpy.libs" + os.sep in path
                     or os.sep + "numpy" + os.sep + ".dylibs" + os.sep in path)):
            return c
    return None


def _address(lib, *names):
    """Address of the first exported symbol among ``names`` (0 if none)."""
    for name in names:
        try:
            return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0
        except AttributeError:
            continue
    return 0


def _openblas_thread_fns(c):
    """(set, get) addresses of an OpenBLAS's thread control, whatever its symbol prefix/suffix."""
    lib = c.dynlib
    for prefix in ("scipy_", ""):
        for suffix in ("", "64_", "_64"):
            s = _address(lib, f"{prefix}openblas_set_num_threads{suffix}")
            g = _address(lib, f"{prefix}openblas_get_num_threads{suffix}")
            if s and g:
                return s, g
    return 0, 0


def _install_cblas64(c) -> bool:
    """Route fastnn's products to NumPy's ILP64 OpenBLAS ``c``; False if its symbols are absent."""
    lib = c.dynlib
    fns = [_address(lib, f"scipy_cblas_{f}64_", f"cblas_{f}64_", f"cblas_{f}_64")
           for f in ("sgemm", "dgemm", "sgemv", "dgemv")]
    setter, getter = _openblas_thread_fns(c)
    if not all(fns) or not (setter and getter):
        return False
    _blas._install_cblas64(*fns)
    _blas._install_thread_control(setter, getter)
    return True


def use_blas(name: str = "auto") -> dict:
    """Choose the BLAS behind fastnn's matrix products; returns :func:`blas_info`.

    Parameters
    ----------
    name : {"auto", "numpy", "scipy"}
        "numpy": NumPy's bundled OpenBLAS through its ILP64 CBLAS (faster small-batch products in
        current wheels; unavailable where NumPy links another BLAS, e.g. Accelerate on macOS).
        "scipy": ``scipy.linalg.cython_blas``, always available. "auto" (the default, or the
        FASTNN_BLAS environment variable at import): "numpy" when available, else "scipy".
        Not thread-safe: call it before using fastnn from several threads.
    """
    global _BLAS_INFO
    if name not in ("auto", "numpy", "scipy"):
        raise ValueError(f"Invalid BLAS choice: {name!r} (expected 'auto', 'numpy' or 'scipy')")
    info = {"blas": None, "internal_api": None, "filepath": None, "num_threads": None,
            "thread_control": False, "backend": "scipy.linalg.cython_blas"}
    _blas._install_cblas64(0, 0, 0, 0)
    _blas._install_thread_control(0, 0)
    c = None
    if name in ("auto", "numpy"):
        try:
            c = _find_numpy_blas()
        except Exception:  # threadpoolctl missing or broken
            c = None
        if c is not None and not _install_cblas64(c):
            c = None
        if c is None and name == "numpy":
            raise RuntimeError("NumPy's bundled OpenBLAS (ILP64 CBLAS) was not found; "
                               "use fastnn._threads.use_blas('scipy')")
        if c is not None:
            info["backend"] = "numpy-openblas64 (cblas)"
            info["thread_control"] = True
    if c is None:
        try:
            c = _find_scipy_blas()
        except Exception:
            c = None
        if c is not None and c.internal_api == "openblas":
            setter, getter = _openblas_thread_fns(c)
            if setter and getter:
                _blas._install_thread_control(setter, getter)
                info["thread_control"] = True
    if c is not None:
        info.update(blas=c.internal_api, internal_api=c.internal_api, filepath=c.filepath,
                    num_threads=c.num_threads, version=getattr(c, "version", None),
                    architecture=getattr(c, "architecture", None),
                    threading_layer=getattr(c, "threading_layer", None))
    _BLAS_INFO = info
    return dict(info)


def blas_info() -> dict:
    """Facts about the BLAS behind fastnn's matrix products (library, file, threads)."""
    if _BLAS_INFO is None:
        use_blas(os.environ.get("FASTNN_BLAS", "auto") or "auto")
    info = dict(_BLAS_INFO)
    try:
        from threadpoolctl import threadpool_info
        for entry in threadpool_info():
            if entry.get("filepath") == info.get("filepath"):
                info["num_threads"] = entry.get("num_threads")
    except Exception:
        pass
    return info


use_blas(os.environ.get("FASTNN_BLAS", "auto") or "auto")
