"""An inference BatchNormalization that no Conv absorbed, as a Mul and an Add by per-channel constants,
so that elementwise fusion takes it into the chain around it.

BatchNormalization's kernel already runs as one pass ``x * s[c] + t[c]`` with s and t folded at
compile time (``kernels.norm.bn_fold``); as a node of its own it is still a pass over the tensor
that the elementwise ops next to it cannot share. densenet121's pre-activation blocks (concat ->
BatchNormalization -> Mul -> Add -> Relu -> Conv, caffe2's BN and scale layers) ran 62 of them
beside 62 fused Mul+Add+Relu kernels; written as Mul and Add, each block is one fused kernel.

Invariant after the pass: no float32/float64 inference BatchNormalization (constant scale, B, mean
and var, spatial, one output, input of known rank >= 2) remains; each became ``Mul(x, s)`` and
``Add(., t)`` with s, t of shape [C, 1, ...] (the same s and t, so the same products and sums, as the
kernel's pass).
"""
from __future__ import annotations

import numpy as np

from jitort.ir import Graph, Node, TensorType, Value
from jitort.kernels.norm import bn_fold


def bn_as_affine(g: Graph) -> Graph:
    """Rewrite each qualifying BatchNormalization (see the module docstring)."""
    nodes: list[Node] = []
    for n in g.nodes:
        pair = _rewrite(g, n)
        if pair is None:
            nodes.append(n)
        else:
            nodes += pair
            g.notes.append(f"BatchNormalization {n.name} as Mul + Add by per-channel constants")
    g.nodes = nodes
    return g


def _rewrite(g: Graph, n: Node) -> list[Node] | None:
    if n.op_type != "BatchNormalization" or n.domain != "" or n.version < 7:
        return None
    if len(n.inputs) != 5 or len([o for o in n.outputs if o]) != 1 or not n.outputs[0]:
        return None
    a = n.attrs
    if a.get("training_mode", 0) or a.get("spatial", 1) != 1:
        return None
    params = [g.const(i) if i else None for i in n.inputs[1:5]]
    xt = g.type_of(n.inputs[0])
    if any(p is None for p in params) or xt.dtype is None or xt.shape is None or len(xt.shape) < 2:
        return None
    dt = np.dtype(xt.dtype)
    C = xt.shape[1]
    if dt not in (np.float32, np.float64) or not isinstance(C, int) or \
            any(p.ndim != 1 or p.size != C for p in params):  # type: ignore[union-attr]
        return None
    s, t = bn_fold(dt, C, *params, float(a.get("epsilon", 1e-5)))  # type: ignore[misc]
    cshape = (C,) + (1,) * (len(xt.shape) - 2)
    sn, tn = g.fresh_name(f"{n.name}.scale"), g.fresh_name(f"{n.name}.shift")
    mid = g.fresh_name(f"{n.name}.scaled")
    g.values[sn] = Value(sn, TensorType(dt, cshape), np.ascontiguousarray(s.reshape(cshape)))
    g.values[tn] = Value(tn, TensorType(dt, cshape), np.ascontiguousarray(t.reshape(cshape)))
    g.values[mid] = Value(mid, TensorType(dt, tuple(xt.shape)))
    return [Node("Mul", [n.inputs[0], sn], [mid], {}, n.name, "", n.version, n.provider),
            Node("Add", [mid, tn], [n.outputs[0]], {}, f"{n.name}/shift", "", n.version, n.provider)]
