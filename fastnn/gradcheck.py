"""Gradient checking: backpropagation against central finite differences (the lecture's recipe).

    dL/dθ_i  ≈  (L(θ + ε e_i) - L(θ - ε e_i)) / (2ε)

Always in float64: a float32 network is checked through a float64 copy of it (same architecture,
weights upcast exactly), because float32 finite differences carry errors of ~1e-3 whatever ε.
The model passed in is never modified.

At a relu kink or where the sparsemax support changes, the function is not differentiable and
the stencil measures a one-sided mixture, not the gradient. Such coordinates are detected (the
relu sign pattern or the sparsemax support differs between θ + ε e_i and θ - ε e_i) and reported
apart, in ``GradcheckResult.kinks``, instead of failing the check. A layer takes part through
its ``_kink_state()`` hook (see :mod:`fastnn.module`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fastnn.graph import Model, _Packed
from fastnn.layers import Dropout
from fastnn.losses import SparsemaxLoss, get_loss

__all__ = ["GradcheckResult", "gradcheck"]


@dataclass
class GradcheckResult:
    """Outcome of :func:`gradcheck`.

    Attributes
    ----------
    max_rel_error : dict name -> float
        Per parameter (and "input" when checked): the largest
        ``|analytic - numeric| / max(|analytic|, |numeric|, floor)`` over the checked coordinates
        that are not at a kink (NaN when every checked coordinate was at a kink).
    n_checked : dict name -> int
        Coordinates compared for each parameter.
    kinks : dict name -> list of (index, analytic, numeric)
        Coordinates whose stencil crossed a relu kink or a sparsemax support change.
    tol : float
        The threshold ``passed`` uses.
    loss : float
        The loss at the checked point.
    """

    max_rel_error: dict
    n_checked: dict
    kinks: dict
    tol: float
    loss: float
    worst: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when every parameter's max relative error is at most ``tol``."""
        return all(not (e > self.tol) for e in self.max_rel_error.values())

    @property
    def n_kinks(self) -> int:
        return sum(len(v) for v in self.kinks.values())

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        width = max([len(k) for k in self.max_rel_error] + [9])
        lines = [f"GradcheckResult(passed={self.passed}, tol={self.tol:g}, loss={self.loss:.6g})",
                 f"  {'parameter':<{width}}  {'checked':>7}  {'max rel err':>11}  kinks"]
        for name, err in self.max_rel_error.items():
            lines.append(f"  {name:<{width}}  {self.n_checked[name]:>7}  {err:>11.3e}  "
                         f"{len(self.kinks.get(name, ()))}")
        return "\n".join(lines)


def _loss_support_fn(loss_obj):
    """Kink detector for the loss itself: the sparsemax loss's support."""
    if isinstance(loss_obj, SparsemaxLoss):
        return lambda z: np.asarray(loss_obj.output(z)) > 0
    return None


