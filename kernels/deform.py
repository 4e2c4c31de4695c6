"""DeformConv (opset 19, 22): convolution whose sampling points are shifted by learned offsets.

For output position (oh, ow) and kernel tap (i, j) of offset group og, the input is sampled at
    y = oh*sh - ph + i*dh + offset[n, og, i, j, 0, oh, ow]
    x = ow*sw - pw + j*dw + offset[n, og, i, j, 1, oh, ow]
by bilinear interpolation in which every corner outside the (unpadded) input reads zero (the
spec's GridSample with align_corners=1 and zero padding), multiplied by mask[n, og, i, j, oh, ow]
when a mask is given. The samples form an im2col matrix, blocked over output positions so it stays
in cache, and each group is one BLAS GEMM W[g] @ col[g], plus the bias.

The corner indices and weights (mask folded in) are computed once per (offset group, tap,
position) and reused by every channel of the offset group. 2-D is native; 1-D runs as 2-D with a
height of one and zero vertical offsets; 3-D raises NotImplemented. float16/bfloat16 compute in
float32.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numba import njit

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels.conv_setup import attrs_norm, conv_geometry
from jitort.kernels.registry import FLOAT, op

_KW = dict(cache=True, nogil=True, error_model="numpy")
# column tile: at most 256K elements of the compute dtype (1 MiB float32)
_BLOCK = 1 << 18


@njit(**_KW)
def _deform(x, off, mask, has_mask, w, b, out, geo, OH, OW):  # type: ignore[no-untyped-def]
    """x [N, C, H*W]; off [N, og*KK*2, P]; mask [N, og*KK, P] (ignored unless has_mask);
    w [M, Cg*KK]; b [M]; out [N, M, P]; geo [group, og, kh, kw, sh, sw, dh, dw, ph, pw, H, W]."""
    N, C = x.shape[0], x.shape[1]
    M, K = w.shape
    P = out.shape[2]
    group, og, kh, kw = geo[0], geo[1], geo[2], geo[3]
    sh, sw, dh, dw, ph, pw, H, W = geo[4], geo[5], geo[6], geo[7], geo[8], geo[9], geo[10], geo[11]
    KK = kh * kw
    Cg = C // group
    Mg = M // group
    Cog = C // og
    pb = max(16, _BLOCK // max(1, C * KK))
    pb = min(pb, P)
    dt = x.dtype
    one = dt.type(1)
    col = np.empty(C * KK * pb, dt)
    tmp = np.empty(Mg * pb, dt)
    idx = np.empty((4, pb), np.int64)
    wt = np.empty((4, pb), dt)
    for n in range(N):
        for p0 in range(0, P, pb):
            p1 = min(P, p0 + pb)
            q = p1 - p0
            colv = col[:C * KK * q].reshape(C * KK, q)
            for o in range(og):
                for i in range(kh):
                    for j in range(kw):
                        t = o * KK + i * kw + j
                        oy = off[n, 2 * t]
                        ox = off[n, 2 * t + 1]
                        for p in range(p0, p1):
                            r = p // OW
                            s = p - r * OW
                            y = dt.type(r * sh - ph + i * dh) + oy[p]
                            xx = dt.type(s * sw - pw + j * dw) + ox[p]
                            m = mask[n, t, p] if has_mask else one
                            k = p - p0
                            for u in range(4):
                                idx[u, k] = 0
                                wt[u, k] = 0
                            # outside (-1, H) x (-1, W), or NaN: every corner is padding
                            if not (y > -1 and y < H and xx > -1 and xx < W):
                                continue
                            fy = np.floor(y)  # math.floor returns an int64 (would promote to float64)
                            fx = np.floor(xx)
                            y0 = int(fy)
                            x0 = int(fx)
                            ly = y - fy
                            lx = xx - fx
                            hy = one - ly
                            hx = one - lx
                            if y0 >= 0:
                                if x0 >= 0:
                                    idx[0, k] = y0 * W + x0
                                    wt[0, k] = hy * hx * m
                                if x0 + 1 < W:
                                    idx[1, k] = y0 * W + x0 + 1
                                    wt[1, k] = hy * lx * m
                            if y0 + 1 < H:
                                if x0 >= 0:
                                    idx[2, k] = (y0 + 1) * W + x0
                                    wt[2, k] = ly * hx * m
                                if x0 + 1 < W:
                                    idx[3, k] = (y0 + 1) * W + x0 + 1
                                    wt[3, k] = ly * lx * m
                        kk = i * kw + j
                        for c in range(o * Cog, (o + 1) * Cog):
                            xc = x[n, c]
                            row = colv[c * KK + kk]
                            for k in range(q):
                                row[k] = (wt[0, k] * xc[idx[0, k]] + wt[1, k] * xc[idx[1, k]]
                                          + wt[2, k] * xc[idx[2, k]] + wt[3, k] * xc[idx[3, k]])
            for g in range(group):
                tv = tmp[:Mg * q].reshape(Mg, q)
                np.dot(w[g * Mg:(g + 1) * Mg], colv[g * Cg * KK:(g + 1) * Cg * KK], tv)
                for mm in range(Mg):
                    mo = g * Mg + mm
                    dst = out[n, mo, p0:p1]
                    src = tv[mm]
                    bm = b[mo]
                    for k in range(q):
                        dst[k] = src[k] + bm


def _deform_conv(X: np.ndarray, W: np.ndarray, offset: np.ndarray, B: np.ndarray | None, mask: np.ndarray | None,
                 dilations: Sequence[int] | None, group: int, kernel_shape: Sequence[int] | None, offset_group: int,
                 pads: Sequence[int] | None, strides: Sequence[int] | None, cd: np.dtype) -> np.ndarray:
    name = "DeformConv"
    if X.ndim < 3 or W.ndim != X.ndim:
        raise InvalidArgument(f"{name}: X {list(X.shape)} and W {list(W.shape)} must have the same rank >= 3")
    rank = X.ndim - 2
    if rank > 2:
        raise OrtNotImplemented(f"{name}: jitort supports 1-D and 2-D deformable convolution, got X of rank {X.ndim}")
    if kernel_shape and tuple(kernel_shape) != tuple(W.shape[2:]):
        raise InvalidArgument(f"{name}: kernel_shape {list(kernel_shape)} is not compatible with W {list(W.shape)}")
    N, C = X.shape[0], X.shape[1]
    M = W.shape[0]
    if group <= 0 or C != W.shape[1] * group or M % group:
        raise InvalidArgument(f"{name}: X has {C} channels and W {list(W.shape)}: need C = W.shape[1] * group "
                              f"and M divisible by group (group {group})")
    if offset_group <= 0 or C % offset_group:
        raise InvalidArgument(f"{name}: input channels {C} are not divisible by offset_group {offset_group}")
    kernel, s, dl, p = attrs_norm(rank, W.shape[2:], strides, dilations, pads)
    out_sp, begin = conv_geometry(tuple(X.shape[2:]), kernel, s, dl, p, "NOTSET", name)
    KK = int(np.prod(kernel))
    want = (N, offset_group * KK * rank) + out_sp
    if offset.shape != want:
        raise InvalidArgument(f"{name}: offset must have shape {list(want)}, got {list(offset.shape)}")
    if mask is not None and mask.shape != (N, offset_group * KK) + out_sp:
        raise InvalidArgument(f"{name}: mask must have shape {[N, offset_group * KK, *out_sp]}, "
                              f"got {list(mask.shape)}")
    if B is not None and B.shape != (M,):
        raise InvalidArgument(f"{name}: B must have shape [{M}], got {list(B.shape)}")
    P = int(np.prod(out_sp))
    if rank == 1:  # as 2-D: height one, vertical offsets zero
        x2 = X.reshape(N, C, X.shape[2])
        H, Wd = 1, X.shape[2]
        off2 = np.zeros((N, offset_group * KK, 2, P), cd)
        off2[:, :, 1] = offset.reshape(N, -1, P)
        off2 = off2.reshape(N, -1, P)
        kh, kw, sh, sw, dh, dw, ph, pw = 1, kernel[0], 1, s[0], 1, dl[0], 0, begin[0]
        OH, OW = 1, out_sp[0]
    else:
        H, Wd = X.shape[2], X.shape[3]
        x2 = X.reshape(N, C, H * Wd)
        off2 = offset.reshape(N, -1, P)
        (kh, kw), (sh, sw), (dh, dw), (ph, pw) = kernel, s, dl, begin
        OH, OW = out_sp
    out = np.empty((N, M) + out_sp, cd)
    if out.size == 0:
        return out.astype(X.dtype, copy=False)
    if x2.size == 0 or W.shape[1] == 0:
        out[...] = 0 if B is None else B.astype(cd).reshape((1, M) + (1,) * rank)
        return out.astype(X.dtype, copy=False)
    geo = np.array([group, offset_group, kh, kw, sh, sw, dh, dw, ph, pw, H, Wd], np.int64)
    mk = np.ones((1, 1, 1), cd) if mask is None else np.ascontiguousarray(mask, cd).reshape(N, -1, P)
    w2 = np.ascontiguousarray(W, cd).reshape(M, -1)
    b = np.zeros(M, cd) if B is None else np.ascontiguousarray(B, cd)
    _deform(np.ascontiguousarray(x2, cd), np.ascontiguousarray(off2, cd), mk, mask is not None, w2, b,
            out.reshape(N, M, P), geo, OH, OW)
    return out.astype(X.dtype, copy=False)


@op("DeformConv", since=19, compute=FLOAT)
def DeformConv(X: np.ndarray, W: np.ndarray, offset: np.ndarray, B: np.ndarray | None = None,
               mask: np.ndarray | None = None, *, dilations: Sequence[int] | None = None, group: int,
               kernel_shape: Sequence[int] | None = None, offset_group: int, pads: Sequence[int] | None = None,
               strides: Sequence[int] | None = None, _compute: np.dtype) -> np.ndarray:
    """DeformConv, opset 19 and 22 (22 only adds bfloat16)."""
    return _deform_conv(X, W, offset, B, mask, dilations, group, kernel_shape, offset_group, pads, strides,
                        _compute)
