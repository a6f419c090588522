"""One network, several Python threads (fastnn/_threads.py, "one network, several Python
threads"): a fit and a predict (or two fits) on the same network from two threads used to mix
their work buffers (a confusing shape error, or silently wrong rows); the second call now raises
a RuntimeError naming the conflict, whichever comes first. Concurrent predicts stay allowed, and
a thread may nest calls (validation inside fit, a callback that predicts)."""
import os
import threading

import numpy as np
import pytest

import fastnn._threads as T
from fastnn import Dense, Sequential, training
from fastnn.callbacks import Callback

IN_USE = "in use by another thread"


def _net():
    return Sequential(Dense(8, 32, "relu", seed=0), Dense(32, 3, seed=1), dtype=np.float64)


def _data(n=400):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 8)), rng.integers(0, 3, n)


class Hold(Callback):
    """Holds the fit at the start of its first epoch until released."""

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def on_epoch_begin(self, epoch, logs=None):
        self.entered.set()
        assert self.release.wait(30)


def _fit_in_thread(model, X, y, hold, errors, **kw):
    def run():
        try:
            model.fit(X, y, epochs=2, verbose=0, callbacks=[hold], **kw)
        except Exception as e:
            errors.append(e)
    t = threading.Thread(target=run)
    t.start()
    assert hold.entered.wait(30)
    return t


@pytest.fixture(autouse=True)
def no_records_left():
    yield
    assert T._FITTING == {}


@pytest.mark.parametrize("second", ["predict", "predict_proba", "evaluate", "fit",
                                    "training.predict", "training.fit"])
def test_calls_while_another_thread_fits(second):
    model, (X, y) = _net(), _data()
    hold, errors = Hold(), []
    t = _fit_in_thread(model, X, y, hold, errors)
    calls = {"predict": lambda: model.predict(X),
             "predict_proba": lambda: model.predict_proba(X),
             "evaluate": lambda: model.evaluate(X, y),
             "fit": lambda: model.fit(X, y, epochs=1, verbose=0),
             "training.predict": lambda: training.predict(model, X),
             "training.fit": lambda: training.fit(model, X, y, epochs=1, verbose=0)}
    try:
        with pytest.raises(RuntimeError, match=IN_USE + r" \(a fit is running\)"):
            calls[second]()
    finally:
        hold.release.set()
        t.join(60)
    assert not errors, errors
    assert model.epochs_trained_ == 2            # the fit itself was not disturbed
    calls[second]()                              # and the network is free again


def test_fit_while_another_thread_predicts():
    model, (X, y) = _net(), _data()
    entered, release = threading.Event(), threading.Event()
    first = model[0]
    original_forward = first.forward

    def slow_forward(x):                         # holds the predict half-way
        entered.set()
        assert release.wait(30)
        return original_forward(x)

    first.forward = slow_forward
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("p", model.predict(X)))
    t.start()
    assert entered.wait(30)
    try:
        with pytest.raises(RuntimeError, match=IN_USE + r" \(a predict is running\)"):
            model.fit(X, y, epochs=1, verbose=0)
        with pytest.raises(RuntimeError, match=IN_USE):
            training.fit(model, X, y, epochs=1, verbose=0)
    finally:
        release.set()
        t.join(60)
    del first.forward
    np.testing.assert_array_equal(out["p"], model.predict(X))   # weights untouched
    model.fit(X, y, epochs=1, verbose=0)


def test_bare_module_fit_vs_predict():
    layer, (X, y) = Dense(8, 3, seed=0, dtype=np.float64), _data()
    hold, errors = Hold(), []

    def run():
        try:
            training.fit(layer, X, y, epochs=1, verbose=0, callbacks=[hold])
        except Exception as e:
            errors.append(e)
    t = threading.Thread(target=run)
    t.start()
    assert hold.entered.wait(30)
    try:
        with pytest.raises(RuntimeError, match=IN_USE):
            training.predict(layer, X)
    finally:
        hold.release.set()
        t.join(60)
    assert not errors, errors


