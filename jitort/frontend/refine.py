"""Type refinement at import, where onnx's graph inference stops short.

jitort's fused kernels need every value's rank (and dtype) at compile time. onnx's shape
inference, run once over the model, leaves gaps: data propagation covers Shape/Gather/Concat/Slice
chains but not Range, Div or Cast of shape arithmetic, and a reduction whose axes arrive at run time
gets no rank. :class:`Refiner` walks a graph's nodes as the importer imports them, evaluating small
values computable at import (constants, Shapes of statically shaped values, ops over those, with
jitort's own kernels) and feeding them to onnx's per-node inference for outputs still untyped.
:func:`retype` does the same over an IR graph whose inputs got sharper types (a subgraph compiled
for the ranks it is called with). The values only sharpen types: the nodes stay for the passes.
"""
from __future__ import annotations

import copy
import threading
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, NodeProto, TypeProto, helper, numpy_helper

from jitort import memory
from jitort.evaluate import evaluate
from jitort.ir import Graph, Node, TensorType, Value
from jitort.kernels.registry import is_random, lookup
from jitort.passes.shapes import broadcast_shapes
from jitort.protos import (MAX_DATA_ELEMENTS, attr_value, constant_value, fill_defaults, tensor_type, type_proto,
                           unknown, unknown_dim)

MAX_DATA_BYTES = MAX_DATA_ELEMENTS * 16


