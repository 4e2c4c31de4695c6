"""Source for the output shape of a fused elementwise group, read from its operands' shapes at run time.

A plan allocates a fused group's outputs before it calls (CPU) or launches (CUDA) the kernel. With
every operand's broadcast pattern known at compile time (``jitort.passes.fusion.broadcast_pattern``:
``'s'`` the loop's own dim, ``'1'`` broadcast, ``'-'`` a leading dim the operand lacks), each output
dim is read from an operand that has it, or is the static loop dim where none does.
"""
from __future__ import annotations

from typing import Sequence

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
