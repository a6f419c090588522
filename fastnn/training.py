"""The training loop: ``fit``, ``evaluate``, ``predict`` for any fastnn network.

One epoch is the lecture's mini-batch SGD: visit the training set in seeded, shuffled
mini-batches; for each, run forward, compute the loss and its gradient with respect to the
network's output, backpropagate, and let the optimizer update the parameters. After each epoch
the validation set (if any) is evaluated and the callbacks (early stopping, learning-rate
schedules, checkpoints) run.

``Sequential.fit``/``evaluate`` call these functions; the network keeps its loss and optimizer
(``model.loss``, ``model.optimizer``), so a second ``fit`` continues where the first stopped,
with the optimizer's state (Adam's moments, momentum buffers) intact.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import os
import sys
import textwrap
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from fastnn import streaming
from fastnn._evaluation import RunningMetrics, model_dtype, n_outputs, predict_raw
from fastnn._threads import exclusive_use
from fastnn._validation import check_float_array
from fastnn.callbacks import Callback
from fastnn.data import BatchIterator, check_random_state, train_test_split
from fastnn.functional import engine as _engine
from fastnn.history import History
from fastnn.losses import get_loss
from fastnn.optim import OPTIMIZERS

# History is documented in fastnn.history; fastnn.training.History stays importable
__all__ = ["fit", "partial_fit", "evaluate", "predict", "predict_classes", "Trainer",
           "make_optimizer", "r2_score"]

_EVAL_BATCH = 1024
_OPTIMIZERS = {name: cls.__name__ for name, cls in OPTIMIZERS.items()}


# --------------------------------------------------------------------------------------------
# Optimizer and loss resolution
# --------------------------------------------------------------------------------------------

def make_optimizer(optimizer, params, lr=None, **kwargs):
    """An optimizer from a name of :data:`fastnn.optim.OPTIMIZERS` ("sgd", "adam", "adagrad",
    "rmsprop") or an Optimizer instance."""
    if isinstance(optimizer, str):
        cls = OPTIMIZERS.get(optimizer.lower())
        if cls is None:
            raise ValueError(f"unknown optimizer {optimizer!r}; expected one of "
                             f"{', '.join(OPTIMIZERS)} or an optim.Optimizer")
        if lr is not None:
            kwargs["lr"] = float(lr)
        return cls(params, **kwargs)
    if kwargs:
        raise ValueError(f"optimizer options {sorted(kwargs)} need an optimizer name, not an "
                         f"instance")
    if lr is not None:
        optimizer.lr = float(lr)
    return optimizer


def _optimizer_params_problem(optimizer, params):
    """None when the optimizer updates some of ``params`` and nothing else, else why not."""
    own = {id(p) for p in params}
    held = [p for g in optimizer.param_groups for p in g["params"]]
    foreign = [p for p in held if id(p) not in own]
    if foreign:
        names = ", ".join(repr(p) for p in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        return (f"the optimizer holds {len(foreign)} of {len(held)} parameters that do not "
                f"belong to the model ({names}); build it from model.parameters() (or a subset "
                f"of them to freeze the others)")
    if not held:
        return "the optimizer holds none of the model's parameters; build it from " \
               "model.parameters()"
    return None


def _check_optimizer_params(optimizer, params) -> None:
    """An optimizer given to ``fit`` must update only the model's parameters, and at least one.

    A subset is allowed: the parameters left out are frozen (their gradients are computed, never
    applied). Parameters of another network, or none of this one's, are an error: training would
    change nothing in the model.
    """
    if not hasattr(optimizer, "param_groups"):
        raise TypeError(f"optimizer must be a name ({', '.join(_OPTIMIZERS)}), a "
                        f"fastnn.optim.Optimizer or None, got {type(optimizer).__name__}")
    problem = _optimizer_params_problem(optimizer, params)
    if problem is not None:
        raise ValueError(problem)


def _nonfinite_parameter(model, optimizer):
    """None when the parameters the optimizer updates are finite, else the name of the first
    model parameter holding NaN or inf."""
    check = getattr(optimizer, "_params_finite", None)
    if check is not None and check():  # one compiled pass per parameter group
        return None
    for name, p in model.named_parameters():
        if not np.isfinite(p.data).all():
            return name or "unnamed"
    return None


def _prepare_y(y, task, dtype, n, n_classes=None):
    if isinstance(y, np.ndarray):
        a = y
    else:
        a = np.asarray(y)
    if a.shape[0] != n:
        raise ValueError(f"X has {n} samples but y has {a.shape[0]}")
    if task in ("classification",) and a.ndim == 1:
        if a.dtype.kind == "f":
            if not np.isfinite(a).all() or (a != np.round(a)).any():
                raise ValueError("y must hold integer class labels for a classification loss")
        elif a.dtype.kind not in "iu":
            raise TypeError(f"y must hold integer class labels, got dtype {a.dtype}")
        # checked here, once, not only batch by batch (a bad label in a late batch would stop
        # fit after part of an epoch's updates)
        if n_classes and a.size and (a.min() < 0 or a.max() >= n_classes):
            raise ValueError(f"y labels must be in [0, {n_classes}) for a network with "
                             f"{n_classes} outputs, got values in [{a.min()}, {a.max()}]")
        return np.ascontiguousarray(a, dtype=np.intp)
    if a.dtype.kind in "iub" and task == "multilabel" and a.ndim == 1:
        return np.ascontiguousarray(a, dtype=np.intp)
    return check_float_array(a.astype(dtype, copy=False) if a.dtype.kind in "iub" else a,
                             "y", dtype=dtype, finite=True)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

def r2_score(y_true, y_pred) -> float:
    """Coefficient of determination, averaged over outputs (scikit-learn's uniform average)."""
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64).reshape(yt.shape) if np.asarray(
        y_pred).size == yt.size else np.asarray(y_pred, dtype=np.float64)
    if yt.ndim == 1:
        yt, yp = yt[:, None], yp.reshape(-1, 1)
    ss_res = ((yt - yp) ** 2).sum(axis=0)
    ss_tot = ((yt - yt.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0),
                      np.where(ss_res == 0, 1.0, 0.0))
    return float(r2.mean())


