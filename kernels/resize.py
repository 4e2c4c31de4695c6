"""Resampling ops: Resize (10, 11, 13, 18, 19), Upsample (7, 9). The per-axis interpolation tables
are built by ``kernels/resize_tables.py``.

Resize is separable: every resized axis gets a table of source indices and weights (tap-major,
``[taps, out]``), built in numpy once per distinct geometry (the whole per-call plan is memoised on
shapes, scales/sizes/roi values and attributes), and kernels apply the tables. The common
case — the last two axes of an NCHW tensor — runs one fused kernel per call that interpolates each
plane horizontally into a small row buffer and then vertically with contiguous, vectorisable row
sums; any other set of axes is resized one axis at a time on ``[outer, axis, inner]`` views. Nearest
copies elements through an unsigned-integer view of the same width, so one kernel serves every dtype.

Coordinates follow onnxruntime's CPU kernel (float32 arithmetic in the same order; a fraction within
1e-6 of .5 is a round_prefer_* tie), so nearest picks the same pixels. Where onnxruntime departs from
the spec, the spec wins:
``tf_crop_and_resize`` applies its roi even on axes whose size does not change, a resize whose
output shape equals its input shape still interpolates (onnxruntime copies the input), and
``align_corners`` with the scales input divides by the unfloored ``scale * length - 1``
(onnxruntime: the integer output length - 1; they agree when ``scale * length`` is whole).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import njit

from jitort import memory
from jitort.errors import Fail, InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels.registry import op
from jitort.kernels.resize_tables import axis_table, round_half_away, store_interpolated

_JIT = dict(cache=True, nogil=True, error_model="numpy")
_F32 = np.float32
_UINT_VIEW = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


# --- kernels -------------------------------------------------------------------------------------

@njit(**_JIT)
def _nearest_2d(x, iy, ix, out):  # type: ignore[no-untyped-def]
    """out[p, oy, ox] = x[p, iy[oy], ix[ox]]; a row equal to the previous one is copied."""
    for p in range(x.shape[0]):
        for oy in range(out.shape[1]):
            r = iy[oy]
            if oy > 0 and iy[oy - 1] == r:
                for o in range(out.shape[2]):
                    out[p, oy, o] = out[p, oy - 1, o]
            else:
                for o in range(out.shape[2]):
                    out[p, oy, o] = x[p, r, ix[o]]


@njit(**_JIT)
def _interp_axis(x, idx, w, out):  # type: ignore[no-untyped-def]
    """x: [P, I, Q] -> out: [P, O, Q]; out[p, o, q] = sum_k w[k, o] * x[p, idx[k, o], q] (tap-major tables)."""
    K = idx.shape[0]
    O = out.shape[1]
    Q = x.shape[2]
    for p in range(x.shape[0]):
        if Q == 1:  # the last axis: gathers along the row, vectorised over outputs
            for o in range(O):
                out[p, o, 0] = w[0, o] * x[p, idx[0, o], 0]
            for k in range(1, K):
                for o in range(O):
                    out[p, o, 0] += w[k, o] * x[p, idx[k, o], 0]
            continue
        for o in range(O):
            w0 = w[0, o]
            r0 = idx[0, o]
            for q in range(Q):
                out[p, o, q] = w0 * x[p, r0, q]
            for k in range(1, K):
                wk = w[k, o]
                rk = idx[k, o]
                for q in range(Q):
                    out[p, o, q] += wk * x[p, rk, q]


@njit(**_JIT)
def _interp_2d(x, iy, wy, ix, wx, rows, out):  # type: ignore[no-untyped-def]
    """x: [P, IH, IW] -> out: [P, OH, OW] with tap-major tables iy/wy [KY, OH], ix/wx [KX, OW].

    Per plane, the input rows the vertical taps touch are interpolated horizontally into ``tmp``
    (gathers, vectorised over output columns); each output row is then a weighted sum of whole
    ``tmp`` rows (contiguous). Two-tap tables (linear) take a fused branch.
    """
    KY = iy.shape[0]
    KX = ix.shape[0]
    OW = out.shape[2]
    tmp = np.empty((x.shape[1], OW), out.dtype)
    i0 = ix[0]
    w0 = wx[0]
    for p in range(x.shape[0]):
        for r in rows:
            xr = x[p, r]
            tr = tmp[r]
            if KX == 2:
                i1 = ix[1]
                w1 = wx[1]
                for o in range(OW):
                    tr[o] = w0[o] * xr[i0[o]] + w1[o] * xr[i1[o]]
            else:
                for o in range(OW):
                    tr[o] = w0[o] * xr[i0[o]]
                for k in range(1, KX):
                    ik = ix[k]
                    wk = wx[k]
                    for o in range(OW):
                        tr[o] += wk[o] * xr[ik[o]]
        for oy in range(out.shape[1]):
            a0 = wy[0, oy]
            t0 = tmp[iy[0, oy]]
            orow = out[p, oy]
            if KY == 2:
                a1 = wy[1, oy]
                t1 = tmp[iy[1, oy]]
                for o in range(OW):
                    orow[o] = a0 * t0[o] + a1 * t1[o]
            else:
                for o in range(OW):
                    orow[o] = a0 * t0[o]
                for k in range(1, KY):
                    ak = wy[k, oy]
                    tk = tmp[iy[k, oy]]
                    for o in range(OW):
                        orow[o] += ak * tk[o]


@njit(**_JIT)
def _bilinear_2d(x, iy, wy, ix, wx, out):  # type: ignore[no-untyped-def]
    """Two-tap bilinear in onnxruntime's evaluation order (four weight products, summed left to
    right): integer outputs truncate, so the rounding order decides the result."""
    for p in range(x.shape[0]):
        for oy in range(out.shape[1]):
            y1 = iy[0, oy]
            y2 = iy[1, oy]
            dy2 = wy[0, oy]
            dy1 = wy[1, oy]
            for o in range(out.shape[2]):
                x1 = ix[0, o]
                x2 = ix[1, o]
                dx2 = wx[0, o]
                dx1 = wx[1, o]
                out[p, oy, o] = (dx2 * dy2 * x[p, y1, x1] + dx1 * dy2 * x[p, y1, x2]
                                 + dx2 * dy1 * x[p, y2, x1] + dx1 * dy1 * x[p, y2, x2])


# --- Resize ---------------------------------------------------------------------------------------

def _output_geometry(shape: tuple[int, ...], scales: np.ndarray | None, sizes: np.ndarray | None,
                     axes: list[int], policy: str, name: str, exact: bool = False) -> tuple[list[int], list[float]]:
    """Output shape and per-axis scales. Scales derived from sizes are float32 quotients, as
    onnxruntime computes them, unless ``exact`` (float64 data, which onnxruntime does not cover)."""
    r = len(shape)
    has_scales = scales is not None and scales.size > 0
    has_sizes = sizes is not None and sizes.size > 0
    if has_scales == has_sizes:
        raise InvalidArgument(f"{name}: exactly one of 'scales' and 'sizes' must be given (non-empty)")
    out, sc = list(shape), [1.0] * r
    if has_scales:
        s = np.asarray(scales, np.float32).reshape(-1)
        if s.size != len(axes):
            raise InvalidArgument(f"{name}: 'scales' has {s.size} values, expected {len(axes)} (rank or len(axes))")
        for a, v in zip(axes, s):
            if not np.isfinite(v):  # onnxruntime's class and words (ScalesValidation)
                raise Fail(f"{name}: Scale value must be finite, got {v} for axis {a}")
            if not v > 0:
                raise InvalidArgument(f"{name}: scales must be > 0, got {v} for axis {a}")
            sc[a] = float(v)
            out[a] = memory.finite_count(name, _F32(v) * _F32(shape[a]))
        return out, sc
    z = np.asarray(sizes, np.int64).reshape(-1)
    if z.size != len(axes):
        raise InvalidArgument(f"{name}: 'sizes' has {z.size} values, expected {len(axes)} (rank or len(axes))")
    for a, v in zip(axes, z):
        if v < 0:
            raise InvalidArgument(f"{name}: sizes must be >= 0, got {v} for axis {a}")
        if shape[a] == 0 and v != 0:
            raise InvalidArgument(f"{name}: input dim {a} is 0 but the requested output size is {v}")
        out[a] = int(v)
        sc[a] = (v / shape[a] if exact else float(_F32(v) / _F32(shape[a]))) if shape[a] else 1.0
    if policy != "stretch":
        if policy not in ("not_larger", "not_smaller"):
            raise InvalidArgument(f"{name}: unknown keep_aspect_ratio_policy '{policy}'")
        pick = min if policy == "not_larger" else max
        s = pick(sc[a] for a in axes)
        for a in axes:
            sc[a] = s
            prod = s * shape[a] if exact else _F32(s) * _F32(shape[a])
            out[a] = int(round_half_away(np.asarray(prod)))
    return out, sc


def _interpolation_dtype(dt: np.dtype, name: str) -> np.dtype:
    """The dtype linear and cubic modes interpolate in (a mode's policy, not the op's: nearest copies
    any dtype); 64-bit integers and uint32 need float64 to hold their values."""
    if dt == np.float64 or (dt.kind in "iu" and dt.itemsize == 8) or dt == np.uint32:
        return np.dtype(np.float64)
    if dt.kind in "fiu" or dt.name == "bfloat16":
        return np.dtype(np.float32)
    raise OrtNotImplemented(f"{name}: linear and cubic modes are not supported for dtype {dt} by jitort")


@dataclass(frozen=True)
class _Plan:
    """Everything about one Resize call that depends only on shapes and attributes (memoised)."""

    out_shape: tuple[int, ...]
    kind: str  # "empty", "copy", "nearest2d", "take", "bilinear2d", "interp2d", "axes"
    tables: tuple  # ((axis, idx, weights-in-cdt or None), ...) in application order
    rows: np.ndarray | None  # interp2d: the input rows the vertical taps read
    masks: tuple  # ((axis, bool mask), ...) for tf_crop_and_resize extrapolation
    cdt: np.dtype | None


def _array_key(a: np.ndarray | None) -> tuple | None:
    return None if a is None else (a.dtype.str, a.shape, a.tobytes())


def _resize(x: np.ndarray, roi: np.ndarray | None, scales: np.ndarray | None, sizes: np.ndarray | None, *,
            mode: str, coord: str, nearest_mode: str, cubic_coeff_a: float = -0.75, exclude_outside: int = 0,
            extrapolation_value: float = 0.0, antialias: int = 0, axes: list[int] | None = None,
            policy: str = "stretch", name: str = "Resize") -> np.ndarray:
    roi_key = _array_key(roi) if coord == "tf_crop_and_resize" else None
    plan = _plan(x.shape, x.dtype, _array_key(scales), _array_key(sizes), roi_key, mode, coord, nearest_mode,
                 float(cubic_coeff_a), bool(exclude_outside), bool(antialias), tuple(axes) if axes else None,
                 policy, name)
    memory.check(name, plan.out_shape, x.dtype)  # the plan is memoised: this call's limit applies
    if plan.kind == "empty":
        return np.zeros(plan.out_shape, x.dtype)
    if plan.kind == "copy":
        return x.copy()
    if plan.cdt is None:
        y = _apply_nearest(x, plan)
    else:
        y = store_interpolated(_apply_interp(x.astype(plan.cdt, copy=False), plan), x.dtype, bool(antialias))
    if plan.masks:
        m = np.zeros(plan.out_shape, bool)
        for a, mk in plan.masks:
            m |= mk.reshape([-1 if d == a else 1 for d in range(x.ndim)])
        y[m] = store_interpolated(np.array([extrapolation_value], np.float64), x.dtype, False)[0]
    return y


def _unkey(k: tuple | None) -> np.ndarray | None:
    return None if k is None else np.frombuffer(k[2], np.dtype(k[0])).reshape(k[1])


@lru_cache(maxsize=256)
def _plan(shape: tuple[int, ...], dtype: np.dtype, scales_k: tuple | None, sizes_k: tuple | None,
          roi_k: tuple | None, mode: str, coord: str, nearest_mode: str, cubic_a: float, exclude: bool,
          antialias: bool, axes_t: tuple[int, ...] | None, policy: str, name: str) -> _Plan:
    if mode not in ("nearest", "linear", "cubic"):
        raise InvalidArgument(f"{name}: mode must be nearest, linear or cubic, got '{mode}'")
    r = len(shape)
    if r == 0:
        raise InvalidArgument(f"{name}: input must have rank >= 1")
    if antialias and mode == "nearest":
        raise InvalidArgument(f"{name}: antialias is only defined for the linear and cubic modes")
    if axes_t:
        if any(not -r <= a < r for a in axes_t):
            raise InvalidArgument(f"{name}: axes {list(axes_t)} out of range for rank {r}")
        axes = [a % r for a in axes_t]
        if len(set(axes)) != len(axes):
            raise InvalidArgument(f"{name}: axes {list(axes_t)} repeat an axis")
    else:
        axes = list(range(r))
    out_shape, sc = _output_geometry(shape, _unkey(scales_k), _unkey(sizes_k), axes, policy, name,
                                     exact=dtype == np.float64)
    memory.check(name, out_shape, dtype)  # before any table of the output's size is built
    rois = [(0.0, 1.0)] * r
    roi = _unkey(roi_k)
    if roi is not None and roi.size:
        rv = roi.astype(np.float64).reshape(-1)
        if rv.size != 2 * len(axes):
            raise InvalidArgument(f"{name}: roi has {rv.size} values, expected {2 * len(axes)}")
        for k, a in enumerate(axes):
            rois[a] = (float(rv[k]), float(rv[len(axes) + k]))
    cdt = _interpolation_dtype(dtype, name) if mode != "nearest" else None
    out_t = tuple(out_shape)
    if 0 in out_shape or 0 in shape:
        return _Plan(out_t, "empty", (), None, (), cdt)
    active = [a for a in range(r) if not (sc[a] == 1.0 and out_shape[a] == shape[a] and coord != "tf_crop_and_resize")]
    if not active:
        return _Plan(out_t, "copy", (), None, (), cdt)
    coord_dt = "float64" if dtype == np.float64 else "float32"
    # the spec's length_resized: scale * length, unfloored, when the scales input sets the size
    by_scales = scales_k is not None and int(np.prod(scales_k[1])) > 0
    lengths = [sc[a] * shape[a] if by_scales else float(out_shape[a]) for a in range(r)]
    # shrinking axes first keeps the intermediates of the one-axis-at-a-time path small
    active.sort(key=lambda a: out_shape[a] / shape[a])
    tables, masks = [], []
    for a in active:
        idx, w, mask = axis_table(mode, shape[a], out_shape[a], lengths[a], sc[a], coord, rois[a], nearest_mode,
                                   cubic_a, exclude, antialias, coord_dt)
        tables.append((a, idx, None if w is None else w.astype(cdt)))
        if mask is not None and mask.any():
            masks.append((a, mask))
    last2 = r >= 2 and set(active) <= {r - 2, r - 1}
    if cdt is None:
        plain = dtype.kind in "biuf" or dtype.name == "bfloat16"
        if last2 and plain:
            t = dict((a, i) for a, i, _ in tables)
            iy = t.get(r - 2, np.arange(shape[-2], dtype=np.int64).reshape(1, -1))
            ix = t.get(r - 1, np.arange(shape[-1], dtype=np.int64).reshape(1, -1))
            tables = [(r - 2, np.ascontiguousarray(iy[0]), None), (r - 1, np.ascontiguousarray(ix[0]), None)]
            return _Plan(out_t, "nearest2d", tuple(tables), None, tuple(masks), None)
        return _Plan(out_t, "take", tuple((a, np.ascontiguousarray(i[0]), None) for a, i, _ in tables), None,
                     tuple(masks), None)
    if last2 and len(active) == 2:
        tables.sort(key=lambda t: t[0])
        (_, iy, wy), (_, ix, wx) = tables
        if dtype.kind in "iu" and iy.shape[0] == 2 and ix.shape[0] == 2:
            return _Plan(out_t, "bilinear2d", tuple(tables), None, tuple(masks), cdt)
        return _Plan(out_t, "interp2d", tuple(tables), np.unique(iy), tuple(masks), cdt)
    return _Plan(out_t, "axes", tuple(tables), None, tuple(masks), cdt)


def _apply_nearest(x: np.ndarray, plan: _Plan) -> np.ndarray:
    if plan.kind == "nearest2d":
        (_, iy, _), (_, ix, _) = plan.tables
        view = _UINT_VIEW[x.dtype.itemsize]
        xv = x.view(view).reshape(-1, x.shape[-2], x.shape[-1])
        out = np.empty((xv.shape[0], plan.out_shape[-2], plan.out_shape[-1]), view)
        _nearest_2d(xv, iy, ix, out)
        return out.view(x.dtype).reshape(plan.out_shape)
    y = x
    for a, idx, _ in plan.tables:
        y = np.take(y, idx, axis=a)
    return np.ascontiguousarray(y)


def _apply_interp(x: np.ndarray, plan: _Plan) -> np.ndarray:
    cdt = plan.cdt
    oshape = plan.out_shape
    if plan.kind in ("interp2d", "bilinear2d"):
        (_, iy, wy), (_, ix, wx) = plan.tables
        x3 = x.reshape(-1, x.shape[-2], x.shape[-1])
        out = np.empty((x3.shape[0], oshape[-2], oshape[-1]), cdt)
        if plan.kind == "bilinear2d":
            _bilinear_2d(x3, iy, wy, ix, wx, out)
        else:
            _interp_2d(x3, iy, wy, ix, wx, plan.rows, out)
        return out.reshape(oshape)
    y = x
    shape = list(x.shape)
    for a, idx, w in plan.tables:
        P = int(np.prod(shape[:a], dtype=np.int64))
        Q = int(np.prod(shape[a + 1:], dtype=np.int64))
        out = np.empty((P, oshape[a], Q), cdt)
        _interp_axis(y.reshape(P, shape[a], Q), idx, w, out)
        shape[a] = oshape[a]
        y = out.reshape(shape)
    return y


@op("Resize", since=10)
def Resize_10(x: np.ndarray, scales: np.ndarray, *, mode: str) -> np.ndarray:
    """Opset 10: scales only; asymmetric coordinates, onnxruntime's legacy nearest rounding."""
    return _resize(x, None, scales, None, mode=mode, coord="asymmetric", nearest_mode="simple")


