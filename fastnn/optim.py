"""Optimizers: SGD (momentum, Nesterov), Adagrad, RMSprop, Adam.

PyTorch's shape: an optimizer holds ``param_groups`` (a list of dicts: ``"params"`` and the
hyperparameters) and per-parameter state created at the first ``step()``; ``zero_grad()``,
``state_dict()`` and ``load_state_dict()`` work as in ``torch.optim``.

What differs, and why:

* One step is one compiled call per parameter group. Each group's state lives in flat buffers
  (one per state name, e.g. Adam's ``exp_avg`` and ``exp_avg_sq``); ``optimizer.state[p]`` hands
  out views into them. The call applies, for every element of every parameter of the group, in
  one pass and without temporaries: the L2 and L1 terms, the state update, the parameter update
  and the proximal L1 step. A small network's step costs microseconds instead of the dozens of
  NumPy calls (and their temporaries) per parameter of a ufunc implementation.
* Regularization follows the lecture: ``weight_decay`` (L2, the gradient gains
  ``weight_decay * w``, i.e. the penalty ``weight_decay / 2 * ||W||^2``) and ``l1`` (the penalty
  ``l1 * ||W||_1``) apply only to parameters whose ``regularize`` flag is True (weights, not
  biases). With ``l1_proximal=True`` the L1 term is applied as a proximal soft-threshold step
  after the update instead of a subgradient, which sets small weights to exact zeros; for the
  adaptive methods the threshold uses each coordinate's own step size (``lr * l1 / denom``, the
  composite mirror-descent step of Duchi et al., 2011).
* ``decay`` is the Keras learning-rate decay of the lecture's example: step ``t`` (0 for the first
  step) uses ``lr / (1 + decay * t)``; every optimizer takes it.
* Tiny state values are flushed to exact zeros in the kernel (see fastnn/_kernels/optim.pyx):
  the moments of rarely active inputs otherwise decay into subnormal floats, which halve the
  throughput of x86 arithmetic; the effect on an update is below rounding. The process's
  floating-point mode is left alone.
* Hyperparameters are checked against the parameters' dtype, because the kernels compute in
  it: a value that overflows it (``lr=1e39``, ``momentum=1e39``, Adam's first step size
  ``lr / (1 - beta1)`` on float32) or an ``eps`` so small that the flush of tiny second
  moments (below) blows a step up (``eps=0`` or ``1e-46`` on float32: 0/0 = NaN; the bound is
  ``sqrt(tiny / (1 - beta2))``, 3.4e-18 for float32 Adam) is a ValueError when the optimizer
  is built, loaded, its ``lr`` set, or its first step taken - before any write.
  (A group's dict edited by hand is checked at the next plan build, not at every step.)
* Every parameter of the optimizer is updated at every step (its ``grad`` must be an array;
  fastnn's modules always give one). Parameters keep their arrays and dtypes: updates are in
  place, and hyperparameters are Python floats (NumPy 2 would promote a float32 array times a
  ``np.float64`` scalar to float64).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from fastnn._kernels.optim import UpdatePlan
from fastnn._threads import check_n_threads, resolve_n_threads
from fastnn.parameter import Parameter

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "OPTIMIZERS"]


def _check_float(value, what: str, *, low=0.0, high=None, low_open=False, high_open=True):
    """Validate a hyperparameter; return it as a Python float (never a NumPy scalar)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {what}: {value!r} (expected a number)")
    v = float(value)
    bad = not np.isfinite(v) or (v <= low if low_open else v < low)
    if high is not None:
        bad = bad or (v >= high if high_open else v > high)
    if bad:
        lo = f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f" and {'<' if high_open else '<='} {high:g}"
        raise ValueError(f"Invalid {what}: {value} (expected a finite number {lo}{hi})")
    return v


def _params_dtype(params):
    """The float dtype of the first parameter (None when there is none yet)."""
    d = getattr(params[0], "data", None) if params else None
    if isinstance(d, np.ndarray) and d.dtype in (np.float32, np.float64):
        return d.dtype
    return None


def _check_bool(value, what: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"Invalid {what}: {value!r} (expected True or False)")
    return bool(value)


