"""The build: configuration report, thread resolution, float semantics of the process."""
import io
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn._threads import resolve_n_threads


def test_show_config_reports_the_essentials():
    buf = io.StringIO()
    cfg = fastnn.show_config(file=buf)
    for key in ("fastnn", "openmp", "default_n_threads", "blas", "blas_num_threads"):
        assert key in cfg
        assert key in buf.getvalue()
    assert cfg["fastnn"] == fastnn.__version__
    assert cfg["default_n_threads"] >= 1
    from fastnn._kernels import bf16, softmax
    assert cfg["simd"] == softmax.simd_level() and cfg["simd"] in softmax.SIMD_LEVELS
    assert cfg["simd_bfloat16"] == bf16.simd_level() and cfg["simd_bfloat16"] in bf16.SIMD_LEVELS


def test_subnormals_survive_import():
    # An extension linked with -ffast-math would set flush-to-zero for the whole process.
    code = (
        "import numpy as np, fastnn, fastnn.functional\n"
        "x = np.float32(1e-40)\n"
        "y = np.array([x], dtype=np.float32) * np.float32(1.0) + np.float32(0)\n"
        "assert y[0] != 0 and y[0] == x, y\n"
        "z = np.array([5e-324]) * 1.0\n"
        "assert z[0] != 0\n"
        "print('ok')\n"
    )
    # cwd: `python -c` puts the working directory first on sys.path; run where the fastnn under
    # test lives, so an installed fastnn is not shadowed by the source tree.
    home = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=home)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_resolve_n_threads():
    assert resolve_n_threads(1) == 1
    assert resolve_n_threads(None) >= 1
    with pytest.raises(ValueError, match="positive"):
        resolve_n_threads(0)
    with pytest.raises(ValueError, match="positive"):
        resolve_n_threads(-2)
    with pytest.raises(TypeError):
        resolve_n_threads(1.5)
    with pytest.raises(TypeError):
        resolve_n_threads(True)


def test_n_threads_none_follows_threadpoolctl():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from fastnn._kernels import _config
    if not _config.openmp_enabled():
        pytest.skip("built without OpenMP")
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert resolve_n_threads(None) == 1
