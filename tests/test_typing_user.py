"""Typing from a user's side: mypy passes a correct script that uses fastnn and fails a script
with typos, reporting each typo (the estimators loaded lazily by ``fastnn.__getattr__`` are real
classes to mypy, not Any; ``Sequential.fit`` has an explicit signature, no ``**kwargs``)."""
import inspect
import os
import subprocess
import sys
import textwrap

import pytest

import fastnn
from fastnn import Sequential, training

PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))

GOOD = """
    import numpy as np
    import fastnn
    from fastnn import Dense, Dropout, MLPClassifier, MLPRegressor, Sequential

    X = np.zeros((20, 4), dtype=np.float32)
    y = np.arange(20) % 3
    model = Sequential(Dense(4, 8, activation="relu"), Dropout(0.2), Dense(8, 3), seed=0)
    history: fastnn.History = model.fit(X, y, epochs=2, batch_size=8, verbose=0, seed=0,
                                        callbacks=[fastnn.EarlyStopping(patience=2)])
    scores: dict[str, float] = model.evaluate(X, y)
    proba: np.ndarray = model.predict_proba(X)
    clf = MLPClassifier((8,), random_state=0)
    reg = MLPRegressor((8,), random_state=0)
    reveal_type(MLPClassifier)
    reveal_type(model.fit)
"""

# two typos: a misspelled class name and a misspelled keyword of Sequential.fit
BAD = """
    import numpy as np
    from fastnn import Dense, MLPClasifier, Sequential

    X = np.zeros((20, 4), dtype=np.float32)
    y = np.arange(20) % 3
    model = Sequential(Dense(4, 8, activation="relu"), Dense(8, 3), seed=0)
    model.fit(X, y, epochs=2, batchsize=8)
"""


def run_mypy(tmp_path, name, source):
    pytest.importorskip("mypy")
    script = tmp_path / name
    script.write_text(textwrap.dedent(source))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [PKG_PARENT] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    env["MYPY_CACHE_DIR"] = str(tmp_path / "mypy-cache")
    res = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary",
                          "--hide-error-context", "--no-pretty", "--config-file=", str(script)],
                         capture_output=True, text=True, env=env, cwd=str(tmp_path),
                         timeout=600, check=False)
    return res.returncode, (res.stdout + res.stderr).splitlines()


def test_mypy_passes_a_correct_user_script(tmp_path):
    rc, lines = run_mypy(tmp_path, "good.py", GOOD)
    errors = [ln for ln in lines if ": error:" in ln]
    assert rc == 0 and not errors, "\n".join(lines)
    notes = "\n".join(ln for ln in lines if "Revealed type" in ln)
    # the lazily loaded estimator is its class (not Any), fit has its own parameters
    assert notes.splitlines()[0].endswith('-> fastnn.sklearn.MLPClassifier"'), notes
    fit_sig = notes.splitlines()[1]
    assert "batch_size: int =" in fit_sig and "**" not in fit_sig, fit_sig
    assert fit_sig.endswith("-> fastnn.training.History\""), fit_sig


def test_mypy_reports_both_typos(tmp_path):
    rc, lines = run_mypy(tmp_path, "bad.py", BAD)
    errors = [ln for ln in lines if ": error:" in ln]
    assert rc == 1, "\n".join(lines)
    assert len(errors) == 2, "\n".join(lines)
    assert any('bad.py:3: error: Module "fastnn" has no attribute "MLPClasifier"' in e
               for e in errors), errors
    assert any("bad.py:8: error: Unexpected keyword argument \"batchsize\"" in e
               for e in errors), errors


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
