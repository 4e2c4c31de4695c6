"""ModelProto -> jitort IR.

Loading (path, bytes or ModelProto, external data next to the model file), onnx's schema-driven
shape inference (symbolic dims, data propagation through shape chains), Constant nodes turned into
constant values, attribute defaults filled from the op schema, subgraphs imported recursively.
"""
from __future__ import annotations

import itertools
import math
import os
import re
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, helper, numpy_helper

from jitort import memory, validate
from jitort.codegen.source import comment_safe
from jitort.dtypes import type_string
from jitort.errors import Fail, InvalidGraph, InvalidProtobuf, NoSuchFile
from jitort.ir import Dim, Graph, Node, TensorType, Value, toposort
from jitort.runtime_info import warn

_unknown_dims = itertools.count()


def contiguous(a: np.ndarray) -> np.ndarray:
    """C-contiguous and writeable (Numba types read-only arrays apart); 0-d stays 0-d, unlike
    np.ascontiguousarray."""
    return a if a.flags.c_contiguous and a.flags.writeable else np.array(a, order="C", copy=True)


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
    from jitort.functions import inline_local_functions
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


def _np_dtype(elem_type: int) -> np.dtype | None:
    if elem_type == 0:
        return None
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        return None


def tensor_type(tp: onnx.TypeProto) -> TensorType:
    if not tp.HasField("tensor_type"):
        return TensorType()  # sequences / optionals: typed later by the ops that use them
    tt = tp.tensor_type
    shape: tuple[Dim, ...] | None = None
    if tt.HasField("shape"):
        dims: list[Dim] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value >= 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(f"?{next(_unknown_dims)}")
        shape = tuple(dims)
    return TensorType(_np_dtype(tt.elem_type), shape)


def to_array(t: onnx.TensorProto) -> np.ndarray:
    """A TensorProto's data (initializer or attribute), checked against its dims and type first:
    onnxruntime's ``Fail`` naming the tensor for negative or overflowing dims, a data size that does
    not match them, or anything else onnx's decoder rejects."""
    if t.data_location == onnx.TensorProto.EXTERNAL and not t.raw_data:
        raise InvalidGraph(f"initializer '{t.name}' uses external data that was not loaded "
                           "(load the model from its path so the data file can be found)")
    what = f"Initializer '{comment_safe(t.name)}'"
    dims = [int(d) for d in t.dims]
    if any(d < 0 for d in dims):
        raise Fail(f"{what}: Out of bounds dimensions {dims}: a dimension is negative")
    dt = _np_dtype(t.data_type)
    if dt is None:
        raise Fail(f"{what}: unknown tensor data type {t.data_type}")
    count = math.prod(dims)
    nbytes = (count + 1) // 2 if t.data_type in _FOUR_BIT else count * (8 if dt == object else dt.itemsize)
    if nbytes > memory.limit():
        raise Fail(f"{what}: dims {dims} need {nbytes} bytes, over jitort's limit of {memory.limit()} bytes "
                   f"per tensor (session config entry {memory.CONFIG_KEY})")
    if t.HasField("raw_data") and len(t.raw_data) != nbytes:
        raise Fail(f"{what}: raw_data size ({len(t.raw_data)} bytes) does not match expected size from shape "
                   f"and data type ({nbytes} bytes)")
    try:
        a = numpy_helper.to_array(t)
    except Exception as e:  # noqa: BLE001 - a malformed tensor is the model's error, named
        m = _RESHAPE.search(str(e))
        if m:
            raise Fail(f"{what}: data field count ({m.group(1)}) does not match expected count from shape "
                       f"({count})") from None
        raise Fail(f"{what}: cannot decode its data ({type(e).__name__}: {e})") from None
    return contiguous(a)


_FOUR_BIT = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4, *(
    [onnx.TensorProto.FLOAT4E2M1] if hasattr(onnx.TensorProto, "FLOAT4E2M1") else [])}
_RESHAPE = re.compile(r"cannot reshape array of size (\d+)")


