"""ai.onnx.ml ops: LabelEncoder, Binarizer, ArrayFeatureExtractor, TreeEnsemble.

Lookups and tree walks are numpy: a tree is walked for all samples at once, one level per step.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
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


def _post(y: np.ndarray, post_transform: int) -> np.ndarray:
    if post_transform == 0:
        return y
    if post_transform == 1:
        e = np.exp(y - y.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if post_transform == 2:
        return 1.0 / (1.0 + np.exp(-y))
    if post_transform == 3:
        e = np.where(y != 0, np.exp(y - y.max(axis=1, keepdims=True)), 0.0)
        s = e.sum(axis=1, keepdims=True)
        return np.divide(e, s, out=np.zeros_like(e), where=s != 0)
    if post_transform == 4:
        from scipy.special import erfinv
        return np.sqrt(2.0) * erfinv(2.0 * y - 1.0)
    raise InvalidArgument(f"TreeEnsemble: unknown post_transform {post_transform}")


@op("TreeEnsemble", since=5, domain=ML)
def TreeEnsemble(x: np.ndarray, *, nodes_splits: np.ndarray, nodes_featureids: list, nodes_modes: np.ndarray,
                 nodes_truenodeids: list, nodes_falsenodeids: list, nodes_trueleafs: list, nodes_falseleafs: list,
                 leaf_targetids: list, leaf_weights: np.ndarray, tree_roots: list, n_targets: int | None = None,
                 aggregate_function: int = 1, post_transform: int = 0, membership_values: np.ndarray | None = None,
                 nodes_missing_value_tracks_true: list | None = None, nodes_hitrates: Any = None) -> np.ndarray:
    """Every tree walked for all samples together; leaves aggregate per target (SUM/AVERAGE/MIN/MAX)."""
    if x.ndim != 2:
        raise InvalidArgument(f"TreeEnsemble: X must be [N, F], got {list(x.shape)}")
    xs = x.astype(np.float64)
    splits = nodes_splits.astype(np.float64).reshape(-1)
    modes = np.asarray(nodes_modes).reshape(-1).astype(np.int64)
    feat = np.asarray(nodes_featureids, np.int64)
    t_id, f_id = np.asarray(nodes_truenodeids, np.int64), np.asarray(nodes_falsenodeids, np.int64)
    t_leaf, f_leaf = np.asarray(nodes_trueleafs, bool), np.asarray(nodes_falseleafs, bool)
    missing = np.zeros(len(feat), bool) if nodes_missing_value_tracks_true is None else \
        np.asarray(nodes_missing_value_tracks_true, bool)
    members: dict[int, np.ndarray] = {}
    if (modes == 6).any():
        if membership_values is None:
            raise InvalidArgument("TreeEnsemble: set-membership nodes need membership_values")
        vals = membership_values.astype(np.float64).reshape(-1)
        groups, cur = [], []
        for v in vals:
            if np.isnan(v):
                groups.append(np.array(cur))
                cur = []
            else:
                cur.append(v)
        member_nodes = np.nonzero(modes == 6)[0]
        if len(groups) < len(member_nodes):
            raise InvalidArgument("TreeEnsemble: fewer membership sets than set-membership nodes")
        members = {int(n): g for n, g in zip(member_nodes, groups)}
    weights = leaf_weights.astype(np.float64).reshape(-1)
    targets = np.asarray(leaf_targetids, np.int64)
    n_t = int(n_targets) if n_targets else int(targets.max()) + 1
    n = xs.shape[0]
    rows = np.arange(n)
    if aggregate_function in (0, 1):
        y = np.zeros((n, n_t))
    elif aggregate_function == 2:
        y = np.full((n, n_t), np.inf)
    elif aggregate_function == 3:
        y = np.full((n, n_t), -np.inf)
    else:
        raise InvalidArgument(f"TreeEnsemble: unknown aggregate_function {aggregate_function}")
    for root in tree_roots:
        degenerate = bool(t_leaf[root] and f_leaf[root] and t_id[root] == f_id[root])  # the tree is a leaf
        cur = np.full(n, t_id[root] if degenerate else root, np.int64)
        leaf = np.full(n, degenerate)
        for _ in range(len(feat) + 1):
            active = ~leaf
            if not active.any():
                break
            node = cur[active]
            v = xs[rows[active], feat[node]]
            s, md = splits[node], modes[node]
            go = np.select([md == 0, md == 1, md == 2, md == 3, md == 4, md == 5],
                           [v <= s, v < s, v >= s, v > s, v == s, v != s], False)
            for k in np.nonzero(md == 6)[0]:
                go[k] = v[k] in members[int(node[k])]
            go |= missing[node] & np.isnan(v)
            cur[active] = np.where(go, t_id[node], f_id[node])
            leaf[active] = np.where(go, t_leaf[node], f_leaf[node])
        else:
            raise InvalidArgument("TreeEnsemble: a tree does not end in leaves (cycle in the node ids)")
        w, t = weights[cur], targets[cur]
        if aggregate_function in (0, 1):
            np.add.at(y, (rows, t), w)
        elif aggregate_function == 2:
            np.minimum.at(y, (rows, t), w)
        else:
            np.maximum.at(y, (rows, t), w)
    if aggregate_function == 0:
        y /= len(tree_roots)
    if aggregate_function in (2, 3):
        y[~np.isfinite(y)] = 0.0
    if post_transform not in (0, 1, 2, 3, 4):
        raise OrtNotImplemented(f"TreeEnsemble: post_transform {post_transform}")
    return contiguous(_post(y, post_transform).astype(x.dtype))
