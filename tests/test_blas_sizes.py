"""Dimensions above 2**31 - 1: fastnn's matrix products pass 32-bit sizes to BLAS, so such an
input is a clear ValueError, never a wrapped size (which left the output uninitialized). The
inputs are broadcast views: they cost no memory, and the check runs before any copy."""
import numpy as np
import pytest

from fastnn import Dense, Sequential, losses, optim
from fastnn import functional as F
from fastnn._kernels import inference as _ki
from fastnn._validation import BLAS_MAX_DIM
from fastnn.functional.engine import compile_training

BIG = BLAS_MAX_DIM + 1


def _view(shape):
    return np.broadcast_to(np.float32(0.5), shape)


def test_limit_is_int_max():
    assert BLAS_MAX_DIM == 2 ** 31 - 1


@pytest.mark.parametrize("x_shape,w_shape", [((BIG, 3), (3, 2)), ((2, BIG), (BIG, 2)),
                                             ((2, 3), (3, BIG))])
def test_dense_forward_refuses(x_shape, w_shape):
    with pytest.raises(ValueError, match=r"2\*\*31 - 1"):
        F.dense_forward(_view(x_shape), _view(w_shape))


def test_dense_backward_refuses():
    X, W = _view((BIG, 3)), np.ones((3, 2), np.float32)
    with pytest.raises(ValueError, match=r"2\*\*31 - 1"):
        F.dense_backward(X, W, _view((BIG, 2)), _view((BIG, 2)))


def test_the_dense_layer_raises():
    # (its C entry also declines sizes above INT_MAX, which only arrays of 8 GiB and more reach)
    X = _view((BIG, 3))
    layer = Dense(3, 2)
    with pytest.raises(ValueError, match=r"2\*\*31 - 1"):
        layer.forward(X)


def test_inference_plan_refuses_a_wide_step():
    with pytest.raises(ValueError, match=r"2\*\*31 - 1"):
        _ki.InferencePlan([(_ki.KINDS["dense"], 0, BIG, 2, 1, 1.0, None, None)], np.float32)


def test_engine_refuses_a_huge_batch():
    model = Sequential(Dense(4, 3), seed=0)
    opt = optim.SGD(model.parameters(), lr=0.1)
    eng = compile_training(model, losses.CrossEntropyLoss(), opt, 1)
    X = np.ones((8, 4), np.float32)
    with pytest.raises(ValueError, match=r"2\*\*31 - 1"):
        eng.run(X, np.zeros(8, np.intp), np.arange(8), 0, BIG, 1)
