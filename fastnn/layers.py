"""Layers: the boxes of the lecture's computation graph, each with ``forward`` and ``backward``
(the protocol, :class:`fastnn.module.Module`, is described in :mod:`fastnn.module`).

The arithmetic is done by the compiled kernels behind :mod:`fastnn.functional`, the only route
to them; the layers are plain Python around it, one call per batch (never a Python loop over
samples).

Buffers. Outputs and gradients are written into arrays owned by the module and reused by every
call, so a steady-state training step allocates no arrays. One array per buffer, sized for the
largest batch seen, serves every batch size (a call gets a view of its leading rows): the memory
held is that of the largest batch, however many batch sizes a model serves. The price: the array
returned by ``forward`` (or ``backward``) is overwritten by the next call, whatever its batch
size. Copy it (``y.copy()``) or use :meth:`fastnn.Sequential.predict` to keep a result.
"""
from __future__ import annotations

import contextlib
import contextvars
import numbers

import numpy as np

from fastnn import functional as F
from fastnn import init as initializers
from fastnn._threads import resolve_n_threads
from fastnn._validation import check_float_dtype
from fastnn.functional.activations import ACTIVATION_TABLE, ACTIVATIONS, activation_info
from fastnn.functional.dense import backward_into as _backward_into
from fastnn.functional.dense import forward_into as _forward_into
from fastnn.module import Module, Node, as_input, call_with_config, no_forward_error
from fastnn.parameter import Parameter

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "Dense",
    "Dropout",
    "ELU",
    "GELU",
    "Identity",
    "LeakyReLU",
    "Maxout",
    "Module",
    "Node",
    "ReLU",
    "Sigmoid",
    "SiLU",
    "Sign",
    "Softmax",
    "Softplus",
    "Sparsemax",
    "Step",
    "Tanh",
]

# Activation names: fastnn.functional.activations.ACTIVATION_TABLE (ACTIVATIONS re-exported).
# Kinked activations (the derivative or the value jumps at 0): gradcheck looks for a change of
# the sign pattern between the two points of a finite-difference stencil.
_KINKED = tuple(a.name for a in ACTIVATION_TABLE.values() if a.kinked)

# False while fastnn.load builds a model whose parameters it then reads from the file: the
# initializers would only cost time and a temporary as large as each weight.
_INITIALIZE = contextvars.ContextVar("fastnn_initialize", default=True)


@contextlib.contextmanager
def skip_initialization():
    """Within it, layers leave their new parameters uninitialized (``np.empty``); for code
    that overwrites every parameter right after building (:func:`fastnn.load`)."""
    token = _INITIALIZE.set(False)
    try:
        yield
    finally:
        _INITIALIZE.reset(token)

# Dense calls fastnn.functional's layer entries (forward_into/backward_into) with the kernel code
# of its activation: they let the kernel check the arrays in C and validate in Python only the
# inputs it declines.
_IDENTITY_CODE = ACTIVATION_TABLE["identity"].code


def _canonical_activation(name) -> str:
    return activation_info(name).name


