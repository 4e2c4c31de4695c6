"""Tree ensembles of ai.onnx.ml: TreeEnsembleClassifier and TreeEnsembleRegressor (opsets 1 and 3) and
TreeEnsemble (opset 5), on one compiled engine.

The ``lower`` hooks build the flat layout once per node and pack it into one buffer
(kernels/ml_tree_layout.py): the kernel takes 6 arguments, since Numba's dispatcher costs ~0.1-0.2 us
per array argument, which at one row is a good part of onnxruntime's whole run; one-thread runs call
its compiled entry (kernels/entry.py). In the one-comparison form (every split ``x <= t``) a walk
step is ``n = child[n] + !(x[f[n]] <= t[n])`` with leaves stepping to themselves, and walks are
interleaved in lockstep, with no branch on the node kind, so the CPU overlaps their loads:

* blocks of GROUP_ROWS-64 rows take one tree at a time, every row one step together, for the
  tree's depth;
* fewer rows (every batch-1 run) take their (tree, row) walks in groups of 32, trees in order of
  depth, each group for its deepest tree's depth.

Measured on the Intel Xeon (Ice Lake) dev VM (CPU time, the 5 models of benchmarks/bench_trees.py
and 200 one-sided "spine" trees whose walks mostly end after 1-3 of 12 levels), the groups beat
the queue they replace (32 walks in flight, each handing its slot to the next walk at its leaf, no
step wasted, but a mispredicted branch per walk) on every one: at one row rf 100x8 2.0 -> 1.6 us,
xgb 300x6 6.1 -> 2.9 us, LightGBM 500x63 leaves 13.0 -> 8.0 us, the spines 3.5 -> 2.4 us. They beat
the one-tree lockstep below ~24 rows and tie it at 24-32 (GROUP_ROWS).

Other ensembles (EQ/NEQ splits) take the general walk, row by row. Scores accumulate per row in
tree order in the threshold type (float32, or float64 for double inputs), as onnxruntime's
single-threaded loop does, whatever order the walks finish in, and whatever the thread split:
threads take row ranges, or, with fewer rows than two row parts, tree ranges whose leaves go to one
table that the calling thread then scores in tree order, so the result does not depend on the
thread count. The final step reproduces onnxruntime's
aggregators (``tree_ensemble_aggregator.h``) row by row, including their binary-classification
special cases.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, types

from jitort.errors import InvalidArgument
from jitort.ir import Graph, Node
from jitort.kernels.ml_scores import (LOGISTIC, NONE, PROBIT, classifier_types, float_types, input_dtype, logistic,
                                      post_row, probit)
from jitort.kernels.ml_tree_layout import (AVERAGE, CLASSIFIER, EQ, GT, GTE, H_SCALARS, HEADER, LEAF, LEQ, LT,
                                           MAX, MIN, ML, S_AUX, S_BASE, S_DEPTH, S_LABELS, S_LEAFV, S_MODES, S_NAN,
                                           S_ORDER, S_PAIRS, S_ROOTS, S_THR, S_WT, S_WV, SUM, Ensemble, build_v3,
                                           build_v5)
from jitort.kernels.entry import Entry, c_array
from jitort.kernels.registry import Call, Ref, op
from jitort.kernels.threads import parts_for, run_parts

BLOCK = 64  # rows walked together: their nodes and features stay in L1/L2 across a tree
CHAINS = 32  # walks in flight: enough to hide the loads' latency
GROUP_ROWS = 24  # blocks of fewer rows walk in groups (_groups), larger ones a tree at a time
# rows x trees per part (one part per this much work): 16-35 ns per row and tree on the Zen 4 dev
# VM, so ~0.2-0.4 ms of work, against ~20-80 us to hand a part to a pool thread
_PARALLEL_WORK = 12_000
_MIN_PART_ROWS = 32  # a part's rows still walk in lockstep blocks


# --- the kernel ---------------------------------------------------------------------------------

_LO = np.uint64(0xFFFFFFFF)
_HI = np.uint64(32)


@njit(cache=True, nogil=True)
def _walk(xf, row, n, pairs, thr, modes, nan_off):  # type: ignore[no-untyped-def]
    """The general walk (any node modes): the leaf the row at flat offset ``row`` reaches from n."""
    while modes[n] != LEAF:
        w = pairs[n]
        v = xf[row + (w & _LO)]
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
        n = (w >> _HI) + (np.uint64(0) if c else np.uint64(1))
    return n


@njit(cache=True, nogil=True)
def _lockstep(xf, rows, cur, nk, steps, pairs, thr, nan_off, track_nan):  # type: ignore[no-untyped-def]
    """``steps`` steps of the one-comparison walk for the nk chains (row offset, node) together:
    independent loads the CPU overlaps, no branch on the node kind (a leaf steps to itself)."""
    for _ in range(steps):
        for k in range(nk):
            n = cur[k]
            w = pairs[n]
            v = xf[rows[k] + (w & _LO)]
            o = np.uint64(0) if v <= thr[n] else np.uint64(1)
            if track_nan and v != v:
                o = np.uint64(nan_off[n])
            cur[k] = (w >> _HI) + o


@njit(cache=True, nogil=True)
def _groups(xf, b, m, nf, order, roots, depth, pairs, thr, nan_off, track_nan, cur, rows, slot, leaves):  # type: ignore[no-untyped-def]
    """The leaves of rows b..b+m-1 in the trees ``order`` lists (``leaves[t * m + j]``): the (tree,
    row) walks in groups of CHAINS, each group in lockstep for its deepest tree. ``order`` lists
    the trees by depth, so a group's walks are about equally deep and few steps are wasted."""
    n_items = order.shape[0] * m
    ti = 0
    j = 0
    for i0 in range(0, n_items, CHAINS):
        g = min(CHAINS, n_items - i0)
        d = 0
        for k in range(g):
            t = order[ti]
            cur[k] = roots[t]
            rows[k] = np.uint64(b + j) * nf
            slot[k] = t * m + j
            d = max(d, depth[t])
            j += 1
            if j == m:
                j = 0
                ti += 1
        _lockstep(xf, rows, cur, g, d, pairs, thr, nan_off, track_nan)
        for k in range(g):
            leaves[slot[k]] = cur[k]


