"""jitort's thread pool (kernels/threads.py) on its own: what handing a part to a worker costs.

    python benchmarks/bench_threads.py [--rounds 15] [--spin 0,20000,100000,400000]

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
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
from numba import carray, cfunc, njit

from jitort.bench.machine import cpu_label
from jitort.kernels import native_parts as NP
from jitort.kernels import threads as T


@njit(nogil=True, cache=True)
def _work(x, reps, part, nparts):  # type: ignore[no-untyped-def]
    n = x.size // nparts
    s = np.float32(0)
    for _ in range(reps):
        for i in range(part * n, (part + 1) * n):
            s += x[i] * np.float32(1.0000001)
    x[part * n] += s * np.float32(0)


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
    args = ap.parse_args()
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
