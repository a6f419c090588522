"""A NaN or infinite training loss: reported with epoch and batch, or rolled back
(``fit(..., on_divergence="restore")``) to the weights and optimizer state of the last good
epoch end."""
import copy

import numpy as np
import pytest

from fastnn import Dense, Sequential
from fastnn.callbacks import LambdaCallback
from fastnn.losses import CrossEntropyLoss


class _PoisonedLoss(CrossEntropyLoss):
    """Cross-entropy whose value becomes NaN (or inf) at one (epoch, batch), counted by calls."""

    def __init__(self, at_call, value=float("nan")):
        super().__init__()
        self.at_call, self.value, self.calls = at_call, value, 0

    def loss_and_grad(self, z, y, grad_out=None):
        loss, g = super().loss_and_grad(z, y, grad_out=grad_out)
        self.calls += 1
        if self.calls == self.at_call:
            return self.value, g
        return loss, g


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    return X, y


def _net():
    return Sequential(Dense(4, 8, activation="tanh", seed=0), Dense(8, 3, seed=1))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_divergence_raises_with_epoch_and_batch(value):
    X, y = _data()
    m = _net()
    # 40 samples, batch 10: 4 batches per epoch; call 7 is epoch 2, batch 3
    with pytest.raises(FloatingPointError, match=r"at epoch 2, batch 3 of 4 .*diverged"):
        m.fit(X, y, loss=_PoisonedLoss(7, value), epochs=3, batch_size=10, verbose=0, seed=0)


def test_real_divergence_is_detected():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 4)).astype(np.float32) * 100
    y = rng.standard_normal((64, 1)).astype(np.float32) * 1e4
    m = Sequential(Dense(4, 16, activation="relu", seed=0), Dense(16, 1, seed=1))
    with pytest.raises(FloatingPointError, match=r"at epoch \d+, batch \d+ of 4"):
        m.fit(X, y, loss="squared", optimizer="sgd", lr=1e3, epochs=50, batch_size=16,
              verbose=0, seed=0)


def test_restore_goes_back_to_the_last_good_epoch_end():
    X, y = _data()
    m = _net()
    snapshots = {}

    def keep(epoch, logs):
        snapshots[epoch] = ([p.data.copy() for p in m.parameters()],
                            copy.deepcopy(m.optimizer.state_dict()))

    # call 11 = epoch 3, batch 3: epochs 1 and 2 are good
    with pytest.warns(RuntimeWarning, match="restored the weights and optimizer state of the "
                                            "end of epoch 2"):
        hist = m.fit(X, y, loss=_PoisonedLoss(11), epochs=5, batch_size=10, verbose=0, seed=0,
                     on_divergence="restore", callbacks=[LambdaCallback(on_epoch_end=keep)])
    assert hist.diverged == (2, 2)  # 0-based epoch and batch
    assert len(hist) == 2 and hist.stopped_epoch == 2
    assert any("diverged" in msg for _, msg in hist.events)
    weights, opt_state = snapshots[1]
    for p, w in zip(m.parameters(), weights):
        np.testing.assert_array_equal(p.data, w)
    restored = m.optimizer.state_dict()
    assert restored["param_groups"] == opt_state["param_groups"]
    for k, entry in opt_state["state"].items():
        for name, v in entry.items():
            np.testing.assert_array_equal(restored["state"][k][name], v)
    assert m.epochs_trained_ == 2
    # training can continue from there
    h2 = m.fit(X, y, epochs=1, batch_size=10, verbose=0, seed=0)
    assert np.isfinite(h2["loss"][0]) and h2.epoch == [2]


def test_restore_in_the_first_epoch_goes_back_to_the_start():
    X, y = _data()
    m = _net()
    before = [p.data.copy() for p in m.parameters()]
    with pytest.warns(RuntimeWarning, match="start of training"):
        hist = m.fit(X, y, loss=_PoisonedLoss(2), epochs=3, batch_size=10, verbose=0,
                     on_divergence="restore")
    assert hist.diverged == (0, 1) and len(hist) == 0
    for p, w in zip(m.parameters(), before):
        np.testing.assert_array_equal(p.data, w)


def test_on_divergence_is_validated():
    X, y = _data()
    with pytest.raises(ValueError, match="on_divergence must be 'raise' or 'restore'"):
        _net().fit(X, y, verbose=0, on_divergence="ignore")
