"""onnxruntime's quantised elementwise ops (com.microsoft): QLinearAdd, QLinearMul, QLinearSigmoid,
QLinearLeakyRelu, QLinearConcat, QLinearGlobalAveragePool.

Each is its float op between a dequantisation and a requantisation: ``x = (q - zp) * scale`` in
float32, the op, ``y = clip(rint(v / y_scale + y_zp))`` (round half to even; the zero point added
before rounding as onnxruntime's kernels do, after it for QLinearConcat) in the zero point's type. Scales and zero points are per tensor, as onnxruntime's kernels take them.

QLinearAdd/QLinearMul on operands of one shape (or one repeated whole along the other: a scalar, a
bias) and QLinearGlobalAveragePool run as
one compiled pass (``_binary8``, ``_gap8``, ``_gap8_last``) computing the same float32 operations in the same order
as the numpy path, which the other cases take (its temporaries cost ~3 ms for a QLinearAdd of 800K
elements on the Ice Lake VM; onnxruntime 0.1 ms).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from jitort.errors import InvalidArgument
from jitort.ir import Node, TensorType
from jitort.kernels.contrib_infer import infer_as, same_as_input
from jitort.kernels.registry import op
from jitort.passes.shapes import broadcast_shapes

MS = "com.microsoft"


def _scalar(v: np.ndarray | None, op_name: str, what: str, default: float = 0.0) -> float:
    if v is None:
        return default
    if v.size != 1:
        raise InvalidArgument(f"{op_name}: {what} must be a scalar (per-tensor), got shape {list(v.shape)}")
    return float(v.reshape(-1)[0])


def _check(q: np.ndarray, op_name: str) -> None:
    if q.dtype not in (np.int8, np.uint8):
        raise InvalidArgument(f"{op_name}: quantised inputs must be int8 or uint8, got {q.dtype}")


def dequant(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, op_name: str) -> np.ndarray:
    _check(q, op_name)
    return (q.astype(np.float32) - np.float32(_scalar(zp, op_name, "zero point"))) * \
        np.float32(_scalar(scale, op_name, "scale"))


def quant(v: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, dtype: np.dtype, op_name: str,
          zp_first: bool = True) -> np.ndarray:
    """Requantise; ``zp_first``: the zero point added before rounding, as onnxruntime's MLAS kernels
    do (ties land differently); otherwise after, as QuantizeLinear (onnxruntime's QLinearConcat)."""
    info = np.iinfo(dtype)
    z = np.float32(_scalar(zp, op_name, "zero point"))
    q = v / np.float32(_scalar(scale, op_name, "scale"))
    y = np.rint(q + z) if zp_first else np.rint(q) + z
    return np.ascontiguousarray(np.clip(y, info.min, info.max).astype(dtype))


_JIT = dict(cache=True, nogil=True, error_model="numpy")


@njit(inline="always")
def _qadd(x1, x2, ra, rb, zc, lo, hi, mul):  # type: ignore[no-untyped-def]
    v = (x1 * x2) * ra if mul else x1 * ra + x2 * rb
    return min(max(np.rint(v + zc), lo), hi)


@njit(**_JIT)
def _binary8(a, b, za, zb, ra, rb, zc, lo, hi, mul, y):  # type: ignore[no-untyped-def]
    """y = clip(rint(v + zc), lo, hi) with v = (a - za) ra + (b - zb) rb, or with ``mul``
    ((a - za)(b - zb)) ra, in float32; a, b and y 1-D of one length, or a or b of length 1, or
    repeated whole along the other (each case its own loop: a run-time stride keeps LLVM from
    vectorising)."""
    n = y.shape[0]
    if a.shape[0] == n and b.shape[0] == n:
        for i in range(n):
            y[i] = _qadd(np.float32(a[i]) - za, np.float32(b[i]) - zb, ra, rb, zc, lo, hi, mul)
    elif b.shape[0] == 1:
        x2 = np.float32(b[0]) - zb
        for i in range(n):
            y[i] = _qadd(np.float32(a[i]) - za, x2, ra, rb, zc, lo, hi, mul)
    elif a.shape[0] == 1:
        x1 = np.float32(a[0]) - za
        for i in range(n):
            y[i] = _qadd(x1, np.float32(b[i]) - zb, ra, rb, zc, lo, hi, mul)
    elif a.shape[0] == n:  # b repeats along the rows of a (a bias [m] added to [..., m])
        m = b.shape[0]
        for r in range(0, n, m):  # row views: indices known non-negative, so the loop vectorises
            yr, ar = y[r:r + m], a[r:r + m]
            for i in range(m):
                yr[i] = _qadd(np.float32(ar[i]) - za, np.float32(b[i]) - zb, ra, rb, zc, lo, hi, mul)
    else:  # a repeats along the rows of b
        m = a.shape[0]
        for r in range(0, n, m):
            yr, br = y[r:r + m], b[r:r + m]
            for i in range(m):
                yr[i] = _qadd(np.float32(a[i]) - za, np.float32(br[i]) - zb, ra, rb, zc, lo, hi, mul)


@njit(**_JIT)
def _gap8(x, zx, size, ratio, zy, lo, hi, y):  # type: ignore[no-untyped-def]
    """y[r] = clip(rint(float32(sum(x[r]) - zx size) ratio + zy), lo, hi) for rows r of x [R, size]."""
    for r in range(x.shape[0]):
        t = 0
        row = x[r]
        for i in range(size):
            t += np.int64(row[i])
        y[r] = min(max(np.rint(np.float32(t - zx * size) * ratio + zy), lo), hi)


@njit(**_JIT)
def _gap8_last(x, zx, ratio, zy, lo, hi, y):  # type: ignore[no-untyped-def]
    """``_gap8`` for channels last: y[n, c] from x [N, size, C] (the sums over pixels run along C)."""
    N, size, C = x.shape
    t = np.empty(C, np.int64)
    for n in range(N):
        for c in range(C):
            t[c] = 0
        for i in range(size):
            row = x[n, i]
            for c in range(C):
                t[c] += np.int64(row[c])
        for c in range(C):
            y[n, c] = min(max(np.rint(np.float32(t[c] - zx * size) * ratio + zy), lo), hi)


def _repeats(small: tuple[int, ...], big: tuple[int, ...]) -> bool:
    """Broadcasting ``small`` to ``big`` repeats it whole along big's flat order: its shape, leading
    1s stripped, is big's trailing dims (a scalar, a bias [N] against [..., N], a mask [1, 1, 1, T]
    against [B, H, S, T] with B = 1)."""
    if len(small) > len(big):
        return False
    k = 0
    while k < len(small) and small[k] == 1:
        k += 1
    core = small[k:]
    return not core or tuple(big[len(big) - len(core):]) == tuple(core)


def _binary(op_name: str, fn: str, A: np.ndarray, A_scale: np.ndarray, A_zero_point: np.ndarray | None,
            B: np.ndarray, B_scale: np.ndarray, B_zero_point: np.ndarray | None, C_scale: np.ndarray,
            C_zero_point: np.ndarray | None) -> np.ndarray:
    if A.dtype != B.dtype:
        raise InvalidArgument(f"{op_name}: A and B must share one type, got {A.dtype} and {B.dtype}")
    _check(A, op_name)
    za, zb = (np.float32(_scalar(z, op_name, "zero point")) for z in (A_zero_point, B_zero_point))
    sa, sb, sc = (np.float32(_scalar(v, op_name, "scale")) for v in (A_scale, B_scale, C_scale))
    if A.shape == B.shape or _repeats(B.shape, A.shape) or _repeats(A.shape, B.shape):
        shape = np.broadcast_shapes(A.shape, B.shape)
        zc = np.float32(_scalar(C_zero_point, op_name, "zero point"))
        info = np.iinfo(A.dtype)
        y = np.empty(shape, A.dtype)
        ra, rb = (sa * sb / sc, np.float32(0)) if fn == "mul" else (sa / sc, sb / sc)
        if y.size:
            _binary8(np.ascontiguousarray(A).reshape(-1), np.ascontiguousarray(B).reshape(-1), za, zb, ra, rb, zc,
                     np.float32(info.min), np.float32(info.max), fn == "mul", y.reshape(-1))
        return y
    a, b = A.astype(np.float32) - za, B.astype(np.float32) - zb
    try:
        # onnxruntime's kernels fold the scales into ratios to C's first (float32): so does this
        v = a * (sa / sc) + b * (sb / sc) if fn == "add" else (a * b) * (sa * sb / sc)
    except ValueError:
        raise InvalidArgument(f"{op_name}: shapes {list(A.shape)} and {list(B.shape)} do not broadcast") from None
    return quant(v, np.array(1, np.float32), C_zero_point, A.dtype, op_name)


def _infer_binary(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    a, b = ins[0], ins[3] if len(ins) > 3 else None
    if a is None or b is None or a.shape is None or b.shape is None:
        return []
    return [TensorType(a.dtype, broadcast_shapes([a.shape, b.shape]))]


@op("QLinearAdd", since=1, domain=MS, infer=_infer_binary)
def QLinearAdd(A: np.ndarray, A_scale: np.ndarray, A_zero_point: np.ndarray | None, B: np.ndarray,
               B_scale: np.ndarray, B_zero_point: np.ndarray | None, C_scale: np.ndarray,
               C_zero_point: np.ndarray | None = None) -> np.ndarray:
    return _binary("QLinearAdd", "add", A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, C_zero_point)


@op("QLinearMul", since=1, domain=MS, infer=_infer_binary)
def QLinearMul(A: np.ndarray, A_scale: np.ndarray, A_zero_point: np.ndarray | None, B: np.ndarray,
               B_scale: np.ndarray, B_zero_point: np.ndarray | None, C_scale: np.ndarray,
               C_zero_point: np.ndarray | None = None) -> np.ndarray:
    return _binary("QLinearMul", "mul", A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, C_zero_point)


@op("QLinearSigmoid", since=1, domain=MS, infer=same_as_input)
def QLinearSigmoid(X: np.ndarray, X_scale: np.ndarray, X_zero_point: np.ndarray | None, Y_scale: np.ndarray,
                   Y_zero_point: np.ndarray | None = None) -> np.ndarray:
    x = dequant(X, X_scale, X_zero_point, "QLinearSigmoid")
    return quant(np.float32(1) / (np.float32(1) + np.exp(-x)), Y_scale, Y_zero_point, X.dtype, "QLinearSigmoid")


@op("QLinearLeakyRelu", since=1, domain=MS, infer=same_as_input)
def QLinearLeakyRelu(X: np.ndarray, X_scale: np.ndarray, X_zero_point: np.ndarray | None, Y_scale: np.ndarray,
                     Y_zero_point: np.ndarray | None = None, *, alpha: float = 0.01) -> np.ndarray:
    x = dequant(X, X_scale, X_zero_point, "QLinearLeakyRelu")
    return quant(np.where(x >= 0, x, x * np.float32(alpha)), Y_scale, Y_zero_point, X.dtype, "QLinearLeakyRelu")


def _infer_concat(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    zp = ins[1] if len(ins) > 1 else None
    out = infer_as("Concat", 13, {"axis": node.attrs.get("axis")}, ins[2::3])
    if not out or out[0] is None or zp is None:
        return []
    return [TensorType(zp.dtype, out[0].shape)]


@op("QLinearConcat", since=1, domain=MS, infer=_infer_concat)
def QLinearConcat(Y_scale: np.ndarray, Y_zero_point: np.ndarray, *inputs: np.ndarray | None, axis: int) -> np.ndarray:
    """Inputs are (X, X_scale, X_zero_point) triples, each requantised to Y's scale and zero point."""
    name = "QLinearConcat"
    if len(inputs) % 3 or not inputs:
        raise InvalidArgument(f"{name}: inputs must be (tensor, scale, zero point) triples, got {len(inputs)} inputs")
    parts = []
    for k in range(0, len(inputs), 3):
        x, s, z = inputs[k], inputs[k + 1], inputs[k + 2]
        if x is None or s is None:
            raise InvalidArgument(f"{name}: input triple {k // 3} lacks its tensor or scale")
        parts.append(dequant(x, s, z, name))
    try:
        v = np.concatenate(parts, axis=axis)
    except (ValueError, np.exceptions.AxisError) as e:
        raise InvalidArgument(f"{name}: {e}") from None
    return quant(v, Y_scale, Y_zero_point, Y_zero_point.dtype, name, zp_first=False)


def _infer_gap(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    x = ins[0]
    if x is None or x.shape is None or len(x.shape) < 3:
        return []
    if node.attrs.get("channels_last", 0):
        return [TensorType(x.dtype, (x.shape[0],) + (1,) * (len(x.shape) - 2) + (x.shape[-1],))]
    return [TensorType(x.dtype, tuple(x.shape[:2]) + (1,) * (len(x.shape) - 2))]


@op("QLinearGlobalAveragePool", since=1, domain=MS, infer=_infer_gap)
def QLinearGlobalAveragePool(X: np.ndarray, x_scale: np.ndarray, x_zero_point: np.ndarray | None,
                             y_scale: np.ndarray, y_zero_point: np.ndarray | None = None, *,
                             channels_last: int = 0) -> np.ndarray:
    name = "QLinearGlobalAveragePool"
    if X.ndim < 3:
        raise InvalidArgument(f"{name}: X must have rank >= 3, got shape {list(X.shape)}")
    axes = tuple(range(1, X.ndim - 1)) if channels_last else tuple(range(2, X.ndim))
    _check(X, name)
    size = int(np.prod([X.shape[a] for a in axes]))
    if size and X.size:
        info = np.iinfo(X.dtype)
        ratio = np.float32(_scalar(x_scale, name, "scale")) / (np.float32(_scalar(y_scale, name, "scale"))
                                                               * np.float32(size))
        zx, zy = int(_scalar(x_zero_point, name, "zero point")), np.float32(_scalar(y_zero_point, name, "zero point"))
        lo, hi = np.float32(info.min), np.float32(info.max)
        xc = np.ascontiguousarray(X)
        if channels_last:
            y = np.empty((X.shape[0],) + (1,) * (X.ndim - 2) + (X.shape[-1],), X.dtype)
            _gap8_last(xc.reshape(X.shape[0], size, X.shape[-1]), zx, ratio, zy, lo, hi, y.reshape(X.shape[0], -1))
        else:
            y = np.empty(X.shape[:2] + (1,) * (X.ndim - 2), X.dtype)
            _gap8(xc.reshape(-1, size), zx, size, ratio, zy, lo, hi, y.reshape(-1))
        return y
    # onnxruntime: the integer sum, less the zero point's share, times x_scale / (y_scale * size)
    total = X.astype(np.int64).sum(axis=axes, keepdims=True) - int(_scalar(x_zero_point, name, "zero point")) * size
    ratio = np.float32(_scalar(x_scale, name, "scale")) / (np.float32(_scalar(y_scale, name, "scale")) * np.float32(size))
    return quant(total.astype(np.float32) * ratio, np.array(1, np.float32), y_zero_point, X.dtype, name)
