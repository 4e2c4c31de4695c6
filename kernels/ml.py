"""ai.onnx.ml ops: LabelEncoder, Binarizer, ArrayFeatureExtractor (tree ensembles: ml_trees.py).

Lookups are numpy.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from jitort.errors import InvalidArgument
from jitort.kernels.registry import op
from jitort.onnx_import import contiguous

ML = "ai.onnx.ml"


def _lookup(x: np.ndarray, keys: list, values: np.ndarray, default: Any, out: np.dtype) -> np.ndarray:
    table: dict[Any, Any] = {}
    nan_value = None
    for k, v in zip(keys, values):
        if isinstance(k, float) and np.isnan(k):
            nan_value = v
        else:
            table.setdefault(k, v)
    flat = x.reshape(-1)
    res = []
    for e in flat.tolist():
        if nan_value is not None and isinstance(e, float) and np.isnan(e):
            res.append(nan_value)
        else:
            res.append(table.get(e, default))
    return contiguous(np.array(res, dtype=out).reshape(x.shape))


@op("LabelEncoder", since=1, domain=ML)
def LabelEncoder1(x: np.ndarray, *, classes_strings: list | None = None, default_int64: int = -1,
                  default_string: str = "_Unused") -> np.ndarray:
    classes = list(classes_strings or [])
    if x.dtype == object:
        return _lookup(x, classes, np.arange(len(classes), dtype=np.int64), default_int64, np.dtype(np.int64))
    return _lookup(x.astype(np.int64), list(range(len(classes))), np.array(classes, object), default_string,
                   np.dtype(object))


@op("LabelEncoder", since=2, domain=ML)
def LabelEncoder(x: np.ndarray, *, keys_floats: list | None = None, keys_int64s: list | None = None,
                 keys_strings: list | None = None, keys_tensor: np.ndarray | None = None,
                 values_floats: list | None = None, values_int64s: list | None = None,
                 values_strings: list | None = None, values_tensor: np.ndarray | None = None,
                 default_float: float = -0.0, default_int64: int = -1, default_string: str = "_Unused",
                 default_tensor: np.ndarray | None = None) -> np.ndarray:
    if keys_tensor is not None:
        keys = keys_tensor.reshape(-1).tolist()
    else:
        keys = list(keys_floats or keys_int64s or keys_strings or [])
    if values_tensor is not None:
        vals = values_tensor.reshape(-1)
        out = vals.dtype
        if default_tensor is not None:
            default = default_tensor.reshape(-1)[0]
        else:
            default = "_Unused" if out == object else (-1 if out.kind in "iu" else -0.0)
    elif values_floats:
        vals, out, default = np.array(values_floats, np.float32), np.dtype(np.float32), default_float
    elif values_int64s:
        vals, out, default = np.array(values_int64s, np.int64), np.dtype(np.int64), default_int64
    elif values_strings:
        vals, out, default = np.array(values_strings, object), np.dtype(object), default_string
    else:
        raise InvalidArgument("LabelEncoder: no values attribute")
    if len(keys) != len(vals):
        raise InvalidArgument(f"LabelEncoder: {len(keys)} keys but {len(vals)} values")
    src = x
    if x.dtype.kind == "f":
        src = x.astype(np.float64)
        keys = [float(np.float32(k)) for k in keys]
    return _lookup(src, keys, vals, default, out)


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
