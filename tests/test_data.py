"""fastnn.data: Standardizer, splits, seeded mini-batches."""
import numpy as np
import pytest

from fastnn.data import (BatchIterator, Standardizer, check_random_state, iterate_minibatches,
                         train_test_split, train_val_test_split)


# --- Standardizer ------------------------------------------------------------------------------

def test_standardizer_uses_training_statistics_only(rng):
    X_train = rng.normal(3.0, 2.0, size=(500, 4))
    X_test = rng.normal(-7.0, 0.5, size=(100, 4))  # very different statistics
    s = Standardizer().fit(X_train)
    np.testing.assert_allclose(s.mean_, X_train.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s.scale_, X_train.std(axis=0), rtol=1e-12)
    Zt = s.transform(X_train)
    np.testing.assert_allclose(Zt.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Zt.std(axis=0), 1.0, rtol=1e-12)
    # the test set is mapped with the training mean/std, not its own
    np.testing.assert_allclose(s.transform(X_test), (X_test - X_train.mean(0)) / X_train.std(0),
                               rtol=1e-12)
    assert abs(s.transform(X_test).mean()) > 1.0
    np.testing.assert_allclose(s.inverse_transform(s.transform(X_test)), X_test, rtol=1e-12)


def test_standardizer_zero_variance_and_dtype():
    X = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 0.0], [5.0, 5.0, 0.0]], dtype=np.float32)
    s = Standardizer().fit(X)
    Z = s.transform(X)
    assert Z.dtype == np.float32
    assert np.isfinite(Z).all()
    assert s.scale_[1] == 1.0 and s.scale_[2] == 1.0
    np.testing.assert_array_equal(Z[:, 1:], 0.0)
    # float32 data with a large offset: float64 accumulation keeps the std exact
    big = (np.arange(1000, dtype=np.float32) % 7 + 1e4).reshape(-1, 1)
    np.testing.assert_allclose(Standardizer().fit(big).scale_,
                               big.astype(np.float64).std(axis=0), rtol=1e-6)


def test_standardizer_destroys_sparsity_is_documented():
    assert "sparsity" in Standardizer.__doc__
    X = np.zeros((10, 2))
    X[0, 0] = 1.0
    Z = Standardizer().fit_transform(X)
    assert np.count_nonzero(Z[:, 0]) == 10  # zeros became -mean/std
    Z2 = Standardizer(with_mean=False).fit_transform(X)
    assert np.count_nonzero(Z2) == 1