# --------------------------------------------------------------------------------------------
# Evaluation and prediction
# --------------------------------------------------------------------------------------------

def predict(model, X, batch_size: int = _EVAL_BATCH) -> np.ndarray:
    """The network's raw output (logits for classifiers) in evaluation mode, in batches.

    X may also be a memmap, a Dask array or a batch source (:mod:`fastnn.streaming`), read
    chunk by chunk; the output is one NumPy array."""
    if streaming.is_stream(X):
        return streaming.predict_stream(model, X, batch_size)
    X = check_float_array(X, "X", ndim=2, dtype=model_dtype(model), contiguous=False)
    return predict_raw(model, X, batch_size)


def predict_classes(model, X, batch_size: int = _EVAL_BATCH, loss=None) -> np.ndarray:
    """Predicted class labels: argmax of the output (``z > 0`` for a binary loss)."""
    loss = get_loss(loss if loss is not None else (getattr(model, "loss", None)
                                                   or "cross_entropy"))
    z = predict(model, X, batch_size)
    if loss.task == "binary":
        return (z.reshape(z.shape[0], -1)[:, 0] > 0).astype(np.int64)
    return z.argmax(axis=1)


def evaluate(model, X, y=None, loss=None, batch_size: int = _EVAL_BATCH) -> dict:
    """Loss and accuracy (R^2 for regression) of ``model`` on (X, y), in evaluation mode.

    Parameters
    ----------
    X, y : arrays, or streamed data as in :func:`fit` (a memmap or Dask X with its y, or a
        source of (X_batch, y_batch) pairs with ``y=None``), evaluated batch by batch.
    loss : str or Loss, optional
        Default: the loss the model was fitted with, else cross-entropy.

    Returns
    -------
    dict with ``loss`` and ``accuracy`` (classification, binary) or ``r2`` (regression), plus
    ``n_samples``.
    """
    loss = get_loss(loss if loss is not None else (getattr(model, "loss", None)
                                                   or "cross_entropy"))
    dtype = model_dtype(model)
    stream = _stream(model, X, y, loss, batch_size=batch_size, shuffle=False, rng=None)
    if stream is not None:
        return streaming.evaluate_stream(model, stream, loss)
    if y is None:
        raise ValueError("y is required when X is an array")
    X = check_float_array(X, "X", ndim=2, dtype=dtype, contiguous=False)  # converted by batch
    y = _prepare_y(y, loss.task, dtype, X.shape[0], n_outputs(model))
    z = predict_raw(model, X, batch_size)
    return _metrics_from_output(loss, z, y)


def _metrics_from_output(loss, z, y) -> dict:
    out = {"loss": float(loss.loss(z, y)), "n_samples": int(z.shape[0])}
    if loss.task == "classification":
        truth = y if y.ndim == 1 else y.argmax(axis=1)
        out["accuracy"] = float(np.mean(z.argmax(axis=1) == truth)) if z.shape[0] else \
            float("nan")
    elif loss.task == "binary":
        m = z.shape[0]
        out["accuracy"] = float(np.mean((z.reshape(m, -1)[:, 0] > 0)
                                        == (y.reshape(m, -1)[:, 0] > 0.5)))
    elif loss.task == "regression":
        out["r2"] = r2_score(y.reshape(z.shape[0], -1), z)
    return out


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------

class Trainer:
    """The state of a running ``fit``, shared with the callbacks.

    Attributes: ``model``, ``optimizer``, ``loss``, ``history``, ``epoch`` (current, 0-based),
    ``stop_training`` (set True to stop after the current epoch), ``verbose``.
    """

    def __init__(self, model, optimizer, loss, history, verbose):
        self.model = model
        self.optimizer = optimizer
        self.loss = loss
        self.history = history
        self.verbose = verbose
        self.epoch = 0
        self.stop_training = False

    def log_event(self, epoch: int, message: str) -> None:
        """Record what a callback did (and print it when verbose)."""
        self.history.events.append((epoch, message))
        if self.verbose:
            _write_line(textwrap.fill(f"epoch {epoch + 1}: {message}", _line_width(sys.stderr),
                                      subsequent_indent="    ", break_on_hyphens=False))


def _write_line(msg):
    try:
        from tqdm import tqdm
        tqdm.write(msg, file=sys.stderr)
        sys.stderr.flush()   # a log file or a CI console sees each epoch as it ends
    except ImportError:  # pragma: no cover - tqdm is a dependency
        print(msg, file=sys.stderr, flush=True)


def _bar_width() -> dict:
    # a pseudo-terminal that reports a 0x0 size would get no bar at all from tqdm
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        size = os.terminal_size((0, 0))
    if size.columns > 0 and size.lines > 0 and not os.environ.get("COLUMNS"):
        return {"dynamic_ncols": True}
    return {"ncols": _line_width(sys.stderr), "nrows": size.lines or 24}


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:
        return False


