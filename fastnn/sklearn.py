"""scikit-learn estimators over fastnn's networks: :class:`MLPClassifier`, :class:`MLPRegressor`.

Drop-in replacements for ``sklearn.neural_network.MLPClassifier`` / ``MLPRegressor``: every
parameter of scikit-learn's estimators with the same name, default, meaning and validation
message (``solver`` "adam", "sgd" and "lbfgs", ``alpha`` scaled as scikit-learn scales it,
``learning_rate`` schedules, ``early_stopping`` on the validation score, ...), ``fit(X, y,
sample_weight=None)``, ``partial_fit`` and the same fitted attributes (``coefs_``,
``intercepts_``, ``loss_``, ``loss_curve_``, ``best_loss_``, ``validation_scores_``,
``best_validation_score_``, ``t_``, ``n_iter_``, ``n_layers_``, ``n_outputs_``,
``out_activation_``, ``classes_``, ``n_features_in_``, ``feature_names_in_``). The weights are
initialized and the mini-batches drawn from ``random_state`` exactly as scikit-learn draws them,
so the same ``random_state`` gives the same initial network and batch order; the forward and
backward passes run in fastnn's kernels.

On top of scikit-learn's MLP they offer dropout, one activation per hidden layer, a sparsemax
output and the sparsemax loss (with multi-label classification: the predicted label set is the
sparsemax support), L1 and a batch-size independent L2 (``l1``, ``l2``), the Adagrad and
RMSprop solvers, user-supplied validation data, float32 training and an ``n_threads`` bound.

scikit-learn is an optional dependency of fastnn (``pip install "fastnn[sklearn]"``): this
module imports it, ``import fastnn`` does not (``fastnn.MLPClassifier`` loads this module on
first use).

Threads in a parallel search: an int ``n_threads`` bounds every OpenMP and BLAS thread during
``fit`` and ``predict`` (threadpoolctl, inside whatever worker runs them). In
``GridSearchCV(..., n_jobs=k)`` pass ``n_threads=fastnn.parallel.threads_per_worker(k)`` so that
``k`` concurrent fits do not oversubscribe the cores (see :mod:`fastnn.parallel`).
"""
from __future__ import annotations

import contextlib
import inspect
import numbers
import warnings
from numbers import Integral, Real

import numpy as np
from scipy.special import xlogy
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn import get_config as _sk_get_config
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, gen_batches
from sklearn.utils import shuffle as _sk_shuffle
from sklearn.utils._param_validation import Hidden, Interval, Options, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import (_check_sample_weight, check_array, check_is_fitted,
                                      column_or_1d)

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
    _CHECK_NAMES_ONLY = {"skip_check_array": True}
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)
    _CHECK_NAMES_ONLY = {"cast_to_ndarray": False}
# check_array without its finiteness check (predict checks with fastnn's own, then asks
# check_array again for the message when something is not finite)
_NO_FINITE_CHECK = ({"ensure_all_finite": False}
                    if "ensure_all_finite" in inspect.signature(check_array).parameters
                    else {"force_all_finite": False})   # scikit-learn < 1.6

from fastnn._flat import FlatParameters
from fastnn._threads import check_not_fitting, exclusive_use
from fastnn._validation import check_n_threads
from fastnn import optim
from fastnn.functional import softmax, sparsemax
from fastnn.functional.activations import ACTIVATIONS, ALIASES, activation_info
from fastnn.layers import Dense, Dropout, Maxout
from fastnn.losses import LOSS_ALIASES, LOSS_TABLE, SparsemaxLoss, loss_info
from fastnn.model import Sequential
from fastnn.parallel import limit_threads
from fastnn.functional import inference as _inference

__all__ = ["MLPClassifier", "MLPRegressor", "build_mlp"]

_SKLEARN_ACTIVATIONS = {"identity", "logistic", "tanh", "relu"}
_STOCHASTIC_SOLVERS = ("sgd", "adam", "adagrad", "rmsprop")
_SEED_MAX = 2 ** 31 - 1


def _table_losses(task) -> set:
    """The names and aliases of the loss table's rows for ``task``: the ``loss`` values an
    estimator accepts (the regressor adds scikit-learn's "poisson", which it computes itself)."""
    names = {n for n, r in LOSS_TABLE.items() if r.task == task}
    return names | {a for a, n in LOSS_ALIASES.items() if n in names}


_CLASSIFIER_LOSSES = {"auto"} | _table_losses("classification")
_REGRESSOR_LOSSES = {"poisson"} | _table_losses("regression")

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
    """The canonical name of an activation of fastnn's table (scikit-learn's 'logistic' is
    an alias of 'sigmoid'), or "maxout" (a layer of maxout units)."""
    if not isinstance(name, str):
        raise ValueError(f"activation must be a name or a list of names, got {name!r}")  # noqa: TRY004
    if name.lower() == "maxout":
        return "maxout"
    return activation_info(name).name


def _check_pieces(k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"maxout_pieces must be a positive int, got {k!r}")
    return int(k)


def _units(activations, sizes, pieces) -> list:
    """Linear units of each hidden layer: its width, times ``pieces`` for maxout layers."""
    return [h * pieces if a == "maxout" else h for a, h in zip(activations, sizes)]


def _dropout(p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) < 1.0:
        raise ValueError(f"dropout must be in [0, 1) (or a list of such), got {p!r}")
    return float(p)


def build_mlp(n_features, n_outputs, hidden_layer_sizes=(100,), activation="relu", dropout=0.0,
              *, dtype=np.float32, seed=None, n_threads=None, maxout_pieces=2) -> Sequential:
    """The network of the estimators: ``Dense -> [Dropout] -> ... -> Dense`` (linear output).

    Parameters
    ----------
    n_features, n_outputs : int
        Input width; output width (one logit per class, or one unit per regression target).
    hidden_layer_sizes : int or sequence of int
        Width of each hidden layer (``()``: no hidden layer, a linear model).
    activation : str or list of str
        One activation for every hidden layer, or one per hidden layer: a name of
        :data:`fastnn.functional.activations.ACTIVATION_TABLE` ("relu", "tanh", "sigmoid" or
        "logistic", "identity", "gelu", ...), or "maxout": a :class:`fastnn.layers.Maxout`
        layer, each unit the max of ``maxout_pieces`` linear units.
    dropout : float or list of float
        Drop probability after each hidden layer (0: no Dropout module).
    dtype : float32 or float64
    seed : int or None
        Seeds the weights of every layer and the dropout masks (None: fresh entropy).
    n_threads : int or None
    maxout_pieces : int
        Linear units per maxout unit (layers with activation "maxout").

    Usable as ``build_fn`` of :func:`fastnn.search.grid_search` through
    ``functools.partial(build_mlp, n_features, n_outputs)``.
    """
    sizes = _hidden_sizes(hidden_layer_sizes)
    acts = [_activation(a) for a in _per_layer(activation, len(sizes), "activation")]
    drops = [_dropout(p) for p in _per_layer(dropout, len(sizes), "dropout")]
    pieces = _check_pieces(maxout_pieces)
    seeds = np.random.SeedSequence(seed).generate_state(2 * len(sizes) + 1, np.uint32)
    layers = []
    width = int(n_features)
    for i, (h, a, p) in enumerate(zip(sizes, acts, drops)):
        if a == "maxout":
            layers.append(Maxout(width, h, pieces=pieces, seed=int(seeds[2 * i]), dtype=dtype))
        else:
            layers.append(Dense(width, h, a, seed=int(seeds[2 * i]), dtype=dtype))
        if p > 0.0:
            layers.append(Dropout(p, seed=int(seeds[2 * i + 1])))
        width = h
    layers.append(Dense(width, int(n_outputs), seed=int(seeds[-1]), dtype=dtype))
    return Sequential(*layers, dtype=dtype, n_threads=n_threads)


