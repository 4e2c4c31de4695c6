"""The flat layout of a tree ensemble, built once at lowering from either attribute form of the
ai.onnx.ml tree ops (kernels/ml_trees.py evaluates it).

Opset 5 (TreeEnsemble) is first rewritten to the opset-3 form as onnxruntime does (set membership
becoming a chain of BRANCH_EQ nodes, ids in visiting order). Every tree's nodes are then renumbered
breadth-first so the two children of a node are adjacent: the true child at ``child``, the false
child at ``child + 1``; a node is ``(feature, child)`` int32 pairs plus a threshold array. A leaf
points to itself (child = own index - 1, threshold NaN, so the comparison always adds 1), which
makes walking a tree a fixed number of steps of ``n = child[n] + !(x[f[n]] <= t[n])``. When every
split is LEQ/LT/GTE/GT with a real threshold (what scikit-learn, LightGBM and XGBoost emit), the
splits are rewritten to that one comparison (LT as ``x <= nextafter(t, -inf)``, GTE/GT by swapping
the children); other ensembles keep their modes for the general walk. A NaN feature's child offset
follows the node's missing-value flag.

Node order, tree roots and weight order are onnxruntime's (``TreeEnsembleCommon::Init``): a tree
starts where the tree id changes, a leaf's weights are in (tree, node, attribute position) order,
weights on non-leaves are ignored, a leaf without weights is an error.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from jitort.errors import Fail, InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels.ml_scores import LOGISTIC, NONE, PROBIT, SOFTMAX, post_code

ML = "ai.onnx.ml"
LEQ, LT, GTE, GT, EQ, NEQ, MEMBER, LEAF = 0, 1, 2, 3, 4, 5, 6, 7
_MODE_NAMES = {"BRANCH_LEQ": LEQ, "BRANCH_LT": LT, "BRANCH_GTE": GTE, "BRANCH_GT": GT, "BRANCH_EQ": EQ,
               "BRANCH_NEQ": NEQ, "LEAF": LEAF}
AVERAGE, SUM, MIN, MAX = 0, 1, 2, 3
_AGG_NAMES = {"AVERAGE": AVERAGE, "SUM": SUM, "MIN": MIN, "MAX": MAX}
REGRESSOR, CLASSIFIER = 0, 1


@dataclass
class Ensemble:
    """What the kernel takes, built once per node (see the module doc for the layout)."""

    fc: np.ndarray          # int32 [m, 2]: (feature, true child); leaves (0, own index - 1)
    thr: np.ndarray         # T [m]: threshold; NaN on leaves
    leafv: np.ndarray       # T [m]: a leaf's first weight (the only one used with one target)
    aux: np.ndarray         # int32 [m, 2]: a leaf's (first weight, weight count)
    modes: np.ndarray       # uint8 [m]: node modes (LEAF on leaves)
    nan_off: np.ndarray     # uint8 [m]: child offset a NaN feature takes
    simple: bool            # every split in the one-comparison form (modes unused)
    track_nan: bool         # some NaN takes offset 0 (else a NaN compares false: offset 1)
    roots: np.ndarray       # int32 [trees]
    depth: np.ndarray       # int32 [trees]
    wt: np.ndarray          # int32 [w]: target of each leaf weight
    wv: np.ndarray          # T [w]
    n_targets: int
    n_features: int         # 1 + the largest feature id
    kind: int               # REGRESSOR or CLASSIFIER
    agg: int
    post: int
    base: np.ndarray        # T: base values (any length; the aggregators use them by length)
    labels: np.ndarray      # int64: class labels (string labels: their indices)
    strings: np.ndarray | None  # object: string class labels
    binary: bool            # two classes, weights for one class id only
    all_pos: bool           # every class weight >= 0
    out_dtype: np.dtype     # of the scores output
    buf: np.ndarray | None = None  # uint8: everything above the kernel reads, packed (see pack)
    tdt: np.dtype | None = None    # the threshold type (thr.dtype), for the per-call input check
    n_trees: int = 0
    op_type: str = ""              # for error messages
    entry: Any = None              # this process's compiled entry of the kernel (ml_trees), not pickled

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "entry": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # An unpickled dtype (a session loaded from the cache) is an equal object, not NumPy's
        # builtin singleton, and the per-call check compares dtypes by identity: restore it.
        self.__dict__.update(state)
        for k in ("tdt", "out_dtype"):
            d = state.get(k)
            if d is not None:
                setattr(self, k, np.dtype(d.type))


# --- the packed form the kernel takes ----------------------------------------------------------
# One uint8 buffer instead of ~20 arguments: Numba's dispatcher spends ~0.1-0.2 us per array
# argument, more than a one-row walk of a small ensemble. The buffer starts with an int64 header:
# (byte offset, byte length) of each segment below, then the scalars; every segment is 64-byte
# aligned so float64 and uint64 views of it are aligned.

SEGMENTS = ("pairs", "thr", "leafv", "aux", "modes", "nan_off", "roots", "depth", "wt", "wv", "base", "labels",
            "order")
(S_PAIRS, S_THR, S_LEAFV, S_AUX, S_MODES, S_NAN, S_ROOTS, S_DEPTH, S_WT, S_WV, S_BASE, S_LABELS,
 S_ORDER) = range(len(SEGMENTS))
SCALARS = ("n_targets", "kind", "agg", "post", "simple", "track_nan", "binary", "all_pos", "one_weight")
H_SCALARS = 2 * len(SEGMENTS)
HEADER = H_SCALARS + len(SCALARS)


def pack(e: Ensemble) -> np.ndarray:
    """The ensemble as one aligned uint8 buffer (header, then the segments). ``pairs`` holds each
    node's (feature, child) as one uint64 (feature in the low half); ``order`` the tree indices by
    depth (stable), the order in which few rows walk the trees in lockstep groups."""
    tdt = e.thr.dtype
    pairs = np.ascontiguousarray(e.fc.astype(np.uint32)).view(np.uint64).reshape(-1)
    parts = [pairs, e.thr, e.leafv.astype(tdt), e.aux.astype(np.int32).reshape(-1), e.modes.astype(np.uint8),
             e.nan_off.astype(np.uint8), e.roots.astype(np.uint32), e.depth.astype(np.int32),
             e.wt.astype(np.int32), e.wv.astype(tdt), e.base.astype(tdt), e.labels.astype(np.int64),
             np.argsort(e.depth, kind="stable").astype(np.uint32)]
    header = np.zeros(HEADER, np.int64)
    off = -(-HEADER * 8 // 64) * 64
    for k, a in enumerate(parts):
        header[2 * k], header[2 * k + 1] = off, a.nbytes
        off += -(-a.nbytes // 64) * 64
    one_weight = bool((e.aux[e.modes == LEAF, 1] == 1).all())  # every leaf scores one target
    header[H_SCALARS:] = [e.n_targets, e.kind, e.agg, e.post, e.simple, e.track_nan, e.binary, e.all_pos, one_weight]
    buf = np.zeros(off + 64, np.uint8)
    buf[:header.nbytes] = header.view(np.uint8)
    for k, a in enumerate(parts):
        buf[header[2 * k]:header[2 * k] + a.nbytes] = np.ascontiguousarray(a).view(np.uint8).reshape(-1)
    return buf


def _packed(e: Ensemble, op_type: str) -> None:
    """Fill in what the kernel and the per-call wrapper take, once."""
    e.buf = pack(e)
    e.tdt = e.thr.dtype
    e.n_trees = len(e.roots)
    e.op_type = op_type


# --- attributes -> flat layout ----------------------------------------------------------------

def _attr(a: dict[str, Any], name: str) -> list:
    v = a.get(name)
    return [] if v is None else list(v)


def _values(a: dict[str, Any], name: str, tdt: np.dtype, op_type: str, node: str) -> np.ndarray:
    """A float attribute or its ``_as_tensor`` double form, in the threshold type (onnxruntime
    refuses a double tensor when the thresholds are float32)."""
    t = a.get(name + "_as_tensor")
    f = a.get(name)
    if t is not None and f:
        raise Fail(f"{op_type} node '{node}': both {name} and {name}_as_tensor are set")
    if t is not None:
        t = np.asarray(t)
        if t.dtype != tdt:
            raise Fail(f"{op_type} node '{node}': TreeEnsemble could not unpack tensor attribute "
                       f"{name}_as_tensor ({t.dtype} for {tdt} thresholds)")
        return np.ascontiguousarray(t.reshape(-1), tdt)
    return np.asarray(f or [], np.float32).astype(tdt)


def _flatten(op_type: str, node: str, tdt: np.dtype, treeids: list, nodeids: list, featureids: list,
             modes: list, values: np.ndarray, trues: list, falses: list, missing: list,
             w_tree: list, w_node: list, w_id: list, w_val: np.ndarray, n_targets: int) -> dict[str, Any]:
    """The opset-3 attribute arrays -> the kernel's layout (node order, roots and weight order as
    onnxruntime builds them: a tree starts where the tree id changes; a leaf's weights in
    (tree, node, attribute position) order; weights on non-leaves ignored)."""
    where = f"{op_type} node '{node}'"
    n = len(treeids)
    for nm, arr in (("nodes_nodeids", nodeids), ("nodes_featureids", featureids), ("nodes_modes", modes),
                    ("nodes_truenodeids", trues), ("nodes_falsenodeids", falses), ("nodes_values", values)):
        if len(arr) != n:
            raise Fail(f"{where}: {nm} has {len(arr)} entries, nodes_treeids {n}")
    if not (len(w_tree) == len(w_node) == len(w_id) == len(w_val)):
        raise Fail(f"{where}: the target/class id, node id, tree id and weight lists differ in length")
    if n == 0:
        raise Fail(f"{where}: the ensemble has no nodes")
    idx: dict[tuple[int, int], int] = {}
    for i, key in enumerate(zip(treeids, nodeids)):
        if key in idx:
            raise Fail(f"{where}: node {key[1]} in tree {key[0]} is already there")
        idx[key] = i
    is_leaf = [m == LEAF for m in modes]
    leaf_w: list[list[int]] = [[] for _ in range(n)]
    order = sorted(range(len(w_tree)), key=lambda k: (w_tree[k], w_node[k], k))
    for k in order:
        i = idx.get((w_tree[k], w_node[k]))
        if i is None:
            raise Fail(f"{where}: unable to find node {w_tree[k]}-{w_node[k]} (weights)")
        if is_leaf[i]:
            if not 0 <= w_id[k] < n_targets:
                raise Fail(f"{where}: target/class id {w_id[k]} is out of range [0, {n_targets})")
            leaf_w[i].append(k)
    for i in range(n):
        if is_leaf[i] and not leaf_w[i]:
            raise Fail(f"{where}: target is missing for leaf {treeids[i]}-{nodeids[i]}")
    child_of: list[tuple[int, int]] = [(0, 0)] * n
    for i in range(n):
        if not is_leaf[i]:
            t, f = idx.get((treeids[i], trues[i])), idx.get((treeids[i], falses[i]))
            if t is None or f is None:
                raise Fail(f"{where}: unable to find node {treeids[i]}-{trues[i] if t is None else falses[i]}")
            if t == i or f == i:
                raise Fail(f"{where}: a node cannot point to itself: {treeids[i]}-{nodeids[i]}")
            child_of[i] = (t, f)
    roots = [i for i in range(n) if i == 0 or treeids[i] != treeids[i - 1]]
    vals = np.asarray(values, tdt)
    miss = [bool(missing[i]) if i < len(missing) else False for i in range(n)]
    inner = [i for i in range(n) if not is_leaf[i]]
    simple = all(modes[i] in (LEQ, LT, GTE, GT) and not np.isnan(vals[i]) for i in inner)
    if any(featureids[i] < 0 for i in inner):
        raise Fail(f"{where}: negative feature id")
    # breadth-first renumbering, children adjacent; a node reached twice is copied (a DAG in the
    # attributes is legal), a cycle is refused
    fc, thr, leafv, aux, mode_out, nan_off, depth = [], [], [], [], [], [], []
    wt_out: list[int] = []
    wv_out: list[Any] = []
    new_roots = []
    limit = 64 * n + 64
    for r in roots:
        new_roots.append(len(fc))
        queue = [(r, len(fc), 0)]
        fc.append(None)
        for lst in (thr, leafv, aux, mode_out, nan_off):
            lst.append(None)
        dmax = 0
        head = 0
        while head < len(queue):
            i, p, d = queue[head]
            head += 1
            if d > n or len(fc) > limit:
                raise Fail(f"{where}: tree {treeids[r]} has a cycle")
            if is_leaf[i]:
                ws = leaf_w[i]
                fc[p] = (0, p - 1)
                thr[p] = np.nan
                leafv[p] = w_val[ws[0]]
                aux[p] = (len(wt_out), len(ws))
                wt_out.extend(w_id[k] for k in ws)
                wv_out.extend(w_val[k] for k in ws)
                mode_out[p] = LEAF
                nan_off[p] = 1
                dmax = max(dmax, d)
                continue
            t, f = child_of[i]
            m, th, tracks = modes[i], vals[i], miss[i]
            q = len(fc)
            fc.extend([None, None])
            for lst in (thr, leafv, aux, mode_out, nan_off):
                lst.extend([None, None])
            swap = False
            if simple:
                if m in (LT, GTE):  # x < t  <=>  x <= the float before t (no float lies between)
                    th = np.nan if th == -np.inf else np.nextafter(th, tdt.type(-np.inf))
                swap = m in (GTE, GT)  # x >= t  <=>  not (x < t): the children trade places
                m = LEQ
            fc[p] = (featureids[i], q)
            thr[p] = th
            leafv[p] = 0
            aux[p] = (0, 0)
            mode_out[p] = m
            # a NaN feature compares false: to the false child unless the node tracks missing values
            nan_off[p] = (1 if tracks else 0) if swap else (0 if tracks else 1)
            queue.append((f if swap else t, q, d + 1))
            queue.append((t if swap else f, q + 1, d + 1))
        depth.append(dmax)
    fc_a = np.array(fc, np.int32).reshape(-1, 2)
    nan_a = np.array(nan_off, np.uint8)
    return dict(fc=fc_a, thr=np.array(thr, tdt), leafv=np.array(leafv, tdt),
                aux=np.array(aux, np.int32).reshape(-1, 2),
                modes=np.array(mode_out, np.uint8), nan_off=nan_a, simple=simple, track_nan=not nan_a.all(),
                roots=np.array(new_roots, np.int32), depth=np.array(depth, np.int32),
                wt=np.array(wt_out, np.int32), wv=np.array(wv_out, tdt),
                n_features=int(max([featureids[i] for i in inner], default=-1)) + 1)


def _threshold_dtype(xdt: np.dtype | None) -> np.dtype:
    """onnxruntime's ThresholdType: double for double inputs, float otherwise."""
    return np.dtype(np.float64) if xdt is not None and np.dtype(xdt) == np.float64 else np.dtype(np.float32)


