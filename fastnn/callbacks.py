"""Callbacks for :func:`fastnn.training.fit`: early stopping, learning-rate schedules,
checkpoints.

A callback sees the running fit through ``self.trainer`` (``model``, ``optimizer``, ``history``,
``stop_training``) and is called at ``on_train_begin``, ``on_epoch_begin(epoch)``,
``on_batch_end(batch, logs)`` (only when overridden), ``on_epoch_end(epoch, logs)`` and
``on_train_end``. ``logs`` at the end of an epoch holds ``loss``, ``accuracy``/``r2``,
``val_loss``, ``val_accuracy``/``val_r2``, ``lr``.

The lecture's two recipes are here: stop when the validation error increases, with some look
ahead (:class:`EarlyStopping`), and halve the learning rate for every epoch where the validation
error increases, optionally going back to the previous epoch (:class:`HalveLROnIncrease`).
"""
from __future__ import annotations

import copy
import math
import os

from fastnn import io
from fastnn.history import monitor_mode

__all__ = ["Callback", "EarlyStopping", "HalveLROnIncrease", "ReduceLROnPlateau",
           "ModelCheckpoint", "LambdaCallback"]


class Callback:
    """Base class: override the hooks you need."""

    trainer = None

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    @property
    def model(self):
        return self.trainer.model

    @property
    def optimizer(self):
        return self.trainer.optimizer

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def _event(self, epoch, message):
        if self.trainer is not None and hasattr(self.trainer, "log_event"):
            self.trainer.log_event(epoch, message)


class _Monitor:
    """``monitor`` compared in ``mode`` with a ``min_delta`` margin."""

    def __init__(self, monitor, mode, min_delta):
        self.monitor = monitor
        self.mode = monitor_mode(monitor, mode)
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.min_delta = float(min_delta)

    def value(self, logs):
        if self.monitor not in logs:
            raise KeyError(f"{type(self).__name__} monitors {self.monitor!r}, which fit does "
                           f"not report (available: {sorted(logs)}); pass validation_data or "
                           f"validation_split to monitor a validation quantity")
        return float(logs[self.monitor])

    def improved(self, current, reference) -> bool:
        """``current`` better than ``reference`` by more than min_delta."""
        if reference is None:
            return not math.isnan(current)
        if self.mode == "min":
            return current < reference - self.min_delta
        return current > reference + self.min_delta

    def worse(self, current, reference) -> bool:
        """``current`` worse than ``reference`` (strictly, beyond min_delta)."""
        if reference is None:
            return False
        if math.isnan(current):
            return True
        if self.mode == "min":
            return current > reference + self.min_delta
        return current < reference - self.min_delta


class EarlyStopping(Callback, _Monitor):
    """Stop training when ``monitor`` has not improved for ``patience`` epochs.

    The lecture: "stop training when validation error increases (with some look ahead)"; the
    look ahead is ``patience``.

    Parameters
    ----------
    monitor : str
        "val_loss" (default), "val_accuracy", "loss", ...
    patience : int
        Stop after this many consecutive epochs without improvement (0: at the first).
    min_delta : float
        Smaller changes do not count as an improvement.
    mode : "auto", "min" or "max"
        "auto": max for accuracy and R^2, min otherwise.
    restore_best_weights : bool
        At the end of training, load the weights of the best epoch (when it is not the last
        one).
    start_from_epoch : int
        Epochs to wait before monitoring.

    Attributes
    ----------
    best, best_epoch, stopped_epoch, wait

    References
    ----------
    Prechelt, L. (1998). Early stopping - but when? In Neural Networks: Tricks of the Trade,
    LNCS 1524, 55-69. Springer.
    """

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto",
                 restore_best_weights=False, start_from_epoch=0):
        _Monitor.__init__(self, monitor, mode, min_delta)
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.patience = int(patience)
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)

    def on_train_begin(self, logs=None):
        self.best = None
        self.best_epoch = None
        self.best_weights = None
        self.stopped_epoch = None
        self.wait = 0
        self._last_epoch = None
        self._seen = 0

    def on_epoch_end(self, epoch, logs=None):
        self._last_epoch = epoch
        self._seen += 1
        if self._seen <= self.start_from_epoch:
            return
        current = self.value(logs)
        if self.improved(current, self.best):
            self.best = current
            self.best_epoch = epoch
            self.wait = 0
            if self.restore_best_weights:
                self.best_weights = self.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True
            self._event(epoch, f"early stopping: {self.monitor} has not improved for "
                               f"{self.wait} epochs (best {self.best:.4g} at epoch "
                               f"{self.best_epoch + 1})")

    def on_train_end(self, logs=None):
        if (self.restore_best_weights and self.best_weights is not None
                and self.best_epoch != self._last_epoch):
            self.model.load_state_dict(self.best_weights)
            self.trainer.history.restored_epoch = self.best_epoch
            self._event(self._last_epoch, f"restored the weights of epoch "
                                          f"{self.best_epoch + 1} ({self.monitor}="
                                          f"{self.best:.4g})")


