"""Networks: containers that wire modules into a computation graph.

* :class:`Sequential` - a chain ``f_L(...f_2(f_1(x)))`` of any depth, the model class users train
  (``fit``/``evaluate``/``predict``/``predict_proba``).
* :class:`Residual` - a skip connection ``y = x + f(x)``.
* :class:`Parallel` - branches that read the same input, merged by concatenation or sum.

Residual and Parallel are modules themselves, so graphs nest: a Sequential can hold a Residual
whose ``f`` is a Sequential holding a Parallel... Backward visits the boxes in reverse order and
sums the gradients where the graph forks (the chain rule's sum over paths).
"""
from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from fastnn import streaming
from fastnn._threads import check_not_fitting, resolve_n_threads
from fastnn._validation import check_float_array
from fastnn._validation import check_float_dtype as _check_dtype
from fastnn._validation import check_n_threads as _check_n_threads
from fastnn.functional import inference as _inference
from fastnn.init import spawn_seeds
from fastnn.layers import Dense, Dropout, Softmax, Sparsemax
from fastnn.losses import get_loss
from fastnn.module import Module, config_parameter_shapes, module_from_config
from fastnn.module import as_input as _as_input
from fastnn.module import no_forward_error as _no_forward

if TYPE_CHECKING:
    from fastnn.callbacks import Callback
    from fastnn.losses import Loss
    from fastnn.optim import Optimizer
    from fastnn.training import History

__all__ = ["Parallel", "Residual", "Sequential"]

_PREDICT_BATCH = 1024


# Networks holding a predict lock. In a forked child only the forking thread exists, so a lock
# held by another thread (a predict, or a fit, which holds it throughout) would never be released
# there: the child drops them all (recreated lazily; a call of the forking thread still releases
# the object it took).
_LOCKED: "weakref.WeakValueDictionary[int, Sequential]" = weakref.WeakValueDictionary()


def _drop_locks_in_child():
    for model in list(_LOCKED.values()):
        model.__dict__.pop("_predict_lock_", None)
    _LOCKED.clear()


os.register_at_fork(after_in_child=_drop_locks_in_child)


def _infer_dtype(modules, dtype):
    found = {p.data.dtype for m in modules for p in m.parameters()}
    if dtype is not None:
        return _check_dtype(dtype)
    if len(found) > 1:
        raise TypeError("the modules have parameters of both float32 and float64; pass "
                        "dtype=np.float32 or dtype=np.float64 to fix one dtype for the network")
    return found.pop() if found else np.dtype(np.float32)


def _check_unique(modules):
    seen = set()
    for top in modules:
        if not isinstance(top, Module):
            raise TypeError(f"expected fastnn Modules, got {type(top).__name__}")
        for m in top.modules():
            if id(m) in seen:
                raise ValueError(f"{m!r} appears twice in the network; a module caches its own "
                                 "forward pass, so each position needs its own instance")
            seen.add(id(m))


def _seed_unseeded(layers, seed) -> None:
    """Give every Dense and Dropout under ``layers`` built without a seed one derived from
    ``seed`` (see ``Sequential``'s ``seed``); a Dense is re-initialized with it."""
    flat = [m for top in layers for m in top.modules()]
    for m, s in zip(flat, spawn_seeds(seed, len(flat))):
        if isinstance(m, Dense) and m.seed is None:
            m.seed = s
            m.reset_parameters()
        elif isinstance(m, Dropout) and not getattr(m, "_seed_given", True):
            m.seed = s >> 1             # Dropout's seeds are non-negative int64
            m._seed_given = True


class _Container(Module):
    def _set_dtype(self, dtype):
        super()._set_dtype(dtype)
        self._dtype = _check_dtype(dtype)

    @property
    def dtype(self):
        return self._dtype


def _prefixed_shapes(children):
    """The parameter shapes of a container's ``(name, config)`` children, named like
    ``named_parameters`` ("<child>.<name>"); None when any child's are unknown."""
    if children is None:
        return None
    shapes = {}
    for name, config in children:
        sub = config_parameter_shapes(config)
        if sub is None:
            return None
        shapes.update((f"{name}.{k}", v) for k, v in sub.items())
    return shapes