class Dense(Module):
    """Fully connected layer with an optional fused activation: ``y = act(x @ W + b)``.

    Parameters
    ----------
    in_features, out_features : int
    activation : str or None
        A name of :data:`fastnn.functional.activations.ACTIVATION_TABLE`: "identity" (None, "linear"),
        "sigmoid", "tanh", "relu", "step", "sign", "leaky_relu", "elu", "softplus", "gelu",
        "gelu_tanh" or "silu", computed in the same kernel pass as the bias (no extra pass over
        the output). For GELU and SiLU the pre-activation is kept too, in training mode only
        (their derivative needs it).
    bias : bool
    init : str, callable or None
        Weight initializer: a name from :mod:`fastnn.init` ("glorot_uniform", "he_normal", ...)
        or a callable ``init(shape, seed=..., dtype=...)``. None picks the activation's default
        (the table's ``init``): He uniform for the relu family (relu, leaky relu, ELU,
        softplus, GELU, SiLU), Glorot uniform otherwise (the lecture's choice for tanh and
        sigmoid).
    bias_init : float
        Constant initial bias (0 by default; a small positive value such as 0.01 keeps relu units
        alive at the start).
    seed : int, numpy Generator or None
        Seed of the weight initialization.
    dtype : float32 or float64

    Attributes
    ----------
    weight : Parameter, shape (in_features, out_features), C order
        Stored input-major so that the forward pass is one row-major GEMM ``x @ W`` (PyTorch
        stores the transpose, ``(out_features, in_features)``).
    bias : Parameter, shape (out_features,), or None
        Not regularized by L1/L2 (``regularize=False``).
    """

    _forward_cache = ("_x", "_y", "_z")

    def __init__(self, in_features: int, out_features: int, activation=None, bias: bool = True,
                 init=None, bias_init: float = 0.0, seed=None, dtype=np.float32):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.activation = _canonical_activation(activation)
        self.init = init
        if isinstance(bias_init, bool) or not isinstance(bias_init, numbers.Real):
            raise TypeError(f"bias_init must be a float, got {bias_init!r}")
        self.bias_init = float(bias_init)
        self.seed = seed
        dtype = check_float_dtype(dtype)
        self.weight = Parameter(np.empty((self.in_features, self.out_features), dtype=dtype),
                                name="weight", regularize=True)
        self._parameters["weight"] = self.weight
        self.bias = None
        if bias:
            self.bias = Parameter(np.empty(self.out_features, dtype=dtype), name="bias",
                                  regularize=False)
            self._parameters["bias"] = self.bias
        self._x = self._y = self._z = None
        if _INITIALIZE.get():
            self.reset_parameters()

    def reset_parameters(self, seed=None) -> None:
        """(Re)initialize the weight with ``init`` and the bias with ``bias_init``."""
        seed = self.seed if seed is None else seed
        init = self.init
        if init is None:
            init = ACTIVATION_TABLE[self.activation].init
        if isinstance(init, str):
            fn = getattr(initializers, init, None)
            if fn is None or init.startswith("_"):
                raise ValueError(f"unknown initializer {init!r} (see fastnn.init)")
        elif callable(init):
            fn = init
        else:
            raise TypeError(f"init must be a name, a callable or None, got {init!r}")
        w = fn((self.in_features, self.out_features), seed=seed, dtype=self.weight.data.dtype)
        w = np.asarray(w)
        if w.shape != self.weight.data.shape:
            raise ValueError(f"initializer {init!r} returned shape {w.shape}, "
                             f"expected {self.weight.data.shape}")
        self.weight.data[...] = w
        self.weight._version += 1
        if self.bias is not None:
            self.bias.data.fill(self.bias_init)
            self.bias._version += 1

    def forward(self, x):
        if type(x) is not np.ndarray:
            x = as_input(x)
        W = self.weight.data
        # avoid=x: a layer fed its own last output gets a fresh array (a GEMM cannot write over
        # its input)
        y = self._buffer("y", (x.shape[0], self.out_features), W.dtype, avoid=x)
        b = None if self.bias is None else self.bias.data
        act = ACTIVATION_TABLE[self.activation]
        # The pre-activation, for the backward of GELU/SiLU, only when training.
        z = None
        if act.needs_z and self.training:
            z = self._buffer("z", y.shape, y.dtype)
        _forward_into(x, W, b, y, act.code, resolve_n_threads(self._n_threads), z)
        self._x, self._y, self._z = x, y, z
        return y

    def backward(self, grad_output, need_input_grad=True, inplace=False):
        x = self._x
        if x is None:
            raise no_forward_error(self)
        gx = None
        if need_input_grad:
            gx = self._buffer("gx", x.shape, x.dtype)   # the kernels refuse an overlap
        self._backward_into(x, grad_output, gx, inplace)
        return gx

    def _backward_into(self, x, g, gx, inplace) -> None:
        """The backward through fastnn.functional's layer entry. Gradients marked zero by
        zero_grad are overwritten rather than added to."""
        w, b = self.weight, self.bias
        act = ACTIVATION_TABLE[self.activation]
        code = act.code
        # The kernel takes the derivative from y, or from z for the activations that need it.
        y = self._saved_z() if act.needs_z else self._y
        dz = None  # dZ over g: the kernel reads it from g for the identity
        if code != _IDENTITY_CODE and not (inplace and g is not y and g.base is not y
                                           and g.flags.writeable):
            dz = self._buffer("dz", g.shape, g.dtype)
        Wg, accumulate = w._grad_for_kernel()
        bg = acc = None
        if b is not None:
            bg, acc_b = b._grad_for_kernel()
            if acc_b != accumulate:   # one of the two marked zero: apply the mark, add to both
                Wg, bg, accumulate = w.grad, b.grad, True
            acc = self._buffer("acc", (self.out_features,), np.float64)
        _backward_into(x, w.data, y, g, dz, gx, Wg, bg, acc, code, accumulate,
                       resolve_n_threads(self._n_threads))
        w._grad_written()
        if b is not None:
            b._grad_written()

    def _saved_z(self):
        """The pre-activation for the backward of GELU/SiLU: kept by a training-mode forward,
        recomputed from the cached input after an evaluation-mode one (the weights have not
        changed in between)."""
        if self._z is None and ACTIVATION_TABLE[self.activation].needs_z:
            if self._x is None:
                raise no_forward_error(self)
            z = self._buffer("z", self._y.shape, self._y.dtype)
            F.dense_forward(self._x, self.weight.data,
                            None if self.bias is None else self.bias.data,
                            activation="identity", out=z, n_threads=self._n_threads)
            self._z = z
        return self._z

    def _kink_state(self):
        if self.activation in _KINKED and self._y is not None:
            return self._y > 0
        return None

    def input_features(self):
        return self.in_features

    def output_features(self, in_features):
        if in_features is not None and in_features != self.in_features:
            raise ValueError(f"{self!r} expects {self.in_features} input features, "
                             f"got {in_features}")
        return self.out_features

    def get_config(self):
        init = self.init
        if init is not None and not isinstance(init, str):
            init = getattr(init, "__name__", None)  # weights are saved; the init only names it
        return {"type": type(self).__name__, "in_features": self.in_features,
                "out_features": self.out_features, "activation": self.activation,
                "bias": self.bias is not None, "init": init, "bias_init": self.bias_init}

    @classmethod
    def _parameter_shapes(cls, kwargs):
        n_in, n_out = kwargs.get("in_features"), kwargs.get("out_features")
        if not all(type(n) is int and n > 0 for n in (n_in, n_out)):
            return None  # the constructor says what is wrong
        shapes = {"weight": (n_in, n_out)}
        if kwargs.get("bias", True):
            shapes["bias"] = (n_out,)
        return shapes

    @classmethod
    def _build(cls, kwargs, dtype):
        kwargs = dict(kwargs)
        init = kwargs.get("init")
        if init is not None:
            if not hasattr(initializers, init):
                kwargs["init"] = None  # a custom callable: the saved weights replace it anyway
        return call_with_config(cls, kwargs, dtype=dtype)

    def extra_repr(self):
        s = f"{self.in_features}, {self.out_features}"
        if self.activation != "identity":
            s += f", activation={self.activation!r}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Maxout(Module):
    """Maxout units (Goodfellow et al., 2013): ``y_j = max_{p < k} (x W + b)_{j k + p}``, the
    lecture's max-pooling over units. Each output is the max of ``pieces`` linear units, a
    learned convex piecewise-linear activation.

    Parameters
    ----------
    in_features, out_features : int
    pieces : int
        Linear units per output (k >= 1; k = 1 is a linear layer).
    bias, init, bias_init, seed, dtype
        As :class:`Dense` (the init defaults to Glorot uniform over the ``out_features * pieces``
        linear units).

    Attributes
    ----------
    linear : Dense (in_features, out_features * pieces)
        The linear units; its parameters are ``linear.weight`` and ``linear.bias``, units of one
        group adjacent (columns ``j k`` to ``j k + k - 1`` feed output ``j``).

    References
    ----------
    Goodfellow, I. J., Warde-Farley, D., Mirza, M., Courville, A. and Bengio, Y. (2013). Maxout
    networks. ICML, PMLR 28(3), 1319-1327.
    """

    _forward_cache = ("_arg",)

    def __init__(self, in_features: int, out_features: int, pieces: int = 2, bias: bool = True,
                 init=None, bias_init: float = 0.0, seed=None, dtype=np.float32):
        super().__init__()
        if isinstance(pieces, bool) or not isinstance(pieces, numbers.Integral) or pieces < 1:
            raise ValueError(f"pieces must be a positive int, got {pieces!r}")
        if isinstance(out_features, bool) or not isinstance(out_features, numbers.Integral) \
                or out_features <= 0:
            raise ValueError(f"out_features must be a positive int, got {out_features!r}")
        self.pieces = int(pieces)
        self.out_features = int(out_features)
        self.linear = Dense(in_features, self.out_features * self.pieces, bias=bias,
                            init="glorot_uniform" if init is None else init,
                            bias_init=bias_init, seed=seed, dtype=dtype)
        self.in_features = self.linear.in_features
        self.init = init
        self._modules["linear"] = self.linear
        self._arg = None

    def reset_parameters(self, seed=None) -> None:
        """(Re)initialize the linear units."""
        self.linear.reset_parameters(seed)

    def forward(self, x):
        z = self.linear.forward(x)
        # fed its own last output, it must not write over it (the linear units keep it)
        y = self._buffer("y", (z.shape[0], self.out_features), z.dtype,
                         avoid=x if type(x) is np.ndarray else None)
        arg = self._buffer("arg", y.shape, np.int32)
        F.maxout(z, self.pieces, out=y, arg_out=arg, n_threads=self._n_threads)
        self._arg = arg
        return y

    def backward(self, grad_output, need_input_grad=True, inplace=False):
        if self._arg is None:
            raise no_forward_error(self)
        dz = self._buffer("dz", (grad_output.shape[0], self.linear.out_features),
                          grad_output.dtype)
        F.maxout_backward(grad_output, self._arg, self.pieces, out=dz,
                          n_threads=self._n_threads)
        return self.linear.backward(dz, need_input_grad, inplace=True)

    def _kink_state(self):
        return None if self._arg is None else self._arg.copy()

    def input_features(self):
        return self.in_features

    def output_features(self, in_features):
        if in_features is not None and in_features != self.in_features:
            raise ValueError(f"{self!r} expects {self.in_features} input features, "
                             f"got {in_features}")
        return self.out_features

    def get_config(self):
        cfg = self.linear.get_config()
        init = self.init if self.init is None else cfg["init"]
        return {"type": "Maxout", "in_features": self.in_features,
                "out_features": self.out_features, "pieces": self.pieces,
                "bias": cfg["bias"], "init": init, "bias_init": cfg["bias_init"]}

    @classmethod
    def _build(cls, kwargs, dtype):
        return Dense._build.__func__(cls, kwargs, dtype)

    @classmethod
    def _parameter_shapes(cls, kwargs):
        n_in, n_out, k = (kwargs.get("in_features"), kwargs.get("out_features"),
                          kwargs.get("pieces", 2))
        if not all(type(n) is int and n > 0 for n in (n_in, n_out, k)):
            return None  # the constructor says what is wrong
        shapes = {"linear.weight": (n_in, n_out * k)}
        if kwargs.get("bias", True):
            shapes["linear.bias"] = (n_out * k,)
        return shapes

    def extra_repr(self):
        s = f"{self.in_features}, {self.out_features}, pieces={self.pieces}"
        if self.linear.bias is None:
            s += ", bias=False"
        return s


