"""The input checks of the estimators' predict: fastnn's finiteness check (all_finite) in place
of check_array's, and no threadpoolctl limits around a covered network's one compiled call.
Both must leave every result and every error as it was."""
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
import sklearn
from sklearn.utils import check_array

import fastnn.sklearn as fsk
from fastnn._kernels.inference import all_finite
from fastnn.sklearn import MLPClassifier, MLPRegressor

_SPECIALS32 = [0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FBFFFFF,
               0xFFFFFFFF, 0x7FFFFFFF]
_FINITE32 = [0x7F7FFFFF, 0xFF7FFFFF, 0x00000001, 0x80000001, 0x00800000, 0x80000000, 0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 3, 4, 7, 16, 17, 63, 1000, 4099])
def test_all_finite_matches_numpy_on_random_bits(dtype, n):
    rng = np.random.default_rng(n)
    udt = np.uint32 if dtype == np.float32 else np.uint64
    for _ in range(30):
        # random bit patterns: about half the elements have a large exponent, some all ones
        bits = rng.integers(0, np.iinfo(udt).max, n, dtype=udt, endpoint=True)
        x = bits.view(dtype)
        assert all_finite(x) == bool(np.isfinite(x).all())
        finite = np.where(np.isfinite(x), x, 0).astype(dtype)
        assert all_finite(finite) is True


