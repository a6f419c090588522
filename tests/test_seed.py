"""Sequential(seed=...): one seed makes the initialization of every layer reproducible."""
import pickle

import numpy as np
import pytest

import fastnn
from fastnn import Dense, Dropout, Parallel, Residual, Sequential
from fastnn.init import spawn_seeds


def build(seed, **kw):
    return Sequential(Dense(6, 16, "relu"), Dropout(0.3),
                      Residual(Sequential(Dense(16, 16, "tanh"))),
                      Parallel(Dense(16, 4), Dense(16, 3)), Dense(7, 3), seed=seed, **kw)


def weights(model):
    return [p.data.copy() for p in model.parameters()]


def dropout_seeds(model):
    return [m.seed for m in model.modules() if isinstance(m, Dropout)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_seed_gives_bitwise_equal_networks(dtype):
    a, b = build(0, dtype=dtype), build(0, dtype=dtype)
    wa, wb = weights(a), weights(b)
    assert len(wa) == 10   # five Dense layers
    for x, y in zip(wa, wb):
        assert x.dtype == dtype
        assert x.tobytes() == y.tobytes()
    assert dropout_seeds(a) == dropout_seeds(b)
    # the same training run follows: dropout masks and updates are equal too
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 6)).astype(dtype)
    y = rng.integers(0, 3, 64)
    for m in (a, b):
        m.fit(X, y, epochs=2, batch_size=16, seed=0, verbose=0)
    assert all(x.tobytes() == y_.tobytes() for x, y_ in zip(weights(a), weights(b)))


def test_other_seed_gives_other_weights_in_every_layer():
    a, b = build(0), build(1)
    for x, y in zip(weights(a), weights(b)):
        if np.any(x):   # biases start at zero either way
            assert not np.array_equal(x, y)
    assert dropout_seeds(a) != dropout_seeds(b)


def test_layers_differ_from_each_other():
    # per-layer streams: two same-shaped layers do not get the same draw
    m = Sequential(Dense(5, 5), Dense(5, 5), seed=3)
    assert not np.array_equal(m[0].weight.data, m[1].weight.data)


def test_explicit_layer_seeds_are_kept():
    ref = Dense(6, 16, "relu", seed=42)
    drop = Dropout(0.3, seed=7)
    m = Sequential(Dense(6, 16, "relu", seed=42), drop, Dense(16, 3), seed=0)
    assert np.array_equal(m[0].weight.data, ref.weight.data)
    assert m[1].seed == 7
    # the unseeded layer got the seed of its position, whatever the others carry
    other = Sequential(Dense(6, 16, "relu"), Dropout(0.3), Dense(16, 3), seed=0)
    assert np.array_equal(m[2].weight.data, other[2].weight.data)


def test_inner_sequential_seed_is_kept():
    inner_alone = Sequential(Dense(4, 4), Dense(4, 4), seed=5)
    outer = Sequential(Sequential(Dense(4, 4), Dense(4, 4), seed=5), Dense(4, 2), seed=9)
    for x, y in zip(weights(inner_alone), weights(outer[0])):
        assert np.array_equal(x, y)


def test_seed_is_stored_and_reset_parameters_reproduces_it():
    m = build(0)
    first = m[0].weight.data.copy()
    assert m[0].seed == spawn_seeds(0, len(list(m.modules())) - 1)[0]   # modules after m itself
    m[0].weight.data[...] = 0
    m[0].reset_parameters()
    assert np.array_equal(m[0].weight.data, first)


def test_seed_survives_save_load_and_pickle(tmp_path):
    m = build(0)
    fastnn.save(m, tmp_path / "m.npz")
    loaded = fastnn.load(tmp_path / "m.npz")
    assert all(np.array_equal(x, y) for x, y in zip(weights(m), weights(loaded)))
    assert dropout_seeds(loaded) == dropout_seeds(m)
    clone = pickle.loads(pickle.dumps(m))
    assert dropout_seeds(clone) == dropout_seeds(m)


def test_no_seed_leaves_layers_unseeded():
    m = Sequential(Dense(4, 4), Dense(4, 4))
    assert m[0].seed is None and m[1].seed is None
    a = Sequential(Dense(4, 4), Dense(4, 4))
    assert not np.array_equal(m[0].weight.data, a[0].weight.data)


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_bad_seed(bad):
    with pytest.raises(ValueError, match="seed"):
        Sequential(Dense(2, 2), seed=bad)


def test_spawn_seeds_prefix_stable_and_distinct():
    s5, s8 = spawn_seeds(0, 5), spawn_seeds(0, 8)
    assert s8[:5] == s5
    assert len(set(s8)) == 8
    assert all(0 <= s < 2 ** 64 for s in s8)
