"""The module protocol: :class:`Module`, the base class of every layer and network, and
:class:`Node`, the symbolic tensor of the functional graph API (:mod:`fastnn.graph`).

A module's ``forward`` (fprop) computes its output from its input and caches what its
``backward`` (bprop) needs; ``backward`` takes the gradient of the loss with respect to the
output, returns the gradient with respect to the input, and *adds* the gradients of the module's
parameters into their ``.grad`` buffers. Work arrays come from ``Module._buffer`` (one
array per tag, reused by every call; see :mod:`fastnn.layers`).

Protocol hooks a layer may implement besides ``forward``/``backward``:

* ``get_config`` / ``_build`` / ``_parameter_shapes``: rebuilding from a saved description
  (:func:`module_from_config`, :func:`config_parameter_shapes`, :func:`fastnn.load`);
* ``output_features`` / ``input_features``: widths, checked when a graph is built;
* ``_state_buffers`` / ``_load_state_buffer``: non-trainable state saved with the weights;
* ``_forward_cache``: the attributes holding what ``forward`` caches for ``backward``;
* ``_kink_state()``: for :func:`fastnn.gradcheck`. After a forward, a layer whose function is
  not differentiable everywhere returns a bool array (its relu pattern, its maxout argmax, its
  sparsemax support: anything whose change between two nearby inputs signals that a
  non-differentiable point lies between them); ``None`` (the default) means smooth. gradcheck
  compares the states of every module at the two points of each finite-difference stencil
  and skips the coordinates whose stencil crosses a kink.
"""
from __future__ import annotations

import copy
import itertools
import math

import numpy as np

from fastnn._validation import check_float_array, check_float_dtype, check_n_threads
from fastnn.parameter import Parameter

__all__ = ["Module", "Node", "as_input", "config_parameter_shapes", "module_from_config",
           "no_forward_error"]

# Every Module subclass by class name: what module_from_config rebuilds from a "type".
_REGISTRY: dict[str, type] = {}


def as_input(x) -> np.ndarray:
    """A module's input as an ndarray: arrays pass as they are (the kernels check them);
    anything else (a list, a scalar, an array-like) is converted, or rejected with a clear
    error, by check_float_array."""
    return x if type(x) is np.ndarray else check_float_array(x, "x")


def no_forward_error(module) -> RuntimeError:
    """The error of a backward with no forward to backpropagate through."""
    return RuntimeError(f"{module!r}: backward was called before forward; call forward on the "
                        f"batch first (backward backpropagates through the last forward)")


class Node:
    """A symbolic tensor of a computation graph: a model input (``layer`` None) or the output
    of ``layer`` applied to ``parents``. ``features`` is its width, checked when the node is
    made (see :mod:`fastnn.graph`)."""

    __slots__ = ("layer", "parents", "features", "name", "uid")
    _count = itertools.count()

    def __init__(self, layer, parents: tuple, features: int, name=None):
        self.layer = layer
        self.parents = tuple(parents)
        self.features = int(features)
        self.name = name
        self.uid = next(Node._count)

    @staticmethod
    def apply(layer, x) -> Node:
        """The node of ``layer(x)``: one parent, or a list for a merge layer."""
        if isinstance(x, Node):
            if getattr(layer, "n_min", None) is not None:
                raise ValueError(f"{type(layer).__name__} takes a list of nodes")
            width = layer.output_features(x.features)
            if width is None:
                raise ValueError(f"{layer!r} cannot tell its output width for "
                                 f"{x.features} input features")
            return Node(layer, (x,), width)
        if getattr(layer, "n_min", None) is None:
            raise ValueError(f"{type(layer).__name__} takes one node, got a list of {len(x)}")
        if len(x) < layer.n_min:
            raise ValueError(f"{type(layer).__name__} takes at least {layer.n_min} nodes")
        return Node(layer, tuple(x), layer.merged_features([n.features for n in x]))

    def __repr__(self):
        what = "Input" if self.layer is None else type(self.layer).__name__
        name = f" {self.name!r}" if self.name else ""
        return f"<Node{name} {what}, {self.features} features>"


