"""Compile a freshly lowered model's kernels in parallel processes, into the shared cache.

Numba holds the GIL while it compiles, so threads do not help; like Inductor's ``AsyncCompile``,
jitort hands work to worker processes. A job is either a generated kernel module (importing it
compiles its explicit signature) or one library call of the plan, run on zero-filled stand-ins of
its inputs — library kernels specialise on dtype, rank and layout only, so a stand-in with the
planned type compiles exactly what the real call will need. Workers and this process split the
jobs; afterwards the session's own bind and warm-up load what the workers compiled from the cache
(~3.5 ms per function) instead of compiling it.

Workers start before the model is lowered (``early_workers``: their import overlaps the lowering;
for a model with convolutions they then compile the packed GEMM every GEMM conv path calls) and get
their share on stdin. The split knows what each job compiles: a library function may name its
parts with rough costs (``fn.compile_parts``: conv by path, pooling by kind; a part named with its
module, like the GEMM, is shared across functions), calls that compile nothing new are dropped, and
the shares are balanced on the parts each process does not compile already, counting the set-up a
worker still has to finish (light_resnet50 on 2 CPUs: 9 jobs, ~10-11 s per process).

Nothing here is needed for correctness: a job that fails (a stand-in a kernel rejects, a call
whose arguments cannot be described) is skipped and compiles lazily as before.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
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
    parts: dict[str, float] = field(default_factory=dict)  # what it compiles: part -> rough seconds

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
    """One job per distinct kernel module and per distinct library call of the plan's steps; of the
    calls whose function names what they compile (``compile_parts``), one per distinct set of parts."""
    seen: dict[Any, Job] = {}
    for s in steps:
        if s.kernel is not None:
            seen.setdefault(("kernel", s.kernel.name),
                            Job(kind="kernels", name=s.kernel.name, source=s.kernel.source,
                                parts={f"module {s.kernel.name}": _MODULE_SECONDS}))
        elif s.call is not None:
            kj = _call_job(s.call, g)
            if kj is not None:
                key, job = kj
                job.parts = _parts(job, len(seen))
                if getattr(job.fn, "compile_parts", None) is not None:
                    key = frozenset(job.parts)
                seen.setdefault(key, job)
    return list(seen.values())


_MODULE_SECONDS = 0.4  # a generated kernel module (measured: 0.2-0.5 s)


def _parts(job: Job, uid: int) -> dict[str, float]:
    """What a call job compiles. A library function may say (``fn.compile_parts(*args, **kwargs)``
    -> {part: seconds}, called on zero arrays of the planned types); otherwise calls of one
    function are taken to share most of their work (0.5 s for the first, 0.2 s for each other:
    most library calls without a hint are numpy-level and compile little)."""
    name = f"{getattr(job.fn, '__module__', '')}.{getattr(job.fn, '__qualname__', '')}"
    hint = getattr(job.fn, "compile_parts", None)
    if hint is not None:
        real = lambda v: v.make() if isinstance(v, Zeros) else v  # noqa: E731
        try:
            # a part named with its module ("jitort.kernels.convgemm.gemm[float32]") is shared by
            # whatever calls need it; others are the function's own
            return {p if "." in p.split("[")[0] else f"{name}:{p}": float(c) for p, c in
                    hint(*[real(a) for a in job.args], **{k: real(v) for k, v in (job.kwargs or {}).items()}).items()}
        except Exception:  # noqa: BLE001 - a hint that fails only makes the split less even
            pass
    return {name: 0.5, f"{name}#{uid}": 0.2}


def _module_cached(job: Job, root: Path) -> bool:
    d = root / job.kind / job.name[-20:-18] / "__pycache__"
    return d.is_dir() and any(d.glob(f"{job.name}.*.nbi"))


_MIN_NODES = 60  # a model this big usually has several seconds of kernels to compile: start workers early


def worker_count(config: dict[str, str]) -> int | None:
    """``session.jitort.compile_workers`` / ``JITORT_COMPILE_WORKERS`` if set (0 disables), else None."""
    want = config.get("session.jitort.compile_workers", os.environ.get("JITORT_COMPILE_WORKERS", ""))
    return max(0, int(want)) if want.strip() else None


def early_workers(n_nodes: int, config: dict[str, str], gemm_dtypes: tuple[str, ...] = ()) -> Workers | None:
    """Worker processes for a model about to be lowered and compiled, started now so that their
    import and set-up (~1 s) overlap this process's lowering: by default one fewer than the usable
    CPUs for models of ``_MIN_NODES`` nodes or more. ``gemm_dtypes``: the element types of the
    model's convolutions; the workers compile the packed GEMM for them while they wait."""
    n = worker_count(config)
    if n is None:
        n = min(usable_cpus() - 1, 7) if n_nodes >= _MIN_NODES else 0
    return Workers(n, gemm_dtypes) if n > 0 else None


