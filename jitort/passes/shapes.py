"""Complete dtypes and shapes where onnx's inference left gaps, for the ops jitort fuses.

Invariant after the pass: every elementwise node whose inputs have known dtype/shape has a known
output dtype/shape (numpy broadcasting; dtype from the op's rule). An elementwise node whose
output shape stays unknown (a rank that depends on data, say) becomes a ``jitort::ElementwiseAnyRank``
library node (kernels/anyrank.py), compiled per rank at run time. Library ops keep what onnx's
schema-driven inference (run at import, with symbolic dims and data propagation) found.
"""
from __future__ import annotations

import numpy as np

from jitort.ir import Dim, Graph, Node, Shape
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels.registry import elementwise_def, lookup


def broadcast_shapes(shapes: list[Shape]) -> Shape | None:
    rank = max(len(s) for s in shapes)
    out: list[Dim] = []
    for d in range(rank):
        dims = {s[d - rank + len(s)] for s in shapes if d - rank + len(s) >= 0}
        dims.discard(1)
        if len(dims) > 1:
            return None  # symbolic vs static or two symbols: only run time knows
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def complete_types(g: Graph) -> Graph:
    # deferred: kernel families load on first lookup (registry.load_families), not at import jitort
    from jitort.kernels.anyrank import any_rank
    for k, n in enumerate(g.nodes):
        d = elementwise_def(n)
        if d is None:
            _library_dtypes(n, g)
        if d is None or not n.outputs:
            continue
        out = g.type_of(n.outputs[0])
        ins = [g.type_of(i) for i in n.inputs if i]
        if out.dtype is None and all(t.dtype is not None for t in ins):
            dts = [np.dtype(t.dtype) for t in ins]
            out.dtype = d.out_dtype(n, dts) if d.out_dtype else dts[0]
        if out.shape is None and ins and all(t.shape is not None for t in ins):
            out.shape = broadcast_shapes([t.shape for t in ins])  # type: ignore[misc]
        if out.shape is None:
            g.nodes[k] = any_rank(n)
    return g


def _library_dtypes(n: Node, g: Graph) -> None:
    """Output dtypes a library op's type rule gives (``op(infer=...)``) where onnx's inference left none."""
    try:
        d = lookup(n.op_type, n.domain, n.version)
    except OrtNotImplemented:
        return
    if d.infer is None:
        return
    for o, t in zip(n.outputs, d.infer(n, [g.type_of(i) if i else None for i in n.inputs])):
        if o and t is not None and t.dtype is not None and g.type_of(o).dtype is None:
            g.type_of(o).dtype = np.dtype(t.dtype)
