"""Score post-transforms of the ai.onnx.ml classifiers and regressors, in onnxruntime's arithmetic.

onnxruntime computes these in float32 whatever the score type (``ml_common.h``): the logistic as
``1 / (1 + exp(-|v|))`` mirrored for negative v, softmax with a float max and sum, SOFTMAX_ZERO
leaving zero scores at ``v * exp(-max)``, and PROBIT through a closed-form approximation of erfinv
(Winitzki's, relative error ~1e-3) rather than the exact function. Class decisions and tolerances
depend on that, so these are scalar ``@njit`` helpers the tree, linear and SVM kernels inline.

Post-transform codes are the opset-5 TreeEnsemble enum, shared by every op here.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from jitort.errors import InvalidArgument
from jitort.ir import TensorType

NONE, SOFTMAX, LOGISTIC, SOFTMAX_ZERO, PROBIT = 0, 1, 2, 3, 4
_POST_NAMES = {"NONE": NONE, "SOFTMAX": SOFTMAX, "LOGISTIC": LOGISTIC, "SOFTMAX_ZERO": SOFTMAX_ZERO,
               "PROBIT": PROBIT}

_F1 = np.float32(1.0)
_F2 = np.float32(2.0)
_SQRT2 = np.float32(math.sqrt(2.0))
_ERF_A = np.float32(0.147)
_ERF_B = np.float32(2.0) / (np.float32(math.pi) * np.float32(0.147))
_HALF = np.float32(0.5)
_TINY = np.float32(1e-7)
_FMAX = np.float32(np.finfo(np.float32).max)


def post_code(name: str, op_type: str, node: str) -> int:
    """The code of a ``post_transform`` string attribute (onnxruntime maps unknown names to PROBIT;
    jitort refuses them)."""
    code = _POST_NAMES.get(name)
    if code is None:
        raise InvalidArgument(f"{op_type} node '{node}': unknown post_transform '{name}' "
                              f"(expected one of {sorted(_POST_NAMES)})")
    return code


# a float division by 0 is inf or NaN, as in onnxruntime's C++ (a softmax of a row with nothing to sum: NaN)
_JIT = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_JIT)
def logistic(v: np.float32) -> np.float32:
    v = np.float32(v)
    e = _F1 / (_F1 + np.float32(math.exp(-abs(v))))
    return _F1 - e if v < 0 else e


@njit(**_JIT)
def erfinv(x: np.float32) -> np.float32:
    x = np.float32(x)
    sgn = np.float32(-1.0) if x < 0 else _F1
    x = (_F1 - x) * (_F1 + x)
    lg = np.float32(math.log(x))
    v = _ERF_B + _HALF * lg
    v2 = _F1 / _ERF_A * lg
    v3 = -v + np.float32(math.sqrt(v * v - v2))
    return sgn * np.float32(math.sqrt(v3))


@njit(**_JIT)
def probit(v: np.float32) -> np.float32:
    return _SQRT2 * erfinv(_F2 * np.float32(v) - _F1)


@njit(**_JIT)
def softmax_row(z: np.ndarray, n: int, zero: bool) -> None:
    """In place over z[:n] (float32); ``zero``: SOFTMAX_ZERO (scores within 1e-7 of 0 are not
    exponentiated but scaled by exp(-max))."""
    vmax = -_FMAX
    for k in range(n):
        if z[k] > vmax:
            vmax = z[k]
    s = np.float32(0.0)
    if zero:
        e0 = np.float32(math.exp(-vmax))
        for k in range(n):
            if z[k] > _TINY or z[k] < -_TINY:
                z[k] = np.float32(math.exp(z[k] - vmax))
                s += z[k]
            else:
                z[k] = z[k] * e0
    else:
        for k in range(n):
            z[k] = np.float32(math.exp(z[k] - vmax))
            s += z[k]
    for k in range(n):
        z[k] = z[k] / s


@njit(**_JIT)
def post_row(z: np.ndarray, n: int, post: int) -> None:
    """onnxruntime's ``write_scores`` for two or more scores: z[:n] float32, in place."""
    if post == PROBIT:
        for k in range(n):
            z[k] = probit(z[k])
    elif post == LOGISTIC:
        for k in range(n):
            z[k] = logistic(z[k])
    elif post == SOFTMAX:
        softmax_row(z, n, False)
    elif post == SOFTMAX_ZERO:
        softmax_row(z, n, True)


@njit(**_JIT)
def post_rows(z: np.ndarray, post: int) -> None:
    """onnxruntime's ``batched_update_scores_inplace`` without a second class: z [N, C] float32 in
    place; with one score per row only PROBIT applies."""
    n, c = z.shape
    for r in range(n):
        if c > 1:
            post_row(z[r], c, post)
        elif post == PROBIT:
            z[r, 0] = probit(z[r, 0])


def classifier_types(node: Any, ins: list[TensorType | None]) -> list[TensorType | None]:
    """Output types of an ai.onnx.ml classifier (``op(infer=...)``): labels, then float32 scores
    (dtypes only: onnx's inference gives the shapes where it can)."""
    labels = np.dtype(object) if node.attrs.get("classlabels_strings") else np.dtype(np.int64)
    return [TensorType(labels), TensorType(np.dtype(np.float32))]


def float_types(node: Any, ins: list[TensorType | None]) -> list[TensorType | None]:
    """One float32 output (ai.onnx.ml regressors and preprocessors)."""
    return [TensorType(np.dtype(np.float32))]


def input_dtype(node: Any, ins: list[TensorType | None]) -> list[TensorType | None]:
    """One output of the first input's dtype."""
    return [None if not ins or ins[0] is None else TensorType(ins[0].dtype)]
