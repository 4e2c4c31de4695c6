"""A bounded busy-wait without the GIL: the thread pool's fast path for handing work over.

``spin_while(flags, i, old, cycles)`` reads ``flags[i]`` (an int64 array shared between threads)
with an acquire load until it differs from ``old`` or about ``cycles`` CPU cycles have passed, and
returns the last value read. It runs in ``nogil`` machine code: a Python loop would hold the GIL
that the thread it waits for needs to finish (CPython hands the GIL over only every 5 ms to a
thread that asks), and a plain Numba loop would hoist the load out of the loop (nothing in it
writes memory) and never see the change.

Between reads the x86 ``pause`` instruction tells the core it is spinning (on an SMT sibling it
yields the pipeline; elsewhere nothing is emitted). Time is read from ``llvm.readcyclecounter``
(the TSC on x86: about 1-4 cycles per nanosecond on today's hosts); on a target without a cycle
counter it reads 0, and the iteration count (at most ``cycles``: every iteration takes at least a
cycle) still bounds the wait.
"""
from __future__ import annotations

from typing import Any

import llvmlite.binding as ll
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_X86 = ll.get_process_triple().split("-")[0] in ("x86_64", "i386", "i686", "amd64")


@intrinsic
def _load_acquire(typingctx, arr, i):  # type: ignore[no-untyped-def]
    """arr[i] read with an atomic acquire load (never hoisted, never torn)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1):
        return None
    sig = types.int64(arr, types.intp)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        aty = signature.args[0]
        ary = context.make_array(aty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aty, ary, [args[1]])
        return builder.load_atomic(ptr, "acquire", 8)
    return sig, codegen


@intrinsic
def _pause(typingctx):  # type: ignore[no-untyped-def]
    """x86 ``pause``; nothing on other targets."""
    sig = types.void()

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _cycles(typingctx):  # type: ignore[no-untyped-def]
    """The CPU's cycle counter (``rdtsc`` on x86; 0 where the target has none)."""
    sig = types.int64()

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                            "llvm.readcyclecounter")
        return builder.call(fn, [])
    return sig, codegen


@njit(cache=True, nogil=True)
def spin_while(flags, i, old, cycles):  # type: ignore[no-untyped-def]
    """Wait (busy, without the GIL) while flags[i] == old, for about ``cycles`` cycles at most;
    returns flags[i] as last read (== old: the wait timed out)."""
    t0 = _cycles()
    n = 0
    while True:
        v = _load_acquire(flags, i)
        if v != old or n >= cycles:
            return v
        _pause()
        n += 1
        if (n & 31) == 0 and _cycles() - t0 > cycles:
            return _load_acquire(flags, i)
