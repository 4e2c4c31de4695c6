"""Conv (with a fused bias + activation epilogue). ConvTranspose: convtranspose.py; quantised: qconv.py.

Every spatial rank (1-D, 2-D, 3-D) runs through one 3-D kernel per dtype: a 1-D or 2-D input is
viewed as [N, C, 1, 1, W] / [N, C, 1, H, W] (a free reshape), so a model pays one compile per dtype
and not one per rank. Geometry (kernel, strides, dilations, begin pads, group) travels as one
int64 array, the epilogue's alpha/beta as one array of the compute dtype; the activation is an int
code the kernel branches on outside its inner loops, so a new activation never compiles anything.
Per input shape, the path, geometry and scratch size are worked out once (``conv_plan``).

Paths (Cg = C / group input channels per group, K = Cg * prod(kernel)), in the order tried
(conv_setup.py's ``conv_plan`` picks one per input shape):

* 1-D, one group, Cg <= 4, K >= 16 (audio front ends: a learned STFT has C = 1, kernel 256, stride
  128): the window GEMM, out^T = windows @ W^T (conv_window.py).
* 2-D depthwise (one output channel per input channel) with output rows of <= 8: channels in
  vector lanes (conv_dwblock.py).
* Cg == 1 (depthwise, incl. channel multipliers): ``_conv_direct``, a zero-padded copy of each
  input plane and convdirect's ``dw_plane`` (taps along output rows in vector registers).
* weights the lowering packed for it (2-D, one group, stride 1, a static shape its rule takes: few
  output channels or a 7x7 plane with many input channels): output channels in vector lanes over the
  zero-padded plane's grid (conv_lanes.py).
* 1x1, stride 1, no padding: a GEMM W[Mg, Cg] @ X[Cg, P] per group, written straight into the
  output (``_conv_gemm_1x1``).
* K <= 256 (first layers, small convs): the implicit GEMM, ``_conv_implicit`` (convdirect's
  ``conv_tile``: the GEMM tile reading B straight from a zero-padded input, no im2col).
* 3x3, stride 1, dilation 1, one group, >= 16 channels in and out: Winograd F(2x2, 3x3)
  (winograd.py), on weights the ``lower`` hook transforms and packs once.
* larger K while the group's weights stay small (5x5, grouped convs): the implicit GEMM in K
  blocks; otherwise im2col (``_conv_gemm``), blocked over output rows.

Bias + Relu/Clip run on the register tile before the store; other activations per row or column
block while the data is in cache (convutil's ``epilogue_row``). A residual z (jitort's FusedConv,
conv_fused.py: activation(conv + bias + z)) is added by convutil's ``epilogue_residual`` on the same
blocks, after the bias, with the activation; kernels take z as None otherwise, which Numba prunes.
The GEMMs are jitort's own (convgemm.py, on weights packed by the ``lower`` hook), not BLAS: every output element is one fma
chain in k order on every path, so output channels with identical weights get bitwise identical
values, as in onnxruntime (OpenBLAS's rounding depends on the channel's position in its register
tile; see convgemm's docstring for the light_squeezenet case). Work is split between threads by
output channels, rows or positions, never within a sum, so results do not depend on the thread
count. Each kernel runs through a part function (``_make_part``, conv_parts.py): its parts are
native parts (threads.py's ``run_native``: the pool's workers run them without the GIL), and its
one-part call is the same function on this thread.

Inner loops index slices from 0: a computed index that Numba cannot prove non-negative gets a
wraparound select per element, which keeps the loop scalar (depthwise 3x3 was 10x slower).

float16 computes in float32 (constant weights are converted once at compile time by the
``lower`` hook, which also packs W and materialises a zero bias).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from numba import njit

from jitort import memory
from jitort.errors import Fail, InvalidArgument, RuntimeException
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels.conv_dwblock import dwblock_kernel
from jitort.kernels.conv_setup import (DIRECT, DWBLOCK, GEMM_1X1, IM2COL, IMPLICIT, IMPLICIT_GROUPS,
                                       IMPLICIT_KC, IMPLICIT_MCT, LANES, WINDOW, WINOGRAD, attrs_norm, check_conv,
                                       compute_dtype, im2col_rows_jit, epilogue_params, conv_plan, lanes_pays)
from jitort.kernels.conv_lanes import SLACK as LANES_SLACK, TILE_ROWS, lanes_kernel, lanes_pad, pack_lanes
from jitort.kernels.conv_window import pack_window_weights, window_applies, window_kernel
from jitort.kernels.convdirect import IMPLICIT_VECS, SLACK, conv_tile_cols, conv_tile_nv, dw_plan, dw_plane
from jitort.kernels.convgemm import BBLOCK, MR, ROW_TILES, gemm_address, gemm_at, gemm_part, pack_weights
from jitort.kernels.gemm import default_isa
from jitort.kernels.convutil import EP, epilogue_row, pad_phases, share, epilogue_kind, epilogue_residual
from jitort.kernels.jit import njit_one
from jitort.kernels.registry import Call, Ref, default_call, lookup, op
from jitort.kernels.conv_parts import PartFactory, conv_argv, part_scratch, part_stride, view1, view2, view3, view4, \
    view5
from jitort.kernels.native_parts import PART_SIG, CFuncs
from jitort.kernels.threads import parts_for, run_native, scratch
from jitort.kernels import conv_parts as CP
from jitort.kernels.winograd import winograd_kernel, winograd_applies, winograd_weights

ACTIVATIONS = {"": 0, "Relu": 1, "Clip": 2, "LeakyRelu": 3, "HardSigmoid": 4, "HardSwish": 5,
               "Sigmoid": 6, "SiLU": 7}

_EP_COLS = 256  # column block of the GEMM + separate-epilogue path (activations other than Relu/Clip)

_KW = dict(cache=True, nogil=True, error_model="numpy")
LANES_R = max(TILE_ROWS.values())  # positions a lanes tile reads from its first
_COLS = 64  # a 1x1 conv split by columns cuts them at multiples of this (whole AVX-512 panels, 256 bytes)


# --- Conv kernels --------------------------------------------------------------------------------
# geo: [group, kd, kh, kw, sd, sh, sw, dd, dh, dw, pd, ph, pw]; x [N,C,D,H,W]; w [M,K]; out [N,M,P]

@njit_one(any_layout=("b", "c", "z"), **_KW)
def _gemm_act(wp, ao, M, K, b, c, z, bias, bo, act, prm, ep, ga, bp):  # type: ignore[no-untyped-def]
    """c[M, N] = act(W @ b + bias[bo:bo+M] (+ z)) with W packed (``convgemm.pack_weights``, from
    element ao: a row tile boundary), through the GEMM at address ga (``convgemm.gemm_address``).
    Relu and Clip (and none), and the residual z, run on the GEMM's register tile, the other
    activations per column block while it is in cache (with z: the GEMM + bias + z runs whole, then
    the activation row by row)."""
    if act <= 2:
        gemm_at(ga, wp, ao, M, K, b, c, bias, bo, act + 1, prm[0], prm[1], bp, z)
        return
    if z is not None:
        gemm_at(ga, wp, ao, M, K, b, c, bias, bo, 1, prm[0], prm[1], bp, z)
        for m in range(M):
            epilogue_row(c[m], prm[2], act, prm, ep)
        return
    N = c.shape[1]
    for j0 in range(0, N, _EP_COLS):
        j1 = min(N, j0 + _EP_COLS)
        cv = c[:, j0:j1]
        gemm_at(ga, wp, ao, M, K, b[:, j0:j1], cv, bias, bo, 0, prm[0], prm[1], bp, None)
        for m in range(M):
            epilogue_row(cv[m], bias[bo + m], act, prm, ep)


@njit(inline="always", **EP)
def _conv_gemm_1x1(x, wp, b, out, z, group, act, prm, ep, ga, sc, part, nparts):  # type: ignore[no-untyped-def]
    """x [N, C, P], out [N, M, P], wp [group, ...]: out[n, group g] = W_g @ x[n, group g].
    sc: scratch of ``_scratch_size`` elements; this call computes its ``part`` of the columns
    (output positions) when there are at least as many as output channels, else of the row tiles:
    each part packs the columns of x it multiplies, so a split by row tiles packs all of x once per
    part, and a split by columns reads all of W once per part; the smaller of the two repeats.
    Part of ``_conv_gemm`` (inlined: one kernel module, one copy of the GEMM to compile)."""
    N, C, P = x.shape[0], x.shape[1], x.shape[2]
    M = out.shape[1]
    Cg = C // group
    Mg = M // group
    bp = sc[:BBLOCK]
    t0, t1 = 0, (Mg + MR - 1) // MR
    p0, p1 = 0, P
    if nparts > 1:
        if P >= Mg:
            q0, q1 = share((P + _COLS - 1) // _COLS, part, nparts)
            p0, p1 = q0 * _COLS, min(P, q1 * _COLS)
        else:
            t0, t1 = share(t1, part, nparts)
    r0, r1 = t0 * MR, min(Mg, t1 * MR)
    if r0 >= r1 or p0 >= p1:
        return
    for n in range(N):
        for g in range(group):
            o = out[n, g * Mg + r0:g * Mg + r1, p0:p1]
            xs = x[n, g * Cg:(g + 1) * Cg, p0:p1]
            if z is None:
                _gemm_act(wp[g], t0 * Cg * MR, r1 - r0, Cg, xs, o, None, b, g * Mg + r0, act, prm, ep, ga, bp)
            else:
                _gemm_act(wp[g], t0 * Cg * MR, r1 - r0, Cg, xs, o, z[n, g * Mg + r0:g * Mg + r1, p0:p1], b,
                          g * Mg + r0, act, prm, ep, ga, bp)


@njit(**_KW)
def _conv_gemm(x, wp, b, out, z, geo, OD, OH, OW, act, prm, ep, ga, sc, part, nparts):  # type: ignore[no-untyped-def]
    """im2col per block of output rows, then the GEMM; a 1x1 conv without stride or padding skips
    im2col (``_conv_gemm_1x1``). sc: scratch of ``_scratch_size`` elements; this call computes its
    ``part`` of the row blocks (made small enough that each part has one), or with fewer output
    rows than parts of the output channels' row tiles (1x1: see ``_conv_gemm_1x1``)."""
    N, C, D, H, W = x.shape
    M = out.shape[1]
    group, kd, kh, kw = geo[0], geo[1], geo[2], geo[3]
    sd, sh, sw, pd, ph, pw = geo[4], geo[5], geo[6], geo[10], geo[11], geo[12]
    if kd * kh * kw == 1 and sd * sh * sw == 1 and pd + ph + pw == 0 and OD * OH * OW == D * H * W:
        _conv_gemm_1x1(x.reshape(N, C, D * H * W), wp, b, out, z, group, act, prm, ep, ga, sc, part, nparts)
        return
    Cg = C // group
    Mg = M // group
    T = kd * kh * kw
    K = Cg * T
    R = OD * OH
    rows = im2col_rows_jit(K, OW, R)
    if nparts > 1 and (R + rows - 1) // rows < nparts <= R:
        # fewer row blocks than parts: smaller blocks, one per part (each part gathers and packs
        # only its own columns; a split by output channels repeats both in every part)
        rows = (R + nparts - 1) // nparts
    col = sc[:K * rows * OW]
    bp = sc[K * rows * OW:K * rows * OW + BBLOCK]
    zero = prm[2]
    xf = x.reshape(-1)
    plane = D * H * W
    tab = np.empty(T * rows * OW, np.int64)
    nblocks = (R + rows - 1) // rows
    # fewer output rows than parts: each part gathers every block itself and computes its share of
    # the output channels' row tiles
    b0, b1, t0, t1 = 0, nblocks, 0, (Mg + MR - 1) // MR
    if nblocks >= nparts:
        b0, b1 = share(nblocks, part, nparts)
    else:
        t0, t1 = share(t1, part, nparts)
    m0, m1 = t0 * MR, min(Mg, t1 * MR)
    if m0 >= m1:
        return
    for r0 in range(b0 * rows, min(R, b1 * rows), rows):
        r1 = min(R, r0 + rows)
        pb = (r1 - r0) * OW
        _im2col_table(tab, r0, r1, OH, OW, D, H, W, geo)
        colv = col[:K * pb].reshape(K, pb)
        for n in range(N):
            for g in range(group):
                _im2col_gather(col, xf, (n * C + g * Cg) * plane, plane, Cg, T, tab, pb, zero)
                o = out[n, g * Mg + m0:g * Mg + m1, r0 * OW:r1 * OW]
                if z is None:
                    _gemm_act(wp[g], t0 * K * MR, m1 - m0, K, colv, o, None, b, g * Mg + m0, act, prm, ep, ga, bp)
                else:
                    _gemm_act(wp[g], t0 * K * MR, m1 - m0, K, colv, o, z[n, g * Mg + m0:g * Mg + m1, r0 * OW:r1 * OW],
                              b, g * Mg + m0, act, prm, ep, ga, bp)


