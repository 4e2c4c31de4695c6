"""Compile a freshly lowered model's kernels in parallel processes, into the shared cache.

Numba holds the GIL while it compiles, so threads do not help; like Inductor's ``AsyncCompile``,
jitort hands work to worker processes. A job is either a generated kernel module (importing it
compiles its explicit signature) or one library call of the plan, run on zero-filled stand-ins of
its inputs — library kernels specialise on dtype, rank and layout only, so a stand-in with the
planned type compiles exactly what the real call will need. Workers and this process split the
jobs; afterwards the session's own bind and warm-up load what the workers compiled from the cache
(~3.5 ms per function) instead of compiling it.

Workers start before the model is lowered (``early_workers``: forked once this process is set
up, or started as new interpreters whose import overlaps the lowering; for a model with
convolutions they then compile the packed GEMM every GEMM conv path calls) and get the jobs through
a pipe. The split knows what each job compiles: a library function may name its parts with rough
costs (``fn.compile_parts``: conv by path, pooling by kind; a part named with its module, like the
GEMM, is shared across functions), calls that compile nothing new are dropped, and the shares are
balanced on the parts each process does not compile already, counting the set-up a worker still
has to finish. The estimates are off by 10-25 % per kernel, so a share is only an order of
preference: every process claims a job before running it, and one that runs out takes the jobs
the others have not started (light_resnet50 on 2 CPUs: 9 jobs, ~10-12 s per process).

Nothing here is needed for correctness: a job that fails (a stand-in a kernel rejects, a call
whose arguments cannot be described) is skipped and compiles lazily as before.
"""
from __future__ import annotations

import gc
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jitort import cache
from jitort.ir import Graph
from jitort.kernels.convgemm import gemm_address, gemm_part
from jitort.kernels.registry import Call, Ref, load_families
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
           tuple(_key(a) for a in args), tuple((k, _key(v)) for k, v in sorted(kwargs.items())))
    return key, job


def _key(v: Any) -> Any:
    """A hashable identity of a described argument (numpy's repr of the small arrays cost 0.17 s for resnet50)."""
    if isinstance(v, np.ndarray):
        return (v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, (tuple, list)):
        return (type(v).__name__,) + tuple(_key(x) for x in v)
    return (type(v).__name__, repr(v))


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
    """Idle worker processes: each has jitort, the kernel families and Numba's target ready,
    compiles the packed GEMM for ``gemm_dtypes`` (every GEMM conv path calls it: ~1.4 s a dtype,
    which the worker would otherwise spend waiting for the lowering) and waits for the path of its
    jobs (``precompile``); closing its input without a path ends it. ``have``: the compile parts a
    worker holds before its jobs come.

    On Linux, from a process with no other thread, workers are forked (``_Forked``) once this
    process has loaded the kernel families and set up Numba's target, which it needs before its
    own first compile anyway: they start with all of it (a started interpreter takes ~1.4 s to
    import and set up the same). Otherwise (other threads: a fork copies their locks in whatever
    state they are in) they are started as new interpreters."""

    def __init__(self, n: int, gemm_dtypes: tuple[str, ...] = ()) -> None:
        # Library kernels live in the process-wide root (JITORT_CACHE_DIR), generated modules in the
        # session's root (sent with the jobs).
        self.procs: list[Any] = []
        if _FORK and threading.active_count() == 1:
            _set_up()
            try:
                for _ in range(n):
                    self.procs.append(_Forked(list(gemm_dtypes)))
            except OSError:  # no more processes or memory for one: what was forked serves
                pass
        self.forked = bool(self.procs)
        if not self.forked:
            env = dict(os.environ, JITORT_CACHE_DIR=str(cache.cache_root()), JITORT_COMPILE_WORKERS="0")
            code = f"import jitort.compile_pool as p; p.worker({list(gemm_dtypes)!r})"
            self.procs = [subprocess.Popen([sys.executable, "-c", code], env=env,
                                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, text=True) for _ in range(n)]
        self.sent: set[int] = set()
        # when the workers will be free for jobs: set-up, then the GEMMs (estimates, Zen 3)
        self.free_at = (time.perf_counter() + (0.0 if self.forked else _WORKER_SETUP)
                        + _GEMM_SECONDS * len(gemm_dtypes))
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
    """Split ``jobs`` between the ``workers`` and this process; wait for all of them. The split
    (from rough cost estimates) is each process's order of preference, not a fixed assignment:
    a process claims each job before it runs it (``_run_claimed``), and one that finishes its
    share goes on with the jobs the others have not started (see ``_orders``)."""
    try:
        jobs = [j for j in jobs if not (j.kind and _module_cached(j, root))]
        if _cost(jobs) < _MIN_SECONDS or len(jobs) < 2:
            return  # not worth splitting: the session compiles what it needs itself
        shares = _split(jobs, len(workers) + 1, workers.have, max(0.0, workers.free_at - time.perf_counter()),
                        0.0 if workers.forked else _MAIN_START)
        jobs = [j for share in shares for j in share]
        orders = _orders(shares, workers.have)
        with tempfile.TemporaryDirectory(prefix=".compile-", dir=cache.ensure_private_dir(root)) as tmp:
            for k in range(len(workers)):
                path = Path(tmp) / f"jobs{k}.pkl"
                path.write_bytes(pickle.dumps((str(root), jobs, orders[k + 1], tmp)))
                workers.send(k, str(path))
            _run_claimed(jobs, orders[0], Path(tmp), root)
            workers.close()  # before the job files go
    finally:
        workers.close()


