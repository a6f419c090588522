"""The API reference (docs/, built with Sphinx in CI) covers every public module of fastnn:
a module added to the package without a page in docs/api fails here, before the docs build."""
import os
import pkgutil
import re

import pytest

import fastnn

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs")


def public_modules(package, prefix):
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        yield prefix + info.name


def documented_modules():
    names = set()
    api = os.path.join(DOCS, "api")
    for f in os.listdir(api):
        with open(os.path.join(api, f), encoding="utf-8") as fh:
            names |= set(re.findall(r"^\.\. automodule:: (\S+)", fh.read(), re.M))
    return names


def test_every_public_module_has_a_page():
    if not os.path.isdir(os.path.join(DOCS, "api")):
        pytest.skip("docs/ not next to the tests")
    import fastnn.functional
    expected = set(public_modules(fastnn, "fastnn."))
    expected |= set(public_modules(fastnn.functional, "fastnn.functional."))
    documented = documented_modules()
    assert "fastnn.model" in documented
    missing = sorted(expected - documented)
    assert not missing, f"modules without an automodule entry in docs/api: {missing}"
