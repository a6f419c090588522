"""Typing from a user's side: mypy passes a correct script that uses fastnn and fails a script
with typos, reporting each typo (the estimators loaded lazily by ``fastnn.__getattr__`` are real
classes to mypy, not Any; ``Sequential.fit`` has an explicit signature, no ``**kwargs``)."""
import inspect
import os
import subprocess
import sys

import pytest

import fastnn
from fastnn import Sequential, training

PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))

TYPING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "typing")
GOOD = os.path.join(TYPING, "user_script.py")
BAD = os.path.join(TYPING, "user_script_typos.py")


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mypy-cache")   # shared: numpy's stubs are read once


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [PKG_PARENT] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


def run_mypy(cache, script):
    pytest.importorskip("mypy")
    env = child_env()
    env["MYPY_CACHE_DIR"] = str(cache)
    res = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary",
                          "--hide-error-context", "--no-pretty", "--config-file=", str(script)],
                         capture_output=True, text=True, env=env, cwd=str(cache),
                         timeout=600, check=False)
    return res.returncode, (res.stdout + res.stderr).splitlines()


def test_mypy_passes_a_correct_user_script(mypy_cache):
    rc, lines = run_mypy(mypy_cache, GOOD)
    errors = [ln for ln in lines if ": error:" in ln]
    assert rc == 0 and not errors, "\n".join(lines)
    notes = "\n".join(ln for ln in lines if "Revealed type" in ln)
    # the lazily loaded estimator is its class (not Any), fit has its own parameters
    assert notes.splitlines()[0].endswith('-> fastnn.sklearn.MLPClassifier"'), notes
    fit_sig = notes.splitlines()[1]
    assert "batch_size: int =" in fit_sig and "**" not in fit_sig, fit_sig
    assert fit_sig.endswith("-> fastnn.history.History\""), fit_sig


def test_mypy_reports_both_typos(mypy_cache):
    rc, lines = run_mypy(mypy_cache, BAD)
    errors = [ln for ln in lines if ": error:" in ln]
    assert rc == 1, "\n".join(lines)
    assert len(errors) == 2, "\n".join(lines)
    with open(BAD, encoding="utf-8") as f:
        source = f.read().splitlines()
    import_line = 1 + next(i for i, ln in enumerate(source) if "MLPClasifier" in ln)
    fit_line = 1 + next(i for i, ln in enumerate(source) if "batchsize=" in ln)
    assert any(f'user_script_typos.py:{import_line}: error: Module "fastnn" has no attribute '
               f'"MLPClasifier"' in e for e in errors), errors
    assert any(f'user_script_typos.py:{fit_line}: error: Unexpected keyword argument '
               f'"batchsize" for "fit" of "Sequential"' in e for e in errors), errors


def test_the_correct_script_runs():
    res = subprocess.run([sys.executable, GOOD], capture_output=True, text=True, timeout=300,
                         env=child_env(), cwd=PKG_PARENT, check=False)
    assert res.returncode == 0, res.stderr[-3000:]


def test_sequential_wrappers_spell_out_the_training_functions():
    # Sequential.fit/evaluate forward every parameter of fastnn.training.fit/evaluate by name,
    # with the same defaults (a parameter added there must be added here too).
    for method, func in ((Sequential.fit, training.fit), (Sequential.evaluate, training.evaluate)):
        mine = list(inspect.signature(method).parameters.values())[1:]      # drop self
        theirs = list(inspect.signature(func).parameters.values())[1:]     # drop model
        assert [(p.name, p.default, p.kind) for p in mine] == \
            [(p.name, p.default, p.kind) for p in theirs], method.__name__
        assert all(p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in mine)
        assert inspect.signature(method).return_annotation != inspect.Signature.empty


def test_lazy_estimators_still_lazy_and_misspellings_raise():
    code = ("import sys, fastnn; assert 'fastnn.sklearn' not in sys.modules; "
            "fastnn.MLPClassifier; assert 'fastnn.sklearn' in sys.modules; "
            "\n"
            "try:\n    fastnn.MLPClasifier\nexcept AttributeError as e:\n    print(e)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PKG_PARENT, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "has no attribute 'MLPClasifier'" in res.stdout
