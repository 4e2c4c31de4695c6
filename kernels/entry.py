"""``entry``: a compiled kernel called without Numba's dispatch, for the hot calls of small graphs.

A call of an ``@njit`` function from Python first types every argument, then looks the type tuple up
among the compiled signatures. Measured per argument on the Intel Xeon (Ice Lake) dev VM (Python
3.11, Numba 0.68, a 5-argument function, medians): an int ~0.02 us, an array ~0.2 us, but a Python
float ~0.45 us, a bool ~0.4 us and a NumPy float32 scalar ~0.55 us (those take the dispatcher's slow
typing path). A decode step of a small model makes ~30 such calls, each with flags and a float or
two, on work of a few microseconds: the typing was a large part of its time.

``Entry(dispatcher, sig)`` holds the function compiled for one signature (compiled, or loaded from
Numba's cache: the same code and cache entry a dispatched call with those types makes), as Numba's
own compiled wrapper. It converts Python scalars to the signature's scalar types (an int or a bool
to int64 or bool, a float to float64 or float32) but unboxes arrays without checking their dtype,
rank or layout: a float64 array would be read as float32, a strided one as contiguous. Its callers
pass exactly the signature's types; they check what the plan cannot guarantee (runtime dtypes,
ranks, contiguity) and take the dispatched call otherwise.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from numba import types
from numba.np.numpy_support import from_dtype

class Entry:
    """The compiled entry of ``dispatcher`` for the argument types ``sig``, made on first use: call
    ``(e.fn or e.get())(*args)`` (two attribute reads; the first call compiles or loads it)."""

    def __init__(self, dispatcher: Any, sig: tuple[Any, ...]) -> None:
        self.dispatcher, self.sig = dispatcher, sig
        self.fn: Callable[..., Any] | None = None

    def get(self) -> Callable[..., Any]:
        if self.fn is None:
            self.fn = self.dispatcher.compile(self.sig)
        return self.fn


def c_array(dtype: Any, ndim: int) -> Any:
    """Numba's type of a C-contiguous, aligned, writeable array (what a NumPy allocation is)."""
    return types.Array(from_dtype(np.dtype(dtype)), ndim, "C")
