"""Shared pieces of the convolution kernels: the epilogue (bias + activation on a row) and the
zero-padding copies of input planes.

The epilogue loops are one small function per activation: a loop per function vectorises
reliably, whereas one function holding all eight loops left some of them scalar (measured: Clip
0.94 vs 0.14 ns/element). They work in place on a C-contiguous row: with separate dst/src arrays
LLVM's runtime overlap check fails for in-place calls (dst is src) and runs the scalar loop, and a
layout-'A' view is not vectorised at all (unknown stride); measured 4x on a 12.7K-element Relu.
"""
from __future__ import annotations

from numba import njit, types
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic, overload

from jitort.kernels.convdirect import copy_row, fill_row
from jitort.kernels.fastmath import sigmoid_f32, sigmoid_f64

EP = dict(nogil=True, error_model="numpy")


@intrinsic
def _contig(typingctx, a):  # type: ignore[no-untyped-def]
    """The same 1-D view typed C-contiguous (the caller guarantees a unit stride)."""
    if not isinstance(a, types.Array) or a.ndim != 1:
        return None
    rt = a.copy(layout="C")

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return impl_ret_borrowed(context, builder, rt, args[0])
    return rt(a), codegen


@njit(**EP)
def _ep_none(a, bias):  # type: ignore[no-untyped-def]
    for i in range(a.shape[0]):
        a[i] = a[i] + bias


@njit(**EP)
def _ep_relu(a, bias, zero):  # type: ignore[no-untyped-def]
    for i in range(a.shape[0]):
        v = a[i] + bias
        a[i] = zero if v < zero else v


@njit(**EP)
def _ep_clip(a, bias, lo, hi):  # type: ignore[no-untyped-def]
    for i in range(a.shape[0]):
        v = a[i] + bias
        v = lo if v < lo else v
        a[i] = hi if v > hi else v


@njit(**EP)
def _ep_leaky(a, bias, zero, alpha):  # type: ignore[no-untyped-def]
    for i in range(a.shape[0]):
        v = a[i] + bias
        a[i] = v if v >= zero else alpha * v


@njit(**EP)
def _ep_hardsigmoid(a, bias, zero, one, alpha, beta):  # type: ignore[no-untyped-def]
    for i in range(a.shape[0]):
        v = alpha * (a[i] + bias) + beta
        v = zero if v < zero else v
        a[i] = one if v > one else v


@njit(**EP)
def _ep_hardswish(a, bias, zero, one, sixth, half):  # type: ignore[no-untyped-def]
    for i in range(a.shape[0]):
        v = a[i] + bias
        h = v * sixth + half
        h = zero if h < zero else h
        h = one if h > one else h
        a[i] = v * h


def _ep_sigmoid(a, bias):  # type: ignore[no-untyped-def]
    raise NotImplementedError  # @njit only: see the overload


def _ep_silu(a, bias):  # type: ignore[no-untyped-def]
    raise NotImplementedError  # @njit only: see the overload


# Chosen per dtype at typing time; the loops call fastmath's functions directly (inlined at Numba
# IR level) because a call through a generic wrapper was not inlined and the loop stayed scalar.
@overload(_ep_sigmoid)
def _ep_sigmoid_ov(a, bias):  # type: ignore[no-untyped-def]
    if a.dtype == types.float32:
        def f32(a, bias):  # type: ignore[no-untyped-def]
            for i in range(a.shape[0]):
                a[i] = sigmoid_f32(a[i] + bias)
        return f32

    def f64(a, bias):  # type: ignore[no-untyped-def]
        for i in range(a.shape[0]):
            a[i] = sigmoid_f64(a[i] + bias)
    return f64


@overload(_ep_silu)
def _ep_silu_ov(a, bias):  # type: ignore[no-untyped-def]
    if a.dtype == types.float32:
        def f32(a, bias):  # type: ignore[no-untyped-def]
            for i in range(a.shape[0]):
                v = a[i] + bias
                a[i] = v * sigmoid_f32(v)
        return f32

    def f64(a, bias):  # type: ignore[no-untyped-def]
        for i in range(a.shape[0]):
            v = a[i] + bias
            a[i] = v * sigmoid_f64(v)
    return f64


@njit(**EP)
def _epilogue_basic(row, bias, act, prm):  # type: ignore[no-untyped-def]
    """row[i] = act(row[i] + bias) in place for act 0-2 (none, Relu, Clip); row: a 1-D view with unit
    stride. NaN propagates as in the elementwise ops. prm = [alpha, beta, 0, 1, 1/6, 1/2] in the
    compute dtype (typed constants, no float64 promotion)."""
    a = _contig(row)
    if act == 0:
        _ep_none(a, bias)
    elif act == 1:
        _ep_relu(a, bias, prm[2])
    else:
        _ep_clip(a, bias, prm[0], prm[1])


