"""Loss objects for models and the training loop: thin classes over fastnn.functional's losses.

Each loss takes the output *pre-activation* ``z`` of the network (logits) and knows its output
map: ``output(z)`` gives predictions in the output space (identity, softmax, sigmoid or
sparsemax), so a network ends in a linear layer and the loss fuses the map with its gradient
(e.g. cross-entropy's gradient softmax(z) - e_y, never softmax's Jacobian). Every loss has::

    loss(z, y) -> float                  mean over the samples
    loss_and_grad(z, y, grad_out=None)   (mean loss, d mean loss / dz); with grad_out given,
                                         nothing is allocated (a per-sample loss buffer is kept)
    output(z) -> predictions
    task: "regression", "classification", "binary" or "multilabel"

Names: :data:`LOSS_TABLE` (name -> class, task, aliases), read by :func:`get_loss`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from fastnn._threads import resolve_n_threads
from fastnn.functional import losses as _fl
from fastnn.functional import output as _fo
from fastnn.functional.activations import sigmoid as _sigmoid

#: Per-sample loss buffers up to this many rows (512 KiB) are kept for the next call (a training
#: step's batch); a larger one (an evaluation of a whole data set) is freed after its call.
_MAX_KEPT_ROWS = 1 << 16

__all__ = ["Loss", "SquaredLoss", "CrossEntropyLoss", "BinaryCrossEntropyLoss", "SparsemaxLoss",
           "LossInfo", "LOSS_TABLE", "LOSS_ALIASES", "LOSSES", "get_loss", "loss_info"]


class Loss:
    """Base class: subclasses set ``name``, ``task``, ``_function`` and ``output``."""

    name = ""
    task = ""
    _function = None

    def __init__(self, n_threads=None):
        self.n_threads = n_threads
        self._scratch = threading.local()

    def _rows(self, z) -> np.ndarray:
        """Reused per-sample loss buffer, one per calling thread (so one loss object can serve
        concurrent evaluate/predict calls from several threads; a thread's buffer goes with
        it), kept only up to ``_MAX_KEPT_ROWS`` rows."""
        n = np.shape(z)[0] if np.ndim(z) else 0
        scratch = self.__dict__.get("_scratch")
        if scratch is None:  # a subclass that did not call Loss.__init__
            scratch = self.__dict__.setdefault("_scratch", threading.local())
        rows = getattr(scratch, "rows", None)
        if rows is None or rows.shape[0] != n:
            rows = np.empty(n, np.float64)
            scratch.rows = rows if n <= _MAX_KEPT_ROWS else None
        return rows

    def __getstate__(self):
        # Scratch buffers are not state: leave them out of pickles and copies.
        state = self.__dict__.copy()
        state.pop("_scratch", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._scratch = threading.local()

    def loss(self, z, y) -> float:
        """Mean loss over the samples (rows) of ``z``."""
        return type(self)._function(z, y, reduction="mean", n_threads=self.n_threads,
                                    loss_out=self._rows(z))

    def loss_and_grad(self, z, y, grad_out=None):
        """(mean loss, gradient of the mean loss with respect to z), the gradient written into
        ``grad_out`` when given (shape and dtype of z)."""
        return type(self)._function(z, y, reduction="mean", return_grad=True, grad_out=grad_out,
                                    n_threads=self.n_threads, loss_out=self._rows(z))

    def per_sample(self, z, y) -> np.ndarray:
        """Per-sample losses, float64 array of shape (n,)."""
        return type(self)._function(z, y, reduction="none", n_threads=self.n_threads)

    def output(self, z):
        raise NotImplementedError

    __call__ = loss

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SquaredLoss(Loss):
    """1/2 ||f - y||^2 per sample (regression); identity output, gradient f - y."""

    name = "squared"
    task = "regression"
    _function = staticmethod(_fl.squared_loss)

    def output(self, z):
        return z


class CrossEntropyLoss(Loss):
    """Negative log-likelihood of softmax(z), fused (stable log-softmax); gradient softmax - e_y.
    Targets: int labels (n,) or an (n, C) probability matrix."""

    name = "cross_entropy"
    task = "classification"
    _function = staticmethod(_fl.cross_entropy)

    def output(self, z):
        return _fo.softmax(z, axis=-1, n_threads=self.n_threads)

    def loss_and_grad(self, z, y, grad_out=None):
        # A training step's case (a gradient buffer given): the entry that checks the arrays
        # and the label range in C, falling back to the validating path.
        if grad_out is not None:
            return _fl.cross_entropy_into(z, y, self._rows(z), grad_out,
                                          resolve_n_threads(self.n_threads)), grad_out
        return super().loss_and_grad(z, y, grad_out)


class BinaryCrossEntropyLoss(Loss):
    """Logistic loss from one logit per sample; sigmoid output; gradient sigmoid(z) - y."""

    name = "binary_cross_entropy"
    task = "binary"
    _function = staticmethod(_fl.binary_cross_entropy)

    def output(self, z):
        return _sigmoid(z, n_threads=self.n_threads)


class SparsemaxLoss(Loss):
    """Sparsemax loss (Martins & Astudillo, 2016); sparsemax output; gradient sparsemax(z) - q.

    Parameters
    ----------
    multilabel : bool
        False (multi-class, task "classification"): targets are int labels (n,) (an (n, C)
        target matrix is accepted too). True (task "multilabel"): targets are (n, C) label sets
        or non-negative weights, each row normalized to a distribution q.
    method : {"auto", "sort", "select"}
        Sparsemax algorithm used by ``output``.

    References
    ----------
    Martins, A. F. T. and Astudillo, R. F. (2016). From softmax to sparsemax: a sparse model of
    attention and multi-label classification. ICML, PMLR 48, 1614-1623.
    """

    name = "sparsemax"
    _function = staticmethod(_fl.sparsemax_loss)

    def __init__(self, multilabel: bool = False, method: str = "auto", n_threads=None):
        super().__init__(n_threads)
        if method not in _fo.SPARSEMAX_METHODS:
            raise ValueError(f"method must be one of {_fo.SPARSEMAX_METHODS}, got {method!r}")
        self.multilabel = bool(multilabel)
        self.method = method

    @property
    def task(self) -> str:
        return "multilabel" if self.multilabel else "classification"

    def output(self, z):
        return _fo.sparsemax(z, axis=-1, method=self.method, n_threads=self.n_threads)

    def __repr__(self) -> str:
        return (f"SparsemaxLoss(multilabel={self.multilabel})" if self.multilabel
                else "SparsemaxLoss()")


@dataclass(frozen=True)
class LossInfo:
    """One row of the loss table."""

    name: str
    #: the Loss class, built as ``cls(**options)``
    cls: type
    #: the task the loss is for ("regression", "classification", "binary" or "multilabel")
    task: str
    #: other accepted spellings
    aliases: tuple = ()
    #: constructor keywords of the row
    options: dict = field(default_factory=dict)

    def make(self, **kwargs) -> Loss:
        """A new instance of the row's loss (``kwargs``: e.g. ``n_threads``)."""
        return self.cls(**self.options, **kwargs)


