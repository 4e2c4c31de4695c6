"""1-D convolution over long windows of few input channels: the learned-STFT front ends of audio models.

A Conv1d with C = 1..4 input channels, a long kernel (e.g. 256) and a large stride (e.g. 128) has
few outputs per channel (a 576-sample chunk gives 3) and many channels (258). The other paths take
it badly: the depthwise kernel (C/group == 1) runs one channel at a time with strided gathers, the
im2col GEMM runs 3-column products. Here the product is turned around,

    out[m, p] = sum_{c, e} xp[c, p*sw + e*dw] * w[m, c, e]   <=>   out^T = Windows @ W^T

with Windows[p, k] read straight from a zero-padded copy of the input (row p is the window of
output p: contiguous per channel, so no gathers and no im2col) and W^T packed once at compile time
([K, Mpad], ``pack_window_weights``). The register tile (``win_tile``) is R = 6 output positions x
NV vectors of output channels (NV = 4 with 512-bit vectors, else 2: 24 or 12 accumulators); its
results land in a small [positions, Mpad] block that is then transposed into the output, where the
bias, the residual Z and the activation are applied (convutil's epilogue).

Every output element is one fma chain in k order (channel-major, then tap), as on the other conv
paths: results do not depend on the blocking, the vector width or the thread count. The packed
layout does not depend on the host: Mpad is a multiple of 64 bytes, whatever the vector width
(columns past the last whole tile run as one-vector tiles).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from jitort.kernels.convdirect import SLACK, copy_row, fill_row
from jitort.kernels.convutil import EP, epilogue_row, share
from jitort.kernels.vecir import VB, Vec

WIN_R = 6  # output positions per register tile
_ROW_BYTES = 64  # Mpad granularity: whole vectors on every vector width (1 x 64 B, 2 x 32 B)
_BLOCK_TILES = 8  # position tiles per transposed block (48 positions x Mpad stays in L1/L2)
_MAX_C = 4  # input channels: beyond, the GEMM paths read each window's channels as well
_MIN_K = 16  # C * kernel: shorter sums are better served by the depthwise/implicit kernels

_KW = dict(cache=True, nogil=True, error_model="numpy")


def window_applies(w_shape: tuple[int, ...], group: int) -> bool:
    """A 1-D convolution (W [M, C, k]), one group, few input channels, a long enough sum. Depends
    on the weights and attributes only, so the lowering knows the path without the input length."""
    return (len(w_shape) == 3 and group == 1 and w_shape[1] <= _MAX_C and w_shape[1] * w_shape[2] >= _MIN_K
            and w_shape[0] >= 8)


_NV = 4 if VB == 64 else 2  # accumulator vectors per tile row (of 32 zmm / 16 ymm registers)


def pack_window_weights(w: np.ndarray, dt: np.dtype) -> np.ndarray:
    """W [M, C, k] -> W^T [K = C*k, Mpad] in dt, zero columns past M (``window_cols``)."""
    M = w.shape[0]
    K = int(np.prod(w.shape[1:]))
    out = np.zeros((K, window_cols(M, dt)), dt)
    out[:, :M] = w.reshape(M, K).T
    return out


@intrinsic
def win_tile(typingctx, xp, xo, sx, toff, wt, wo, ldw, t, to, ldt, nv):  # type: ignore[no-untyped-def]
    """t[to + r*ldt + j] = sum_k xp[xo + r*sx + toff[k]] * wt[wo + k*ldw + j] for r < WIN_R and j <
    nv vectors (literal), k < len(toff), summed in k order with fma; full vector loads and stores
    (wt and t are padded to whole vectors, xp to whole tiles)."""
    if not all(isinstance(a, types.Array) for a in (xp, toff, wt, t)):
        return None
    if not isinstance(nv, types.IntegerLiteral):
        return None
    dt = t.dtype
    if xp.dtype != dt or wt.dtype != dt:
        return None
    NV = nv.literal_value
    R = WIN_R
    sig = types.void(xp, xo, sx, toff, wt, wo, ldw, t, to, ldt, nv)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        xpv, xo_, sx_, toffv, wtv, wo_, ldw_, tv, to_, ldt_, _ = args
        b = builder
        v = Vec(context, builder, dt)
        xbase = v.data(signature.args[0], xpv, xo_)
        tptr = v.data(signature.args[3], toffv)
        K = context.make_array(signature.args[3])(context, builder, toffv).nitems
        wbase = v.data(signature.args[4], wtv, wo_)
        tbase = v.data(signature.args[7], tv, to_)
        rows = [v.at(xbase, b.mul(v.c(r), sx_)) for r in range(R)]
        accs = [[cgutils.alloca_once_value(b, v.zero) for _ in range(NV)] for _ in range(R)]
        with cgutils.for_range(b, K) as loop:
            k = loop.index
            off = b.load(v.at(tptr, k))
            wrow = v.at(wbase, b.mul(k, ldw_))
            bv = [v.load(v.at(wrow, j * v.VL)) for j in range(NV)]
            for r in range(R):
                s = v.splat(b.load(v.at(rows[r], off)))
                for j in range(NV):
                    b.store(v.fma(s, bv[j], b.load(accs[r][j])), accs[r][j])
        for r in range(R):
            trow = v.at(tbase, b.mul(v.c(r), ldt_))
            for j in range(NV):
                v.store(b.load(accs[r][j]), v.at(trow, j * v.VL))
        return context.get_dummy_value()

    return sig, codegen


def window_scratch(C: int, OW: int, kw: int, sw: int, dw: int, mpad: int) -> int:
    """Elements of scratch ``window_kernel`` takes: the padded input rows and one transposed block."""
    return C * _row_len(OW, kw, sw, dw) + SLACK + _BLOCK_TILES * WIN_R * mpad


def _row_len(OW: int, kw: int, sw: int, dw: int) -> int:
    """Padded input row: the windows of every position of whole tiles (the last tile's extra
    positions read zeros)."""
    pp = -(-OW // WIN_R) * WIN_R
    return (pp - 1) * sw + (kw - 1) * dw + 1


_row_len_jit = njit(**EP)(_row_len)


@njit(**_KW)
def window_kernel(x, wt, b, out, z, geo, OW, act, prm, ep, sc, part, nparts):  # type: ignore[no-untyped-def]
    """x [N, C, 1, 1, W]; wt from ``pack_window_weights``; out [N, M, OW]; z None or the residual
    [N, M, OW] (added before the activation); geo as in conv.py (group 1, 1-D). sc: scratch of
    ``window_scratch`` elements; this call computes its ``part`` of the position tiles."""
    N, C, W = x.shape[0], x.shape[1], x.shape[4]
    M = out.shape[1]
    kw, sw, dw, pw = geo[3], geo[6], geo[9], geo[12]
    K = C * kw
    mpad = wt.shape[1]
    L = _row_len_jit(OW, kw, sw, dw)
    xp = sc[:C * L + SLACK]
    tb = sc[C * L + SLACK:C * L + SLACK + _BLOCK_TILES * WIN_R * mpad]
    zero = prm[2]
    toff = np.empty(K, np.int64)
    for c in range(C):
        for e in range(kw):
            toff[c * kw + e] = c * L + e * dw
    lo = min(max(pw, 0), L)  # the input's first column lands at pw (negative pads crop)
    src0 = max(-pw, 0)
    n_in = max(0, min(W - src0, L - lo))
    ntiles = (OW + WIN_R - 1) // WIN_R
    t0, t1 = share(ntiles, part, nparts)
    VLx = VB // x.itemsize
    TW = _NV * VLx  # output channels per tile
    for n in range(N):
        for c in range(C):
            fill_row(xp, c * L, lo, zero)
            copy_row(xp, c * L + lo, x, (n * C + c) * W + src0, n_in, 1)
            fill_row(xp, c * L + lo + n_in, L - lo - n_in, zero)
        fill_row(xp, C * L, SLACK, zero)
        for q0 in range(t0, t1, _BLOCK_TILES):
            q1 = min(t1, q0 + _BLOCK_TILES)
            for q in range(q0, q1):
                to = (q - q0) * WIN_R * mpad
                mfull = mpad - mpad % TW
                for m0 in range(0, mfull, TW):
                    win_tile(xp, q * WIN_R * sw, sw, toff, wt, m0, mpad, tb, to + m0, mpad, _NV)
                for m0 in range(mfull, mpad, VLx):  # the last columns, one vector at a time
                    win_tile(xp, q * WIN_R * sw, sw, toff, wt, m0, mpad, tb, to + m0, mpad, 1)
            p0 = q0 * WIN_R
            p1 = min(OW, q1 * WIN_R)
            for m in range(M):
                orow = out[n, m, ::1]
                if z is None:
                    for p in range(p0, p1):
                        orow[p] = tb[(p - p0) * mpad + m]
                else:
                    zrow = z[n, m]
                    for p in range(p0, p1):
                        orow[p] = tb[(p - p0) * mpad + m] + zrow[p]
                epilogue_row(orow[p0:p1], b[m], act, prm, ep)


def window_cols(M: int, dt: np.dtype) -> int:
    """Mpad: the packed W^T's row length for M output channels (whole 64-byte rows)."""
    step = _ROW_BYTES // np.dtype(dt).itemsize
    return -(-M // step) * step