def test_nested_calls_in_the_fitting_thread():
    """fit evaluates its validation set, and a callback predicts and evaluates: same thread."""
    model, (X, y) = _net(), _data()
    seen = []

    class Peek(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((model.predict(X[:5]).shape, model.evaluate(X, y)["n_samples"]))

    model.fit(X, y, epochs=2, verbose=0, validation_data=(X[:50], y[:50]), callbacks=[Peek()])
    assert seen == [((5, 3), 400)] * 2


def test_records_cleared_after_an_exception_in_fit():
    model, (X, y) = _net(), _data()
    with pytest.raises(ValueError):
        model.fit(X, y[:10], epochs=1, verbose=0)          # bad targets
    assert T._FITTING == {}
    errors = []
    t = threading.Thread(target=lambda: errors.append(model.predict(X).shape))
    t.start()
    t.join(30)
    assert errors == [(400, 3)]


def test_concurrent_predicts_still_allowed():
    model, (X, _) = _net(), _data()
    expected = model.predict(X, batch_size=37)
    barrier, results, errors = threading.Barrier(4), [], []

    def run():
        try:
            barrier.wait(10)
            for _ in range(20):
                results.append(model.predict(X, batch_size=37))
        except Exception as e:
            errors.append(e)
    ts = [threading.Thread(target=run) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors
    assert len(results) == 80 and all(np.array_equal(r, expected) for r in results)


def test_free_running_threads_only_clear_errors():
    """Real threads with no choreography: a predict loop against repeated fits. Every call
    either succeeds or raises the in-use RuntimeError: never another exception type."""
    model, (X, y) = _net(), _data(2000)
    unexpected, conflicts, stop = [], [], threading.Event()

    def predictor():
        while not stop.is_set():
            try:
                out = model.predict(X[:333])
                assert out.shape == (333, 3) and np.isfinite(out).all()
            except RuntimeError as e:
                (conflicts if IN_USE in str(e) else unexpected).append(e)
            except Exception as e:
                unexpected.append(e)

    def fitter():
        for _ in range(6):
            try:
                model.fit(X, y, epochs=1, batch_size=64, verbose=0)
            except RuntimeError as e:
                (conflicts if IN_USE in str(e) else unexpected).append(e)
            except Exception as e:
                unexpected.append(e)
        stop.set()

    ts = [threading.Thread(target=predictor), threading.Thread(target=predictor),
          threading.Thread(target=fitter)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not unexpected, unexpected[:3]
    assert conflicts        # they did collide


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_another_thread_fits_child_may_use_the_network():
    """The fit's thread does not exist in a forked child: its record is dropped there."""
    model, (X, y) = _net(), _data()
    hold, errors = Hold(), []
    t = _fit_in_thread(model, X, y, hold, errors)
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 0 if model.predict(X).shape == (400, 3) and T._FITTING == {} else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        hold.release.set()
        t.join(60)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not errors, errors


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_another_thread_predicts_child_does_not_deadlock():
    """The predict lock held by another thread at the fork would never be released in the
    child (that thread does not exist there); the child re-creates it. Watchdog: 30 s."""
    import signal
    import time

    model, (X, _) = _net(), _data()
    entered, release = threading.Event(), threading.Event()
    first = model[0]
    original_forward = first.forward

    def slow_forward(x):
        entered.set()
        assert release.wait(30)
        return original_forward(x)

    first.forward = slow_forward
    t = threading.Thread(target=model.predict, args=(X,))
    t.start()
    assert entered.wait(30)
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                del first.forward
                code = 0 if model.predict(X).shape == (400, 3) else 1
            finally:
                os._exit(code)
        end, status = time.monotonic() + 30, None
        while time.monotonic() < end:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                break
            time.sleep(0.02)
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    finally:
        release.set()
        t.join(60)
        first.__dict__.pop("forward", None)
    assert status is not None, "the child deadlocked on the predict lock"
    assert os.waitstatus_to_exitcode(status) == 0
