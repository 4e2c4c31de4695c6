"""Data movement: Concat, Split, Slice, Expand, Tile, Pad and Trilu.

These ops move or copy bytes and never do arithmetic on them, so numpy's own copy loops (which run
near memcpy speed and work for every dtype, strings included) are the kernels. ``lower=`` hooks fold
constant starts/ends/axes into a plain index tuple at compile time. Outputs are C-contiguous; a
leading-axis Slice or Split returns a view of its input (jitort never writes into an op's inputs).
The shape-only ops (Reshape, Squeeze, ...) are in kernels/shape.py, Transpose in kernels/layout.py.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jitort import memory
from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels.registry import Call, Ref, op
from jitort.kernels.shape import const_input, contig, default, ints, is_absent, norm_axis, rank_of


# --- Concat, Split ------------------------------------------------------------------------------

@op("Concat", since=1)
def Concat(*inputs: np.ndarray, axis: int = 1) -> np.ndarray:  # Concat-1 documents default axis 1
    if len(inputs) == 1:
        return inputs[0]
    try:
        return np.concatenate(inputs, axis=axis)
    except (ValueError, IndexError) as e:
        raise InvalidArgument(f"Concat: inputs of shapes {[list(x.shape) for x in inputs]} cannot be "
                              f"concatenated on axis {axis}: {e}") from None


def _split(x: np.ndarray, axis: int, sizes: Sequence[int], nout: int) -> Any:
    if x.ndim == 0:
        raise InvalidArgument("Split: the input must have rank >= 1")
    a = norm_axis("Split", axis, x.ndim)
    dim = x.shape[a]
    if len(sizes) != nout or any(n < 0 for n in sizes) or sum(sizes) != dim:
        raise InvalidArgument(f"Split: split sizes {list(sizes)} must be {nout} non-negative values summing to "
                              f"the dimension {dim} of axis {axis}")
    pre = (slice(None),) * a
    outs = []
    start = 0
    for n in sizes:
        outs.append(contig(x[pre + (slice(start, start + n),)]))
        start += n
    return outs[0] if nout == 1 else tuple(outs)


def _split_equal(x: np.ndarray, axis: int, nout: int) -> Any:
    if x.ndim == 0:
        raise InvalidArgument("Split: the input must have rank >= 1")
    dim = x.shape[norm_axis("Split", axis, x.ndim)]
    if dim % nout:
        raise InvalidArgument(f"Split: dimension {dim} of axis {axis} cannot be split evenly into {nout} outputs")
    return _split(x, axis, [dim // nout] * nout, nout)


def _split_num(x: np.ndarray, axis: int, nout: int) -> Any:
    """Split-18 num_outputs: chunks of ceil(dim / n), the last one smaller."""
    if x.ndim == 0:
        raise InvalidArgument("Split: the input must have rank >= 1")
    dim = x.shape[norm_axis("Split", axis, x.ndim)]
    chunk = -(-dim // nout)
    sizes = [chunk] * (nout - 1) + [dim - chunk * (nout - 1)]
    if sizes[-1] < 0:
        raise InvalidArgument(f"Split: dimension {dim} of axis {axis} cannot be split into {nout} chunks of "
                              f"{chunk} with a smaller last one")
    return _split(x, axis, sizes, nout)


@op("Split", since=1, host_inputs=(1,))
def Split_1(input: np.ndarray, split_input: np.ndarray | None = None, *, _nout: int, axis: int = 0,
            split: list[int] | None = None) -> Any:
    sizes = ints(split_input) if split_input is not None else split
    return _split(input, axis, sizes, _nout) if sizes else _split_equal(input, axis, _nout)


@op("Split", since=2)
def Split_2(input: np.ndarray, *, _nout: int, axis: int = 0, split: list[int] | None = None) -> Any:
    return _split(input, axis, split, _nout) if split else _split_equal(input, axis, _nout)


@op("Split", since=13, host_inputs=(1,))
def Split(input: np.ndarray, split: np.ndarray | None = None, *, _nout: int, axis: int = 0,
          num_outputs: int | None = None) -> Any:
    if split is not None:
        return _split(input, axis, ints(split), _nout)  # type: ignore[arg-type]
    if num_outputs is not None:
        if num_outputs != _nout:
            raise InvalidArgument(f"Split: num_outputs={num_outputs} but the node has {_nout} outputs")
        return _split_num(input, axis, _nout)
    return _split_equal(input, axis, _nout)


# --- Slice --------------------------------------------------------------------------------------

def clamped_slice(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX clamping: starts to [0, dim] (step > 0) or [0, dim-1] (step < 0); ends to [0, dim] / [-1, dim-1]."""
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    return slice(start, end if end >= 0 else None, step)


