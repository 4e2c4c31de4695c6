"""Quantised convolution: ConvInteger and QLinearConv (opset 10).

Both reduce to one exact integer convolution: x and w are centred on their zero points
(x - x_zero_point, w - w_zero_point per tensor or per output channel), the input is zero-padded
in that centred domain (a padded pixel equals the zero point, as onnxruntime pads), and im2col +
GEMM sums the products. The centred integers are held in float32 and the GEMM is BLAS sgemm over
chunks of the reduction: |x - x_zero_point| <= 255, and a chunk holds at most 2**24 / (255 *
max|w - w_zero_point|) taps (>= 258), so every partial sum BLAS forms, in any order, is an integer
below 2**24 and exact in float32. The chunk sums are added as integers into the int32 output,
which wraps as an int32 accumulator does. This is exact, ~5x faster here than an integer
multiply-accumulate loop, and has no int16 saturation (onnxruntime's u8s8 path saturates on
extreme inputs, see tests/test_qconv.py). ConvInteger returns that sum. QLinearConv adds the
int32 bias and requantises as onnxruntime does: the per-channel multiplier x_scale * w_scale[m] /
y_scale is formed in float32, the sum converted to float32 and multiplied by it, rounded half to
even, offset by y_zero_point and saturated to the output type (uint8 or int8).

Geometry (output size, SAME_* padding) comes from kernels/conv.py. Every spatial rank (1-D, 2-D,
3-D) runs through one kernel viewed as 3-D, so a model pays one compile. When W (and its zero
point) is a constant the ``lower`` hooks centre and pack it once at compile time.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import numpy as np
from numba import njit

from jitort import memory
from jitort.errors import Fail, InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels import qconv_lanes as V
from jitort.kernels import qconv_layout as L
from jitort.kernels.conv_setup import attrs_norm, pad3, conv_geometry
from jitort.kernels.gemm import default_isa, host_features
from jitort.kernels.registry import Call, Ref, default_call, lookup, op
from jitort.kernels.threads import parts_for, run_parts, scratch

_KW = dict(cache=True, nogil=True, error_model="numpy")
# im2col column tile: at most 256K float32 (1 MiB), GEMMs of ~512 columns (as kernels/conv.py).
_BLOCK = 1 << 18
_EXACT = 1 << 24  # float32 represents every integer up to 2**24 exactly
_COLS = 512
_RANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


# --- kernels -------------------------------------------------------------------------------------
# geo: [group, kd, kh, kw, sd, sh, sw, dd, dh, dw]

@njit(**_KW)
def _qconv(xp, wpk, K, bias, out, geo, OD, OH, OW):  # type: ignore[no-untyped-def]
    """xp [N, C, Dp, Hp, Wp] float32 holding the centred, padded integers; wpk [nch, M, kc] the centred
    weights [M, K] cut into nch zero-padded chunks of kc taps (``pack_weights``); out [N, M, P] int32.
    Per column block: im2col (rows K..nch*kc zero), one sgemm per chunk, integer accumulation."""
    N, C = xp.shape[0], xp.shape[1]
    nch, M, kc = wpk.shape
    KP = nch * kc
    group, kd, kh, kw = geo[0], geo[1], geo[2], geo[3]
    sd, sh, sw, dd, dh, dw = geo[4], geo[5], geo[6], geo[7], geo[8], geo[9]
    Cg = C // group
    Mg = M // group
    R = OD * OH
    rows = (_COLS + OW - 1) // OW
    rows = min(rows, max(1, _BLOCK // max(1, KP * OW)), R)
    if rows < 1:
        rows = 1
    col = np.empty(KP * rows * OW, np.float32)
    acc = np.empty(Mg * rows * OW, np.float32)
    for n in range(N):
        for g in range(group):
            for r0 in range(0, R, rows):
                r1 = min(R, r0 + rows)
                pb = (r1 - r0) * OW
                colv = col[:KP * pb].reshape(KP, pb)
                k = 0
                for c in range(Cg):
                    xc = xp[n, g * Cg + c]
                    for a in range(kd):
                        for b in range(kh):
                            for e in range(kw):
                                dst = colv[k]
                                off = e * dw
                                for r in range(r0, r1):
                                    od = r // OH
                                    oh = r - od * OH
                                    src = xc[od * sd + a * dd, oh * sh + b * dh]
                                    d = dst[(r - r0) * OW:(r - r0 + 1) * OW]
                                    if sw == 1:
                                        s1 = src[off:off + OW]
                                        for j in range(OW):
                                            d[j] = s1[j]
                                    else:
                                        for j in range(OW):
                                            d[j] = src[off + j * sw]
                                k += 1
                for kk in range(K, KP):
                    z = colv[kk]
                    for j in range(pb):
                        z[j] = 0
                av = acc[:Mg * pb].reshape(Mg, pb)
                for ch in range(nch):
                    np.dot(wpk[ch, g * Mg:(g + 1) * Mg], colv[ch * kc:(ch + 1) * kc], av)
                    for mm in range(Mg):
                        m = g * Mg + mm
                        o = out[n, m, r0 * OW:r1 * OW]
                        sv = av[mm]
                        if ch == 0:
                            bm = np.int64(bias[m])
                            for j in range(pb):
                                o[j] = np.int64(sv[j]) + bm
                        else:
                            for j in range(pb):
                                o[j] += np.int64(sv[j])


@njit(**_KW)
def _requantise(acc, scale, zp, lo, hi, out):  # type: ignore[no-untyped-def]
    """out[n, m, p] = saturate(rint(float32(acc) * scale[m]) + zp): the clamp happens in float
    (lo - zp .. hi - zp are integers, so clamping before rounding is the same), which also keeps
    huge or NaN products away from the float -> int conversion."""
    N, M, P = acc.shape
    for m in range(M):
        s = scale[m]
        flo = np.float32(lo - zp)
        fhi = np.float32(hi - zp)
        for n in range(N):
            a = acc[n, m]
            o = out[n, m]
            for p in range(P):
                v = np.float32(a[p]) * s
                if not v >= flo:
                    v = flo
                if v > fhi:
                    v = fhi
                o[p] = np.int32(np.rint(v)) + zp


# --- helpers -------------------------------------------------------------------------------------

def _scalar(v: np.ndarray | None, op_name: str, what: str) -> int:
    if v is None:
        return 0
    if v.size != 1:
        raise InvalidArgument(f"{op_name}: {what} must be a scalar (per-tensor), got shape {list(v.shape)}")
    return int(v.reshape(-1)[0])


def _check_int8(v: np.ndarray, op_name: str, what: str) -> None:
    if v.dtype not in _RANGES:
        raise InvalidArgument(f"{op_name}: {what} must be uint8 or int8, got {v.dtype}")


def pack_weights(w: np.ndarray, w_zp: np.ndarray | None, op_name: str) -> np.ndarray:
    """(w - w_zero_point) as float32 [nch, M, kc]: the centred weights [M, K] in chunks of kc taps
    (the last zero-padded) such that kc * 255 * max|w - w_zero_point| <= 2**24; the zero point is a
    scalar or one value per output channel."""
    _check_int8(w, op_name, "w")
    if w.ndim < 3:
        raise InvalidArgument(f"{op_name}: w must have rank >= 3, got shape {list(w.shape)}")
    M = w.shape[0]
    w2 = w.reshape(M, -1).astype(np.int32)
    if w_zp is not None:
        if w_zp.dtype != w.dtype:
            raise InvalidArgument(f"{op_name}: w_zero_point type {w_zp.dtype} differs from w's {w.dtype}")
        if w_zp.size == 1:
            w2 -= np.int32(w_zp.reshape(-1)[0])
        elif w_zp.ndim == 1 and w_zp.size == M:
            w2 -= w_zp.astype(np.int32).reshape(M, 1)
        else:
            raise InvalidArgument(f"{op_name}: w_zero_point must be a scalar or 1-D of length M={M}, got shape "
                                  f"{list(w_zp.shape)}")
    K = w2.shape[1]
    bound = 255 * max(1, int(np.abs(w2).max(initial=0)))
    kc = max(1, min(K, _EXACT // bound))
    nch = -(-K // kc) if K else 1
    kc = -(-K // nch) if K else 1  # even chunks: less zero padding
    wp = np.zeros((M, nch * kc), np.float32)
    wp[:, :K] = w2
    return np.ascontiguousarray(wp.reshape(M, nch, kc).transpose(1, 0, 2))


def _check_geometry(x: np.ndarray, w_shape: tuple[int, ...], group: int, kernel_shape: Sequence[int] | None,
                    op_name: str) -> None:
    if x.ndim != len(w_shape) or x.ndim < 3:
        raise InvalidArgument(f"{op_name}: x {list(x.shape)} and w {list(w_shape)} must have the same rank >= 3")
    if x.ndim > 5:
        raise OrtNotImplemented(f"{op_name}: jitort supports 1-D, 2-D and 3-D convolutions, got x of rank {x.ndim}")
    if group <= 0 or x.shape[1] != w_shape[1] * group:
        raise InvalidArgument(f"{op_name}: input channels C={x.shape[1]} is not equal to kernel channels "
                              f"{w_shape[1]} * group {group}")
    if w_shape[0] % group:
        raise InvalidArgument(f"{op_name}: output channels M={w_shape[0]} is not divisible by group {group}")
    if kernel_shape and tuple(kernel_shape) != tuple(w_shape[2:]):
        raise Fail(f"{op_name}: kernel_shape {list(kernel_shape)} is not compatible with w shape {list(w_shape)}")


def int_conv(x: np.ndarray, x_zp: int, wpk: np.ndarray, bias: np.ndarray | None, w_shape: tuple[int, ...], *,
             auto_pad: str, group: int, strides: tuple[int, ...], dilations: tuple[int, ...],
             pads: tuple[int, ...], op_name: str) -> np.ndarray:
    """sum over the window of (x - x_zp) * w (+ bias), int32 [N, M, *out]; wpk from ``pack_weights``."""
    _check_geometry(x, w_shape, group, None, op_name)
    kernel = tuple(w_shape[2:])
    out_sp, begin = conv_geometry(tuple(x.shape[2:]), kernel, strides, dilations, pads, auto_pad, op_name)
    if any(b < 0 for b in begin):
        raise OrtNotImplemented(f"{op_name}: negative pads {list(pads)} are not supported")
    N, C, M = x.shape[0], x.shape[1], w_shape[0]
    out = np.empty(memory.check(op_name, (N, M) + tuple(out_sp), np.int32), np.int32)  # pads: the model's
    if out.size == 0:
        return out
    b = np.zeros(M, np.int32) if bias is None else bias
    # padded extent: whatever the last window reaches (SAME_* and ceil-free NOTSET alike)
    sp = x.shape[2:]
    need = tuple(max(sp[d] + begin[d], (out_sp[d] - 1) * strides[d] + (kernel[d] - 1) * dilations[d] + 1)
                 for d in range(len(sp)))
    xp = np.zeros(memory.check(op_name, (N, C) + need, np.float32), np.float32)
    inner = tuple(slice(begin[d], begin[d] + sp[d]) for d in range(len(sp)))
    np.subtract(x, np.float32(x_zp), out=xp[(slice(None), slice(None)) + inner], dtype=np.float32)
    xp5 = xp.reshape((N, C) + (1,) * (5 - xp.ndim) + need)
    geo = np.array((group,) + pad3(kernel, 1) + pad3(strides, 1) + pad3(dilations, 1), np.int64)
    od, oh, ow = pad3(out_sp, 1)
    _qconv(xp5, wpk, int(np.prod(w_shape[1:])), b, out.reshape(N, M, -1), geo, od, oh, ow)
    return out


def _geometry_kwargs(rank: int, kernel: Sequence[int], a: dict[str, Any]) -> dict[str, Any]:
    _, s, dl, p = attrs_norm(rank, kernel, a.get("strides"), a.get("dilations"), a.get("pads"))
    return dict(auto_pad=a.get("auto_pad", "NOTSET"), group=int(a.get("group", 1)), strides=s, dilations=dl, pads=p)


# --- ConvInteger ---------------------------------------------------------------------------------

def convinteger_packed(x: np.ndarray, x_zero_point: np.ndarray | None, wpk: np.ndarray, *,
                       w_shape: tuple[int, ...], **geo: Any) -> np.ndarray:
    _check_int8(x, "ConvInteger", "x")
    if x_zero_point is not None and x_zero_point.dtype != x.dtype:
        raise InvalidArgument(f"ConvInteger: x_zero_point type {x_zero_point.dtype} differs from x's {x.dtype}")
    return int_conv(x, _scalar(x_zero_point, "ConvInteger", "x_zero_point"), wpk, None, w_shape,
                    op_name="ConvInteger", **geo)


@op("ConvInteger", since=10, lower=lambda node, g: _lower_convinteger(node, g))
def ConvInteger(x: np.ndarray, w: np.ndarray, x_zero_point: np.ndarray | None = None,
                w_zero_point: np.ndarray | None = None, *, auto_pad: str, dilations: Sequence[int] | None = None,
                group: int, kernel_shape: Sequence[int] | None = None, pads: Sequence[int] | None = None,
                strides: Sequence[int] | None = None) -> np.ndarray:
    """Exact int32 convolution of (x - x_zero_point) and (w - w_zero_point)."""
    _check_geometry(x, w.shape, group, kernel_shape, "ConvInteger")
    geo = _geometry_kwargs(x.ndim - 2, w.shape[2:], dict(auto_pad=auto_pad, dilations=dilations, group=group,
                                                         pads=pads, strides=strides))
    return convinteger_packed(x, x_zero_point, pack_weights(w, w_zero_point, "ConvInteger"),
                              w_shape=tuple(w.shape), **geo)


def _lower_convinteger(node: Node, g: Graph) -> Call:
    ins = list(node.inputs) + [""] * (4 - len(node.inputs))
    w = g.const(ins[1])
    wz = g.const(ins[3]) if ins[3] else None
    if w is None or (ins[3] and wz is None) or w.ndim < 3:
        return default_call(lookup(node.op_type, node.domain, node.version, node.name), node, g)
    ks = node.attrs.get("kernel_shape")
    if ks and tuple(ks) != tuple(w.shape[2:]):
        raise Fail(f"ConvInteger node '{node.name}': kernel_shape {list(ks)} is not compatible with w shape "
                   f"{list(w.shape)}")
    wpk = pack_weights(w, wz, "ConvInteger")
    return Call(convinteger_packed, [Ref(ins[0]), Ref(ins[2]) if ins[2] else None, wpk],
                dict(w_shape=tuple(int(d) for d in w.shape), **_geometry_kwargs(w.ndim - 2, w.shape[2:], node.attrs)))


# --- QLinearConv ---------------------------------------------------------------------------------

def _out_scales(x_scale: np.ndarray, w_scale: np.ndarray, y_scale: np.ndarray, M: int) -> np.ndarray:
    """x_scale * w_scale[m] / y_scale in float32, in onnxruntime's order of operations."""
    for v, what in ((x_scale, "x_scale"), (y_scale, "y_scale")):
        if v.size != 1:
            raise InvalidArgument(f"QLinearConv: {what} must be a scalar, got shape {list(v.shape)}")
    ws = np.asarray(w_scale, np.float32).reshape(-1)
    if ws.size != 1 and (w_scale.ndim != 1 or ws.size != M):
        raise InvalidArgument(f"QLinearConv: w_scale must be a scalar or 1-D of length M={M}, got shape "
                              f"{list(w_scale.shape)}")
    xs = np.float32(x_scale.reshape(-1)[0])
    ys = np.float32(y_scale.reshape(-1)[0])
    s = (xs * ws) / ys
    return np.ascontiguousarray(np.broadcast_to(s, (M,)), np.float32)


