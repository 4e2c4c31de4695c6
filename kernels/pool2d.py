"""The 1-D/2-D Max/AveragePool kernel (``pool.py`` prepares the calls): whole-plane vertical and
horizontal runs with border fix-ups. See the section comment below."""
from __future__ import annotations

import numpy as np
from numba import njit

from jitort.kernels.convutil import ow_range
from jitort.kernels.jit import njit_one

_KW = dict(cache=True, nogil=True, error_model="numpy")
_EP = dict(nogil=True, error_model="numpy")

# geo: [kd, kh, kw, sd, sh, sw, dd, dh, dw, pd, ph, pw, ed, eh, ew] (e* = end pads)


@njit(**_EP)
def axis_count(o, s, d, k, pb, n, limit):  # type: ignore[no-untyped-def]
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



# --- 2-D windows (1-D ones are [N*C, 1, W]): whole-plane runs --------------------------------------
# Late CNN layers have rows of 7..28 values, too short for per-row loops (or per-row calls) to keep up
# with onnxruntime, so each pass runs over as much of a plane as one index formula covers, and all
# per-row/per-column bookkeeping (border windows, their valid taps, divisors) is computed once per call.
# Vertical: V[oh] = reduction of the window's input rows; for every interior output row at once when
# sh == 1 (one run of (hi-lo)*W values). Horizontal: out[oh, ow] = reduction of V[oh, ow*sw-pw+e*dw];
# when W == sw*OW that index is sw*i + const over the flat plane, one run again. Columns whose window
# leaves its row (they read a neighbouring row or the margin) are recomputed afterwards ("fix-ups").
# Indices are unsigned so Numba adds no negative-index wraparound to the vector loops, and constant
# strides let LLVM vectorise the stride-2 reads as interleaved loads.

@njit_one(**_EP)
def _vrun(xc, src, sstep, tstep, k, v, dst, dstep, m, nrows, avg):  # type: ignore[no-untyped-def]
    """v[dst + r*dstep + i] = reduction over taps b < k of xc[src + r*sstep + b*tstep + i] (i < m, r < nrows).
    m > dstep (rows of dstep values, m rounded up to the vector width) overwrites the next row's start,
    computed later: short rows then run without a scalar remainder loop (2-3x faster at 7-28)."""
    un, t1, t2 = np.uint64(m), np.uint64(tstep), np.uint64(2 * tstep)
    for r in range(nrows):
        s = np.uint64(src + r * sstep)
        d = np.uint64(dst + r * dstep)
        if k == 1:
            for i in range(un):
                v[d + i] = xc[s + i]
        elif k == 2:
            if avg is None:
                for i in range(un):
                    v[d + i] = np.maximum(xc[s + i], xc[s + t1 + i])
            else:
                for i in range(un):
                    v[d + i] = xc[s + i] + xc[s + t1 + i]
        else:
            if avg is None:
                for i in range(un):
                    v[d + i] = np.maximum(np.maximum(xc[s + i], xc[s + t1 + i]), xc[s + t2 + i])
            else:
                for i in range(un):
                    v[d + i] = xc[s + i] + xc[s + t1 + i] + xc[s + t2 + i]
            for b in range(3, k):
                sb = s + np.uint64(b * tstep)
                if avg is None:
                    for i in range(un):
                        v[d + i] = np.maximum(v[d + i], xc[sb + i])
                else:
                    for i in range(un):
                        v[d + i] += xc[sb + i]