def _in_notebook() -> bool:
    """True inside a Jupyter (IPython kernel) session - tqdm.auto's test, without importing
    IPython when it is not loaded already."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:
        return False


def _progress_mode(verbose) -> str | None:
    """Keras's "auto": a live bar on a terminal or in a notebook (verbose=1), one line per epoch
    otherwise (scripts, logs, CI; always with verbose=2), nothing with verbose=0."""
    if not verbose:
        return None
    if verbose == 1 and (_isatty(sys.stderr) or _in_notebook()):
        return "bar"
    return "lines"


def _line_width(stream) -> int:
    """Columns for a finished line: $COLUMNS, else the terminal's width, else 80."""
    cols = os.environ.get("COLUMNS", "")
    if cols.isdigit() and int(cols) > 0:
        return max(int(cols), 40)
    try:
        width = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        width = 0
    return max(width, 40) if width > 0 else 80


def _wrap(fields, width) -> str:
    """Join fields with " - " into lines of at most ``width`` columns, breaking only between
    fields (continuation lines indented); a field is never cut."""
    lines, line = [], ""
    for f in fields:
        if line and len(line) + 3 + len(f) > width:
            lines.append(line)
            line = "    " + f
        else:
            line = f if not line else f"{line} - {f}"
    lines.append(line)
    return "\n".join(lines)


def _fmt_logs(logs) -> list:
    parts = []
    for k, v in logs.items():
        if k in ("time", "samples_per_s", "lr"):
            continue
        parts.append(f"{k}={v:.4f}")
    if "lr" in logs:
        parts.append(f"lr={logs['lr']:.3g}")
    if "time" in logs:
        parts.append(f"{logs['time']:.2f}s")
    if "samples_per_s" in logs:
        parts.append(f"{logs['samples_per_s']:,.0f} samples/s")
    return parts


def _stream(model, X, y, loss_fn, *, batch_size, shuffle, rng, steps_per_epoch=None,
            name="X"):
    """A :class:`fastnn.streaming.Stream` of checked batches, or None for in-memory arrays."""
    dtype = model_dtype(model)
    n_out = n_outputs(model)
    in_features = model.input_features() if hasattr(model, "input_features") else None
    return streaming.make_stream(
        X, y, dtype=dtype, batch_size=batch_size, shuffle=shuffle, rng=rng,
        steps_per_epoch=steps_per_epoch, n_features=in_features, name=name,
        check_y=lambda yb, n: _prepare_y(yb, loss_fn.task, dtype, n, n_out))


