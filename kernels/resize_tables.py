"""Resampling tables: for one resized axis, the source index and weight of every tap
(``axis_table``: nearest, linear, cubic, and their antialiased forms), in onnxruntime's float32
coordinate arithmetic; plus the cubic weights (``cubic_coeffs``) and the saturating store of
interpolated values (``store_interpolated``) that GridSample (``kernels/gridsample.py``) shares with
Resize (``kernels/resize.py``).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from jitort.errors import InvalidArgument


def round_half_away(v: np.ndarray) -> np.ndarray:
    """C's std::round, exact for float32 inputs (float64 has room for the +0.5)."""
    a = np.asarray(v, np.float64)
    return np.copysign(np.floor(np.abs(a) + 0.5), a)


def _coords(coord: str, in_len: int, out_len: int, length: float, scale: float, roi: tuple[float, float],
            cdt: type) -> np.ndarray:
    """Source coordinate of every output index, in onnxruntime's arithmetic (``cdt`` = float32).

    ``length`` is the spec's length_resized: ``scale * in_len`` unfloored when the scales input
    gave the output size (onnx/onnx#2462), else ``out_len``. Only align_corners reads it:
    onnxruntime divides by ``out_len - 1`` there, so it departs from the spec's downsampling cases."""
    f = cdt
    o = np.arange(out_len, dtype=f)
    s = f(scale)
    half = f(0.5)
    if coord == "half_pixel":
        return (o + half) / s - half
    if coord == "asymmetric":
        return o / s
    if coord == "pytorch_half_pixel":
        return (o + half) / s - half if out_len > 1 else np.zeros(out_len, f)
    if coord == "tf_half_pixel_for_nn":
        return (o + half) / s
    if coord == "align_corners":
        return o * f(in_len - 1) / f(f(length) - f(1)) if out_len > 1 else np.zeros(out_len, f)
    if coord == "tf_crop_and_resize":
        r0, r1 = f(roi[0]), f(roi[1])
        if out_len > 1:
            return r0 * f(in_len - 1) + (o * (r1 - r0) * f(in_len - 1)) / f(out_len - 1)
        return np.full(out_len, f(0.5 * (float(r0) + float(r1)) * (in_len - 1)), f)
    if coord == "half_pixel_symmetric":
        adjustment = f(out_len) / (s * f(in_len))
        offset = f(in_len) / f(2) * (f(1) - adjustment)
        return (np.float64(offset) + (o.astype(np.float64) + 0.5) / np.float64(s) - 0.5).astype(f)
    raise InvalidArgument(f"Resize: unknown coordinate_transformation_mode '{coord}'")


def _nearest_index(xo: np.ndarray, mode: str, downsample: bool) -> np.ndarray:
    if mode in ("round_prefer_floor", "round_prefer_ceil"):
        f = xo.dtype.type
        frac = xo - np.floor(xo)
        # float32 coordinates: a fraction within 1e-6 of .5 is a tie (a true tie computed with
        # rounding error), as onnxruntime decides; float64 ones compare exactly.
        tie = np.abs(frac - f(0.5)) <= f(1e-6) if xo.dtype == np.float32 else frac == f(0.5)
        if mode == "round_prefer_floor":
            return np.where(tie, np.floor(xo), round_half_away(xo))
        return np.where(tie, np.ceil(xo), round_half_away(xo))
    if mode == "floor":
        return np.floor(xo)
    if mode == "ceil":
        return np.ceil(xo)
    if mode == "simple":  # Resize-10 / Upsample: no nearest_mode attribute yet
        return np.ceil(xo) if downsample else np.trunc(xo)
    raise InvalidArgument(f"Resize: unknown nearest_mode '{mode}'")


def cubic_coeffs(s: np.ndarray, A: np.floating) -> np.ndarray:
    """Keys' cubic convolution weights for taps floor(x) - 1 .. floor(x) + 2 (s = x - floor(x))."""
    f = s.dtype.type
    one, two, three, four, five, eight = (f(v) for v in (1, 2, 3, 4, 5, 8))
    s1, t, t1 = s + one, one - s, two - s
    return np.stack([((A * s1 - five * A) * s1 + eight * A) * s1 - four * A,
                     ((A + two) * s - (A + three)) * s * s + one,
                     ((A + two) * t - (A + three)) * t * t + one,
                     ((A * t1 - five * A) * t1 + eight * A) * t1 - four * A], axis=1)


def _aa_filter(v: np.ndarray, cubic: bool, A: np.floating) -> np.ndarray:
    f = v.dtype.type
    a = np.abs(v)
    if not cubic:
        return np.where(a < f(1), f(1) - a, f(0))
    inner = ((A + f(2)) * a - (A + f(3))) * a * a + f(1)
    outer = (((a - f(5)) * a + f(8)) * a - f(4)) * A
    return np.where(a < f(1), inner, np.where(a < f(2), outer, f(0))).astype(v.dtype)


