"""Computation graphs: the functional API.

The lecture's computation graph, built by calling layers on symbolic tensors (as in Keras's
functional API)::

    a = fastnn.Input(32, name="left")
    b = fastnn.Input(32, name="right")
    shared = Dense(32, 32, activation="relu")          # one layer used twice: its gradients add
    h = fastnn.Concatenate()([shared(a), shared(b)])
    h = fastnn.Add()([h, Dense(64, 64, activation="relu")(h)])      # a skip connection
    model = fastnn.Model(inputs=[a, b], outputs=[Dense(64, 10)(h), Dense(64, 1)(h)])
    model.fit([Xa, Xb], [labels, targets], loss=["cross_entropy", "squared"],
              loss_weights=[1.0, 0.5], epochs=10)

``forward`` visits the nodes in topological order; ``backward`` in reverse order, summing the
gradients that reach a node from several consumers (the chain rule's sum over paths). Every
problem with the graph - a cycle, an input no output depends on, an output that needs an input
not listed, a width mismatch - is a ValueError when the graph is built, not when it runs.

A layer used at several nodes keeps one set of parameters (its gradients add); each further use
runs on a copy of the layer that shares those parameters and has its own work buffers, so the
uses do not overwrite each other's forward pass.
"""
from __future__ import annotations

import copy
import heapq
import numbers
from collections.abc import Sequence

import numpy as np

from fastnn._threads import check_not_fitting, exclusive_use, resolve_n_threads
from fastnn._validation import check_float_array, check_float_dtype
from fastnn.functional import inference as _inference
from fastnn.losses import Loss, get_loss
from fastnn.model import (
    _PREDICT_BATCH,
    Sequential,
    _check_unique,
    _Container,
    _infer_dtype,
    _prefixed_shapes,
)
from fastnn.module import Module, Node, module_from_config, no_forward_error

__all__ = ["Add", "Concatenate", "Input", "Merge", "Model", "Multiply"]


