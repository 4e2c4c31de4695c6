"""kernels/threads.py: the kernels' worker pool (run_parts), how many parts work is worth (parts_for),
per-thread scratch buffers."""
from __future__ import annotations

import threading
import time

import numpy as np
import onnx
import pytest

from jitort.kernels import threads as T


def test_run_parts_runs_every_part_once():
    seen: list[int] = []
    lock = threading.Lock()

    def part(p: int) -> None:
        time.sleep(0.001 * (p % 3))
        with lock:
            seen.append(p)
    for n in (1, 2, 5):
        seen.clear()
        T.run_parts(part, n)
        assert sorted(seen) == list(range(n))


def test_run_parts_caller_takes_over_parts_no_worker_started(monkeypatch):
    """A worker that does not get a CPU does not hold the call up: the calling thread runs its part."""
    gate = threading.Event()
    monkeypatch.setattr(T.Pool, "_loop", lambda self, idx, seen: gate.wait(10))  # workers never start
    pool = T.Pool()
    ran_on: dict[int, str] = {}

    def part(p: int) -> None:
        ran_on[p] = threading.current_thread().name
    try:
        pool.run(part, 3, 3)
        me = threading.current_thread().name
        assert ran_on == {0: me, 1: me, 2: me}
    finally:
        gate.set()


@pytest.mark.parametrize("spin", [0, 50_000])
def test_pool_workers_take_parts_with_and_without_spinning(spin):
    """Workers (spinning after a job, or asleep on the condition variable) run parts of later jobs."""
    pool = T.Pool(spin_cycles=spin)
    names: set[str] = set()
    lock = threading.Lock()

    def part(p: int) -> None:
        time.sleep(0.002)  # releases the GIL, as a nogil kernel does: both threads get a part
        with lock:
            names.add(threading.current_thread().name)
    try:
        for _ in range(200):  # a worker woken on a loaded machine (other pools' workers still
            pool.run(part, 4, 2)  # spinning from earlier tests) may start late: up to 200 jobs
            time.sleep(0.001 if spin else 0.0)  # a gap between jobs, as between two layers
            if any(n.startswith("jitort-kernel") for n in names):
                break
        assert any(n.startswith("jitort-kernel") for n in names)
    finally:
        pool.close()


def test_run_parts_nested_and_concurrent_calls():
    """A part calling run_parts (the pool is busy: it runs inline) cannot deadlock; calls from several
    threads at once each run every part exactly once."""
    counts: dict[tuple[int, int, int], int] = {}
    lock = threading.Lock()

    def job(tag: int) -> None:
        def outer(p: int) -> None:
            def inner(q: int) -> None:
                with lock:
                    counts[(tag, p, q)] = counts.get((tag, p, q), 0) + 1
            T.run_parts(inner, 3, 2)
        for _ in range(30):
            T.run_parts(outer, 4, 2)
    ts = [threading.Thread(target=job, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not any(t.is_alive() for t in ts)
    assert counts == {(i, p, q): 30 for i in range(3) for p in range(4) for q in range(3)}


def test_run_parts_more_parts_than_threads_and_threads_limit():
    seen: list[int] = []
    lock = threading.Lock()

    def part(p: int) -> None:
        with lock:
            seen.append(p)
    T.run_parts(part, 17, 2)
    assert sorted(seen) == list(range(17))
    seen.clear()
    T.run_parts(part, 5, 1)  # one thread: every part here, in order
    assert seen == list(range(5))


def test_parts_for(monkeypatch):
    monkeypatch.setattr(T, "intra_op_threads", lambda: 2)
    assert T.parts_for(10, 1e3) == 1  # tiny work: no parallel region
    assert T.parts_for(10, 1e9) == 2  # the session's threads at most
    assert T.parts_for(1, 1e9) == 1  # nothing to split
    assert T.parts_for(10, 50, per_part=10) == 2
    monkeypatch.setattr(T, "intra_op_threads", lambda: 8)
    assert T.parts_for(3, 1e9) == 3


def test_scratch_is_per_thread_and_reused():
    a = T.scratch(100, np.dtype(np.float32))
    assert a.shape[0] >= 100 and T.scratch(50, np.dtype(np.float32)) is a
    other: list[np.ndarray] = []
    t = threading.Thread(target=lambda: other.append(T.scratch(100, np.dtype(np.float32))))
    t.start()
    t.join()
    assert other[0] is not a


def test_spin_while_is_bounded_and_sees_other_threads_writes():
    from jitort.kernels.spin import spin_while
    flags = np.zeros(2, np.int64)
    t0 = time.perf_counter()
    assert spin_while(flags, 0, 0, 200_000) == 0  # nothing changes: gives up after ~200k cycles
    assert time.perf_counter() - t0 < 1.0
    flags[1] = 7
    assert spin_while(flags, 1, 0, 10 ** 12) == 7  # already different: returns at once
    t = threading.Timer(0.01, lambda: flags.__setitem__(0, 3))
    t.start()
    assert spin_while(flags, 0, 0, 10 ** 11) == 3  # a write from another thread ends the wait
    t.join()


def test_worker_wait_yields_then_times_out_or_takes_the_next_job():
    """A worker spins, then spins yielding the CPU (sched_yield) up to its second budget, then gives
    up (TIMED_OUT); a job published during the yielding phase ends the wait (PYTHON_JOB)."""
    from jitort.kernels import native_parts as NP
    ctl = np.zeros(NP.CTL_SIZE, np.int64)
    seen = int(ctl[NP.GEN])
    t0 = time.perf_counter()
    code, gen = NP.worker_wait(ctl, 1, seen, 1_000, 3_000_000)
    assert (code, gen) == (NP.TIMED_OUT, seen)
    assert time.perf_counter() - t0 < 1.0
    # a Python job (even GEN) published 20 ms in: long past the plain spin, inside the yielding one
    t = threading.Timer(0.02, lambda: ctl.__setitem__(NP.GEN, seen + 2))
    t.start()
    code, gen = NP.worker_wait(ctl, 1, seen, 1_000, 10 ** 12)
    t.join()
    assert (code, gen) == (NP.PYTHON_JOB, seen + 2)


def test_each_session_runs_with_its_own_thread_count():
    """Sessions of one process with different intra_op_num_threads: each run uses its session's count
    (the count is process-wide in jitort's kernels; a run restores its session's when another
    session set a different one)."""
    import jitort
    from jitort.kernels import threads
    from oracle import make_model
    m = make_model([onnx.helper.make_node("Relu", ["x"], ["y"])], {"x": (np.float32, [2, 3])}, ["y"]).SerializeToString()
    sessions = {}
    for n in (1, 2, 3):
        so = jitort.SessionOptions()
        so.intra_op_num_threads = n
        sessions[n] = jitort.InferenceSession(m, so)
    x = np.ones((2, 3), np.float32)
    for n in (1, 3, 2, 1):
        sessions[n].run(None, {"x": x})
        assert threads.get_num_threads() == n
