"""Drop the no-op steps converters append to classic-ML models: ``Cast`` of a label or score to the
type it already has, and ``Mul`` / ``Div`` of a float score by a constant 1.

onnxmltools' LightGBM and XGBoost converters end every classifier with ``Cast(label, to=int64)`` and
``Mul(probabilities, one)``; each such step costs a kernel call and its broadcasting at run time,
which at one row is a good part of a tree ensemble's whole run. Both are exact identities (``x * 1``
and ``x / 1`` are x for every float, NaN and -0 included), so they are removed when they read the
output of an ``ai.onnx.ml`` node (directly or through other such steps): a removed step's readers
read its input instead; when its output is a graph output, the producer writes that output itself
(if nothing else reads the step's input). Every removal is recorded in ``g.notes``.
"""
from __future__ import annotations

import numpy as np

from jitort.ir import Graph, Node

ML = "ai.onnx.ml"


def _dtype(g: Graph, name: str) -> np.dtype | None:
    t = g.type_of(name)
    return None if t is None or t.dtype is None else np.dtype(t.dtype)


def _is_one(g: Graph, name: str, x: str) -> bool:
    """``name`` is a constant 1 of x's float type that cannot broadcast x to a larger shape."""
    c = g.const(name)
    dt = _dtype(g, x)
    if c is None or c.size != 1 or dt is None or dt.kind != "f" or c.dtype != dt or c.reshape(-1)[0] != 1:
        return False
    if c.ndim == 0:
        return True
    shape = g.type_of(x).shape
    return shape is not None and len(shape) >= c.ndim


def _no_op(g: Graph, n: Node) -> bool:
    if n.domain != "" or len(n.outputs) != 1 or not n.inputs or not n.inputs[0]:
        return False
    x = n.inputs[0]
    if n.op_type == "Cast" and len(n.inputs) == 1:
        to = n.attrs.get("to")
        dt = _dtype(g, x)
        out = _dtype(g, n.outputs[0])
        return dt is not None and out is not None and dt == out and dt.kind in "fiub" and to is not None
    if n.op_type in ("Mul", "Div") and len(n.inputs) == 2:
        return _is_one(g, n.inputs[1], x)
    return False


def drop_ml_no_ops(g: Graph) -> Graph:
    """Remove no-op Cast / Mul-by-one / Div-by-one steps after ai.onnx.ml nodes (see the module doc)."""
    if not any(n.domain == ML for n in g.nodes):
        return g
    protected = g.subgraph_reads()
    outputs = set(g.outputs)
    from_ml = {o for n in g.nodes if n.domain == ML for o in n.outputs if o}
    keep: list[Node] = []
    for n in g.nodes:  # topological order: a step's input is final when it is reached
        if n.inputs and n.inputs[0] in from_ml and _no_op(g, n):
            x, y = n.inputs[0], n.outputs[0]
            readers = [m for m in g.nodes if m is not n and x in m.inputs]
            if y not in outputs and y not in protected:
                for m in g.nodes:
                    m.inputs = [x if i == y else i for i in m.inputs]
                g.notes.append(f"ml_tail: dropped {n.op_type} '{n.name}' (a no-op on {x})")
                continue
            if x not in outputs and x not in protected and not readers:
                for m in keep:
                    m.outputs = [y if o == x else o for o in m.outputs]
                from_ml.add(y)
                g.notes.append(f"ml_tail: dropped {n.op_type} '{n.name}' (a no-op; its producer writes {y})")
                continue
        keep.append(n)
    g.nodes = keep
    return g