# --------------------------------------------------------------------------------------------
# scikit-learn's stochastic solvers (the update rules of sklearn.neural_network)
# --------------------------------------------------------------------------------------------

class _Solver:
    """scikit-learn's optimizer interface: ``update_params`` after each batch,
    ``iteration_ends`` after each epoch, ``trigger_stopping`` when training stalls (stop)."""

    learning_rate: float

    def update_params(self, params, grads):
        raise NotImplementedError

    def iteration_ends(self, time_step):
        pass

    def trigger_stopping(self, msg, verbose):
        if verbose:
            print(msg + " Stopping.")
        return True


class _SGD(_Solver):
    """scikit-learn's SGD: ``v = momentum * v - lr * g``; ``w += v`` (Nesterov:
    ``w += momentum * v - lr * g``), with the 'constant', 'invscaling' and 'adaptive' schedules."""

    def __init__(self, params, learning_rate_init, lr_schedule, momentum, nesterov, power_t):
        self.learning_rate_init = float(learning_rate_init)
        self.learning_rate = float(learning_rate_init)
        self.lr_schedule = lr_schedule
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.power_t = float(power_t)
        self.velocities = [np.zeros_like(p) for p in params]

    def update_params(self, params, grads):
        lr, mu = self.learning_rate, self.momentum
        for p, g, v in zip(params, grads, self.velocities):
            v *= mu
            v -= lr * g
            if self.nesterov:
                p += mu * v - lr * g
            else:
                p += v

    def iteration_ends(self, time_step):
        if self.lr_schedule == "invscaling":
            self.learning_rate = self.learning_rate_init / (time_step + 1) ** self.power_t

    def trigger_stopping(self, msg, verbose):
        if self.lr_schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        if verbose:
            print(msg + " Setting learning rate to %f" % self.learning_rate)
        return False


class _Adam(_Solver):
    """scikit-learn's Adam: ``w -= lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) +
    epsilon)`` (Kingma & Ba, 2014, section 2's efficient form)."""

    def __init__(self, params, learning_rate_init, beta_1, beta_2, epsilon):
        self.learning_rate_init = float(learning_rate_init)
        self.learning_rate = float(learning_rate_init)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.t = 0
        self.ms = [np.zeros_like(p) for p in params]
        self.vs = [np.zeros_like(p) for p in params]

    def update_params(self, params, grads):
        self.t += 1
        b1, b2 = self.beta_1, self.beta_2
        self.learning_rate = (self.learning_rate_init * np.sqrt(1 - b2 ** self.t)
                              / (1 - b1 ** self.t))
        for p, g, m, v in zip(params, grads, self.ms, self.vs):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            p -= self.learning_rate * m / (np.sqrt(v) + self.epsilon)


class _FastnnOptimizer(_Solver):
    """fastnn's Adagrad / RMSprop (:mod:`fastnn.optim`) behind the solver interface; the
    gradients arrive in the parameters' ``grad`` buffers."""

    def __init__(self, name, parameters, learning_rate_init, decay, options, n_threads):
        cls = optim.Adagrad if name == "adagrad" else optim.RMSprop
        self.learning_rate_init = self.learning_rate = float(learning_rate_init)
        self.opt = cls(parameters, lr=float(learning_rate_init), decay=float(decay),
                       n_threads=n_threads, **(options or {}))

    def update_params(self, params, grads):
        self.opt.step()


# --------------------------------------------------------------------------------------------
# The output layer and the losses (scikit-learn's, plus fastnn's sparsemax)
# --------------------------------------------------------------------------------------------

def _out_activation(name, z, n_threads=None):
    """The output map ``out_activation_`` applied to the logits z (a new array)."""
    if name == "identity":
        return np.array(z)
    if name == "exp":
        return np.exp(z)
    if name == "logistic":
        from scipy.special import expit
        return expit(z)
    if name == "softmax":
        return softmax(np.ascontiguousarray(z), n_threads=n_threads)
    return sparsemax(np.ascontiguousarray(z), n_threads=n_threads)


def _data_loss(name, Y, P, z, sample_weight, n_threads=None):
    """scikit-learn's loss functions (sklearn.neural_network._base) and the sparsemax loss:
    the (weighted) mean over samples of the loss between targets Y and outputs P."""
    sw = sample_weight
    if name == "squared_error":
        return 0.5 * np.average((Y - P) ** 2, weights=sw, axis=0).mean()
    if name == "poisson":
        return np.average(xlogy(Y, Y / P) - Y + P, weights=sw, axis=0).sum()
    if name == "sparsemax":
        per_sample = SparsemaxLoss(multilabel=True, n_threads=n_threads).per_sample(
            np.ascontiguousarray(z, dtype=np.float64), np.ascontiguousarray(Y, np.float64))
        return np.average(per_sample, weights=sw)
    eps = np.finfo(P.dtype).eps
    P = np.clip(P, eps, 1 - eps)
    if name == "binary_log_loss":
        return -np.average(xlogy(Y, P) + xlogy(1 - Y, 1 - P), weights=sw, axis=0).sum()
    if P.shape[1] == 1:  # log_loss, binary
        P = np.append(1 - P, P, axis=1)
        Y = np.append(1 - Y, Y, axis=1)
    return -np.average(xlogy(Y, P), weights=sw, axis=0).sum()


class _CallbackTrainer:
    """What a :class:`fastnn.callbacks.Callback` sees as ``self.trainer`` during an estimator's
    fit: the network (``model``) and ``stop_training``; there is no fastnn optimizer (the
    solvers are scikit-learn's), so callbacks that change the learning rate do not apply."""

    def __init__(self, model):
        self.model = model
        self.optimizer = None
        self.stop_training = False


# --------------------------------------------------------------------------------------------
# The shared estimator
# --------------------------------------------------------------------------------------------

def _with_sklearns_constraints(constraints: dict) -> dict:
    """``constraints`` with scikit-learn's entries replaced by the installed scikit-learn's own
    constraint objects (the same messages, including the order of the options), fastnn's
    ``Hidden`` extensions kept."""
    try:
        from sklearn.neural_network._multilayer_perceptron import BaseMultilayerPerceptron
        theirs = BaseMultilayerPerceptron._parameter_constraints
    except (ImportError, AttributeError):  # pragma: no cover - a private name moved
        return constraints
    merged = dict(constraints)
    for name, constraint in theirs.items():
        hidden = [c for c in constraints.get(name, []) if isinstance(c, Hidden)]
        merged[name] = list(constraint) + hidden
    return merged


_DEPRECATED = {"optimizer": "solver", "lr": "learning_rate_init",
               "nesterov": "nesterovs_momentum", "betas": "beta_1 and beta_2"}


