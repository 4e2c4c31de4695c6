"""The one path from an imported graph to a runnable plan: passes, lowering, codegen, cache, load.

``compile_graph`` runs the pass list in order (each ``Graph -> Graph``), lowers every node (fused
groups to generated kernels, the rest to library calls), emits the plan, and imports everything
through the cache. It reports what Numba compiled versus loaded.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from jitort import cache, node_errors
from jitort.codegen.cpu import FusedKernel, fused_kernel
from jitort.codegen.plan import Step, emit_plan
from jitort.codegen.source import comment_safe, content_hash
from jitort.ir import Graph, Node, verify
from jitort.kernels.registry import lookup, lower_node, run_call
from jitort.passes.attention_fusion import fuse_attention
from jitort.passes.const_fold import fold_constants
from jitort.passes.conv_epilogue import fuse_conv_epilogue
from jitort.passes.fusion import FUSED, fuse_elementwise
from jitort.passes.norm_fusion import fuse_norms
from jitort.passes.partition import partition
from jitort.passes.shapes import complete_types
from jitort.passes.simplify import remove_dead, remove_passthrough


@dataclass
class Compiled:
    """A compiled model: the plan module and kernel modules (by name, with source), its constants
    and its input signature. ``graph`` is the IR after passes when this process compiled it, None
    when it was loaded from a cache entry or artifact."""

    plan_name: str
    plan_source: str
    kernel_sources: dict[str, str]
    consts: dict[str, Any]
    inputs: list[tuple[str, np.dtype, tuple | None]]
    outputs: list[str]
    graph: Graph | None = None
    kernels: list[FusedKernel] = field(default_factory=list)
    compiled: list[tuple[str, float]] = field(default_factory=list)  # (function, seconds) Numba compiled
    seconds: float = 0.0
    loaded_from: str = ""  # "" compiled now; else the entry/artifact directory
    steps: list[Step] = field(default_factory=list)  # the plan's steps, when compiled now

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


def passes(providers: Sequence[str], fold: bool = True, fuse: bool = True) -> list[Callable[[Graph], Graph]]:
    """The pass list, in order. Each is ``Graph -> Graph``."""
    ps: list[Callable[[Graph], Graph]] = [remove_passthrough, remove_dead, complete_types]
    if fold:
        ps += [lambda g: fold_constants(g, evaluate), remove_dead]
    if fuse:
        ps += [fuse_attention] if set(providers) <= {"CPUExecutionProvider"} else []  # CPU kernels only
        ps += [fuse_norms] if set(providers) <= {"CPUExecutionProvider"} else []
        ps += [fuse_conv_epilogue, fuse_elementwise]
    ps += [lambda g: partition(g, list(providers))]
    return ps


def optimize(g: Graph, providers: Sequence[str], check: bool = False, **flags: bool) -> Graph:
    for p in passes(providers, **flags):
        g = p(g)
        if check:
            verify(g)
    return g


def load_kernel(fk: FusedKernel, root: Path | None = None) -> Callable[..., None]:
    mod = cache.load_source_module("kernels", fk.name, fk.source, root)
    return getattr(mod, fk.name)


def compile_graph(g: Graph, providers: Sequence[str], title: str = "", profile: bool = False,
                  **flags: bool) -> Compiled:
    """Passes, lowering and codegen; nothing is imported (see ``Compiled.bind``). ``profile``: the
    CPU plan's profiled variant (``jitort.profiling``; a CUDA plan has none)."""
    t0 = time.perf_counter()
    mark = cache.compile_count()  # constant folding may compile kernels
    verify(g)
    g = optimize(g, providers, **flags)
    steps: list[Step] = []
    kernels: dict[str, FusedKernel] = {}
    if any(n.provider == "CUDAExecutionProvider" for n in g.nodes):
        # A graph partitioned across CUDA and CPU: the CUDA plan emits both providers' steps.
        from jitort.codegen.cuda_plan import emit_cuda_plan
        source, consts, kernel_sources = emit_cuda_plan(g, title or g.name)
    else:
        for n in g.nodes:
            try:
                if n.op_type == FUSED and n.domain == "jitort":
                    fk = fused_kernel(n, g)
                    kernels.setdefault(fk.name, fk)
                    steps.append(Step(n, kernel=fk))
                else:
                    steps.append(Step(n, call=lower_node(n, g)))
            except Exception as e:  # onnxruntime's class, naming the node that cannot be lowered
                mapped = node_errors.at_compile(e, n.op_type, comment_safe(n.name))
                if mapped is None:
                    raise
                raise mapped from e
        source, consts = emit_plan(g, steps, title or g.name, profile=profile)
        kernel_sources = {k.name: k.source for k in kernels.values()}
    inputs = [(i, np.dtype(g.type_of(i).dtype) if g.type_of(i).dtype is not None else None, g.type_of(i).shape)
              for i in g.inputs]
    return Compiled("plan_" + content_hash(source)[:20], source, kernel_sources,
                    consts, inputs, list(g.outputs), g, list(kernels.values()), cache.compiled_since(mark),
                    time.perf_counter() - t0, steps=steps)


def evaluate(node: Node, g: Graph) -> list[np.ndarray]:
    """Run one node on constant inputs with jitort's own kernels (constant folding)."""
    d = lookup(node.op_type, node.domain, node.version, node.name)
    if not d.is_elementwise or d.lower is not None:  # a library path compiles nothing
        out = run_call(lower_node(node, g), {i: g.const(i) for i in node.inputs if i})  # type: ignore[misc]
        return list(out) if isinstance(out, tuple) else [out]
    ins = list(dict.fromkeys(i for i in node.inputs if i))
    arrays = [g.const(i) for i in ins]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))  # type: ignore[union-attr]
    out_t = g.type_of(node.outputs[0])
    out_t.shape = tuple(shape)
    fk = fused_kernel(Node(FUSED, ins, list(node.outputs), {"body": [node]}, node.name, "jitort"), g)
    kernel = load_kernel(fk)
    out = np.empty(shape, out_t.dtype)
    args: list[Any] = [a if fk.mode == "flat" else np.broadcast_to(a, shape) for a in arrays]
    args.append(out)
    kernel(*[a.view(np.uint16) if a.dtype.name in ("float16", "bfloat16") else a for a in args])
    return [out]
