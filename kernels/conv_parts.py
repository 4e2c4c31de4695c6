"""Conv kernels' splits as native parts: the argument vector a conv part function reads.

Every conv kernel that splits its work takes ``(..., sc, part, nparts)`` and computes its share of
output channels, rows or positions from them. conv.py runs those kernels through a part function
(``native_parts.PART_SIG``: ``void part(int64 k, int64 *argv)``), which the pool's workers call
without the GIL (threads.py's ``run_native``); before, each part was a Numba dispatcher call made
from Python: 20-45 us of GIL hand-over per part handed to a worker (threads.py's docstring), on
convolutions of often under 100 us.

This module holds what is the same for every kernel: the argument vector's layout (``conv_argv``
writes it, ``view1``..``view5`` rebuild the arrays from it), and ``PartFactory``, the mapping
``native_parts.CFuncs`` compiles its keys from. conv.py's part functions (one closure factory for
every kernel, dtype, residual and epilogue kind) call the kernels themselves: a closure captures
only plain constants, never a dispatcher (its pickle holds a per-process uuid, so Numba's cache,
keyed by the pickled closure cells, would miss in every new process).

Scratch: each part gets its own slice of one buffer (``threads.scratch``, 64-byte aligned) of
``nparts`` slices, each ``SCRATCH_ALIGN`` bytes aligned (``part_stride``): parts run on different
threads at once, and the kernels load whole vectors from their scratch.
"""
from __future__ import annotations

from typing import Any, Callable, Hashable

import numpy as np
from numba import carray, njit

from jitort.kernels.native_parts import addr, as_ptr, call_part

SCRATCH_ALIGN = 64  # bytes: what jitort.allocator aligns to (the GEMM panels' whole-vector loads)

# argv: these int64 slots, then one block of ARR_SLOTS per array (address, then up to 5 dims)
# BLK: a kernel's block size where the per-shape plan chooses it (Winograd: tile rows per block)
NPARTS, SC_STRIDE, OD, OH, OW, ACT, GA, PH, PW, BLK = range(10)
ARR_SLOTS = 6
X, W, B, OUT, Z, GEO, PRM, SC = (16 + ARR_SLOTS * i for i in range(8))
ARGC = SC + ARR_SLOTS


def part_stride(nsc: int, itemsize: int) -> int:
    """Elements between two parts' scratch slices: nsc rounded up to whole SCRATCH_ALIGN bytes."""
    q = SCRATCH_ALIGN // itemsize
    return -(-max(nsc, 1) // q) * q


@njit(inline="always")
def _put(argv, s, a):  # type: ignore[no-untyped-def]
    argv[s] = addr(a)
    shp = a.shape
    for i in range(len(shp)):
        argv[s + 1 + i] = shp[i]


@njit(cache=True, nogil=True)
def conv_argv(fn, x, w, b, out, z, geo, prm, sc, stride, nparts, od, oh, ow, act, ga, blk):  # type: ignore[no-untyped-def]
    """The argument vector of a conv part function: every array C-contiguous (the caller checks)
    and alive until the job ends; z None when there is no residual; sc holds nparts slices of
    ``stride`` elements (``part_stride``). With one part, also runs it (part function ``fn``) here,
    without the GIL: a one-part conv then costs one call from Python, not two."""
    # free for arrays typed C-contiguous (Numba answers from the type); a part reading a strided
    # array through its address alone would compute a wrong answer silently
    ok = x.flags.c_contiguous and w.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous
    ok = ok and geo.flags.c_contiguous and prm.flags.c_contiguous and sc.flags.c_contiguous
    if z is not None:
        ok = ok and z.flags.c_contiguous
    if not ok:
        raise ValueError("conv_argv: the arrays must be C-contiguous")
    argv = np.zeros(ARGC, np.int64)
    argv[NPARTS], argv[SC_STRIDE] = nparts, stride * sc.itemsize
    argv[OD], argv[OH], argv[OW], argv[ACT], argv[GA], argv[BLK] = od, oh, ow, act, ga, blk
    argv[PH], argv[PW] = geo[11], geo[12]  # the begin pads (Winograd takes them as scalars)
    _put(argv, X, x)
    _put(argv, W, w)
    _put(argv, B, b)
    _put(argv, OUT, out)
    if z is not None:
        _put(argv, Z, z)
    _put(argv, GEO, geo)
    _put(argv, PRM, prm)
    argv[SC], argv[SC + 1] = addr(sc), stride
    if nparts == 1:
        call_part(fn, 0, addr(argv))
    return argv


@njit(inline="always")
def view1(argv, s, dt):  # type: ignore[no-untyped-def]
    return carray(as_ptr(argv[s], dt), (argv[s + 1],))


@njit(inline="always")
def view2(argv, s, dt):  # type: ignore[no-untyped-def]
    return carray(as_ptr(argv[s], dt), (argv[s + 1], argv[s + 2]))


@njit(inline="always")
def view3(argv, s, dt):  # type: ignore[no-untyped-def]
    return carray(as_ptr(argv[s], dt), (argv[s + 1], argv[s + 2], argv[s + 3]))


@njit(inline="always")
def view4(argv, s, dt):  # type: ignore[no-untyped-def]
    return carray(as_ptr(argv[s], dt), (argv[s + 1], argv[s + 2], argv[s + 3], argv[s + 4]))


@njit(inline="always")
def view5(argv, s, dt):  # type: ignore[no-untyped-def]
    return carray(as_ptr(argv[s], dt), (argv[s + 1], argv[s + 2], argv[s + 3], argv[s + 4], argv[s + 5]))


@njit(inline="always")
def part_scratch(argv, k, dt):  # type: ignore[no-untyped-def]
    """Part k's own scratch slice."""
    return carray(as_ptr(argv[SC] + k * argv[SC_STRIDE], dt), (argv[SC + 1],))


class PartFactory:
    """The ``fns`` mapping of a ``native_parts.CFuncs`` whose functions a factory makes on demand:
    ``self[key]`` is ``make(*key)``, named ``name`` plus the key (what its compile is recorded as,
    and its own Numba index file: one signature per file, see the Numba notes on index races)."""

    def __init__(self, name: str, make: Callable[..., Callable[..., Any]]) -> None:
        self.name, self.make = name, make

    def __getitem__(self, key: Hashable) -> Callable[..., Any]:
        fn = self.make(*key)  # type: ignore[misc]
        label = "_".join(getattr(k, "__name__", str(k)) for k in key)  # type: ignore[attr-defined]
        fn.__name__ = fn.__qualname__ = f"{self.name}_{label}"
        return fn
