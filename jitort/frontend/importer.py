"""ModelProto -> jitort IR.

Loading (path, bytes or ModelProto, external data next to the model file), onnx's schema-driven
shape inference (symbolic dims, data propagation through shape chains), Constant nodes turned into
constant values, attribute defaults filled from the op schema, subgraphs imported recursively.
"""
from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto

from jitort import protos, validate
from jitort.arrays import contiguous
from jitort.dtypes import type_string
from jitort.errors import Fail, InvalidGraph, InvalidProtobuf, NoSuchFile
from jitort.frontend.functions import expand_functions, inline_local_functions
from jitort.ir import Dim, Graph, Node, TensorType, Value, toposort
from jitort.protos import constant_value, fill_defaults, sparse_to_array, tensor_type, to_array
from jitort.runtime_info import warn


def load_model(model: str | bytes | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, bytes | None]:
    """Return the ModelProto (external data loaded) and the serialized bytes it was parsed from
    (None when they are not the whole story: a ModelProto argument, or external data)."""
    if isinstance(model, onnx.ModelProto):
        if _decode_text_fields(model, dry_run=True):
            model = onnx.ModelProto.FromString(model.SerializeToString())  # the caller's proto stays as it is
            _decode_text_fields(model)
        return model, None
    if isinstance(model, (bytes, bytearray, memoryview)):
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(bytes(model))
        except Exception as e:
            raise InvalidProtobuf("Failed to load model "
                                  f"because protobuf parsing failed: {e}") from None
        _check_not_empty(proto, "<bytes>")
        _decode_text_fields(proto)
        return proto, bytes(model)
    path = os.fspath(model)
    if not isinstance(path, str):
        raise TypeError(f"model must be a path, bytes or onnx.ModelProto, not {type(model).__name__}")
    if not os.path.isfile(path):
        raise NoSuchFile(f"Load model from {path} failed:"
                         f"Load model {path} failed. File doesn't exist")
    try:
        with open(path, "rb") as f:
            raw = f.read()
        proto = onnx.ModelProto()
        proto.ParseFromString(raw)
    except Exception as e:
        raise InvalidProtobuf(f"Load model from {path} "
                              f"failed:Protobuf parsing failed. ({e})") from None
    _check_not_empty(proto, path)
    _decode_text_fields(proto)
    if not any(t.data_location == onnx.TensorProto.EXTERNAL for t in _all_tensors(proto.graph)):
        return proto, raw
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, os.path.dirname(os.path.abspath(path)))
    except onnx.checker.ValidationError as e:  # a location outside the model's directory, absolute, missing
        raise Fail(f"External data path validation failed: {e}") from None
    except (OSError, ValueError) as e:
        raise NoSuchFile(f"Load model from {path} failed: external data could not be read: {e}") from None
    return proto, None


def _all_tensors(g: onnx.GraphProto) -> Any:
    """Every TensorProto of a graph: initializers and node attributes (Constant values), subgraphs
    included: each may keep its data in an external file."""
    yield from g.initializer
    for n in g.node:
        for a in n.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _all_tensors(a.g)
            for sub in a.graphs:
                yield from _all_tensors(sub)


def _decode_text_fields(msg: Any, dry_run: bool = False) -> bool:
    """Replace every string field protobuf handed back as bytes (it was not valid UTF-8) by its
    UTF-8 decoding with backslash escapes for the bad bytes, as onnxruntime runs such models.
    Returns whether any field was (or, with ``dry_run``, would be) replaced. Tensors' data fields
    are not visited (they are bytes by type, and can be large)."""
    changed = False
    if msg.DESCRIPTOR.full_name == "onnx.TensorProto":
        fields = [(msg.DESCRIPTOR.fields_by_name[f], getattr(msg, f)) for f in ("name", "doc_string")]
        fields.append((msg.DESCRIPTOR.fields_by_name["external_data"], msg.external_data))
    else:
        fields = msg.ListFields()
    for fd, value in fields:
        if fd.type == fd.TYPE_MESSAGE:
            for m in (value if _is_repeated(fd) else [value]):
                changed |= _decode_text_fields(m, dry_run)
        elif fd.type == fd.TYPE_STRING:
            items = list(value) if _is_repeated(fd) else [value]
            if any(isinstance(v, bytes) for v in items):
                changed = True
                if dry_run:
                    continue
                fixed = [v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else v for v in items]
                if _is_repeated(fd):
                    del value[:]
                    value.extend(fixed)
                else:
                    setattr(msg, fd.name, fixed[0])
    return changed


def _is_repeated(fd: Any) -> bool:
    return bool(fd.is_repeated)


def _check_not_empty(proto: onnx.ModelProto, where: str) -> None:
    # protobuf happily parses many byte strings into an empty message: a model needs a graph.
    if not proto.HasField("graph") or (not proto.graph.node and not proto.graph.output):
        raise InvalidProtobuf(f"Load model from {where} "
                              "failed:Protobuf parsing failed (no graph in the model).")


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
