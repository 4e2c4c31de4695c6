"""Lowering and emission of a partitioned graph, for whichever providers it runs on.

``lower(g)`` turns every node into a plan step (``jitort.codegen.plan.Step``), ``emit(g, steps,
title)`` writes the plan module (``jitort.codegen.plan.Emitted``). Both pick the plan target from
the graph's providers: the CUDA target (``jitort.codegen.cuda_plan``) when a node runs on CUDA, the
CPU plan otherwise.
"""
from __future__ import annotations

from jitort import node_errors
from jitort.codegen.cuda_plan import CudaTarget
from jitort.codegen.plan import Emitted, PlanEmitter, PlanTarget, Step
from jitort.codegen.source import comment_safe
from jitort.ir import Graph
from jitort.passes.partition import CUDA


def target_for(g: Graph) -> PlanTarget:
    """A fresh plan target for ``g`` (one per plan: a device target keeps the plan's device state)."""
    return CudaTarget() if any(n.provider == CUDA for n in g.nodes) else PlanTarget()


def lower(g: Graph, target: PlanTarget | None = None) -> list[Step]:
    """Every node of ``g`` as a plan step, in order. A node that cannot be lowered raises
    onnxruntime's class naming it (``jitort.node_errors.at_compile``)."""
    target = target or target_for(g)
    steps = []
    for n in g.nodes:
        try:
            steps.append(target.lower(n, g))
        except Exception as e:  # onnxruntime's class, naming the node that cannot be lowered
            mapped = node_errors.at_compile(e, n.op_type, comment_safe(n.name))
            if mapped is None:
                raise
            raise mapped from e
    return steps


def emit(g: Graph, steps: list[Step], title: str, profile: bool = False,
         target: PlanTarget | None = None) -> Emitted:
    """The plan module of ``steps`` (``lower(g)``). ``profile``: the profiled variant, where the
    target has one (the CPU plan; a CUDA plan has none and ignores it)."""
    return PlanEmitter(g, target or target_for(g), profile).emit(steps, title)
