"""scikit-learn estimators over fastnn's networks: :class:`MLPClassifier`, :class:`MLPRegressor`.

They follow the scikit-learn estimator API (``fit``/``predict``/``predict_proba``/``score``,
``get_params``/``set_params``, ``clone``, ``random_state``, ``classes_``, ``n_features_in_``,
``feature_names_in_`` for DataFrames, ``partial_fit``, ``warm_start``) and pass scikit-learn's
estimator checks, so they work in ``Pipeline``, ``GridSearchCV``, ``RandomizedSearchCV`` and
``cross_val_score``. On top of scikit-learn's own MLP they offer dropout, one activation per
hidden layer, a sparsemax output and the sparsemax loss (with multi-label classification: the
predicted label set is the sparsemax support), L1 as well as L2, the SGD (momentum, Nesterov,
decay), Adagrad, RMSprop and Adam optimizers, user-supplied validation data, float32 training
and an ``n_threads`` bound.

scikit-learn is an optional dependency of fastnn (``pip install "fastnn[sklearn]"``): this
module imports it, ``import fastnn`` does not (``fastnn.MLPClassifier`` loads this module on
first use).

Threads in a parallel search: an int ``n_threads`` bounds every OpenMP and BLAS thread during
``fit`` and ``predict`` (threadpoolctl, inside whatever worker runs them). In
``GridSearchCV(..., n_jobs=k)`` pass ``n_threads=fastnn.parallel.threads_per_worker(k)`` so that
``k`` concurrent fits do not oversubscribe the cores (see :mod:`fastnn.parallel`).
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
    _CHECK_NAMES_ONLY = {"skip_check_array": True}
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)
    _CHECK_NAMES_ONLY = {"cast_to_ndarray": False}

from fastnn.callbacks import Callback, EarlyStopping
from fastnn.layers import ACTIVATIONS, Dense, Dropout
from fastnn.model import Sequential
from fastnn.parallel import limit_threads

__all__ = ["MLPClassifier", "MLPRegressor", "build_mlp"]

_ACTIVATION_ALIASES = {"logistic": "sigmoid", "linear": "identity"}
_OPTIMIZERS = ("adam", "sgd", "adagrad", "rmsprop")
_SEED_MAX = 2 ** 31 - 1


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------

def _hidden_sizes(hidden_layer_sizes) -> tuple:
    sizes = hidden_layer_sizes
    if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
        sizes = (sizes,)
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise ValueError(f"hidden_layer_sizes must be an int or a sequence of ints, got "
                         f"{hidden_layer_sizes!r}") from None
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0:
            raise ValueError(f"hidden_layer_sizes must hold positive ints, got "
                             f"{hidden_layer_sizes!r}")
    return tuple(int(s) for s in sizes)


def _per_layer(value, n_layers, name):
    if isinstance(value, (list, tuple, np.ndarray)):
        values = list(value)
        if len(values) != n_layers:
            raise ValueError(f"{name} has {len(values)} entries but there are {n_layers} "
                             f"hidden layers (give one value, or one per hidden layer)")
        return values
    return [value] * n_layers


def _activation(name):
    if not isinstance(name, str):
        raise ValueError(f"activation must be a name or a list of names, got {name!r}")  # noqa: TRY004
    name = _ACTIVATION_ALIASES.get(name, name)
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of "
                         f"{', '.join(ACTIVATIONS)} (or 'logistic', 'linear')")
    return name


def _dropout(p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) < 1.0:
        raise ValueError(f"dropout must be in [0, 1) (or a list of such), got {p!r}")
    return float(p)


def build_mlp(n_features, n_outputs, hidden_layer_sizes=(100,), activation="relu", dropout=0.0,
              *, dtype=np.float32, seed=None, n_threads=None) -> Sequential:
    """The network of the estimators: ``Dense -> [Dropout] -> ... -> Dense`` (linear output).

    Parameters
    ----------
    n_features, n_outputs : int
        Input width; output width (one logit per class, or one unit per regression target).
    hidden_layer_sizes : int or sequence of int
        Width of each hidden layer (``()``: no hidden layer, a linear model).
    activation : str or list of str
        One activation for every hidden layer, or one per hidden layer: "relu", "tanh",
        "sigmoid" ("logistic"), "identity" ("linear"), "step", "sign".
    dropout : float or list of float
        Drop probability after each hidden layer (0: no Dropout module).
    dtype : float32 or float64
    seed : int or None
        Seeds the weights of every layer and the dropout masks (None: fresh entropy).
    n_threads : int or None

    Usable as ``build_fn`` of :func:`fastnn.search.grid_search` through
    ``functools.partial(build_mlp, n_features, n_outputs)``.
    """
    sizes = _hidden_sizes(hidden_layer_sizes)
    acts = [_activation(a) for a in _per_layer(activation, len(sizes), "activation")]
    drops = [_dropout(p) for p in _per_layer(dropout, len(sizes), "dropout")]
    seeds = np.random.SeedSequence(seed).generate_state(2 * len(sizes) + 1, np.uint32)
    layers = []
    width = int(n_features)
    for i, (h, a, p) in enumerate(zip(sizes, acts, drops)):
        layers.append(Dense(width, h, a, seed=int(seeds[2 * i]), dtype=dtype))
        if p > 0.0:
            layers.append(Dropout(p, seed=int(seeds[2 * i + 1])))
        width = h
    layers.append(Dense(width, int(n_outputs), seed=int(seeds[-1]), dtype=dtype))
    return Sequential(*layers, dtype=dtype, n_threads=n_threads)


# --------------------------------------------------------------------------------------------
# The shared estimator
# --------------------------------------------------------------------------------------------

class _ValidationScore(Callback):
    """Records the estimator's score on the validation set after each epoch (multi-label)."""

    def __init__(self, score_fn):
        self.score_fn = score_fn
        self.scores = []

    def on_epoch_end(self, epoch, logs=None):
        self.scores.append(float(self.score_fn()))


