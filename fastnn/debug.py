"""The lecture's debugging recipe: can the model overfit a small subset?

"Extract a small subset of your training set (e.g. 50 examples); monitor your training loss in
this set; you should be able to overfit in this small training set. If not, see if some units
are saturated from the very first iterations (if they are, reduce the initialization variance
or properly normalize your inputs). If the training error is bouncing up and down, decrease the
learning rate."

:func:`check_overfit` does exactly that and says what it found.
"""
from __future__ import annotations

import math

import numpy as np

from fastnn import training
from fastnn.data import check_random_state
from fastnn.losses import get_loss

__all__ = ["check_overfit", "OverfitReport", "saturation_at_init"]

#: a unit counts as saturated when it is saturated on at least this fraction of the samples
_SAMPLE_FRACTION = 0.9
#: a layer is reported when at least this fraction of its units are saturated
_LAYER_FRACTION = 0.2


class OverfitReport:
    """What :func:`check_overfit` found. ``bool(report)`` is True when the subset was fitted.

    Attributes
    ----------
    ok : bool
    n_samples : int
    losses : list of float
        Training loss on the subset after each step.
    initial_loss, final_loss : float
    final_accuracy : float or None (classification), final_r2 : float or None (regression)
    saturation : dict layer name -> (activation, fraction of saturated or dead units) at init
    input_scale : (max |mean|, max std) of the subset's features
    diagnoses : list of str
        What is wrong and what to try, most likely cause first; empty when ``ok``.
    """

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __bool__(self):
        return bool(self.ok)

    def __str__(self):
        lines = [f"overfit check on {self.n_samples} samples: "
                 + ("OK - the model can fit them" if self.ok else "FAILED")]
        lines.append(f"  loss {self.initial_loss:.4g} -> {self.final_loss:.4g} in "
                     f"{len(self.losses)} steps")
        if self.final_accuracy is not None:
            lines.append(f"  training accuracy on the subset: {self.final_accuracy:.3f}")
        if self.final_r2 is not None:
            lines.append(f"  training R^2 on the subset: {self.final_r2:.4f}")
        for name, (act, frac) in self.saturation.items():
            word = "dead" if act == "relu" else "saturated"
            lines.append(f"  layer {name} ({act}): {100 * frac:.0f}% of units {word} at init")
        for d in self.diagnoses:
            lines.append(f"  - {d}")
        return "\n".join(lines)

    __repr__ = __str__


def _activation_of(module):
    act = getattr(module, "activation", None)
    if isinstance(act, str):
        return act
    name = getattr(module, "name", None)
    if isinstance(name, str):
        return name
    return None


def saturation_at_init(model, X) -> dict:
    """Fraction of saturated (sigmoid, tanh) or dead (relu) units per layer on ``X``.

    Runs the layers of a Sequential one by one in evaluation mode. A sigmoid unit is saturated
    on a sample when its output is within 0.02 of 0 or 1, a tanh unit when ``|y| > 0.98`` (the
    derivative is then below ~0.04); a relu unit is dead on a sample when its output is 0. A
    unit counts when that holds on at least 90% of the samples.

    Returns ``{layer name: (activation, fraction of units)}`` for the layers with such an
    activation.
    """
    layers = list(model) if hasattr(model, "__iter__") else [model]
    modes = [m.training for m in model.modules()] if hasattr(model, "modules") else None
    if hasattr(model, "eval"):
        model.eval()
    out = {}
    try:
        h = np.ascontiguousarray(X)
        for i, layer in enumerate(layers):
            h = np.array(layer.forward(h), copy=True)
            act = _activation_of(layer)
            if act == "sigmoid":
                sat = (h < 0.02) | (h > 0.98)
            elif act == "tanh":
                sat = np.abs(h) > 0.98
            elif act == "relu":
                sat = h <= 0
            else:
                continue
            per_unit = sat.mean(axis=0) >= _SAMPLE_FRACTION
            out[f"{i}:{type(layer).__name__}"] = (act, float(per_unit.mean()))
    finally:
        if modes is not None:
            for m, mode in zip(model.modules(), modes):
                m.training = mode
    return out


def _bounce(losses):
    """(fraction of steps where the loss rose by more than 5%, largest relative rise)."""
    a = np.asarray(losses, dtype=np.float64)
    if a.size < 3:
        return 0.0, 0.0
    rel = np.diff(a) / np.maximum(np.abs(a[:-1]), 1e-12)
    return float(np.mean(rel > 0.05)), float(max(rel.max(), 0.0))


