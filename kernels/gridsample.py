"""Sampling grids: GridSample (16, 20, 22) samples an N-D input at grid coordinates; AffineGrid (20)
makes the grid of an affine transform. Coordinates, padding and cubic weights follow onnxruntime's
CPU kernels; the cubic weights and the saturating integer store are Resize's
(``kernels/resize_tables.py``).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels.registry import op
from jitort.kernels.resize_tables import cubic_coeffs, store_interpolated

_JIT = dict(cache=True, nogil=True, error_model="numpy")


# --- GridSample -------------------------------------------------------------------------------------

@njit(**_JIT)
def _gather_sum(x, idx, w, out):  # type: ignore[no-untyped-def]
    """x: [N, C, S] -> out: [N, C, P]; out[n, c, p] = sum_j w[n, p, j] * x[n, c, idx[n, p, j]]."""
    J = idx.shape[2]
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            xs = x[n, c]
            for p in range(out.shape[2]):
                acc = w[n, p, 0] * xs[idx[n, p, 0]]
                for j in range(1, J):
                    acc += w[n, p, j] * xs[idx[n, p, j]]
                out[n, c, p] = acc


def _gs_reflect(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect by the near border until inside [lo, hi] (onnxruntime's GsReflect, vectorised)."""
    f = v.dtype.type
    lo_, hi_ = f(lo), f(hi)
    rng = hi_ - lo_
    if rng == 0:
        return np.full_like(v, lo_)
    out = v.copy()
    for below in (True, False):
        sel = v < lo_ if below else v > hi_
        if not sel.any():
            continue
        dx = (lo_ - v[sel]) if below else (v[sel] - hi_)
        n = np.trunc(dx / rng)
        r = dx - n * rng
        even = (n.astype(np.int64) % 2) == 0
        near, far = (lo_, hi_) if below else (hi_, lo_)
        out[sel] = np.where(even, near + r if below else near - r, far - r if below else far + r)
    return out