class _BaseMLP(BaseEstimator):
    """Parameters, validation and training shared by the two estimators."""

    _parameter_constraints: dict = {
        # scikit-learn's constraints (same messages); Hidden(...) are fastnn's extensions
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(_SKLEARN_ACTIVATIONS),
                       Hidden(StrOptions(set(ACTIVATIONS) | set(ALIASES) | {"maxout"})),
                       Hidden(list), Hidden(tuple)],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"}),
                   Hidden(StrOptions({"adagrad", "rmsprop"}))],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"),
                             Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        # fastnn's extras
        "dropout": [Interval(Real, 0, 1, closed="left"), list, tuple],
        "maxout_pieces": [Interval(Integral, 1, None, closed="left")],
        "l1": [Interval(Real, 0, None, closed="left")],
        "l2": [Interval(Real, 0, None, closed="left")],
        "decay": [Interval(Real, 0, None, closed="left")],
        "optimizer_params": [dict, None],
        "dtype": "no_validation",
        "inference_precision": [StrOptions(set(_inference.PRECISIONS)), None],
        "n_threads": "no_validation",  # checked in _check_params
        # deprecated names of scikit-learn's parameters
        "optimizer": [StrOptions({"adam", "sgd", "adagrad", "rmsprop", "lbfgs"}), None],
        "lr": [Interval(Real, 0, None, closed="neither"), None],
        "nesterov": ["boolean", None],
        "betas": [tuple, list, None],
    }

    _parameter_constraints = _with_sklearns_constraints(_parameter_constraints)

    def __init__(self, hidden_layer_sizes, activation, *, solver, alpha, batch_size,
                 learning_rate, learning_rate_init, power_t, max_iter, shuffle, random_state,
                 tol, verbose, warm_start, momentum, nesterovs_momentum, early_stopping,
                 validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change, max_fun,
                 dropout, l1, l2, decay, optimizer_params, dtype, n_threads, optimizer, lr,
                 nesterov, betas, maxout_pieces, inference_precision):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dropout = dropout
        self.maxout_pieces = maxout_pieces
        self.l1 = l1
        self.l2 = l2
        self.decay = decay
        self.optimizer_params = optimizer_params
        self.dtype = dtype
        self.inference_precision = inference_precision
        self.n_threads = n_threads
        self.optimizer = optimizer
        self.lr = lr
        self.nesterov = nesterov
        self.betas = betas

    # --- parameter checks (at fit, never in __init__) ---------------------------------------
    def _check_params(self):
        """Validate the parameters (scikit-learn's messages); returns the settings with the
        deprecated names resolved."""
        self._validate_params()
        sizes = self.hidden_layer_sizes
        if not hasattr(sizes, "__iter__"):
            sizes = [sizes]
        sizes = list(sizes)
        if np.any(np.array(sizes) <= 0):
            raise ValueError("hidden_layer_sizes must be > 0, got %s." % sizes)
        _hidden_sizes(sizes)
        n_hidden = len(sizes)
        for a in _per_layer(self.activation, n_hidden, "activation"):
            _activation(a)
        _check_pieces(self.maxout_pieces)
        for p in _per_layer(self.dropout, n_hidden, "dropout"):
            _dropout(p)
        check_n_threads(self.n_threads, type_error=ValueError)
        if self.dtype is not None:
            try:
                dt = np.dtype(self.dtype)
            except TypeError:
                dt = None
            if dt not in (np.float32, np.float64):
                raise ValueError(f"dtype must be None, float32 or float64, got {self.dtype!r}")
        s = {"solver": self.solver, "learning_rate_init": self.learning_rate_init,
             "nesterovs_momentum": self.nesterovs_momentum, "beta_1": self.beta_1,
             "beta_2": self.beta_2}
        for old, new in _DEPRECATED.items():
            value = getattr(self, old)
            if value is None:
                continue
            warnings.warn(f"{type(self).__name__}: `{old}` is deprecated and will be removed; "
                          f"use scikit-learn's `{new}`", FutureWarning, stacklevel=4)
            if old == "betas":
                if len(value) != 2:
                    raise ValueError(f"betas must be a pair (beta_1, beta_2), got {value!r}")
                s["beta_1"], s["beta_2"] = (float(b) for b in value)
                for b in value:
                    if not 0 <= b < 1:
                        raise ValueError(f"betas must be in [0, 1), got {value!r}")
            else:
                s[new] = value.lower() if isinstance(value, str) else value
        if s["solver"] not in ("adagrad", "rmsprop") and self.optimizer_params:
            raise ValueError("optimizer_params applies to solver='adagrad' or 'rmsprop' only; "
                             "the other solvers take scikit-learn's parameters")
        if s["solver"] == "lbfgs" and self.l1:
            raise ValueError("l1 is not differentiable: use a stochastic solver with l1 > 0")
        return s

    # --- data ---------------------------------------------------------------------------------
    def _input_dtype(self, reset):
        """The dtype X is converted to: the network's once fitted, else ``dtype``, else
        float32 and float64 inputs keep theirs and others become float64 (scikit-learn's)."""
        if not reset:
            return self._net_dtype()
        if self.dtype is not None:
            return np.dtype(self.dtype)
        return [np.float64, np.float32]

    def _validate_X(self, X, reset):
        dtype = self._input_dtype(reset)
        return _densify(_validate_data(self, X, reset=reset, dtype=dtype, order="C",
                                       accept_sparse=["csr", "csc"]))

    def _net_dtype(self):
        return self.coefs_[0].dtype

    # --- the network --------------------------------------------------------------------------
    @property
    def model_(self) -> Sequential:
        """The fitted network (a :class:`fastnn.Sequential` whose dense layers hold
        ``coefs_`` and ``intercepts_`` - the same arrays, not copies); its ``predict`` gives
        the output layer's values before ``out_activation_``."""
        if not hasattr(self, "coefs_"):
            raise AttributeError(f"This {type(self).__name__} instance is not fitted yet")
        return self._network()

    def _network(self):
        """The cached network, rebuilt or rebound when ``coefs_``/``intercepts_`` changed."""
        net = self.__dict__.get("_net")
        coefs, inters = self.coefs_, self.intercepts_
        # the architecture: rebuilt when the shapes or a set_params of the layers changed it
        shapes = ([c.shape for c in coefs], repr(self.activation), repr(self.dropout),
                  self.maxout_pieces)
        if net is None or self.__dict__.get("_net_shapes") != shapes:
            n_hidden = len(coefs) - 1
            sizes = tuple(int(c.shape[0]) for c in coefs[1:])   # the widths the layers feed
            dtype = np.asarray(coefs[0]).dtype
            dtype = dtype if dtype in (np.float32, np.float64) else np.float64
            acts = self.activation if n_hidden else ()
            drops = self.dropout if n_hidden else 0.0
            net = build_mlp(coefs[0].shape[0], coefs[-1].shape[1], sizes, acts, drops,
                            dtype=dtype, seed=getattr(self, "_dropout_seed", 0),
                            n_threads=self.n_threads, maxout_pieces=self.maxout_pieces)
            self._net, self._net_shapes = net, shapes
        dense = [m for m in net.modules() if isinstance(m, Dense)]
        dtype = dense[0].weight.data.dtype
        for i, (m, c, b) in enumerate(zip(dense, coefs, inters)):
            if m.weight.data is not c:
                c = np.ascontiguousarray(c, dtype=dtype)
                coefs[i] = m.weight.data = c
            if m.bias.data is not b:
                b = np.ascontiguousarray(np.reshape(b, -1), dtype=dtype)
                inters[i] = m.bias.data = b
        net.n_threads = self.n_threads
        return net

    def _coef_shapes(self, layer_units) -> list:
        """(fan_in, fan_out) of each layer's weight: a maxout layer of h units has h * pieces
        linear units."""
        n_hidden = len(layer_units) - 2
        acts = [_activation(a) for a in _per_layer(self.activation, n_hidden, "activation")]
        outs = _units(acts, layer_units[1:-1], self.maxout_pieces) + [layer_units[-1]]
        return list(zip(layer_units[:-1], outs))

    def _init_coef(self, fan_in, fan_out, dtype, activation):
        # Glorot et al. as scikit-learn draws it (same random_state, same weights)
        factor = 2.0 if activation == "logistic" else 6.0
        init_bound = np.sqrt(factor / (fan_in + fan_out))
        coef_init = self._random_state.uniform(-init_bound, init_bound, (fan_in, fan_out))
        intercept_init = self._random_state.uniform(-init_bound, init_bound, fan_out)
        return (np.ascontiguousarray(coef_init, dtype=dtype),
                np.ascontiguousarray(intercept_init, dtype=dtype))

    def _initialize(self, y, layer_units, dtype, solver):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._output_activation()
        n_hidden = len(layer_units) - 2
        acts = _per_layer(self.activation, n_hidden, "activation") if n_hidden else []
        self.coefs_ = []
        self.intercepts_ = []
        shapes = self._coef_shapes(layer_units)
        for i in range(self.n_layers_ - 1):
            act = self.activation if isinstance(self.activation, str) else \
                (acts[min(i, n_hidden - 1)] if n_hidden else "relu")
            act = "logistic" if act == "sigmoid" else act
            c, b = self._init_coef(*shapes[i], dtype, act)
            self.coefs_.append(c)
            self.intercepts_.append(b)
        if any(p > 0 for p in _per_layer(self.dropout, n_hidden, "dropout")):
            self._dropout_seed = int(self._random_state.randint(_SEED_MAX))
        self.__dict__.pop("_net", None)
        self._best_coefs = [c.copy() for c in self.coefs_]
        self._best_intercepts = [b.copy() for b in self.intercepts_]
        if solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    # --- loss and gradient ----------------------------------------------------------------------
    def _loss_grad(self, net, X, Y, sample_weight):
        """The regularized mean loss of (X, Y) and its gradients, written into the network's
        parameter ``grad`` buffers (the same arrays are returned, coefs then intercepts).

        As scikit-learn: ``delta = (out_activation(z) - Y) * sample_weight``; gradients
        ``(X^T delta + alpha * W) / sum(sample_weight)``; penalty ``0.5 * alpha * ||W||^2 /
        sum(sample_weight)``. fastnn's ``l2`` adds ``0.5 * l2 * ||W||^2`` and ``l1`` adds
        ``l1 * |W|`` to the mean loss, independent of the batch size.
        """
        n = X.shape[0]
        net.zero_grad()
        z = net.forward(X)
        P = _out_activation(self.out_activation_, z, self.n_threads)
        loss = _data_loss(self._loss_name(), Y, P, z, sample_weight, self.n_threads)
        delta = P
        delta -= Y
        if sample_weight is None:
            sw_sum = n
        else:
            sw_sum = float(sample_weight.sum())
            delta *= sample_weight.reshape(-1, 1)
        net.backward(np.ascontiguousarray(delta, dtype=z.dtype), need_input_grad=False,
                     inplace=True)
        dense = [m for m in net.modules() if isinstance(m, Dense)]
        values = 0.0
        l1_norm = 0.0
        alpha, l1, l2 = float(self.alpha), float(self.l1), float(self.l2)
        coef_grads, intercept_grads = [], []
        for m in dense:
            W, gW, gb = m.weight.data, m.weight.grad, m.bias.grad
            w = W.reshape(-1)
            values += float(np.dot(w, w))
            gW += alpha * W
            gW /= sw_sum
            gb /= sw_sum
            if l2:
                gW += l2 * W
            if l1:
                l1_norm += float(np.abs(w).sum())
                gW += l1 * np.sign(W)
            coef_grads.append(gW)
            intercept_grads.append(gb)
        loss += 0.5 * alpha * values / sw_sum + 0.5 * l2 * values + l1 * l1_norm
        return float(loss), coef_grads + intercept_grads

    # --- training -----------------------------------------------------------------------------
    @exclusive_use("fit")   # one fit per estimator at a time, no predict from other threads
    def _fit(self, X, y, sample_weight=None, incremental=False, validation_data=None,
             callbacks=None):
        settings = self._check_params()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, Y = self._validate_input(X, y, incremental, reset=first_pass)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        if Y.ndim == 1:
            Y = Y.reshape((-1, 1))
        X, Y, sample_weight = self._drop_unusable(X, Y, sample_weight)
        n_outputs = Y.shape[1]
        hidden = list(_hidden_sizes(self.hidden_layer_sizes))
        layer_units = [X.shape[1]] + hidden + [n_outputs]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(Y, layer_units, X.dtype, settings["solver"])
        elif [c.shape for c in self.coefs_] != self._coef_shapes(layer_units):
            raise ValueError(f"the network has layers {[c.shape for c in self.coefs_]}, "
                             f"this call needs {layer_units} units (hidden_layer_sizes or "
                             f"the data's shape changed since the first fit)")
        self.n_outputs_ = n_outputs
        with limit_threads(self.n_threads):
            net = self._network()
            if settings["solver"] == "lbfgs":
                self._fit_lbfgs(net, X, Y, sample_weight)
            else:
                self._fit_stochastic(net, X, Y, sample_weight, incremental, settings,
                                     validation_data, callbacks)
            net.eval()
        if not all(np.isfinite(w).all() for w in self.coefs_ + self.intercepts_):
            raise ValueError("Solver produced non-finite parameter weights. The input data may"
                             " contain large values and need to be preprocessed.")
        return self

    def _fit_lbfgs(self, net, X, Y, sample_weight):
        import scipy.optimize

        net.train()
        dense = [m for m in net.modules() if isinstance(m, Dense)]
        flat = FlatParameters([m.weight.data for m in dense] + [m.bias.data for m in dense])
        Y = np.ascontiguousarray(Y, dtype=X.dtype)
        fun = flat.objective(lambda: self._loss_grad(net, X, Y, sample_weight))
        res = scipy.optimize.minimize(fun, flat.pack(), method="L-BFGS-B", jac=True,
                                      options={"maxfun": self.max_fun,
                                               "maxiter": self.max_iter, "gtol": self.tol})
        self.n_iter_ = min(int(res.nit), int(self.max_iter))
        if res.status != 0:
            msg = (f"lbfgs failed to converge after {self.n_iter_} iteration(s) "
                   f"(status={res.status}):\n{res.message}\n")
            if self.n_iter_ == self.max_iter:
                msg += ("\nIncrease the number of iterations to improve the convergence "
                        f"(max_iter={self.max_iter}).")
            msg += ("\nYou might also want to scale the data as shown in:\n"
                    "    https://scikit-learn.org/stable/modules/preprocessing.html")
            warnings.warn(msg, ConvergenceWarning, stacklevel=3)
        self.loss_ = float(res.fun)
        flat.unpack(res.x)

    def _loss_grad_lbfgs(self, packed_coef_inter, X, y, sample_weight, *buffers):
        """scikit-learn's private L-BFGS objective (its signature; ``buffers`` unused):
        writes the flat vector into the weights, returns (loss, flat gradient)."""
        net = self._network()
        dense = [m for m in net.modules() if isinstance(m, Dense)]
        flat = FlatParameters([m.weight.data for m in dense] + [m.bias.data for m in dense])
        X = np.ascontiguousarray(X, dtype=self._net_dtype())
        Y = np.ascontiguousarray(np.reshape(y, (X.shape[0], -1)), dtype=X.dtype)
        return flat.objective(lambda: self._loss_grad(net, X, Y, sample_weight))(
            packed_coef_inter)

    def _make_solver(self, net, settings):
        solver = settings["solver"]
        params = self.coefs_ + self.intercepts_
        if solver == "sgd":
            return _SGD(params, settings["learning_rate_init"], self.learning_rate,
                        self.momentum, settings["nesterovs_momentum"], self.power_t)
        if solver == "adam":
            return _Adam(params, settings["learning_rate_init"], settings["beta_1"],
                         settings["beta_2"], self.epsilon)
        return _FastnnOptimizer(solver, net.parameters(), settings["learning_rate_init"],
                                self.decay, self.optimizer_params, self.n_threads)

    def _fit_stochastic(self, net, X, Y, sample_weight, incremental, settings,
                        validation_data, callbacks):
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = self._make_solver(net, settings)
        if not hasattr(self, "loss_curve_"):  # a first pass of lbfgs, continued by sgd/adam
            self.loss_curve_, self._no_improvement_count = [], 0
            self.best_loss_, self.validation_scores_, self.best_validation_score_ = \
                np.inf, None, None
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping or validation_data is not None
        if early_stopping and self.validation_scores_ is None:
            self.validation_scores_, self.best_validation_score_ = [], -np.inf
            self._best_coefs = [c.copy() for c in self.coefs_]
            self._best_intercepts = [b.copy() for b in self.intercepts_]
        sw_train = sample_weight
        sw_val = None
        if validation_data is not None:
            X_val, y_val = self._validation_set(validation_data)
            X_train, Y_train = X, Y
        elif early_stopping:
            stratify = Y if self._stratify() else None
            if sample_weight is None:
                X_train, X_val, Y_train, Y_val = train_test_split(
                    X, Y, random_state=self._random_state,
                    test_size=self.validation_fraction, stratify=stratify)
            else:
                X_train, X_val, Y_train, Y_val, sw_train, sw_val = train_test_split(
                    X, Y, sample_weight, random_state=self._random_state,
                    test_size=self.validation_fraction, stratify=stratify)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            y_val = self._decode(Y_val)
        else:
            X_train, Y_train = X, Y
            X_val = y_val = None
        X_train = np.ascontiguousarray(X_train)
        Y_train = np.ascontiguousarray(Y_train, dtype=X_train.dtype)
        n_samples = X_train.shape[0]
        sample_idx = np.arange(n_samples, dtype=int)
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                              "going to be clipped")
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        params = self.coefs_ + self.intercepts_
        callbacks = list(callbacks or [])
        trainer = _CallbackTrainer(net)
        for cb in callbacks:
            if hasattr(cb, "set_trainer"):
                cb.set_trainer(trainer)
            cb.on_train_begin({})
        try:
            self.n_iter_ = 0
            for it in range(self.max_iter):
                for cb in callbacks:
                    cb.on_epoch_begin(self.n_iter_, {})
                if self.shuffle:
                    sample_idx = _sk_shuffle(sample_idx, random_state=self._random_state)
                accumulated_loss = 0.0
                net.train()
                for batch_slice in gen_batches(n_samples, batch_size):
                    if self.shuffle:
                        batch_idx = sample_idx[batch_slice]
                        X_batch = X_train[batch_idx]
                    else:
                        batch_idx = batch_slice
                        X_batch = X_train[batch_slice]
                    swb = None if sw_train is None else sw_train[batch_idx]
                    batch_loss, grads = self._loss_grad(net, X_batch, Y_train[batch_idx],
                                                        swb)
                    accumulated_loss += batch_loss * (batch_slice.stop - batch_slice.start)
                    self._optimizer.update_params(params, grads)
                net.eval()
                self.n_iter_ += 1
                self.loss_ = accumulated_loss / n_samples
                self.t_ += n_samples
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
                if not np.isfinite(self.loss_):
                    break  # reported as non-finite weights (or a nan loss) by _fit
                self._update_no_improvement_count(early_stopping, X_val, y_val, sw_val)
                self._optimizer.iteration_ends(self.t_)
                logs = {"loss": self.loss_}
                if early_stopping:
                    logs["val_score"] = self.validation_scores_[-1]
                for cb in callbacks:
                    cb.on_epoch_end(self.n_iter_ - 1, logs)
                if trainer.stop_training:
                    break
                if self._no_improvement_count > self.n_iter_no_change:
                    if early_stopping:
                        msg = ("Validation score did not improve more than tol=%f for %d "
                               "consecutive epochs." % (self.tol, self.n_iter_no_change))
                    else:
                        msg = ("Training loss did not improve more than tol=%f for %d "
                               "consecutive epochs." % (self.tol, self.n_iter_no_change))
                    if self._optimizer.trigger_stopping(msg, self.verbose):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and "
                                  "the optimization hasn't converged yet." % self.max_iter,
                                  ConvergenceWarning)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        for cb in callbacks:
            cb.on_train_end({})
        if early_stopping:
            for dst, src in zip(self.coefs_ + self.intercepts_,
                                self._best_coefs + self._best_intercepts):
                np.copyto(dst, src)

    def _update_no_improvement_count(self, early_stopping, X_val, y_val, sw_val):
        if early_stopping:
            val_score = self._score(X_val, y_val, sw_val)
            self.validation_scores_.append(val_score)
            if self.verbose:
                print("Validation score: %f" % self.validation_scores_[-1])
            last = self.validation_scores_[-1]
            if last < (self.best_validation_score_ + self.tol):
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last > self.best_validation_score_:
                self.best_validation_score_ = last
                self._best_coefs = [c.copy() for c in self.coefs_]
                self._best_intercepts = [b.copy() for b in self.intercepts_]
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _validation_set(self, validation_data):
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        X_val = _validate_data(self, validation_data[0], reset=False,
                               dtype=self._net_dtype(), order="C")
        y_val = np.asarray(validation_data[1])
        if y_val.shape[0] != X_val.shape[0]:
            raise ValueError(f"validation_data: X_val has {X_val.shape[0]} samples but y_val "
                             f"has {y_val.shape[0]}")
        self._check_val_targets(y_val)
        return X_val, y_val

    def _check_val_targets(self, y_val):
        pass

    def _score(self, X, y, sample_weight=None):
        y_pred = self._predict_array(X)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return float(self._score_function(y, y_pred, sample_weight=sample_weight))

    def _drop_unusable(self, X, Y, sample_weight):
        return X, Y, sample_weight

    def _stratify(self):
        return False

    def _forward(self, X):
        """The network's output for X (validated here: an array batch by batch)."""
        check_is_fitted(self)
        check_not_fitting(self, "predict")   # not while another thread fits this estimator
        net = self._network()
        check_not_fitting(net, "predict")    # nor its network
        precision = self._precision(net)
        if not (isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype.kind in "fiub"
                and X.shape[0] > 0 and X.shape[1] > 0):
            X = self._validate_X(X, reset=False)
            with limit_threads(self.n_threads):
                return net.predict(X, precision=precision)
        # An array is converted and checked (dtype, finiteness) batch by batch, with the
        # messages of the one-shot check: memory follows the batch, not X (a float64 X for a
        # float32 model, a Fortran-ordered or a broadcast X are never copied whole).
        _validate_data(self, X, reset=False, **_CHECK_NAMES_ONLY)  # feature names and count
        dtype = net.dtype
        check_finite = not _sk_get_config()["assume_finite"]

        def convert(batch):
            z = check_array(batch, dtype=dtype, order="C", estimator=self, input_name="X",
                            **_NO_FINITE_CHECK)
            # The finiteness check of check_array (a float64 sum of the batch) took 0.25-0.40
            # ms of a 1024 x 784 float32 batch (about 2.5 ms of prediction on two quiet
            # cores); fastnn's answers the same question in 0.15 ms. Not finite (or an array
            # it does not take: None): check_array checks again and raises its own error.
            if check_finite and _inference.all_finite(z) is not True:
                z = check_array(z, dtype=dtype, order="C", estimator=self, input_name="X")
            return z

        # With a covered network the one compiled call runs on the network's n_threads (the
        # estimator's) with BLAS held to one thread inside: threadpoolctl's limits, whose
        # scans of the loaded libraries took 5-8 ms a call here, would change nothing.
        limit = (contextlib.nullcontext() if _inference.plan_for(net) is not None
                 else limit_threads(self.n_threads))
        with limit:
            return net._predict_batches(X, None, convert, precision)

    def _precision(self, net):
        """``inference_precision`` as ``net.predict`` takes it: None (the network's dtype) or
        "bfloat16"; a ValueError naming the parameter where it does not apply."""
        p = self.inference_precision
        try:
            return _inference.request_precision(net, p)
        except ValueError as e:
            hint = " (dtype='float32' trains a float32 network)" if p == "bfloat16" else ""
            raise ValueError(f"inference_precision={p!r} does not apply: {e}{hint}") from None

    def _logits(self, X, validated):
        """The network's output: X validated already (inside fit), or checked here."""
        if validated:
            with limit_threads(self.n_threads):
                return self._network().predict(X)
        return self._forward(X)

    def _output(self, X, validated=True):
        """``out_activation_`` of the network's output for X, in the network's dtype."""
        z = self._logits(X, validated)
        return _out_activation(self.out_activation_, z, self.n_threads).astype(
            z.dtype, copy=False)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "coefs_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # accepted, converted to dense
        return tags

    def _check_solver(self):
        solver = self.solver if self.optimizer is None else self.optimizer
        if solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError("partial_fit is only available for stochastic optimizers. "
                                 "%s is not stochastic." % solver)
        return True

