"""The run in progress on this thread, as the code it runs sees it: ``RunOptions.terminate`` is polled
between plan steps (generated plans take the options as ``_ro``) and once per subgraph call (each If
branch, Loop and Scan iteration), so another thread's ``run_options.terminate = True`` stops a run
within a step, as onnxruntime stops between kernels.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator, NoReturn

from jitort.errors import Fail



class _RunLocal(threading.local):
    """Per-thread run state; the class default makes ``current()`` a plain lookup (~0.1 us) on a
    thread that never bound options, where a missing attribute costs ~1.5 us (AttributeError)."""

    run_options: Any = None


_local = _RunLocal()


def terminated() -> NoReturn:
    """Raise onnxruntime's error for a run whose ``RunOptions.terminate`` is set (marked so the run
    boundary reports it as it is, without a node)."""
    e = Fail("Exiting due to terminate flag being set to true.")
    e.run_state = "terminated"  # type: ignore[attr-defined]
    raise e


def current() -> Any:
    """The ``RunOptions`` of the run this thread is executing, or None."""
    return _local.run_options


@contextlib.contextmanager
def bound(local: threading.local, name: str, value: Any) -> Iterator[None]:
    """Set ``local.<name>`` to ``value`` for this thread while a block runs, then restore it (the
    per-run settings that kernels and plans read: run options, tensor limit, profile recorder)."""
    previous = getattr(local, name, None)
    setattr(local, name, value)
    try:
        yield
    finally:
        setattr(local, name, previous)


def running(run_options: Any) -> contextlib.AbstractContextManager[None]:
    """Make ``run_options`` this thread's current run options while a run executes."""
    return bound(_local, "run_options", run_options)
