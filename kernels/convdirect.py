"""Convolution without im2col: the depthwise plane kernel and the implicit-GEMM tile, in vector IR.

* ``dw_plane``: one output plane of a depthwise convolution from a zero-padded copy of its input
  plane, U output vectors at once (independent fma chains), bias + Relu/Clip on the way out.
* ``conv_tile``: the GEMM register tile of convgemm.py with B[k, j] read straight from a
  zero-padded input at tap offsets (k = input channel x tap): the GEMM of im2col without writing
  the im2col matrix.
* ``copy_row`` / ``fill_row``: the row moves of the padding copies, without array views (a view
  costs an NRT incref/decref pair; on a 7x7 plane the views of a row-by-row copy cost more than
  the copy: 237 vs ~60 ns per plane, measured).

Every output element is one fma chain in tap (k) order, the same whatever its channel: channels
with equal weights and inputs get bitwise equal results, as on the GEMM paths. Output vectors that
run past a row's end store junk into the next row(s), which a later store of the same kernel
overwrites; a vector that would run past the plane (or the caller's region) is stored masked
(AMD's masked stores are slow: ~5x on a 7x7 depthwise plane).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from jitort.kernels.convgemm import PANEL_VECS, tile_codegen
from jitort.kernels.vecir import VB, Vec, lanes

SLACK = 80  # elements a padded input needs past its end: full vectors read up to 2*VL beyond a row
# Vectors of output columns per implicit-GEMM tile (MR rows x IMPLICIT_VECS vectors, a row's tail on
# fewer): the GEMM's register tile, 6 x 4 on AVX-512, 6 x 2 on AVX2.
IMPLICIT_VECS = PANEL_VECS


def _dw_u(isz: int) -> int:
    return 8 if isz == 4 else 6  # independent accumulators per group (of 16 vector registers)


@njit(nogil=True, error_model="numpy", cache=True)
def dw_plan(OH, OW, ldq, sx, isz):  # type: ignore[no-untyped-def]
    """The plane-invariant part of ``dw_plane``'s loop, computed once per convolution:
    [R, nch, nrg, then per accumulator k: row offset, vector column, x offset, out offset].

    Output rows are cut into vectors of VL columns (the last one partly junk) and taken U at a
    time: R = U // nvr whole rows per group when rows are narrow (nvr <= U vectors), else one row
    and nch column chunks of U vectors."""
    VL = VB // isz
    U = 8 if isz == 4 else 6
    nvr = (OW + VL - 1) // VL
    narrow = nvr <= U
    R = U // nvr if narrow else 1
    nch = 1 if narrow else (nvr + U - 1) // U
    plan = np.empty(3 + 4 * U, np.int64)
    plan[0], plan[1], plan[2] = R, nch, (OH + R - 1) // R
    dr, vc = 0, 0
    for k in range(U):
        plan[3 + 4 * k] = dr
        plan[4 + 4 * k] = vc
        plan[5 + 4 * k] = dr * ldq + vc * VL * sx
        plan[6 + 4 * k] = dr * OW + vc * VL
        vc += 1
        if narrow and vc >= nvr:
            vc = 0
            dr += 1
    return plan


@intrinsic
def dw_plane(typingctx, plan, xp, xo, ldq, toff, w, wo, out, oo, OH, OW, bias, fin, lo, hi, sx, sw):  # type: ignore[no-untyped-def]
    """out[oo + oh*OW + ow] = fin(sum_t w[wo + t] * xp[xo + oh*ldq + toff[t] + ow*sx]) for oh < OH,
    ow < OW: a depthwise convolution of one plane read from a zero-padded copy ``xp`` (ldq: the
    flat distance between output rows, toff[t]: tap t's offset, sx: the column stride; xp needs
    ``SLACK * sx`` elements past its end). plan: ``dw_plan(OH, OW, ldq, sx, itemsize)``. The sum
    runs in t order; fin as in convgemm's tile with ``bias`` the scalar bias. U output vectors
    (``dw_plan``) accumulate at once, so that U independent fma chains hide the fma latency
    whether rows are 7 or 112 wide. sw (literal): the column read of ``Vec.read`` (1, 2, 0)."""
    if not all(isinstance(t, types.Array) for t in (plan, xp, toff, w, out)) or xp.dtype != out.dtype:
        return None
    if not isinstance(sw, types.IntegerLiteral):
        return None
    dt = out.dtype
    if w.dtype != dt or bias != dt or lo != dt or hi != dt:
        return None
    SW = sw.literal_value
    sig = types.void(plan, xp, xo, ldq, toff, w, wo, out, oo, OH, OW, bias, fin, lo, hi, sx, sw)
    U = _dw_u(dt.bitwidth // 8)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        planv, xpv, xo_, ldq_, toffv, wv, wo_, outv, oo_, OH_, OW_, bias_, fin_, lo_, hi_, sx_, _ = args
        b = builder
        v = Vec(context, builder, dt)
        VL = v.VL
        pl = v.data(signature.args[0], planv)
        ld = lambda k: b.load(b.gep(pl, [v.c(k)]))  # noqa: E731
        xbase = v.data(signature.args[1], xpv, xo_)
        tptr = v.data(signature.args[4], toffv)
        T = context.make_array(signature.args[4])(context, builder, toffv).nitems
        wbase = v.data(signature.args[5], wv, wo_)
        obase = v.data(signature.args[7], outv, oo_)
        finish = v.epilogue(fin_, lo_, hi_)
        bb = v.splat(bias_)
        R, nch, nrg = ld(0), ld(1), ld(2)
        drs = [ld(3 + 4 * k) for k in range(U)]
        vcs = [ld(4 + 4 * k) for k in range(U)]
        dxs = [ld(5 + 4 * k) for k in range(U)]
        dos = [ld(6 + 4 * k) for k in range(U)]
        plane = b.mul(OH_, OW_)
        accs = [cgutils.alloca_once_value(b, v.zero) for _ in range(U)]
        with cgutils.for_range(b, nrg) as rgl, cgutils.for_range(b, nch) as chl:
            r0 = b.mul(rgl.index, R)
            c0 = b.mul(chl.index, v.c(U))
            gx = b.add(b.mul(r0, ldq_), b.mul(b.mul(c0, v.c(VL)), sx_))
            go = b.add(b.mul(r0, OW_), b.mul(c0, v.c(VL)))
            xps, ops, valid, lefts = [], [], [], []
            for k in range(U):
                col = b.mul(b.add(c0, vcs[k]), v.c(VL))
                ok = b.and_(b.icmp_signed("<", b.add(r0, drs[k]), OH_), b.icmp_signed("<", col, OW_))
                valid.append(ok)
                lefts.append(b.sub(OW_, col))
                xps.append(v.at(xbase, b.select(ok, b.add(gx, dxs[k]), v.c(0))))
                ops.append(b.add(go, dos[k]))
                b.store(v.zero, accs[k])
            with cgutils.for_range(b, T) as tap:
                wvec = v.splat(b.load(v.at(wbase, tap.index)))
                off = b.load(v.at(tptr, tap.index))
                for k in range(U):
                    b.store(v.fma(wvec, v.read(v.at(xps[k], off), SW, sx_), b.load(accs[k])), accs[k])
            for k in range(U):
                with b.if_then(valid[k], likely=True):
                    res = finish(b.load(accs[k]), bb)
                    p = v.at(obase, ops[k])
                    with b.if_else(b.icmp_signed(">", b.add(ops[k], v.c(VL)), plane), likely=False) as (part, full):
                        with full:
                            v.store(res, p)
                        with part:
                            v.mstore(res, p, v.below(lefts[k]))
        return context.get_dummy_value()

    return sig, codegen


def conv_tile_cols(dt):  # type: ignore[no-untyped-def]
    raise NotImplementedError  # @njit only: see the overload


@overload(conv_tile_cols)
def _conv_tile_cols_ov(dt):  # type: ignore[no-untyped-def]
    """Output columns of a full ``conv_tile`` for the dtype (``IMPLICIT_VECS`` vectors)."""
    if not isinstance(dt, types.DType):
        return None
    n = IMPLICIT_VECS * lanes(dt.dtype.bitwidth // 8)
    return lambda dt: n


@intrinsic
def conv_tile(typingctx, a, ao, xp, xo, toff, ko, K, sx, out, oo, ldo, mrows, ncols, spill, init, bias, bo, fin,  # type: ignore[no-untyped-def]
              lo, hi, sw, nv, ao2, rt):
    """out[oo + r*ldo + j] = fin(C0 + sum_k a[ao + k*MR + r] * xp[xo + toff[ko + k] + j*sx]) for
    r < mrows, j < ncols, k < K: convgemm's tile (``tile_codegen``: C0, spill, fin) with B[k, j]
    read from a zero-padded input at tap offsets (j: nv vectors of output columns of one row; xp
    needs ``SLACK * sx`` elements past its end). sw (literal): ``Vec.read``'s column read; nv
    (literal): ``IMPLICIT_VECS`` (``conv_tile_cols``) or fewer for a row's short tail. rt (literal):
    row tiles, 1 or 2 (rows MR + r read a[ao2 + k*MR + r], mrows up to 2 MR)."""
    if not all(isinstance(t, types.Array) for t in (a, xp, toff, out, bias)):
        return None
    if not all(isinstance(t, types.IntegerLiteral) for t in (sw, nv, rt)):
        return None
    dt = out.dtype
    if a.dtype != dt or xp.dtype != dt or bias.dtype != dt or lo != dt or hi != dt:
        return None
    SW, NV, RT = sw.literal_value, nv.literal_value, rt.literal_value
    sig = types.void(a, ao, xp, xo, toff, ko, K, sx, out, oo, ldo, mrows, ncols, spill, init, bias, bo, fin, lo, hi,
                     sw, nv, ao2, rt)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        (av, ao_, xpv, xo_, toffv, ko_, K_, sx_, outv, oo_, ldo_, mrows_, ncols_, spill_, init_, biasv, bo_, fin_,
         lo_, hi_, _, _, ao2_, _) = args
        v = Vec(context, builder, dt)
        xbase = v.data(signature.args[2], xpv, xo_)
        tptr = v.data(signature.args[4], toffv, ko_)
        vstep = builder.mul(v.c(v.VL), sx_)  # elements of xp between the tile's column vectors

        def b_vecs(k: ir.Value) -> list[ir.Value]:
            p = v.at(xbase, builder.load(v.at(tptr, k)))
            return [v.read(p if j == 0 else v.at(p, builder.mul(v.c(j), vstep)), SW, sx_) for j in range(NV)]

        tile_codegen(v, NV, v.data(signature.args[0], av, ao_), K_, b_vecs, v.data(signature.args[8], outv, oo_),
                     ldo_, mrows_, ncols_, spill_, init_, v.data(signature.args[15], biasv, bo_), fin_, lo_, hi_,
                     v.data(signature.args[0], av, ao2_) if RT == 2 else None)
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always", nogil=True, error_model="numpy")
def conv_tile_nv(a, ao, xp, xo, toff, ko, K, out, oo, ldo, mrows, ncols, spill, init, bias, bo, fin, lo, hi, nv, ao2,
                 two):  # type: ignore[no-untyped-def]
    """``conv_tile`` (unit column stride) with a run-time vector count nv (1 to ``IMPLICIT_VECS``;
    one literal instance each) and, with ``two``, two row tiles (nv <= 2; rows MR + r from ao2)."""
    if two:
        if nv == 2:
            conv_tile(a, ao, xp, xo, toff, ko, K, 1, out, oo, ldo, mrows, ncols, spill, init, bias, bo, fin, lo, hi,
                      1, 2, ao2, 2)
        else:
            conv_tile(a, ao, xp, xo, toff, ko, K, 1, out, oo, ldo, mrows, ncols, spill, init, bias, bo, fin, lo, hi,
                      1, 1, ao2, 2)
    elif nv == 4:
        conv_tile(a, ao, xp, xo, toff, ko, K, 1, out, oo, ldo, mrows, ncols, spill, init, bias, bo, fin, lo, hi,
                  1, 4, ao, 1)
    elif nv == 3:
        conv_tile(a, ao, xp, xo, toff, ko, K, 1, out, oo, ldo, mrows, ncols, spill, init, bias, bo, fin, lo, hi,
                  1, 3, ao, 1)
    elif nv == 2:
        conv_tile(a, ao, xp, xo, toff, ko, K, 1, out, oo, ldo, mrows, ncols, spill, init, bias, bo, fin, lo, hi,
                  1, 2, ao, 1)
    else:
        conv_tile(a, ao, xp, xo, toff, ko, K, 1, out, oo, ldo, mrows, ncols, spill, init, bias, bo, fin, lo, hi,
                  1, 1, ao, 1)


# --- row moves without array views ----------------------------------------------------------------

@intrinsic
def copy_row(typingctx, dst, do, src, so, n, step):  # type: ignore[no-untyped-def]
    """dst.flat[do + i] = src.flat[so + i*step] for i < n (C-contiguous arrays of one dtype): vector
    moves and an overlapping or scalar tail for step 1 (no masked store), a scalar loop otherwise."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array)) or dst.dtype != src.dtype:
        return None
    if dst.layout != "C" or src.layout != "C":
        return None
    dt = dst.dtype
    sig = types.void(dst, do, src, so, n, step)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        dv, do_, sv, so_, n_, step_ = args
        b = builder
        v = Vec(context, builder, dt)
        d, s = v.data(signature.args[0], dv, do_), v.data(signature.args[2], sv, so_)
        with b.if_else(b.icmp_signed("==", step_, v.c(1)), likely=True) as (unit, strided):
            with unit:
                nv = b.sdiv(n_, v.c(v.VL))
                with cgutils.for_range(b, nv) as loop:
                    off = b.mul(loop.index, v.c(v.VL))
                    v.store(v.load(v.at(s, off)), v.at(d, off))
                left = b.sub(n_, b.mul(nv, v.c(v.VL)))
                with b.if_then(b.icmp_signed(">", left, v.c(0))):
                    with b.if_else(b.icmp_signed(">", nv, v.c(0))) as (over, scalar):
                        with over:
                            o = b.sub(n_, v.c(v.VL))
                            v.store(v.load(v.at(s, o)), v.at(d, o))
                        with scalar:
                            with cgutils.for_range(b, left) as loop:
                                b.store(b.load(v.at(s, loop.index)), v.at(d, loop.index))
            with strided:
                with cgutils.for_range(b, n_) as loop:
                    b.store(b.load(v.at(s, b.mul(loop.index, step_))), v.at(d, loop.index))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def fill_row(typingctx, dst, do, n, value):  # type: ignore[no-untyped-def]
    """dst.flat[do:do+n] = value (C-contiguous array; value of its dtype)."""
    if not isinstance(dst, types.Array) or value != dst.dtype or dst.layout != "C":
        return None
    sig = types.void(dst, do, n, value)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        dv, do_, n_, val_ = args
        d = builder.gep(context.make_array(signature.args[0])(context, builder, dv).data, [do_])
        with cgutils.for_range(builder, n_) as loop:
            builder.store(val_, builder.gep(d, [loop.index]))
        return context.get_dummy_value()

    return sig, codegen