@njit(cache=True, nogil=True)
def _score(sc, has, leaves, nt, m, single, one_weight, agg, leafv, aux, wt, wv):  # type: ignore[no-untyped-def]
    """The weights of leaf ``leaves[t * m + j]`` (tree t < nt, row j < m) into row j's scores, in
    tree order (onnxruntime's aggregators, per target). One call per block, not per row and tree:
    a call passes its arrays with reference counting, which per row cost more than the walk of a
    small tree (~19 ns a row and tree, measured on the loaded 2-vCPU Zen 4 VM)."""
    # SUM/AVERAGE: a row's running sum stays in a register while its trees score one target (the
    # same additions in the same order; through memory, each tree waited for the previous store).
    # One row, Intel Xeon (Ice Lake) dev VM: xgb 300x6 4.5 -> 4.3 us, LightGBM 500 trees 9.7 -> 9.2
    if single and (agg == SUM or agg == AVERAGE):
        for j in range(m):
            s = sc[j, 0]
            for t in range(nt):
                s += leafv[leaves[t * m + j]]
            sc[j, 0] = s
            has[j, 0] = 1
        return
    if one_weight and (agg == SUM or agg == AVERAGE):  # gradient boosting: a tree scores one class
        for j in range(m):
            kc = -1
            s = sc[j, 0]
            for t in range(nt):
                n = np.int64(leaves[t * m + j])
                k = wt[aux[2 * n]]
                if k != kc:
                    if kc >= 0:
                        sc[j, kc] = s
                    kc = k
                    s = sc[j, k]
                s += leafv[n]
                has[j, k] = 1
            if kc >= 0:
                sc[j, kc] = s
        return
    for t in range(nt):
        for j in range(m):
            n = np.int64(leaves[t * m + j])
            if single:
                w = leafv[n]
                if agg == MIN:
                    if not has[j, 0] or w < sc[j, 0]:
                        sc[j, 0] = w
                elif agg == MAX:
                    if not has[j, 0] or w > sc[j, 0]:
                        sc[j, 0] = w
                has[j, 0] = 1
                continue
            for q in range(aux[2 * n], aux[2 * n] + aux[2 * n + 1]):
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
def _segment(buf, h, k):  # type: ignore[no-untyped-def]
    return buf[h[2 * k]:h[2 * k] + h[2 * k + 1]]