@op("Resize", since=11)
def Resize(x: np.ndarray, roi: np.ndarray | None = None, scales: np.ndarray | None = None,
           sizes: np.ndarray | None = None, *, mode: str, coordinate_transformation_mode: str,
           nearest_mode: str, cubic_coeff_a: float, exclude_outside: int, extrapolation_value: float,
           antialias: int = 0, axes: list[int] | None = None, keep_aspect_ratio_policy: str = "stretch") -> np.ndarray:
    """Opsets 11, 13, 18 (antialias, axes, keep_aspect_ratio_policy), 19 (half_pixel_symmetric)."""
    return _resize(x, roi, scales, sizes, mode=mode, coord=coordinate_transformation_mode,
                   nearest_mode=nearest_mode, cubic_coeff_a=cubic_coeff_a, exclude_outside=exclude_outside,
                   extrapolation_value=extrapolation_value, antialias=antialias, axes=axes,
                   policy=keep_aspect_ratio_policy)


def _upsample(x: np.ndarray, scales: np.ndarray | list[float], mode: str) -> np.ndarray:
    s = np.asarray(scales, np.float32).reshape(-1)
    if s.size != x.ndim:
        raise InvalidArgument(f"Upsample: 'scales' has {s.size} values, expected the input rank {x.ndim}")
    if (s < 1).any():
        raise InvalidArgument(f"Upsample: scales must be >= 1, got {s.tolist()}")
    if mode not in ("nearest", "linear"):
        raise InvalidArgument(f"Upsample: mode must be nearest or linear, got '{mode}'")
    return _resize(x, None, s, None, mode=mode, coord="asymmetric", nearest_mode="simple", name="Upsample")


@op("Upsample", since=7)
def Upsample_7(x: np.ndarray, *, mode: str, scales: list[float]) -> np.ndarray:
    """Opsets 7-8: scales as an attribute (deprecated at 10; Resize-10 semantics)."""
    return _upsample(x, scales, mode)


@op("Upsample", since=9)
def Upsample_9(x: np.ndarray, scales: np.ndarray, *, mode: str) -> np.ndarray:
    """Opset 9: scales as an input."""
    return _upsample(x, scales, mode)
