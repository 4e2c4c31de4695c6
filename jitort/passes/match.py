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


def _near(v: float | None, want: float) -> bool:
    """v is want to float32 precision (exporters write constants such as sqrt 2 in float32)."""
    return v is not None and abs(v - want) <= 1e-5 * abs(want)


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

    def _const_of(self, n: Node, x: str) -> float | None:
        """c where n = op(x, c) (either order) and c is a one-element float constant, else None."""
        if n.domain != "" or len(n.inputs) != 2 or n.inputs.count(x) != 1:
            return None
        return self.scalar(n.inputs[1] if n.inputs[0] == x else n.inputs[0], "f")

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

    def gelu_erf(self, y: str) -> tuple[list[Node], str] | None:
        """(the nodes, the last one's output) when y's only readers compute the exact GELU written out,
        ``y * 0.5 * (1 + Erf(y / sqrt(2)))``, as torch's exporters and hand-built graphs write it:
        ``Div(y, sqrt 2)`` or ``Mul(y, 1/sqrt 2)``, Erf, ``Add(., 1)``, and the two multiplies by y and
        0.5 in any order (``Mul(Mul(y, e), 0.5)``, ``Mul(y, Mul(e, 0.5))``, ``Mul(Mul(y, 0.5), e)``); each
        intermediate read by the next node only."""
        cs = self.consumers.get(y, [])
        if y in self.protected or len(cs) != 2:
            return None

        scale = next((c for c in cs if (c.op_type == "Div" and c.inputs[0] == y and _near(self._const_of(c, y),
                                                                                         2 ** 0.5))
                      or (c.op_type == "Mul" and _near(self._const_of(c, y), 2 ** -0.5))), None)
        if scale is None:
            return None
        other = cs[1] if cs[0] is scale else cs[0]
        erf = self.sole(scale.outputs[0])
        if erf is None or erf.op_type != "Erf" or erf.domain != "":
            return None
        add = self.sole(erf.outputs[0])
        if add is None or add.op_type != "Add" or not _near(self._const_of(add, erf.outputs[0]), 1.0):
            return None
        tail = self._times_half(y, other, add.outputs[0])
        if tail is None:
            return None
        return [scale, erf, add] + tail[0], tail[1]

    def gelu_tanh(self, y: str) -> tuple[list[Node], str] | None:
        """(the nodes, the last one's output) when y's only readers compute tanh-approximated GELU written
        out, ``y * 0.5 * (1 + Tanh(sqrt(2/pi) * (y + 0.044715 * y^3)))`` (GPT-2's "gelu_new"):
        ``Pow(y, 3)``, ``Mul(., 0.044715)``, ``Add(y, .)``,
        ``Mul(., sqrt(2/pi))``, Tanh, ``Add(., 1)``, and the multiplies by y and 0.5 in any order (as in
        ``gelu_erf``); each intermediate read by the next node only."""
        cs = self.consumers.get(y, [])
        if y in self.protected or len(cs) != 3:
            return None

        pw = next((c for c in cs if c.op_type == "Pow" and c.domain == "" and c.inputs[0] == y
                   and _near(self.scalar(c.inputs[1], "fiu"), 3.0)), None)
        if pw is None:
            return None
        cube = self.sole(pw.outputs[0])
        if cube is None or cube.op_type != "Mul" or not _near(self._const_of(cube, pw.outputs[0]), 0.044715):
            return None
        inner = self.sole(cube.outputs[0])
        if inner is None or inner.op_type != "Add" or inner.domain != "" or sorted(inner.inputs) != sorted(
                [y, cube.outputs[0]]) or inner not in cs:
            return None
        sc = self.sole(inner.outputs[0])
        if sc is None or sc.op_type != "Mul" or not _near(self._const_of(sc, inner.outputs[0]), (2 / np.pi) ** 0.5):
            return None
        th = self.sole(sc.outputs[0])
        if th is None or th.op_type != "Tanh" or th.domain != "":
            return None
        add = self.sole(th.outputs[0])
        if add is None or add.op_type != "Add" or not _near(self._const_of(add, th.outputs[0]), 1.0):
            return None
        other = next(c for c in cs if c is not pw and c is not inner)
        tail = self._times_half(y, other, add.outputs[0])
        if tail is None:
            return None
        return [pw, cube, inner, sc, th, add] + tail[0], tail[1]

    def _times_half(self, y: str, other: Node, e: str) -> tuple[list[Node], str] | None:
        """The two multiplies of ``y * 0.5 * e`` in any order, ``other`` being y's reader among them:
        ``Mul(Mul(y, e), 0.5)``, ``Mul(Mul(y, 0.5), e)`` or ``Mul(y, Mul(e, 0.5))``."""
        def half(n: Node | None, x: str) -> bool:
            return n is not None and n.op_type == "Mul" and _near(self._const_of(n, x), 0.5)

        if other.op_type != "Mul" or other.domain != "":
            return None
        nxt = self.sole(e)
        if sorted(other.inputs) == sorted([y, e]):
            last = self.sole(other.outputs[0])
            if last is None or not half(last, other.outputs[0]):
                return None
            return [other, last], last.outputs[0]
        if half(other, y):
            if nxt is None or nxt.op_type != "Mul" or nxt.domain != "" or sorted(nxt.inputs) != sorted(
                    [other.outputs[0], e]) or self.sole(other.outputs[0]) is not nxt:
                return None
            return [other, nxt], nxt.outputs[0]
        if nxt is None or not half(nxt, e) or sorted(other.inputs) != sorted([y, nxt.outputs[0]]) or \
                self.sole(nxt.outputs[0]) is not other:
            return None
        return [nxt, other], other.outputs[0]

