"""jitort's graph IR: Values, Nodes and a Graph, small and explicit.

A Graph is a topologically ordered list of Nodes over named Values. Every value carries a TensorType
(dtype and shape; a dim is an ``int`` when static and a ``str`` when symbolic) and, when known at
compile time, its constant data. Passes are functions ``Graph -> Graph`` (see ``jitort.passes``);
``verify`` checks the invariants they must keep.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Union

import numpy as np

from jitort.errors import InvalidGraph

Dim = Union[int, str]
Shape = tuple[Dim, ...]


@dataclass
class TensorType:
    """dtype None: unknown; shape None: unknown rank."""

    dtype: np.dtype | None = None
    shape: Shape | None = None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    def __str__(self) -> str:
        dt = "?" if self.dtype is None else str(self.dtype)
        sh = "?" if self.shape is None else "[" + ",".join(str(d) for d in self.shape) + "]"
        return f"{dt}{sh}"


@dataclass
class Value:
    name: str
    type: TensorType = field(default_factory=TensorType)
    const: np.ndarray | None = None  # compile-time data (initializer or folded)


@dataclass
class Node:
    op_type: str
    inputs: list[str]          # "" marks an omitted optional input
    outputs: list[str]         # "" marks an omitted optional output
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""
    version: int = 1           # the opset version of ``domain`` this node was imported under
    provider: str = "CPUExecutionProvider"

    def describe(self) -> str:
        dom = self.domain or "ai.onnx"
        return f"{self.op_type} node '{self.name}' (domain {dom}, opset {self.version})"


@dataclass
class Graph:
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    values: dict[str, Value]
    opsets: dict[str, int] = field(default_factory=dict)
    name: str = ""
    notes: list[str] = field(default_factory=list)  # decisions passes explain (fusion refusals, folds)

    def fresh_name(self, base: str) -> str:
        """``base``, or ``base_1``, ``base_2``, ...: the first that names no value of the graph."""
        name, k = base, 0
        while name in self.values:
            k += 1
            name = f"{base}_{k}"
        return name

    def value(self, name: str) -> Value:
        v = self.values.get(name)
        if v is None:
            v = self.values[name] = Value(name)
        return v

    def type_of(self, name: str) -> TensorType:
        return self.value(name).type

    def const(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        v = self.values.get(name)
        return None if v is None else v.const

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs if o}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    out.setdefault(i, []).append(n)
        return out

    def subgraphs(self) -> Iterator[Graph]:
        for n in self.nodes:
            for a in n.attrs.values():
                if isinstance(a, Graph):
                    yield a
                elif isinstance(a, list) and a and isinstance(a[0], Graph):
                    yield from a

    def subgraph_reads(self) -> set[str]:
        """Every name this graph's subgraphs (at any depth) read or return: a pass that renames,
        removes or moves a value of this graph must leave these alone."""
        names: set[str] = set()
        for sub in self.subgraphs():
            for n in sub.nodes:
                names.update(i for i in n.inputs if i)
            names.update(sub.outputs)
            names |= sub.subgraph_reads()
        return names

    def __str__(self) -> str:
        lines = [f"graph {self.name or '<main>'}("
                 + ", ".join(f"{i}: {self.type_of(i)}" for i in self.inputs) + ")"]
        for n in self.nodes:
            ins = ", ".join(i or "_" for i in n.inputs)
            outs = ", ".join(f"{o}: {self.type_of(o)}" if o else "_" for o in n.outputs)
            attrs: dict[str, Any] = {}
            for k, v in n.attrs.items():
                if isinstance(v, list) and v and isinstance(v[0], Node):
                    attrs[k] = "+".join(b.op_type for b in v)
                elif not isinstance(v, (Graph, list, np.ndarray)) or (isinstance(v, list) and len(v) < 9):
                    attrs[k] = v
            a = (" " + str(attrs)) if attrs else ""
            lines.append(f"  {outs} = {n.op_type}({ins}){a}")
        lines.append("  return " + ", ".join(self.outputs))
        return "\n".join(lines)


def verify(g: Graph, outer: set[str] | frozenset[str] = frozenset()) -> None:
    """Check SSA form and topological order: every input defined before use, each value defined once."""
    defined = set(outer) | set(g.inputs) | {k for k, v in g.values.items() if v.const is not None}
    for n in g.nodes:
        for i in n.inputs:
            if i and i not in defined:
                raise InvalidGraph(f"{n.describe()}: input '{i}' is not defined before use "
                                   "(undefined value or a cycle in the graph)")
        for sub in (a for a in n.attrs.values() if isinstance(a, Graph)):
            verify(sub, frozenset(defined))
        for o in n.outputs:
            if o and o in defined and o not in outer:
                raise InvalidGraph(f"{n.describe()}: output '{o}' is defined twice")
            if o:
                defined.add(o)
    for o in g.outputs:
        if o not in defined:
            raise InvalidGraph(f"graph output '{o}' is not produced by any node, input or initializer")


def toposort(nodes: list[Node]) -> list[Node]:
    """Kahn's algorithm, preferring the given order (unrelated nodes keep their places)."""
    import heapq
    producer = {o: k for k, n in enumerate(nodes) for o in n.outputs if o}
    deps = [{producer[i] for i in n.inputs if i and i in producer} for n in nodes]
    users: dict[int, list[int]] = {}
    for k, ds in enumerate(deps):
        for d in ds:
            users.setdefault(d, []).append(k)
    remaining = [len(ds) for ds in deps]
    ready = [k for k, r in enumerate(remaining) if r == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        k = heapq.heappop(ready)
        out.append(nodes[k])
        for u in users.get(k, ()):
            remaining[u] -= 1
            if remaining[u] == 0:
                heapq.heappush(ready, u)
    if len(out) != len(nodes):
        stuck = [nodes[k].name for k, r in enumerate(remaining) if r > 0]
        raise InvalidGraph(f"the graph has a cycle through node(s) {stuck[:5]}")
    return out