class Activation(Module):
    """Elementwise activation as a separate module: ``y = act(x)``.

    Gives the same numbers as the activation fused into :class:`Dense` (the fused route saves a
    pass over memory). Derivatives use the output where it determines them (sigmoid y(1-y),
    tanh 1-y^2, relu 1[y>0], ...) and the input for GELU and SiLU; step and sign have
    derivative 0 (threshold units are not trained by backpropagation).
    """

    _forward_cache = ("_y", "_z")

    def __init__(self, name="identity"):
        super().__init__()
        self.name = _canonical_activation(name)
        self._y = self._z = None

    def forward(self, x):
        x = as_input(x)
        if self.name == "identity":
            self._y = x
            return x
        y = self._buffer("y", x.shape, x.dtype, avoid=x)
        F.activation(x, self.name, out=y, n_threads=self._n_threads)
        self._y = y
        self._z = x if ACTIVATION_TABLE[self.name].needs_z else None
        return y

    def backward(self, grad_output, need_input_grad=True, inplace=False):
        if self._y is None:
            raise no_forward_error(self)
        if not need_input_grad or self.name == "identity":
            return grad_output if need_input_grad else None
        out = grad_output if inplace else self._buffer("gx", grad_output.shape,
                                                       grad_output.dtype, avoid=grad_output)
        return F.activation_backward(self._y, grad_output, self.name, out=out,
                                     n_threads=self._n_threads, z=self._z)

    def _kink_state(self):
        if self.name in _KINKED and self._y is not None:
            return self._y > 0
        return None

    @classmethod
    def _parameter_shapes(cls, kwargs):
        return {}

    def get_config(self):
        cfg = {"type": type(self).__name__}
        if type(self) is Activation:
            cfg["name"] = self.name
        return cfg

    def extra_repr(self):
        return repr(self.name) if type(self) is Activation else ""


