"""One budget for every tensor whose size a model computes.

A model is untrusted input: ``ConstantOfShape([2**20, 2**20])``, ``Range(0, 2**42, 1)`` or a Resize
scale of 2**20 ask for terabytes. Kernels whose output size comes from input *values* (or from
attributes) call :func:`check` with the shape before they allocate; it computes the size exactly
(Python integers: no overflow) and raises onnxruntime's ``Fail`` with the op, the shape and the
requested bytes when the size is over the limit, instead of numpy's ``MemoryError`` or
``ValueError: array is too big``. The run boundary (``jitort.node_errors``) adds the node's name.

The limit: the session config entry ``session.jitort.max_tensor_bytes`` for that session's runs;
otherwise ``JITORT_MAX_TENSOR_BYTES``; otherwise half the machine's physical memory. Constant
folding evaluates under a much smaller budget of its own (:func:`budget`): a constant too large to
fold is left to run time, where the session's limit applies.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
from typing import Sequence

import numpy as np

from jitort import run_state
from jitort.errors import Fail, InvalidArgument

CONFIG_KEY = "session.jitort.max_tensor_bytes"


class _Limit(threading.local):
    """This thread's byte limit (None: DEFAULT_LIMIT); the class default keeps ``limit()`` a plain
    lookup where a missing attribute would cost ~1.5 us (an AttributeError) on every ``check``."""

    limit: int | None = None


_local = _Limit()


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not POSIX: a generous fixed default
        return 16 << 30


def _default_limit() -> int:
    env = os.environ.get("JITORT_MAX_TENSOR_BYTES")
    return parse_limit(env, "JITORT_MAX_TENSOR_BYTES") if env else _physical_memory() // 2


def parse_limit(text: str, where: str) -> int:
    """A byte count from a config entry or environment variable (a positive integer)."""
    try:
        n = int(text)
    except ValueError:
        raise InvalidArgument(f"{where} must be a positive integer number of bytes, got '{text}'") from None
    if n <= 0:
        raise InvalidArgument(f"{where} must be a positive integer number of bytes, got {n}")
    return n


DEFAULT_LIMIT = _default_limit()


def limit() -> int:
    """The byte limit in force on this thread."""
    return _local.limit or DEFAULT_LIMIT


def budget(nbytes: int | None) -> contextlib.AbstractContextManager[None]:
    """Run a block under another byte limit (None: leave the current one)."""
    return contextlib.nullcontext() if nbytes is None else run_state.bound(_local, "limit", nbytes)


def check(op: str, shape: Sequence[int], dtype: np.dtype | type, error: type[Exception] = Fail) -> tuple[int, ...]:
    """Validate an output shape computed from a model's values before allocating it: every
    dimension a non-negative integer, the total size within the limit (else ``error``, onnxruntime's
    class for this op's failure: ``Fail`` as its allocator reports it). Returns the shape as ints."""
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise InvalidArgument(f"{op}: the output shape {list(dims)} has a negative dimension")
    itemsize = np.dtype(dtype).itemsize if np.dtype(dtype) != object else 8
    nbytes = math.prod(dims) * itemsize
    cap = limit()
    if nbytes > cap:
        raise error(f"{op}: Failed to allocate memory for requested buffer of size {nbytes} "
                    f"(output shape {list(dims)}, {np.dtype(dtype)}): over jitort's limit of {cap} "
                    f"bytes per tensor (session config entry {CONFIG_KEY})")
    return dims


def finite_count(op: str, value: float, ceil: bool = False) -> int:
    """An element count computed in floating point (Range, Resize), truncated or rounded up:
    finite, or onnxruntime's error."""
    if not math.isfinite(value):
        raise InvalidArgument(f"{op}: the computed number of elements is not a finite value.")
    return math.ceil(value) if ceil else int(value)
