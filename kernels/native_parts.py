"""Native parts: split work that jitort's pool runs without the GIL.

A *part function* is a C function ``void part(int64 k, int64 *argv)`` (a Numba ``cfunc`` with the
signature ``PART_SIG``) that computes part k of a job. Its arrays travel in ``argv`` as addresses and
sizes (``addr``; ``as_ptr`` turns an address back into a typed pointer for ``numba.carray``, and
``f32_arg``/``set_f32_arg`` carry float32 scalars). The caller keeps every array alive and waits for
the job. A part cannot raise (a ``cfunc`` has nowhere to send an exception): callers validate before
they split.

The job protocol, all of it ``nogil`` machine code (threads.py's ``Pool`` drives it; Python only
sleeps and wakes): the control array ``ctl`` (int64, one cache line per hot word) holds

- ``GEN``: the number of the job last published, times 2, + 1 for a native job (0 for a Python job);
  workers spin on it (``worker_wait``), bounded, then sleep on the pool's condition variable.
- ``CLAIM``: the published native job's claim word: part k (bits 0-15), parts n (16-31), helpers h
  (32-39: workers 1..h may take parts; the caller is 0), job number (40-62). A thread claims part k
  with a compare-and-swap of the word to k + 1, so a claim can only ever take a part of the job
  published at that moment (a worker that read a word of a finished job fails its swap), and only
  then reads ``FN``/``ARGV``: the job cannot end, nor be replaced, while one of its parts is claimed.
- ``FINISHED``: parts done; the thread that finishes the last one reads ``WAITING``.
- ``WAITING``: set by a caller that stopped spinning and will block; the thread that finishes the
  last part then returns to Python to wake it. Both sides store, then load the other's word,
  sequentially consistent: one of them always sees the other (no lost wake-up).
- ``SLEEPERS``: workers asleep (or about to be) on the condition variable; a caller that publishes
  while it is non-zero wakes them.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Hashable

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.extending import intrinsic

from jitort.cache import record_compile

from jitort.kernels.spin import compare_swap, cycles, fetch_add, load_acquire, load_seq, pause, store_release, \
    store_seq, yield_cpu

PART_SIG = types.void(types.int64, types.CPointer(types.int64))

# ctl layout: each hot word on its own 64-byte line
GEN, CLAIM, FINISHED, WAITING, FN, ARGV, PYDONE, SLEEPERS = 0, 8, 16, 24, 32, 33, 40, 48
CTL_SIZE = 56
MAX_PARTS = (1 << 16) - 1
MAX_HELPERS = 255
GEN_MASK = (1 << 23) - 1
MAX_WAIT_SPIN = 1_000_000  # cycles (~0.4 ms at 2.6 GHz) a caller may spin for a part still running

# worker_wait's answers
TIMED_OUT, PYTHON_JOB, WAKE_CALLER = 0, 1, 2
# native_run's answers
DONE, MUST_BLOCK, MUST_WAKE = 1, 0, 2


class CFuncs:
    """C functions (``cfunc`` of ``sig``) made from ``fns[key]`` on first use, compiled or loaded from
    Numba's cache, and kept alive for the process (jobs and kernels hold their addresses). A model
    compiles only the keys it uses; a fresh compile is recorded (``jitort.cache.record_compile``)."""

    def __init__(self, module: str, sig: Any, fns: dict[Hashable, Callable[..., Any]]) -> None:
        self.module, self.sig, self.fns = module, sig, fns
        self.made: dict[Hashable, Any] = {}
        self.lock = threading.Lock()

    def address(self, key: Hashable) -> int:
        f = self.made.get(key)
        if f is None:
            with self.lock:
                f = self.made.get(key)
                if f is None:
                    t0 = time.perf_counter()
                    f = cfunc(self.sig, cache=True, error_model="numpy")(self.fns[key])
                    if not f.cache_hits:
                        record_compile(f"{self.module}.{self.fns[key].__name__}", time.perf_counter() - t0)
                    self.made[key] = f
        return int(f.address)


@intrinsic
def call_part(typingctx, fn, k, argv):  # type: ignore[no-untyped-def]
    """Call the part function at address fn: ``fn(k, (int64 *) argv)``."""
    if not all(isinstance(t, types.Integer) for t in (fn, k, argv)):
        return None
    sig = types.void(fn, k, argv)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(ir.VoidType(), [i64, i64.as_pointer()])
        f_, k_, p_ = [context.cast(builder, x, t, types.int64) for x, t in zip(args, signature.args)]
        builder.call(builder.inttoptr(f_, fnty.as_pointer()), [k_, builder.inttoptr(p_, i64.as_pointer())])
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def as_ptr(typingctx, addr, dtype):  # type: ignore[no-untyped-def]
    """An address (int64) or another pointer as a pointer to ``dtype`` (a NumPy scalar type such as
    ``np.float32``), for ``numba.carray``."""
    if not isinstance(dtype, types.NumberClass):
        return None
    if not isinstance(addr, (types.Integer, types.CPointer)):
        return None
    ptrty = types.CPointer(dtype.instance_type)
    sig = ptrty(addr, dtype)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        lty = context.get_value_type(ptrty)
        if isinstance(signature.args[0], types.CPointer):
            return builder.bitcast(args[0], lty)
        return builder.inttoptr(context.cast(builder, args[0], signature.args[0], types.int64), lty)
    return sig, codegen


@njit(inline="always")
def addr(x):  # type: ignore[no-untyped-def]
    """An array's data address as int64 (uintp mixed with int64 arithmetic would turn into float64)."""
    return np.int64(x.ctypes.data)


