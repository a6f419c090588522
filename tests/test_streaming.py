"""fit / evaluate / predict / partial_fit on streamed data: batch generators, Sequences, memmaps
and Dask arrays give the results of the same batches from in-memory arrays."""
import sys
import warnings

import numpy as np
import pytest

from fastnn import Dense, Sequential, streaming, training

N, D, C = 600, 12, 3


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    return X, y


def net(dtype=np.float32):
    return Sequential(Dense(D, 8, activation="tanh", seed=1, dtype=dtype),
                      Dense(8, C, seed=2, dtype=dtype))


def weights(model):
    return [p.data.copy() for p in model.parameters()]


def assert_same(a, b):
    for u, v in zip(weights(a), weights(b)):
        np.testing.assert_array_equal(u, v)


def batches(X, y, bs=50):
    for s in range(0, X.shape[0], bs):
        yield X[s:s + bs], y[s:s + bs]


@pytest.fixture
def memmap(tmp_path, data):
    X, y = data
    path = tmp_path / "X.f64"
    mm = np.memmap(path, dtype=np.float64, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    del mm
    return np.memmap(path, dtype=np.float64, mode="r", shape=X.shape)


@pytest.fixture
def small_chunks(monkeypatch):
    # chunks of 250 float32 rows of D features (fewer with batches that do not divide 250):
    # several chunks per epoch, a short last one
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 250 * D * 4)


def reference(data, epochs=1, bs=50):
    X, y = data
    ref = net()
    ref.fit(X, y, epochs=epochs, batch_size=bs, shuffle=False, verbose=0)
    return ref


# --- batch iterables ---------------------------------------------------------------------------

def test_generator_one_epoch_equals_arrays(data):
    X, y = data
    m = net()
    h = m.fit(batches(X, y), verbose=0, epochs=1)
    assert_same(m, reference(data))
    assert h.params["n_samples"] is None and len(h.history["loss"]) == 1


def test_one_shot_generator_with_several_epochs_is_a_clear_error(data):
    X, y = data
    with pytest.raises(ValueError, match="one-shot iterator.*epochs=2.*zero-argument"):
        net().fit(batches(X, y), epochs=2, verbose=0)


def test_callable_and_reiterable_give_one_pass_per_epoch(data):
    X, y = data

    class Reiterable:
        def __iter__(self):
            return batches(X, y)

    for source in (lambda: batches(X, y), Reiterable()):
        m = net()
        m.fit(source, epochs=3, verbose=0)
        assert_same(m, reference(data, epochs=3))


def test_batches_of_other_dtypes_are_converted(data):
    X, y = data
    m = net()
    m.fit(lambda: ((xb.astype(np.float64), yb.astype(np.float32)) for xb, yb in batches(X, y)),
          epochs=2, verbose=0)
    assert_same(m, reference(data, epochs=2))