@njit(cache=True, nogil=True)
def evaluate(x, buf, start, stop, z, label):  # type: ignore[no-untyped-def]
    """Rows [start, stop) of x (float32 or float64, like the thresholds) -> z [N, C] scores and (for
    a classifier) label [N]; ``buf`` is the packed ensemble (ml_tree_layout.pack)."""
    h = buf[:HEADER * 8].view(np.int64)
    pairs = _segment(buf, h, S_PAIRS).view(np.uint64)
    thr = _segment(buf, h, S_THR).view(x.dtype)
    leafv = _segment(buf, h, S_LEAFV).view(x.dtype)
    aux = _segment(buf, h, S_AUX).view(np.int32)
    modes = _segment(buf, h, S_MODES)
    nan_off = _segment(buf, h, S_NAN)
    roots = _segment(buf, h, S_ROOTS).view(np.uint32)
    depth = _segment(buf, h, S_DEPTH).view(np.int32)
    wt = _segment(buf, h, S_WT).view(np.int32)
    wv = _segment(buf, h, S_WV).view(x.dtype)
    base = _segment(buf, h, S_BASE).view(x.dtype)
    labels = _segment(buf, h, S_LABELS).view(np.int64)
    order = _segment(buf, h, S_ORDER).view(np.uint32)
    C, agg = h[H_SCALARS], h[H_SCALARS + 2]
    simple, track_nan, one_weight = h[H_SCALARS + 4] != 0, h[H_SCALARS + 5] != 0, h[H_SCALARS + 8] != 0
    xf = x.reshape(-1)
    nf = np.uint64(x.shape[1])
    B = BLOCK
    n_trees = roots.shape[0]
    mb = max(0, min(B, stop - start))  # rows in the largest block
    sc = np.zeros((mb, C), x.dtype)
    has = np.zeros((mb, C), np.uint8)
    cur = np.empty(max(mb, CHAINS), np.uint32)
    rows = np.empty(max(mb, CHAINS), np.uint64)
    leaves = np.empty(n_trees * mb if simple else 0, np.uint32)
    tmp = np.empty(max(C, 2), np.float32)
    slot = np.empty(CHAINS, np.int64)
    single = C == 1
    for b in range(start, stop, B):
        m = min(B, stop - b)
        sc[:m] = 0
        has[:m] = 0
        if not simple:
            for t in range(n_trees):
                for j in range(m):
                    cur[j] = _walk(xf, np.uint64(b + j) * nf, np.uint64(roots[t]), pairs, thr, modes, nan_off)
                _score(sc, has, cur, 1, m, single, one_weight, agg, leafv, aux, wt, wv)
        elif m >= GROUP_ROWS:  # a tree at a time over the block's rows, in lockstep, scored as it ends
            for j in range(m):
                rows[j] = np.uint64(b + j) * nf
            for t in range(n_trees):
                for j in range(m):
                    cur[j] = roots[t]
                _lockstep(xf, rows, cur, m, depth[t], pairs, thr, nan_off, track_nan)
                _score(sc, has, cur, 1, m, single, one_weight, agg, leafv, aux, wt, wv)
        else:  # few rows: groups of (tree, row) walks in lockstep, scored in tree order
            _groups(xf, b, m, nf, order, roots, depth, pairs, thr, nan_off, track_nan, cur, rows, slot, leaves)
            _score(sc, has, leaves, n_trees, m, single, one_weight, agg, leafv, aux, wt, wv)
        _finish(sc, has, b, m, h, n_trees, base, labels, z, label, tmp)


@njit(cache=True, nogil=True)
def _finish(sc, has, b, m, h, n_trees, base, labels, z, label, tmp):  # type: ignore[no-untyped-def]
    """Rows b..b+m-1's scores (sc, has rows 0..m-1) -> z and label (h: the packed header)."""
    C, kind, agg, post = h[H_SCALARS], h[H_SCALARS + 1], h[H_SCALARS + 2], h[H_SCALARS + 3]
    binary, all_pos = h[H_SCALARS + 6] != 0, h[H_SCALARS + 7] != 0
    for j in range(m):
        if kind == CLASSIFIER:
            label[b + j] = _finalize_classifier(sc[j], has[j], C, post, base, labels, binary, all_pos, z[b + j], tmp)
        else:
            _finalize_regressor(sc[j], has[j], C, agg, post, n_trees, base, z[b + j], tmp)


# --- few rows, trees split across threads ------------------------------------------------------
# Fewer rows than two row parts leave a second thread idle; instead each part walks a range of
# trees for all rows into one leaf table, and the calling thread then scores the table in tree
# order, so the sums are the one-thread sums bit for bit.

