"""Windowed pooling: MaxPool (+ Indices), AveragePool, LpPool. (The Global forms are in
kernels/global_pool.py; output sizes and padding in kernels/pool_geometry.py.)

Windowed pooling is separable. float32 1-D and 2-D MaxPool/AveragePool with undilated windows and
column stride 1 or 2 (the CNN pools) run ``pool_rows`` (explicit vector IR, one output row at a time,
split over planes as native parts at 2 threads; see its docstring). The other 1-D and 2-D cases run
``pool2d.pool2d``, one kernel per dtype and kind: a vertical pass reduces each window's input rows, a
horizontal pass reduces each output column's taps, and both run over whole planes where one index formula covers them (see the
section comment), so the short rows of late layers cost no per-row overhead. A window that is the
whole plane runs the global kernel (``global_pool.global_run``). 3-D windows and LpPool take the per-row kernels
``_max_pool``/``_sum_pool``. Averages divide by a product of per-axis counts, which is exactly
onnxruntime's divisor in both count_include_pad modes (taps inside input + pads, or inside the input
only). What depends only on the input shape (output shape, kernel choice, geometry) is prepared once
per shape: the plan passes the attributes as tuples, so a call costs a dict lookup.

MaxPool's values-only path propagates NaN (``np.maximum`` in windows, a compare-and-select max in
pool_rows; the global max runs eight chains of the plain ``max``, which vectorises better, plus a NaN
flag) and reduces in a different order from onnxruntime: results are equal except where a window
holds a NaN (jitort: NaN; onnxruntime 1.32: the last tap's NaN survives, an earlier one is dropped,
and its blocked NCHWc pool inside a CNN scans in another order) or only -inf (pool_rows: -inf;
onnxruntime's plain kernel: the lowest float). The Indices path scans each window in row-major order
keeping the first maximum, exactly as onnxruntime.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numba import njit

from jitort.errors import RuntimeException
from jitort.ir import Graph, Node
from jitort.kernels.convutil import ow_range
from jitort.kernels.global_pool import global_run
from jitort.kernels import pool_rows
from jitort.kernels.pool2d import axis_count, pool2d
from jitort.kernels.pool_geometry import (AVG, LP, MAX, as_planes4, geometry_array, lowest, pool_attrs,
                                          pool_compute_dtype, pool_geometry)
from jitort.kernels.registry import Call, Ref, default_call, lookup, op

_KW = dict(cache=True, nogil=True, error_model="numpy")
_EP = dict(nogil=True, error_model="numpy")


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
        cx[ow] = axis_count(ow, sw, dw, kw, pw, W, W + ew if cip else 0)
    inv_p = (zero + 1) / p
    xf = x.reshape(P, D * H * W)
    for c in range(P):
        xc = xf[c]
        for od in range(OD):
            cz = axis_count(od, sd, dd, kd, pd, D, D + ed if cip else 0)
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
                    czy = x.dtype.type(cz * axis_count(oh, sh, dh, kh, ph, H, H + eh if cip else 0))
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
        los[e], his[e] = ow_range(e * dw - pw, sw, W, OW)
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


_GLOBAL, _2D, _GENERIC, _ROWS = 0, 1, 2, 3
_PREPARED: dict[tuple, tuple] = {}


def _prepare(op_name: str, X: np.ndarray, mode: int, kernel_shape: Sequence[int] | None,
             strides: Sequence[int] | None, dilations: Sequence[int] | None, pads: Sequence[int] | None,
             auto_pad: str, ceil_mode: int, p: float, cip: int = 0) -> tuple:
    """Everything about a windowed pooling call that depends on the input's shape and dtype only: the
    kernel to run, the shapes to view input and output as, the geometry array and two scalars."""
    cd = pool_compute_dtype(op_name, X.dtype, ints=mode == MAX)
    k, s, dl, pp = pool_attrs(op_name, X, kernel_shape, strides, dilations, pads, check_pads=auto_pad in ("NOTSET", ""))
    out_sp, begin, end = pool_geometry(op_name, tuple(X.shape[2:]), k, s, dl, pp, auto_pad, int(ceil_mode))
    oshape = X.shape[:2] + out_sp
    geo = geometry_array(k, s, dl, begin, end)
    low = np.array(lowest(cd), cd)[()]
    pv = np.array(p if cd.kind == "f" else 2, cd)[()]
    planes = X.shape[0] * X.shape[1]
    if out_sp == (1,) * len(out_sp) and k == X.shape[2:] and not any(begin + end) and set(dl) == {1} \
            and mode != LP:  # the window is the whole plane
        return _GLOBAL, oshape, cd, geo, (planes, -1), (planes,), low, pv
    if X.ndim <= 4 and mode != LP:
        rows = _rows_plan(X, cd, mode, k, s, dl, begin, end, out_sp, ceil_mode, cip)
        if rows is not None:
            return (_ROWS, oshape, cd) + rows
        sp = X.shape[2:]
        xs = (planes, sp[0] if len(sp) == 2 else 1, sp[-1])
        os_ = (planes, oshape[-2] if len(sp) == 2 else 1, oshape[-1])
        return _2D, oshape, cd, geo, xs, os_, low if mode == MAX else np.array(0, cd)[()], pv
    x4 = (planes,) + (1,) * (5 - X.ndim) + X.shape[2:]
    return _GENERIC, oshape, cd, geo, x4, (planes,) + (1,) * (5 - X.ndim) + out_sp, low, pv


def _rows_plan(X: np.ndarray, cd: np.dtype, mode: int, k: tuple[int, ...], s: tuple[int, ...],
               dl: tuple[int, ...], begin: tuple[int, ...], end: tuple[int, ...], out_sp: tuple[int, ...],
               ceil_mode: int, cip: int) -> tuple | None:
    """(geometry vector, input and output views, column counts, lane table) for ``pool_rows`` (float32,
    undilated, column stride 1 or 2, every window holding an input element), or None."""
    if cd != np.float32 or set(dl) != {1} or s[-1] not in (1, 2):
        return None
    sp = X.shape[2:]
    if len(sp) == 1:
        h, kh, sh, ph, eh, oh = 1, 1, 1, 0, 0, 1
    else:
        h, kh, sh, ph, eh, oh = sp[0], k[0], s[0], begin[0], end[0], out_sp[0]
    w, kw, sw, pw, ew, ow = sp[-1], k[-1], s[-1], begin[-1], end[-1], out_sp[-1]
    for o_n, st, kk, pb, n in ((oh, sh, kh, ph, h), (ow, sw, kw, pw, w)):
        for o in range(o_n):
            t0 = o * st - pb
            if min(t0 + kk, n) - max(t0, 0) < 1:
                return None
    g = pool_rows.geometry(h, w, oh, ow, kh, kw, sh, sw, ph, pw, eh, cip)
    cx = np.ones(-(-ow // pool_rows.MAXV) * pool_rows.MAXV, np.float32)
    for o in range(ow):
        cx[o] = axis_count(o, sw, 1, kw, pw, w, w + ew if cip else 0)
    planes = X.shape[0] * X.shape[1]
    return g, (planes, h, w), (planes, oh, ow), cx, pool_rows.small_table(w, ow, kw, sw, pw)


def _pool_run(X: np.ndarray, op_name: str, mode: int, kernel_shape: Sequence[int] | None,
              strides: Sequence[int] | None, dilations: Sequence[int] | None, pads: Sequence[int] | None,
              auto_pad: str, ceil_mode: int, cip: int, p: float, out: np.ndarray | None = None) -> np.ndarray:
    """A windowed pooling (values only). The plan passes the attributes as tuples, so the per-shape
    preparation is looked up by one tuple hash. out: where to write the result (returned), a
    C-contiguous array of the output's shape and X's dtype (the plan passes a slice of a Concat's
    output: codegen/plan.py's ``concat_in_place``), else allocated."""
    key = (X.shape, X.dtype, mode, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, p, cip)
    try:
        g = _PREPARED.get(key)
    except TypeError:  # list attributes (a direct call): not hashable, not cached
        g, key = None, None
    if g is None:
        g = _prepare(op_name, X, mode, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, p, cip)
        if key is not None:
            if len(_PREPARED) > 4096:
                _PREPARED.clear()
            _PREPARED[key] = g
    kind, oshape, cd, geo, xs, os_, a0, pv = g
    x = X if X.dtype == cd and X.flags.c_contiguous else np.ascontiguousarray(X, cd)
    if out is None:
        out = np.empty(oshape, cd)
    elif out.shape != tuple(oshape) or out.dtype != cd or X.dtype != cd or not out.flags.c_contiguous:
        raise RuntimeException(f"{op_name}: cannot write an output of shape {list(oshape)} ({X.dtype}) into an "
                               f"array of shape {list(out.shape)} ({out.dtype}, contiguous: {out.flags.c_contiguous})")
    if out.size:
        if kind == _ROWS:
            pool_rows.run(x.reshape(xs), out.reshape(os_), geo, a0, pv, mode)
        elif kind == _2D:
            pool2d(x.reshape(xs), out.reshape(os_), geo, None if mode == MAX else True, bool(cip), a0)
        elif kind == _GLOBAL:
            global_run(x.reshape(xs), out.reshape(os_), mode, pv, a0)
        elif mode == MAX:
            _max_pool(x.reshape(xs), out.reshape(os_), geo, a0)
        else:
            _sum_pool(x.reshape(xs), out.reshape(os_), geo, mode == LP, bool(cip), pv)
    return out if X.dtype == cd else out.astype(X.dtype)


def _compile_parts(X: np.ndarray, op_name: str, mode: int, kernel_shape: Sequence[int] | None,
                   strides: Sequence[int] | None, dilations: Sequence[int] | None, pads: Sequence[int] | None,
                   auto_pad: str, ceil_mode: int, cip: int, p: float, out: np.ndarray | None = None
                   ) -> dict[str, float]:
    """What a ``_pool_run`` call compiles, for ``jitort.compile_pool`` (seconds measured on Zen 3)."""
    kind, _, cd = _prepare(op_name, X, mode, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, p, cip)[:3]
    if kind == _ROWS:  # cold, one ISA path (measured on the Ice Lake VM, busy); its part function as much again
        return {f"pool_rows[{mode}]": 3.0}
    if kind == _2D:
        return {f"pool2d[{cd}]": 4.5} if mode == MAX else {f"avgpool2d[{cd}]": 5.5}
    if kind == _GLOBAL:
        return {f"global[{cd}][{mode}]": 0.5}
    return {f"generic[{cd}][{mode == MAX}]": 2.0}


_pool_run.compile_parts = _compile_parts  # type: ignore[attr-defined]
_pool_run.writes_into = True  # type: ignore[attr-defined]  # takes out= (codegen/plan.py's concat_in_place)


def _maxpool_with_indices(X: np.ndarray, kernel_shape: Sequence[int] | None, strides: Sequence[int] | None,
                          dilations: Sequence[int] | None, pads: Sequence[int] | None, auto_pad: str,
                          ceil_mode: int, storage_order: int) -> Any:
    cd = pool_compute_dtype("MaxPool", X.dtype, ints=True)
    k, s, dl, pp = pool_attrs("MaxPool", X, kernel_shape, strides, dilations, pads, check_pads=auto_pad in ("NOTSET", ""))
    out_sp, begin, end = pool_geometry("MaxPool", tuple(X.shape[2:]), k, s, dl, pp, auto_pad, int(ceil_mode))
    out = np.empty(X.shape[:2] + out_sp, cd)
    ind = np.empty(out.shape, np.int64)
    if out.size:
        _maxpool_indices(as_planes4(np.ascontiguousarray(X, cd)), as_planes4(out), as_planes4(ind), geometry_array(k, s, dl, begin, end),
                         int(storage_order), 0, np.array(lowest(cd), cd)[()])
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
