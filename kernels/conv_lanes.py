"""Direct convolution with output channels in vector lanes (stride 1, one group, float32).

The layout onnxruntime's NCHWc kernels compute in, on NCHW tensors: a register tile holds R output
positions x 2 vectors of output channels (AVX-512: 12 x 32 channels, 24 zmm accumulators; AVX2: 6 x
16, 12 ymm); per k = (c, kh, kw) it loads the 2 weight vectors and broadcasts the R input values,
R x 2 fmas. Output positions run over the zero-padded input plane's grid (``xp``, row length Wp):
position p' = oh * Wp + ow reads xp at p' + c Hp Wp + kh Wp + kw, so a tile is R consecutive
positions whatever the row boundaries; the Wp - OW positions of each row that fall in the right pad
are computed and not stored. Small planes fill whole tiles this way (14x14: 14 of every 16
positions stored), where the GEMM paths' tiles run along one output row (conv_setup's implicit GEMM
needs rows of >= 24 to fill its two vectors) or pay Winograd's transforms.

The sum runs in blocks of ``KB`` k (a channel pair's weights for a block, 24 KiB, stay in L1 while a
unit of ``TB`` tiles passes; the tiles' sums wait in a scratch between blocks): with the whole sum per
tile the weights streamed from L2 and 3x3 64->64 on 56x56 ran at 75 GFLOP/s, in blocks at 100 (Ice
Lake-SP VM, 1 thread). Every output element is one fma chain in k order (a block resumes it from the
stored float32 sums; then + bias, + the residual z, the activation), so results do not depend on the
tile, the ISA, the blocks or the threads (the GEMM paths' rule, convgemm.py). The tile stores each
vector's lanes to its channels' planes (a scatter: OH OW apart) after the last block.

Which convs take it is ``lanes_rule`` (measured, AVX-512 hosts); the lowering packs the weights for
it alone, so conv_plan runs it wherever the weights are these (``lanes_applies``), also on AVX2.

Weights are packed once (``pack_lanes``): [ceil(M / 32) * 2][K][16], blocks of 16 output channels,
each k's 16 channels contiguous, zero past M; the layout does not depend on the ISA (an AVX2 tile's
two ymm are one block's halves).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from jitort.allocator import aligned_zeros
from jitort.kernels.convutil import EP, share
from jitort.kernels.native_parts import addr
from jitort.kernels.vecir import Vec, fma_rows

BLOCK = 16  # output channels per packed weight block
TILE_ROWS = {64: 12, 32: 6}  # positions per register tile by vector bytes (x 2 vectors)
KB = 192  # k per block: a channel pair's weights for it (24 KiB) stay in L1
TB = 16  # tiles per unit (their sums between K blocks: TB x 12 x 32 floats, 24 KiB)
ACC = TB * 12 * 32  # elements of a part's sums
SLACK = 16  # elements past the padded planes: a tile's positions past the last read up to R - 1 beyond


def pack_lanes(W: np.ndarray) -> np.ndarray:
    """W [M, C, KH, KW] float32 -> [2 ceil(M / 32) blocks, K 16]: block i's k-th 16 channels at
    [i, 16 k], zero past M; 64-byte aligned (whole-vector loads)."""
    M = W.shape[0]
    K = int(np.prod(W.shape[1:]))
    nb = 2 * -(-M // (2 * BLOCK))
    w = np.zeros((nb * BLOCK, K), np.float32)
    w[:M] = W.reshape(M, K)
    out = aligned_zeros((nb, K * BLOCK), np.float32)
    out[:] = w.reshape(nb, BLOCK, K).transpose(0, 2, 1).reshape(nb, K * BLOCK)
    return out


@intrinsic
def _lanes_tile(typingctx, vbytes, x, off, K, w0, w1, rows, p0, Wp, OW, ostride, out, c0, M, bias,  # type: ignore[no-untyped-def]
                z, hasz, fin, lo, hi, accb, init, last):
    """One tile on integer addresses: positions p0 .. p0 + rows - 1 (rows <= R) of the padded grid
    (row length Wp; those at ow >= OW not stored), channels c0 .. c0 + 2 VL - 1 (< M stored).
    x: the padded input at position 0; off: int64 [K] offsets of each k; w0, w1: the two weight
    vectors' k = 0 (16 apart per k); out, z: channel plane 0 of the output and residual (ostride
    apart; position oh OW + ow); bias: float32 [>= c0 + 2 VL]; fin: Vec.epilogue's code."""
    if not isinstance(vbytes, types.IntegerLiteral):
        return None
    VB = vbytes.literal_value
    sig = types.void(vbytes, x, off, K, w0, w1, rows, p0, Wp, OW, ostride, out, c0, M, bias, z, hasz, fin, lo, hi,
                     accb, init, last)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        (_, x_, off_, K_, w0_, w1_, rows_, p0_, Wp_, OW_, os_, out_, c0_, M_, bias_, z_, hasz_, fin_, lo_,
         hi_, accb_, init_, last_) = [context.cast(builder, a, t, types.int64) if isinstance(t, types.Integer) else a
                 for a, t in zip(args, signature.args)]
        b = builder
        v = Vec(context, b, types.float32, VB)
        VL = v.VL
        R = TILE_ROWS[VB]
        i64p = v.i64.as_pointer()
        xb, ob, zb, bb = v.at(v.address(x_), p0_), v.address(out_), v.address(z_), v.address(bias_)
        offp = b.inttoptr(off_, i64p)
        wp = [v.address(w0_), v.address(w1_)]
        # positions past rows compute on what follows (SLACK elements past the planes) and are not stored

        def a_elem(k: ir.Value, r: int) -> ir.Value:
            o = b.load(b.gep(offp, [k]))
            return b.load(v.at(v.at(xb, o), r))

        def b_vecs(k: ir.Value) -> list[ir.Value]:
            kk = b.mul(k, v.c(BLOCK))
            return [v.load(v.at(wp[j], kk)) for j in range(2)]

        one = v.c(1)
        ab = v.address(accb_)
        # the sums so far: zero, or an earlier K block's (resuming each element's fma chain)
        slots = [[cgutils.alloca_once_value(b, v.zero) for _ in range(2)] for _ in range(R)]
        with b.if_then(b.icmp_signed("!=", init_, v.c(0))):
            for r in range(R):
                for q in range(2):
                    b.store(v.load(v.at(ab, (2 * r + q) * VL)), slots[r][q])
        start = [[b.load(slots[r][q]) for q in range(2)] for r in range(R)]
        acc = fma_rows(v, R, 2, K_, a_elem, b_vecs, start)
        is_last = b.icmp_signed("!=", last_, v.c(0))
        with b.if_then(b.not_(is_last)):
            for r in range(R):
                for q in range(2):
                    v.store(acc[r][q], v.at(ab, (2 * r + q) * VL))
        finish = v.epilogue(fin_, lo_, hi_)
        # lane j of vector q: channel c0 + q VL + j, at plane offset (c0 + q VL + j) * ostride
        chan = [b.add(v.isplat(b.add(c0_, v.c(q * VL))), v.lane_ids) for q in range(2)]
        lanes = [b.icmp_signed("<", chan[q], v.isplat(M_)) for q in range(2)]
        plane = [b.mul(chan[q], v.isplat(os_)) for q in range(2)]
        biasv = [v.load(v.at(bb, b.add(c0_, v.c(q * VL)))) for q in range(2)]
        use_z = b.icmp_signed("!=", hasz_, v.c(0))
        pvty = ir.VectorType(v.fty.as_pointer(), VL)
        i32 = v.i32
        scatter = cgutils.get_or_insert_function(
            b.module, ir.FunctionType(ir.VoidType(), [v.vty, pvty, i32, v.mty]), f"llvm.masked.scatter.v{VL}f32.v{VL}p0")
        gather = cgutils.get_or_insert_function(
            b.module, ir.FunctionType(v.vty, [pvty, i32, v.mty, v.vty]), f"llvm.masked.gather.v{VL}f32.v{VL}p0")
        isz = v.c(4)

        def stores(with_z: bool) -> None:
            # the tile's first position's (oh, ow) once; each next one steps a column (wrapping rows)
            oh = b.sdiv(p0_, Wp_)
            ow = b.sub(p0_, b.mul(oh, Wp_))
            for r in range(R):
                if r:
                    ow = b.add(ow, one)
                    wrap = b.icmp_signed("==", ow, Wp_)
                    ow = b.select(wrap, v.c(0), ow)
                    oh = b.select(wrap, b.add(oh, one), oh)
                keep = b.and_(b.icmp_signed("<", v.c(r), rows_), b.icmp_signed("<", ow, OW_))
                with b.if_then(keep, likely=True):
                    o = b.add(b.mul(oh, OW_), ow)
                    for q in range(2):
                        elems = b.mul(b.add(plane[q], v.isplat(o)), v.isplat(isz))
                        zv = None
                        if with_z:
                            zptrs = b.inttoptr(b.add(v.isplat(b.ptrtoint(zb, v.i64)), elems), pvty)
                            zv = b.call(gather, [zptrs, ir.Constant(i32, 4), lanes[q], v.zero])
                        y = finish(acc[r][q], biasv[q], zv)
                        optrs = b.inttoptr(b.add(v.isplat(b.ptrtoint(ob, v.i64)), elems), pvty)
                        b.call(scatter, [y, optrs, ir.Constant(i32, 4), lanes[q]])

        with b.if_then(is_last):
            with b.if_else(use_z) as (yes, no):
                with yes:
                    stores(True)
                with no:
                    stores(False)
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always", **EP)
def lanes_conv(VB, xp, off, wl, bias, out, z, hasz, fin, lo, hi, Wp, OH, OW, M, acc, part, nparts):  # type: ignore[no-untyped-def]
    """One image: out [M, OH * OW] (+ z, same shape, read when hasz) from the padded input xp (flat,
    planes of Hp x Wp, >= SLACK elements beyond) and the packed weights wl; this part's share of
    (channel pair, block of TB tiles) units. K runs in blocks of KB (a channel pair's KB x 2
    vectors of weights stay in L1 while the unit's tiles pass), the sums in between in acc (>=
    ``ACC`` elements, this part's). VB: the vector bytes (literal)."""
    R = 12 if VB == 64 else 6
    VL = VB // 4
    K = off.shape[0]
    ng = (M + 2 * VL - 1) // (2 * VL)
    PV = (OH - 1) * Wp + OW  # positions of the padded grid up to the last output
    nt = (PV + R - 1) // R
    nu = (nt + TB - 1) // TB
    u0, u1 = share(ng * nu, part, nparts)
    xa, oa, za, ba, wa, offa, aa = addr(xp), addr(out), addr(z), addr(bias), addr(wl), addr(off), addr(acc)
    for u in range(u0, u1):
        g = u // nu
        t0 = (u % nu) * TB
        t1 = min(nt, t0 + TB)
        c0 = g * 2 * VL
        c1 = c0 + VL
        # vector q's channels c0 + q VL: block (c0 + q VL) // 16, lane offset (c0 + q VL) % 16
        wq0 = wa + (((c0 // BLOCK) * K) * BLOCK + c0 % BLOCK) * 4
        wq1 = wa + (((c1 // BLOCK) * K) * BLOCK + c1 % BLOCK) * 4
        for k0 in range(0, K, KB):
            kb = min(KB, K - k0)
            init = 1 if k0 > 0 else 0
            last = 1 if k0 + kb >= K else 0
            for t in range(t0, t1):
                p0 = t * R
                if p0 + R > PV and PV >= R:  # the last tile ends at the last position (reads nothing beyond)
                    p0 = PV - R
                _lanes_tile(VB, xa, offa + k0 * 8, kb, wq0 + k0 * BLOCK * 4, wq1 + k0 * BLOCK * 4, min(R, PV - p0), p0,
                            Wp, OW, OH * OW, oa, c0, M, ba, za, hasz, fin, lo, hi, aa + (t - t0) * R * 2 * VL * 4,
                            init, last)


@njit(inline="always", **EP)
def lanes_kernel(VB, x, w, b, out, z, geo, OH, OW, act, prm, sc, part, nparts):  # type: ignore[no-untyped-def]
    """The conv part function's kernel (conv.py): x [N, C, 1, Hp, Wp] the zero-padded input (or the
    input itself when it needs no padding: conv.py's ``_lanes_input``), w from ``pack_lanes``, b the bias
    padded to whole channel pairs, out and z [N, M, OH OW] (z None: no residual), act 0-2 (none,
    Relu, Clip(prm[0], prm[1])). sc: this part's scratch (``ACC`` elements)."""
    N, C, Hp, Wp = x.shape[0], x.shape[1], x.shape[3], x.shape[4]
    M = out.shape[1]
    KH, KW = geo[2], geo[3]
    off = np.empty(C * KH * KW, np.int64)
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                off[(c * KH + i) * KW + j] = (c * Hp + i) * Wp + j
    f32 = np.float32
    lo, hi = f32(prm[0]), f32(prm[1])
    xf = x.reshape(N, C * Hp * Wp)
    for n in range(N):
        if z is None:
            lanes_conv(VB, xf[n], off, w, b, out[n], out[n], 0, act + 1, lo, hi, Wp, OH, OW, M, sc, part, nparts)
        else:
            lanes_conv(VB, xf[n], off, w, b, out[n], z[n], 1, act + 1, lo, hi, Wp, OH, OW, M, sc, part, nparts)


def lanes_applies(w_shape: tuple[int, ...], group: int, strides: tuple[int, ...], dilations: tuple[int, ...],
                  pads: tuple[int, ...]) -> bool:
    """Whether the kernel computes this conv: 2-D, one group, stride 1, dilation 1, no negative pads."""
    return (len(w_shape) == 4 and group == 1 and all(s == 1 for s in strides) and all(d == 1 for d in dilations)
            and all(p >= 0 for p in pads))


def lanes_rule(w_shape: tuple[int, ...], out_hw: tuple[int, int]) -> bool:
    """Where it beats the other paths (on AVX-512: its 12 x 2 tile; the AVX2 kernel runs only weights
    packed for it on another host): a kernel wider than 1x1 with few output channels (<= 96) and a
    long sum (K >= 512) on planes up to 56x56 or a shorter one (K >= 128) on planes up to 14x14, or
    >= 256 input channels on planes up to 7x7. Measured on the Intel Xeon (Ice Lake-SP) VM, 1 thread,
    each 3x3 conv + Relu alone against the path conv_plan takes otherwise (ms, lanes vs other):
    16->32 on 14x14 0.027 vs 0.061 (implicit GEMM), 64->32 on 56x56 1.57 vs 2.17, 64->64 on 56x56
    2.80 vs 3.36 (Winograd), 128->32 on 28x28 0.55 vs 0.83, 64->96 on 28x28 0.86 vs 1.08, 512->512 on
    7x7 3.21 vs 4.01, 384->384 on 7x7 (ratio to onnxruntime) 1.26 vs 1.68, 256->256 on 7x7 1.38 vs
    1.59. Lost (left out): 128->128 on 28x28 2.59 vs 1.86 and 256->256 on 14x14 2.59 vs 1.69 (Winograd's
    2.25x fewer multiplies win once its GEMMs are big), 64->64 on 112x112 and 224x224 (1.19 vs 1.10,
    1.45 vs 1.26), 16->64 on 55x55 (1.36 vs 1.11), 3->64 on 224x224 (2.7 vs 0.8: K = 27 leaves the
    scattered stores as the cost), 192->320 and 224->224 on 7x7 (equal or worse). In networks, same
    process order alternating (ratios to onnxruntime, 1 thread): densenet121 1.07/1.01 -> 0.92/0.98,
    resnet50 1.45/1.48 -> 1.30/1.33, inception_v1 0.87/0.76 -> 0.77/0.70."""
    M, C = w_shape[0], w_shape[1]
    K = C * w_shape[2] * w_shape[3]
    P = out_hw[0] * out_hw[1]
    if w_shape[2] * w_shape[3] == 1:
        return False
    return (M <= 96 and ((K >= 512 and P <= 3136) or (K >= 128 and P <= 196))) or (P <= 49 and C >= 256)


@njit(cache=True, **EP)
def lanes_pad(x, xp, ph, pw):  # type: ignore[no-untyped-def]
    """xp [N, C, 1, Hp, Wp] (its buffer SLACK elements longer) = x [N, C, 1, H, W] at (ph, pw), zeros
    around (the end pads may crop: a plane's rows and columns past Hp, Wp are left out)."""
    N, C, H, W = x.shape[0], x.shape[1], x.shape[3], x.shape[4]
    Hp, Wp = xp.shape[3], xp.shape[4]
    zero = xp.dtype.type(0)
    for n in range(N):
        for c in range(C):
            for i in range(Hp):
                row = xp[n, c, 0, i]
                h = i - ph
                if h < 0 or h >= H:
                    for j in range(Wp):
                        row[j] = zero
                    continue
                src = x[n, c, 0, h]
                for j in range(min(pw, Wp)):
                    row[j] = zero
                w1 = min(W, Wp - pw)
                for j in range(w1):
                    row[pw + j] = src[j]
                for j in range(pw + w1, Wp):
                    row[j] = zero
