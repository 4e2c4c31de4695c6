"""Graph -> Artifact: passes, lowering, emission. Nothing is imported or compiled by Numba here
(``Artifact.bind`` does that); the compile service (``jitort.compile_service``) calls this on a cache
miss, and control-flow kernels reach it for their bodies through ``jitort.kernels.subgraph``.

1. **Passes** (:func:`pass_list`), each a named ``Graph -> Graph`` function that may rewrite its
   input in place: clean-up, types, constant folding, fusion, partitioning across providers. With
   ``JITORT_DEBUG=1`` (and in tests that ask) the IR is verified after every pass.
2. **Lowering** (``codegen.emit.lower``): every node becomes a plan step, a generated fused kernel
   for a fused group, a call into the kernel library, or a CUDA launch.
3. **Emission** (``codegen.emit.emit``): one plan emitter with a target per provider set
   (``codegen.plan.PlanTarget``, ``codegen.cuda_plan.CudaTarget``).
"""
from __future__ import annotations

import os
import time
from typing import Callable, Sequence

import numpy as np

from jitort import cache
from jitort.codegen.emit import emit, lower
from jitort.codegen.source import content_hash
from jitort.compiled import Artifact
from jitort.evaluate import evaluate
from jitort.ir import Graph, verify
from jitort.kernels import subgraph
from jitort.passes.attention_fusion import fuse_attention
from jitort.passes.const_fold import fold_constants
from jitort.passes.bn_affine import bn_as_affine
from jitort.passes.conv_epilogue import fuse_conv_epilogue
from jitort.passes.fusion import fuse_elementwise
from jitort.passes.gemm_epilogue import fuse_gemm_epilogue
from jitort.passes.ml_tail import drop_ml_no_ops
from jitort.passes.norm_fusion import fuse_norms
from jitort.passes.qdq_fusion import fuse_qdq
from jitort.passes.qkv_fusion import fuse_qkv
from jitort.passes.quant_nhwc import quant_nhwc
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
    if fuse:  # before folding, which would turn the weights' DequantizeLinear into float weights
        ps += [fuse_qdq]
    if fold_consts:
        ps += [fold, drop_ml_no_ops, remove_dead]
    if fuse:
        cpu_only = CUDA not in providers  # jitort-domain fused ops with CPU kernels only: CUDA runs them unfused
        ps += [quant_nhwc, fuse_attention, fuse_norms, fuse_qkv] if cpu_only else []
        ps += [fuse_conv_epilogue]
        ps += [bn_as_affine] if cpu_only else []
        ps += [fuse_gemm_epilogue] if cpu_only else []
        ps += [fuse_elementwise]
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


def compile_graph(g: Graph, providers: Sequence[str], title: str = "", profile: bool = False,
                  fold: bool = True, fuse: bool = True) -> Artifact:
    """Passes, lowering and emission -> an unbound ``Artifact``. ``profile``: the CPU plan's
    profiled variant (``jitort.profiling``; a CUDA plan has none)."""
    t0 = time.perf_counter()
    mark = cache.compile_count()  # constant folding may compile kernels
    verify(g)
    g = optimize(g, providers, fold=fold, fuse=fuse)
    steps = lower(g)  # every node, every provider; errors name the node (node_errors.at_compile)
    e = emit(g, steps, title or g.name, profile=profile)
    target = "cuda" if any(n.provider == CUDA for n in g.nodes) else "cpu"
    if target == "cuda":
        steps = []  # the compile workers precompile CPU plans' steps only
    inputs = [(i, np.dtype(g.type_of(i).dtype) if g.type_of(i).dtype is not None else None, g.type_of(i).shape)
              for i in g.inputs]
    own_threads = any(getattr(s.call.fn, "own_threads", False) for s in steps if s.call is not None)
    return Artifact("plan_" + content_hash(e.source)[:20], e.source, e.kernel_sources, e.consts, inputs,
                    list(g.outputs), target=target, own_threads=own_threads, compiled=cache.compiled_since(mark),
                    seconds=time.perf_counter() - t0, steps=steps, graph=g)


def compile_body(g: Graph, providers: Sequence[str], title: str, retype_first: bool) -> Artifact:
    """A control-flow body (``jitort.kernels.subgraph``); ``retype_first``: its inputs were given
    the dtypes and ranks of a call, so re-run type inference over it before the passes."""
    if retype_first:
        retype(g)
    return compile_graph(g, providers, title=title)


subgraph.install(compile_body)
