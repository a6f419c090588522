"""The training engine: many training steps of a covered network in one compiled call.

A network is a description; the engine executes it. :func:`compile_training` turns a network
of fastnn modules, a loss and an optimizer into a plan (fastnn/_kernels/engine.pyx) whose
:meth:`TrainingEngine.run` trains for many steps inside one OpenMP region: the same updates as
``model.forward`` / ``loss.loss_and_grad`` / ``model.backward`` / ``optimizer.step`` per batch,
to rounding, and bitwise the same weights for any thread count.

Covered networks: a :class:`~fastnn.model.Sequential` (nested ones, and its
:class:`~fastnn.model.Residual` and :class:`~fastnn.model.Parallel` containers, included), or a
graph :class:`~fastnn.graph.Model` with any number of inputs and one output, whose layers are
each used once; made of :class:`~fastnn.layers.Dense` layers with any activation of the
activation table, :class:`~fastnn.layers.Maxout` layers (linear units),
:class:`~fastnn.layers.Activation` modules (and its named subclasses),
:class:`~fastnn.layers.Dropout` modules (training mode), the merges
:class:`~fastnn.graph.Concatenate`, :class:`~fastnn.graph.Add` and
:class:`~fastnn.graph.Multiply`, and a :class:`~fastnn.preprocessing.Normalization` layer first
on the only input. The plan is a list of nodes in topological order - layers and merges, each
with the elementwise modules after it (a value that something else reads too, or an input,
gets a copy node to carry them). Losses: ``cross_entropy`` and ``sparsemax`` with integer labels
or target rows (probabilities, label sets), ``squared`` and ``binary_cross_entropy`` (for a
graph Model: its one output's loss, of weight 1); every optimizer of :mod:`fastnn.optim` (SGD
with momentum or Nesterov, Adagrad, RMSprop, Adam) with ``decay``, ``weight_decay``, ``l1`` and
``l1_proximal``, any parameter groups, and parameters left out of the optimizer (frozen).
:func:`why_not` names what is not covered; ``fit`` then keeps its per-module loop.

Threads: ``n_threads`` (None: ``omp_get_max_threads()``) capped at the CPUs, at the widest
layer's number of 128-column blocks (a thread beyond it would own no work), and at 1 when
fastnn cannot hold the BLAS to one thread per product (a BLAS without threads of its own
needs no holding). A run whose threads spend too much of
their time waiting at its barriers (another process holds a core) finishes on one thread
(``RunResult.fell_back``), and the next runs use one thread for ``RETRY_AFTER_S``
seconds, twice as long after each further fallback. None of this changes a bit of the results.

The parameters live in the engine's blocked panels while it runs; ``run`` loads them (weights,
optimizer state, step count, Dropout call counters) from the modules and the optimizer at entry
and writes them back before it returns, so Python always sees up-to-date modules.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from fastnn import graph as _graph
from fastnn import layers as fl
from fastnn import losses as _losses
from fastnn import model as _model
from fastnn import optim as _optim
from fastnn._kernels import _blas
from fastnn._kernels import dropout as _dk
from fastnn._kernels import engine as _k
from fastnn._threads import resolve_n_threads
from fastnn._validation import BLAS_MAX_DIM
from fastnn.functional.activations import ACTIVATION_TABLE
from fastnn.functional.losses import _targets_matrix
from fastnn.model import Sequential
from fastnn.preprocessing import Normalization

__all__ = ["compile_training", "why_not", "TrainingEngine", "RunResult"]

_CODES = {a.name: a.code for a in ACTIVATION_TABLE.values()}

#: After a run fell back to one thread (another process holds a core), the next runs (of any
#: engine of the process: contention is a fact about the machine) use one thread for this many
#: seconds before a team is tried again; each further fallback doubles the wait, up to
#: RETRY_MAX_S, and a team run that keeps its threads resets it. A retry under lasting
#: contention costs one fallback window (50 ms) of a slow team.
RETRY_AFTER_S = 0.5
RETRY_MAX_S = 8.0
_retry = {"at": 0.0, "wait": RETRY_AFTER_S}


@dataclass
class RunResult:
    """What one :meth:`TrainingEngine.run` call did.

    Attributes
    ----------
    steps, samples : int
        Training steps and samples done (updates applied).
    loss_sum : float
        Sum of the per-sample losses of those steps (float64).
    metric_sum : float
        Correct predictions (classification, binary) or the sum of squared errors (squared
        loss) over those samples.
    nonfinite_step : int
        Index (within this call) of a step whose loss was not finite, -1 if none; that step's
        update was not applied.
    last_loss : float
        The mean loss of the last step run (the non-finite one when there is one).
    fell_back : bool
        The run finished on one thread (barrier waits showed contention).
    sums : ndarray or None
        Squared loss only: per-output float64 sums of y, y^2 and squared errors (rows ``s1``,
        ``s2``, ``sse``), for R^2.
    n_threads : int
        Threads the run started with.
    wait_fraction : float
        Share of the team's time spent waiting at barriers.
    """

    steps: int
    samples: int
    loss_sum: float
    metric_sum: float
    nonfinite_step: int = -1
    last_loss: float = float("nan")
    fell_back: bool = False
    sums: np.ndarray | None = field(default=None, repr=False)
    n_threads: int = 1
    wait_fraction: float = 0.0


class _NotCovered(Exception):
    """A part of the network the engine does not cover (the message says which)."""


_ACT_TYPES = {fl.Activation, fl.Identity, fl.Sigmoid, fl.Tanh, fl.ReLU, fl.Step, fl.Sign,
              fl.LeakyReLU, fl.ELU, fl.Softplus, fl.GELU, fl.SiLU}
_MERGES = {_graph.Concatenate: "concat", _graph.Add: "add", _graph.Multiply: "mul"}


class _Builder:
    """Turns a network into the engine's nodes. A value is a reference: a node index, or
    -1 - i for input i. Elementwise modules (Activation, Dropout) become post ops of the node
    whose value they read when nothing else reads that value (a frozen value is read more
    than once), else of a one-parent "add" node (a copy)."""

    def __init__(self, input_widths):
        self.inputs = list(input_widths)
        self.specs, self.owners = [], []
        self.frozen = set()
        self.lead = None   # a Normalization of the only input: applied to each gathered batch

    def width(self, ref):
        return self.inputs[-1 - ref] if ref < 0 else _width(self.specs[ref])

    def _node(self, spec, owner):
        self.specs.append(spec)
        self.owners.append(owner)
        return len(self.specs) - 1

    def layer(self, m, ref):
        t = type(m)
        d = m.linear if t is fl.Maxout else m
        if t is fl.Maxout and (type(d) is not fl.Dense
                               or _CODES.get(d.activation) != _CODES["identity"]):
            raise _NotCovered("a Maxout whose linear part is not a plain linear Dense layer")
        if t is fl.Dense and m.activation not in _CODES:
            raise _NotCovered(f"activation {m.activation!r} is not in the activation table")
        if max(d.in_features, d.out_features) > BLAS_MAX_DIM:
            raise _NotCovered("a layer is wider than 2**31 - 1 (the 32-bit sizes of BLAS calls)")
        if d.in_features != self.width(ref):
            raise _NotCovered(f"{m!r} takes {d.in_features} features, it is given "
                              f"{self.width(ref)}")
        spec = {"n_in": d.in_features, "n_out": d.out_features, "parents": [ref],
                "has_bias": d.bias is not None, "post": []}
        if t is fl.Maxout:
            spec.update(code=_CODES["identity"], keep_z=False, pieces=m.pieces)
        else:
            spec.update(code=_CODES[m.activation],
                        keep_z=bool(ACTIVATION_TABLE[m.activation].needs_z))
        return self._node(spec, {"dense": d, "post": []})

    def merge(self, kind, refs):
        widths = [self.width(r) for r in refs]
        if kind != "concat" and len(set(widths)) != 1:
            raise _NotCovered(f"a {kind} of widths {widths}")
        spec = {"kind": kind, "parents": list(refs), "code": _CODES["identity"],
                "keep_z": False, "has_bias": False, "post": [],
                "n_in": 0, "n_out": sum(widths) if kind == "concat" else widths[0]}
        return self._node(spec, {"dense": None, "post": []})

    def elementwise(self, m, ref):
        if type(m) is fl.Dropout:
            if m.p == 0.0:
                return ref   # the module is then the identity and draws no mask
            scale = 1.0 / (1.0 - m.p) if m.mode == "inverted" else 1.0
            op = ("dropout", scale, int(_dropout_threshold(m.p)),
                  int(m.seed) & 0xFFFFFFFFFFFFFFFF)
        else:
            if m.name == "identity":
                return ref
            op = ("act", _CODES[m.name], bool(ACTIVATION_TABLE[m.name].needs_z))
        if ref < 0 or ref in self.frozen:
            ref = self.merge("add", [ref])
        self.specs[ref]["post"].append(op)
        self.owners[ref]["post"].append(m)
        return ref

    def module(self, m, ref):
        """The value of module m applied to the value ref (Sequential, Residual and Parallel
        containers included)."""
        t = type(m)
        if t is Sequential:
            for sub in m._layers:
                ref = self.module(sub, ref)
            return ref
        if t is _model.Residual:
            self.frozen.add(ref)
            return self.merge("add", [ref, self.module(m.module, ref)])
        if t is _model.Parallel:
            self.frozen.add(ref)
            outs = [self.module(b, ref) for b in m.branches]
            return self.merge("concat" if m.merge == "concat" else "add", outs)
        if t in (fl.Dense, fl.Maxout):
            return self.layer(m, ref)
        if t in _ACT_TYPES or t is fl.Dropout:
            return self.elementwise(m, ref)
        if t is Normalization:
            return self.normalization(m, ref)
        raise _NotCovered(f"the layer {t.__name__} is not covered by the training engine")

    def normalization(self, m, ref):
        if ref != -1 or len(self.inputs) != 1 or ref in self.frozen or self.lead is not None:
            raise _NotCovered("a Normalization layer other than the first on the only input")
        if not m.adapted:
            raise _NotCovered("the Normalization layer has no statistics (call adapt)")
        if m.n_features != self.inputs[0]:
            raise _NotCovered("the Normalization layer's width is not the input's")
        self.lead = m
        return ref

    def finish(self, out):
        if not any(o["dense"] is not None for o in self.owners):
            raise _NotCovered("the network has no Dense or Maxout layer")
        if out != len(self.specs) - 1:
            raise _NotCovered("the output is not the network's last node")
        return self.specs, self.owners, self.inputs


def _graph_nodes(model, b):
    """The output reference of a graph Model's nodes (one output; each layer used once)."""
    if len(model._outputs) != 1:
        raise _NotCovered(f"a Model with {len(model._outputs)} outputs")
    readers = {}
    for node in model._order:
        for p in node.parents:
            readers[id(p)] = readers.get(id(p), 0) + 1
    used = set()
    ref = {id(n): -1 - i for i, n in enumerate(model._inputs)}
    for i, n in enumerate(model._inputs):
        if readers.get(id(n), 0) > 1:
            b.frozen.add(-1 - i)
    for node in model._order:
        if node.layer is None:
            continue
        m = node.layer
        if id(m) in used:
            raise _NotCovered("a layer used at several nodes (shared weights)")
        used.add(id(m))
        refs = [ref[id(p)] for p in node.parents]
        if type(m) in _MERGES:
            r = b.merge(_MERGES[type(m)], refs)
        elif isinstance(m, _graph.Merge):
            raise _NotCovered(f"the merge {type(m).__name__} is not covered by the training "
                              f"engine")
        else:
            r = b.module(m, refs[0])
        if readers.get(id(node), 0) > 1:
            b.frozen.add(r)
        ref[id(node)] = r
    return ref[id(model._outputs[0])]


