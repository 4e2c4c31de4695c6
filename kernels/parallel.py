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
    on this thread, the others offered to pool threads; returns when all are done (re-raising a
    failure).

    A part no pool thread has started by the time this thread is free is run here: on a busy
    machine a pool thread may wait milliseconds to be scheduled (measured under load 20 on 2 CPUs:
    a 0.4 ms kernel took 5 ms waiting for its second part), and then the split costs no more than
    running everything here."""
    nparts = min(thread_count(), max_parts)
    if nparts <= 1:
        fn(*args, 0, 1)
        return
    lock = threading.Lock()
    taken = [True] + [False] * (nparts - 1)
    done = [threading.Event() for _ in range(nparts)]
    errors: list[BaseException] = []

    def claim(p: int) -> bool:
        with lock:
            if taken[p]:
                return False
            taken[p] = True
            return True

    def offered(p: int) -> None:
        if not claim(p):
            return
        try:
            fn(*args, p, nparts)
        except BaseException as e:  # noqa: BLE001 - re-raised on the calling thread
            errors.append(e)
        finally:
            done[p].set()

    ex = _pool(nparts - 1)
    for p in range(1, nparts):
        ex.submit(offered, p)
    fn(*args, 0, nparts)
    for p in range(1, nparts):
        if claim(p):
            fn(*args, p, nparts)
        else:
            done[p].wait()
    if errors:
        raise errors[0]
