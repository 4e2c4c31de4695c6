"""Linear models of ai.onnx.ml: LinearClassifier and LinearRegressor.

Scores are one float32 product ``X @ W^T + b`` (``Packed``: up to 8 outputs as vectorised dot
products, all of a row's in one pass; more on jitort's packed GEMM, kernels/gemm.py, the coefficients
packed once at lowering and the intercepts as its bias), rows split across the session's threads for
large batches, as onnxruntime computes them in float32 whatever the input type. A classifier on the dot
products runs scores, labels and post-transform per block of rows in one compiled pass (``_classify``);
otherwise one compiled pass after the product takes the labels and applies the post-transform
(onnxruntime's batched ones, kernels/ml_scores.py), including the binary classifier's second class
``[1 - s, s]`` (of the raw score, or of its logistic under LOGISTIC).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from jitort.errors import Fail, InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels import gemm
from jitort.kernels.fastmath import exp_f32, sigmoid_f32
from jitort.kernels.ml_scores import (LOGISTIC, NONE, PROBIT, SOFTMAX, classifier_types, float_types, logistic,
                                      post_code, post_row, post_rows)
from jitort.kernels.registry import Call, Ref, op
from jitort.kernels.threads import parts_for, run_parts
from jitort.kernels.vecir import VB, Vec
from jitort.arrays import contiguous

ML = "ai.onnx.ml"
_FMAX = np.float32(np.finfo(np.float32).max)


def rows_f32(x: np.ndarray, op_type: str) -> np.ndarray:
    """X as [N, F] float32 rows (a 1-D X is one row), as onnxruntime's ML kernels read it."""
    if x.ndim == 0:
        raise InvalidArgument(f"{op_type}: input shape needs to be at least a single dimension")
    x2 = x.reshape(1, -1) if x.ndim == 1 else x.reshape(x.shape[0], -1)
    return np.ascontiguousarray(x2, np.float32)


@njit(cache=True, nogil=True)
def argmax_first(z: np.ndarray) -> np.ndarray:
    """Per row the first index of the largest score, compared with ``>`` (a NaN never wins)."""
    n, c = z.shape
    out = np.zeros(n, np.int64)
    for r in range(n):
        best = z[r, 0]
        for k in range(1, c):
            if z[r, k] > best:
                best = z[r, k]
                out[r] = k
    return out


@intrinsic
def _dot_block(typingctx, vbytes, J, x, xo, w, j0, nj, k, out, oo, bias):  # type: ignore[no-untyped-def]
    """out[oo + j] = x[xo:xo+k] . w[j0 + j] + bias[j0 + j] for j < nj <= J (vbytes the vector width in
    bytes and J, 4 or 8, literals; float32,
    C-contiguous; w [C, k] flattened): per product one fma chain over the host's vectors (the last one
    masked), the J chains interleaved, then one tree of shuffles and adds that halves every chain's
    lanes together, ending with the J sums in one vector (``_sum_lanes``). Numba's own loop (a
    reassociated reduction per product, four 8-lane accumulators, a scalar tail) took 1.2-2.8x as long
    on the Ice Lake VM, 1 thread, 10,000 rows: 50 features to 3 outputs 439 vs 157 us, to 1 output 174
    vs 143; 100 features to 5 outputs 1.5x the GEMM's time on padded panels, now 0.8x. Products past nj
    compute on the last one's weights and are not stored."""
    if not isinstance(J, types.IntegerLiteral) or not isinstance(vbytes, types.IntegerLiteral):
        return None
    if x != types.float32[::1] or w != types.float32[::1] or out != types.float32[::1] or bias != types.float32[::1]:
        return None
    sig = types.void(vbytes, J, x, xo, w, j0, nj, k, out, oo, bias)
    nJ, VBY = J.literal_value, vbytes.literal_value

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        b = builder
        v = Vec(context, b, types.float32, VBY)
        xo_, j0_, nj_, k_, oo_ = (context.cast(b, args[i], signature.args[i], types.int64) for i in (3, 5, 6, 7, 9))
        px = v.data(signature.args[2], args[2], xo_)
        pw = []
        for j in range(nJ):
            jj = b.add(j0_, b.select(b.icmp_signed("<", v.c(j), nj_), v.c(j), b.sub(nj_, v.c(1))))
            pw.append(v.data(signature.args[4], args[4], b.mul(jj, k_)))
        VL = v.c(v.VL)
        nfull = b.sdiv(k_, VL)
        pre = b.block
        loop, done = b.append_basic_block("dot.loop"), b.append_basic_block("dot.done")
        b.cbranch(b.icmp_signed(">", nfull, v.c(0)), loop, done)
        b.position_at_end(loop)
        i = b.phi(v.i64)
        acc = [b.phi(v.vty) for _ in range(nJ)]
        i.add_incoming(v.c(0), pre)
        for a in acc:
            a.add_incoming(v.zero, pre)
        off = b.mul(i, VL)
        xv = v.load(v.at(px, off))
        nxt = [v.fma(xv, v.load(v.at(pw[j], off)), acc[j]) for j in range(nJ)]
        i1 = b.add(i, v.c(1))
        i.add_incoming(i1, loop)
        for a, n in zip(acc, nxt):
            a.add_incoming(n, loop)
        b.cbranch(b.icmp_signed("<", i1, nfull), loop, done)
        b.position_at_end(done)
        totals = [b.phi(v.vty) for _ in range(nJ)]
        for t, n in zip(totals, nxt):
            t.add_incoming(v.zero, pre)
            t.add_incoming(n, loop)
        off = b.mul(nfull, VL)
        mask = v.below(b.sub(k_, off))
        xv = v.mload(v.at(px, off), mask)
        sums = _sum_lanes(b, v.i32, [v.fma(xv, v.mload(v.at(pw[j], off), mask), totals[j]) for j in range(nJ)])
        pout = v.data(signature.args[8], args[8], oo_)
        pb = v.data(signature.args[10], args[10], j0_)
        for j in range(nJ):
            s = b.fadd(b.extract_element(sums, ir.Constant(v.i32, j)), b.load(v.at(pb, j)))
            with b.if_then(b.icmp_signed("<", v.c(j), nj_), likely=True):
                b.store(s, v.at(pout, j))
        return context.get_dummy_value()

    return sig, codegen


