"""Sequences and optionals: SequenceEmpty/Construct/At/Insert/Erase/Length, SplitToSequence,
ConcatFromSequence, SequenceMap, Optional, OptionalHasElement, OptionalGetElement.

A sequence is a Python list of C-contiguous arrays, an optional is ``None`` (empty) or its value.
Ops never mutate a list they receive: a new list is returned, so a value may be shared.
These ops only move data, so numpy does the work directly.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from jitort.errors import InvalidArgument
from jitort.ir import Graph, Node
from jitort.kernels.control import lower_with_bodies
from jitort.kernels.registry import op
from jitort.arrays import contiguous

# Ops producing lists or empty optionals register tensor_outputs=False: constant folding stores numpy
# arrays and skips them.


def _position(pos: np.ndarray | None, n: int, op_name: str, default: int, insert: bool = False) -> int:
    if pos is None:
        return default
    p = int(np.asarray(pos).reshape(-1)[0])
    hi = n if insert else n - 1
    if p < -n or p > hi:
        raise InvalidArgument(f"{op_name}: position {p} is out of range for a sequence of {n} tensors "
                              f"(expected [{-n}, {hi}])")
    return p + n if p < 0 else p


def _seq(x: Any, op_name: str) -> list[np.ndarray]:
    if not isinstance(x, list):
        raise InvalidArgument(f"{op_name}: expected a sequence (list of tensors), got {type(x).__name__}")
    return x


@op("SequenceEmpty", since=11, tensor_outputs=False)
def SequenceEmpty(*, dtype: int = 1) -> list:
    return []


@op("SequenceConstruct", since=11, tensor_outputs=False)
def SequenceConstruct(*inputs: np.ndarray) -> list:
    return list(inputs)


@op("SequenceAt", since=11)
def SequenceAt(seq: list, position: np.ndarray) -> np.ndarray:
    s = _seq(seq, "SequenceAt")
    return s[_position(position, len(s), "SequenceAt", 0)]


@op("SequenceInsert", since=11, tensor_outputs=False)
def SequenceInsert(seq: list, tensor: np.ndarray, position: np.ndarray | None = None) -> list:
    s = list(_seq(seq, "SequenceInsert"))
    s.insert(_position(position, len(s), "SequenceInsert", len(s), insert=True), tensor)
    return s


@op("SequenceErase", since=11, tensor_outputs=False)
def SequenceErase(seq: list, position: np.ndarray | None = None) -> list:
    s = list(_seq(seq, "SequenceErase"))
    if not s:
        raise InvalidArgument("SequenceErase: the sequence is empty")
    del s[_position(position, len(s), "SequenceErase", len(s) - 1)]
    return s


@op("SequenceLength", since=11)
def SequenceLength(seq: list) -> np.ndarray:
    return np.array(len(_seq(seq, "SequenceLength")), np.int64)


@op("SplitToSequence", since=11, tensor_outputs=False)
def SplitToSequence(x: np.ndarray, split: np.ndarray | None = None, *, axis: int = 0, keepdims: int = 1) -> list:
    ax = axis + x.ndim if axis < 0 else axis
    if not 0 <= ax < x.ndim:
        raise InvalidArgument(f"SplitToSequence: axis {axis} is out of range for rank {x.ndim}")
    n = x.shape[ax]
    if split is None:
        parts = [np.take(x, k, axis=ax) if not keepdims else np.take(x, [k], axis=ax) for k in range(n)]
        return [contiguous(p) for p in parts]
    s = np.asarray(split).astype(np.int64)
    if s.ndim == 0:
        size = int(s)
        if size <= 0:
            raise InvalidArgument(f"SplitToSequence: split must be positive, got {size}")
        lengths = [size] * (n // size) + ([n % size] if n % size else [])
    else:
        lengths = [int(v) for v in s]
        if sum(lengths) != n or any(v < 0 for v in lengths):
            raise InvalidArgument(f"SplitToSequence: split {lengths} does not sum to dimension {n} of axis {axis}")
    out, start = [], 0
    for ln in lengths:
        idx = [slice(None)] * x.ndim
        idx[ax] = slice(start, start + ln)
        out.append(np.array(x[tuple(idx)], order="C", copy=True))
        start += ln
    return out


@op("ConcatFromSequence", since=11)
def ConcatFromSequence(seq: list, *, axis: int, new_axis: int = 0, _dtypes: tuple = ()) -> np.ndarray:
    s = _seq(seq, "ConcatFromSequence")
    if not s:
        dt = _dtypes[0] if _dtypes and _dtypes[0] is not None else np.float32
        raise InvalidArgument(f"ConcatFromSequence: the sequence is empty (of {np.dtype(dt)})")
    rank = s[0].ndim + (1 if new_axis else 0)
    if not -rank <= axis < rank:
        raise InvalidArgument(f"ConcatFromSequence: axis {axis} is out of range for rank {rank}")
    if new_axis:
        return contiguous(np.stack(s, axis=axis))
    return contiguous(np.concatenate(s, axis=axis))


def _lower_sequence_map(node: Node, g: Graph) -> Any:
    return lower_with_bodies(node, g, SequenceMap, formal_counts={"body": None})


@op("SequenceMap", since=17, lower=_lower_sequence_map, tensor_outputs=False)
def SequenceMap(seq: list, *rest: Any, body: Any, n_additional: int, _nout: int = 1) -> tuple:
    """Apply ``body`` to each element (and the matching element of every additional sequence input;
    tensor additional inputs are passed whole)."""
    s = _seq(seq, "SequenceMap")
    extra, free = rest[:n_additional], rest[n_additional:]
    for e in extra:
        if isinstance(e, list) and len(e) != len(s):
            raise InvalidArgument(f"SequenceMap: additional sequence of {len(e)} tensors, expected {len(s)}")
    outs: list[list[Any]] = [[] for _ in range(_nout)]
    for k, x in enumerate(s):
        args = [x] + [e[k] if isinstance(e, list) else e for e in extra]
        res = body(*args, *free)
        for j in range(_nout):
            outs[j].append(res[j])
    return tuple(outs) if _nout > 1 else outs[0]


@op("Optional", since=15, tensor_outputs=False)
def Optional(x: Any = None, *, type: Any = None) -> Any:
    return x


@op("OptionalHasElement", since=15)
def OptionalHasElement(x: Any = None) -> np.ndarray:
    return np.array(x is not None)


@op("OptionalGetElement", since=15)
def OptionalGetElement(x: Any) -> Any:
    if x is None:
        raise InvalidArgument("OptionalGetElement: the optional is empty")
    return x
