"""Data larger than memory: one epoch over a 2 GiB memmap and a 2 GiB Dask array, with the
peak resident memory of the training process (VmHWM) under 500 MB.

Each case runs in a fresh child process, so the peak is that of the training alone. The memmap
is a sparse 2 GiB file of float64 zeros (nothing is written to disk); the Dask array is
generated block by block by ``dask.array.random``. The network is MNIST-shaped (784 inputs,
10 classes) and small, so the epoch is short and the data dominates the memory.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.slow

GIB = 1 << 30
LIMIT_MB = 500
N_FEATURES = 784
N_ROWS = 2 * GIB // (N_FEATURES * 8)     # float64 rows in 2 GiB: 342,392

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np

    def hwm_mb():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024

    kind, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from fastnn import Dense, Sequential
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, size=n)
    if kind == "memmap":
        X = np.memmap(path, dtype=np.float64, mode="r", shape=(n, 784))
    else:
        import dask
        import dask.array as da
        dask.config.set(scheduler="threads", num_workers=2)
        X = da.random.default_rng(0).random((n, 784), chunks=(5000, 784))
    model = Sequential(Dense(784, 16, activation="relu", seed=0), Dense(16, 10, seed=1))
    before = hwm_mb()
    t0 = time.perf_counter()
    h = model.fit(X, y, epochs=1, batch_size=512, verbose=0, seed=0)
    print(json.dumps({"kind": kind, "data_mb": n * 784 * 8 / 2**20, "rows": n,
                      "hwm_before_fit_mb": before, "hwm_mb": hwm_mb(),
                      "fit_s": time.perf_counter() - t0, "loss": h.history["loss"][0],
                      "samples": int(h.history["samples_per_s"][0]
                                     * h.history["time"][0] + 0.5)}))
""")


def _run(kind, path):
    import fastnn
    env = dict(os.environ, OMP_NUM_THREADS="2")
    # started where the fastnn under test lives: from the repository root ``python -c`` would
    # import the uninstalled source tree
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(path), str(N_ROWS)],
                         capture_output=True, text=True, timeout=900, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__))))
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(result)
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_two_gib_memmap_trains_in_under_500_mb(tmp_path):
    path = tmp_path / "X.f64"
    with open(path, "wb") as f:          # a sparse file: no disk blocks are written
        f.truncate(N_ROWS * N_FEATURES * 8)
    try:
        r = _run("memmap", path)
    finally:
        path.unlink()
    assert r["data_mb"] > 2000 and r["samples"] == N_ROWS
    assert np.isfinite(r["loss"])
    assert r["hwm_mb"] < LIMIT_MB, r


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_two_gib_dask_array_trains_in_under_500_mb():
    pytest.importorskip("dask.array")
    r = _run("dask", "-")
    assert r["data_mb"] > 2000 and r["samples"] == N_ROWS
    assert np.isfinite(r["loss"])
    assert r["hwm_mb"] < LIMIT_MB, r