@njit(cache=True, nogil=True)
def walk_trees(x, buf, n, t0, t1, leaves):  # type: ignore[no-untyped-def]
    """The leaves of rows 0..n-1 (n <= BLOCK; a one-comparison ensemble) in trees [t0, t1):
    ``leaves[t * n + j]`` (the trees' entries only)."""
    h = buf[:HEADER * 8].view(np.int64)
    pairs = _segment(buf, h, S_PAIRS).view(np.uint64)
    thr = _segment(buf, h, S_THR).view(x.dtype)
    nan_off = _segment(buf, h, S_NAN)
    roots = _segment(buf, h, S_ROOTS).view(np.uint32)
    depth = _segment(buf, h, S_DEPTH).view(np.int32)
    order = _segment(buf, h, S_ORDER).view(np.uint32)
    track_nan = h[H_SCALARS + 5] != 0
    xf = x.reshape(-1)
    nf = np.uint64(x.shape[1])
    cur = np.empty(max(n, CHAINS), np.uint32)
    rows = np.empty(max(n, CHAINS), np.uint64)
    slot = np.empty(CHAINS, np.int64)
    if n >= GROUP_ROWS:
        for j in range(n):
            rows[j] = np.uint64(j) * nf
        for t in range(t0, t1):
            for j in range(n):
                cur[j] = roots[t]
            _lockstep(xf, rows, cur, n, depth[t], pairs, thr, nan_off, track_nan)
            for j in range(n):
                leaves[t * n + j] = cur[j]
    else:  # the part's trees in the order of depth
        mine = order[(order >= t0) & (order < t1)]
        _groups(xf, 0, n, nf, mine, roots, depth, pairs, thr, nan_off, track_nan, cur, rows, slot, leaves)


@njit(cache=True, nogil=True)
def score_leaves(x, buf, n, leaves, z, label):  # type: ignore[no-untyped-def]
    """Rows 0..n-1 (n <= BLOCK) scored from their leaves in every tree (walk_trees' table) -> z, label."""
    h = buf[:HEADER * 8].view(np.int64)
    leafv = _segment(buf, h, S_LEAFV).view(x.dtype)
    aux = _segment(buf, h, S_AUX).view(np.int32)
    n_trees = _segment(buf, h, S_ROOTS).view(np.uint32).shape[0]
    wt = _segment(buf, h, S_WT).view(np.int32)
    wv = _segment(buf, h, S_WV).view(x.dtype)
    base = _segment(buf, h, S_BASE).view(x.dtype)
    labels = _segment(buf, h, S_LABELS).view(np.int64)
    C, agg = h[H_SCALARS], h[H_SCALARS + 2]
    sc = np.zeros((n, C), x.dtype)
    has = np.zeros((n, C), np.uint8)
    tmp = np.empty(max(C, 2), np.float32)
    _score(sc, has, leaves, n_trees, n, C == 1, h[H_SCALARS + 8] != 0, agg, leafv, aux, wt, wv)
    _finish(sc, has, 0, n, h, n_trees, base, labels, z, label, tmp)


# --- running ------------------------------------------------------------------------------------

def _input(x: np.ndarray, e: Ensemble) -> np.ndarray:
    op_type = e.op_type
    if x.ndim == 1:
        x = x.reshape(1, -1)
    elif x.ndim != 2:
        raise InvalidArgument(f"{op_type}: X must be [N, F] or [F], got shape {list(x.shape)}")
    if x.shape[1] < e.n_features:
        raise InvalidArgument(f"{op_type}: one path in the graph requests feature {e.n_features - 1} but the "
                              f"input tensor has {x.shape[1]} features")
    tdt = e.thr.dtype
    if x.dtype == tdt and x.flags.c_contiguous and x.flags.aligned:
        return x
    return np.array(x, tdt, order="C")  # aligned, unlike np.ascontiguousarray of an unaligned array


_NO_LABELS = np.zeros(0, np.int64)  # a regressor's evaluate writes no labels
_ENTRIES: dict[tuple[np.dtype, np.dtype], Entry] = {}


def _entry(e: Ensemble) -> Any:
    """evaluate's compiled entry (kernels/entry.py) for this ensemble's types: x and z C-contiguous
    and aligned, of the threshold and score types; kept on the ensemble for its next runs."""
    key = (e.tdt, e.out_dtype)
    ent = _ENTRIES.get(key)
    if ent is None:
        ent = _ENTRIES[key] = Entry(evaluate, (c_array(e.tdt, 2), c_array(np.uint8, 1), types.int64, types.int64,
                                               c_array(e.out_dtype, 2), c_array(np.int64, 1)))
    e.entry = ent.get()
    return e.entry


