"""Typing: every compiled module has a .pyi stub, the package is marked typed (PEP 561), and
mypy's stubtest finds the stubs consistent with the compiled modules (names, parameters,
defaults, classes). Runs against the fastnn this test imports (installed or source tree)."""
import importlib.machinery
import os
import subprocess
import sys

import pytest

import fastnn

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.dirname(os.path.abspath(fastnn.__file__))
KERNELS = os.path.join(PKG, "_kernels")


def compiled_modules():
    """Names of the extension modules in fastnn/_kernels (e.g. 'dense')."""
    names = set()
    for f in os.listdir(KERNELS):
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:   # most specific first
            if f.endswith(suffix):
                names.add(f[: -len(suffix)])
                break
    return sorted(names)


def test_compiled_modules_have_stubs_and_package_is_typed():
    mods = compiled_modules()
    assert {"_blas", "_config", "dense"} <= set(mods), mods
    missing = [m for m in mods if not os.path.isfile(os.path.join(KERNELS, m + ".pyi"))]
    assert not missing, f"compiled modules without a .pyi stub: {missing}"
    assert os.path.isfile(os.path.join(PKG, "py.typed"))


def test_stubtest(tmp_path):
    pytest.importorskip("mypy")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(PKG)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    env["MYPY_CACHE_DIR"] = str(tmp_path / "mypy-cache")
    cmd = [sys.executable, "-m", "mypy.stubtest",
           "--mypy-config-file", os.path.join(HERE, "typing", "stubtest.ini"),
           "--allowlist", os.path.join(HERE, "typing", "stubtest-allowlist.txt"),
           *(f"fastnn._kernels.{m}" for m in compiled_modules())]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp_path),
                         timeout=600, check=False)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