def slice_index(shape: Sequence[int], starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None,
                steps: Sequence[int] | None) -> tuple[slice, ...]:
    """Slice's index tuple for an array of ``shape``, with ONNX's checks and clamping (axes None: the
    first ``len(starts)`` axes; steps None: 1). The CUDA Slice (``kernels/cuda/movement.py``) uses it too."""
    n = len(starts)
    if axes is None:
        axes = range(n)
    if len(ends) != n or len(axes) != n or (steps is not None and len(steps) != n):
        raise InvalidArgument(f"Slice: starts, ends, axes and steps must have the same length "
                              f"(got {len(starts)}, {len(ends)}, {len(axes)}, {None if steps is None else len(steps)})")
    r = len(shape)
    idx: list[slice] = [slice(None)] * r
    seen = set()
    for k in range(n):
        a = norm_axis("Slice", axes[k], r)
        if a in seen:
            raise InvalidArgument(f"Slice: axes {list(axes)} repeat axis {a}")
        seen.add(a)
        st = 1 if steps is None else steps[k]
        if st == 0:
            raise InvalidArgument("Slice: steps must not be 0")
        idx[a] = clamped_slice(starts[k], ends[k], st, shape[a])
    return tuple(idx)


def _slice(x: np.ndarray, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None,
           steps: Sequence[int] | None) -> np.ndarray:
    y = x[slice_index(x.shape, starts, ends, axes, steps)]
    return y if y.flags.c_contiguous else y.copy()


def _slice_static(x: np.ndarray, idx: tuple[slice, ...]) -> np.ndarray:
    y = x[idx]
    return y if y.flags.c_contiguous else y.copy()


def _static_index(node: Node, g: Graph, starts: list[int], ends: list[int], axes: list[int] | None,
                  steps: list[int] | None) -> tuple[slice, ...] | None:
    """The index tuple when Python's slice clamping provably equals ONNX's for every run."""
    n = len(starts)
    axes = list(range(n)) if axes is None else axes
    steps = [1] * n if steps is None else steps
    r = rank_of(node, g)
    if len(ends) != n or len(axes) != n or len(steps) != n or 0 in steps or r is None:
        return None
    shape = g.type_of(node.inputs[0]).shape or ()
    norm = [a + r if a < 0 else a for a in axes]
    if len(set(norm)) != n or not all(0 <= a < r for a in norm):
        return None
    idx: list[slice] = [slice(None)] * (max(norm) + 1)
    for a, s, e, st in zip(norm, starts, ends, steps):
        dim = shape[a]
        if isinstance(dim, int):
            idx[a] = clamped_slice(s, e, st, dim)
        elif st > 0 or s >= 0:
            # Python clamps exactly like ONNX except a negative-step start below -dim (ONNX: 0, Python: empty).
            idx[a] = slice(s, e, st)
        else:
            return None
    return tuple(idx)


def _lower_slice_1(node: Node, g: Graph) -> Call:
    a = node.attrs
    idx = _static_index(node, g, list(a["starts"]), list(a["ends"]), a.get("axes"), None)
    return default(Slice_1, node, g) if idx is None else Call(_slice_static, [Ref(node.inputs[0]), idx])


@op("Slice", since=1, lower=_lower_slice_1)
def Slice_1(data: np.ndarray, *, starts: list[int], ends: list[int], axes: list[int] | None = None) -> np.ndarray:
    return _slice(data, starts, ends, axes, None)


def _lower_slice(node: Node, g: Graph) -> Call:
    cs = [const_input(node, g, k) for k in range(1, 5)]
    if cs[0] is None or cs[1] is None or any(cs[k] is None and not is_absent(node, k + 1) for k in (2, 3)):
        return default(Slice, node, g)
    vals = [ints(c) for c in cs]
    idx = _static_index(node, g, vals[0], vals[1], vals[2], vals[3])  # type: ignore[arg-type]
    return default(Slice, node, g) if idx is None else Call(_slice_static, [Ref(node.inputs[0]), idx])


@op("Slice", since=10, lower=_lower_slice, host_inputs=(1, 2, 3, 4))
def Slice(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, axes: np.ndarray | None = None,
          steps: np.ndarray | None = None) -> np.ndarray:
    return _slice(data, starts.tolist(), ends.tolist(), ints(axes), ints(steps))


# --- Expand, Tile -------------------------------------------------------------------------------

@op("Expand", since=8, host_inputs=(1,))
def Expand(input: np.ndarray, shape: np.ndarray) -> np.ndarray:
    want = tuple(shape.reshape(-1).tolist())
    out = _broadcast_shape(input.shape, want)
    if out is None:
        raise InvalidArgument(f"Expand: input shape {list(input.shape)} does not broadcast with shape "
                              f"{list(want)}")
    if out == input.shape:
        return input
    memory.check("Expand", out, input.dtype)
    return np.broadcast_to(input, out).copy()


def _broadcast_shape(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...] | None:
    """numpy's broadcast of two shapes in Python integers (numpy's own refuses shapes whose size
    overflows, which a model may ask for: that is the memory check's error, not a broadcast one)."""
    r = max(len(a), len(b))
    a, b = (1,) * (r - len(a)) + tuple(a), (1,) * (r - len(b)) + tuple(b)
    if any(x != y and x != 1 and y != 1 for x, y in zip(a, b)):
        return None
    return tuple(y if x == 1 else x for x, y in zip(a, b))