def _orders(shares: list[list[Job]], worker_has: set[str]) -> list[list[int]]:
    """Each process's job order (indices into the shares laid end to end): its own share, then the
    other shares' jobs from their ends (the small jobs their owners would run last), leaving out
    a job that needs an expensive part both the job's owner and other jobs share and this process
    does not hold (a second copy of the packed GEMM, say, costs more than waiting would)."""
    start = [sum(len(s) for s in shares[:k]) for k in range(len(shares))]
    users = _users([j for share in shares for j in share])
    orders = []
    for k, own in enumerate(shares):
        have = set(_parts_of(own)) | (set(worker_has) if k else set())
        order = [start[k] + i for i in range(len(own))]
        for o, other in enumerate(shares):
            if o != k:
                order += [start[o] + i for i in reversed(range(len(other)))
                          if all(p in have for p, c in other[i].parts.items() if c >= _SHARED and users[p] > 1)]
        orders.append(order)
    return orders


def _run_claimed(jobs: list[Job], order: list[int], claims: Path, root: Path) -> None:
    """Run ``jobs[i]`` for i in ``order`` that no other process has claimed (a claim is a file
    created exclusively in the directory ``claims``)."""
    for i in order:
        try:
            os.close(os.open(claims / f"claim{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            continue
        except OSError:  # the directory is gone: the session has moved on
            return
        _attempt(jobs[i], root)


_MIN_SECONDS = 4.0  # estimated compile work below which splitting does not pay


_MAIN_START = 0.3  # this process sets up Numba's target on its first compile; started workers did it while it lowered
_WORKER_SETUP = 0.95  # a worker's start: Python, jitort, the kernel families, Numba's target (measured 0.85-1.0 s)
_GEMM_SECONDS = 1.4  # the packed GEMM a worker compiles for each conv dtype before its jobs
_SHARED = 1.0  # a part this expensive keeps the jobs that need it in one process


def _split(jobs: list[Job], n: int, worker_has: set[str] = frozenset(),  # type: ignore[assignment]
           worker_busy: float = 0.0, main_start: float = _MAIN_START) -> list[list[Job]]:
    """Jobs that share an expensive part (convolution paths on one GEMM) form a cluster that one
    process compiles, unless the cluster alone exceeds a fair share by more than that part; then
    greedy, largest first:
    each cluster goes to the share that finishes it earliest, counting only the parts that share
    does not compile already (the workers start with ``worker_has``, after ``worker_busy`` more
    seconds of their set-up; this process after ``main_start``). Share 0 is this process."""
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
    fair = (_cost(jobs) - held + main_start + worker_busy * (n - 1)) / n
    units: list[list[Job]] = []
    for c in clusters.values():
        # a cluster is split into its jobs only when it exceeds a fair share by more than the
        # part its jobs share (splitting compiles that part twice; the claiming evens out the rest)
        users = _users(c)
        shared = max((cost for p, cost in _parts_of(c).items() if users[p] > 1 and cost >= _SHARED), default=0.0)
        units += [c] if _cost(c) <= fair + shared else [[j] for j in c]
    shares: list[list[Job]] = [[] for _ in range(n)]
    have: list[set[str]] = [set()] + [set(worker_has) for _ in range(n - 1)]
    load = [main_start] + [worker_busy] * (n - 1)
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


def _users(jobs: list[Job]) -> dict[str, int]:
    """How many of the jobs need each part."""
    n: dict[str, int] = {}
    for j in jobs:
        for p in j.parts:
            n[p] = n.get(p, 0) + 1
    return n


def _cost(jobs: list[Job]) -> float:
    return sum(_parts_of(jobs).values())


def _attempt(job: Job, root: Path | None) -> None:
    try:
        job.run(root)
    except Exception:  # noqa: BLE001 - best effort: what fails here compiles when the plan needs it
        pass


def _set_up() -> None:
    """What a process needs before it compiles kernels: the kernel families (jobs name their
    functions) and Numba's target (~0.25 s: its numpy and BLAS registries, which the first compile
    would otherwise set up)."""
    import jitort.compiler  # noqa: F401  (control-flow kernels compile bodies through it)
    from numba.core.registry import cpu_target

    load_families()
    cpu_target.typing_context.refresh()
    cpu_target.target_context.refresh()


def _serve(gemm_dtypes: list[str], read_path: Any) -> None:
    """A set-up worker's work: compile the GEMM for ``gemm_dtypes``, then claim and run jobs from
    the file whose path ``read_path()`` returns (``precompile``), ignoring failures."""
    if gemm_dtypes:
        for d in gemm_dtypes:
            try:
                gemm_address(np.dtype(d))
            except Exception:  # noqa: BLE001 - best effort, like the jobs
                pass
    path = read_path().strip()
    if not path:
        return
    root, jobs, order, claims = pickle.loads(Path(path).read_bytes())
    _run_claimed(jobs, order, Path(claims), Path(root))


def worker(gemm_dtypes: list[str] = ()) -> None:  # type: ignore[assignment]
    """Entry point of a worker started as a new interpreter (``Workers``): set up, then serve the
    job path that arrives on stdin."""
    _set_up()
    _serve(list(gemm_dtypes), sys.stdin.readline)


_FORK = sys.platform.startswith("linux")  # fork is the platform's default there and keeps Numba usable


class _Forked:
    """A worker forked from this process, with the part of ``subprocess.Popen``'s interface that
    ``Workers`` uses (stdin, poll, wait, kill, returncode). The child writes nothing to this
    process's output and leaves with ``os._exit``: no atexit handlers, no flush of buffers it
    inherited."""

    def __init__(self, gemm_dtypes: list[str]) -> None:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 0
            try:
                # what the parent had (its garbage too, whose finalizers could remove the parent's
                # files) is never collected here
                gc.freeze()
                os.close(w)
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.environ["JITORT_COMPILE_WORKERS"] = "0"
                with os.fdopen(r) as jobs:
                    _serve(gemm_dtypes, jobs.readline)
            except BaseException:  # noqa: BLE001 - whatever happens, never return into the parent's code
                code = 1
            finally:
                os._exit(code)
        os.close(r)
        self.pid = pid
        self.stdin = os.fdopen(w, "w")
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while self.poll() is None:
            if end is not None and time.monotonic() >= end:
                raise subprocess.TimeoutExpired(f"jitort compile worker {self.pid}", timeout or 0)
            time.sleep(delay)
            delay = min(delay * 2, 0.005)
        return self.returncode  # type: ignore[return-value]

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