class Sequential(_Container):
    """A chain of modules: ``forward`` runs them in order, ``backward`` in reverse.

    Parameters
    ----------
    *modules : Module
        The layers (a single list or tuple of modules is accepted too).
    dtype : float32, float64 or None
        The network's float dtype, fixed here: parameters are converted to it. None takes the
        modules' dtype (float32 when they have no parameters). Inputs of the other float dtype
        are rejected with a TypeError that says how to convert them.
    n_threads : int or None
        Threads for every kernel call (None: ``omp_get_max_threads()`` at call time).
    seed : int or None
        One seed for the whole network's initialization. Every layer built without a seed of
        its own (``Dense(..., seed=None)``, ``Dropout(..., seed=None)``, at any depth) gets one
        derived from it with :func:`fastnn.init.spawn_seeds` (the i-th module below the network,
        in :meth:`~fastnn.layers.Module.modules` order, gets the i-th seed), stored in the layer's
        ``seed`` and used at once: Dense layers are re-initialized, Dropout layers draw their
        masks from it. Layers given a seed keep it. Two networks built alike with the same seed
        are bitwise equal. None leaves the layers as they are.

    Attributes
    ----------
    loss, optimizer : set by :meth:`fit` (kept for continued training), None before.

    Examples
    --------
    >>> model = Sequential(Dense(784, 256, "relu"), Dense(256, 10))   # doctest: +SKIP
    >>> logits = model.forward(X)                                     # doctest: +SKIP
    >>> model.backward(grad_logits, need_input_grad=False)            # doctest: +SKIP

    Notes
    -----
    ``forward`` returns an array owned by the network and overwritten by the next forward, whatever
    its batch size (that is how a training step avoids allocations); ``predict`` returns a new
    array.
    """

    #: a chain of its layers, run by one-call inference (fastnn.functional.inference)
    _plain_chain = True

    def __init__(self, *modules: Module | Sequence[Module], dtype: DTypeLike | None = None,
                 n_threads: int | None = None, seed: int | None = None) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (list, tuple)):
            modules = tuple(modules[0])
        layers = cast("list[Module]", list(modules))
        _check_unique(layers)   # every item a Module
        self._dtype = _infer_dtype(layers, dtype)
        for i, m in enumerate(layers):
            self._modules[str(i)] = m
        self._layers = layers
        self._set_dtype(self._dtype)
        if seed is not None:
            _seed_unseeded(self._layers, seed)
        self.n_threads = _check_n_threads(n_threads)
        self.train(True)
        self._in_features = self.input_features()
        self._out_features = self.output_features(self._in_features)
        self.loss = None
        self.optimizer = None

    # --- structure -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._layers)

    def __getitem__(self, i: int) -> Module:
        return self._layers[i]

    def input_features(self) -> int | None:
        for m in self._layers:
            w = m.input_features()
            if w is not None:
                return w
        return None

    def output_features(self, in_features: int | None) -> int | None:
        w = in_features
        for m in self._layers:
            w = m.output_features(w)
        return w

    # --- graph -----------------------------------------------------------------------------------
    def _check_input(self, X, contiguous=True) -> np.ndarray:
        """X as a 2-D array of the network's dtype and input width, or raise. With
        ``contiguous=False`` an ndarray is only checked, never copied (predict converts it
        batch by batch)."""
        X = check_float_array(X, "X", ndim=2, dtype=self._dtype, contiguous=contiguous)
        if self._in_features is not None and X.shape[1] != self._in_features:
            raise ValueError(f"X has {X.shape[1]} features but the network expects "
                             f"{self._in_features}")
        return X

    def forward(self, X: ArrayLike) -> np.ndarray:
        """Run the layers on a batch ``X`` of shape (n_samples, n_features); returns the output
        of the last layer (a buffer owned by the network, see the class notes).

        In evaluation mode a network of covered layers (:mod:`fastnn.functional.inference`)
        runs in one compiled call; the modules keep what their backward reads either way."""
        if not self.training:
            with self._predict_lock():
                z = _inference.eval_forward(self, X, resolve_n_threads(self._n_threads))
            if z is not None:
                return z
        X = self._check_input(X)
        for m in self._layers:
            X = m.forward(X)
        return X

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True,
                 inplace: bool = False) -> np.ndarray | None:
        """Backpropagate dL/d output through the last forward; returns dL/d X.

        Parameter gradients are added into ``p.grad`` (call ``zero_grad`` between steps).
        Pass ``need_input_grad=False`` when the input is data (a training step): the first
        dense layer then skips its input-gradient GEMM, and the modules before the first
        parameter are not visited.
        """
        layers = self._layers
        stop = 0
        if not need_input_grad:
            stop = len(layers)
            for i, m in enumerate(layers):
                if m._has_parameters():
                    stop = i
                    break
        g = grad_output
        for i in range(len(layers) - 1, stop - 1, -1):
            # A gradient produced inside the chain is read by nobody else, so the next module may
            # overwrite it; the caller's gradient only when the caller allows it.
            g = layers[i].backward(g, need_input_grad or i > stop,
                                   inplace or g is not grad_output)
        return g if need_input_grad else None

    # --- the model interface (training lives in fastnn.training) -------------------------------
    def fit(self, X: ArrayLike, y: ArrayLike | None = None, loss: str | Loss | None = None,
            optimizer: str | Optimizer | None = None, epochs: int = 10, batch_size: int = 32,
            shuffle: bool = True, validation_data: tuple[ArrayLike, ArrayLike] | None = None,
            validation_split: float = 0.0, callbacks: Sequence[Callback] | None = None,
            verbose: int | str = 1, seed: int | np.random.Generator | None = None,
            lr: float | None = None, on_divergence: str = "raise",
            steps_per_epoch: int | None = None, engine: str | bool = "auto") -> History:
        """Train the network; the arguments are those of :func:`fastnn.training.fit`.

        Returns a :class:`~fastnn.history.History`. The loss and optimizer are kept
        (``self.loss``, ``self.optimizer``), so calling ``fit`` again continues training.
        """
        from fastnn import training
        return training.fit(self, X, y, loss=loss, optimizer=optimizer, epochs=epochs,
                            batch_size=batch_size, shuffle=shuffle,
                            validation_data=validation_data, validation_split=validation_split,
                            callbacks=callbacks, verbose=verbose, seed=seed, lr=lr,
                            on_divergence=on_divergence, steps_per_epoch=steps_per_epoch,
                            engine=engine)

    def partial_fit(self, X, y=None, *, loss=None, optimizer=None, batch_size: int = 32,
                    shuffle: bool = True, validation_data=None, callbacks=None,
                    verbose: int = 0, seed=None, lr=None, on_divergence: str = "raise",
                    steps_per_epoch: int | None = None):
        """One pass over (X, y), keeping the optimizer and its state across calls; see
        :func:`fastnn.training.partial_fit`. Returns a History."""
        from fastnn import training
        return training.partial_fit(
            self, X, y, loss=loss, optimizer=optimizer, batch_size=batch_size, shuffle=shuffle,
            validation_data=validation_data, callbacks=callbacks, verbose=verbose, seed=seed,
            lr=lr, on_divergence=on_divergence, steps_per_epoch=steps_per_epoch)

    def evaluate(self, X: ArrayLike, y: ArrayLike | None = None,
                 loss: str | Loss | None = None,
                 batch_size: int = _PREDICT_BATCH) -> dict[str, float]:
        """Loss and accuracy (R^2 for regression); see :func:`fastnn.training.evaluate`."""
        from fastnn import training
        return training.evaluate(self, X, y, loss=loss, batch_size=batch_size)

    def predict(self, X: ArrayLike, batch_size: int | None = None,
                precision: str | None = None) -> np.ndarray:
        """Network output for ``X`` in evaluation mode, computed in batches; a new array.

        Parameters
        ----------
        X : ndarray (n_samples, n_features) of the network's dtype
        batch_size : int or None
            Rows per forward pass (default 1024): bounds the memory of the work buffers.

        Returns
        -------
        ndarray (n_samples, n_outputs): the last layer's output (logits for a classifier
        trained with a cross-entropy or sparsemax loss; see ``predict_proba``).

        A memmap, a Dask array or a batch source (:mod:`fastnn.streaming`) is read chunk by
        chunk (see also :mod:`fastnn.dask` for a lazy Dask result).

        ``precision="bfloat16"`` (float32 networks whose layers one-call inference covers, see
        :mod:`fastnn.functional.inference`; an opt-in that changes results): the dense and
        maxout products round their weights and inputs to bfloat16 and accumulate in float32
        (relative errors of about 1e-2 of the output's scale instead of 1e-6). None: the
        network's dtype.
        """
        check_not_fitting(self, "predict")  # not while another thread trains this network
        precision = _inference.request_precision(self, precision)   # None: its own dtype
        if type(X) is np.ndarray and batch_size is None:  # a covered network: one call
            out = _inference.predict_array(self, X, _PREDICT_BATCH, precision)
            if out is not None:
                return out
        if not isinstance(X, np.ndarray) or isinstance(X, np.memmap):
            if streaming.is_stream(X):
                if precision is not None:
                    raise ValueError(f"precision={precision!r} takes an array, not a stream")
                return streaming.predict_stream(self, X, batch_size or _PREDICT_BATCH)
        X = self._check_input(X, contiguous=False)
        return self._predict_batches(X, batch_size, np.ascontiguousarray, precision)

    def _predict_batches(self, X, batch_size, convert, precision=None) -> np.ndarray:
        """``predict`` on a validated 2-D ``X`` (any strides, even zero: a broadcast view),
        ``convert(X[start:stop])`` giving each batch as the C-contiguous array of the network's
        dtype that the layers read. Only a batch is ever converted, so memory follows
        ``batch_size``, not ``n_samples``; the output is allocated once. ``precision`` (not
        None: a covered network's plan in that precision, see ``predict``)."""
        if batch_size is None:
            batch_size = _PREDICT_BATCH
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        with self._predict_lock():
            plan = (_inference.plan_for(self) if precision is None
                    else _inference.plan_for(self, precision))
            if plan is None and precision is not None:
                raise ValueError(f"precision={precision!r} needs a network one-call inference "
                                 f"covers: {_inference.why_not(self)}")
            if plan is not None:  # one compiled call per batch, straight into the output
                n_threads = resolve_n_threads(self._n_threads)
                out = np.empty((X.shape[0], plan.n_out), dtype=self._dtype)
                n = X.shape[0]
                for start in range(0, n, batch_size):
                    z = convert(X[start:start + batch_size] if n > batch_size else X)
                    if not plan.run(z, out[start:start + batch_size], n_threads):
                        if precision is not None:
                            raise ValueError(f"precision={precision!r}: the plan does not take "
                                             f"this array")
                        break   # an array the kernel does not take: the layers do it all
                else:
                    return out
            modules = list(self.modules())
            modes = [m.training for m in modules]
            for m in modules:
                m.training = False
            n = X.shape[0]
            try:
                out = None
                for start in range(0, n, batch_size):
                    z = convert(X[start:start + batch_size] if n > batch_size else X)
                    for m in self._layers:
                        z = m.forward(z)
                    if out is None:
                        out = np.empty((n,) + z.shape[1:], dtype=z.dtype)
                    out[start:start + z.shape[0]] = z
                if out is None:  # no rows
                    width = self._out_features if self._out_features is not None else 0
                    out = np.empty((0, width), dtype=self._dtype)
                return out
            finally:
                for m, mode in zip(modules, modes):
                    m.training = mode
                    if n > batch_size:  # the first layers keep a view of X: let it go
                        m._clear_forward_cache()

    def _predict_lock(self):
        """One ``predict`` at a time per network. Its modules compute into shared work buffers
        and predict switches them to evaluation mode and back, so two threads predicting at
        once got each other's rows and could leave the network in evaluation mode. Threads
        that need to predict in parallel should each use their own ``model.copy()``. (``fit``
        and ``predict`` from different threads: a RuntimeError, fastnn/_threads.py; ``fit``
        holds this lock while it runs.)"""
        lock = self.__dict__.get("_predict_lock_")
        if lock is None:  # created lazily, left out of pickles and copies (Module.__getstate__)
            lock = self.__dict__.setdefault("_predict_lock_", threading.RLock())
            _LOCKED[id(self)] = self
        return lock

    def predict_proba(self, X: ArrayLike, batch_size: int | None = None,
                      loss: str | Loss | None = None,
                      precision: str | None = None) -> np.ndarray:
        """Predictions in the output space of the loss: softmax probabilities for cross-entropy,
        sparsemax probabilities for the sparsemax loss, sigmoid for binary cross-entropy, the
        output itself for the squared loss.

        ``loss`` defaults to the loss the model was fitted with; a network ending with a Softmax
        or Sparsemax module already outputs probabilities and needs none. ``precision``: see
        ``predict`` (the output map itself is computed in float32).
        """
        loss = self.loss if loss is None else loss
        if type(X) is np.ndarray and batch_size is None and loss is not None:
            check_not_fitting(self, "predict")
            p = _inference.predict_proba_array(self, X, loss, _PREDICT_BATCH,  # one call
                                               precision)
            if p is not None:
                return p
        z = self.predict(X, batch_size=batch_size, precision=precision)
        if loss is None:
            if self._layers and isinstance(self._layers[-1], (Softmax, Sparsemax)):
                return z
            raise ValueError("predict_proba needs to know the output map: fit the model first, "
                             "or pass loss='cross_entropy' (or 'sparsemax', "
                             "'binary_cross_entropy', 'squared')")
        return get_loss(loss).output(z)

    # --- config and display ----------------------------------------------------------------------
    def get_config(self) -> dict:
        return {"type": "Sequential", "layers": [m.get_config() for m in self._layers]}

    @classmethod
    def _build(cls, kwargs, dtype):
        layers = kwargs.get("layers")
        if not isinstance(layers, list) or set(kwargs) - {"layers"}:
            raise ValueError(f"invalid config for Sequential: {kwargs!r}")
        return cls(*[module_from_config(c, dtype) for c in layers], dtype=dtype)

    @classmethod
    def _parameter_shapes(cls, kwargs):
        layers = kwargs.get("layers")
        return _prefixed_shapes(enumerate(layers) if isinstance(layers, list) else None)

    def __repr__(self):
        rows = []
        width = self._in_features

        def walk(module, name, depth, width):
            out_w = module.output_features(width)
            n_par = module.n_parameters()
            label = "  " * depth + (repr(module) if not module._modules
                                    else type(module).__name__ + _container_note(module))
            rows.append((name, label, "?" if out_w is None else str(out_w),
                         f"{n_par:,}" if n_par or not module._modules else ""))
            if isinstance(module, Parallel):
                for key, child in module._modules.items():
                    walk(child, f"{name}.{key}", depth + 1, width)
            elif isinstance(module, Residual):
                walk(module.module, f"{name}.module", depth + 1, width)
            elif isinstance(module, Sequential):
                w = width
                for key, child in module._modules.items():
                    walk(child, f"{name}.{key}", depth + 1, w)
                    w = child.output_features(w)
            return out_w

        for key, m in self._modules.items():
            width = walk(m, key, 0, width)
        total = self.n_parameters()
        head = ("#", "layer", "out features", "parameters")
        cols = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
        fmt = f"  {{:<{cols[0]}}}  {{:<{cols[1]}}}  {{:>{cols[2]}}}  {{:>{cols[3]}}}"
        title = (f"Sequential(dtype={self._dtype.name}, n_threads={self.n_threads}, "
                 f"mode={'train' if self.training else 'eval'})")
        lines = [title, fmt.format(*head)]
        lines += [fmt.format(*r) for r in rows]
        nbytes = total * self._dtype.itemsize
        lines.append(f"  input features: {'?' if self._in_features is None else self._in_features}"
                     f", parameters: {total:,} ({nbytes / 1024:,.1f} KiB)")
        return "\n".join(lines)