def check_overfit(model, X, y, *, n: int = 50, loss="cross_entropy", optimizer="adam",
                  lr=None, steps: int = 300, batch_size=None, seed=0) -> OverfitReport:
    """Try to overfit ``n`` training examples and diagnose a failure.

    Parameters
    ----------
    model : fastnn network, or a callable returning a new one
        A network is copied first (``model.copy()``), so yours is left untouched.
    X, y : training data (a random subset of ``n`` rows is used)
    n : int
        Subset size (the lecture suggests about 50).
    loss, optimizer, lr :
        As in :func:`fastnn.training.fit` (lr defaults to the optimizer's default).
    steps : int
        Full-batch steps (epochs over the subset when ``batch_size`` is smaller).
    batch_size : int or None
        None: the whole subset in one batch.
    seed : int

    Returns
    -------
    OverfitReport - ``print(report)`` shows the diagnosis.

    Success means 100% training accuracy on the subset for a classification loss, R^2 >= 0.99
    for regression. On failure the report looks for, in order: a diverging loss (NaN/inf: the
    learning rate is far too high); saturated or dead units at initialization (reduce the
    initialization variance or standardize the inputs); a loss bouncing up and down (decrease
    the learning rate); a loss that does not move (check the gradients with
    :func:`fastnn.gradcheck`, or raise the learning rate); slow progress (train longer).
    """
    if callable(model) and not hasattr(model, "forward"):
        net = model()
    else:
        net = model.copy() if hasattr(model, "copy") else model
    loss_fn = get_loss(loss)
    rng = check_random_state(seed)
    X = np.asarray(X)
    y = np.asarray(y)
    n = int(min(n, X.shape[0]))
    idx = rng.choice(X.shape[0], size=n, replace=False)
    Xs = np.ascontiguousarray(X[idx])
    ys = np.ascontiguousarray(y[idx])

    # input scale over the whole training set (a 50-row subset exaggerates rare features)
    mean = float(np.abs(X.mean(axis=0)).max()) if X.size else 0.0
    std = float(X.std(axis=0).max()) if X.size else 0.0
    saturation = saturation_at_init(net, Xs)

    diverged = None
    try:
        hist = training.fit(net, Xs, ys, loss=loss_fn, optimizer=optimizer, lr=lr,
                            epochs=int(steps), batch_size=int(batch_size or n), shuffle=True,
                            verbose=0, seed=rng)
        losses = list(hist.history["loss"])
    except FloatingPointError as e:
        diverged = str(e)
        losses = []
    if losses:
        initial_loss = losses[0]
        final = training.evaluate(net, Xs, ys, loss=loss_fn)
        final_loss = final["loss"]
    else:
        initial_loss = final_loss = float("nan")
        final = {}
    acc = final.get("accuracy")
    r2 = final.get("r2")
    if acc is not None:
        ok = acc >= 1.0
    elif r2 is not None:
        ok = r2 >= 0.99
    else:
        ok = bool(losses) and final_loss < 0.05 * max(initial_loss, 1e-12)
    ok = ok and diverged is None

    diagnoses = []
    current_lr = float(getattr(getattr(net, "optimizer", None), "lr", float("nan")) or
                       float("nan"))
    if not ok:
        if diverged is not None or (losses and not math.isfinite(final_loss)):
            diagnoses.append(f"the loss diverged ({diverged or 'non-finite loss'}): the "
                             f"learning rate is far too high; divide it by 10")
        bad = {k: v for k, v in saturation.items() if v[1] >= _LAYER_FRACTION}
        if bad:
            names = ", ".join(f"{k} ({v[0]}: {100 * v[1]:.0f}%)" for k, v in bad.items())
            hint = "reduce the initialization variance (e.g. glorot/he init, smaller weights)"
            if mean > 3.0 or std > 3.0:
                hint += (f", and standardize the inputs (features have |mean| up to "
                         f"{mean:.3g}, std up to {std:.3g}: use fastnn.data.Standardizer)")
            else:
                hint += " or standardize the inputs"
            diagnoses.append(f"units are saturated or dead from initialization in {names}: "
                             f"{hint}")
        frac_up, max_rise = _bounce(losses)
        if losses and diverged is None and frac_up >= 0.1 and frac_up * len(losses) >= 3:
            diagnoses.append(f"the training loss is bouncing up and down (it rose on "
                             f"{100 * frac_up:.0f}% of the steps, by up to "
                             f"{100 * max_rise:.0f}%): decrease the learning rate "
                             f"(now {current_lr:.3g}; try {current_lr / 10:.3g})")
        if losses and math.isfinite(final_loss) and not diagnoses:
            if final_loss > 0.9 * initial_loss:
                diagnoses.append("the training loss barely moves: check the gradients with "
                                 "fastnn.gradcheck (a bug in backward), or raise the learning "
                                 f"rate (now {current_lr:.3g})")
            else:
                diagnoses.append(f"the loss decreases but has not reached zero error in "
                                 f"{len(losses)} steps: train longer (steps=), raise the "
                                 f"learning rate, or add capacity")
        if (mean > 3.0 or std > 3.0) and not any("standardize" in d for d in diagnoses):
            diagnoses.append(f"the inputs are not standardized (|mean| up to {mean:.3g}, std "
                             f"up to {std:.3g}): use fastnn.data.Standardizer")
    return OverfitReport(ok=ok, n_samples=n, losses=losses, initial_loss=initial_loss,
                         final_loss=final_loss, final_accuracy=acc, final_r2=r2,
                         saturation=saturation, input_scale=(float(mean), float(std)),
                         diagnoses=diagnoses, model=net)