def _bias(B: np.ndarray | None, M: int) -> np.ndarray | None:
    if B is None:
        return None
    if B.dtype != np.int32 or B.size != M or B.ndim != 1:
        raise InvalidArgument(f"QLinearConv: B must be int32 of shape [{M}], got {B.dtype} {list(B.shape)}")
    return np.ascontiguousarray(B)


def qlinearconv_packed(x: np.ndarray, x_scale: np.ndarray, x_zero_point: np.ndarray | None, wpk: np.ndarray,
                       w_scale: np.ndarray, y_scale: np.ndarray, y_zero_point: np.ndarray | None,
                       B: np.ndarray | None = None, *, w_shape: tuple[int, ...], **geo: Any) -> np.ndarray:
    _check_int8(x, "QLinearConv", "x")
    if x_zero_point is not None and x_zero_point.dtype != x.dtype:
        raise InvalidArgument(f"QLinearConv: x_zero_point type {x_zero_point.dtype} differs from x's {x.dtype}")
    M = w_shape[0]
    scale = _out_scales(x_scale, w_scale, y_scale, M)
    out_dt = y_zero_point.dtype if y_zero_point is not None else x.dtype
    if out_dt not in _RANGES:
        raise InvalidArgument(f"QLinearConv: y_zero_point must be uint8 or int8, got {out_dt}")
    yzp = _scalar(y_zero_point, "QLinearConv", "y_zero_point")
    acc = int_conv(x, _scalar(x_zero_point, "QLinearConv", "x_zero_point"), wpk, _bias(B, M), w_shape,
                   op_name="QLinearConv", **geo)
    y = np.empty(acc.shape, out_dt)
    if y.size:
        lo, hi = _RANGES[np.dtype(out_dt)]
        n = acc.shape[0]
        _requantise(acc.reshape(n, M, -1), scale, yzp, lo, hi, y.reshape(n, M, -1))
    return y


