"""ConvTranspose: per group a GEMM col = W^T x (convgemm's, on W^T packed at compile time), then
col2im adds the columns into the output, blocked over input rows so that the column tile stays in
cache. Geometry follows onnxruntime (``convtranspose_geometry``)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numba import njit

from jitort.errors import Fail, InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels.conv_setup import as5d, attrs_norm, compute_dtype, geometry_array, im2col_rows_jit
from jitort.kernels.convgemm import BBLOCK, gemm_packed, pack_weights
from jitort.kernels.convutil import EP, ow_range
from jitort.kernels.registry import Call, Ref, default_call, lookup, op

_KW = dict(cache=True, nogil=True, error_model="numpy")

# x [N, C, D, H, W]; wt [group, packed Mg*K x Cg]; out [N, M, OD, OH, OW] (initialised with the bias)


@njit(**_KW)
def _convt(x, D, H, W, wt, b, out, geo):  # type: ignore[no-untyped-def]
    """x [N, C, D*H*W]; per input-row block: col = W^T[g] @ x[:, block] (convgemm's GEMM on W^T
    packed per group), then col2im."""
    N, C = x.shape[0], x.shape[1]
    M, OD, OH, OW = out.shape[1], out.shape[2], out.shape[3], out.shape[4]
    group, kd, kh, kw = geo[0], geo[1], geo[2], geo[3]
    sd, sh, sw, dd, dh, dw, pd, ph, pw = geo[4], geo[5], geo[6], geo[7], geo[8], geo[9], geo[10], geo[11], geo[12]
    Cg = C // group
    Mg = M // group
    KK = kd * kh * kw
    R = D * H
    zero = np.zeros(1, x.dtype)[0]
    rows = im2col_rows_jit(Mg * KK, W, R)  # the GEMM's columns per block, as in conv's im2col
    col = np.empty(Mg * KK * rows * W, x.dtype)
    bp = np.empty(BBLOCK, x.dtype)
    for m in range(M):
        for n in range(N):
            out[n, m] = b[m]
    los = np.empty(kw, np.int64)
    his = np.empty(kw, np.int64)
    for e in range(kw):
        # input columns iw whose output column iw*sw + e*dw - pw lies in [0, OW)
        los[e], his[e] = ow_range(e * dw - pw, sw, OW, W)
    for n in range(N):
        for g in range(group):
            for r0 in range(0, R, rows):
                r1 = min(R, r0 + rows)
                pb = (r1 - r0) * W
                colv = col[:Mg * KK * pb].reshape(Mg * KK, pb)
                gemm_packed(wt[g], 0, Mg * KK, Cg, x[n, g * Cg:(g + 1) * Cg, r0 * W:r1 * W], colv, b, 0, 0, zero,
                            zero, bp, 0, 0)
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


@njit(**EP)
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
    """ConvTranspose on pre-packed weights: wt = W^T [Mg*K, Cg] per group packed for ``gemm_packed``, b [M]
    in the compute dtype."""
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
        x5 = as5d(xc)
        _convt(xc.reshape(x5.shape[0], x5.shape[1], -1), x5.shape[2], x5.shape[3], x5.shape[4], wt, b,
               as5d(out), geometry_array(group, kernel, strides, dilations, begin))
    return out if out.dtype == x.dtype else out.astype(x.dtype)


def _pack_convt(W: np.ndarray, B: np.ndarray | None, group: int, cd: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    C, Mg = W.shape[0], W.shape[1]
    if group <= 0 or C % group:
        raise InvalidArgument(f"ConvTranspose: input channels {C} is not divisible by group {group}")
    Cg = C // group
    wt = pack_weights(np.ascontiguousarray(W.reshape(group, Cg, -1).transpose(0, 2, 1), cd).reshape(-1, Cg), group)
    b = np.zeros(Mg * group, cd) if B is None else np.ascontiguousarray(B.reshape(-1), cd)
    if b.shape != (Mg * group,):
        raise InvalidArgument(f"ConvTranspose: B must have shape [{Mg * group}], got {list(b.shape)}")
    return wt, b


def _convt_attrs(rank: int, kernel: Sequence[int], a: dict[str, Any]) -> dict[str, Any]:
    _, s, dl, p = attrs_norm(rank, kernel, a.get("strides"), a.get("dilations"), a.get("pads"))
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
    cd = compute_dtype(X.dtype, "ConvTranspose")
    attrs = _convt_attrs(X.ndim - 2, W.shape[2:], dict(auto_pad=auto_pad, dilations=dilations, group=group,
                                                       output_padding=output_padding, output_shape=output_shape,
                                                       pads=pads, strides=strides))
    wt, b = _pack_convt(W, B, attrs["group"], cd)
    return convtranspose_packed(X, wt, b, w_shape=tuple(W.shape), **attrs)


def _lower_convt(node: Node, g: Graph) -> Call:
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
    cd = compute_dtype(xt.dtype, "ConvTranspose")
    attrs = _convt_attrs(W.ndim - 2, W.shape[2:], node.attrs)
    wt, b = _pack_convt(W, B, attrs["group"], cd)
    return Call(convtranspose_packed, [Ref(node.inputs[0]), wt, b],
                dict(w_shape=tuple(int(d) for d in W.shape), **attrs))
