"""FLOPs and bytes moved per op, from the shapes ONNX shape inference gives for concrete inputs
(``onnx.shape_inference.infer_shapes``, repeated after folding run-time shape arithmetic such as
Shape -> Gather -> Concat, so that exporter-style Reshape/Slice arguments become known).

The counts are nominal, per ONNX node of the graph as written, not what a runtime executes after
fusion: a fused chain of five elementwise ops moves one input and one output through memory, but it
is counted here as five ops moving ten tensors. That makes the numbers the same for every runtime,
so "achieved GFLOP/s" is work per second on a common scale.

FLOPs (a multiply-add is two):

* Conv: ``2 * N * M * (C/group) * prod(kernel) * prod(output spatial)`` = ``2 * size(Y) * size(W[1:])``,
  plus one per output element when there is a bias. ConvTranspose: ``2 * size(X) * size(W[1:])`` (+ bias).
* MatMul: ``2 * M * N * K`` per batch matrix (``2 * size(Y) * K``); Gemm: ``2 * M * N * K``, plus
  ``M * N`` when C (the bias) is given. MatMulInteger, MatMulIntegerToFloat, DynamicQuantizeMatMul likewise.
* Elementwise ops (``ELEMENTWISE``): one per output element; variadic Sum/Max/Min/Mean: ``inputs - 1``.
* BatchNormalization (inference, statistics given): 2 per element (a multiply and an add).
  Layer/Instance/Group normalization: 8 per element; Softmax/LogSoftmax: 4 per element;
  reductions: 1 per input element; Max/Average/Lp pooling: ``prod(kernel)`` per output element;
  global pooling: 1 per input element; LRN: ``2 * size + 3`` per element. (Approximations: these ops
  are bandwidth-bound and their FLOPs matter little.)
* Everything else (reshapes, transposes, gathers, casts, concats, ...) moves data: 0 FLOPs.

Bytes: the sizes of every input (weights included) and output of each node. Nodes computed from
constants only (e.g. the ConstantOfShape weights of the onnx wheel's light models) are left out:
every runtime folds them when it creates the session; the ops jitort's op table marks random
(``jitort.kernels.registry.is_random``) are not constants, as they run every time. Outputs nothing
reads (Dropout's mask) are not counted. Nodes whose shapes inference cannot pin down count what is
known and are listed in ``ModelCount.unknown``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from jitort.kernels.registry import is_random

__all__ = ["ELEMENTWISE", "ModelCount", "NodeCount", "count_model", "node_flops"]

Shape = tuple[int, ...]

ELEMENTWISE = frozenset("""
Abs Acos Acosh Add And Asin Asinh Atan Atanh BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Ceil
Celu Clip Cos Cosh Div Elu Equal Erf Exp Floor Gelu Greater GreaterOrEqual HardSigmoid HardSwish
Hardmax IsInf IsNaN LeakyRelu Less LessOrEqual Log Mish Mod Mul Neg Not Or PRelu Pow Reciprocal Relu
Round Selu Shrink Sigmoid Sign Sin Sinh Softplus Softsign Sqrt Sub Tan Tanh ThresholdedRelu Where Xor
QuantizeLinear DequantizeLinear
""".split())
VARIADIC = frozenset({"Sum", "Max", "Min", "Mean"})
PER_ELEMENT = {"BatchNormalization": 2, "LayerNormalization": 8, "InstanceNormalization": 8,
               "GroupNormalization": 8, "MeanVarianceNormalization": 8, "Softmax": 4, "LogSoftmax": 4}
REDUCE = frozenset({"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin",
                    "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})
POOL = frozenset({"MaxPool", "AveragePool", "LpPool"})


@dataclass
class NodeCount:
    name: str
    op_type: str
    flops: int | None  # None: the shapes needed are unknown
    bytes: int
    complete: bool  # every input and output shape known


@dataclass
class ModelCount:
    flops: int = 0
    bytes: int = 0
    nodes: list[NodeCount] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # nodes with unknown shapes (counts are lower bounds)

    @property
    def complete(self) -> bool:
        return not self.unknown

    def by_op_type(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for n in self.nodes:
            d = out.setdefault(n.op_type, {"nodes": 0, "flops": 0, "bytes": 0})
            d["nodes"] += 1
            d["flops"] += n.flops or 0
            d["bytes"] += n.bytes
        return out


def _size(shape: Shape) -> int:
    return math.prod(shape)


def node_flops(op_type: str, attrs: dict[str, Any], ins: Sequence[Shape | None],
               outs: Sequence[Shape | None]) -> int | None:
    """FLOPs of one node from its input and output shapes (None where a shape is unknown; an omitted
    optional input is None as well). Returns None when a shape the formula needs is unknown."""
    y = outs[0] if outs else None

    def has(k: int) -> bool:
        return len(ins) > k and ins[k] is not None

    if op_type in ("Conv", "FusedConv"):  # FusedConv: its Conv part (jitort's and com.microsoft's)
        if y is None or not has(1):
            return None
        return 2 * _size(y) * _size(ins[1][1:]) + (_size(y) if has(2) else 0)  # type: ignore[index]
    if op_type == "ConvTranspose":
        if y is None or not has(0) or not has(1):
            return None
        return 2 * _size(ins[0]) * _size(ins[1][1:]) + (_size(y) if has(2) else 0)  # type: ignore[arg-type,index]
    if op_type in ("MatMul", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"):
        if y is None or not has(0):
            return None
        return 2 * _size(y) * ins[0][-1]  # type: ignore[index]
    if op_type == "Gemm":
        if y is None or not has(0):
            return None
        a = ins[0]
        k = a[0] if attrs.get("transA", 0) else a[1]  # type: ignore[index]
        return 2 * _size(y) * k + (_size(y) if has(2) else 0)
    if op_type in ELEMENTWISE:
        return None if y is None else _size(y)
    if op_type in VARIADIC:
        return None if y is None else _size(y) * max(1, len(ins) - 1)
    if op_type in PER_ELEMENT:
        return None if y is None else PER_ELEMENT[op_type] * _size(y)
    if op_type in REDUCE:
        return _size(ins[0]) if has(0) else None  # type: ignore[arg-type]
    if op_type in POOL:
        if y is None:
            return None
        return _size(y) * math.prod(attrs.get("kernel_shape", [1]))
    if op_type == "LRN":
        return None if y is None else (2 * int(attrs.get("size", 1)) + 3) * _size(y)
    return 0


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute
            if a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.INTS, onnx.AttributeProto.FLOAT)}


def _value_types(model: onnx.ModelProto) -> dict[str, tuple[Shape | None, int]]:
    """name -> (static shape or None, bytes per element) for every value inference knows."""
    out: dict[str, tuple[Shape | None, int]] = {}
    g = model.graph
    for t in g.initializer:
        out[t.name] = (tuple(t.dims), _itemsize(t.data_type))
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.WhichOneof("value") != "tensor_type" or vi.name in out:
            continue
        tt = vi.type.tensor_type
        shape: Shape | None = None
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shape = tuple(int(d.dim_value) for d in tt.shape.dim)
        out[vi.name] = (shape, _itemsize(tt.elem_type))
    for n in g.node:  # Constant nodes: their value attribute
        if n.op_type == "Constant" and n.output and n.output[0] not in out:
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = (tuple(a.t.dims), _itemsize(a.t.data_type))
    return out


def _itemsize(elem_type: int) -> int:
    try:
        return int(helper.tensor_dtype_to_np_dtype(elem_type).itemsize)
    except (KeyError, TypeError, ValueError):
        return 0


def _infer(m: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(m, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort: unknown shapes make a lower bound
        return m


def _infer_folding_shapes(m: onnx.ModelProto, rounds: int = 4) -> onnx.ModelProto:
    """Shape inference, repeated after folding the shape computations that the concrete input shapes
    make constant: exporters compute Reshape/Slice arguments at run time (Shape -> Gather -> Concat),
    which leaves inference without their values. A ``Shape`` of a value whose shape is known, and any
    deterministic node over small constants whose outputs are small integer tensors, becomes an
    initializer (evaluated with onnx.reference). The folded nodes are shape arithmetic, which the
    counts would leave out anyway; the folded model is used for counting only."""
    from onnx.reference import ReferenceEvaluator
    opsets = {d.domain or "": d.version for d in m.opset_import}
    m = _infer(m)
    for _ in range(rounds):
        types = _value_types(m)
        consts = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        keep: list[onnx.NodeProto] = []
        folded: dict[str, np.ndarray] = {}
        for n in m.graph.node:
            vals = _fold_node(n, types, {**consts, **folded}, opsets, ReferenceEvaluator)
            if vals is None:
                keep.append(n)
            else:
                folded.update(vals)
        if not folded:
            break
        m2 = onnx.ModelProto()
        m2.CopyFrom(m)
        del m2.graph.node[:]
        m2.graph.node.extend(keep)
        m2.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in folded.items())
        del m2.graph.value_info[:]
        m = _infer(m2)
    return m


def _fold_node(n: onnx.NodeProto, types: dict[str, tuple[Shape | None, int]], consts: dict[str, np.ndarray],
               opsets: dict[str, int], evaluator: Any) -> dict[str, np.ndarray] | None:
    if is_random(n.op_type, n.domain) or n.domain not in ("", "ai.onnx") or not n.output or \
            any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
        return None
    if n.op_type == "Shape":
        shape = types.get(n.input[0], (None, 0))[0]
        if shape is None:
            return None
        attrs = _attrs(n)
        return {n.output[0]: np.array(shape[attrs.get("start", 0):attrs.get("end", None)], np.int64)}
    if not all(i in consts for i in n.input if i) or \
            sum(consts[i].size for i in n.input if i) > 4096:
        return None
    try:
        outs = evaluator(n, opsets=opsets).run(None, {i: consts[i] for i in n.input if i})
    except Exception:  # noqa: BLE001 - best effort
        return None
    vals = {o: np.asarray(v) for o, v in zip(n.output, outs) if o}
    if not all(v.dtype.kind in "iu" and v.size <= 64 for v in vals.values()):
        return None
    return vals


def count_model(model: onnx.ModelProto, input_shapes: dict[str, Sequence[int]] | None = None) -> ModelCount:
    """FLOPs and bytes of ``model``'s top-level nodes with its inputs at ``input_shapes`` (inputs not
    named keep their declared shapes). Subgraphs (If/Loop/Scan bodies) are not counted."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if input_shapes and vi.name in input_shapes:
            dims = vi.type.tensor_type.shape.dim
            del dims[:]
            for d in input_shapes[vi.name]:
                dims.add().dim_value = int(d)
    del m.graph.value_info[:]
    m = _infer_folding_shapes(m)
    types = _value_types(m)
    const = {t.name for t in m.graph.initializer}
    used = {i for n in m.graph.node for i in n.input} | {o.name for o in m.graph.output}
    total = ModelCount()
    for n in m.graph.node:
        if (not is_random(n.op_type, n.domain) and all(i in const for i in n.input if i)
                and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute)):
            const.update(o for o in n.output if o)
            continue
        ins = [types.get(i, (None, 0))[0] if i else None for i in n.input]
        outs = [types.get(o, (None, 0))[0] if o else None for o in n.output]
        nbytes = 0
        complete = True
        for name in list(n.input) + [o for o in n.output if o in used]:  # dead outputs: never computed
            if not name:
                continue
            shape, item = types.get(name, (None, 0))
            if shape is None:
                complete = False
            else:
                nbytes += _size(shape) * item
        flops = node_flops(n.op_type, _attrs(n), ins, outs)
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            complete = False
        label = n.name or f"{n.op_type}:{n.output[0] if n.output else '?'}"
        total.nodes.append(NodeCount(label, n.op_type, flops, nbytes, complete and flops is not None))
        total.flops += flops or 0
        total.bytes += nbytes
        if not (complete and flops is not None):
            total.unknown.append(label)
    return total