@njit(inline="always")
def f32_arg(argv, i):  # type: ignore[no-untyped-def]
    """The float32 stored in argv[i] by ``set_f32_arg`` (argv: the part's int64 pointer)."""
    return carray(as_ptr(argv, np.float32), (2 * i + 1,))[2 * i]


@njit(inline="always")
def set_f32_arg(argv, i, v):  # type: ignore[no-untyped-def]
    """Store float32 v in the int64 array argv at i (its first 4 bytes: the float32 view's 2i)."""
    argv.view(np.float32)[2 * i] = v


# --- the job protocol --------------------------------------------------------------------------------

@njit(inline="always")
def _claim(ctl, me):  # type: ignore[no-untyped-def]
    """Claim a part of the job published now: its claim word (before the claim), or -1 (none left,
    or thread ``me`` is not one of the job's threads)."""
    while True:
        c = load_acquire(ctl, CLAIM)
        k = c & 0xFFFF
        if k >= (c >> 16) & 0xFFFF or me > (c >> 32) & 0xFF:
            return np.int64(-1)
        if compare_swap(ctl, CLAIM, c, c + 1):
            return c


@njit(inline="always")
def _run_claimed(ctl, c):  # type: ignore[no-untyped-def]
    """Run the part claimed with word c and count it; True when it was the job's last and the
    caller is (about to be) blocked."""
    call_part(load_acquire(ctl, FN), c & 0xFFFF, load_acquire(ctl, ARGV))
    if fetch_add(ctl, FINISHED, 1) + 1 == (c >> 16) & 0xFFFF:
        return load_seq(ctl, WAITING) != 0
    return False


@njit(nogil=True, cache=True)
def worker_wait(ctl, me, seen, spin, spin_yield):  # type: ignore[no-untyped-def]
    """A worker's life between two visits to Python: spin on ``GEN`` (restarted after each job),
    taking parts of each native job published, for about ``spin`` cycles, then on up to
    ``spin_yield`` cycles in all yielding the CPU (``yield_cpu``) between reads: a thread waiting
    for this CPU gets it, an idle machine keeps the worker awake. Returns (TIMED_OUT, GEN last
    seen), (PYTHON_JOB, its GEN) or (WAKE_CALLER, GEN last seen): this worker finished the last part
    of a job whose caller blocks."""
    t0 = cycles()
    n = 0
    limit = max(spin, spin_yield)
    while True:
        g = load_acquire(ctl, GEN)
        if g != seen:
            seen = g
            if (g & 1) == 0:
                return PYTHON_JOB, g
            wake = False
            while True:
                c = _claim(ctl, me)
                if c < 0:
                    break
                wake |= _run_claimed(ctl, c)
            if wake:
                return WAKE_CALLER, seen
            t0 = cycles()
            n = 0
            continue
        if n >= limit:
            return TIMED_OUT, seen
        pause()
        n += 1
        if (n & 31) == 0:
            spent = cycles() - t0
            if spent > limit:
                return TIMED_OUT, seen
            if spent > spin:
                yield_cpu()


