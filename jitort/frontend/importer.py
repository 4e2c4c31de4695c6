"""ModelProto -> jitort IR.

onnx's schema-driven shape inference (symbolic dims, data propagation through shape chains), Constant nodes turned into
constant values, attribute defaults filled from the op schema, subgraphs imported recursively.
Reading the model (path, bytes, external data) is ``jitort.model_file``'s.
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto

from jitort import protos, validate
from jitort.arrays import contiguous
from jitort.dtypes import type_string
from jitort.errors import Fail, InvalidGraph
from jitort.frontend.functions import expand_functions, inline_local_functions
from jitort.ir import Dim, Graph, Node, TensorType, Value, toposort
from jitort.protos import constant_value, fill_defaults, sparse_to_array, tensor_type, to_array
from jitort.runtime_info import warn


def opsets_of(proto: onnx.ModelProto) -> dict[str, int]:
    ops = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in proto.opset_import}
    if not ops:
        raise InvalidGraph("model has no opset_import")
    validate.opsets(ops)
    return ops


def infer(proto: onnx.ModelProto) -> onnx.ModelProto:
    """onnx's shape inference with data propagation; a model it cannot handle keeps its declared types."""
    try:
        return onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception:
        try:
            return onnx.shape_inference.infer_shapes(proto, strict_mode=False)
        except Exception:
            return proto


def distinct_input_dims(proto: onnx.ModelProto, across_inputs: bool = False) -> onnx.ModelProto:
    """The model with a symbolic dim name repeated within one graph input (``[-1, 3, "?", "?"]``)
    renamed so that each occurrence is its own symbol; with ``across_inputs``, also names shared
    between inputs. onnxruntime binds such dims independently (a name is a hint, not a constraint),
    while jitort's passes read equal names as equal sizes. Declared shapes of intermediates and
    outputs lose the renamed names (they become unknown dims for inference to fill): a declaration
    must not re-assert an equality the inputs no longer promise. Returns ``proto`` itself when
    nothing is shared."""
    inits = {t.name for t in proto.graph.initializer}
    seen: set[str] = set()
    plan: list[tuple[int, int, str]] = []
    for k, vi in enumerate(proto.graph.input):
        if vi.name in inits or not vi.type.HasField("tensor_type"):
            continue
        mine: set[str] = set()
        for a, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_param") and d.dim_param:
                if d.dim_param in mine or (across_inputs and d.dim_param in seen):
                    plan.append((k, a, d.dim_param))
                mine.add(d.dim_param)
        seen |= mine
    if not plan:
        return proto
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    renamed = set()
    taken = {d.dim_param for vi in out.graph.input for d in vi.type.tensor_type.shape.dim}
    for k, a, name in plan:
        fresh = f"{name}__{k}_{a}"
        while fresh in taken:
            fresh += "_"
        taken.add(fresh)
        out.graph.input[k].type.tensor_type.shape.dim[a].dim_param = fresh
        renamed.add(name)
    for vi in itertools.chain(out.graph.value_info, out.graph.output):
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param in renamed:
                d.ClearField("dim_param")
    return out


def import_model(proto: onnx.ModelProto, distinct_dims: bool = False) -> Graph:
    """The IR of ``proto``. Symbolic dims repeated within an input are bound independently; with
    ``distinct_dims`` names shared across inputs too (see :func:`distinct_input_dims`)."""
    proto = distinct_input_dims(proto, across_inputs=distinct_dims)
    proto = inline_local_functions(proto)  # model-local functions: onnx's inliner, before inference
    opsets = opsets_of(proto)
    inferred = infer(_outputs_undeclared(proto))
    g = import_graph(inferred.graph, opsets, outer_types={})
    for vi in proto.graph.output:
        merge_declared_output(g, vi.name, tensor_type(vi.type))
    return g


