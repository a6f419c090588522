"""One-call inference: a network compiled into a plan that one kernel call runs.

A :class:`~fastnn.model.Sequential` whose layers are all covered runs ``predict``,
``predict_proba`` (the loss's softmax, sigmoid or sparsemax as one more step) and its
evaluation-mode ``forward`` through one compiled call (``fastnn/_kernels/inference.pyx``) that
walks every layer without Python in between, instead of one kernel call per layer. Covered
layers: :class:`~fastnn.layers.Dense` with any activation of the table,
:class:`~fastnn.layers.Activation` (and its named subclasses), :class:`~fastnn.layers.Dropout`
(the identity, or the ``1 - p`` scaling of the "standard" mode, in evaluation),
:class:`~fastnn.layers.Maxout`, :class:`~fastnn.layers.Softmax` and
:class:`~fastnn.layers.Sparsemax`; and the containers nested :class:`~fastnn.model.Sequential`,
:class:`~fastnn.model.Residual` and :class:`~fastnn.model.Parallel`. A graph
:class:`~fastnn.graph.Model` of covered layers and the merges :class:`~fastnn.graph.Concatenate`,
:class:`~fastnn.graph.Add` and :class:`~fastnn.graph.Multiply` (any number of inputs and
outputs, a layer used at several nodes included) runs ``predict`` and its evaluation-mode
``forward`` the same way. The evaluation-mode ``forward`` leaves every module the arrays its
own forward keeps for a backward (a network with containers, or a graph, through a plan whose
every step writes an array of its own, a Maxout's linear units and winners too). Anything else
(user-written modules and merges) keeps the layer-by-layer path, with the same results;
:func:`why_not` names the reason.

A chain of layers runs its steps one after another; a network with merges or several inputs
or outputs is a graph plan: each step reads its parents (earlier steps or the inputs, the
training engine's references), a merge concatenates, adds or multiplies them in the order of
the module path, and a value lives in a per-thread buffer from its step to its last reader
(the output steps write the caller's arrays).

The rows of a batch are cut into tiles whose size depends on the batch size only; every tile
runs all layers (its activations stay in per-thread buffers owned by the plan), and threads
take the tiles one at a time inside one OpenMP region; a tile is computed the same whichever
thread takes it. A request of one row goes through fastnn's one-row product instead of GEMM
(the Dense kernel's choice too) and splits every layer's columns over the threads when that
pays and keeps the bits: the previous request ended less than a millisecond ago (the other
cores are still awake; never with OMP_WAIT_POLICY=passive), every layer's weights fit 2 MiB,
the network has at least 1e5 multiply-adds and a layer at least 128 outputs. The
output is bitwise the same for any thread count, and equal to the layer-by-layer path to
rounding (bitwise for a batch of 1 row and, except 2-row batches into 64 or more outputs, for
up to 32 rows: both paths make the same calls there). A row's output may differ in the last
bits between a one-row request and a batch (different kernels), as with any BLAS.

The plan is cached on the network and rebuilt when its layers (a container's too), their
parameter arrays (a dtype change replaces them), or the settings that shape the computation
(activations, dropout rate and mode, maxout pieces, sparsemax method, a Parallel's merge)
change.

``precision="bfloat16"`` (float32 networks, an opt-in that changes results): a second plan
whose dense and maxout products round the weights and each layer's inputs to bfloat16 and
accumulate in float32 (fastnn/_kernels/_bf16.pxd): half the bytes of weights to read, and on
CPUs with AVX512-BF16 twice the multiply-adds per instruction. Biases, activations, merges and
output maps stay float32. The plan holds a packed bfloat16 copy of the weights, made when it is
built (with the float32 plan's rebuilds) and made again after every ``fit``,
``load_state_dict``, ``reset_parameters`` and optimizer ``step`` that updated the weights in
place (a parameter counts them); an assignment into ``weight.data`` is not seen until
``refresh_copies(model)``. A one-row request stays on the calling core (no column split).
"""
from __future__ import annotations