class _GroupState:
    """Internal state of one parameter group: step count, flat buffers, compiled plan."""

    __slots__ = ("step", "plan", "names", "buffers", "offsets", "params", "shapes")

    def __init__(self):
        self.step = 0          # steps taken so far
        self.plan = None       # UpdatePlan, built at the first step
        self.names = ()        # state buffer names, in the order the kernel takes them
        self.buffers = {}      # name -> flat 1-D array
        self.offsets = ()      # parameter i owns [offsets[i], offsets[i + 1]) of each buffer
        self.params = ()       # the parameters the buffers were laid out for
        self.shapes = ()       # and their shapes then

    def views(self):
        """{param: {name: view}} for the parameters the buffers were laid out for."""
        out = {}
        for i, p in enumerate(self.params):
            a, b = self.offsets[i], self.offsets[i + 1]
            out[p] = {name: self.buffers[name][a:b].reshape(self.shapes[i])
                      for name in self.names}
        return out

    # Pickling (joblib/Dask workers send fitted models back): the compiled plan holds raw
    # views of the arrays, so it is left out and rebuilt from the buffers at the next step.
    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__ if k != "plan"}

    def __setstate__(self, state):
        self.plan = None
        for k, v in state.items():
            setattr(self, k, v)


class Optimizer:
    """Base class: parameter groups, lazily created state, step / zero_grad / state_dict.

    Parameters
    ----------
    params : iterable of Parameter, or iterable of dict
        The parameters to optimize, or groups ``{"params": [...], "lr": ..., ...}`` whose
        missing hyperparameters are taken from ``defaults``.
    defaults : dict
        Default hyperparameters of every group.
    n_threads : int or None
        Threads for the update kernels (None: ``omp_get_max_threads()`` at each step). Groups
        below a measured size (``PARALLEL_MIN_WORK`` in fastnn/_kernels/optim.pyx) always run
        serially; results are identical for any thread count.

    Attributes
    ----------
    param_groups : list of dict
    defaults : dict
    state : dict
        ``{param: {"step": int, <buffer name>: ndarray view}}`` for the parameters that have
        stepped; the arrays are live views of the optimizer's buffers.
    """

    def __init__(self, params, defaults: dict, *, n_threads=None):
        self.defaults = dict(defaults)
        self.n_threads = n_threads
        if n_threads is not None:
            check_n_threads(n_threads)  # validate early
        self.param_groups: list[dict] = []
        self._group_states: list[_GroupState] = []
        if isinstance(params, (Parameter, np.ndarray)):
            raise TypeError("params must be an iterable of Parameters or of dicts, got a single "
                            f"{type(params).__name__}; wrap it in a list")
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    # --- groups and hyperparameters --------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """Add a group ``{"params": [...], <hyperparameter>: value, ...}``."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        if params is None:
            raise ValueError("param group has no 'params' entry")
        params = [params] if isinstance(params, Parameter) else list(params)
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"optimizer can only optimize fastnn.Parameter objects, got "
                                f"{type(p).__name__}")
        if len(set(map(id, params))) != len(params):
            raise ValueError("a parameter appears twice in one parameter group")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"unknown hyperparameters {sorted(unknown)} for "
                             f"{type(self).__name__}; expected some of {sorted(self.defaults)}")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        group["params"] = params
        self._check_group(group)
        self._check_dtype_range(group, len(self.param_groups))
        self.param_groups.append(group)
        self._group_states.append(_GroupState())

    def _check_group(self, group: dict) -> None:
        """Validate (and normalize to Python floats) the hyperparameters shared by all."""
        group["lr"] = _check_float(group["lr"], "learning rate")
        group["decay"] = _check_float(group["decay"], "decay")
        group["weight_decay"] = _check_float(group["weight_decay"], "weight_decay value")
        group["l1"] = _check_float(group["l1"], "l1 value")
        group["l1_proximal"] = _check_bool(group["l1_proximal"], "l1_proximal")

    def _kernel_values(self, group: dict) -> list:
        """(name, value, kind) of the hyperparameters the update kernel receives in the
        parameters' dtype. kind "scale": must not overflow it; ("eps", decay): the eps of a
        second-moment state that decays by ``decay`` per step (see _check_dtype_range)."""
        return [("learning rate", group["lr"], "scale"),
                ("weight_decay value", group["weight_decay"], "scale"),
                ("l1 value", group["l1"], "scale")]

    def _check_dtype_range(self, group: dict, gi: int, dtype=None) -> None:
        """Refuse hyperparameters that are valid Python floats but not in the parameters'
        dtype, before anything is written; a no-op while that dtype is unknown (the first step
        checks then).

        Overflow: lr=1e39 is inf in float32. eps: the kernels flush a second moment below the
        smallest normal number ``tiny`` to 0 (fastnn/_kernels/optim.pyx), which happens when
        ``|g| < sqrt(tiny / (1 - decay))``; the coordinate then moves by ``lr * g / eps``
        (0/0 = NaN for eps=0, 1e-46 or any eps that rounds to 0). An eps of at least
        ``sqrt(tiny / (1 - decay))`` keeps that step at most about ``lr``, the size of the
        optimizer's own steps (measured with gradients from 1e-25 to 1e-12 at the bound: at
        most 1.2 lr for Adam, 1 lr for Adagrad, 10 lr for RMSprop, whose first step is 10 lr
        anyway; 8e14 lr for float32 Adam with eps=1.2e-38 before): 3.4e-18 for float32 Adam's
        default beta2 = 0.999, 1.1e-19 for Adagrad, ~1e-153 for float64.
        """
        dtype = dtype if dtype is not None else _params_dtype(group["params"])
        if dtype is None:
            return
        info = np.finfo(dtype)
        largest, tiny = float(info.max), float(info.tiny)  # Python floats: no cast warnings
        where = f"{dtype} parameters (group {gi})"
        for name, value, kind in self._kernel_values(group):
            if kind == "scale":
                if not abs(value) <= largest:
                    raise ValueError(f"Invalid {name}: {value:g} overflows {dtype} (largest "
                                     f"{largest:.4g}) for {where}")
                continue
            decay = kind[1]
            low = math.sqrt(tiny / (1.0 - decay)) if decay < 1.0 else tiny
            if not value >= low:
                raise ValueError(
                    f"Invalid {name}: {value:g} for {where} (expected >= {low:.3g} = "
                    f"sqrt(smallest normal {dtype} / (1 - {decay:g}))): the update flushes "
                    f"second moments below the smallest normal number to 0, and a smaller eps "
                    f"turns the gradient of such a coordinate into a step far larger than lr "
                    f"(0/0 = NaN when eps rounds to 0)")

    @property
    def lr(self) -> float:
        """The base learning rate (of the first group); setting it sets every group's."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value) -> None:
        value = _check_float(value, "learning rate")
        for gi, group in enumerate(self.param_groups):
            self._check_dtype_range(dict(group, lr=value), gi)
        for group in self.param_groups:
            group["lr"] = value

    def get_lr(self) -> list[float]:
        """The learning rate each group's next step will use (after ``decay``)."""
        return [self._effective_lr(g, s.step)
                for g, s in zip(self.param_groups, self._group_states)]

    @staticmethod
    def _effective_lr(group: dict, t: int) -> float:
        decay = group["decay"]
        return group["lr"] / (1.0 + decay * t) if decay else group["lr"]

    @staticmethod
    def _penalties(group: dict):
        """(weight_decay, l1 subgradient, l1 proximal) coefficients for the kernel."""
        l1 = group["l1"]
        if group["l1_proximal"]:
            return group["weight_decay"], 0.0, l1
        return group["weight_decay"], l1, 0.0

    # --- the update -------------------------------------------------------------------------
    def _state_names(self, group: dict) -> tuple:
        """Names of the per-parameter state buffers the group needs, in kernel order."""
        return ()

    def _state_init(self, name: str, group: dict) -> float:
        return 0.0

    def _update(self, plan: UpdatePlan, group: dict, t: int, n_threads: int) -> None:
        raise NotImplementedError

    def step(self, closure=None):
        """Update every parameter from its ``grad``; return ``closure()`` if given."""
        loss = None
        if closure is not None:
            loss = closure()
        n_threads = resolve_n_threads(self.n_threads)
        for group, gs in zip(self.param_groups, self._group_states):
            plan = gs.plan
            if (plan is None or not plan.matches(group["params"])
                    or gs.names != self._state_names(group)):
                plan = self._prepare(group, gs)
            self._update(plan, group, gs.step, n_threads)
            gs.step += 1
            for p in group["params"]:
                p._version += 1
        return loss

    def _params_finite(self) -> bool:
        """True when no parameter of the optimizer holds NaN or inf (one compiled pass per
        group; ``fit`` calls it once per epoch)."""
        for group, gs in zip(self.param_groups, self._group_states):
            plan = gs.plan
            if plan is not None and plan.matches(group["params"]):
                if not plan.all_finite():
                    return False
            elif not all(np.isfinite(p.data).all() for p in group["params"]):
                return False
        return True

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero (deferred: see ``Parameter.grad``)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.zero_grad()

    def _prepare(self, group: dict, gs: _GroupState, loaded=None) -> UpdatePlan:
        """Check the group's arrays, (re)lay out its state buffers, build its plan.

        Existing state is kept for parameters still in the group; ``loaded`` maps a parameter
        to ``{name: array}`` to install instead (load_state_dict).
        """
        params = group["params"]
        gi = self._group_states.index(gs)
        dtype = None
        for i, p in enumerate(params):
            label = f"parameter {i} ({p.name or 'unnamed'}) of group {gi}"
            d, g = p.data, p.grad
            if not isinstance(d, np.ndarray) or d.dtype not in (np.float32, np.float64):
                raise TypeError(f"{label}: data must be a float32 or float64 ndarray, got "
                                f"{getattr(d, 'dtype', type(d).__name__)}")
            if g is None:
                raise ValueError(f"{label} has no gradient array (grad is None); every "
                                 f"parameter of an optimizer is updated at every step")
            if not isinstance(g, np.ndarray) or g.shape != d.shape or g.dtype != d.dtype:
                raise ValueError(f"{label}: grad must be an ndarray of shape {d.shape} and "
                                 f"dtype {d.dtype}, got {getattr(g, 'shape', None)} "
                                 f"{getattr(g, 'dtype', type(g).__name__)}")
            if not (d.flags.c_contiguous and g.flags.c_contiguous):
                raise ValueError(f"{label}: data and grad must be C-contiguous")
            if not d.flags.writeable:
                raise ValueError(f"{label}: data is read-only")
            if d.size and np.may_share_memory(d, g):
                raise ValueError(f"{label}: data and grad share memory")
            if dtype is None:
                dtype = d.dtype
            elif d.dtype != dtype:
                raise TypeError(f"group {gi} mixes {dtype} and {d.dtype} parameters; put each "
                                f"dtype in its own parameter group")
        if dtype is not None:
            self._check_dtype_range(group, gi, dtype)
        names = self._state_names(group)
        old = gs.views()
        sizes = [p.data.size for p in params]
        offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).tolist()
        buffers = {}
        for name in names:
            buffers[name] = np.full(offsets[-1], self._state_init(name, group),
                                    dtype=dtype or np.float64)
        for i, p in enumerate(params):
            src = (loaded or {}).get(p) or old.get(p) or {}
            for name in names:
                if name not in src:
                    continue
                a = np.asarray(src[name])
                if a.shape != p.data.shape:
                    raise ValueError(f"state {name!r} of parameter {i} ({p.name or 'unnamed'}) "
                                     f"of group {gi} has shape {a.shape}, but the parameter has "
                                     f"shape {p.data.shape}")
                buffers[name][offsets[i]:offsets[i + 1]] = a.ravel()
        gs.names = names
        gs.buffers = buffers
        gs.offsets = tuple(offsets)
        gs.params = tuple(params)
        gs.shapes = tuple(p.data.shape for p in params)
        gs.plan = UpdatePlan(params, [buffers[name] for name in names])
        return gs.plan

    # --- state ------------------------------------------------------------------------------
    @property
    def state(self) -> dict:
        out = {}
        for gs in self._group_states:
            for p, entry in gs.views().items():
                out[p] = {"step": gs.step, **entry}
        return out

    def state_dict(self) -> dict:
        """The optimizer's state as plain data: numbers, strings, lists and ndarray copies.

        ``{"optimizer": <class name>, "state": {index: {"step": int, name: ndarray}},
        "param_groups": [{<hyperparameters>, "params": [index, ...]}]}``, parameters numbered
        in group order (as in PyTorch). Nothing needs pickle to be saved.
        """
        state = {}
        groups = []
        index = 0
        for group, gs in zip(self.param_groups, self._group_states):
            views = gs.views()
            ids = []
            for p in group["params"]:
                if p in views:
                    state[index] = {"step": int(gs.step),
                                    **{k: v.copy() for k, v in views[p].items()}}
                ids.append(index)
                index += 1
            g = {k: (list(v) if isinstance(v, tuple) else v)
                 for k, v in group.items() if k != "params"}
            g["params"] = ids
            groups.append(g)
        return {"optimizer": type(self).__name__, "state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyperparameters, step counts and state saved by ``state_dict()``.

        The optimizer must have the same groups of parameters of the same shapes. State keys
        may be ints or their strings (as after a JSON round trip).
        """
        name = state_dict.get("optimizer", type(self).__name__)
        if name != type(self).__name__:
            raise ValueError(f"state_dict is for a {name} optimizer, not {type(self).__name__}")
        groups = state_dict.get("param_groups")
        if not isinstance(groups, (list, tuple)) or len(groups) != len(self.param_groups):
            got = len(groups) if isinstance(groups, (list, tuple)) else groups
            raise ValueError(f"state_dict has {got} parameter groups, the optimizer has "
                             f"{len(self.param_groups)}")
        saved_state = {int(k): v for k, v in state_dict.get("state", {}).items()}
        new_groups = []
        for gi, (group, saved) in enumerate(zip(self.param_groups, groups)):
            ids = [int(i) for i in saved["params"]]
            if len(ids) != len(group["params"]):
                raise ValueError(f"group {gi} of the state_dict has {len(ids)} parameters, the "
                                 f"optimizer's has {len(group['params'])}")
            new = dict(group)
            for k, v in saved.items():
                if k == "params":
                    continue
                if k not in self.defaults:
                    raise ValueError(f"unknown hyperparameter {k!r} in group {gi} of the "
                                     f"state_dict")
                new[k] = tuple(v) if isinstance(self.defaults[k], tuple) else v
            self._check_group(new)
            self._check_dtype_range(new, gi)
            new_groups.append((new, ids))
        # all checks before any change
        plans = []
        for gi, ((new, ids), gs) in enumerate(zip(new_groups, self._group_states)):
            entries = [saved_state.get(i) for i in ids]
            if all(e is None for e in entries):
                plans.append((None, 0))
                continue
            if any(e is None for e in entries):
                raise ValueError(f"state_dict has state for only some parameters of group {gi}")
            steps = {int(e.get("step", 0)) for e in entries}
            if len(steps) != 1:
                raise ValueError(f"parameters of group {gi} have different step counts "
                                 f"{sorted(steps)} in the state_dict")
            names = self._state_names(new)
            loaded = {}
            for p, e, i in zip(new["params"], entries, ids):
                missing = [n for n in names if n not in e]
                if missing:
                    raise ValueError(f"state of parameter {i} lacks {missing}")
                loaded[p] = {n: e[n] for n in names}
            plans.append((loaded, steps.pop()))
        for gi, ((new, ids), (loaded, step)) in enumerate(zip(new_groups, plans)):
            gs = self._group_states[gi]
            tmp = _GroupState()
            # build into a temporary so a shape error leaves the optimizer unchanged
            self._group_states[gi] = tmp
            try:
                if loaded is not None:
                    self._prepare(new, tmp, loaded=loaded)
                tmp.step = step
            except Exception:
                self._group_states[gi] = gs
                raise
            self.param_groups[gi].clear()
            self.param_groups[gi].update(new)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(group):
                if k != "params":
                    lines.append(f"    {k}: {group[k]}")
        lines.append(")")
        return "\n".join(lines)


class SGD(Optimizer):
    """Mini-batch stochastic gradient descent, with momentum and Nesterov momentum.

    With ``g = grad + weight_decay * w + l1 * sign(w)`` (penalties on weights only) and the
    learning rate ``lr_t = lr / (1 + decay * t)`` of step ``t`` (Keras' decay, t = 0, 1, ...)::

        b = momentum * b + g                  (b = 0 before the first step)
        w = w - lr_t * (g + momentum * b)     Nesterov (Sutskever et al., 2013)
        w = w - lr_t * b                      momentum
        w = w - lr_t * g                      momentum = 0

    This is PyTorch's formulation (no dampening); Keras keeps ``v = -lr * b`` instead, which is
    the same update while ``lr`` is constant. With ``l1_proximal`` the L1 term is the
    soft-threshold ``w = sign(w) * max(|w| - lr_t * l1, 0)`` after the update.

    Parameters
    ----------
    params : iterable of Parameter or of dict (parameter groups)
    lr : float, default 0.01
    momentum : float, default 0
    nesterov : bool, default False
        Requires ``momentum > 0``.
    decay : float, default 0
    weight_decay : float, default 0
        L2 coefficient (gradient ``+ weight_decay * w``) for parameters with ``regularize``.
    l1 : float, default 0
        L1 coefficient for parameters with ``regularize``.
    l1_proximal : bool, default False
    n_threads : int or None

    References
    ----------
    Nesterov, Y. (1983). A method for solving the convex programming problem with convergence
    rate O(1/k^2). Soviet Mathematics Doklady 27, 372-376.

    Sutskever, I., Martens, J., Dahl, G. and Hinton, G. (2013). On the importance of
    initialization and momentum in deep learning. ICML, PMLR 28(3), 1139-1147.
    """

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False, decay=0.0,
                 weight_decay=0.0, l1=0.0, l1_proximal=False, *, n_threads=None):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, decay=decay,
                        weight_decay=weight_decay, l1=l1, l1_proximal=l1_proximal)
        super().__init__(params, defaults, n_threads=n_threads)

    def _check_group(self, group):
        super()._check_group(group)
        group["momentum"] = _check_float(group["momentum"], "momentum value")
        group["nesterov"] = _check_bool(group["nesterov"], "nesterov")
        if group["nesterov"] and group["momentum"] == 0:
            raise ValueError("Nesterov momentum requires a momentum > 0")

    def _kernel_values(self, group):
        return super()._kernel_values(group) + [("momentum value", group["momentum"], "scale")]

    def _state_names(self, group):
        return ("momentum_buffer",) if group["momentum"] else ()

    def _update(self, plan, group, t, n_threads):
        wd, l1, l1p = self._penalties(group)
        plan.sgd(self._effective_lr(group, t), group["momentum"], group["nesterov"], wd, l1,
                 l1p, n_threads)


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011): per-coordinate steps scaled by the accumulated squares.

    ::

        s = s + g * g                       (s = initial_accumulator_value before step 0)
        w = w - lr_t * g / (sqrt(s) + eps)

    with ``g`` and ``lr_t`` as in :class:`SGD` (``decay`` is PyTorch's ``lr_decay``). eps is
    outside the square root as in PyTorch (the lecture writes ``sqrt(s + eps)``; both only
    guard against division by zero). ``l1_proximal`` thresholds at ``lr_t * l1 / (sqrt(s) + eps)``.

    Parameters
    ----------
    params, lr=0.01, eps=1e-10, initial_accumulator_value=0, decay=0, weight_decay=0, l1=0,
    l1_proximal=False, n_threads=None

    References
    ----------
    Duchi, J., Hazan, E. and Singer, Y. (2011). Adaptive subgradient methods for online learning
    and stochastic optimization. JMLR 12, 2121-2159.
    """

    def __init__(self, params, lr=0.01, eps=1e-10, initial_accumulator_value=0.0, decay=0.0,
                 weight_decay=0.0, l1=0.0, l1_proximal=False, *, n_threads=None):
        defaults = dict(lr=lr, eps=eps, initial_accumulator_value=initial_accumulator_value,
                        decay=decay, weight_decay=weight_decay, l1=l1, l1_proximal=l1_proximal)
        super().__init__(params, defaults, n_threads=n_threads)

    def _check_group(self, group):
        super()._check_group(group)
        group["eps"] = _check_float(group["eps"], "epsilon value")
        group["initial_accumulator_value"] = _check_float(group["initial_accumulator_value"],
                                                          "initial_accumulator_value")

    def _kernel_values(self, group):
        return super()._kernel_values(group) + [
            ("epsilon value", group["eps"], ("eps", 0.0)),
            ("initial_accumulator_value", group["initial_accumulator_value"], "scale")]

    def _state_names(self, group):
        return ("sum",)

    def _state_init(self, name, group):
        return group["initial_accumulator_value"]

    def _update(self, plan, group, t, n_threads):
        wd, l1, l1p = self._penalties(group)
        plan.adagrad(self._effective_lr(group, t), group["eps"], wd, l1, l1p, n_threads)


class RMSprop(Optimizer):
    """RMSprop (Tieleman and Hinton, 2012): steps scaled by a moving average of squares.

    ::

        v = alpha * v + (1 - alpha) * g * g
        b = momentum * b + g / (sqrt(v) + eps);  w = w - lr_t * b     (momentum > 0)
        w = w - lr_t * g / (sqrt(v) + eps)                            (momentum = 0)

    with ``g`` and ``lr_t`` as in :class:`SGD`; PyTorch's formulation (eps outside the root).

    Parameters
    ----------
    params, lr=0.01, alpha=0.99, eps=1e-8, momentum=0, decay=0, weight_decay=0, l1=0,
    l1_proximal=False, n_threads=None

    References
    ----------
    Tieleman, T. and Hinton, G. (2012). Lecture 6.5, rmsprop: divide the gradient by a running
    average of its recent magnitude. Coursera, Neural Networks for Machine Learning.
    """

    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, decay=0.0,
                 weight_decay=0.0, l1=0.0, l1_proximal=False, *, n_threads=None):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum, decay=decay,
                        weight_decay=weight_decay, l1=l1, l1_proximal=l1_proximal)
        super().__init__(params, defaults, n_threads=n_threads)

    def _check_group(self, group):
        super()._check_group(group)
        group["alpha"] = _check_float(group["alpha"], "alpha value", high=1.0, high_open=False)
        group["eps"] = _check_float(group["eps"], "epsilon value")
        group["momentum"] = _check_float(group["momentum"], "momentum value")

    def _kernel_values(self, group):
        return super()._kernel_values(group) + [
            ("epsilon value", group["eps"], ("eps", group["alpha"])),
            ("momentum value", group["momentum"], "scale")]

    def _state_names(self, group):
        return ("square_avg", "momentum_buffer") if group["momentum"] else ("square_avg",)

    def _update(self, plan, group, t, n_threads):
        wd, l1, l1p = self._penalties(group)
        plan.rmsprop(self._effective_lr(group, t), group["alpha"], group["eps"],
                     group["momentum"], wd, l1, l1p, n_threads)


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015): RMSprop's scaling with momentum, bias-corrected.

    At step ``t`` (1, 2, ...), with ``g`` as in :class:`SGD` (L2 added to the gradient, not
    AdamW's decoupled decay)::

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        w = w - lr_t / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    PyTorch's formulation. ``l1_proximal`` thresholds at ``lr_t * l1 / denom`` with ``denom``
    the bracket above.

    Parameters
    ----------
    params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, decay=0, weight_decay=0, l1=0,
    l1_proximal=False, n_threads=None

    References
    ----------
    Kingma, D. P. and Ba, J. (2015). Adam: a method for stochastic optimization. ICLR.
    arXiv:1412.6980.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, decay=0.0,
                 weight_decay=0.0, l1=0.0, l1_proximal=False, *, n_threads=None):
        betas = tuple(betas) if isinstance(betas, (tuple, list)) else betas
        defaults = dict(lr=lr, betas=betas, eps=eps, decay=decay,
                        weight_decay=weight_decay, l1=l1, l1_proximal=l1_proximal)
        super().__init__(params, defaults, n_threads=n_threads)

    def _check_group(self, group):
        super()._check_group(group)
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Invalid betas: {betas!r} (expected a pair (beta1, beta2))")
        b1 = _check_float(betas[0], "beta parameter at index 0", high=1.0)
        b2 = _check_float(betas[1], "beta parameter at index 1", high=1.0)
        group["betas"] = (b1, b2)
        group["eps"] = _check_float(group["eps"], "epsilon value")

    def _kernel_values(self, group):
        # the first step's size lr / (1 - beta1) is the largest (bias correction, decay)
        step = group["lr"] / (1.0 - group["betas"][0])
        return super()._kernel_values(group) + [
            ("epsilon value", group["eps"], ("eps", group["betas"][1])),
            ("learning rate (first step size lr / (1 - beta1))", step, "scale")]

    def _state_names(self, group):
        return ("exp_avg", "exp_avg_sq")

    def _update(self, plan, group, t, n_threads):
        wd, l1, l1p = self._penalties(group)
        beta1, beta2 = group["betas"]
        k = t + 1
        plan.adam(self._effective_lr(group, t), beta1, beta2, group["eps"],
                  1.0 - beta1 ** k, 1.0 - beta2 ** k, wd, l1, l1p, n_threads)


#: The optimizers by name, the one vocabulary that ``fit(optimizer="...")``, the command line
#: and the search helpers read.
OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adagrad": Adagrad,
                                          "rmsprop": RMSprop}
