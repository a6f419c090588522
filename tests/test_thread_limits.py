"""Thread limits as a shared resource (fastnn/parallel.py, fastnn/_kernels/_blas.pyx): the
process-wide BLAS count is the smallest active request, never above the count before the first,
and that count comes back when the last request ends, whatever the order (threads, exceptions,
nesting, dense kernels running meanwhile). And n_threads is capped at the CPUs."""
import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

threadpoolctl = pytest.importorskip("threadpoolctl")

import fastnn._threads as T  # noqa: E402
from fastnn import functional as F  # noqa: E402
from fastnn._kernels import _blas  # noqa: E402
from fastnn.parallel import _BLAS_REQUESTS, limit_threads, thread_info  # noqa: E402

# Children start where the fastnn under test lives (its parent directory): ``python -c`` puts
# the working directory first on sys.path, and from the repository root it would import the
# uninstalled source tree (no compiled kernels) instead of the installed package.
_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(T.__file__)))


def blas_counts():
    """{file: threads} of every BLAS loaded, read through threadpoolctl (not through fastnn)."""
    return {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info()
            if i["user_api"] == "blas"}


def own_count():
    return blas_counts().get(T.blas_info()["filepath"])


@pytest.fixture
def original():
    """The BLAS counts before the test; every test must leave them so, and no request active."""
    before = blas_counts()
    yield before
    assert blas_counts() == before
    assert _blas.requests()[0] == 0 and _BLAS_REQUESTS.active() == 0


BASE = min(blas_counts().values()) if blas_counts() else 1
needs2 = pytest.mark.skipif(BASE < 2, reason="needs a BLAS running 2+ threads")


def _two_threads(first_out, caps=(1, 1), raise_in=None):
    """Threads a and b enter limit_threads(caps[0]/caps[1]) (a first), both are inside at once,
    then `first_out` leaves first. Returns what each saw inside and in between."""
    a_in, b_in, first_done = threading.Event(), threading.Event(), threading.Event()
    both_seen = threading.Barrier(2, timeout=10)
    seen, errors = {}, []

    def run(name, cap, wait_for, after):
        try:
            if wait_for is not None:
                wait_for.wait(10)
            try:
                with limit_threads(cap):
                    (a_in if name == "a" else b_in).set()
                    (b_in if name == "a" else a_in).wait(10)
                    seen[name + "_both"] = blas_counts()
                    both_seen.wait()
                    if name != first_out:
                        first_done.wait(10)
                        seen["after_" + first_out] = blas_counts()
                    if raise_in == name:
                        raise KeyError("inside")
            finally:
                if name == first_out:
                    first_done.set()
        except KeyError:
            seen[name + "_raised"] = True
        except Exception as e:  # reported by the test
            errors.append(e)

    ta = threading.Thread(target=run, args=("a", caps[0], None, None))
    tb = threading.Thread(target=run, args=("b", caps[1], a_in, None))
    ta.start()
    tb.start()
    ta.join(30)
    tb.join(30)
    assert not errors, errors
    return seen


@needs2
@pytest.mark.parametrize("first_out", ["a", "b"])
def test_two_threads_limit_1_any_exit_order(original, first_out):
    seen = _two_threads(first_out)
    assert set(seen["a_both"].values()) == {1} and set(seen["b_both"].values()) == {1}
    assert set(seen["after_" + first_out].values()) == {1}     # the other still asks for 1


@needs2
@pytest.mark.parametrize("first_out", ["a", "b"])
def test_smallest_request_wins_then_the_next(original, first_out):
    """a asks 1, b asks 2: 1 while both run (b's BLAS calls must not run 2 threads for a's
    sake... and a's must not run 2 for b's); when a leaves, b's 2 (capped at the original)."""
    seen = _two_threads(first_out, caps=(1, 2))
    assert set(seen["a_both"].values()) == {1} == set(seen["b_both"].values())
    after = seen["after_" + first_out]
    if first_out == "a":
        assert after == {k: min(v, 2) for k, v in original.items()}
    else:
        assert set(after.values()) == {1}


