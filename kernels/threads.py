"""Threads of jitort's kernels: one knob for every pool they use, and jitort's own worker pool.

``set_num_threads`` sets both OpenBLAS copies (numpy's and scipy's, which ``@njit`` BLAS calls go
through) and Numba's own pool together: two uncoordinated BLAS pools collapsed small GEMMs to
2 GFLOP/s on this machine (see the Numba notes).

``run_parts`` is the kernels' own pool (convolution, pooling, tree ensembles): a kernel split into
``nparts`` independent parts (``nogil`` code) runs part 0 on the calling thread and the others on
persistent worker threads. ``parts_for`` decides how many parts a piece of work is worth: none
beyond the session's thread count, the units the work splits into, or one per ``PART_FLOPS`` of
work (below ~50 us per thread, handing work to another thread costs more than it saves).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
from jitort.cache import import_file

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
        # scipy's OpenBLAS is loaded already (jitort.kernels' import): threadpoolctl limits only
        # loaded libraries
        from threadpoolctl import threadpool_limits
        _limiter = threadpool_limits(limits=blas, user_api="blas")
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
        _current = (n, blas)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def get_num_threads() -> int | None:
    return None if _current is None else _current[0]


def intra_op_threads() -> int:
    """The session's intra-op thread count; unset, the usable cores (as BLAS would use)."""
    return get_num_threads() or usable_cpus()


PART_FLOPS = 4e6  # below ~50 us of work per thread, handing work to a pool thread costs more


def parts_for(units: int, work: float, per_part: float | None = None) -> int:
    """How many parts to split work of ``units`` independent units and ``work`` flops (or any
    cost in the unit of ``per_part``, default ``PART_FLOPS``) into: at most the session's
    threads, at least 1."""
    return max(1, min(intra_op_threads(), units, int(work // (PART_FLOPS if per_part is None else per_part))))


_executor: ThreadPoolExecutor | None = None
_executor_pid = 0
_executor_lock = threading.Lock()


def run_parts(fn: Callable[[int], None], nparts: int) -> None:
    """fn(part) for part in range(nparts): part 0 on this thread, the others on jitort's worker
    threads (fn should release the GIL: ``nogil`` kernels). Returns when every part is done and
    re-raises the first part's exception. Parts must write disjoint outputs, so results do not
    depend on which thread ran a part.

    A part no worker has started when this thread is done with its own, this thread takes over
    (each part is claimed once, by whoever comes first): on a busy machine a worker thread may wait
    milliseconds for a CPU, and the call then costs what one thread costs instead of that wait."""
    global _executor, _executor_pid
    if nparts <= 1:
        fn(0)
        return
    with _executor_lock:
        # a forked child inherits the executor object but not its threads: make a new one
        if _executor is None or _executor._max_workers < nparts - 1 or _executor_pid != os.getpid():
            _executor = ThreadPoolExecutor(max_workers=nparts - 1, thread_name_prefix="jitort-kernel")
            _executor_pid = os.getpid()
        ex = _executor
    claims = [threading.Lock() for _ in range(nparts)]

    def claimed(p: int) -> None:
        if claims[p].acquire(blocking=False):
            fn(p)
    futs = [ex.submit(claimed, p) for p in range(1, nparts)]
    try:
        fn(0)
        for p in range(1, nparts):
            claimed(p)
    finally:
        for f in futs:
            f.result()


_local = threading.local()


def scratch(n: int, dt: np.dtype) -> np.ndarray:
    """A per-thread working buffer of at least n elements of dt, reused across calls (one kernel
    uses it at a time per thread; concurrent sessions run in different threads). Reuse matters:
    a fresh buffer over glibc's mmap threshold is mapped and page-faulted on every call."""
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    a = bufs.get(dt)
    if a is None or a.shape[0] < n:
        a = bufs[dt] = np.empty(max(n, 1), dt)
    return a


_BLAS = "scipy.linalg.cython_blas"


def load_scipy_blas() -> None:
    """Load scipy's BLAS module (what ``np.dot`` in ``@njit`` code calls) without running
    ``scipy/linalg/__init__.py``.

    Numba's first compile or cache load in a process imports ``scipy.linalg.cython_blas`` (its numpy
    registry checks for BLAS), and Python runs the package's ``__init__`` first: ~0.2 s of scipy
    imports (array-API shims that import numpy.f2py, docstring parsing) that the extension module
    does not need, a third of a warm session's creation (measured). This loads the extension from
    its file and registers it; if ``scipy.linalg`` is imported later, a one-shot import hook sets
    its ``cython_blas`` attribute (Python sets it only when it loads the submodule itself). If
    scipy.linalg is already imported, or anything here fails, the plain import runs instead.

    ``jitort.kernels`` calls it when imported, before any session sets thread limits: threadpoolctl
    limits only libraries loaded at the time, and scipy's OpenBLAS loaded later kept its default
    thread count (a 1-thread bidirectional LSTM ran 7x slower on a busy machine)."""
    if _BLAS in sys.modules:
        return
    if "scipy.linalg" not in sys.modules:
        try:
            import scipy

            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = f"{scipy.__path__[0]}/linalg/cython_blas{suffix}"
                if os.path.exists(path):
                    import_file(_BLAS, path)
                    sys.meta_path.insert(0, _LinkBlasOnImport())
                    return
        except Exception:  # noqa: BLE001 - fall back to the plain import below
            pass
    import scipy.linalg.cython_blas  # noqa: F401


class _LinkBlasOnImport(importlib.abc.MetaPathFinder):
    """When ``scipy.linalg`` is imported after ``load_scipy_blas``, sets its ``cython_blas``
    attribute to the module already loaded; removes itself on first use."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "scipy.linalg":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            if _BLAS in sys.modules:
                module.cython_blas = sys.modules[_BLAS]
        spec.loader.exec_module = exec_module  # type: ignore[method-assign]  # this module's own loader
        return spec