import numpy as np

from fastnn._kernels import inference as _k
from fastnn._kernels import sparsemax as _sparsemax
from fastnn._threads import resolve_n_threads
from fastnn.functional.activations import ACTIVATION_TABLE
# The plan describes fastnn's own layer and loss classes (this module is not imported by
# fastnn.functional's package, so reading them closes no circle).
from fastnn.layers import Activation, Dense, Dropout, Maxout, Softmax, Sparsemax
from fastnn.losses import BinaryCrossEntropyLoss, CrossEntropyLoss, SparsemaxLoss, get_loss

__all__ = ["PRECISIONS", "all_finite", "compile_inference", "eval_forward",
           "eval_forward_many", "plan_for",
           "predict_array", "predict_arrays", "predict_proba_array", "refresh_copies",
           "request_precision", "why_not"]

#: The precisions a plan computes in (the network's own dtype, or bfloat16 products for float32
#: networks).
PRECISIONS = ("float32", "float64", "bfloat16")

#: ``all_finite(X)``: True when the aligned C-contiguous float32/float64 ndarray X holds no NaN
#: and no infinity, False when it does, None (nothing checked) for any other array; one pass
#: (the estimators' predict checks its input with it).
all_finite = _k.all_finite

_KEY = "_inference_plan_"   # where a network keeps its plan (left out of pickles)
# Reasons that depend on the classes of the layers only (the same layer objects give the same
# answer): a network not covered for one of them is not examined again.
_STABLE = ("layers are not covered", "is not a Sequential or a graph Model",
           "the input width is unknown")


class _State:
    """What a network keeps for one-call inference: its plan (None when not covered, with the
    reason), and the per-layer output arrays of the evaluation-mode forward. Left out of
    pickles and copies (a copy builds its own)."""

    __slots__ = ("bases", "bf16", "copied", "items", "keep", "layers", "n", "outputs", "plan",
                 "proba", "reason", "spec", "steps", "widths_")

    def __init__(self, plan, reason, layers, spec=None):
        self.plan, self.reason, self.spec = plan, reason, spec
        self.bf16 = None  # the bfloat16 plan, built on its first use
        self.copied = None  # (parameter, its _version) when the weights were copied
        self.proba = {}   # plans with an output map appended, by (kind, code, precision)
        self.layers, self.items = layers, tuple(layers)
        self.n = -1
        self.outputs = self.bases = self.steps = self.widths_ = None
        self.keep = None  # _eval_forward_graph's plan and arrays

    def valid(self):
        if self.plan is not None:
            return self.plan.valid()
        if not self.reason.endswith(_STABLE):   # it may change with an attribute: ask again
            return False
        lst = self.layers
        return len(lst) == len(self.items) and all(a is b for a, b in zip(lst, self.items))

    def drop_copies(self):
        """Forget the plans that hold copies of the weights (bfloat16): the weights changed."""
        self.bf16 = self.copied = None
        self.proba = {key: p for key, p in self.proba.items() if key[2] != "bfloat16"}

    def check_copies(self, model):
        """Drop the copies when fastnn updated a parameter in place since they were made (an
        optimizer step, load_state_dict, reset_parameters); start the record when there are
        none."""
        if self.copied is not None and any(p._version != v for p, v in self.copied):
            self.drop_copies()
        if self.copied is None:
            self.copied = [(p, p._version) for p in model.parameters()]

    def __reduce__(self):
        return (_k._no_plan, ())


class _NotCovered(Exception):
    """A part of the network the plan does not cover (the message says which)."""


def _param_steps(m, lin, checks):
    """The weight/bias arrays of a Dense-like module ``lin`` (checks appended)."""
    w = lin.weight
    checks += [(lin, "weight", w), (w, "data", w.data), (lin, "bias", lin.bias)]
    b = None
    if lin.bias is not None:
        checks.append((lin.bias, "data", lin.bias.data))
        b = lin.bias.data
    for a in (w.data,) if b is None else (w.data, b):
        if type(a) is not np.ndarray or not (a.flags.c_contiguous and a.flags.aligned):
            raise _NotCovered(f"{type(m).__name__}'s parameters are not plain C-contiguous "
                              f"arrays")
    return w.data, b


