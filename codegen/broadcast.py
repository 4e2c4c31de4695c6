"""The output shape of a fused elementwise group, which a plan needs before it calls the kernel.

A plan allocates a fused group's outputs before it calls (CPU) or launches (CUDA) the kernel. With
every operand's broadcast pattern known at compile time (``jitort.passes.fusion.broadcast_pattern``:
``'s'`` the loop's own dim, ``'1'`` broadcast, ``'-'`` a leading dim the operand lacks), each output
dim is read from an operand that has it, or is the static loop dim where none does
(``output_shape_source``). Where a pattern is known only at run time (a "strided" CPU kernel), the
plan calls ``broadcast_shape`` and ``expand_to``: numpy's broadcasting, with fast paths for the
common cases (``np.broadcast_shapes`` and ``np.broadcast_to`` cost 3-7 us a call, more than the
kernel of a tiny step).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Shape


def output_shape_source(inputs: Sequence[str], patterns: Sequence[tuple[str, ...]], loop_shape: Shape,
                        locals_: dict[str, str]) -> str:
    """Source of the loop's shape; ``locals_`` maps each input value to its plan local."""
    R = len(loop_shape)
    for name, p in zip(inputs, patterns):
        if all(s == "s" for s in p):
            return f"{locals_[name]}.shape"
    dims = []
    for d in range(R):
        src = None
        for name, p in zip(inputs, patterns):
            off = R - sum(1 for s in p if s != "-")  # the operand's rank
            if p[d] == "s" and d >= off:
                src = f"{locals_[name]}.shape[{d - off}]"
                break
        if src is None:
            dim = loop_shape[d]
            if not isinstance(dim, int):
                raise OrtNotImplemented(f"jitort cannot derive output dim {dim} of a fused kernel")
            src = str(dim)
        dims.append(src)
    return "(" + ", ".join(dims) + ("," if R == 1 else "") + ")"


def broadcast_shape(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """``np.broadcast_shapes(*shapes)`` (the same result, the same ValueError), in ~0.2 us where the
    shapes are equal or the others scalars."""
    out = shapes[0]
    for s in shapes[1:]:
        if s == out or not s:
            continue
        if not out:
            out = s
            continue
        a, b = (out, s) if len(out) >= len(s) else (s, out)
        off = len(a) - len(b)
        dims = list(a)
        for k, d in enumerate(b):
            e = a[off + k]
            if d != e and d != 1:
                if e != 1:
                    return np.broadcast_shapes(*shapes)  # raises numpy's error
                dims[off + k] = d
        out = tuple(dims)
    return out


def expand_to(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` itself where it has ``shape``, else ``x`` broadcast to ``shape`` as a read-only view
    (``np.broadcast_to``'s result; built directly from ``x``'s buffer when it is C-contiguous, in
    about a third of the time)."""
    if x.shape == shape:
        return x
    off = len(shape) - x.ndim
    if off < 0 or not x.flags.c_contiguous:
        return np.broadcast_to(x, shape)
    strides = [0] * off
    for k, d in enumerate(x.shape):
        if d == shape[off + k]:
            strides.append(x.strides[k])
        elif d == 1:
            strides.append(0)
        else:
            return np.broadcast_to(x, shape)  # raises numpy's error
    v = np.ndarray(shape, x.dtype, x, 0, tuple(strides))
    v.flags.writeable = False
    return v
