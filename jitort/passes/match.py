"""What the pattern passes (conv and GEMM epilogues, attention and norm fusion) ask of a graph: who
reads a value, whether a value may be folded away, a constant's scalar value, and an activation's
kind and parameters as the fused kernels take them (kernels/conv_fused.py, kernels/gemm.py).

A value is *protected* when a graph output or a subgraph reads it: a pass never folds it away.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from jitort.ir import Graph, Node

_FLT_MAX = float(np.finfo(np.float32).max)


def scalar(g: Graph, name: str, kinds: str = "fiu") -> float | None:
    """The value of a one-element constant of a dtype kind in ``kinds``, else None."""
    c = g.const(name)
    if c is None or c.size != 1 or c.dtype.kind not in kinds:
        return None
    return float(c.reshape(-1)[0])


def activation(g: Graph, n: Node, gelu: bool = False) -> tuple[str, float, float] | None:
    """(kind, alpha, beta) of an activation node a fused epilogue applies: Relu, Sigmoid, HardSwish,
    LeakyRelu, HardSigmoid, Clip (constant bounds; before opset 11 its attributes, whose defaults are
    float32's extremes as the spec says) and, with ``gelu``, Gelu (opset 20, or com.microsoft's, as
    "Gelu"; tanh-approximated as "GeluTanh"). None for anything else."""
    if len(n.outputs) != 1:
        return None
    if n.domain == "com.microsoft" and n.op_type == "Gelu":
        return ("Gelu", 0.0, 0.0) if gelu else None
    if n.domain != "":
        return None
    a: dict[str, Any] = n.attrs
    op = n.op_type
    if op in ("Relu", "Sigmoid", "HardSwish"):
        return op, 0.0, 0.0
    if op == "Gelu" and gelu:
        return ("GeluTanh" if a.get("approximate", "none") == "tanh" else "Gelu"), 0.0, 0.0
    if op == "LeakyRelu":
        return "LeakyRelu", float(a.get("alpha", 0.01)), 0.0
    if op == "HardSigmoid":
        return "HardSigmoid", float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    if op == "Clip":
        if n.version < 11:
            return "Clip", float(a.get("min", -_FLT_MAX)), float(a.get("max", _FLT_MAX))
        bounds = [-np.inf, np.inf]
        for k in (1, 2):
            if len(n.inputs) > k and n.inputs[k]:
                v = scalar(g, n.inputs[k])
                if v is None:
                    return None
                bounds[k - 1] = v
        return "Clip", bounds[0], bounds[1]
    return None


class Reads:
    """A graph's producers and consumers, and its protected values, taken once for a pass."""

    def __init__(self, g: Graph) -> None:
        self.g = g
        self.producers = g.producers()
        self.consumers = g.consumers()
        self.protected = set(g.outputs) | g.subgraph_reads()

    def sole(self, value: str) -> Node | None:
        """The one node reading ``value`` when nothing else (graph output, subgraph) reads it."""
        cs = self.consumers.get(value, [])
        return cs[0] if len(cs) == 1 and value not in self.protected else None

    def scalar(self, name: str, kinds: str = "fiu") -> float | None:
        return scalar(self.g, name, kinds)

    def silu(self, y: str) -> tuple[list[Node], str] | None:
        """([Sigmoid, Mul], Mul's output) when y's only readers are ``s = Sigmoid(y)`` and
        ``Mul(y, s)``, s read by nothing else: the pair computes SiLU(y)."""
        cs = self.consumers.get(y, [])
        if y in self.protected or len(cs) != 2:
            return None
        sig = next((c for c in cs if c.op_type == "Sigmoid" and c.domain == ""), None)
        mul = next((c for c in cs if c.op_type == "Mul" and c.domain == ""), None)
        if sig is None or mul is None or sig.inputs[0] != y:
            return None
        s = sig.outputs[0]
        if sorted(mul.inputs) != sorted([y, s]) or self.sole(s) is not mul:
            return None
        return [sig, mul], mul.outputs[0]