@njit(**_KW)
def _conv_implicit(x, wp, b, out, z, geo, OD, OH, OW, act, prm, ep, sc, part, nparts):  # type: ignore[no-untyped-def]
    """The GEMM of im2col without im2col, for K = Cg*kd*kh*kw <= ``_IMPLICIT_MAX_K``: each group's
    input is copied once into a zero-padded buffer split into column-stride phases
    (``pad_phases``), and ``conv_tile`` reads B[k, j] straight from it at tap offsets (j: up to
    ``IMPLICIT_VECS`` vectors of output columns of one row, contiguous in a phase). Every output is
    one fma chain in k order, as on the GEMM paths.

    The register tile is the GEMM's, MR rows x IMPLICIT_VECS vectors, a row's tail on the vectors
    it needs; on AVX-512 a tile of at most 2 vectors (rows of <= 32 columns, tails) takes two row
    tiles at once (12 x 2: 2 B loads per 24 fmas, where 6 x 2 needs them per 12). Measured on the
    Intel Xeon Ice Lake-SP VM (AVX-512), 1 thread, single Conv + Relu sessions, old 12 x 2 tiles ->
    these, alternating processes (3 rounds, us): squeezenet's stem (3->64 3x3 s2, 224) 1170-1205 ->
    744-1026, resnet50's (7x7 s2) 3664-3811 -> 2484-3556, zfnet's 5404-5559 -> 3980-4908, 3x3 16->64
    on 55x55 761-875 -> 625-778, 40->64 on 55x55 (K blocks) 2076-2240 -> 1653-1980; rows of 27-28
    (12 x 2 both ways) equal. Inside whole networks (light_squeezenet, light_resnet50,
    light_zfnet512, ratios to onnxruntime) the difference is within the VM's noise.

    sc: scratch of ``_scratch_size`` elements; this call computes its ``part`` of the row tiles
    (each part pads the input itself)."""
    N, C, D, H, W = x.shape
    M = out.shape[1]
    group, kd, kh, kw = geo[0], geo[1], geo[2], geo[3]
    sd, sh, sw, dd, dh, dw, pd, ph, pw = geo[4], geo[5], geo[6], geo[7], geo[8], geo[9], geo[10], geo[11], geo[12]
    Cg = C // group
    Mg = M // group
    zero = prm[2]
    Dp = (OD - 1) * sd + (kd - 1) * dd + 1
    Hp = (OH - 1) * sh + (kh - 1) * dh + 1
    Wq = OW + ((kw - 1) * dw) // sw
    plane = sw * Dp * Hp * Wq
    xbuf = sc[:Cg * plane + SLACK]
    xbuf[Cg * plane:] = zero
    K = Cg * kd * kh * kw
    toff = np.empty(K, np.int64)
    k = 0
    for c in range(Cg):
        for a in range(kd):
            for bb in range(kh):
                for e in range(kw):
                    toff[k] = (c * sw + (e * dw) % sw) * Dp * Hp * Wq + (a * dd * Hp + bb * dh) * Wq + (e * dw) // sw
                    k += 1
    P = OD * OH * OW
    NR = conv_tile_cols(x.dtype)
    VL = NR // IMPLICIT_VECS
    GROUPS = max(1, IMPLICIT_GROUPS * 2 // IMPLICIT_VECS)  # column groups per pass: the same columns on every host
    fin = act + 1 if act <= 2 and z is None else (1 if z is not None else 0)
    lo, hi = prm[0], prm[1]
    t0, t1 = share((Mg + MR - 1) // MR, part, nparts)
    for n in range(N):
        for g in range(group):
            for c in range(Cg):
                pad_phases(x, (n * C + g * Cg + c) * D * H * W, D, H, W, xbuf[c * plane:(c + 1) * plane], Dp, Hp, Wq,
                           pd, ph, pw, sw, zero, n > 0 or g > 0)
            wg = wp[g]
            # K blocks outermost over a chunk of column groups (a tile's columns of one output row), so
            # that an A block (MC x KC) stays in cache across the chunk; a later K block resumes the
            # fma chain from the output. With a single K block a tile may also write its junk columns
            # past the row's end (into a column group computed later) instead of masking them.
            nj = (OW + NR - 1) // NR
            ng = OD * OH * nj
            for q0 in range(0, ng, GROUPS):
                q1 = min(ng, q0 + GROUPS)
                for k0 in range(0, K, IMPLICIT_KC):
                    kb = min(K - k0, IMPLICIT_KC)
                    f = fin if k0 + kb >= K else 0
                    acc = 1 if k0 > 0 else 0
                    for i0 in range(t0, t1, IMPLICIT_MCT):
                        for q in range(q0, q1):
                            row = q // nj
                            j0 = (q - row * nj) * NR
                            od = row // OH
                            xo = (od * sd * Hp + (row - od * OH) * sh) * Wq + j0
                            pos = row * OW + j0
                            nc = min(NR, OW - j0)
                            nv = (nc + VL - 1) // VL  # a row's tail: the vectors it needs
                            spill = 1 if kb == K and pos + nv * VL <= P else 0
                            iend = min(t1, i0 + IMPLICIT_MCT)
                            i = i0
                            while i < iend:
                                m0 = g * Mg + i * MR
                                ao = (i * K + k0) * MR
                                oo = (n * M + m0) * P + pos
                                two = ROW_TILES == 2 and nv <= 2 and i + 1 < iend  # two row tiles: 12 x nv
                                mr = min(2 * MR if two else MR, Mg - i * MR)
                                conv_tile_nv(wg, ao, xbuf, xo, toff, k0, kb, out, oo, P, mr, nc, spill, acc, b, m0, f,
                                             lo, hi, nv, ao + K * MR if two else ao, two)
                                i += 2 if two else 1
                if z is not None:  # the chunk's positions, still in cache (a spill lands past p1 only)
                    p0 = (q0 // nj) * OW + (q0 % nj) * NR
                    p1 = ((q1 - 1) // nj) * OW + min(OW, ((q1 - 1) % nj) * NR + NR)
                    for m in range(g * Mg + t0 * MR, g * Mg + min(Mg, t1 * MR)):
                        epilogue_residual(out[n, m, ::1][p0:p1], z[n, m, ::1][p0:p1], act, prm, ep)
            if act > 2 and z is None:
                for m in range(g * Mg + t0 * MR, g * Mg + min(Mg, t1 * MR)):
                    epilogue_row(out[n, m, ::1], b[m], act, prm, ep)


@njit(inline="always", **EP)
def _im2col_table(tab, r0, r1, OH, OW, D, H, W, geo):  # type: ignore[no-untyped-def]
    """tab[t, q] for tap t = (a, bb, e) and block position q = (r - r0) * OW + ow (r = od * OH + oh,
    r0 <= r < r1): the offset in an input plane that tap reads for that output, or -1 in the padding."""
    kd, kh, kw = geo[1], geo[2], geo[3]
    sd, sh, sw, dd, dh, dw, pd, ph, pw = geo[4], geo[5], geo[6], geo[7], geo[8], geo[9], geo[10], geo[11], geo[12]
    pb = (r1 - r0) * OW
    for a in range(kd):
        for bb in range(kh):
            for e in range(kw):
                tq = ((a * kh + bb) * kw + e) * pb
                for q in range(r1 - r0):
                    od = (r0 + q) // OH
                    iz = od * sd + a * dd - pd
                    iy = (r0 + q - od * OH) * sh + bb * dh - ph
                    row = (iz * H + iy) * W if 0 <= iz < D and 0 <= iy < H else -1
                    for j in range(OW):
                        ix = j * sw + e * dw - pw
                        tab[tq + q * OW + j] = row + ix if row >= 0 and 0 <= ix < W else -1


@njit(inline="always", **EP)
def _im2col_gather(col, xf, base, plane, Cg, T, tab, pb, zero):  # type: ignore[no-untyped-def]
    """col[(c * T + t) * pb + q] = xf[base + c * plane + tab[t * pb + q]] (zero where tab is -1):
    one long loop per (channel, tap) that vectorises as a masked gather (unsigned indices: no
    wraparound select). It replaced a copy per (tap, output row) whose per-row overhead made
    im2col 3-11 ns per element for strided 3x3 convs on small images (resnet50's 256-channel
    stride-2 conv: 2.2 ms of im2col in a 4.9 ms conv; 0.34 ms this way), Intel Xeon (Ice Lake)."""
    for c in range(Cg):
        cb = base + c * plane
        for t in range(T):
            d = (c * T + t) * pb
            tb = t * pb
            for q in range(pb):
                o = tab[np.uint64(tb + q)]
                col[np.uint64(d + q)] = xf[np.uint64(cb + o)] if o >= 0 else zero


@njit(**_KW)
def _conv_direct(x, w, b, out, z, geo, OD, OH, OW, act, prm, ep, sc, part, nparts):  # type: ignore[no-untyped-def]
    """Cg == 1: output channel m reads input channel m // Mg only.

    Each input plane is copied once into a zero-padded buffer covering exactly the window the
    convolution reads, so no tap needs a bounds check; output (oh, ow) then reads flat index
    oh*sh*Wp + ow*sw plus a constant offset per tap. ``dw_plane`` runs the taps along output rows
    in vector registers (column stride 2 by a shuffle, others by a gather) and writes bias +
    Relu/Clip straight into the output (other activations after). Every channel runs the same
    code: rounding does not depend on the channel. sc: scratch of ``_scratch_size`` elements;
    this call computes its ``part`` of the input channels."""
    N, C, D, H, W = x.shape
    M = w.shape[0]
    kd, kh, kw = geo[1], geo[2], geo[3]
    sd, sh, sw, dd, dh, dw, pd, ph, pw = geo[4], geo[5], geo[6], geo[7], geo[8], geo[9], geo[10], geo[11], geo[12]
    Mg = M // C
    zero = prm[2]
    Dp = (OD - 1) * sd + (kd - 1) * dd + 1
    Hp = (OH - 1) * sh + (kh - 1) * dh + 1
    Wp = (OW - 1) * sw + (kw - 1) * dw + 1
    xbuf = sc[:Dp * Hp * Wp + SLACK * max(sw, 1)]  # full vectors read past a row's end (junk lanes)
    xbuf[Dp * Hp * Wp:] = zero
    T = kd * kh * kw
    toff = np.empty(T, np.int64)
    for a in range(kd):
        for bb in range(kh):
            for e in range(kw):
                toff[(a * kh + bb) * kw + e] = (a * dd * Hp + bb * dh) * Wp + e * dw
    P = OD * OH * OW
    fin = act + 1 if act <= 2 and z is None else (1 if z is not None else 0)
    plan = dw_plan(OH, OW, sh * Wp, sw, x.itemsize)
    c0, c1 = share(C, part, nparts)
    for n in range(N):
        for c in range(c0, c1):
            pad_phases(x, (n * C + c) * D * H * W, D, H, W, xbuf, Dp, Hp, Wp, pd, ph, pw, 1, zero,
                       n > 0 or c > c0)
            for mm in range(Mg):
                m = c * Mg + mm
                for od in range(OD):
                    xo = od * sd * Hp * Wp
                    oo = (n * M + m) * P + od * OH * OW
                    if sw == 1:
                        dw_plane(plan, xbuf, xo, sh * Wp, toff, w, m * T, out, oo, OH, OW, b[m], fin, prm[0], prm[1], sw, 1)
                    elif sw == 2:
                        dw_plane(plan, xbuf, xo, sh * Wp, toff, w, m * T, out, oo, OH, OW, b[m], fin, prm[0], prm[1], sw, 2)
                    else:
                        dw_plane(plan, xbuf, xo, sh * Wp, toff, w, m * T, out, oo, OH, OW, b[m], fin, prm[0], prm[1], sw, 0)
                if z is not None:
                    epilogue_residual(out[n, m, ::1], z[n, m, ::1], act, prm, ep)
                elif act > 2:
                    epilogue_row(out[n, m, ::1], b[m], act, prm, ep)


# Elements of V plus the 16 GEMM results per block: 256K float32 = 1 MiB.


# --- part functions: every split kernel runs as native parts (conv_parts.py) ---------------------
# The kernel a path runs, by name (the part functions' key; IM2COL and GEMM_1X1 share _conv_gemm)
_KERNEL = {DIRECT: "direct", DWBLOCK: "dwblock", WINDOW: "window", WINOGRAD: "winograd", IMPLICIT: "implicit",
           IM2COL: "gemm", GEMM_1X1: "gemm", LANES: "lanes"}  # lanes: "lanes64" / "lanes32" by the ISA in use


def _make_part(kernel: str, dt: type, residual: bool, ep_all: bool) -> Any:
    """The part function of one (kernel, compute dtype, residual or not, epilogue kind): rebuilds the
    kernel's arrays from the argument vector (``conv_parts.conv_argv``) and calls the kernel on part
    k with part k's own scratch. Its cells are plain constants (a name, a NumPy scalar type, bools)
    on which Numba prunes the branches before typing, so each compiles one kernel call, and Numba's
    cache keys it by them. Every scalar comes from argv (not a constant): a literal argument would
    compile the kernel once more, specialised on it."""
    def part(k, argv):  # type: ignore[no-untyped-def]
        if kernel == "winograd":
            x = view4(argv, CP.X, dt)
        else:
            x = view5(argv, CP.X, dt)
        w = view2(argv, CP.W, dt)
        b = view1(argv, CP.B, dt)
        out = view3(argv, CP.OUT, dt)
        if residual:
            z = view3(argv, CP.Z, dt)
        else:
            z = None
        geo = view1(argv, CP.GEO, np.int64)
        prm = view1(argv, CP.PRM, dt)
        if ep_all:
            ep = argv[CP.ACT] >= 0  # True, typed as a run-time bool (the kernels' ``ep``: see epilogue_kind)
        else:
            ep = None
        sc = part_scratch(argv, k, dt)
        nparts = argv[CP.NPARTS]
        od, oh, ow, act, ga = argv[CP.OD], argv[CP.OH], argv[CP.OW], argv[CP.ACT], argv[CP.GA]
        if kernel == "direct":
            _direct_inline(x, w, b, out, z, geo, od, oh, ow, act, prm, ep, sc, k, nparts)
        elif kernel == "dwblock":
            _dwblock_inline(x, w, b, out, z, geo, oh, ow, act, prm, ep, sc, k, nparts)
        elif kernel == "window":
            _window_inline(x, w, b, out, z, geo, ow, act, prm, ep, sc, k, nparts)
        elif kernel == "winograd":
            _winograd_inline(x, w, b, out, z, argv[CP.PH], argv[CP.PW], oh, ow, argv[CP.BLK], act, prm, ep, ga, sc, k,
                             nparts)
        elif kernel == "implicit":
            _implicit_inline(x, w, b, out, z, geo, od, oh, ow, act, prm, ep, sc, k, nparts)
        elif kernel == "lanes64":
            _lanes_inline(64, x, w, b, out, z, geo, oh, ow, act, prm, sc, k, nparts)
        elif kernel == "lanes32":
            _lanes_inline(32, x, w, b, out, z, geo, oh, ow, act, prm, sc, k, nparts)
        else:
            _gemm_inline(x, w, b, out, z, geo, od, oh, ow, act, prm, ep, ga, sc, k, nparts)
    return part


# The part functions call the kernels' Python functions inlined (Numba IR, before typing): a call to
# the kernel's dispatcher compiled the kernel on its own (and for the cache), then again inside the
# part function, which links its code (measured: +10 s of cold compile over six conv paths); inlined,
# the kernel compiles once, in the part function, which the one-part call uses too.
_INLINE = dict(inline="always", **EP)
_direct_inline = njit(**_INLINE)(_conv_direct.py_func)
_dwblock_inline = njit(**_INLINE)(dwblock_kernel.py_func)
_window_inline = njit(**_INLINE)(window_kernel.py_func)
_winograd_inline = njit(**_INLINE)(winograd_kernel.py_func)
_implicit_inline = njit(**_INLINE)(_conv_implicit.py_func)
_gemm_inline = njit(**_INLINE)(_conv_gemm.py_func)
_lanes_inline = njit(**_INLINE)(lanes_kernel.py_func)
_PARTS = CFuncs(__name__, PART_SIG, PartFactory("conv_part", _make_part))


def conv_packed(x: np.ndarray, w: np.ndarray, b: np.ndarray, prm: np.ndarray, u: np.ndarray | None = None,
                z: np.ndarray | None = None, *, w_shape: tuple[int, ...], auto_pad: str, group: int,
                strides: tuple[int, ...], dilations: tuple[int, ...], pads: tuple[int, ...], act: int,
                out: np.ndarray | None = None, lanes: int = 0) -> np.ndarray:
    """Conv on pre-packed weights (``pack_conv_weights``) and b [M] in the compute dtype, prm from
    ``epilogue_params``, u the packed Winograd weights when ``winograd_applies`` (else None), and z None or
    the residual added before the activation (the output's shape). w, b, prm and u C-contiguous.
    out: where to write the result (returned), a C-contiguous array of the output's shape and dtype (the
    plan passes a slice of a Concat's output: codegen/plan.py's ``concat_in_place``), else allocated.
    lanes: w (and b, padded to whole channel pairs) are packed for conv_lanes.py (``pack_lanes``)."""
    if x.ndim != len(w_shape):
        check_conv(x, w_shape, group, None)
    wino = 0 if u is None else 2 if w.size == 0 else 1  # 2: Winograd's are the only weights
    out_shape, path, geo, (od, oh, ow), xs, o3s, nsc, flops, units, blk = conv_plan(
        x.shape, w_shape, group, strides, dilations, pads, auto_pad, wino, lanes)
    cd = w.dtype
    if w.size == 0 and path != WINOGRAD and math.prod(w_shape):
        raise RuntimeException(f"Conv: the weights were prepared for the Winograd path only (the input shape "
                               f"known when the model was lowered), but input shape {list(x.shape)} takes another")
    if z is not None and tuple(z.shape) != out_shape:
        raise InvalidArgument(f"FusedConv: the residual input has shape {list(z.shape)}, the output "
                              f"{list(out_shape)}")
    if out is None:
        if o3s[0] * o3s[1] * o3s[2] * cd.itemsize > memory.limit():  # pads are attributes: a model's to choose
            memory.check("Conv", out_shape, cd)
        out = np.empty(out_shape, cd)
    elif out.shape != out_shape or out.dtype != cd or x.dtype != cd or not out.flags.c_contiguous:
        raise RuntimeException(f"Conv: cannot write an output of shape {list(out_shape)} ({x.dtype}) into an "
                               f"array of shape {list(out.shape)} ({out.dtype}, contiguous: {out.flags.c_contiguous})")
    if out_shape[0] == 0 or out_shape[1] == 0:
        return out.astype(x.dtype, copy=False)
    xc = (np.ascontiguousarray(x, cd) if x.dtype != cd else x).reshape(xs)
    o3 = out.reshape(o3s)
    z3 = None if z is None else np.ascontiguousarray(z, cd).reshape(o3s)
    ep = epilogue_kind(act)
    # Every split path (and its one-part call: one compiled function serves both, so whichever a
    # process runs first, an artifact holds what the other needs) runs its kernel through its part
    # function (_make_part), on parts claimed by the pool's workers without the GIL; the checks above
    # are all a part could fail (a part cannot raise).
    kern = _KERNEL[path]
    if kern == "lanes":
        kern = "lanes64" if default_isa() == "avx512" else "lanes32"
        xc = _lanes_input(xc, w_shape, oh, ow, int(geo[11]), int(geo[12]))
    ga = gemm_address(cd) if kern in ("gemm", "winograd") else 0
    wk = u if kern == "winograd" else w
    nparts = parts_for(units, flops)
    stride = part_stride(nsc, cd.itemsize) if nparts > 1 else max(nsc, 1)
    fn = _PARTS.address((kern, cd.type, z is not None, ep is not None))
    # one part: conv_argv runs it (and refuses a strided array: the lowering's and conv_eager's are not)
    argv = conv_argv(fn, xc if xc.flags.c_contiguous else np.ascontiguousarray(xc), wk, b, o3, z3, geo, prm,
                     scratch(stride * nparts, cd), stride, nparts, od, oh, ow, act, ga, blk)
    if nparts > 1:
        run_native(fn, argv, nparts)
    return out if out.dtype == x.dtype else out.astype(x.dtype)


# What a call compiles, for the compile pool's split between processes (``jitort.compile_pool``):
# each path's parts with their cold-compile seconds, measured on light_resnet50 (Zen 3, float32).
_COMPILE_PARTS = {
    DIRECT: {"direct": 2.0},
    IM2COL: {"gemm": 1.4, "im2col": 3.8},  # "gemm": convgemm.gemm_address (see gemm_part)
    WINOGRAD: {"gemm": 1.4, "winograd": 5.2},
    IMPLICIT: {"implicit": 3.7},
    WINDOW: {"window": 1.5},
    LANES: {"lanes": 3.0},
    DWBLOCK: {"dwblock": 1.5},
}
_COMPILE_PARTS[GEMM_1X1] = _COMPILE_PARTS[IM2COL]  # one kernel, _conv_gemm


def _compile_parts(x: np.ndarray, w: np.ndarray, b: np.ndarray, prm: np.ndarray, u: np.ndarray | None = None,
                   z: np.ndarray | None = None, *, w_shape: tuple[int, ...], auto_pad: str, group: int,
                   strides: tuple[int, ...], dilations: tuple[int, ...], pads: tuple[int, ...],
                   act: int, out: np.ndarray | None = None, lanes: int = 0) -> dict[str, float]:
    path = conv_plan(x.shape, w_shape, group, strides, dilations, pads, auto_pad,
                     0 if u is None else 2 if w.size == 0 else 1, lanes)[1]
    ep = "epilogue" if epilogue_kind(act) is None else "epilogue_all"
    # the residual and the epilogue kind: each a part function of its own (_make_part)
    res = "" if z is None else "+residual"
    variant = res + ("" if ep == "epilogue" else "+epilogue_all")
    shared = {"gemm": gemm_part(w.dtype)}
    parts = {shared.get(p, f"{p}[{w.dtype}]{variant}"): c
             for p, c in {**_COMPILE_PARTS[path], ep: 0.6 if ep == "epilogue" else 2.2}.items()}
    # conv_parts.conv_argv: one signature per dtype, input rank and residual
    parts[f"{CP.__name__}.conv_argv[{w.dtype}, {5 if path != WINOGRAD else 4}-D]{res}"] = 0.4
    return parts


conv_packed.compile_parts = _compile_parts  # type: ignore[attr-defined]
conv_packed.own_threads = True  # type: ignore[attr-defined]  # jitort.compiled.Artifact.own_threads
conv_packed.writes_into = True  # type: ignore[attr-defined]  # takes out= (codegen/plan.py's concat_in_place)


def _lanes_input(x: np.ndarray, w_shape: tuple[int, ...], OH: int, OW: int, ph: int, pw: int) -> np.ndarray:
    """x [N, C, 1, H, W] as conv_lanes.py reads it: zero-padded to [N, C, 1, OH + KH - 1, OW + KW - 1]
    (a new array, ``SLACK`` elements longer: a tile may read past the last position when a plane has
    fewer positions than a tile), or x itself when that is its shape already."""
    N, C, H, W = x.shape[0], x.shape[1], x.shape[3], x.shape[4]
    Hp, Wp = OH + w_shape[2] - 1, OW + w_shape[3] - 1
    if (Hp, Wp) == (H, W) and (OH - 1) * Wp + OW >= LANES_R and x.flags.c_contiguous:
        return x
    n = N * C * Hp * Wp
    if n * x.itemsize > memory.limit():
        memory.check("Conv", (N, C, Hp, Wp), x.dtype)
    xp = np.empty(n + LANES_SLACK, x.dtype)
    xp[n:] = 0
    xp5 = xp[:n].reshape(N, C, 1, Hp, Wp)
    lanes_pad(x, xp5, ph, pw)
    return xp5


def pack_conv_weights(W: np.ndarray, group: int, cd: np.dtype) -> np.ndarray:
    """W [M, C/group, *kernel] -> what ``conv_packed`` takes: W^T in panels for the window path
    (``window_applies``), [M, K] for the depthwise kernel (C/group == 1), else the GEMM's packed
    layout per group."""
    if window_applies(tuple(W.shape), group):
        return pack_window_weights(W, cd)
    w2 = np.ascontiguousarray(W.reshape(W.shape[0], -1), cd)
    return w2 if W.shape[1] == 1 else pack_weights(w2, group)


def act_code(activation: str, op_name: str = "Conv") -> int:
    """The epilogue's code for an activation name ("" none); NotImplemented for others."""
    code = ACTIVATIONS.get(activation)
    if code is None:
        raise OrtNotImplemented(f"{op_name}: fused activation '{activation}' is not supported "
                                f"(known: {sorted(a for a in ACTIVATIONS if a)})")
    return code


def conv_eager(X: np.ndarray, W: np.ndarray, B: np.ndarray | None, Z: np.ndarray | None, *, auto_pad: str,
               dilations: Sequence[int] | None, group: int, kernel_shape: Sequence[int] | None,
               pads: Sequence[int] | None, strides: Sequence[int] | None, activation: str, alpha: float,
               beta: float, op_name: str = "Conv") -> np.ndarray:
    """act(Conv(X, W, B) (+ Z)) with the weights packed on the spot: the op functions' path (constant
    folding, weights known only at run time)."""
    check_conv(X, W.shape, group, kernel_shape)
    cd = compute_dtype(X.dtype, op_name)
    rank = X.ndim - 2
    _, s, dl, p = attrs_norm(rank, W.shape[2:], strides, dilations, pads)
    b = np.zeros(W.shape[0], cd) if B is None else np.ascontiguousarray(B, cd)
    if b.shape != (W.shape[0],):
        raise InvalidArgument(f"{op_name}: B must have shape [{W.shape[0]}], got {list(b.shape)}")
    u = winograd_weights(W, cd) if winograd_applies(W.shape, group, s, dl) else None
    return conv_packed(X, pack_conv_weights(W, group, cd), b, epilogue_params(cd, alpha, beta), u, Z,
                       w_shape=tuple(W.shape), auto_pad=auto_pad, group=group, strides=s, dilations=dl, pads=p,
                       act=act_code(activation, op_name))


@op("Conv", since=1, lower=lambda node, g: lower_conv(node, g))
def Conv(X: np.ndarray, W: np.ndarray, B: np.ndarray | None = None, *, auto_pad: str,
         dilations: Sequence[int] | None = None, group: int, kernel_shape: Sequence[int] | None = None,
         pads: Sequence[int] | None = None, strides: Sequence[int] | None = None) -> np.ndarray:
    """Conv (opset 1, 11, 22). Its fused form (+ residual, + activation) is jitort's FusedConv
    (conv_fused.py), formed by the conv epilogue pass."""
    return conv_eager(X, W, B, None, auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape,
                      pads=pads, strides=strides, activation="", alpha=0.0, beta=0.0)


def lower_conv(node: Node, g: Graph, activation: str = "", alpha: float = 0.0, beta: float = 0.0,
               residual: str = "") -> Call:
    """A Conv-like node (Conv's inputs X, W, B and attributes) with constant weights -> a
    ``conv_packed`` call on weights packed now, with the epilogue activation(conv + bias +
    residual) (residual: the name of the value added, "" none). Weights known only at run time:
    the op function's call."""
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
        raise Fail(f"{node.op_type} node '{node.name}': kernel_shape {list(ks)} is not compatible with W shape "
                   f"{list(W.shape)}")
    cd = compute_dtype(xt.dtype, node.op_type)
    _, s, dl, p = attrs_norm(W.ndim - 2, W.shape[2:], a.get("strides"), a.get("dilations"), a.get("pads"))
    b = np.zeros(W.shape[0], cd) if B is None else np.ascontiguousarray(B.reshape(-1), cd)
    prm = epilogue_params(cd, alpha, beta)
    kwargs: dict[str, Any] = dict(w_shape=tuple(int(d) for d in W.shape), auto_pad=a.get("auto_pad", "NOTSET"),
                                  group=group, strides=s, dilations=dl, pads=p, act=act_code(activation, node.op_type))
    # With the input shape known, only the path that will run gets its weights (a 3x3 layer took
    # both the packed GEMM and the Winograd weights: resnet50 lowered 162 MB of constants, now 129 MB)
    if cd == np.float32 and xt.is_static() and kwargs["act"] <= 2 \
            and lanes_pays(tuple(int(d) for d in xt.shape), kwargs["w_shape"], group, s, dl, p, kwargs["auto_pad"]):
        M = W.shape[0]
        bl = np.zeros(-(-M // 32) * 32, cd)  # whole channel pairs (the tile reads them)
        bl[:M] = b
        kwargs["lanes"] = 1
        return Call(conv_packed, [Ref(node.inputs[0]), pack_lanes(np.asarray(W, cd)), bl, prm, None,
                                  Ref(residual) if residual else None], kwargs)
    wino = winograd_applies(W.shape, group, s, dl)
    path = None
    if xt.is_static():
        try:
            path = conv_plan(tuple(int(d) for d in xt.shape), kwargs["w_shape"], group, s, dl, p, kwargs["auto_pad"],
                             wino)[1]
        except Exception:  # noqa: BLE001 - a shape the kernel rejects fails at run time, with its message
            pass
    u = winograd_weights(W, cd) if wino and path in (None, WINOGRAD) else None
    w2 = np.empty(0, cd) if path == WINOGRAD else pack_conv_weights(W, group, cd)
    return Call(conv_packed, [Ref(node.inputs[0]), w2, b, prm, u, Ref(residual) if residual else None], kwargs)


_lower_conv = lower_conv  # the com.microsoft FusedConv lowering's name for it
