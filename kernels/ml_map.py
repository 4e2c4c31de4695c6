"""ai.onnx.ml ops on map inputs: CastMap and DictVectorizer (opset 1, the only versions).

A map arrives as jitort.feeds.map_feed gives it: a dict ordered by key (onnxruntime's std::map order)
with Python values already in the declared value type (floats rounded to float32). Both ops make one
row, ``[1, n]``, in onnxruntime 1.32's arithmetic (``cast_map.cc``, ``dictvectorizer.h``):

* CastMap: DENSE writes the values in key order; SPARSE writes value k at column k of ``max_map``
  columns (keys >= max_map dropped; a negative smallest key is an error) and pads with 0 / ``"0.f"``.
  float -> string is C's ``%f`` (``std::to_string``); float -> int64 truncates, with x86's
  INT64_MIN for NaN and out-of-range values; string -> float / int64 is ``std::stof`` / ``std::stoll``
  (leading blanks, the longest numeric prefix, an error when there is none or it overflows).
* DictVectorizer: one column per vocabulary entry (duplicates repeat), the key's value or 0 / "".
"""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from jitort.errors import Fail
from jitort.ir import Graph, Node, TensorType
from jitort.kernels.registry import Call, Ref, op

ML = "ai.onnx.ml"
_CASTS = {"TO_FLOAT": np.dtype(np.float32), "TO_STRING": np.dtype(object), "TO_INT64": np.dtype(np.int64)}
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_SPACE = " \t\n\v\f\r"
# strtof's decimal and hexadecimal forms, inf/infinity and nan(...), case-insensitive
_STOF = re.compile(r"[+-]?(?:0x(?:[0-9a-f]+\.?[0-9a-f]*|\.[0-9a-f]+)(?:p[+-]?\d+)?|(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?"
                   r"|inf(?:inity)?|nan(?:\([0-9a-z_]*\))?)", re.IGNORECASE)
_STOLL = re.compile(r"[+-]?\d+")


def _stof(s: str) -> float:
    m = _STOF.match(s.lstrip(_SPACE))
    if m is None:
        raise Fail("stof")
    t = m.group(0).lower()
    if "nan" in t:
        return -math.nan if t.startswith("-") else math.nan
    v = float.fromhex(t) if "0x" in t else float(t)
    with np.errstate(over="ignore", under="ignore"):
        f = np.float32(v)
    if math.isinf(f) and not math.isinf(v):
        raise Fail("stof")  # std::out_of_range
    return float(f)


def _stoll(s: str) -> int:
    m = _STOLL.match(s.lstrip(_SPACE))
    if m is None:
        raise Fail("stoll")
    v = int(m.group(0))
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise Fail("stoll")
    return v


def _to_string(f: float) -> str:
    if math.isnan(f):
        return "-nan" if math.copysign(1.0, f) < 0 else "nan"
    return "%f" % f


def _to_int64(f: float) -> int:
    if math.isnan(f) or not -9.223372036854775808e18 <= f < 9.223372036854775808e18:
        return _INT64_MIN  # cvttss2si's "integer indefinite"
    return int(f)


def _cast(v: Any, to: np.dtype) -> Any:
    if isinstance(v, str):
        return v if to == object else (_stof(v) if to == np.float32 else _stoll(v))
    return _to_string(v) if to == object else (v if to == np.float32 else _to_int64(v))


def cast_map(x: dict, to: np.dtype, sparse: bool, max_map: int) -> np.ndarray:
    """One CastMap row (see the module doc)."""
    pad: Any = "0.f" if to == object else 0
    if not sparse:
        return np.array([[_cast(v, to) for v in x.values()]], dtype=to).reshape(1, len(x))
    first = next(iter(x), 0)
    if first < 0:
        raise Fail("Negative index values are not permitted. First entry in map has index value of "
                   f"{first}")
    row = [pad] * max_map
    for k, v in x.items():
        if k >= max_map:
            break
        row[k] = _cast(v, to)
    return np.array([row], dtype=to).reshape(1, max_map)


def _cast_map_params(a: dict[str, Any], where: str) -> tuple[np.dtype, bool, int]:
    cast_to = a.get("cast_to") or "TO_FLOAT"
    form = a.get("map_form") or "DENSE"
    max_map = int(a.get("max_map", 1))
    if cast_to not in _CASTS:
        raise Fail(f"{where}: Invalid CAST_TO value of {cast_to} Expected TO_FLOAT, TO_STRING or TO_INT64")
    if form not in ("DENSE", "SPARSE"):
        raise Fail(f"{where}: Invalid PACK_MAP value of {form} Expected DENSE or SPARSE")
    if form == "SPARSE" and max_map <= 0:
        raise Fail(f"{where}: max_map must be > 0 if map_form is SPARSE")
    return _CASTS[cast_to], form == "SPARSE", max_map


def _lower_cast_map(node: Node, g: Graph) -> Call:
    to, sparse, max_map = _cast_map_params(node.attrs, f"CastMap node '{node.name}'")
    return Call(cast_map, [Ref(node.inputs[0]), to, sparse, max_map])


@op("CastMap", since=1, domain=ML, lower=_lower_cast_map,
    infer=lambda n, ins: [TensorType(_CASTS.get(n.attrs.get("cast_to") or "TO_FLOAT"))])
def CastMap(x: dict, *, cast_to: str = "TO_FLOAT", map_form: str = "DENSE", max_map: int = 1) -> np.ndarray:
    return cast_map(x, *_cast_map_params(dict(cast_to=cast_to, map_form=map_form, max_map=max_map), "CastMap"))


def dict_vectorize(x: dict, strings: list | None, ints: list | None, out: np.dtype) -> np.ndarray:
    """One DictVectorizer row: the vocabulary of the map's key type picks the columns."""
    string_keys = isinstance(next(iter(x)), str) if x else strings is not None
    vocab = strings if string_keys else ints
    if vocab is None:
        kind = "string_vocabulary" if string_keys else "int64_vocabulary"
        raise Fail(f"DictVectorizer: the map has {'string' if string_keys else 'int64'} keys but the node has no "
                   f"{kind}")
    zero: Any = "" if out == object else 0
    return np.array([[x.get(k, zero) for k in vocab]], dtype=out).reshape(1, len(vocab))


def _lower_dict_vectorizer(node: Node, g: Graph) -> Call:
    strings, ints = node.attrs.get("string_vocabulary"), node.attrs.get("int64_vocabulary")
    if not strings and not ints:
        raise Fail(f"DictVectorizer node '{node.name}': neither string_vocabulary nor int64_vocabulary is set")
    out = g.type_of(node.outputs[0]).dtype
    if out is None:
        raise Fail(f"DictVectorizer node '{node.name}': the output element type is unknown")
    return Call(dict_vectorize, [Ref(node.inputs[0]), list(strings) if strings else None,
                                 [int(k) for k in ints] if ints else None, np.dtype(out)])


@op("DictVectorizer", since=1, domain=ML, lower=_lower_dict_vectorizer)
def DictVectorizer(x: dict, *, int64_vocabulary: list | None = None, string_vocabulary: list | None = None,
                   _dtypes: Any = None) -> np.ndarray:
    out = np.dtype(_dtypes[0]) if _dtypes else np.dtype(np.float32)
    return dict_vectorize(x, list(string_vocabulary) if string_vocabulary else None,
                          [int(k) for k in int64_vocabulary] if int64_vocabulary else None, out)
