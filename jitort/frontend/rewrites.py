"""Node rewrites at import (each keeps the node's meaning; each says why it exists).

* Nodes with subgraphs get the subgraphs' free variables appended to their inputs (jitort's IR
  convention: passes see every use; If/Loop/Scan take them as trailing inputs), and a Loop/Scan body's
  untyped formal inputs get the types the node's inputs imply.
* CastLike(x, like) becomes Cast(x, to=dtype of like): only like's dtype matters.
* Cast/Equal touching a type Numba cannot compute with (float8, int4, strings, ...) moves to the
  ``jitort`` domain (library kernels in ``kernels/lowbit.py``).
* Binary ops of opset < 7 (``broadcast``/``axis`` attributes) become their opset-7 form.
* Attention (opset 23 on) moves to the ``jitort`` domain when the attention kernel computes all it
  asks for (``direct_attention``; kernels/attention_op.py), instead of expanding into onnx's
  function body of ~40 nodes with an [S, T] score tensor.
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, NodeProto, TensorProto, TypeProto, helper, numpy_helper

from jitort.kernels.lowbit import numba_typed

_fresh = itertools.count()


def defined_in(g: onnx.GraphProto) -> set[str]:
    names = {i.name for i in g.input} | {t.name for t in g.initializer}
    names |= {t.values.name for t in g.sparse_initializer}
    for n in g.node:
        names.update(o for o in n.output if o)
    return names


def graph_free_variables(g: onnx.GraphProto) -> list[str]:
    """Names a subgraph uses (its own subgraphs included) that it does not define, in first-use order."""
    defined = defined_in(g)
    out: dict[str, None] = {}
    for n in g.node:
        for i in n.input:
            if i and i not in defined:
                out[i] = None
        for a in n.attribute:
            subs = [a.g] if a.type == AttributeProto.GRAPH else list(a.graphs)
            for sg in subs:
                for f in graph_free_variables(sg):
                    if f not in defined:
                        out[f] = None
    for o in g.output:
        if o.name not in defined:
            out[o.name] = None
    return list(out)


def type_bodies(n: NodeProto, domain: str, version: int, values: dict[str, Any]) -> NodeProto:
    """Give a Loop / Scan body's untyped formal inputs the types the node's inputs imply, so the body
    can be typed (and its elementwise chains compiled): a Scan state keeps its outer type, a scan
    element drops the scan axis; Loop's iteration count and condition are int64/bool scalars, its
    carried values keep dtype and rank only (their shapes may change between iterations)."""
    if domain != "" or n.op_type not in ("Loop", "Scan") or (n.op_type == "Scan" and version < 9):
        return n
    body = next((a.g for a in n.attribute if a.name == "body"), None)
    if body is None:
        return n

    def outer(name: str) -> Any:
        v = values.get(name) if name else None
        return None if v is None or v.type.dtype is None else v.type

    formal: list[tuple[Any, Any]] = []  # (numpy dtype, dims or None)
    if n.op_type == "Loop":
        formal = [(np.dtype(np.int64), ()), (np.dtype(np.bool_), ())]
        for i in list(n.input)[2:len(body.input)]:
            t = outer(i)
            formal.append((t.dtype, None if t.shape is None else [None] * len(t.shape)) if t else (None, None))
    else:
        m = next((a.i for a in n.attribute if a.name == "num_scan_inputs"), 0)
        axes = next((list(a.ints) for a in n.attribute if a.name == "scan_input_axes"), None) or [0] * m
        n_state = len(body.input) - m
        for k, i in enumerate(list(n.input)[:len(body.input)]):
            t = outer(i)
            if t is None or t.shape is None:
                formal.append((None if t is None else t.dtype, None))
            elif k < n_state:
                formal.append((t.dtype, list(t.shape)))
            else:
                ax = axes[k - n_state] % len(t.shape)
                formal.append((t.dtype, [d for j, d in enumerate(t.shape) if j != ax]))
    if not any(dt is not None for dt, _ in formal):
        return n
    m = NodeProto()
    m.CopyFrom(n)
    mbody = next(a.g for a in m.attribute if a.name == "body")
    for vi, (dt, dims) in zip(mbody.input, formal):
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if dt is None or vi.type.WhichOneof("value") not in (None, "tensor_type"):
            continue
        if tt is not None and tt.elem_type and tt.HasField("shape"):
            continue  # declared by the model: kept
        shape = None if dims is None else [d if isinstance(d, int) else None for d in dims]
        if tt is not None and tt.HasField("shape"):
            shape = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        vi.type.CopyFrom(helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(dt), shape))
    return m


def with_free_variables(n: NodeProto) -> NodeProto:
    """A node with subgraphs gets their free variables appended to its inputs (jitort's IR
    convention: passes then see every use; the control-flow ops take them as trailing inputs)."""
    free: dict[str, None] = {}
    for a in n.attribute:
        subs = [a.g] if a.type == AttributeProto.GRAPH else list(a.graphs) if a.type == AttributeProto.GRAPHS else []
        for sg in subs:
            free.update((f, None) for f in graph_free_variables(sg))
    if not free:
        return n
    m = NodeProto()
    m.CopyFrom(n)
    m.input.extend(free)
    return m


def untypable(n: NodeProto, values: dict[str, Any]) -> bool:
    dts = [values[i].type.dtype for i in n.input if i and i in values]
    for a in n.attribute:
        if a.name == "to":
            dts.append(np.dtype(helper.tensor_dtype_to_np_dtype(a.i)))
    return any(not numba_typed(d) for d in dts)


_ATTENTION_FLOATS = (TensorProto.FLOAT16, TensorProto.FLOAT, TensorProto.DOUBLE)


def direct_attention(n: NodeProto, values: dict[str, Any]) -> bool:
    """An ONNX Attention node (opset 23 on) that kernels/attention_op.py computes whole: a float16/32/64
    query, no softcap, no sliding window, no qk_matmul_output output, no nonpad_kv_seqlen input, past
    key and value both or neither, and a softmax in float32 or the input type."""
    q = values.get(n.input[0]) if n.input else None
    dt = q.type.dtype if q is not None else None
    if dt is None or np.dtype(dt) not in (np.float16, np.float32, np.float64):
        return False
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dt))
    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    if attrs.get("softcap", 0.0) != 0.0 or attrs.get("softmax_precision", elem) not in (TensorProto.FLOAT, elem):
        return False
    if attrs.get("left_window_size", -1) != -1 or attrs.get("right_window_size", -1) != -1:
        return False
    known = {"is_causal", "q_num_heads", "kv_num_heads", "scale", "softcap", "softmax_precision",
             "qk_matmul_output_mode", "left_window_size", "right_window_size"}
    if set(attrs) - known:
        return False
    ins = list(n.input) + [""] * 7
    if len(n.input) > 7 or ins[6] or bool(ins[4]) != bool(ins[5]):
        return False
    return len(n.output) <= 3 or not any(n.output[3:])


def in_domain(n: NodeProto, domain: str) -> NodeProto:
    m = NodeProto()
    m.CopyFrom(n)
    m.domain = domain
    return m


LEGACY_BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Greater", "Less", "PRelu"}


def legacy_broadcast(n: NodeProto, values: dict[str, Any], data: dict[str, np.ndarray]) -> list[NodeProto] | None:
    """A binary op of opset < 7 as its opset-7 form (numpy broadcasting), when that means the same.

    Before opset 7, ``broadcast=1`` aligned B with A at ``axis`` (default: the trailing axes), and
    PRelu's 1-D slope ran along the channel axis (1). Numpy broadcasting agrees when B fills A's
    trailing axes; a constant B aligned elsewhere is reshaped with trailing 1s. None when neither
    holds (the op then reports itself not implemented at its opset).
    """
    attrs = {a.name: a.i for a in n.attribute if a.type == AttributeProto.INT}
    a_t = values[n.input[0]].type if n.input[0] in values else None
    b = n.input[1] if len(n.input) > 1 else ""
    b_t = values[b].type if b in values else None
    if a_t is None or b_t is None or a_t.shape is None or b_t.shape is None:
        return None
    ra, rb = len(a_t.shape), len(b_t.shape)
    if n.op_type == "PRelu":
        axis = 1 if rb == 1 and ra > 2 and b_t.shape[0] != 1 and b_t.shape[0] != a_t.shape[-1] else ra - rb
    elif attrs.get("broadcast", 0):
        axis = attrs.get("axis", ra - rb)
        axis = axis + ra if axis < 0 else axis
    else:
        axis = ra - rb
    m = NodeProto()
    m.CopyFrom(n)
    del m.attribute[:]
    if axis + rb == ra:
        return [m]
    c = data.get(b)
    if c is None or axis < 0 or axis + rb > ra:
        return None
    shaped = f"{b}__aligned_{next(_fresh)}"
    const = helper.make_node("Constant", [], [shaped], value=numpy_helper.from_array(
        c.reshape(c.shape + (1,) * (ra - axis - rb)), shaped))
    m.input[1] = shaped
    return [const, m]


def castlike_as_cast(n: NodeProto, values: dict[str, Any], types: dict[str, TypeProto]) -> NodeProto:
    """CastLike(x, like) is Cast(x, to=dtype of like): only like's dtype matters, never its shape.

    jitort's elementwise CastLike treats ``like`` as a broadcast operand (a wrong shape whenever
    ``like``'s shape differs from ``x``'s), so where ``like``'s dtype is known it becomes a Cast.
    """
    like = n.input[1] if len(n.input) > 1 else ""
    elem = 0
    t = types.get(like)
    if t is not None and t.HasField("tensor_type"):
        elem = t.tensor_type.elem_type
    if not elem and like in values and values[like].type.dtype is not None:
        try:
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(values[like].type.dtype))
        except Exception:
            elem = 0
    if not elem:
        return n
    m = NodeProto()
    m.CopyFrom(n)
    m.op_type = "Cast"
    del m.input[1:]
    m.attribute.append(helper.make_attribute("to", elem))
    return m


