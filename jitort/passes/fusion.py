"""Elementwise fusion: every maximal group of elementwise nodes becomes one FusedElementwise node.

Invariant after the pass: every elementwise node sits in the ``body`` of exactly one
``FusedElementwise`` node (domain ``jitort``), whose inputs are the group's external operands and
whose outputs are the values used outside it; all outputs share one shape (the loop shape) and
every input broadcasts to it with a pattern known at compile time. Singletons whose broadcast is
only known at run time stay groups of one and run in the emitter's strided mode. The one exception:
a variadic node (Sum/Max/Min/Mean) whose operands alone exceed ``MAX_GROUP_OPS`` stays a plain node,
run by its registration's ``lower`` as a library call (a kernel pays compile time per operand).

As in Inductor, *may* two groups fuse (``can_fuse``: no cycle through an outside node, one loop
shape, static broadcast, at most ``MAX_GROUP_OPS`` scalar operations) is kept apart from the merge
loop; refusals are written to ``g.notes``.

Why a size limit: a fused group is one Numba function, and Numba's compile time grows faster than
the function (SSA reconstruction, inlining of the fast-math helpers and type inference each walk
the whole function once per variable or call site), so one 400-op chain took 42 s and 1.6 GB to
compile. Groups of at most ``MAX_GROUP_OPS`` keep every kernel small, so compile time grows linearly
with the model; a chain longer than the limit becomes several kernels (one extra memory pass at
each cut).
"""
from __future__ import annotations

from jitort.ir import Graph, Node, Shape, toposort
from jitort.kernels.registry import elementwise_def

FUSED = "FusedElementwise"

# Scalar operations per fused kernel (see the module docstring). Measured on a 2-core AMD EPYC:
# compile time per op falls until about this size (the per-kernel cost is amortised) and grows
# beyond about 100 ops (steeply when ops inline fast-math helpers: 42 -> 105 ms/op from 100 to 400).
MAX_GROUP_OPS = 32


def scalar_ops(n: Node) -> int:
    """The scalar operations a node's expression costs: one, or one per fold of a variadic op."""
    return max(1, len([i for i in n.inputs if i]) - 1)


def broadcast_pattern(shape: Shape | None, loop: Shape | None) -> tuple[str, ...] | None:
    """Per loop dim: 's' operand has the loop's extent, '1' a static 1 broadcast, '-' missing (leading).

    None when the relation is only known at run time (a symbolic dim differing from the loop's).
    """
    if shape is None or loop is None or len(shape) > len(loop):
        return None
    off = len(loop) - len(shape)
    out = ["-"] * off
    for d in range(len(shape)):
        if shape[d] == loop[off + d]:
            out.append("s")
        elif shape[d] == 1:
            out.append("1")
        else:
            return None
    return tuple(out)


class _Groups:
    def __init__(self, g: Graph) -> None:
        self.g = g
        self.index = {id(n): k for k, n in enumerate(g.nodes)}
        self.group_of: dict[int, int] = {}     # node index -> group id
        self.members: dict[int, list[int]] = {}
        self.producer = {o: k for k, n in enumerate(g.nodes) for o in n.outputs if o}
        self.consumers: dict[str, list[int]] = {}
        for k, n in enumerate(g.nodes):
            for i in n.inputs:
                if i:
                    self.consumers.setdefault(i, []).append(k)
        self.graph_outputs = set(g.outputs)

    def outputs(self, members: list[int]) -> list[str]:
        ms = set(members)
        outs = []
        for k in members:
            for o in self.g.nodes[k].outputs:
                if o and (o in self.graph_outputs or any(c not in ms for c in self.consumers.get(o, ()))):
                    outs.append(o)
        return outs

    def inputs(self, members: list[int]) -> list[str]:
        ms = set(members)
        seen: list[str] = []
        for k in members:
            for i in self.g.nodes[k].inputs:
                if i and self.producer.get(i) not in ms and i not in seen:
                    seen.append(i)
        return seen

    def reaches_through_outside(self, src: list[int], dst: list[int]) -> bool:
        """Is there a path src -> (node outside src∪dst)+ -> dst? Then merging would make a cycle."""
        inside = set(src) | set(dst)
        target = set(dst)
        limit = max(dst)
        stack = [c for k in src for o in self.g.nodes[k].outputs if o
                 for c in self.consumers.get(o, ()) if c not in inside and c < limit]
        seen = set(stack)
        while stack:
            k = stack.pop()
            for o in self.g.nodes[k].outputs:
                for c in self.consumers.get(o, ()) if o else ():
                    if c in target:
                        return True
                    if c not in seen and c not in inside and c < limit:
                        seen.add(c)
                        stack.append(c)
        return False


def can_fuse(gr: _Groups, a: list[int], b: list[int]) -> str | None:
    """None if groups a and b may become one kernel, else the reason they may not."""
    ops = sum(scalar_ops(gr.g.nodes[k]) for k in a + b)  # groups stay small: bounded work
    if ops > MAX_GROUP_OPS:
        return (f"the kernel would have {ops} scalar operations (limit {MAX_GROUP_OPS}: "
                "larger kernels compile superlinearly), so the group is split here")
    if gr.reaches_through_outside(a, b) or gr.reaches_through_outside(b, a):
        return "a path between them runs through an unfused node (fusing would make a cycle)"
    merged = a + b
    outs = gr.outputs(merged)
    shapes = {gr.g.type_of(o).shape for o in outs}
    if len(shapes) != 1 or None in shapes:
        return f"their outputs have different shapes {sorted(map(str, shapes))}"
    loop = shapes.pop()
    for i in gr.inputs(merged):
        if broadcast_pattern(gr.g.type_of(i).shape, loop) is None:
            return f"operand '{i}' {gr.g.type_of(i).shape} does not broadcast to {loop} statically"
    return None


def fuse_elementwise(g: Graph) -> Graph:
    gr = _Groups(g)
    for k, n in enumerate(g.nodes):
        if elementwise_def(n) is None:
            continue
        if scalar_ops(n) > MAX_GROUP_OPS:
            g.notes.append(f"not fused: {n.name} ({n.op_type} of {len(n.inputs)} inputs) alone exceeds the "
                           f"kernel size limit ({MAX_GROUP_OPS} scalar operations); it runs as a library call")
            continue
        gr.group_of[k] = k
        gr.members[k] = [k]
        for i in n.inputs:
            p = gr.producer.get(i) if i else None
            if p is None or p not in gr.group_of:
                continue
            ga, gb = gr.group_of[p], gr.group_of[k]
            if ga == gb:
                continue
            why = can_fuse(gr, gr.members[ga], gr.members[gb])
            if why is not None:
                g.notes.append(f"not fused: {g.nodes[p].name} -> {n.name}: {why}")
                continue
            for m in gr.members[gb]:
                gr.group_of[m] = ga
            gr.members[ga] = sorted(gr.members[ga] + gr.members.pop(gb))
    new_nodes: list[Node] = []
    emitted: set[int] = set()
    for k, n in enumerate(g.nodes):
        gid = gr.group_of.get(k)
        if gid is None:
            new_nodes.append(n)
            continue
        if gid in emitted:
            continue
        emitted.add(gid)
        ms = gr.members[gid]
        body = [g.nodes[m] for m in ms]
        name = body[0].name if len(body) == 1 else f"fused[{body[0].name}..{body[-1].name}]"
        new_nodes.append(Node(FUSED, gr.inputs(ms), gr.outputs(ms), {"body": body}, name, "jitort", 1,
                              body[0].provider))
    g.nodes = toposort(new_nodes)
    return g

