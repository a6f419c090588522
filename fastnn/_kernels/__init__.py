"""Compiled kernels of fastnn: typed, nogil, OpenMP. Private: use fastnn.functional.

Conventions (every kernel file follows them):
- inputs are ``const`` typed memoryviews, outputs are caller-provided arrays named ``*_out``;
- kernels never allocate Python objects and never validate: fastnn.functional does that, once;
- float32 and float64 through ``cython.floating``; reductions accumulate in ``double``;
- ``n_threads`` is already resolved (>= 1) by the caller; ``n_threads == 1`` is exactly serial;
- a kernel with an OpenMP path runs it only above its parallel threshold, read and set with the
  module's ``parallel_thresholds() -> dict`` and ``set_parallel_threshold(name, value) -> old``
  (fastnn._kernels._runtime gathers them, public as fastnn.functional.runtime; softmax, sparsemax and maxout still have their own
  setters).

Importing the kernels changes nothing outside fastnn: no environment variable, no setting of
the OpenMP runtime or of a BLAS (how OpenMP workers wait is the user's choice:
OMP_WAIT_POLICY, GOMP_SPINCOUNT; see fastnn/_threads.py).
"""