_PARAMS_DOC = """
    Parameters
    ----------
    hidden_layer_sizes : array-like of int, default=(100,)
        Width of each hidden layer (an int: one hidden layer; ``()``: a linear model).
    activation : {"identity", "logistic", "tanh", "relu"} or list, default="relu"
        Hidden-layer activation. fastnn extras: every name of
        :data:`fastnn.functional.activations.ACTIVATION_TABLE` and its aliases ("sigmoid",
        "gelu", "silu", "elu", "leaky_relu", "softplus", "step", "sign", ...), "maxout"
        (maxout units, Goodfellow et al. 2013: each hidden unit is the max of
        ``maxout_pieces`` linear units), and a list with one name per hidden layer.
    solver : {"lbfgs", "sgd", "adam"}, default="adam"
        scikit-learn's solvers: L-BFGS (``scipy.optimize.minimize(method="L-BFGS-B")`` on the
        full-batch loss and gradient), SGD (momentum, Nesterov, schedules) and Adam. fastnn
        extras: "adagrad" and "rmsprop" (:mod:`fastnn.optim`; ``learning_rate_init``,
        ``decay`` and ``optimizer_params`` apply).
    alpha : float, default=0.0001
        scikit-learn's L2 penalty: ``0.5 * alpha * ||W||^2 / n`` added to the mean loss of a
        batch of ``n`` samples (``n`` the sum of the sample weights), i.e. ``alpha * W / n``
        added to the mean-loss gradient. Its strength per sample does not change with the
        batch size.
    batch_size : int or "auto", default="auto"
        Mini-batch size of the stochastic solvers; "auto" is ``min(200, n_samples)``.
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        Schedule of solver="sgd": constant; ``learning_rate_init / (t + 1) ** power_t`` after
        ``t`` samples; divided by 5 each time the monitored quantity stalls for
        ``n_iter_no_change`` epochs (stops when it falls under 1e-6).
    learning_rate_init : float, default=0.001
    power_t : float, default=0.5
    max_iter : int, default=200
        Epochs of the stochastic solvers; iterations of L-BFGS.
    shuffle : bool, default=True
        Reshuffle the samples every epoch (stochastic solvers).
    random_state : int, RandomState or None
        The initial weights (Glorot uniform drawn as scikit-learn draws it), the batch order,
        the early-stopping split and the dropout seed.
    tol : float, default=1e-4
        Training stops when the training loss (or, with ``early_stopping``, the validation
        score) has not improved by ``tol`` for more than ``n_iter_no_change`` epochs; L-BFGS's
        ``gtol``. Reaching ``max_iter`` first raises a ConvergenceWarning.
    verbose : bool or int, default=False
        Print scikit-learn's progress lines on stdout (``Iteration 1, loss = ...``).
    warm_start : bool, default=False
        ``fit`` continues from the previous fit's weights.
    momentum : float in [0, 1], default=0.9
        solver="sgd" momentum.
    nesterovs_momentum : bool, default=True
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified for single-label
        classification), stop when its score (accuracy, R^2) stalls, and keep the weights of
        the best epoch. ``fit(..., validation_data=(X_val, y_val))`` monitors that set instead.
    validation_fraction : float, default=0.1
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's parameters.
    n_iter_no_change : int or np.inf, default=10
    max_fun : int, default=15000
        Maximum number of loss evaluations of L-BFGS.
    dropout : float or list of float, default=0.0
        fastnn extra: dropout probability after each hidden layer (inverted dropout).
    maxout_pieces : int, default=2
        fastnn extra: linear units per unit of the hidden layers with ``activation="maxout"``
        (their ``coefs_`` then have ``width * maxout_pieces`` columns, the units of one group
        adjacent).
    l1 : float, default=0.0
        fastnn extra: ``l1 * |W|`` added to the mean loss of every batch (gradient
        ``l1 * sign(W)``), whatever the batch size; not with solver="lbfgs".
    l2 : float, default=0.0
        fastnn extra: ``0.5 * l2 * ||W||^2`` added to the mean loss of every batch (gradient
        ``l2 * W``), whatever the batch size. This is NOT scikit-learn's ``alpha``, which is
        divided by the batch size: ``l2 = alpha / batch_size`` matches ``alpha`` for full
        batches only.
    decay : float, default=0.0
        fastnn extra (solver="adagrad"/"rmsprop"): ``lr_t = lr / (1 + decay * t)`` per step.
    optimizer_params : dict or None
        fastnn extra: further keywords of :class:`fastnn.optim.Adagrad` / ``RMSprop``.
    dtype : None, "float32" or "float64", default=None
        fastnn extra: training precision. None keeps float32 and float64 inputs as they are
        (others become float64), as scikit-learn does; "float32" trains in single precision
        whatever the input.
    inference_precision : None, "float32", "float64" or "bfloat16", default=None
        fastnn extra: the products of ``predict``, ``predict_proba`` and ``score``. None or
        the network's dtype: exact in that dtype; "bfloat16" (a float32 network, opt-in):
        weights and inputs rounded to bfloat16, sums in float32 (faster, relative errors of
        about 1e-2 of the output's scale; see ``Sequential.predict``). The scores ``fit``
        computes (early stopping, ``validation_data``) stay in the network's dtype.
    n_threads : int or None, default=None
        fastnn extra: threads for fastnn's kernels and for BLAS during ``fit`` and
        ``predict`` (threadpoolctl). In ``GridSearchCV(..., n_jobs=k)`` use
        ``n_threads=fastnn.parallel.threads_per_worker(k)``.
    optimizer, lr, nesterov, betas : deprecated, default=None
        fastnn's former names of ``solver``, ``learning_rate_init``, ``nesterovs_momentum``
        and ``(beta_1, beta_2)``: still honoured (they override the new name), with a
        FutureWarning."""