class Workers:
    """Idle worker processes: each imports jitort, loads the kernel families, compiles the packed
    GEMM for ``gemm_dtypes`` (every GEMM conv path calls it: ~1.4 s a dtype, which the worker
    would otherwise spend waiting for the lowering) and waits for the path of its jobs on stdin
    (``precompile``); closing stdin without a path ends it. ``have``: the compile parts a worker
    holds before its jobs come."""

    def __init__(self, n: int, gemm_dtypes: tuple[str, ...] = ()) -> None:
        # Library kernels live in the process-wide root (JITORT_CACHE_DIR), generated modules in the
        # session's root (sent with the jobs).
        env = dict(os.environ, JITORT_CACHE_DIR=str(cache.cache_root()), JITORT_COMPILE_WORKERS="0")
        code = f"import jitort.compile_pool as p; p.worker({list(gemm_dtypes)!r})"
        self.procs = [subprocess.Popen([sys.executable, "-c", code], env=env,
                                       stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, text=True) for _ in range(n)]
        self.sent: set[int] = set()
        # when the workers will be free for jobs: set-up, then the GEMMs (estimates, Zen 3)
        self.free_at = time.perf_counter() + _WORKER_SETUP + _GEMM_SECONDS * len(gemm_dtypes)
        from jitort.kernels.convgemm import gemm_part
        self.have = {gemm_part(np.dtype(d)) for d in gemm_dtypes}

    def __len__(self) -> int:
        return len(self.procs)

    def send(self, k: int, path: str) -> None:
        self.sent.add(k)
        try:
            self.procs[k].stdin.write(path + "\n")  # type: ignore[union-attr]
            self.procs[k].stdin.close()  # type: ignore[union-attr]
        except OSError:  # the worker died: its jobs compile in this process, lazily
            pass

    def close(self, timeout: float = 900) -> None:
        """Wait for the workers that got jobs; end the others (they may still be importing)."""
        for k, p in enumerate(self.procs):
            if k not in self.sent:
                p.kill()
            try:
                if p.stdin is not None and not p.stdin.closed:
                    p.stdin.close()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def precompile(jobs: list[Job], root: Path, workers: Workers) -> None:
    """Split ``jobs`` between the ``workers`` and this process; wait for all of them."""
    try:
        jobs = [j for j in jobs if not (j.kind and _module_cached(j, root))]
        if _cost(jobs) < _MIN_SECONDS or len(jobs) < 2:
            return  # not worth splitting: the session compiles what it needs itself
        shares = _split(jobs, len(workers) + 1, workers.have, max(0.0, workers.free_at - time.perf_counter()))
        with tempfile.TemporaryDirectory(prefix=".compile-", dir=cache.ensure_private_dir(root)) as tmp:
            for k, share in enumerate(shares[1:]):
                path = Path(tmp) / f"jobs{k}.pkl"
                path.write_bytes(pickle.dumps((str(root), share)))
                workers.send(k, str(path))
            for job in shares[0]:
                _attempt(job, root)
            workers.close()  # before the job files go
    finally:
        workers.close()


