"""A bounded busy-wait and atomic int64 operations without the GIL: the thread pool's fast path.

``spin_while(flags, i, old, budget)`` reads ``flags[i]`` (an int64 array shared between threads)
with an acquire load until it differs from ``old`` or about ``budget`` CPU cycles have passed, and
returns the last value read. It runs in ``nogil`` machine code: a Python loop would hold the GIL
that the thread it waits for needs to finish (CPython hands the GIL over only every 5 ms to a
thread that asks), and a plain Numba loop would hoist the load out of the loop (nothing in it
writes memory) and never see the change.

Between reads the x86 ``pause`` instruction tells the core it is spinning (on an SMT sibling it
yields the pipeline; elsewhere nothing is emitted). ``yield_cpu`` calls the OS's ``sched_yield``
(a spinning thread that another runnable thread is waiting behind hands it the CPU; with none it
returns at once), for waits that should stay cheap on a machine with more runnable threads than
CPUs; where libc has no ``sched_yield`` it is a ``pause``. Time is read from ``llvm.readcyclecounter``
(the TSC on x86: about 1-4 cycles per nanosecond on today's hosts); on a target without a cycle
counter it reads 0, and the iteration count (at most ``budget``: every iteration takes at least a
cycle) still bounds the wait.

The atomics (``load_acquire``, ``load_seq``, ``store_release``, ``store_seq``, ``fetch_add``,
``compare_swap``) act on one element of a 1-D int64 array, for the native jobs of the pool
(native_parts.py). ``*_seq`` and the read-modify-writes are sequentially consistent: a store
followed by a load of another element, on each of two threads (``store_seq`` / ``load_seq``), cannot
both miss the other's store, which the pool's sleep and wait hand-shakes rely on.
"""
from __future__ import annotations

from typing import Any

import ctypes
import ctypes.util

import llvmlite.binding as ll
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_X86 = ll.get_process_triple().split("-")[0] in ("x86_64", "i386", "i686", "amd64")


def _libc_sched_yield() -> bool:
    """Make libc's ``sched_yield`` known to the JIT linker by name (compiled code, cached or not,
    refers to it by symbol); False where libc has none."""
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or None).sched_yield
    except (OSError, AttributeError):
        return False
    ll.add_symbol("sched_yield", ctypes.cast(fn, ctypes.c_void_p).value)
    return True


_SCHED_YIELD = _libc_sched_yield()


def _int64_vector(arr) -> bool:  # type: ignore[no-untyped-def]
    return isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1


def _element(context: Any, builder: Any, aty: Any, arr: Any, i: Any) -> Any:
    ary = context.make_array(aty)(context, builder, arr)
    return cgutils.get_item_pointer(context, builder, aty, ary, [i])


def _load(arr: Any, order: str) -> Any:
    if not _int64_vector(arr):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.load_atomic(_element(context, builder, signature.args[0], *args), order, 8)
    return types.int64(arr, types.intp), codegen


def _store(arr: Any, v: Any, order: str) -> Any:
    if not _int64_vector(arr):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        val = context.cast(builder, args[2], signature.args[2], types.int64)
        builder.store_atomic(val, _element(context, builder, signature.args[0], args[0], args[1]), order, 8)
        return context.get_dummy_value()
    return types.void(arr, types.intp, v), codegen


@intrinsic
def load_acquire(typingctx, arr, i):  # type: ignore[no-untyped-def]
    """arr[i] read with an atomic acquire load (never hoisted, never torn)."""
    return _load(arr, "acquire")


@intrinsic
def load_seq(typingctx, arr, i):  # type: ignore[no-untyped-def]
    """arr[i] read with a sequentially consistent atomic load."""
    return _load(arr, "seq_cst")


@intrinsic
def store_release(typingctx, arr, i, v):  # type: ignore[no-untyped-def]
    """arr[i] = v as an atomic release store."""
    return _store(arr, v, "release")


@intrinsic
def store_seq(typingctx, arr, i, v):  # type: ignore[no-untyped-def]
    """arr[i] = v as a sequentially consistent atomic store."""
    return _store(arr, v, "seq_cst")


@intrinsic
def fetch_add(typingctx, arr, i, v):  # type: ignore[no-untyped-def]
    """arr[i] += v atomically (sequentially consistent); returns the value before."""
    if not _int64_vector(arr):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        val = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", _element(context, builder, signature.args[0], args[0], args[1]), val,
                                  "seq_cst")
    return types.int64(arr, types.intp, v), codegen


@intrinsic
def compare_swap(typingctx, arr, i, old, new):  # type: ignore[no-untyped-def]
    """If arr[i] == old, arr[i] = new, atomically (sequentially consistent); returns whether it did."""
    if not _int64_vector(arr):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        o = context.cast(builder, args[2], signature.args[2], types.int64)
        n = context.cast(builder, args[3], signature.args[3], types.int64)
        res = builder.cmpxchg(_element(context, builder, signature.args[0], args[0], args[1]), o, n,
                              "seq_cst", "seq_cst")
        return builder.extract_value(res, 1)
    return types.boolean(arr, types.intp, old, new), codegen


def _emit_pause(builder: Any) -> None:
    """x86 ``pause`` at the builder's position; nothing on other targets."""
    if _X86:
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                            "llvm.x86.sse2.pause")
        builder.call(fn, [])


@intrinsic
def pause(typingctx):  # type: ignore[no-untyped-def]
    """x86 ``pause``; nothing on other targets."""
    sig = types.void()

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        _emit_pause(builder)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def yield_cpu(typingctx):  # type: ignore[no-untyped-def]
    """libc ``sched_yield()`` (the result ignored); ``pause`` where libc has none."""
    sig = types.void()

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        if _SCHED_YIELD:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
            builder.call(fn, [])
        else:
            _emit_pause(builder)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def cycles(typingctx):  # type: ignore[no-untyped-def]
    """The CPU's cycle counter (``rdtsc`` on x86; 0 where the target has none)."""
    sig = types.int64()

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                            "llvm.readcyclecounter")
        return builder.call(fn, [])
    return sig, codegen


@njit(cache=True, nogil=True)
def spin_while(flags, i, old, budget):  # type: ignore[no-untyped-def]
    """Wait (busy, without the GIL) while flags[i] == old, for about ``budget`` cycles at most;
    returns flags[i] as last read (== old: the wait timed out)."""
    t0 = cycles()
    n = 0
    while True:
        v = load_acquire(flags, i)
        if v != old or n >= budget:
            return v
        pause()
        n += 1
        if (n & 31) == 0 and cycles() - t0 > budget:
            return load_acquire(flags, i)