#: Every loss fastnn knows by name, the one vocabulary that :func:`get_loss`, ``fit``, the
#: estimators and the command line read.
LOSS_TABLE: dict[str, LossInfo] = {r.name: r for r in (
    LossInfo("squared", SquaredLoss, "regression", ("mse", "squared_error")),
    LossInfo("cross_entropy", CrossEntropyLoss, "classification", ("nll", "log_loss")),
    LossInfo("binary_cross_entropy", BinaryCrossEntropyLoss, "binary"),
    LossInfo("sparsemax", SparsemaxLoss, "classification"),
    LossInfo("sparsemax_multilabel", SparsemaxLoss, "multilabel",
             options={"multilabel": True}),
)}
#: alias -> canonical name (Keras's "mse", PyTorch's "nll", scikit-learn's "squared_error" and
#: "log_loss").
LOSS_ALIASES: dict[str, str] = {a: r.name for r in LOSS_TABLE.values() for a in r.aliases}
#: name or alias -> Loss class, for the rows built without options.
LOSSES: dict[str, type] = {n: r.cls for r in LOSS_TABLE.values() if not r.options
                           for n in (r.name, *r.aliases)}


def loss_info(name: str) -> LossInfo:
    """The table row of a loss name or alias (case-insensitive); ValueError for unknown
    names."""
    if isinstance(name, str):
        key = name.lower()
        row = LOSS_TABLE.get(LOSS_ALIASES.get(key, key))
        if row is not None:
            return row
    raise ValueError(f"Unknown loss {name!r}; expected one of {', '.join(LOSS_TABLE)} "
                     f"(aliases: {', '.join(f'{a!r} for {c!r}' for a, c in LOSS_ALIASES.items())})"
                     f" or a loss object")


def get_loss(loss) -> Loss:
    """A loss instance from a name or alias of :data:`LOSS_TABLE` ("squared", "cross_entropy",
    "binary_cross_entropy", "sparsemax", "sparsemax_multilabel"; "mse", "nll", ...), a Loss
    class, or an object with ``loss_and_grad`` and ``output`` (returned as is)."""
    if isinstance(loss, str):
        return loss_info(loss).make()
    if isinstance(loss, type) and issubclass(loss, Loss):
        return loss()
    if hasattr(loss, "loss_and_grad") and hasattr(loss, "output"):
        return loss
    raise TypeError(f"loss must be a name or a loss object, got {type(loss).__name__}")
