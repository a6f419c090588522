"""fit with libgomp's default wait policy against passive waits (``GOMP_SPINCOUNT=0``).

The wait policy is read once by the OpenMP runtime, for the whole process, so each measurement
is a fresh process: 784-256-256-10 relu + Adam, float32, 2 threads, random data, best of 3
epochs; the two settings interleaved over ROUNDS rounds; samples/s, medians. Results:
benchmarks/README.md, "Parallel thresholds".

    PYTHONPATH=. python benchmarks/bench_wait_policy.py [ROUNDS]
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys

CHILD = r"""
import sys, time
import numpy as np
import fastnn
from fastnn import Dense, Sequential
batch = int(sys.argv[1])
rng = np.random.default_rng(0)
n = 8192 if batch == 16 else 16384
X = rng.random((n, 784), dtype=np.float32)
y = rng.integers(0, 10, n)
m = Sequential(Dense(784, 256, "relu", seed=0), Dense(256, 256, "relu", seed=1),
               Dense(256, 10, seed=2), n_threads=2)
fastnn.fit(m, X[:1024], y[:1024], optimizer="adam", epochs=1, batch_size=batch, verbose=0, seed=0)
ts = []
for _ in range(3):
    t = time.perf_counter()
    fastnn.fit(m, X, y, optimizer="adam", epochs=1, batch_size=batch, verbose=0, seed=0)
    ts.append(time.perf_counter() - t)
print(n / min(ts))
"""
WAIT_VARS = ("GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")


def one(batch, mode, pythonpath):
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARS}
    if mode == "passive":
        env["GOMP_SPINCOUNT"] = "0"
        env["KMP_BLOCKTIME"] = "0"
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, "-c", CHILD, str(batch)], env=env,
                         capture_output=True, text=True, cwd=os.path.dirname(pythonpath or "."))
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return float(out.stdout.split()[-1])


def main(rounds=5):
    root = os.path.abspath(os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] or ".")
    res: dict = {}
    for r in range(rounds):
        for batch in (16, 128):
            for mode in (("passive", "default") if r % 2 == 0 else ("default", "passive")):
                v = one(batch, mode, root)
                res.setdefault((batch, mode), []).append(v)
                print(f"batch {batch:4d} {mode:8s} {v:9.0f} samples/s  "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
    for (batch, mode), v in sorted(res.items()):
        print(f"batch {batch:4d} {mode:8s} median {statistics.median(v):9.0f}  "
              f"all {[round(x) for x in v]}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
