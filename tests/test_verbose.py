"""fit's progress output (Keras's verbose="auto"): a live bar on a terminal or in a notebook, one
line per epoch elsewhere, nothing only with verbose=0; finished lines fit the width, metrics
never cut."""
import io
import re
import sys
import types

import numpy as np
import pytest

from fastnn import Dense, Sequential, callbacks, training


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def problem(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(96, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    model = Sequential(Dense(4, 8, "relu", seed=0), Dense(8, 2, seed=1))
    return model, X, y


def fit_captured(monkeypatch, stream, **kwargs):
    monkeypatch.setattr(sys, "stderr", stream)
    model, X, y = problem()
    kwargs.setdefault("epochs", 3)
    history = model.fit(X, y, batch_size=16, validation_split=0.25, seed=0, **kwargs)
    return history, stream.getvalue()


def finished_lines(text):
    """What stays on screen: each line's text after its last carriage return."""
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n") if line.rsplit("\r", 1)[-1]]


METRICS = ("loss=", "accuracy=", "val_loss=", "val_accuracy=", "lr=", "samples/s")


@pytest.mark.parametrize("verbose", [1, "auto", 2])
def test_not_a_terminal_prints_one_line_per_epoch_within_80_columns(monkeypatch, verbose):
    monkeypatch.setenv("COLUMNS", "80")
    _, out = fit_captured(monkeypatch, io.StringIO(), verbose=verbose)
    assert "\r" not in out   # no bar control characters in a log
    epochs = re.findall(r"^epoch (\d+)/3", out, flags=re.M)
    assert epochs == ["1", "2", "3"]
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    for block in re.split(r"\n(?=epoch )", out.strip()):
        for metric in METRICS:
            assert metric in block, block
        assert re.search(r"val_accuracy=\d\.\d{4}", block)


def test_wrapping_follows_columns_and_never_cuts_a_field(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    _, wide = fit_captured(monkeypatch, io.StringIO(), verbose=1)
    assert len(wide.strip().splitlines()) == 3   # one line per epoch when it fits
    monkeypatch.setenv("COLUMNS", "50")
    _, narrow = fit_captured(monkeypatch, io.StringIO(), verbose=1)
    assert all(len(line) <= 50 for line in narrow.splitlines())
    # the same fields, only broken between them
    def fields(text):
        return [f for f in re.split(r"\s+-\s+|\n\s*", text) if f and not f[0].isdigit()]
    assert len(narrow.splitlines()) > 3
    assert [f.split("=")[0] for f in fields(wide)] == [f.split("=")[0] for f in fields(narrow)]


def test_verbose_0_is_silent(monkeypatch):
    _, out = fit_captured(monkeypatch, FakeTerminal(), verbose=0)
    assert out == ""
    _, out = fit_captured(monkeypatch, io.StringIO(), verbose=0)
    assert out == ""


def test_terminal_gets_a_live_bar_then_the_finished_line(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    _, out = fit_captured(monkeypatch, FakeTerminal(), verbose=1)
    assert "\r" in out and "samples" in out        # tqdm drew a bar
    done = finished_lines(out)
    assert all(len(line) <= 80 for line in done), done
    text = "\n".join(done)
    assert re.findall(r"^epoch (\d+)/3 - ", text, flags=re.M) == ["1", "2", "3"]
    for metric in METRICS:
        assert len(re.findall(rf"(?<![\w]){re.escape(metric)}", text)) == 3, text


def test_notebook_kernel_gets_the_bar(monkeypatch):
    # An IPython kernel: stderr is not a terminal, but tqdm.auto can draw (a widget in Jupyter)
    shell = types.SimpleNamespace(config={"IPKernelApp": {}})
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", fake)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert training._in_notebook()
    assert training._progress_mode(1) == "bar" and training._progress_mode(2) == "lines"
    shell.config = {}                                     # a terminal IPython: no kernel
    assert not training._in_notebook()
    assert training._progress_mode(1) == "lines"
    monkeypatch.delitem(sys.modules, "IPython")
    assert not training._in_notebook() and training._progress_mode(0) is None


def test_callback_events_are_printed_when_not_a_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    stop = callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)
    history, out = fit_captured(monkeypatch, io.StringIO(), verbose=1, callbacks=[stop],
                                epochs=5)
    assert history.stopped_epoch is not None
    assert "early stopping" in out
    assert all(len(line) <= 80 for line in out.splitlines())


def test_bad_verbose_is_rejected():
    model, X, y = problem()
    for bad in (3, "yes", -1):
        with pytest.raises(ValueError, match="verbose"):
            model.fit(X, y, epochs=1, verbose=bad)


def test_history_plot_integer_epochs_and_the_restored_best_epoch(monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    X_val, y_val = X[:40], rng.integers(0, 2, 40)   # random labels: val_loss rises as it fits
    model = Sequential(Dense(4, 32, "relu", seed=0), Dense(32, 2, seed=1))
    stop = callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    history = model.fit(X, y, epochs=40, batch_size=8, lr=1e-2, validation_data=(X_val, y_val),
                        callbacks=[stop], verbose=0, seed=0)
    assert history.stopped_epoch is not None and stop.best_epoch < history.epoch[-1]
    assert history.restored_epoch == stop.best_epoch
    fig = history.plot()
    try:
        for ax in fig.axes:
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
            assert ax.get_xlabel() == "epoch" and ax.get_ylabel()
            labels = [line.get_label() for line in ax.get_lines()]
            assert f"restored best (epoch {stop.best_epoch + 1})" in labels
    finally:
        plt.close(fig)
    # no restore, no marker
    model2, X2, y2 = problem()
    h2 = model2.fit(X2, y2, epochs=3, verbose=0)
    assert h2.restored_epoch is None
    fig = h2.plot()
    try:
        assert not any("restored" in line.get_label() for ax in fig.axes
                       for line in ax.get_lines())
    finally:
        plt.close(fig)