class HalveLROnIncrease(Callback, _Monitor):
    """The lecture's schedule: halve the learning rate after every epoch where the validation
    error increased (compared with the previous epoch).

    With ``rollback=True`` it also goes back to the previous epoch: the weights *and* the
    optimizer state (moments, momentum, step count) of the last epoch that did not increase the
    error are restored, and training continues from there with the smaller rate ("divide by 2
    and go back to the previous step"). The rejected epoch stays in the History, and the
    comparison for the next epoch is against the restored epoch's value.

    Parameters
    ----------
    monitor : str
        "val_loss" (default) or "val_accuracy", ... (an error: lower is better, unless ``mode``).
    factor : float in (0, 1)
        0.5 halves.
    rollback : bool
    min_lr : float
        The rate never goes below this.
    min_delta : float
        An increase must exceed this to count.
    mode : "auto", "min" or "max"
    """

    def __init__(self, monitor="val_loss", factor=0.5, rollback=False, min_lr=0.0,
                 min_delta=0.0, mode="auto"):
        _Monitor.__init__(self, monitor, mode, min_delta)
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.factor = float(factor)
        self.rollback = bool(rollback)
        self.min_lr = float(min_lr)

    def on_train_begin(self, logs=None):
        self.reference = None          # the previous (accepted) epoch's value
        self.reference_epoch = None
        self._snapshot = None          # (model state, optimizer state) of that epoch
        self.n_halvings = 0
        self.rollbacks = []            # epochs that were rolled back

    def on_epoch_end(self, epoch, logs=None):
        current = self.value(logs)
        if not self.worse(current, self.reference):
            self.reference = current
            self.reference_epoch = epoch
            if self.rollback:
                self._snapshot = (self.model.state_dict(),
                                  copy.deepcopy(self.optimizer.state_dict()))
            return
        opt = self.optimizer
        old_lr = float(opt.lr)
        new_lr = max(old_lr * self.factor, self.min_lr)
        msg = (f"{self.monitor} increased ({self.reference:.4g} -> {current:.4g}); "
               f"learning rate {old_lr:.3g} -> {new_lr:.3g}")
        if self.rollback and self._snapshot is not None:
            model_state, opt_state = self._snapshot
            self.model.load_state_dict(model_state)
            opt.load_state_dict(copy.deepcopy(opt_state))
            self.rollbacks.append(epoch)
            msg += f", rolled back to epoch {self.reference_epoch + 1}"
        else:
            self.reference = current
            self.reference_epoch = epoch
        opt.lr = new_lr
        self.n_halvings += 1
        self._event(epoch, msg)


class ReduceLROnPlateau(Callback, _Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for
    ``patience`` epochs; wait ``cooldown`` epochs after each reduction.

    Parameters
    ----------
    monitor : str
    factor : float in (0, 1)
    patience : int
    min_delta : float
    cooldown : int
    min_lr : float
    mode : "auto", "min" or "max"
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, min_delta=1e-4,
                 cooldown=0, min_lr=0.0, mode="auto"):
        _Monitor.__init__(self, monitor, mode, min_delta)
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.factor = float(factor)
        self.patience = int(patience)
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)

    def on_train_begin(self, logs=None):
        self.best = None
        self.wait = 0
        self.cooldown_counter = 0

    def on_epoch_end(self, epoch, logs=None):
        current = self.value(logs)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.improved(current, self.best):
            self.best = current
            self.wait = 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait >= self.patience:
            opt = self.optimizer
            old_lr = float(opt.lr)
            new_lr = max(old_lr * self.factor, self.min_lr)
            if new_lr < old_lr:
                opt.lr = new_lr
                self._event(epoch, f"{self.monitor} plateaued at {self.best:.4g}; learning "
                                   f"rate {old_lr:.3g} -> {new_lr:.3g}")
            self.wait = 0
            self.cooldown_counter = self.cooldown


class ModelCheckpoint(Callback, _Monitor):
    """Save the model after epochs (atomically, through :func:`fastnn.io.save`).

    Parameters
    ----------
    filepath : str
        May hold format fields filled from the epoch and logs, e.g.
        ``"ckpt/model-{epoch:03d}-{val_loss:.3f}.npz"`` (``epoch`` is 1-based).
    monitor : str
    save_best_only : bool
        Save only when ``monitor`` improved (the file then always holds the best model).
    mode : "auto", "min" or "max"
    save_optimizer : bool
        Store the optimizer state too, to resume training.

    A write goes to a locked temporary file renamed over the target, so an interruption never
    leaves a half-written checkpoint; the temporary of a writer killed mid-write is removed by
    the next save into the same directory (whatever the name the template gives it).
    """

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto",
                 min_delta=0.0, save_optimizer=False):
        _Monitor.__init__(self, monitor, mode, min_delta)
        self.filepath = os.fspath(filepath)
        self.save_best_only = bool(save_best_only)
        self.save_optimizer = bool(save_optimizer)

    def on_train_begin(self, logs=None):
        self.best = None
        self.saved = []

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if self.save_best_only:
            current = self.value(logs)
            if not self.improved(current, self.best):
                return
            self.best = current
        path = self.filepath.format(epoch=epoch + 1, **logs)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        io.save(self.model, path, optimizer=self.optimizer if self.save_optimizer else None)
        self.saved.append(path)
        self._event(epoch, f"saved {path}")


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    def __init__(self, on_train_begin=None, on_epoch_begin=None, on_epoch_end=None,
                 on_train_end=None, on_batch_end=None):
        self._fns = {"on_train_begin": on_train_begin, "on_epoch_begin": on_epoch_begin,
                     "on_epoch_end": on_epoch_end, "on_train_end": on_train_end}
        if on_batch_end is not None:
            self.on_batch_end = on_batch_end

    def on_train_begin(self, logs=None):
        if self._fns["on_train_begin"]:
            self._fns["on_train_begin"](logs)

    def on_epoch_begin(self, epoch, logs=None):
        if self._fns["on_epoch_begin"]:
            self._fns["on_epoch_begin"](epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self._fns["on_epoch_end"]:
            self._fns["on_epoch_end"](epoch, logs)

    def on_train_end(self, logs=None):
        if self._fns["on_train_end"]:
            self._fns["on_train_end"](logs)