class Seq:
    def __init__(self, X, y, bs=50):
        self.X, self.y, self.bs = X, y, bs
        self.seen, self.ends = [], 0

    def __len__(self):
        return -(-self.X.shape[0] // self.bs)

    def __getitem__(self, i):
        self.seen.append(i)
        return self.X[i * self.bs:(i + 1) * self.bs], self.y[i * self.bs:(i + 1) * self.bs]

    def on_epoch_end(self):
        self.ends += 1


def test_sequence_in_order_equals_arrays_and_calls_on_epoch_end(data):
    X, y = data
    seq = Seq(X, y)
    m = net()
    m.fit(seq, epochs=2, shuffle=False, verbose=0)
    assert_same(m, reference(data, epochs=2))
    assert seq.ends == 2 and seq.seen == list(range(12)) * 2


def test_sequence_shuffle_permutes_batches_reproducibly(data):
    X, y = data
    a, b = Seq(X, y), Seq(X, y)
    net().fit(a, epochs=2, seed=3, verbose=0)
    net().fit(b, epochs=2, seed=3, verbose=0)
    assert a.seen == b.seen
    assert sorted(a.seen[:12]) == list(range(12)) and a.seen[:12] != list(range(12))
    assert a.seen[:12] != a.seen[12:]


def test_steps_per_epoch_draws_a_generator_across_epochs(data):
    X, y = data
    m = net()
    with pytest.warns(RuntimeWarning, match="ran out"):
        h = m.fit(batches(X, y), epochs=5, steps_per_epoch=5, verbose=0)   # 12 batches
    assert len(h.epoch) == 3 and h.stopped_epoch == 2
    assert_same(m, reference(data))   # the 12 batches in order, once
    # a generator that ends exactly with an epoch stops there, without an empty epoch
    m2 = net()
    with pytest.warns(RuntimeWarning, match="ran out"):
        h = m2.fit(batches(X, y), epochs=5, steps_per_epoch=6, verbose=0)
    assert len(h.epoch) == 2
    assert_same(m2, reference(data))


def test_steps_per_epoch_truncates_a_reiterable(data):
    X, y = data
    m = net()
    h = m.fit(lambda: batches(X, y), epochs=2, steps_per_epoch=3, verbose=0)
    ref = net()
    for _ in range(2):
        ref.partial_fit(X[:150], y[:150], batch_size=50, shuffle=False)
    assert_same(m, ref)
    assert len(h.epoch) == 2


@pytest.mark.parametrize("bad, err, match", [
    (lambda X, y: iter([(X[:5], y[:5]), (X[5:9, :4], y[5:9])]), ValueError,
     r"batch 2.*4 features but 12"),
    (lambda X, y: iter([(np.full((3, D), np.nan), y[:3])]), ValueError, "batch 1.*NaN"),
    (lambda X, y: iter([(X[:3], np.array([0, 1, 7]))]), ValueError, r"batch 1.*\[0, 3\)"),
    (lambda X, y: iter([(X[:3], y[:2])]), ValueError, "3 samples but y has 2"),
    (lambda X, y: iter([X[:3]]), ValueError, "expected a pair"),
    (lambda X, y: iter([(X[:3].astype(str), y[:3])]), TypeError, "expected numbers"),
    (lambda X, y: iter([]), ValueError, "no batches"),
])
def test_bad_batches_raise_clear_errors(data, bad, err, match):
    with pytest.raises(err, match=match):
        net().fit(bad(*data), verbose=0, epochs=1)


def test_y_with_a_batch_source_and_steps_with_arrays_are_errors(data):
    X, y = data
    with pytest.raises(ValueError, match="y must be None"):
        net().fit(batches(X, y), y, verbose=0, epochs=1)
    with pytest.raises(ValueError, match="steps_per_epoch is for streamed data"):
        net().fit(X, y, steps_per_epoch=3, verbose=0)
    with pytest.raises(ValueError, match="Invalid steps_per_epoch"):
        net().fit(batches(X, y), steps_per_epoch=0, verbose=0, epochs=1)
    with pytest.raises(ValueError, match="y is required"):
        net().fit(X, verbose=0)
    with pytest.raises(ValueError, match="validation_split needs in-memory"):
        net().fit(batches(X, y), validation_split=0.2, verbose=0, epochs=1)


def test_streamed_validation_equals_arrays(data):
    X, y = data
    ref = net()
    hr = ref.fit(X, y, epochs=2, batch_size=50, shuffle=False, verbose=0,
                 validation_data=(X[:200], y[:200]))
    for val in (Seq(X[:200], y[:200], bs=64), lambda: batches(X[:200], y[:200], 30)):
        m = net()
        h = m.fit(X, y, epochs=2, batch_size=50, shuffle=False, verbose=0, validation_data=val)
        np.testing.assert_allclose(h.history["val_loss"], hr.history["val_loss"], rtol=1e-5)
        assert h.history["val_accuracy"] == hr.history["val_accuracy"]
    with pytest.raises(ValueError, match="validation_data is a one-shot"):
        net().fit(X, y, epochs=2, verbose=0, validation_data=batches(X, y))


# --- memmap ------------------------------------------------------------------------------------

def test_memmap_in_order_equals_arrays(data, memmap, small_chunks):
    _, y = data
    m = net()
    h = m.fit(memmap, y, epochs=2, batch_size=50, shuffle=False, verbose=0)
    assert_same(m, reference(data, epochs=2))
    assert h.params["n_samples"] == N


def test_memmap_shuffle_visits_every_row_once_per_epoch(memmap, small_chunks):
    labels = np.arange(N)
    s = streaming.make_stream(memmap, labels, dtype=np.float32, check_y=lambda yb, n: yb,
                              batch_size=70, shuffle=True, rng=np.random.default_rng(0))
    for _ in range(2):   # chunks of 210, 210, 180 rows: a batch spans two chunks
        got = [(xb.copy(), yb.copy()) for xb, yb in s]
        assert [len(yb) for _, yb in got] == [70] * 8 + [40]
        order = np.concatenate([yb for _, yb in got])
        assert sorted(order) == list(range(N)) and (order != labels).any()
        for xb, yb in got:   # rows stay with their targets, converted to float32
            assert xb.dtype == np.float32
            np.testing.assert_array_equal(xb, memmap[yb].astype(np.float32))


def test_copy_on_write_memmap_keeps_its_written_pages(tmp_path, data):
    X, y = data
    path = tmp_path / "X.f32"
    X.tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="c", shape=X.shape)
    mm[:] = 0.0        # written in memory only: releasing these pages would lose the zeros
    m = net()
    m.fit(mm, y, epochs=1, batch_size=50, shuffle=False, verbose=0)
    assert not mm.any()
    ref = net()
    ref.fit(np.zeros_like(X), y, epochs=1, batch_size=50, shuffle=False, verbose=0)
    assert_same(m, ref)


