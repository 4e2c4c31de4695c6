"""``Entry``: a compiled kernel called without Numba's dispatch, for the hot calls of small graphs.

A call of an ``@njit`` function from Python first types every argument, then looks the type tuple up
among the compiled signatures. Measured on the Intel Xeon (Ice Lake) dev VM (Python 3.11, Numba
0.68, load ~4.5, so noisy; 5-argument functions of one signature each): ~0.3 us per array and per
bool, ~0.2 us per NumPy float32 scalar, next to nothing per int or Python float. Calls with several
arrays and flags on a few microseconds of work pay it every time: interleaved, ``_norm_rows`` on one
64-float row 7.4 us dispatched vs 4.3 us through its entry, the GEMM kernel on 1 x 64 x 64 5.6 vs
4.3 us. (GroupQueryAttention's ``decode_step`` showed no gain: its cost is elsewhere.)

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
