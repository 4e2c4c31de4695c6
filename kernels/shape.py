"""Shape ops: Reshape, Flatten, Squeeze, Unsqueeze, Identity (the output is the input with another
shape), Shape and Size (metadata), ConstantOfShape, Range and EyeLike (tensors made from a shape),
and Dropout at inference; plus the lowering helpers the data-movement families share (``contig``,
``norm_axis``, ``const_input``, ``rank_of``, ``default`` ...).

What matters is the Python path of each call, because a transformer runs dozens of
Reshape/Unsqueeze/Shape nodes per inference: ``lower=`` hooks fold constant shape/axes inputs into
plain tuples at compile time, so the plan calls a two-line function (a few hundred ns) instead of
re-parsing int64 tensors each run. A view of the input is returned when it already is C-contiguous:
jitort never writes into an op's inputs, so sharing memory is safe and saves the copy.
(Concat, Split, Slice, Expand, Tile, Pad and Trilu are in kernels/movement.py; Transpose,
DepthToSpace/SpaceToDepth in kernels/layout.py; Gather and friends in kernels/gather.py.)
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

Dims = tuple[int, ...]


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


def static_shape(node: Node, g: Graph, k: int = 0) -> Dims | None:
    """Input k's shape when every dim is static (graph inputs are checked against them at run time)."""
    t = g.type_of(node.inputs[k])
    return tuple(t.shape) if t.is_static() else None  # type: ignore[arg-type]


def default(fn: Callable[..., Any], node: Node, g: Graph) -> Call:
    return default_call(OpDef(node.op_type, node.domain, node.version, fn=fn), node, g)


def _shape_error(opname: str, x: np.ndarray, want: Any, e: Exception) -> InvalidArgument:
    return InvalidArgument(f"{opname}: cannot turn input of shape {list(x.shape)} ({x.size} elements) into "
                           f"shape {list(want)}: {e}")


# --- Reshape ------------------------------------------------------------------------------------

def _reshape_to(data: np.ndarray, shape: Dims) -> np.ndarray:
    try:
        return data.reshape(shape)
    except ValueError as e:
        raise _shape_error("Reshape", data, shape, e) from None


_reshape_to.compile_parts = lambda *args, **kwargs: {}  # type: ignore[attr-defined]  # numpy only


def _reshape_zeros(data: np.ndarray, shape: Dims) -> np.ndarray:
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


def _reshape_prefix(data: np.ndarray, n: int, tail: Dims) -> np.ndarray:
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


def _squeeze_axes(data: np.ndarray, axes: Dims) -> np.ndarray:
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


def _unsqueeze_at(data: np.ndarray, axes: Dims) -> np.ndarray:
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