@lru_cache(maxsize=512)
def axis_table(mode: str, in_len: int, out_len: int, length: float, scale: float, coord: str,
                roi: tuple[float, float],
                nearest_mode: str, cubic_a: float, exclude: bool, antialias: bool, cdt_name: str
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Tap-major (indices [taps, out], weights [taps, out] or None for nearest, extrapolation mask or None)."""
    idx, w, mask = _axis_table_rows(mode, in_len, out_len, length, scale, coord, roi, nearest_mode, cubic_a,
                                    exclude, antialias, cdt_name)
    return (np.ascontiguousarray(idx.T, dtype=np.int64),
            None if w is None else np.ascontiguousarray(w.T), mask)


def _axis_table_rows(mode: str, in_len: int, out_len: int, length: float, scale: float, coord: str,
                     roi: tuple[float, float],
                     nearest_mode: str, cubic_a: float, exclude: bool, antialias: bool, cdt_name: str
                     ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    f = np.dtype(cdt_name).type
    mask = None
    if mode == "nearest" or not antialias:
        xo = _coords(coord, in_len, out_len, length, scale, roi, f)
        if coord == "tf_crop_and_resize":
            mask = (xo < 0) | (xo > f(in_len - 1))
    if mode == "nearest":
        i = _nearest_index(xo, nearest_mode, scale < 1)
        return np.clip(i, 0, in_len - 1).astype(np.int64).reshape(-1, 1), None, mask
    if antialias:
        idx, w = _aa_table(mode == "cubic", in_len, out_len, length, scale, coord, roi, f(cubic_a), exclude, f)
        if coord == "tf_crop_and_resize":
            xo = _coords(coord, in_len, out_len, length, scale, roi, f)
            mask = (xo < 0) | (xo > f(in_len - 1))
        return idx, w, mask
    if mode == "linear":
        xc = np.clip(xo, f(0), f(in_len - 1))
        i1 = np.minimum(xc.astype(np.int64), in_len - 1)
        i2 = np.minimum(i1 + 1, in_len - 1)
        w2 = np.abs(xc - i1.astype(f))  # weight of i2
        w1 = np.abs(xc - i2.astype(f))  # weight of i1
        same = i1 == i2
        w1[same] = f(0.5)
        w2[same] = f(0.5)
        return np.stack([i1, i2], axis=1), np.stack([w1, w2], axis=1), mask
    # cubic
    fl = np.floor(xo)
    s = (xo - fl).astype(f)
    taps = fl.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
    w = cubic_coeffs(s, f(cubic_a))
    if exclude:
        w = np.where((taps < 0) | (taps >= in_len), f(0), w)
        w = (w / w.sum(axis=1, keepdims=True, dtype=f)).astype(f)
    return np.clip(taps, 0, in_len - 1), w.astype(f), mask


def _aa_table(cubic: bool, in_len: int, out_len: int, length: float, scale: float, coord: str,
              roi: tuple[float, float], A: np.floating, exclude: bool, f: type) -> tuple[np.ndarray, np.ndarray]:
    """Antialiased taps: the filter stretched by 1/scale when downsampling (onnxruntime's
    upsample_aa; out-of-range taps are clamped to the edge unless ``exclude_outside``)."""
    support_size = f(4.0 if cubic else 2.0)
    inv = f(1) / f(scale)
    support = support_size * f(0.5) * inv if inv >= 1 else support_size * f(0.5)
    filt_scale = f(1) / inv if inv >= 1 else f(1)
    if inv == 1:
        center = np.arange(out_len, dtype=f) + f(0.5)
    else:
        center = _coords(coord, in_len, out_len, length, scale, roi, f) + f(0.5)
    c64 = center.astype(np.float64)
    lo = np.floor(c64 - float(support) + 0.5).astype(np.int64)
    hi = np.floor(c64 + float(support) + 0.5).astype(np.int64)
    if exclude:
        lo, hi = np.maximum(lo, 0), np.minimum(hi, in_len)
    K = max(int((hi - lo).max(initial=1)), 1)
    taps = lo[:, None] + np.arange(K)[None, :]
    valid = taps < hi[:, None]
    arg = (taps.astype(f) - center[:, None] + f(0.5)) * filt_scale
    w = np.where(valid, _aa_filter(arg.astype(f), cubic, A), f(0)).astype(f)
    total = w.sum(axis=1, keepdims=True, dtype=f)
    w = np.where((total != 0) & (total != 1), w / np.where(total == 0, f(1), total), w).astype(f)
    return np.clip(taps, 0, in_len - 1), w


def store_interpolated(y: np.ndarray, dt: np.dtype, rounding: bool) -> np.ndarray:
    """Cast interpolated values back: integers truncate (C casts) or round (antialias) and saturate."""
    if y.dtype == dt:
        return y
    if dt.kind in "iu":
        info = np.iinfo(dt)
        y = round_half_away(y) if rounding else np.trunc(y)
        return np.clip(y, info.min, info.max).astype(dt)
    return y.astype(dt)
