"""Data movement on the device: strided copies (Transpose, Slice, Split, Concat, Expand), Gather, views.

Geometry is computed on the host with numpy itself: a *dummy* array — the real shape and C strides
over a one-byte buffer, never read — is sliced, transposed or broadcast exactly as the CPU kernels
would slice the real data, and the resulting view's offset and strides describe the elements to
move. Two grid-stride kernels then do every copy: ``gather_strided`` (contiguous output, strided
source) and ``scatter_strided`` (contiguous source, strided destination: Concat writes each input
into its slab). Dims are collapsed where they are contiguous and padded to six. The kernels move
bytes: arrays are viewed as unsigned integers of their item size, so one variant serves float16,
bool and every other type of that size.

Reshape, Flatten, Squeeze, Unsqueeze and Identity never launch anything: the CPU op's own lowering
runs on a dummy to get the output shape (same rules, same errors) and the device array is reshaped.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
from numba import cuda, int32, int64, void

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels.cuda.runtime import MOVE_KEYS, A, compiled, flat, grid1d, signatures
from jitort.kernels.movement import slice_index
from jitort.kernels.shape import norm_axis

RANK = 6
_BYTE = np.zeros(1, np.uint8)


def _move_sig(T: Any) -> Any:
    return void(A(T), A(T), int64, int64, *([int64] * (RANK - 1)), *([int64] * RANK))


@signatures(MOVE_KEYS, _move_sig)
def gather_strided(x, y, n, off, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5):  # type: ignore[no-untyped-def]
    """y[i] = x[off + sum_k i_k * s_k] where (i0..i5) is i's index in dims (-, d1..d5)."""
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    while i < n:
        r = i
        i5 = r % d5
        r //= d5
        i4 = r % d4
        r //= d4
        i3 = r % d3
        r //= d3
        i2 = r % d2
        r //= d2
        i1 = r % d1
        i0 = r // d1
        y[i] = x[off + i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3 + i4 * s4 + i5 * s5]
        i += step


@signatures(MOVE_KEYS, _move_sig)
def scatter_strided(x, y, n, off, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5):  # type: ignore[no-untyped-def]
    """y[off + sum_k i_k * s_k] = x[i]: the inverse of gather_strided."""
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    while i < n:
        r = i
        i5 = r % d5
        r //= d5
        i4 = r % d4
        r //= d4
        i3 = r % d3
        r //= d3
        i2 = r % d2
        r //= d2
        i1 = r % d1
        i0 = r // d1
        y[off + i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3 + i4 * s4 + i5 * s5] = x[i]
        i += step


GATHER_KEYS = tuple(f"{k},{i}" for k in MOVE_KEYS for i in ("int32", "int64"))


@signatures(GATHER_KEYS, lambda T, I: void(A(T), A(I), A(T), A(int32), int64, int64, int64, int64))
def gather_axis(data, idx, y, err, n, inner, axis_dim, nidx):  # type: ignore[no-untyped-def]
    """y[o, j, i] = data[o, idx[j], i] over [outer, nidx, inner]; negative indices count from the end;
    an index outside [-axis_dim, axis_dim) sets err[0] = 1 (the launcher raises) and writes zero bits."""
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    while i < n:
        c = i % inner
        r = i // inner
        j = r % nidx
        o = r // nidx
        t = idx[j]
        if t < 0:
            t += axis_dim
        if t < 0 or t >= axis_dim:
            err[0] = 1
            y[i] = 0
        else:
            y[i] = data[(o * axis_dim + t) * inner + c]
        i += step


# --- geometry on dummies --------------------------------------------------------------------------

def dummy(shape: Sequence[int]) -> np.ndarray:
    """A C-contiguous array of ``shape`` with one-byte items over a one-byte buffer: its views'
    offsets and strides are element offsets and element strides. Never read or copy it."""
    shape = tuple(int(d) for d in shape)
    strides, s = [], 1
    for d in reversed(shape):
        strides.append(s)
        s *= max(d, 1)
    return np.lib.stride_tricks.as_strided(_BYTE, shape, tuple(reversed(strides)), writeable=False)