def _container_note(module):
    if isinstance(module, Parallel):
        return f"(merge={module.merge!r})"
    if isinstance(module, Residual):
        return "(y = x + f(x))"
    return ""


class Residual(_Container):
    """Skip connection: ``y = x + f(x)`` (``f`` must keep the width).

    Backward sums the two paths: ``dL/dx = g + f.backward(g)``.
    """

    #: its forward, as one-call inference (fastnn.functional.inference) runs it
    _inference_block = "residual"

    def __init__(self, module: Module, dtype=None):
        super().__init__()
        _check_unique([module])
        self.module = module
        self._modules["module"] = module
        self._dtype = _infer_dtype([module], dtype)
        self._set_dtype(self._dtype)
        self.output_features(module.input_features())

    def input_features(self):
        return self.module.input_features()

    def output_features(self, in_features):
        out = self.module.output_features(in_features)
        if in_features is not None and out is not None and out != in_features:
            raise ValueError(f"Residual needs f to keep the width: f maps {in_features} "
                             f"features to {out}")
        return in_features if in_features is not None else out

    def forward(self, x):
        x = _as_input(x)
        fx = self.module.forward(x)
        y = self._buffer("y", x.shape, x.dtype)
        return np.add(x, fx, out=y)

    def backward(self, grad_output, need_input_grad=True, inplace=False):
        if not need_input_grad:
            self.module.backward(grad_output, False, inplace)
            return None
        # f may overwrite its gradient (saves its layers a temporary), so it gets a copy.
        gcopy = self._buffer("gf", grad_output.shape, grad_output.dtype)
        np.copyto(gcopy, grad_output)
        gf = self.module.backward(gcopy, True, True)
        gx = grad_output if inplace else self._buffer("gx", grad_output.shape,
                                                      grad_output.dtype)
        return np.add(grad_output, gf, out=gx)

    def get_config(self):
        return {"type": "Residual", "module": self.module.get_config()}

    @classmethod
    def _build(cls, kwargs, dtype):
        if set(kwargs) != {"module"}:
            raise ValueError(f"invalid config for Residual: {kwargs!r}")
        return cls(module_from_config(kwargs["module"], dtype), dtype=dtype)

    @classmethod
    def _parameter_shapes(cls, kwargs):
        return _prefixed_shapes([("module", kwargs.get("module"))])

    def extra_repr(self):
        return repr(self.module)


