"""Maxout: the group-max kernel against NumPy, its backward, the layer (gradcheck with kinks,
save/load, training), and bad input."""
import numpy as np
import pytest

import fastnn
import fastnn.functional as F
from fastnn import Dense, Sequential, gradcheck
from fastnn._kernels import maxout as _km
from fastnn.layers import Maxout


def ref_maxout(z, k):
    g = z.reshape(z.shape[0], z.shape[1] // k, k).astype(np.float64)
    return g.max(axis=2), g.argmax(axis=2)


@pytest.fixture(params=[1, 2])
def n_threads(request):
    """1 thread, or 2 with the parallel path forced."""
    if request.param == 2:
        old = _km.set_parallel_threshold("min_elements", 0)
        yield 2
        _km.set_parallel_threshold("min_elements", old)
    else:
        yield 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,m,k", [(0, 3, 2), (1, 1, 1), (1, 4, 3), (7, 1, 5), (33, 17, 4),
                                   (3, 5, 1), (300, 64, 2)])
def test_forward_backward_against_numpy(dtype, n, m, k, n_threads):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, m * k)).astype(dtype)
    y, arg = F.maxout(z, k, n_threads=n_threads)
    ry, rarg = ref_maxout(z, k)
    assert y.dtype == dtype and arg.dtype == np.int32 and y.shape == (n, m)
    np.testing.assert_array_equal(y, ry.astype(dtype))
    np.testing.assert_array_equal(arg, rarg)
    g = rng.standard_normal((n, m)).astype(dtype)
    dz = F.maxout_backward(g, arg, k, n_threads=n_threads)
    ref = np.zeros((n, m, k), dtype)
    if n:
        np.put_along_axis(ref, rarg[..., None], g[..., None], axis=2)
    np.testing.assert_array_equal(dz, ref.reshape(n, m * k))


def test_ties_go_to_the_first_and_nan_wins():
    z = np.array([[1.0, 1.0, 0.0, 2.0, np.nan, 5.0, np.nan, 0.0, -1.0]])
    y, arg = F.maxout(z, 3)
    np.testing.assert_array_equal(arg, [[0, 1, 0]])
    np.testing.assert_array_equal(arg, np.argmax(z.reshape(1, 3, 3), axis=2))
    assert y[0, 0] == 1.0 and np.isnan(y[0, 1]) and np.isnan(y[0, 2])
    np.testing.assert_array_equal(np.isnan(y), np.isnan(np.max(z.reshape(1, 3, 3), axis=2)))
    z = np.array([[-np.inf, -np.inf, np.inf, 3.0]])
    y, arg = F.maxout(z, 2)
    np.testing.assert_array_equal(y, [[-np.inf, np.inf]])
    np.testing.assert_array_equal(arg, [[0, 0]])


def test_bad_input_is_a_clear_error():
    z = np.zeros((2, 6))
    for bad in (0, -1, 2.0, True, None):
        with pytest.raises(ValueError, match="pieces"):
            F.maxout(z, bad)
    with pytest.raises(ValueError, match="multiple of pieces"):
        F.maxout(z, 4)
    g = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"indices in \[0, 2\)"):
        F.maxout_backward(g, np.full((2, 3), 2), 2)        # would write past its group
    with pytest.raises(ValueError, match=r"indices in \[0, 2\)"):
        F.maxout_backward(g, np.full((2, 3), -1), 2)
    with pytest.raises(TypeError, match="integers"):
        F.maxout_backward(g, np.zeros((2, 3)), 2)
    with pytest.raises(ValueError, match="shape"):
        F.maxout_backward(g, np.zeros((3, 2), np.int32), 2)
    out = np.empty((2, 3))
    with pytest.raises(ValueError):
        F.maxout(out.reshape(2, 3), 1, out=out)             # out over its own input
    with pytest.raises(TypeError):
        F.maxout(z, 2, arg_out=np.empty((2, 3), np.int64))
    with pytest.raises(RuntimeError, match="backward was called before forward"):
        Maxout(3, 2).backward(np.ones((1, 2), np.float32))


def test_layer_gradcheck_reports_kinks():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((16, 4))
    y = rng.integers(0, 3, 16)
    model = Sequential(Maxout(4, 6, pieces=3, seed=0, dtype=np.float64),
                       Maxout(6, 5, pieces=2, seed=1, dtype=np.float64),
                       Dense(5, 3, seed=2, dtype=np.float64))
    res = gradcheck(model, X, y, "cross_entropy", check_input=True)
    assert res.passed, res
    # Two pieces of one group made equal: moving either changes the winner, so the stencil
    # straddles a kink and gradcheck reports it instead of a gradient error.
    m = Sequential(Maxout(2, 1, pieces=2, bias=False, seed=0, dtype=np.float64),
                   Dense(1, 2, seed=1, dtype=np.float64))
    w = m[0].linear.weight.data
    w[:, 1] = w[:, 0]
    w[0, 1] += 1e-9
    res = gradcheck(m, np.array([[1.0, 0.5]]), np.array([1]), "cross_entropy")
    assert any(res.kinks[name] for name in res.kinks), res.kinks


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_trains_saves_and_reloads(dtype, tmp_path):
    X, y = fastnn.datasets.make_spirals(n_samples=300, noise=0.0, seed=0)
    X = X.astype(dtype)
    model = Sequential(Maxout(2, 32, pieces=4, seed=0, dtype=dtype),
                       Maxout(32, 32, pieces=4, seed=1, dtype=dtype),
                       Dense(32, 2, seed=2, dtype=dtype))
    model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=150,
              batch_size=32, seed=0, verbose=0)
    acc = (model.predict(X).argmax(1) == y).mean()
    assert acc > 0.9, acc
    fastnn.save(model, tmp_path / "m.npz")
    again = fastnn.load(tmp_path / "m.npz")
    assert again[0].pieces == 4 and again[1].out_features == 32
    np.testing.assert_array_equal(again.predict(X), model.predict(X))


def test_pieces_one_is_linear():
    x = np.random.default_rng(2).standard_normal((5, 3))
    mx = Maxout(3, 4, pieces=1, seed=0, dtype=np.float64)
    d = Dense(3, 4, seed=0, dtype=np.float64)
    np.testing.assert_array_equal(mx.forward(x), d.forward(x))
    with pytest.raises(ValueError, match="pieces"):
        Maxout(3, 4, pieces=0)
    with pytest.raises(ValueError, match="out_features"):
        Maxout(3, 0)