class Module:
    """Base class of every layer and network.

    Subclasses implement ``forward(x)`` and ``backward(grad_output, need_input_grad=True,
    inplace=False)``; list their parameters in ``_parameters`` and their sub-modules in
    ``_modules`` (both ordered name -> object), and describe their constructor arguments in
    ``get_config()`` so that :func:`fastnn.save` can rebuild them.

    Attributes
    ----------
    training : bool
        True in training mode (dropout active), False in evaluation mode.
    n_threads : int or None
        Threads for the kernels; None means ``omp_get_max_threads()`` at call time. Setting it on
        a container sets it on every sub-module.
    """

    def __init__(self):
        self.training = True
        self._n_threads = None
        self._parameters: dict[str, Parameter] = {}
        self._modules: dict[str, Module] = {}
        self._buffers: dict = {}

    #: Attributes holding what ``forward`` caches for ``backward`` (its input, its output):
    #: left out of pickles and copies, and released by ``predict`` (a subclass that caches
    #: arrays in other attributes lists them here).
    _forward_cache: tuple = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    # --- the graph interface -------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Compute the output for a batch ``x`` of shape (n_samples, in_features)."""
        raise NotImplementedError

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True,
                 inplace: bool = False):
        """Backpropagate ``grad_output`` (dL/d output) through the last ``forward``.

        Adds the parameter gradients into their ``.grad`` buffers and returns dL/d input
        (None when ``need_input_grad`` is False). ``inplace=True`` allows the module to overwrite
        ``grad_output`` (a container passes it for gradients that nobody else reads).
        A subclass reads ``p.grad`` afresh in each call (``p.grad += ...``): ``zero_grad`` is
        deferred (see :class:`fastnn.parameter.Parameter`), so a gradient array kept from an
        earlier call would hold stale values until ``grad`` is read.
        """
        raise NotImplementedError

    def __call__(self, x):
        """``forward(x)`` on arrays; on graph nodes (:func:`fastnn.Input` or the result of
        calling a layer on nodes) a new node: the functional API of :mod:`fastnn.graph`."""
        if isinstance(x, Node) or (isinstance(x, (list, tuple)) and x
                                   and all(isinstance(n, Node) for n in x)):
            return Node.apply(self, x)
        return self.forward(x)

    # --- parameters and modes --------------------------------------------------------------------
    def named_parameters(self, prefix: str = ""):
        """Yield (name, Parameter) pairs, depth first, names like ``"0.weight"``."""
        for name, p in self._parameters.items():
            yield prefix + name, p
        for name, m in self._modules.items():
            yield from m.named_parameters(prefix + name + ".")

    def parameters(self) -> list:
        """The trainable parameters, in a fixed order (the order optimizers and files use)."""
        return [p for _, p in self.named_parameters()]

    def modules(self):
        """Yield this module and all its sub-modules, depth first."""
        # one generator and an explicit stack (nested generators cost ~0.3 us per module, and
        # zero_grad/predict walk the modules on every call)
        stack = [self]
        while stack:
            m = stack.pop()
            yield m
            if m._modules:
                stack.extend(reversed(m._modules.values()))

    def named_buffers(self, prefix: str = ""):
        """Yield (name, array) for non-trainable state saved with the weights (dropout counters)."""
        for name, value in self._state_buffers().items():
            yield prefix + name, value
        for name, m in self._modules.items():
            yield from m.named_buffers(prefix + name + ".")

    def _state_buffers(self) -> dict:
        return {}

    def _load_state_buffer(self, name: str, value: np.ndarray) -> None:
        raise KeyError(name)

    def train(self, mode: bool = True):
        """Set training mode (dropout active) on this module and its sub-modules; returns self."""
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self):
        """Set evaluation mode (dropout off; deterministic); returns self."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Set every parameter gradient to zero (deferred: see ``Parameter.grad``)."""
        # modules() rather than parameters(): no name strings built (a step's zero_grad is
        # ~1 us per module instead of ~4 us per parameter, which a small network notices).
        for m in self.modules():
            for p in m._parameters.values():
                p.zero_grad()

    @property
    def n_threads(self):
        return self._n_threads

    @n_threads.setter
    def n_threads(self, value):
        value = check_n_threads(value)
        for m in self.modules():
            m._n_threads = value

    @property
    def dtype(self):
        """The float dtype of the parameters (None for a module without parameters)."""
        for p in self.parameters():
            return p.data.dtype
        return None

    def _has_parameters(self) -> bool:
        return bool(self._parameters) or any(m._has_parameters() for m in self._modules.values())

    def n_parameters(self) -> int:
        return int(sum(p.data.size for p in self.parameters()))

    # --- shapes, config, copies ------------------------------------------------------------------
    def output_features(self, in_features):
        """Width of the output for an input of ``in_features`` columns (None: unknown);
        raises ValueError when the module cannot take that width."""
        return in_features

    def input_features(self):
        """Input width the module requires, or None when any width works."""
        return

    def get_config(self) -> dict:
        """Constructor arguments as JSON-compatible values (``type`` names the class)."""
        return {"type": type(self).__name__}

    @classmethod
    def from_config(cls, config: dict, dtype=np.float32) -> Module:
        """Build a module (with fresh parameters of ``dtype``) from ``get_config()``'s dict."""
        return module_from_config(config, dtype)

    def _set_dtype(self, dtype) -> None:
        """Re-type the parameters (construction time only: containers fix one dtype)."""
        dtype = check_float_dtype(dtype)
        for p in self._parameters.values():
            if p.data.dtype != dtype:
                p.data = p.data.astype(dtype)
                p.grad = np.zeros_like(p.data)
        self._buffers.clear()
        for m in self._modules.values():
            m._set_dtype(dtype)

    def astype(self, dtype) -> Module:
        """An independent copy of this module (values, counters, modes, loss) with parameters of
        ``dtype`` (float32 -> float64 is exact). A fitted model's optimizer is not copied."""
        dtype = check_float_dtype(dtype)
        memo = {}
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None:
            memo[id(optimizer)] = None
        new = copy.deepcopy(self, memo)
        new._set_dtype(dtype)
        for m in new.modules():
            m._buffers.clear()
        return new

    def copy(self) -> Module:
        """An independent copy (same architecture, parameters, counters, dtype and mode)."""
        return self.astype(self.dtype or np.float64)

    @classmethod
    def _build(cls, kwargs: dict, dtype) -> Module:
        """Construct from config kwargs; modules with parameters create them with ``dtype``."""
        module = call_with_config(cls, kwargs)
        module._set_dtype(dtype)
        return module

    @classmethod
    def _parameter_shapes(cls, kwargs: dict):
        """``name -> shape`` of the parameters ``_build(kwargs, ...)`` creates, from the config
        alone (nothing allocated), or None when the class cannot tell. A module whose
        parameters' sizes come from its config overrides it (see ``config_parameter_shapes``)."""
        return None

    # --- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """name -> copy of every parameter and state buffer (ordered like ``named_parameters``)."""
        sd = {name: p.data.copy() for name, p in self.named_parameters()}
        for name, value in self.named_buffers():
            sd[name] = np.array(value, copy=True)
        return sd

    def load_state_dict(self, state_dict: dict, strict: bool = True) -> None:
        """Copy values into the parameters (their dtype is kept; float32 <-> float64 is cast).

        Raises KeyError naming missing or unexpected entries (``strict``) and ValueError on a
        shape mismatch; nothing is modified when an error is raised.
        """
        params = dict(self.named_parameters())
        buffers = dict(self.named_buffers())
        expected = list(params) + list(buffers)
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict if k not in params and k not in buffers]
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict does not match the model: missing {missing}, "
                           f"unexpected {unexpected}")
        for name, p in params.items():
            if name not in state_dict:
                continue
            value = np.asarray(state_dict[name])
            if value.shape != p.data.shape:
                raise ValueError(f"shape mismatch for {name!r}: the model has {p.data.shape}, "
                                 f"the state_dict has {value.shape}")
            if value.dtype.kind != "f":
                raise TypeError(f"{name!r} must hold floats, got dtype {value.dtype}")
        for name, value in state_dict.items():
            if name in params:
                np.copyto(params[name].data, value, casting="same_kind")
                params[name]._version += 1
        by_prefix = {}
        for m_name, m in self._named_modules():
            by_prefix[m_name] = m
        for name in buffers:
            if name in state_dict:
                mod_name, _, leaf = name.rpartition(".")
                by_prefix[mod_name]._load_state_buffer(leaf, np.asarray(state_dict[name]))

    def _named_modules(self, prefix: str = ""):
        yield prefix.rstrip("."), self
        for name, m in self._modules.items():
            yield from m._named_modules(prefix + name + ".")

    # --- buffers ---------------------------------------------------------------------------------
    def __getstate__(self):
        # Work buffers and the arrays cached for backward are scratch, rebuilt by the next call:
        # a pickle (joblib and Dask move fitted models between processes) or a copy holds the
        # weights, the configuration and the counters only, whatever was run before. A model
        # loaded read-only (joblib.load(..., mmap_mode="r")) stays usable for prediction.
        state = self.__dict__.copy()
        state["_buffers"] = {}
        for name in self._forward_cache:
            if name in state:
                state[name] = None
        state.pop("_predict_lock_", None)  # a lock is per process (Sequential.predict)
        # a copy compiles its own inference plan (fastnn.functional.inference._KEY): a shared
        # one would be used under two predict locks
        state.pop("_inference_plan_", None)
        return state

    def _clear_forward_cache(self) -> None:
        """Drop the arrays cached by the last forward (a backward needs a new forward)."""
        for name in self._forward_cache:
            setattr(self, name, None)

    def _buffer(self, tag: str, shape: tuple, dtype, avoid=None) -> np.ndarray:
        """A C-contiguous work array of ``shape`` and ``dtype`` for ``tag``: a view of the
        leading elements of one array per tag, grown to the largest request (so the memory held
        is the largest batch's, not the sum over the batch sizes served). The same view object
        is returned while the shape repeats (a training step). ``avoid``: an input the caller
        reads while writing the buffer; when it lies in the tag's array (a module fed its own
        earlier output), a fresh array is returned instead."""
        entry = self._buffers.get(tag)   # [shape, dtype, view, base]
        if entry is not None and entry[0] == shape and entry[1] is dtype and (
                avoid is None or avoid.base is not entry[3]):
            return entry[2]
        return self._grow_buffer(tag, shape, dtype, avoid)

    def _grow_buffer(self, tag, shape, dtype, avoid) -> np.ndarray:
        dt = np.dtype(dtype)
        size = math.prod(shape)
        entry = self._buffers.get(tag)
        base = None if entry is None else entry[3]
        if avoid is not None and base is not None and avoid.base is base:
            return np.empty(shape, dtype=dt)
        if base is None or base.dtype != dt or base.size < size:
            entry = base = None   # let the old array go before allocating the larger one
            self._buffers.pop(tag, None)
            base = np.empty(size, dtype=dt)
        view = base[:size].reshape(shape)
        self._buffers[tag] = [tuple(shape), dtype, view, base]
        return view

    def _buffer_nbytes(self) -> int:
        """Bytes held by this module's work buffers (not its sub-modules')."""
        return sum(entry[3].nbytes for entry in self._buffers.values())

    def _kink_state(self):
        """After a forward: a bool array whose change between two nearby inputs signals a
        non-differentiable point (relu pattern, sparsemax support), or None (smooth). The
        gradcheck hook: see the module notes."""
        return

    # --- display ---------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def module_from_config(config: dict, dtype=np.float32) -> Module:
    """Rebuild a module from its ``get_config()`` dict (unknown types are a clear error)."""
    cls, kwargs = _config_class(config)
    return cls._build(kwargs, check_float_dtype(dtype))