@njit(inline="always")
def _join(ctl, nparts, spin):  # type: ignore[no-untyped-def]
    """Run parts until none is left, then wait for the others' (spinning up to ``spin`` cycles, or
    twice the longest part this thread ran, at most MAX_WAIT_SPIN: a part still running is about
    that close to its end, and a caller that blocks waits for a CPU again after its wake-up, which
    on a busy machine took milliseconds)."""
    longest = 0
    while True:
        c = _claim(ctl, 0)
        if c < 0:
            break
        t = cycles()
        _run_claimed(ctl, c)
        longest = max(longest, cycles() - t)
    budget = max(spin, min(2 * longest, MAX_WAIT_SPIN)) if spin > 0 else 0
    t0 = cycles()
    n = 0
    while load_acquire(ctl, FINISHED) != nparts:
        if n >= budget or ((n & 31) == 31 and cycles() - t0 > budget):
            store_seq(ctl, WAITING, 1)
            return DONE if load_seq(ctl, FINISHED) == nparts else MUST_BLOCK
        pause()
        n += 1
    return DONE


@njit(nogil=True, cache=True)
def native_run(ctl, fn, argv, nparts, helpers, gen, spin):  # type: ignore[no-untyped-def]
    """The caller's side of a native job: publish it (job number gen, up to ``helpers`` workers),
    then run parts until none is left and spin until the others' are finished. Returns DONE;
    MUST_WAKE right after publishing when workers sleep (wake them, then ``native_join``); or
    MUST_BLOCK (parts still running after the spin: block until a worker says so)."""
    store_release(ctl, FN, fn)
    store_release(ctl, ARGV, addr(argv))
    store_release(ctl, FINISHED, 0)
    store_release(ctl, WAITING, 0)
    store_release(ctl, CLAIM, (gen << 40) | (helpers << 32) | (nparts << 16))
    store_seq(ctl, GEN, 2 * gen + 1)
    if load_seq(ctl, SLEEPERS) > 0:
        return MUST_WAKE
    return _join(ctl, nparts, spin)


@njit(nogil=True, cache=True)
def native_join(ctl, nparts, spin):  # type: ignore[no-untyped-def]
    """``native_run``'s second half, after waking the sleepers: DONE or MUST_BLOCK."""
    return _join(ctl, nparts, spin)


@njit(nogil=True, cache=True)
def native_serial(fn, argv, nparts):  # type: ignore[no-untyped-def]
    """Every part on this thread, in order."""
    p = addr(argv)
    for k in range(nparts):
        call_part(fn, k, p)


@njit(nogil=True, cache=True)
def native_one(fn, argv, k):  # type: ignore[no-untyped-def]
    """Part k alone, on this thread."""
    call_part(fn, k, addr(argv))


@njit(nogil=True, cache=True)
def publish_python(ctl, gen):  # type: ignore[no-untyped-def]
    """Publish Python job number gen (no native parts to claim); returns the sleepers count."""
    store_release(ctl, CLAIM, 0)
    store_seq(ctl, GEN, 2 * gen)
    return load_seq(ctl, SLEEPERS)


@njit(nogil=True, cache=True)
def prepare_sleep(ctl):  # type: ignore[no-untyped-def]
    """A worker about to sleep: counts itself in SLEEPERS, then reads GEN (sequentially
    consistent: a caller that published before this missed the count, and this sees its job)."""
    fetch_add(ctl, SLEEPERS, 1)
    return load_seq(ctl, GEN)


@njit(nogil=True, cache=True)
def end_sleep(ctl):  # type: ignore[no-untyped-def]
    fetch_add(ctl, SLEEPERS, -1)


@njit(nogil=True, cache=True)
def finished(ctl):  # type: ignore[no-untyped-def]
    return load_seq(ctl, FINISHED)
