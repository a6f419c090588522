"""The build rebuilds a kernel when a .pxd it cimports changes: cythonize's dependency tree
(which setup.py relies on) must list every fastnn .pxd a .pyx names in a cimport."""
import os
import re

import pytest

Dependencies = pytest.importorskip("Cython.Build.Dependencies")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join("fastnn", "_kernels")
CIMPORT = re.compile(
    r"^\s*(?:from\s+([\w.]+)\s+)?cimport\s+([\w., ]+?)(?:\s+as\s+\w+)?\s*(?:#.*)?$", re.MULTILINE)


FROM = re.compile(r"^\s*from\s+([\w.]+)\s+cimport\b", re.MULTILINE)


def _named_pxds(source):
    """The fastnn._kernels .pxd files a source names in its cimport lines."""
    names = {os.path.join(*m.split(".")) + ".pxd" for m in FROM.findall(source)}
    names = {os.path.normpath(n) for n in names if n.startswith(KERNELS + os.sep)
             and os.path.exists(os.path.join(ROOT, n))}
    for frm, what in CIMPORT.findall(source):
        for item in what.split(","):
            item = item.strip().split(" ")[0]
            for dotted in ([f"{frm}.{item}", frm] if frm else [item]):
                path = os.path.join(*dotted.split(".")) + ".pxd"
                if dotted.startswith("fastnn._kernels.") and os.path.exists(
                        os.path.join(ROOT, path)):
                    names.add(os.path.normpath(path))
    return names


def test_every_cimported_pxd_is_a_dependency():
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        tree = Dependencies.create_dependency_tree()
        missing = {}
        for name in sorted(os.listdir(KERNELS)):
            if not name.endswith((".pyx", ".pxd")):
                continue
            path = os.path.join(KERNELS, name)
            with open(path) as fh:
                named = _named_pxds(fh.read())
            seen = {os.path.normpath(d) for d in tree.all_dependencies(path)}
            if named - seen:
                missing[name] = sorted(named - seen)
    finally:
        os.chdir(cwd)
    assert not missing, f"cimports cythonize does not track (a change would not rebuild): {missing}"