class _BaseMLP(BaseEstimator):
    """Parameters, validation and the training call shared by the two estimators."""

    _task = None  # set by the subclasses

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, dropout=0.0,
                 optimizer="adam", lr=None, momentum=0.9, nesterov=True, decay=0.0,
                 betas=(0.9, 0.999), optimizer_params=None, l1=0.0, l2=0.0,
                 batch_size="auto", max_iter=200, shuffle=True, tol=1e-4, n_iter_no_change=10,
                 early_stopping=False, validation_fraction=0.1, warm_start=False,
                 random_state=None, dtype=None, n_threads=None, verbose=0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.decay = decay
        self.betas = betas
        self.optimizer_params = optimizer_params
        self.l1 = l1
        self.l2 = l2
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.warm_start = warm_start
        self.random_state = random_state
        self.dtype = dtype
        self.n_threads = n_threads
        self.verbose = verbose

    # --- parameter checks (at fit, never in __init__) ---------------------------------------
    def _check_params(self):
        _hidden_sizes(self.hidden_layer_sizes)
        n_hidden = len(_hidden_sizes(self.hidden_layer_sizes))
        for a in _per_layer(self.activation, n_hidden, "activation"):
            _activation(a)
        for p in _per_layer(self.dropout, n_hidden, "dropout"):
            _dropout(p)
        if not isinstance(self.optimizer, str) or self.optimizer.lower() not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(_OPTIMIZERS)}, got "
                             f"{self.optimizer!r}")
        if self.lr is not None and not (isinstance(self.lr, numbers.Real)
                                        and not isinstance(self.lr, bool) and self.lr > 0
                                        and np.isfinite(self.lr)):
            raise ValueError(f"lr must be None or a positive float, got {self.lr!r}")
        for name in ("l1", "l2", "decay", "momentum", "tol"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not v >= 0 \
                    or not np.isfinite(v):
                raise ValueError(f"{name} must be a finite float >= 0, got {v!r}")
        if self.optimizer_params is not None and not isinstance(self.optimizer_params, dict):
            raise ValueError(f"optimizer_params must be None or a dict, got "
                             f"{self.optimizer_params!r}")
        if not (self.batch_size == "auto" or (isinstance(self.batch_size, numbers.Integral)
                                              and not isinstance(self.batch_size, bool)
                                              and self.batch_size > 0)):
            raise ValueError(f"batch_size must be 'auto' or a positive int, got "
                             f"{self.batch_size!r}")
        for name in ("max_iter", "n_iter_no_change"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        vf = self.validation_fraction
        if isinstance(vf, bool) or not isinstance(vf, numbers.Real) or not 0.0 < vf < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {vf!r}")
        if self.dtype is not None:
            try:
                dt = np.dtype(self.dtype)
            except TypeError:
                dt = None
            if dt not in (np.float32, np.float64):
                raise ValueError(f"dtype must be None, float32 or float64, got {self.dtype!r}")
        nt = self.n_threads
        if nt is not None and (isinstance(nt, bool) or not isinstance(nt, numbers.Integral)
                               or nt <= 0):
            raise ValueError(f"n_threads must be None or a positive int, got {nt!r}")
        if self.verbose not in (0, 1, 2, False, True):
            raise ValueError(f"verbose must be 0, 1 or 2, got {self.verbose!r}")

    def _make_optimizer(self, params):
        from fastnn import optim

        name = self.optimizer.lower()
        kw = {}
        if self.lr is not None:
            kw["lr"] = float(self.lr)
        kw["weight_decay"] = float(self.l2)
        kw["l1"] = float(self.l1)
        kw["decay"] = float(self.decay)
        if name == "sgd":
            kw["momentum"] = float(self.momentum)
            kw["nesterov"] = bool(self.nesterov) and self.momentum > 0
            cls = optim.SGD
        elif name == "adam":
            kw["betas"] = tuple(float(b) for b in self.betas)
            cls = optim.Adam
        elif name == "adagrad":
            cls = optim.Adagrad
        else:
            cls = optim.RMSprop
        kw.update(self.optimizer_params or {})
        return cls(params, n_threads=self.n_threads, **kw)

    # --- data ---------------------------------------------------------------------------------
    def _validate_X(self, X, reset):
        if not reset:
            dtype = self.model_.dtype
        elif self.dtype is not None:
            dtype = np.dtype(self.dtype)
        else:  # float32 and float64 inputs keep their dtype, others become float64
            dtype = [np.float64, np.float32]
        return _validate_data(self, X, reset=reset, dtype=dtype, order="C")

    def _batch_size(self, n):
        return min(200, n) if self.batch_size == "auto" else int(self.batch_size)

    def _seeds(self, first):
        """(model seed, seed of this call's batch order and validation split).

        Drawn once per new network from ``random_state`` (an int gives the same network and
        batches at every fit); each later ``partial_fit``/warm-start call gets its own batch
        order seed derived from it.
        """
        if first or not hasattr(self, "_seed"):
            rs = check_random_state(self.random_state)
            self._seed = int(rs.randint(_SEED_MAX))
            self._n_calls = 0
        self._n_calls += 1
        fit_seed = np.random.SeedSequence([self._seed, self._n_calls]).generate_state(
            1, np.uint32)[0]
        return self._seed, int(fit_seed)

    # --- training -----------------------------------------------------------------------------
    def _train(self, X, y, X_val, y_val, *, epochs, first, converge, callbacks, n_outputs,
               seed):
        from fastnn import training

        if first:
            self.model_ = build_mlp(X.shape[1], n_outputs, self.hidden_layer_sizes,
                                     self.activation, self.dropout, dtype=X.dtype,
                                     seed=seed[0], n_threads=self.n_threads)
            optimizer = self._make_optimizer(self.model_.parameters())
            self.loss_curve_ = []
            self.validation_scores_ = None
            self.validation_loss_curve_ = None
            self.best_loss_ = np.inf
            self.best_validation_score_ = None
            self.t_ = 0
        else:
            optimizer = None  # keep the optimizer and its state (moments, momentum)
        model = self.model_
        model.n_threads = self.n_threads
        loss = self._loss_object()
        cbs = []
        stopper = None
        if converge:
            monitor = "val_loss" if X_val is not None and self.early_stopping else "loss"
            stopper = EarlyStopping(monitor=monitor, patience=int(self.n_iter_no_change),
                                    min_delta=float(self.tol),
                                    restore_best_weights=monitor == "val_loss")
            cbs.append(stopper)
        val_cb = None
        if X_val is not None and self._needs_score_callback():
            val_cb = _ValidationScore(lambda: self._score_encoded(X_val, y_val))
            cbs.append(val_cb)
        cbs.extend(callbacks or [])
        history = training.fit(model, X, y, loss=loss, optimizer=optimizer, epochs=epochs,
                               batch_size=self._batch_size(X.shape[0]), shuffle=self.shuffle,
                               validation_data=None if X_val is None else (X_val, y_val),
                               callbacks=cbs, verbose=int(self.verbose), seed=seed[1])
        self.history_ = history
        h = history.history
        self.loss_curve_ = list(self.loss_curve_) + list(h.get("loss", []))
        if X_val is not None:
            if val_cb is not None:
                scores = val_cb.scores
            else:
                scores = h.get("val_accuracy", h.get("val_r2", []))
            self.validation_scores_ = list(self.validation_scores_ or []) + list(scores)
            self.validation_loss_curve_ = (list(self.validation_loss_curve_ or [])
                                           + list(h.get("val_loss", [])))
            if self.validation_scores_:
                self.best_validation_score_ = float(np.nanmax(self.validation_scores_))
        if self.loss_curve_:
            self.best_loss_ = float(np.nanmin(self.loss_curve_))
        self.n_iter_ = int(getattr(model, "epochs_trained_", len(self.loss_curve_)))
        self.t_ += X.shape[0] * len(history.epoch)
        if converge and history.stopped_epoch is None and len(history.epoch) == epochs:
            warnings.warn(f"{type(self).__name__}: the maximum number of epochs "
                          f"(max_iter={self.max_iter}) was reached and the optimization has "
                          f"not converged yet (tol={self.tol}, "
                          f"n_iter_no_change={self.n_iter_no_change}).", ConvergenceWarning)
        return self

    def _split_validation(self, X, y, validation_data, seed, allow_split, stratify):
        """(X, y, X_val, y_val): the user's validation set, or a split for early stopping."""
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (X_val, y_val)")
            X_val = _validate_data(self, validation_data[0], reset=False, dtype=X.dtype,
                                   order="C")
            y_val = self._encode_y(validation_data[1], X_val.shape[0], fitting=False,
                                   dtype=X.dtype)
            X_val, y_val = self._drop_unusable(X_val, y_val)
            return X, y, X_val, y_val
        if not (self.early_stopping and allow_split):
            return X, y, None, None
        from fastnn.data import train_test_split

        vf = float(self.validation_fraction)
        if int(np.ceil(vf * X.shape[0])) >= X.shape[0]:
            raise ValueError(f"early_stopping needs more samples: validation_fraction={vf} "
                             f"of {X.shape[0]} samples leaves none for training")
        try:
            X, X_val, y, y_val = train_test_split(X, y, test_size=vf, seed=seed,
                                                  stratify=y if stratify else None)
        except ValueError:
            X, X_val, y, y_val = train_test_split(X, y, test_size=vf, seed=seed)
        return X, y, X_val, y_val

    def _fit(self, X, y, validation_data, callbacks, *, partial, classes=None):
        self._check_params()
        first = not (partial or self.warm_start) or not hasattr(self, "model_")
        X = self._validate_X(X, reset=first)
        if first:
            self._start_targets(X, y, classes, partial)
        y = self._encode_y(y, X.shape[0], fitting=True, dtype=X.dtype)
        X, y = self._drop_unusable(X, y)
        seed = self._seeds(first)
        with limit_threads(self.n_threads):
            X, y, X_val, y_val = self._split_validation(
                X, y, validation_data, seed[1], allow_split=not partial,
                stratify=self._task == "classification" and not self._multilabel)
            return self._train(X, y, X_val, y_val, epochs=1 if partial else int(self.max_iter),
                               first=first, converge=not partial, callbacks=callbacks,
                               n_outputs=self._n_outputs(), seed=seed)

    _multilabel = False

    def _drop_unusable(self, X, y):
        return X, y

    def _needs_score_callback(self):
        return False

    def _forward(self, X):
        check_is_fitted(self)
        if not (isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype.kind in "fiub"
                and X.shape[0] > 0 and X.shape[1] > 0):
            X = self._validate_X(X, reset=False)
            with limit_threads(self.n_threads):
                return self.model_.predict(X)
        # An array is converted and checked (dtype, finiteness) batch by batch, with the
        # messages of the one-shot check: memory follows the batch, not X (a float64 X for a
        # float32 model, a Fortran-ordered or a broadcast X are never copied whole).
        _validate_data(self, X, reset=False, **_CHECK_NAMES_ONLY)  # feature names and count
        dtype = self.model_.dtype

        def convert(batch):
            return check_array(batch, dtype=dtype, order="C", estimator=self, input_name="X")

        with limit_threads(self.n_threads):
            return self.model_._predict_batches(X, None, convert)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "model_")

    # --- the fitted network -------------------------------------------------------------------
    @property
    def coefs_(self):
        """Weight matrices (in_features, out_features) of the dense layers, input first
        (live views of the network's parameters)."""
        check_is_fitted(self)
        return [m.weight.data for m in self.model_.modules() if isinstance(m, Dense)]

    @property
    def intercepts_(self):
        """Bias vectors of the dense layers, input first (live views)."""
        check_is_fitted(self)
        return [m.bias.data for m in self.model_.modules() if isinstance(m, Dense)]

    @property
    def n_layers_(self):
        """Number of layers, input and output included (scikit-learn's convention)."""
        check_is_fitted(self)
        return len(self.coefs_) + 1


_PARAMS_DOC = """
    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int, default=(100,)
        Width of each hidden layer; ``()`` gives a linear model.
    activation : str or list of str, default="relu"
        "relu", "tanh", "sigmoid" (alias "logistic"), "identity" (alias "linear"), "step",
        "sign"; one name for every hidden layer or a list with one per hidden layer.
    dropout : float or list of float, default=0.0
        Dropout probability after each hidden layer (inverted dropout: prediction needs no
        rescaling).
    optimizer : {"adam", "sgd", "adagrad", "rmsprop"}, default="adam"
    lr : float or None, default=None
        Learning rate; None takes the optimizer's default (Adam 1e-3, the others 1e-2).
    momentum : float, default=0.9
        SGD momentum (``optimizer="sgd"`` only; RMSprop's momentum goes in
        ``optimizer_params``).
    nesterov : bool, default=True
        Nesterov momentum for SGD (when ``momentum > 0``).
    decay : float, default=0.0
        Learning-rate decay ``lr_t = lr / (1 + decay * t)`` per step (every optimizer).
    betas : (float, float), default=(0.9, 0.999)
        Adam's moment decay rates.
    optimizer_params : dict or None
        Further keywords for the :mod:`fastnn.optim` class (``eps``, ``alpha``,
        ``l1_proximal``, ...); they override the ones above.
    l1, l2 : float, default=0.0
        L1 and L2 penalties on the weights (not the biases), applied inside the optimizer step
        (``l2`` is scikit-learn's ``alpha``; ``1/2 * l2 * ||W||^2``).
    batch_size : int or "auto", default="auto"
        Mini-batch size; "auto" is ``min(200, n_samples)``.
    max_iter : int, default=200
        Maximum number of epochs (passes over the training set).
    shuffle : bool, default=True
        Reshuffle the training set every epoch.
    tol : float, default=1e-4
        Training stops when the monitored loss (the training loss, or the validation loss with
        ``early_stopping``) has not improved by ``tol`` for ``n_iter_no_change`` epochs;
        reaching ``max_iter`` first raises a ConvergenceWarning.
    n_iter_no_change : int, default=10
    early_stopping : bool, default=False
        Monitor the validation loss - on ``validation_data`` given to ``fit``, else on a
        ``validation_fraction`` split of the training data - and restore the weights of the
        best epoch at the end.
    validation_fraction : float, default=0.1
    warm_start : bool, default=False
        ``fit`` continues from the previous fit's network and optimizer state.
    random_state : int, RandomState or None
        Seeds the weights, the dropout masks, the batch order and the validation split.
    dtype : None, "float32" or "float64", default=None
        Training precision. None keeps float32 and float64 inputs as they are (others become
        float64), like scikit-learn; ``dtype="float32"`` trains in single precision whatever the
        input (faster, half the memory).
    n_threads : int or None, default=None
        Threads for fastnn's kernels and for BLAS during ``fit`` and ``predict``: an int is
        applied with threadpoolctl around them (inside whatever process or thread runs them).
        In a parallel search (``GridSearchCV(..., n_jobs=k)``, possibly on Dask) use
        ``n_threads=fastnn.parallel.threads_per_worker(k)`` so that the concurrent fits do not
        oversubscribe the cores. None: the default thread count of the process.
    verbose : {0, 1, 2}, default=0
        1: a progress bar per epoch (on a terminal); 2: one line per epoch."""

_ATTRS_DOC = """
    loss_curve_ : list of float
        Mean training loss of each epoch (over the epoch's mini-batches, penalties excluded).
    validation_scores_ : list of float or None
        Score (as ``score``) on the validation data after each epoch; None without validation.
    validation_loss_curve_ : list of float or None
        Validation loss after each epoch.
    best_loss_, best_validation_score_ : float
    n_iter_ : int
        Epochs trained (all calls of ``partial_fit``/``warm_start`` fits together).
    t_ : int
        Training samples seen.
    n_features_in_ : int
    feature_names_in_ : ndarray of str (when X was a DataFrame with string column names)
    model_ : fastnn.Sequential
        The trained network (its ``predict`` gives the logits / raw outputs).
    history_ : fastnn.History
        The last ``fit``'s history (per-epoch logs, callback events).
    coefs_, intercepts_ : lists of ndarray
        The dense layers' weights (in_features, out_features) and biases."""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    __doc__ = f"""Multi-layer perceptron classifier trained by fastnn.

    Multi-class classification with a softmax (cross-entropy loss) or sparsemax (sparsemax loss)
    output, and multi-label classification: ``y`` a binary indicator matrix (n_samples,
    n_classes), trained with the sparsemax loss against the label set normalized to a
    distribution; ``predict`` returns the sparsemax support - the labels with a non-zero
    probability - as the predicted label set (an indicator matrix of ``y``'s dtype). Samples
    without any label are skipped in training and validation (a sparsemax support is never
    empty).
    {_PARAMS_DOC}
    output : {{"auto", "softmax", "sparsemax"}}, default="auto"
        The output map of ``predict_proba``: "auto" follows ``loss`` (softmax for
        cross-entropy, sparsemax for the sparsemax loss; sparsemax for multi-label targets).
    loss : {{"auto", "cross_entropy", "sparsemax"}}, default="auto"
        Training loss ("log_loss" is an alias of "cross_entropy"); "auto" follows ``output``.
        Multi-label targets need the sparsemax loss and output.

    Attributes
    ----------
    classes_ : ndarray
        The class labels (any sortable labels: ints, strings); for multi-label targets the
        column indices 0..n_classes-1.{_ATTRS_DOC}

    Examples
    --------
    >>> from fastnn import MLPClassifier                            # doctest: +SKIP
    >>> clf = MLPClassifier((64, 64), activation=["relu", "tanh"], dropout=0.2,
    ...                     output="sparsemax", random_state=0).fit(X, y)   # doctest: +SKIP
    >>> clf.predict_proba(X[:3])    # sparse: exact zeros               # doctest: +SKIP
    """

    _task = "classification"

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, dropout=0.0,
                 output="auto", loss="auto", optimizer="adam", lr=None, momentum=0.9,
                 nesterov=True, decay=0.0, betas=(0.9, 0.999), optimizer_params=None, l1=0.0,
                 l2=0.0, batch_size="auto", max_iter=200, shuffle=True, tol=1e-4,
                 n_iter_no_change=10, early_stopping=False, validation_fraction=0.1,
                 warm_start=False, random_state=None, dtype=None, n_threads=None, verbose=0):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation, dropout=dropout,
            optimizer=optimizer, lr=lr, momentum=momentum, nesterov=nesterov, decay=decay,
            betas=betas, optimizer_params=optimizer_params, l1=l1, l2=l2,
            batch_size=batch_size, max_iter=max_iter, shuffle=shuffle, tol=tol,
            n_iter_no_change=n_iter_no_change, early_stopping=early_stopping,
            validation_fraction=validation_fraction, warm_start=warm_start,
            random_state=random_state, dtype=dtype, n_threads=n_threads, verbose=verbose)
        self.output = output
        self.loss = loss

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multilabel": True}

    # --- targets ------------------------------------------------------------------------------
    def _resolve_output(self, multilabel):
        out, loss = self.output, self.loss
        if out not in ("auto", "softmax", "sparsemax"):
            raise ValueError(f"output must be 'auto', 'softmax' or 'sparsemax', got {out!r}")
        if loss not in ("auto", "cross_entropy", "log_loss", "sparsemax"):
            raise ValueError(f"loss must be 'auto', 'cross_entropy' (or 'log_loss') or "
                             f"'sparsemax', got {loss!r}")
        loss = "cross_entropy" if loss == "log_loss" else loss
        if out == "auto":
            out = "sparsemax" if (loss == "sparsemax" or (loss == "auto" and multilabel)) \
                else "softmax"
        if loss == "auto":
            loss = "sparsemax" if out == "sparsemax" else "cross_entropy"
        if multilabel and (out != "sparsemax" or loss != "sparsemax"):
            raise ValueError("multi-label targets (an indicator matrix y) need the sparsemax "
                             "loss and output (output='sparsemax' or 'auto', loss='sparsemax' "
                             "or 'auto'): the predicted label set is the sparsemax support")
        return out, loss

    def _start_targets(self, X, y, classes, partial):
        multilabel = _is_multilabel(y)
        if multilabel:
            y = np.asarray(y)
            self.classes_ = np.arange(y.shape[1])
            self._y_dtype = y.dtype
        else:
            y = _check_y(self, y, X.shape[0], multi_output=False)
            check_classification_targets(y)
            if partial and classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit "
                                 "(all the labels that any call may see)")
            labels = np.unique(y) if classes is None else np.unique(np.asarray(classes))
            if classes is not None and not np.isin(np.unique(y), labels).all():
                raise ValueError(f"y has labels {np.setdiff1d(np.unique(y), labels)!r} that "
                                 f"are not in classes={labels!r}")
            if labels.shape[0] < 2:
                raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes, "
                                 f"but the data contains only one class: {labels[0]!r}")
            self.classes_ = labels
        self._multilabel = multilabel
        self._output, self._loss = self._resolve_output(multilabel)

    def _encode_y(self, y, n, fitting, dtype):
        if self._multilabel:
            y = _check_y(self, y, n, multi_output=True)
            if y.ndim != 2 or y.shape[1] != self.classes_.shape[0] or \
                    type_of_target(y) not in ("multilabel-indicator", "binary") or \
                    not np.isin(y, (0, 1)).all():
                raise ValueError(f"y must be a binary indicator matrix with "
                                 f"{self.classes_.shape[0]} columns (the model was fitted on "
                                 f"multi-label targets)")
            return np.ascontiguousarray(y, dtype=dtype)
        if _is_multilabel(y):
            raise ValueError("y is a label indicator matrix but the model was fitted on "
                             "single-label targets")
        y = _check_y(self, y, n, multi_output=False)
        if fitting:
            check_classification_targets(y)
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, self.classes_.shape[0] - 1)
        bad = self.classes_[idx] != y
        if np.any(bad):
            raise ValueError(f"y contains labels not seen in the first fit: "
                             f"{np.unique(np.asarray(y)[bad])!r} (classes_={self.classes_!r})")
        return idx.astype(np.intp)

    def _drop_unusable(self, X, y):
        if self._multilabel:
            keep = y.any(axis=1)
            if not keep.all():
                if not keep.any():
                    raise ValueError("every sample has an empty label set; the sparsemax loss "
                                     "needs at least one label per sample")
                X, y = X[keep], y[keep]
        return X, y

    def _n_outputs(self):
        return int(self.classes_.shape[0])

    def _loss_object(self):
        from fastnn.losses import CrossEntropyLoss, SparsemaxLoss

        if self._loss == "sparsemax":
            return SparsemaxLoss(multilabel=self._multilabel, n_threads=self.n_threads)
        return CrossEntropyLoss(n_threads=self.n_threads)

    def _needs_score_callback(self):
        return self._multilabel

    def _score_encoded(self, X_val, y_val):
        pred = self._proba_from_logits(self.model_.predict(X_val)) > 0
        return float(np.mean(np.all(pred == (y_val > 0), axis=1)))

    # --- public API ---------------------------------------------------------------------------
    def fit(self, X, y, validation_data=None, callbacks=None):
        """Train on (X, y); returns self.

        Parameters
        ----------
        X : array-like (n_samples, n_features)
        y : array-like (n_samples,) of labels, or (n_samples, n_classes) binary indicator
            matrix (multi-label)
        validation_data : (X_val, y_val), optional
            Scored after every epoch (``validation_scores_``, ``validation_loss_curve_``) and
            monitored by ``early_stopping`` instead of a split of the training data.
        callbacks : list of fastnn.callbacks.Callback, optional
            Extra callbacks for the training loop (learning-rate schedules, checkpoints...).
        """
        return self._fit(X, y, validation_data, callbacks, partial=False)

    def partial_fit(self, X, y, classes=None, validation_data=None):
        """One epoch over (X, y), continuing from the previous calls.

        ``classes`` (every label any call may see) is required on the first call for
        single-label targets, as in scikit-learn.
        """
        return self._fit(X, y, validation_data, None, partial=True, classes=classes)

    def _proba_from_logits(self, z):
        from fastnn.functional import softmax, sparsemax

        z = np.ascontiguousarray(z, dtype=np.float64)
        if self._output == "sparsemax":
            return sparsemax(z, n_threads=self.n_threads)
        return softmax(z, n_threads=self.n_threads)

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), float64: softmax or sparsemax of the
        network's output (sparsemax gives exact zeros)."""
        return self._proba_from_logits(self._forward(X))

    def predict(self, X):
        """Labels (n_samples,); for multi-label targets the indicator matrix of the sparsemax
        support (n_samples, n_classes), in the dtype of the fitted ``y``."""
        proba = self.predict_proba(X)
        if self._multilabel:
            return (proba > 0).astype(self._y_dtype)
        return self.classes_[np.argmax(proba, axis=1)]

    def predict_log_proba(self, X):
        """Logarithm of ``predict_proba`` (-inf where sparsemax gives 0)."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


class MLPRegressor(RegressorMixin, _BaseMLP):
    __doc__ = f"""Multi-layer perceptron regressor trained by fastnn (squared loss, linear output;
    one or several targets).
    {_PARAMS_DOC}

    Attributes
    ----------{_ATTRS_DOC}
    n_outputs_ : int
        Number of regression targets.
    """

    _task = "regression"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": True}

    def _start_targets(self, X, y, classes, partial):
        y = _check_y(self, y, X.shape[0], multi_output=True, y_numeric=True)
        if y.ndim > 2:
            raise ValueError(f"y must be 1-D or 2-D, got shape {y.shape}")
        self._y_ndim = y.ndim
        self.n_outputs_ = 1 if y.ndim == 1 else int(y.shape[1])

    def _encode_y(self, y, n, fitting, dtype):
        y = _check_y(self, y, n, multi_output=True, y_numeric=True)
        y2 = y.reshape(n, -1)
        if y2.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {y2.shape[1]} targets, the model was fitted on "
                             f"{self.n_outputs_}")
        return np.ascontiguousarray(y2, dtype=dtype)

    def _n_outputs(self):
        return self.n_outputs_

    def _loss_object(self):
        from fastnn.losses import SquaredLoss

        return SquaredLoss(n_threads=self.n_threads)

    def fit(self, X, y, validation_data=None, callbacks=None):
        """Train on (X, y); returns self. ``y``: (n_samples,) or (n_samples, n_targets).
        ``validation_data`` and ``callbacks`` as in :meth:`MLPClassifier.fit`."""
        return self._fit(X, y, validation_data, callbacks, partial=False)

    def partial_fit(self, X, y, validation_data=None):
        """One epoch over (X, y), continuing from the previous calls."""
        return self._fit(X, y, validation_data, None, partial=True)

    def predict(self, X):
        """Predictions (n_samples,) - or (n_samples, n_targets) when fitted on a 2-D ``y`` -
        as float64."""
        z = self._forward(X).astype(np.float64)
        return z.reshape(-1) if self._y_ndim == 1 else z


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _is_multilabel(y) -> bool:
    shape = getattr(y, "shape", None)
    if shape is None:
        try:
            y = np.asarray(y)
        except (TypeError, ValueError):
            return False
        shape = y.shape
    if len(shape) != 2 or shape[1] < 2:
        return False
    return type_of_target(y) == "multilabel-indicator"


def _check_y(est, y, n, multi_output, y_numeric=False):
    if y is None:
        raise ValueError(f"{type(est).__name__} requires y to be passed, but the target y is "
                         f"None")
    from sklearn.utils.validation import check_array

    y = check_array(y, ensure_2d=False, dtype="numeric" if y_numeric else None,
                    input_name="y")
    if not multi_output:
        y = column_or_1d(y, warn=True)
    if y.shape[0] != n:
        raise ValueError(f"X has {n} samples but y has {y.shape[0]}")
    if y_numeric and y.dtype.kind not in "fiub":
        y = y.astype(np.float64)
    return y