class Parallel(_Container):
    """Branches reading the same input, merged: ``concat([f_1(x), ..., f_k(x)])`` along the
    features, or ``f_1(x) + ... + f_k(x)`` (``merge="sum"``, equal widths).

    Backward gives each branch its part of the gradient (its columns for concat, all of it for
    sum) and sums the branches' input gradients.
    """

    #: its forward, as one-call inference (fastnn.functional.inference) runs it
    _inference_block = "parallel"

    def __init__(self, *branches, merge: str = "concat", dtype=None):
        super().__init__()
        if len(branches) == 1 and isinstance(branches[0], (list, tuple)):
            branches = tuple(branches[0])
        if not branches:
            raise ValueError("Parallel needs at least one branch")
        if merge not in ("concat", "sum"):
            raise ValueError(f"merge must be 'concat' or 'sum', got {merge!r}")
        _check_unique(branches)
        self.merge = merge
        self.branches = list(branches)
        for i, b in enumerate(branches):
            self._modules[str(i)] = b
        self._dtype = _infer_dtype(branches, dtype)
        self._set_dtype(self._dtype)
        self.output_features(self.input_features())
        self._widths = None

    def input_features(self):
        widths = {b.input_features() for b in self.branches} - {None}
        if len(widths) > 1:
            raise ValueError(f"the branches of Parallel expect different input widths {widths}")
        return widths.pop() if widths else None

    def output_features(self, in_features):
        outs = [b.output_features(in_features) for b in self.branches]
        if any(o is None for o in outs):
            return None
        if self.merge == "sum":
            if len(set(outs)) > 1:
                raise ValueError(f"merge='sum' needs branches of equal width, got {outs}")
            return outs[0]
        return sum(outs)

    def forward(self, x):
        x = _as_input(x)
        outs = [b.forward(x) for b in self.branches]
        n = x.shape[0]
        if self.merge == "sum":
            y = self._buffer("y", outs[0].shape, x.dtype, avoid=x)
            np.copyto(y, outs[0])
            for o in outs[1:]:
                np.add(y, o, out=y)
        else:
            widths = [o.shape[1] for o in outs]
            self._widths = widths
            y = self._buffer("y", (n, sum(widths)), x.dtype, avoid=x)
            start = 0
            for o, w in zip(outs, widths):
                y[:, start:start + w] = o
                start += w
        return y

    def backward(self, grad_output, need_input_grad=True, inplace=False):
        if self.merge == "concat" and self._widths is None:
            raise _no_forward(self)
        gx = None
        start = 0
        for i, b in enumerate(self.branches):
            if self.merge == "sum":
                if inplace and i == len(self.branches) - 1:
                    g = grad_output
                else:  # each branch may overwrite its gradient: give it its own copy
                    g = self._buffer(f"g{i}", grad_output.shape, grad_output.dtype)
                    np.copyto(g, grad_output)
                own = True
            else:
                w = self._widths[i]
                g = self._buffer(f"g{i}", (grad_output.shape[0], w), grad_output.dtype)
                np.copyto(g, grad_output[:, start:start + w])
                start += w
                own = True
            gb = b.backward(g, need_input_grad, own)
            if need_input_grad:
                if gx is None:
                    gx = self._buffer("gx", gb.shape, gb.dtype)
                    np.copyto(gx, gb)
                else:
                    np.add(gx, gb, out=gx)
        return gx

    def get_config(self):
        return {"type": "Parallel", "branches": [b.get_config() for b in self.branches],
                "merge": self.merge}

    @classmethod
    def _build(cls, kwargs, dtype):
        if set(kwargs) != {"branches", "merge"} or not isinstance(kwargs["branches"], list):
            raise ValueError(f"invalid config for Parallel: {kwargs!r}")
        return cls(*[module_from_config(c, dtype) for c in kwargs["branches"]],
                   merge=kwargs["merge"], dtype=dtype)

    @classmethod
    def _parameter_shapes(cls, kwargs):
        branches = kwargs.get("branches")
        return _prefixed_shapes(enumerate(branches) if isinstance(branches, list) else None)

    def extra_repr(self):
        inner = ", ".join(repr(b) for b in self.branches)
        return f"{inner}, merge={self.merge!r}"