def _modes(names: list, op_type: str, node: str) -> list[int]:
    out = []
    for s in names:
        m = _MODE_NAMES.get(s)
        if m is None:  # onnxruntime reads any other string as BRANCH_NEQ; jitort refuses it
            raise InvalidArgument(f"{op_type} node '{node}': unknown node mode '{s}'")
        out.append(m)
    return out


def build_v3(a: dict[str, Any], op_type: str, node: str, xdt: np.dtype | None) -> Ensemble:
    """TreeEnsembleClassifier / TreeEnsembleRegressor (opsets 1-3) attributes -> Ensemble."""
    tdt = _threshold_dtype(xdt)
    classifier = op_type == "TreeEnsembleClassifier"
    pre = "class" if classifier else "target"
    strings = _attr(a, "classlabels_strings")
    if classifier:
        labels_i = _attr(a, "classlabels_int64s")
        if strings and labels_i:
            raise Fail(f"{op_type} node '{node}': both classlabels_strings and classlabels_int64s are set")
        n_targets = len(strings) if strings else len(labels_i)
        labels = np.arange(n_targets, dtype=np.int64) if strings else np.array(labels_i, np.int64)
        if n_targets < 2:
            raise OrtNotImplemented(f"{op_type} node '{node}' (domain {ML}): a classifier with "
                                    f"{n_targets} class label(s)")
    else:
        n_targets = int(a.get("n_targets") or 0)
        labels = np.zeros(0, np.int64)
        if n_targets <= 0:
            raise Fail(f"{op_type} node '{node}': n_targets must be positive, got {n_targets}")
    weights = _values(a, f"{pre}_weights", tdt, op_type, node)
    w_id = _attr(a, f"{pre}_ids")
    flat = _flatten(op_type, node, tdt, _attr(a, "nodes_treeids"), _attr(a, "nodes_nodeids"),
                    _attr(a, "nodes_featureids"), _modes(_attr(a, "nodes_modes"), op_type, node),
                    _values(a, "nodes_values", tdt, op_type, node), _attr(a, "nodes_truenodeids"),
                    _attr(a, "nodes_falsenodeids"), _attr(a, "nodes_missing_value_tracks_true"),
                    _attr(a, f"{pre}_treeids"), _attr(a, f"{pre}_nodeids"), w_id, weights, n_targets)
    agg_name = a.get("aggregate_function") or "SUM"
    if agg_name not in _AGG_NAMES:
        raise InvalidArgument(f"{op_type} node '{node}': unknown aggregate_function '{agg_name}'")
    post = post_code(a.get("post_transform") or "NONE", op_type, node)
    binary = classifier and n_targets == 2 and len(set(w_id)) == 1
    if binary and set(w_id) == {0} and post == PROBIT and len(_values(a, "base_values", tdt, op_type, node)) != 2:
        raise OrtNotImplemented(f"{op_type} node '{node}' (domain {ML}): PROBIT on a binary model with one "
                                "class id (onnxruntime leaves the second score column unwritten)")
    e = Ensemble(**flat, n_targets=n_targets, kind=CLASSIFIER if classifier else REGRESSOR,
                 agg=SUM if classifier else _AGG_NAMES[agg_name],
                 post=post,
                 base=_values(a, "base_values", tdt, op_type, node), labels=labels,
                 strings=np.array(strings, object) if strings else None,
                 binary=binary,
                 all_pos=bool((weights >= 0).all()), out_dtype=np.dtype(np.float32))
    _packed(e, op_type)
    return e


