"""The layouts of kernels/qconv_lanes.py's integer convolution: the zero-point-padded NHWC phase
planes its tiles read, copied once per call from an NCHW or NHWC image (``nhwc_pad``,
``nhwc_pad_nhwc``), the byte offset of each k = (tap, 4 input channels) in them (``offsets``), and
the copies of an output buffer into NCHW or NHWC (``to_nchw``, ``to_nhwc``). Each copy takes a
part's share of its rows (the caller splits them between threads).

A stride-2 convolution reads its input through its 2 x 2 phases: phase plane a s + b holds the
padded pixels (i s + a, j s + b), so every tap of a tile reads consecutive pixels of one plane
(``grid``: the planes' rows and row length). The transposes move blocks of BT pixels x BT channels
(both sides' lines stay in L1: 2.4x faster than pixel by pixel for ``to_nchw`` on the Ice Lake VM).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from jitort.kernels.convutil import share

BT = 16  # the layout transposes' block (pixels x channels)


def grid(OH: int, OW: int, KH: int, KW: int, s: int) -> tuple[int, int]:
    """(Hq, Wq): rows and row length of each of the s x s phase planes (``nhwc_pad``)."""
    return OH + (KH - 1) // s, OW + (KW - 1) // s


@njit(cache=True, nogil=True)
def nhwc_pad(x, xp, ph, pw, s, zb, flip, part, nparts):  # type: ignore[no-untyped-def]
    """xp [SS, Hq, Wq, Cp] (one image) = x [C, H, W] (uint8 bytes, XOR flip) zero-point-padded at
    (ph, pw) and split into phases: xp[a s + b, i, j, c] = padded x[c, i s + a, j s + b]; pixels in
    the padding hold zb, channels past C hold 0; this part's share of the phase rows. The inside is
    transposed in blocks of BT pixels x BT channels (both sides' lines stay in L1)."""
    C, H, W = x.shape
    SS, Hq, Wq, Cp = xp.shape
    r0, r1 = share(s * Hq, part, nparts)  # this part's phase rows
    for r in range(r0, r1):
        a, i = r // Hq, r % Hq
        h = i * s + a - ph
        for bb in range(s):
            dst = xp[a * s + bb, i]
            # columns j reading inside x: j s + bb - pw in [0, W)
            j0 = min(Wq, max(0, (pw - bb + s - 1) // s))
            j1 = max(j0, min(Wq, (W + pw - bb + s - 1) // s))
            if h < 0 or h >= H:
                j0 = j1 = Wq
            for j in range(Wq):
                if j < j0 or j >= j1:
                    for c in range(C):
                        dst[j, c] = zb
                for c in range(C, Cp):
                    dst[j, c] = 0
            if j0 >= j1:
                continue
            src = x[:, h]
            for jb in range(j0, j1, BT):
                je = min(j1, jb + BT)
                for cb in range(0, C, BT):
                    if je - jb == BT and cb + BT <= C:  # a whole block: fixed trip counts
                        for jj in range(BT):
                            col = (jb + jj) * s + bb - pw
                            for cc in range(BT):
                                dst[jb + jj, cb + cc] = src[cb + cc, col] ^ flip
                    else:
                        for j in range(jb, je):
                            col = j * s + bb - pw
                            for c in range(cb, min(C, cb + BT)):
                                dst[j, c] = src[c, col] ^ flip


@njit(cache=True, nogil=True)
def nhwc_pad_nhwc(x, xp, ph, pw, s, zb, flip, part, nparts):  # type: ignore[no-untyped-def]
    """``nhwc_pad`` from an NHWC image x [H, W, C]: rows of pixels copied, no transpose."""
    H, W, C = x.shape
    SS, Hq, Wq, Cp = xp.shape
    r0, r1 = share(s * Hq, part, nparts)
    for r in range(r0, r1):
        a, i = r // Hq, r % Hq
        h = i * s + a - ph
        for bb in range(s):
            dst = xp[a * s + bb, i]
            for j in range(Wq):
                w = j * s + bb - pw
                d = dst[j]
                if h < 0 or h >= H or w < 0 or w >= W:
                    for c in range(C):
                        d[c] = zb
                else:
                    src = x[h, w]
                    for c in range(C):
                        d[c] = src[c] ^ flip
                for c in range(C, Cp):
                    d[c] = 0


@njit(cache=True, nogil=True)
def to_nhwc(o, out, M, part, nparts):  # type: ignore[no-untyped-def]
    """out [P, M] = o [P, Mp][:, :M] (an NHWC output whose channels are not a whole number of pairs)."""
    P = o.shape[0]
    p0, p1 = share(P, part, nparts)
    for p in range(p0, p1):
        for m in range(M):
            out[p, m] = o[p, m]


@njit(cache=True, nogil=True)
def to_nchw(o, out, M, part, nparts):  # type: ignore[no-untyped-def]
    """out [M, P] = o [P, Mp][:, :M] transposed (bytes), this part's share of the positions, in
    blocks of BT x BT (2.4x faster than position by position here)."""
    P = o.shape[0]
    b0, b1 = share((P + BT - 1) // BT, part, nparts)
    for p0 in range(b0 * BT, min(P, b1 * BT), BT):
        p1 = min(P, p0 + BT)
        for m0 in range(0, M, BT):
            if p1 - p0 == BT and m0 + BT <= M:  # a whole block: fixed trip counts
                for i in range(BT):
                    for j in range(BT):
                        out[m0 + j, p0 + i] = o[p0 + i, m0 + j]
            else:
                for p in range(p0, p1):
                    for m in range(m0, min(M, m0 + BT)):
                        out[m, p] = o[p, m]


def offsets(C4: int, KH: int, KW: int, Hq: int, Wq: int, Cp: int, s: int) -> np.ndarray:
    """Byte offset of each k = (tap kh KW + kw, channel quad q) from a position's first byte."""
    off = np.empty(KH * KW * C4, np.int64)
    for i in range(KH):
        for j in range(KW):
            ph = (i % s) * s + j % s
            base = ((ph * Hq + i // s) * Wq + j // s) * Cp
            t = i * KW + j
            off[t * C4:(t + 1) * C4] = base + 4 * np.arange(C4)
    return off