def test_memmap_with_nan_stops_with_a_clear_error(tmp_path, data):
    X, y = data
    X = X.copy()
    X[N - 1, 3] = np.nan
    path = tmp_path / "X.f32"
    X.tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=X.shape)
    with pytest.raises(ValueError, match="NaN"):
        net().fit(mm, y, verbose=0, epochs=1)


# --- Dask --------------------------------------------------------------------------------------

da = pytest.importorskip("dask.array")


def test_dask_in_order_equals_arrays(data, small_chunks):
    X, y = data
    for dx, dy in [(da.from_array(X, chunks=(70, 5)), y),
                   (da.from_array(X, chunks=(130, D)), da.from_array(y, chunks=41))]:
        m = net()
        m.fit(dx, dy, epochs=2, batch_size=50, shuffle=False, verbose=0)
        assert_same(m, reference(data, epochs=2))


def test_dask_shuffle_visits_every_row_once_and_computes_a_few_blocks_at_a_time(small_chunks):
    import dask

    n = 1000
    labels = np.arange(n)
    X = np.repeat(labels[:, None], D, axis=1).astype(np.float64)
    computed = []

    def record(block, block_info=None):
        computed.append(block_info[0]["chunk-location"][0])
        return block

    dx = da.from_array(X, chunks=(100, D)).map_blocks(record, dtype=X.dtype)
    s = streaming.make_stream(dx, labels, dtype=np.float32, check_y=lambda yb, n: yb,
                              batch_size=50, shuffle=True, rng=np.random.default_rng(1))
    with dask.config.set(scheduler="sync"):
        order = np.concatenate([yb.copy() for xb, yb in s if np.testing.assert_array_equal(
            xb[:, 0], yb.astype(np.float32)) is None])
    assert sorted(order) == list(range(n)) and (order != labels).any()
    assert sorted(computed) == list(range(10))   # each block computed once per epoch