def _layer_step(m, width, checks, modules):
    """The step of the layer ``m`` reading ``width`` features (None: unknown), or None when
    it is the identity (checks and modules appended)."""
    cls = type(m)
    modules.append(m)
    for mod in m.modules():
        if "forward" in mod.__dict__:
            raise _NotCovered(f"{cls.__name__}'s forward is replaced on the instance")
        checks.append((mod, "forward", _k.ABSENT))
    kinds = _k.KINDS
    if cls is Dense:
        W, b = _param_steps(m, m, checks)
        checks.append((m, "activation", m.activation))
        if m.activation not in ACTIVATION_TABLE:   # the layer raises its error
            raise _NotCovered(f"unknown activation {m.activation!r}")
        return (kinds["dense"], ACTIVATION_TABLE[m.activation].code, m.in_features,
                m.out_features, 1, 1.0, W, b)
    if cls is Maxout:
        lin = m.linear
        W, b = _param_steps(m, lin, checks)
        if lin.activation != "identity":
            raise _NotCovered("a Maxout with an activated linear part")
        checks += [(m, "linear", lin), (m, "pieces", m.pieces),
                   (lin, "activation", lin.activation)]
        modules.append(lin)
        return kinds["maxout"], 0, m.in_features, m.out_features, m.pieces, 1.0, W, b
    if isinstance(m, Activation) and cls.forward is Activation.forward:
        checks.append((m, "name", m.name))
        if m.name not in ACTIVATION_TABLE:   # the layer raises its error
            raise _NotCovered(f"unknown activation {m.name!r}")
        if m.name == "identity":
            return None
        if width is None:
            raise _NotCovered("the input width is unknown")
        return (kinds["activation"], ACTIVATION_TABLE[m.name].code, width, width, 1, 1.0, None,
                None)
    if cls is Dropout:
        checks += [(m, "p", m.p), (m, "mode", m.mode)]
        if m.mode == "inverted" or m.p == 0.0:
            return None
        if width is None:
            raise _NotCovered("the input width is unknown")
        return kinds["scale"], 0, width, width, 1, 1.0 - m.p, None, None
    if cls is Softmax or cls is Sparsemax:
        if width is None:
            raise _NotCovered("the input width is unknown")
        code = 0
        if cls is Sparsemax:
            checks.append((m, "method", m.method))
            code = _sparsemax.METHODS.get(m.method)
            if code is None:   # the layer raises its error
                raise _NotCovered(f"unknown sparsemax method {m.method!r}")
        return (kinds["softmax" if cls is Softmax else "sparsemax"], code, width, width, 1, 1.0,
                None, None)
    raise _NotCovered(f"{cls.__name__} layers are not covered")


