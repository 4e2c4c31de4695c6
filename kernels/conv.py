"""Convolution: Conv (with a fused bias + activation epilogue), ConvTranspose, quantised stubs.

Every spatial rank (1-D, 2-D, 3-D) runs through one 3-D kernel per dtype: a 1-D or 2-D input is
viewed as [N, C, 1, 1, W] / [N, C, 1, H, W] (a free reshape), so a model pays one compile per dtype
and not one per rank. Geometry (kernel, strides, dilations, begin pads, group) travels as one
int64 array, the epilogue's alpha/beta as one array of the compute dtype; the activation is an int
code the kernel branches on outside its inner loops, so a new activation never compiles anything.

Algorithms (Cg = C / group input channels per group, K = Cg * prod(kernel)):

* 1x1, stride 1, no padding: a plain BLAS GEMM W[Mg, Cg] @ X[Cg, block] per column block, written
  straight into the output (strided GEMM, no copy), epilogue on the block while it is hot.
* Cg == 1 (depthwise, incl. channel multipliers): a direct kernel over a zero-padded copy of each
  input plane; with unit strides every tap is a constant offset into the flattened plane, so a
  plane is a few long contiguous multiply-adds (see ``_conv_direct``).
* 3x3, stride 1, dilation 1, one group, >= 16 channels in and out: Winograd F(2x2, 3x3), whose
  transformed weights the ``lower`` hook computes once (see ``_conv_winograd``).
* otherwise: im2col, blocked over output rows so that the column tile (K x rows*OW) stays in
  cache; the GEMM writes the output block in place and the epilogue finishes it in the same call.

Inner loops index slices from 0: a computed index that Numba cannot prove non-negative gets a
wraparound select per element, which keeps the loop scalar (depthwise 3x3 was 10x slower).

float16 computes in float32 (constant weights are converted once at compile time by the
``lower`` hook, which also reshapes W to [M, K] and materialises a zero bias).
"""
from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import llvmlite.binding as ll
import numpy as np
from numba import njit, types
from numba.extending import get_cython_function_address, overload

from jitort.errors import Fail, InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels.fastmath import sigmoid_f32, sigmoid_f64
from jitort.kernels.registry import Call, Ref, default_call, op

ACTIVATIONS = {"": 0, "Relu": 1, "Clip": 2, "LeakyRelu": 3, "HardSigmoid": 4, "HardSwish": 5,
               "Sigmoid": 6, "SiLU": 7}

# im2col: aim for GEMMs of ~512 columns (OpenBLAS is efficient from there), with a column tile of
# at most 256K elements (1 MiB float32). Measured on the 3x3 64->64 56x56 case; flat beyond.
_BLOCK = 1 << 18
_GEMM_COLS = 512

_KW = dict(cache=True, nogil=True, error_model="numpy")


# --- BLAS with leading dimensions ----------------------------------------------------------------
# ``np.dot`` inside @njit needs contiguous operands and goes to scipy's OpenBLAS. The kernels here
# want strided GEMMs (a column block of X or of the output, ldb/ldc = the full row length) so that
# tiles are computed in place without copies, so they call ?gemm directly through an external
# symbol. The compiled code refers to the symbol by name, which keeps it cacheable (a ctypes
# pointer would be frozen into the cache); the address is registered at import. numpy's own
# OpenBLAS (ILP64, newer: ~25% faster on these shapes here) is preferred, scipy's (the one Numba
# uses) is the fallback. Both take the Fortran ABI with every argument by reference; integers are
# passed as pointers to int64 slots, which a 32-bit-integer BLAS reads correctly (little endian).

def _blas_address(name: str) -> int:
    libdir = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libdir.glob("libscipy_openblas64_*.so*")):
        try:
            fn = getattr(ctypes.CDLL(str(path)), f"scipy_{name}_64_")
            return int(ctypes.cast(fn, ctypes.c_void_p).value)  # type: ignore[arg-type]
        except (OSError, AttributeError):
            continue
    return int(get_cython_function_address("scipy.linalg.cython_blas", name))


ll.add_symbol("jitort_conv_sgemm", _blas_address("sgemm"))
ll.add_symbol("jitort_conv_dgemm", _blas_address("dgemm"))
_sig13 = types.void(*([types.int64] * 13))
_sgemm = types.ExternalFunction("jitort_conv_sgemm", _sig13)
_dgemm = types.ExternalFunction("jitort_conv_dgemm", _sig13)


def _gemm(a, b, c, beta):  # type: ignore[no-untyped-def]
    raise NotImplementedError  # @njit only: see the overload


