"""kernels/threads.py: the kernels' worker pool (run_parts), how many parts work is worth (parts_for),
per-thread scratch buffers."""
from __future__ import annotations

import threading
import time

import numpy as np
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


def test_run_parts_caller_takes_over_parts_no_worker_started():
    """A worker that does not get a CPU does not hold the call up: the calling thread runs its part."""
    T.run_parts(lambda p: None, 2)  # the pool exists
    ran_on: dict[int, str] = {}
    gate = threading.Event()

    def part(p: int) -> None:
        ran_on[p] = threading.current_thread().name
    ex = T._executor
    assert ex is not None
    busy = [ex.submit(gate.wait, 5) for _ in range(ex._max_workers)]  # every worker is taken
    try:
        T.run_parts(part, 2)
        assert ran_on == {0: threading.current_thread().name, 1: threading.current_thread().name}
    finally:
        gate.set()
        for f in busy:
            f.result()


def test_run_parts_raises_the_parts_error_after_all_parts_finish():
    done: list[int] = []

    def part(p: int) -> None:
        if p == 1:
            raise ValueError("part 1")
        time.sleep(0.01)
        done.append(p)
    with pytest.raises(ValueError, match="part 1"):
        T.run_parts(part, 3)
    assert sorted(done) == [0, 2]


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