def run(x: np.ndarray, e: Ensemble) -> Any:
    """The node's outputs for the rows of x: (labels [N], scores [N, C]) for a classifier, scores
    otherwise. One thread (every batch-1 run) calls evaluate's compiled entry; larger work is split
    across the session's threads (_split).

    Measured on the Intel Xeon (Ice Lake) dev VM at one row (rf 50x12 classifier): 4.05 us, of which
    the entry's call 2.64 us and the check and two allocations the rest; the dispatched call under a
    second Python layer (run_classifier) took 4.57 us."""
    # the common case checked in few attribute reads (builtin dtypes are singletons: an equal dtype
    # that is not the same object takes the slow path, which returns x unchanged)
    if not (type(x) is np.ndarray and x.dtype is e.tdt and x.ndim == 2 and x.shape[1] >= e.n_features
            and (f := x.flags).c_contiguous and f.aligned):
        x = _input(x, e)
    n = x.shape[0]
    z = np.empty((n, e.n_targets), e.out_dtype)
    lab = np.empty(n, np.int64) if e.kind == CLASSIFIER else _NO_LABELS
    if n * e.n_trees < 2 * _PARALLEL_WORK:
        (e.entry or _entry(e))(x, e.buf, 0, n, z, lab)
    else:
        _split(x, e, n, z, lab)
    if lab is _NO_LABELS:
        return z
    # both C-contiguous and writeable: fresh here, or fresh from the string lookup
    return (lab if e.strings is None else e.strings[lab]), z


def _split(x: np.ndarray, e: Ensemble, n: int, z: np.ndarray, lab: np.ndarray) -> None:
    """evaluate split across the session's threads when the work is large enough: by rows, or by
    trees when there are too few rows for two row parts (the sums keep one thread's order either
    way)."""
    n_trees = e.n_trees
    work = n * n_trees
    if n < 2 * _MIN_PART_ROWS:  # too few rows for two row parts: split the trees
        parts = parts_for(n_trees, work, _PARALLEL_WORK) if e.simple else 1
        if parts <= 1:
            evaluate(x, e.buf, 0, n, z, lab)
            return
        leaves = np.empty(n_trees * n, np.uint32)
        tstep = -(-n_trees // parts)

        def trees(p: int) -> None:
            walk_trees(x, e.buf, n, min(n_trees, p * tstep), min(n_trees, (p + 1) * tstep), leaves)
        run_parts(trees, parts)
        score_leaves(x, e.buf, n, leaves, z, lab)
        return
    parts = parts_for(n // _MIN_PART_ROWS, work, _PARALLEL_WORK)
    if parts <= 1:
        evaluate(x, e.buf, 0, n, z, lab)
        return
    step = -(-n // parts)
    step = -(-step // _MIN_PART_ROWS) * _MIN_PART_ROWS

    def part(p: int) -> None:
        evaluate(x, e.buf, min(n, p * step), min(n, (p + 1) * step), z, lab)
    run_parts(part, parts)


def run_v5(x: np.ndarray, e: Ensemble) -> np.ndarray:
    """TreeEnsemble on a float16 input: run in float32, scores cast back."""
    if x.dtype == np.float16:
        return run(x.astype(np.float32), e).astype(np.float16)
    return run(x, e)


def _xdtype(node: Node, g: Graph) -> np.dtype | None:
    dt = g.type_of(node.inputs[0]).dtype
    return None if dt is None else np.dtype(dt)


def _lower_v3(node: Node, g: Graph) -> Call:
    return Call(run, [Ref(node.inputs[0]), build_v3(node.attrs, node.op_type, node.name, _xdtype(node, g))])


def _lower_v5(node: Node, g: Graph) -> Call:
    xdt = _xdtype(node, g)
    if xdt is not None and xdt == np.float16:  # run in float32 (scores float32, cast back by run_v5)
        return Call(run_v5, [Ref(node.inputs[0]), build_v5(node.attrs, node.name, np.dtype(np.float32))])
    return Call(run_v5 if xdt is None else run, [Ref(node.inputs[0]), build_v5(node.attrs, node.name, xdt)])


# The registered functions serve eager evaluation (constant folding) with the node's attributes;
# sessions go through the lower hooks, which build the Ensemble once.

@op("TreeEnsembleClassifier", since=1, domain=ML, lower=_lower_v3, infer=classifier_types)
def TreeEnsembleClassifier(x: np.ndarray, **attrs: Any) -> tuple[np.ndarray, np.ndarray]:
    return run(x, build_v3(attrs, "TreeEnsembleClassifier", "", x.dtype))


@op("TreeEnsembleRegressor", since=1, domain=ML, lower=_lower_v3, infer=float_types)
def TreeEnsembleRegressor(x: np.ndarray, **attrs: Any) -> np.ndarray:
    return run(x, build_v3(attrs, "TreeEnsembleRegressor", "", x.dtype))


@op("TreeEnsemble", since=5, domain=ML, lower=_lower_v5, infer=input_dtype)
def TreeEnsemble(x: np.ndarray, **attrs: Any) -> np.ndarray:
    xdt = np.dtype(np.float32) if x.dtype == np.float16 else x.dtype
    return run_v5(x, build_v5(attrs, "", xdt))
