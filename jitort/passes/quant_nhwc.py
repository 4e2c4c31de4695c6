"""Quantised convolutions in NHWC: the layout their int8 kernel computes in, kept between them.

kernels/qconv_lanes.py computes a QLinearConv on the input's pixels with their channels contiguous
(NHWC) and writes its output that way; on NCHW tensors each call transposed its input in and its
output back out, a third of its time in a quantised ResNet. onnxruntime runs a quantised network in
NHWC between a Transpose at each border; so does jitort after this pass: every QLinearConv the int8
lanes kernel takes (``qconv.lanes_nhwc_applies``) becomes ``QLinearConvNhwc`` (domain jitort) on NHWC
tensors; a QLinearAdd with an NHWC operand runs on NHWC operands (elementwise: the layout does not
matter to it, only that both agree), an 8-bit MaxPool reading one becomes com.microsoft's NhwcMaxPool
and a QLinearGlobalAveragePool takes channels_last; a ``Transpose`` converts a value where a reader
needs the other layout (graph inputs and outputs, anything else), once per value.

Invariant after the pass: every NHWC-read input of a converted node is NHWC; every other reader of a
converted node's output (and a graph output) reads an NCHW value of its original name. Runs on hosts
with AVX2 (``qconv.int8_lanes``; elsewhere nothing changes).
"""
from __future__ import annotations

import numpy as np

from jitort.ir import Graph, Node, TensorType, Value
from jitort.kernels.qconv import lanes_nhwc_applies

MS = "com.microsoft"
TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


def _nhwc(t: TensorType) -> TensorType:
    s = t.shape
    assert s is not None and len(s) == 4
    return TensorType(t.dtype, (s[0], s[2], s[3], s[1]))


def _out4(g: Graph, n: Node) -> bool:
    """n has one output, of a known rank of 4 (its NHWC twin's type derives from it)."""
    return len(n.outputs) == 1 and g.type_of(n.outputs[0]).rank == 4


def _readers(g: Graph, n: Node) -> list[int] | None:
    """The inputs of n that may be NHWC when n runs in NHWC: QLinearAdd's operands (of one 4-D shape),
    an 8-bit 2-D MaxPool's (as com.microsoft's NhwcMaxPool) and QLinearGlobalAveragePool's (with
    channels_last); None for any other node."""
    if n.domain == MS and n.op_type == "QLinearAdd" and len(n.inputs) >= 7:
        a, b = g.type_of(n.inputs[0]), g.type_of(n.inputs[3])
        return [0, 3] if a.rank == 4 and a.shape == b.shape else None
    x = g.type_of(n.inputs[0]) if n.inputs else None
    if x is None or x.rank != 4 or len(n.outputs) != 1:
        return None
    if n.domain == "" and n.op_type == "MaxPool" and n.version >= 12 and x.dtype is not None \
            and np.dtype(x.dtype) in (np.dtype(np.uint8), np.dtype(np.int8)) and not n.attrs.get("storage_order", 0):
        return [0]
    if n.domain == MS and n.op_type == "QLinearGlobalAveragePool" and not n.attrs.get("channels_last", 0):
        return [0]
    return None


def quant_nhwc(g: Graph) -> Graph:
    convs = {id(n) for n in g.nodes if n.op_type == "QLinearConv" and n.domain == "" and _out4(g, n)
             and lanes_nhwc_applies(n, g)}
    if not convs:
        return g
    producers, consumers = g.producers(), g.consumers()
    protected = set(g.outputs) | g.subgraph_reads()
    converted = set(convs)
    operands: dict[int, list[int]] = {id(n): [0] for n in g.nodes if id(n) in convs}  # the NHWC inputs

    def from_converted(n: Node, ks: list[int]) -> bool:
        return any(n.inputs[k] in producers and id(producers[n.inputs[k]]) in converted for k in ks)

    for n in g.nodes:  # topological order: a node reading one converted before it converts too
        ks = _readers(g, n)
        if ks is not None and _out4(g, n) and from_converted(n, ks):
            converted.add(id(n))
            operands[id(n)] = ks
    opset = g.opsets.get("", 13)
    nhwc: dict[str, str] = {}  # a value's NHWC twin
    out: list[Node] = []
    moved = 0  # Transposes written

    def twin(v: str) -> str:
        """The NHWC form of v, from a Transpose the first time an NCHW value is asked for."""
        nonlocal moved
        if v not in nhwc:
            name = g.fresh_name(v + "_nhwc")
            g.values[name] = Value(name, _nhwc(g.type_of(v)))
            out.append(Node("Transpose", [v], [name], {"perm": TO_NHWC}, name=name, version=opset))
            nhwc[v] = name
            moved += 1
        return nhwc[v]

    for n in g.nodes:
        if id(n) not in converted:
            out.append(n)
            continue
        ins = list(n.inputs)
        for k in operands[id(n)]:
            ins[k] = twin(ins[k])
        y = n.outputs[0]
        name = g.fresh_name(y + "_nhwc")
        g.values[name] = Value(name, _nhwc(g.type_of(y)))
        if id(n) in convs:
            out.append(Node("QLinearConvNhwc", ins, [name], dict(n.attrs), name=n.name, domain="jitort", version=1))
        elif n.op_type == "MaxPool":
            attrs = {k: v for k, v in n.attrs.items() if k != "storage_order"}
            out.append(Node("NhwcMaxPool", ins, [name], attrs, name=n.name, domain=MS, version=1))
        else:
            n.inputs, n.outputs = ins, [name]
            if n.op_type == "QLinearGlobalAveragePool":
                n.attrs = {**n.attrs, "channels_last": 1}
            out.append(n)
        nhwc[y] = name
        if y in protected or any(id(c) not in converted for c in consumers.get(y, [])):
            out.append(Node("Transpose", [name], [y], {"perm": TO_NCHW}, name=y + "_nchw", version=opset))
            moved += 1
        else:
            g.values.pop(y, None)
    g.nodes = out
    g.notes.append(f"quant_nhwc: {len(convs)} QLinearConv and {len(converted) - len(convs)} other quantised ops "
                   f"run on NHWC tensors, {moved} Transposes at the borders")
    return g
