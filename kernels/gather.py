"""Indexing ops: Gather*, Scatter*, OneHot, NonZero, Compress, ReverseSequence.

Each op is one numpy fancy-indexing expression (``take``, an index tuple, ``ufunc.at`` for the
scatter reductions): numpy's gather/scatter loops run at memory speed for every dtype, strings
included, and do the bounds checks onnxruntime does. Negative indices count from the back, as the
spec allows; an index outside ``[-s, s-1]`` raises InvalidArgument naming the op, never a wrong
answer. The scalar Gather that transformer graphs use on shape tensors is lowered to one
``data[i, ...]`` view (a few hundred ns).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from jitort import memory
from jitort.errors import InvalidArgument
from jitort.ir import Graph, Node
from jitort.kernels.registry import Call, Ref, op
from jitort.kernels.shape import const_input, contig, default, norm_axis, rank_of


def _out_of_range(opname: str, data_shape: tuple[int, ...], axes: list[int], indices: np.ndarray
                  ) -> InvalidArgument:
    """onnxruntime's wording: the first index outside [-s, s-1] and the range it must be in."""
    idx = np.asarray(indices).astype(np.int64, copy=False)
    for k, a in enumerate(axes):
        col = idx if len(axes) == 1 else idx[..., k]
        s = data_shape[a]
        bad = col[(col < -s) | (col >= s)]
        if bad.size:
            return InvalidArgument(f"{opname}: indices element out of data bounds, idx={int(bad.reshape(-1)[0])} "
                                   f"must be within the inclusive range [{-s},{s - 1}]")
    return InvalidArgument(f"{opname}: indices of shape {list(idx.shape)} do not fit data of shape "
                           f"{list(data_shape)}")


def _as_array(x: Any, dt: np.dtype) -> np.ndarray:
    """numpy returns a scalar where ONNX wants a 0-d tensor."""
    return contig(x) if isinstance(x, np.ndarray) else np.array(x, dtype=dt)


# --- Gather -------------------------------------------------------------------------------------

def _gather_scalar(data: np.ndarray, idx: tuple) -> np.ndarray:
    """``idx`` = (slice(None),) * axis + (i, Ellipsis): a view, copied only when not contiguous."""
    try:
        y = data[idx]
    except IndexError:
        raise _out_of_range("Gather", data.shape, [len(idx) - 2], np.array(idx[-2])) from None
    return y if y.flags.c_contiguous else y.copy()


def _lower_gather(node: Node, g: Graph) -> Call:
    ind = const_input(node, g, 1)
    axis = int(node.attrs.get("axis", 0))
    r = rank_of(node, g)
    if ind is not None and ind.ndim == 0 and r is not None and -r <= axis < r:
        a = axis + r if axis < 0 else axis
        return Call(_gather_scalar, [Ref(node.inputs[0]), (slice(None),) * a + (int(ind), Ellipsis)])
    return default(Gather, node, g)


@op("Gather", since=1, lower=_lower_gather)
def Gather(data: np.ndarray, indices: np.ndarray, *, axis: int = 0) -> np.ndarray:
    a = norm_axis("Gather", axis, data.ndim)
    if a == 0 and indices.size == 1:  # one row, as a decode step's token embedding: np.take costs ~7 us
        try:
            row = data[indices.item()]
        except IndexError:
            raise _out_of_range("Gather", data.shape, [a], indices) from None
        # a copy, never a view of the data (a 1-D data's row is a NumPy scalar: its dtype is data's)
        out = row.copy() if isinstance(row, np.ndarray) else np.array(row, dtype=data.dtype)
        return out.reshape(indices.shape + data.shape[1:])
    try:
        out = np.take(data, indices, axis=a)
    except IndexError:
        raise _out_of_range("Gather", data.shape, [a], indices) from None
    return _as_array(out, data.dtype)


# --- GatherElements, ScatterElements --------------------------------------------------------------

def _along_axis(indices: np.ndarray, axis: int) -> tuple[np.ndarray, ...]:
    """The fancy index selecting data[i0, .., indices[i0, .., ir], .., ir] for every element of indices."""
    r = indices.ndim
    return tuple(indices if d == axis else np.arange(n).reshape((1,) * d + (n,) + (1,) * (r - d - 1))
                 for d, n in enumerate(indices.shape))


