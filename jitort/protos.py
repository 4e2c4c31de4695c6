"""ONNX protos -> Python values: tensor data, value types, attribute values and schema defaults.

Below the frontend and the kernels, which both read protos (an op's ``infer`` types its outputs from
TypeProtos; a contrib op fills its schema's defaults). Subgraph attributes are not handled here: a
GRAPH attribute is imported by ``jitort.frontend.importer.attr_value`` into an IR graph.
"""
from __future__ import annotations

import itertools
import math
import re
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, TypeProto, helper, numpy_helper

from jitort import memory
from jitort.arrays import contiguous
from jitort.codegen.source import comment_safe
from jitort.errors import Fail, InvalidGraph
from jitort.ir import Dim, TensorType

_unknown_dims = itertools.count()


def unknown_dim() -> str:
    """A fresh name for a dim nobody named: ``?<n>``, distinct from every other (and from names
    models use, which cannot start with ``?`` in a way jitort reads as its own)."""
    return f"?{next(_unknown_dims)}"


class SubgraphAttribute(InvalidGraph):
    """A GRAPH/GRAPHS attribute met where only plain values are read (see the module docstring)."""


def np_dtype(elem_type: int) -> np.dtype | None:
    if elem_type == 0:
        return None
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        return None


def tensor_type(tp: onnx.TypeProto) -> TensorType:
    """A TypeProto as the IR's TensorType (unnamed dims get fresh ``?<n>`` names)."""
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
                dims.append(unknown_dim())
        shape = tuple(dims)
    return TensorType(np_dtype(tt.elem_type), shape)


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
    dt = np_dtype(t.data_type)
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


def sparse_to_array(t: onnx.SparseTensorProto) -> np.ndarray:
    """A sparse initializer densified, its dense size checked against the tensor limit first."""
    what = f"Sparse initializer '{comment_safe(t.values.name)}'"
    dims = [int(d) for d in t.dims]
    dt = np_dtype(t.values.data_type)
    if any(d < 0 for d in dims) or dt is None:
        raise Fail(f"{what}: dims {dims} or data type {t.values.data_type} is invalid")
    memory.check(what, dims, dt)
    to_array(t.values)
    try:
        return numpy_helper.to_array(t)
    except Exception as e:  # noqa: BLE001 - a malformed tensor is the model's error, named
        raise Fail(f"{what}: cannot decode it ({type(e).__name__}: {e})") from None


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


def attr_value(a: AttributeProto) -> Any:
    """A plain attribute's value: arrays for tensors, str for strings (undecodable bytes escaped),
    lists for repeated fields. Raises ``SubgraphAttribute`` for GRAPH/GRAPHS."""
    if a.ref_attr_name:
        raise InvalidGraph(f"attribute '{a.name}' refers to function attribute '{a.ref_attr_name}' outside a function")
    if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
        raise SubgraphAttribute(f"attribute '{a.name}' is a graph")
    if a.type == AttributeProto.TENSOR:
        return to_array(a.t)
    if a.type == AttributeProto.SPARSE_TENSOR:
        return contiguous(sparse_to_array(a.sparse_tensor))
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


def fill_defaults(op_type: str, domain: str, version: int, attrs: dict[str, Any]) -> None:
    """Attribute defaults come from the schema, never retyped in op code."""
    try:
        schema = onnx.defs.get_schema(op_type, version, domain)
    except Exception:
        return
    for name, a in schema.attributes.items():
        if name not in attrs and a.default_value is not None and a.default_value.type != 0:
            attrs[name] = attr_value(a.default_value)


def type_proto(t: Any) -> TypeProto:
    """TypeProto of an importer TensorType (unknown dims become unnamed)."""
    if t is None or t.dtype is None:
        return TypeProto()
    try:
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype))
    except Exception:
        return TypeProto()
    # Symbolic names travel (onnx's inference then relates outputs to inputs); jitort's own
    # placeholders for unknown dims do not: they promise nothing.
    shape = None if t.shape is None else [d if isinstance(d, int) or not placeholder_dim(d) else None
                                          for d in t.shape]
    return helper.make_tensor_type_proto(elem, shape)


def placeholder_dim(d: Any) -> bool:
    """Is ``d`` a name jitort or onnx made up for an unknown dim (``?<n>``, ``unk__<n>``)?"""
    return isinstance(d, str) and (d.startswith("?") or d.startswith("unk__"))


MAX_DATA_ELEMENTS = 4096  # constant values handed to onnx's inference to sharpen it (shape arithmetic)


def unknown(t: Any) -> bool:
    """Is a TensorType missing its dtype, its shape or any dim's size or name?"""
    return t is None or t.dtype is None or t.shape is None or any(placeholder_dim(d) for d in t.shape)
