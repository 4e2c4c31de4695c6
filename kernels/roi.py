"""Region-of-interest pooling: MaxRoiPool and RoiAlign.

Both follow onnxruntime's arithmetic: MaxRoiPool rounds the scaled roi corners half away from zero
and sizes its bins in float32; RoiAlign precomputes the bilinear corners and weights of every sample
point once per roi, shares them across channels, and computes in the input dtype. The compute
dtype (float16 -> float32) and the max identity come from kernels/pool_geometry.py.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numba import njit

from jitort.errors import InvalidArgument
from jitort.kernels.pool_geometry import lowest
from jitort.kernels.registry import FLOAT, op

_KW = dict(cache=True, nogil=True, error_model="numpy")


# --- MaxRoiPool ----------------------------------------------------------------------------------

@njit(**_KW)
def _max_roi_pool(x, rois, out, floor_val):  # type: ignore[no-untyped-def]
    """rois [R, 5] int64: batch, x1, y1, x2, y2 already scaled and rounded."""
    N, C, H, W = x.shape
    R, _, PH, PW = out.shape
    zero = floor_val - floor_val
    for n in range(R):
        b = rois[n, 0]
        sw_, sh_, ew_, eh_ = rois[n, 1], rois[n, 2], rois[n, 3], rois[n, 4]
        bh = np.float32(max(eh_ - sh_ + 1, 1)) / np.float32(PH)
        bw = np.float32(max(ew_ - sw_ + 1, 1)) / np.float32(PW)
        for c in range(C):
            xc = x[b, c]
            for ph in range(PH):
                hs = min(max(int(np.floor(np.float32(ph) * bh)) + sh_, 0), H)
                he = min(max(int(np.ceil(np.float32(ph + 1) * bh)) + sh_, 0), H)
                for pw in range(PW):
                    ws = min(max(int(np.floor(np.float32(pw) * bw)) + sw_, 0), W)
                    we = min(max(int(np.ceil(np.float32(pw + 1) * bw)) + sw_, 0), W)
                    if he <= hs or we <= ws:
                        out[n, c, ph, pw] = zero
                        continue
                    m = floor_val
                    for h in range(hs, he):
                        for w in range(ws, we):
                            v = xc[h, w]
                            m = m if v < m else v
                    out[n, c, ph, pw] = m


@op("MaxRoiPool", since=1, compute=FLOAT)
def MaxRoiPool(X: np.ndarray, rois: np.ndarray, *, pooled_shape: Sequence[int], spatial_scale: float,
               _compute: np.dtype) -> np.ndarray:
    """MaxRoiPool (opset 1, 22): roi corners scaled in float32 and rounded half away from zero, bins
    of float32 size, an empty bin is 0 (as onnxruntime)."""
    if X.ndim != 4 or rois.ndim != 2 or rois.shape[1] != 5:
        raise InvalidArgument(f"MaxRoiPool: expected X [N,C,H,W] and rois [R,5], got {list(X.shape)} and "
                              f"{list(rois.shape)}")
    if len(pooled_shape) != 2:
        raise InvalidArgument(f"MaxRoiPool: pooled_shape must have 2 values, got {list(pooled_shape)}")
    cd = _compute
    r = np.asarray(rois, np.float32)
    # float32 products rounded half away from zero, like C's round() in onnxruntime
    v = r[:, 1:] * np.float32(spatial_scale)
    ri = np.concatenate([r[:, :1].astype(np.int64),
                         (np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))).astype(np.int64)], axis=1)
    if ri.shape[0] and (ri[:, 0].min() < 0 or ri[:, 0].max() >= X.shape[0]):
        raise InvalidArgument(f"MaxRoiPool: roi batch index out of range [0, {X.shape[0]})")
    out = np.empty((rois.shape[0], X.shape[1], int(pooled_shape[0]), int(pooled_shape[1])), cd)
    if out.size:
        _max_roi_pool(np.ascontiguousarray(X, cd), np.ascontiguousarray(ri), out,
                      np.array(lowest(cd), cd)[()])
    return out.astype(X.dtype, copy=False)


# --- RoiAlign ------------------------------------------------------------------------------------

@njit(**_KW)
def _roi_align_k(x, rois, bidx, out, scale, sampling_ratio, mode_max, half_pixel):  # type: ignore[no-untyped-def]
    """onnxruntime's RoiAlign: per roi, precompute the 4 bilinear corners and weights of every
    sample point (shared by all channels), then average (or max) them per bin. Arithmetic stays in
    the input dtype T (``T(i)`` casts) like the C++ code."""
    N, C, H, W = x.shape
    R, _, PH, PW = out.shape
    T = x.dtype.type
    zero = scale - scale
    one = zero + 1
    half = one / 2
    off = half if half_pixel else zero
    for n in range(R):
        b = bidx[n]
        x0 = rois[n, 0] * scale - off
        y0 = rois[n, 1] * scale - off
        x1 = rois[n, 2] * scale - off
        y1 = rois[n, 3] * scale - off
        rw = x1 - x0
        rh = y1 - y0
        if not half_pixel:
            rw = max(rw, one)
            rh = max(rh, one)
        bh = rh / T(PH)
        bw = rw / T(PW)
        gh = sampling_ratio if sampling_ratio > 0 else int(np.ceil(rh / T(PH)))
        gw = sampling_ratio if sampling_ratio > 0 else int(np.ceil(rw / T(PW)))
        # a reversed roi (half_pixel keeps its negative size) has an empty sampling grid: bins are 0
        gh = max(gh, 0)
        gw = max(gw, 0)
        count = max(gh * gw, 1)
        ns = PH * PW * gh * gw
        pos = np.zeros((ns, 4), np.int64)
        wts = np.zeros((ns, 4), x.dtype)
        k = 0
        for ph in range(PH):
            for pw in range(PW):
                for iy in range(gh):
                    yy = y0 + T(ph) * bh + (T(iy) + half) * bh / T(gh)
                    for ix in range(gw):
                        xx = x0 + T(pw) * bw + (T(ix) + half) * bw / T(gw)
                        yv = yy
                        xv = xx
                        if yv < -one or yv > H or xv < -one or xv > W:
                            k += 1
                            continue
                        if yv <= 0:
                            yv = zero
                        if xv <= 0:
                            xv = zero
                        yl = int(yv)
                        xl = int(xv)
                        if yl >= H - 1:
                            yl = yh = H - 1
                            yv = T(yl)
                        else:
                            yh = yl + 1
                        if xl >= W - 1:
                            xl = xh = W - 1
                            xv = T(xl)
                        else:
                            xh = xl + 1
                        ly = yv - T(yl)
                        lx = xv - T(xl)
                        hy = one - ly
                        hx = one - lx
                        pos[k, 0] = yl * W + xl
                        pos[k, 1] = yl * W + xh
                        pos[k, 2] = yh * W + xl
                        pos[k, 3] = yh * W + xh
                        wts[k, 0] = hy * hx
                        wts[k, 1] = hy * lx
                        wts[k, 2] = ly * hx
                        wts[k, 3] = ly * lx
                        k += 1
        for c in range(C):
            xc = x[b, c].reshape(H * W)
            k = 0
            for ph in range(PH):
                for pw in range(PW):
                    acc = zero
                    first = True
                    for s in range(gh * gw):
                        v0 = wts[k, 0] * xc[pos[k, 0]]
                        v1 = wts[k, 1] * xc[pos[k, 1]]
                        v2 = wts[k, 2] * xc[pos[k, 2]]
                        v3 = wts[k, 3] * xc[pos[k, 3]]
                        if mode_max:
                            v = max(max(max(v0, v1), v2), v3)
                            if first or v > acc:
                                acc = v
                            first = False
                        else:
                            acc += v0 + v1 + v2 + v3
                        k += 1
                    out[n, c, ph, pw] = acc if mode_max else acc / T(count)


def _roi_align_run(X: np.ndarray, rois: np.ndarray, batch_indices: np.ndarray, mode: str, output_height: int,
               output_width: int, sampling_ratio: int, spatial_scale: float, ctm: str, cd: np.dtype) -> np.ndarray:
    if X.ndim != 4:
        raise InvalidArgument(f"RoiAlign: X must be 4-D [N,C,H,W], got {list(X.shape)}")
    if rois.ndim != 2 or rois.shape[1] != 4:
        raise InvalidArgument(f"RoiAlign: rois must have shape [num_rois, 4], got {list(rois.shape)}")
    if batch_indices.ndim != 1 or batch_indices.shape[0] != rois.shape[0]:
        raise InvalidArgument(f"RoiAlign: batch_indices must have shape [{rois.shape[0]}], got "
                              f"{list(batch_indices.shape)}")
    if mode not in ("avg", "max"):
        raise InvalidArgument(f"RoiAlign: mode must be 'avg' or 'max', got '{mode}'")
    if ctm not in ("half_pixel", "output_half_pixel"):
        raise InvalidArgument(f"RoiAlign: coordinate_transformation_mode must be half_pixel or output_half_pixel, "
                              f"got '{ctm}'")
    bi = np.ascontiguousarray(batch_indices, np.int64)
    if bi.size and (bi.min() < 0 or bi.max() >= X.shape[0]):
        raise InvalidArgument(f"RoiAlign: batch_indices out of range [0, {X.shape[0]})")
    out = np.empty((rois.shape[0], X.shape[1], int(output_height), int(output_width)), cd)
    if out.size:
        _roi_align_k(np.ascontiguousarray(X, cd), np.ascontiguousarray(rois, cd), bi, out,
                     np.array(spatial_scale, cd)[()], int(sampling_ratio), mode == "max", ctm == "half_pixel")
    return out.astype(X.dtype, copy=False)


@op("RoiAlign", since=10, compute=FLOAT)
def RoiAlign_10(X: np.ndarray, rois: np.ndarray, batch_indices: np.ndarray, *,
                coordinate_transformation_mode: str | None = None, mode: str, output_height: int,
                output_width: int, sampling_ratio: int, spatial_scale: float, _compute: np.dtype) -> np.ndarray:
    """RoiAlign-10: output_half_pixel coordinates, the only ones before opset 16 (a model that sets the
    opset-16 attribute anyway gets it, as from onnxruntime). Max mode takes the maximum of the
    weighted bilinear corners, as onnxruntime and the reference do."""
    return _roi_align_run(X, rois, batch_indices, mode, output_height, output_width, sampling_ratio, spatial_scale,
                          coordinate_transformation_mode or "output_half_pixel", _compute)


@op("RoiAlign", since=16, compute=FLOAT)
def RoiAlign(X: np.ndarray, rois: np.ndarray, batch_indices: np.ndarray, *, coordinate_transformation_mode: str,
             mode: str, output_height: int, output_width: int, sampling_ratio: int, spatial_scale: float,
             _compute: np.dtype) -> np.ndarray:
    """RoiAlign-16 (and 22): coordinate_transformation_mode chooses half_pixel or output_half_pixel."""
    return _roi_align_run(X, rois, batch_indices, mode, output_height, output_width, sampling_ratio, spatial_scale,
                          coordinate_transformation_mode, _compute)