def test_standardizer_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        Standardizer().transform(np.zeros((2, 2)))
    s = Standardizer().fit(np.ones((3, 2)))
    with pytest.raises(ValueError, match="3 features .* fitted on 2"):
        s.transform(np.ones((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        Standardizer().fit(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="2-dimensional"):
        Standardizer().fit(np.ones(3))
    s2 = Standardizer().load_state_dict(s.state_dict())
    np.testing.assert_array_equal(s2.transform(np.ones((1, 2))), s.transform(np.ones((1, 2))))


# --- splits ------------------------------------------------------------------------------------

def _imbalanced(n_per_class=(100, 37, 13, 250)):
    y = np.concatenate([np.full(k, c) for c, k in enumerate(n_per_class)])
    X = np.arange(y.size, dtype=np.float64).reshape(-1, 1)
    return X, y


def test_train_test_split_partition_and_reproducible():
    X, y = _imbalanced()
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, seed=3)
    assert len(Xte) == int(np.ceil(0.25 * len(X))) and len(Xtr) + len(Xte) == len(X)
    ids = np.concatenate([Xtr[:, 0], Xte[:, 0]]).astype(int)
    np.testing.assert_array_equal(np.sort(ids), np.arange(len(X)))  # disjoint and complete
    np.testing.assert_array_equal(y[Xtr[:, 0].astype(int)], ytr)     # rows stay aligned
    again = train_test_split(X, y, test_size=0.25, seed=3)
    np.testing.assert_array_equal(again[1], Xte)
    other = train_test_split(X, y, test_size=0.25, seed=4)
    assert not np.array_equal(other[1], Xte)


@pytest.mark.parametrize("test_size", [0.1, 0.2, 0.33, 50])
def test_stratified_split_keeps_class_proportions(test_size):
    X, y = _imbalanced()
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, stratify=True, seed=0)
    n_test = len(yte)
    counts = np.bincount(y)
    exact = counts * n_test / len(y)
    got = np.bincount(yte, minlength=len(counts))
    assert np.all(np.abs(got - exact) < 1.0), (got, exact)
    np.testing.assert_array_equal(got + np.bincount(ytr, minlength=len(counts)), counts)


def test_stratify_with_explicit_labels_and_errors():
    X, y = _imbalanced()
    groups = y % 2
    _, _, _, yte = train_test_split(X, y, test_size=0.2, stratify=groups, seed=0)
    with pytest.raises(ValueError, match="labels but there are"):
        train_test_split(X, y, stratify=groups[:-1])
    with pytest.raises(ValueError, match="fraction"):
        train_test_split(X, y, test_size=1.5)
    with pytest.raises(ValueError, match="samples but y has"):
        train_test_split(X, y[:-1])


def test_train_val_test_split():
    X, y = _imbalanced()
    parts = train_val_test_split(X, y, val_size=0.1, test_size=0.2, stratify=True, seed=1)
    Xtr, Xva, Xte, ytr, yva, yte = parts
    n = len(y)
    assert len(Xva) == int(np.ceil(0.1 * n)) and len(Xte) == int(np.ceil(0.2 * n))
    ids = np.concatenate([Xtr[:, 0], Xva[:, 0], Xte[:, 0]]).astype(int)
    np.testing.assert_array_equal(np.sort(ids), np.arange(n))
    for part_y in (yva, yte):
        exact = np.bincount(y) * len(part_y) / n
        assert np.all(np.abs(np.bincount(part_y, minlength=4) - exact) < 1.0)
    # unshuffled: train | val | test in order
    a, b, c = train_val_test_split(X, val_size=10, test_size=20, shuffle=False)
    assert a[-1, 0] + 1 == b[0, 0] and b[-1, 0] + 1 == c[0, 0] and c[-1, 0] == n - 1


# --- mini-batches ------------------------------------------------------------------------------

def test_batch_iterator_covers_each_sample_once_and_is_seeded():
    X = np.arange(103 * 2, dtype=np.float32).reshape(103, 2)
    y = np.arange(103)
    it = BatchIterator(X, y, batch_size=10, seed=7)
    assert len(it) == 11
    epochs = []
    for _ in range(3):
        seen = []
        for xb, yb in it:
            np.testing.assert_array_equal(xb[:, 0], 2 * yb)  # rows stay aligned
            seen.append(yb.copy())
        order = np.concatenate(seen)
        np.testing.assert_array_equal(np.sort(order), np.arange(103))
        epochs.append(order)
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch
    it2 = BatchIterator(X, y, batch_size=10, seed=7)
    for e in range(3):
        np.testing.assert_array_equal(np.concatenate([yb.copy() for _, yb in it2]), epochs[e])


def test_batch_iterator_reuses_buffers_and_views_without_shuffle():
    X = np.random.default_rng(0).normal(size=(64, 3))
    bases = set()
    for xb in BatchIterator(X, batch_size=16, seed=0):
        bases.add(id(xb.base))
    assert len(bases) == 1  # every batch is gathered into the same buffer
    for xb in BatchIterator(X, batch_size=16, shuffle=False):
        assert np.shares_memory(xb, X)  # no copy at all
    sizes = [len(xb) for xb in BatchIterator(X[:50], batch_size=16, drop_last=True, seed=0)]
    assert sizes == [16, 16, 16]
    assert [len(b[0]) for b in iterate_minibatches(X[:50], X[:50, 0], 16, seed=0)] == \
        [16, 16, 16, 2]
    with pytest.raises(ValueError, match="batch_size"):
        BatchIterator(X, batch_size=0)


def test_check_random_state():
    g = np.random.default_rng(1)
    assert check_random_state(g) is g
    assert check_random_state(5).integers(100) == np.random.default_rng(5).integers(100)
    with pytest.raises(TypeError):
        check_random_state("seed")
