"""jitort's thread pool (kernels/threads.py) on its own: what handing a part to a worker costs.

    python benchmarks/bench_threads.py [--rounds 15] [--spin 0,20000,100000]
    python benchmarks/bench_threads.py --latency [--jobs 3000]

A ``nogil`` kernel doing about ``w`` microseconds of work in total is run (a) on one thread, (b) split in
two parts through a ``threads.Pool`` for each spin budget (CPU cycles a worker and the caller busy-wait
before blocking; 0: they block at once), as a Python job (``Pool.run``: each part a Python call, so a
worker takes the GIL to start it) and as a native job (``Pool.run_native``: the same loop as a part
function called by address, no GIL), and (c) through the design the pool replaced: a
ThreadPoolExecutor whose worker blocks on its queue, one future per part, the caller running part 0.
Calls come back to back with a gap of ``gap`` microseconds of single-thread work between them (the rest
of a model between two split layers). Rounds interleave every variant (A, B, C, ...), medians per call;
times are per call including the gap, the ratios variant / one thread (below 1: the split pays). Prints the CPU and the load average: on a
machine with more runnable threads than CPUs, a worker waits for a CPU and no split can pay.

``--latency``: the hand-over itself, less sensitive to other jobs on the machine. Each job has two
parts of ~``--part-us`` (50) us; the part a worker runs records the cycle counter when it starts, and the latency is
that minus the counter read just before the caller published the job (workers spinning: jobs follow
each other with a 2 us gap). Percentiles over ``--jobs`` jobs, Python parts (``Pool.run``) and native
parts (``Pool.run_native``) interleaved; only jobs where the worker took a part count (how many did is
printed too).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.extending import intrinsic

from jitort.bench.machine import cpu_label
from jitort.kernels import native_parts as NP
from jitort.kernels import threads as T
from jitort.kernels.spin import cycles


@njit(nogil=True, cache=True)
def _work(x, reps, part, nparts):  # type: ignore[no-untyped-def]
    n = x.size // nparts
    s = np.float32(0)
    for _ in range(reps):
        for i in range(part * n, (part + 1) * n):
            s += x[i] * np.float32(1.0000001)
    x[part * n] += s * np.float32(0)


@intrinsic
def _stack_address(typingctx):  # type: ignore[no-untyped-def]
    """An address on this thread's stack (threads' stacks are megabytes apart)."""
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ptrtoint(builder.alloca(ir.IntType(64)), ir.IntType(64))
    return types.int64(), codegen


@njit(nogil=True, cache=True)
def _stamp(t, k, x, reps):  # type: ignore[no-untyped-def]
    """t[k] = the cycle counter now, t[2 + k] = where this thread's stack is, then ~reps of _work
    (part k of 2)."""
    t[k] = cycles()
    t[2 + k] = _stack_address()
    _work(x, reps, k, 2)


@njit(nogil=True, cache=True)
def _now():  # type: ignore[no-untyped-def]
    return cycles()


@cfunc(NP.PART_SIG, cache=True)
def _stamp_part(k, args):  # type: ignore[no-untyped-def]
    """``_stamp`` as a part function: args = (t's address, x's address, x.size, reps)."""
    _stamp(carray(NP.as_ptr(args[0], np.int64), (4,)), k, carray(NP.as_ptr(args[1], np.float32), (args[2],)),
           args[3])


def latency(jobs: int, args_part_us: float = 50.0) -> None:
    T.set_num_threads(2)
    x = np.ones(8192, np.float32)
    t = np.zeros(4, np.int64)
    _work(x, 1, 0, 1)
    t0 = time.perf_counter()
    _work(x, 20, 0, 1)
    reps = max(1, round(args_part_us / ((time.perf_counter() - t0) / 20 * 1e6)))
    argv = np.array([t.ctypes.data, x.ctypes.data, x.size, reps], np.int64)
    pool = T.Pool()
    c0 = _now()
    w0 = time.perf_counter()
    time.sleep(0.05)
    ghz = (_now() - c0) / (time.perf_counter() - w0) / 1e9
    lat: dict[str, list[float]] = {"python parts": [], "native parts": []}
    took = dict.fromkeys(lat, 0)
    run = {"python parts": lambda: pool.run(lambda k: _stamp(t, k, x, reps), 2, 2),
           "native parts": lambda: pool.run_native(_stamp_part.address, argv, 2, 2)}
    for f in run.values():
        f()
    print(f"CPU: {cpu_label()}; load {os.getloadavg()}; cycle counter {ghz:.2f} GHz; parts of ~{args_part_us:g} us")
    for i in range(jobs):
        for name, f in (list(run.items()) if i % 2 else list(run.items())[::-1]):
            g = time.perf_counter() + 2e-6
            while time.perf_counter() < g:
                pass
            t[:] = 0
            c = _now()
            f()
            # the worker's part is the one that did not start first (the caller starts at once)
            late = max(int(t[0]), int(t[1])) - c
            if abs(int(t[2]) - int(t[3])) > (1 << 20) and late > 0:  # two threads ran the parts
                lat[name].append(late / ghz / 1e3)
                took[name] += 1
    for name, v in lat.items():
        if v:
            p = np.percentile(v, [10, 50, 90])
            print(f"{name:14s}: hand-over latency p10 {p[0]:7.1f} us, median {p[1]:7.1f} us, p90 {p[2]:7.1f} us "
                  f"({len(v)} jobs of {jobs})")
    pool.close()
    print(f"load after: {os.getloadavg()}")


@cfunc(NP.PART_SIG, cache=True)
def _work_part(k, args):  # type: ignore[no-untyped-def]
    """``_work(x, args[2], k, 2)`` as a part function: args = (x's address, x.size, reps)."""
    _work(carray(NP.as_ptr(args[0], np.float32), (args[1],)), args[2], k, 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--spin", default="0,20000,100000", help="spin budgets in cycles to compare")
    ap.add_argument("--work", default="5,20,80,320", help="total work per call, microseconds (one thread)")
    ap.add_argument("--gap", type=float, default=20.0, help="single-thread work between calls, microseconds")
    ap.add_argument("--latency", action="store_true", help="measure the hand-over latency only")
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--part-us", type=float, default=50.0, help="--latency: work per part, microseconds")
    args = ap.parse_args()
    if args.latency:
        latency(args.jobs, args.part_us)
        return
    T.set_num_threads(2)
    x = np.ones(8192, np.float32)
    _work(x, 1, 0, 1)
    trials = []
    for _ in range(30):  # the fastest of several: a loaded machine stretches some
        t0 = time.perf_counter()
        _work(x, 50, 0, 1)
        trials.append((time.perf_counter() - t0) / 50 * 1e6)
    us_per_rep = min(trials)
    gap_reps = max(1, round(args.gap / us_per_rep))
    pools = {f"pool spin={s}": T.Pool(spin_cycles=int(s)) for s in args.spin.split(",")}
    ex = ThreadPoolExecutor(max_workers=1)
    print(f"CPU: {cpu_label()}; load {os.getloadavg()}; one rep {us_per_rep:.2f} us; gap {args.gap:g} us")
    for w in (float(v) for v in args.work.split(",")):
        reps = max(1, round(w / us_per_rep))

        def serial() -> None:
            _work(x, reps, 0, 1)

        def futures() -> None:
            f = ex.submit(_work, x, reps, 1, 2)
            _work(x, reps, 0, 2)
            f.result()
        variants: dict[str, Callable[[], None]] = {"one thread": serial, "executor (old)": futures}
        argv = np.array([x.ctypes.data, x.size, reps], np.int64)
        for name, pool in pools.items():
            variants[name] = (lambda pool=pool: pool.run(lambda p: _work(x, reps, p, 2), 2, 2))
            variants[name.replace("pool", "native")] = (
                lambda pool=pool, argv=argv: pool.run_native(_work_part.address, argv, 2, 2))
        times: dict[str, list[float]] = {k: [] for k in variants}
        calls = max(20, int(0.02e6 / (w + args.gap)))
        for r in range(args.rounds):
            order = list(variants.items())
            order = order[r % len(order):] + order[:r % len(order)]
            for name, fn in order:
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                    _work(x, gap_reps, 0, 1)
                times[name].append((time.perf_counter() - t0) / calls * 1e6)
        base = statistics.median(times["one thread"])
        print(f"work {w:6.0f} us (+ gap), load {os.getloadavg()[0]:.1f}:", flush=True)
        for k, v in times.items():
            print(f"    {k:22s} {statistics.median(v):8.1f} us  ratio {statistics.median(v) / base:5.2f}", flush=True)
    for pool in pools.values():
        pool.close()
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
