"""Shape and data-movement ops: Reshape, Squeeze, Concat, Split, Slice, Pad, Tile, ...

These ops move or copy bytes and never do arithmetic on them, so numpy's own copy loops (which run
near memcpy speed and work for every dtype, strings included) are the kernels. (Transpose, which
needs a tiled SIMD kernel when the last axis moves, and DepthToSpace/SpaceToDepth are in
kernels/layout.py.) What matters is the Python path of each call, because a transformer runs dozens
of Reshape/Unsqueeze/Shape nodes per inference: ``lower=`` hooks fold constant shape/axes/starts
inputs into plain tuples at compile time, so the plan calls a two-line function (a few hundred ns)
instead of re-parsing int64 tensors each run.

Outputs are C-contiguous; a view of an input is returned when it already is (Reshape, Squeeze,
Unsqueeze, Flatten, Identity, a leading-axis Slice or Split): jitort never writes into an op's
inputs, so sharing memory is safe and saves the copy.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from jitort import memory
from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels.registry import Call, OpDef, Ref, default_call, op

Shape = tuple[int, ...]


# --- helpers shared with kernels.gather ---------------------------------------------------------

def contig(a: np.ndarray) -> np.ndarray:
    """``a`` when C-contiguous, else a C-ordered copy (np.ascontiguousarray would make 0-d 1-d)."""
    return a if a.flags.c_contiguous else a.copy()


def norm_axis(opname: str, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise InvalidArgument(f"{opname}: axis {axis} is out of range for a tensor of rank {rank}; "
                              f"expected a value in [{-rank}, {rank - 1}]")
    return axis + rank if axis < 0 else axis


def ints(a: np.ndarray | None) -> list[int] | None:
    """A 1-D (or scalar) integer tensor input as a Python list."""
    return None if a is None else a.reshape(-1).tolist()


def const_input(node: Node, g: Graph, k: int) -> np.ndarray | None:
    """Input k's compile-time data; None when absent or only known at run time."""
    return g.const(node.inputs[k]) if len(node.inputs) > k and node.inputs[k] else None


def is_absent(node: Node, k: int) -> bool:
    return len(node.inputs) <= k or not node.inputs[k]


def rank_of(node: Node, g: Graph, k: int = 0) -> int | None:
    return g.type_of(node.inputs[k]).rank


def static_shape(node: Node, g: Graph, k: int = 0) -> Shape | None:
    """Input k's shape when every dim is static (graph inputs are checked against them at run time)."""
    t = g.type_of(node.inputs[k])
    return tuple(t.shape) if t.is_static() else None  # type: ignore[arg-type]


def default(fn: Callable[..., Any], node: Node, g: Graph) -> Call:
    return default_call(OpDef(node.op_type, node.domain, node.version, fn=fn), node, g)


def _shape_error(opname: str, x: np.ndarray, want: Any, e: Exception) -> InvalidArgument:
    return InvalidArgument(f"{opname}: cannot turn input of shape {list(x.shape)} ({x.size} elements) into "
                           f"shape {list(want)}: {e}")


# --- Reshape ------------------------------------------------------------------------------------

def _reshape_to(data: np.ndarray, shape: Shape) -> np.ndarray:
    try:
        return data.reshape(shape)
    except ValueError as e:
        raise _shape_error("Reshape", data, shape, e) from None


_reshape_to.compile_parts = lambda *args, **kwargs: {}  # type: ignore[attr-defined]  # numpy only


def _reshape_zeros(data: np.ndarray, shape: Shape) -> np.ndarray:
    """allowzero=0: a 0 in ``shape`` copies the input's dimension at that index."""
    ds = data.shape
    if len(shape) > len(ds) and any(d == 0 for d in shape[len(ds):]):
        raise InvalidArgument(f"Reshape: shape {list(shape)} has a 0 at an index beyond the input's rank "
                              f"{len(ds)} (allowzero=0 copies the input dimension there)")
    return _reshape_to(data, tuple(ds[k] if d == 0 else d for k, d in enumerate(shape)))


def _reshape(data: np.ndarray, shape: Sequence[int], allowzero: int) -> np.ndarray:
    s = tuple(shape)
    if s.count(-1) > 1:
        raise InvalidArgument(f"Reshape: shape {list(s)} has more than one -1")
    if any(d < -1 for d in s):  # numpy would read any negative value as -1
        raise InvalidArgument(f"Reshape: shape {list(s)} has a dimension below -1")
    if allowzero:
        if 0 in s and -1 in s:
            raise InvalidArgument(f"Reshape: shape {list(s)} has both 0 and -1 with allowzero=1")
        return _reshape_to(data, s)
    return _reshape_zeros(data, s) if 0 in s else _reshape_to(data, s)