@exclusive_use("fit")  # one fit per network at a time, no predict from other threads
def fit(model, X, y=None, loss=None, optimizer=None, epochs: int = 10, batch_size: int = 32,
        shuffle: bool = True, validation_data=None, validation_split: float = 0.0,
        callbacks=None, verbose=1, seed=None, lr=None,
        on_divergence: str = "raise", steps_per_epoch: int | None = None,
        engine="auto") -> History:
    """Train ``model`` on (X, y) with mini-batches; returns a :class:`~fastnn.history.History`.

    Parameters
    ----------
    model : fastnn network (Sequential or any Module with forward/backward/parameters)
    X : ndarray (n_samples, n_features) in the model's dtype, or streamed data
        A float64 array for a float32 model (or the reverse) is an error, not a silent copy:
        convert it once with ``X.astype(model.dtype)``. Data larger than memory
        (:mod:`fastnn.streaming`): a NumPy memmap or a Dask array/DataFrame with its ``y``,
        read chunk by chunk; or, with ``y=None``, a source of ``(X_batch, y_batch)`` pairs: a
        Keras-style Sequence, a zero-argument callable returning a new iterable per epoch, a
        re-iterable, or a generator (one epoch, or ``steps_per_epoch`` batches per epoch).
        Streamed batches of any numeric dtype are converted to the model's dtype batch by
        batch.
    y : targets (None when X yields pairs)
        Integer labels (n_samples,) for cross-entropy and sparsemax losses (or an
        (n_samples, n_classes) target matrix), values (n_samples, n_outputs) for the squared
        loss, 0/1 for binary cross-entropy.
    loss : str or Loss, optional
        A name of :data:`fastnn.losses.LOSS_TABLE` ("cross_entropy", "sparsemax",
        "sparsemax_multilabel", "binary_cross_entropy", "squared", or an alias) or a Loss object.
        Default: the model's loss from a previous fit, else "cross_entropy".
    optimizer : str, Optimizer or None
        "adam", "sgd", "adagrad", "rmsprop" or an :mod:`fastnn.optim` optimizer over
        ``model.parameters()`` (or a subset of them: the others are frozen). None: the
        model's optimizer from a previous fit (continuing training keeps its state: moments,
        momentum, step count, and a subset stays a subset), else Adam.
    epochs : int
        Number of passes over the training set in this call.
    batch_size : int
    shuffle : bool
        Reshuffle (a seeded permutation of indices) every epoch.
    validation_data : (X_val, y_val) or a batch source, optional
        Arrays, a memmap or Dask X_val with its y_val, or a source of pairs as for X
        (evaluated batch by batch after every epoch; a one-shot generator allows one epoch).
    validation_split : float in [0, 1)
        Hold out this fraction of (X, y) for validation (ignored if validation_data is
        given). Unlike Keras, which takes the last samples, fastnn draws a random subset -
        stratified for classification - with ``seed``.
    callbacks : list of fastnn.callbacks.Callback
    verbose : {0, 1, 2, "auto"}
        0: silent. 1 or "auto" (Keras's): a live progress bar per epoch (loss, metric) when
        stderr is a terminal, a widget in a Jupyter notebook, otherwise (scripts, logs, CI) one
        line per epoch. 2: one line per epoch, always. The finished epoch's line (loss,
        metrics, validation metrics, learning rate, time, samples/s) is wrapped between fields
        to the terminal width ($COLUMNS, else 80 columns), never cut; what callbacks did
        (early stopping, learning-rate changes) is printed too.
    seed : None, int or np.random.Generator
        Seed of the batch order (and of ``validation_split``).
    lr : float, optional
        Learning rate for an optimizer given by name (or to set on the model's optimizer).
    on_divergence : {"raise", "restore"}
        What to do when training diverges: the loss of a batch is NaN or infinite (checked
        before each update), or a parameter holds NaN or inf at the end of an epoch (checked
        once per epoch, so the last update of ``fit`` is covered too). "raise": a
        FloatingPointError naming the epoch and batch (and the parameter). "restore": put back
        the weights and the optimizer state (moments, step count, learning rate) of the last
        good epoch end (or of the start of this call), warn (RuntimeWarning), record the event
        in ``History.events`` and ``History.diverged`` = (epoch, batch) (0-based; for
        non-finite parameters the last batch of the epoch, after which they were found), and
        stop training. "restore" copies the parameters and optimizer state once per epoch.
    steps_per_epoch : int, optional
        Batches per epoch (streamed data only): an epoch ends after this many batches or when
        the source ends. A one-shot generator is then drawn from across epochs; training stops
        (with a RuntimeWarning) when it runs dry.
    engine : {"auto", True, False}
        How the epochs run. "auto": on the compiled training engine
        (:mod:`fastnn.functional.engine`: many steps per call in one parallel region, the
        same updates to rounding, the same weights for any thread count) when it covers the
        network, the loss, the optimizer and in-memory data and no callback takes
        ``on_batch_end``, else on the per-module loop. True: the engine (one step per call
        when a callback takes ``on_batch_end``), or a ValueError saying what it does not
        cover. False: the per-module loop. ``history.params["engine"]`` records which ran;
        on the engine ``history.params["engine_threads"]`` the thread counts its runs started
        with and ``["engine_fallbacks"]`` the runs that finished on one thread (another
        process held a core).

    Returns
    -------
    History

    Raises
    ------
    FloatingPointError
        When the loss becomes NaN or infinite (with ``on_divergence="raise"``), naming the epoch
        and batch (the parameters are left as they were after the last finite step's update);
        or when a parameter holds NaN or inf at the end of an epoch, naming it and the epoch
        (the parameters are left as they are).
    ValueError
        When ``optimizer`` is an Optimizer that holds parameters which are not the model's, or
        none of the model's (a subset is allowed: the others stay frozen).
    """
    state = _prepare_fit(model, X, y, loss, optimizer, epochs, batch_size, shuffle,
                         validation_data, validation_split, callbacks, verbose, seed, lr,
                         on_divergence, steps_per_epoch, engine)
    trainer, callbacks, opt = state.trainer, state.callbacks, state.optimizer
    for cb in callbacks:
        cb.on_train_begin({})
    for e in range(state.start_epoch, state.start_epoch + state.epochs):
        trainer.epoch = e
        good = None  # on_divergence="restore": (epoch, model state, optimizer state)
        if state.on_divergence == "restore":
            good = (e, model.state_dict(), copy.deepcopy(opt.state_dict()))
        for cb in callbacks:
            cb.on_epoch_begin(e, {})
        model.train()
        epoch_lr = float(opt.lr)
        t0 = time.perf_counter()
        bar = _epoch_bar(state, e) if state.show_bar else None
        result = state.run_epoch(state, e, bar)
        elapsed = time.perf_counter() - t0
        diverged = _divergence(state, e, result)
        if diverged is not None:
            if bar is not None:
                bar.close()
            msg, advice, batch = diverged
            if good is None:
                raise FloatingPointError(msg + advice)
            return _restore_after_divergence(trainer, callbacks, good, msg, e, batch)
        if _log_epoch(state, e, result, epoch_lr, elapsed, bar):
            break
    for cb in callbacks:
        cb.on_train_end({})
    return state.history


# --- fit, stage 1: check the arguments, the data and the optimizer -----------------------------

@dataclasses.dataclass(eq=False)
class _FitState:
    """What the stages of one ``fit`` call share (built once by :func:`_prepare_fit`).

    ``batches`` yields (X_batch, y_batch) pairs, one pass per epoch (the Stream ``stream``, or
    a BatchIterator over the in-memory arrays); ``n_batches`` is its length ("?" for a stream
    of unknown length). Validation is ``val_stream`` or the arrays ``X_val``/``y_val`` (or
    neither). ``run_epoch`` is the epoch runner chosen by :func:`_epoch_runner`.
    """

    model: Any
    optimizer: Any
    loss_fn: Any
    n_outputs: int | None
    history: History
    trainer: Trainer
    callbacks: list
    batch_callbacks: list          # those that override on_batch_end
    verbose: int
    show_bar: bool
    epochs: int                    # epochs of this call, from start_epoch
    start_epoch: int
    n_train: int
    batches: Any
    n_batches: Any
    stream: Any
    steps_per_epoch: int | None
    val_stream: Any
    X_val: Any
    y_val: Any
    on_divergence: str
    run_epoch: Callable | None = None
    engine: Any = None             # the TrainingEngine that runs the epochs, or None
    engine_data: tuple = ()        # (X, y) as the engine reads them
    grad_buffers: dict = dataclasses.field(default_factory=dict)   # loss gradients, by shape


