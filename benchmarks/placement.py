"""vCPU placement probe for the benchmarks: cache-line round trip between two CPUs (ns).

On a VM the host may move two vCPUs between "near" (same L3: ~55 ns round trip on the build
machine) and "far" (different L3/CCD: ~320 ns) every few seconds, and every multi-threaded
library slows down in the far state. ``bench_peers.py`` probes before and after each timed run
so that each number comes with the state it was measured in.

The probe is ``pingpong.c`` (beside this file), compiled at first use with the system C compiler
(``$CC`` or ``cc``) into a cache folder under the temporary directory and loaded with ctypes.
It is not part of the fastnn package. Without a compiler (or on a machine with fewer than two
usable CPUs) :func:`probe` returns None and the reports say "n/a".
"""
from __future__ import annotations

import ctypes
import hashlib
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "pingpong.c")
# Round trips above this are reported as the "far" state (the build VM showed ~55 vs ~320 ns).
FAR_NS = 150.0

_lib = None
_why_not = None


def _compile():
    """Path of the built shared library, or raises RuntimeError with the reason."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler (set CC)")
    with open(SOURCE, "rb") as fh:
        digest = hashlib.sha1(fh.read() + cc.encode()).hexdigest()[:12]
    folder = os.path.join(tempfile.gettempdir(), f"fastnn-bench-{os.getuid()}")
    os.makedirs(folder, exist_ok=True)
    out = os.path.join(folder, f"pingpong-{digest}.so")
    if not os.path.exists(out):
        tmp = f"{out}.{os.getpid()}.tmp"
        cmd = cc.split() + ["-O2", "-std=c11", "-shared", "-fPIC", "-pthread", SOURCE, "-o", tmp]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()[:300]}")
        os.replace(tmp, out)
    return out


def _load():
    global _lib, _why_not
    if _lib is not None or _why_not is not None:
        return _lib
    if not sys.platform.startswith("linux"):
        _why_not = "Linux only"
        return None
    try:
        lib = ctypes.CDLL(_compile())
        fn = lib.fastnn_pingpong
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_long, ctypes.c_double, ctypes.c_int, ctypes.c_int,
                       ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_long)]
        _lib = lib
    except (RuntimeError, OSError) as exc:
        _why_not = str(exc)
    return _lib


def why_unavailable() -> str | None:
    """None when the probe works, else the reason."""
    _load()
    return _why_not


def cpu_pair() -> tuple[int, int] | None:
    """The two CPUs probed: the first two this process may run on."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else None


def probe(samples: int = 3, round_trips: int = 20000, budget_s: float = 0.004) -> float | None:
    """Round-trip time in ns: the median over ``samples`` bursts (each at most ``budget_s``
    seconds) of each burst's median 32-round-trip chunk. ``math.inf`` when no chunk completed
    (a CPU held by another process), None when the probe is unavailable. Costs about
    samples x budget_s of wall time."""
    lib = _load()
    pair = cpu_pair()
    if lib is None or pair is None:
        return None
    ns, chunks = ctypes.c_double(), ctypes.c_long()
    out = []
    for _ in range(samples):
        rc = lib.fastnn_pingpong(round_trips, budget_s, pair[0], pair[1], ctypes.byref(ns),
                                 ctypes.byref(chunks))
        if rc == 0:
            out.append(ns.value)
        elif rc == -2:
            out.append(math.inf)
    return float(np.median(out)) if out else None


def state(ns: float | None) -> str:
    """'near', 'far', 'held' (no round trip completed) or 'n/a' for a round-trip time."""
    if ns is None:
        return "n/a"
    if math.isinf(ns):
        return "held"
    return "far" if ns > FAR_NS else "near"


def describe() -> str:
    """One line: what is probed, or why not."""
    pair = cpu_pair()
    why = why_unavailable() or (None if pair else "fewer than two usable CPUs")
    if why:
        return f"placement probe: n/a ({why})"
    return (f"placement probe: cache-line round trip CPU {pair[0]} <-> CPU {pair[1]}, "
            f"median 32-round-trip chunk, median of 3 bursts; 'far' above {FAR_NS:.0f} ns")


if __name__ == "__main__":
    import time
    print(describe())
    t_end = time.time() + (float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
    while time.time() < t_end:
        v = probe()
        print(f"{time.strftime('%H:%M:%S')} {v if v is None else round(v, 1)} ns ({state(v)})",
              flush=True)
        time.sleep(0.25)