class Identity(Activation):
    """``y = x``."""

    def __init__(self):
        super().__init__("identity")


class Sigmoid(Activation):
    """``y = 1 / (1 + exp(-x))``."""

    def __init__(self):
        super().__init__("sigmoid")


class Tanh(Activation):
    """``y = tanh(x)``."""

    def __init__(self):
        super().__init__("tanh")


class ReLU(Activation):
    """``y = max(0, x)`` (Glorot et al., 2011).

    References
    ----------
    Glorot, X., Bordes, A. and Bengio, Y. (2011). Deep sparse rectifier neural networks.
    AISTATS, PMLR 15, 315-323.
    """

    def __init__(self):
        super().__init__("relu")


class Step(Activation):
    """McCulloch-Pitts threshold unit: ``y = 1 if x >= 0 else 0`` (derivative 0).

    References
    ----------
    McCulloch, W. S. and Pitts, W. (1943). A logical calculus of the ideas immanent in nervous
    activity. Bulletin of Mathematical Biophysics 5, 115-133.
    """

    def __init__(self):
        super().__init__("step")


class Sign(Activation):
    """``y = +1 if x >= 0 else -1`` (derivative 0)."""

    def __init__(self):
        super().__init__("sign")


class LeakyReLU(Activation):
    """``y = x if x > 0 else 0.01 x`` (Maas et al., 2013; torch's default slope).

    References
    ----------
    Maas, A. L., Hannun, A. Y. and Ng, A. Y. (2013). Rectifier nonlinearities improve neural
    network acoustic models. ICML Workshop on Deep Learning for Audio, Speech and Language
    Processing.
    """

    def __init__(self):
        super().__init__("leaky_relu")