@op("QLinearConv", since=10, lower=lambda node, g: _lower_qlinearconv(node, g))
def QLinearConv(x: np.ndarray, x_scale: np.ndarray, x_zero_point: np.ndarray | None, w: np.ndarray,
                w_scale: np.ndarray, w_zero_point: np.ndarray | None, y_scale: np.ndarray,
                y_zero_point: np.ndarray | None, B: np.ndarray | None = None, *, auto_pad: str,
                dilations: Sequence[int] | None = None, group: int, kernel_shape: Sequence[int] | None = None,
                pads: Sequence[int] | None = None, strides: Sequence[int] | None = None) -> np.ndarray:
    """Quantised convolution: exact int32 accumulation, requantised per tensor or per output channel."""
    _check_geometry(x, w.shape, group, kernel_shape, "QLinearConv")
    geo = _geometry_kwargs(x.ndim - 2, w.shape[2:], dict(auto_pad=auto_pad, dilations=dilations, group=group,
                                                         pads=pads, strides=strides))
    return qlinearconv_packed(x, x_scale, x_zero_point, pack_weights(w, w_zero_point, "QLinearConv"), w_scale,
                              y_scale, y_zero_point, B, w_shape=tuple(w.shape), **geo)


def _lanes_geometry(node: Node, g: Graph, w: np.ndarray, wz: np.ndarray | None) -> dict[str, Any] | None:
    """The geometry keywords of a QLinearConv node with constant weights where qconv_lanes.py's kernel
    takes it (``int8_lanes``, explicit pads, ``qconv_lanes.applies``), else None."""
    geo = _geometry_kwargs(w.ndim - 2, w.shape[2:], node.attrs)
    xt = g.type_of(node.inputs[0])
    if not (int8_lanes() and xt.dtype is not None and geo["auto_pad"] == "NOTSET"
            and V.applies(np.dtype(xt.dtype), w, wz, geo["group"], geo["strides"], geo["dilations"], geo["pads"][:2])):
        return None
    return geo