def _check_elements(opname: str, data: np.ndarray, indices: np.ndarray, axis: int) -> int:
    if indices.ndim != data.ndim or data.ndim == 0:
        raise InvalidArgument(f"{opname}: indices (shape {list(indices.shape)}) must have the rank of data "
                              f"(shape {list(data.shape)}), which must be >= 1")
    a = norm_axis(opname, axis, data.ndim)
    for d in range(data.ndim):
        if d != a and indices.shape[d] > data.shape[d]:
            raise InvalidArgument(f"{opname}: indices dimension {d} ({indices.shape[d]}) exceeds data's "
                                  f"({data.shape[d]})")
    return a


@op("GatherElements", since=11)
def GatherElements(data: np.ndarray, indices: np.ndarray, *, axis: int = 0) -> np.ndarray:
    a = _check_elements("GatherElements", data, indices, axis)
    try:
        return contig(data[_along_axis(indices, a)])
    except IndexError:
        raise _out_of_range("GatherElements", data.shape, [a], indices) from None


_REDUCE = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter(opname: str, data: np.ndarray, idx: tuple, updates: np.ndarray, reduction: str) -> np.ndarray:
    out = data.copy()
    if reduction == "none":
        out[idx] = updates
    elif reduction in _REDUCE:
        _REDUCE[reduction].at(out, idx, updates)
    else:
        raise InvalidArgument(f"{opname}: unknown reduction '{reduction}' (none, add, mul, max, min)")
    return out


@op("ScatterElements", since=11)
def ScatterElements(data: np.ndarray, indices: np.ndarray, updates: np.ndarray, *, axis: int = 0,
                    reduction: str = "none") -> np.ndarray:
    a = _check_elements("ScatterElements", data, indices, axis)
    if updates.shape != indices.shape:
        raise InvalidArgument(f"ScatterElements: updates shape {list(updates.shape)} must equal indices shape "
                              f"{list(indices.shape)}")
    try:
        return _scatter("ScatterElements", data, _along_axis(indices, a), updates, reduction)
    except IndexError:
        raise _out_of_range("ScatterElements", data.shape, [a], indices) from None


@op("Scatter", since=9)
def Scatter(data: np.ndarray, indices: np.ndarray, updates: np.ndarray, *, axis: int = 0) -> np.ndarray:
    return ScatterElements(data, indices, updates, axis=axis, reduction="none")


# --- GatherND, ScatterND ------------------------------------------------------------------------

