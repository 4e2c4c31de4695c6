"""Graph -> Artifact: passes, lowering, emission. Nothing is imported or compiled by Numba here
(``Artifact.bind`` does that); the compile service (``jitort.compile_service``) calls this on a cache
miss, and control-flow kernels reach it for their bodies through ``jitort.kernels.subgraph``.

1. **Passes** (:func:`pass_list`), each a named ``Graph -> Graph`` function that may rewrite its
   input in place: clean-up, types, constant folding, fusion, partitioning across providers. With
   ``JITORT_DEBUG=1`` (and in tests that ask) the IR is verified after every pass.
2. **Lowering** (:func:`lower`): every node becomes a plan step, a generated fused kernel for a
   fused group or a call into the kernel library (``kernels.registry.lower_node``).
3. **Emission**: the plan module's source (``codegen.plan``; ``codegen.cuda_plan`` for a graph with
   CUDA nodes).
"""
from __future__ import annotations

import os
import time
from typing import Callable, Sequence

import numpy as np

from jitort import cache, node_errors
from jitort.codegen.cpu import FusedKernel, fused_kernel
from jitort.codegen.plan import Step, emit_plan
from jitort.codegen.source import comment_safe, content_hash
from jitort.compiled import Artifact
from jitort.evaluate import evaluate
from jitort.ir import Graph, verify
from jitort.kernels import subgraph
from jitort.kernels.registry import lower_node
from jitort.passes.const_fold import fold_constants
from jitort.passes.conv_epilogue import fuse_conv_epilogue
from jitort.passes.fusion import FUSED, fuse_elementwise
from jitort.passes.gemm_epilogue import fuse_gemm_epilogue
from jitort.passes.partition import CUDA, partition
from jitort.passes.retype import retype
from jitort.passes.shapes import complete_types
from jitort.passes.simplify import remove_dead, remove_passthrough

Pass = Callable[[Graph], Graph]


def fold(g: Graph) -> Graph:
    """Constant folding with jitort's own kernels (``jitort.evaluate``)."""
    return fold_constants(g, evaluate)


def pass_list(providers: Sequence[str], fold_consts: bool = True, fuse: bool = True) -> list[Pass]:
    """The passes, in order (``fold_consts``/``fuse``: graph_optimization_level above 0)."""
    def partition_to_providers(g: Graph) -> Graph:
        return partition(g, list(providers))
    ps: list[Pass] = [remove_passthrough, remove_dead, complete_types]
    if fold_consts:
        ps += [fold, remove_dead]
    if fuse:
        ps += [fuse_conv_epilogue, fuse_gemm_epilogue, fuse_elementwise]
    ps += [partition_to_providers]
    return ps


def debug_checks() -> bool:
    """``JITORT_DEBUG=1``: verify the IR after every pass (tests turn it on)."""
    return os.environ.get("JITORT_DEBUG", "0") not in ("", "0")


def optimize(g: Graph, providers: Sequence[str], check: bool = False, fold: bool = True, fuse: bool = True
             ) -> Graph:
    """Run the passes over ``g`` (which they may rewrite in place); ``check``: ``verify`` after each."""
    check = check or debug_checks()
    for p in pass_list(providers, fold, fuse):
        g = p(g)
        if check:
            try:
                verify(g)
            except Exception as e:
                raise type(e)(f"after pass {p.__name__}: {e}") from e
    return g


def lower(g: Graph) -> tuple[list[Step], list[FusedKernel]]:
    """Every node of an optimised CPU graph -> a plan step (its fused kernel, or its library call)."""
    steps: list[Step] = []
    kernels: dict[str, FusedKernel] = {}
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
    return steps, list(kernels.values())


def compile_graph(g: Graph, providers: Sequence[str], title: str = "", profile: bool = False,
                  fold: bool = True, fuse: bool = True) -> Artifact:
    """Passes, lowering and emission -> an unbound ``Artifact``. ``profile``: the CPU plan's
    profiled variant (``jitort.profiling``; a CUDA plan has none)."""
    t0 = time.perf_counter()
    mark = cache.compile_count()  # constant folding may compile kernels
    verify(g)
    g = optimize(g, providers, fold=fold, fuse=fuse)
    steps: list[Step] = []
    if any(n.provider == CUDA for n in g.nodes):
        # A graph partitioned across CUDA and CPU: the CUDA plan emits both providers' steps.
        from jitort.codegen.cuda_plan import emit_cuda_plan  # numba.cuda: imported only for CUDA
        source, consts, kernel_sources = emit_cuda_plan(g, title or g.name)
        target = "cuda"
    else:
        steps, kernels = lower(g)
        source, consts = emit_plan(g, steps, title or g.name, profile=profile)
        kernel_sources = {k.name: k.source for k in kernels}
        target = "cpu"
    inputs = [(i, np.dtype(g.type_of(i).dtype) if g.type_of(i).dtype is not None else None, g.type_of(i).shape)
              for i in g.inputs]
    own_threads = any(getattr(s.call.fn, "own_threads", False) for s in steps if s.call is not None)
    return Artifact("plan_" + content_hash(source)[:20], source, kernel_sources, consts, inputs, list(g.outputs),
                    target=target, own_threads=own_threads, compiled=cache.compiled_since(mark),
                    seconds=time.perf_counter() - t0, steps=steps, graph=g)


def compile_body(g: Graph, providers: Sequence[str], title: str, retype_first: bool) -> Artifact:
    """A control-flow body (``jitort.kernels.subgraph``); ``retype_first``: its inputs were given
    the dtypes and ranks of a call, so re-run type inference over it before the passes."""
    if retype_first:
        retype(g)
    return compile_graph(g, providers, title=title)


subgraph.install(compile_body)
