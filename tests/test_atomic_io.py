"""Atomic model and checkpoint writes: a writer killed mid-write (SIGKILL, no cleanup) leaves
the previous file intact and loadable. fastnn.save writes a temporary file in the target's
directory, fsyncs it and renames it over the target; a killed writer can leave only that
hidden temporary (``.<name>.*.tmp``) behind, never a partial model file.

Truncated and tampered files are covered in test_io.py (and the bad-input catalogue).
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastnn

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

_WRITER = r"""
import sys
import numpy as np
import fastnn
from fastnn import Dense, Sequential
path, mode = sys.argv[1], sys.argv[2]
# ~12 MB of float32 weights: each write takes long enough to be caught in the middle
model = Sequential(Dense(1000, 1500, seed=1), Dense(1500, 1000, seed=2))
if mode == "save":
    print("ready", flush=True)
    k = 0
    while True:
        model[0].bias.data[0] = k  # every write differs
        fastnn.save(model, path)
        k += 1
else:  # checkpoints written by fit, every epoch
    from fastnn.callbacks import ModelCheckpoint
    X = np.random.default_rng(0).standard_normal((16, 1000)).astype(np.float32)
    y = np.zeros((16, 1000), np.float32)
    print("ready", flush=True)
    model.fit(X, y, loss="squared", optimizer="sgd", lr=1e-4, epochs=10**6, batch_size=16,
              verbose=0, callbacks=[ModelCheckpoint(path)])
"""


def _child_env():
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _old_model():
    return fastnn.Sequential(fastnn.Dense(1000, 1500, seed=7), fastnn.Dense(1500, 1000, seed=8))


@pytest.mark.parametrize("mode", ["save", "checkpoint"])
def test_killed_writer_leaves_a_loadable_file(tmp_path, mode, wait_for_write):
    path = str(tmp_path / "model.npz")
    old = _old_model()
    fastnn.save(old, path)
    rng = np.random.default_rng(0)
    caught_mid_write = 0
    trials = 0
    # kill at random moments (odd trials) and as soon as a temporary appears (even trials: a
    # write in progress, whatever the speed of this machine's disk), until one kill has
    # interrupted a write (a temporary was left), at least four times and at most 10 times;
    # every kill must leave a loadable target
    while trials < 4 or (caught_mid_write == 0 and trials < 10):
        trials += 1
        # cwd: `python -c` puts the working directory first on sys.path, so run it where the
        # fastnn under test lives (not the source tree when testing an installed fastnn).
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, path, mode],
                                stdout=subprocess.PIPE, env=_child_env(),
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__))))
        try:
            assert proc.stdout.readline().strip() == b"ready"
            if trials % 2:
                time.sleep(0.1 + float(rng.uniform(0.0, 0.3)))
            else:
                wait_for_write(tmp_path, proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        leftovers = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
        caught_mid_write += bool(leftovers)
        # the target is a complete model: the old one or one of the writer's
        loaded = fastnn.load(path)
        assert [p.data.shape for p in loaded.parameters()] == \
            [p.data.shape for p in old.parameters()]
        for name in leftovers:
            # killed while writing (truncated: a clear error) or before the rename (complete)
            try:
                fastnn.load(tmp_path / name)
            except fastnn.ModelFileError:
                pass
            os.unlink(tmp_path / name)
    assert caught_mid_write >= 1, f"no kill interrupted a write in {trials} trials"


def test_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.npz"
    fastnn.save(_old_model(), path)
    before = path.read_bytes()

    class Bad:  # a model whose state cannot be written
        dtype = np.float32

        def named_parameters(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fastnn.save(Bad(), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]