def Input(features: int, name: str | None = None) -> Node:
    """A model input of ``features`` columns: the start of a graph (see :class:`Model`)."""
    if isinstance(features, bool) or not isinstance(features, numbers.Integral) or features <= 0:
        raise ValueError(f"Input features must be a positive int, got {features!r}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"Input name must be a str, got {type(name).__name__}")
    return Node(None, (), int(features), name)


# ------------------------------------------------------------------------------------ merges

class Merge(Module):
    """Base of the layers that take several inputs: ``forward(xs)`` gets a list of arrays,
    ``backward`` returns a list of gradients (one per input, each a distinct array)."""

    n_min = 2

    def __init__(self):
        super().__init__()
        self._ran = False

    def merged_features(self, widths: list[int]) -> int:
        raise NotImplementedError

    @classmethod
    def _parameter_shapes(cls, kwargs):
        return {}

    def _check_xs(self, xs):
        if not isinstance(xs, (list, tuple)) or len(xs) < self.n_min:
            raise ValueError(f"{type(self).__name__} takes a list of at least {self.n_min} "
                             f"arrays")
        xs = [x if type(x) is np.ndarray else check_float_array(x, "x") for x in xs]
        n = xs[0].shape[0]
        if any(x.ndim != 2 or x.shape[0] != n or x.dtype != xs[0].dtype for x in xs):
            raise ValueError(f"{type(self).__name__} needs 2-D arrays with the same rows and "
                             f"dtype, got shapes {[x.shape for x in xs]}")
        return xs

    def backward(self, grad_output, need_input_grad=True, inplace=False):
        if not self._ran:
            raise no_forward_error(self)
        if not need_input_grad:
            return None
        return self._input_grads(grad_output)

    def _grad_buffer(self, i, shape, dtype):
        """A work array for input ``i``'s gradient (one per input: the model may overwrite
        each independently)."""
        return self._buffer(f"g{i}", shape, dtype)


class Concatenate(Merge):
    """``[x_1, ..., x_k]`` side by side along the features."""

    _forward_cache = ("_ran", "_widths")
    #: its forward, as one-call inference (fastnn.functional.inference) runs it
    _inference_merge = "concat"

    def merged_features(self, widths):
        return int(sum(widths))

    def forward(self, xs):
        xs = self._check_xs(xs)
        self._widths = [x.shape[1] for x in xs]
        self._ran = True
        y = self._buffer("y", (xs[0].shape[0], sum(self._widths)), xs[0].dtype)
        return np.concatenate(xs, axis=1, out=y)

    def _input_grads(self, g):
        out, start = [], 0
        for i, w in enumerate(self._widths):
            gi = self._grad_buffer(i, (g.shape[0], w), g.dtype)
            np.copyto(gi, g[:, start:start + w])
            out.append(gi)
            start += w
        return out


class _Elementwise(Merge):
    """Inputs of one width combined elementwise by the ufunc ``_op``."""

    _forward_cache = ("_ran", "_xs")
    _op: np.ufunc

    def merged_features(self, widths):
        if len(set(widths)) > 1:
            raise ValueError(f"{type(self).__name__} needs inputs of equal width, got {widths}")
        return widths[0]

    def forward(self, xs):
        xs = self._check_xs(xs)
        self.merged_features([x.shape[1] for x in xs])
        self._xs = xs
        self._ran = True
        y = self._buffer("y", xs[0].shape, xs[0].dtype)
        self._op(xs[0], xs[1], out=y)
        for x in xs[2:]:
            self._op(y, x, out=y)
        return y


class Add(_Elementwise):
    """``x_1 + ... + x_k`` (equal widths)."""

    _op = np.add
    _inference_merge = "add"   # (see Concatenate)

    def _input_grads(self, g):
        out = []
        for i in range(len(self._xs)):
            gi = self._grad_buffer(i, g.shape, g.dtype)
            np.copyto(gi, g)
            out.append(gi)
        return out


class Multiply(_Elementwise):
    """``x_1 * ... * x_k`` elementwise (equal widths); gradient of x_i: g times the others."""

    _op = np.multiply
    _inference_merge = "mul"   # (see Concatenate)

    def _input_grads(self, g):
        out = []
        for i in range(len(self._xs)):
            gi = self._grad_buffer(i, g.shape, g.dtype)
            np.copyto(gi, g)
            for j, x in enumerate(self._xs):
                if j != i:
                    gi *= x
            out.append(gi)
        return out


# ------------------------------------------------------------------------------- the model

def _as_node_list(nodes, what):
    if isinstance(nodes, Node):
        return [nodes], True
    if isinstance(nodes, (list, tuple)) and nodes and all(isinstance(n, Node) for n in nodes):
        return list(nodes), False
    raise TypeError(f"{what} must be a node (the result of Input(...) or of calling a layer "
                    f"on nodes) or a non-empty list of nodes")


def _shared_copy(module: Module) -> Module:
    """A copy of ``module`` with the same Parameter objects and its own work buffers."""
    memo = {id(p): p for p in module.parameters()}
    clone = copy.deepcopy(module, memo)
    for m in clone.modules():
        m._buffers = {}
    return clone


class Model(_Container):
    """A network given as a graph of layers from ``inputs`` to ``outputs`` (the functional API;
    see :mod:`fastnn.graph`).

    Parameters
    ----------
    inputs : Node or list of Node
        The :func:`Input` nodes, in the order ``forward`` and ``fit`` take their arrays.
    outputs : Node or list of Node
        The nodes whose values the model returns, in order.
    dtype : float32, float64 or None
        As for :class:`~fastnn.model.Sequential`.
    n_threads : int or None

    ``forward(X)`` takes one array per input (a list in ``inputs`` order, or a dict by input
    name; a single array for a one-input model) and returns one array per output (a list; a
    single array for a one-output model). ``backward(g)`` takes one gradient per output and
    returns one per input.
    """

    _forward_cache = ("_ran",)
    #: a graph of its nodes, run by one-call inference (fastnn.functional.inference)
    _inference_graph = True

    def __init__(self, inputs, outputs, dtype=None, n_threads: int | None = None) -> None:
        super().__init__()
        self._inputs, self._single_in = _as_node_list(inputs, "inputs")
        self._outputs, self._single_out = _as_node_list(outputs, "outputs")
        for node in self._inputs:
            if node.layer is not None:
                raise ValueError(f"inputs must be Input nodes; {node!r} is a layer's output")
        if len({id(n) for n in self._inputs}) != len(self._inputs):
            raise ValueError("an Input node is listed twice in inputs")
        names = [n.name for n in self._inputs if n.name is not None]
        if len(set(names)) != len(names):
            raise ValueError(f"input names must be unique, got {names}")
        self._order = self._toposort()
        # unique layers, in order of first use
        layers, seen = [], set()
        for node in self._order:
            if node.layer is not None and id(node.layer) not in seen:
                seen.add(id(node.layer))
                layers.append(node.layer)
        _check_unique(layers)
        self._layers = layers
        for i, m in enumerate(layers):
            self._modules[str(i)] = m
        self._dtype = _infer_dtype(layers, dtype)
        self._set_dtype(self._dtype)
        # the module each node runs: the layer itself at its first use, a parameter-sharing
        # copy at every further use (layers with state besides their parameters - dropout
        # counters, normalization statistics - cannot be shared: the copies would not follow)
        uses: dict[int, int] = {}
        for node in self._order:
            if node.layer is not None:
                uses[id(node.layer)] = uses.get(id(node.layer), 0) + 1
        for m in layers:
            if uses[id(m)] > 1 and next(iter(m.named_buffers()), None) is not None:
                raise ValueError(f"{m!r} is used at {uses[id(m)]} nodes but holds state besides "
                                 f"its parameters (dropout counters, normalization statistics); "
                                 f"give each use its own instance")
        self._runners, used = [], set()
        self._clones = []
        for node in self._order:
            if node.layer is None:
                self._runners.append(None)
            elif id(node.layer) in used:
                clone = _shared_copy(node.layer)
                self._clones.append(clone)
                self._runners.append(clone)
            else:
                used.add(id(node.layer))
                self._runners.append(node.layer)
        index = {id(n): i for i, n in enumerate(self._order)}
        self._parent_idx = [[index[id(p)] for p in n.parents] for n in self._order]
        self._input_idx = [index[id(n)] for n in self._inputs]
        self._output_idx = [index[id(n)] for n in self._outputs]
        # a node's backward must return its input gradient when a parameter lies behind it
        # (or when the caller asks for the input gradients)
        behind: list[bool] = []
        for i, node in enumerate(self._order):
            behind.append((node.layer is not None and node.layer._has_parameters())
                          or any(behind[j] for j in self._parent_idx[i]))
        self._params_below = [any(behind[j] for j in self._parent_idx[i])
                              for i in range(len(self._order))]
        self._ran = False
        if n_threads is not None:
            self.n_threads = n_threads

    def _toposort(self) -> list[Node]:
        """Every node the outputs depend on, parents first (Kahn's algorithm, ties in creation
        order); checks the inputs against what the outputs need."""
        nodes, stack = {}, list(self._outputs)
        while stack:
            n = stack.pop()
            if id(n) in nodes:
                continue
            nodes[id(n)] = n
            stack.extend(n.parents)
        listed = {id(n) for n in self._inputs}
        for n in self._inputs:
            if id(n) not in nodes:
                raise ValueError(f"input {n!r} is not used by any output")
        for n in nodes.values():
            if n.layer is None and id(n) not in listed:
                raise ValueError(f"the outputs depend on {n!r}, which is not in inputs")
        pending = {k: len(n.parents) for k, n in nodes.items()}
        children: dict[int, list[Node]] = {k: [] for k in nodes}
        for n in nodes.values():
            for p in n.parents:
                children[id(p)].append(n)
        ready = [(n.uid, n) for k, n in nodes.items() if pending[k] == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            _, n = heapq.heappop(ready)
            order.append(n)
            for c in children[id(n)]:
                pending[id(c)] -= 1
                if pending[id(c)] == 0:
                    heapq.heappush(ready, (c.uid, c))
        if len(order) != len(nodes):
            raise ValueError("the graph has a cycle")
        return order

    # --- modes over the shared copies too ------------------------------------------------------
    def modules(self):
        yield from super().modules()
        for clone in self._clones:
            yield from clone.modules()

    # --- shapes --------------------------------------------------------------------------------
    @property
    def input_widths(self) -> list[int]:
        return [n.features for n in self._inputs]

    @property
    def output_widths(self) -> list[int]:
        return [n.features for n in self._outputs]

    @property
    def input_names(self) -> list[str]:
        return [n.name if n.name is not None else f"input_{i}"
                for i, n in enumerate(self._inputs)]

    def input_features(self):
        return self._inputs[0].features if self._single_in else None

    def output_features(self, in_features):
        return self._outputs[0].features if self._single_out else None

    # --- forward / backward --------------------------------------------------------------------
    def _input_list(self, X) -> list[np.ndarray]:
        if isinstance(X, dict):
            names = self.input_names
            unknown = set(X) - set(names)
            missing = [k for k in names if k not in X]
            if unknown or missing:
                raise ValueError(f"inputs by name: expected {names}, got {sorted(X)}")
            X = [X[k] for k in names]
        elif not isinstance(X, (list, tuple)):
            X = [X]
        if len(X) != len(self._inputs):
            raise ValueError(f"the model has {len(self._inputs)} inputs, got {len(X)} arrays")
        out = []
        for x, node, name in zip(X, self._inputs, self.input_names):
            a = x if type(x) is np.ndarray else check_float_array(x, name, ndim=2)
            if a.ndim != 2 or a.shape[1] != node.features:
                raise ValueError(f"input {name!r} must have shape (n, {node.features}), got "
                                 f"{a.shape}")
            if a.dtype != self._dtype:
                raise TypeError(f"input {name!r} has dtype {a.dtype}; the model is "
                                f"{self._dtype.name}: convert it with .astype(np.{self._dtype})")
            out.append(a)
        if len({a.shape[0] for a in out}) > 1:
            raise ValueError(f"the inputs have different numbers of rows: "
                             f"{[a.shape[0] for a in out]}")
        return out

    def forward(self, X):
        xs = self._input_list(X)
        if not self.training:   # a covered model: one compiled call (functional.inference)
            for run in self._runners:
                if run is not None:
                    run.training = False
            with self._predict_lock():
                outs = _inference.eval_forward_many(self, xs,
                                                    resolve_n_threads(self._n_threads))
            if outs is not None:
                self._ran = True
                return outs[0] if self._single_out else outs
        values: list = [None] * len(self._order)
        for i, j in enumerate(self._input_idx):
            values[j] = xs[i]
        for i, (node, run) in enumerate(zip(self._order, self._runners)):
            if run is None:
                continue
            run.training = self.training
            run._n_threads = self._n_threads
            ps = self._parent_idx[i]
            values[i] = run.forward([values[j] for j in ps] if isinstance(run, Merge)
                                    else values[ps[0]])
        self._ran = True
        outs = [values[j] for j in self._output_idx]
        return outs[0] if self._single_out else outs

    def backward(self, grad_output, need_input_grad=True, inplace=False):
        if not self._ran:
            raise no_forward_error(self)
        gs = [grad_output] if self._single_out else list(grad_output)
        if len(gs) != len(self._outputs):
            raise ValueError(f"backward takes one gradient per output ({len(self._outputs)}), "
                             f"got {len(gs)}")
        pending: list = [None] * len(self._order)

        def add(j, g, owned):
            if pending[j] is None:
                pending[j] = g if owned else np.array(g, copy=True)
            else:
                np.add(pending[j], g, out=pending[j])

        for j, g in zip(self._output_idx, gs):
            add(j, g, inplace and pending[j] is None)
        for i in range(len(self._order) - 1, -1, -1):
            run = self._runners[i]
            g = pending[i]
            if run is None or g is None:
                continue
            pending[i] = None
            ps = self._parent_idx[i]
            need = need_input_grad or self._params_below[i]
            gx = run.backward(g, need, True)
            if not need:
                continue
            if isinstance(run, Merge):
                for j, gj in zip(ps, gx):
                    add(j, gj, True)
            else:
                add(ps[0], gx, True)
        if not need_input_grad:
            return None
        grads = [pending[j] for j in self._input_idx]
        return grads[0] if self._single_in else grads

    # --- the model interface -------------------------------------------------------------------
    _predict_lock = Sequential._predict_lock   # one predict at a time; fit holds it

    @exclusive_use("fit")   # one fit per network at a time, no predict from other threads
    def fit(self, X, y, loss=None, loss_weights=None, optimizer=None, epochs: int = 10,
            batch_size: int = 32, shuffle: bool = True, validation_data=None,
            validation_split: float = 0.0, callbacks=None, verbose=1, seed=None, lr=None,
            on_divergence: str = "raise", engine="auto"):
        """Train on ``X`` (one array per input) and ``y`` (one target array per output) with
        one loss per output (``loss``: a name or loss object, or a list of them), summed with
        ``loss_weights`` (default 1 each). The other arguments are those of
        :func:`fastnn.training.fit`; returns its History (the summed loss, no metric). A
        model of one output whose loss has weight 1 trains on the training engine when it
        covers the layers (``engine``: as for fit)."""
        from fastnn import training   # deferred: see tests/test_imports.py
        packed_loss = self._packed_loss(loss, loss_weights)
        Xp = self._pack_x(X)
        yp = packed_loss.pack_y(y, Xp.shape[0])
        val = None
        if validation_data is not None:
            Xv, yv = validation_data
            Xv = self._pack_x(Xv)
            val = (Xv, packed_loss.pack_y(yv, Xv.shape[0]))
        return training.fit(_Packed(self), Xp, yp, loss=packed_loss, optimizer=optimizer,
                            epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                            validation_data=val, validation_split=validation_split,
                            callbacks=callbacks, verbose=verbose, seed=seed, lr=lr,
                            on_divergence=on_divergence, engine=engine)

    def evaluate(self, X, y, loss=None, loss_weights=None, batch_size: int = 1024) -> dict:
        """``{"loss": summed loss, "loss_<i>": each output's loss, and "accuracy_<i>" for the
        classification outputs}`` in evaluation mode."""
        packed_loss = self._packed_loss(loss if loss is not None else getattr(self, "loss", None),
                                        loss_weights)
        outs = self.predict(X, batch_size=batch_size)
        outs = [outs] if self._single_out else outs
        ys = packed_loss.split_y(packed_loss.pack_y(y, outs[0].shape[0]))
        result, total = {}, 0.0
        for i, (lo, w, z, t) in enumerate(zip(packed_loss.losses, packed_loss.weights, outs,
                                              ys)):
            value = float(lo.loss(z, t))
            result[f"loss_{i}"] = value
            total += w * value
            if lo.task == "classification" and t.ndim == 1:
                result[f"accuracy_{i}"] = float(np.mean(z.argmax(axis=1) == t))
        return {"loss": total, **result}

    def predict(self, X, batch_size: int | None = None, precision: str | None = None):
        """The outputs for ``X`` in evaluation mode, in batches: new arrays (a list of one per
        output; a single array for a one-output model). A model of covered layers
        (:mod:`fastnn.functional.inference`) runs each batch in one compiled call.
        ``precision="bfloat16"``: as :meth:`fastnn.model.Sequential.predict` (float32 models of
        covered layers; an opt-in that changes results)."""
        check_not_fitting(self, "predict")   # not while another thread trains this network
        precision = _inference.request_precision(self, precision)   # None: its own dtype
        if batch_size is None:   # arrays as the plan takes them: one call
            outs = _inference.predict_arrays(self, self._arrays(X), _PREDICT_BATCH, precision)
            if outs is not None:
                return outs[0] if self._single_out else outs
        xs = self._input_list(X)
        bs = _PREDICT_BATCH if batch_size is None else int(batch_size)
        if bs <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        n = xs[0].shape[0]
        with self._predict_lock():
            plan = _inference.plan_for(self, precision)
            if plan is None and precision is not None:
                raise ValueError(f"precision={precision!r} needs a model one-call inference "
                                 f"covers: {_inference.why_not(self)}")
            if plan is not None:   # one compiled call per batch, straight into the outputs
                n_threads = resolve_n_threads(self._n_threads)
                outs = [np.empty((n, w), dtype=self._dtype) for w in self.output_widths]
                for s in range(0, n, bs):
                    if not plan.run_many([np.ascontiguousarray(x[s:s + bs]) for x in xs],
                                         [o[s:s + bs] for o in outs], n_threads):
                        if precision is not None:
                            raise ValueError(f"precision={precision!r}: the plan does not "
                                             f"take these arrays")
                        break   # an array the kernel does not take: the layers do it all
                else:
                    return outs[0] if self._single_out else outs
            modes = [m.training for m in self.modules()]
            self.eval()
            try:
                outs = [np.empty((n, w), dtype=self._dtype) for w in self.output_widths]
                for s in range(0, n, bs):
                    z = self.forward([x[s:s + bs] for x in xs])
                    for o, zi in zip(outs, [z] if self._single_out else z):
                        o[s:s + zi.shape[0]] = zi
            finally:
                for m, mode in zip(self.modules(), modes):
                    m.training = mode
        return outs[0] if self._single_out else outs

    def _arrays(self, X):
        """X's arrays in input order when given as an ndarray (one input), a list or a dict
        by input name; else None."""
        if type(X) is np.ndarray:
            return [X]
        if type(X) is list or type(X) is tuple:
            return list(X)
        if type(X) is dict and len(X) == len(self._inputs):
            try:
                return [X[k] for k in self.input_names]
            except KeyError:
                return None
        return None

    def _packed_loss(self, loss, loss_weights) -> _PackedLoss:
        if isinstance(loss, _PackedLoss):
            return loss
        prev = getattr(self, "loss", None)
        if loss is None and loss_weights is None and isinstance(prev, _PackedLoss):
            return prev                     # continued training: the losses of the last fit
        if loss is None:
            raise ValueError("pass loss= (one per output, or one for all)")
        losses = list(loss) if isinstance(loss, (list, tuple)) else [loss] * len(self._outputs)
        if len(losses) != len(self._outputs):
            raise ValueError(f"one loss per output: {len(self._outputs)} outputs, "
                             f"{len(losses)} losses")
        weights = [1.0] * len(losses) if loss_weights is None else list(loss_weights)
        if len(weights) != len(losses) or not all(
                isinstance(w, numbers.Real) and not isinstance(w, bool) and np.isfinite(w)
                and w >= 0 for w in weights):
            raise ValueError(f"loss_weights must be {len(losses)} finite numbers >= 0, got "
                             f"{loss_weights!r}")
        return _PackedLoss([get_loss(lo) for lo in losses], [float(w) for w in weights],
                           self.output_widths, self._dtype)

    def _pack_x(self, X) -> np.ndarray:
        xs = self._input_list(X)
        return xs[0] if len(xs) == 1 else np.concatenate(xs, axis=1)

    def _unpack_x(self, Xp) -> list[np.ndarray]:
        out, s = [], 0
        for w in self.input_widths:
            out.append(np.ascontiguousarray(Xp[:, s:s + w]))
            s += w
        return out

    # --- config --------------------------------------------------------------------------------
    def get_config(self):
        index = {id(n): i for i, n in enumerate(self._order)}
        layer_index = {id(m): i for i, m in enumerate(self._layers)}
        nodes = [{"layer": None if n.layer is None else layer_index[id(n.layer)],
                  "parents": [index[id(p)] for p in n.parents],
                  "features": n.features, "name": n.name} for n in self._order]
        return {"type": "Model", "layers": [m.get_config() for m in self._layers],
                "nodes": nodes, "inputs": [index[id(n)] for n in self._inputs],
                "outputs": [index[id(n)] for n in self._outputs],
                "single_input": self._single_in, "single_output": self._single_out}

    @classmethod
    def _parameter_shapes(cls, kwargs):
        layers = kwargs.get("layers")
        return _prefixed_shapes(enumerate(layers) if isinstance(layers, list) else None)

    @classmethod
    def _build(cls, kwargs, dtype):
        try:
            layers = [module_from_config(c, dtype) for c in kwargs["layers"]]
            nodes: list[Node] = []
            for spec in kwargs["nodes"]:
                if not all(type(j) is int and 0 <= j < len(nodes) for j in spec["parents"]):
                    raise ValueError(f"node parents {spec['parents']!r} must index earlier "
                                     f"nodes")
                parents = [nodes[j] for j in spec["parents"]]   # parents come first
                if spec["layer"] is None:
                    if parents:
                        raise ValueError("an Input node has no parents")
                    nodes.append(Input(spec["features"], spec["name"]))
                else:
                    if type(spec["layer"]) is not int or not 0 <= spec["layer"] < len(layers):
                        raise ValueError(f"node layer {spec['layer']!r} is not a layer index")
                    layer = layers[spec["layer"]]
                    if not isinstance(layer, Merge) and len(parents) != 1:
                        raise ValueError(f"a {type(layer).__name__} node has one parent, got "
                                         f"{len(parents)}")
                    node = layer(parents if isinstance(layer, Merge) else parents[0])
                    if node.features != spec["features"]:
                        raise ValueError(f"node width {node.features} != {spec['features']}")
                    nodes.append(node)
            for key in ("inputs", "outputs"):
                if not all(type(j) is int and 0 <= j < len(nodes) for j in kwargs[key]):
                    raise ValueError(f"{key} must index nodes")
            ins = [nodes[j] for j in kwargs["inputs"]]
            outs = [nodes[j] for j in kwargs["outputs"]]
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"invalid config for Model: {exc!r}") from None
        return cls(ins[0] if kwargs.get("single_input") and len(ins) == 1 else ins,
                   outs[0] if kwargs.get("single_output") and len(outs) == 1 else outs,
                   dtype=check_float_dtype(dtype))

    def extra_repr(self):
        return (f"inputs={self.input_names}, outputs={len(self._outputs)}, "
                f"nodes={len(self._order)}, layers={len(self._layers)}")

    def __repr__(self):
        return f"Model({self.extra_repr()})"


class _PackedLoss(Loss):
    """The weighted sum of one loss per output, on the outputs' columns side by side (the form
    in which fastnn.training trains a Model). Targets are packed the same way: one column per
    output trained on class labels, the target's columns otherwise."""

    name = "multi_output"
    task = "multi_output"

    def __init__(self, losses: Sequence[Loss], weights: Sequence[float], widths: Sequence[int],
                 dtype=np.float64):
        super().__init__()
        self.losses, self.weights, self.widths = list(losses), list(weights), list(widths)
        self.dtype = np.dtype(dtype)
        self._y_widths: list[int] | None = None

    def _label_output(self, i, t) -> bool:
        return self.losses[i].task in ("classification", "multilabel") and np.ndim(t) == 1

    def pack_y(self, y, n) -> np.ndarray:
        ys = [y] if not isinstance(y, (list, tuple)) and len(self.losses) == 1 else y
        if not isinstance(ys, (list, tuple)) or len(ys) != len(self.losses):
            raise ValueError(f"y: one target array per output ({len(self.losses)})")
        cols, widths = [], []
        for i, t in enumerate(ys):
            t = np.asarray(t)
            if t.shape[:1] != (n,):
                raise ValueError(f"target {i} has {t.shape[:1]} rows, the inputs {n}")
            if t.dtype.kind not in "biuf":
                raise TypeError(f"target {i} must be numeric, got dtype {t.dtype}")
            c = t.reshape(n, -1).astype(np.float64)
            if self._label_output(i, t):
                if not np.all(np.isfinite(c)) or np.any(c != np.round(c)) or (
                        c.size and (c.min() < 0 or c.max() >= self.widths[i])):
                    raise ValueError(f"target {i}: class labels in [0, {self.widths[i]}) "
                                     f"expected")
            cols.append(c)
            widths.append(c.shape[1])
        if self._y_widths is not None and widths != self._y_widths:
            raise ValueError(f"targets of widths {widths}, trained with {self._y_widths}")
        self._y_widths = widths
        yp = np.concatenate(cols, axis=1) if len(cols) > 1 else cols[0]
        return yp.astype(self.dtype, copy=False)    # labels stay exact (< 2^24 classes)

    def split_y(self, yp) -> list[np.ndarray]:
        out, s = [], 0
        for i, w in enumerate(self._y_widths):
            c = yp[:, s:s + w]
            s += w
            if w == 1 and self.losses[i].task in ("classification", "multilabel") and \
                    self.widths[i] > 1:
                out.append(np.rint(c[:, 0]).astype(np.intp))
            else:
                out.append(np.ascontiguousarray(c))
        return out

    def _split_z(self, z) -> list[np.ndarray]:
        out, s = [], 0
        for w in self.widths:
            out.append(np.ascontiguousarray(z[:, s:s + w]))
            s += w
        return out

    def loss(self, z, y) -> float:
        return float(sum(w * lo.loss(zi, yi) for lo, w, zi, yi in
                         zip(self.losses, self.weights, self._split_z(z), self.split_y(y))))

    def loss_and_grad(self, z, y, grad_out=None):
        g = np.empty_like(z) if grad_out is None else grad_out
        total, s = 0.0, 0
        for lo, w, zi, yi in zip(self.losses, self.weights, self._split_z(z), self.split_y(y)):
            value, gi = lo.loss_and_grad(zi, yi)
            total += w * float(value)
            np.multiply(gi, w, out=g[:, s:s + zi.shape[1]])
            s += zi.shape[1]
        return total, g

    def per_sample(self, z, y):
        return sum(w * lo.per_sample(zi, yi) for lo, w, zi, yi in
                   zip(self.losses, self.weights, self._split_z(z), self.split_y(y)))

    def output(self, z):
        return np.concatenate([lo.output(zi) for lo, zi in zip(self.losses, self._split_z(z))],
                              axis=1)

    def __repr__(self):
        return f"_PackedLoss({self.losses!r}, weights={self.weights})"


class _Packed:
    """A Model seen by fastnn.training as a one-input, one-output network: the inputs' columns
    side by side in, the outputs' columns side by side out. Everything else is the model's."""

    def __init__(self, model: Model):
        object.__setattr__(self, "_model", model)

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __setattr__(self, name, value):
        setattr(self._model, name, value)

    def input_features(self):
        return sum(self._model.input_widths)

    def output_features(self, in_features):
        return sum(self._model.output_widths)

    def forward(self, Xp):
        m = self._model
        z = m.forward(m._unpack_x(Xp))
        return z if m._single_out else np.concatenate(z, axis=1)

    def backward(self, grad_output, need_input_grad=True, inplace=False):
        m = self._model
        gs, s = [], 0
        for w in m.output_widths:
            gs.append(np.ascontiguousarray(grad_output[:, s:s + w]))
            s += w
        g = m.backward(gs[0] if m._single_out else gs, need_input_grad, True)
        if not need_input_grad:
            return None
        return g if m._single_in else np.concatenate(g, axis=1)

    def predict(self, Xp, batch_size=None):
        m = self._model
        z = m.predict(m._unpack_x(Xp), batch_size=batch_size)
        return z if m._single_out else np.concatenate(z, axis=1)
