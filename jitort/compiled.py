"""The compiled model: one record, the same whatever its origin.

An :class:`Artifact` is what the compile service (``jitort.compile_service``) hands a session: the
plan module and kernel modules (name and source), the plan's constants, the input signature and
output names, facts the session acts on (``target``, ``own_threads``), and what producing it cost
(``compiled``: the functions Numba compiled, ``seconds``). It comes from a fresh compile
(``loaded_from == ""``), a cache entry or an AOT directory; the IR after passes is kept from a fresh
compile and rebuilt on demand (:meth:`Artifact.ir`) for a loaded one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from jitort import cache
from jitort.ir import Graph


@dataclass
class Artifact:
    plan_name: str
    plan_source: str
    kernel_sources: dict[str, str]           # module name -> source
    consts: dict[str, Any]                   # the plan's constants (packed weights included)
    inputs: list[tuple[str, np.dtype | None, tuple | None]]  # name, dtype (None: not a tensor), shape
    outputs: list[str]
    target: str = "cpu"                      # "cpu", or "cuda" for a plan that runs CUDA steps
    own_threads: bool = False                # the plan runs jitort's threaded GEMM kernels (BLAS stays at 1)
    compiled: list[tuple[str, float]] = field(default_factory=list)  # (function, seconds) Numba compiled
    seconds: float = 0.0
    loaded_from: str = ""                    # "" compiled now; else the entry/artifact directory
    key: str = ""                            # the cache key (compile_service.cache_key) and
    model_hash: str = ""                     # the model's sha256, once the service resolved it
    steps: list[Any] = field(default_factory=list)  # the plan's steps (codegen.plan.Step), when compiled now
    graph: Graph | None = field(default=None, repr=False)  # the IR after passes, when compiled now
    rebuild: Callable[[], Graph] | None = field(default=None, repr=False)  # passes only, for a loaded one

    @property
    def fresh(self) -> bool:
        """Compiled by this process (not loaded from a cache entry or artifact)."""
        return not self.loaded_from

    def ir(self) -> Graph:
        """The IR after passes: kept from a fresh compile, rebuilt (passes only, no code generation)
        for a loaded artifact."""
        if self.graph is None:
            if self.rebuild is None:
                raise RuntimeError(f"artifact {self.plan_name} keeps no IR and cannot rebuild it")
            self.graph = self.rebuild()
        return self.graph

    def bind(self, slow_bind: Callable[[dict], list[np.ndarray]], root: Path | None = None,
             progress: Callable[[int, int, str], None] | None = None
             ) -> tuple[Callable[..., tuple], Callable[[dict], tuple]]:
        """Import the kernels and the plan (Numba compiles or loads here) -> (run, run_feed)."""
        t0 = time.perf_counter()
        mark = cache.compile_count()
        for c in self.consts.values():  # subgraph plans (If/Loop/Scan bodies) bind lazily, into our root
            set_root = getattr(c, "set_cache_root", None)
            if set_root is not None:
                set_root(root)
        for k, (name, src) in enumerate(self.kernel_sources.items()):
            if progress is not None:
                progress(k, len(self.kernel_sources), name)
            cache.load_source_module("kernels", name, src, root)
        if progress is not None:
            progress(len(self.kernel_sources), len(self.kernel_sources), self.plan_name)
        mod = cache.load_source_module("plans", self.plan_name, self.plan_source, root)
        run, run_feed = mod.build(self.consts, slow_bind)
        self.compiled += cache.compiled_since(mark)
        self.seconds += time.perf_counter() - t0
        return run, run_feed
