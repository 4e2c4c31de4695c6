"""kernels/native_parts.py and threads.run_native: part functions called by address, the pool's
GIL-free job protocol (claims, completion, sleep and wake-up), alongside Python jobs on the same
workers."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from numba import carray, cfunc, njit

from jitort.kernels import native_parts as NP
from jitort.kernels import threads as T
from jitort.kernels.spin import fetch_add, load_acquire, store_release


@cfunc(NP.PART_SIG, cache=True)
def _scale_part(k, args):  # type: ignore[no-untyped-def]
    """x[k*n:(k+1)*n] = x * 2 + c, and hits[k] += 1 (atomic: a part run twice shows)."""
    n = args[1]
    x = carray(NP.as_ptr(args[0], np.float32), (n * args[2],))
    hits = carray(NP.as_ptr(args[3], np.int64), (args[2],))
    c = NP.f32_arg(args, 4)
    for i in range(k * n, (k + 1) * n):
        x[i] = x[i] * np.float32(2.0) + c
    fetch_add(hits, k, 1)


@cfunc(NP.PART_SIG, cache=True)
def _meet_part(k, args):  # type: ignore[no-untyped-def]
    """Two parts that each wait (bounded) for the other to have started: both see the other only
    when two threads ran them at the same time. seen[k] = 1 then."""
    flags = carray(NP.as_ptr(args[0], np.int64), (4,))
    store_release(flags, k, 1)
    for _ in range(args[1]):
        if load_acquire(flags, 1 - k) == 1:
            store_release(flags, 2 + k, 1)
            return


def _job(nparts: int, n: int = 64, c: float = 0.5):
    x = np.arange(n * nparts, dtype=np.float32)
    hits = np.zeros(nparts, np.int64)
    argv = np.zeros(5, np.int64)
    argv[0], argv[1], argv[2], argv[3] = x.ctypes.data, n, nparts, hits.ctypes.data
    argv.view(np.float32)[8] = c
    want = np.arange(n * nparts, dtype=np.float32) * np.float32(2) + np.float32(c)
    return argv, x, hits, want


def test_run_native_runs_every_part_once():
    for nparts, threads in ((1, 2), (2, 2), (7, 2), (5, 1), (300, 3)):
        argv, x, hits, want = _job(nparts)
        T.run_native(_scale_part.address, argv, nparts, threads)
        assert np.array_equal(hits, np.ones(nparts, np.int64)) and np.array_equal(x, want)


def test_run_native_validates_its_arguments():
    with pytest.raises(TypeError):
        T.run_native(_scale_part.address, np.zeros(5, np.int32), 2)
    with pytest.raises(ValueError):
        T.run_native(_scale_part.address, np.zeros(5, np.int64), NP.MAX_PARTS + 1)


@pytest.mark.parametrize("spin", [0, 20_000])
def test_workers_run_native_parts_without_the_caller(spin):
    """A worker (spinning, or woken from its sleep) runs a part while the caller runs the other:
    the two parts meet. The caller holds the GIL for nothing here: both are machine code."""
    pool = T.Pool(spin_cycles=spin)
    try:
        met = 0
        for _ in range(20):
            flags = np.zeros(4, np.int64)
            argv = np.array([flags.ctypes.data, 2_000_000_000], np.int64)
            pool.run_native(_meet_part.address, argv, 2, 2)
            met += int(flags[2] == 1 and flags[3] == 1)
            if met >= 3:
                break
        assert met >= 3
    finally:
        pool.close()


@pytest.mark.parametrize("spin", [0, 5_000, 200_000])
def test_many_tiny_jobs_no_lost_wakeup(spin):
    """Thousands of back-to-back jobs, native and Python mixed, with workers that sleep at once
    (spin 0), briefly or long: every part runs exactly once and nothing hangs."""
    pool = T.Pool(spin_cycles=spin)
    done = threading.Event()
    errors: list[str] = []

    def drive() -> None:
        argv, x, hits, _ = _job(2, n=4)
        seen: list[int] = []
        for i in range(3000):
            pool.run_native(_scale_part.address, argv, 2, 2)
            if i % 100 == 0:
                seen.clear()
                pool.run(seen.append, 3, 2)
                if sorted(seen) != [0, 1, 2]:
                    errors.append(f"python job {i}: {seen}")
        if not np.array_equal(hits, np.full(2, 3000)):
            errors.append(f"native hits {hits}")
        done.set()
    t = threading.Thread(target=drive, daemon=True)
    try:
        t.start()
        assert done.wait(120), "a job never finished (lost wake-up)"
        assert not errors
    finally:
        pool.close()


def test_native_jobs_from_two_threads_and_nested_in_python_parts():
    """Two Python threads submit native jobs at once (one gets the pool, the other runs its parts
    itself), and a Python job's parts submit native jobs (nested: serial): all correct."""
    errors: list[str] = []

    def native_loop(tag: int) -> None:
        for i in range(300):
            argv, x, hits, want = _job(4, n=16, c=float(tag))
            T.run_native(_scale_part.address, argv, 4, 2)
            if not (np.array_equal(x, want) and np.array_equal(hits, np.ones(4, np.int64))):
                errors.append(f"thread {tag} job {i}")

    def nested_loop() -> None:
        for i in range(100):
            jobs = [_job(3, n=8) for _ in range(2)]

            def part(p: int) -> None:
                T.run_native(_scale_part.address, jobs[p][0], 3, 2)
            T.run_parts(part, 2, 2)
            for argv, x, hits, want in jobs:
                if not (np.array_equal(x, want) and np.array_equal(hits, np.ones(3, np.int64))):
                    errors.append(f"nested job {i}")
    ts = [threading.Thread(target=native_loop, args=(1,)), threading.Thread(target=native_loop, args=(2,)),
          threading.Thread(target=nested_loop)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not any(t.is_alive() for t in ts)
    assert not errors


def test_forked_child_gets_its_own_pool_and_spin_zero_env():
    """JITORT_THREAD_SPIN=0 (workers never spin) and a forked child: the child's native jobs run on
    a new pool (the parent's worker threads do not exist there)."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import numpy as np
        from jitort.kernels import threads as T
        from test_native_parts import _job, _scale_part
        assert T.SPIN_CYCLES == 0
        def check(tag):
            for i in range(200):
                argv, x, hits, want = _job(3)
                T.run_native(_scale_part.address, argv, 3, 2)
                assert np.array_equal(x, want) and np.array_equal(hits, np.ones(3, np.int64)), (tag, i)
        check("parent")
        parent_pool = T.pool()
        pid = os.fork()
        if pid == 0:
            try:
                check("child")
                assert T.pool() is not parent_pool and T.pool().workers
                os._exit(0)
            except BaseException as e:
                print("child failed:", repr(e), flush=True)
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        check("parent again")
        print("ok")
    """)
    env = dict(os.environ, JITORT_THREAD_SPIN="0")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


