"""Fork safety (fastnn/_threads.py, "Fork"): GNU libgomp cannot run a 2-thread parallel region in
the child of a fork made after the parent ran one (its workers are gone, the child waits for them
for ever). fastnn runs such a child serially. Every case runs in its own Python process with a
watchdog: a hang kills the child and fails the test instead of hanging the suite.

The matrix (parent threads x child call x start method) is in RELIABILITY.md, "Processes and
threads".
"""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn._threads as T

# Children start where the fastnn under test lives (its parent directory): ``python -c`` puts
# the working directory first on sys.path, and from the repository root it would import the
# uninstalled source tree (no compiled kernels) instead of the installed package.
_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(T.__file__)))

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

# Inputs above every parallel threshold, so that 2 threads really open an OpenMP team.
SETUP = """
import os, signal, sys, time
import numpy as np
import fastnn
from fastnn import Dense, Dropout, Sequential, optim, functional as F
from fastnn.parameter import Parameter
from fastnn._threads import effective_n_threads
from fastnn.parallel import thread_info

rng = np.random.default_rng(0)
Z = rng.standard_normal((4000, 200)).astype(np.float32)          # softmax / losses
V = rng.standard_normal(2_000_000).astype(np.float32)            # elementwise
LAB = rng.integers(0, 200, 4000)
XD = rng.standard_normal((512, 784)).astype(np.float32)         # dense: large path + prange
WD = (rng.standard_normal((784, 1024)) * 0.03).astype(np.float32)
BD = np.zeros(1024, np.float32)

def net(nt):
    return Sequential(Dense(784, 1024, "relu", seed=0), Dropout(0.2, seed=1),
                      Dense(1024, 10, seed=2), dtype=np.float32, n_threads=nt)

def adam(nt):
    p = Parameter(np.ones(1_000_000, np.float32))
    p.grad = np.full(1_000_000, 0.5, np.float32)
    opt = optim.Adam([p], lr=1e-2, n_threads=nt)
    for _ in range(3):
        opt.step()
    return p.data.copy()

def fit(nt):
    m = net(nt)
    y = np.arange(512) % 10
    m.fit(XD, y, epochs=1, batch_size=256, verbose=0, seed=0, optimizer="sgd", lr=1e-3)
    return m[0].weight.data.copy()

CALLS = {
    "softmax": lambda nt: F.softmax(Z, n_threads=nt),
    "log_softmax": lambda nt: F.log_softmax(Z, n_threads=nt),
    "sparsemax": lambda nt: F.sparsemax(Z, n_threads=nt),
    "relu": lambda nt: F.relu(V, n_threads=nt),
    "tanh": lambda nt: F.tanh(V, n_threads=nt),
    "dropout": lambda nt: F.dropout(V, 0.3, seed=5, n_threads=nt),
    "cross_entropy": lambda nt: F.cross_entropy(Z, LAB, return_grad=True, n_threads=nt)[1],
    "dense_forward": lambda nt: F.dense_forward(XD, WD, BD, "relu", n_threads=nt),
    "predict": lambda nt: net(nt).predict(XD),
    "fit": fit,
    "adam": adam,
    "numpy_matmul": lambda nt: XD @ WD,
}
EXACT = {"softmax", "log_softmax", "sparsemax", "relu", "tanh", "dropout", "cross_entropy",
         "adam"}

def same(name, a, b):
    if name in EXACT:
        return np.array_equal(a, b)
    return np.allclose(a, b, rtol=1e-4, atol=1e-5)

def in_child(fn, deadline=60.0):
    # fork; the child runs fn() and exits with its return code (1 on an exception). The parent
    # waits at most `deadline` seconds, then kills the child and reports a hang.
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = fn()
        except BaseException as e:
            print("child error:", repr(e), flush=True)
        os._exit(code)
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "ok" if os.waitstatus_to_exitcode(status) == 0 else "error"
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "hang"
"""


