"""Tree ensembles of ai.onnx.ml: TreeEnsembleClassifier and TreeEnsembleRegressor (opsets 1 and 3) and
TreeEnsemble (opset 5), on one compiled engine.

The ``lower`` hooks build the flat layout once per node (kernels/ml_tree_layout.py). ``evaluate``
walks it for blocks of rows: in the one-comparison form every row of the block takes one step of
the same tree together (independent loads the CPU overlaps, no branch on the node kind), for the
tree's depth (measured faster than stopping each row at its leaf from 64 rows up, even on LightGBM's
unbalanced trees). Blocks of up to four rows walk row by row, each stopping at its leaf; other
ensembles take the general walk, row by row.

Scores accumulate per row in tree order in the threshold type (float32, or float64 for double
inputs), as onnxruntime's single-threaded loop does; threads split rows, never trees, so the result
does not depend on the thread count. The final step reproduces onnxruntime's aggregators
(``tree_ensemble_aggregator.h``) row by row, including their binary-classification special cases.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from jitort.errors import InvalidArgument
from jitort.ir import Graph, Node
from jitort.kernels.ml_scores import (LOGISTIC, NONE, PROBIT, classifier_types, float_types, input_dtype, logistic,
                                      post_row, probit)
from jitort.kernels.ml_tree_layout import (AVERAGE, CLASSIFIER, EQ, GT, GTE, LEAF, LEQ, LT, MIN, ML, SUM,
                                           Ensemble, build_v3, build_v5)
from jitort.kernels.registry import Call, Ref, op
from jitort.kernels.threads import parts_for, run_parts
from jitort.onnx_import import contiguous

BLOCK = 64  # rows walked together: their nodes and features stay in L1/L2 across a tree
_PARALLEL_WORK = 200_000  # rows x trees below which one thread is faster than handing out parts


# --- the kernel ---------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _walk(x, r, n, fc, thr, modes, nan_off):  # type: ignore[no-untyped-def]
    """The general walk (any node modes): the leaf row r reaches from node n."""
    while modes[n] != LEAF:
        v = x[r, fc[n, 0]]
        t = thr[n]
        m = modes[n]
        if m == LEQ:
            c = v <= t
        elif m == LT:
            c = v < t
        elif m == GTE:
            c = v >= t
        elif m == GT:
            c = v > t
        elif m == EQ:
            c = v == t
        else:
            c = v != t
        if not c and v != v and nan_off[n] == 0:
            c = True
        n = fc[n, 1] + (0 if c else 1)
    return n


@njit(cache=True, nogil=True)
def _write(sc, n, post, zrow, tmp):  # type: ignore[no-untyped-def]
    """``write_scores`` for n >= 2 scores: NONE keeps the score type's precision, the others run in
    float32."""
    if post == NONE:
        for k in range(n):
            zrow[k] = sc[k]
        return
    for k in range(n):
        tmp[k] = np.float32(sc[k])
    post_row(tmp, n, post)
    for k in range(n):
        zrow[k] = tmp[k]


@njit(cache=True, nogil=True)
def _finalize_regressor(sc, has, C, agg, post, n_trees, base, zrow, tmp):  # type: ignore[no-untyped-def]
    nb = base.shape[0]
    if C == 1:
        origin = base[0] if nb == 1 else sc.dtype.type(0)
        s = sc[0]
        if agg == SUM:
            s = s + origin
        elif agg == AVERAGE:
            s = s / sc.dtype.type(n_trees) + origin
        else:
            s = s + origin if has[0] else origin
        zrow[0] = probit(np.float32(s)) if post == PROBIT else s
        return
    use_base = nb == C
    for k in range(C):
        if not has[k]:  # onnxruntime 1.32: a target no leaf scored is 0, without its base value
            sc[k] = 0
        elif agg == SUM:
            if use_base:
                sc[k] = sc[k] + base[k]
        elif agg == AVERAGE:
            sc[k] = sc[k] / sc.dtype.type(n_trees)
            if use_base:
                sc[k] = sc[k] + base[k]
        elif use_base:
            sc[k] = base[k] + sc[k]
    _write(sc, C, post, zrow, tmp)


@njit(cache=True, nogil=True)
def _finalize_classifier(sc, has, C, post, base, labels, binary, all_pos, zrow, tmp):  # type: ignore[no-untyped-def]
    nb = base.shape[0]
    wa = -1
    zero = sc.dtype.type(0)
    size = C
    if C > 2:
        for k in range(nb):
            if not has[k]:
                has[k] = 1
                sc[k] = base[k]
            else:
                sc[k] += base[k]
        best = -1
        bw = zero
        for k in range(C):
            if has[k] and (best == -1 or sc[k] > bw):
                best = k
                bw = sc[k]
        label = labels[best] if best >= 0 else labels[C - 1]
    else:
        if nb == 2:
            if has[1]:
                sc[1] = base[1] + sc[0]
                sc[0] = -sc[1]
                has[1] = 1
            else:  # onnxruntime 1.32: a class no leaf scored stays 0, without its base value
                if has[1]:
                    sc[1] += base[1]
                if has[0]:
                    sc[0] += base[0]
        elif nb == 1:
            sc[0] += base[0]
            if not has[1]:
                size = 1
        elif nb == 0:
            wa = 3
            if not has[1]:
                size = 1
        if size == 2 and has[1]:
            pos = sc[1]
        else:
            pos = sc[0] if has[0] else zero
        if binary:
            if all_pos:
                wa = 0 if pos > 0.5 else 1
            else:
                wa = 2 if pos > 0 else 3
            label = labels[1] if wa == 0 or wa == 2 else labels[0]
        else:
            label = 1 if pos > 0 else 0  # onnxruntime's positive_label_ / negative_label_, not class labels
    if size >= 2:
        _write(sc, size, post, zrow, tmp)
    elif post == PROBIT:
        zrow[0] = probit(np.float32(sc[0]))
        zrow[1] = 0
    elif (wa == 0 or wa == 1) and post == LOGISTIC:
        p1 = logistic(np.float32(sc[0]))
        zrow[0] = np.float32(1) - p1
        zrow[1] = p1
    elif wa == 0 or wa == 1:
        zrow[0] = sc.dtype.type(1) - sc[0]
        zrow[1] = sc[0]
    elif (wa == 2 or wa == 3) and post == LOGISTIC:
        zrow[0] = logistic(np.float32(-sc[0]))
        zrow[1] = logistic(np.float32(sc[0]))
    elif wa == 2 or wa == 3:
        zrow[0] = -sc[0]
        zrow[1] = sc[0]
    else:
        zrow[0] = sc[0]
        zrow[1] = 0
    return label


@njit(cache=True, nogil=True)
def evaluate(x, start, stop, fc, thr, leafv, aux, modes, nan_off, simple, track_nan, roots, depth, wt, wv, C,
             kind, agg, post, base, labels, binary, all_pos, z, label):  # type: ignore[no-untyped-def]
    """Rows [start, stop) of x (float32 or float64, like thr) -> z [N, C] scores and label [N]."""
    B = BLOCK
    sc = np.zeros((B, C), thr.dtype)
    has = np.zeros((B, C), np.uint8)
    cur = np.empty(B, np.int32)
    tmp = np.empty(max(C, 2), np.float32)
    n_trees = roots.shape[0]
    single = C == 1
    for b in range(start, stop, B):
        m = min(B, stop - b)
        sc[:m] = 0
        has[:m] = 0
        for t in range(n_trees):
            root = roots[t]
            if simple and m <= 4:  # a few rows: each stops at its leaf
                for j in range(m):
                    n = root
                    while modes[n] != LEAF:
                        v = x[b + j, fc[n, 0]]
                        o = 0 if v <= thr[n] else 1
                        if track_nan and v != v:
                            o = nan_off[n]
                        n = fc[n, 1] + o
                    cur[j] = n
            elif simple:
                for j in range(m):
                    cur[j] = root
                for _ in range(depth[t]):
                    for j in range(m):
                        n = cur[j]
                        v = x[b + j, fc[n, 0]]
                        o = 0 if v <= thr[n] else 1
                        if track_nan and v != v:
                            o = nan_off[n]
                        cur[j] = fc[n, 1] + o
            else:
                for j in range(m):
                    cur[j] = _walk(x, b + j, root, fc, thr, modes, nan_off)
            for j in range(m):
                n = cur[j]
                if single:
                    w = leafv[n]
                    if agg == SUM or agg == AVERAGE:
                        sc[j, 0] += w
                    elif agg == MIN:
                        if not has[j, 0] or w < sc[j, 0]:
                            sc[j, 0] = w
                    elif not has[j, 0] or w > sc[j, 0]:
                        sc[j, 0] = w
                    has[j, 0] = 1
                else:
                    for q in range(aux[n, 0], aux[n, 0] + aux[n, 1]):
                        k = wt[q]
                        w = wv[q]
                        if agg == SUM or agg == AVERAGE:
                            sc[j, k] += w
                        elif agg == MIN:
                            if not has[j, k] or w < sc[j, k]:
                                sc[j, k] = w
                        elif not has[j, k] or w > sc[j, k]:
                            sc[j, k] = w
                        has[j, k] = 1
        for j in range(m):
            if kind == CLASSIFIER:
                label[b + j] = _finalize_classifier(sc[j], has[j], C, post, base, labels, binary, all_pos,
                                                    z[b + j], tmp)
            else:
                _finalize_regressor(sc[j], has[j], C, agg, post, n_trees, base, z[b + j], tmp)


# --- running ------------------------------------------------------------------------------------

def _input(x: np.ndarray, e: Ensemble, op_type: str) -> np.ndarray:
    if x.ndim == 1:
        x = x.reshape(1, -1)
    elif x.ndim != 2:
        raise InvalidArgument(f"{op_type}: X must be [N, F] or [F], got shape {list(x.shape)}")
    if x.shape[1] < e.n_features:
        raise InvalidArgument(f"{op_type}: one path in the graph requests feature {e.n_features - 1} but the "
                              f"input tensor has {x.shape[1]} features")
    tdt = e.thr.dtype
    return x if x.dtype == tdt and x.flags.c_contiguous else np.ascontiguousarray(x, tdt)


def run(x: np.ndarray, e: Ensemble, op_type: str) -> tuple[np.ndarray, np.ndarray]:
    """(scores [N, C], labels [N] int64) for the rows of x, rows split across the session's threads."""
    xs = _input(x, e, op_type)
    n = xs.shape[0]
    z = np.empty((n, e.n_targets), e.out_dtype)
    lab = np.empty(n, np.int64)
    args = (e.fc, e.thr, e.leafv, e.aux, e.modes, e.nan_off, e.simple, e.track_nan, e.roots, e.depth, e.wt, e.wv,
            e.n_targets, e.kind, e.agg, e.post, e.base, e.labels, e.binary, e.all_pos, z, lab)
    parts = parts_for((n + BLOCK - 1) // BLOCK, n * len(e.roots), _PARALLEL_WORK)
    if parts <= 1:
        evaluate(xs, 0, n, *args)
    else:
        step = -(-n // parts)
        step = -(-step // BLOCK) * BLOCK

        def part(p: int) -> None:
            evaluate(xs, min(n, p * step), min(n, (p + 1) * step), *args)
        run_parts(part, parts)
    return z, lab


def run_classifier(x: np.ndarray, e: Ensemble) -> tuple[np.ndarray, np.ndarray]:
    z, lab = run(x, e, "TreeEnsembleClassifier")
    y = e.strings[lab] if e.strings is not None else lab
    return contiguous(y), z


def run_regressor(x: np.ndarray, e: Ensemble) -> np.ndarray:
    return run(x, e, "TreeEnsembleRegressor")[0]


def run_v5(x: np.ndarray, e: Ensemble) -> np.ndarray:
    if x.dtype == np.float16:
        return run(x.astype(np.float32), e, "TreeEnsemble")[0].astype(np.float16)
    return run(x, e, "TreeEnsemble")[0]


def _xdtype(node: Node, g: Graph) -> np.dtype | None:
    dt = g.type_of(node.inputs[0]).dtype
    return None if dt is None else np.dtype(dt)


def _lower_classifier(node: Node, g: Graph) -> Call:
    return Call(run_classifier, [Ref(node.inputs[0]), build_v3(node.attrs, node.op_type, node.name, _xdtype(node, g))])


def _lower_regressor(node: Node, g: Graph) -> Call:
    return Call(run_regressor, [Ref(node.inputs[0]), build_v3(node.attrs, node.op_type, node.name, _xdtype(node, g))])


def _lower_v5(node: Node, g: Graph) -> Call:
    xdt = _xdtype(node, g)
    if xdt is not None and xdt == np.float16:
        e = build_v5(node.attrs, node.name, np.dtype(np.float32))
        e.out_dtype = np.dtype(np.float32)
    else:
        e = build_v5(node.attrs, node.name, xdt)
    return Call(run_v5, [Ref(node.inputs[0]), e])


# The registered functions serve eager evaluation (constant folding) with the node's attributes;
# sessions go through the lower hooks, which build the Ensemble once.

@op("TreeEnsembleClassifier", since=1, domain=ML, lower=_lower_classifier, infer=classifier_types)
def TreeEnsembleClassifier(x: np.ndarray, **attrs: Any) -> tuple[np.ndarray, np.ndarray]:
    return run_classifier(x, build_v3(attrs, "TreeEnsembleClassifier", "", x.dtype))


@op("TreeEnsembleRegressor", since=1, domain=ML, lower=_lower_regressor, infer=float_types)
def TreeEnsembleRegressor(x: np.ndarray, **attrs: Any) -> np.ndarray:
    return run_regressor(x, build_v3(attrs, "TreeEnsembleRegressor", "", x.dtype))


@op("TreeEnsemble", since=5, domain=ML, lower=_lower_v5, infer=input_dtype)
def TreeEnsemble(x: np.ndarray, **attrs: Any) -> np.ndarray:
    xdt = np.dtype(np.float32) if x.dtype == np.float16 else x.dtype
    return run_v5(x, build_v5(attrs, "", xdt))
