"""One knob for every thread pool jitort's kernels use: both OpenBLAS copies (numpy's and scipy's,
which ``@njit`` BLAS calls go through) and Numba's own. Two uncoordinated BLAS pools collapsed small
GEMMs to 2 GFLOP/s on this machine (see the Numba notes), so the session sets them together.
"""
from __future__ import annotations

import threading

_lock = threading.Lock()
_current: int | None = None
_limiter = None


def set_num_threads(n: int) -> None:
    global _current, _limiter
    with _lock:
        if n == _current:
            return
        import numba
        import scipy.linalg.cython_blas  # noqa: F401  (load scipy's OpenBLAS now: threadpoolctl limits only loaded ones)
        from threadpoolctl import threadpool_limits
        _limiter = threadpool_limits(limits=n, user_api="blas")
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
        _current = n


def get_num_threads() -> int | None:
    return _current