def _sum_lanes(b: ir.IRBuilder, i32: ir.Type, vecs: list[ir.Value]) -> ir.Value:
    """One vector whose lane j is the sum of vecs[j]'s lanes (len(vecs) a power of two <= the lanes):
    pairs of vectors merge into one that holds each one's lanes halved (its low half plus its high
    half), until one vector is left, whose groups then halve in place. A fixed tree: each sum's order
    depends only on the vector width."""
    n = vecs[0].type.count
    groups, width = 1, n  # each vector: `groups` groups of `width` lanes, one per product, in order
    while len(vecs) > 1:
        h = width // 2
        lo = [g * width + t for g in range(groups) for t in range(h)]
        lo = lo + [n + i for i in lo]
        hi = [i + h for i in lo]
        vecs = [b.fadd(b.shuffle_vector(x, y, ir.Constant(ir.VectorType(i32, n), lo)),
                       b.shuffle_vector(x, y, ir.Constant(ir.VectorType(i32, n), hi)))
                for x, y in zip(vecs[0::2], vecs[1::2])]
        groups, width = groups * 2, h
    res = vecs[0]
    while width > 1:
        h = width // 2
        lo = [g * width + t for g in range(groups) for t in range(h)]
        hi = [i + h for i in lo]
        m = len(lo)
        res = b.fadd(b.shuffle_vector(res, res, ir.Constant(ir.VectorType(i32, m), lo)),
                     b.shuffle_vector(res, res, ir.Constant(ir.VectorType(i32, m), hi)))
        width = h
    return res


@njit(inline="always", nogil=True, error_model="numpy")
def _dots_at(VBY, x, w, b, out, r0, r1):  # type: ignore[no-untyped-def]
    k = x.shape[1]
    c = w.shape[0]
    xf, wf, of = x.reshape(-1), w.reshape(-1), out.reshape(-1)
    for r in range(r0, r1):
        j = 0
        while c - j > 4:
            _dot_block(VBY, 8, xf, r * k, wf, j, min(8, c - j), k, of, r * c + j, b)
            j += 8
        if j < c:
            _dot_block(VBY, 4, xf, r * k, wf, j, c - j, k, of, r * c + j, b)


@njit(cache=True, nogil=True, error_model="numpy")
def _dots(x: np.ndarray, w: np.ndarray, b: np.ndarray, out: np.ndarray, r0: int, r1: int) -> None:
    """out[r, j] = x[r] . w[j] + b[j] for rows r0..r1-1, 4 or 8 products per pass over a row
    (``_dot_block`` with the host's vectors: each sum's order fixed by the number of features and the
    vector width, not by the thread, the row or the batch)."""
    _dots_at(VB, x, w, b, out, r0, r1)


