"""Arrays in, arrays out: the kernels of fastnn behind validated NumPy functions.

Every function validates its inputs once (shape, dtype, contiguity; messages give the expected
and the actual value), allocates its outputs unless ``out=`` is given, and calls a compiled
kernel. float32 and float64 are both supported; the output dtype is the input dtype.
"""
# --- dense layers, activations, dropout ---
from fastnn.functional.activations import (  # noqa: F401
    ACTIVATION_TABLE, ACTIVATIONS, activation, activation_backward, activation_info, elu, gelu,
    leaky_relu, relu, sigmoid, sign, silu, softplus, step, tanh)
from fastnn.functional.dense import dense_backward, dense_forward  # noqa: F401
from fastnn.functional.dropout import dropout, dropout_backward, dropout_mask  # noqa: F401
from fastnn.functional.maxout import maxout, maxout_backward  # noqa: F401

# --- output maps: softmax, log_softmax, sparsemax ---
from fastnn.functional.output import (  # noqa: F401
    SPARSEMAX_METHODS, log_softmax, log_softmax_backward, softmax, softmax_backward, sparsemax,
    sparsemax_backward)

# --- losses ---
from fastnn.functional.losses import (  # noqa: F401
    REDUCTIONS, binary_cross_entropy, cross_entropy, sparsemax_loss, squared_loss)