def _reshape_prefix(data: np.ndarray, n: int, tail: Shape) -> np.ndarray:
    """allowzero=0 with the zeros leading (``[0, 0, -1]``, ``[0, 128, 768]``): keep n input dims."""
    s = data.shape
    if len(s) >= n:
        try:
            return data.reshape(s[:n] + tail)
        except ValueError as e:
            raise _shape_error("Reshape", data, s[:n] + tail, e) from None
    raise InvalidArgument(f"Reshape: shape {[0] * n + list(tail)} copies {n} dimensions from an input of "
                          f"rank {data.ndim}")


def _lower_reshape_const(node: Node, g: Graph, s: list[int], allowzero: int) -> Call:
    x = Ref(node.inputs[0])
    if s.count(-1) > 1 or (allowzero and 0 in s and -1 in s) or any(d < -1 for d in s):
        return Call(_reshape, [x, tuple(s), allowzero])  # raises with its message
    if allowzero or 0 not in s:
        return Call(_reshape_to, [x, tuple(s)])
    zeros = [k for k, d in enumerate(s) if d == 0]
    ds = g.type_of(node.inputs[0]).shape
    if ds is not None and all(k < len(ds) and isinstance(ds[k], int) for k in zeros):
        # The copied dims are static (inputs are checked against them): resolve at compile time.
        return Call(_reshape_to, [x, tuple(ds[k] if d == 0 else d for k, d in enumerate(s))])
    if zeros == list(range(len(zeros))):
        return Call(_reshape_prefix, [x, len(zeros), tuple(s[len(zeros):])])
    return Call(_reshape_zeros, [x, tuple(s)])


def _lower_reshape_1(node: Node, g: Graph) -> Call:
    if node.attrs.get("shape") is None:
        raise InvalidArgument(f"{node.describe()}: Reshape-1 needs the 'shape' attribute")
    return _lower_reshape_const(node, g, [int(v) for v in node.attrs["shape"]], 0)


@op("Reshape", since=1, lower=_lower_reshape_1)
def Reshape_1(data: np.ndarray, *, shape: list[int]) -> np.ndarray:
    return _reshape(data, shape, 0)


def _lower_reshape(node: Node, g: Graph) -> Call:
    s = const_input(node, g, 1)
    if s is None:
        return default(Reshape, node, g)
    return _lower_reshape_const(node, g, [int(v) for v in s.reshape(-1)], int(node.attrs.get("allowzero", 0)))


@op("Reshape", since=5, lower=_lower_reshape, host_inputs=(1,))
def Reshape(data: np.ndarray, shape: np.ndarray, *, allowzero: int = 0) -> np.ndarray:
    return _reshape(data, shape.tolist(), allowzero)


# --- Flatten, Squeeze, Unsqueeze ----------------------------------------------------------------

def _lower_flatten(node: Node, g: Graph) -> Call:
    s, a = static_shape(node, g), int(node.attrs.get("axis", 1))
    if s is None or not -len(s) <= a <= len(s):
        return default(Flatten, node, g)
    a = a + len(s) if a < 0 else a
    return Call(_reshape_to, [Ref(node.inputs[0]), (math.prod(s[:a]), math.prod(s[a:]))])


@op("Flatten", since=1, lower=_lower_flatten)
def Flatten(input: np.ndarray, *, axis: int = 1) -> np.ndarray:
    r, s = input.ndim, input.shape
    a = axis + r if axis < 0 else axis
    if not 0 <= a <= r:
        raise InvalidArgument(f"Flatten: axis {axis} is out of range for a tensor of rank {r}; "
                              f"expected a value in [{-r}, {r}]")
    return input.reshape(math.prod(s[:a]), math.prod(s[a:]))


def _squeeze_axes(data: np.ndarray, axes: Shape) -> np.ndarray:
    try:
        return data.squeeze(axes)
    except ValueError:
        bad = [a for a in axes if -data.ndim <= a < data.ndim and data.shape[a] != 1]
        raise InvalidArgument(f"Squeeze: dimension {bad[0] if bad else axes} of input shape {list(data.shape)} "
                              "is not 1 and cannot be squeezed") from None
    except (IndexError, np.exceptions.AxisError):
        raise InvalidArgument(f"Squeeze: axes {list(axes)} out of range for a tensor of rank {data.ndim}") from None


def _squeeze(data: np.ndarray, axes: Sequence[int] | None) -> np.ndarray:
    if not axes:  # absent or empty: every dimension of size 1 (onnxruntime's reading)
        return data.squeeze()
    if len(set(a + data.ndim if a < 0 else a for a in axes)) != len(axes):
        raise InvalidArgument(f"Squeeze: axes {list(axes)} repeat an axis")
    return _squeeze_axes(data, tuple(axes))


