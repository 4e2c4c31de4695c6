"""Constant folding with jitort's own kernels.

Invariant after the pass: no node remains whose inputs are all compile-time constants (except ops
that must run each time, like the random generators, and ops whose outputs are no tensors, like
the sequence ops: ``registry.folds`` reads both facts from the op table), and Shape/Size of
statically shaped values are constants. Folded values keep their data in ``Value.const``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from jitort import memory
from jitort.ir import Graph, Node
from jitort.arrays import contiguous
from jitort.kernels import registry

# Above this many elements a folded constant costs more memory than the work it saves.
MAX_FOLD_ELEMENTS = 1 << 22
# Folding runs kernels on the model's constants at session creation: a node whose output would be
# larger than this (a constant Range(0, 2**40), say) is not folded but left to run time, where the
# session's tensor limit applies and the error names the node (jitort.memory).
MAX_FOLD_BYTES = 64 << 20

# Except ConstantOfShape: it would allocate and fill the same tensor at every run, under the session's
# tensor limit (jitort.memory), so folding it costs no more memory than one run does, and saves the
# fill (onnxruntime folds it too). The light CNNs' fully connected weights are ConstantOfShape outputs
# of 151-411 MB: left to run time, alexnet's 4096 x 9216 took 17 ms per run to fill (of 64 ms) and its
# Gemm ran on unpacked weights. The constants folded past MAX_FOLD_BYTES this way are capped in total
# by the same limit.
_FILLS = frozenset({"ConstantOfShape"})

Evaluator = Callable[[Node, Graph], Sequence[np.ndarray]]


def fold_constants(g: Graph, evaluate: Evaluator) -> Graph:
    keep: list[Node] = []
    large = [0]  # bytes of the fills folded past MAX_FOLD_BYTES
    for n in g.nodes:
        folded = _fold_shape(n, g)
        if folded is None and _foldable(n, g):
            folded = _evaluate_bounded(n, g, evaluate, large)
        if folded is None:
            keep.append(n)
            continue
        for name, arr in zip(n.outputs, folded):
            if name:
                v = g.value(name)
                v.const = contiguous(np.asarray(arr))
                if v.type.dtype is None:
                    v.type.dtype = v.const.dtype
                v.type.shape = tuple(v.const.shape)
        g.notes.append(f"folded: {n.name} ({n.op_type})")
    g.nodes = keep
    return g


def _evaluate_bounded(n: Node, g: Graph, evaluate: Evaluator, large: list[int]) -> list[np.ndarray] | None:
    """The node's outputs, or None when one would exceed its fold budget (known from its inferred
    static shape, or found by the kernel's memory check) or the kernel fails on these constants.
    The budget: MAX_FOLD_BYTES, or for a fill (``_FILLS``) what the session's tensor limit leaves
    of it after the fills already folded past MAX_FOLD_BYTES (``large[0]`` bytes, updated here)."""
    cap = MAX_FOLD_BYTES
    if n.domain == "" and n.op_type in _FILLS:
        cap = max(MAX_FOLD_BYTES, memory.limit() - large[0])
    for o in n.outputs:
        t = g.type_of(o) if o else None
        if t is not None and t.is_static() and t.dtype is not None and \
                math.prod(int(d) for d in t.shape) * np.dtype(t.dtype).itemsize > cap:  # type: ignore[union-attr]
            g.notes.append(f"not folded: {n.name} ({n.op_type}): its output is over {cap} bytes")
            return None
    try:
        with memory.budget(cap):
            out = list(evaluate(n, g))
    except Exception as e:  # noqa: BLE001 - a node that fails on its constants fails at run time,
        # naming the node, as in onnxruntime (whose folding also leaves such a node in the graph)
        g.notes.append(f"not folded: {n.name} ({n.op_type}): {type(e).__name__}: {e.args[0] if e.args else ''}")
        return None
    nbytes = sum(int(a.nbytes) for a in out)
    if nbytes > MAX_FOLD_BYTES:
        large[0] += nbytes
    return out


def _foldable(n: Node, g: Graph) -> bool:
    if any(isinstance(a, Graph) for a in n.attrs.values()):
        return False
    if n.domain not in ("", "jitort") or not registry.folds(n):
        return False
    ins = [i for i in n.inputs if i]
    if not all(g.const(i) is not None for i in ins):
        return False
    return sum(int(np.prod(g.const(i).shape)) for i in ins) <= MAX_FOLD_ELEMENTS  # type: ignore[union-attr]


def _fold_shape(n: Node, g: Graph) -> list[np.ndarray] | None:
    if n.domain != "" or n.op_type not in ("Shape", "Size") or not n.inputs:
        return None
    t = g.type_of(n.inputs[0])
    if not t.is_static():
        if n.op_type == "Shape" and t.shape is not None:
            start, end = _shape_slice(n, len(t.shape))
            if all(isinstance(d, int) for d in t.shape[start:end]):
                return [np.array(t.shape[start:end], np.int64)]
        return None
    shape = tuple(int(d) for d in t.shape)  # type: ignore[union-attr, arg-type]
    if n.op_type == "Size":
        return [np.array(int(np.prod(shape)), np.int64)]
    start, end = _shape_slice(n, len(shape))
    return [np.array(shape[start:end], np.int64)]


def _shape_slice(n: Node, rank: int) -> tuple[int, int]:
    start = int(n.attrs.get("start", 0))
    end = n.attrs.get("end")
    start = max(0, min(rank, start + rank if start < 0 else start))
    e = rank if end is None else int(end)
    e = max(0, min(rank, e + rank if e < 0 else e))
    return start, e
