"""API misuse: ``backward`` with no ``forward`` to backpropagate through is a RuntimeError that
says what to do, on every module and container (not an AttributeError on None)."""
import pickle

import numpy as np
import pytest

from fastnn.layers import (Activation, Dense, Dropout, Identity, ReLU, Sigmoid, Sign,
                           Softmax, Sparsemax, Step, Tanh)
from fastnn.graph import Add, Concatenate, Input, Model, Multiply
from fastnn.layers import ELU, GELU, LeakyReLU, Maxout, SiLU, Softplus
from fastnn.model import Parallel, Residual, Sequential
from fastnn.module import _REGISTRY
from fastnn.preprocessing import Normalization

MSG = r"backward was called before forward; call forward on the batch first"


def _modules():
    """(id, factory) for every module class, in several configurations."""
    out = []
    for act in ("identity", "sigmoid", "tanh", "relu", "step", "sign", "leaky_relu", "elu",
                "softplus", "gelu", "gelu_tanh", "silu"):
        out.append((f"Dense-{act}", lambda a=act: Dense(3, 3, activation=a, seed=0)))
        out.append((f"Activation-{act}", lambda a=act: Activation(a)))
    out.append(("Dense-nobias", lambda: Dense(3, 3, bias=False, seed=0)))
    for cls in (Identity, Sigmoid, Tanh, ReLU, Step, Sign, Softmax, LeakyReLU, ELU, Softplus,
                GELU, SiLU):
        out.append((cls.__name__, cls))
    for method in ("auto", "sort", "select"):
        out.append((f"Sparsemax-{method}", lambda m=method: Sparsemax(m)))
    out.append(("Dropout-0.5", lambda: Dropout(0.5, seed=0)))
    out.append(("Dropout-0", lambda: Dropout(0.0, seed=0)))
    out.append(("Dropout-standard", lambda: Dropout(0.3, mode="standard", seed=0)))
    out.append(("Sequential", lambda: Sequential(Dense(3, 4, "relu", seed=0), Dense(4, 3, seed=1))))
    out.append(("Sequential-activations-last",
                lambda: Sequential(Dense(3, 3, seed=0), Dropout(0.5, seed=0), Tanh())))
    out.append(("Residual", lambda: Residual(Dense(3, 3, "tanh", seed=0))))
    out.append(("Parallel-concat", lambda: Parallel(Dense(3, 2, seed=0), Dense(3, 1, seed=1))))
    out.append(("Parallel-sum", lambda: Parallel(Dense(3, 3, seed=0), Dense(3, 3, seed=1),
                                                 merge="sum")))
    out.append(("Maxout", lambda: Maxout(3, 3, pieces=2, seed=0)))
    out.append(("Normalization", lambda: Normalization().adapt(
        np.arange(12, dtype=np.float32).reshape(4, 3))))

    def graph(merge):
        x = Input(3)
        h = merge()([Dense(3, 3, "tanh", seed=0)(x), Dense(3, 3, seed=1)(x)])
        return Model(x, Dense(h.features, 3, seed=2)(h))
    for merge in (Add, Multiply, Concatenate):
        out.append((f"Model-{merge.__name__}", lambda m=merge: graph(m)))
    out.append(("nested", lambda: Sequential(Residual(Sequential(Dense(3, 3, "relu", seed=0),
                                                                 Dropout(0.2, seed=1))),
                                             Parallel(Dense(3, 1, seed=2), Dense(3, 2, seed=3)))))
    return out


MODULES = _modules()


def test_every_module_class_is_covered():
    built = {type(m).__name__ for _, make in MODULES for mod in [make()] for m in mod.modules()}
    # fastnn's own classes (other tests register Module subclasses of their own)
    public = {name for name, cls in _REGISTRY.items()
              if not name.startswith("_") and cls.__module__.startswith("fastnn.")
              and name != "Merge"}     # the abstract base of Add, Multiply, Concatenate
    assert public <= built, public - built


@pytest.mark.parametrize("need_input_grad", [True, False])
@pytest.mark.parametrize("make", [m for _, m in MODULES], ids=[i for i, _ in MODULES])
def test_backward_before_forward(make, need_input_grad):
    module = make()
    g = np.ones((2, 3), np.float32)
    with pytest.raises(RuntimeError, match=MSG):
        module.backward(g, need_input_grad=need_input_grad)
    # a copy or a pickle of a module that never ran forward has nothing to backpropagate either
    for twin in (module.copy(), pickle.loads(pickle.dumps(module))):
        with pytest.raises(RuntimeError, match=MSG):
            twin.backward(g, need_input_grad=need_input_grad)
    # no parameter gradient was touched
    for p in module.parameters():
        np.testing.assert_array_equal(p.grad, 0.0)


@pytest.mark.parametrize("make", [m for _, m in MODULES], ids=[i for i, _ in MODULES])
def test_backward_after_forward_works(make):
    module = make()
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    y = module.forward(x)
    gx = module.backward(np.ones_like(y))
    assert gx.shape == x.shape and np.isfinite(gx).all()


def test_the_error_names_the_module_and_the_fix():
    with pytest.raises(RuntimeError) as info:
        Dense(3, 2).backward(np.ones((1, 2), np.float32))
    text = str(info.value)
    assert text.startswith("Dense(3, 2): backward was called before forward")
    assert "call forward" in text
    assert not isinstance(info.value, AttributeError)


def test_a_failed_first_forward_leaves_nothing_to_backpropagate():
    d = Dense(3, 2, seed=0)
    with pytest.raises(ValueError):
        d.forward(np.ones((2, 5), np.float32))   # wrong width
    with pytest.raises(RuntimeError, match=MSG):
        d.backward(np.ones((2, 2), np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_after_an_evaluation_mode_forward(dtype):
    """An evaluation-mode forward keeps its cache: backward differentiates the evaluation
    network (dropout off), which equals the training network without dropout."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3)).astype(dtype)
    g = rng.standard_normal((5, 2)).astype(dtype)
    net = Sequential(Dense(3, 4, "tanh", seed=0), Dropout(0.5, seed=0), Dense(4, 2, seed=1),
                     dtype=dtype)
    ref = Sequential(Dense(3, 4, "tanh", seed=0), Dense(4, 2, seed=1), dtype=dtype)
    net.eval()
    net.zero_grad()
    with pytest.raises(RuntimeError, match=MSG):
        net.backward(g.copy())                 # evaluation mode does not excuse a missing forward
    net.forward(x)
    gx = np.array(net.backward(g.copy()), copy=True)
    ref.forward(x)
    ref.zero_grad()
    gx_ref = ref.backward(g.copy())
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-6)
    for a, b in zip((net[0], net[2]), (ref[0], ref[1])):
        np.testing.assert_allclose(a.weight.grad, b.weight.grad, rtol=1e-6)