class _Walk:
    """The description of a network as steps with parents: a reference is a step index, or
    -1 - i for input i (the training engine's, fastnn/functional/engine.py); merges are
    "concat", "add" and "mul" steps. Identity layers add no step (they pass the reference)."""

    def __init__(self, input_widths):
        self.inputs = list(input_widths)
        self.steps, self.parents, self.checks, self.modules = [], [], [], []
        self.nested = False   # a container was walked
        # what each module's own forward keeps for its backward, as (role, module, refs):
        # _eval_forward_graph hands it the arrays of those values
        self.hand: list = []

    def keep(self, role, m, *refs):
        self.hand.append((role, m, refs))

    def width(self, ref):
        return self.inputs[-1 - ref] if ref < 0 else self.steps[ref][3]

    def step(self, spec, refs):
        self.steps.append(spec)
        self.parents.append(list(refs))
        return len(self.steps) - 1

    def merge(self, kind, refs, copy=False):
        """The merge of the values ``refs`` (one value: itself, or a copy step if ``copy``)."""
        if len(refs) == 1 and not copy:
            return refs[0]
        widths = [self.width(r) for r in refs]
        if None in widths:
            raise _NotCovered("the input width is unknown")
        if kind != "concat" and len(set(widths)) != 1:   # the merge raises its error
            raise _NotCovered(f"a {kind} of widths {widths}")
        w = sum(widths) if kind == "concat" else widths[0]
        return self.step((_k.KINDS[kind], 0, w, w, 1, 1.0, None, None), refs)

    def module(self, m, ref):
        """The value of module ``m`` applied to the value ``ref`` (nested Sequential, Residual
        and Parallel containers included)."""
        cls = type(m)
        # (a container says what it is in its own class body, not its subclasses', which may
        # change forward; reading the flags keeps this module from importing fastnn.model)
        block = cls.__dict__.get("_inference_block")
        chain = cls.__dict__.get("_plain_chain", False)
        if not (chain or block):
            spec = _layer_step(m, self.width(ref), self.checks, self.modules)
            out = ref if spec is None else self.step(spec, [ref])
            self.keep(_role(m), m, ref, out)
            return out
        if "forward" in m.__dict__:
            raise _NotCovered(f"{cls.__name__}'s forward is replaced on the instance")
        self.checks.append((m, "forward", _k.ABSENT))
        self.modules.append(m)
        self.nested = True
        if block == "residual":   # x + f(x)
            self.checks.append((m, "module", m.module))
            return self.merge("add", [ref, self.module(m.module, ref)])
        if block == "parallel":   # the branches' outputs side by side, or summed in order
            self.checks += [(m, "branches", m.branches), (m.branches, None, tuple(m.branches)),
                            (m, "merge", m.merge)]
            outs = [self.module(b, ref) for b in m.branches]
            if m.merge == "concat":
                self.keep(_PARALLEL, m, *outs)
            return self.merge("concat" if m.merge == "concat" else "add", outs)
        self.checks.append((m._layers, None, tuple(m._layers)))
        for sub in m._layers:
            ref = self.module(sub, ref)
        return ref


def _walk_graph(model):
    """A graph Model's description: its nodes run as Model.forward runs them (the module of
    each node: a layer at its first use, its parameter-sharing copy at each further use)."""
    walk = _Walk(model.input_widths)
    runners = model._runners
    walk.checks += [(model._layers, None, tuple(model._layers)), (model, "_runners", runners),
                    (runners, None, tuple(runners))]
    values = [None] * len(runners)
    for i, j in enumerate(model._input_idx):
        values[j] = -1 - i
    for i, run in enumerate(runners):
        if run is None:
            continue
        refs = [values[j] for j in model._parent_idx[i]]
        kind = type(run).__dict__.get("_inference_merge")   # (see _Walk.module)
        if kind is not None:
            if "forward" in run.__dict__:
                raise _NotCovered(f"{type(run).__name__}'s forward is replaced on the instance")
            walk.checks.append((run, "forward", _k.ABSENT))
            walk.modules.append(run)
            # a merge of one value is a copy (Concatenate, Add, Multiply take two or more)
            values[i] = walk.merge(kind, refs, copy=True)
            walk.keep(_CONCAT if kind == "concat" else _ELEMENTWISE, run, *refs)
        else:
            values[i] = walk.module(run, refs[0])
    return walk, [values[j] for j in model._output_idx]