def _lanes_call(node: Node, g: Graph, w: np.ndarray, wz: np.ndarray | None, nhwc: int) -> Call | None:
    """The qconv_lanes call of a QLinearConv node with constant weights, where it applies."""
    geo = _lanes_geometry(node, g, w, wz)
    if geo is None:
        return None
    wl, wsum = V.pack(w)
    r = [Ref(n) if n else None for n in list(node.inputs) + [""] * (9 - len(node.inputs))]
    return Call(qlinearconv_lanes, [r[0], r[1], r[2], wl, wsum, r[4], r[6], r[7], r[8]],
                dict(w_shape=tuple(int(d) for d in w.shape), nhwc=nhwc, **geo))


def _lower_qlinearconv(node: Node, g: Graph) -> Call:
    ins = list(node.inputs) + [""] * (9 - len(node.inputs))
    w = g.const(ins[3])
    wz = g.const(ins[5]) if ins[5] else None
    if w is None or (ins[5] and wz is None) or w.ndim < 3:
        return default_call(lookup(node.op_type, node.domain, node.version, node.name), node, g)
    ks = node.attrs.get("kernel_shape")
    if ks and tuple(ks) != tuple(w.shape[2:]):
        raise Fail(f"QLinearConv node '{node.name}': kernel_shape {list(ks)} is not compatible with w shape "
                   f"{list(w.shape)}")
    lanes = _lanes_call(node, g, w, wz, 0)
    if lanes is not None:
        return lanes
    r = [Ref(n) if n else None for n in ins]
    wpk = pack_weights(w, wz, "QLinearConv")
    return Call(qlinearconv_packed, [r[0], r[1], r[2], wpk, r[4], r[6], r[7], r[8]],
                dict(w_shape=tuple(int(d) for d in w.shape), **_geometry_kwargs(w.ndim - 2, w.shape[2:], node.attrs)))


