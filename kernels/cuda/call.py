"""What a CUDA registration's ``lower`` returns (``CudaCall``, with ``HostRef``/``Dev`` arguments) and
the checks its ``check`` builds from (dtypes, ranks, inputs present at compile time). The registrations
are in ``kernels/cuda/ops.py`` and ``kernels/cuda/movement_ops.py``; see ops.py for the contract.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from jitort.ir import Graph, Node
from jitort.kernels.registry import Ref

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
MAX_RANK = 6


@dataclass(frozen=True)
class HostRef:
    """A run-time value the launcher reads on the host."""

    name: str


@dataclass(frozen=True, eq=False)
class Dev:
    """A compile-time array the launcher reads on the device (uploaded when the plan is built)."""

    data: np.ndarray
    label: str = ""


@dataclass
class CudaCall:
    fn: Callable[..., Any]
    args: list[Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    kernels: list[tuple[Callable, str]] = field(default_factory=list)


# --- helpers -------------------------------------------------------------------------------------

def dtype_of(g: Graph, name: str) -> np.dtype | None:
    t = g.type_of(name).dtype
    return None if t is None else np.dtype(t)


def rank_of(g: Graph, name: str) -> int | None:
    return g.type_of(name).rank


def tensor_types(node: Node, g: Graph) -> str | None:
    """Every input and output is a tensor of a known, fixed-size dtype."""
    for v in [*node.inputs, *node.outputs]:
        if not v:
            continue
        dt = dtype_of(g, v)
        if dt is None:
            return f"dtype of '{v}' unknown at compile time"
        if dt.kind in "OUSV" and dt.name != "bfloat16" or dt.itemsize not in (1, 2, 4, 8):
            return f"dtype {dt} of '{v}' is not a device tensor type"
    return None


def float_in(node: Node, g: Graph, k: int = 0) -> str | None:
    dt = dtype_of(g, node.inputs[k])
    if dt not in FLOATS:
        return f"dtype {dt}: the CUDA kernel computes float32/float64"
    return None


def first_reason(*reasons: Callable[[], str | None]) -> str | None:
    for r in reasons:
        why = r()
        if why:
            return why
    return None


def rank_at_most(node: Node, g: Graph, k: int, limit: int = MAX_RANK) -> str | None:
    r = rank_of(g, node.inputs[k])
    if r is None:
        return "rank unknown at compile time"
    if r > limit:
        return f"rank {r} > {limit}"
    return None


def present(node: Node, k: int) -> bool:
    return len(node.inputs) > k and bool(node.inputs[k])


def dev_ref(name: str) -> Ref | None:
    return Ref(name) if name else None


def dtype_key(g: Graph, name: str) -> str:
    return str(dtype_of(g, name).name)  # type: ignore[union-attr]


def move_key(g: Graph, name: str) -> str:
    return f"uint{8 * dtype_of(g, name).itemsize}"  # type: ignore[union-attr]