@needs2
@pytest.mark.parametrize("raise_in", ["a", "b"])
def test_exception_inside_restores(original, raise_in):
    seen = _two_threads("a", raise_in=raise_in)
    assert seen[raise_in + "_raised"]


@needs2
def test_nesting_in_one_thread(original):
    with limit_threads(2):
        assert blas_counts() == {k: min(v, 2) for k, v in original.items()}
        with limit_threads(1):
            assert set(blas_counts().values()) == {1}
            with pytest.raises(ZeroDivisionError), limit_threads(1):
                1 / 0
            assert set(blas_counts().values()) == {1}
        assert blas_counts() == {k: min(v, 2) for k, v in original.items()}
        assert thread_info()["openmp"] == min(2, T._CPUS) or not T._OPENMP


@needs2
def test_never_above_the_users_setting(original):
    """Under the user's own threadpoolctl limit of 1, a larger request keeps 1, and the user's
    value comes back (then the user's limiter restores the original)."""
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        with limit_threads(2):
            assert set(blas_counts().values()) == {1}
            F.dense_forward(np.ones((300, 300), np.float32), np.ones((300, 300), np.float32),
                            n_threads=2)
            assert set(blas_counts().values()) == {1}
        assert set(blas_counts().values()) == {1}


def test_openmp_limit_is_per_thread(original):
    seen = {}
    inside, done = threading.Event(), threading.Event()

    def other():
        inside.wait(10)
        seen["other"] = thread_info()["openmp"]
        done.set()

    t = threading.Thread(target=other)
    t.start()
    before = thread_info()["openmp"]
    with limit_threads(1):
        inside.set()
        done.wait(10)
        seen["me"] = thread_info()["openmp"]
    t.join(10)
    assert seen == {"me": 1, "other": before}


@needs2
@pytest.mark.filterwarnings("ignore:MLPClassifier. the maximum number of epochs")
def test_kernels_racing_limits_leave_the_original(original):
    """The defect: a dense kernel that saved the count while another thread's limit was in force
    restored that stale 1 after the limit ended. Threads of MLPClassifier(n_threads=1) and (2)
    fits, and raw dense calls at n_threads=2 (BLAS's own threads) next to limit_threads(1)."""
    pytest.importorskip("sklearn")
    from fastnn import MLPClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 20))
    y = rng.integers(0, 3, 300)
    big = rng.standard_normal((256, 512)).astype(np.float32)
    w = rng.standard_normal((512, 512)).astype(np.float32)
    errors = []

    def fit(n):
        try:
            MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, n_threads=n).fit(X, y)
        except Exception as e:
            errors.append(e)

    def dense():
        for _ in range(40):
            F.dense_forward(big, w, n_threads=2)

    def limited():
        for _ in range(40):
            with limit_threads(1):
                F.dense_forward(big, w, n_threads=2)

    for rnd in range(4):
        ts = [threading.Thread(target=f, args=a) for f, a in
              [(fit, (1,)), (fit, (2,)), (fit, (1,)), (dense, ()), (limited, ())]]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        assert not errors, errors
        assert blas_counts() == original, rnd


def test_registry_release_without_request_is_harmless(original):
    _blas.release(1)          # an unmatched release changes nothing
    assert _blas.requests()[0] == 0


# --- n_threads ceiling -------------------------------------------------------------------------

def test_n_threads_capped_at_the_cpus(monkeypatch):
    cpus = T._cpus()
    assert T._CPUS == cpus
    if T._OPENMP:
        assert T.effective_n_threads(1024) == cpus
        assert T.effective_n_threads(T.MAX_THREADS) == cpus
        with threadpoolctl.threadpool_limits(64, user_api="openmp"):
            assert T.effective_n_threads(None) == min(64, cpus)
    with pytest.raises(ValueError, match="more than fastnn allows"):
        T.resolve_n_threads(T.MAX_THREADS + 1)
    # a result does not depend on the cap
    x = np.random.default_rng(1).standard_normal((3000, 300)).astype(np.float32)
    np.testing.assert_array_equal(F.softmax(x, n_threads=1024), F.softmax(x, n_threads=1))
    monkeypatch.setattr(T, "_CPUS", 3)
    assert T.effective_n_threads(1024) == (3 if T._OPENMP else 1)