def geometry(view: np.ndarray, base: np.ndarray) -> tuple[int, list[int], list[int]]:
    """(offset, dims, strides) of a dummy view, dims collapsed where contiguous, padded to RANK."""
    off = int(view.__array_interface__["data"][0] - base.__array_interface__["data"][0])
    dims: list[int] = []
    strides: list[int] = []
    for d, s in zip(view.shape, view.strides):
        if d == 1:
            continue
        if dims and strides[-1] == s * d:
            dims[-1] *= d
            strides[-1] = s
        else:
            dims.append(int(d))
            strides.append(int(s))
    if len(dims) > RANK:
        raise OrtNotImplemented(f"jitort's CUDA copy kernels handle at most {RANK} non-contiguous dims, "
                                f"got a view of shape {list(view.shape)}")
    pad = RANK - len(dims)
    return off, [1] * pad + dims, [0] * pad + strides


def _bytes(x: Any) -> Any:
    """A flat view of x as unsigned integers of its item size."""
    it = np.dtype(x.dtype).itemsize
    if it not in (1, 2, 4, 8):
        raise OrtNotImplemented(f"jitort's CUDA copy kernels do not move {x.dtype} items")
    return flat(x).view(np.dtype(f"uint{8 * it}"))


def _copy(ctx: Any, fn: Callable, src: Any, dst: Any, n: int, geo: tuple[int, list[int], list[int]]) -> None:
    if n == 0:
        return
    off, dims, strides = geo
    xs, ys = _bytes(src), _bytes(dst)
    blocks, threads = grid1d(n)
    compiled(fn, np.dtype(xs.dtype).name)[blocks, threads, ctx.stream](xs, ys, n, off, *dims[1:], *strides)


def gather_view(ctx: Any, slot: int | None, x: Any, view: np.ndarray, base: np.ndarray) -> Any:
    """A new contiguous array holding the elements of x that ``view`` (a view of ``base``) selects."""
    y = ctx.alloc(slot, view.shape, x.dtype)
    _copy(ctx, gather_strided, x, y, int(y.size), geometry(view, base))
    return y


# --- launchers -----------------------------------------------------------------------------------

def transpose(ctx: Any, slots: tuple, x: Any, *, perm: tuple | None) -> Any:
    d = dummy(x.shape)
    p = tuple(range(x.ndim))[::-1] if perm is None else tuple(perm)
    try:
        v = d.transpose(p)
    except ValueError as e:
        raise InvalidArgument(f"Transpose: perm {list(p)} is not a permutation of the input's {x.ndim} axes: "
                              f"{e}") from None
    return gather_view(ctx, slots[0], x, v, d)


def expand(ctx: Any, slots: tuple, x: Any, shape: np.ndarray) -> Any:
    want = tuple(int(v) for v in np.asarray(shape).reshape(-1))
    try:
        out = np.broadcast_shapes(tuple(x.shape), want)
    except ValueError:
        raise InvalidArgument(f"Expand: input shape {list(x.shape)} does not broadcast with shape "
                              f"{list(want)}") from None
    d = dummy(x.shape)
    return gather_view(ctx, slots[0], x, np.broadcast_to(d, out), d)


def concat(ctx: Any, slots: tuple, *xs: Any, axis: int) -> Any:
    first = xs[0]
    r = first.ndim
    a = norm_axis("Concat", axis, r)
    for x in xs:
        if x.ndim != r or any(x.shape[k] != first.shape[k] for k in range(r) if k != a):
            raise InvalidArgument(f"Concat: inputs of shapes {[list(t.shape) for t in xs]} cannot be "
                                  f"concatenated on axis {axis}")
    out_shape = list(first.shape)
    out_shape[a] = sum(int(x.shape[a]) for x in xs)
    y = ctx.alloc(slots[0], out_shape, first.dtype)
    d = dummy(out_shape)
    start = 0
    for x in xs:
        n = int(x.shape[a])
        region = d[(slice(None),) * a + (slice(start, start + n),)]
        _copy(ctx, scatter_strided, x, y, int(x.size), geometry(region, d))
        start += n
    return y


