"""Compiled kernels of fastnn: typed, nogil, OpenMP. Private: use fastnn.functional.

Conventions (every kernel file follows them):
- inputs are ``const`` typed memoryviews, outputs are caller-provided arrays named ``*_out``;
- kernels never allocate Python objects and never validate: fastnn.functional does that, once;
- float32 and float64 through ``cython.floating``; reductions accumulate in ``double``;
- ``n_threads`` is already resolved (>= 1) by the caller; ``n_threads == 1`` is exactly serial.
"""

import os as _os

# Thread model (fastnn/_threads.py): OpenMP workers must not spin while they wait. libgomp's
# default (GOMP_SPINCOUNT=300000, LLVM libomp's KMP_BLOCKTIME=200ms) keeps idle workers busy-
# waiting between regions; on a machine whose cores are shared (other processes, or OpenBLAS's
# own threads) a spinning worker steals the core the other thread needs, and a 2-thread relu on
# 1e6 floats went from 0.2 ms to 13-21 ms under load. Waiting passively costs a futex wake-up
# (microseconds) per region, which the parallel thresholds of every kernel already cover.
# Set before the OpenMP runtime loads (the first kernel import); the user's own
# OMP_WAIT_POLICY / GOMP_SPINCOUNT / KMP_BLOCKTIME win, and FASTNN_OMP_SPIN=1 keeps the defaults.
if (_os.environ.get("FASTNN_OMP_SPIN", "0") in ("", "0")
        and not any(v in _os.environ for v in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                               "KMP_BLOCKTIME"))):
    _os.environ["GOMP_SPINCOUNT"] = "0"
    _os.environ["KMP_BLOCKTIME"] = "0"
