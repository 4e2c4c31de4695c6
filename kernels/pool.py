"""Pooling: MaxPool (+ Indices), AveragePool, LpPool and their Global forms.

Windowed pooling is separable. 1-D and 2-D MaxPool/AveragePool (the CNN cases) run ``pool2d._pool2d``,
one kernel per dtype and kind: a vertical pass reduces each window's input rows, a horizontal pass reduces each
output column's taps, and both run over whole planes where one index formula covers them (see the
section comment), so the short rows of late layers cost no per-row overhead. A window that is the
whole plane runs the global kernel. 3-D windows and LpPool take the per-row kernels
``_max_pool``/``_sum_pool``. Averages divide by a product of per-axis counts, which is exactly
onnxruntime's divisor in both count_include_pad modes (taps inside input + pads, or inside the input
only). What depends only on the input shape (output shape, kernel choice, geometry) is prepared once
per shape: the plan passes the attributes as tuples, so a call costs a dict lookup.

Output sizes follow onnxruntime 1.31, measured against it: with ceil_mode, a last window that
would start inside the end padding is dropped (onnx's shape inference does not do that, so its
static shape can be one larger than the run-time one). auto_pad SAME_* computes the padding from
the undilated kernel, as onnxruntime does.

MaxPool's values-only path propagates NaN (``np.maximum`` in windows; the global max runs eight
chains of the plain ``max``, which vectorises better, plus a NaN flag) and reduces in a different
order from onnxruntime: results are equal except where a window holds a NaN (jitort: NaN;
onnxruntime: depends on the position). The Indices path scans each window in row-major order
keeping the first maximum, exactly as onnxruntime.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import numpy as np
from numba import njit

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels.convutil import _ow_range
from jitort.kernels.pool2d import _axis_count, _pool2d
from jitort.kernels.registry import Call, Ref, default_call, lookup, op

_KW = dict(cache=True, nogil=True, error_model="numpy")
_EP = dict(nogil=True, error_model="numpy")

MAX, AVG, LP = 0, 1, 2


# --- geometry ------------------------------------------------------------------------------------

def _cdiv(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


@lru_cache(maxsize=1024)
def pool_geometry(op_name: str, in_sp: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
                  dilations: tuple[int, ...], pads: tuple[int, ...], auto_pad: str, ceil_mode: int
                  ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(output dims, begin pads, end pads) of a windowed pooling."""
    r = len(in_sp)
    out, begin, end = [], [], []
    for d in range(r):
        i, k, s, dl = in_sp[d], kernel[d], strides[d], dilations[d]
        ph, pt = pads[d], pads[d + r]
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            need = (_cdiv(i + s - 1, s) - 1) * s + k - i
            ph = _cdiv(need + 1, 2) if auto_pad == "SAME_LOWER" else _cdiv(need, 2)
            pt = need - ph
        elif auto_pad == "VALID":
            ph = pt = 0
        elif auto_pad not in ("NOTSET", ""):
            raise InvalidArgument(f"{op_name}: auto_pad '{auto_pad}' is not one of NOTSET, SAME_UPPER, "
                                  "SAME_LOWER, VALID")
        num = np.float32(i + ph + pt - dl * (k - 1) - 1) / np.float32(s)
        o = int(np.ceil(num) if ceil_mode else num) + 1
        if ceil_mode and (o - 1) * s >= i + ph:
            o -= 1
        if o <= 0:
            raise InvalidArgument(f"{op_name}: input spatial shape {list(in_sp)} is too small for kernel "
                                  f"{list(kernel)} with strides {list(strides)}, dilations {list(dilations)} and "
                                  f"pads {list(pads)}")
        out.append(o)
        begin.append(ph)
        end.append(pt)
    return tuple(out), tuple(begin), tuple(end)


def _pad3(v: Sequence[int], fill: int) -> tuple[int, ...]:
    v = tuple(int(t) for t in v)
    return (fill,) * (3 - len(v)) + v


def _as4(x: np.ndarray) -> np.ndarray:
    """[N, C, *sp] -> [N*C, D, H, W] (a view)."""
    sp = x.shape[2:]
    return x.reshape((x.shape[0] * x.shape[1],) + (1,) * (3 - len(sp)) + sp)