def _tile(x: np.ndarray, reps: list[int]) -> np.ndarray:
    if len(reps) != x.ndim or any(r < 0 for r in reps):
        raise InvalidArgument(f"Tile: repeats {reps} must be {x.ndim} non-negative values (the input's rank)")
    # onnxruntime's Tile checks its output size itself and reports InvalidArgument
    memory.check("Tile", [d * r for d, r in zip(x.shape, reps)], x.dtype, InvalidArgument)
    return np.tile(x, reps) if reps else x.copy()


@op("Tile", since=1)
def Tile_1(input: np.ndarray, tiles: np.ndarray, axis: np.ndarray) -> np.ndarray:
    reps = [1] * input.ndim
    reps[norm_axis("Tile", int(axis.reshape(-1)[0]), input.ndim)] = int(tiles.reshape(-1)[0])
    return _tile(input, reps)


@op("Tile", since=6)
def Tile(input: np.ndarray, repeats: np.ndarray) -> np.ndarray:
    return _tile(input, repeats.reshape(-1).tolist())


# --- Pad ----------------------------------------------------------------------------------------

def _zero_of(dt: np.dtype) -> Any:
    return "" if dt == object else np.zeros((), dt)[()]


def _pad(x: np.ndarray, pads: Sequence[int], mode: str, value: Any, axes: Sequence[int] | None) -> np.ndarray:
    r = x.ndim
    axes = list(range(r)) if axes is None else [norm_axis("Pad", a, r) for a in axes]
    n = len(axes)
    if len(pads) != 2 * n:
        raise InvalidArgument(f"Pad: pads has {len(pads)} values, expected {2 * n} (2 per padded axis)")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise OrtNotImplemented(f"Pad: mode '{mode}' is not supported (constant, reflect, edge, wrap)")
    begin, end = [0] * r, [0] * r
    for k, a in enumerate(axes):
        begin[a], end[a] = pads[k], pads[k + n]
    if any(b < 0 for b in begin) or any(e < 0 for e in end):
        crop = []
        for a in range(r):
            lo, hi = max(-begin[a], 0), x.shape[a] - max(-end[a], 0)
            if hi < lo:
                raise InvalidArgument(f"Pad: negative pads {list(pads)} remove more than the {x.shape[a]} "
                                      f"elements of axis {a}")
            crop.append(slice(lo, hi))
        x = x[tuple(crop)]
        begin = [max(b, 0) for b in begin]
        end = [max(e, 0) for e in end]
    if not any(begin) and not any(end):
        return contig(x)
    shape = memory.check("Pad", [d + b + e for d, b, e in zip(x.shape, begin, end)], x.dtype)
    if mode == "constant":
        out = np.full(shape, _zero_of(x.dtype) if value is None else value, x.dtype)
        out[tuple(slice(b, b + d) for b, d in zip(begin, x.shape))] = x
        return out
    for a in range(r):
        if (begin[a] or end[a]) and x.shape[a] == 0:
            raise InvalidArgument(f"Pad: mode '{mode}' cannot pad axis {a}, which has no elements")
        if mode == "reflect" and (begin[a] >= x.shape[a] or end[a] >= x.shape[a]) and (begin[a] or end[a]):
            raise InvalidArgument(f"Pad: reflect pads {begin[a]}, {end[a]} on axis {a} must be smaller than "
                                  f"its dimension {x.shape[a]}")
    return np.pad(x, list(zip(begin, end)), mode=mode)


def _pad_value(v: Any, dt: np.dtype) -> Any:
    return None if v is None else np.asarray(v).astype(dt).reshape(-1)[0]


@op("Pad", since=1)
def Pad_1(data: np.ndarray, *, paddings: list[int], mode: str = "constant", value: float = 0.0) -> np.ndarray:
    return _pad(data, paddings, mode, _pad_value(value, data.dtype), None)


@op("Pad", since=2)
def Pad_2(data: np.ndarray, *, pads: list[int], mode: str = "constant", value: float = 0.0) -> np.ndarray:
    return _pad(data, pads, mode, _pad_value(value, data.dtype), None)


@op("Pad", since=11)
def Pad(data: np.ndarray, pads: np.ndarray, constant_value: np.ndarray | None = None,
        axes: np.ndarray | None = None, *, mode: str = "constant") -> np.ndarray:
    v = None if constant_value is None or constant_value.size == 0 else constant_value.reshape(-1)[0]
    return _pad(data, pads.tolist(), mode, v, ints(axes))


# --- Trilu --------------------------------------------------------------------------------------

@op("Trilu", since=14)
def Trilu(input: np.ndarray, k: np.ndarray | None = None, *, upper: int = 1) -> np.ndarray:
    if input.ndim < 2:
        raise InvalidArgument(f"Trilu: the input must have rank >= 2, it has shape {list(input.shape)}")
    kk = 0 if k is None else int(k.reshape(-1)[0])
    lim = input.shape[-1] + input.shape[-2] + 1
    kk = min(max(kk, -lim), lim)  # np.tri's arange overflows on INT64 extremes
    return contig(np.triu(input, kk) if upper else np.tril(input, kk))