_MIN_SECONDS = 4.0  # estimated compile work below which splitting does not pay


_MAIN_START = 0.3  # this process sets up Numba's target on its first compile; the workers did it while it lowered
_WORKER_SETUP = 0.95  # a worker's start: Python, jitort, the kernel families, Numba's target (measured 0.85-1.0 s)
_GEMM_SECONDS = 1.4  # the packed GEMM a worker compiles for each conv dtype before its jobs
_SHARED = 1.0  # a part this expensive keeps the jobs that need it in one process


def _split(jobs: list[Job], n: int, worker_has: set[str] = frozenset(),  # type: ignore[assignment]
           worker_busy: float = 0.0) -> list[list[Job]]:
    """Jobs that share an expensive part (convolution paths on one GEMM) form a cluster that one
    process compiles, unless the cluster alone exceeds a fair share; then greedy, largest first:
    each cluster goes to the share that finishes it earliest, counting only the parts that share
    does not compile already (the workers start with ``worker_has``, after ``worker_busy`` more
    seconds of their set-up). Share 0 is this process."""
    owner: dict[str, int] = {}
    parent = list(range(len(jobs)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i
    for i, j in enumerate(jobs):
        for p, c in j.parts.items():
            if c >= _SHARED:
                parent[root(i)] = root(owner.setdefault(p, i))
    clusters: dict[int, list[Job]] = {}
    for i, j in enumerate(jobs):
        clusters.setdefault(root(i), []).append(j)
    held = sum(c for p, c in _parts_of(jobs).items() if p in worker_has)
    fair = (_cost(jobs) - held + _MAIN_START + worker_busy * (n - 1)) / n
    units: list[list[Job]] = []
    for c in clusters.values():  # a cluster over a fair share is split into its jobs
        units += [c] if _cost(c) <= fair else [[j] for j in c]
    shares: list[list[Job]] = [[] for _ in range(n)]
    have: list[set[str]] = [set()] + [set(worker_has) for _ in range(n - 1)]
    load = [_MAIN_START] + [worker_busy] * (n - 1)
    for u in sorted(units, key=_cost, reverse=True):
        parts = _parts_of(u)
        extra = [sum(c for p, c in parts.items() if p not in have[k]) for k in range(n)]
        k = min(range(n), key=lambda k: load[k] + extra[k])
        shares[k] += u
        have[k].update(parts)
        load[k] += extra[k]
    return shares


def _parts_of(jobs: list[Job]) -> dict[str, float]:
    """The distinct parts the jobs compile, with their costs."""
    return {p: c for j in jobs for p, c in j.parts.items()}


def _cost(jobs: list[Job]) -> float:
    return sum(_parts_of(jobs).values())


def _attempt(job: Job, root: Path | None) -> None:
    try:
        job.run(root)
    except Exception:  # noqa: BLE001 - best effort: what fails here compiles when the plan needs it
        pass


def worker(gemm_dtypes: list[str] = ()) -> None:  # type: ignore[assignment]
    """Entry point of a worker process (``Workers``): load the kernel families, compile the GEMM
    for ``gemm_dtypes``, then run the jobs whose pickle path arrives on stdin, ignoring failures."""
    import jitort  # noqa: F401  (registers the ops)
    from numba.core.registry import cpu_target

    from jitort.kernels.registry import load_families
    load_families()
    # Numba's target set-up (~0.25 s: its numpy and BLAS registries), which the first compile would
    # do, while the session is still lowering the model
    cpu_target.typing_context.refresh()
    cpu_target.target_context.refresh()
    if gemm_dtypes:
        from jitort.kernels.convgemm import gemm_address
        for d in gemm_dtypes:
            try:
                gemm_address(np.dtype(d))
            except Exception:  # noqa: BLE001 - best effort, like the jobs
                pass
    path = sys.stdin.readline().strip()
    if not path:
        return
    root, jobs = pickle.loads(Path(path).read_bytes())
    for job in jobs:
        _attempt(job, Path(root))
