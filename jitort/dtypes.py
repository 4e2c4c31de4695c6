"""Element-type tables: ONNX ``TensorProto`` element type <-> numpy dtype <-> ORT type string.

Every place in jitort that turns one spelling of a tensor element type into another goes through
this module, so the three spellings can never drift apart:

* ONNX element type: the ``TensorProto.DataType`` integer (``1`` is FLOAT).
* numpy dtype: ``np.dtype('float32')``; strings are ``object`` arrays, as onnxruntime returns them.
* ORT type string: ``'tensor(float)'``, what ``NodeArg.type`` and ``OrtValue.data_type()`` report.

bfloat16 and the 8-bit floats use ``ml_dtypes`` (a dependency of ``onnx``), imported only when a
lookup first needs one of them (it is slow to import, and a float32 model never does); when it is
missing those types are simply absent from the tables and :func:`np_dtype` reports them as
unsupported.
Packed sub-byte types (int4, uint4, int2, uint2, float4, float6) and float8e8m0 are named for error
messages but have no numpy dtype here: ONNX stores two or more of them per byte while numpy
(ml_dtypes) stores one per byte, so a table entry would silently mis-read raw tensor data.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, TypeVar

import numpy as np

from jitort.errors import NotImplemented as OrtNotImplemented

if TYPE_CHECKING:
    import onnx

K = TypeVar("K")
V = TypeVar("V")

__all__ = [
    "ELEM_TYPE_NAMES",
    "NP_FROM_ONNX",
    "ONNX_FROM_NP",
    "STRING",
    "dtype_from_type_string",
    "elem_type_name",
    "np_dtype",
    "onnx_elem_type",
    "onnx_type_string",
    "resolve_element_type",
    "type_proto_shape",
    "type_proto_string",
    "type_string",
]

STRING = 8  # TensorProto.STRING; named because callers special-case it (object arrays).

# ONNX element type -> the element name used inside ORT type strings ('tensor(<name>)').
# Lower-cased TensorProto names, except FLOAT/DOUBLE, which ORT spells like C.
ELEM_TYPE_NAMES: dict[int, str] = {
    1: "float",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "double",
    12: "uint32",
    13: "uint64",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
    17: "float8e4m3fn",
    18: "float8e4m3fnuz",
    19: "float8e5m2",
    20: "float8e5m2fnuz",
    21: "uint4",
    22: "int4",
    23: "float4e2m1",
    24: "float8e8m0",
    25: "uint2",
    26: "int2",
    27: "float6e2m3",
    28: "float6e3m2",
}


_ML_DTYPES: dict[int, str] = {16: "bfloat16", 17: "float8_e4m3fn", 18: "float8_e4m3fnuz", 19: "float8_e5m2",
                               20: "float8_e5m2fnuz"}
"""The element types whose numpy dtype comes from ``ml_dtypes``: one byte (or two for bfloat16) per
element in both ONNX and ml_dtypes, so raw data maps 1:1."""


class _Table(Mapping[K, V]):
    """A read-only dtype table whose ml_dtypes entries are added on first need.

    ``import ml_dtypes`` costs ~0.6 s of CPU (more than the rest of ``import jitort`` without Numba),
    and a float32 model never needs it: a fresh worker loading an artifact should not pay for it.
    So the tables start with numpy's own types, and :func:`_add_ml_dtypes` fills in the rest when a
    lookup misses on a key that may be one of them (:meth:`_may_need_ml`), or when the table is
    iterated, so a reader always sees the whole table."""

    def __init__(self, base: dict[K, V], may_need_ml: Callable[[Any], bool]) -> None:
        self._d = base
        self._may_need_ml = may_need_ml

    def __getitem__(self, key: K) -> V:
        try:
            return self._d[key]
        except (KeyError, TypeError):
            if not self._may_need_ml(key) or not _add_ml_dtypes():
                raise KeyError(key) from None
            return self._d[key]

    def get(self, key: K, default: Any = None) -> Any:  # Mapping.get, without its try/except per hit
        v = self._d.get(key)
        if v is None:
            try:
                return self[key]
            except KeyError:
                return default
        return v

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[K]:
        _add_ml_dtypes()
        return iter(self._d)

    def __len__(self) -> int:
        _add_ml_dtypes()
        return len(self._d)

    def __repr__(self) -> str:
        return repr(dict(self))


_ml_added: bool | None = None  # None: not tried yet


def _add_ml_dtypes() -> bool:
    """Import ml_dtypes once and add its types to both tables; False when it is missing (then
    those types are simply absent: :func:`np_dtype` reports them as unsupported). Adding twice
    from two threads is harmless: both write the same entries."""
    global _ml_added
    if _ml_added is not None:
        return _ml_added
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - onnx depends on ml_dtypes, so this is rare
        _ml_added = False
        return False
    for elem, name in _ML_DTYPES.items():
        if hasattr(ml_dtypes, name):
            dt = np.dtype(getattr(ml_dtypes, name))
            NP_FROM_ONNX._d[elem] = dt
            ONNX_FROM_NP._d[dt] = elem
    _ml_added = True
    return True


def _ml_dtype(dt: Any) -> bool:
    # An ml_dtypes dtype exists only once ml_dtypes is imported: otherwise nothing to add.
    return "ml_dtypes" in sys.modules and getattr(getattr(dt, "type", None), "__module__", "") == "ml_dtypes"


_NUMPY_TYPES: dict[int, np.dtype] = {
    1: np.dtype(np.float32),
    2: np.dtype(np.uint8),
    3: np.dtype(np.int8),
    4: np.dtype(np.uint16),
    5: np.dtype(np.int16),
    6: np.dtype(np.int32),
    7: np.dtype(np.int64),
    8: np.dtype(object),
    9: np.dtype(np.bool_),
    10: np.dtype(np.float16),
    11: np.dtype(np.float64),
    12: np.dtype(np.uint32),
    13: np.dtype(np.uint64),
    14: np.dtype(np.complex64),
    15: np.dtype(np.complex128),
}

NP_FROM_ONNX: _Table[int, np.dtype] = _Table(dict(_NUMPY_TYPES), lambda elem: elem in _ML_DTYPES)
"""ONNX element type -> numpy dtype, for every element type jitort can hold in memory (the
ml_dtypes ones are imported on first use)."""

ONNX_FROM_NP: _Table[np.dtype, int] = _Table({dt: elem for elem, dt in _NUMPY_TYPES.items()}, _ml_dtype)
"""numpy dtype -> ONNX element type. Fixed-width ``str``/``bytes`` dtypes are handled by
:func:`onnx_elem_type`, since a dict cannot list every ``<U{n}``."""


def elem_type_name(elem_type: int) -> str:
    """The ORT name of an ONNX element type (``1`` -> ``'float'``), or a description if unknown."""
    if elem_type == 0:
        return "undefined"
    return ELEM_TYPE_NAMES.get(elem_type, f"unknown element type {elem_type}")


def np_dtype(onnx_elem_type: int) -> np.dtype:
    """numpy dtype for an ONNX element type.

    Raises:
        jitort.errors.NotImplemented: the type has no in-memory representation in jitort
            (e.g. packed int4), naming the type.
    """
    dt = NP_FROM_ONNX.get(onnx_elem_type)
    if dt is None:
        raise OrtNotImplemented(
            f"jitort does not support tensors of element type {elem_type_name(onnx_elem_type)} "
            f"(TensorProto data type {onnx_elem_type})")
    return dt


def onnx_elem_type(dtype: np.dtype | type) -> int:
    """ONNX element type for a numpy dtype; ``str``, ``bytes`` and ``object`` arrays are STRING.

    Raises:
        jitort.errors.NotImplemented: the dtype has no ONNX equivalent (e.g. ``datetime64``).
    """
    dt = np.dtype(dtype)
    if dt.kind in "USO":
        return STRING
    elem = ONNX_FROM_NP.get(dt.newbyteorder("=") if dt.byteorder == ">" else dt)
    if elem is None:
        raise OrtNotImplemented(f"numpy dtype {dt} has no ONNX tensor element type")
    return elem


def type_string(dtype: np.dtype | type) -> str:
    """ORT type string for a numpy dtype: ``np.float32`` -> ``'tensor(float)'``."""
    return f"tensor({ELEM_TYPE_NAMES[onnx_elem_type(dtype)]})"


onnx_type_string = type_string  # the name the values/IOBinding layer reads best with


def dtype_from_type_string(type_str: str) -> np.dtype:
    """Inverse of :func:`type_string`: ``'tensor(float)'`` -> ``np.dtype('float32')``.

    Raises:
        ValueError: not a ``tensor(...)`` string.
        jitort.errors.NotImplemented: a known ONNX element type jitort cannot hold.
    """
    if not (type_str.startswith("tensor(") and type_str.endswith(")")):
        raise ValueError(f"not a tensor type string: {type_str!r}")
    name = type_str[len("tensor("):-1]
    for elem, elem_name in ELEM_TYPE_NAMES.items():
        if elem_name == name:
            return np_dtype(elem)
    raise ValueError(f"unknown tensor element type in {type_str!r}")


def resolve_element_type(element_type: object) -> np.dtype:
    """Accept what onnxruntime accepts as an ``element_type`` argument: a numpy type or dtype
    (``np.float32``, ``'float32'``) or an ONNX element-type integer (``TensorProto.BFLOAT16``)."""
    # bool is an int subclass, but nobody means TensorProto.FLOAT by passing True.
    if isinstance(element_type, (int, np.integer)) and not isinstance(element_type, (bool, np.bool_)):
        return np_dtype(int(element_type))
    try:
        return np.dtype(element_type)  # type: ignore[call-overload]
    except TypeError:  # 'bfloat16' and the float8 names are known to numpy once ml_dtypes is imported
        if not isinstance(element_type, str) or not _add_ml_dtypes():
            raise
        return np.dtype(element_type)


def type_proto_string(tp: onnx.TypeProto) -> str:
    """ORT's string for an ONNX type: ``'tensor(float)'``, ``'seq(tensor(int64))'``,
    ``'map(int64,tensor(float))'``, ``'optional(tensor(float))'``."""
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({elem_type_name(tp.tensor_type.elem_type)})"
    if kind == "sparse_tensor_type":
        return f"sparse_tensor({elem_type_name(tp.sparse_tensor_type.elem_type)})"
    if kind == "sequence_type":
        return f"seq({type_proto_string(tp.sequence_type.elem_type)})"
    if kind == "map_type":
        key = elem_type_name(tp.map_type.key_type)
        return f"map({key},{type_proto_string(tp.map_type.value_type)})"
    if kind == "optional_type":
        return f"optional({type_proto_string(tp.optional_type.elem_type)})"
    return "undefined"


def type_proto_shape(tp: onnx.TypeProto) -> list[int | str | None]:
    """ORT's ``NodeArg.shape`` for an ONNX type: ints for fixed dims, the symbol for named dims,
    ``None`` for anonymous ones; ``[]`` for unknown rank and for sequences/maps (as ORT reports)."""
    kind = tp.WhichOneof("value")
    if kind == "optional_type":
        return type_proto_shape(tp.optional_type.elem_type)
    if kind not in ("tensor_type", "sparse_tensor_type"):
        return []
    t = tp.tensor_type if kind == "tensor_type" else tp.sparse_tensor_type
    if not t.HasField("shape"):
        return []
    dims: list[int | str | None] = []
    for d in t.shape.dim:
        which = d.WhichOneof("value")
        dims.append(d.dim_value if which == "dim_value" else d.dim_param if which == "dim_param" else None)
    return dims
