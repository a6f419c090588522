"""What ``fit`` records: :class:`History`, one entry per epoch, and the rule that says whether
a monitored quantity is minimized or maximized (shared by ``History.best_epoch`` and the
callbacks that monitor a quantity).
"""
from __future__ import annotations

import numpy as np

__all__ = ["History", "monitor_mode"]



class History:
    """What happened during ``fit``, epoch by epoch.

    Attributes
    ----------
    history : dict of str -> list of float
        One list per quantity, one entry per epoch: ``loss`` and the training metric
        (``accuracy`` or ``r2``; running averages over the epoch's batches, in training mode),
        ``val_loss``/``val_accuracy``/``val_r2`` (evaluation mode, end of epoch) when there is
        validation data, ``lr`` (the learning rate used during the epoch), ``time`` (seconds)
        and ``samples_per_s``.
    epoch : list of int
        Epoch indices (0-based, counting from the model's first fit).
    events : list of (epoch, str)
        What callbacks did: learning-rate changes, rollbacks, early stopping, checkpoints.
    stopped_epoch : int or None
        The epoch after which a callback stopped training.
    restored_epoch : int or None
        The epoch whose weights :class:`~fastnn.callbacks.EarlyStopping` restored at the end
        (``restore_best_weights=True``), marked by :meth:`plot`.
    """

    def __init__(self):
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []
        self.events: list[tuple[int, str]] = []
        self.stopped_epoch = None
        self.restored_epoch = None
        self.params: dict = {}

    def append(self, epoch: int, logs: dict) -> None:
        n = len(self.epoch)
        for k, v in logs.items():
            if k not in self.history:
                self.history[k] = [float("nan")] * n
            self.history[k].append(float(v))
        for k, lst in self.history.items():
            if len(lst) < n + 1:
                lst.append(float("nan"))
        self.epoch.append(epoch)

    def __getitem__(self, key):
        return self.history[key]

    def __contains__(self, key):
        return key in self.history

    def __len__(self):
        return len(self.epoch)

    def best_epoch(self, monitor: str = "val_loss", mode: str = "auto") -> int:
        """The epoch with the best value of ``monitor``."""
        values = np.asarray(self.history[monitor], dtype=np.float64)
        if monitor_mode(monitor, mode) == "min":
            return self.epoch[int(np.nanargmin(values))]
        return self.epoch[int(np.nanargmax(values))]

    def plot(self, path=None, *, metrics=None, title=None):
        """Learning curves (loss; accuracy or R^2) for training and validation.

        The x axis counts epochs from 1 (integer ticks); dotted lines mark the callbacks' events
        and, when EarlyStopping restored the best weights, a dashed line and a star mark the
        restored epoch. Saves a PNG when ``path`` is given; returns the matplotlib Figure. Needs
        matplotlib (``pip install "fastnn[plot]"``).
        """
        try:
            import matplotlib
            if path is not None:
                matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
            from matplotlib.ticker import MaxNLocator
        except ImportError:
            raise ImportError("plotting needs matplotlib: pip install matplotlib "
                              "(or pip install \"fastnn[plot]\")") from None
        if metrics is None:
            metrics = ["loss"] + [m for m in ("accuracy", "r2") if m in self.history]
        fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6),
                                 squeeze=False)
        epochs = [e + 1 for e in self.epoch]
        restored = getattr(self, "restored_epoch", None)   # absent from older pickles
        for ax, m in zip(axes[0], metrics):
            if m in self.history:
                ax.plot(epochs, self.history[m], "o-", ms=3, label=f"training {m}")
            if "val_" + m in self.history:
                ax.plot(epochs, self.history["val_" + m], "s-", ms=3, label=f"validation {m}")
            for e, _ in self.events:
                ax.axvline(e + 1, color="gray", lw=0.6, ls=":")
            if restored is not None and restored in self.epoch:
                i = self.epoch.index(restored)
                key = "val_" + m if "val_" + m in self.history else m
                ax.axvline(restored + 1, color="tab:green", lw=1, ls="--")
                if key in self.history:
                    ax.plot([restored + 1], [self.history[key][i]], "*", ms=12,
                            color="tab:green", label=f"restored best (epoch {restored + 1})")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel(m)
            ax.grid(alpha=0.3)
            ax.legend()
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig

    def __repr__(self):
        last = {k: round(v[-1], 4) for k, v in self.history.items() if v}
        return f"History({len(self.epoch)} epochs, last={last})"


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    """Whether a smaller ("min") or a larger ("max") value of ``monitor`` is better.

    ``mode`` "min" or "max" is returned as given; "auto" reads the name: accuracies and R^2
    (a name containing "acc" or "r2") are maximized, anything else (losses) minimized.
    """
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    name = monitor.lower()
    return "max" if ("acc" in name or "r2" in name) else "min"
