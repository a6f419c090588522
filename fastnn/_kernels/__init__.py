"""Compiled kernels of fastnn: typed, nogil, OpenMP. Private: use fastnn.functional.

Conventions (every kernel file follows them):
- inputs are ``const`` typed memoryviews, outputs are caller-provided arrays named ``*_out``;
- kernels never allocate Python objects and never validate: fastnn.functional does that, once;
- float32 and float64 through ``cython.floating``; reductions accumulate in ``double``;
- ``n_threads`` is already resolved (>= 1) by the caller; ``n_threads == 1`` is exactly serial.
"""