def _nd_index(indices: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(indices[..., j] for j in range(indices.shape[-1]))


@op("GatherND", since=11)
def GatherND(data: np.ndarray, indices: np.ndarray, *, batch_dims: int = 0) -> np.ndarray:
    b = batch_dims
    if indices.ndim < 1 or data.ndim < 1 or b < 0 or b >= min(data.ndim, indices.ndim):
        raise InvalidArgument(f"GatherND: batch_dims {b} must be below the ranks of data {list(data.shape)} "
                              f"and indices {list(indices.shape)}")
    k = indices.shape[-1]
    if k > data.ndim - b or data.shape[:b] != indices.shape[:b]:
        raise InvalidArgument(f"GatherND: indices of shape {list(indices.shape)} do not fit data of shape "
                              f"{list(data.shape)} with batch_dims={b}")
    out_shape = indices.shape[:-1] + data.shape[b + k:]
    nb = math.prod(data.shape[:b])
    d2 = data.reshape((nb,) + data.shape[b:])
    i2 = indices.reshape((nb,) + indices.shape[b:])
    bidx = np.broadcast_to(np.arange(nb).reshape((nb,) + (1,) * (i2.ndim - 2)), i2.shape[:-1])
    try:
        out = d2[(bidx,) + _nd_index(i2)]
    except IndexError:
        raise _out_of_range("GatherND", data.shape, list(range(b, b + k)), indices) from None
    return contig(out.reshape(out_shape))


@op("ScatterND", since=11)
def ScatterND(data: np.ndarray, indices: np.ndarray, updates: np.ndarray, *, reduction: str = "none"
              ) -> np.ndarray:
    k = indices.shape[-1] if indices.ndim else -1
    if k < 0 or k > data.ndim or updates.shape != indices.shape[:-1] + data.shape[k:]:
        raise InvalidArgument(f"ScatterND: indices {list(indices.shape)} and updates {list(updates.shape)} do "
                              f"not fit data {list(data.shape)}: updates must have shape indices.shape[:-1] + "
                              "data.shape[indices.shape[-1]:]")
    if k == 0:  # every update addresses the whole tensor
        out = data.copy()
        for u in updates.reshape((-1,) + data.shape):
            out = _scatter("ScatterND", out, (), u, reduction)
        return out
    try:
        return _scatter("ScatterND", data, _nd_index(indices), updates, reduction)
    except IndexError:
        raise _out_of_range("ScatterND", data.shape, list(range(k)), indices) from None


# --- OneHot, NonZero, Compress, ReverseSequence --------------------------------------------------

@op("OneHot", since=9)
def OneHot(indices: np.ndarray, depth: np.ndarray, values: np.ndarray, *, axis: int = -1) -> np.ndarray:
    if depth.size != 1 or values.size != 2:
        raise InvalidArgument(f"OneHot: depth must hold 1 value (has {depth.size}) and values 2 (has "
                              f"{values.size})")
    d = int(depth.reshape(-1)[0])
    if d < 1:
        raise InvalidArgument(f"OneHot: depth must be positive, got {d}")
    r = indices.ndim + 1
    a = norm_axis("OneHot", axis, r)
    memory.check("OneHot", indices.shape[:a] + (d,) + indices.shape[a:], values.dtype)
    idx = indices.astype(np.int64)  # float indices truncate, as onnxruntime casts them
    idx = np.where(idx < 0, idx + d, idx)
    hot = idx.reshape(idx.shape[:a] + (1,) + idx.shape[a:]) == np.arange(d).reshape((d,) + (1,) * (r - a - 1))
    v = values.reshape(-1)
    return contig(np.where(hot, v[1], v[0]).astype(values.dtype, copy=False))


@op("NonZero", since=9)
def NonZero(X: np.ndarray) -> np.ndarray:
    x = X.reshape(1) if X.ndim == 0 else X  # onnxruntime treats a scalar as a 1-element vector
    nz = np.nonzero(x)
    return np.array(nz, dtype=np.int64).reshape(len(nz), -1)


@op("Compress", since=9)
def Compress(input: np.ndarray, condition: np.ndarray, *, axis: int | None = None) -> np.ndarray:
    c = condition.reshape(-1).astype(np.bool_, copy=False)
    if axis is None:
        flat = input.reshape(-1)
        return np.compress(c[:flat.shape[0]], flat)
    a = norm_axis("Compress", axis, input.ndim)
    # A condition shorter than the axis drops the slices past its end; a longer one is cut.
    return contig(np.compress(c[:input.shape[a]], input, axis=a))


@op("ReverseSequence", since=10)
def ReverseSequence(input: np.ndarray, sequence_lens: np.ndarray, *, batch_axis: int = 1,
                    time_axis: int = 0) -> np.ndarray:
    if {batch_axis, time_axis} != {0, 1} or input.ndim < 2:
        raise InvalidArgument(f"ReverseSequence: batch_axis ({batch_axis}) and time_axis ({time_axis}) must be "
                              f"0 and 1 in some order, and the input (shape {list(input.shape)}) rank >= 2")
    nb, nt = input.shape[batch_axis], input.shape[time_axis]
    lens = sequence_lens.reshape(-1).astype(np.int64)
    if lens.shape[0] != nb or (lens.size and (lens.min() < 0 or lens.max() > nt)):
        raise InvalidArgument(f"ReverseSequence: sequence_lens {lens.tolist()} must hold {nb} values in "
                              f"[0, {nt}]")
    t = np.arange(nt)[None, :]
    src = np.where(t < lens[:, None], lens[:, None] - 1 - t, t)  # (batch, time)
    b = np.arange(nb)[:, None]
    out = input[b, src] if batch_axis == 0 else input[src.T, b.T]
    return contig(out)
