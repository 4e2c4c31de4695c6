"""Compile a freshly lowered model's kernels in parallel processes, into the shared cache.

Numba holds the GIL while it compiles, so threads do not help; like Inductor's ``AsyncCompile``,
jitort hands work to worker processes. A job is either a generated kernel module (importing it
compiles its explicit signature) or one library call of the plan, run on zero-filled stand-ins of
its inputs — library kernels specialise on dtype, rank and layout only, so a stand-in with the
planned type compiles exactly what the real call will need. Workers and this process split the
jobs; afterwards the session's own bind and warm-up load what the workers compiled from the cache
(~3.5 ms per function) instead of compiling it.

Nothing here is needed for correctness: a job that fails (a stand-in a kernel rejects, a call
whose arguments cannot be described) is skipped and compiles lazily as before.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jitort import cache
from jitort.ir import Graph
from jitort.kernels.registry import Call, Ref
from jitort.kernels.threads import usable_cpus

_SMALL = 4096  # bytes: constants up to this size travel as they are (shape-like values steer code paths)


@dataclass(frozen=True)
class Zeros:
    """Stand-in for an array: zeros of this dtype and shape, C-contiguous and writeable."""

    dtype: str
    shape: tuple[int, ...]

    def make(self) -> np.ndarray:
        return np.zeros(self.shape, np.dtype(self.dtype))


@dataclass
class Job:
    """A module to import (``kind``, ``name``, ``source``) or a call to make (``fn``, ``args``, ``kwargs``)."""

    kind: str = ""
    name: str = ""
    source: str = ""
    fn: Any = None
    args: tuple = ()
    kwargs: dict[str, Any] | None = None

    def run(self, root: Path | None) -> None:
        if self.kind:
            cache.load_source_module(self.kind, self.name, self.source, root)
            return
        real = lambda v: v.make() if isinstance(v, Zeros) else v  # noqa: E731
        self.fn(*[real(a) for a in self.args], **{k: real(v) for k, v in (self.kwargs or {}).items()})


def _describe(v: Any) -> Any:
    """A picklable stand-in for a call argument, or raise ValueError."""
    if isinstance(v, np.ndarray):
        if v.dtype == object:
            raise ValueError("object array")
        return v if v.nbytes <= _SMALL else Zeros(v.dtype.str if v.dtype.kind in "biufc" else v.dtype.name, v.shape)
    if v is None or isinstance(v, (bool, int, float, str, np.generic, np.dtype)):
        return v
    if isinstance(v, (tuple, list)):
        return type(v)(_describe(x) for x in v)
    raise ValueError(f"cannot describe a {type(v).__name__}")


def _call_job(call: Call, g: Graph) -> tuple[Any, Job] | None:
    try:
        args = []
        for a in call.args:
            if isinstance(a, Ref):
                c = g.const(a.name)
                if c is not None:
                    args.append(_describe(np.asarray(c)))
                    continue
                t = g.type_of(a.name)
                if t.dtype is None or t.shape is None or not t.is_static():
                    return None
                args.append(Zeros(np.dtype(t.dtype).str if np.dtype(t.dtype).kind in "biufc"
                                  else np.dtype(t.dtype).name, tuple(int(d) for d in t.shape)))
            else:
                args.append(_describe(a))
        kwargs = {k: _describe(v) for k, v in call.kwargs.items()}
        job = Job(fn=call.fn, args=tuple(args), kwargs=kwargs)
        pickle.dumps(job)
    except (ValueError, TypeError, pickle.PicklingError, AttributeError):
        return None
    key = (getattr(call.fn, "__module__", ""), getattr(call.fn, "__qualname__", ""),
           repr([(a.dtype, a.shape) if isinstance(a, Zeros) else a for a in args]), repr(sorted(kwargs.items())))
    return key, job


def jobs_for(steps: list[Any], g: Graph) -> list[Job]:
    """One job per distinct kernel module and per distinct library call of the plan's steps."""
    seen: dict[Any, Job] = {}
    for s in steps:
        if s.kernel is not None:
            seen.setdefault(("kernel", s.kernel.name), Job(kind="kernels", name=s.kernel.name, source=s.kernel.source))
        elif s.call is not None:
            kj = _call_job(s.call, g)
            if kj is not None:
                seen.setdefault(kj[0], kj[1])
    return list(seen.values())


def _module_cached(job: Job, root: Path) -> bool:
    d = root / job.kind / job.name[-20:-18] / "__pycache__"
    return d.is_dir() and any(d.glob(f"{job.name}.*.nbi"))


def workers_for(n_jobs: int, config: dict[str, str]) -> int:
    """Worker processes to start: ``session.jitort.compile_workers`` / ``JITORT_COMPILE_WORKERS``
    (0 disables), by default one fewer than the usable CPUs, and none for small models."""
    want = config.get("session.jitort.compile_workers", os.environ.get("JITORT_COMPILE_WORKERS", ""))
    if want.strip():
        return max(0, int(want))
    return min(usable_cpus() - 1, 7) if n_jobs >= 16 else 0


def precompile(jobs: list[Job], root: Path, workers: int) -> None:
    """Split ``jobs`` between ``workers`` processes and this one; wait for all of them."""
    jobs = [j for j in jobs if not (j.kind and _module_cached(j, root))]
    if workers <= 0 or len(jobs) < 2:
        return
    shares = _split(jobs, workers + 1)
    procs = []
    with tempfile.TemporaryDirectory(prefix=".compile-", dir=cache.ensure_private_dir(root)) as tmp:
        # Library kernels live in the process-wide root (JITORT_CACHE_DIR), generated modules in ``root``.
        env = dict(os.environ, JITORT_CACHE_DIR=str(cache.cache_root()), JITORT_COMPILE_WORKERS="0")
        for k, share in enumerate(shares[1:]):
            path = Path(tmp) / f"jobs{k}.pkl"
            path.write_bytes(pickle.dumps((str(root), share)))
            procs.append(subprocess.Popen([sys.executable, "-c", "import sys, jitort.compile_pool as p; "
                                           "p.worker(sys.argv[1])", str(path)], env=env,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        for job in shares[0]:
            _attempt(job, root)
        for p in procs:
            try:
                p.wait(timeout=900)
            except subprocess.TimeoutExpired:
                p.kill()


def _split(jobs: list[Job], n: int) -> list[list[Job]]:
    """Calls of one library function stay together (they share most of what they compile); groups
    go to the least loaded share, largest first. The weights are a guess: the first call of a
    function compiles most of its kernels, later calls with other geometry add code paths."""
    groups: dict[Any, list[Job]] = {}
    for j in jobs:
        key = ("module", j.name) if j.kind else (getattr(j.fn, "__module__", ""), getattr(j.fn, "__qualname__", ""))
        groups.setdefault(key, []).append(j)
    shares: list[list[Job]] = [[] for _ in range(n)]
    load = [0.0] * n
    for g in sorted(groups.values(), key=len, reverse=True):
        k = load.index(min(load))
        shares[k] += g
        load[k] += 1.0 + 0.5 * (len(g) - 1)
    return shares


def _attempt(job: Job, root: Path | None) -> None:
    try:
        job.run(root)
    except Exception:  # noqa: BLE001 - best effort: what fails here compiles when the plan needs it
        pass


def worker(path: str) -> None:
    """Entry point of a worker process: run the pickled jobs, ignoring failures."""
    import jitort  # noqa: F401  (registers the ops)
    root, jobs = pickle.loads(Path(path).read_bytes())
    for job in jobs:
        _attempt(job, Path(root))