def build_v5(a: dict[str, Any], node: str, xdt: np.dtype | None) -> Ensemble:
    """TreeEnsemble (opset 5) -> the opset-3 form (onnxruntime's ``convert_to_v3``) -> Ensemble."""
    op_type = "TreeEnsemble"
    tdt = _threshold_dtype(xdt)
    out_dtype = np.dtype(xdt) if xdt is not None else np.dtype(np.float32)

    def arr(name: str) -> np.ndarray:
        v = a.get(name)
        return np.zeros(0, tdt) if v is None else np.asarray(v).reshape(-1).astype(tdt)

    splits, weights, members = arr("nodes_splits"), arr("leaf_weights"), arr("membership_values")
    modes_v5 = np.asarray(a.get("nodes_modes"), np.int64).reshape(-1)
    feats, trues, falses = _attr(a, "nodes_featureids"), _attr(a, "nodes_truenodeids"), _attr(a, "nodes_falsenodeids")
    tleaf, fleaf, targets = _attr(a, "nodes_trueleafs"), _attr(a, "nodes_falseleafs"), _attr(a, "leaf_targetids")
    missing = _attr(a, "nodes_missing_value_tracks_true")
    n_targets = int(a.get("n_targets") or 0)
    agg, post = int(a.get("aggregate_function", SUM)), int(a.get("post_transform", NONE))
    if agg not in (AVERAGE, SUM, MIN, MAX):
        raise InvalidArgument(f"{op_type} node '{node}': unknown aggregate_function {agg}")
    if post not in range(5):
        raise InvalidArgument(f"{op_type} node '{node}': unknown post_transform {post}")
    # onnxruntime 1.32 reads codes 1 and 2 through its own enum (NONE, LOGISTIC, SOFTMAX, ...): 1 runs
    # LOGISTIC and 2 SOFTMAX, the opposite of the spec; a drop-in does what it does
    post = {1: LOGISTIC, 2: SOFTMAX}.get(post, post)
    if n_targets <= 0:
        raise Fail(f"{op_type} node '{node}': n_targets must be positive, got {n_targets}")
    sets: list[list[float]] = []
    cur = 0
    for m in modes_v5:
        sets.append([])
        if m == MEMBER:
            while cur < len(members) and not np.isnan(members[cur]):
                sets[-1].append(members[cur])
                cur += 1
            cur += 1
            if not sets[-1]:
                raise OrtNotImplemented(f"{op_type} node '{node}' (domain {ML}, opset 5): an empty "
                                        "membership set")
    out: dict[str, list] = {k: [] for k in ("tree", "node", "feat", "mode", "val", "t", "f", "miss",
                                            "wt", "wn", "wi", "wv")}

    def emit(i: int, tree: int, nid: int, member_k: int, leaf: bool) -> int:
        # onnxruntime's transformInputOneTree: the true subtree first, ids in visiting order
        out["tree"].append(tree)
        out["node"].append(nid)
        if leaf:
            out["feat"].append(0)
            out["mode"].append(LEAF)
            out["val"].append(0)
            out["t"].append(0)
            out["f"].append(0)
            out["miss"].append(0)
            out["wt"].append(tree)
            out["wn"].append(nid)
            out["wi"].append(targets[i])
            out["wv"].append(weights[i])
            return nid
        out["feat"].append(feats[i])
        out["miss"].append(missing[i] if i < len(missing) else 0)
        m = int(modes_v5[i])
        if m == MEMBER:
            out["mode"].append(EQ)
            out["val"].append(sets[i][member_k])
        else:
            if m not in range(6):
                raise InvalidArgument(f"{op_type} node '{node}': unknown node mode {m}")
            out["mode"].append(m)
            out["val"].append(splits[i])
        k = len(out["f"])
        out["f"].append(0)
        out["t"].append(nid + 1)
        last = emit(int(trues[i]), tree, nid + 1, 0, tleaf[i] != 0)
        out["f"][k] = last + 1
        if m == MEMBER and member_k + 1 < len(sets[i]):
            return emit(i, tree, last + 1, member_k + 1, False)
        return emit(int(falses[i]), tree, last + 1, 0, fleaf[i] != 0)

    need = len(modes_v5) + 100
    if sys.getrecursionlimit() < need:
        sys.setrecursionlimit(need)
    for tree, root in enumerate(_attr(a, "tree_roots")):
        if falses[root] == trues[root]:  # a tree that is one leaf (both branches name it)
            emit(int(trues[root]), tree, 0, 0, True)
        else:
            emit(int(root), tree, 0, 0, False)
    wv = np.array(out["wv"], tdt)
    flat = _flatten(op_type, node, tdt, out["tree"], out["node"], out["feat"], out["mode"],
                    np.array(out["val"], tdt), out["t"], out["f"], out["miss"], out["wt"], out["wn"],
                    out["wi"], wv, n_targets)
    e = Ensemble(**flat, n_targets=n_targets, kind=REGRESSOR, agg=agg, post=post, base=np.zeros(0, tdt),
                 labels=np.zeros(0, np.int64), strings=None, binary=False, all_pos=bool((wv >= 0).all()),
                 out_dtype=out_dtype)
    _packed(e, op_type)
    return e