def _norm(op_name: str, x: np.ndarray, kernel_shape: Sequence[int] | None, strides: Sequence[int] | None,
          dilations: Sequence[int] | None, pads: Sequence[int] | None, check_pads: bool = True
          ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    r = x.ndim - 2
    if x.ndim < 3:
        raise InvalidArgument(f"{op_name}: input must have rank >= 3, got shape {list(x.shape)}")
    if r > 3:
        raise OrtNotImplemented(f"{op_name}: jitort supports 1-D, 2-D and 3-D pooling, got input rank {x.ndim}")
    if not kernel_shape or len(kernel_shape) != r:
        raise InvalidArgument(f"{op_name}: kernel_shape {kernel_shape} does not match the input's {r} spatial dims")
    k = tuple(int(v) for v in kernel_shape)
    s = tuple(int(v) for v in strides) if strides else (1,) * r
    dl = tuple(int(v) for v in dilations) if dilations else (1,) * r
    p = tuple(int(v) for v in pads) if pads else (0,) * (2 * r)
    if len(s) != r or len(dl) != r or len(p) != 2 * r:
        raise InvalidArgument(f"{op_name}: strides {list(s)}, dilations {list(dl)} or pads {list(p)} do not match "
                              f"kernel_shape {list(k)}")
    if any(v <= 0 for v in k + s + dl):
        raise InvalidArgument(f"{op_name}: kernel_shape, strides and dilations must be positive")
    if check_pads and any(p[d] >= k[d] or p[d + r] >= k[d] for d in range(r)):
        raise InvalidArgument(f"{op_name}: Pad should be smaller than kernel (pads {list(p)}, kernel {list(k)})")
    return k, s, dl, p


def _geo(k: tuple[int, ...], s: tuple[int, ...], dl: tuple[int, ...], begin: tuple[int, ...],
         end: tuple[int, ...]) -> np.ndarray:
    return np.array(_pad3(k, 1) + _pad3(s, 1) + _pad3(dl, 1) + _pad3(begin, 0) + _pad3(end, 0), np.int64)


_FLOAT_CD = {np.dtype(np.float32): np.dtype(np.float32), np.dtype(np.float64): np.dtype(np.float64),
             np.dtype(np.float16): np.dtype(np.float32)}


def _compute_dtype(op_name: str, dt: np.dtype, ints: bool = False) -> np.dtype:
    dt = np.dtype(dt)
    if dt in _FLOAT_CD:
        return _FLOAT_CD[dt]
    if dt.name == "bfloat16":
        return np.dtype(np.float32)
    if ints and dt in (np.int8, np.uint8):
        return dt
    raise OrtNotImplemented(f"{op_name}: jitort does not support input dtype {dt}")


def _lowest(dt: np.dtype) -> Any:
    return np.finfo(dt).min if dt.kind == "f" else np.iinfo(dt).min


# --- windowed pooling ----------------------------------------------------------------------------
# geo: [kd, kh, kw, sd, sh, sw, dd, dh, dw, pd, ph, pw, ed, eh, ew] (e* = end pads)

@njit(**_EP)
def _rows(od, oh, geo, D, H, W, rows):  # type: ignore[no-untyped-def]
    """Offsets (in elements of a [D*H*W] plane) of the input rows inside window (od, oh); returns their count."""
    kd, kh, sd, sh, dd, dh, pd, ph = geo[0], geo[1], geo[3], geo[4], geo[6], geo[7], geo[9], geo[10]
    n = 0
    for a in range(kd):
        iz = od * sd - pd + a * dd
        if iz < 0 or iz >= D:
            continue
        for b in range(kh):
            iy = oh * sh - ph + b * dh
            if 0 <= iy < H:
                rows[n] = (iz * H + iy) * W
                n += 1
    return n


@njit(**_EP)
def _vmax(xc, rows, n, W, mid):  # type: ignore[no-untyped-def]
    """mid[:W] = elementwise max of the n input rows (the first two or three in one pass)."""
    r0 = xc[rows[0]:rows[0] + W]
    if n == 1:
        for j in range(W):
            mid[j] = r0[j]
        return
    r1 = xc[rows[1]:rows[1] + W]
    if n == 2:
        for j in range(W):
            mid[j] = np.maximum(r0[j], r1[j])
        return
    r2 = xc[rows[2]:rows[2] + W]
    for j in range(W):
        mid[j] = np.maximum(np.maximum(r0[j], r1[j]), r2[j])
    for k in range(3, n):
        rk = xc[rows[k]:rows[k] + W]
        for j in range(W):
            mid[j] = np.maximum(mid[j], rk[j])


@njit(**_EP)
def _vsum(xc, rows, n, W, mid, lp, p):  # type: ignore[no-untyped-def]
    """mid[:W] = sum of the n input rows (lp: of |x|**p)."""
    if lp:
        for j in range(W):
            mid[j] = mid[j] - mid[j]
        for k in range(n):
            rk = xc[rows[k]:rows[k] + W]
            if p == 2:
                for j in range(W):
                    mid[j] += rk[j] * rk[j]
            else:
                for j in range(W):
                    mid[j] += abs(rk[j]) ** p
        return
    r0 = xc[rows[0]:rows[0] + W]
    if n == 1:
        for j in range(W):
            mid[j] = r0[j]
        return
    r1 = xc[rows[1]:rows[1] + W]
    if n == 2:
        for j in range(W):
            mid[j] = r0[j] + r1[j]
        return
    r2 = xc[rows[2]:rows[2] + W]
    for j in range(W):
        mid[j] = r0[j] + r1[j] + r2[j]
    for k in range(3, n):
        rk = xc[rows[k]:rows[k] + W]
        for j in range(W):
            mid[j] += rk[j]


# The horizontal passes read a padded row rb (padding holds the reduction's identity), so every
# output column sees a full window; unsigned indices: Numba adds no negative-index wraparound.

@njit(**_EP)
def _hmax(rb, orow, kw, sw, dw):  # type: ignore[no-untyped-def]
    n, s = np.uint64(orow.shape[0]), np.uint64(sw)
    for j in range(n):
        orow[j] = rb[s * j]
    for e in range(1, kw):
        off = np.uint64(e * dw)
        for j in range(n):
            orow[j] = np.maximum(orow[j], rb[s * j + off])


@njit(**_EP)
def _hsum(rb, orow, kw, sw, dw):  # type: ignore[no-untyped-def]
    n, s = np.uint64(orow.shape[0]), np.uint64(sw)
    for j in range(n):
        orow[j] = rb[s * j]
    for e in range(1, kw):
        off = np.uint64(e * dw)
        for j in range(n):
            orow[j] += rb[s * j + off]


# --- 3-D windows and LpPool: one output row at a time -------------------------------------------

@njit(**_KW)
def _max_pool(x, out, geo, lowest):  # type: ignore[no-untyped-def]
    """x [P, D, H, W] -> out [P, OD, OH, OW]: per output row, a vertical max of the window's input
    rows into a padded row buffer, then a horizontal max over each output column's taps."""
    P, D, H, W = x.shape
    OD, OH, OW = out.shape[1], out.shape[2], out.shape[3]
    kw, sw, dw, pw = geo[2], geo[5], geo[8], geo[11]
    L = max((OW - 1) * sw + (kw - 1) * dw + 1, pw + W)
    rb = np.empty(L, x.dtype)
    for j in range(L):
        rb[j] = lowest
    mid = rb[pw:pw + W]
    rows = np.empty(geo[0] * geo[1], np.int64)
    xf = x.reshape(P, D * H * W)
    for c in range(P):
        xc = xf[c]
        for od in range(OD):
            for oh in range(OH):
                orow = out[c, od, oh]
                n = _rows(od, oh, geo, D, H, W, rows)
                if n == 0:  # the window holds no input row
                    for j in range(OW):
                        orow[j] = lowest
                    continue
                _vmax(xc, rows, n, W, mid)
                _hmax(rb, orow, kw, sw, dw)


@njit(**_KW)
def _sum_pool(x, out, geo, lp, cip, p):  # type: ignore[no-untyped-def]
    """AveragePool (lp=False; cip: count_include_pad) or LpPool (lp=True, exponent p), shaped like _max_pool."""
    P, D, H, W = x.shape
    OD, OH, OW = out.shape[1], out.shape[2], out.shape[3]
    kd, kh, kw = geo[0], geo[1], geo[2]
    sd, sh, sw, dd, dh, dw = geo[3], geo[4], geo[5], geo[6], geo[7], geo[8]
    pd, ph, pw, ed, eh, ew = geo[9], geo[10], geo[11], geo[12], geo[13], geo[14]
    zero = p - p
    L = max((OW - 1) * sw + (kw - 1) * dw + 1, pw + W)
    rb = np.zeros(L, x.dtype)
    mid = rb[pw:pw + W]
    rows = np.empty(kd * kh, np.int64)
    cx = np.empty(OW, x.dtype)  # taps per column (averages divide by a product of per-axis counts)
    for ow in range(OW):
        cx[ow] = _axis_count(ow, sw, dw, kw, pw, W, W + ew if cip else 0)
    inv_p = (zero + 1) / p
    xf = x.reshape(P, D * H * W)
    for c in range(P):
        xc = xf[c]
        for od in range(OD):
            cz = _axis_count(od, sd, dd, kd, pd, D, D + ed if cip else 0)
            for oh in range(OH):
                orow = out[c, od, oh]
                n = _rows(od, oh, geo, D, H, W, rows)
                if n == 0:
                    for j in range(OW):
                        orow[j] = zero
                    continue
                _vsum(xc, rows, n, W, mid, lp, p)
                _hsum(rb, orow, kw, sw, dw)
                if lp:
                    for j in range(OW):
                        orow[j] = orow[j] ** inv_p
                else:
                    czy = x.dtype.type(cz * _axis_count(oh, sh, dh, kh, ph, H, H + eh if cip else 0))
                    for j in range(OW):
                        orow[j] = orow[j] / (czy * cx[j])


@njit(**_KW)
def _maxpool_indices(x, out, ind, geo, storage_order, plane0, lowest):  # type: ignore[no-untyped-def]
    """Values and indices, scanning each window in row-major order and keeping the first maximum."""
    P, D, H, W = x.shape
    OD, OH, OW = out.shape[1], out.shape[2], out.shape[3]
    kd, kh, kw = geo[0], geo[1], geo[2]
    sd, sh, sw, dd, dh, dw = geo[3], geo[4], geo[5], geo[6], geo[7], geo[8]
    pd, ph, pw = geo[9], geo[10], geo[11]
    step = D * H * W
    los = np.empty(kw, np.int64)
    his = np.empty(kw, np.int64)
    for e in range(kw):
        los[e], his[e] = _ow_range(e * dw - pw, sw, W, OW)
    for c in range(P):
        xc = x[c]
        base = (plane0 + c) * step
        for od in range(OD):
            for oh in range(OH):
                best = out[c, od, oh]
                bi = ind[c, od, oh]
                for j in range(OW):
                    best[j] = lowest
                    bi[j] = -1
                for a in range(kd):
                    iz = od * sd - pd + a * dd
                    if iz < 0 or iz >= D:
                        continue
                    for bb in range(kh):
                        iy = oh * sh - ph + bb * dh
                        if iy < 0 or iy >= H:
                            continue
                        src = xc[iz, iy]
                        for e in range(kw):
                            off = e * dw - pw
                            for ow in range(los[e], his[e]):
                                ix = ow * sw + off
                                v = src[ix]
                                if bi[ow] < 0 or v > best[ow]:
                                    best[ow] = v
                                    if storage_order == 0:
                                        bi[ow] = base + (iz * H + iy) * W + ix
                                    else:
                                        bi[ow] = base + iz + iy * D + ix * D * H


_GLOBAL, _2D, _GENERIC = 0, 1, 2
_PREPARED: dict[tuple, tuple] = {}


def _prepare(op_name: str, X: np.ndarray, mode: int, kernel_shape: Sequence[int] | None,
             strides: Sequence[int] | None, dilations: Sequence[int] | None, pads: Sequence[int] | None,
             auto_pad: str, ceil_mode: int, p: float) -> tuple:
    """Everything about a windowed pooling call that depends on the input's shape and dtype only: the
    kernel to run, the shapes to view input and output as, the geometry array and two scalars."""
    cd = _compute_dtype(op_name, X.dtype, ints=mode == MAX)
    k, s, dl, pp = _norm(op_name, X, kernel_shape, strides, dilations, pads, check_pads=auto_pad in ("NOTSET", ""))
    out_sp, begin, end = pool_geometry(op_name, tuple(X.shape[2:]), k, s, dl, pp, auto_pad, int(ceil_mode))
    oshape = X.shape[:2] + out_sp
    geo = _geo(k, s, dl, begin, end)
    low = np.array(_lowest(cd), cd)[()]
    pv = np.array(p if cd.kind == "f" else 2, cd)[()]
    planes = X.shape[0] * X.shape[1]
    if out_sp == (1,) * len(out_sp) and k == X.shape[2:] and not any(begin + end) and set(dl) == {1} \
            and mode != LP:  # the window is the whole plane
        return _GLOBAL, oshape, cd, geo, (planes, -1), (planes,), low, pv
    if X.ndim <= 4 and mode != LP:
        sp = X.shape[2:]
        xs = (planes, sp[0] if len(sp) == 2 else 1, sp[-1])
        os_ = (planes, oshape[-2] if len(sp) == 2 else 1, oshape[-1])
        return _2D, oshape, cd, geo, xs, os_, low if mode == MAX else np.array(0, cd)[()], pv
    x4 = (planes,) + (1,) * (5 - X.ndim) + X.shape[2:]
    return _GENERIC, oshape, cd, geo, x4, (planes,) + (1,) * (5 - X.ndim) + out_sp, low, pv


def _pool_run(X: np.ndarray, op_name: str, mode: int, kernel_shape: Sequence[int] | None,
              strides: Sequence[int] | None, dilations: Sequence[int] | None, pads: Sequence[int] | None,
              auto_pad: str, ceil_mode: int, cip: int, p: float) -> np.ndarray:
    """A windowed pooling (values only). The plan passes the attributes as tuples, so the per-shape
    preparation is looked up by one tuple hash."""
    key = (X.shape, X.dtype, mode, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, p)
    try:
        g = _PREPARED.get(key)
    except TypeError:  # list attributes (a direct call): not hashable, not cached
        g, key = None, None
    if g is None:
        g = _prepare(op_name, X, mode, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, p)
        if key is not None:
            if len(_PREPARED) > 4096:
                _PREPARED.clear()
            _PREPARED[key] = g
    kind, oshape, cd, geo, xs, os_, a0, pv = g
    x = X if X.dtype == cd and X.flags.c_contiguous else np.ascontiguousarray(X, cd)
    out = np.empty(oshape, cd)
    if out.size:
        if kind == _2D:
            _pool2d(x.reshape(xs), out.reshape(os_), geo, None if mode == MAX else True, bool(cip), a0)
        elif kind == _GLOBAL:
            _global_run(x.reshape(xs), out.reshape(os_), mode, pv, a0)
        elif mode == MAX:
            _max_pool(x.reshape(xs), out.reshape(os_), geo, a0)
        else:
            _sum_pool(x.reshape(xs), out.reshape(os_), geo, mode == LP, bool(cip), pv)
    return out if X.dtype == cd else out.astype(X.dtype)


def _compile_parts(X: np.ndarray, op_name: str, mode: int, kernel_shape: Sequence[int] | None,
                   strides: Sequence[int] | None, dilations: Sequence[int] | None, pads: Sequence[int] | None,
                   auto_pad: str, ceil_mode: int, cip: int, p: float) -> dict[str, float]:
    """What a ``_pool_run`` call compiles, for ``jitort.compile_pool`` (seconds measured on Zen 3)."""
    kind, _, cd = _prepare(op_name, X, mode, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, p)[:3]
    if kind == _2D:
        return {f"pool2d[{cd}]": 4.5} if mode == MAX else {f"avgpool2d[{cd}]": 5.5}
    if kind == _GLOBAL:
        return {f"global[{cd}][{mode}]": 0.5}
    return {f"generic[{cd}][{mode == MAX}]": 2.0}


_pool_run.compile_parts = _compile_parts  # type: ignore[attr-defined]


def _maxpool_with_indices(X: np.ndarray, kernel_shape: Sequence[int] | None, strides: Sequence[int] | None,
                          dilations: Sequence[int] | None, pads: Sequence[int] | None, auto_pad: str,
                          ceil_mode: int, storage_order: int) -> Any:
    cd = _compute_dtype("MaxPool", X.dtype, ints=True)
    k, s, dl, pp = _norm("MaxPool", X, kernel_shape, strides, dilations, pads, check_pads=auto_pad in ("NOTSET", ""))
    out_sp, begin, end = pool_geometry("MaxPool", tuple(X.shape[2:]), k, s, dl, pp, auto_pad, int(ceil_mode))
    out = np.empty(X.shape[:2] + out_sp, cd)
    ind = np.empty(out.shape, np.int64)
    if out.size:
        _maxpool_indices(_as4(np.ascontiguousarray(X, cd)), _as4(out), _as4(ind), _geo(k, s, dl, begin, end),
                         int(storage_order), 0, np.array(_lowest(cd), cd)[()])
    return out.astype(X.dtype, copy=False), ind


def _tup(v: Any) -> tuple[int, ...] | None:
    return None if v is None else tuple(int(t) for t in v)


def _lower_windowed(op_name: str, mode: int) -> Any:
    """Attributes become tuples at compile time (hashable: the per-shape preparation is cached)."""
    def lower(node: Node, g: Graph) -> Call:
        a = node.attrs
        if len(node.outputs) > 1 and node.outputs[1]:
            return default_call(lookup(node.op_type, node.domain, node.version, node.name), node, g)
        p = float(a.get("p", 2.0))
        return Call(_pool_run, [Ref(node.inputs[0]), op_name, mode, _tup(a.get("kernel_shape")),
                                _tup(a.get("strides")), _tup(a.get("dilations")), _tup(a.get("pads")),
                                a.get("auto_pad", "NOTSET"), int(a.get("ceil_mode", 0)),
                                int(a.get("count_include_pad", 0)), p])
    return lower


@op("MaxPool", since=1, lower=_lower_windowed("MaxPool", MAX))
def MaxPool(X: np.ndarray, *, auto_pad: str, ceil_mode: int = 0, dilations: Sequence[int] | None = None,
            kernel_shape: Sequence[int], pads: Sequence[int] | None = None, storage_order: int = 0,
            strides: Sequence[int] | None = None, _nout: int = 1) -> Any:
    """MaxPool (opset 1, 8, 10, 11, 12, 22); the optional Indices output (opset 8+) is int64."""
    if _nout > 1:
        return _maxpool_with_indices(X, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, storage_order)
    return _pool_run(X, "MaxPool", MAX, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, 0, 2.0)


@op("AveragePool", since=1, lower=_lower_windowed("AveragePool", AVG))
def AveragePool(X: np.ndarray, *, auto_pad: str, ceil_mode: int = 0, count_include_pad: int = 0,
                dilations: Sequence[int] | None = None, kernel_shape: Sequence[int],
                pads: Sequence[int] | None = None, strides: Sequence[int] | None = None) -> np.ndarray:
    """AveragePool (opset 1, 7, 10, 11, 19, 22)."""
    return _pool_run(X, "AveragePool", AVG, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode,
                     count_include_pad, 2.0)


@op("LpPool", since=1, lower=_lower_windowed("LpPool", LP))
def LpPool(X: np.ndarray, *, auto_pad: str, ceil_mode: int = 0, dilations: Sequence[int] | None = None,
           kernel_shape: Sequence[int], p: float, pads: Sequence[int] | None = None,
           strides: Sequence[int] | None = None) -> np.ndarray:
    """LpPool (opset 1: float p, 2/11: int p, 18: ceil_mode and dilations)."""
    return _pool_run(X, "LpPool", LP, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, 0, float(p))


# --- global pooling ------------------------------------------------------------------------------

@njit(**_EP)
def _max8(xc, L):  # type: ignore[no-untyped-def]
    """max(xc[:L]) (NaN if any is NaN), L > 0: eight independent chains of the plain max (one vector
    register) and a separate NaN flag, twice as fast as a chain of NaN-propagating np.maximum."""
    n8 = L - L % 8
    m = xc[0]
    if n8:
        a0, a1, a2, a3, a4, a5, a6, a7 = xc[0], xc[1], xc[2], xc[3], xc[4], xc[5], xc[6], xc[7]
        for j in range(8, n8, 8):
            a0 = max(a0, xc[j])
            a1 = max(a1, xc[j + 1])
            a2 = max(a2, xc[j + 2])
            a3 = max(a3, xc[j + 3])
            a4 = max(a4, xc[j + 4])
            a5 = max(a5, xc[j + 5])
            a6 = max(a6, xc[j + 6])
            a7 = max(a7, xc[j + 7])
        m = max(max(max(a0, a4), max(a1, a5)), max(max(a2, a6), max(a3, a7)))
    for j in range(n8, L):
        m = max(m, xc[j])
    nan = False
    for j in range(L):
        nan |= xc[j] != xc[j]
    return m, nan


@njit(**_EP)
def _sum8(xc, L, zero):  # type: ignore[no-untyped-def]
    """sum(xc[:L]) in eight interleaved partial sums (vectorised; onnxruntime's order differs as well)."""
    n8 = L - L % 8
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
    for j in range(0, n8, 8):
        a0 += xc[j]
        a1 += xc[j + 1]
        a2 += xc[j + 2]
        a3 += xc[j + 3]
        a4 += xc[j + 4]
        a5 += xc[j + 5]
        a6 += xc[j + 6]
        a7 += xc[j + 7]
    s = ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7))
    for j in range(n8, L):
        s += xc[j]
    return s