@njit_one(**_EP)
def _hrun(vb, sstep, o, n, nrows, kw, sw, dw, avg, dv):  # type: ignore[no-untyped-def]
    """o[r*n + t] = reduction over taps e < kw of vb[r*sstep + sw*t + e*dw] (averages: / dv[r*n + t])."""
    un, u1, u2 = np.uint64(n), np.uint64(1), np.uint64(2)
    s = np.uint64(sw)
    for r in range(nrows):
        b = np.uint64(r * sstep)
        d = np.uint64(r * n)
        if avg is None:
            if dw == 1 and sw == 2 and kw == 3:
                for t in range(un):
                    o[d + t] = np.maximum(np.maximum(vb[b + u2 * t], vb[b + u2 * t + u1]), vb[b + u2 * t + u2])
            elif dw == 1 and sw == 2 and kw == 2:
                for t in range(un):
                    o[d + t] = np.maximum(vb[b + u2 * t], vb[b + u2 * t + u1])
            elif dw == 1 and sw == 1 and kw == 3:
                for t in range(un):
                    o[d + t] = np.maximum(np.maximum(vb[b + t], vb[b + t + u1]), vb[b + t + u2])
            elif dw == 1 and sw == 1 and kw == 2:
                for t in range(un):
                    o[d + t] = np.maximum(vb[b + t], vb[b + t + u1])
            else:
                for t in range(un):
                    o[d + t] = vb[b + s * t]
                for e in range(1, kw):
                    be = b + np.uint64(e * dw)
                    for t in range(un):
                        o[d + t] = np.maximum(o[d + t], vb[be + s * t])
        elif dw == 1 and sw == 2 and kw == 3:
            for t in range(un):
                o[d + t] = (vb[b + u2 * t] + vb[b + u2 * t + u1] + vb[b + u2 * t + u2]) / dv[d + t]
        elif dw == 1 and sw == 2 and kw == 2:
            for t in range(un):
                o[d + t] = (vb[b + u2 * t] + vb[b + u2 * t + u1]) / dv[d + t]
        elif dw == 1 and sw == 1 and kw == 3:
            for t in range(un):
                o[d + t] = (vb[b + t] + vb[b + t + u1] + vb[b + t + u2]) / dv[d + t]
        elif dw == 1 and sw == 1 and kw == 2:
            for t in range(un):
                o[d + t] = (vb[b + t] + vb[b + t + u1]) / dv[d + t]
        else:
            for t in range(un):
                o[d + t] = vb[b + s * t]
            for e in range(1, kw):
                be = b + np.uint64(e * dw)
                for t in range(un):
                    o[d + t] += vb[be + s * t]
            for t in range(un):
                o[d + t] /= dv[d + t]


