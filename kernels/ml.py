"""ai.onnx.ml ops: LabelEncoder, Binarizer, ArrayFeatureExtractor, ZipMap (tree ensembles: ml_trees.py).

LabelEncoder follows onnxruntime 1.32 per opset (1; 2-3; 4+): which key/value attributes it reads,
which duplicate key wins, whether NaN matches a NaN key, where the default comes from. Its lookup is
a Python dict built once per node.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from jitort.arrays import contiguous
from jitort.errors import Fail, InvalidArgument
from jitort.ir import Graph, Node
from jitort.kernels.registry import Call, Ref, op

ML = "ai.onnx.ml"


def encode(x: np.ndarray, table: dict, nan_value: Any, default: Any, out: np.dtype) -> np.ndarray:
    """Each element of x looked up in ``table`` (NaN elements give ``nan_value`` unless it is None:
    the default), else ``default``."""
    res = []
    for e in x.reshape(-1).tolist():
        if nan_value is not None and e != e:
            res.append(nan_value)
        else:
            res.append(table.get(e, default))
    return contiguous(np.array(res, dtype=out).reshape(x.shape))


@dataclass(frozen=True)
class Encoder:
    """A LabelEncoder node's lookup, built once: keys in the input's type (Python values)."""

    table: dict
    nan_value: Any
    default: Any
    out: np.dtype


def _tensor(t: Any) -> np.ndarray | None:
    if t is None:
        return None
    if isinstance(t, np.ndarray):
        return t
    from onnx import numpy_helper  # not at the top: onnx imports ml_dtypes (~0.7 s), for models that need it only
    return numpy_helper.to_array(t)


def _from_lists(a: dict[str, Any], prefix: str, where: str) -> tuple[list, np.dtype] | None:
    """The one ``{prefix}_floats|int64s|strings`` attribute that is set, with its element type."""
    found = [(a[prefix + sfx], dt) for sfx, dt in _LISTS if a.get(prefix + sfx)]
    if len(found) > 1:
        raise Fail(f"{where}: more than one {prefix}_* attribute is set")
    return (list(found[0][0]), found[0][1]) if found else None


_LISTS = (("_floats", np.dtype(np.float32)), ("_int64s", np.dtype(np.int64)), ("_strings", np.dtype(object)))
_LIST_DEFAULTS = {np.dtype(np.float32): "default_float", np.dtype(np.int64): "default_int64",
                  np.dtype(object): "default_string"}


def _build(keys: list, vals: np.ndarray, key_dt: np.dtype, default: Any, nan_keys: bool, where: str) -> Encoder:
    if len(keys) != len(vals):
        raise Fail(f"{where}: the number of keys {len(keys)} and the number of values {len(vals)} differ")
    if key_dt.kind == "f":
        keys = np.asarray(keys, key_dt).tolist()
    table: dict[Any, Any] = {}
    nan_value = None
    for k, v in zip(keys, vals.tolist()):
        if isinstance(k, float) and k != k:
            if nan_keys and nan_value is None:
                nan_value = v
        else:
            table.setdefault(k, v)  # onnxruntime emplaces: the first of duplicate keys wins
    return Encoder(table, nan_value, default, vals.dtype)


def encoder_v2(a: dict[str, Any], where: str, nan_keys: bool = False) -> Encoder:
    """Opsets 2-3: list attributes only, the default from default_float/int64/string; a NaN input
    never matches (onnxruntime 1.32's plain hash map)."""
    keys = _from_lists(a, "keys", where)
    vals = _from_lists(a, "values", where)
    if keys is None or vals is None:
        raise Fail(f"{where}: a keys_* and a values_* attribute are required")
    out = vals[1]
    return _build(keys[0], np.array(vals[0], out), keys[1], a.get(_LIST_DEFAULTS[out]), nan_keys, where)


def encoder_v4(a: dict[str, Any], where: str) -> Encoder:
    """Opset 4: keys/values from the list attributes or ``keys_tensor`` / ``values_tensor`` (one of
    each), the default from ``default_tensor`` (one element of the values' type), else the
    default_* attribute of the values' type (float, int64, string), else -0.0 / -1 / "_Unused";
    a NaN key matches NaN inputs."""
    keys, vals = _from_lists(a, "keys", where), _from_lists(a, "values", where)
    kt, vt = _tensor(a.get("keys_tensor")), _tensor(a.get("values_tensor"))
    if (keys is None) == (kt is None) or (vals is None) == (vt is None):
        raise Fail(f"{where}: one and only one keys_* and one values_* attribute must be set")
    k_list, k_dt = keys if keys is not None else (kt.reshape(-1).tolist(), kt.dtype)
    v_arr = np.array(vals[0], vals[1]) if vals is not None else vt.reshape(-1)
    out = v_arr.dtype
    dt = _tensor(a.get("default_tensor"))
    if dt is not None:
        if dt.dtype != out:
            raise Fail(f"{where}: the default tensor's type {dt.dtype} differs from the values' type {out}")
        if dt.ndim != 1 or dt.size != 1:
            raise Fail(f"{where}: the default tensor must be a one-element 1-D tensor, got shape {list(dt.shape)}")
        default = dt.tolist()[0]
    elif out in _LIST_DEFAULTS and a.get(_LIST_DEFAULTS[out]) is not None:
        default = a[_LIST_DEFAULTS[out]]
    else:
        default = "_Unused" if out == object else (-1 if out.kind in "iu" else -0.0)
    return _build(k_list, v_arr, k_dt, default, True, where)


def encoder_v1(a: dict[str, Any], x_is_string: bool) -> Encoder:
    """Opset 1: classes_strings; string -> int64 takes the *last* index of a repeated class (onnxruntime
    assigns its map in order), int64 -> string the class at that index."""
    classes = list(a.get("classes_strings") or [])
    if x_is_string:
        return Encoder({c: i for i, c in enumerate(classes)}, None, a.get("default_int64", -1), np.dtype(np.int64))
    return Encoder(dict(enumerate(classes)), None, a.get("default_string", "_Unused"), np.dtype(object))


def run_encoder(x: np.ndarray, e: Encoder) -> np.ndarray:
    return encode(x, e.table, e.nan_value, e.default, e.out)


def _where(node: Node) -> str:
    return f"LabelEncoder node '{node.name}'"


def _is_string_input(node: Node, g: Graph) -> bool:
    dt = g.type_of(node.inputs[0]).dtype
    return dt is not None and np.dtype(dt) == object


@op("LabelEncoder", since=1, domain=ML,
    lower=lambda n, g: Call(run_encoder, [Ref(n.inputs[0]), encoder_v1(n.attrs, _is_string_input(n, g))]))
def LabelEncoder1(x: np.ndarray, **attrs: Any) -> np.ndarray:
    return run_encoder(x, encoder_v1(attrs, x.dtype == object))


@op("LabelEncoder", since=2, domain=ML, lower=lambda n, g: Call(run_encoder, [Ref(n.inputs[0]),
                                                                             encoder_v2(n.attrs, _where(n))]))
def LabelEncoder2(x: np.ndarray, **attrs: Any) -> np.ndarray:
    return run_encoder(x, encoder_v2(attrs, "LabelEncoder"))


@op("LabelEncoder", since=4, domain=ML, lower=lambda n, g: Call(run_encoder, [Ref(n.inputs[0]),
                                                                             encoder_v4(n.attrs, _where(n))]))
def LabelEncoder(x: np.ndarray, **attrs: Any) -> np.ndarray:
    return run_encoder(x, encoder_v4(attrs, "LabelEncoder"))


@op("Binarizer", since=1, domain=ML)
def Binarizer(x: np.ndarray, *, threshold: float = 0.0) -> np.ndarray:
    return contiguous((x > x.dtype.type(threshold)).astype(x.dtype))


@op("ArrayFeatureExtractor", since=1, domain=ML)
def ArrayFeatureExtractor(x: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Select along the last axis; a 1-D input gives a [1, n] result (as onnxruntime does)."""
    idx = indices.reshape(-1).astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= x.shape[-1]):
        raise InvalidArgument(f"ArrayFeatureExtractor: index out of range for last dim {x.shape[-1]}")
    y = np.take(x, idx, axis=-1)
    return contiguous(y.reshape(1, -1) if x.ndim == 1 else y)


@op("ZipMap", since=1, domain=ML, tensor_outputs=False)  # a list of dicts: nothing constant folding stores
def ZipMap(x: np.ndarray, *, classlabels_int64s: list | None = None,
           classlabels_strings: list | None = None) -> list:
    """[N, C] scores -> a list of N dicts label -> score (Python ints or strs to Python floats, keys in
    sorted order), as onnxruntime's Python API returns a sequence of maps."""
    labels = list(classlabels_strings or []) or list(classlabels_int64s or [])
    if classlabels_strings and classlabels_int64s:
        raise InvalidArgument("ZipMap: both classlabels_strings and classlabels_int64s are set")
    rows = x.reshape(1, -1) if x.ndim == 1 else x
    if rows.ndim != 2 or rows.shape[1] != len(labels):
        raise InvalidArgument(f"ZipMap: input shape {list(x.shape)} does not match {len(labels)} class labels")
    order = sorted(range(len(labels)), key=lambda k: labels[k])  # onnxruntime's maps are ordered by key
    keys = [labels[k] for k in order]
    return [dict(zip(keys, r)) for r in rows[:, order].astype(np.float64).tolist()]