def _prepare_fit(model, X, y, loss, optimizer, epochs, batch_size, shuffle, validation_data,
                 validation_split, callbacks, verbose, seed, lr, on_divergence,
                 steps_per_epoch, engine="auto") -> _FitState:
    """Check fit's arguments and data, resolve the loss and the optimizer (kept on the model),
    and set up the history, the trainer seen by the callbacks and the batch source. Raises
    before the model changes when an argument is wrong."""
    verbose = _check_fit_arguments(epochs, batch_size, verbose, on_divergence)
    if not (engine is True or engine is False or engine == "auto"):
        raise ValueError(f"engine must be 'auto', True or False, got {engine!r}")
    if loss is None:
        loss = getattr(model, "loss", None) or "cross_entropy"
    loss_fn = get_loss(loss)
    # the network's n_threads ("threads for every kernel call") also holds for the loss and the
    # optimizer that fit makes from a name
    nt = getattr(model, "n_threads", None)
    made = {} if nt is None else {"n_threads": nt}
    if made and loss_fn is not loss:
        loss_fn.n_threads = nt
    n_out = n_outputs(model)
    rng = check_random_state(seed)
    stream, X, y, val_stream, X_val, y_val = _fit_data(
        model, X, y, loss_fn, n_out, epochs, batch_size, shuffle, validation_data,
        validation_split, steps_per_epoch, rng)
    n_train = stream.n_samples if stream is not None else int(X.shape[0])
    opt = _fit_optimizer(model, optimizer, lr, made)
    eng = None
    callbacks = list(callbacks or [])
    batch_cbs = [cb for cb in callbacks if _overrides(cb, "on_batch_end")]
    # With on_batch_end callbacks Python runs after every step, and an engine call per step
    # would copy the parameters in and out each time: "auto" keeps the module loop then.
    if engine is True or (engine == "auto" and not batch_cbs):
        reason = ("the data is streamed" if stream is not None
                  else _engine.why_not(model, loss_fn, opt, y))
        if reason is None:
            eng = _engine.compile_training(model, loss_fn, opt, getattr(model, "n_threads",
                                                                        None), y=y)
            # the engine keeps no module's forward arrays: a backward after this fit needs a
            # new forward (it raises, instead of backpropagating through a stale batch)
            for m in model.modules():
                m._clear_forward_cache()
        elif engine is True:
            raise ValueError(f"engine=True, but the training engine does not cover this fit: "
                             f"{reason}")
    model.loss = loss_fn
    model.optimizer = opt

    history = History()
    history.params = {"epochs": epochs, "batch_size": int(batch_size),
                      "n_samples": n_train,
                      "n_val_samples": (val_stream.n_samples if val_stream is not None else
                                        0 if X_val is None else int(X_val.shape[0])),
                      "engine": eng is not None}
    if eng is not None:
        # the thread counts the engine's runs started with, and the runs that finished on one
        # thread because the team waited at its barriers (another process held a core)
        history.params.update(engine_threads=[], engine_fallbacks=0)
    trainer = Trainer(model, opt, loss_fn, history, verbose)
    for cb in callbacks:
        if hasattr(cb, "set_trainer"):
            cb.set_trainer(trainer)

    show_bar = _progress_mode(verbose) == "bar"
    start_epoch = int(getattr(model, "epochs_trained_", 0) or 0)
    if stream is not None:
        batches = stream
        n_batches = stream.n_batches if stream.n_batches is not None else "?"
    else:
        batches = BatchIterator(X, y, batch_size=int(batch_size), shuffle=shuffle, seed=rng)
        n_batches = len(batches)
    history.diverged = None
    state = _FitState(
        model=model, optimizer=opt, loss_fn=loss_fn, n_outputs=n_out, history=history,
        trainer=trainer, callbacks=callbacks, batch_callbacks=batch_cbs, verbose=verbose,
        show_bar=show_bar, epochs=epochs, start_epoch=start_epoch, n_train=n_train,
        batches=batches, n_batches=n_batches, stream=stream, steps_per_epoch=steps_per_epoch,
        val_stream=val_stream, X_val=X_val, y_val=y_val, on_divergence=on_divergence,
        engine=eng, engine_data=() if eng is None else (X, eng.targets(y)))
    state.run_epoch = _epoch_runner(state)
    return state