@njit(**_KW)
def _global(x, out, mode, p, lowest):  # type: ignore[no-untyped-def]
    """x [P, L] -> out [P]."""
    P, L = x.shape
    zero = lowest - lowest
    one = zero + 1
    for c in range(P):
        xc = x[c]
        if mode == MAX:
            if L == 0:
                out[c] = lowest
                continue
            m, nan = _max8(xc, L)
            out[c] = m
            if nan:
                out[c] = np.nan
        elif mode == AVG:
            out[c] = _sum8(xc, L, zero) / L
        else:
            s = zero
            if p == 2:
                for j in range(L):
                    s += xc[j] * xc[j]
            else:
                for j in range(L):
                    s += abs(xc[j]) ** p
            out[c] = s ** (one / p)


@njit(**_KW)
def _global_mean(x, out, ones):  # type: ignore[no-untyped-def]
    """x [P, L] -> out [P], float32/float64: one BLAS gemv (x @ ones; 4-5x faster than summing short
    rows of 49 or 196 values one plane at a time), then the division by L."""
    np.dot(x, ones, out)
    L = x.shape[1]
    for c in range(out.shape[0]):
        out[c] = out[c] / L


_ONES: dict[tuple, np.ndarray] = {}


def _global_run(x2: np.ndarray, out: np.ndarray, mode: int, p: Any, low: Any) -> None:
    """x2 [P, L] -> out [P] (C-contiguous, the compute dtype)."""
    if mode == AVG and x2.shape[1]:
        key = (x2.dtype, x2.shape[1])
        ones = _ONES.get(key)
        if ones is None:
            ones = _ONES[key] = np.ones(x2.shape[1], x2.dtype)
        _global_mean(x2, out, ones)
    else:
        _global(x2, out, mode, p, low)


