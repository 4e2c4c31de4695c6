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

_local = threading.local()


def terminated() -> NoReturn:
    """Raise onnxruntime's error for a run whose ``RunOptions.terminate`` is set (marked so the run
    boundary reports it as it is, without a node)."""
    e = Fail("Exiting due to terminate flag being set to true.")
    e.run_state = "terminated"  # type: ignore[attr-defined]
    raise e


def current() -> Any:
    """The ``RunOptions`` of the run this thread is executing, or None."""
    return getattr(_local, "run_options", None)


@contextlib.contextmanager
def running(run_options: Any) -> Iterator[None]:
    """Make ``run_options`` this thread's current run options while a run executes."""
    previous = getattr(_local, "run_options", None)
    _local.run_options = run_options
    try:
        yield
    finally:
        _local.run_options = previous