def _check_fit_arguments(epochs, batch_size, verbose, on_divergence) -> int:
    """Check fit's scalar arguments; returns ``verbose`` as 0, 1 or 2."""
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
        raise ValueError(f"Invalid epochs: {epochs!r} (expected an int >= 0)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
            or batch_size <= 0:
        raise ValueError(f"Invalid batch_size: {batch_size!r} (expected a positive int)")
    if verbose == "auto":
        verbose = 1
    if isinstance(verbose, str) or verbose not in (0, 1, 2, False, True):
        raise ValueError(f"verbose must be 0, 1 or 2 (or 'auto'), got {verbose!r}")
    verbose = int(verbose)
    if on_divergence not in ("raise", "restore"):
        raise ValueError(f"on_divergence must be 'raise' or 'restore', got {on_divergence!r}")
    return verbose


def _fit_data(model, X, y, loss_fn, n_out, epochs, batch_size, shuffle, validation_data,
              validation_split, steps_per_epoch, rng):
    """fit's training and validation data, checked: (stream, X, y, val_stream, X_val, y_val),
    a Stream or checked arrays for each (None where absent)."""
    dtype = model_dtype(model)
    # a memmap with validation_split is split like an in-memory array (as before streaming)
    stream = None if validation_split and isinstance(X, np.memmap) else _stream(
        model, X, y, loss_fn, batch_size=int(batch_size), shuffle=shuffle, rng=rng,
        steps_per_epoch=steps_per_epoch)
    if stream is not None:
        stream.check_epochs(epochs)
        if validation_split and validation_data is None:
            raise ValueError("validation_split needs in-memory arrays; pass validation_data "
                             "for streamed data")
    elif steps_per_epoch is not None:
        raise ValueError("steps_per_epoch is for streamed data (a generator, Sequence, memmap "
                         "or Dask array); with arrays an epoch is one pass over X")
    else:
        if y is None:
            raise ValueError("y is required when X is an array")
        X = check_float_array(X, "X", ndim=2, dtype=dtype, finite=True)
        y = _prepare_y(y, loss_fn.task, dtype, X.shape[0], n_out)
    val_stream = None
    if validation_data is not None and not isinstance(validation_data, (tuple, list)):
        val_stream = _stream(model, validation_data, None, loss_fn, batch_size=_EVAL_BATCH,
                             shuffle=False, rng=None, name="validation_data")
    elif validation_data is not None and len(validation_data) == 2:
        val_stream = _stream(model, validation_data[0], validation_data[1], loss_fn,
                             batch_size=_EVAL_BATCH, shuffle=False, rng=None, name="X_val")
    if val_stream is not None:
        val_stream.check_epochs(epochs)
        X_val = y_val = None
    elif validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val) or a batch source")
        X_val = check_float_array(validation_data[0], "X_val", ndim=2, dtype=dtype,
                                  finite=True)
        y_val = _prepare_y(validation_data[1], loss_fn.task, dtype, X_val.shape[0], n_out)
    elif validation_split:
        vs = float(validation_split)
        if not 0.0 < vs < 1.0:
            raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
        strat = y if (loss_fn.task == "classification" and y.ndim == 1) else None
        try:
            X, X_val, y, y_val = train_test_split(X, y, test_size=vs, stratify=strat, seed=rng)
        except ValueError:
            X, X_val, y, y_val = train_test_split(X, y, test_size=vs, seed=rng)
    else:
        X_val = y_val = None
    if stream is None and X.shape[0] == 0:
        raise ValueError("no training samples")
    return stream, X, y, val_stream, X_val, y_val


def _fit_optimizer(model, optimizer, lr, made):
    """The optimizer fit uses: the given one (a name, or an Optimizer over the model's
    parameters), else the model's previous one when it still fits the model, else Adam."""
    params = model.parameters()
    prev = getattr(model, "optimizer", None)
    if optimizer is None:
        # the previous optimizer continues (with its state) when it still fits the model,
        # a subset included (layers frozen on purpose stay frozen)
        if prev is not None and _optimizer_params_problem(prev, params) is None:
            opt = prev
            if lr is not None:
                opt.lr = float(lr)
        else:
            opt = make_optimizer("adam", params, lr=lr, **made)
    else:
        if not isinstance(optimizer, str):
            _check_optimizer_params(optimizer, params)  # before make_optimizer sets its lr
        opt = make_optimizer(optimizer, params, lr=lr,
                             **(made if isinstance(optimizer, str) else {}))
    return opt


def _epoch_runner(state):
    """The function that runs the epochs of this fit: ``run_epoch(state, epoch, bar)`` ->
    :class:`_EpochResult`: the training engine (:func:`_run_epoch_engine`) when fit chose
    it, else the module loop (:func:`_run_epoch_modules`)."""
    return _run_epoch_modules if state.engine is None else _run_epoch_engine


# --- fit, stage 2: run one epoch --------------------------------------------------------------

class _EpochResult:
    """What an epoch runner reports.

    ``running``: the epoch's running loss and metric (:class:`RunningMetrics`, over the
    batches whose update was applied); ``last_batch``: the index of the last batch reached
    (-1 when the source yielded none); ``last_loss``: that batch's loss;
    ``nonfinite_loss``: True when ``last_loss`` is NaN or infinite - the epoch stopped at that
    batch, before its update.
    """

    __slots__ = ("running", "last_batch", "last_loss", "nonfinite_loss")

    def __init__(self, running, last_batch, last_loss, nonfinite_loss):
        self.running = running
        self.last_batch = last_batch
        self.last_loss = last_loss
        self.nonfinite_loss = nonfinite_loss


