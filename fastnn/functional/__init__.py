"""Arrays in, arrays out: the kernels of fastnn behind validated NumPy functions.

Every function validates its inputs once (shape, dtype, contiguity; messages give the expected
and the actual value), allocates its outputs unless ``out=`` is given, and calls a compiled
kernel. float32 and float64 are both supported; the output dtype is the input dtype.

The ``*_into`` entries (:func:`~fastnn.functional.dense.forward_into`,
:func:`~fastnn.functional.dense.backward_into`, :func:`~fastnn.functional.dropout.dropout_into`,
:func:`~fastnn.functional.losses.cross_entropy_into`) are the layers' and losses' route to the kernels: they take resolved
activation codes and thread counts and caller-owned outputs, let the kernel check the arrays in
C, and fall back to the validating functions when it declines.
"""
# --- dense layers, activations, dropout ---
from fastnn.functional.activations import (  # noqa: F401
    ACTIVATION_TABLE, ACTIVATIONS, activation, activation_backward, activation_by_code,
    activation_info, elu, gelu, leaky_relu, relu, sigmoid, sign, silu, softplus, step, tanh)
from fastnn.functional.dense import (  # noqa: F401
    backward_into, dense_backward, dense_forward, forward_into)
from fastnn.functional.dropout import (  # noqa: F401
    call_seed, dropout, dropout_backward, dropout_into, dropout_mask, dropout_scale)
from fastnn.functional.maxout import maxout, maxout_backward  # noqa: F401

# --- output maps: softmax, log_softmax, sparsemax ---
from fastnn.functional.output import (  # noqa: F401
    SPARSEMAX_METHODS, log_softmax, log_softmax_backward, softmax, softmax_backward, sparsemax,
    sparsemax_backward)

# --- losses ---
from fastnn.functional.losses import (  # noqa: F401
    REDUCTIONS, binary_cross_entropy, cross_entropy, cross_entropy_into, sparsemax_loss,
    squared_loss)
