"""The com.microsoft versions of Trilu, Range and Inverse that onnxruntime's CPU provider registers
(opset 1 of its domain). Trilu and Range compute as their default-domain namesakes (kernels/movement.py,
kernels/shape.py), Range with ``delta`` optional (default 1). Inverse inverts the last two dims of [..., n, n] (LU with
partial pivoting, numpy's), float16 through float32. A singular matrix has no inverse: onnxruntime's
Eigen inverse returns inf/nan there without an error; jitort returns inf for such a matrix (not an
error either; the values are not claimed to equal Eigen's)."""
from __future__ import annotations

import numpy as np

from jitort.errors import InvalidArgument
from jitort.ir import Node, TensorType
from jitort.kernels.contrib_infer import same_as_input
from jitort.kernels.movement import Trilu as _Trilu
from jitort.kernels.registry import op
from jitort.kernels.shape import Range as _Range
from jitort.protos import unknown_dim

MS = "com.microsoft"


@op("Trilu", since=1, domain=MS, infer=same_as_input)
def Trilu(X: np.ndarray, k: np.ndarray | None = None, *, upper: int = 1) -> np.ndarray:
    return _Trilu(X, k, upper=upper)


def _infer_range(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    s = ins[0] if ins else None
    return [TensorType(s.dtype, (unknown_dim(),))] if s is not None else []


@op("Range", since=1, domain=MS, infer=_infer_range)
def Range(start: np.ndarray, limit: np.ndarray, delta: np.ndarray | None = None) -> np.ndarray:
    if start.dtype != limit.dtype or (delta is not None and delta.dtype != start.dtype):
        raise InvalidArgument("Range: start, limit and delta must share one type")
    return _Range(start, limit, np.ones((), start.dtype) if delta is None else delta)


@op("Inverse", since=1, domain=MS, infer=same_as_input)
def Inverse(X: np.ndarray) -> np.ndarray:
    if X.ndim < 2 or X.shape[-1] != X.shape[-2]:
        raise InvalidArgument(f"Inverse: X of shape {list(X.shape)} must be [..., n, n]")
    if X.dtype not in (np.float32, np.float64, np.float16):
        raise InvalidArgument(f"Inverse: element type {X.dtype} is not float16, float or double")
    x = X.astype(np.float32) if X.dtype == np.float16 else X
    with np.errstate(all="ignore"):
        try:
            y = np.linalg.inv(x)
        except np.linalg.LinAlgError:  # singular: what a pivoted LU without the check gives
            y = np.full(x.shape, np.inf, x.dtype)
            for idx in np.ndindex(*x.shape[:-2]):
                try:
                    y[idx] = np.linalg.inv(x[idx])
                except np.linalg.LinAlgError:
                    pass
    return np.ascontiguousarray(y.astype(X.dtype, copy=False))