def _run_epoch_modules(state, epoch, bar) -> _EpochResult:
    """One epoch of mini-batch SGD on the network's modules: per batch, forward, the loss and
    its gradient, backward, the optimizer's step and the ``on_batch_end`` callbacks. The loss
    of each batch is checked before its update; a NaN or infinite loss ends the epoch there.
    ``bar``: the epoch's progress bar or None."""
    model, opt, loss_fn = state.model, state.optimizer, state.loss_fn
    batch_cbs = state.batch_callbacks
    is_module = hasattr(model, "_layers") or hasattr(model, "_modules")
    grad_bufs = state.grad_buffers   # reused from batch to batch and epoch to epoch
    run = RunningMetrics(loss_fn.task, state.n_outputs)
    last_post = time.perf_counter()
    b = -1                 # the last batch reached (a stream may end early)
    loss_value = math.nan
    for b, (xb, yb) in enumerate(state.batches):
        m = xb.shape[0]
        model.zero_grad()
        z = model.forward(xb)
        gbuf = grad_bufs.get(z.shape)
        if gbuf is None:
            gbuf = grad_bufs[z.shape] = np.empty(z.shape, dtype=z.dtype)
        loss_value, g = loss_fn.loss_and_grad(z, yb, grad_out=gbuf)
        if not math.isfinite(loss_value):
            return _EpochResult(run, b, loss_value, True)
        run.update(loss_value, z, yb, m)
        if is_module:
            model.backward(g, need_input_grad=False, inplace=True)
        else:
            model.backward(g)
        opt.step()
        if batch_cbs:
            for cb in batch_cbs:
                cb.on_batch_end(b, {"loss": loss_value, "size": m})
        if bar is not None:
            bar.update(m)
            now = time.perf_counter()
            if now - last_post > 0.25:
                _bar_postfix(bar, run)
                last_post = now
    return _EpochResult(run, b, loss_value, False)


#: Seconds of training per engine call: Python regains control this often (progress bar,
#: KeyboardInterrupt) at the cost of two copies of the parameters per call.
_ENGINE_CHUNK_S = 0.15


def _run_epoch_engine(state, epoch, bar) -> _EpochResult:
    """One epoch on the compiled training engine: the batches of :class:`BatchIterator`'s
    order (the same permutation drawn from the same generator), run in calls of about
    ``_ENGINE_CHUNK_S`` seconds, or of one step each when callbacks take ``on_batch_end``. A
    NaN or infinite loss ends the epoch at that batch, before its update, as the module loop
    does."""
    eng, batches = state.engine, state.batches
    X, y = state.engine_data
    n, bs = batches.n_samples, batches.batch_size
    order = batches.rng.permutation(n) if batches.shuffle else np.arange(n)
    run = RunningMetrics(state.loss_fn.task, state.n_outputs)
    batch_cbs = state.batch_callbacks
    last_post = time.perf_counter()
    start, b, loss_value = 0, -1, math.nan
    while start < n:
        if batch_cbs:
            res = eng.run(X, y, order, start, bs, max_steps=1)
        else:
            res = eng.run(X, y, order, start, bs, time_budget_s=_ENGINE_CHUNK_S)
        run.n += res.samples
        run.loss_sum += res.loss_sum
        if not run.has_metric:
            pass   # a graph Model's packed loss: the loss alone
        elif res.sums is not None:
            run.s1 += res.sums[0]
            run.s2 += res.sums[1]
            run.sse += res.sums[2]
        else:
            run.correct += int(res.metric_sum)
        start += res.samples
        b += res.steps
        loss_value = res.last_loss
        params = state.history.params
        if res.n_threads not in params["engine_threads"]:
            params["engine_threads"] = sorted([*params["engine_threads"], res.n_threads])
        params["engine_fallbacks"] += bool(res.fell_back)
        if res.nonfinite_step >= 0:
            return _EpochResult(run, b + 1, loss_value, True)
        if batch_cbs and res.steps:
            for cb in batch_cbs:
                cb.on_batch_end(b, {"loss": loss_value, "size": res.samples})
        if bar is not None:
            bar.update(res.samples)
            now = time.perf_counter()
            if now - last_post > 0.25:
                _bar_postfix(bar, run)
                last_post = now
        if res.steps == 0:   # cannot happen with start < n; never loop for ever
            break
    return _EpochResult(run, b, loss_value, False)


def _epoch_bar(state, epoch):
    """The live progress bar of one epoch (verbose=1 on a terminal or in a notebook)."""
    from tqdm.auto import tqdm   # loaded when a bar is shown (tqdm.auto may load IPython)

    return tqdm(total=state.n_train, unit=" samples", leave=False,
                desc=f"epoch {epoch + 1}/{state.start_epoch + state.epochs}", file=sys.stderr,
                mininterval=0.2, **_bar_width())


def _bar_postfix(bar, running) -> None:
    """Show the running loss and metric on the bar (drawn at its next refresh)."""
    name, val = running.metric()
    post = {"loss": f"{running.loss:.4f}"}
    if name:
        post[name[:3]] = f"{val:.4f}"
    bar.set_postfix(post, refresh=False)


def _divergence(state, epoch, result):
    """None when the epoch trained normally, else (message, advice, batch): a NaN or infinite
    loss (checked before each update), or a parameter holding NaN or inf after the epoch's
    updates (the loss is checked before each update, so the last update of an epoch, and of
    fit, is checked here, once per epoch)."""
    opt, b = state.optimizer, result.last_batch
    if result.nonfinite_loss:
        msg = (f"the training loss is {result.last_loss} at epoch {epoch + 1}, batch {b + 1} "
               f"of {state.n_batches} (learning rate {float(opt.lr):.3g}): training "
               f"diverged")
        return (msg, ". Lower the learning rate, standardize the inputs "
                "(fastnn.data.Standardizer), or check the targets", b)
    bad = _nonfinite_parameter(state.model, opt)
    if bad is None:
        return None
    msg = (f"parameter {bad!r} holds NaN or inf after the updates of epoch {epoch + 1} "
           f"(found after batch {b + 1} of {state.n_batches}; every batch's loss was "
           f"finite, the last {result.last_loss:.4g}; learning rate {float(opt.lr):.3g}): "
           f"training diverged")
    return (msg, ". The parameters are left as they are; lower the learning rate, "
            "standardize the inputs (fastnn.data.Standardizer), or pass "
            "on_divergence='restore' to fit to roll back", max(b, 0))