def _nodes(model):
    """(specs, owners, input widths) of a covered network, or a reason string. Covered: a
    Sequential (nested Sequential, Residual and Parallel containers included) or a graph
    Model with one output (also as fit passes it)."""
    if type(model) is _graph._Packed:
        model = model._model
    try:
        if type(model) is _graph.Model:
            b = _Builder(model.input_widths)
            specs, owners, inputs = b.finish(_graph_nodes(model, b))
        elif type(model) is Sequential:
            n_in = model.input_features()
            if n_in is None:
                return "the network's input width is not known"
            b = _Builder([n_in])
            specs, owners, inputs = b.finish(b.module(model, -1))
        else:
            return f"the network is a {type(model).__name__}, not a Sequential or a Model"
    except _NotCovered as e:
        return str(e)
    if b.lead is not None:
        owners[0]["input"] = b.lead
    return specs, owners, inputs


def _width(spec):
    """The output width of a layer spec (a maxout layer's: its groups)."""
    return spec["n_out"] // spec.get("pieces", 1)


def _dropout_threshold(p):
    return _dk.keep_threshold(p)


_LOSS_KINDS = {_losses.CrossEntropyLoss: "cross_entropy", _losses.SquaredLoss: "squared",
               _losses.BinaryCrossEntropyLoss: "binary_cross_entropy",
               _losses.SparsemaxLoss: "sparsemax"}