def split(ctx: Any, slots: tuple, x: Any, split: Any = None, *, axis: int, sizes: tuple | None,
          num_outputs: int | None, nout: int) -> Any:
    """Split (every opset): sizes from the ``split`` input, the attribute, num_outputs chunks, or equal parts."""
    if x.ndim == 0:
        raise InvalidArgument("Split: the input must have rank >= 1")
    a = norm_axis("Split", axis, x.ndim)
    dim = int(x.shape[a])
    if split is not None:
        parts = [int(v) for v in np.asarray(split).reshape(-1)]
    elif sizes:
        parts = [int(v) for v in sizes]
    elif num_outputs is not None:
        chunk = -(-dim // nout)
        parts = [chunk] * (nout - 1) + [dim - chunk * (nout - 1)]
    else:
        if dim % nout:
            raise InvalidArgument(f"Split: dimension {dim} of axis {axis} cannot be split evenly into {nout} outputs")
        parts = [dim // nout] * nout
    if len(parts) != nout or any(p < 0 for p in parts) or sum(parts) != dim:
        raise InvalidArgument(f"Split: split sizes {parts} must be {nout} non-negative values summing to the "
                              f"dimension {dim} of axis {axis}")
    d = dummy(x.shape)
    outs, start = [], 0
    for k, n in enumerate(parts):
        v = d[(slice(None),) * a + (slice(start, start + n),)]
        outs.append(gather_view(ctx, slots[k] if k < len(slots) else None, x, v, d))
        start += n
    return outs[0] if nout == 1 else tuple(outs)


def slice_(ctx: Any, slots: tuple, x: Any, starts: Any = None, ends: Any = None, axes: Any = None,
           steps: Any = None, *, attr_starts: tuple | None = None, attr_ends: tuple | None = None,
           attr_axes: tuple | None = None) -> Any:
    """Slice-1 (attributes) and Slice-10+ (host inputs), with ONNX's clamping."""
    st = list(attr_starts) if attr_starts is not None else [int(v) for v in np.asarray(starts).reshape(-1)]
    en = list(attr_ends) if attr_ends is not None else [int(v) for v in np.asarray(ends).reshape(-1)]
    if attr_starts is not None:
        ax = list(attr_axes) if attr_axes is not None else list(range(len(st)))
        sp = [1] * len(st)
    else:
        ax = [int(v) for v in np.asarray(axes).reshape(-1)] if axes is not None else list(range(len(st)))
        sp = [int(v) for v in np.asarray(steps).reshape(-1)] if steps is not None else [1] * len(st)
    idx = slice_index(tuple(int(s) for s in x.shape), st, en, ax, sp)
    d = dummy(x.shape)
    return gather_view(ctx, slots[0], x, d[idx], d)


def gather(ctx: Any, slots: tuple, data: Any, indices: Any, *, axis: int) -> Any:
    a = norm_axis("Gather", axis, data.ndim)
    out_shape = tuple(data.shape[:a]) + tuple(indices.shape) + tuple(data.shape[a + 1:])
    y = ctx.alloc(slots[0], out_shape, data.dtype)
    n = int(y.size)
    if n == 0:
        return y
    inner = math.prod(data.shape[a + 1:])
    xs, ys = _bytes(data), _bytes(y)
    key = f"{np.dtype(xs.dtype).name},{np.dtype(indices.dtype).name}"
    blocks, threads = grid1d(n)
    compiled(gather_axis, key)[blocks, threads, ctx.stream](xs, flat(indices), ys, ctx.err, n, inner,
                                                            int(data.shape[a]), int(indices.size))
    return y


def view(ctx: Any, slots: tuple, x: Any, *args: Any, fn: Callable[..., np.ndarray], kwargs: dict) -> Any:
    """Reshape-like ops: the CPU op's lowered function, run on a dummy, gives the output shape."""
    shape = fn(dummy(x.shape), *args, **kwargs).shape
    return x if tuple(shape) == tuple(x.shape) else x.reshape(tuple(shape))


def shape_of(ctx: Any, slots: tuple, x: Any, *, start: int = 0, end: int | None = None) -> np.ndarray:
    """Shape (a host int64 tensor: shape arithmetic stays on the CPU, as in onnxruntime)."""
    return np.array(tuple(x.shape)[start:end], np.int64)


def size_of(ctx: Any, slots: tuple, x: Any) -> np.ndarray:
    return np.array(math.prod(x.shape), np.int64)


KERNELS = (gather_strided, scatter_strided, gather_axis)
