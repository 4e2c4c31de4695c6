"""One knob for every thread pool jitort's kernels use: both OpenBLAS copies (numpy's and scipy's,
which ``@njit`` BLAS calls go through) and Numba's own. Two uncoordinated BLAS pools collapsed small
GEMMs to 2 GFLOP/s on this machine (see the Numba notes), so the session sets them together.
"""
from __future__ import annotations

import threading

_lock = threading.Lock()
_current: tuple[int, int] | None = None
_limiter = None


def set_num_threads(n: int, blas: int | None = None) -> None:
    """n threads for jitort's own kernels (Numba's pool, the conv thread split) and ``blas`` (default
    n) for both OpenBLAS pools. A model whose heavy ops are jitort's convolutions passes blas=1:
    OpenBLAS workers spin for a while after each call (a build-time timeout, not settable once numpy
    is loaded), and on a 2-core machine a spinning BLAS worker took the core a conv thread needed
    (light_resnet50 at 2 threads: 110 ms with both pools, 82 ms with BLAS single-threaded, 102 ms at
    1 thread)."""
    global _current, _limiter
    blas = n if blas is None else blas
    with _lock:
        if (n, blas) == _current:
            return
        import numba
        import scipy.linalg.cython_blas  # noqa: F401  (load scipy's OpenBLAS now: threadpoolctl limits only loaded ones)
        from threadpoolctl import threadpool_limits
        _limiter = threadpool_limits(limits=blas, user_api="blas")
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
        _current = (n, blas)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def get_num_threads() -> int | None:
    return None if _current is None else _current[0]


def get_blas_threads() -> int | None:
    return None if _current is None else _current[1]