#: losses whose targets are integer labels in the engine
_LABEL_LOSSES = ("cross_entropy", "sparsemax")
_OPT_KINDS = {_optim.SGD: "sgd", _optim.Adagrad: "adagrad", _optim.RMSprop: "rmsprop",
              _optim.Adam: "adam"}


def _loss_kind(loss_fn, y=None):
    """The engine's name of the loss; cross-entropy and the sparsemax loss are
    "cross_entropy_rows" and "sparsemax_rows" when their targets are rows (a 2-D ``y``:
    probabilities, label sets; the multilabel sparsemax loss when ``y`` is not given)."""
    kind = _LOSS_KINDS.get(type(loss_fn))
    if kind == "cross_entropy" and y is not None and np.ndim(y) == 2:
        return "cross_entropy_rows"
    if kind == "sparsemax" and (np.ndim(y) == 2 if y is not None else loss_fn.multilabel):
        return "sparsemax_rows"
    return kind


def _inner_loss(loss_fn, y=None):
    """(loss, targets) as the engine sees them: the packed loss fit trains a graph Model with
    is, for one output of weight 1, that output's loss, and the packed targets that output's
    (integer labels from their packed column); a ValueError names what is not covered."""
    if type(loss_fn) is not _graph._PackedLoss:
        return loss_fn, y
    if len(loss_fn.losses) != 1:
        raise ValueError(f"a loss for each of {len(loss_fn.losses)} outputs")
    if loss_fn.weights[0] != 1.0:
        raise ValueError("a loss weight other than 1")
    if y is not None and loss_fn._y_widths is not None and np.ndim(y) == 2:
        y = loss_fn.split_y(np.asarray(y))[0]
    return loss_fn.losses[0], y


