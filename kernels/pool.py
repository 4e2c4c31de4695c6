"""Pooling: MaxPool (+ Indices), AveragePool, LpPool, their Global forms, MaxRoiPool, RoiAlign, MaxUnpool.

Like the convolutions, every rank runs through one 3-D kernel per dtype (a 1-D or 2-D input is
viewed as [N*C, 1, 1, W] / [N*C, 1, H, W]). Windowed pooling is separable: for each output row the
kernel first reduces the window's input rows into one row buffer (contiguous, vectorised), then
reduces each output column's taps from that buffer (one strided pass per tap). Averages divide by a
product of per-axis counts, which is exactly onnxruntime's divisor in both count_include_pad
modes (taps inside input + pads, or inside the input only).

Output sizes follow onnxruntime 1.31, measured against it: with ceil_mode, a last window that
would start inside the end padding is dropped (onnx's shape inference does not do that, so its
static shape can be one larger than the run-time one). auto_pad SAME_* computes the padding from
the undilated kernel, as onnxruntime does.

MaxPool's values-only path uses ``np.maximum`` (NaN-propagating; the only spelling of max that
Numba/LLVM turns into SIMD code here, 10x faster than a conditional) and reduces in a different
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
from jitort.kernels.registry import op

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
def _valid_range(off, s, n, count):  # type: ignore[no-untyped-def]
    """[lo, hi): the output positions o < count with input position o*s + off inside [0, n)."""
    lo = 0 if off >= 0 else (-off + s - 1) // s
    hi = (n - off + s - 1) // s if n - off > 0 else 0
    if hi > count:
        hi = count
    if lo > hi:
        lo = hi
    return lo, hi


@njit(**_EP)
def _axis_count(o, s, d, k, pb, n, limit):  # type: ignore[no-untyped-def]
    """Taps of window o on one axis inside [0, n) (limit == 0) or inside [-pb, n + end pad) (limit > 0)."""
    c = 0
    start = o * s - pb
    for j in range(k):
        t = start + j * d
        if limit > 0:
            if t < limit:
                c += 1
        elif 0 <= t < n:
            c += 1
    return c


@njit(**_KW)
def _pool(x, out, geo, mode, cip, p, lowest):  # type: ignore[no-untyped-def]
    """x [P, D, H, W] -> out [P, OD, OH, OW]; mode MAX / AVG (cip: count_include_pad) / LP (p)."""
    P, D, H, W = x.shape
    OD, OH, OW = out.shape[1], out.shape[2], out.shape[3]
    kd, kh, kw = geo[0], geo[1], geo[2]
    sd, sh, sw, dd, dh, dw = geo[3], geo[4], geo[5], geo[6], geo[7], geo[8]
    pd, ph, pw, ed, eh, ew = geo[9], geo[10], geo[11], geo[12], geo[13], geo[14]
    zero = lowest - lowest
    one = zero + 1
    row = np.empty(W, x.dtype)
    los = np.empty(kw, np.int64)
    his = np.empty(kw, np.int64)
    for e in range(kw):
        los[e], his[e] = _valid_range(e * dw - pw, sw, W, OW)
    cx = np.empty(OW, x.dtype)
    for ow in range(OW):
        cx[ow] = _axis_count(ow, sw, dw, kw, pw, W, W + ew if cip else 0)
    inv_p = one / p if mode == LP else one
    for c in range(P):
        xc = x[c]
        for od in range(OD):
            cz = _axis_count(od, sd, dd, kd, pd, D, D + ed if cip else 0)
            for oh in range(OH):
                # vertical: reduce the window's input rows into one row (a single valid row is used
                # in place; the first two are combined in one pass)
                nvalid = 0
                prev = row
                for a in range(kd):
                    iz = od * sd - pd + a * dd
                    if iz < 0 or iz >= D:
                        continue
                    for bb in range(kh):
                        iy = oh * sh - ph + bb * dh
                        if iy < 0 or iy >= H:
                            continue
                        src = xc[iz, iy]
                        if mode == LP:
                            if nvalid == 0:
                                for j in range(W):
                                    row[j] = zero
                            if p == 2:
                                for j in range(W):
                                    row[j] += src[j] * src[j]
                            else:
                                for j in range(W):
                                    row[j] += abs(src[j]) ** p
                        elif nvalid == 0:
                            prev = src
                        elif mode == MAX:
                            if nvalid == 1:
                                for j in range(W):
                                    row[j] = np.maximum(prev[j], src[j])
                            else:
                                for j in range(W):
                                    row[j] = np.maximum(row[j], src[j])
                        else:
                            if nvalid == 1:
                                for j in range(W):
                                    row[j] = prev[j] + src[j]
                            else:
                                for j in range(W):
                                    row[j] += src[j]
                        nvalid += 1
                red = prev if nvalid == 1 and mode != LP else row
                orow = out[c, od, oh]
                init = lowest if mode == MAX else zero
                for j in range(OW):
                    orow[j] = init
                if nvalid == 0:  # no input row in the window
                    continue
                # horizontal: one pass per tap over the output row
                for e in range(kw):
                    lo, hi = los[e], his[e]
                    if hi <= lo:
                        continue
                    off = e * dw - pw
                    seg = orow[lo:hi]
                    rs = red[lo * sw + off:(hi - 1) * sw + off + 1:sw]
                    if mode == MAX:
                        for j in range(seg.shape[0]):
                            seg[j] = np.maximum(seg[j], rs[j])
                    else:
                        for j in range(seg.shape[0]):
                            seg[j] += rs[j]
                if mode == AVG:
                    cy = _axis_count(oh, sh, dh, kh, ph, H, H + eh if cip else 0)
                    czy = cz * cy
                    for j in range(OW):
                        n = czy * cx[j]
                        orow[j] = orow[j] / n if n > 0 else zero
                elif mode == LP:
                    for j in range(OW):
                        orow[j] = orow[j] ** inv_p


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
        los[e], his[e] = _valid_range(e * dw - pw, sw, W, OW)
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


def _windowed(op_name: str, X: np.ndarray, mode: int, kernel_shape: Sequence[int] | None,
              strides: Sequence[int] | None, dilations: Sequence[int] | None, pads: Sequence[int] | None,
              auto_pad: str, ceil_mode: int, cip: int = 0, p: float = 2.0, ints: bool = False,
              nout: int = 1, storage_order: int = 0) -> Any:
    cd = _compute_dtype(op_name, X.dtype, ints)
    k, s, dl, pp = _norm(op_name, X, kernel_shape, strides, dilations, pads, check_pads=auto_pad in ("NOTSET", ""))
    out_sp, begin, end = pool_geometry(op_name, tuple(X.shape[2:]), k, s, dl, pp, auto_pad, int(ceil_mode))
    out = np.empty(X.shape[:2] + out_sp, cd)
    geo = _geo(k, s, dl, begin, end)
    low = np.array(_lowest(cd), cd)[()]
    x4 = _as4(np.ascontiguousarray(X, cd))
    if nout > 1:
        ind = np.empty(out.shape, np.int64)
        if out.size:
            _maxpool_indices(x4, _as4(out), _as4(ind), geo, int(storage_order), 0, low)
        return out.astype(X.dtype, copy=False), ind
    if out.size:
        pv = np.array(p, cd)[()] if cd.kind == "f" else np.array(2, cd)[()]
        _pool(x4, _as4(out), geo, mode, int(cip), pv, low)
    return out.astype(X.dtype, copy=False)


@op("MaxPool", since=1)
def MaxPool(X: np.ndarray, *, auto_pad: str, ceil_mode: int = 0, dilations: Sequence[int] | None = None,
            kernel_shape: Sequence[int], pads: Sequence[int] | None = None, storage_order: int = 0,
            strides: Sequence[int] | None = None, _nout: int = 1) -> Any:
    """MaxPool (opset 1, 8, 10, 11, 12, 22); the optional Indices output (opset 8+) is int64."""
    return _windowed("MaxPool", X, MAX, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode,
                     ints=True, nout=_nout, storage_order=storage_order)


@op("AveragePool", since=1)
def AveragePool(X: np.ndarray, *, auto_pad: str, ceil_mode: int = 0, count_include_pad: int = 0,
                dilations: Sequence[int] | None = None, kernel_shape: Sequence[int],
                pads: Sequence[int] | None = None, strides: Sequence[int] | None = None) -> np.ndarray:
    """AveragePool (opset 1, 7, 10, 11, 19, 22)."""
    return _windowed("AveragePool", X, AVG, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode,
                     cip=count_include_pad)


@op("LpPool", since=1)
def LpPool(X: np.ndarray, *, auto_pad: str, ceil_mode: int = 0, dilations: Sequence[int] | None = None,
           kernel_shape: Sequence[int], p: float, pads: Sequence[int] | None = None,
           strides: Sequence[int] | None = None) -> np.ndarray:
    """LpPool (opset 1: float p, 2/11: int p, 18: ceil_mode and dilations)."""
    return _windowed("LpPool", X, LP, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, p=float(p))


# --- global pooling ------------------------------------------------------------------------------

@njit(**_KW)
def _global(x, out, mode, p, lowest):  # type: ignore[no-untyped-def]
    """x [P, L] -> out [P]."""
    P, L = x.shape
    zero = lowest - lowest
    one = zero + 1
    for c in range(P):
        xc = x[c]
        if mode == MAX:
            m = lowest
            if L > 0:
                m = xc[0]
            for j in range(L):
                m = np.maximum(m, xc[j])
            out[c] = m
        elif mode == AVG:
            s = zero
            for j in range(L):
                s += xc[j]
            out[c] = s / L
        else:
            s = zero
            if p == 2:
                for j in range(L):
                    s += xc[j] * xc[j]
            else:
                for j in range(L):
                    s += abs(xc[j]) ** p
            out[c] = s ** (one / p)


def _global_pool(op_name: str, X: np.ndarray, mode: int, p: float = 2.0) -> np.ndarray:
    if X.ndim < 3:
        raise InvalidArgument(f"{op_name}: input must have rank >= 3, got shape {list(X.shape)}")
    cd = _compute_dtype(op_name, X.dtype)
    out = np.empty(X.shape[:2] + (1,) * (X.ndim - 2), cd)
    x2 = np.ascontiguousarray(X, cd).reshape(X.shape[0] * X.shape[1], -1)
    if out.size:
        _global(x2, out.reshape(-1), mode, np.array(p, cd)[()], np.array(_lowest(cd), cd)[()])
    return out.astype(X.dtype, copy=False)


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


# --- MaxRoiPool ----------------------------------------------------------------------------------

@njit(**_KW)
def _max_roi_pool(x, rois, out, floor_val):  # type: ignore[no-untyped-def]
    """rois [R, 5] int64: batch, x1, y1, x2, y2 already scaled and rounded."""
    N, C, H, W = x.shape
    R, _, PH, PW = out.shape
    zero = floor_val - floor_val
    for n in range(R):
        b = rois[n, 0]
        sw_, sh_, ew_, eh_ = rois[n, 1], rois[n, 2], rois[n, 3], rois[n, 4]
        bh = np.float32(max(eh_ - sh_ + 1, 1)) / np.float32(PH)
        bw = np.float32(max(ew_ - sw_ + 1, 1)) / np.float32(PW)
        for c in range(C):
            xc = x[b, c]
            for ph in range(PH):
                hs = min(max(int(np.floor(np.float32(ph) * bh)) + sh_, 0), H)
                he = min(max(int(np.ceil(np.float32(ph + 1) * bh)) + sh_, 0), H)
                for pw in range(PW):
                    ws = min(max(int(np.floor(np.float32(pw) * bw)) + sw_, 0), W)
                    we = min(max(int(np.ceil(np.float32(pw + 1) * bw)) + sw_, 0), W)
                    if he <= hs or we <= ws:
                        out[n, c, ph, pw] = zero
                        continue
                    m = floor_val
                    for h in range(hs, he):
                        for w in range(ws, we):
                            v = xc[h, w]
                            m = m if v < m else v
                    out[n, c, ph, pw] = m


@op("MaxRoiPool", since=1)
def MaxRoiPool(X: np.ndarray, rois: np.ndarray, *, pooled_shape: Sequence[int], spatial_scale: float) -> np.ndarray:
    """MaxRoiPool (opset 1, 22): roi corners scaled in float32 and rounded half away from zero, bins
    of float32 size, an empty bin is 0 (as onnxruntime)."""
    if X.ndim != 4 or rois.ndim != 2 or rois.shape[1] != 5:
        raise InvalidArgument(f"MaxRoiPool: expected X [N,C,H,W] and rois [R,5], got {list(X.shape)} and "
                              f"{list(rois.shape)}")
    if len(pooled_shape) != 2:
        raise InvalidArgument(f"MaxRoiPool: pooled_shape must have 2 values, got {list(pooled_shape)}")
    cd = _compute_dtype("MaxRoiPool", X.dtype)
    r = np.asarray(rois, np.float32)
    # float32 products rounded half away from zero, like C's round() in onnxruntime
    v = r[:, 1:] * np.float32(spatial_scale)
    ri = np.concatenate([r[:, :1].astype(np.int64),
                         (np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))).astype(np.int64)], axis=1)
    if ri.shape[0] and (ri[:, 0].min() < 0 or ri[:, 0].max() >= X.shape[0]):
        raise InvalidArgument(f"MaxRoiPool: roi batch index out of range [0, {X.shape[0]})")
    out = np.empty((rois.shape[0], X.shape[1], int(pooled_shape[0]), int(pooled_shape[1])), cd)
    if out.size:
        _max_roi_pool(np.ascontiguousarray(X, cd), np.ascontiguousarray(ri), out,
                      np.array(_lowest(cd), cd)[()])
    return out.astype(X.dtype, copy=False)


# --- RoiAlign ------------------------------------------------------------------------------------

@njit(**_KW)
def _roi_align_k(x, rois, bidx, out, scale, sampling_ratio, mode_max, half_pixel):  # type: ignore[no-untyped-def]
    """onnxruntime's RoiAlign: per roi, precompute the 4 bilinear corners and weights of every
    sample point (shared by all channels), then average (or max) them per bin. Arithmetic stays in
    the input dtype T (``T(i)`` casts) like the C++ code."""
    N, C, H, W = x.shape
    R, _, PH, PW = out.shape
    T = x.dtype.type
    zero = scale - scale
    one = zero + 1
    half = one / 2
    off = half if half_pixel else zero
    for n in range(R):
        b = bidx[n]
        x0 = rois[n, 0] * scale - off
        y0 = rois[n, 1] * scale - off
        x1 = rois[n, 2] * scale - off
        y1 = rois[n, 3] * scale - off
        rw = x1 - x0
        rh = y1 - y0
        if not half_pixel:
            rw = max(rw, one)
            rh = max(rh, one)
        bh = rh / T(PH)
        bw = rw / T(PW)
        gh = sampling_ratio if sampling_ratio > 0 else int(np.ceil(rh / T(PH)))
        gw = sampling_ratio if sampling_ratio > 0 else int(np.ceil(rw / T(PW)))
        # a reversed roi (half_pixel keeps its negative size) has an empty sampling grid: bins are 0
        gh = max(gh, 0)
        gw = max(gw, 0)
        count = max(gh * gw, 1)
        ns = PH * PW * gh * gw
        pos = np.zeros((ns, 4), np.int64)
        wts = np.zeros((ns, 4), x.dtype)
        k = 0
        for ph in range(PH):
            for pw in range(PW):
                for iy in range(gh):
                    yy = y0 + T(ph) * bh + (T(iy) + half) * bh / T(gh)
                    for ix in range(gw):
                        xx = x0 + T(pw) * bw + (T(ix) + half) * bw / T(gw)
                        yv = yy
                        xv = xx
                        if yv < -one or yv > H or xv < -one or xv > W:
                            k += 1
                            continue
                        if yv <= 0:
                            yv = zero
                        if xv <= 0:
                            xv = zero
                        yl = int(yv)
                        xl = int(xv)
                        if yl >= H - 1:
                            yl = yh = H - 1
                            yv = T(yl)
                        else:
                            yh = yl + 1
                        if xl >= W - 1:
                            xl = xh = W - 1
                            xv = T(xl)
                        else:
                            xh = xl + 1
                        ly = yv - T(yl)
                        lx = xv - T(xl)
                        hy = one - ly
                        hx = one - lx
                        pos[k, 0] = yl * W + xl
                        pos[k, 1] = yl * W + xh
                        pos[k, 2] = yh * W + xl
                        pos[k, 3] = yh * W + xh
                        wts[k, 0] = hy * hx
                        wts[k, 1] = hy * lx
                        wts[k, 2] = ly * hx
                        wts[k, 3] = ly * lx
                        k += 1
        for c in range(C):
            xc = x[b, c].reshape(H * W)
            k = 0
            for ph in range(PH):
                for pw in range(PW):
                    acc = zero
                    first = True
                    for s in range(gh * gw):
                        v0 = wts[k, 0] * xc[pos[k, 0]]
                        v1 = wts[k, 1] * xc[pos[k, 1]]
                        v2 = wts[k, 2] * xc[pos[k, 2]]
                        v3 = wts[k, 3] * xc[pos[k, 3]]
                        if mode_max:
                            v = max(max(max(v0, v1), v2), v3)
                            if first or v > acc:
                                acc = v
                            first = False
                        else:
                            acc += v0 + v1 + v2 + v3
                        k += 1
                    out[n, c, ph, pw] = acc if mode_max else acc / T(count)


def _roi_align_run(X: np.ndarray, rois: np.ndarray, batch_indices: np.ndarray, mode: str, output_height: int,
               output_width: int, sampling_ratio: int, spatial_scale: float, ctm: str) -> np.ndarray:
    if X.ndim != 4:
        raise InvalidArgument(f"RoiAlign: X must be 4-D [N,C,H,W], got {list(X.shape)}")
    if rois.ndim != 2 or rois.shape[1] != 4:
        raise InvalidArgument(f"RoiAlign: rois must have shape [num_rois, 4], got {list(rois.shape)}")
    if batch_indices.ndim != 1 or batch_indices.shape[0] != rois.shape[0]:
        raise InvalidArgument(f"RoiAlign: batch_indices must have shape [{rois.shape[0]}], got "
                              f"{list(batch_indices.shape)}")
    if mode not in ("avg", "max"):
        raise InvalidArgument(f"RoiAlign: mode must be 'avg' or 'max', got '{mode}'")
    if ctm not in ("half_pixel", "output_half_pixel"):
        raise InvalidArgument(f"RoiAlign: coordinate_transformation_mode must be half_pixel or output_half_pixel, "
                              f"got '{ctm}'")
    bi = np.ascontiguousarray(batch_indices, np.int64)
    if bi.size and (bi.min() < 0 or bi.max() >= X.shape[0]):
        raise InvalidArgument(f"RoiAlign: batch_indices out of range [0, {X.shape[0]})")
    cd = _compute_dtype("RoiAlign", X.dtype)
    out = np.empty((rois.shape[0], X.shape[1], int(output_height), int(output_width)), cd)
    if out.size:
        _roi_align_k(np.ascontiguousarray(X, cd), np.ascontiguousarray(rois, cd), bi, out,
                     np.array(spatial_scale, cd)[()], int(sampling_ratio), mode == "max", ctm == "half_pixel")
    return out.astype(X.dtype, copy=False)


@op("RoiAlign", since=10)
def RoiAlign(X: np.ndarray, rois: np.ndarray, batch_indices: np.ndarray, *,
             coordinate_transformation_mode: str = "output_half_pixel", mode: str, output_height: int,
             output_width: int, sampling_ratio: int, spatial_scale: float) -> np.ndarray:
    """RoiAlign (opset 10: output_half_pixel coordinates; 16: coordinate_transformation_mode). Max mode
    takes the maximum of the weighted bilinear corners, as onnxruntime and the reference do."""
    return _roi_align_run(X, rois, batch_indices, mode, output_height, output_width, sampling_ratio, spatial_scale,
                      coordinate_transformation_mode)


# --- MaxUnpool -----------------------------------------------------------------------------------

@op("MaxUnpool", since=9)
def MaxUnpool(X: np.ndarray, I: np.ndarray, output_shape: np.ndarray | None = None, *,  # noqa: E741
              kernel_shape: Sequence[int], pads: Sequence[int] | None = None,
              strides: Sequence[int] | None = None) -> np.ndarray:
    """MaxUnpool (opset 9, 11, 22): zeros, then Y.flat[I] = X (indices as MaxPool produces them)."""
    if X.ndim < 3 or X.ndim > 5:
        raise InvalidArgument(f"MaxUnpool: input rank must be 3..5, got {X.ndim}")
    if I.shape != X.shape:
        raise InvalidArgument(f"MaxUnpool: index tensor shape {list(I.shape)} must equal X shape {list(X.shape)}")
    r = X.ndim - 2
    k = [int(v) for v in kernel_shape]
    s = [int(v) for v in strides] if strides else [1] * r
    p = [int(v) for v in pads] if pads else [0] * (2 * r)
    shape = list(X.shape[:2]) + [(X.shape[2 + d] - 1) * s[d] - (p[d] + p[d + r]) + k[d] for d in range(r)]
    if any(v <= 0 for v in shape[2:]):
        raise InvalidArgument(f"MaxUnpool: computed output shape {shape} is not positive")
    if output_shape is not None:
        given = [int(v) for v in np.asarray(output_shape).reshape(-1)]
        if len(given) != X.ndim:
            raise InvalidArgument(f"MaxUnpool: output_shape must have {X.ndim} elements, got {len(given)}")
        if int(np.prod(given)) < int(np.prod(shape)):
            raise InvalidArgument(f"MaxUnpool: output_shape {given} is smaller than the minimum {shape}")
        shape = given
    out = np.zeros(int(np.prod(shape)), X.dtype)
    idx = np.asarray(I, np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= out.size):
        raise InvalidArgument(f"MaxUnpool: index value out of bounds [0, {out.size})")
    out[idx] = X.reshape(-1)
    return out.reshape(shape)
