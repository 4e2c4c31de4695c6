"""onnxruntime's QGemm (com.microsoft): a Gemm on quantised operands.

``acc = (A' - a_zero_point) @ (B' - b_zero_point) + C`` in integers (A' and B' optionally
transposed; C an int32 bias broadcast to [M, N]), then with ``y_scale``: ``Y = clip(rint(acc *
m) + y_zero_point)`` in y_zero_point's type, ``m = alpha * a_scale * b_scale / y_scale``; without it,
``Y = float(acc) * (alpha * a_scale * b_scale)`` float32. b_scale and b_zero_point are per tensor
or per output column [N]. The multipliers are float32, products taken in onnxruntime's order; rounding
is half to even (MLAS's requantisation). The integer product is a float64 BLAS product: exact while
|acc| < 2**53, i.e. for any K below 2**37 / 255**2."""
from __future__ import annotations

import numpy as np

from jitort.errors import InvalidArgument
from jitort.ir import Node, TensorType
from jitort.kernels.registry import op

MS = "com.microsoft"


def _per_column(v: np.ndarray, N: int, what: str) -> np.ndarray:
    if v.size not in (1, N):
        raise InvalidArgument(f"QGemm: {what} of shape {list(v.shape)} must be a scalar or [{N}]")
    return v.reshape(-1)


def _infer(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    a, b = ins[0], ins[3] if len(ins) > 3 else None
    yzp = ins[8] if len(ins) > 8 else None
    ys = ins[7] if len(ins) > 7 else None
    if a is None or b is None or a.shape is None or b.shape is None or len(a.shape) != 2 or len(b.shape) != 2:
        return []
    M = a.shape[1] if node.attrs.get("transA", 0) else a.shape[0]
    N = b.shape[0] if node.attrs.get("transB", 0) else b.shape[1]
    if ys is None:
        dt = np.dtype(np.float32)
    elif yzp is not None and yzp.dtype is not None:
        dt = yzp.dtype
    else:
        dt = np.dtype(np.uint8)
    return [TensorType(dt, (M, N))]


@op("QGemm", since=1, domain=MS, infer=_infer)
def QGemm(A: np.ndarray, a_scale: np.ndarray, a_zero_point: np.ndarray, B: np.ndarray, b_scale: np.ndarray,
          b_zero_point: np.ndarray, C: np.ndarray | None = None, y_scale: np.ndarray | None = None,
          y_zero_point: np.ndarray | None = None, *, alpha: float = 1.0, transA: int = 0,
          transB: int = 0) -> np.ndarray:
    for x, what in ((A, "A"), (B, "B")):
        if x.dtype not in (np.int8, np.uint8) or x.ndim != 2:
            raise InvalidArgument(f"QGemm: {what} must be a 2-D int8 or uint8 matrix, got {x.dtype}{list(x.shape)}")
    a = A.T if transA else A
    b = B.T if transB else B
    M, K = a.shape
    if b.shape[0] != K:
        raise InvalidArgument(f"QGemm: A' {list(a.shape)} and B' {list(b.shape)} do not multiply")
    N = b.shape[1]
    if a_scale.size != 1 or a_zero_point.size != 1:
        raise InvalidArgument("QGemm: a_scale and a_zero_point must be scalars")
    bs = _per_column(b_scale, N, "b_scale").astype(np.float32)
    bz = _per_column(b_zero_point, N, "b_zero_point").astype(np.float64)
    af = a.astype(np.float64) - float(a_zero_point.reshape(-1)[0])
    acc = af @ (b.astype(np.float64) - bz)
    if C is not None:
        if C.dtype != np.int32:
            raise InvalidArgument(f"QGemm: C must be int32, got {C.dtype}")
        try:
            acc = acc + np.broadcast_to(C, (M, N))
        except ValueError:
            raise InvalidArgument(f"QGemm: C of shape {list(C.shape)} does not broadcast to [{M}, {N}]") from None
    scale = np.float32(alpha) * np.float32(a_scale.reshape(-1)[0]) * bs
    if y_scale is None:
        return np.ascontiguousarray((acc.astype(np.float32) * scale).astype(np.float32))
    if y_scale.size != 1:
        raise InvalidArgument("QGemm: y_scale must be a scalar")
    dt = y_zero_point.dtype if y_zero_point is not None else np.dtype(np.uint8)
    if dt not in (np.int8, np.uint8):
        raise InvalidArgument(f"QGemm: y_zero_point must be int8 or uint8, got {dt}")
    zp = 0 if y_zero_point is None else int(y_zero_point.reshape(-1)[0])
    m = scale / np.float32(y_scale.reshape(-1)[0])
    info = np.iinfo(dt)
    v = np.clip(acc.astype(np.float32) * m, np.float32(info.min - zp), np.float32(info.max - zp))
    return np.ascontiguousarray((np.rint(v) + zp).astype(dt))