def _opt_kind(optimizer):
    return _OPT_KINDS.get(type(optimizer))


def why_not(model, loss_fn, optimizer, y=None) -> str | None:
    """None when the engine covers (model, loss_fn, optimizer) - and the targets ``y``, when
    given - else the reason it does not, as a sentence fragment."""
    return _check(model, loss_fn, optimizer, y)[0]


def _check(model, loss_fn, optimizer, y):
    """(reason, None) when the engine does not cover the fit, else (None, the nodes)."""
    nodes = _nodes(model)
    if isinstance(nodes, str):
        return nodes, None
    reason = _why_not_nodes(nodes, model, loss_fn, optimizer, y)
    return reason, None if reason is not None else nodes


def _why_not_nodes(nodes, model, loss_fn, optimizer, y):
    specs, owners, _ = nodes
    try:
        loss_fn, y = _inner_loss(loss_fn, y)
    except ValueError as e:
        return str(e)
    kind = _loss_kind(loss_fn, y)
    if kind is None:
        return f"the loss {type(loss_fn).__name__} is not covered by the training engine"
    n_out = _width(specs[-1])
    if kind == "binary_cross_entropy" and n_out != 1:
        return "binary cross-entropy needs a network with one output"
    if y is not None:
        y = np.asarray(y)
        if kind in _LABEL_LOSSES and (y.ndim != 1 or y.dtype.kind not in "iu"):
            return f"{kind} targets that are neither integer labels nor rows"
    if _opt_kind(optimizer) is None:
        return f"the optimizer {type(optimizer).__name__} is not covered by the training engine"
    params = model.parameters()
    dtypes = {p.data.dtype for p in params}
    if len(dtypes) != 1 or dtypes.pop() not in (np.float32, np.float64):
        return "the parameters are not all of one float dtype"
    own = {id(p) for p in params}
    for g in optimizer.param_groups:
        for p in g["params"]:
            if id(p) not in own:
                return "the optimizer holds parameters that are not the network's"
    seen = []
    for o in owners:
        d = o["dense"]
        for p in (() if d is None else (d.weight, d.bias)):
            if p is not None and not (isinstance(p.data, np.ndarray) and p.data.flags.c_contiguous
                                      and p.data.flags.writeable):
                return "a Dense parameter is not a writeable C-contiguous array"
            if p is not None:
                # each layer's panels hold their own copy: a shared array would be updated
                # once per layer from stale values instead of once from the summed gradient
                if any(p is q or np.may_share_memory(p.data, q.data) for q in seen):
                    return "two Dense layers share a parameter (tied weights)"
                seen.append(p)
    return None