@njit(**_EP)
def _full_range(s, d, k, pb, n, count):  # type: ignore[no-untyped-def]
    """[lo, hi): the output positions o < count whose whole window o*s - pb + [0, (k-1)*d] is inside [0, n)."""
    lo = min((pb + s - 1) // s, count)
    last = n - 1 + pb - (k - 1) * d
    hi = min(last // s + 1, count) if last >= 0 else 0
    return lo, max(hi, lo)


@njit(**_EP)
def _borders(lo, hi, count, s, d, k, pb, n):  # type: ignore[no-untyped-def]
    """The output positions outside [lo, hi), each with its first valid input position and number of valid
    taps (a window's valid taps are consecutive)."""
    m = lo + count - hi
    pos = np.empty(m, np.int64)
    first = np.zeros(m, np.int64)
    taps = np.zeros(m, np.int64)
    for q in range(m):
        o = q if q < lo else hi + q - lo
        pos[q] = o
        e0, e1 = ow_range(o * s - pb, d, n, k)
        if e1 > e0:
            first[q] = o * s - pb + e0 * d
            taps[q] = e1 - e0
    return pos, first, taps


@njit(**_EP)
def _fix_column(vb, W, o, OH, OW, ow, t0, nt, dw, avg, dv, ident):  # type: ignore[no-untyped-def]
    """o[oh*OW + ow] = reduction of the nt taps vb[oh*W + t0 + e*dw] (two taps, the usual border, unrolled)."""
    if nt == 2:
        if avg is None:
            for oh in range(OH):
                o[oh * OW + ow] = np.maximum(vb[oh * W + t0], vb[oh * W + t0 + dw])
        else:
            for oh in range(OH):
                o[oh * OW + ow] = (vb[oh * W + t0] + vb[oh * W + t0 + dw]) / dv[oh * OW + ow]
        return
    for oh in range(OH):
        m = ident
        for e in range(nt):
            t = vb[oh * W + t0 + e * dw]
            m = np.maximum(m, t) if avg is None else m + t
        o[oh * OW + ow] = m if avg is None else m / dv[oh * OW + ow]


@njit(**_KW)
def pool2d(x, out, geo, avg, cip, ident):  # type: ignore[no-untyped-def]
    """x [P, H, W] -> out [P, OH, OW]: MaxPool (avg None) or AveragePool (avg True; cip:
    count_include_pad). ``avg is None`` is decided when Numba compiles (it prunes branches on a
    None argument), so the MaxPool specialisation has no averaging loops: a model with MaxPool
    only (most CNNs) compiles about half as much (9.1 -> 4.5 s cold, measured on Zen 3). The run
    helpers take avg the same way.

    When H == sh*OH, a chunk of consecutive planes is one tall image ([nc*H, W] -> [nc*OH, OW]):
    output row R's taps are input rows R*sh - ph + b*dh for every plane at once, so the vertical and
    horizontal runs cover the whole chunk and only the border rows of each plane are redone (their
    windows read the neighbouring plane). Small late-layer planes then cost no per-plane overhead.
    """
    P, H, W = x.shape
    OH, OW = out.shape[1], out.shape[2]
    kh, kw, sh, sw, dh, dw = geo[1], geo[2], geo[4], geo[5], geo[7], geo[8]
    ph, pw, eh, ew = geo[10], geo[11], geo[13], geo[14]
    T = x.dtype.type
    CH = min(max(1, 16384 // (OH * W)), P) if H == sh * OH else 1  # planes per chunk (V stays in L2)
    # V (CH*OH rows of W) lives in vb at offset pw, so the horizontal index sw*t + e*dw is never < 0
    vb = np.empty(pw + CH * OH * W + sw * OW + (kw - 1) * dw + 8, x.dtype)
    for i in range(vb.shape[0]):
        vb[i] = ident
    # averages divide by the product of per-axis tap counts (onnxruntime's divisor); an empty window
    # divides its zero sum by inf
    dv = np.empty(CH * OH * OW if avg is not None else 0, x.dtype)
    if avg is not None:
        cx = np.empty(OW, np.int64)
        for ow in range(OW):
            cx[ow] = axis_count(ow, sw, dw, kw, pw, W, W + ew if cip else 0)
        for oh in range(OH):
            cy = axis_count(oh, sh, dh, kh, ph, H, H + eh if cip else 0)
            for ow in range(OW):
                c = cy * cx[ow]
                for ci in range(CH):
                    dv[(ci * OH + oh) * OW + ow] = T(c) if c > 0 else T(np.inf)
    lo_h, hi_h = _full_range(sh, dh, kh, ph, H, OH)
    lo_w, hi_w = _full_range(sw, dw, kw, pw, W, OW)
    rows, rfirst, rtaps = _borders(lo_h, hi_h, OH, sh, dh, kh, ph, H)
    cols, cfirst, ctaps = _borders(lo_w, hi_w, OW, sw, dw, kw, pw, W)
    xf = x.reshape(-1)
    of = out.reshape(-1)
    W8 = W + (-W) % 8
    for c0 in range(0, P, CH):
        nc = min(CH, P - c0)
        base = c0 * H * W
        oc = of[c0 * OH * OW:(c0 + nc) * OH * OW]
        # vertical: the interior rows of the first to the last plane in one run (rows padded to the
        # vector width overwrite the next row's start, computed later in the same run), then the
        # border rows of each plane, exactly, over their valid taps
        r0, r1 = lo_h, (nc - 1) * OH + hi_h
        if hi_h > lo_h:
            if sh == 1:
                n = (r1 - r0) * W
                _vrun(xf, base + (r0 - ph) * W, 0, dh * W, kh, vb, pw + r0 * W, n, n, 1, avg)
            else:
                s0 = base + (r0 * sh - ph) * W
                last = s0 + (r1 - r0 - 1) * sh * W + (kh - 1) * dh * W + W8
                _vrun(xf, s0, sh * W, dh * W, kh, vb, pw + r0 * W, W, W8 if last <= xf.shape[0] else W,
                      r1 - r0, avg)
        for q in range(rows.shape[0]):  # one run per border row, over the chunk's planes
            d = pw + rows[q] * W
            if rtaps[q] > 0:
                _vrun(xf, base + rfirst[q] * W, H * W, dh * W, rtaps[q], vb, d, OH * W, W, nc, avg)
            else:
                for ci in range(nc):
                    for i in range(W):
                        vb[d + ci * OH * W + i] = ident
        # horizontal: one run over the chunk, or one per row
        if sw * OW == W:
            _hrun(vb, 0, oc, nc * OH * OW, 1, kw, sw, dw, avg, dv)
        else:
            _hrun(vb, W, oc, OW, nc * OH, kw, sw, dw, avg, dv)
        # fix-ups: border columns over their valid taps
        for q in range(cols.shape[0]):
            _fix_column(vb, W, oc, nc * OH, OW, cols[q], pw + cfirst[q], ctaps[q], dw, avg, dv, ident)
