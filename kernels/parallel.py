"""Split one ``nogil`` kernel call into parts run on the session's threads (fused elementwise kernels).

A generated kernel takes ``part, nparts`` after its arrays and computes the output elements of its
part only; the parts cover the output exactly once and every element is computed by the same code
whatever the split, so results do not depend on the thread count. Handing a part to a pool thread
costs microseconds to tens of microseconds (the GIL hand-over, a futex wake-up once the pool's workers
stopped spinning), so the generated wrapper calls
``run_split`` only when its kernel's estimated work is well above that.
"""
from __future__ import annotations

from typing import Any, Callable

from jitort.kernels.threads import intra_op_threads, run_parts


def thread_count() -> int:
    """The session's intra-op thread count; unset, the usable cores (as BLAS would use)."""
    return intra_op_threads()


def run_split(fn: Callable[..., None], args: tuple[Any, ...], max_parts: int) -> None:
    """``fn(*args, part, nparts)`` for every part, with ``nparts = min(threads, max_parts)``, on
    jitort's one pool (threads.run_parts: the calling thread takes any part no worker has started,
    so on a busy machine the split costs no more than running everything here); returns when all
    are done, re-raising a failure."""
    nparts = min(thread_count(), max_parts)
    if nparts <= 1:
        fn(*args, 0, 1)
        return
    run_parts(lambda p: fn(*args, p, nparts), nparts, nparts)
