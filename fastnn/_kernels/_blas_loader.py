"""Which BLAS fastnn's matrix products call, found at run time (fastnn/_kernels/_blas.pyx).

The compiled wrapper calls whatever this module installs there: Intel's oneMKL from the ``mkl``
package (``use_blas("mkl")``) in its sequential layer - no second OpenMP runtime and no BLAS
threads; fastnn's kernels split large products over their own threads; NumPy's bundled OpenBLAS
through its ILP64 CBLAS (``use_blas("numpy")``); or the BLAS behind ``scipy.linalg.cython_blas``
(``use_blas("scipy")``, always available). For the OpenBLAS ones, also that library's own
thread-count functions (``openblas_set_num_threads``), so that the kernels cap the BLAS threads
without a Python call. "auto", the default, takes oneMKL on an Intel CPU when the ``mkl``
package is installed (faster there: benchmarks/README.md, "oneMKL"), else NumPy's OpenBLAS, else
scipy's. The libraries are located through threadpoolctl and their symbols read with ctypes,
once at import (``FASTNN_BLAS`` chooses; "auto" by default) and again on each :func:`use_blas`.
Nothing outside fastnn's own module state changes: no library's thread count, no environment
variable.

Private: fastnn's other modules reach it through fastnn._kernels._runtime.
"""
from __future__ import annotations

import ctypes
import os
import threading

from fastnn._kernels import _blas

_BLAS_INFO: dict | None = None


def _find_scipy_blas():
    """Locate the BLAS that scipy.linalg.cython_blas uses, through threadpoolctl."""
    import scipy
    import scipy.linalg.cython_blas  # noqa: F401  (make sure scipy's BLAS is loaded)
    from threadpoolctl import ThreadpoolController

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


def openblas_thread_fns(c):
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
    setter, getter = openblas_thread_fns(c)
    if not all(fns) or not (setter and getter):
        return False
    _blas._install_cblas64(*fns)
    _blas._install_thread_control(setter, getter)
    return True


# MKL_Set_Threading_Layer's value for the sequential layer (mkl_service.h).
_MKL_THREADING_SEQUENTIAL = 1


def _find_mkl():
    """Path of the ``mkl`` package's libmkl_rt (None when the package is not installed)."""
    from importlib import metadata
    try:
        files = metadata.files("mkl") or ()
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name.startswith("libmkl_rt.so") or f.name in ("mkl_rt.2.dll", "libmkl_rt.2.dylib"):
            path = f.locate()
            if os.path.exists(path):
                return os.fspath(path)
    return None


def _install_mkl() -> dict:
    """Route fastnn's products to the ``mkl`` package's oneMKL; RuntimeError if absent."""
    path = _find_mkl()
    if path is None:
        raise RuntimeError("oneMKL was not found: install the mkl package (pip install mkl, or "
                           "pip install fastnn[mkl]), or use fastnn's default BLAS")
    if _blas.requests()[0]:
        raise RuntimeError("cannot change the BLAS while a thread limit is in force")
    try:
        lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_LOCAL", 0))
    except OSError as e:
        raise RuntimeError(f"oneMKL at {path} could not be loaded: {e}") from e
    fns = [_address(lib, f"cblas_{f}_64") for f in ("sgemm", "dgemm", "sgemv", "dgemv")]
    layer = _address(lib, "MKL_Set_Threading_Layer")
    if not all(fns) or not layer:
        raise RuntimeError(f"{path} lacks the ILP64 CBLAS or MKL_Set_Threading_Layer "
                           f"(oneMKL 2023 or later is needed)")
    # before oneMKL's first product: the sequential layer (no OpenMP runtime of its own next
    # to fastnn's libgomp; fastnn's kernels do the threading)
    if ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(layer)(_MKL_THREADING_SEQUENTIAL) \
            != _MKL_THREADING_SEQUENTIAL:
        raise RuntimeError(f"{path}: oneMKL already runs another threading layer in this "
                           f"process")
    _blas._install_cblas64(*fns)
    _blas._install_thread_control(0, 0)
    _blas._set_sequential(True)
    from importlib import metadata
    return {"blas": "mkl", "internal_api": "mkl", "filepath": path, "num_threads": 1,
            "thread_control": False, "backend": "mkl (cblas ILP64, sequential)",
            "version": metadata.version("mkl"), "architecture": None,
            "threading_layer": "sequential", "_lib": lib}