def _outputs_undeclared(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` whose graph outputs declare no type, so inference types them from the
    nodes alone: onnx's non-strict inference otherwise keeps a declaration that contradicts it."""
    bare = onnx.ModelProto()
    bare.CopyFrom(proto)
    for vi in bare.graph.output:
        vi.ClearField("type")
    return bare


def merge_declared_output(g: Graph, name: str, declared: TensorType) -> None:
    """Check graph output ``name``'s declared type against the type the graph computes, as
    onnxruntime does: a different element type is an error (onnxruntime's Fail); a different shape
    is a stale hint, warned about, and the computed shape stands. A declaration fills in only what
    inference left unknown."""
    v = g.values.get(name)
    if v is None:
        return
    t = v.type
    if declared.dtype is not None:
        if t.dtype is None:
            t.dtype = declared.dtype
        elif np.dtype(t.dtype) != np.dtype(declared.dtype):
            want, got = type_string(declared.dtype), type_string(t.dtype)
            raise Fail(f"Type Error: Type ({want}) of output arg ({name}) does not match expected type "
                       f"({got}): graph output '{name}' is declared {want} but the graph computes {got}")
    if declared.shape is None:
        return
    if t.shape is None:
        t.shape = declared.shape
    elif _shapes_conflict(declared.shape, t.shape):
        warn(f"jitort: graph output '{name}' is declared with shape {_shape_text(declared.shape)} "
             f"but the graph computes {_shape_text(t.shape)}; the computed shape is used", stacklevel=2)


def _shapes_conflict(a: tuple[Dim, ...], b: tuple[Dim, ...]) -> bool:
    """Different ranks, or a dim static in both with different values (symbols never conflict)."""
    return len(a) != len(b) or any(isinstance(x, int) and isinstance(y, int) and x != y for x, y in zip(a, b))


def _shape_text(shape: tuple[Dim, ...]) -> str:
    return "[" + ", ".join("?" if isinstance(d, str) and d.startswith("?") else str(d) for d in shape) + "]"


def import_graph(g: onnx.GraphProto, opsets: dict[str, int], outer_types: dict[str, TensorType]) -> Graph:
    validate.graph_inputs(g)
    values: dict[str, Value] = {}
    for name, t in outer_types.items():
        values[name] = Value(name, t)
    init_names = set()
    for t in g.initializer:
        a = to_array(t)
        values[t.name] = Value(t.name, TensorType(a.dtype, tuple(a.shape)), a)
        init_names.add(t.name)
    for t in g.sparse_initializer:
        a = sparse_to_array(t)  # densified
        name = t.values.name
        values[name] = Value(name, TensorType(a.dtype, tuple(a.shape)), contiguous(a))
        init_names.add(name)
    for vi in itertools.chain(g.input, g.value_info, g.output):
        if vi.name in init_names:
            continue
        t = tensor_type(vi.type)
        old = values.get(vi.name)
        if old is None or old.type.dtype is None:
            values[vi.name] = Value(vi.name, t)
    inputs = [i.name for i in g.input if i.name not in init_names]
    nodes: list[Node] = []
    # function ops without a kernel -> their bodies
    for i, (n, version) in enumerate(expand_functions(g, opsets, values)):
        domain = "" if n.domain == "ai.onnx" else n.domain
        validate.node(n, domain, opsets)
        attrs = {a.name: attr_value(a, opsets, values) for a in n.attribute}
        name = n.name or f"{n.op_type}_{i}"
        if n.op_type == "Constant" and domain == "":
            out = n.output[0]
            a = constant_value(attrs, name)
            values[out] = Value(out, TensorType(a.dtype, tuple(a.shape)), a)
            continue
        fill_defaults(n.op_type, domain, version, attrs)
        nodes.append(Node(n.op_type, list(n.input), list(n.output), attrs, name, domain, version))
    return Graph(toposort(nodes), inputs, [o.name for o in g.output], values, dict(opsets), g.name)


def attr_value(a: AttributeProto, opsets: dict[str, int], values: dict[str, Value]) -> Any:
    """An attribute's value; a GRAPH/GRAPHS attribute is imported as an IR subgraph that sees
    ``values`` (the enclosing graph's) as outer scope."""
    if a.type == AttributeProto.GRAPH and not a.ref_attr_name:
        return import_graph(a.g, opsets, {k: v.type for k, v in values.items()})
    if a.type == AttributeProto.GRAPHS and not a.ref_attr_name:
        return [import_graph(x, opsets, {k: v.type for k, v in values.items()}) for x in a.graphs]
    return protos.attr_value(a)
