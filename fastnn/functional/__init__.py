"""Arrays in, arrays out: the kernels of fastnn behind validated NumPy functions.

Every function validates its inputs once (shape, dtype, contiguity; messages give the expected
and the actual value), allocates its outputs unless ``out=`` is given, and calls a compiled
kernel. float32 and float64 are both supported; the output dtype is the input dtype.
"""
# --- dense layers, activations, dropout ---
# (section: from fastnn.functional.dense / .activations / .dropout import ...)

# --- output maps: softmax, log_softmax, sparsemax ---
# (section: from fastnn.functional.output import ...)

# --- losses ---
# (section: from fastnn.functional.losses import ...)