def use_blas(name: str = "auto") -> dict:
    """Choose the BLAS behind fastnn's matrix products; returns :func:`blas_info`.

    Parameters
    ----------
    name : {"auto", "numpy", "scipy", "mkl"}
        "numpy": NumPy's bundled OpenBLAS through its ILP64 CBLAS (faster small-batch products in
        current wheels; unavailable where NumPy links another BLAS, e.g. Accelerate on macOS).
        "scipy": ``scipy.linalg.cython_blas``, always available. "mkl": Intel's oneMKL from the
        ``mkl`` package (``pip install fastnn[mkl]``): products 12-60% faster than OpenBLAS's
        on the Intel machine measured, fit 1.13-1.17x (benchmarks/README.md, "oneMKL"); a
        RuntimeError when the package is absent. "auto" (the default, or the FASTNN_BLAS
        environment variable at import): "mkl" on an Intel CPU (``cpu_vendor()``) when the
        package is installed and loads, else "numpy" when available, else "scipy".
        Not thread-safe: call it before using fastnn from several threads.
    """
    global _BLAS_INFO
    if name not in ("auto", "numpy", "scipy", "mkl"):
        raise ValueError(f"Invalid BLAS choice: {name!r} "
                         f"(expected 'auto', 'numpy', 'scipy' or 'mkl')")
    if name == "mkl" or (name == "auto" and _blas.cpu_vendor() == "intel"
                         and _find_mkl() is not None):
        try:
            info = _install_mkl()      # (raises, changing nothing, when oneMKL is unusable)
        except RuntimeError:
            if name == "mkl":
                raise
        else:
            info["_choice"] = name
            _BLAS_INFO = info
            return {k: v for k, v in info.items() if not k.startswith("_")}
    info = {"blas": None, "internal_api": None, "filepath": None, "num_threads": None,
            "thread_control": False, "backend": "scipy.linalg.cython_blas"}
    _blas._install_cblas64(0, 0, 0, 0)
    _blas._install_thread_control(0, 0)
    _blas._set_sequential(False)
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
            setter, getter = openblas_thread_fns(c)
            if setter and getter:
                _blas._install_thread_control(setter, getter)
                info["thread_control"] = True
    if c is not None:
        info.update(blas=c.internal_api, internal_api=c.internal_api, filepath=c.filepath,
                    num_threads=c.num_threads, version=getattr(c, "version", None),
                    architecture=getattr(c, "architecture", None),
                    threading_layer=getattr(c, "threading_layer", None))
    _BLAS_INFO = dict(info, _choice=name)
    return info


def blas_info() -> dict:
    """Facts about the BLAS behind fastnn's matrix products (library, file, threads)."""
    info = current()
    if info.get("blas") == "mkl":
        return info
    try:
        from threadpoolctl import threadpool_info
        for entry in threadpool_info():
            if entry.get("filepath") == info.get("filepath"):
                info["num_threads"] = entry.get("num_threads")
    except Exception:
        pass
    return info


def set_library_threads(lib, n: int) -> None:
    """Set the thread count of ``lib`` (a threadpoolctl library controller) from any thread.
    threadpoolctl ignores an OpenBLAS change from a thread other than the first one that changed
    it while that thread lives (the main thread, typically); OpenBLAS's own setter does not."""
    if lib.internal_api == "openblas":
        setter, _ = openblas_thread_fns(lib)
        if setter:
            ctypes.CFUNCTYPE(None, ctypes.c_int)(setter)(n)
            return
    lib.set_num_threads(n)


def current() -> dict:
    """The facts :func:`use_blas` recorded (no threadpoolctl call: the thread count is the one
    found then)."""
    if _BLAS_INFO is None:
        _use_blas_from_environment()
    return {k: v for k, v in _BLAS_INFO.items() if not k.startswith("_")}


def choice() -> str:
    """The name the library in force was chosen with ("auto", or a name given to
    :func:`use_blas` or in ``FASTNN_BLAS``): what restores the choice after a change."""
    current()
    return _BLAS_INFO["_choice"]


def library() -> str:
    """The library in force as a :func:`use_blas` name: "mkl", "numpy" or "scipy"."""
    info = current()
    if info["blas"] == "mkl":
        return "mkl"
    return "numpy" if info["backend"].startswith("numpy") else "scipy"


_MATCH_LOCK = threading.Lock()


def match(name: str) -> bool:
    """Use library ``name`` (a :func:`library` value from another process: a search's
    parent) unless it is in force already; False, changing nothing, where it cannot be
    loaded here. For worker processes, whose import chose by their own environment: the
    trials a worker runs in several threads switch once, one at a time, before their first
    product."""
    with _MATCH_LOCK:
        if library() == name:
            return True
        try:
            use_blas(name)
        except RuntimeError:
            return False
        return True


def _use_blas_from_environment():
    """use_blas(FASTNN_BLAS); a library that is not there is a warning, not a failed import."""
    name = os.environ.get("FASTNN_BLAS", "auto") or "auto"
    try:
        use_blas(name)
    except RuntimeError as e:
        import warnings
        warnings.warn(f"FASTNN_BLAS={name}: {e}; using the default BLAS", RuntimeWarning,
                      stacklevel=2)
        use_blas("auto")


_use_blas_from_environment()
