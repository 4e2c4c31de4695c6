"""Remove what inference does not need: Identity, inference-mode Dropout, dead nodes.

Invariant after the pass: no Identity/Dropout node whose output can be renamed away remains, and
every node contributes to a graph output.
"""
from __future__ import annotations

from jitort.ir import Graph, Node


def _rename_inputs(nodes: list[Node], old: str, new: str) -> None:
    for n in nodes:
        n.inputs = [new if i == old else i for i in n.inputs]
        for sub in _subgraphs(n):
            _rename_inputs(sub.nodes, old, new)
            sub.outputs = [new if o == old else o for o in sub.outputs]


def _subgraphs(n: Node) -> list[Graph]:
    out: list[Graph] = []
    for a in n.attrs.values():
        if isinstance(a, Graph):
            out.append(a)
        elif isinstance(a, list):
            out.extend(x for x in a if isinstance(x, Graph))
    return out


def _is_passthrough(n: Node, g: Graph, used: set[str]) -> bool:
    """Whether n copies its input: Identity, or an inference Dropout whose mask output (if any) nothing
    reads (``used``: the names read anywhere, subgraphs and graph outputs included)."""
    if n.domain != "":
        return False
    if n.op_type == "Identity":
        return True
    if n.op_type == "Dropout":
        # Inference: output = input. The mask, when it is read, is all ones (the kernel makes it); a
        # mask nobody reads (what exporters of opset <= 9 wrote) costs nothing. Opset >= 12:
        # training_mode absent or false.
        if len(n.outputs) > 1 and n.outputs[1] and n.outputs[1] in used:
            return False
        if len(n.inputs) > 2 and n.inputs[2]:
            t = g.const(n.inputs[2])
            return t is not None and not bool(t)
        return True
    return False


def remove_passthrough(g: Graph) -> Graph:
    keep: list[Node] = []
    outputs = set(g.outputs)
    used = _used_names(g) | outputs
    for n in g.nodes:
        if _is_passthrough(n, g, used) and n.outputs[0] not in outputs and n.inputs and n.inputs[0]:
            _rename_inputs(g.nodes, n.outputs[0], n.inputs[0])
            continue
        keep.append(n)
    g.nodes = keep
    return g


def _used_names(g: Graph) -> set[str]:
    used = set()
    for n in g.nodes:
        used.update(i for i in n.inputs if i)
        for sub in _subgraphs(n):
            used |= _used_names(sub)
            used.update(sub.outputs)
    return used


def remove_dead(g: Graph) -> Graph:
    live = set(g.outputs)
    keep: list[Node] = []
    for n in reversed(g.nodes):
        if any(o in live for o in n.outputs if o):
            keep.append(n)
            live.update(i for i in n.inputs if i)
            for sub in _subgraphs(n):
                live |= _used_names(sub)
    g.nodes = keep[::-1]
    return g
