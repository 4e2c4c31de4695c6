"""Feeds of ONNX map types: a Python dict for a ``map(K, V)`` graph input, as onnxruntime's Python
API takes it (``onnxruntime_pybind_mlvalue.cc``, ``CreateMapMLValue_*``).

onnxruntime decides the map's type from the dict's *first* key: a Python int or any other number
(numpy integers included) makes ``map(int64, float)``, a str makes ``map(string, float)``; values
always go through its float getter (a Python float, or any number, rounded to float32). Then:

* a later int64 key that is not an integer (``operator.index``) or does not fit int64, or any value
  that is not a number -> ``RuntimeError("Unexpected key/value type  <class ...>, it cannot be
  linked to C type int64_t|string for input 'X'.")`` (onnxruntime names the *key's* C type in the
  value message too; the text is kept);
* later keys of a string map are ``str()``-ed, as its string getter does;
* an empty dict -> ``RuntimeError("Size of dictionary is empty, unable to run the prediction.")``;
* a first key that is neither -> ``RuntimeError("Key type must be int or string (not ...)")``;
* a map built fine but of another type than the input's -> ``InvalidArgument("Unexpected input
  data type. Actual: ((map(string,tensor(float)))) , expected: ((map(int64,tensor(float)))))")``.

So onnxruntime's Python API can feed only ``map(int64, float)`` and ``map(string, float)``. jitort
also feeds the other map types ai.onnx.ml ops take (``map(int64, string)``, ``map(int64, double)``,
``map(string, int64)``, ``map(string, double)``, where onnxruntime always raises): a dict whose keys
are of the declared kind and whose values all convert to the declared value type (str for string,
an integer for int64, a number for double) is taken; any other dict raises exactly what
onnxruntime raises for it.

The plan receives a plain dict ordered by key (onnxruntime's ``std::map`` order; Python's str order
is UTF-8 byte order) with Python values: int keys, str keys; float values already rounded to
float32, double values as floats, int64 values as ints, strings as str. A map output is returned to
the caller in the same form, as onnxruntime returns one.
"""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from jitort.dtypes import type_proto_string, type_string
from jitort.errors import InvalidArgument
from jitort.onnx_proto import messages

if TYPE_CHECKING:
    import onnx

__all__ = ["map_feed", "is_map_type"]

_P = messages().TensorProto  # onnx's class, without importing onnx on every session's path
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def is_map_type(tp: onnx.TypeProto) -> bool:
    """Whether ``tp`` is a map type, or a sequence/optional holding one (fed with dicts)."""
    if tp.HasField("map_type"):
        return True
    if tp.HasField("sequence_type"):
        return is_map_type(tp.sequence_type.elem_type)
    if tp.HasField("optional_type"):
        return is_map_type(tp.optional_type.elem_type)
    return False


def _is_number(v: Any) -> bool:
    """CPython's ``PyNumber_Check``: the type converts to a number (str and bytes do not)."""
    t = type(v)
    return isinstance(v, complex) or any(hasattr(t, m) for m in ("__index__", "__int__", "__float__"))


def _int64(v: Any) -> int | None:
    """``PyLong_AsLong``: an integer (through ``__index__``) that fits int64, else None."""
    try:
        i = operator.index(v)
    except TypeError:
        return None
    return i if _INT64_MIN <= i <= _INT64_MAX else None


def _float32(v: Any) -> float | None:
    """onnxruntime's float getter: a float, or any number converted with ``float()``, rounded to
    float32; None for anything else."""
    if isinstance(v, (str, bytes)) or not _is_number(v):
        return None
    try:
        d = float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    with np.errstate(over="ignore"):
        return float(np.float32(d))


def _float64(v: Any) -> float | None:
    if isinstance(v, (str, bytes)) or not _is_number(v):
        return None
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return None


def _string(v: Any) -> str | None:
    return v if isinstance(v, str) else None


_VALUE_GETTERS: dict[int, Callable[[Any], Any]] = {_P.FLOAT: _float32, _P.DOUBLE: _float64, _P.INT64: _int64,
                                                   _P.STRING: _string}


def _actual(x: Any) -> str:
    """The ONNX type string of a fed value that is not a dict (for the type-mismatch message)."""
    if isinstance(x, np.ndarray):
        return f"tensor({type_string(x.dtype)})"
    if isinstance(x, (list, tuple)):
        return "seq"
    return type(x).__name__


def map_feed(value: Any, tp: onnx.TypeProto, name: str) -> dict:
    """The feed for graph input ``name`` of map type ``tp``: a dict ordered by key with Python
    values of the declared types (see the module doc). Raises what onnxruntime raises for a feed
    it refuses: RuntimeError for keys/values it cannot convert, InvalidArgument for a map of
    another type or a value that is not a dict."""
    declared = type_proto_string(tp)
    if not isinstance(value, dict):
        raise InvalidArgument(f"Unexpected input data type. Actual: ({_actual(value)}) , expected: ({declared}) "
                              f"for input '{name}'")
    if not value:
        raise RuntimeError("Size of dictionary is empty, unable to run the prediction.")
    k0 = next(iter(value))
    if isinstance(k0, int) or (_is_number(k0) and not isinstance(k0, str)):
        key_type, key_of, c_key = _P.INT64, _int64, "int64_t"
    elif isinstance(k0, str):
        key_type, key_of, c_key = _P.STRING, str, "string"
    else:
        raise RuntimeError(f"Key type must be int or string (not {type(k0)}) for input '{name}'.")
    want_key = tp.map_type.key_type
    vt = tp.map_type.value_type
    want_value = vt.tensor_type.elem_type if vt.HasField("tensor_type") else 0
    if want_key == key_type and want_value != _P.FLOAT and want_value in _VALUE_GETTERS:
        got = _convert(value, key_of, _VALUE_GETTERS[want_value])  # jitort's extension (module doc)
        if got is not None:
            return got
    out: dict[Any, Any] = {}
    for k, v in value.items():
        ck = key_of(k)
        if ck is None:
            raise RuntimeError(f"Unexpected key type  {type(k)}, it cannot be linked to C type {c_key} "
                               f"for input '{name}'.")
        cv = _float32(v)
        if cv is None:
            raise RuntimeError(f"Unexpected value type  {type(v)}, it cannot be linked to C type {c_key} "
                               f"for input '{name}'.")
        out[ck] = cv
    if (key_type, _P.FLOAT) != (want_key, want_value):
        actual = "map(int64,tensor(float))" if key_type == _P.INT64 else "map(string,tensor(float))"
        raise InvalidArgument(f"Unexpected input data type. Actual: (({actual})) , expected: (({declared}))")
    return dict(sorted(out.items()))


def _convert(value: dict, key_of: Callable[[Any], Any], value_of: Callable[[Any], Any]) -> dict | None:
    out = {}
    for k, v in value.items():
        ck, cv = key_of(k), value_of(v)
        if ck is None or cv is None:
            return None
        out[ck] = cv
    return dict(sorted(out.items()))
