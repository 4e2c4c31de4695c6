"""Assign each node to the first provider, in the session's priority order, that can run it.

Invariant after the pass: every node's ``provider`` names a provider in the list. Only the CPU
provider exists today; a CUDA provider plugs in by adding a ``supports`` predicate here and the
partitioner inserting device copies between neighbouring nodes of different providers.
"""
from __future__ import annotations

from typing import Callable

from jitort.ir import Graph, Node

CPU = "CPUExecutionProvider"

SUPPORTS: dict[str, Callable[[Node], bool]] = {CPU: lambda n: True}


def partition(g: Graph, providers: list[str]) -> Graph:
    for n in g.nodes:
        n.provider = next((p for p in providers if SUPPORTS.get(p, lambda _: False)(n)), CPU)
    return g