_GLOBAL_SCALARS: dict[np.dtype, tuple] = {}


def _global_pool(op_name: str, X: np.ndarray, mode: int, p: float = 2.0) -> np.ndarray:
    if X.ndim < 3:
        raise InvalidArgument(f"{op_name}: input must have rank >= 3, got shape {list(X.shape)}")
    sc = _GLOBAL_SCALARS.get(X.dtype)
    if sc is None:
        cd = _compute_dtype(op_name, X.dtype)
        sc = _GLOBAL_SCALARS[X.dtype] = (cd, np.array(_lowest(cd), cd)[()])
    cd, low = sc
    out = np.empty(X.shape[:2] + (1,) * (X.ndim - 2), cd)
    x = X if X.dtype == cd and X.flags.c_contiguous else np.ascontiguousarray(X, cd)
    if out.size:
        _global_run(x.reshape(X.shape[0] * X.shape[1], -1), out.reshape(-1), mode, cd.type(p), low)
    return out if X.dtype == cd else out.astype(X.dtype)


@op("GlobalAveragePool", since=1)
def GlobalAveragePool(X: np.ndarray) -> np.ndarray:
    return _global_pool("GlobalAveragePool", X, AVG)


@op("GlobalMaxPool", since=1)
def GlobalMaxPool(X: np.ndarray) -> np.ndarray:
    return _global_pool("GlobalMaxPool", X, MAX)


@op("GlobalLpPool", since=1)
def GlobalLpPool(X: np.ndarray, *, p: float) -> np.ndarray:
    """GlobalLpPool (opset 1: float p, 2: int p)."""
    return _global_pool("GlobalLpPool", X, LP, float(p))
