"""Threads of jitort's kernels: one knob for every pool they use, and jitort's own worker pool.

``set_num_threads`` sets both OpenBLAS copies (numpy's and scipy's, which ``@njit`` BLAS calls go
through) and Numba's own pool together: two uncoordinated BLAS pools collapsed small GEMMs to
2 GFLOP/s on this machine (see the Numba notes).

``run_parts`` is jitort's one worker pool, used by every kernel that splits its work (convolution,
pooling, tree ensembles, GEMM, attention, GroupQueryAttention, fused elementwise kernels): a call
split into ``nparts`` independent parts (``nogil`` code) runs parts on the calling thread and on
persistent worker threads, each part claimed once by whichever thread comes first. ``parts_for``
decides how many parts a piece of work is worth: none beyond the session's thread count, the units
the work splits into, or one per ``PART_FLOPS`` of work (below ~50 us per thread, handing work to
another thread costs more than it saves).

``run_native`` is the same pool for parts that are C functions (``native_parts.PART_SIG``, called by
address with an int64 argument vector): the workers run them in machine code without ever taking
the GIL, where a Python part costs each worker a GIL hand-over to start it (a futex wake and a
reschedule: 20-45 us measured on the 2-vCPU Zen 4 VM). GEMM's, MatMulNBits' GEMV and the
convolutions' splits use it (conv_parts.py); the other kernels still pass Python callables to
``run_parts``.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import itertools
import threading
from typing import Any, Callable

import numpy as np
from jitort.allocator import aligned_empty
from jitort.cache import import_file
from jitort.kernels import native_parts as NP
from jitort.kernels.spin import spin_while

_lock = threading.Lock()
_current: tuple[int, int] | None = None
_limiter = None


def set_num_threads(n: int, blas: int | None = None) -> None:
    """n threads for jitort's own kernels (Numba's pool, the conv thread split) and ``blas`` (default
    n) for both OpenBLAS pools. A model whose heavy ops are jitort's convolutions passes blas=1:
    OpenBLAS workers spin for a while after each call (a build-time timeout, not settable once numpy
    is loaded), and on a 2-core machine a spinning BLAS worker took the core a conv thread needed
    (light_resnet50 at 2 threads: 110 ms with both pools, 82 ms with BLAS single-threaded, 102 ms at
    1 thread)."""
    global _current, _limiter
    blas = n if blas is None else blas
    with _lock:
        if (n, blas) == _current:
            return
        import numba
        if _current is None or _current[1] != blas:  # threadpoolctl takes ~0.5 ms: only when BLAS's count changes
            # scipy's OpenBLAS is loaded already (jitort.kernels' import): threadpoolctl limits only
            # loaded libraries
            from threadpoolctl import threadpool_limits
            _limiter = threadpool_limits(limits=blas, user_api="blas")
        if _current is None or _current[0] != n:
            numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
        _current = (n, blas)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def current_setting() -> tuple[int, int] | None:
    """(threads, BLAS threads) as ``set_num_threads`` last set them (None: never)."""
    return _current


def get_num_threads() -> int | None:
    return None if _current is None else _current[0]


def intra_op_threads() -> int:
    """The session's intra-op thread count; unset, the usable cores (as BLAS would use)."""
    return get_num_threads() or usable_cpus()


PART_FLOPS = 4e6  # below ~50 us of work per thread, handing work to a pool thread costs more