class Refiner:
    """Node-by-node type refinement where onnx's graph inference stopped short.

    onnx's data propagation covers Shape/Gather/Concat/Slice-style chains but not Range, Div or
    Cast of shape arithmetic, so a ReduceMean whose axes come from ``Range(axis, Size(Shape(X)))``
    gets no rank and its fused consumers cannot be compiled. Here small values computable at import
    (constants, Shapes of statically shaped values, and ops over those, evaluated with jitort's own
    kernels) feed onnx's per-node inference (``infer_node_outputs``) for outputs still untyped.
    The data only sharpens types; the nodes stay in the graph for the passes to fold.
    """

    def __init__(self, values: dict[str, Any], types: dict[str, TypeProto], outer: Refiner | None) -> None:
        self.values = values
        self.types = types
        # A subgraph sees the enclosing graphs' known values (its importer only passes their types).
        self.data: dict[str, np.ndarray] = dict(outer.data) if outer is not None else {}
        self.data.update({k: v.const for k, v in values.items()
                          if v.const is not None and v.const.size <= MAX_DATA_ELEMENTS})
        # Values are computed on demand only, from their producers: a fully typed graph costs nothing.
        self.producers: dict[str, tuple[NodeProto, int]] = dict(outer.producers) if outer is not None else {}
        self._failed: set[str] = set()

    def _type(self, name: str) -> TypeProto | None:
        t = self.types.get(name)
        if (t is None or t.WhichOneof("value") is None) and name in self.values:
            t = type_proto(self.values[name].type)
        return t

    def node(self, n: NodeProto, domain: str, version: int, opsets: dict[str, int]) -> None:
        if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in n.attribute):
            return
        try:
            if domain != "" or not onnx.defs.has(n.op_type, version, ""):
                self._registered(n, domain, version)  # no onnx schema: the op's registration types it
            else:
                self._node(n, version, opsets)
        except Exception:
            pass  # refinement is best effort: the graph's own types stand

    def _registered(self, n: NodeProto, domain: str, version: int) -> None:
        """Types for the outputs of an op onnx has no schema for (contrib ops): broadcasting for an
        elementwise registration, the registration's ``infer`` for a library one."""
        outs = [o for o in n.output if o]
        if not outs or not any(unknown(self.values[o].type) if o in self.values else True for o in outs):
            return
        d = lookup(n.op_type, domain, version)
        ins = [self.values[i].type if i and i in self.values else None for i in n.input]
        attrs = {a.name: attr_value(a) for a in n.attribute}
        node = Node(n.op_type, list(n.input), list(n.output), attrs, n.name or n.op_type, domain, version)
        if d.is_elementwise:
            known = [t for t in ins if t is not None]
            if len(known) != len([i for i in n.input if i]) or any(t.dtype is None or t.shape is None for t in known):
                return
            dts = [np.dtype(t.dtype) for t in known]
            shape = broadcast_shapes([t.shape for t in known])  # type: ignore[misc]
            types = [TensorType(d.out_dtype(node, dts) if d.out_dtype else dts[0], shape)]
        elif d.infer is not None:
            types = d.infer(node, ins)
        else:
            return
        for o, t in zip(n.output, types):
            if not o or t is None or t.dtype is None:
                continue
            old = self.values.get(o)
            if old is None or old.type.dtype is None or old.type.shape is None or unknown(old.type) and not unknown(t):
                self.values[o] = Value(o, t)
                self.types[o] = type_proto(t)

    def _node(self, n: NodeProto, version: int, opsets: dict[str, int]) -> None:
        if n.op_type == "Constant":
            a = constant_value({x.name: attr_value(x) for x in n.attribute}, n.name)
            if a.size <= MAX_DATA_ELEMENTS and a.dtype != object:
                self.data[n.output[0]] = a
            return
        outs = [o for o in n.output if o]
        for o in outs:
            self.producers[o] = (n, version)
        if any(unknown(self.values[o].type) if o in self.values else True for o in outs):
            ins = {i: self._type(i) for i in n.input if i}
            if all(t is not None and t.WhichOneof("value") is not None for t in ins.values()):
                schema = onnx.defs.get_schema(n.op_type, version, "")
                known = {i: self._data_of(i) for i in ins}
                data = {i: numpy_helper.from_array(a, i) for i, a in known.items() if a is not None}
                inferred = onnx.shape_inference.infer_node_outputs(
                    schema, n, ins, data, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
                for o, t in inferred.items():
                    new = tensor_type(t)
                    old = self.values.get(o)
                    if new.dtype is not None and new.shape is not None and (
                            old is None or unknown(old.type) and not unknown(new)
                            or old.type.shape is None or old.type.dtype is None):
                        self.values[o] = Value(o, new)
                        self.types[o] = t
            if n.op_type.startswith("Reduce") and outs and self.values.get(outs[0]) is not None \
                    and self.values[outs[0]].type.shape is None:
                self._reduce_rank(n, outs[0])

    def _data_of(self, name: str, depth: int = 0) -> np.ndarray | None:
        """``name``'s value if computable at import (from constants through its producers), else None."""
        if name in self.data or name in self._failed or depth > 64:
            return self.data.get(name)
        prod = self.producers.get(name)
        if prod is not None:
            n, version = prod
            if all(self._data_of(i, depth + 1) is not None for i in n.input if i) or n.op_type in ("Shape", "Size"):
                try:
                    self._evaluate(n, version, [o for o in n.output if o])
                except Exception:
                    pass
        if name not in self.data:
            self._failed.add(name)
        return self.data.get(name)

    def _reduce_rank(self, n: NodeProto, out: str) -> None:
        """A reduction with run-time axes: keepdims keeps the rank; otherwise a static number of
        axes removes that many (onnx's inference gives up without the axes' values)."""
        x = self.values.get(n.input[0])
        if x is None or x.type.shape is None:
            return
        attrs = {a.name: a.i for a in n.attribute if a.type == AttributeProto.INT}
        rank = len(x.type.shape)
        if attrs.get("keepdims", 1):
            new_rank = rank
        else:
            axes = self.values.get(n.input[1]) if len(n.input) > 1 and n.input[1] else None
            if axes is None or axes.type.shape is None or len(axes.type.shape) != 1 or \
                    not isinstance(axes.type.shape[0], int) or axes.type.shape[0] == 0:
                return
            new_rank = rank - axes.type.shape[0]
        dt = self.values[out].type.dtype or x.type.dtype
        self.values[out] = Value(out, TensorType(dt, tuple(unknown_dim() for _ in range(new_rank))))
        self.types.pop(out, None)

    def _evaluate(self, n: NodeProto, version: int, outs: list[str]) -> None:
        if n.op_type == "Shape" and n.input[0] in self.values and self.values[n.input[0]].type.is_static():
            shape = [int(d) for d in self.values[n.input[0]].type.shape]  # type: ignore[union-attr]
            attrs = {a.name: a.i for a in n.attribute}
            r = len(shape)
            lo, hi = attrs.get("start", 0), attrs.get("end", r)
            lo, hi = (lo + r if lo < 0 else lo), (hi + r if hi < 0 else hi)
            self.data[outs[0]] = np.array(shape[max(0, min(r, lo)):max(0, min(r, hi))], np.int64)
            return
        if n.op_type == "Size" and n.input[0] in self.values and self.values[n.input[0]].type.is_static():
            self.data[outs[0]] = np.array(int(np.prod(self.values[n.input[0]].type.shape)), np.int64)
            return
        ins = [i for i in n.input if i]
        if not ins or not all(i in self.data for i in ins) or n.op_type == "Constant" or is_random(n.op_type):
            return
        if not all(o in self.values and self.values[o].type.dtype is not None for o in outs):
            return
        attrs = {a.name: attr_value(a) for a in n.attribute}
        fill_defaults(n.op_type, "", version, attrs)
        node = Node(n.op_type, list(n.input), list(n.output), attrs, n.name or n.op_type, "", version)
        vals = {i: Value(i, self.values[i].type if i in self.values else _tensor_type_of(self.data[i]),
                         self.data[i]) for i in ins}
        for o in outs:
            vals[o] = Value(o, copy.deepcopy(self.values[o].type))
        g = Graph([node], [], outs, vals)
        with memory.budget(MAX_DATA_BYTES):  # only small results are kept: never allocate a big one
            results = evaluate(node, g)
        for o, r in zip(n.output, results):
            if o and isinstance(r, np.ndarray) and r.size <= MAX_DATA_ELEMENTS:
                self.data[o] = r



def _tensor_type_of(a: np.ndarray) -> Any:
    return TensorType(a.dtype, tuple(a.shape))


_local = threading.local()


def active() -> list[Refiner]:
    """This thread's refiners of the graphs being imported, outermost first (a subgraph is imported
    while its parent's node waits: it sees the parent's known values)."""
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack
