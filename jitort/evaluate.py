"""Run one node on constant inputs with jitort's own kernels: constant folding and import-time
type refinement call this (onnxruntime is never used to execute a model).

A library op runs its lowered call; an elementwise op runs a one-node fused kernel, generated and
loaded through the cache like any other.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from jitort import cache
from jitort.codegen.cpu import FusedKernel, fused_kernel
from jitort.ir import Graph, Node
from jitort.kernels.registry import lookup, lower_node, run_call
from jitort.passes.fusion import FUSED


def load_kernel(fk: FusedKernel, root: Path | None = None) -> Callable[..., None]:
    """Import a generated kernel module (through the cache) and return its function."""
    mod = cache.load_source_module("kernels", fk.name, fk.source, root)
    return getattr(mod, fk.name)


def evaluate(node: Node, g: Graph) -> list[np.ndarray]:
    """``node``'s outputs, every input a constant of ``g``."""
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
    # fk.views: None for a flat kernel; a strided one takes views broadcast to ``shape`` where True
    args: list[Any] = [np.broadcast_to(a, shape) if fk.views and fk.views[k] else a for k, a in enumerate(arrays)]
    args.append(out)
    kernel(*[a.view(np.uint16) if a.dtype.name in ("float16", "bfloat16") else a for a in args])
    return [out]