class TrainingEngine:
    """A compiled training plan of one network, loss and optimizer (see the module notes).

    Build it with :func:`compile_training`. The plan keeps references to the modules and the
    optimizer; hyperparameters (``lr`` set by a schedule, ...) are read again at every run.
    """

    def __init__(self, model, loss_fn, optimizer, specs, owners, n_threads=None, block=None,
                 y=None, inputs=None):
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        inner, y = _inner_loss(loss_fn, y)
        self.loss_kind = _loss_kind(inner, y)
        self.opt_kind = _opt_kind(optimizer)
        self.n_threads = n_threads
        self.dtype = np.dtype(model.parameters()[0].data.dtype)
        self._owners = owners
        self._exact_threads = False
        n_state = {"sgd": None, "adagrad": 1, "rmsprop": None, "adam": 2}[self.opt_kind]
        self._params = []   # per node: (weight, bias); (None, None) for a merge
        for s, o in zip(specs, owners):
            d = o["dense"]
            self._params.append((None, None) if d is None else (d.weight, d.bias))
            # the most state arrays the optimizer can hold (momentum may be set later)
            k = 2 if n_state is None else n_state
            s["n_state_w"] = k
            s["n_state_b"] = k
        self.specs = specs
        self.n_outputs = _width(specs[-1])
        self._core = _k.Core(specs, self.loss_kind, self.dtype,
                             _k.BLOCK if block is None else int(block), inputs)
        self._max_blocks = self._core.widest_wave()

    # --- optimizer state ------------------------------------------------------------------
    def _where(self):
        """{id(param): (group, group state, state names, offset, size)} for the optimizer's
        parameters, preparing (laying out) a group's state as its first step would."""
        opt = self.optimizer
        out = {}
        for group, gs in zip(opt.param_groups, opt._group_states):
            if (gs.plan is None or not gs.plan.matches(group["params"])
                    or gs.names != opt._state_names(group)):
                opt._prepare(group, gs)
            for i, p in enumerate(gs.params):
                out[id(p)] = (group, gs, gs.names, gs.offsets[i], p.data.size)
        return out

    def _rule(self, p, where, bias):
        """The arguments of Core.set_optimizer for parameter p."""
        opt = self.optimizer
        if p is None or id(p) not in where:
            return ("frozen", 0.0, 0.0, 0.0, False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0), ()
        group, gs, names, off, size = where[id(p)]
        wd, l1, l1p = opt._penalties(group)
        if not p.regularize:
            wd = l1 = l1p = 0.0
        k = self.opt_kind
        momentum = float(group.get("momentum", 0.0))
        nesterov = bool(group.get("nesterov", False))
        eps = float(group.get("eps", 0.0))
        alpha = float(group.get("alpha", 0.0))
        b1, b2 = group.get("betas", (0.0, 0.0))
        states = tuple(gs.buffers[n][off:off + size] for n in names)
        return ((k, group["lr"], group["decay"], momentum, nesterov, eps, alpha, float(b1),
                 float(b2), wd, l1, l1p, int(gs.step)), states)

    def _load(self):
        where = self._where()
        core = self._core
        saved = []
        for l, (w, b) in enumerate(self._params):
            rw, sw = self._rule(w, where, False)
            rb, sb = self._rule(b, where, True)
            saved.append((sw, sb))
            if w is not None:
                core.set_optimizer(l, False, *rw)
                core.set_optimizer(l, True, *rb)
                core.load(l, w.data, None if b is None else b.data, sw, sb)
            for k, m in enumerate(self._owners[l]["post"]):
                if hasattr(m, "_calls"):
                    core.set_dropout_calls(l, k, m._calls)
        lead = self._owners[0].get("input")
        if lead is not None:
            core.set_input_standardization(*lead._stats(self.dtype))
        return where, saved

    def _store(self, where, saved, steps, extra_calls):
        core = self._core
        if steps == 0 and extra_calls == 0:
            return   # nothing changed
        # the gradients of the last step; after a non-finite loss none (the module loop
        # stops after zero_grad and the forward)
        grads = steps and not extra_calls
        for l, (w, b) in enumerate(self._params):
            sw, sb = saved[l]
            if w is not None:
                wg = w._grad if grads else None
                bg = None if b is None or not grads else b._grad
                core.store(l, w.data, None if b is None else b.data, sw, sb, wg, bg)
            for p in (w, b):
                if p is not None and grads:
                    p._grad_written()
                elif p is not None and extra_calls:
                    p.zero_grad()
            for m in self._owners[l]["post"]:
                if hasattr(m, "_calls"):
                    m._calls += steps + extra_calls
        if steps:
            # every group steps, an empty one too (Optimizer.step counts it)
            for gs in self.optimizer._group_states:
                gs.step += steps

    # --- training -------------------------------------------------------------------------
    def targets(self, y):
        """``y`` as the plan reads it: intp labels or a C-contiguous array of the network's
        dtype (of a graph Model's packed targets: its output's). The result is its own
        input again (fit converts once per fit, not once per run)."""
        _, t = _inner_loss(self.loss_fn, y)
        if self.loss_kind in _LABEL_LOSSES:
            return np.ascontiguousarray(t, dtype=np.intp)
        return np.ascontiguousarray(t, dtype=self.dtype)

    def run(self, X, y, order, start=0, batch_size=32, max_steps=None, time_budget_s=None):
        """Train on the batches ``order[start:start + batch_size]``, ``order[start +
        batch_size:...]``, ... (the last one may be short) for at most ``max_steps`` steps,
        stopping after the step that exceeds ``time_budget_s`` seconds. X (n, in_features) of
        the network's dtype, C-contiguous; y intp labels (n,) for cross-entropy, else (n,
        outputs) or (n,) targets of that dtype. Returns a :class:`RunResult`.
        """
        if int(batch_size) > BLAS_MAX_DIM:
            raise ValueError(f"batch_size {batch_size} exceeds 2**31 - 1, the 32-bit sizes of "
                             f"BLAS calls")
        X = np.ascontiguousarray(X, dtype=self.dtype)
        y = self.targets(y)
        nt = resolve_n_threads(self.n_threads)
        if self._exact_threads and nt > 1:
            nt = int(self.n_threads)   # tests: more threads than CPUs
        elif nt > 1 and not (_blas.has_thread_control() or _blas.is_sequential()):
            # without control the BLAS may start its own threads for every product, and a
            # team of engine threads would oversubscribe the cores (a sequential BLAS, such
            # as oneMKL's sequential layer, never does)
            nt = 1
        else:
            # a thread beyond the widest layer's block count would own no block anywhere
            nt = min(nt, self._max_blocks)
            if nt > 1 and time.monotonic() < _retry["at"]:
                nt = 1   # a recent run fell back
        where, saved = self._load()
        res = self._core.last_run = None
        try:
            res = self._core.run(X, y, np.asarray(order), int(start), int(batch_size),
                                 -1 if max_steps is None else int(max_steps),
                                 0.0 if time_budget_s is None else float(time_budget_s), nt)
        finally:
            if res is None:
                # an exception as the call returned (KeyboardInterrupt): the steps it did
                # still go back to the modules
                res = self._core.last_run
            steps = 0 if res is None else res["steps"]
            extra = 1 if res is not None and res["nonfinite_step"] >= 0 else 0
            self._store(where, saved, steps, extra)
        fell_back = res["fallback_step"] >= 0
        if fell_back:
            _retry["at"] = time.monotonic() + _retry["wait"]
            _retry["wait"] = min(2.0 * _retry["wait"], RETRY_MAX_S)
        elif nt > 1 and res["steps"] >= 8:
            _retry["wait"] = RETRY_AFTER_S
        n_order = len(order)
        samples = max(0, min(res["steps"] * int(batch_size), n_order - max(int(start), 0)))
        if self.loss_kind == "squared":
            sums = np.stack([res["s1"], res["s2"], res["sse"]])
            metric = float(res["sse"].sum())
        else:
            sums = None
            metric = res["hit_sum"]
        elapsed = res.get("elapsed_s", 0.0)
        wait = res["wait_s"] / (nt * elapsed) if elapsed > 0 and nt > 1 else 0.0
        return RunResult(steps=res["steps"], samples=samples, loss_sum=res["loss_sum"],
                         metric_sum=metric, nonfinite_step=res["nonfinite_step"],
                         last_loss=res["last_loss"],
                         fell_back=fell_back, sums=sums, n_threads=nt, wait_fraction=wait)


def compile_training(model, loss_fn, optimizer, n_threads=None, *, y=None,
                     block=None) -> TrainingEngine | None:
    """A :class:`TrainingEngine` for (model, loss_fn, optimizer), or None when the engine does
    not cover them (:func:`why_not` says why). ``n_threads``: None follows
    ``omp_get_max_threads()`` at each run; ``block``: columns per block (a multiple of 16;
    tests use small blocks to cut small layers into several)."""
    reason, nodes = _check(model, loss_fn, optimizer, y)
    if reason is not None:
        return None
    inner, t = _inner_loss(loss_fn, y)
    kind = _loss_kind(inner, t)
    if t is not None and kind in ("sparsemax_rows", "cross_entropy_rows"):
        # the module loop's checks, once for all batches (a row the sparsemax loss cannot
        # normalize would be a NaN loss in the engine)
        t = np.asarray(t)
        _targets_matrix(t, t.shape, t.dtype if t.dtype.kind == "f" else np.float64, "y",
                        normalize_rows=kind == "sparsemax_rows")
    specs, owners, inputs = nodes
    return TrainingEngine(model, loss_fn, optimizer, specs, owners, n_threads, block, y,
                          inputs)