def _gs_axis_taps(coord: np.ndarray, L: int, mode: str, padding: str, align: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Taps of one spatial axis for every grid point: (indices [..., K], weights [..., K]).

    Padding is applied per tap, as onnxruntime and PyTorch do: zeros zero the weight of an
    out-of-range tap, border clamps its index, reflection reflects it."""
    f = coord.dtype.type
    if mode == "nearest":
        taps = np.rint(coord)[..., None]
        w = np.ones(taps.shape, f)
    elif mode == "linear":
        x1 = np.floor(coord)
        taps = np.stack([x1, x1 + f(1)], axis=-1)
        w = np.stack([x1 + f(1) - coord, coord - x1], axis=-1)
    else:
        x0 = np.floor(coord) - f(1)
        taps = x0[..., None] + np.arange(4, dtype=f)
        w = cubic_coeffs(np.abs(coord - x0 - f(1)).reshape(-1), f(-0.75)).reshape(taps.shape)
    if padding == "zeros":
        valid = (taps >= 0) & (taps < L)
        w = np.where(valid, w, f(0))
        idx = np.where(valid, taps, 0).astype(np.int64)
    elif padding == "border":
        idx = np.clip(taps, 0, L - 1).astype(np.int64)
    else:
        lo, hi = (0.0, L - 1.0) if align else (-0.5, L - 0.5)
        idx = np.clip(np.trunc(_gs_reflect(taps, lo, hi)), 0, L - 1).astype(np.int64)
    return idx, w.astype(f)


_GS_MODES = {"bilinear": "linear", "linear": "linear", "nearest": "nearest", "bicubic": "cubic", "cubic": "cubic"}


def _grid_sample(x: np.ndarray, grid: np.ndarray, mode: str, padding_mode: str, align_corners: int) -> np.ndarray:
    name = "GridSample"
    if mode not in _GS_MODES:
        raise InvalidArgument(f"{name}: unknown mode '{mode}'")
    if padding_mode not in ("zeros", "border", "reflection"):
        raise InvalidArgument(f"{name}: unknown padding_mode '{padding_mode}'")
    m = _GS_MODES[mode]
    r = x.ndim - 2
    if r < 1 or grid.ndim != r + 2 or grid.shape[-1] != r or grid.shape[0] != x.shape[0]:
        raise InvalidArgument(f"{name}: X of shape [N, C, D1..Dr] needs grid of shape [N, O1..Or, r]; "
                              f"got X {x.shape} and grid {grid.shape}")
    if x.dtype.kind not in "iuf" and x.dtype.name != "bfloat16":
        raise OrtNotImplemented(f"{name}: dtype {x.dtype} is not supported by jitort")
    cdt = np.dtype(np.float64) if x.dtype == np.float64 or (x.dtype.kind in "iu" and x.dtype.itemsize >= 4) \
        else np.dtype(np.float32)
    gdt = np.float64 if grid.dtype == np.float64 else np.float32
    N, C = x.shape[:2]
    dims = x.shape[2:]
    out_sp = grid.shape[1:-1]
    P = int(np.prod(out_sp, dtype=np.int64))
    if N * C * P == 0 or 0 in dims:
        return np.zeros((N, C) + tuple(out_sp), x.dtype)
    g = grid.astype(gdt, copy=False).reshape(N, P, r)
    f = np.dtype(gdt).type
    flat_idx = np.zeros((N, P, 1), np.int64)
    weight = np.ones((N, P, 1), gdt)
    stride = 1
    for d in range(r - 1, -1, -1):  # grid[..., 0] indexes the last spatial axis
        L = dims[d]
        gn = g[:, :, r - 1 - d]
        coord = ((gn + f(1)) / f(2) * f(L - 1)) if align_corners else (((gn + f(1)) * f(L) - f(1)) / f(2))
        idx, w = _gs_axis_taps(coord.astype(gdt), L, m, padding_mode, bool(align_corners))
        flat_idx = (flat_idx[:, :, None, :] + (idx * stride)[:, :, :, None]).reshape(N, P, -1)
        weight = (weight[:, :, None, :] * w[:, :, :, None]).reshape(N, P, -1)
        stride *= L
    xc = x.astype(cdt, copy=False).reshape(N, C, -1)
    out = np.empty((N, C, P), cdt)
    _gather_sum(xc, np.ascontiguousarray(flat_idx), np.ascontiguousarray(weight.astype(cdt)), out)
    return store_interpolated(out, x.dtype, False).reshape((N, C) + tuple(out_sp))


@op("GridSample", since=16)
def GridSample(x: np.ndarray, grid: np.ndarray, *, mode: str, padding_mode: str, align_corners: int) -> np.ndarray:
    """Opsets 16 (4-D; bilinear/nearest/bicubic), 20 and 22 (N-D; linear/nearest/cubic). Both spellings
    are accepted at every opset; any spatial rank is supported (cubic in 3-D uses 4x4x4 taps)."""
    return _grid_sample(x, grid, mode, padding_mode, align_corners)


# --- AffineGrid -------------------------------------------------------------------------------------

def _base_coords(L: int, align: bool) -> np.ndarray:
    """onnxruntime's base grid axis: Eigen's LinSpaced(L, -1, 1) in float32 (L == 1 gives [1]),
    scaled by (L - 1) / L without align_corners."""
    v = np.linspace(-1, 1, L, dtype=np.float32) if L > 1 else np.ones(L, np.float32)
    return v if align else v * np.float32(L - 1) / np.float32(L)


@op("AffineGrid", since=20)
def AffineGrid(theta: np.ndarray, size: np.ndarray, *, align_corners: int) -> np.ndarray:
    """Sampling grid [N, H, W, 2] (or [N, D, H, W, 3]) of theta applied to the base grid."""
    sz = [int(v) for v in np.asarray(size).reshape(-1)]
    if len(sz) not in (4, 5):
        raise InvalidArgument(f"AffineGrid: size must have 4 or 5 values, got {sz}")
    r = len(sz) - 2
    if theta.shape != (sz[0], r, r + 1):
        raise InvalidArgument(f"AffineGrid: theta must have shape [{sz[0]}, {r}, {r + 1}], got {list(theta.shape)}")
    cdt = theta.dtype if theta.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    th = theta.astype(cdt, copy=False)
    axes = [_base_coords(L, bool(align_corners)).astype(cdt) for L in reversed(sz[2:])]  # x, y[, z]
    mesh = np.meshgrid(*reversed(axes), indexing="ij")  # [z,] y, x order of the output dims
    base = [m.reshape(-1) for m in reversed(mesh)]  # x, y[, z], flattened in output order
    out = np.empty((sz[0], len(base[0]), r), cdt)
    for i in range(r):
        acc = th[:, i, 0, None] * base[0]
        for j in range(1, r):
            acc = acc + th[:, i, j, None] * base[j]
        out[:, :, i] = acc + th[:, i, r, None]
    return out.reshape([sz[0]] + sz[2:] + [r]).astype(theta.dtype, copy=False)