def run_script(body, timeout=240, env=None):
    """Run SETUP + body in a fresh interpreter; returns its stdout (the test asserts on it)."""
    code = SETUP + textwrap.dedent(body)
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=full_env,
                            start_new_session=True, cwd=_PKG_PARENT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"timed out after {timeout} s (a hang):\n{out}")
    assert proc.returncode == 0, out
    return out


two_cpus = pytest.mark.skipif(T._CPUS < 2 or not T._OPENMP,
                              reason="needs 2 CPUs and an OpenMP build")


@two_cpus
@pytest.mark.parametrize("parent_threads", [1, 2])
def test_fork_after_parallel_region_every_call(parent_threads):
    """The parent runs a 2-thread (or 1-thread) region, forks; the child makes every kind of
    kernel call with n_threads=2 and with None, under a watchdog, and gets the parent's result."""
    out = run_script(f"""
        from fastnn.parallel import limit_threads
        # the parent's regions: with 1 thread, defaults (n_threads=None of the loss and optimizer
        # that fit makes) are held to 1 as well
        with limit_threads({parent_threads}):
            F.softmax(Z, n_threads={parent_threads})
            F.relu(V, n_threads={parent_threads})
            expected = {{name: f({parent_threads}) for name, f in CALLS.items()}}
        print("PARENT_TEAM", fastnn._threads._TEAM_USED, flush=True)
        for name, f in CALLS.items():
            for nt in (2, None):
                def child(name=name, f=f, nt=nt):
                    info = thread_info()
                    ok = same(name, f(nt), expected[name])
                    serial = info["serial_after_fork"] and effective_n_threads(2) == 1
                    print("CHILD", name, nt, ok, serial, flush=True)
                    return 0 if ok else 1
                print("RESULT", name, nt, in_child(child), flush=True)
    """)
    assert f"PARENT_TEAM {parent_threads == 2}" in out, out
    results = [line.split() for line in out.splitlines() if line.startswith("RESULT")]
    assert len(results) == 2 * 12, out
    assert all(r[3] == "ok" for r in results), out
    children = [line.split() for line in out.splitlines() if line.startswith("CHILD")]
    assert len(children) == 2 * 12 and all(c[3] == "True" for c in children), out
    # serial in the child exactly when the parent ran a 2-thread team
    assert all(c[4] == str(parent_threads == 2) for c in children), out


@two_cpus
def test_hang_is_detected_without_the_guard():
    """The harness can fail: with fastnn's record of the parent's team erased before the fork,
    the child runs a 2-thread region and hangs in libgomp; the watchdog reports it."""
    out = run_script("""
        F.softmax(Z, n_threads=2)
        import fastnn._threads as T
        T._TEAM_USED = False                    # pretend the parent never ran a team
        print("RESULT", in_child(lambda: 0 if F.softmax(Z, n_threads=2) is not None else 1,
                                 deadline=8), flush=True)
    """)
    assert "RESULT hang" in out, out


@two_cpus
def test_child_of_a_process_without_teams_keeps_its_threads_and_env_override():
    """A server that loads a model and forks before computing: the child may use 2 threads (and
    still gets them right); FASTNN_FORK_SERIAL=1 makes such a child serial anyway."""
    body = """
        m = net(None)                                   # built, never run: no team yet
        print("TEAM", fastnn._threads._TEAM_USED, flush=True)
        def child():
            print("CHILD", effective_n_threads(2), thread_info()["serial_after_fork"], flush=True)
            return 0 if m.predict(XD).shape == (512, 10) else 1
        print("RESULT", in_child(child), flush=True)
    """
    out = run_script(body)
    assert "TEAM False" in out and "CHILD 2 False" in out and "RESULT ok" in out, out
    out = run_script(body, env={"FASTNN_FORK_SERIAL": "1"})
    assert "CHILD 1 True" in out and "RESULT ok" in out, out