def _sparse_to_array(t: onnx.SparseTensorProto) -> np.ndarray:
    """A sparse initializer densified, its dense size checked against the tensor limit first."""
    what = f"Sparse initializer '{comment_safe(t.values.name)}'"
    dims = [int(d) for d in t.dims]
    dt = _np_dtype(t.values.data_type)
    if any(d < 0 for d in dims) or dt is None:
        raise Fail(f"{what}: dims {dims} or data type {t.values.data_type} is invalid")
    memory.check(what, dims, dt)
    to_array(t.values)
    try:
        return numpy_helper.to_array(t)
    except Exception as e:  # noqa: BLE001 - a malformed tensor is the model's error, named
        raise Fail(f"{what}: cannot decode it ({type(e).__name__}: {e})") from None


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
        a = _sparse_to_array(t)  # densified
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
    from jitort.functions import expand_functions  # function ops without a kernel -> their bodies
    for i, (n, version) in enumerate(expand_functions(g, opsets, values)):
        domain = "" if n.domain == "ai.onnx" else n.domain
        validate.node(n, domain, opsets)
        attrs = {a.name: _attr_value(a, opsets, values) for a in n.attribute}
        name = n.name or f"{n.op_type}_{i}"
        if n.op_type == "Constant" and domain == "":
            out = n.output[0]
            a = constant_value(attrs, name)
            values[out] = Value(out, TensorType(a.dtype, tuple(a.shape)), a)
            continue
        _fill_defaults(n.op_type, domain, version, attrs)
        nodes.append(Node(n.op_type, list(n.input), list(n.output), attrs, name, domain, version))
    return Graph(toposort(nodes), inputs, [o.name for o in g.output], values, dict(opsets), g.name)


def constant_value(attrs: dict[str, Any], node_name: str) -> np.ndarray:
    if "value" in attrs:
        return contiguous(attrs["value"])
    if "value_float" in attrs:
        return np.array(attrs["value_float"], np.float32)
    if "value_floats" in attrs:
        return np.array(attrs["value_floats"], np.float32)
    if "value_int" in attrs:
        return np.array(attrs["value_int"], np.int64)
    if "value_ints" in attrs:
        return np.array(attrs["value_ints"], np.int64)
    if "value_string" in attrs:
        return np.array(attrs["value_string"], object)
    if "value_strings" in attrs:
        return np.array(attrs["value_strings"], object)
    if "sparse_value" in attrs:
        return contiguous(attrs["sparse_value"])
    raise InvalidGraph(f"Constant node '{node_name}' has no value attribute")


def _attr_value(a: AttributeProto, opsets: dict[str, int], values: dict[str, Value]) -> Any:
    if a.ref_attr_name:
        raise InvalidGraph(f"attribute '{a.name}' refers to function attribute '{a.ref_attr_name}' outside a function")
    if a.type == AttributeProto.GRAPH:
        return import_graph(a.g, opsets, {k: v.type for k, v in values.items()})
    if a.type == AttributeProto.GRAPHS:
        return [import_graph(x, opsets, {k: v.type for k, v in values.items()}) for x in a.graphs]
    if a.type == AttributeProto.TENSOR:
        return to_array(a.t)
    if a.type == AttributeProto.SPARSE_TENSOR:
        return contiguous(_sparse_to_array(a.sparse_tensor))
    if a.type == AttributeProto.TENSORS:
        return [to_array(t) for t in a.tensors]
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):  # string attributes are bytes in the proto: not always valid UTF-8
        return v.decode("utf-8", "backslashreplace")
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [x.decode("utf-8", "backslashreplace") for x in v]
    if a.type == AttributeProto.TYPE_PROTO:
        return v
    if isinstance(v, list):
        return list(v)
    return v


def _fill_defaults(op_type: str, domain: str, version: int, attrs: dict[str, Any]) -> None:
    """Attribute defaults come from the schema, never retyped in op code."""
    try:
        schema = onnx.defs.get_schema(op_type, version, domain)
    except Exception:
        return
    for name, a in schema.attributes.items():
        if name not in attrs and a.default_value is not None and a.default_value.type != 0:
            attrs[name] = _attr_value(a.default_value, {}, {})