def _compile(model):
    """(description, reason): the plan's description of ``model`` (steps, checks, modules,
    for a graph its parents, input widths and output steps (None for a chain), whether it
    is a chain of the network's own layers, the one eval_forward's run_keep serves, and
    (parents, input widths, output steps, the _Walk's hand list) for _eval_forward_graph)."""
    cls = type(model)
    try:
        if cls.__dict__.get("_inference_graph", False):
            walk, outs = _walk_graph(model)
        elif cls.__dict__.get("_plain_chain", False):
            # (a plain chain says so in its own class body: Sequential, not its subclasses,
            # which may change forward)
            walk = _Walk([model._in_features])
            layers = model._layers
            walk.checks.append((layers, None, tuple(layers)))
            ref = -1
            for m in layers:
                ref = walk.module(m, ref)
            outs = [ref]
        else:
            raise _NotCovered(f"{cls.__name__} is not a Sequential or a graph Model")
        if not walk.steps:
            raise _NotCovered("no layer computes anything")
        if None in walk.inputs:
            raise _NotCovered("the input width is unknown")
        # an output that is an input or another output's value gets a copy step
        for k, ref in enumerate(outs):
            if ref < 0 or ref in outs[:k]:
                outs[k] = walk.merge("add", [ref], copy=True)
    except _NotCovered as e:
        return None, str(e)
    n = len(walk.steps)
    chain = (len(walk.inputs) == 1 and outs == [n - 1]
             and all(p == [i - 1] for i, p in enumerate(walk.parents)))
    graph = None if chain else (walk.parents, walk.inputs, outs)
    return (walk.steps, walk.checks, walk.modules, graph, chain and not walk.nested,
            (walk.parents, walk.inputs, outs, walk.hand)), None


def _plan(desc, dtype, extra=None, precision=None):
    """The plan of a description, with the step ``extra`` after its one output if given, in
    ``precision`` (None: the dtype's)."""
    steps, checks, modules, graph = desc[:4]
    if extra is not None:
        if graph is not None:
            parents, inputs, outs = graph
            graph = ([*parents, [outs[0]]], inputs, [len(steps)])
        steps = [*steps, extra]
    if graph is None:
        return _k.InferencePlan(steps, dtype, checks, modules, precision=precision)
    return _k.InferencePlan(steps, dtype, checks, modules, *graph, precision=precision)


def _precision(model, precision):
    """The plan's precision for a request (None: the network's dtype); ValueError when it
    does not apply."""
    own = _NAMES.get(model._dtype) or np.dtype(model._dtype).name
    if precision is None or precision == own:
        return own
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "bfloat16" or own != "float32":
        raise ValueError(f"precision {precision!r} needs a float32 network (this one is {own})"
                         if precision == "bfloat16" else
                         f"a {own} network computes in {own} or bfloat16 (float32 networks), "
                         f"got {precision!r}")
    return precision


def request_precision(model, precision):
    """``precision`` of a predict call as the plans take it: "bfloat16", or None for the
    network's own dtype; ValueError when it does not apply (see _precision)."""
    if precision is None or _precision(model, precision) != "bfloat16":
        return None
    return "bfloat16"


_NAMES = {np.float32: "float32", np.float64: "float64", np.dtype(np.float32): "float32",
          np.dtype(np.float64): "float64"}


def _plan_in(model, state, precision):
    """The state's plan in ``precision`` (checked by _precision), built on first use."""
    if state.plan is None or precision != "bfloat16":
        return state.plan
    state.check_copies(model)
    if state.bf16 is None:
        state.bf16 = _plan(state.spec, model._dtype, precision="bfloat16")
    return state.bf16


def refresh_copies(model) -> None:
    """Make the plans that copy the weights (bfloat16) copy them again on their next use:
    after the weights were changed in place outside ``fit``."""
    state = model.__dict__.get(_KEY)
    if state is not None:
        state.drop_copies()


def why_not(model) -> str | None:
    """Why ``model`` cannot run through one-call inference, or None when it can."""
    return _state(model).reason


def compile_inference(model, precision: str | None = None) -> _k.InferencePlan | None:
    """A new plan for ``model`` (a Sequential or a graph Model), or None when it is not
    covered; ``precision``: None (the network's dtype) or one of PRECISIONS."""
    precision = _precision(model, precision)
    desc, why = _compile(model)
    if why is not None:
        return None
    return _plan(desc, model._dtype, precision=precision)


