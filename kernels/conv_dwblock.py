"""Depthwise 2-D convolution of small planes, channels in vector lanes.

On the late layers of MobileNet/ShuffleNet-style networks (960 channels of 7x7) the per-channel
kernel (convdirect's ``dw_plane``) spends most of its time on per-plane overhead: a 7-wide row fills
under half a vector, and each plane pays a padding copy and a call. Here a block of VL channels
(one vector: 16 float32 with AVX-512, 8 with AVX2) is transposed into a zero-padded [Hp, Wp, VL]
buffer, so that one vector holds one pixel of VL channels; every output pixel of the block is then
``sum_t w[t] * x[pixel + tap t]`` with whole-vector loads and fmas (``dw_pixels``: U pixels at once,
independent fma chains, bias + Relu/Clip on the way out), and the [OH*OW, VL] result is transposed
back into the channels' planes (vector gathers both ways, ``gather_row``), where a residual or
another activation is applied (convutil's epilogues).

Every output is one fma chain in tap order from zero, the arithmetic of ``dw_plane``: the two paths
give bitwise equal results. Work is split between threads by channel blocks.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from jitort.kernels.convutil import epilogue_row, share, epilogue_residual
from jitort.kernels.vecir import VB, Vec

_U = 8  # output pixels per dw_pixels call (independent fma chains)
_MAX_OW = 8  # measured (Zen 4, 3x3): 7x7 planes 17 % faster than dw_plane; 14x14 and wider 1.5-2x slower

_KW = dict(cache=True, nogil=True, error_model="numpy")


def dwblock_applies(x_rank: int, w_shape: tuple[int, ...], group: int, ow: int) -> bool:
    """A 2-D depthwise convolution (one output channel per input channel) with narrow output rows."""
    return x_rank == 4 and w_shape[1] == 1 and group == w_shape[0] and ow <= _MAX_OW


def dwblock_scratch(OH: int, OW: int, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, itemsize: int) -> int:
    """Elements of scratch ``dwblock_kernel`` takes: the transposed padded block, the taps' weights,
    the transposed result, and slack for the pixels of a last partial group."""
    vl = VB // itemsize
    hp, wp = (OH - 1) * sh + (kh - 1) * dh + 1, (OW - 1) * sw + (kw - 1) * dw + 1
    return (hp * wp + _U * sw + kh * kw + 1 + OH * OW + _U) * vl


@intrinsic
def dw_pixels(typingctx, xt, xo, sx, toff, wt, st, so, nu, fin, lo, hi):  # type: ignore[no-untyped-def]
    """st[so + u*VL : +VL] = fin(sum_t wt[t*VL : +VL] * xt[xo + u*sx + toff[t] : +VL]) for u < nu
    (<= _U), in t order with fma from zero; fin as in convgemm's tile, with the lanes' bias vector
    at wt[T*VL] (T taps). The pixels u >= nu are computed from pixel 0's input and not stored."""
    if not all(isinstance(a, types.Array) for a in (xt, toff, wt, st)):
        return None
    dt = st.dtype
    if xt.dtype != dt or wt.dtype != dt or lo != dt or hi != dt:
        return None
    sig = types.void(xt, xo, sx, toff, wt, st, so, nu, fin, lo, hi)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        xtv, xo_, sx_, toffv, wtv, stv, so_, nu_, fin_, lo_, hi_ = args
        b = builder
        v = Vec(context, builder, dt)
        xbase = v.data(signature.args[0], xtv, xo_)
        tptr = v.data(signature.args[3], toffv)
        T = context.make_array(signature.args[3])(context, builder, toffv).nitems
        wbase = v.data(signature.args[4], wtv)
        sbase = v.data(signature.args[5], stv, so_)
        px = [v.at(xbase, b.select(b.icmp_signed("<", v.c(u), nu_), b.mul(v.c(u), sx_), v.c(0))) for u in range(_U)]
        accs = [cgutils.alloca_once_value(b, v.zero) for _ in range(_U)]
        with cgutils.for_range(b, T) as loop:
            t = loop.index
            off = b.load(v.at(tptr, t))
            wv = v.load(v.at(wbase, b.mul(t, v.c(v.VL))))
            for u in range(_U):
                b.store(v.fma(wv, v.load(v.at(px[u], off)), b.load(accs[u])), accs[u])
        finish = v.epilogue(fin_, lo_, hi_)
        bias = v.load(v.at(wbase, b.mul(T, v.c(v.VL))))
        for u in range(_U):
            with b.if_then(b.icmp_signed("<", v.c(u), nu_), likely=True):
                v.store(finish(b.load(accs[u]), bias), v.at(sbase, u * v.VL))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def gather_row(typingctx, dst, do, src, so, step, n):  # type: ignore[no-untyped-def]
    """dst.flat[do + i] = src.flat[so + i*step] for i < n (C-contiguous arrays of one dtype): vector
    gathers, then a scalar tail."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array)) or dst.dtype != src.dtype:
        return None
    dt = dst.dtype
    sig = types.void(dst, do, src, so, step, n)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        dv, do_, sv, so_, step_, n_ = args
        b = builder
        v = Vec(context, builder, dt)
        d, s_ = v.data(signature.args[0], dv, do_), v.data(signature.args[2], sv, so_)
        nv = b.sdiv(n_, v.c(v.VL))
        with cgutils.for_range(b, nv) as loop:
            i = b.mul(loop.index, v.c(v.VL))
            v.store(v.read(v.at(s_, b.mul(i, step_)), 0, step_), v.at(d, i))
        with cgutils.for_range(b, b.sub(n_, b.mul(nv, v.c(v.VL)))) as loop:
            i = b.add(b.mul(nv, v.c(v.VL)), loop.index)
            b.store(b.load(v.at(s_, b.mul(i, step_))), v.at(d, i))
        return context.get_dummy_value()

    return sig, codegen


@njit(**_KW)
def dwblock_kernel(x, w, b, out, z, geo, OH, OW, act, prm, ep, sc, part, nparts):  # type: ignore[no-untyped-def]
    """x [N, C, 1, H, W]; w [C, kh*kw]; out [N, C, OH*OW]; z None or the residual like out; geo as
    in conv.py (group C, 2-D). sc: ``dwblock_scratch`` elements; this call computes its ``part``
    of the channel blocks."""
    N, C, H, W = x.shape[0], x.shape[1], x.shape[3], x.shape[4]
    kh, kw, sh, sw, dh, dw, ph, pw = geo[2], geo[3], geo[5], geo[6], geo[8], geo[9], geo[11], geo[12]
    VL = VB // x.itemsize
    Hp = (OH - 1) * sh + (kh - 1) * dh + 1
    Wp = (OW - 1) * sw + (kw - 1) * dw + 1
    T = kh * kw
    P = OH * OW
    nx = (Hp * Wp + _U * sw) * VL
    xt = sc[:nx]
    wt = sc[nx:nx + (T + 1) * VL]
    st = sc[nx + (T + 1) * VL:nx + (T + 1) * VL + (P + _U) * VL]
    zero = prm[2]
    toff = np.empty(T, np.int64)
    for a in range(kh):
        for e in range(kw):
            toff[a * kw + e] = (a * dh * Wp + e * dw) * VL
    xt[Hp * Wp * VL:] = zero
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    HW = H * W
    fin = act + 1 if act <= 2 and z is None else 1
    b0, b1 = share((C + VL - 1) // VL, part, nparts)
    for n in range(N):
        for cb in range(b0, b1):
            c0 = cb * VL
            nc = min(VL, C - c0)
            for yp in range(Hp):
                iy = yp - ph
                for xq in range(Wp):
                    ix = xq - pw
                    base = (yp * Wp + xq) * VL
                    if 0 <= iy < H and 0 <= ix < W:
                        gather_row(xt, base, xf, (n * C + c0) * HW + iy * W + ix, HW, nc)
                        for lane in range(nc, VL):
                            xt[base + lane] = zero
                    else:
                        for lane in range(VL):
                            xt[base + lane] = zero
            for t in range(T + 1):  # the taps' weights, then the bias
                for lane in range(nc):
                    wt[t * VL + lane] = w[c0 + lane, t] if t < T else b[c0 + lane]
                for lane in range(nc, VL):
                    wt[t * VL + lane] = zero
            for oh in range(OH):
                for ow0 in range(0, OW, _U):
                    dw_pixels(xt, (oh * sh * Wp + ow0 * sw) * VL, sw * VL, toff, wt, st, (oh * OW + ow0) * VL,
                              min(_U, OW - ow0), fin, prm[0], prm[1])
            for lane in range(nc):
                m = c0 + lane
                gather_row(of, (n * C + m) * P, st, lane, VL, P)
                if z is not None:
                    epilogue_residual(out[n, m, ::1], z[n, m, ::1], act, prm, ep)
                elif act > 2:
                    epilogue_row(out[n, m, ::1], zero, act, prm, ep)