_ATTRS_DOC = """
    coefs_, intercepts_ : list of ndarray
        Weights (n_fan_in, n_fan_out) and biases (n_fan_out,) of each layer, input first, in
        the training dtype; they are the network's own arrays (``model_``). A maxout layer's
        are those of its linear units (``n_fan_out = width * maxout_pieces``).
    loss_ : float
        The last training loss (penalties included).
    best_loss_ : float or None
        Lowest training loss (stochastic solvers; None with ``early_stopping``).
    loss_curve_ : list of float
        Training loss of each epoch (stochastic solvers).
    validation_scores_ : list of float or None
        Score on the validation set after each epoch (``early_stopping`` or
        ``validation_data``).
    best_validation_score_ : float or None
    t_ : int
        Training samples seen by the solver.
    n_iter_ : int
        Epochs (iterations for L-BFGS) of the last call.
    n_layers_ : int
        Layers, input and output included.
    n_outputs_ : int
    out_activation_ : str
        "softmax", "logistic", "sparsemax" (classifier), "identity" or "exp" (regressor).
    n_features_in_ : int
    feature_names_in_ : ndarray of str (when X was a DataFrame with string column names)
    model_ : fastnn.Sequential
        The network (its ``predict`` gives the values before ``out_activation_``)."""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    __doc__ = f"""Multi-layer perceptron classifier trained by fastnn; a drop-in for
    ``sklearn.neural_network.MLPClassifier``.

    As scikit-learn: log-loss with a softmax output for multi-class targets, a logistic output
    (one unit) for binary targets and multi-label indicator matrices. fastnn extras:
    ``output="sparsemax"`` / ``loss="sparsemax"`` (the sparsemax loss; multi-label targets are
    then trained against the label set normalized to a distribution, and ``predict`` returns
    the sparsemax support), ``output="softmax"`` (one unit per class, also for two classes).
    {_PARAMS_DOC}
    output : {{"auto", "softmax", "sparsemax"}}, default="auto"
        fastnn extra: the output map of ``predict_proba``; "auto" follows ``loss``
        (scikit-learn's logistic/softmax for the log-loss, sparsemax for the sparsemax loss).
    loss : {{{", ".join(repr(n) for n in sorted(_CLASSIFIER_LOSSES))}}}, default="auto"
        fastnn extra: the training loss, a classification loss of
        :data:`fastnn.losses.LOSS_TABLE` or an alias ("log_loss", scikit-learn's name, and
        "nll" are cross-entropy); "auto" follows ``output``.

    Attributes
    ----------
    classes_ : ndarray
        The class labels; for multi-label targets the column indices.{_ATTRS_DOC}
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "output": [StrOptions({"auto", "softmax", "sparsemax"})],
        "loss": [StrOptions(_CLASSIFIER_LOSSES)],
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dropout=0.0, output="auto", loss="auto", l1=0.0, l2=0.0, decay=0.0,
                 optimizer_params=None, dtype=None, n_threads=None, optimizer=None, lr=None,
                 nesterov=None, betas=None, maxout_pieces=2, inference_precision=None):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, max_iter=max_iter, shuffle=shuffle, random_state=random_state,
            tol=tol, verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            dropout=dropout, l1=l1, l2=l2, decay=decay, optimizer_params=optimizer_params,
            dtype=dtype, n_threads=n_threads, optimizer=optimizer, lr=lr, nesterov=nesterov,
            betas=betas, maxout_pieces=maxout_pieces,
            inference_precision=inference_precision)
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
        """(training output, loss name, predict_proba map)."""
        out, loss = self.output, self.loss
        loss = loss if loss == "auto" else loss_info(loss).name
        loss = "log_loss" if loss == "cross_entropy" else loss
        if loss == "auto":
            loss = "sparsemax" if out == "sparsemax" else "log_loss"
        proba = out if out != "auto" else ("sparsemax" if loss == "sparsemax" else "sklearn")
        if multilabel and loss == "log_loss" and proba != "sklearn":
            raise ValueError("multi-label targets (an indicator matrix y) take the log-loss "
                             "with a logistic output (output='auto') or the sparsemax loss "
                             "and output (output='sparsemax', loss='sparsemax' or 'auto')")
        if multilabel and loss == "sparsemax" and proba != "sparsemax":
            raise ValueError("multi-label targets with the sparsemax loss need the sparsemax "
                             "output (output='sparsemax' or 'auto'): the predicted label set "
                             "is the sparsemax support")
        train = "sparsemax" if loss == "sparsemax" else \
            ("softmax" if proba != "sklearn" else "sklearn")
        return train, loss, proba

    def _validate_input(self, X, y, incremental, reset):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target "
                             f"y is None")
        X, y = _validate_data(self, X, y, multi_output=True, dtype=self._input_dtype(reset),
                              order="C", reset=reset, accept_sparse=["csr", "csc"])
        X = _densify(X)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._start_labels(y)
        else:
            labels = unique_labels(y)
            if self.warm_start and not incremental:
                if set(labels) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in "
                        f"the previous call to fit. Previously got {self.classes_}, `y` has "
                        f"{labels}")
            elif len(np.setdiff1d(labels, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` "
                                 f"has {self.classes_}. 'y' has {labels}.")
        Y = self._label_binarizer.transform(y).astype(bool)
        return X, self._encode_columns(Y)

    def _start_labels(self, y):
        """Fit the label binarizer on y (or on partial_fit's classes); sets ``classes_``."""
        self._label_binarizer = LabelBinarizer()
        self._label_binarizer.fit(y)
        self.classes_ = self._label_binarizer.classes_
        multilabel = self._label_binarizer.y_type_.startswith("multilabel")
        self._train_output, self._loss, self._proba_map = self._resolve_output(multilabel)

    def _check_val_targets(self, y_val):
        if not self._multilabel():
            unseen = np.setdiff1d(unique_labels(y_val), self.classes_)
            if len(unseen):
                raise ValueError(f"validation_data: y_val has labels not seen in training: "
                                 f"{unseen} (classes_={self.classes_})")

    def _multilabel(self):
        return self._label_binarizer.y_type_.startswith("multilabel")

    def _encode_columns(self, Y):
        """The training targets from the binarized labels (bool, as scikit-learn's; float
        for the sparsemax loss's label distributions)."""
        if self._train_output != "sklearn" and Y.shape[1] == 1:  # one column per class
            Y = np.hstack([~Y, Y]) if self.classes_.shape[0] == 2 else np.ones_like(Y)
        if self._loss == "sparsemax" and self._multilabel():
            Y = Y / np.maximum(Y.sum(axis=1, keepdims=True), 1.0)
        return Y

    def _drop_unusable(self, X, Y, sample_weight):
        if self._loss == "sparsemax" and self._multilabel():
            keep = Y.any(axis=1)
            if not keep.all():
                if not keep.any():
                    raise ValueError("every sample has an empty label set; the sparsemax loss "
                                     "needs at least one label per sample")
                X, Y = X[keep], Y[keep]
                sample_weight = None if sample_weight is None else sample_weight[keep]
        return X, Y, sample_weight

    def _stratify(self):
        return self.n_outputs_ == 1  # as scikit-learn: multi-class and multi-label unstratified

    def _output_activation(self):
        if self._train_output == "sklearn":
            return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"
        return self._train_output

    def _loss_name(self):
        if self._loss == "sparsemax":
            return "sparsemax"
        return "binary_log_loss" if self.out_activation_ == "logistic" else "log_loss"

    def _score_function(self, y, y_pred, sample_weight=None):
        return accuracy_score(y, y_pred, sample_weight=sample_weight)

    def _decode(self, Y):
        """Labels from an encoded target matrix (or from probabilities)."""
        if self._proba_map == "sparsemax" and self._multilabel():
            return (Y > 0).astype(int)
        if self._train_output != "sklearn" and not self._multilabel():
            return self.classes_[np.argmax(Y, axis=1)]
        if Y.shape[1] == 1:
            Y = Y.ravel()
        return self._label_binarizer.inverse_transform(Y)

    def _proba(self, X, validated=True):
        z = self._logits(X, validated)
        out = self.out_activation_
        if self._proba_map in ("softmax", "sparsemax") and self._proba_map != out:
            out = self._proba_map
        return _out_activation(out, z, self.n_threads).astype(z.dtype, copy=False)

    def _predict_array(self, X, validated=True):
        return self._decode(self._proba(X, validated))

    # --- public API ---------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None, *, validation_data=None, callbacks=None):
        """Fit the network to X (n_samples, n_features) and y (labels, or a binary indicator
        matrix for multi-label); returns self.

        ``sample_weight`` (n_samples,) weights each sample's loss (scikit-learn's weighted
        mean). fastnn extras: ``validation_data=(X_val, y_val)`` is scored after every epoch
        (``validation_scores_``), monitored for stopping and the best epoch's weights kept;
        ``callbacks``: :class:`fastnn.callbacks.Callback` objects whose epoch hooks run
        (logs ``loss`` and ``val_score``; ``self.trainer.model`` is the network and setting
        ``self.trainer.stop_training`` stops; learning-rate callbacks do not apply).
        """
        return self._fit(X, y, sample_weight, incremental=False,
                         validation_data=validation_data, callbacks=callbacks)

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), continuing from the previous calls (stochastic solvers).
        ``classes`` (every label any call may see) is required on the first call."""
        from sklearn.utils.multiclass import _check_partial_fit_first_call

        if _check_partial_fit_first_call(self, classes):
            self._start_labels(y if type_of_target(y).startswith("multilabel") else classes)
        return self._fit(X, y, sample_weight, incremental=True)

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes) in the network's dtype (float32 stays
        float32): softmax, logistic (two columns for binary targets) or sparsemax (exact
        zeros) of the network's output."""
        P = self._proba(X, validated=False)
        if P.shape[1] == 1:
            p = P.ravel()
            return np.vstack([1 - p, p]).T
        return P

    def predict(self, X):
        """Labels (n_samples,); for multi-label targets the indicator matrix (n_samples,
        n_classes)."""
        return self._predict_array(X, validated=False)

    def predict_log_proba(self, X):
        """Logarithm of ``predict_proba`` (-inf where sparsemax gives 0)."""
        with np.errstate(divide="ignore"):
            y_prob = self.predict_proba(X)
            return np.log(y_prob, out=y_prob)