def test_dask_unknown_chunks_are_a_clear_error(data):
    X, y = data
    dx = da.from_array(X, chunks=(100, D))
    dx = dx[dx[:, 0] > -10]    # unknown chunk sizes
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        net().fit(dx, y, verbose=0, epochs=1)


# --- evaluate / predict ------------------------------------------------------------------------

def test_evaluate_and_predict_stream(data, memmap, small_chunks, same_rows):
    X, y = data
    m = net()
    m.fit(X, y, epochs=2, verbose=0, seed=0)
    ref = m.evaluate(X, y)
    z = m.predict(X)
    dx = da.from_array(X, chunks=(70, 5))
    for args in [(memmap, y), (dx, y), (Seq(X, y),), (lambda: batches(X, y, 64),)]:
        got = m.evaluate(*args)
        assert got["n_samples"] == N and got["accuracy"] == ref["accuracy"]
        np.testing.assert_allclose(got["loss"], ref["loss"], rtol=1e-5)
        same_rows(m.predict(args[0]), z)
        same_rows(training.predict(m, args[0]), z)


def test_evaluate_regression_stream():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    Y = X @ rng.normal(size=(4, 2)) + 0.1 * rng.normal(size=(300, 2))
    m = Sequential(Dense(4, 2, seed=0, dtype=np.float64))
    m.fit(X, Y, loss="squared", epochs=5, verbose=0, seed=0)
    ref = m.evaluate(X, Y)
    got = m.evaluate(da.from_array(X, chunks=(70, 4)), da.from_array(Y, chunks=(50, 2)))
    np.testing.assert_allclose([got["loss"], got["r2"]], [ref["loss"], ref["r2"]], rtol=1e-9)


# --- partial_fit -------------------------------------------------------------------------------

def test_partial_fit_keeps_the_optimizer_state(data):
    X, y = data
    m = net()
    m.partial_fit(X[:300], y[:300], batch_size=50, shuffle=False, optimizer="adam")
    m.partial_fit(X[300:], y[300:], batch_size=50, shuffle=False, optimizer="adam")
    assert_same(m, reference(data))      # one epoch in order, Adam's step count continued
    assert m.epochs_trained_ == 2
    with pytest.raises(ValueError, match="keeps the model's optimizer"):
        m.partial_fit(X, y, optimizer="sgd")


def test_partial_fit_accepts_streams(data, memmap, small_chunks):
    X, y = data
    m = net()
    m.partial_fit(batches(X[:300], y[:300]))
    m.partial_fit(memmap[300:], y[300:], batch_size=50, shuffle=False)
    assert_same(m, reference(data))


def test_estimator_partial_fit_still_works(data):
    pytest.importorskip("sklearn")
    from fastnn import MLPClassifier

    X, y = data
    clf = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in range(0, N, 200):
            clf.partial_fit(X[s:s + 200], y[s:s + 200], classes=[0, 1, 2])
    assert clf.n_iter_ == 1 and clf.t_ == N   # as scikit-learn counts partial_fit calls


def test_readme_block_runs(tmp_path, monkeypatch):
    import pathlib
    import re

    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### Data larger than memory", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["proba"].shape == (20_000, 2)
    assert namespace["model"].evaluate(namespace["X"], namespace["y"])["accuracy"] > 0.95


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_memmap_pages_are_released_after_reading(tmp_path):
    def rss_file_mb():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssFile:"):
                    return int(line.split()[1]) / 1024

    path = tmp_path / "X.f64"
    with open(path, "wb") as f:
        f.truncate(64 << 20)
    mm = np.memmap(path, dtype=np.float64, mode="r", shape=(8192, 1024))
    before = rss_file_mb()
    assert mm[:].sum() == 0                        # touches every page
    assert rss_file_mb() > before + 60
    streaming._drop_pages(mm[1:])                  # an unaligned view: its whole range goes
    assert rss_file_mb() < before + 4
    assert mm[8000:].sum() == 0                    # still readable
