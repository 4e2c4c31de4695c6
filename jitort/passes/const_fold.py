"""Constant folding with jitort's own kernels.

Invariant after the pass: no node remains whose inputs are all compile-time constants (except ops
that must run each time, like the random generators), and Shape/Size of statically shaped values
are constants. Folded values keep their data in ``Value.const``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from jitort.ir import Graph, Node
from jitort.onnx_import import contiguous

# Ops whose result must not be computed once: random generators give fresh values on every run.
NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                    "Multinomial", "Bernoulli"}
# Above this many elements a folded constant costs more memory than the work it saves.
MAX_FOLD_ELEMENTS = 1 << 22

Evaluator = Callable[[Node, Graph], Sequence[np.ndarray]]


def fold_constants(g: Graph, evaluate: Evaluator) -> Graph:
    keep: list[Node] = []
    for n in g.nodes:
        folded = _fold_shape(n, g)
        if folded is None and _foldable(n, g):
            folded = list(evaluate(n, g))
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


def _foldable(n: Node, g: Graph) -> bool:
    if n.op_type in NONDETERMINISTIC or any(isinstance(a, Graph) for a in n.attrs.values()):
        return False
    if n.domain not in ("", "jitort"):
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
