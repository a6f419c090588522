"""Elementwise activations and their derivatives, and the one table of activation names.

Names (:data:`ACTIVATION_TABLE`): ``"identity"``, ``"sigmoid"``, ``"tanh"``, ``"relu"``,
``"step"`` (McCulloch-Pitts threshold unit: 1 if z >= 0 else 0), ``"sign"`` (+1 if z >= 0 else
-1), ``"leaky_relu"`` (slope 0.01 below 0; Maas et al. 2013), ``"elu"`` (alpha = 1; Clevert et
al. 2016), ``"softplus"`` (log(1 + e^z)), ``"gelu"`` (z Phi(z), exact erf form; Hendrycks &
Gimpel 2016), ``"gelu_tanh"`` (its tanh approximation) and ``"silu"`` (z sigmoid(z); Elfwing et
al. 2018). Aliases (:data:`ALIASES`): ``"linear"``, ``"logistic"``, ``"swish"``. The constants
are torch.nn.functional's defaults.

Derivatives are computed from the OUTPUT y = act(z) where y determines them (sigmoid y (1 - y),
tanh 1 - y^2, relu 1[y > 0], leaky relu, ELU y + 1 below 0, softplus 1 - e^-y), and from the
pre-activation z for GELU and SiLU (``needs_z`` in the table): their backward takes ``z``.
Step and sign have derivative 0 almost everywhere: threshold units are not trained by
backpropagation, and their backward returns zeros.

NaN propagates like NumPy in the forward functions. float32 sigmoid, tanh, SiLU, ELU and the
tanh-GELU use a vectorized polynomial exponential accurate to a few ulp; float64 uses the C
library's exp, tanh, erf and log1p. Sigmoid and softplus are stable for any ``|z|`` (no overflow).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastnn._kernels import activations as _k
from fastnn._threads import resolve_n_threads
from fastnn._validation import check_float_array, check_out, check_same_dtype

__all__ = [
    "ACTIVATIONS",
    "ACTIVATION_TABLE",
    "ALIASES",
    "ActivationInfo",
    "activation",
    "activation_backward",
    "activation_by_code",
    "activation_code",
    "activation_info",
    "elu",
    "gelu",
    "leaky_relu",
    "relu",
    "sigmoid",
    "sign",
    "silu",
    "softplus",
    "step",
    "tanh",
]


@dataclass(frozen=True)
class ActivationInfo:
    """One row of the activation table."""

    name: str
    #: kernel code (fastnn._kernels.activations.CODES)
    code: int
    #: True when the derivative (relu, leaky relu) or the value (step, sign) jumps at 0;
    #: gradcheck then watches the sign pattern of the output across a stencil
    kinked: bool
    #: the derivative is computed from the pre-activation z, which Dense keeps for training
    needs_z: bool
    #: default weight initializer (a name in fastnn.init)
    init: str


def _row(name, kinked=False, init="glorot_uniform"):
    code = _k.CODES[name]
    return ActivationInfo(name, code, kinked, bool(_k.needs_z(code)), init)


#: Every activation fastnn knows, by canonical name; the one vocabulary that layers, the
#: estimators, the command line and fastnn.init read.
ACTIVATION_TABLE: dict[str, ActivationInfo] = {a.name: a for a in (
    _row("identity"),
    _row("sigmoid"),
    _row("tanh"),
    _row("relu", kinked=True, init="he_uniform"),
    _row("step", kinked=True),
    _row("sign", kinked=True),
    _row("leaky_relu", kinked=True, init="he_uniform"),
    _row("elu", init="he_uniform"),
    _row("softplus", init="he_uniform"),
    _row("gelu", init="he_uniform"),
    _row("gelu_tanh", init="he_uniform"),
    _row("silu", init="he_uniform"),
)}
#: Other accepted spellings (scikit-learn's "logistic", Keras's "linear" and "swish").
ALIASES: dict[str, str] = {"linear": "identity", "logistic": "sigmoid", "swish": "silu"}
#: Canonical names, in table order.
ACTIVATIONS = tuple(ACTIVATION_TABLE)
assert set(ACTIVATION_TABLE) == set(_k.CODES), "the table and the kernel codes disagree"


def activation_info(name) -> ActivationInfo:
    """The table row of an activation name or alias (None means identity; case-insensitive);
    ValueError for unknown names."""
    if name is None:
        return ACTIVATION_TABLE["identity"]
    if isinstance(name, str):
        key = name.lower()
        info = ACTIVATION_TABLE.get(ALIASES.get(key, key))
        if info is not None:
            return info
    raise ValueError(f"Unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)} "
                     f"(aliases: {', '.join(f'{a!r} for {c!r}' for a, c in ALIASES.items())})")


_BY_CODE: dict[int, ActivationInfo] = {a.code: a for a in ACTIVATION_TABLE.values()}


def activation_by_code(code: int) -> ActivationInfo:
    """The table row of a kernel code; ValueError for unknown codes."""
    info = _BY_CODE.get(code)
    if info is None:
        raise ValueError(f"unknown activation code {code!r}")
    return info


def activation_code(name) -> int:
    """Kernel code of an activation name (None means identity); ValueError for unknown names."""
    return activation_info(name).code


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1)


def activation(z, name="identity", out=None, n_threads=None) -> np.ndarray:
    """Apply an activation elementwise: ``y = act(z)``.

    Parameters
    ----------
    z : ndarray of float32 or float64, any shape
        Pre-activations. Non-contiguous or read-only arrays are accepted (copied if needed).
    name : str
        An activation of ``ACTIVATION_TABLE`` (or an alias).
    out : ndarray, optional
        C-contiguous array of z's shape and dtype to write into (may be ``z`` itself).
    n_threads : int, optional
        Threads to use; None means ``omp_get_max_threads()`` now.

    Returns
    -------
    y : ndarray, same shape and dtype as z
    """
    code = activation_code(name)
    z = check_float_array(z, "z")
    nt = resolve_n_threads(n_threads)
    if out is None:
        out = np.empty_like(z)
    else:
        check_out(out, "out", z.shape, z.dtype)
    _k.activation_forward(_flat(z), _flat(out), code, nt)
    return out


def activation_backward(y, grad_y, name="identity", out=None, n_threads=None, *,
                        z=None) -> np.ndarray:
    """Gradient through an activation: ``grad_z = grad_y * act'(z)``.

    Parameters
    ----------
    y : ndarray of float32 or float64
        The forward output ``act(z)``; may be None when ``z`` is given for an activation whose
        derivative needs z (GELU, SiLU).
    grad_y : ndarray, same shape and dtype as y
        Gradient of the loss with respect to y.
    name : str
        An activation of ``ACTIVATION_TABLE``; step and sign give zeros.
    out : ndarray, optional
        C-contiguous output of grad_y's shape and dtype (may be ``grad_y`` itself).
    n_threads : int, optional
    z : ndarray, same shape and dtype, optional
        The pre-activation; required for the activations with ``needs_z`` (GELU, SiLU).

    Returns
    -------
    grad_z : ndarray, same shape and dtype as grad_y
    """
    info = activation_info(name)
    if info.needs_z:
        if z is None:
            raise ValueError(f"the derivative of {info.name!r} is computed from the "
                             f"pre-activation: pass z=")
        v = check_float_array(z, "z")
    else:
        if y is None:
            raise ValueError(f"the derivative of {info.name!r} is computed from the output: "
                             f"pass y")
        v = check_float_array(y, "y")
    vname = "z" if info.needs_z else "y"
    grad_y = check_float_array(grad_y, "grad_y")
    check_same_dtype((vname, v), ("grad_y", grad_y))
    if grad_y.shape != v.shape:
        raise ValueError(f"grad_y must have the shape of {vname} {v.shape}, got {grad_y.shape}")
    nt = resolve_n_threads(n_threads)
    if out is None:
        out = np.empty_like(v)
    else:
        check_out(out, "out", v.shape, v.dtype)
    _k.activation_backward(_flat(v), _flat(grad_y), _flat(out), info.code, nt)
    return out


def sigmoid(z, out=None, n_threads=None) -> np.ndarray:
    """``1 / (1 + exp(-z))``, stable for large ``|z|``."""
    return activation(z, "sigmoid", out=out, n_threads=n_threads)


def tanh(z, out=None, n_threads=None) -> np.ndarray:
    """Hyperbolic tangent."""
    return activation(z, "tanh", out=out, n_threads=n_threads)


def relu(z, out=None, n_threads=None) -> np.ndarray:
    """``max(z, 0)`` (NaN stays NaN)."""
    return activation(z, "relu", out=out, n_threads=n_threads)


def step(z, out=None, n_threads=None) -> np.ndarray:
    """McCulloch-Pitts threshold unit: 1 if z >= 0 else 0.

    References
    ----------
    McCulloch, W. S. and Pitts, W. (1943). A logical calculus of the ideas immanent in nervous
    activity. Bulletin of Mathematical Biophysics 5, 115-133.
    """
    return activation(z, "step", out=out, n_threads=n_threads)


def sign(z, out=None, n_threads=None) -> np.ndarray:
    """+1 if z >= 0 else -1."""
    return activation(z, "sign", out=out, n_threads=n_threads)


def leaky_relu(z, out=None, n_threads=None) -> np.ndarray:
    """``z if z > 0 else 0.01 z`` (Maas et al. 2013).

    References
    ----------
    Maas, A. L., Hannun, A. Y. and Ng, A. Y. (2013). Rectifier nonlinearities improve neural
    network acoustic models. ICML Workshop on Deep Learning for Audio, Speech and Language
    Processing.
    """
    return activation(z, "leaky_relu", out=out, n_threads=n_threads)


def elu(z, out=None, n_threads=None) -> np.ndarray:
    """``z if z > 0 else exp(z) - 1`` (Clevert et al. 2016, alpha = 1).

    References
    ----------
    Clevert, D.-A., Unterthiner, T. and Hochreiter, S. (2016). Fast and accurate deep network
    learning by exponential linear units (ELUs). ICLR. arXiv:1511.07289.
    """
    return activation(z, "elu", out=out, n_threads=n_threads)


def softplus(z, out=None, n_threads=None) -> np.ndarray:
    """``log(1 + exp(z))``, computed without overflow."""
    return activation(z, "softplus", out=out, n_threads=n_threads)


def gelu(z, approximate="none", out=None, n_threads=None) -> np.ndarray:
    """``z Phi(z)`` (Hendrycks & Gimpel 2016); ``approximate="tanh"`` for
    ``0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))``, as torch.nn.functional.gelu.

    References
    ----------
    Hendrycks, D. and Gimpel, K. (2016). Gaussian error linear units (GELUs). arXiv:1606.08415.
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    name = "gelu" if approximate == "none" else "gelu_tanh"
    return activation(z, name, out=out, n_threads=n_threads)


def silu(z, out=None, n_threads=None) -> np.ndarray:
    """``z sigmoid(z)`` (Elfwing et al. 2018; "swish").

    References
    ----------
    Elfwing, S., Uchibe, E. and Doya, K. (2018). Sigmoid-weighted linear units for neural
    network function approximation in reinforcement learning. Neural Networks 107, 3-11.

    Ramachandran, P., Zoph, B. and Le, Q. V. (2017). Searching for activation functions.
    arXiv:1710.05941.
    """
    return activation(z, "silu", out=out, n_threads=n_threads)