# --- fit, stage 3: log the epoch --------------------------------------------------------------

def _log_epoch(state, epoch, result, epoch_lr, elapsed, bar) -> bool:
    """The end of a trained epoch: its logs (training loss and metric, validation, learning
    rate, time, samples/s) into the history, the verbose line, the callbacks' ``on_epoch_end``.
    Returns True when training stops here (a callback asked, or a one-shot source ran dry)."""
    model, history, trainer = state.model, state.history, state.trainer
    run = result.running
    logs = {"loss": run.loss}
    name, val = run.metric()
    if name:
        logs[name] = val
    if state.X_val is not None or state.val_stream is not None:
        if state.val_stream is not None:
            vm = streaming.evaluate_stream(model, state.val_stream, state.loss_fn)
        else:
            zv = predict_raw(model, state.X_val, _EVAL_BATCH)
            vm = _metrics_from_output(state.loss_fn, zv, state.y_val)
        logs["val_loss"] = vm["loss"]
        for k in ("accuracy", "r2"):
            if k in vm:
                logs["val_" + k] = vm[k]
    logs["lr"] = epoch_lr
    logs["time"] = elapsed
    logs["samples_per_s"] = run.n / elapsed if elapsed > 0 else float("inf")
    history.append(epoch, logs)
    model.epochs_trained_ = epoch + 1
    if bar is not None:  # the live bar gives way to the epoch's line
        bar.close()
    if state.verbose:
        _write_line(_wrap([f"epoch {epoch + 1}/{state.start_epoch + state.epochs}",
                           *_fmt_logs(logs)], _line_width(sys.stderr)))
    for cb in state.callbacks:
        cb.on_epoch_end(epoch, dict(logs))
    stream = state.stream
    if stream is not None and stream.exhausted and not trainer.stop_training:
        trainer.stop_training = True
        msg = (f"the data ran out after {run.n} samples of epoch {epoch + 1} (a one-shot "
               f"generator with steps_per_epoch={state.steps_per_epoch}); training stopped")
        trainer.log_event(epoch, msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)   # fit's caller (fit is wrapped)
    if trainer.stop_training:
        history.stopped_epoch = epoch
        return True
    return False

def partial_fit(model, X, y=None, loss=None, optimizer=None, batch_size: int = 32,
                shuffle: bool = True, validation_data=None, callbacks=None, verbose: int = 0,
                seed=None, lr=None, on_divergence: str = "raise",
                steps_per_epoch: int | None = None) -> History:
    """One pass over (X, y), continuing the previous calls: the model keeps its loss and its
    optimizer with its state (moments, momentum, step count) from call to call.

    This is ``fit(..., epochs=1)``. X may be any input ``fit`` accepts, e.g. one chunk of a
    larger dataset.
    ``optimizer`` sets the optimizer on the first call; on later calls it may only name the
    optimizer already in use (or be that instance). ``seed`` orders this call's batches: pass
    one ``np.random.Generator`` to every call for a reproducible sequence.
    """
    prev = getattr(model, "optimizer", None)
    if optimizer is not None and prev is not None \
            and _optimizer_params_problem(prev, model.parameters()) is None:
        same = optimizer is prev or (isinstance(optimizer, str) and _OPTIMIZERS.get(
            optimizer.lower()) == type(prev).__name__)
        if not same:
            raise ValueError(f"partial_fit keeps the model's optimizer "
                             f"({type(prev).__name__}) and its state; got optimizer="
                             f"{optimizer!r}. Use fit(..., optimizer=...) to start a new one")
        optimizer = None
    return fit(model, X, y, loss=loss, optimizer=optimizer, epochs=1, batch_size=batch_size,
               shuffle=shuffle, validation_data=validation_data, callbacks=callbacks,
               verbose=verbose, seed=seed, lr=lr, on_divergence=on_divergence,
               steps_per_epoch=steps_per_epoch)


def _restore_after_divergence(trainer, callbacks, good, msg, epoch, batch):
    """on_divergence="restore": back to the last good epoch end, warn, stop."""
    good_epoch, model_state, opt_state = good
    trainer.model.load_state_dict(model_state)
    trainer.optimizer.load_state_dict(opt_state)
    trainer.model.epochs_trained_ = good_epoch
    where = f"the end of epoch {good_epoch}" if good_epoch > 0 else "the start of training"
    msg = f"{msg}; restored the weights and optimizer state of {where} and stopped"
    history = trainer.history
    history.diverged = (epoch, batch)
    history.stopped_epoch = epoch
    trainer.log_event(epoch, msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=4)   # fit's caller (fit is wrapped)
    for cb in callbacks:
        cb.on_train_end({})
    return history


def _overrides(cb, name) -> bool:
    meth = getattr(cb, name, None)
    if meth is None:
        return False
    return getattr(meth, "__func__", meth) is not getattr(Callback, name, None)