def parts_for(units: int, work: float, per_part: float | None = None) -> int:
    """How many parts to split work of ``units`` independent units and ``work`` flops (or any
    cost in the unit of ``per_part``, default ``PART_FLOPS``) into: at most the session's
    threads, at least 1."""
    return max(1, min(intra_op_threads(), units, int(work // (PART_FLOPS if per_part is None else per_part))))


# --- the pool ----------------------------------------------------------------------------------------
# One pool for every kernel that splits its work (convolution, pooling, trees, GEMM, attention,
# GroupQueryAttention, fused elementwise kernels). A call publishes a job (a part counter) and runs
# parts itself; persistent workers claim parts from the same counter, so a worker the OS starts late
# finds nothing left and the caller never waits for it. Hand-over without a system call where it
# can: after a job, a worker spins (``native_parts.worker_wait``, without the GIL) for up to
# ``SPIN_CYCLES`` on the job word (then, yielding the CPU between reads, up to ``SPIN_YIELD_FACTOR``
# times as long) before it sleeps on a condition variable, running native jobs' parts as they come,
# and the caller spins on the completion count before it blocks. The spin is bounded, so an idle
# session burns no CPU after that. The protocol is native_parts.py's.

def _spin_cycles() -> int:
    try:
        return max(0, int(os.environ.get("JITORT_THREAD_SPIN", "")))
    except ValueError:
        return SPIN_CYCLES_DEFAULT


# ~70 us at 2.8 GHz of plain spinning (then SPIN_YIELD_FACTOR times as long yielding the CPU between
# reads): a worker stays awake across the unsplit steps between two split kernels of a plan. Waking
# a sleeping worker (condition variable, then the GIL) cost 50-80 us on the quiet 2-vCPU
# Intel Xeon (Ice Lake) VM: benchmarks/bench_threads.py (load 0.7), a native job of 80 us of work split
# in two took 1.13x one thread's time with a 20000-cycle spin and 0.65x with 100000 (320 us: 0.68x,
# 0.57x); at 2 threads, 200000 against 20000 took densenet121 86 vs 99 ms, inception_v2 39 vs 63,
# squeezenet 9.7 vs 11.7, resnet50 60 vs 63 (zfnet512 unchanged). The spin is bounded, so an idle
# session stops burning CPU ~0.7 ms after its last job (onnxruntime's workers spin longer by
# default). An earlier tuning on an oversubscribed VM (load 9-17) preferred short spins: a spinning
# worker takes CPU its own caller needs when there are more runnable threads than CPUs.
# JITORT_THREAD_SPIN overrides (0: never spin).
SPIN_CYCLES_DEFAULT = 200_000
SPIN_CYCLES = SPIN_CYCLES_DEFAULT if "JITORT_THREAD_SPIN" not in os.environ else _spin_cycles()
# After SPIN_CYCLES a worker spins on for up to this many times as long, yielding the CPU between
# reads (``native_parts.worker_wait``): ~0.7 ms in all, enough to stay awake across a plan's unsplit
# steps (a Concat, a pool, a small conv: light_squeezenet's gaps reach ~0.3 ms), while a thread of
# another process (or session) that waits for this CPU gets it at the next read. Measured on the
# 2-vCPU Intel Xeon Ice Lake-SP VM at 2 threads, onnxruntime with spinning off: a plain spin of 2M
# cycles instead of 200K took the nine light CNNs' geomean ratio from 1.27x/1.23x to 1.21x/1.12x
# (light_squeezenet 2.21x/2.03x -> 1.75x/1.54x) and bench_transformer's from 1.03x/1.00x to
# 0.93x/0.90x, but with two such processes at once (4 threads on 2 CPUs) it took light_squeezenet
# from 11.6-14.4 to 16-20 ms and light_resnet50 from 95-157 to 135-142 ms: hence the yields. With
# them (200K cycles, then yielding up to 2M), against the plain 200K, alternating processes: alone,
# the CNN geomean 1.16x/1.21x vs 1.27x/1.27x, transformers 0.94x/0.91x vs 1.04x/1.02x; two processes
# at once, light_squeezenet 14.2/13.6 and 11.2/10.2 ms vs 15.2/16.4 and 13.9/12.9, light_resnet50
# 115/106 and 98/102 ms vs 102/103 and 105/126 (no worse).
SPIN_YIELD_FACTOR = 10


class _Job:
    """One Python call's parts: claimed once each from ``claims`` by the caller and the workers; the
    thread that finishes the last part sets the pool's ``PYDONE`` word to this job's number and
    releases ``done``."""

    __slots__ = ("fn", "nparts", "helpers", "gen", "ctl", "claims", "finished", "done", "error")

    def __init__(self, fn: Callable[[int], None], nparts: int, helpers: int, gen: int, ctl: np.ndarray) -> None:
        self.fn, self.nparts, self.helpers, self.gen, self.ctl = fn, nparts, helpers, gen, ctl
        self.claims = itertools.count()  # next() is atomic under the GIL
        self.finished = itertools.count(1)
        self.done = threading.Lock()
        self.done.acquire()
        self.error: BaseException | None = None

    def work(self) -> None:
        n = self.nparts
        while True:
            k = next(self.claims)
            if k >= n:
                return
            try:
                self.fn(k)
            except BaseException as e:  # noqa: BLE001 - re-raised by the caller
                if self.error is None:
                    self.error = e
            if next(self.finished) == n:
                self.ctl[NP.PYDONE] = self.gen
                self.done.release()


class Pool:
    """Persistent worker threads and one job at a time, Python (``run``) or native (``run_native``).
    Workers (numbered from 1; the caller is 0) live in ``native_parts.worker_wait`` (machine code,
    no GIL): they spin on the control array ``ctl`` for the next job, run native jobs' parts there,
    and come back to Python only to sleep on ``cond``, to run a Python job's parts, or to wake a
    caller blocked on ``done_cond``."""

    def __init__(self, spin_cycles: int | None = None) -> None:
        self.spin = SPIN_CYCLES if spin_cycles is None else spin_cycles
        self.ctl = np.zeros(NP.CTL_SIZE, np.int64)
        self.gen = 0
        self.job: _Job | None = None
        self.busy = threading.Lock()
        self.cond = threading.Condition(threading.Lock())
        self.done_cond = threading.Condition(threading.Lock())
        self.closed = False
        self.workers: list[threading.Thread] = []
        self.grow_lock = threading.Lock()

    def grow(self, n: int) -> None:
        """At least n worker threads."""
        with self.grow_lock:
            while len(self.workers) < n:
                t = threading.Thread(target=self._loop, args=(len(self.workers) + 1, int(self.ctl[NP.GEN])),
                                     daemon=True, name=f"jitort-kernel-{len(self.workers)}")
                self.workers.append(t)
                t.start()

    def _loop(self, me: int, seen: int) -> None:
        ctl = self.ctl
        while not self.closed:
            code, gen = NP.worker_wait(ctl, me, seen, self.spin, self.spin * SPIN_YIELD_FACTOR)
            seen = gen  # the native jobs worker_wait took part in are seen (else it spins on forever)
            if code == NP.TIMED_OUT:
                with self.cond:
                    g = NP.prepare_sleep(ctl)
                    while g == seen and not self.closed:
                        self.cond.wait()
                        g = int(ctl[NP.GEN])
                    NP.end_sleep(ctl)
                continue  # worker_wait sees the new job
            if code == NP.WAKE_CALLER:
                with self.done_cond:
                    self.done_cond.notify_all()
                continue
            job = self.job
            if job is not None and 2 * job.gen == gen and me <= job.helpers:
                job.work()

    def close(self) -> None:
        """Stop the workers (each ends when it next wakes); for tests and forked children."""
        self.closed = True
        with self.cond:
            self.cond.notify_all()

    def _next_gen(self) -> int:
        self.gen = self.gen % NP.GEN_MASK + 1
        return self.gen

    def run(self, fn: Callable[[int], None], nparts: int, threads: int) -> None:
        """fn(part) for part in range(nparts) on this thread and up to threads - 1 workers."""
        helpers = min(threads, nparts, NP.MAX_HELPERS + 1) - 1
        if helpers <= 0 or not self.busy.acquire(blocking=False):
            # one thread, or the pool runs another job: a part calling run_parts (nested), or
            # another thread's session; running here cannot deadlock or oversubscribe the machine
            _serial(fn, nparts)
            return
        try:
            if len(self.workers) < helpers:
                self.grow(helpers)
            ctl = self.ctl
            gen = self._next_gen()
            done_before = int(ctl[NP.PYDONE])
            job = self.job = _Job(fn, nparts, helpers, gen, ctl)
            if NP.publish_python(ctl, gen):
                with self.cond:
                    self.cond.notify_all()
            job.work()
            if int(ctl[NP.PYDONE]) != gen and self.spin:
                spin_while(ctl, NP.PYDONE, done_before, self.spin)
            if int(ctl[NP.PYDONE]) != gen:
                job.done.acquire()
        finally:
            self.job = None
            self.busy.release()
        if job.error is not None:
            raise job.error

    def run_native(self, fn: int, argv: np.ndarray, nparts: int, threads: int) -> None:
        """Part function fn (``native_parts.PART_SIG``) on parts 0..nparts-1 with argv, on this
        thread and up to threads - 1 workers, without the GIL."""
        helpers = min(threads, nparts, NP.MAX_HELPERS + 1) - 1
        if helpers <= 0 or not self.busy.acquire(blocking=False):
            NP.native_serial(fn, argv, nparts)
            return
        try:
            if len(self.workers) < helpers:
                self.grow(helpers)
            ctl = self.ctl
            st = NP.native_run(ctl, fn, argv, nparts, helpers, self._next_gen(), self.spin)
            if st == NP.MUST_WAKE:
                with self.cond:
                    self.cond.notify_all()
                st = NP.native_join(ctl, nparts, self.spin)
            if st == NP.MUST_BLOCK:
                with self.done_cond:
                    while NP.finished(ctl) != nparts:
                        self.done_cond.wait()
        finally:
            self.busy.release()


def _serial(fn: Callable[[int], None], nparts: int) -> None:
    """Every part on this thread; every part runs even if one fails, the first error is raised."""
    error: BaseException | None = None
    for p in range(nparts):
        try:
            fn(p)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            if error is None:
                error = e
    if error is not None:
        raise error


_pool: Pool | None = None
_pool_lock = threading.Lock()


def pool() -> Pool:
    """This process's pool (a forked child inherits the object but not its threads: it gets a new one)."""
    global _pool
    p = _pool
    if p is not None:
        return p
    with _pool_lock:
        if _pool is None:
            _pool = Pool()
        return _pool


def _forget_pool() -> None:
    """In a forked child: the parent's workers do not exist here (and its locks may be held)."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def run_parts(fn: Callable[[int], None], nparts: int, threads: int | None = None) -> None:
    """fn(part) for part in range(nparts) on this thread and jitort's worker threads: at most
    ``threads`` threads (default the session's ``intra_op_threads()``), and fn should release the GIL
    (``nogil`` kernels). Parts are claimed dynamically, each once, by whoever comes first: nparts may
    exceed the threads (a late thread then costs at most one part), and a part no worker has started
    when this thread is free, this thread runs (on a busy machine a worker may wait milliseconds for
    a CPU; the call then costs what one thread costs instead of that wait). Returns when every part
    is done and re-raises the first part's exception. Parts must write disjoint outputs, so results
    do not depend on which thread ran a part.

    A call made while the pool runs another job (from inside a part, or from another thread's
    session) runs its parts on the calling thread: nested calls cannot deadlock."""
    if nparts <= 1:
        if nparts == 1:
            fn(0)
        return
    pool().run(fn, nparts, threads or intra_op_threads())


def run_native(fn: int, argv: np.ndarray, nparts: int, threads: int | None = None) -> None:
    """The native form of ``run_parts``: part function ``fn`` (the address of a ``cfunc`` with
    ``native_parts.PART_SIG``) called as fn(k, argv) for k in range(nparts), on this thread and
    jitort's workers, none of them taking the GIL. argv: a C-contiguous int64 array, kept alive by
    this call. Parts are claimed as in ``run_parts``, through the same pool and workers (a call
    while the pool is busy runs every part here); a part must not fail (validate before)."""
    if argv.dtype != np.int64 or argv.ndim != 1 or not argv.flags.c_contiguous:
        raise TypeError("run_native: argv must be a contiguous 1-D int64 array")
    if not 0 <= nparts <= NP.MAX_PARTS:
        raise ValueError(f"run_native: {nparts} parts (at most {NP.MAX_PARTS})")
    if nparts == 0:
        return
    if not NATIVE_PARTS:
        pool().run(lambda k: NP.native_one(fn, argv, k), nparts, threads or intra_op_threads())
        return
    pool().run_native(fn, argv, nparts, threads or intra_op_threads())


# False: run_native's parts go through run_parts (each part a Python call, as before native parts
# existed): JITORT_NATIVE_PARTS=0, for comparisons (benchmarks/bench_threads.py, bench_gemm.py,
# bench_llm_decode.py) and as a way around a problem in the native path
NATIVE_PARTS = os.environ.get("JITORT_NATIVE_PARTS", "1") != "0"


_local = threading.local()


def scratch(n: int, dt: np.dtype) -> np.ndarray:
    """A per-thread working buffer of at least n elements of dt, reused across calls (one kernel
    uses it at a time per thread; concurrent sessions run in different threads). Reuse matters:
    a fresh buffer over glibc's mmap threshold is mapped and page-faulted on every call."""
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    a = bufs.get(dt)
    if a is None or a.shape[0] < n:
        a = bufs[dt] = aligned_empty(max(n, 1), dt)  # kernels' whole-vector loads: see jitort.allocator
    return a


_BLAS = "scipy.linalg.cython_blas"


def load_scipy_blas() -> None:
    """Load scipy's BLAS module (what ``np.dot`` in ``@njit`` code calls) without running
    ``scipy/linalg/__init__.py``.

    Numba's first compile or cache load in a process imports ``scipy.linalg.cython_blas`` (its numpy
    registry checks for BLAS), and Python runs the package's ``__init__`` first: ~0.2 s of scipy
    imports (array-API shims that import numpy.f2py, docstring parsing) that the extension module
    does not need, a third of a warm session's creation (measured). This loads the extension from
    its file and registers it; if ``scipy.linalg`` is imported later, a one-shot import hook sets
    its ``cython_blas`` attribute (Python sets it only when it loads the submodule itself). If
    scipy.linalg is already imported, or anything here fails, the plain import runs instead.

    ``jitort.kernels`` calls it when imported, before any session sets thread limits: threadpoolctl
    limits only libraries loaded at the time, and scipy's OpenBLAS loaded later kept its default
    thread count (a 1-thread bidirectional LSTM ran 7x slower on a busy machine)."""
    if _BLAS in sys.modules:
        return
    if "scipy.linalg" not in sys.modules:
        try:
            import scipy

            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = f"{scipy.__path__[0]}/linalg/cython_blas{suffix}"
                if os.path.exists(path):
                    import_file(_BLAS, path)
                    sys.meta_path.insert(0, _LinkBlasOnImport())
                    return
        except Exception:  # noqa: BLE001 - fall back to the plain import below
            pass
    import scipy.linalg.cython_blas  # noqa: F401


class _LinkBlasOnImport(importlib.abc.MetaPathFinder):
    """When ``scipy.linalg`` is imported after ``load_scipy_blas``, sets its ``cython_blas``
    attribute to the module already loaded; removes itself on first use."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "scipy.linalg":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            if _BLAS in sys.modules:
                module.cython_blas = sys.modules[_BLAS]
        spec.loader.exec_module = exec_module  # type: ignore[method-assign]  # this module's own loader
        return spec