def _state(model) -> _State:
    state = model.__dict__.get(_KEY)
    if state is None or not state.valid():
        desc, why = _compile(model)
        plan = None
        if why is None:
            try:
                plan = _plan(desc, model._dtype)
            except ValueError as e:   # parameters that do not fit: the layers raise their error
                why = f"the parameters do not fit the network: {e}"
        state = model.__dict__[_KEY] = _State(plan, why, model._layers, desc)
    return state


def plan_for(model, precision: str | None = None) -> _k.InferencePlan | None:
    """The network's cached plan (in ``precision``: None, the network's dtype, or one of
    PRECISIONS), rebuilt when it no longer describes the network; None when the network is
    not covered."""
    precision = _precision(model, precision)
    return _plan_in(model, _state(model), precision)


def predict_array(model, X, max_rows, precision=None):
    """``predict`` of a covered network on an ndarray X of at most ``max_rows`` rows in one
    call, as a new array; None (nothing computed) when the network is not covered or X is not
    already a C-contiguous array of the network's dtype and width (the caller's path then
    converts it or raises). ``precision``: see plan_for."""
    state = model.__dict__.get(_KEY)
    if state is None or not state.valid():
        state = _state(model)
    plan = state.plan if precision is None else _plan_in(model, state,
                                                         _precision(model, precision))
    if plan is None or X.ndim != 2 or X.shape[0] > max_rows:
        return None
    with model._predict_lock():
        return plan.predict(X, resolve_n_threads(model._n_threads))


def predict_arrays(model, xs, max_rows, precision=None):
    """``predict`` of a covered graph Model on ``xs`` (a list of one ndarray per input, of at
    most ``max_rows`` rows) in one call, as a list of new arrays (one per output); None
    (nothing computed) when the model is not covered or an array is not already a C-contiguous
    array of the model's dtype and the input's width (the caller's path then converts it or
    raises). ``precision``: see plan_for."""
    state = model.__dict__.get(_KEY)
    if state is None or not state.valid():
        state = _state(model)
    plan = state.plan if precision is None else _plan_in(model, state,
                                                         _precision(model, precision))
    if plan is None or not xs or getattr(xs[0], "ndim", 0) != 2 or xs[0].shape[0] > max_rows:
        return None
    with model._predict_lock():
        return plan.predict_many(xs, resolve_n_threads(model._n_threads))


def predict_proba_array(model, X, loss, max_rows, precision=None):
    """``predict_proba`` of a covered network on an ndarray X of at most ``max_rows`` rows in
    one call: the loss's output map (softmax, sigmoid, sparsemax) runs as one more step of the
    plan, with the kernels ``loss.output`` calls. None (nothing computed) when that does not
    apply (the caller's path then computes it, or raises as before). ``precision``: see
    plan_for."""
    precision = _precision(model, precision)
    try:
        loss = get_loss(loss)
    except (TypeError, ValueError):
        return None
    cls = type(loss)
    if cls is CrossEntropyLoss:
        key = (_k.KINDS["softmax"], 0)
    elif cls is SparsemaxLoss:
        key = (_k.KINDS["sparsemax"], _sparsemax.METHODS.get(loss.method, -1))
    elif cls is BinaryCrossEntropyLoss:
        key = (_k.KINDS["activation"], ACTIVATION_TABLE["sigmoid"].code)
    else:
        return None
    state = model.__dict__.get(_KEY)
    if state is None or not state.valid():
        state = _state(model)
    if state.plan is None or X.ndim != 2 or X.shape[0] > max_rows or key[1] < 0:
        return None
    if precision == "bfloat16":
        state.check_copies(model)
    key = (*key, precision)
    plan = state.proba.get(key)
    if plan is None:
        width = state.plan.n_out
        plan = state.proba[key] = _plan(state.spec, model._dtype,
                                        (key[0], key[1], width, width, 1, 1.0, None, None),
                                        precision)
    with model._predict_lock():
        return plan.predict(X, resolve_n_threads(model._n_threads))