def gradcheck(model, X, y, loss, *, eps: float = 1e-6, tol: float = 1e-5, floor: float = 1e-4,
              max_coords: int | None = None, seed=0, mode: str | None = None,
              check_input: bool = False, loss_weights=None) -> GradcheckResult:
    """Compare the network's backpropagated gradients with central finite differences.

    Parameters
    ----------
    model : Module (usually a Sequential)
        float32 or float64; checked through a float64 copy (the model is left untouched).
    X : ndarray (n_samples, n_features)
    y : targets for ``loss`` (int labels, or float targets)
    loss : str or loss object
        Anything :func:`fastnn.losses.get_loss` accepts; the checked function is its mean loss
        of ``model.forward(X)``.
    eps : float
        Finite-difference step (1e-6 balances truncation ~eps^2 and rounding ~1e-16/eps).
    tol : float
        ``passed`` requires every max relative error <= tol.
    floor : float
        Denominator floor of the relative error, times max(1, ``|loss|``): with eps=1e-6 the stencil
        itself carries a rounding error of about 1e-16 ``|loss|`` / eps ~ 1e-10 ``|loss|``, so
        gradients smaller than the floor are judged by their absolute error (an absolute error
        below ``tol * floor * max(1, ``|loss|``)`` always passes).
    max_coords : int or None
        Check at most this many coordinates per parameter (a seeded random subset); None checks
        them all.
    seed : int
        Seed of that subset.
    mode : {"train", "eval"} or None
        Mode of the copy (None: the model's mode). In training mode each dropout mask is frozen
        at the one the next training step would draw, so the loss is a fixed function.
    check_input : bool
        Also check dL/dX (reported as "input"; for a graph :class:`~fastnn.graph.Model`, the
        inputs' columns side by side).
    loss_weights : list of float, optional
        For a graph Model: ``X`` is one array per input, ``y`` one target per output, ``loss``
        one per output (or one for all), summed with these weights (default 1 each).

    Returns
    -------
    GradcheckResult

    References
    ----------
    Rumelhart, D. E., Hinton, G. E. and Williams, R. J. (1986). Learning representations by
    back-propagating errors. Nature 323, 533-536.
    """
    eps = float(eps)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if isinstance(model, Model):
        # a graph: checked as one function of the inputs' columns side by side, with the
        # weighted sum of its per-output losses
        graph = model.astype(np.float64)
        loss = graph._packed_loss(loss if loss is not None else getattr(model, "loss", None),
                                  loss_weights)
        Xs = X if isinstance(X, dict) else ([X] if isinstance(X, np.ndarray) else list(X))
        Xs = ({k: np.asarray(v, dtype=np.float64) for k, v in Xs.items()}
              if isinstance(Xs, dict) else [np.asarray(v, dtype=np.float64) for v in Xs])
        X = graph._pack_x(Xs)
        y = loss.pack_y(y, X.shape[0])
        net = _Packed(graph)
    else:
        if loss_weights is not None:
            raise ValueError("loss_weights is for a graph Model with several outputs")
        net = model.astype(np.float64)
    if mode is not None:
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train', 'eval' or None, got {mode!r}")
        net.train(mode == "train")
    X = np.array(X, dtype=np.float64, copy=True, order="C")
    y = np.asarray(y)
    if y.dtype.kind == "f":
        y = y.astype(np.float64)
    loss_obj = get_loss(loss)
    counters = [(m, m._calls) for m in net.modules() if isinstance(m, Dropout)]
    modules = list(net.modules())
    support = _loss_support_fn(loss_obj)

    def evaluate():
        for m, c in counters:
            m._calls = c
        z = net.forward(X)
        value = float(loss_obj.loss(z, y))
        sig = [m._kink_state() for m in modules]
        if support is not None:
            sig.append(support(z))
        return value, sig

    # Analytic gradients.
    for m, c in counters:
        m._calls = c
    net.zero_grad()
    z = net.forward(X)
    value, grad_z = loss_obj.loss_and_grad(z, y)
    grad_z = np.array(grad_z, dtype=np.float64, copy=True)
    gx = net.backward(grad_z, need_input_grad=check_input)
    targets = [(name, p.data, p.grad.copy()) for name, p in net.named_parameters()]
    if check_input:
        targets.append(("input", X, np.array(gx, copy=True)))

    scale = float(floor) * max(1.0, abs(value))
    rng = np.random.default_rng(seed)
    max_err, n_checked, kinks, worst = {}, {}, {}, {}
    for name, data, analytic in targets:
        flat = data.reshape(-1)
        a_flat = analytic.reshape(-1)
        if max_coords is None or flat.size <= max_coords:
            coords = np.arange(flat.size)
        else:
            coords = np.sort(rng.choice(flat.size, size=int(max_coords), replace=False))
        errs = []
        kinks[name] = []
        for i in coords:
            orig = flat[i]
            flat[i] = orig + eps
            lp, sp = evaluate()
            flat[i] = orig - eps
            lm, sm = evaluate()
            flat[i] = orig
            numeric = (lp - lm) / (2 * eps)
            a = float(a_flat[i])
            idx = tuple(int(k) for k in np.unravel_index(i, data.shape))
            if any(s1 is not None and not np.array_equal(s1, s2) for s1, s2 in zip(sp, sm)):
                kinks[name].append((idx, a, numeric))
                continue
            err = abs(a - numeric) / max(abs(a), abs(numeric), scale)
            errs.append(err)
            if not worst.get(name) or err > worst[name][0]:
                worst[name] = (err, idx, a, numeric)
        max_err[name] = max(errs) if errs else float("nan")
        n_checked[name] = len(coords)
    return GradcheckResult(max_rel_error=max_err, n_checked=n_checked, kinks=kinks,
                           tol=float(tol), loss=value, worst=worst)
