"""scikit-learn's own tests of its MLP (sklearn/neural_network/tests/test_mlp.py of the installed
scikit-learn), run against fastnn.MLPClassifier / MLPRegressor.

The test file's text is read from the installed package, its import of scikit-learn's
estimators is replaced by fastnn's, and its test functions are defined in this module, where
pytest collects them. The tests that fail are marked xfail (strict: a test that starts to pass
is reported) with the reason; README.md lists them.
"""
import os

import pytest

neural_network = pytest.importorskip("sklearn.neural_network")

# about 90 s: the quick suite (-m "not slow") leaves it to CI
pytestmark = pytest.mark.slow

_PATH = os.path.join(os.path.dirname(neural_network.__file__), "tests", "test_mlp.py")
_IMPORT = "from sklearn.neural_network import MLPClassifier, MLPRegressor"

if not os.path.exists(_PATH):  # pragma: no cover - a scikit-learn installed without its tests
    pytest.skip(f"scikit-learn's MLP tests are not installed ({_PATH})", allow_module_level=True)

with open(_PATH, encoding="utf-8") as f:
    _SOURCE = f.read()
if _IMPORT not in _SOURCE:  # pragma: no cover - the file changed: fail loudly, do not test sklearn
    raise RuntimeError(f"{_PATH} does not contain {_IMPORT!r}; update the rewrite")
_SOURCE = _SOURCE.replace(_IMPORT, "from fastnn.sklearn import MLPClassifier, MLPRegressor")


@pytest.fixture
def global_random_seed():
    """scikit-learn's fixture (its default seed, 42)."""
    return 42


exec(compile(_SOURCE, _PATH, "exec"), globals())  # noqa: S102 - scikit-learn's own test file

assert MLPClassifier.__module__ == "fastnn.sklearn"  # noqa: F821 - defined by the exec

# name -> reason for each test of the file that fastnn's classes fail
XFAIL = {
}

for _name, _reason in XFAIL.items():
    globals()[_name] = pytest.mark.xfail(reason=_reason, strict=True)(globals()[_name])
