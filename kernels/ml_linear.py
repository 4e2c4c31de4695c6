"""Linear models of ai.onnx.ml: LinearClassifier and LinearRegressor.

Scores are one float32 product ``X @ W^T + b`` (``Packed``: on jitort's packed GEMM, kernels/gemm.py,
the coefficients packed once at lowering and the intercepts as its bias, when there are 16 outputs
or more; else one vectorised dot product per score), rows split across the session's threads for
large batches, as onnxruntime computes them in float32 whatever the input type. One compiled pass then takes the labels and applies the post-transform
in place (onnxruntime's batched ones, kernels/ml_scores.py), including the binary classifier's
second class ``[1 - s, s]`` (of the raw score, or of its logistic under LOGISTIC).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from jitort.errors import Fail, InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels import gemm
from jitort.kernels.fastmath import exp_f32, sigmoid_f32
from jitort.kernels.ml_scores import (LOGISTIC, NONE, PROBIT, SOFTMAX, classifier_types, float_types, logistic,
                                      post_code, post_rows)
from jitort.kernels.registry import Call, Ref, op
from jitort.kernels.threads import parts_for, run_parts
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


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _dots(x: np.ndarray, w: np.ndarray, b: np.ndarray, out: np.ndarray, r0: int, r1: int) -> None:
    """out[r, j] = x[r] . w[j] + b[j] for rows r0..r1-1: each dot product one vectorised reduction over
    the features (its order fixed by the compiled code, not by the thread or the row)."""
    k = x.shape[1]
    for r in range(r0, r1):
        for j in range(w.shape[0]):
            s = np.float32(0.0)
            for f in range(k):
                s += x[r, f] * w[j, f]
            out[r, j] = s + b[j]


class Packed:
    """Coefficients W [C, F] and intercepts b [C], built once at lowering, for ``X @ W^T + b``: with a
    panel's worth of outputs or more (C >= 16) on jitort's packed GEMM (B = W^T packed by
    ``gemm.pack_b``, b as its bias); fewer outputs take ``_dots``, one reduction per score, since the
    GEMM pads B to 16 columns (measured on the 2-vCPU Zen 4 VM: 10,000 x 100 features to one output
    took ~3.4 ms on the GEMM, ~0.3-0.5 ms as dot products)."""

    def __init__(self, wt: np.ndarray, b: np.ndarray) -> None:
        self.k, self.n = wt.shape
        self.b = np.ascontiguousarray(b, np.float32).reshape(-1)
        if self.n >= gemm.PANEL:
            self.bp = gemm.pack_b(np.ascontiguousarray(wt, np.float32))
            self.bias = gemm.pad_bias(self.b, self.n)
        else:
            self.w = np.ascontiguousarray(np.asarray(wt, np.float32).T)

    def product(self, x: np.ndarray) -> np.ndarray:
        """x [M, K] float32 (C-contiguous) @ W^T + b: [M, C] float32, rows split across the session's
        threads when the work is large enough."""
        if self.n >= gemm.PANEL:
            return gemm.gemm(x, self.bp, self.n, self.bias, True)
        m = x.shape[0]
        out = np.empty((m, self.n), np.float32)
        parts = parts_for(m, 2.0 * m * self.k * self.n)
        if parts <= 1:
            _dots(x, self.w, self.b, out, 0, m)
            return out
        step = -(-m // parts)
        run_parts(lambda p: _dots(x, self.w, self.b, out, min(m, p * step), min(m, (p + 1) * step)), parts)
        return out


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
    """X (read as float32 rows) @ W^T + intercepts: [N, C] float32."""
    xs = rows_f32(x, op_type)
    if xs.shape[1] != w.k:
        raise InvalidArgument(f"{op_type}: X has {xs.shape[1]} features, the coefficients {w.k}")
    return w.product(xs)


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
def _finish_many(z: np.ndarray, post: int) -> np.ndarray:
    """Two or more scores per row: the first largest raw score's index, then the post-transform in place.
    LOGISTIC and SOFTMAX use jitort's inlined float32 exp (kernels/fastmath.py, within ~1e-7 of libm's,
    vectorisable), as onnxruntime's batched path uses MLAS's vectorised approximations; SOFTMAX_ZERO and
    PROBIT go through kernels/ml_scores.py."""
    idx = argmax_first(z)
    n, c = z.shape
    if post == LOGISTIC:
        zf = z.reshape(-1)
        for i in range(zf.size):
            zf[i] = sigmoid_f32(zf[i])
    elif post == SOFTMAX:
        for r in range(n):
            vmax = -_FMAX
            for k in range(c):
                if z[r, k] > vmax:
                    vmax = z[r, k]
            s = np.float32(0.0)
            for k in range(c):
                e = exp_f32(z[r, k] - vmax)
                z[r, k] = e
                s += e
            for k in range(c):
                z[r, k] = z[r, k] / s
    elif post != NONE:
        post_rows(z, post)
    return idx


def run_linear_classifier(x: np.ndarray, w: Packed, labels: np.ndarray, *, post: int, second: bool, pos: Any,
                          neg: Any) -> tuple[np.ndarray, np.ndarray]:
    z = scores(x, w, "LinearClassifier")
    if z.shape[1] == 1:
        idx, z = _finish_one(z, post, second)
        y = np.array([neg, pos], labels.dtype)[idx]
    else:
        y = labels[_finish_many(z, post)]
    return contiguous(y), contiguous(z)


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
