"""What ``fit``, ``evaluate`` and the streamed evaluation share: the network's dtype and
output width, the batched forward pass in evaluation mode, and the running loss and metric of
an epoch (accuracy, or R^2 from running sums).
"""
from __future__ import annotations

import numpy as np

from fastnn._threads import check_not_fitting

__all__ = ["RunningMetrics", "model_dtype", "n_outputs", "predict_raw"]


def model_dtype(model):
    """The network's float dtype (its ``dtype``, else its first parameter's; float32 without
    parameters)."""
    dt = getattr(model, "dtype", None)
    if dt is None:
        ps = model.parameters()
        dt = ps[0].data.dtype if ps else np.float32
    return np.dtype(dt)


def n_outputs(model):
    """Width of the network's output, or None when the network cannot tell."""
    try:
        return model.output_features(model.input_features())
    except Exception:
        return None


class RunningMetrics:
    """Running loss and metric over an epoch's batches (sample-weighted)."""

    def __init__(self, task, n_outputs):
        self.task = task
        self.n = 0
        self.loss_sum = 0.0
        self.correct = 0
        self.has_metric = task in ("classification", "binary", "regression")
        if task == "regression":
            k = n_outputs or 1
            self.s1 = np.zeros(k)
            self.s2 = np.zeros(k)
            self.sse = np.zeros(k)

    def update(self, loss, z, yb, m):
        self.n += m
        self.loss_sum += loss * m
        t = self.task
        if t == "classification":
            pred = z.argmax(axis=1)
            truth = yb if yb.ndim == 1 else yb.argmax(axis=1)
            self.correct += int(np.count_nonzero(pred == truth))
        elif t == "binary":
            self.correct += int(np.count_nonzero((z.reshape(m, -1)[:, 0] > 0)
                                                 == (yb.reshape(m, -1)[:, 0] > 0.5)))
        elif t == "regression":
            y2 = yb.reshape(m, -1).astype(np.float64)
            d = z.reshape(m, -1) - y2
            self.s1 += y2.sum(axis=0)
            self.s2 += np.einsum("ij,ij->j", y2, y2)
            self.sse += np.einsum("ij,ij->j", d, d)

    @property
    def loss(self):
        return self.loss_sum / max(self.n, 1)

    def metric(self):
        if self.task in ("classification", "binary"):
            return "accuracy", self.correct / max(self.n, 1)
        if self.task == "regression":
            ss_tot = self.s2 - self.s1 ** 2 / max(self.n, 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                r2 = np.where(ss_tot > 0, 1.0 - self.sse / np.where(ss_tot > 0, ss_tot, 1.0),
                              0.0)
            return "r2", float(r2.mean())
        return None, None


def predict_raw(model, X, batch_size):
    """The network's output (n, n_outputs) for a 2-D X of its dtype, batch by batch in
    evaluation mode."""
    check_not_fitting(model, "predict")
    if hasattr(model, "predict"):
        return model.predict(X, batch_size=batch_size)
    # a bare Module: evaluation mode, batched forward, restore the mode
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        outs = []
        for start in range(0, X.shape[0], batch_size):
            xb = np.ascontiguousarray(X[start:start + batch_size])
            outs.append(np.array(model.forward(xb), copy=True))
        return np.concatenate(outs) if outs else np.empty((0, 0), dtype=X.dtype)
    finally:
        for m, mode in zip(model.modules(), modes):
            m.training = mode