@njit(**EP)
def _epilogue_all(row, bias, act, prm):  # type: ignore[no-untyped-def]
    """``_epilogue_basic`` for any activation code (3-7: LeakyRelu, HardSigmoid, HardSwish,
    Sigmoid, SiLU)."""
    if act <= 2:
        _epilogue_basic(row, bias, act, prm)
        return
    a = _contig(row)
    if act == 3:
        _ep_leaky(a, bias, prm[2], prm[0])
    elif act == 4:
        _ep_hardsigmoid(a, bias, prm[2], prm[3], prm[0], prm[1])
    elif act == 5:
        _ep_hardswish(a, bias, prm[2], prm[3], prm[4], prm[5])
    elif act == 6:
        _ep_sigmoid(a, bias)
    else:
        _ep_silu(a, bias)


def epilogue_kind(act: int) -> bool | None:
    """The ``ep`` argument of the conv kernels for activation code ``act``: None when act is none,
    Relu or Clip, else True. Its *type* picks what ``epilogue_row`` compiles: the other activations
    (Sigmoid and SiLU with their exp, LeakyRelu, HardSigmoid, HardSwish) cost ~1.5 s of cold
    compile in every kernel that links them, and most CNNs never use them."""
    return None if act <= 2 else True


def epilogue_row(row, bias, act, prm, ep):  # type: ignore[no-untyped-def]
    """row = act(row + bias) in place (``_epilogue_basic`` / ``_epilogue_all``); ep from ``epilogue_kind``."""
    raise NotImplementedError("jitted code only")


@overload(epilogue_row, jit_options=EP)
def _epilogue_ov(row, bias, act, prm, ep):  # type: ignore[no-untyped-def]
    if isinstance(ep, types.NoneType):
        return lambda row, bias, act, prm, ep: _epilogue_basic(row, bias, act, prm)
    return lambda row, bias, act, prm, ep: _epilogue_all(row, bias, act, prm)


@njit(inline="always", nogil=True, error_model="numpy")
def ow_range(off, sw, W, OW):  # type: ignore[no-untyped-def]
    """[lo, hi): the output columns ow whose input column ow*sw + off lies in [0, W)."""
    lo = 0 if off >= 0 else (-off + sw - 1) // sw
    hi = (W - off + sw - 1) // sw if W - off > 0 else 0
    if hi > OW:
        hi = OW
    if lo > hi:
        lo = hi
    return lo, hi


@njit(**EP)
def share(n, part, nparts):  # type: ignore[no-untyped-def]
    """[lo, hi): part ``part`` of ``nparts`` balanced shares of n units."""
    return n * part // nparts, n * (part + 1) // nparts


@njit(**EP)
def pad_phases(x, so, D, H, W, xp, Dp, Hp, Wq, pd, ph, pw, sw, zero, interior_only):  # type: ignore[no-untyped-def]
    """xp.flat[((px*Dp + z)*Hp + y)*Wq + u] = x.flat[so + ((z-pd)*H + y-ph)*W + u*sw + px-pw], zero
    outside the plane: the zero-padded plane split into its sw column phases, so that a conv of
    column stride sw reads contiguous runs (phase (e*dw) % sw, column offset (e*dw) // sw); with
    sw == 1, the zero-padded plane itself (pads may be negative). interior_only: xp's zeros are
    already there (same geometry)."""
    for px in range(sw):
        lo, hi = ow_range(px - pw, sw, W, Wq)
        for z in range(Dp):
            iz = z - pd
            for y in range(Hp):
                iy = y - ph
                row = ((px * Dp + z) * Hp + y) * Wq
                if iz < 0 or iz >= D or iy < 0 or iy >= H or hi <= lo:
                    if not interior_only:
                        fill_row(xp, row, Wq, zero)
                    continue
                if not interior_only:
                    fill_row(xp, row, lo, zero)
                    fill_row(xp, row + hi, Wq - hi, zero)
                copy_row(xp, row + lo, x, so + (iz * H + iy) * W + lo * sw + px - pw, hi - lo, sw)


@njit(**EP)
def _ez_add(a, z):  # type: ignore[no-untyped-def]
    for i in range(a.shape[0]):
        a[i] = a[i] + z[i]


@njit(**EP)
def _ez_relu(a, z, zero):  # type: ignore[no-untyped-def]
    for i in range(a.shape[0]):
        v = a[i] + z[i]
        a[i] = zero if v < zero else v


@njit(**EP)
def _ez_clip(a, z, lo, hi):  # type: ignore[no-untyped-def]
    for i in range(a.shape[0]):
        v = a[i] + z[i]
        v = lo if v < lo else v
        a[i] = hi if v > hi else v


def epilogue_residual(row, zrow, act, prm, ep):  # type: ignore[no-untyped-def]
    """row = act(row + zrow) in place (the bias is already in row): the residual epilogue of a
    fused Conv + Add (+ activation); row and zrow 1-D views with unit stride, ep from
    ``epilogue_kind``."""
    raise NotImplementedError("jitted code only")


@overload(epilogue_residual, jit_options=EP)
def _epilogue_residual_ov(row, zrow, act, prm, ep):  # type: ignore[no-untyped-def]
    def impl(row, zrow, act, prm, ep):  # type: ignore[no-untyped-def]
        a = _contig(row)
        z = _contig(zrow)
        if act == 1:
            _ez_relu(a, z, prm[2])
        elif act == 2:
            _ez_clip(a, z, prm[0], prm[1])
        else:
            _ez_add(a, z)
            if act > 2:
                epilogue_row(row, prm[2], act, prm, ep)
    return impl