@pytest.mark.parametrize("n", [1, 5, 8, 31, 1024 * 784])
def test_all_finite_every_position_and_kind(n):
    for pattern in _SPECIALS32:
        for pos in sorted({0, n // 2, n - 1}):
            u = np.zeros(n, np.uint32)
            u[pos] = pattern
            assert all_finite(u.view(np.float32)) is False, (hex(pattern), pos)
            assert all_finite(u.view(np.float32).reshape(1, n)) is False
    for bad in (np.nan, np.inf, -np.inf):
        for pos in sorted({0, n // 2, n - 1}):
            d = np.zeros(n, np.float64)
            d[pos] = bad
            assert all_finite(d) is False
    u = np.array(_FINITE32 * (n // len(_FINITE32) + 1), np.uint32)[:n]
    assert all_finite(u.view(np.float32)) is True
    d = np.array([np.finfo(np.float64).max, -np.finfo(np.float64).max, 5e-324, -0.0, 1.0])
    assert all_finite(np.resize(d, n)) is True


def test_all_finite_takes_only_plain_float_arrays():
    x = np.ones((4, 6), np.float32)
    assert all_finite(x[:, ::2]) is None              # not C-contiguous
    assert all_finite(x.astype(">f4")) is None          # byte-swapped
    assert all_finite(np.ones(3, np.int32)) is None
    assert all_finite(np.ones(3, np.float16)) is None
    assert all_finite([1.0, 2.0]) is None
    assert all_finite(np.empty((0, 5), np.float32)) is True


def test_all_finite_through_functional():
    from fastnn.functional import inference
    assert inference.all_finite is all_finite
    buf = np.zeros(4 * 7 + 1, np.uint8)[1:].view(np.float32)   # misaligned
    assert not buf.flags.aligned
    assert all_finite(buf) is None


def _clf(n_threads, seed=0, **kw):
    rng = np.random.default_rng(seed)
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=2, n_threads=n_threads,
                        dtype=np.float32, random_state=seed, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(rng.random((200, 20), dtype=np.float32), rng.integers(0, 4, 200))
    return clf


def _reg(n_threads):
    rng = np.random.default_rng(1)
    reg = MLPRegressor(hidden_layer_sizes=(16,), max_iter=2, n_threads=n_threads,
                       random_state=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg.fit(rng.random((100, 5)), rng.random(100))
    return reg


def _reference(est, X):
    """predict's output the layer-by-layer way with check_array's own checks."""
    net = est._network()
    z = check_array(X, dtype=net.dtype, order="C")
    modes = [m.training for m in net.modules()]
    net.eval()
    try:
        for m in net._layers:
            z = m.forward(z)
    finally:
        for m, mode in zip(net.modules(), modes):
            m.training = mode
    return z


@pytest.mark.parametrize("n_threads", [None, 1, 2])
def test_classifier_predict_unchanged(n_threads, same_rows):
    clf = _clf(n_threads)
    rng = np.random.default_rng(5)
    for X in (rng.random((300, 20), dtype=np.float32), rng.random((7, 20)),
              np.asfortranarray(rng.random((50, 20), dtype=np.float32)), rng.random((2000, 20))):
        z = _reference(clf, X)
        p = clf.predict_proba(X)
        assert p.dtype == np.float32
        assert clf.predict(X).tolist() == clf.classes_[np.argmax(p, axis=1)].tolist()
        ref = fsk._out_activation("softmax", z)
        if X.shape[0] <= 32:   # one tile: the same calls as the layer-by-layer path
            np.testing.assert_array_equal(p, ref)
        else:   # tiles of a larger batch: GEMMs of fewer rows
            same_rows(p, ref)


def _sk_error(X, name):
    with pytest.raises(ValueError) as e:
        check_array(X, dtype=np.float32, order="C", estimator=name, input_name="X")
    return str(e.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("n_threads", [None, 2])
def test_non_finite_input_raises_check_arrays_error(bad, n_threads):
    clf = _clf(n_threads)
    X = np.random.default_rng(2).random((64, 20), dtype=np.float32)
    for pos in ((0, 0), (31, 7), (63, 19)):
        Y = X.copy()
        Y[pos] = bad
        expected = _sk_error(Y, "MLPClassifier")
        for f in (clf.predict, clf.predict_proba, clf.predict_log_proba):
            with pytest.raises(ValueError) as e:
                f(Y)
            assert str(e.value) == expected
    # a float64 value that is infinite in the network's float32
    Y = X.astype(np.float64)
    Y[3, 3] = 1e300
    with pytest.raises(ValueError) as e:
        clf.predict(Y)
    assert str(e.value) == _sk_error(Y, "MLPClassifier")
    assert "infinity" in str(e.value)
    # a strided view and a byte-swapped array: checked by check_array's conversion path
    Y = np.repeat(X, 2, axis=1)[:, ::2].copy(order="F")
    Y[1, 1] = bad
    with pytest.raises(ValueError, match="Input X contains"):
        clf.predict(Y)


def test_regressor_non_finite_input_raises():
    reg = _reg(2)
    X = np.random.default_rng(3).random((10, 5))
    X[4, 2] = np.nan
    with pytest.raises(ValueError) as e:
        reg.predict(X)
    with pytest.raises(ValueError) as e2:
        check_array(X, dtype=np.float64, order="C", estimator="MLPRegressor", input_name="X")
    assert str(e.value) == str(e2.value)


def test_assume_finite_skips_the_check_as_before():
    clf = _clf(2)
    X = np.random.default_rng(4).random((16, 20), dtype=np.float32)
    X[0, 0] = np.nan
    with sklearn.config_context(assume_finite=True):
        y = clf.predict(X)        # no error (scikit-learn's own check is skipped as well)
    assert y.shape == (16,)


@pytest.mark.parametrize("covered", [True, False])
def test_no_threadpool_limits_around_a_covered_network(monkeypatch, covered):
    clf = _clf(2)
    # (up to 32 rows the one-call and the layer-by-layer paths give the same bits)
    X = np.random.default_rng(6).random((20, 20), dtype=np.float32)
    expected = clf.predict_proba(X)
    calls = []
    real = fsk.limit_threads

    def counting(n):
        calls.append(n)
        return real(n)

    monkeypatch.setattr(fsk, "limit_threads", counting)
    if not covered:
        monkeypatch.setattr(fsk._inference, "plan_for", lambda net: None)
    np.testing.assert_array_equal(clf.predict_proba(X), expected)
    assert calls == ([] if covered else [2])
