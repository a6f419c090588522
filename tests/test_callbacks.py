"""Callbacks driven by controlled validation sequences (no training needed), then in fit."""

import numpy as np
import pytest

from fastnn.callbacks import (Callback, EarlyStopping, HalveLROnIncrease, LambdaCallback,
                              ReduceLROnPlateau)
from fastnn.training import History, Trainer


class FakeModel:
    """'weights' = the epoch that produced them; state_dict copies like the real one."""

    def __init__(self):
        self.w = np.array([-1.0])

    def state_dict(self):
        return {"w": self.w.copy()}

    def load_state_dict(self, sd):
        self.w[...] = sd["w"]


class FakeOptimizer:
    def __init__(self, lr):
        self.param_groups = [{"params": [], "lr": lr}]
        self.state = {"step": np.array(0), "moment": np.zeros(2)}

    @property
    def lr(self):
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, v):
        for g in self.param_groups:
            g["lr"] = v

    def state_dict(self):  # returns references, like PyTorch's: callers must copy
        return {"state": self.state, "param_groups": [dict(g) for g in self.param_groups]}

    def load_state_dict(self, sd):
        self.state = {k: np.array(v, copy=True) for k, v in sd["state"].items()}
        self.param_groups = [dict(g) for g in sd["param_groups"]]


def drive(callbacks, values, monitor="val_loss", lr=0.1):
    """Run epochs: each 'trains' (weights := epoch, optimizer step := epoch) then reports."""
    model, opt = FakeModel(), FakeOptimizer(lr)
    trainer = Trainer(model, opt, None, History(), verbose=0)
    for cb in callbacks:
        cb.set_trainer(trainer)
        cb.on_train_begin({})
    trace = []
    for epoch, v in enumerate(values):
        model.w[...] = epoch
        opt.state["step"][...] = epoch
        opt.state["moment"][...] = epoch
        logs = {monitor: v, "lr": opt.lr}
        trainer.history.append(epoch, logs)
        for cb in callbacks:
            cb.on_epoch_end(epoch, dict(logs))
        trace.append((opt.lr, float(model.w[0]), int(opt.state["step"])))
        if trainer.stop_training:
            break
    for cb in callbacks:
        cb.on_train_end({})
    return trace, model, opt, trainer


VAL = [1.0, 0.8, 0.9, 0.7, 0.75, 0.72, 0.6]


def test_halving_schedule_halves_after_each_increase():
    cb = HalveLROnIncrease()
    trace, *_ = drive([cb], VAL)
    # compared with the previous epoch: increases at epochs 2 (0.8->0.9) and 4 (0.7->0.75)
    assert [t[0] for t in trace] == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.025]
    assert [t[1] for t in trace] == list(range(7))  # no rollback: weights untouched
    assert cb.n_halvings == 2 and cb.rollbacks == []


def test_halving_schedule_with_rollback_restores_weights_and_optimizer_state():
    cb = HalveLROnIncrease(rollback=True)
    trace, model, opt, trainer = drive([cb], VAL)
    lrs = [t[0] for t in trace]
    weights = [t[1] for t in trace]
    steps = [t[2] for t in trace]
    # epoch 2 rolled back to 1; epoch 4 rolled back to 3; epoch 5 (0.72) is still worse than the
    # restored epoch 3 (0.7): halved again and rolled back again; epoch 6 improves.
    assert lrs == [0.1, 0.1, 0.05, 0.05, 0.025, 0.0125, 0.0125]
    assert weights == [0, 1, 1, 3, 3, 3, 6]
    assert steps == [0, 1, 1, 3, 3, 3, 6]
    assert cb.rollbacks == [2, 4, 5]
    assert opt.state["moment"][0] == 6
    assert any("rolled back to epoch 4" in msg for _, msg in trainer.history.events)


def test_halving_schedule_accuracy_mode_and_min_lr():
    cb = HalveLROnIncrease(monitor="val_accuracy", min_lr=0.04)
    trace, *_ = drive([cb], [0.5, 0.6, 0.55, 0.7, 0.65], monitor="val_accuracy")
    assert [t[0] for t in trace] == [0.1, 0.1, 0.05, 0.05, 0.04]  # a drop in accuracy = worse


def test_early_stopping_stops_and_restores_best():
    es = EarlyStopping(patience=2, restore_best_weights=True)
    values = [1.0, 0.8, 0.7, 0.71, 0.75, 0.69, 0.5]
    trace, model, opt, trainer = drive([es], values)
    assert len(trace) == 5                      # stopped after 2 epochs without improvement
    assert es.stopped_epoch == 4 and es.best_epoch == 2 and es.best == 0.7
    assert model.w[0] == 2                      # best weights restored at the end
    assert trainer.stop_training


def test_early_stopping_min_delta_and_no_restore():
    es = EarlyStopping(patience=2, min_delta=0.05)
    trace, model, *_ = drive([es], [1.0, 0.97, 0.96, 0.5])
    assert len(trace) == 3 and model.w[0] == 2  # 0.97 and 0.96 are not improvements > 0.05
    es = EarlyStopping(patience=0, restore_best_weights=True)
    trace, model, *_ = drive([es], [1.0, 0.9, 0.8])
    assert len(trace) == 3 and model.w[0] == 2  # never stopped, last epoch is the best


def test_monitor_missing_is_a_clear_error():
    with pytest.raises(KeyError, match="validation_data"):
        drive([EarlyStopping(monitor="val_loss")], [1.0], monitor="loss")


def test_reduce_lr_on_plateau():
    cb = ReduceLROnPlateau(factor=0.5, patience=2, min_delta=0.0, cooldown=1)
    trace, *_ = drive([cb], [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.8])
    # 2 epochs without improvement -> reduce; the cooldown epoch resets the count
    assert [t[0] for t in trace] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.025]


def test_lambda_callback_and_batch_hook():
    seen = []
    cb = LambdaCallback(on_epoch_end=lambda e, logs: seen.append((e, logs["val_loss"])))
    drive([cb], [3.0, 2.0])
    assert seen == [(0, 3.0), (1, 2.0)]
    assert isinstance(cb, Callback)