class MLPRegressor(RegressorMixin, _BaseMLP):
    __doc__ = f"""Multi-layer perceptron regressor trained by fastnn; a drop-in for
    ``sklearn.neural_network.MLPRegressor`` (one or several targets).

    Parameters
    ----------
    loss : {{"squared_error", "poisson"}}, default="squared_error"
        Half squared error with an identity output, or half Poisson deviance with an ``exp``
        output (``y >= 0``). fastnn extra: the other names of the squared loss in
        :data:`fastnn.losses.LOSS_TABLE` ("squared", "mse"). As in scikit-learn it is the first positional parameter: pass
        ``hidden_layer_sizes`` by keyword.{_PARAMS_DOC.split("----------", 1)[1]}

    Attributes
    ----------{_ATTRS_DOC}
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"}),
                 Hidden(StrOptions(_REGRESSOR_LOSSES))],
    }

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dropout=0.0, l1=0.0, l2=0.0, decay=0.0, optimizer_params=None, dtype=None,
                 n_threads=None, optimizer=None, lr=None, nesterov=None, betas=None,
                 maxout_pieces=2, inference_precision=None):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, max_iter=max_iter, shuffle=shuffle, random_state=random_state,
            tol=tol, verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            dropout=dropout, l1=l1, l2=l2, decay=decay, optimizer_params=optimizer_params,
            dtype=dtype, n_threads=n_threads, optimizer=optimizer, lr=lr, nesterov=nesterov,
            betas=betas, maxout_pieces=maxout_pieces,
            inference_precision=inference_precision)
        self.loss = loss

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": True}

    def _validate_input(self, X, y, incremental, reset):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target "
                             f"y is None")
        X, y = _validate_data(self, X, y, multi_output=True, y_numeric=True,
                              dtype=self._input_dtype(reset),
                              order="C", reset=reset, accept_sparse=["csr", "csc"])
        X = _densify(X)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not reset and y.reshape(y.shape[0], -1).shape[1] != self.n_outputs_:
            raise ValueError(f"y has {y.reshape(y.shape[0], -1).shape[1]} targets, the model "
                             f"was fitted on {self.n_outputs_}")
        return X, y

    def _check_params(self):
        if not isinstance(self.loss, str) and (isinstance(self.loss, (numbers.Integral, tuple,
                                                                      list))):
            raise ValueError(f"MLPRegressor's first parameter is `loss` (as in scikit-learn), "
                             f"got loss={self.loss!r}: pass the layer sizes by keyword, "
                             f"hidden_layer_sizes={self.loss!r}")
        return super()._check_params()

    def _output_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _loss_name(self):
        return "poisson" if self.loss == "poisson" else "squared_error"

    def _score_function(self, y, y_pred, sample_weight=None):
        return r2_score(y, y_pred, sample_weight=sample_weight)

    def _decode(self, Y):
        return Y.ravel() if Y.shape[1] == 1 else Y

    def _predict_array(self, X, validated=True):
        return self._decode(self._output(X, validated))

    def fit(self, X, y, sample_weight=None, *, validation_data=None, callbacks=None):
        """Fit the network to X (n_samples, n_features) and y (n_samples,) or (n_samples,
        n_targets); returns self. ``sample_weight``, ``validation_data`` and ``callbacks`` as
        in :meth:`MLPClassifier.fit`."""
        return self._fit(X, y, sample_weight, incremental=False,
                         validation_data=validation_data, callbacks=callbacks)

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the previous calls (stochastic solvers)."""
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predictions (n_samples,) - or (n_samples, n_targets) for several targets - in the
        network's dtype."""
        return self._predict_array(X, validated=False)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _densify(X):
    """A dense C-contiguous copy of a scipy.sparse matrix (fastnn's kernels are dense); other
    arrays unchanged."""
    import scipy.sparse

    if scipy.sparse.issparse(X):
        return np.ascontiguousarray(X.toarray())
    return X
