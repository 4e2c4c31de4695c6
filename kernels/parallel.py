"""Split one ``nogil`` kernel call into parts run on the session's threads (fused elementwise kernels).

A generated kernel takes ``part, nparts`` after its arrays and computes the output elements of its
part only; the parts cover the output exactly once and every element is computed by the same code
whatever the split, so results do not depend on the thread count. Handing a part to a pool thread
costs tens of microseconds (a futex wake-up and the GIL hand-over), so the generated wrapper calls
``run_split`` only when its kernel's estimated work is well above that.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from jitort.kernels.threads import get_num_threads, usable_cpus

_executor: ThreadPoolExecutor | None = None
_executor_pid = 0
_lock = threading.Lock()


def thread_count() -> int:
    """The session's intra-op thread count; unset, the usable cores (as BLAS would use)."""
    return get_num_threads() or usable_cpus()


def _pool(workers: int) -> ThreadPoolExecutor:
    global _executor, _executor_pid
    with _lock:
        # a forked child inherits the executor object but not its threads: make a new one
        if _executor is None or _executor._max_workers < workers or _executor_pid != os.getpid():
            _executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jitort-elementwise")
            _executor_pid = os.getpid()
        return _executor


def run_split(fn: Callable[..., None], args: tuple[Any, ...], max_parts: int) -> None:
    """``fn(*args, part, nparts)`` for every part, with ``nparts = min(threads, max_parts)``: part 0
    on this thread, the others on pool threads; returns when all are done (re-raising a failure)."""
    nparts = min(thread_count(), max_parts)
    if nparts <= 1:
        fn(*args, 0, 1)
        return
    ex = _pool(nparts - 1)
    futs = [ex.submit(fn, *args, p, nparts) for p in range(1, nparts)]
    try:
        fn(*args, 0, nparts)
    finally:
        for f in futs:
            f.result()