def eval_forward(model, X, n_threads):
    """The evaluation-mode forward of a covered Sequential in one call, keeping in every module
    the arrays its backward reads; None (nothing computed) when the network is not covered, a
    module is in training mode, or X is not already a C-contiguous array of the network's dtype
    and width (the layer-by-layer path then converts it or raises)."""
    state = _state(model)
    plan = state.plan
    if (plan is None or type(X) is not np.ndarray or X.ndim != 2
            or X.shape[1] != plan.n_in or X.dtype.num != plan.typenum):
        return None   # (before the output arrays are sized for X's rows)
    if not state.spec[4]:   # containers (Residual, Parallel, nested Sequential)
        outs = _eval_forward_graph(state, model._dtype, [X], n_threads)
        return None if outs is None else outs[0]
    if not plan.in_eval_mode():
        return None
    outputs = _outputs(model, state, X.shape[0])
    if not plan.run_keep(X, outputs, n_threads):
        return None
    # Hand each module the arrays of its own forward (for a backward or a kink check).
    k = 0
    x = X
    for m, makes, role in state.steps:
        y = outputs[k][0] if makes else x
        _hand(role, m, x, y, makes, *outputs[k][1:] if role == _MAXOUT else ())
        k += makes
        x = y
    return x


def eval_forward_many(model, xs, n_threads):
    """eval_forward of a covered graph Model: ``xs`` one array per input, a list of its
    outputs (arrays the model keeps); None as there."""
    state = _state(model)
    if state.plan is None:
        return None
    return _eval_forward_graph(state, model._dtype, xs, n_threads)


def _eval_forward_graph(state, dtype, xs, n_threads):
    """The evaluation-mode forward of a network of steps with parents: a plan in which every
    step is an output (its own array, kept by the network's state and reused while the rows
    repeat), then each module handed the arrays its own forward keeps. None (nothing
    computed) when a module is in training mode or the inputs do not qualify."""
    steps, checks, modules = state.spec[:3]
    parents, inputs, outs, hand = state.spec[5]
    if not xs or type(xs[0]) is not np.ndarray or xs[0].ndim != 2:
        return None
    keep = state.keep
    if keep is None:
        keep = state.keep = _Keep(_k.InferencePlan(steps, dtype, checks, modules, parents,
                                                   inputs, list(range(len(steps)))), hand)
    if not keep.plan.in_eval_mode():
        return None
    arrays, kept = keep.arrays(xs[0].shape[0], dtype)
    if not keep.plan.run_many(list(xs), arrays, n_threads, kept):
        return None

    def value(ref):
        return xs[-1 - ref] if ref < 0 else arrays[ref]

    for role, m, refs in hand:
        if role == _PARALLEL:
            m._widths = [value(r).shape[1] for r in refs]
        elif role == _CONCAT:
            m._widths = [value(r).shape[1] for r in refs]
            m._ran = True
        elif role == _ELEMENTWISE:
            m._xs = [value(r) for r in refs]
            m._ran = True
        else:
            _hand(role, m, value(refs[0]), value(refs[1]), refs[1] != refs[0],
                  *kept[refs[1]] if role == _MAXOUT else ())
    return [value(r) for r in outs]