class ELU(Activation):
    """``y = x if x > 0 else exp(x) - 1`` (Clevert et al., 2016; alpha = 1).

    References
    ----------
    Clevert, D.-A., Unterthiner, T. and Hochreiter, S. (2016). Fast and accurate deep network
    learning by exponential linear units (ELUs). ICLR. arXiv:1511.07289.
    """

    def __init__(self):
        super().__init__("elu")


class Softplus(Activation):
    """``y = log(1 + exp(x))``, computed without overflow."""

    def __init__(self):
        super().__init__("softplus")


class GELU(Activation):
    """``y = x Phi(x)`` (Hendrycks & Gimpel, 2016); ``approximate="tanh"`` uses
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, as torch.nn.GELU.

    References
    ----------
    Hendrycks, D. and Gimpel, K. (2016). Gaussian error linear units (GELUs). arXiv:1606.08415.
    """

    def __init__(self, approximate: str = "none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        super().__init__("gelu" if approximate == "none" else "gelu_tanh")
        self.approximate = approximate

    def get_config(self):
        return {"type": "GELU", "approximate": self.approximate}

    def extra_repr(self):
        return "" if self.approximate == "none" else f"approximate={self.approximate!r}"


class SiLU(Activation):
    """``y = x sigmoid(x)`` (Elfwing et al., 2018; "swish").

    References
    ----------
    Elfwing, S., Uchibe, E. and Doya, K. (2018). Sigmoid-weighted linear units for neural
    network function approximation in reinforcement learning. Neural Networks 107, 3-11.

    Ramachandran, P., Zoph, B. and Le, Q. V. (2017). Searching for activation functions.
    arXiv:1710.05941.
    """

    def __init__(self):
        super().__init__("silu")


class Softmax(Module):
    """Softmax over the last axis: ``p_i = exp(z_i) / sum_j exp(z_j)``.

    As a module it is for networks whose loss reads probabilities (e.g. a squared loss on
    probabilities). For classification keep the model's output as logits and let the loss apply
    the map (``CrossEntropyLoss`` computes log-softmax stably, ``predict_proba`` applies softmax).
    """

    _forward_cache = ("_p",)

    def __init__(self):
        super().__init__()
        self._p = None

    def forward(self, x):
        x = as_input(x)
        p = self._buffer("p", x.shape, x.dtype, avoid=x)
        F.softmax(x, out=p, n_threads=self._n_threads)
        self._p = p
        return p

    def backward(self, grad_output, need_input_grad=True, inplace=False):
        if self._p is None:
            raise no_forward_error(self)
        if not need_input_grad:
            return None
        out = self._buffer("gx", grad_output.shape, grad_output.dtype, avoid=grad_output)
        return F.softmax_backward(self._p, grad_output, out=out, n_threads=self._n_threads)

    @classmethod
    def _parameter_shapes(cls, kwargs):
        return {}


class Sparsemax(Module):
    """Sparsemax over the last axis (Martins and Astudillo, 2016): the Euclidean projection of z
    onto the probability simplex; exact zeros outside its support.

    Parameters
    ----------
    method : {"auto", "sort", "select"}
        Threshold algorithm (see :func:`fastnn.functional.sparsemax`).

    References
    ----------
    Martins, A. F. T. and Astudillo, R. F. (2016). From softmax to sparsemax: a sparse model of
    attention and multi-label classification. ICML, PMLR 48, 1614-1623.
    """

    _forward_cache = ("_p",)

    def __init__(self, method="auto"):
        super().__init__()
        if method not in F.SPARSEMAX_METHODS:
            raise ValueError(f"method must be one of {F.SPARSEMAX_METHODS}, got {method!r}")
        self.method = method
        self._p = None

    def forward(self, x):
        x = as_input(x)
        p = self._buffer("p", x.shape, x.dtype, avoid=x)
        F.sparsemax(x, method=self.method, out=p, n_threads=self._n_threads)
        self._p = p
        return p

    def backward(self, grad_output, need_input_grad=True, inplace=False):
        if self._p is None:
            raise no_forward_error(self)
        if not need_input_grad:
            return None
        out = self._buffer("gx", grad_output.shape, grad_output.dtype, avoid=grad_output)
        return F.sparsemax_backward(self._p, grad_output, out=out, n_threads=self._n_threads)

    def _kink_state(self):
        return None if self._p is None else self._p > 0

    @classmethod
    def _parameter_shapes(cls, kwargs):
        return {}

    def get_config(self):
        return {"type": "Sparsemax", "method": self.method}

    def extra_repr(self):
        return "" if self.method == "auto" else f"method={self.method!r}"


class Dropout(Module):
    """Dropout (Srivastava et al., 2014): each unit is zeroed with probability ``p`` in training.

    Parameters
    ----------
    p : float in [0, 1)
        Drop probability.
    mode : {"inverted", "standard"}
        "inverted" (default): training scales kept units by 1/(1-p), evaluation is the identity.
        "standard" (the lecture's form): training keeps units unscaled, evaluation multiplies by
        (1-p).
    seed : int or None
        Base seed. The mask of the t-th training forward is drawn by a counter-based generator
        from ``(mix(seed, t), element index)``: reproducible, and independent of ``n_threads``.
        None draws a base seed from the operating system once, at construction.

    The call counter is part of ``state_dict`` (so saving and loading continues the same masks).

    References
    ----------
    Srivastava, N., Hinton, G., Krizhevsky, A., Sutskever, I. and Salakhutdinov, R. (2014).
    Dropout: a simple way to prevent neural networks from overfitting. JMLR 15, 1929-1958.
    """

    def __init__(self, p: float = 0.5, mode: str = "inverted", seed=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) < 1.0:
            raise ValueError(f"Invalid dropout probability: {p!r} (expected 0 <= p < 1)")
        if mode not in ("inverted", "standard"):
            raise ValueError(f"mode must be 'inverted' or 'standard', got {mode!r}")
        self._seed_given = seed is not None   # Sequential(seed=...) reseeds only the others
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> 1)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        self.p = float(p)
        self.mode = mode
        self.seed = int(seed)
        self._calls = 0          # training forwards done so far
        self._call_seed = None   # seed of the last training forward (its backward reuses it)
        self._active = None      # whether the last forward applied a mask; None: no forward yet

    def _seed_for(self, t: int) -> int:
        return F.call_seed(self.seed, t)

    def forward(self, x):
        x = as_input(x)
        self._active = self.training and self.p > 0.0
        if not self._active:
            if self.mode == "inverted" or self.p == 0.0:
                return x
            y = self._buffer("y", x.shape, x.dtype, avoid=x)
            return np.multiply(x, F.dropout_scale(self.p, self.mode, False), out=y)
        self._call_seed = self._seed_for(self._calls)
        self._calls += 1
        y = self._buffer("y", x.shape, x.dtype, avoid=x)
        return F.dropout_into(x, y, self.p, self._call_seed, self.mode,
                              resolve_n_threads(self._n_threads))

    def backward(self, grad_output, need_input_grad=True, inplace=False):
        if self._active is None:
            raise no_forward_error(self)
        if not need_input_grad:
            return None
        if not self._active:
            if self.mode == "inverted" or self.p == 0.0:
                return grad_output
            out = grad_output if inplace else self._buffer("gx", grad_output.shape,
                                                           grad_output.dtype, avoid=grad_output)
            return np.multiply(grad_output, F.dropout_scale(self.p, self.mode, False), out=out)
        out = grad_output if inplace else self._buffer("gx", grad_output.shape,
                                                       grad_output.dtype, avoid=grad_output)
        # dropout is its own gradient: the forward's mask and scale
        return F.dropout_into(grad_output, out, self.p, self._call_seed, self.mode,
                              resolve_n_threads(self._n_threads))

    def _state_buffers(self):
        return {"calls": np.array(self._calls, dtype=np.int64)}

    def _load_state_buffer(self, name, value):
        if name != "calls":
            raise KeyError(name)
        value = np.asarray(value)
        if value.shape != () or value.dtype.kind not in "iu" or int(value) < 0:
            raise ValueError(f"Dropout counter must be a non-negative integer scalar, "
                             f"got {value!r}")
        self._calls = int(value)

    @classmethod
    def _parameter_shapes(cls, kwargs):
        return {}

    def get_config(self):
        return {"type": "Dropout", "p": self.p, "mode": self.mode, "seed": self.seed}

    def extra_repr(self):
        s = f"p={self.p}"
        if self.mode != "inverted":
            s += f", mode={self.mode!r}"
        return s
