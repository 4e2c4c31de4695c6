"""Generated plan line -> ONNX node: the map every plan module carries, read when a run fails.

The plan emitter (``jitort.codegen.plan``) tags each step's lines with the step's index in its
``IndentedBuffer`` (``origin``) and, from the tags of the finished module, builds one ``NodeLines``
per step: the first and last line (1-based) of the step in the module, its op and its node name as
the step's comment prints them (printable ASCII, ``comment_safe``; a fused group is op ``fused
elementwise`` with the names of its nodes). The lines the run executes after its last step (a CUDA
run's error check and synchronisation, where asynchronous kernel failures surface; the outputs
tuple) are tagged as the last step's. The map is written at the end of the module as the constant
``NODE_LINES``, so it lives with the plan wherever the plan is stored (cache entry, AOT artifact).

``node_at`` reads it for a traceback frame (``jitort.node_errors``); ``node_lines`` lists it from an
imported plan module's globals, ``parse_line_map`` from a plan's source without running it
(``jitort explain``, tests).
"""
from __future__ import annotations

import ast
from typing import Any, Hashable, Mapping, NamedTuple, Sequence

from jitort.codegen.source import string_literal

NODE_LINES = "NODE_LINES"


class NodeLines(NamedTuple):
    first: int   # 1-based, inclusive
    last: int
    op: str
    name: str


def build_line_map(origins: Sequence[Hashable | None], labels: Sequence[tuple[str, str]]) -> tuple[NodeLines, ...]:
    """One entry per step that wrote lines: ``origins`` are the module's line tags (step index or
    None), ``labels[k]`` step k's (op, node name)."""
    span: dict[int, list[int]] = {}
    for line, tag in enumerate(origins, start=1):
        if isinstance(tag, int):
            s = span.setdefault(tag, [line, line])
            s[1] = line
    return tuple(NodeLines(first, last, *labels[k]) for k, (first, last) in sorted(span.items()))


def line_map_source(entries: Sequence[NodeLines]) -> list[str]:
    """The lines that define ``NODE_LINES`` (model text only through ``string_literal``)."""
    out = ["# generated line -> ONNX node: (first line, last line, op, node) per step (jitort.codegen.linemap)",
           f"{NODE_LINES} = ("]
    for e in entries:
        out.append(f"    ({e.first}, {e.last}, {string_literal(e.op)}, {string_literal(e.name)}),")
    out.append(")")
    return out


def node_lines(namespace: Mapping[str, Any]) -> tuple[NodeLines, ...]:
    """The map of a plan module, from its globals (empty for a module without one)."""
    return tuple(NodeLines(*e) for e in namespace.get(NODE_LINES, ()))


def node_at(namespace: Mapping[str, Any], lineno: int) -> tuple[str, str] | None:
    """(op, node name) of the step holding line ``lineno`` of the plan module whose globals are
    ``namespace``; None outside every step."""
    for first, last, op, name in namespace.get(NODE_LINES, ()):
        if first <= lineno <= last:
            return op, name
    return None


def parse_line_map(source: str) -> tuple[NodeLines, ...]:
    """The map in a plan module's source, read without running the module (literals only)."""
    for stmt in reversed(ast.parse(source).body):
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                and stmt.targets[0].id == NODE_LINES):
            return tuple(NodeLines(*e) for e in ast.literal_eval(stmt.value))
    return ()