RLIMIT_SCRIPT = """
import resource, sys
import numpy as np
import fastnn
import fastnn._threads as T
from fastnn import functional as F
if len(sys.argv) > 1:
    T._CPUS = 10**6                    # the old behaviour: no ceiling
x = np.random.default_rng(0).standard_normal((4000, 400)).astype(np.float32)
ref = F.softmax(x, n_threads=1)
with open("/proc/self/status") as f:
    vm = [int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:")][0]
# room for a thread stack per CPU (8 MiB each by default) and some heap, not for 1024 stacks
limit = vm + 256 * 2**20 + T._cpus() * 16 * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
out = F.softmax(x, n_threads=1024)
r = F.relu(x, n_threads=1024)
print("OK", np.array_equal(out, ref), flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux")
def test_n_threads_1024_under_an_address_space_limit():
    def run(*args):
        p = subprocess.run([sys.executable, "-c", RLIMIT_SCRIPT, *args], capture_output=True,
                           text=True, timeout=120, cwd=_PKG_PARENT)
        return p.returncode, p.stdout + p.stderr

    rc, out = run()
    assert rc == 0 and "OK True" in out, out
    if T._OPENMP and T._cpus() < 32:
        # the same script without the ceiling dies in libgomp: the test can fail
        rc, out = run("nocap")
        assert rc != 0 and "OK" not in out, out


@needs2
def test_limit_from_a_worker_thread_after_the_main_thread_set_blas(original):
    """threadpoolctl lets only the first thread that changed an OpenBLAS change it again (while
    that thread lives); a limit from a worker thread then had no effect on scipy's OpenBLAS."""
    with threadpoolctl.threadpool_limits(BASE, user_api="blas"):   # the main thread takes it
        seen = {}

        def worker():
            with limit_threads(1):
                seen["inside"] = blas_counts()
            seen["after"] = blas_counts()
        t = threading.Thread(target=worker)
        t.start()
        t.join(30)
        assert set(seen["inside"].values()) == {1}, seen
        assert seen["after"] == original


@pytest.mark.parametrize("optimizer", [None, "sgd"])
def test_network_n_threads_reaches_loss_and_optimizer(monkeypatch, optimizer):
    """Sequential(n_threads=1) is "threads for every kernel call": fit's loss and optimizer
    (made from names) ran at n_threads=None, i.e. on every core."""
    from fastnn import Dense, Sequential

    asked = []
    real = T.effective_n_threads
    monkeypatch.setattr(T, "effective_n_threads", lambda n: asked.append(n) or real(n))
    model = Sequential(Dense(8, 16, "relu", seed=0), Dense(16, 3, seed=1), dtype=np.float64,
                       n_threads=1)
    rng = np.random.default_rng(0)
    model.fit(rng.standard_normal((64, 8)), rng.integers(0, 3, 64), epochs=2, verbose=0,
              optimizer=optimizer, validation_data=(rng.standard_normal((8, 8)),
                                                    rng.integers(0, 3, 8)))
    assert asked and set(asked) == {1}


def test_failed_entry_leaves_no_request(original, monkeypatch):
    """threadpoolctl failing while a limit is set up: the error propagates, no request stays."""
    def broken():
        raise OSError("threadpoolctl failed")
    monkeypatch.setattr(_BLAS_REQUESTS, "_apply", broken)
    with pytest.raises(OSError), limit_threads(1):
        pass
    monkeypatch.undo()
    assert _blas.requests()[0] == 0 and _BLAS_REQUESTS.active() == 0
