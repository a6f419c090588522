"""Build the compiled kernels of fastnn.

Environment switches
--------------------
FASTNN_DEBUG=1           build with Cython's bounds/wraparound/initialized checks on and -O0 -g.
FASTNN_REQUIRE_OPENMP=1  a compiler without OpenMP is a build error (wheel builds), not a warning.
FASTNN_SANITIZE=address,undefined
                         add -fsanitize=... to compile and link flags (see tools/sanitize.sh).
FASTNN_NO_OPENMP=1       build without OpenMP, as on a compiler that lacks it (tests that path).
FASTNN_BUILD_ONLY=a,b    development: cythonize only fastnn._kernels.{a,b} (others must be built).
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("FASTNN_DEBUG", "0") not in ("", "0")
REQUIRE_OPENMP = os.environ.get("FASTNN_REQUIRE_OPENMP", "0") not in ("", "0")
SANITIZE = os.environ.get("FASTNN_SANITIZE", "")
NO_OPENMP = os.environ.get("FASTNN_NO_OPENMP", "0") not in ("", "0")
BUILD_ONLY = [s for s in os.environ.get("FASTNN_BUILD_ONLY", "").split(",") if s]


def _compiler_is_msvc():
    return sys.platform == "win32" and "GCC" not in sys.version


def _compiles_and_links(cflags, lflags):
    """True when the compiler setuptools will use builds an OpenMP program with these flags.

    The probe goes through setuptools' own compiler object (MSVC on Windows, $CC with
    $CPPFLAGS/$CFLAGS/$LDFLAGS elsewhere), so it tests exactly what the extensions will get.
    """
    from setuptools.command.build_ext import customize_compiler, new_compiler

    code = ("#include <omp.h>\n#include <stdio.h>\nint main(void){int n=0;\n"
            "#pragma omp parallel reduction(+:n)\nn+=1;\n"
            "printf(\"%d %d\\n\", n, omp_get_max_threads());\nreturn n>0?0:1;}\n")
    compiler = new_compiler()
    customize_compiler(compiler)
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "omp_test.c")
        with open(src, "w") as fh:
            fh.write(code)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
        compiler.link_executable(objs, os.path.join(tmp, "omp_test"), output_dir=tmp,
                                 extra_postargs=lflags)
        return True
    except Exception:  # CompileError, LinkError, a missing compiler: no OpenMP this way
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def openmp_flags():
    """Return (compile_args, link_args) for OpenMP, found by compiling a test program."""
    if NO_OPENMP:
        if REQUIRE_OPENMP:
            raise RuntimeError("FASTNN_NO_OPENMP=1 and FASTNN_REQUIRE_OPENMP=1 contradict")
        warnings.warn("fastnn: FASTNN_NO_OPENMP=1, building a sequential fastnn")
        return None, None
    if _compiler_is_msvc():
        # MSVC: /openmp (OpenMP 2.0: enough for Cython's prange with signed indices); the
        # object files then name vcomp, the runtime shipped with the MSVC redistributable.
        candidates = [(["/openmp"], [])]
    elif sys.platform == "darwin":
        # Apple clang: libomp from Homebrew (headers/library via CPPFLAGS/LDFLAGS); a GCC or
        # LLVM clang that knows -fopenmp itself as the fallback.
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    for cflags, lflags in candidates:
        if _compiles_and_links(cflags, lflags):
            return cflags, lflags
    msg = ("fastnn: the C compiler does not support OpenMP; building a sequential fastnn "
           "(n_threads > 1 will run on one thread).")
    if REQUIRE_OPENMP:
        raise RuntimeError(msg + " FASTNN_REQUIRE_OPENMP=1 makes this an error.")
    warnings.warn(msg)
    return None, None


def build_extensions():
    omp_c, omp_l = openmp_flags()
    if _compiler_is_msvc():
        base_c = ["/O2"]
        base_l = []
    else:
        # -O3 with neither a CPU-specific architecture flag nor fast-math: wheels must run on
        # any x86-64 / aarch64 CPU and must not flip flush-to-zero for the whole process.
        # -fno-trapping-math changes no result and sets no FPU mode (unlike fast-math): it
        # only lets GCC if-convert float selects (clamps, a >= 0 ? s : e*s), without which no
        # loop with a conditional is vectorized ("control flow in loop").
        base_c = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-math-errno", "-fno-trapping-math"]
        base_c += ["-Wno-unused-function", "-Wno-unreachable-code"]
        base_l = []
        if SANITIZE:
            san = [f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer"]
            base_c += san
            base_l += san
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")]
    exts = []
    for pyx in sorted(glob.glob(os.path.join("fastnn", "_kernels", "*.pyx"))):
        name = pyx[:-4].replace(os.sep, ".")
        if BUILD_ONLY and name.rsplit(".", 1)[1] not in BUILD_ONLY:
            continue
        exts.append(Extension(
            name, [pyx],
            include_dirs=[np.get_include()],
            define_macros=macros,
            extra_compile_args=base_c + (omp_c or []),
            extra_link_args=base_l + (omp_l or []),
        ))
    directives = {
        "language_level": 3,
        "boundscheck": DEBUG,
        "wraparound": DEBUG,
        "initializedcheck": DEBUG,
        "cdivision": not DEBUG,
        "embedsignature": True,
    }
    return cythonize(exts, compiler_directives=directives,
                     nthreads=int(os.environ.get("FASTNN_CYTHONIZE_JOBS", "0") or 0))


setup(ext_modules=build_extensions())