@njit(cache=True)
def _call(fn, k, argv):  # type: ignore[no-untyped-def]
    NP.call_part(fn, k, NP.addr(argv))


def test_call_part_and_float_args_round_trip():
    argv, x, hits, want = _job(2, c=-1.25)
    _call(_scale_part.address, 1, argv)
    assert np.array_equal(x[64:], want[64:]) and np.array_equal(x[:64], np.arange(64, dtype=np.float32))
    assert hits.tolist() == [0, 1]


def test_python_parts_fallback(monkeypatch):
    """JITORT_NATIVE_PARTS=0 (threads.NATIVE_PARTS False): the same parts as Python calls on the pool."""
    monkeypatch.setattr(T, "NATIVE_PARTS", False)
    argv, x, hits, want = _job(5)
    T.run_native(_scale_part.address, argv, 5, 2)
    assert np.array_equal(x, want) and np.array_equal(hits, np.ones(5, np.int64))


def test_idle_workers_sleep_after_native_jobs():
    """After native jobs, every worker stops spinning and sleeps (bounded spin): an idle session
    burns no CPU. (A worker that did not count the jobs it took part in as seen spun on forever.)"""
    for nparts in (2, 4, 9):
        argv, x, hits, want = _job(nparts)
        T.run_native(_scale_part.address, argv, nparts, 2)
        assert np.array_equal(x, want)
    pool = T.pool()
    deadline = time.monotonic() + 5.0
    while int(pool.ctl[NP.SLEEPERS]) < len(pool.workers) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert int(pool.ctl[NP.SLEEPERS]) == len(pool.workers) >= 1
    c0 = time.process_time()
    time.sleep(0.3)
    assert time.process_time() - c0 < 0.1  # a spinning worker would take ~0.3 s of CPU here
