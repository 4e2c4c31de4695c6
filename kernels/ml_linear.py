"""Linear models of ai.onnx.ml: LinearClassifier and LinearRegressor.

Scores are one float32 GEMM (BLAS, coefficients transposed once at lowering) plus the intercepts,
as onnxruntime computes them in float32 whatever the input type; the post-transforms are
onnxruntime's batched ones (kernels/ml_scores.py), including the binary classifier's second class
``[1 - s, s]`` (of the raw score, or of its logistic under LOGISTIC).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from jitort.errors import Fail, InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels.ml_scores import LOGISTIC, NONE, PROBIT, classifier_types, float_types, post_code, post_rows
from jitort.kernels.registry import Call, Ref, op
from jitort.arrays import contiguous

ML = "ai.onnx.ml"


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


def _weights(coefficients: list | None, intercepts: list | None, n_out: int, op_type: str,
             node: str) -> tuple[np.ndarray, np.ndarray]:
    coef = np.asarray(coefficients or [], np.float32)
    if coef.size == 0 or n_out <= 0 or coef.size % n_out:
        raise Fail(f"{op_type} node '{node}': {coef.size} coefficients do not split into {n_out} rows")
    b = np.asarray(intercepts, np.float32) if intercepts else np.zeros(n_out, np.float32)
    if b.size != n_out:
        raise Fail(f"{op_type} node '{node}': {b.size} intercepts for {n_out} outputs")
    return np.ascontiguousarray(coef.reshape(n_out, -1).T), b


def scores(x: np.ndarray, wt: np.ndarray, b: np.ndarray, op_type: str) -> np.ndarray:
    xs = rows_f32(x, op_type)
    if xs.shape[1] != wt.shape[0]:
        raise InvalidArgument(f"{op_type}: X has {xs.shape[1]} features, the coefficients {wt.shape[0]}")
    z = xs @ wt
    z += b
    return z


def run_linear_classifier(x: np.ndarray, wt: np.ndarray, b: np.ndarray, labels: np.ndarray, *, post: int,
                          second: bool, pos: Any, neg: Any) -> tuple[np.ndarray, np.ndarray]:
    z = scores(x, wt, b, "LinearClassifier")
    if z.shape[1] == 1:
        y = np.where(z[:, 0] > 0, np.array([pos], labels.dtype), np.array([neg], labels.dtype))
    else:
        y = labels[argmax_first(z)]
    if second:
        if post == LOGISTIC:  # onnxruntime 1.32 makes [1 - p, p] of the probability
            v = np.float32(1) / (np.float32(1) + np.exp(-np.abs(z)))
            z = np.where(z < 0, np.float32(1) - v, v)
        z = np.concatenate([np.float32(1) - z, z], axis=1)
    elif post != NONE:
        post_rows(z, post)
    return contiguous(y), contiguous(z)


def _lower_classifier(node: Node, g: Graph) -> Call:
    a = node.attrs
    strings, ints = list(a.get("classlabels_strings") or []), list(a.get("classlabels_ints") or [])
    if strings and ints:
        raise Fail(f"LinearClassifier node '{node.name}': both classlabels_strings and classlabels_ints are set")
    n_out = len(a.get("intercepts") or [])
    wt, b = _weights(a.get("coefficients"), a.get("intercepts"), n_out, "LinearClassifier", node.name)
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
    return Call(run_linear_classifier, [Ref(node.inputs[0]), wt, b, labels],
                dict(post=post, second=second, pos=pos, neg=neg))


@op("LinearClassifier", since=1, domain=ML, lower=_lower_classifier, infer=classifier_types)
def LinearClassifier(x: np.ndarray, **attrs: Any) -> tuple[np.ndarray, np.ndarray]:
    c = _lower_classifier(Node("LinearClassifier", ["x"], ["y", "z"], attrs, "", ML, 1), Graph([], [], [], {}))
    return c.fn(x, *c.args[1:], **c.kwargs)


def run_linear_regressor(x: np.ndarray, wt: np.ndarray, b: np.ndarray, *, post: int) -> np.ndarray:
    z = scores(x, wt, b, "LinearRegressor")
    if post != NONE:
        post_rows(z, post)
    return z


def _lower_regressor(node: Node, g: Graph) -> Call:
    a = node.attrs
    wt, b = _weights(a.get("coefficients"), a.get("intercepts"), int(a.get("targets", 1)), "LinearRegressor",
                     node.name)
    post = post_code(a.get("post_transform") or "NONE", "LinearRegressor", node.name)
    return Call(run_linear_regressor, [Ref(node.inputs[0]), wt, b], dict(post=post))


@op("LinearRegressor", since=1, domain=ML, lower=_lower_regressor, infer=float_types)
def LinearRegressor(x: np.ndarray, **attrs: Any) -> np.ndarray:
    c = _lower_regressor(Node("LinearRegressor", ["x"], ["y"], attrs, "", ML, 1), Graph([], [], [], {}))
    return c.fn(x, *c.args[1:], **c.kwargs)