def config_parameter_shapes(config: dict):
    """``name -> shape`` of every parameter ``module_from_config(config)`` would create
    (names as in ``named_parameters``), computed without building anything; None when a class
    in the config does not declare its shapes.

    :func:`fastnn.load` compares it with the arrays a file stores before building the model,
    so a description declaring huge layers is refused without allocating them. A class's
    ``_parameter_shapes`` is trusted for the classes of its own module only: a subclass
    defined elsewhere may add parameters (it is then built first and checked after).
    """
    cls, kwargs = _config_class(config)
    owner = next(c for c in cls.__mro__ if "_parameter_shapes" in vars(c))
    if owner.__module__ != cls.__module__:
        return None
    return cls._parameter_shapes(kwargs)


def _config_class(config):
    if not isinstance(config, dict) or "type" not in config:
        raise ValueError(f"a module config must be a dict with a 'type' key, got {config!r}")
    kind = config["type"]
    cls = _REGISTRY.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown layer type {kind!r}; known types: {', '.join(sorted(_REGISTRY))}"
                         " (a custom Module subclass must be imported before loading)")
    return cls, {k: v for k, v in config.items() if k != "type"}


def call_with_config(cls, kwargs, **extra):
    """``cls(**kwargs, **extra)``, a constructor's TypeError (a bad config) as ValueError."""
    try:
        return cls(**kwargs, **extra)
    except TypeError as exc:
        raise ValueError(f"invalid config for {cls.__name__}: {exc}") from None