class _Keep:
    """_eval_forward_graph's plan (every step an output) and its arrays: one per step, and
    the linear units and winners of each maxout step (``maxout``: step, n_lin, n_out), of n
    rows, reused while n repeats and grown for the largest batch."""

    __slots__ = ("plan", "maxout", "n", "bases", "views")

    def __init__(self, plan, hand):
        self.plan = plan
        self.maxout = [(refs[1], m.linear.out_features, m.out_features)
                       for role, m, refs in hand if role == _MAXOUT]
        self.n, self.bases, self.views = -1, None, None

    def arrays(self, n, dtype):
        """(one (n, width) array per step, {maxout step: (z, arg)})."""
        if n != self.n:
            widths = self.plan.out_widths
            if self.bases is None or self.bases[0][0].size < n * widths[0]:
                self.bases = ([np.empty(max(n * w, 1), dtype) for w in widths],
                              [(np.empty(max(n * lin, 1), dtype),
                                np.empty(max(n * w, 1), np.int32)) for _, lin, w in self.maxout])
            ys, mx = self.bases
            self.n = n
            self.views = ([b[:n * w].reshape(n, w) for b, w in zip(ys, widths)],
                          {i: (bz[:n * lin].reshape(n, lin), ba[:n * w].reshape(n, w))
                           for (i, lin, w), (bz, ba) in zip(self.maxout, mx)})
        return self.views


# What eval_forward hands each module (its role), and the activations whose backward reads
# the pre-activation.
_DENSE, _DROPOUT, _ACTIVATION, _MAXOUT, _OUTPUT_MAP, _PARALLEL, _CONCAT, _ELEMENTWISE = range(8)
_NEEDS_Z = frozenset(name for name, info in ACTIVATION_TABLE.items() if info.needs_z)


def _role(m):
    """The role of a layer (one step, or none) in the evaluation-mode forward."""
    cls = type(m)
    return (_DENSE if cls is Dense else _DROPOUT if cls is Dropout
            else _ACTIVATION if isinstance(m, Activation)
            else _MAXOUT if cls is Maxout else _OUTPUT_MAP)


def _hand(role, m, x, y, makes, z=None, arg=None):
    """Give the layer m what its forward of x into y keeps for its backward; makes: y is its
    own step's array (not x passed on); a Maxout's linear units z and winners arg."""
    if role == _MAXOUT:
        lin = m.linear
        lin._x, lin._y, lin._z = x, z, None
        m._arg = arg
    elif role == _DENSE:
        m._x, m._y, m._z = x, y, None
    elif role == _DROPOUT:
        m._active = False
    elif role == _ACTIVATION:
        m._y = y
        m._z = x if makes and m.name in _NEEDS_Z else None
    else:
        m._p = y


def _outputs(model, state, n):
    """Per step ``(y, z, arg)`` arrays of ``n`` rows (z and arg for maxout only), kept by the
    network's state and reused while ``n`` repeats (a larger batch grows them)."""
    if state.n == n:
        return state.outputs
    if state.steps is None:
        steps, widths = [], []
        width = model._in_features
        for m in model._layers:
            makes = _makes_output(m)
            role = _role(m)
            steps.append((m, makes, role))
            width = m.output_features(width)
            if makes:
                widths.append((width, m.linear.out_features if type(m) is Maxout else 0))
        state.steps, state.widths_ = steps, widths
    widths = state.widths_
    dt = model._dtype
    # (y, z, arg) sizes; z and arg (maxout only: lin > 0) also when n is 0
    need = [(n * w, n * lin, n * w, lin > 0) for w, lin in widths]
    bases = state.bases
    if bases is None or any(b[0].size < s[0] or (s[3] and b[1].size < s[1])
                            for b, s in zip(bases, need)):
        bases = [(np.empty(s[0], dt), np.empty(s[1], dt) if s[3] else None,
                  np.empty(s[2], np.int32) if s[3] else None) for s in need]
    outputs = [(by[:n * w].reshape(n, w),
                None if not lin else bz[:n * lin].reshape(n, lin),
                None if not lin else ba[:n * w].reshape(n, w))
               for (w, lin), (by, bz, ba) in zip(widths, bases)]
    state.n, state.outputs, state.bases = n, outputs, bases
    return outputs
def _makes_output(m) -> bool:
    """The module is a step of the plan (it writes an array), not a dropped identity."""
    if type(m) is Dropout:
        return m.mode != "inverted" and m.p != 0.0
    if isinstance(m, Activation):
        return m.name != "identity"
    return True
