"""Arrays in, arrays out: the kernels of fastnn behind validated NumPy functions.

Every function validates its inputs once (shape, dtype, contiguity; messages give the expected
and the actual value), allocates its outputs unless ``out=`` is given, and calls a compiled
kernel. float32 and float64 are both supported; the output dtype is the input dtype.
"""
# --- dense layers, activations, dropout ---
from fastnn.functional.activations import (  # noqa: F401
    ACTIVATIONS, activation, activation_backward, relu, sigmoid, sign, step, tanh)
from fastnn.functional.dense import dense_backward, dense_forward  # noqa: F401
from fastnn.functional.dropout import dropout, dropout_backward, dropout_mask  # noqa: F401

# --- output maps: softmax, log_softmax, sparsemax ---
# (section: from fastnn.functional.output import ...)

# --- losses ---
# (section: from fastnn.functional.losses import ...)
