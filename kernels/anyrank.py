"""Elementwise ops whose rank is only known at run time (``jitort::ElementwiseAnyRank``).

A fused kernel is compiled for one rank. ONNX lets a rank depend on data: ``Squeeze`` without axes
of a dim that comes from an input's values, ``ConstantOfShape`` of a shape whose length is computed,
the outputs of an ``If`` whose branches disagree. ``passes/shapes.py`` moves an elementwise node
whose output rank stays unknown at compile time to this op, which carries the node and builds its
kernel (strided mode: operands broadcast at run time) for the dtypes and ranks of each call, once
per signature, from the same scalar expressions as fused kernels.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from jitort.codegen.broadcast import broadcast_shape, expand_to
from jitort.codegen.cpu import fused_kernel
from jitort.evaluate import load_kernel
from jitort.ir import Graph, Node, TensorType, Value
from jitort.kernels.registry import Call, Ref, elementwise_def, op
from jitort.passes.fusion import FUSED

OP = "ElementwiseAnyRank"


class AnyRankKernel:
    """The elementwise ``node`` with its constant operands; kernels built per (dtypes, ranks) signature."""

    def __init__(self, node: Node, consts: dict[str, np.ndarray]) -> None:
        self.node = node
        self.consts = consts
        self.root: Path | None = None
        self._kernels: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def set_cache_root(self, root: Path | None) -> None:
        """Called by ``Compiled.bind``: kernels go where the enclosing plan's went."""
        self.root = root

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_kernels"] = {}
        state["_lock"] = None
        state["root"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _kernel(self, names: list[str], arrays: list[np.ndarray], rank: int) -> tuple[Any, np.dtype]:
        key = tuple((a.dtype.str, a.ndim) for a in arrays)
        hit = self._kernels.get(key)
        if hit is not None:
            return hit
        n = self.node
        d = elementwise_def(n)
        assert d is not None, f"{n.describe()} is not elementwise"
        dts = [a.dtype for a in arrays]
        by_name = dict(zip(names, dts))
        out_dt = np.dtype(d.out_dtype(n, [by_name[i] for i in n.inputs if i]) if d.out_dtype else dts[0])
        values = {i: Value(i, TensorType(a.dtype, tuple(f"?a{k}_{j}" for j in range(a.ndim))), self.consts.get(i))
                  for k, (i, a) in enumerate(zip(names, arrays))}
        values[n.outputs[0]] = Value(n.outputs[0], TensorType(out_dt, tuple(f"?o{j}" for j in range(rank))))
        g = Graph([n], list(names), [n.outputs[0]], values)
        fk = fused_kernel(Node(FUSED, list(names), [n.outputs[0]], {"body": [n]}, n.name, "jitort"), g)
        hit = (load_kernel(fk, self.root), fk.views, out_dt)
        with self._lock:
            return self._kernels.setdefault(key, hit)

    def __call__(self, *xs: np.ndarray) -> np.ndarray:
        names = list(dict.fromkeys(i for i in self.node.inputs if i))
        arrays = [np.asarray(xs[self.node.inputs.index(i)]) for i in names]
        shape = broadcast_shape(*(a.shape for a in arrays))
        kernel, views, out_dt = self._kernel(names, arrays, len(shape))
        out = np.empty(shape, out_dt)
        # views: None (flat kernel), else per operand whether it goes in broadcast to the output's shape
        args = [expand_to(a, shape) if views and views[k] else a for k, a in enumerate(arrays)] + [out]
        kernel(*[a.view(np.uint16) if a.dtype.name in ("float16", "bfloat16") else a for a in args])
        return out


def _lower(node: Node, g: Graph) -> Call:
    body: Node = node.attrs["node"]
    consts = {i: c for i in body.inputs if i and (c := g.const(i)) is not None}
    return Call(ElementwiseAnyRank, [Ref(i) if i else None for i in node.inputs],
                {"kernel": AnyRankKernel(body, consts)})


@op(OP, domain="jitort", lower=_lower)
def ElementwiseAnyRank(*xs: np.ndarray, kernel: AnyRankKernel) -> np.ndarray:
    """Run the carried elementwise node on operands of any rank (numpy broadcasting)."""
    return kernel(*xs)


def any_rank(n: Node) -> Node:
    """``n`` (elementwise) as an ElementwiseAnyRank node with the same inputs and outputs."""
    return Node(OP, list(n.inputs), list(n.outputs), {"node": n}, n.name, "jitort", 1, n.provider)