@overload(_gemm)
def _gemm_ov(a, b, c, beta):  # type: ignore[no-untyped-def]
    """c = a @ b + beta * c for 2-D views with unit inner stride (row strides arbitrary)."""
    fn = _sgemm if a.dtype == types.float32 else _dgemm

    def impl(a, b, c, beta):  # type: ignore[no-untyped-def]
        M, K = a.shape
        N = b.shape[1]
        if M == 0 or N == 0:
            return
        isz = a.itemsize
        ints = np.empty(7, np.int64)
        # Row-major C = A B is column-major C^T = B^T A^T: m=N, n=M, lda=ldb_rowmajor, ldb=lda_rowmajor.
        ints[0] = N
        ints[1] = M
        ints[2] = K
        ints[3] = max(b.strides[0] // isz, N, 1)
        ints[4] = max(a.strides[0] // isz, K, 1)
        ints[5] = max(c.strides[0] // isz, N, 1)
        ints[6] = 78  # 'N' in the slot's first byte
        fl = np.empty(2, a.dtype)
        fl[0] = 1
        fl[1] = beta
        p = ints.ctypes.data
        q = fl.ctypes.data
        fn(p + 48, p + 48, p, p + 8, p + 16, q, b.ctypes.data, p + 24, a.ctypes.data, p + 32, q + isz,
           c.ctypes.data, p + 40)
    return impl


# --- scalar helpers ------------------------------------------------------------------------------

# One small function per activation: a loop per function vectorises reliably, whereas one function
# holding all eight loops left some of them scalar (measured: Clip 0.94 vs 0.14 ns/element).

_EP = dict(nogil=True, error_model="numpy")


@njit(**_EP)
def _ep_none(dst, src, bias):  # type: ignore[no-untyped-def]
    for i in range(src.shape[0]):
        dst[i] = src[i] + bias


@njit(**_EP)
def _ep_relu(dst, src, bias, zero):  # type: ignore[no-untyped-def]
    for i in range(src.shape[0]):
        v = src[i] + bias
        dst[i] = zero if v < zero else v


@njit(**_EP)
def _ep_clip(dst, src, bias, lo, hi):  # type: ignore[no-untyped-def]
    for i in range(src.shape[0]):
        v = src[i] + bias
        v = lo if v < lo else v
        dst[i] = hi if v > hi else v


@njit(**_EP)
def _ep_leaky(dst, src, bias, zero, alpha):  # type: ignore[no-untyped-def]
    for i in range(src.shape[0]):
        v = src[i] + bias
        dst[i] = v if v >= zero else alpha * v


@njit(**_EP)
def _ep_hardsigmoid(dst, src, bias, zero, one, alpha, beta):  # type: ignore[no-untyped-def]
    for i in range(src.shape[0]):
        v = alpha * (src[i] + bias) + beta
        v = zero if v < zero else v
        dst[i] = one if v > one else v


@njit(**_EP)
def _ep_hardswish(dst, src, bias, zero, one, sixth, half):  # type: ignore[no-untyped-def]
    for i in range(src.shape[0]):
        v = src[i] + bias
        h = v * sixth + half
        h = zero if h < zero else h
        h = one if h > one else h
        dst[i] = v * h


def _ep_sigmoid(dst, src, bias):  # type: ignore[no-untyped-def]
    raise NotImplementedError  # @njit only: see the overload


def _ep_silu(dst, src, bias):  # type: ignore[no-untyped-def]
    raise NotImplementedError  # @njit only: see the overload


# Chosen per dtype at typing time; the loops call fastmath's functions directly (inlined at Numba
# IR level) because a call through a generic wrapper was not inlined and the loop stayed scalar.
@overload(_ep_sigmoid)
def _ep_sigmoid_ov(dst, src, bias):  # type: ignore[no-untyped-def]
    if dst.dtype == types.float32:
        def f32(dst, src, bias):  # type: ignore[no-untyped-def]
            for i in range(src.shape[0]):
                dst[i] = sigmoid_f32(src[i] + bias)
        return f32

    def f64(dst, src, bias):  # type: ignore[no-untyped-def]
        for i in range(src.shape[0]):
            dst[i] = sigmoid_f64(src[i] + bias)
    return f64


@overload(_ep_silu)
def _ep_silu_ov(dst, src, bias):  # type: ignore[no-untyped-def]
    if dst.dtype == types.float32:
        def f32(dst, src, bias):  # type: ignore[no-untyped-def]
            for i in range(src.shape[0]):
                v = src[i] + bias
                dst[i] = v * sigmoid_f32(v)
        return f32

    def f64(dst, src, bias):  # type: ignore[no-untyped-def]
        for i in range(src.shape[0]):
            v = src[i] + bias
            dst[i] = v * sigmoid_f64(v)
    return f64


@njit(**_EP)
def _epilogue(dst, src, bias, act, prm):  # type: ignore[no-untyped-def]
    """dst[i] = act(src[i] + bias) (dst may be src). NaN propagates as in the elementwise ops.
    prm = [alpha, beta, 0, 1, 1/6, 1/2] in the compute dtype (typed constants, no float64 promotion)."""
    if act == 0:
        _ep_none(dst, src, bias)
    elif act == 1:
        _ep_relu(dst, src, bias, prm[2])
    elif act == 2:
        _ep_clip(dst, src, bias, prm[0], prm[1])
    elif act == 3:
        _ep_leaky(dst, src, bias, prm[2], prm[0])
    elif act == 4:
        _ep_hardsigmoid(dst, src, bias, prm[2], prm[3], prm[0], prm[1])
    elif act == 5:
        _ep_hardswish(dst, src, bias, prm[2], prm[3], prm[4], prm[5])
    elif act == 6:
        _ep_sigmoid(dst, src, bias)
    else:
        _ep_silu(dst, src, bias)


@njit(inline="always", nogil=True, error_model="numpy")
def _ow_range(off, sw, W, OW):  # type: ignore[no-untyped-def]
    """[lo, hi): the output columns ow whose input column ow*sw + off lies in [0, W)."""
    lo = 0 if off >= 0 else (-off + sw - 1) // sw
    hi = (W - off + sw - 1) // sw if W - off > 0 else 0
    if hi > OW:
        hi = OW
    if lo > hi:
        lo = hi
    return lo, hi


# --- Conv kernels --------------------------------------------------------------------------------
# geo: [group, kd, kh, kw, sd, sh, sw, dd, dh, dw, pd, ph, pw]; x [N,C,D,H,W]; w [M,K]; out [N,M,P]

@njit(**_KW)
def _conv_gemm_1x1(x, w, b, out, group, act, prm):  # type: ignore[no-untyped-def]
    """x [N, C, P], out [N, M, P]: per column block, out[:, block] = W @ x[:, block] (strided GEMM)."""
    N, C = x.shape[0], x.shape[1]
    M, P = out.shape[1], out.shape[2]
    Cg = C // group
    Mg = M // group
    cols = _BLOCK // max(Cg, Mg)
    cols = max(16, cols - cols % 16)
    for n in range(N):
        for g in range(group):
            wg = w[g * Mg:(g + 1) * Mg]
            for p0 in range(0, P, cols):
                p1 = min(P, p0 + cols)
                ov = out[n, g * Mg:(g + 1) * Mg, p0:p1]
                _gemm(wg, x[n, g * Cg:(g + 1) * Cg, p0:p1], ov, 0.0)
                for m in range(Mg):
                    _epilogue(ov[m], ov[m], b[g * Mg + m], act, prm)


@njit(**_KW)
def _conv_gemm(x, w, b, out, geo, OD, OH, OW, act, prm):  # type: ignore[no-untyped-def]
    N, C, D, H, W = x.shape
    M, K = w.shape
    group, kd, kh, kw = geo[0], geo[1], geo[2], geo[3]
    sd, sh, sw, dd, dh, dw, pd, ph, pw = geo[4], geo[5], geo[6], geo[7], geo[8], geo[9], geo[10], geo[11], geo[12]
    Cg = C // group
    Mg = M // group
    R = OD * OH
    rows = (_GEMM_COLS + OW - 1) // OW
    rows = min(rows, _BLOCK // (K * OW), R)
    if rows < 1:
        rows = 1
    col = np.empty(K * rows * OW, x.dtype)
    zero = prm[2]
    los = np.empty(kw, np.int64)
    his = np.empty(kw, np.int64)
    for e in range(kw):
        los[e], his[e] = _ow_range(e * dw - pw, sw, W, OW)
    for n in range(N):
        for g in range(group):
            wg = w[g * Mg:(g + 1) * Mg]
            for r0 in range(0, R, rows):
                r1 = min(R, r0 + rows)
                pb = (r1 - r0) * OW
                colv = col[:K * pb].reshape(K, pb)
                k = 0
                for c in range(Cg):
                    xc = x[n, g * Cg + c]
                    for a in range(kd):
                        for bb in range(kh):
                            for e in range(kw):
                                _im2col_row(colv[k], xc, r0, r1, OH, OW, D, H, a * dd - pd, bb * dh - ph, sd, sh,
                                            los[e], his[e], e * dw - pw, sw, zero)
                                k += 1
                ov = out[n, g * Mg:(g + 1) * Mg, r0 * OW:r1 * OW]
                _gemm(wg, colv, ov, 0.0)
                for m in range(Mg):
                    _epilogue(ov[m], ov[m], b[g * Mg + m], act, prm)


@njit(**_EP)
def _im2col_row(dst, xc, r0, r1, OH, OW, D, H, zoff, yoff, sd, sh, lo, hi, off, sw,  # type: ignore[no-untyped-def]
                zero):
    """dst[(r - r0)*OW + ow] = x[od*sd + zoff, oh*sh + yoff, ow*sw + off] (0 outside) for rows r0..r1."""
    for r in range(r0, r1):
        od = r // OH
        oh = r - od * OH
        iz = od * sd + zoff
        iy = oh * sh + yoff
        drow = dst[(r - r0) * OW:(r - r0 + 1) * OW]
        if iz < 0 or iz >= D or iy < 0 or iy >= H or hi <= lo:
            for j in range(OW):
                drow[j] = zero
            continue
        for j in range(lo):
            drow[j] = zero
        seg = drow[lo:hi]
        if sw == 1:
            src = xc[iz, iy, lo + off:hi + off]
            for j in range(seg.shape[0]):
                seg[j] = src[j]
        else:
            src = xc[iz, iy, lo * sw + off:(hi - 1) * sw + off + 1:sw]
            for j in range(seg.shape[0]):
                seg[j] = src[j]
        tail = drow[hi:]
        for j in range(tail.shape[0]):
            tail[j] = zero


@njit(**_EP)
def _pad_plane(src, dst, pd, ph, pw, zero, interior_only):  # type: ignore[no-untyped-def]
    """dst[z, y, u] = src[z - pd, y - ph, u - pw], zero outside src (pads may be negative).
    interior_only: the border of dst already holds zeros (same geometry as the last call)."""
    D, H, W = src.shape
    Dp, Hp, Wp = dst.shape
    lo = min(max(pw, 0), Wp)
    hi = max(min(W + pw, Wp), lo)
    for z in range(Dp):
        iz = z - pd
        for y in range(Hp):
            iy = y - ph
            drow = dst[z, y]
            if iz < 0 or iz >= D or iy < 0 or iy >= H:
                if not interior_only:
                    for j in range(Wp):
                        drow[j] = zero
                continue
            if not interior_only:
                for j in range(lo):
                    drow[j] = zero
                t = drow[hi:]
                for j in range(t.shape[0]):
                    t[j] = zero
            if hi > lo:
                d = drow[lo:hi]
                s = src[iz, iy, lo - pw:hi - pw]
                for j in range(d.shape[0]):
                    d[j] = s[j]


@njit(**_EP)
def _taps(acc, xpf, base, toff, wm, L, first):  # type: ignore[no-untyped-def]
    """acc[i] (=|+=) sum_t wm[t] * xpf[base + toff[t] + i] for i < L; three taps per pass over acc."""
    T = toff.shape[0]
    t = 0
    while t < T:
        left = T - t
        if left >= 3:
            s0 = xpf[base + toff[t]:base + toff[t] + L]
            s1 = xpf[base + toff[t + 1]:base + toff[t + 1] + L]
            s2 = xpf[base + toff[t + 2]:base + toff[t + 2] + L]
            w0, w1, w2 = wm[t], wm[t + 1], wm[t + 2]
            if first:
                for i in range(L):
                    acc[i] = w0 * s0[i] + w1 * s1[i] + w2 * s2[i]
            else:
                for i in range(L):
                    acc[i] += w0 * s0[i] + w1 * s1[i] + w2 * s2[i]
            t += 3
        elif left == 2:
            s0 = xpf[base + toff[t]:base + toff[t] + L]
            s1 = xpf[base + toff[t + 1]:base + toff[t + 1] + L]
            w0, w1 = wm[t], wm[t + 1]
            if first:
                for i in range(L):
                    acc[i] = w0 * s0[i] + w1 * s1[i]
            else:
                for i in range(L):
                    acc[i] += w0 * s0[i] + w1 * s1[i]
            t += 2
        else:
            s0 = xpf[base + toff[t]:base + toff[t] + L]
            w0 = wm[t]
            if first:
                for i in range(L):
                    acc[i] = w0 * s0[i]
            else:
                for i in range(L):
                    acc[i] += w0 * s0[i]
            t += 1
        first = False

@njit(**_KW)
def _conv_direct(x, w, b, out, geo, OD, OH, OW, act, prm):  # type: ignore[no-untyped-def]
    """Cg == 1: output channel m reads input channel m // Mg only.

    Each input plane is first copied into a zero-padded buffer covering exactly the window the
    convolution reads (so no tap needs a bounds check). With unit H/W strides, output position
    (oh, ow) maps to flat padded index oh*Wp + ow and every tap is a constant offset, so a whole
    plane is a few long contiguous multiply-adds (three taps per pass); the Wp - OW columns past
    each row are computed and dropped. Other strides go row by row with strided reads."""
    N, C = x.shape[0], x.shape[1]
    M = w.shape[0]
    kd, kh, kw = geo[1], geo[2], geo[3]
    sd, sh, sw, dd, dh, dw, pd, ph, pw = geo[4], geo[5], geo[6], geo[7], geo[8], geo[9], geo[10], geo[11], geo[12]
    Mg = M // C
    zero = prm[2]
    Dp = (OD - 1) * sd + (kd - 1) * dd + 1
    Hp = (OH - 1) * sh + (kh - 1) * dh + 1
    Wp = (OW - 1) * sw + (kw - 1) * dw + 1
    xp = np.empty((Dp, Hp, Wp), x.dtype)
    xpf = xp.reshape(Dp * Hp * Wp)
    T = kd * kh * kw
    toff = np.empty(T, np.int64)
    for a in range(kd):
        for bb in range(kh):
            for e in range(kw):
                toff[(a * kh + bb) * kw + e] = a * dd * Hp * Wp + bb * dh * Wp + e * dw
    unit = sh == 1 and sw == 1
    L = (OH - 1) * Wp + OW if unit else OW
    acc = np.empty(L, x.dtype)
    # '::1' types these views as layout 'A', the layout the GEMM paths pass to _epilogue, so the
    # epilogue (1-2 s to compile) is compiled once per dtype rather than once per layout.
    acc_a = acc[::1]
    for n in range(N):
        for c in range(C):
            _pad_plane(x[n, c], xp, pd, ph, pw, zero, n > 0 or c > 0)
            for mm in range(Mg):
                m = c * Mg + mm
                wm = w[m]
                om = out[n, m, ::1]
                omc = out[n, m]
                for od in range(OD):
                    if unit:
                        _taps(acc, xpf, od * sd * Hp * Wp, toff, wm, L, True)
                        # one epilogue call over the whole plane (the dropped columns included): a
                        # call per output row cost more than the arithmetic here
                        _epilogue(acc_a, acc_a, b[m], act, prm)
                        for oh in range(OH):
                            dst = omc[(od * OH + oh) * OW:(od * OH + oh + 1) * OW]
                            src = acc[oh * Wp:oh * Wp + OW]
                            for j in range(OW):
                                dst[j] = src[j]
                    else:
                        for oh in range(OH):
                            for i in range(OW):
                                acc[i] = zero
                            for a in range(kd):
                                for bb in range(kh):
                                    row = xp[od * sd + a * dd, oh * sh + bb * dh]
                                    for e in range(kw):
                                        wv = wm[(a * kh + bb) * kw + e]
                                        src = row[e * dw:e * dw + (OW - 1) * sw + 1:sw]
                                        for i in range(OW):
                                            acc[i] += wv * src[i]
                            base = (od * OH + oh) * OW
                            _epilogue(om[base:base + OW], acc_a[:OW], b[m], act, prm)


# --- Winograd F(2x2, 3x3) -----------------------------------------------------------------------

@njit(**_EP)
def _wino_in(xp, V, C, Tb, ty0, ty1, TW):  # type: ignore[no-untyped-def]
    """V[4i+j, c*Tb + t] = (B^T d B)[i, j] for the 4x4 input patch d of tile t (tile rows ty0..ty1)."""
    for c in range(C):
        xc = xp[c]
        base = c * Tb
        for ty in range(ty0, ty1):
            r0 = xc[2 * ty]
            r1 = xc[2 * ty + 1]
            r2 = xc[2 * ty + 2]
            r3 = xc[2 * ty + 3]
            t0 = base + (ty - ty0) * TW
            t1 = t0 + TW
            v0, v1, v2, v3 = V[0, t0:t1], V[1, t0:t1], V[2, t0:t1], V[3, t0:t1]
            v4, v5, v6, v7 = V[4, t0:t1], V[5, t0:t1], V[6, t0:t1], V[7, t0:t1]
            v8, v9, v10, v11 = V[8, t0:t1], V[9, t0:t1], V[10, t0:t1], V[11, t0:t1]
            v12, v13, v14, v15 = V[12, t0:t1], V[13, t0:t1], V[14, t0:t1], V[15, t0:t1]
            for tx in range(TW):
                q = 2 * tx
                # rows of B^T d
                a0, a1, a2, a3 = r0[q] - r2[q], r0[q + 1] - r2[q + 1], r0[q + 2] - r2[q + 2], r0[q + 3] - r2[q + 3]
                b0, b1, b2, b3 = r1[q] + r2[q], r1[q + 1] + r2[q + 1], r1[q + 2] + r2[q + 2], r1[q + 3] + r2[q + 3]
                c0, c1, c2, c3 = r2[q] - r1[q], r2[q + 1] - r1[q + 1], r2[q + 2] - r1[q + 2], r2[q + 3] - r1[q + 3]
                d0, d1, d2, d3 = r1[q] - r3[q], r1[q + 1] - r3[q + 1], r1[q + 2] - r3[q + 2], r1[q + 3] - r3[q + 3]
                # (B^T d) B
                v0[tx], v1[tx], v2[tx], v3[tx] = a0 - a2, a1 + a2, a2 - a1, a1 - a3
                v4[tx], v5[tx], v6[tx], v7[tx] = b0 - b2, b1 + b2, b2 - b1, b1 - b3
                v8[tx], v9[tx], v10[tx], v11[tx] = c0 - c2, c1 + c2, c2 - c1, c1 - c3
                v12[tx], v13[tx], v14[tx], v15[tx] = d0 - d2, d1 + d2, d2 - d1, d1 - d3


@njit(**_EP)
def _wino_out(Mt, out, b, Tb, ty0, ty1, TW, OH, OW, act, prm):  # type: ignore[no-untyped-def]
    """out[m, 2ty + a, 2tx + e] = (A^T Mt A)[a, e] for tile rows ty0..ty1, then bias + activation."""
    M = out.shape[0]
    full_w = 2 * TW == OW
    TWf = TW if full_w else TW - 1
    for m in range(M):
        om = out[m]
        oma = out[m, ::1]  # layout 'A' for the epilogue, as elsewhere (one compile of it per dtype)
        for ty in range(ty0, ty1):
            t0 = m * Tb + (ty - ty0) * TW
            t1 = t0 + TW
            m0, m1, m2, m3 = Mt[0, t0:t1], Mt[1, t0:t1], Mt[2, t0:t1], Mt[3, t0:t1]
            m4, m5, m6, m7 = Mt[4, t0:t1], Mt[5, t0:t1], Mt[6, t0:t1], Mt[7, t0:t1]
            m8, m9, m10, m11 = Mt[8, t0:t1], Mt[9, t0:t1], Mt[10, t0:t1], Mt[11, t0:t1]
            m12, m13, m14, m15 = Mt[12, t0:t1], Mt[13, t0:t1], Mt[14, t0:t1], Mt[15, t0:t1]
            y0 = 2 * ty
            row0 = om[y0 * OW:(y0 + 1) * OW]
            # odd OH: the last tile's second row is computed into row 0's storage, then overwritten
            y1 = y0 + 1 if y0 + 1 < OH else y0
            row1 = om[y1 * OW:(y1 + 1) * OW]
            for tx in range(TW):
                s00 = m0[tx] + m4[tx] + m8[tx]
                s01 = m1[tx] + m5[tx] + m9[tx]
                s02 = m2[tx] + m6[tx] + m10[tx]
                s10 = m4[tx] - m8[tx] - m12[tx]
                s11 = m5[tx] - m9[tx] - m13[tx]
                s12 = m6[tx] - m10[tx] - m14[tx]
                row1[2 * tx] = s10 + s11 + s12
                row0[2 * tx] = s00 + s01 + s02
                if tx < TWf:
                    s03 = m3[tx] + m7[tx] + m11[tx]
                    s13 = m7[tx] - m11[tx] - m15[tx]
                    row1[2 * tx + 1] = s11 - s12 - s13
                    row0[2 * tx + 1] = s01 - s02 - s03
        r0 = 2 * ty0
        r1 = min(2 * ty1, OH)
        seg = oma[r0 * OW:r1 * OW]
        _epilogue(seg, seg, b[m], act, prm)


@njit(**_KW)
def _conv_winograd(x, U, b, out, ph, pw, OH, OW, act, prm):  # type: ignore[no-untyped-def]
    """x [N, C, H, W]; U [16, M, C]; out [N, M, OH*OW]; 3x3, stride 1, dilation 1, group 1.

    Winograd F(2x2, 3x3): 2.25x fewer multiplications than the direct sum. Per block of tile rows,
    the input tiles are transformed (V = B^T d B), the 16 products U[k] @ V[k] are BLAS GEMMs, and
    the output transform (A^T m A) writes the block, which the epilogue then finishes in place."""
    N, C, H, W = x.shape
    M = U.shape[1]
    TH = (OH + 1) // 2
    TW = (OW + 1) // 2
    zero = prm[2]
    xp = np.empty((C, 1, 2 * TH + 2, 2 * TW + 2), x.dtype)
    rows = max(1, min(TH, (_WINO_BLOCK // (16 * (C + M))) // TW))
    Tb = rows * TW
    # plane strides of 4 KiB multiples + 64 B, so the 16 planes read together fall in different L1
    # sets (a power-of-two stride made the transforms 3.5x slower at some block sizes)
    V = np.empty((16, (C * Tb + 1023) // 1024 * 1024 + 16), x.dtype)
    Mt = np.empty((16, (M * Tb + 1023) // 1024 * 1024 + 16), x.dtype)
    for n in range(N):
        for c in range(C):
            _pad_plane(x[n, c:c + 1], xp[c], 0, ph, pw, zero, n > 0)
        xp3 = xp[:, 0]
        on = out[n]
        for ty0 in range(0, TH, rows):
            ty1 = min(TH, ty0 + rows)
            tb = (ty1 - ty0) * TW
            _wino_in(xp3, V, C, Tb, ty0, ty1, TW)
            for k in range(16):
                _gemm(U[k], V[k, :C * Tb].reshape(C, Tb)[:, :tb], Mt[k, :M * Tb].reshape(M, Tb)[:, :tb], 0.0)
            _wino_out(Mt, on, b, Tb, ty0, ty1, TW, OH, OW, act, prm)


_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
# Elements of V plus the 16 GEMM results per block: 256K float32 = 1 MiB.
_WINO_BLOCK = 1 << 18


def winograd_weights(w: np.ndarray, dt: np.dtype) -> np.ndarray:
    """U[4i+j, m, c] = (G w[m, c] G^T)[i, j] for 3x3 weights w [M, C, 3, 3]."""
    u = np.einsum("ia,mcab,jb->ijmc", _G, w.astype(np.float64), _G)
    return np.ascontiguousarray(u.reshape(16, w.shape[0], w.shape[1]), dt)


def winograd_applies(w_shape: tuple[int, ...], group: int, strides: Sequence[int], dilations: Sequence[int]) -> bool:
    """3x3, stride 1, dilation 1, one group, and enough channels that the GEMMs dominate."""
    return (len(w_shape) == 4 and tuple(w_shape[2:]) == (3, 3) and group == 1 and tuple(strides) == (1, 1)
            and tuple(dilations) == (1, 1) and w_shape[0] >= 16 and w_shape[1] >= 16)


# --- geometry (onnxruntime's rules, see conv_attributes.h) -----------------------------------------

def _cdiv(a: int, b: int) -> int:
    """C++ integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _pad3(v: Sequence[int], fill: int) -> tuple[int, int, int]:
    v = tuple(int(t) for t in v)
    return (fill,) * (3 - len(v)) + v  # type: ignore[return-value]


@lru_cache(maxsize=1024)
def conv_geometry(in_sp: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
                  dilations: tuple[int, ...], pads: tuple[int, ...], auto_pad: str,
                  op_name: str = "Conv") -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Output spatial dims and begin pads of a convolution, exactly as onnxruntime computes them."""
    r = len(in_sp)
    out, begin = [], []
    for d in range(r):
        i, k, s, dl = in_sp[d], kernel[d], strides[d], dilations[d]
        dk = dl * (k - 1) + 1
        ph, pt = pads[d], pads[d + r]
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            target = _cdiv(i + s - 1, s)
            need = (target - 1) * s + dk - i
            o = _cdiv(i + need - dk, s) + 1
            ph = _cdiv(need + 1, 2) if auto_pad == "SAME_LOWER" else _cdiv(need, 2)
        elif auto_pad == "VALID":
            ph = 0
            o = _cdiv(i - dk, s) + 1
        elif auto_pad in ("NOTSET", ""):
            o = int(np.float32(i + ph + pt - dk) / np.float32(s) + 1)
        else:
            raise InvalidArgument(f"{op_name}: auto_pad '{auto_pad}' is not one of NOTSET, SAME_UPPER, "
                                  "SAME_LOWER, VALID")
        if o <= 0:
            raise InvalidArgument(f"{op_name}: invalid input shape {list(in_sp)} for kernel {list(kernel)}, "
                                  f"strides {list(strides)}, dilations {list(dilations)}, pads {list(pads)}: "
                                  f"output dim {d} would be {o}")
        out.append(o)
        begin.append(ph)
    return tuple(out), tuple(begin)


def _attrs_norm(rank: int, kernel: Sequence[int], strides: Sequence[int] | None,
                dilations: Sequence[int] | None, pads: Sequence[int] | None
                ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    k = tuple(int(v) for v in kernel)
    s = tuple(int(v) for v in strides) if strides else (1,) * rank
    dl = tuple(int(v) for v in dilations) if dilations else (1,) * rank
    p = tuple(int(v) for v in pads) if pads else (0,) * (2 * rank)
    return k, s, dl, p


def _geo(group: int, k: tuple[int, ...], s: tuple[int, ...], dl: tuple[int, ...],
         begin: tuple[int, ...]) -> np.ndarray:
    return np.array((group,) + _pad3(k, 1) + _pad3(s, 1) + _pad3(dl, 1) + _pad3(begin, 0), np.int64)


def _prm(dt: np.dtype, alpha: float, beta: float) -> np.ndarray:
    return np.array([alpha, beta, 0.0, 1.0, 1.0 / 6.0, 0.5], dt)


def _compute_dtype(dt: np.dtype, op_name: str) -> np.dtype:
    dt = np.dtype(dt)
    if dt in (np.float32, np.float64):
        return dt
    if dt == np.float16 or dt.name == "bfloat16":
        return np.dtype(np.float32)
    raise OrtNotImplemented(f"{op_name}: jitort does not support dtype {dt} (float16/32/64 only)")


def _as5d(x: np.ndarray) -> np.ndarray:
    sp = x.shape[2:]
    return x.reshape(x.shape[:2] + (1,) * (3 - len(sp)) + sp)


# --- Conv ----------------------------------------------------------------------------------------

def _check_conv(x: np.ndarray, w_shape: tuple[int, ...], group: int, kernel_shape: Sequence[int] | None) -> None:
    if x.ndim != len(w_shape):
        raise Fail(f"Conv: X has rank {x.ndim} but W has rank {len(w_shape)} (shapes {list(x.shape)}, "
                   f"{list(w_shape)})")
    if x.ndim < 3:
        raise InvalidArgument(f"Conv: X must have rank >= 3, got shape {list(x.shape)}")
    if x.ndim > 5:
        raise OrtNotImplemented(f"Conv: jitort supports 1-D, 2-D and 3-D convolutions, got X of rank {x.ndim}")
    if group <= 0 or x.shape[1] != w_shape[1] * group:
        raise Fail(f"Conv: input channels C={x.shape[1]} is not equal to kernel channels {w_shape[1]} * "
                   f"group {group}")
    if w_shape[0] % group:
        raise Fail(f"Conv: output channels M={w_shape[0]} is not divisible by group {group}")
    if kernel_shape and tuple(kernel_shape) != tuple(w_shape[2:]):
        raise Fail(f"Conv: kernel_shape {list(kernel_shape)} is not compatible with W shape {list(w_shape)}")


def conv_packed(x: np.ndarray, w2: np.ndarray, b: np.ndarray, prm: np.ndarray, u: np.ndarray | None = None, *,
                w_shape: tuple[int, ...], auto_pad: str, group: int, strides: tuple[int, ...],
                dilations: tuple[int, ...], pads: tuple[int, ...], act: int) -> np.ndarray:
    """Conv on pre-packed weights: w2 [M, K] and b [M] in the compute dtype, prm from ``_prm``, and
    u the Winograd-transformed weights when ``winograd_applies`` (else None)."""
    _check_conv(x, w_shape, group, None)
    kernel = tuple(w_shape[2:])
    out_sp, begin = conv_geometry(tuple(x.shape[2:]), kernel, strides, dilations, pads, auto_pad)
    cd = w2.dtype
    M = w_shape[0]
    out = np.empty((x.shape[0], M) + out_sp, cd)
    if x.shape[0] == 0 or M == 0:
        return out.astype(x.dtype, copy=False)
    xc = np.ascontiguousarray(x, cd) if x.dtype != cd else x
    o3 = out.reshape(x.shape[0], M, -1)
    od, oh, ow = _pad3(out_sp, 1)
    if all(k == 1 for k in kernel) and out_sp == x.shape[2:] and not any(begin) and all(s == 1 for s in strides):
        _conv_gemm_1x1(xc.reshape(x.shape[0], x.shape[1], -1), w2, b, o3, group, act, prm)
    elif u is not None and oh >= 4 and ow >= 4:
        _conv_winograd(xc, u, b, o3, begin[0], begin[1], oh, ow, act, prm)
    else:
        geo = _geo(group, kernel, strides, dilations, begin)
        x5 = _as5d(xc)
        if w_shape[1] == 1:
            _conv_direct(x5, w2, b, o3, geo, od, oh, ow, act, prm)
        else:
            _conv_gemm(x5, w2, b, o3, geo, od, oh, ow, act, prm)
    return out if out.dtype == x.dtype else out.astype(x.dtype)


def _act_code(activation: str) -> int:
    code = ACTIVATIONS.get(activation)
    if code is None:
        raise OrtNotImplemented(f"Conv: fused activation '{activation}' is not supported "
                                f"(known: {sorted(a for a in ACTIVATIONS if a)})")
    return code


@op("Conv", since=1, lower=lambda node, g: _lower_conv(node, g))
def Conv(X: np.ndarray, W: np.ndarray, B: np.ndarray | None = None, *, auto_pad: str,
         dilations: Sequence[int] | None = None, group: int, kernel_shape: Sequence[int] | None = None,
         pads: Sequence[int] | None = None, strides: Sequence[int] | None = None,
         _activation: str = "", _alpha: float = 0.0, _beta: float = 0.0) -> np.ndarray:
    """Conv (opset 1, 11, 22); ``_activation/_alpha/_beta`` are the epilogue set by fuse_conv_epilogue."""
    _check_conv(X, W.shape, group, kernel_shape)
    cd = _compute_dtype(X.dtype, "Conv")
    rank = X.ndim - 2
    _, s, dl, p = _attrs_norm(rank, W.shape[2:], strides, dilations, pads)
    w2 = np.ascontiguousarray(W.reshape(W.shape[0], -1), cd)
    b = np.zeros(W.shape[0], cd) if B is None else np.ascontiguousarray(B, cd)
    if b.shape != (W.shape[0],):
        raise InvalidArgument(f"Conv: B must have shape [{W.shape[0]}], got {list(b.shape)}")
    u = winograd_weights(W, cd) if winograd_applies(W.shape, group, s, dl) else None
    return conv_packed(X, w2, b, _prm(cd, _alpha, _beta), u, w_shape=tuple(W.shape), auto_pad=auto_pad,
                       group=group, strides=s, dilations=dl, pads=p, act=_act_code(_activation))


def _lower_conv(node: Node, g: Graph) -> Call:
    from jitort.kernels.registry import lookup
    W = g.const(node.inputs[1])
    B = g.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    has_b = len(node.inputs) > 2 and bool(node.inputs[2])
    xt = g.type_of(node.inputs[0])
    if W is None or (has_b and B is None) or xt.dtype is None or W.ndim < 3:
        return default_call(lookup(node.op_type, node.domain, node.version, node.name), node, g)
    a = node.attrs
    group = int(a.get("group", 1))
    ks = a.get("kernel_shape")
    if ks and tuple(ks) != tuple(W.shape[2:]):
        raise Fail(f"Conv node '{node.name}': kernel_shape {list(ks)} is not compatible with W shape "
                   f"{list(W.shape)}")
    cd = _compute_dtype(xt.dtype, "Conv")
    _, s, dl, p = _attrs_norm(W.ndim - 2, W.shape[2:], a.get("strides"), a.get("dilations"), a.get("pads"))
    w2 = np.ascontiguousarray(W.reshape(W.shape[0], -1), cd)
    b = np.zeros(W.shape[0], cd) if B is None else np.ascontiguousarray(B.reshape(-1), cd)
    prm = _prm(cd, float(a.get("_alpha", 0.0)), float(a.get("_beta", 0.0)))
    kwargs: dict[str, Any] = dict(w_shape=tuple(int(d) for d in W.shape), auto_pad=a.get("auto_pad", "NOTSET"),
                                  group=group, strides=s, dilations=dl, pads=p,
                                  act=_act_code(a.get("_activation", "")))
    u = winograd_weights(W, cd) if winograd_applies(W.shape, group, s, dl) else None
    return Call(conv_packed, [Ref(node.inputs[0]), w2, b, prm, u], kwargs)


# --- ConvTranspose -------------------------------------------------------------------------------
# x [N, C, D, H, W]; wt [group, Mg*K, Cg]; out [N, M, OD, OH, OW] (initialised with the bias)

@njit(**_KW)
def _convt(x, D, H, W, wt, b, out, geo):  # type: ignore[no-untyped-def]
    """x [N, C, D*H*W]; per input-row block: col = W^T[g] @ x[:, block] (strided GEMM), then col2im."""
    N, C = x.shape[0], x.shape[1]
    M, OD, OH, OW = out.shape[1], out.shape[2], out.shape[3], out.shape[4]
    group, kd, kh, kw = geo[0], geo[1], geo[2], geo[3]
    sd, sh, sw, dd, dh, dw, pd, ph, pw = geo[4], geo[5], geo[6], geo[7], geo[8], geo[9], geo[10], geo[11], geo[12]
    Cg = C // group
    Mg = M // group
    KK = kd * kh * kw
    R = D * H
    rows = min((_GEMM_COLS + W - 1) // W, _BLOCK // (Mg * KK * W), R)
    if rows < 1:
        rows = 1
    col = np.empty(Mg * KK * rows * W, x.dtype)
    for m in range(M):
        for n in range(N):
            out[n, m] = b[m]
    los = np.empty(kw, np.int64)
    his = np.empty(kw, np.int64)
    for e in range(kw):
        # input columns iw whose output column iw*sw + e*dw - pw lies in [0, OW)
        los[e], his[e] = _ow_range(e * dw - pw, sw, OW, W)
    for n in range(N):
        for g in range(group):
            wg = wt[g]
            for r0 in range(0, R, rows):
                r1 = min(R, r0 + rows)
                pb = (r1 - r0) * W
                colv = col[:Mg * KK * pb].reshape(Mg * KK, pb)
                _gemm(wg, x[n, g * Cg:(g + 1) * Cg, r0 * W:r1 * W], colv, 0.0)
                k = 0
                for m in range(Mg):
                    om = out[n, g * Mg + m]
                    for a in range(kd):
                        for bb in range(kh):
                            for e in range(kw):
                                lo, hi = los[e], his[e]
                                off = e * dw - pw
                                srow = colv[k]
                                for r in range(r0, r1):
                                    iz = r // H
                                    iy = r - iz * H
                                    oz = iz * sd - pd + a * dd
                                    oy = iy * sh - ph + bb * dh
                                    if oz < 0 or oz >= OD or oy < 0 or oy >= OH:
                                        continue
                                    _scatter_row(om[oz, oy], srow[(r - r0) * W:(r - r0 + 1) * W], lo, hi, off, sw)
                                k += 1


@njit(**_EP)
def _scatter_row(orow, srow, lo, hi, off, sw):  # type: ignore[no-untyped-def]
    """orow[iw*sw + off] += srow[iw] for iw in [lo, hi)."""
    if hi <= lo:
        return
    s = srow[lo:hi]
    if sw == 1:
        o = orow[lo + off:hi + off]
        for j in range(s.shape[0]):
            o[j] += s[j]
    else:
        o = orow[lo * sw + off:(hi - 1) * sw + off + 1:sw]
        for j in range(s.shape[0]):
            o[j] += s[j]


def convtranspose_geometry(in_sp: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
                           dilations: tuple[int, ...], pads: tuple[int, ...], output_padding: tuple[int, ...],
                           output_shape: tuple[int, ...], auto_pad: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Output spatial dims and begin pads as onnxruntime 1.31 computes them (measured against it):
    with output_shape or SAME_* the total padding natural - target is split with the larger half
    at the *beginning* unless auto_pad is SAME_UPPER."""
    r = len(in_sp)
    out, begin = [], []
    for d in range(r):
        i, k, s, dl, adj = in_sp[d], kernel[d], strides[d], dilations[d], output_padding[d]
        natural = (i - 1) * s + adj + (k - 1) * dl + 1
        ph, pt = pads[d], pads[d + r]
        target = -1
        if output_shape:
            target = output_shape[d] if len(output_shape) == r else output_shape[d + 2]
            if target > natural and (target - adj - (k - 1) * dl - 1) // s + 1 != i:
                raise InvalidArgument(f"ConvTranspose: output_shape {list(output_shape)} is inconsistent with input "
                                      f"spatial dims {list(in_sp)}, kernel {list(kernel)}, strides {list(strides)}")
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            target = i * s
        if target >= 0:
            total = max(0, natural - target)
            ph = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            pt = total - ph
        o = target if output_shape else natural - ph - pt
        if o <= 0:
            raise InvalidArgument(f"ConvTranspose: invalid input shape {list(in_sp)}: output dim {d} would be {o}")
        out.append(o)
        begin.append(ph)
    return tuple(out), tuple(begin)


def convtranspose_packed(x: np.ndarray, wt: np.ndarray, b: np.ndarray, *, w_shape: tuple[int, ...], auto_pad: str,
                         group: int, strides: tuple[int, ...], dilations: tuple[int, ...], pads: tuple[int, ...],
                         output_padding: tuple[int, ...], output_shape: tuple[int, ...]) -> np.ndarray:
    """ConvTranspose on pre-packed weights: wt [group, Mg*K, Cg], b [M] in the compute dtype."""
    if x.ndim != len(w_shape):
        raise InvalidArgument(f"ConvTranspose: X has rank {x.ndim} but W has rank {len(w_shape)}")
    if x.ndim > 5:
        raise OrtNotImplemented(f"ConvTranspose: jitort supports 1-D, 2-D and 3-D, got X of rank {x.ndim}")
    if x.shape[1] != w_shape[0]:
        raise InvalidArgument(f"ConvTranspose: filter number {w_shape[0]} is not equal to input channels "
                              f"{x.shape[1]}")
    kernel = tuple(w_shape[2:])
    out_sp, begin = convtranspose_geometry(tuple(x.shape[2:]), kernel, strides, dilations, pads, output_padding,
                                           output_shape, auto_pad)
    cd = wt.dtype
    M = w_shape[1] * group
    out = np.empty((x.shape[0], M) + out_sp, cd)
    if x.shape[0] and M:
        xc = np.ascontiguousarray(x, cd) if x.dtype != cd else x
        x5 = _as5d(xc)
        _convt(xc.reshape(x5.shape[0], x5.shape[1], -1), x5.shape[2], x5.shape[3], x5.shape[4], wt, b,
               _as5d(out), _geo(group, kernel, strides, dilations, begin))
    return out if out.dtype == x.dtype else out.astype(x.dtype)


def _pack_convt(W: np.ndarray, B: np.ndarray | None, group: int, cd: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    C, Mg = W.shape[0], W.shape[1]
    if group <= 0 or C % group:
        raise InvalidArgument(f"ConvTranspose: input channels {C} is not divisible by group {group}")
    wt = np.ascontiguousarray(W.reshape(group, C // group, -1).transpose(0, 2, 1), cd)
    b = np.zeros(Mg * group, cd) if B is None else np.ascontiguousarray(B.reshape(-1), cd)
    if b.shape != (Mg * group,):
        raise InvalidArgument(f"ConvTranspose: B must have shape [{Mg * group}], got {list(b.shape)}")
    return wt, b


def _convt_attrs(rank: int, kernel: Sequence[int], a: dict[str, Any]) -> dict[str, Any]:
    _, s, dl, p = _attrs_norm(rank, kernel, a.get("strides"), a.get("dilations"), a.get("pads"))
    op_ = a.get("output_padding")
    return dict(auto_pad=a.get("auto_pad", "NOTSET"), group=int(a.get("group", 1)), strides=s, dilations=dl,
                pads=p, output_padding=tuple(int(v) for v in op_) if op_ else (0,) * rank,
                output_shape=tuple(int(v) for v in (a.get("output_shape") or ())))


@op("ConvTranspose", since=1, lower=lambda node, g: _lower_convt(node, g))
def ConvTranspose(X: np.ndarray, W: np.ndarray, B: np.ndarray | None = None, *, auto_pad: str,
                  dilations: Sequence[int] | None = None, group: int, kernel_shape: Sequence[int] | None = None,
                  output_padding: Sequence[int] | None = None, output_shape: Sequence[int] | None = None,
                  pads: Sequence[int] | None = None, strides: Sequence[int] | None = None) -> np.ndarray:
    """ConvTranspose (opset 1, 11, 22): GEMM (W^T x per group) then col2im, blocked over input rows."""
    if X.ndim != W.ndim or X.ndim < 3:
        raise InvalidArgument(f"ConvTranspose: X {list(X.shape)} and W {list(W.shape)} must have the same rank >= 3")
    if kernel_shape and tuple(kernel_shape) != tuple(W.shape[2:]):
        raise Fail(f"ConvTranspose: kernel_shape {list(kernel_shape)} is not compatible with W {list(W.shape)}")
    cd = _compute_dtype(X.dtype, "ConvTranspose")
    attrs = _convt_attrs(X.ndim - 2, W.shape[2:], dict(auto_pad=auto_pad, dilations=dilations, group=group,
                                                       output_padding=output_padding, output_shape=output_shape,
                                                       pads=pads, strides=strides))
    wt, b = _pack_convt(W, B, attrs["group"], cd)
    return convtranspose_packed(X, wt, b, w_shape=tuple(W.shape), **attrs)


def _lower_convt(node: Node, g: Graph) -> Call:
    from jitort.kernels.registry import lookup
    W = g.const(node.inputs[1])
    has_b = len(node.inputs) > 2 and bool(node.inputs[2])
    B = g.const(node.inputs[2]) if has_b else None
    xt = g.type_of(node.inputs[0])
    if W is None or (has_b and B is None) or xt.dtype is None or W.ndim < 3:
        return default_call(lookup(node.op_type, node.domain, node.version, node.name), node, g)
    ks = node.attrs.get("kernel_shape")
    if ks and tuple(ks) != tuple(W.shape[2:]):
        raise Fail(f"ConvTranspose node '{node.name}': kernel_shape {list(ks)} is not compatible with W "
                   f"{list(W.shape)}")
    cd = _compute_dtype(xt.dtype, "ConvTranspose")
    attrs = _convt_attrs(W.ndim - 2, W.shape[2:], node.attrs)
    wt, b = _pack_convt(W, B, attrs["group"], cd)
    return Call(convtranspose_packed, [Ref(node.inputs[0]), wt, b],
                dict(w_shape=tuple(int(d) for d in W.shape), **attrs))


# --- quantised convolution -----------------------------------------------------------------------

def _quantised(op_type: str) -> Any:
    def lower(node: Node, g: Graph) -> Call:
        raise OrtNotImplemented(f"{op_type} node '{node.name}': quantised convolution is not implemented yet "
                                "in jitort")

    def fn(*inputs: Any) -> np.ndarray:
        raise OrtNotImplemented(f"{op_type}: quantised convolution is not implemented yet in jitort")
    fn.__name__ = fn.__qualname__ = op_type
    op(op_type, since=10, lower=lower)(fn)
    return fn


ConvInteger = _quantised("ConvInteger")
QLinearConv = _quantised("QLinearConv")