# --- QLinearConv on integer vector tiles (qconv_lanes.py) ----------------------------------------------

def int8_lanes() -> bool:
    """Whether the lowering packs weights for qconv_lanes.py: the host has AVX2 (the plan runs on
    the tiles ``tile_kind`` names where it runs)."""
    return "avx2" in host_features()


def tile_kind() -> str:
    """The tiles this process runs qconv_lanes.py's kernel on: "vnni" (AVX-512 VNNI, unless
    ``JITORT_ISA=avx2``), "avx2", or "portable" (integer loops)."""
    feats = host_features()
    if default_isa() == "avx512" and "avx512vnni" in feats:
        return "vnni"
    return "avx2" if "avx2" in feats else "portable"


@lru_cache(maxsize=256)
def _lanes_plan(x_shape: tuple[int, ...], w_shape: tuple[int, ...], strides: tuple[int, ...],
                dilations: tuple[int, ...], pads: tuple[int, ...], auto_pad: str
                ) -> tuple[tuple[int, ...], tuple[int, ...], int, int, int, np.ndarray]:
    """Per input shape, once: (output plane, begin pads, phase plane Hq x Wq, padded channels Cp, the
    k offsets) of ``qlinearconv_lanes`` (the offsets are shared: the kernel only reads them)."""
    M, C, KH, KW = w_shape
    out_sp, begin = conv_geometry(tuple(x_shape[2:]), (KH, KW), strides, dilations, pads, auto_pad, "QLinearConv")
    s = strides[0]
    Hq, Wq = L.grid(out_sp[0], out_sp[1], KH, KW, s)
    Cp = -(-C // 4) * 4
    return tuple(out_sp), tuple(begin), Hq, Wq, Cp, L.offsets(Cp // 4, KH, KW, Hq, Wq, Cp, s)


def qlinearconv_lanes(x: np.ndarray, x_scale: np.ndarray, x_zero_point: np.ndarray | None, wl: np.ndarray,
                      wsum: np.ndarray, w_scale: np.ndarray, y_scale: np.ndarray, y_zero_point: np.ndarray | None,
                      B: np.ndarray | None = None, *, w_shape: tuple[int, ...], auto_pad: str, group: int,
                      strides: tuple[int, ...], dilations: tuple[int, ...], pads: tuple[int, ...], nhwc: int = 0
                      ) -> np.ndarray:
    """QLinearConv with weights packed by ``qconv_lanes.pack`` (the lowering checked ``applies``);
    ``nhwc``: x and the output are NHWC (``QLinearConvNhwc``, jitort/passes/quant_nhwc.py)."""
    name = "QLinearConvNhwc" if nhwc else "QLinearConv"
    _check_int8(x, name, "x")
    if x_zero_point is not None and x_zero_point.dtype != x.dtype:
        raise InvalidArgument(f"{name}: x_zero_point type {x_zero_point.dtype} differs from x's {x.dtype}")
    xv = np.moveaxis(x, 3, 1) if nhwc and x.ndim == 4 else x  # the NCHW view: shapes and checks
    _check_geometry(xv, w_shape, group, None, name)
    M, C, KH, KW = w_shape
    scale = _out_scales(x_scale, w_scale, y_scale, M)
    out_dt = np.dtype(y_zero_point.dtype if y_zero_point is not None else x.dtype)
    if out_dt not in _RANGES:
        raise InvalidArgument(f"{name}: y_zero_point must be uint8 or int8, got {out_dt}")
    bias = _bias(B, M)
    (OH, OW), begin, Hq, Wq, Cp, off = _lanes_plan(tuple(xv.shape), tuple(w_shape), strides, dilations, pads, auto_pad)
    N, s = x.shape[0], strides[0]
    Mp = -(-M // 32) * 32
    n = s * s * Hq * Wq * Cp
    nb = n + V.R * Cp + 64  # a tile may read up to R positions past the planes
    # sizes that pads (a model's attributes) decide: checked before allocating, as conv_packed does
    memory.check(name, (N, OH, OW, M), out_dt)
    memory.check(name, (nb + OH * OW * Mp,), np.uint8)
    y = np.empty((N, OH, OW, M) if nhwc else (N, M, OH, OW), out_dt)
    if y.size == 0:
        return y
    flip = 128 if x.dtype == np.int8 else 0
    zx = _scalar(x_zero_point, name, "x_zero_point") + flip  # as the u8 the kernel reads
    comp = np.zeros(Mp, np.int32)
    comp[:M] = (np.zeros(M, np.int64) if bias is None else bias.astype(np.int64)) - zx * wsum
    sc = np.zeros(Mp, np.float32)
    sc[:M] = scale
    lo, hi = _RANGES[out_dt]
    zy = np.float32(_scalar(y_zero_point, name, "y_zero_point"))
    # this thread's reused buffer (a fresh one this size is page-faulted on every call, and at
    # 2 threads the faults of the parts contended: the call took longer than at 1 thread)
    direct = nhwc and Mp == M  # the tiles write the output itself
    work = scratch(nb + (0 if direct else OH * OW * Mp), np.dtype(np.uint8))
    buf = work[:nb]
    buf[n:] = 0
    xp = buf[:n].reshape(s * s, Hq, Wq, Cp)
    o = None if direct else work[nb:nb + OH * OW * Mp].reshape(OH * OW, Mp)
    flops = 2.0 * M * OH * OW * C * KH * KW / 4  # int8: ~4x the float32 rate
    kind = tile_kind()
    wk = V.weights(kind, wl)
    nparts = parts_for(V.units(M, OH, OW, Wq, kind), flops)
    xb = x.view(np.uint8)
    yb = y.view(np.uint8).reshape((N, OH * OW, M) if nhwc else (N, M, OH * OW))
    # the layout copies split too from _COPY_PART bytes (serial, they were a third of a 2-thread call)
    copy_parts = parts_for(Hq * s, float(n + OH * OW * Mp), _COPY_PART)
    # an NHWC u8 input that needs no padding is the kernel's grid itself (1x1 convs without stride: a
    # copy of the whole input saved); a tile reads past the grid only when the plane has < R positions
    as_is = (nhwc and flip == 0 and s == 1 and Cp == C and (Hq, Wq) == tuple(x.shape[1:3])
             and (OH - 1) * Wq + OW >= V.R and x.flags.c_contiguous)
    for i in range(N):
        if as_is:
            src = xb[i].reshape(-1)
        else:
            _split(L.nhwc_pad_nhwc if nhwc else L.nhwc_pad, (xb[i], xp, begin[0], begin[1], s, zx, flip), copy_parts)
            src = buf
        oi = yb[i] if direct else o
        args = (src, Cp, off, wk, comp, sc, zy, np.float32(lo), np.float32(hi), Wq, OH, OW, M, oi, V.Q8, sc)
        V.run(kind, args, nparts)
        if not direct:
            _split(L.to_nhwc if nhwc else L.to_nchw, (o, yb[i], M), copy_parts)
    return y


qlinearconv_lanes.own_threads = True  # type: ignore[attr-defined]  # jitort.compiled.Artifact.own_threads

_COPY_PART = 1 << 17  # bytes of layout copy worth a part


def _split(fn: Any, args: tuple[Any, ...], nparts: int) -> None:
    """fn(*args, part, nparts) for every part, on the pool's threads when nparts > 1."""
    if nparts > 1:
        run_parts(lambda k: fn(*args, k, nparts), nparts)
    else:
        fn(*args, 0, 1)


# --- QLinearConv on NHWC tensors (jitort/passes/quant_nhwc.py's) -----------------------------------------

def lanes_nhwc_applies(node: Node, g: Graph) -> bool:
    """Whether a QLinearConv node can run as ``QLinearConvNhwc``: constant weights, a 4-D input, and
    qconv_lanes's kernel taking it on this host."""
    ins = list(node.inputs) + [""] * (9 - len(node.inputs))
    w = g.const(ins[3])
    wz = g.const(ins[5]) if ins[5] else None
    xt = g.type_of(ins[0])
    if w is None or (ins[5] and wz is None) or w.ndim != 4 or xt.rank != 4:
        return False
    ks = node.attrs.get("kernel_shape")
    return (not ks or tuple(ks) == tuple(w.shape[2:])) and _lanes_geometry(node, g, w, wz) is not None


def _lower_nhwc(node: Node, g: Graph) -> Call:
    ins = list(node.inputs) + [""] * (9 - len(node.inputs))
    w, wz = g.const(ins[3]), (g.const(ins[5]) if ins[5] else None)
    call = None if w is None else _lanes_call(node, g, w, wz, 1)
    if call is None:
        raise Fail(f"{node.describe()}: the NHWC form needs constant int8 weights qconv_lanes.py's kernel takes")
    return call


@op("QLinearConvNhwc", since=1, domain="jitort", lower=_lower_nhwc)
def QLinearConvNhwc(*args: Any, **kwargs: Any) -> np.ndarray:
    """QLinearConv on NHWC x and y (jitort/passes/quant_nhwc.py writes it; only its lowering runs)."""
    raise Fail("QLinearConvNhwc runs through its lowering only")