@two_cpus
def test_grandchild_and_threads_in_the_parent():
    """Fork from a forked child (serial too), and fork while another Python thread is running
    dense kernels and limit_threads blocks (their locks and requests must not be inherited
    half-way): children finish and see the BLAS count the process started with."""
    out = run_script("""
        import threading, threadpoolctl
        from fastnn.parallel import limit_threads
        def blas():
            return sorted(i["num_threads"] for i in threadpoolctl.threadpool_info()
                          if i["user_api"] == "blas")
        original = blas()
        F.softmax(Z, n_threads=2)
        def grandchild():
            return 0 if same("softmax", F.softmax(Z, n_threads=2), F.softmax(Z, n_threads=1)) else 1
        def child():
            return 0 if in_child(grandchild) == "ok" and thread_info()["serial_after_fork"] else 1
        print("GRAND", in_child(child), flush=True)

        stop = threading.Event()
        small = rng.standard_normal((4, 16)).astype(np.float32)
        w = rng.standard_normal((16, 8)).astype(np.float32)
        def hammer():
            # BLAS on 1 thread here: a fork while another thread is inside a multi-threaded
            # OpenBLAS call hangs in OpenBLAS's own fork handler, NumPy alone (RELIABILITY.md)
            while not stop.is_set():
                with limit_threads(1):
                    for _ in range(20):
                        F.dense_forward(small, w, n_threads=1)
                F.dense_forward(XD, WD, BD, "relu", n_threads=1)
                F.softmax(Z, n_threads=2)               # OpenMP team in this thread
        t = threading.Thread(target=hammer)
        t.start()
        results = []
        for i in range(15):
            def child():
                F.dense_forward(XD, WD, BD, "relu", n_threads=2)
                with limit_threads(1):
                    F.softmax(Z, n_threads=2)
                ok = blas() == original and fastnn._kernels._blas.requests()[0] == 0
                if not ok:
                    print("child blas", blas(), fastnn._kernels._blas.requests(), flush=True)
                return 0 if ok else 1
            results.append(in_child(child))
            time.sleep(0.01)
        stop.set()
        t.join()
        print("HAMMER", sorted(set(results)), flush=True)
        print("PARENT", blas() == original, fastnn._kernels._blas.requests()[0], flush=True)
    """)
    assert "GRAND ok" in out, out
    assert "HAMMER ['ok']" in out, out
    assert "PARENT True 0" in out, out


@two_cpus
def test_multiprocessing_fork_pool_predict():
    out = run_script("""
        import multiprocessing as mp
        m = net(2)
        expected = m.predict(XD)                 # a 2-thread team in the parent
        def work(i):
            return m.predict(XD[i::4])
        ctx = mp.get_context("fork")
        with ctx.Pool(2) as pool:
            r = pool.map_async(work, range(4))
            parts = r.get(timeout=120)
        ok = all(np.allclose(p, expected[i::4], rtol=1e-4, atol=1e-5) for i, p in enumerate(parts))
        print("POOL", ok, flush=True)
    """)
    assert "POOL True" in out, out


@two_cpus
@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_joblib_backends_predict_and_fit(backend):
    pytest.importorskip("joblib")
    out = run_script(f"""
        import joblib
        m = net(2)
        expected = m.predict(XD)
        def work(model, i):
            w = fit(2)                          # training in the worker, 2 threads asked
            return model.predict(XD[i::4]), w
        with joblib.parallel_config(backend="{backend}", n_jobs=2):
            res = joblib.Parallel(timeout=180)(joblib.delayed(work)(m, i) for i in range(4))
        ok = all(np.allclose(p, expected[i::4], rtol=1e-4, atol=1e-5) for i, (p, _) in enumerate(res))
        w0 = fit(1)
        ok = ok and all(np.allclose(w, w0, rtol=1e-4, atol=1e-6) for _, w in res)
        print("JOBLIB", ok, flush=True)
    """)
    assert "JOBLIB True" in out, out


def test_fork_state_in_this_process_is_unchanged():
    """The handlers only act in children: this process is not serial."""
    assert not (T._SERIAL and T._OPENMP)
    assert T.effective_n_threads(1) == 1
    assert T.effective_n_threads(2) == (min(2, T._CPUS) if T._OPENMP else 1)