def _lower_squeeze(node: Node, g: Graph) -> Call:
    axes = node.attrs.get("axes") if node.version < 13 else ints(const_input(node, g, 1))
    if axes is None and node.version >= 13 and not is_absent(node, 1):
        return default(Squeeze, node, g)
    r, shape = rank_of(node, g), static_shape(node, g)
    if shape is not None and not axes:
        return Call(_reshape_to, [Ref(node.inputs[0]), tuple(d for d in shape if d != 1)])
    if axes and r is not None and all(-r <= a < r for a in axes):
        norm = tuple(sorted({a + r if a < 0 else a for a in axes}))
        if len(norm) == len(axes):
            if shape is not None and all(shape[a] == 1 for a in norm):
                return Call(_reshape_to, [Ref(node.inputs[0]), tuple(d for k, d in enumerate(shape) if k not in norm)])
            return Call(_squeeze_axes, [Ref(node.inputs[0]), norm])
    return Call(_squeeze, [Ref(node.inputs[0]), tuple(axes) if axes else None])


@op("Squeeze", since=1, lower=_lower_squeeze)
def Squeeze_1(data: np.ndarray, *, axes: list[int] | None = None) -> np.ndarray:
    return _squeeze(data, axes)


@op("Squeeze", since=13, lower=_lower_squeeze, host_inputs=(1,))
def Squeeze(data: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
    return _squeeze(data, ints(axes))


def _unsqueeze_at(data: np.ndarray, axes: Shape) -> np.ndarray:
    """``axes``: sorted, normalised positions in the output."""
    s = data.shape
    for a in axes:
        s = s[:a] + (1,) + s[a:]
    return data.reshape(s)


def _unsqueeze(data: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    r = data.ndim + len(axes)
    norm = sorted(norm_axis("Unsqueeze", a, r) for a in axes)
    if len(set(norm)) != len(norm):
        raise InvalidArgument(f"Unsqueeze: axes {list(axes)} repeat an axis")
    return _unsqueeze_at(data, tuple(norm))


def _lower_unsqueeze(node: Node, g: Graph) -> Call:
    axes = node.attrs.get("axes") if node.version < 13 else ints(const_input(node, g, 1))
    if axes is None:
        return default(Unsqueeze_1 if node.version < 13 else Unsqueeze, node, g)
    r = rank_of(node, g)
    if r is not None:
        ro = r + len(axes)
        if all(-ro <= a < ro for a in axes):
            norm = tuple(sorted(a + ro if a < 0 else a for a in axes))
            if len(set(norm)) == len(norm):
                shape = static_shape(node, g)
                if shape is not None:
                    for a in norm:
                        shape = shape[:a] + (1,) + shape[a:]
                    return Call(_reshape_to, [Ref(node.inputs[0]), shape])
                return Call(_unsqueeze_at, [Ref(node.inputs[0]), norm])
    return Call(_unsqueeze, [Ref(node.inputs[0]), tuple(axes)])


@op("Unsqueeze", since=1, lower=_lower_unsqueeze)
def Unsqueeze_1(data: np.ndarray, *, axes: list[int]) -> np.ndarray:
    return _unsqueeze(data, axes)


@op("Unsqueeze", since=13, lower=_lower_unsqueeze, host_inputs=(1,))
def Unsqueeze(data: np.ndarray, axes: np.ndarray) -> np.ndarray:
    return _unsqueeze(data, axes.reshape(-1).tolist())


@op("Identity", since=1)
def Identity(input: np.ndarray) -> np.ndarray:
    return input


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

def _clamped(start: int, end: int, step: int, dim: int) -> slice:
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


def _slice(x: np.ndarray, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None,
           steps: Sequence[int] | None) -> np.ndarray:
    n = len(starts)
    if axes is None:
        axes = range(n)
    if len(ends) != n or len(axes) != n or (steps is not None and len(steps) != n):
        raise InvalidArgument(f"Slice: starts, ends, axes and steps must have the same length "
                              f"(got {len(starts)}, {len(ends)}, {len(axes)}, {None if steps is None else len(steps)})")
    idx: list[slice] = [slice(None)] * x.ndim
    seen = set()
    for k in range(n):
        a = norm_axis("Slice", axes[k], x.ndim)
        if a in seen:
            raise InvalidArgument(f"Slice: axes {list(axes)} repeat axis {a}")
        seen.add(a)
        st = 1 if steps is None else steps[k]
        if st == 0:
            raise InvalidArgument("Slice: steps must not be 0")
        idx[a] = _clamped(starts[k], ends[k], st, x.shape[a])
    y = x[tuple(idx)]
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
            idx[a] = _clamped(s, e, st, dim)
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


# --- Shape, Size, ConstantOfShape, Range, EyeLike -----------------------------------------------

def _shape_all(data: np.ndarray) -> np.ndarray:
    return np.array(data.shape, np.int64)


def _lower_shape(node: Node, g: Graph) -> Call:
    if node.attrs.get("start", 0) == 0 and node.attrs.get("end") is None:
        return Call(_shape_all, [Ref(node.inputs[0])])
    return default(Shape, node, g)


@op("Shape", since=1, lower=_lower_shape, meta_inputs=(0,), host_outputs=True)
def Shape(data: np.ndarray, *, start: int = 0, end: int | None = None) -> np.ndarray:
    return np.array(data.shape[start:end], np.int64)  # Python's slice clamping is Shape-15's


@op("Size", since=1, meta_inputs=(0,), host_outputs=True)
def Size(data: np.ndarray) -> np.ndarray:
    return np.array(data.size, np.int64)


@op("ConstantOfShape", since=9)
def ConstantOfShape(input: np.ndarray, *, value: np.ndarray | None = None) -> np.ndarray:
    shape = input.reshape(-1).tolist()
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"ConstantOfShape: shape {shape} has a negative dimension")
    memory.check("ConstantOfShape", shape, np.float32 if value is None else value.dtype)
    if value is None:
        return np.zeros(shape, np.float32)
    if value.size != 1:
        raise InvalidArgument(f"ConstantOfShape: 'value' must hold one element, it has {value.size}")
    if value.dtype != object and not any(value.tobytes()):  # all-zero bits (not -0.0): calloc'd zeros
        return np.zeros(shape, value.dtype)
    v = value.reshape(-1)[0]
    out = np.empty(shape, value.dtype)
    out.fill(v)
    return out


@op("Range", since=11)
def Range(start: np.ndarray, limit: np.ndarray, delta: np.ndarray, *, stash_type: int = 1) -> np.ndarray:
    dt = start.dtype
    if start.size != 1 or limit.size != 1 or delta.size != 1:
        raise InvalidArgument("Range: start, limit and delta must be scalars")
    s, lim, d = start.reshape(()), limit.reshape(()), delta.reshape(())
    if d == 0:
        raise InvalidArgument("Range: delta must not be 0")
    if dt.kind in "iu":
        a, b, c = int(s), int(lim), int(d)
        n = max(-((a - b) // c), 0)  # ceil((limit - start) / delta), exact
        memory.check("Range", [n], np.int64)
        return (np.arange(n, dtype=np.int64) * c + a).astype(dt)
    # onnxruntime: n = ceil(double(limit - start) / delta) with the difference taken in T. Values follow
    # the spec's start + i * delta, computed in double (as exact as T allows; stash_type has no effect).
    n = max(memory.finite_count("Range", float(lim - s) / float(d), ceil=True), 0)
    memory.check("Range", [n], np.float64)
    return (np.arange(n, dtype=np.float64) * float(d) + float(s)).astype(dt)


@op("EyeLike", since=9)
def EyeLike(input: np.ndarray, *, _dtypes: tuple, k: int = 0, dtype: int | None = None) -> np.ndarray:
    if input.ndim != 2:
        raise InvalidArgument(f"EyeLike: the input must be 2-D, it has shape {list(input.shape)}")
    dt = _dtypes[0]
    if dt is None:
        from onnx import helper
        dt = input.dtype if dtype is None else np.dtype(helper.tensor_dtype_to_np_dtype(dtype))
    return np.eye(input.shape[0], input.shape[1], k, dtype=dt)


# --- Dropout (inference) ------------------------------------------------------------------------

def _dropout_out(data: np.ndarray, nout: int, mask_dtype: Any) -> Any:
    if nout < 2:
        return data
    return data, np.ones(data.shape, mask_dtype)


@op("Dropout", since=1)
def Dropout_1(data: np.ndarray, *, _nout: int, _dtypes: tuple) -> Any:
    # Opsets 1-9: is_test/ratio attributes; an inference runtime runs every Dropout in test mode.
    return _dropout_out(data, _nout, _dtypes[1] if _nout > 1 and _dtypes[1] is not None else data.dtype)


@op("Dropout", since=10)
def Dropout_10(data: np.ndarray, *, _nout: int) -> Any:
    return _dropout_out(data, _nout, np.bool_)


@op("Dropout", since=12, random_inputs=(2,))  # random when training_mode is on at run time
def Dropout(data: np.ndarray, ratio: np.ndarray | None = None, training_mode: np.ndarray | None = None, *,
            _nout: int) -> Any:
    if training_mode is not None and training_mode.size and bool(training_mode.reshape(-1)[0]):
        raise OrtNotImplemented("Dropout: training_mode=True is not supported (jitort is an inference runtime)")
    return _dropout_out(data, _nout, np.bool_)


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