@njit(cache=True, nogil=True, error_model="numpy")
def dots_avx2(x: np.ndarray, w: np.ndarray, b: np.ndarray, out: np.ndarray, r0: int, r1: int) -> None:
    """``_dots`` with 32-byte vectors whatever the host (tests run the AVX2 hosts' code on AVX-512)."""
    _dots_at(32, x, w, b, out, r0, r1)


class Packed:
    """Coefficients W [C, F] and intercepts b [C], built once at lowering, for ``X @ W^T + b``.

    Up to ``DOT_OUTPUTS`` outputs, as dot products (``_dots``: all of a row's products in one pass over
    it), rows split across the session's threads by ``run_parts``. More, on jitort's packed GEMM
    (kernels/gemm.py: B = W^T padded with zero columns to whole 16-column panels, packed by
    ``gemm.pack_b``, b as its bias), which splits natively; the product keeps the padded columns
    (``padded``) so that the GEMM writes its panels in place. The path depends on the outputs only, so
    that a row's scores are the same bits in any batch. Measured on the 2-vCPU Intel Xeon (Ice Lake-SP,
    AVX-512) dev VM, 1 thread, 10,000 rows, dot products vs the GEMM (its 12-row narrow tile), one
    process: 100 features to 5 outputs 641 vs 788 us, 50 to 3 273 vs 427, 50 to 1 266 vs 426; 20 to 16
    616 vs 196."""

    def __init__(self, wt: np.ndarray, b: np.ndarray) -> None:
        self.k, self.n = wt.shape
        self.b = np.ascontiguousarray(b, np.float32).reshape(-1)
        self.w = np.ascontiguousarray(np.asarray(wt, np.float32).T)
        self.npad = -(-self.n // gemm.PANEL) * gemm.PANEL
        if self.n > DOT_OUTPUTS:
            wp = np.zeros((self.k, self.npad), np.float32)
            wp[:, :self.n] = wt
            self.bp = gemm.pack_b(wp)
            self.bias = gemm.pad_bias(self.b, self.n)

    def padded(self, x: np.ndarray) -> np.ndarray:
        """x [M, K] float32 (C-contiguous) @ W^T + b as [M, C'] float32 whose first C columns are the
        scores: C' = C, or the GEMM's whole panels (the padding columns are not read)."""
        m = x.shape[0]
        if self.n > DOT_OUTPUTS:
            out = np.empty((m, self.npad), np.float32)
            if m and not gemm.gemm_small(x, self.bp, self.npad, self.bias, 1, 0, 0.0, 0.0, out):
                gemm.gemm(x, self.bp, self.npad, self.bias, True, out=out)
            return out
        out = np.empty((m, self.n), np.float32)
        parts = parts_for(m, float(m) * (self.k + 64), _DOT_UNITS_PER_PART)
        if parts <= 1:
            _dots(x, self.w, self.b, out, 0, m)
            return out
        step = -(-m // parts)
        run_parts(lambda p: _dots(x, self.w, self.b, out, min(m, p * step), min(m, (p + 1) * step)), parts)
        return out

    def product(self, x: np.ndarray) -> np.ndarray:
        """x [M, K] float32 (C-contiguous) @ W^T + b: [M, C] float32."""
        z = self.padded(x)
        return z if z.shape[1] == self.n else np.ascontiguousarray(z[:, :self.n])


DOT_OUTPUTS = 8  # outputs up to which the dot products beat the GEMM (one 8-product pass per row)
# _dots' cost unit: a (row, feature + 64) step, ~0.3 ns on the Ice Lake VM (10,000 rows of 50 features:
# 270 us); ~50 us of work per part
_DOT_UNITS_PER_PART = 150_000.0


def _weights(coefficients: list | None, intercepts: list | None, n_out: int, op_type: str,
             node: str) -> Packed:
    coef = np.asarray(coefficients or [], np.float32)
    if coef.size == 0 or n_out <= 0 or coef.size % n_out:
        raise Fail(f"{op_type} node '{node}': {coef.size} coefficients do not split into {n_out} rows")
    b = np.asarray(intercepts, np.float32) if intercepts else np.zeros(n_out, np.float32)
    if b.size != n_out:
        raise Fail(f"{op_type} node '{node}': {b.size} intercepts for {n_out} outputs")
    return Packed(coef.reshape(n_out, -1).T, b)


def scores(x: np.ndarray, w: Packed, op_type: str) -> np.ndarray:
    """X (read as float32 rows) @ W^T + intercepts: [N, C'] float32, the scores in the first C
    columns (``Packed.padded``)."""
    xs = rows_f32(x, op_type)
    if xs.shape[1] != w.k:
        raise InvalidArgument(f"{op_type}: X has {xs.shape[1]} features, the coefficients {w.k}")
    return w.padded(xs)


@njit(cache=True, nogil=True)
def _finish_one(z: np.ndarray, post: int, second: bool) -> tuple[np.ndarray, np.ndarray]:
    """One score per row: label index 1 where the raw score is > 0; the scores [N, 2] ``[1 - s, s]``
    (s the logistic of the score under LOGISTIC) when ``second``, else z [N, 1] post-transformed."""
    n = z.shape[0]
    idx = np.zeros(n, np.int64)
    for r in range(n):
        if z[r, 0] > 0:
            idx[r] = 1
    if not second:
        post_rows(z, post)
        return idx, z
    out = np.empty((n, 2), np.float32)
    one = np.float32(1)
    for r in range(n):
        s = logistic(z[r, 0]) if post == LOGISTIC else z[r, 0]
        out[r, 0] = one - s
        out[r, 1] = s
    return idx, out


@njit(cache=True, nogil=True, error_model="numpy")
def _finish_many(zp: np.ndarray, c: int, post: int, z: np.ndarray, idx: np.ndarray, r0: int, r1: int) -> None:
    """Two or more scores per row, rows r0..r1-1: idx[r] the first largest raw score's index among
    zp[r, :c], z[r] the post-transformed scores. LOGISTIC and SOFTMAX use jitort's inlined float32 exp
    (kernels/fastmath.py, within ~1e-7 of libm's, vectorisable), as onnxruntime's batched path uses
    MLAS's vectorised approximations; SOFTMAX_ZERO and PROBIT go through kernels/ml_scores.py."""
    for r in range(r0, r1):
        best = zp[r, 0]
        at = 0
        for k in range(c):
            z[r, k] = zp[r, k]
            if zp[r, k] > best:  # a NaN never wins
                best = zp[r, k]
                at = k
        idx[r] = at
    if post == LOGISTIC:  # one flat loop over the block's scores: it vectorises
        zf = z[r0:r1].reshape(-1)
        for i in range(zf.size):
            zf[i] = sigmoid_f32(zf[i])
    elif post == SOFTMAX:  # the exps as one flat loop over the block (it vectorises; a row's c alone do not)
        for r in range(r0, r1):
            vmax = -_FMAX
            for k in range(c):
                if z[r, k] > vmax:
                    vmax = z[r, k]
            for k in range(c):
                z[r, k] = z[r, k] - vmax
        zf = z[r0:r1].reshape(-1)
        for i in range(zf.size):
            zf[i] = exp_f32(zf[i])
        for r in range(r0, r1):
            s = np.float32(0.0)
            for k in range(c):
                s += z[r, k]
            inv = np.float32(1.0) / s  # MLAS's softmax scales by the sum's reciprocal too
            for k in range(c):
                z[r, k] = z[r, k] * inv
    elif post != NONE:
        for r in range(r0, r1):
            post_row(z[r], c, post)


# _finish_many's cost unit: one score, ~5 ns under SOFTMAX on the Ice Lake VM (10,000 x 5: 271 us);
# ~50 us of work per part
_SCORES_PER_PART = 12_000.0


def _finish(zp: np.ndarray, c: int, post: int) -> tuple[np.ndarray, np.ndarray]:
    """(label indices [N], scores [N, c]) of the padded scores zp, rows split across threads."""
    n = zp.shape[0]
    z = np.empty((n, c), np.float32)
    idx = np.empty(n, np.int64)
    parts = parts_for(n, float(n) * c, _SCORES_PER_PART)
    if parts <= 1:
        _finish_many(zp, c, post, z, idx, 0, n)
    else:
        step = -(-n // parts)
        run_parts(lambda p: _finish_many(zp, c, post, z, idx, min(n, p * step), min(n, (p + 1) * step)), parts)
    return idx, z


def run_linear_classifier(x: np.ndarray, w: Packed, labels: np.ndarray, *, post: int, second: bool, pos: Any,
                          neg: Any) -> tuple[np.ndarray, np.ndarray]:
    if 2 <= w.n <= DOT_OUTPUTS:
        idx, z = _classify_rows(rows_f32(x, "LinearClassifier"), w, post)
        return contiguous(labels[idx]), z
    z = scores(x, w, "LinearClassifier")
    if w.n == 1:
        idx, z = _finish_one(z, post, second)
        y = np.array([neg, pos], labels.dtype)[idx]
    else:
        idx, z = _finish(z, w.n, post)
        y = labels[idx]
    return contiguous(y), contiguous(z)


@njit(cache=True, nogil=True, error_model="numpy")
def _classify(x: np.ndarray, w: np.ndarray, b: np.ndarray, post: int, z: np.ndarray, idx: np.ndarray, r0: int,
              r1: int) -> None:
    """Rows r0..r1-1 of a classifier on the dot products: scores, then labels and the post-transform in
    place, 256 rows at a time (still in L1/L2)."""
    for s in range(r0, r1, 256):
        e = min(r1, s + 256)
        _dots(x, w, b, z, s, e)
        _finish_many(z, w.shape[0], post, z, idx, s, e)


def _classify_rows(xs: np.ndarray, w: Packed, post: int) -> tuple[np.ndarray, np.ndarray]:
    """(label indices, scores) of a classifier with 2..DOT_OUTPUTS outputs: one pass per block of rows,
    the rows split across the session's threads (one hand-over for both steps)."""
    if xs.shape[1] != w.k:
        raise InvalidArgument(f"LinearClassifier: X has {xs.shape[1]} features, the coefficients {w.k}")
    m = xs.shape[0]
    z = np.empty((m, w.n), np.float32)
    idx = np.empty(m, np.int64)
    parts = parts_for(m, float(m) * (w.k + 64 + 8 * w.n), _DOT_UNITS_PER_PART)
    if parts <= 1:
        _classify(xs, w.w, w.b, post, z, idx, 0, m)
    else:
        step = -(-m // parts)
        run_parts(lambda p: _classify(xs, w.w, w.b, post, z, idx, min(m, p * step), min(m, (p + 1) * step)), parts)
    return idx, z


run_linear_classifier.own_threads = True  # type: ignore[attr-defined]  # jitort.compiled.Artifact.own_threads


def _lower_classifier(node: Node, g: Graph) -> Call:
    a = node.attrs
    strings, ints = list(a.get("classlabels_strings") or []), list(a.get("classlabels_ints") or [])
    if strings and ints:
        raise Fail(f"LinearClassifier node '{node.name}': both classlabels_strings and classlabels_ints are set")
    n_out = len(a.get("intercepts") or [])
    w = _weights(a.get("coefficients"), a.get("intercepts"), n_out, "LinearClassifier", node.name)
    labels = np.array(strings, object) if strings else np.array(ints, np.int64)
    post = post_code(a.get("post_transform") or "NONE", "LinearClassifier", node.name)
    if n_out > 1 and len(labels) < n_out:
        raise Fail(f"LinearClassifier node '{node.name}': {n_out} classes but {len(labels)} class labels")
    second = n_out == 1 and len(labels) == 2
    if second and post == PROBIT:
        raise OrtNotImplemented(f"LinearClassifier node '{node.name}' (domain {ML}, opset {node.version}): "
                                "PROBIT on a binary model with one coefficient row (onnxruntime leaves the "
                                "second score column unwritten)")
    if len(labels) == 2:
        pos, neg = labels[1], labels[0]
    else:
        pos, neg = ("1", "0") if strings else (1, 0)
    return Call(run_linear_classifier, [Ref(node.inputs[0]), w, labels],
                dict(post=post, second=second, pos=pos, neg=neg))


@op("LinearClassifier", since=1, domain=ML, lower=_lower_classifier, infer=classifier_types)
def LinearClassifier(x: np.ndarray, **attrs: Any) -> tuple[np.ndarray, np.ndarray]:
    c = _lower_classifier(Node("LinearClassifier", ["x"], ["y", "z"], attrs, "", ML, 1), Graph([], [], [], {}))
    return c.fn(x, *c.args[1:], **c.kwargs)


def run_linear_regressor(x: np.ndarray, w: Packed, *, post: int) -> np.ndarray:
    z = scores(x, w, "LinearRegressor")
    if z.shape[1] != w.n:
        z = np.ascontiguousarray(z[:, :w.n])
    if post != NONE:
        post_rows(z, post)
    return z


run_linear_regressor.own_threads = True  # type: ignore[attr-defined]


def _lower_regressor(node: Node, g: Graph) -> Call:
    a = node.attrs
    w = _weights(a.get("coefficients"), a.get("intercepts"), int(a.get("targets", 1)), "LinearRegressor",
                 node.name)
    post = post_code(a.get("post_transform") or "NONE", "LinearRegressor", node.name)
    return Call(run_linear_regressor, [Ref(node.inputs[0]), w], dict(post=post))


@op("LinearRegressor", since=1, domain=ML, lower=_lower_regressor, infer=float_types)
def LinearRegressor(x: np.ndarray, **attrs: Any) -> np.ndarray:
    c = _lower_regressor(Node("LinearRegressor", ["x"], ["y"], attrs, "", ML, 1), Graph([], [], [], {}))
    return c.fn(x, *c.args[1:], **c.kwargs)
