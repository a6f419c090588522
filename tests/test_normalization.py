"""fastnn.Normalization: statistics against NumPy, gradients against finite differences, and the
statistics saved with the model (save/load, state_dict, pickle)."""
import pickle

import numpy as np
import pytest

import fastnn
from fastnn import Dense, Dropout, Normalization, Sequential

DTYPES = [np.float32, np.float64]


def data(dtype=np.float64, n=60, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(loc=np.arange(d) * 10.0 - 7.0, scale=np.arange(1, d + 1) * 0.5, size=(n, d))
    X[:, 1] = 4.25                      # a constant feature
    return X.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adapt_learns_numpy_mean_and_population_variance(dtype):
    X = data(dtype)
    norm = Normalization().adapt(X)
    X64 = X.astype(np.float64)
    np.testing.assert_allclose(norm.mean, X64.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(norm.variance, X64.var(axis=0), rtol=1e-10, atol=1e-12)
    assert norm.mean.dtype == norm.variance.dtype == np.float64
    assert norm.n_features == X.shape[1] and norm.adapted


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_is_standardization_and_constant_features_are_only_centered(dtype):
    X = data(dtype)
    norm = Normalization().adapt(X)
    y = norm.forward(X)
    assert y.dtype == dtype and y.shape == X.shape
    X64 = X.astype(np.float64)
    std = X64.std(axis=0)
    expected = (X64 - X64.mean(axis=0)) / np.where(std > 0, std, 1.0)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, expected, rtol=tol, atol=tol)
    # an unseen value of the constant feature stays finite and unamplified
    Z = X[:3].copy()
    Z[:, 1] = 5.25
    np.testing.assert_allclose(norm.forward(Z)[:, 1], 1.0, rtol=1e-6)


def test_backward_scales_the_gradient():
    X = data()
    norm = Normalization().adapt(X)
    norm.forward(X)
    g = np.random.default_rng(1).normal(size=X.shape)
    gx = norm.backward(g.copy())
    np.testing.assert_allclose(gx, g / norm.scale, rtol=1e-15)
    assert norm.backward(g, need_input_grad=False) is None


def test_gradcheck_through_the_input_and_the_next_layer():
    X = data(np.float64, n=12)
    y = np.arange(12) % 3
    model = Sequential(Normalization().adapt(X), Dense(5, 4, "tanh", seed=1), Dense(4, 3, seed=2),
                       dtype=np.float64)
    res = fastnn.gradcheck(model, X, y, "cross_entropy", check_input=True)
    assert res.passed, res
    assert "input" in res.max_rel_error
    # the check can fail: a wrong backward (no division by the scale) is caught
    norm = model[0]
    orig = Normalization.backward

    def wrong(self, g, need_input_grad=True, inplace=False):
        return g if need_input_grad else None
    Normalization.backward = wrong
    try:
        assert not fastnn.gradcheck(model, X, y, "cross_entropy", check_input=True).passed
    finally:
        Normalization.backward = orig
    assert norm.adapted


@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_predict_save_load_and_pickle_keep_the_statistics(dtype, tmp_path):
    X = data(dtype, n=200)
    y = (X[:, 0] + X[:, 3] > np.median(X[:, 0] + X[:, 3])).astype(np.int64)
    norm = Normalization().adapt(X)
    model = Sequential(norm, Dense(5, 8, "relu", seed=0), Dropout(0.1, seed=3),
                       Dense(8, 2, seed=1), dtype=dtype)
    before = (norm.mean.copy(), norm.variance.copy())
    model.fit(X, y, epochs=3, batch_size=32, verbose=0, seed=0)
    np.testing.assert_array_equal(norm.mean, before[0])     # fit does not train the statistics
    np.testing.assert_array_equal(norm.variance, before[1])
    pred = model.predict(X)
    assert pred.dtype == dtype

    path = tmp_path / "m.npz"
    fastnn.save(model, path, optimizer=model.optimizer)
    loaded = fastnn.load(path)
    assert isinstance(loaded[0], Normalization)
    np.testing.assert_array_equal(loaded[0].mean, norm.mean)
    np.testing.assert_array_equal(loaded[0].variance, norm.variance)
    np.testing.assert_array_equal(loaded.predict(X), pred)
    with np.load(path) as z:
        assert "buffer:0.mean" in z.files and "buffer:0.variance" in z.files

    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.predict(X), pred)
    sd = model.state_dict()
    assert {"0.mean", "0.variance"} <= set(sd)
    fresh = Sequential(Normalization(5), Dense(5, 8, "relu"), Dropout(0.1, seed=3), Dense(8, 2),
                       dtype=dtype)
    fresh.load_state_dict(sd)
    np.testing.assert_array_equal(fresh.predict(X), pred)


def test_errors_are_clear():
    with pytest.raises(RuntimeError, match="adapt"):
        Normalization(3).forward(np.zeros((2, 3)))
    with pytest.raises(RuntimeError, match="adapt"):
        Normalization().forward(np.zeros((2, 3)))
    norm = Normalization().adapt(np.arange(12.0).reshape(4, 3))
    with pytest.raises(ValueError, match="shape"):
        norm.forward(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="finite|NaN"):
        Normalization().adapt(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="0 samples"):
        Normalization().adapt(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="features"):
        Normalization(4).adapt(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="variance"):
        Normalization(mean=[0.0, 1.0], variance=[1.0, -1.0])
    with pytest.raises(ValueError, match="both"):
        Normalization(mean=[0.0])
    with pytest.raises(ValueError, match="features"):
        Sequential(Normalization(3), Dense(4, 2))
    with pytest.raises(ValueError, match="shape"):
        norm.load_state_dict({"mean": np.zeros(2), "variance": np.ones(3)})


def test_given_statistics_and_an_unadapted_layer_round_trip(tmp_path):
    norm = Normalization(mean=[1.0, -2.0], variance=[4.0, 0.0])
    np.testing.assert_array_equal(norm.forward(np.array([[3.0, 5.0]])), [[1.0, 7.0]])
    model = Sequential(Normalization(2), Dense(2, 1, seed=0))
    fastnn.save(model, tmp_path / "u.npz")
    loaded = fastnn.load(tmp_path / "u.npz")
    assert not loaded[0].adapted
    loaded[0].adapt(np.array([[0.0, 1.0], [2.0, 3.0]]))
    np.testing.assert_array_equal(loaded[0].forward(np.array([[1.0, 2.0]])), [[0.0, 0.0]])
